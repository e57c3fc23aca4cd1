//! JWT authentication: HS256 with a shared secret, RS256/ES256 with public keys (PEM files or a
//! JWKS file). `exp` (required), `nbf`, `iss` and `aud` are checked with a small leeway.

use std::collections::BTreeMap;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use crate::access::auth::Principal;
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
    pub fn code(&self) -> crate::error::ErrorCode {
        match self {
            Self::Expired => crate::error::ErrorCode::TokenExpired,
            Self::NotYetValid => crate::error::ErrorCode::TokenNotYetValid,
            Self::Signature => crate::error::ErrorCode::InvalidTokenSignature,
            Self::Algorithm(_) => crate::error::ErrorCode::InvalidTokenAlgorithm,
            Self::Issuer => crate::error::ErrorCode::InvalidTokenIssuer,
            Self::Audience => crate::error::ErrorCode::InvalidTokenAudience,
            Self::NoRole => crate::error::ErrorCode::TokenWithoutRole,
            Self::Malformed(_) => crate::error::ErrorCode::InvalidToken,
            Self::NotConfigured => crate::error::ErrorCode::JwtNotConfigured,
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
                use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve};
                let algorithm = match &jwk.algorithm {
                    AlgorithmParameters::RSA(_) => Algorithm::RS256,
                    AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
                        Algorithm::ES256
                    }
                    other => anyhow::bail!(
                        "access.jwt.jwks_file: key {:?}: only RSA keys (RS256) and P-256 keys (ES256) are accepted, not {other:?}",
                        jwk.common.key_id.as_deref().unwrap_or("without kid")
                    ),
                };
                let key = DecodingKey::from_jwk(jwk)
                    .map_err(|e| anyhow::anyhow!("access.jwt.jwks_file: {e}"))?;
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
        // The keys to try: the secret, or every public key of the algorithm whose id matches.
        let keys: Vec<&DecodingKey> = match header.alg {
            Algorithm::HS256 => vec![self.hs256.as_ref().ok_or_else(|| {
                JwtError::Algorithm("HS256 (no shared secret configured)".into())
            })?],
            alg @ (Algorithm::RS256 | Algorithm::ES256) => {
                let keys: Vec<&DecodingKey> = self
                    .public
                    .iter()
                    .filter(|(a, _, _)| *a == alg)
                    .filter(|(_, kid, _)| {
                        header.kid.is_none() || kid.is_none() || *kid == header.kid
                    })
                    .map(|(_, _, key)| key)
                    .collect();
                if keys.is_empty() {
                    return Err(JwtError::Algorithm(format!(
                        "{alg:?} (no matching public key)"
                    )));
                }
                keys
            }
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
        let mut refusal = JwtError::Signature;
        for key in keys {
            match jsonwebtoken::decode::<BTreeMap<String, Value>>(token, key, &validation) {
                Ok(data) => return principal(data.claims),
                Err(e) => {
                    use jsonwebtoken::errors::ErrorKind;
                    refusal = match e.kind() {
                        // Another key of the set may have signed it.
                        ErrorKind::InvalidSignature => continue,
                        ErrorKind::ExpiredSignature => JwtError::Expired,
                        ErrorKind::ImmatureSignature => JwtError::NotYetValid,
                        ErrorKind::InvalidIssuer => JwtError::Issuer,
                        ErrorKind::InvalidAudience => JwtError::Audience,
                        ErrorKind::InvalidAlgorithm => {
                            JwtError::Algorithm(format!("{:?}", header.alg))
                        }
                        _ => JwtError::Malformed(e.to_string()),
                    };
                    break;
                }
            }
        }
        Err(refusal)
    }
}

