//! The `notify` queue's jobs: one email about one event to one user (DESIGN §11), rendered from
//! `handlebars` templates and sent with `lettre` over SMTP.
//!
//! Templates are per event type, HTML and plain text (`{type}.html.hbs`, `{type}.txt.hbs`), with
//! `default.*.hbs` for the types without their own. The built-in ones (`workers/templates/email`)
//! are overridden file by file by those in `NOTIFY_TEMPLATE_DIR`. A template sees `title`,
//! `description`, `type`, `occurredAt`, `resource`, `data` (the event's), `fields` (its plain
//! values), `user`, `consoleUrl` and `settingsUrl`.
//!
//! A send the server refuses for now (or cannot be reached for) fails the attempt as transient,
//! and the ledger retries it with backoff; a permanent refusal (5xx: no such mailbox) marks the
//! address bounced, so nothing more is sent to it until it changes, and fails the job for good.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use handlebars::Handlebars;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use nimbus_db::{DbError, events, notifications, users};
use nimbus_domain::events::{event_type, title};
use nimbus_domain::{ErrorCode, UserId};
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::step_machine::{Operation, Run, StepError, StepInfo};

/// How the connection to the SMTP server is secured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain text (a local relay or catcher).
    None,
    /// Plain, then `STARTTLS` (required).
    StartTls,
    /// TLS from the first byte (port 465).
    Tls,
}

impl std::str::FromStr for SmtpTls {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(SmtpTls::None),
            "starttls" => Ok(SmtpTls::StartTls),
            "tls" => Ok(SmtpTls::Tls),
            other => Err(format!("SMTP_TLS must be none, starttls or tls, not '{other}'")),
        }
    }
}

/// Email settings (`SMTP_*`, `NOTIFY_TEMPLATE_DIR`).
#[derive(Clone)]
pub struct MailConfig {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    pub username: Option<String>,
    pub password: Option<String>,
    /// The sender, `Name <address>`.
    pub from: String,
    /// Templates that override the built-in ones.
    pub template_dir: Option<PathBuf>,
    /// The console's address, for links.
    pub console_url: Option<String>,
}

impl std::fmt::Debug for MailConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("from", &self.from)
            .field("template_dir", &self.template_dir)
            .finish_non_exhaustive()
    }
}

/// The built-in templates.
const BUILT_IN: &[(&str, &str)] = &[
    ("default.html", include_str!("../templates/email/default.html.hbs")),
    ("default.txt", include_str!("../templates/email/default.txt.hbs")),
    ("job.failed.html", include_str!("../templates/email/job.failed.html.hbs")),
    ("job.failed.txt", include_str!("../templates/email/job.failed.txt.hbs")),
    ("invoice.issued.html", include_str!("../templates/email/invoice.issued.html.hbs")),
    ("invoice.issued.txt", include_str!("../templates/email/invoice.issued.txt.hbs")),
];

/// The templates: built in, then the operator's.
#[derive(Clone)]
pub struct Templates(Arc<Handlebars<'static>>);

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Templates")
    }
}

impl Templates {
    /// The built-in templates overridden by the `*.hbs` files of `dir`.
    pub fn load(dir: Option<&Path>) -> anyhow::Result<Templates> {
        let mut hb = Handlebars::new();
        hb.set_strict_mode(false);
        for (name, text) in BUILT_IN {
            // Plain-text templates must not be HTML-escaped.
            hb.register_template_string(name, *text).with_context(|| format!("built-in template {name}"))?;
        }
        if let Some(dir) = dir {
            let entries = std::fs::read_dir(dir).with_context(|| format!("NOTIFY_TEMPLATE_DIR {}", dir.display()))?;
            for entry in entries {
                let path = entry?.path();
                let Some(name) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".hbs")) else {
                    continue;
                };
                hb.register_template_file(name, &path).with_context(|| format!("template {}", path.display()))?;
            }
        }
        Ok(Templates(Arc::new(hb)))
    }

    /// The subject, HTML and plain text for an event of type `kind` with context `ctx`.
    pub fn render(&self, kind: &str, ctx: &Value) -> anyhow::Result<(String, String, String)> {
        let pick = |format: &str| {
            let own = format!("{kind}.{format}");
            if self.0.has_template(&own) { own } else { format!("default.{format}") }
        };
        let html = self.0.render(&pick("html"), ctx)?;
        // Plain text: render without HTML escaping.
        let mut plain = (*self.0).clone();
        plain.register_escape_fn(handlebars::no_escape);
        let text = plain.render(&pick("txt"), ctx)?;
        let subject_template = format!("{kind}.subject");
        let subject = if plain.has_template(&subject_template) {
            plain.render(&subject_template, ctx)?.trim().to_owned()
        } else {
            ctx["title"].as_str().unwrap_or(kind).to_owned()
        };
        Ok((subject, html, text))
    }
}

