//! JWT authentication: HS256 with a shared secret, RS256/ES256 with public keys (PEM files or a
//! JWKS file). `exp` (required), `nbf`, `iss` and `aud` are checked with a small leeway.

use std::collections::BTreeMap;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use crate::auth::Principal;
use crate::config::JwtSettings;

/// Why a token was refused; each maps to a specific 401 code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet (nbf)")]
    NotYetValid,
    #[error("the token's signature does not verify")]
    Signature,
    #[error("the token's algorithm is not accepted: {0}")]
    Algorithm(String),
    #[error("the token's issuer is not accepted")]
    Issuer,
    #[error("the token's audience is not accepted")]
    Audience,
    #[error("the token carries no known role (claim role or roles)")]
    NoRole,
    #[error("the token is malformed: {0}")]
    Malformed(String),
    #[error("JWTs are not configured on this gateway")]
    NotConfigured,
}

impl JwtError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Expired => "token_expired",
            Self::NotYetValid => "token_not_yet_valid",
            Self::Signature => "invalid_token_signature",
            Self::Algorithm(_) => "invalid_token_algorithm",
            Self::Issuer => "invalid_token_issuer",
            Self::Audience => "invalid_token_audience",
            Self::NoRole => "token_without_role",
            Self::Malformed(_) => "invalid_token",
            Self::NotConfigured => "jwt_not_configured",
        }
    }
}

/// Verifies tokens with the configured keys.
#[derive(Clone)]
pub struct JwtVerifier {
    hs256: Option<DecodingKey>,
    /// Public keys with their algorithm and optional key id.
    public: Vec<(Algorithm, Option<String>, DecodingKey)>,
    settings: JwtSettings,
}

