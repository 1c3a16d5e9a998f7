//! Backup retention as customers set it (`PUT /v1/vms/{id}/backup-policy`), and its Proxmox form.

use serde::{Deserialize, Serialize};

/// Whether an archive of an instance's VMID taken at `ctime` (Unix seconds) is that instance's:
/// taken since it was created (a minute's slack for clocks). A VMID freed by a deleted instance
/// can be reserved again, and the old guest's archives belong to no one who holds it now.
pub fn archive_taken_since(created_at: chrono::DateTime<chrono::Utc>, ctime: Option<i64>) -> bool {
    ctime.is_some_and(|t| t >= created_at.timestamp() - 60)
}

/// How many backups to keep, by Proxmox's `prune-backups` rules: the newest `keepLast`, then the
/// newest of each of the last `keepDaily` days, `keepWeekly` ISO weeks and `keepMonthly` months
/// that nothing kept yet. Protected backups are always kept and counted by no option.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Retention {
    /// The newest N backups.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(example = 3))]
    pub keep_last: u32,
    /// The newest backup of each of N days.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(example = 7))]
    pub keep_daily: u32,
    /// The newest backup of each of N ISO weeks.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(example = 4))]
    pub keep_weekly: u32,
    /// The newest backup of each of N months.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(example = 6))]
    pub keep_monthly: u32,
}

impl Retention {
    /// The most backups it can keep (protected ones aside).
    pub fn most_kept(&self) -> u64 {
        [self.keep_last, self.keep_daily, self.keep_weekly, self.keep_monthly].iter().map(|&n| u64::from(n)).sum()
    }

    /// Proxmox's `prune-backups` value (`keep-last=3,keep-daily=7`); `None` when it keeps nothing
    /// by any option (which Proxmox reads as "keep everything").
    pub fn prune_backups(&self) -> Option<String> {
        let parts: Vec<String> = [
            ("keep-last", self.keep_last),
            ("keep-daily", self.keep_daily),
            ("keep-weekly", self.keep_weekly),
            ("keep-monthly", self.keep_monthly),
        ]
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| format!("{k}={n}"))
        .collect();
        (!parts.is_empty()).then(|| parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_speaks_proxmox() {
        let r = Retention { keep_last: 3, keep_daily: 0, keep_weekly: 4, keep_monthly: 1 };
        assert_eq!(r.prune_backups().as_deref(), Some("keep-last=3,keep-weekly=4,keep-monthly=1"));
        assert_eq!(r.most_kept(), 8);
        assert_eq!(Retention::default().prune_backups(), None);
        let parsed: Retention = serde_json::from_str(r#"{"keepLast": 2}"#).unwrap();
        assert_eq!(parsed, Retention { keep_last: 2, ..Retention::default() });
        assert!(serde_json::from_str::<Retention>(r#"{"keepYearly": 2}"#).is_err());
    }
}
