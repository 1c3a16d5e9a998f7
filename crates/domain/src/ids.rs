//! Typed identifiers: one newtype over [`Uuid`] per entity, so a `TenantId` can never be passed
//! where an `InstanceId` is expected. They serialise as the bare UUID string.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// Wraps an existing UUID.
            pub const fn from_uuid(id: Uuid) -> Self {
                Self(id)
            }

            /// The underlying UUID (for binding into queries).
            pub const fn as_uuid(&self) -> Uuid {
                self.0
            }

            /// A fresh time-ordered id (UUID v7): ids sort by creation, which keeps B-tree
            /// inserts local and makes keyset pagination follow creation order.
            #[cfg(feature = "new-ids")]
            // No `Default`: a default that differs on every call would surprise.
            #[allow(clippy::new_without_default)]
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> Self {
                Self(id)
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Self {
                id.0
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
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

typed_id!(
    /// A customer organisation; every tenant-owned row carries one.
    TenantId
);
typed_id!(
    /// A user of a tenant.
    UserId
);
typed_id!(
    /// A personal API key.
    ApiKeyId
);
typed_id!(
    /// A plan (limits and prices).
    PlanId
);
typed_id!(
    /// A VM or container sold to a tenant.
    InstanceId
);
typed_id!(
    /// A job in the ledger.
    JobId
);
typed_id!(
    /// A schedule: a cron expression and the job it starts.
    ScheduleId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_serialise_as_bare_uuid_strings() {
        let raw = Uuid::parse_str("0190f0a4-7c3e-7d2a-9b1e-1234567890ab").unwrap();
        let id = JobId::from(raw);
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"0190f0a4-7c3e-7d2a-9b1e-1234567890ab\"");
        let back: JobId = serde_json::from_str("\"0190f0a4-7c3e-7d2a-9b1e-1234567890ab\"").unwrap();
        assert_eq!(back, id);
        assert_eq!("0190f0a4-7c3e-7d2a-9b1e-1234567890ab".parse::<JobId>().unwrap(), id);
        assert!("not-a-uuid".parse::<JobId>().is_err());
    }
}