/// Sends emails.
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    templates: Templates,
    console_url: Option<String>,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer").field("from", &self.from.to_string()).finish_non_exhaustive()
    }
}

impl Mailer {
    /// A mailer for `config`.
    pub fn new(config: &MailConfig) -> anyhow::Result<Mailer> {
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.host).port(config.port);
        let tls = || TlsParameters::new(config.host.clone()).context("SMTP TLS settings");
        builder = match config.tls {
            SmtpTls::None => builder.tls(Tls::None),
            SmtpTls::StartTls => builder.tls(Tls::Required(tls()?)),
            SmtpTls::Tls => builder.tls(Tls::Wrapper(tls()?)),
        };
        if let (Some(user), Some(password)) = (&config.username, &config.password) {
            builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
        }
        let transport = builder.timeout(Some(Duration::from_secs(30))).build();
        let from: Mailbox = config.from.parse().context("SMTP_FROM")?;
        let templates = Templates::load(config.template_dir.as_deref())?;
        Ok(Mailer { transport, from, templates, console_url: config.console_url.clone() })
    }

    /// Renders and sends the email about `event` to `user`.
    pub async fn send(&self, event: &events::Event, user: &users::User) -> Result<(), SendError> {
        let ctx = self.context(event, user);
        let (subject, html, text) =
            self.templates.render(&event.kind, &ctx).map_err(|e| SendError::Render(e.to_string()))?;
        let to: Mailbox =
            user.email.parse().map_err(|e: lettre::address::AddressError| SendError::Rejected(e.to_string()))?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .message_id(Some(format!("<{}.{}@nimbus>", event.id, user.id)))
            .multipart(MultiPart::alternative_plain_html(text, html))
            .map_err(|e| SendError::Render(e.to_string()))?;
        match self.transport.send(message).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_permanent() => Err(SendError::Rejected(e.to_string())),
            Err(e) => Err(SendError::Unavailable(e.to_string())),
        }
    }

    fn context(&self, event: &events::Event, user: &users::User) -> Value {
        let fields: serde_json::Map<String, Value> = event
            .data
            .as_object()
            .map(|o| {
                o.iter().filter(|(_, v)| v.is_string() || v.is_number()).map(|(k, v)| (k.clone(), v.clone())).collect()
            })
            .unwrap_or_default();
        let console = self.console_url.as_deref().map(|u| u.trim_end_matches('/').to_owned());
        json!({
            "title": title(&event.kind, &event.data),
            "description": event_type(&event.kind).map(|t| t.description),
            "type": event.kind,
            "occurredAt": event.occurred_at.format("%Y-%m-%d %H:%M UTC").to_string(),
            "resource": event.resource_type.as_ref().map(|t| json!({"type": t, "id": event.resource_id})),
            "data": event.data,
            "fields": fields,
            "user": {"email": user.email, "displayName": user.display_name},
            "consoleUrl": console,
            "settingsUrl": console.as_deref().map(|c| format!("{c}/settings/notifications")).unwrap_or_default(),
        })
    }
}

/// Why an email was not sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// A template failed.
    #[error("the email could not be rendered: {0}")]
    Render(String),
    /// The address was refused for good.
    #[error("the mail server refused the address: {0}")]
    Rejected(String),
    /// The server could not be reached or refused for now.
    #[error("the mail server is unavailable: {0}")]
    Unavailable(String),
}

/// The step of a `notify` job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Render and send.
    Send,
}

impl StepInfo for Step {
    fn name(self) -> &'static str {
        "send the email"
    }

    fn done_name(self) -> &'static str {
        "email sent"
    }

    fn progress(self) -> u8 {
        90
    }

    fn needs_node_permit(self) -> bool {
        false
    }

    fn plain_action(self) -> &'static str {
        "send the email"
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NotifyPayload {
    event_id: Uuid,
    user_id: Uuid,
}

