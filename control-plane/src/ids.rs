//! Typed identifiers: a `UserId` cannot be passed where a `ProjectId` is expected.
//!
//! Each id is a UUID newtype that serializes as the bare UUID (`serde(transparent)`), is stored
//! as a `uuid` column (`sqlx(transparent)`) and appears in the OpenAPI document as a UUID string.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! typed_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, sqlx::Type,
            utoipa::ToSchema,
        )]
        #[serde(transparent)]
        #[sqlx(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new random (v4) id.
            pub fn new() -> Self {
                Self(Uuid::new_v4())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::from_str(s).map(Self)
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> Self {
                Self(id)
            }
        }
    };
}

typed_id!(
    /// A user: a person (local or from an OIDC provider) or a service account.
    UserId
);
typed_id!(
    /// A project: the unit of tenancy; every customer resource belongs to exactly one.
    ProjectId
);
typed_id!(
    /// An API token (its row, never its secret).
    TokenId
);

typed_id!(
    /// A hypervisor host of the fleet.
    HostId
);

typed_id!(
    /// An instance (VM).
    InstanceId
);

typed_id!(
    /// A durable operation.
    OperationId
);

typed_id!(
    /// A base image.
    ImageId
);

typed_id!(
    /// An SSH public key.
    SshKeyId
);

typed_id!(
    /// A snapshot of an instance.
    SnapshotId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_serialize_as_bare_uuids_and_parse_back() {
        let id = UserId::new();
        let json = serde_json::to_string(&id).unwrap_or_default();
        assert_eq!(json, format!("\"{}\"", id.0));
        assert_eq!(json.trim_matches('"').parse::<UserId>().ok(), Some(id));
        assert!("not-a-uuid".parse::<TokenId>().is_err());
    }
}
