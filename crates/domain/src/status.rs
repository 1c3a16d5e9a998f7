//! The closed sets of the domain: job statuses and kinds, instance statuses and kinds, user
//! roles. Their string forms are the wire format (serde) and the values the database's CHECK
//! constraints accept, so they must never be renamed, only added to (with a migration).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A string that is not one of an enum's values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {value:?}")]
pub struct ParseEnumError {
    /// Which enum was being parsed.
    pub kind: &'static str,
    /// The rejected value.
    pub value: String,
}

macro_rules! string_enum {
    ($(#[$doc:meta])* $name:ident, $what:literal, { $($(#[$vdoc:meta])* $variant:ident => $s:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vdoc])* #[serde(rename = $s)] $variant),+
        }

        // By hand: the derive cannot read a `rename` given through a macro's literal.
        #[cfg(feature = "openapi")]
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::schema::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .enum_values(Some([$($s),+]))
                    .into()
            }
        }

        #[cfg(feature = "openapi")]
        impl utoipa::ToSchema for $name {}

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The wire and database spelling.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $s),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = ParseEnumError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($s => Ok($name::$variant),)+
                    _ => Err(ParseEnumError { kind: $what, value: s.to_owned() }),
                }
            }
        }

        impl TryFrom<String> for $name {
            type Error = ParseEnumError;

            fn try_from(s: String) -> Result<Self, Self::Error> {
                s.parse()
            }
        }
    };
}

string_enum!(
    /// Where a job is in its life (DESIGN §2). `succeeded`, `failed` and `cancelled` are final.
    JobStatus, "job status", {
        /// Accepted, waiting for a worker (also between retries).
        Queued => "queued",
        /// Claimed by a worker that holds its lease.
        Running => "running",
        /// Finished with its effect in place.
        Succeeded => "succeeded",
        /// Finished without its effect, after its attempts or on a permanent error.
        Failed => "failed",
        /// Withdrawn before it ran.
        Cancelled => "cancelled",
    }
);

impl JobStatus {
    /// Whether nothing more will happen to the job (unless an admin retries it).
    pub const fn is_final(self) -> bool {
        matches!(self, JobStatus::Succeeded | JobStatus::Failed | JobStatus::Cancelled)
    }
}

string_enum!(
    /// What a job does (DESIGN §2: the product's job kinds and the instance operations).
    JobKind, "job kind", {
        /// Create an instance on Proxmox (clone, cloud-init, resize, start, wait for IP).
        Provision => "provision",
        /// Destroy an instance.
        Delete => "delete",
        /// Power on.
        Start => "start",
        /// Power off (hard).
        Stop => "stop",
        /// ACPI shutdown.
        Shutdown => "shutdown",
        /// Reboot.
        Reboot => "reboot",
        /// Change cores, memory or disk.
        Resize => "resize",
        /// Reinstall from a template.
        Rebuild => "rebuild",
        /// Take a snapshot.
        Snapshot => "snapshot",
        /// Roll back to a snapshot or restore a backup.
        Restore => "restore",
        /// Take a backup.
        Backup => "backup",
        /// Collect usage.
        Meter => "meter",
        /// Issue an invoice.
        Invoice => "invoice",
        /// Send a notification (email, webhook, in-app).
        Notify => "notify",
    }
);

string_enum!(
    /// The life of an instance as Nimbus sees it.
    InstanceStatus, "instance status", {
        /// A provision job is creating it.
        Provisioning => "provisioning",
        /// Up.
        Running => "running",
        /// Down.
        Stopped => "stopped",
        /// The guest is gone from Proxmox although no operation removed it (found by the
        /// reconciler); it holds its quota until deleted.
        Missing => "missing",
        /// Provisioning failed; it no longer counts against the quota.
        Failed => "failed",
        /// A delete job is removing it.
        Deleting => "deleting",
        /// Gone; kept for history, its name may be reused.
        Deleted => "deleted",
    }
);

impl InstanceStatus {
    /// Whether the instance counts against the tenant's plan limits. A failed or deleted
    /// instance releases its quota.
    pub const fn holds_quota(self) -> bool {
        !matches!(self, InstanceStatus::Failed | InstanceStatus::Deleted)
    }
}

string_enum!(
    /// The Proxmox guest type.
    InstanceKind, "instance kind", {
        /// A KVM virtual machine.
        Qemu => "qemu",
        /// An LXC container.
        Lxc => "lxc",
    }
);

string_enum!(
    /// A user's role in their tenant (DESIGN §5).
    Role, "role", {
        /// Everything in the tenant, including users and keys.
        Admin => "admin",
        /// Instances and their operations.
        User => "user",
        /// Usage, invoices and payment details.
        BillingAdmin => "billing-admin",
    }
);

string_enum!(
    /// What a schedule does with the fire times that passed while nothing ticked (an outage, a
    /// pause): DESIGN §9.
    MissedFirePolicy, "missed-fire policy", {
        /// Fire every missed time, oldest first (metering: every hour is metered).
        CatchUpAll => "catch_up_all",
        /// Fire once, for the latest missed time (backups: one now, not one per missed night).
        LatestOnly => "latest_only",
        /// Fire none that is late beyond the grace; wait for the next time.
        Skip => "skip",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_forms_round_trip_through_serde_and_from_str() {
        for s in JobStatus::ALL {
            let json = serde_json::to_string(s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.as_str()));
            assert_eq!(s.as_str().parse::<JobStatus>().unwrap(), *s);
        }
        for k in JobKind::ALL {
            assert_eq!(k.as_str().parse::<JobKind>().unwrap(), *k);
        }
        assert_eq!(serde_json::to_string(&Role::BillingAdmin).unwrap(), "\"billing-admin\"");
        assert_eq!(InstanceKind::try_from("lxc".to_owned()).unwrap(), InstanceKind::Lxc);
    }

    #[test]
    fn unknown_values_are_rejected_with_their_name() {
        let err = "paused".parse::<InstanceStatus>().unwrap_err();
        assert_eq!(err.to_string(), "unknown instance status \"paused\"");
        assert!(serde_json::from_str::<JobStatus>("\"done\"").is_err());
    }

    #[test]
    fn final_statuses_and_quota_holders() {
        assert!(!JobStatus::Queued.is_final());
        assert!(!JobStatus::Running.is_final());
        assert!(JobStatus::Cancelled.is_final());
        assert!(InstanceStatus::Provisioning.holds_quota());
        assert!(InstanceStatus::Deleting.holds_quota());
        assert!(!InstanceStatus::Failed.holds_quota());
    }
}
