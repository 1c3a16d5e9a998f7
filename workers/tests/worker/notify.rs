//! Notifications end to end: events to the in-app feed and to emails through a real SMTP catcher
//! (`infra/testing/smtp_catcher.py`, PyPI `aiosmtpd`): one email per opted-in user, none to
//! those who are not; a refusal for now is retried; a refusal for good marks the address bounced
//! and is not retried.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use nimbus_db::events::{self, NewEvent};
use nimbus_db::notifications::{self, Preference};
use nimbus_db::users::{self, NewUser};
use nimbus_domain::{JobStatus, Role, UserId};
use nimbus_worker::notify::{MailConfig, Mailer, SmtpTls};
use nimbus_worker::runtime::{self, RuntimeOptions};
use serde_json::{Value, json};

use crate::support::{Harness, wait_until};

struct Catcher {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Catcher {
    fn start() -> Catcher {
        let python = std::env::var("NIMBUS_PYTHON").ok().filter(|p| !p.is_empty()).unwrap_or_else(|| {
            panic!("NIMBUS_PYTHON is not set: run `make test`, which points it at the venv with aiosmtpd")
        });
        let dir = std::env::temp_dir().join(format!("nimbus-smtp-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(dir.join("mail")).unwrap();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../infra/testing/smtp_catcher.py");
        let mut child = Command::new(python)
            .arg(script)
            .arg(dir.join("port"))
            .arg(dir.join("mail"))
            .stdin(Stdio::null())
            .spawn()
            .expect("the SMTP catcher starts");
        for _ in 0..200 {
            if let Ok(port) = std::fs::read_to_string(dir.join("port")) {
                return Catcher { child, port: port.trim().parse().unwrap(), dir };
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("the SMTP catcher did not start");
    }

    /// Every message caught.
    fn mail(&self) -> Vec<Value> {
        let mut files: Vec<_> = std::fs::read_dir(self.dir.join("mail"))
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        files.iter().map(|p| serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()).collect()
    }

    fn mail_to(&self, address: &str) -> Vec<Value> {
        self.mail().into_iter().filter(|m| m["to"].as_array().unwrap().iter().any(|t| t == address)).collect()
    }
}

impl Drop for Catcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn user(h: &Harness, email: &str) -> UserId {
    users::create(h.db.pool(), h.tenant, &NewUser { email: email.into(), display_name: None, role: Role::User })
        .await
        .unwrap()
        .id
}

async fn email_job_status(h: &Harness, user: UserId) -> Vec<(JobStatus, Option<String>, i32)> {
    let rows: Vec<(String, Option<String>, i32)> = sqlx::query_as(
        "select j.status, j.error_code, j.attempts from notification_emails n join jobs j on j.id = n.job_id \
         where n.user_id = $1 order by j.created_at",
    )
    .bind(user.as_uuid())
    .fetch_all(h.db.pool())
    .await
    .unwrap();
    rows.into_iter().map(|(s, c, a)| (s.parse().unwrap(), c, a)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_email_the_users_who_chose_them_once_retry_for_now_and_stop_at_a_bounce() {
    let h = Harness::new().await;
    let catcher = Catcher::start();
    let opted = user(&h, "opted@example.test").await;
    let quiet = user(&h, "quiet@example.test").await;
    let bouncing = user(&h, "bounce@example.test").await;
    let deferred = user(&h, "later@example.test").await;
    // `job.succeeded` emails nobody by default: one user chooses it, another turns the feed off.
    let choice = |email, in_app| Preference { event_type: "job.succeeded".into(), email, in_app };
    notifications::set_preferences(h.db.pool(), opted, &[choice(true, true)]).await.unwrap();
    notifications::set_preferences(h.db.pool(), quiet, &[choice(false, false)]).await.unwrap();

    let mut env = (*h.env("mailer", 4).await).clone();
    env.mail = Some(
        Mailer::new(&MailConfig {
            host: "127.0.0.1".into(),
            port: catcher.port,
            tls: SmtpTls::None,
            username: None,
            password: None,
            from: "Nimbus <nimbus@example.test>".into(),
            template_dir: None,
            console_url: Some("https://console.example.test".into()),
        })
        .unwrap(),
    );
    let env = Arc::new(env);
    let options = RuntimeOptions {
        relay: nimbus_worker::relay::RelayConfig { idle: Duration::from_millis(20), ..Default::default() },
        recovery_every: Duration::from_millis(200),
        ..RuntimeOptions::default()
    };
    let running = tokio::spawn(runtime::run(env.clone(), h.queues(), options));

    let (_, enqueued) = h.accept("mailed", 3).await;
    h.push(&enqueued).await;
    let job = h.final_job(enqueued.job.id, Duration::from_secs(60)).await;
    assert_eq!(job.status, JobStatus::Succeeded);
    let sent = || async { !catcher.mail_to("opted@example.test").is_empty() };
    assert!(wait_until(Duration::from_secs(30), sent).await, "{:#?}", catcher.mail());

    // A type that emails everyone by default.
    let low = NewEvent { kind: "balance.low", at: Utc::now(), tenant: Some(h.tenant), resource: None, data: json!({}) };
    events::record(h.db.pool(), &low).await.unwrap();
    let all = || async {
        !catcher.mail_to("quiet@example.test").is_empty() && !catcher.mail_to("later@example.test").is_empty()
    };
    assert!(wait_until(Duration::from_secs(30), all).await, "{:#?}", catcher.mail());
    let bounced = || async {
        sqlx::query_scalar::<_, Option<chrono::DateTime<Utc>>>("select email_bounced_at from users where id = $1")
            .bind(bouncing.as_uuid())
            .fetch_one(h.db.pool())
            .await
            .unwrap()
            .is_some()
    };
    assert!(wait_until(Duration::from_secs(30), bounced).await);
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let to_opted = catcher.mail_to("opted@example.test");
    let subjects: Vec<String> = to_opted
        .iter()
        .map(|m| m["data"].as_str().unwrap().lines().find(|l| l.starts_with("Subject:")).unwrap().to_owned())
        .collect();
    assert_eq!(subjects.iter().filter(|s| s.contains("Provision job succeeded")).count(), 1, "{subjects:?}");
    assert_eq!(subjects.iter().filter(|s| s.contains("balance is low")).count(), 1, "{subjects:?}");
    let raw = to_opted[0]["data"].as_str().unwrap();
    assert!(raw.contains("multipart/alternative") && raw.contains("text/html") && raw.contains("text/plain"));
    let to_quiet = catcher.mail_to("quiet@example.test");
    assert_eq!(to_quiet.len(), 1, "quiet chose no job emails: only the balance");
    assert_eq!(catcher.mail_to("later@example.test").len(), 1, "refused once for now, then sent once");
    assert!(catcher.mail_to("bounce@example.test").is_empty());

    let later = email_job_status(&h, deferred).await;
    assert_eq!(later.len(), 1);
    assert_eq!((later[0].0, later[0].2), (JobStatus::Succeeded, 2), "retried after the refusal for now");
    let bounce = email_job_status(&h, bouncing).await;
    assert_eq!(bounce.len(), 1);
    assert_eq!(bounce[0].0, JobStatus::Failed);
    assert_eq!(bounce[0].1.as_deref(), Some("EMAIL_REJECTED"));
    assert_eq!(bounce[0].2, 1, "a refusal for good is not retried");

    // The feed: everyone but the user who turned job.succeeded off in-app has it.
    let fed: Vec<uuid::Uuid> = sqlx::query_scalar("select user_id from notifications where type = 'job.succeeded'")
        .fetch_all(h.db.pool())
        .await
        .unwrap();
    assert!(fed.contains(&opted.as_uuid()) && !fed.contains(&quiet.as_uuid()));

    // The bounced address is owed nothing more.
    let again =
        NewEvent { kind: "balance.low", at: Utc::now(), tenant: Some(h.tenant), resource: None, data: json!({}) };
    let again = events::record(h.db.pool(), &again).await.unwrap();
    let owed = notifications::owe_emails(h.db.pool(), &[again], &["balance.low"]).await.unwrap();
    assert!(owed.iter().all(|o| o.user_id != bouncing.as_uuid()));

    env.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(15), running).await.unwrap().unwrap().unwrap();
}
