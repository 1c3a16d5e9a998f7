//! The domain events users can subscribe to (DESIGN §11): their types, what they mean, and
//! whether they email a user who has not chosen. Webhooks, the in-app feed and email read this
//! one list; the portal shows it through `GET /v1/webhooks/event-types`.

/// One event type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventType {
    /// Dotted name, such as `instance.created`.
    pub name: &'static str,
    /// What happened, in a phrase.
    pub description: &'static str,
    /// Whether it emails users who have not said otherwise.
    pub email_by_default: bool,
}

const fn t(name: &'static str, description: &'static str, email_by_default: bool) -> EventType {
    EventType { name, description, email_by_default }
}

/// Every event type, in the order the portal lists them.
pub const EVENT_TYPES: &[EventType] = &[
    t("instance.created", "An instance was created (provisioning starts)", false),
    t("instance.status_changed", "An instance's status changed (running, stopped, failed, …)", false),
    t("instance.deleted", "An instance was deleted", false),
    t("job.succeeded", "A job finished successfully", false),
    t("job.failed", "A job failed", true),
    t("backup.completed", "A backup completed", false),
    t("backup.failed", "A backup failed", true),
    t("invoice.issued", "A monthly invoice was issued", true),
    t("credit_note.issued", "A credit note corrected an invoice", true),
    t("balance.low", "The prepaid balance fell below its threshold", true),
    t("balance.exhausted", "The prepaid balance ran out: new instances are refused", true),
    t("tenant.suspended", "The account was suspended", true),
    t("tenant.resumed", "The account's suspension was lifted", true),
    t("apikey.created", "An API key was created", false),
    t("webhook.endpoint_disabled", "A webhook endpoint was disabled after failing", true),
];

/// The type of the event "send test event" sends to one endpoint (not subscribable, not in
/// the feed).
pub const WEBHOOK_TEST: &str = "webhook.test";

/// The type called `name`, if it is one.
pub fn event_type(name: &str) -> Option<&'static EventType> {
    EVENT_TYPES.iter().find(|t| t.name == name)
}

/// A one-line title for a notification about an event of type `kind` with `data`.
pub fn title(kind: &str, data: &serde_json::Value) -> String {
    let text = |key: &str| data.get(key).and_then(|v| v.as_str()).unwrap_or_default().to_owned();
    let name = text("name");
    match kind {
        "instance.created" => format!("Instance {name} is being created"),
        "instance.status_changed" => format!("Instance {name} is {}", text("status")),
        "instance.deleted" => format!("Instance {name} was deleted"),
        "job.succeeded" => format!("{} job succeeded", capitalised(&text("kind"))),
        "job.failed" => {
            let message = data.pointer("/error/message").and_then(|v| v.as_str()).unwrap_or("no reason given");
            format!("{} job failed: {message}", capitalised(&text("kind")))
        }
        "backup.completed" => "A backup completed".to_owned(),
        "backup.failed" => "A backup failed".to_owned(),
        "invoice.issued" => format!("Invoice {} was issued", text("number")),
        "credit_note.issued" => format!("Credit note {} was issued", text("number")),
        "balance.low" => "Your prepaid balance is low".to_owned(),
        "balance.exhausted" => "Your prepaid balance ran out: new instances are refused".to_owned(),
        "tenant.suspended" => "Your account was suspended".to_owned(),
        "tenant.resumed" => "Your account's suspension was lifted".to_owned(),
        "apikey.created" => format!("API key {name} was created"),
        "webhook.endpoint_disabled" => format!("Webhook endpoint {} was disabled", text("url")),
        other => event_type(other).map(|t| t.description.to_owned()).unwrap_or_else(|| other.to_owned()),
    }
}

fn capitalised(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => "A".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_are_unique_dotted_and_titled() {
        let mut names: Vec<_> = EVENT_TYPES.iter().map(|t| t.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), EVENT_TYPES.len());
        assert!(names.iter().all(|n| n.contains('.')));
        assert!(event_type(WEBHOOK_TEST).is_none(), "the test event is nobody's subscription");
        let data = serde_json::json!({"name": "web-1", "status": "running", "kind": "backup", "error": {"message": "disk full"}});
        assert_eq!(title("instance.status_changed", &data), "Instance web-1 is running");
        assert_eq!(title("job.failed", &data), "Backup job failed: disk full");
    }
}
