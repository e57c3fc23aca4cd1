//! Who owns a stored definition (an alert, a segment): the identity of its creator, with whose
//! permissions it later runs, and who may see and change it.

use std::collections::BTreeMap;

use serde::Serialize;
use uuid::Uuid;

use crate::access::auth::Principal;

/// The `owner_*` columns of a stored definition.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Owner {
    pub owner_name: String,
    pub owner_role: String,
    pub owner_key_id: Option<Uuid>,
    /// Claims for row filters; never shown.
    #[serde(skip)]
    #[sqlx(json)]
    pub owner_attributes: BTreeMap<String, String>,
}

impl Owner {
    /// The principal the definition runs as.
    pub fn principal(&self) -> Principal {
        Principal {
            key_id: self.owner_key_id,
            name: self.owner_name.clone(),
            role: self.owner_role.clone(),
            attributes: self.owner_attributes.clone(),
        }
    }

    /// Its owner (the same key, or the same JWT subject), or an admin.
    pub fn visible_to(&self, principal: &Principal) -> bool {
        principal.role == "admin"
            || match (self.owner_key_id, principal.key_id) {
                (Some(owner), Some(key)) => owner == key,
                (None, None) => self.owner_name == principal.name,
                _ => false,
            }
    }
}