impl JwtVerifier {
    pub fn new(settings: &JwtSettings) -> anyhow::Result<Self> {
        let hs256 = (!settings.hs256_secret.is_empty())
            .then(|| DecodingKey::from_secret(settings.hs256_secret.expose().as_bytes()));
        let mut public = Vec::new();
        for path in &settings.public_keys {
            let pem = std::fs::read(path).map_err(|e| {
                anyhow::anyhow!(
                    "access.jwt.public_keys: cannot read {}: {e}",
                    path.display()
                )
            })?;
            if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
                public.push((Algorithm::RS256, None, key));
            } else if let Ok(key) = DecodingKey::from_ec_pem(&pem) {
                public.push((Algorithm::ES256, None, key));
            } else {
                anyhow::bail!(
                    "access.jwt.public_keys: {} is neither an RSA nor an EC public key in PEM",
                    path.display()
                );
            }
        }
        if let Some(path) = &settings.jwks_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                anyhow::anyhow!("access.jwt.jwks_file: cannot read {}: {e}", path.display())
            })?;
            let set: JwkSet = serde_json::from_str(&text)
                .map_err(|e| anyhow::anyhow!("access.jwt.jwks_file: {e}"))?;
            for jwk in &set.keys {
                let key = DecodingKey::from_jwk(jwk)
                    .map_err(|e| anyhow::anyhow!("access.jwt.jwks_file: {e}"))?;
                let algorithm = match &jwk.algorithm {
                    jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(_) => Algorithm::ES256,
                    _ => Algorithm::RS256,
                };
                public.push((algorithm, jwk.common.key_id.clone(), key));
            }
        }
        Ok(Self {
            hs256,
            public,
            settings: settings.clone(),
        })
    }

    pub fn is_configured(&self) -> bool {
        self.hs256.is_some() || !self.public.is_empty()
    }

    /// Verifies `token` and turns its claims into a principal.
    pub fn verify(&self, token: &str) -> Result<Principal, JwtError> {
        if !self.is_configured() {
            return Err(JwtError::NotConfigured);
        }
        // Read the algorithm ourselves first: `none` and unknown algorithms are an algorithm
        // refusal, not a malformed token.
        let alg = token
            .split('.')
            .next()
            .and_then(|h| {
                base64::Engine::decode(
                    &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                    h.trim_end_matches('='),
                )
                .ok()
            })
            .and_then(|h| serde_json::from_slice::<Value>(&h).ok())
            .and_then(|h| h.get("alg").and_then(Value::as_str).map(str::to_string))
            .ok_or_else(|| JwtError::Malformed("the header has no algorithm".into()))?;
        if !["HS256", "RS256", "ES256"].contains(&alg.as_str()) {
            return Err(JwtError::Algorithm(format!(
                "{alg} (accepted: HS256, RS256, ES256)"
            )));
        }
        let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidAlgorithmName => {
                JwtError::Algorithm("unsupported (\"none\" is never accepted)".into())
            }
            _ => JwtError::Malformed(e.to_string()),
        })?;
        let key = match header.alg {
            Algorithm::HS256 => self
                .hs256
                .as_ref()
                .ok_or_else(|| JwtError::Algorithm("HS256 (no shared secret configured)".into()))?,
            alg @ (Algorithm::RS256 | Algorithm::ES256) => self
                .public
                .iter()
                .filter(|(a, _, _)| *a == alg)
                .find(|(_, kid, _)| header.kid.is_none() || kid.is_none() || *kid == header.kid)
                .map(|(_, _, key)| key)
                .ok_or_else(|| JwtError::Algorithm(format!("{alg:?} (no matching public key)")))?,
            other => return Err(JwtError::Algorithm(format!("{other:?}"))),
        };
        let mut validation = Validation::new(header.alg);
        validation.leeway = self.settings.leeway_secs;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp"]);
        if let Some(issuer) = &self.settings.issuer {
            validation.set_issuer(&[issuer]);
        }
        match &self.settings.audience {
            Some(audience) => validation.set_audience(&[audience]),
            None => validation.validate_aud = false,
        }
        let data = jsonwebtoken::decode::<BTreeMap<String, Value>>(token, key, &validation)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                match e.kind() {
                    ErrorKind::ExpiredSignature => JwtError::Expired,
                    ErrorKind::ImmatureSignature => JwtError::NotYetValid,
                    ErrorKind::InvalidSignature => JwtError::Signature,
                    ErrorKind::InvalidIssuer => JwtError::Issuer,
                    ErrorKind::InvalidAudience => JwtError::Audience,
                    ErrorKind::InvalidAlgorithm => JwtError::Algorithm(format!("{:?}", header.alg)),
                    _ => JwtError::Malformed(e.to_string()),
                }
            })?;
        principal(data.claims)
    }
}

fn principal(claims: BTreeMap<String, Value>) -> Result<Principal, JwtError> {
    let known = |r: &str| crate::auth::ROLES.contains(&r);
    let role = match (claims.get("role"), claims.get("roles")) {
        (Some(Value::String(r)), _) if known(r) => r.clone(),
        (_, Some(Value::Array(roles))) => roles
            .iter()
            .filter_map(Value::as_str)
            .find(|r| known(r))
            .map(str::to_string)
            .ok_or(JwtError::NoRole)?,
        _ => return Err(JwtError::NoRole),
    };
    let subject = claims
        .get("sub")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    const REGISTERED: &[&str] = &[
        "sub", "role", "roles", "exp", "nbf", "iat", "iss", "aud", "jti",
    ];
    let attributes = claims
        .iter()
        .filter(|(k, _)| !REGISTERED.contains(&k.as_str()))
        .filter_map(|(k, v)| match v {
            Value::String(s) => Some((k.clone(), s.clone())),
            Value::Number(n) => Some((k.clone(), n.to_string())),
            Value::Bool(b) => Some((k.clone(), b.to_string())),
            _ => None,
        })
        .collect();
    Ok(Principal {
        key_id: None,
        name: format!("jwt:{subject}"),
        role,
        attributes,
    })
}