/// One email in progress.
#[derive(Debug)]
pub struct Notify {
    run: Run,
    event: events::Event,
    user: users::User,
}

impl Operation for Notify {
    type Step = Step;
    const NAME: &'static str = "notify";

    async fn load(run: Run) -> Result<Notify, StepError> {
        let payload: NotifyPayload = run.payload()?;
        let tenant = run
            .job
            .tenant_id
            .ok_or_else(|| StepError::permanent(ErrorCode::Internal, "a notification without a tenant", None))?;
        let event = events::get(run.db(), payload.event_id).await?;
        let user = users::get(run.db(), tenant, UserId::from(payload.user_id)).await?;
        Ok(Notify { run, event, user })
    }

    fn run(&self) -> &Run {
        &self.run
    }

    fn run_mut(&mut self) -> &mut Run {
        &mut self.run
    }

    fn steps(&self) -> &'static [Step] {
        &[Step::Send]
    }

    fn node(&self) -> &str {
        ""
    }

    async fn execute(&mut self, _step: Step) -> Result<(), StepError> {
        let Some(mailer) = self.run.env.mail.clone() else {
            return Err(StepError::Transient {
                code: ErrorCode::EmailUnavailable,
                message: "email is not configured on this worker".into(),
                detail: None,
            });
        };
        if !self.user.active {
            return Ok(());
        }
        match mailer.send(&self.event, &self.user).await {
            Ok(()) => Ok(()),
            Err(SendError::Rejected(detail)) => {
                notifications::mark_bounced(self.run.db(), self.user.id.as_uuid(), chrono::Utc::now()).await?;
                Err(StepError::permanent(
                    ErrorCode::EmailRejected,
                    "the mail server refused the address; no more email is sent to it until it changes",
                    Some(detail),
                ))
            }
            Err(SendError::Render(detail)) => {
                Err(StepError::permanent(ErrorCode::Internal, "the email could not be rendered", Some(detail)))
            }
            Err(SendError::Unavailable(detail)) => Err(StepError::Transient {
                code: ErrorCode::EmailUnavailable,
                message: "the mail server is unavailable; the email is retried".into(),
                detail: Some(detail),
            }),
        }
    }

    async fn succeeded(&self, _tx: &mut PgConnection) -> Result<(), DbError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_templates_render_and_an_operators_folder_overrides_them() {
        let ctx = json!({"title": "Backup job failed: disk <full>", "type": "job.failed", "occurredAt": "2026-12-06 10:00 UTC",
            "data": {"id": "j1", "kind": "backup", "attempts": 3, "error": {"code": "TIMEOUT", "message": "disk <full>"}},
            "fields": {}, "settingsUrl": "http://c/settings/notifications"});
        let built_in = Templates::load(None).unwrap();
        let (subject, html, text) = built_in.render("job.failed", &ctx).unwrap();
        assert_eq!(subject, "Backup job failed: disk <full>");
        assert!(html.contains("disk &lt;full&gt;"), "HTML escapes: {html}");
        assert!(text.contains("Reason: disk <full> (TIMEOUT)"), "plain text does not: {text}");
        let (_, _, default_text) = built_in.render("balance.low", &ctx).unwrap();
        assert!(default_text.starts_with("Backup job failed"), "types without their own use the default");

        let dir = std::env::temp_dir().join(format!("nimbus-templates-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("job.failed.txt.hbs"), "Ours: {{data.kind}}").unwrap();
        std::fs::write(dir.join("job.failed.subject.hbs"), "[Nimbus] {{data.kind}} failed\n").unwrap();
        let overridden = Templates::load(Some(&dir)).unwrap();
        let (subject, html, text) = overridden.render("job.failed", &ctx).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(text, "Ours: backup");
        assert_eq!(subject, "[Nimbus] backup failed");
        assert!(html.contains("Open the job") || html.contains("A <strong>backup</strong>"), "HTML still built in");
    }

    #[test]
    fn tls_modes_parse() {
        assert_eq!("starttls".parse::<SmtpTls>(), Ok(SmtpTls::StartTls));
        assert!("ssl".parse::<SmtpTls>().is_err());
    }
}