fn principal(claims: BTreeMap<String, Value>) -> Result<Principal, JwtError> {
    let known = |r: &str| crate::access::auth::ROLES.contains(&r);
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

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use std::path::Path;

    fn openssl(dir: &Path, args: &[&str]) -> String {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `genpkey` options of an RSA and a P-256 key.
    const RSA: [&str; 4] = ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"];
    const P256: [&str; 4] = ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"];

    /// Writes `<name>.pem` (private) and `<name>.pub.pem` (public) into `dir`.
    fn generate(dir: &Path, name: &str, key: [&str; 4]) {
        let private = format!("{name}.pem");
        let mut args = vec!["genpkey"];
        args.extend(key);
        args.extend(["-out", &private]);
        openssl(dir, &args);
        let public = format!("{name}.pub.pem");
        openssl(dir, &["pkey", "-in", &private, "-pubout", "-out", &public]);
    }

    fn claims() -> Value {
        serde_json::json!({"sub": "svc", "role": "analyst", "exp": chrono::Utc::now().timestamp() + 600})
    }

    fn sign(alg: Algorithm, kid: Option<&str>, private_pem: &[u8]) -> String {
        let key = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(private_pem).unwrap(),
            _ => EncodingKey::from_ec_pem(private_pem).unwrap(),
        };
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_string);
        encode(&header, &claims(), &key).unwrap()
    }

    #[test]
    fn rs256_and_es256_tokens_verify_with_pem_keys_and_a_jwks_file() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for (name, key) in [("rsa", RSA), ("rsa2", RSA), ("ec", P256)] {
            generate(d, name, key);
        }
        // A JWKS with the second RSA key (modulus from openssl, exponent 65537).
        let modulus = openssl(
            d,
            &["rsa", "-pubin", "-in", "rsa2.pub.pem", "-noout", "-modulus"],
        );
        let hex = modulus.trim().trim_start_matches("Modulus=");
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let n = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let jwks = serde_json::json!({"keys": [{"kty": "RSA", "kid": "k2", "use": "sig", "alg": "RS256", "n": n, "e": "AQAB"}]});
        std::fs::write(d.join("jwks.json"), jwks.to_string()).unwrap();
        let settings = JwtSettings {
            public_keys: vec![d.join("rsa.pub.pem"), d.join("ec.pub.pem")],
            jwks_file: Some(d.join("jwks.json")),
            ..JwtSettings::default()
        };
        let verifier = JwtVerifier::new(&settings).unwrap();
        let read = |f: &str| std::fs::read(d.join(f)).unwrap();

        let rs = verifier.verify(&sign(Algorithm::RS256, None, &read("rsa.pem")));
        let es = verifier.verify(&sign(Algorithm::ES256, None, &read("ec.pem")));
        // No kid: every RSA key is tried, the JWKS one included.
        let from_jwks = verifier.verify(&sign(Algorithm::RS256, None, &read("rsa2.pem")));
        let with_kid = verifier.verify(&sign(Algorithm::RS256, Some("k2"), &read("rsa2.pem")));
        let unknown_signer = {
            generate(d, "other", RSA);
            verifier.verify(&sign(Algorithm::RS256, None, &read("other.pem")))
        };

        assert_eq!(rs.unwrap().role, "analyst");
        assert_eq!(es.unwrap().name, "jwt:svc");
        assert!(from_jwks.is_ok(), "{from_jwks:?}");
        assert!(with_kid.is_ok(), "{with_kid:?}");
        assert_eq!(unknown_signer.unwrap_err(), JwtError::Signature);
    }

    #[test]
    fn a_jwks_key_on_another_curve_is_refused_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let jwks = serde_json::json!({"keys": [{"kty": "EC", "crv": "P-384", "kid": "p384",
            "x": "AAAA", "y": "AAAA"}]});
        std::fs::write(dir.path().join("jwks.json"), jwks.to_string()).unwrap();
        let settings = JwtSettings {
            jwks_file: Some(dir.path().join("jwks.json")),
            ..JwtSettings::default()
        };
        let error = JwtVerifier::new(&settings)
            .err()
            .expect("refused")
            .to_string();
        assert!(error.contains("P-256"), "{error}");
    }
}
