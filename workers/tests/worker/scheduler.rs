//! The scheduler against Postgres: three worker processes ticking at one fire time start one job
//! per fire; an outage is caught up by each schedule's policy; a month end and a leap day fire
//! where they exist; a busy instance's fire is recorded without a job; a paused schedule fires
//! nothing until it resumes; when Redis is down, the jobs are owed to the outbox. Time is the
//! test's (a `ManualClock`), except for the processes, which read the system clock as in
//! production.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use nimbus_db::jobs::NewJob;
use nimbus_db::schedules::{self, NewSchedule, Schedule};
use nimbus_domain::{JobKind, MissedFirePolicy, ResourceRef};
use nimbus_jobs::schedule::CronSpec;
use nimbus_jobs::{Clock, ManualClock};
use nimbus_worker::scheduler::tick;
use serde_json::json;
use uuid::Uuid;

use crate::support::{Harness, Workers, wait_until};

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// A schedule starting a `meter` job (a queue no worker of this test consumes).
async fn schedule(h: &Harness, cron: &str, policy: MissedFirePolicy, first: DateTime<Utc>) -> Schedule {
    let spec = CronSpec::parse(cron).unwrap();
    let new = NewSchedule {
        tenant: Some(h.tenant),
        name: format!("{cron} {policy}"),
        cron: spec.as_str().to_owned(),
        job: NewJob::new(JobKind::Meter, "meter", json!({"what": "usage"})),
        policy,
        first_fire_at: first,
    };
    schedules::create(h.db.pool(), &new).await.unwrap()
}

/// `(fire_at, job id or none)` of a schedule, oldest first.
async fn fires(h: &Harness, s: &Schedule) -> Vec<(DateTime<Utc>, bool)> {
    let mut all = schedules::fires(h.db.pool(), s.id, 10_000).await.unwrap();
    all.reverse();
    all.into_iter().map(|(at, job, _)| (at, job.is_some())).collect()
}

async fn jobs_of(h: &Harness, s: &Schedule) -> Vec<(String, serde_json::Value)> {
    sqlx::query_as("select status, payload from jobs where payload->>'scheduleId' = $1 order by payload->>'fireAt'")
        .bind(s.id.to_string())
        .fetch_all(h.db.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn three_worker_processes_start_one_job_per_fire() {
    let h = Harness::new().await;
    // 300 schedules due a few seconds from now, every minute after that.
    let due = Utc::now() + chrono::Duration::seconds(3);
    let mut made = Vec::new();
    for _ in 0..300 {
        made.push(schedule(&h, "* * * * *", MissedFirePolicy::LatestOnly, due).await);
    }
    let mut workers = Workers::default();
    for name in ["sched-a", "sched-b", "sched-c"] {
        workers.spawn(&h, name);
    }
    let pool = h.db.pool().clone();
    let queue = h.queues().queue("meter").await.unwrap();
    // Fired (committed) and pushed: a replica pushes its batch right after the commit, so the
    // processes are stopped only once the messages are there.
    let all_fired = wait_until(Duration::from_secs(30), || {
        let (pool, queue) = (pool.clone(), queue.clone());
        async move {
            let n: i64 = sqlx::query_scalar("select count(*) from schedules where last_fire_at is not null")
                .fetch_one(&pool)
                .await
                .unwrap();
            n == 300 && queue.stats().await.unwrap().waiting >= 300
        }
    })
    .await;
    for name in ["sched-a", "sched-b", "sched-c"] {
        workers.assert_alive(name);
    }
    drop(workers);
    assert!(all_fired, "every schedule fired");
    // Exactly one job per fire, whichever process wrote it; the first fire of each is `due`.
    let per_fire: Vec<(Uuid, DateTime<Utc>, i64)> = sqlx::query_as(
        "select (payload->>'scheduleId')::uuid, (payload->>'fireAt')::timestamptz, count(*) from jobs \
         where kind = 'meter' group by 1, 2",
    )
    .fetch_all(h.db.pool())
    .await
    .unwrap();
    assert!(per_fire.iter().all(|(_, _, n)| *n == 1), "a fire started more than one job");
    let fire_rows: i64 =
        sqlx::query_scalar("select count(*) from schedule_fires").fetch_one(h.db.pool()).await.unwrap();
    assert_eq!(fire_rows as usize, per_fire.len(), "each fire row has its one job");
    let first: HashMap<Uuid, DateTime<Utc>> = per_fire.iter().fold(HashMap::new(), |mut m, (s, at, _)| {
        let e = m.entry(*s).or_insert(*at);
        *e = (*e).min(*at);
        m
    });
    assert_eq!(first.len(), 300);
    let due_trunc = due.timestamp();
    assert!(first.values().all(|at| at.timestamp() == due_trunc), "the first fire of each is its due time");
    // Each job was pushed to Redis once, right after its fire committed: no outbox row was owed.
    let waiting = queue.stats().await.unwrap().waiting;
    assert_eq!(waiting as usize, per_fire.len(), "one message per job");
    let owed: i64 = sqlx::query_scalar("select count(*) from outbox").fetch_one(h.db.pool()).await.unwrap();
    assert_eq!(owed, 0);
}

#[tokio::test]
async fn a_three_hour_outage_is_caught_up_by_each_policy() {
    let h = Harness::new().await;
    let start = t("2026-12-06T01:00:00Z");
    let all = schedule(&h, "0 * * * *", MissedFirePolicy::CatchUpAll, start).await;
    let latest = schedule(&h, "0 * * * *", MissedFirePolicy::LatestOnly, start).await;
    let skip = schedule(&h, "0 * * * *", MissedFirePolicy::Skip, start).await;
    let clock = ManualClock::at(t("2026-12-06T00:59:59Z"));
    assert_eq!(tick(h.db.pool(), &h.queues(), &clock).await.unwrap().started, 0, "nothing is due before its time");

    // Nothing ticked from 01:00 to 04:10.
    clock.set(t("2026-12-06T04:10:00Z"));
    let first = tick(h.db.pool(), &h.queues(), &clock).await.unwrap();
    assert_eq!((first.schedules, first.started), (3, 5));
    let hours = |hs: &[u32]| -> Vec<(DateTime<Utc>, bool)> {
        hs.iter().map(|h| (t(&format!("2026-12-06T{h:02}:00:00Z")), true)).collect()
    };
    assert_eq!(fires(&h, &all).await, hours(&[1, 2, 3, 4]), "catch_up_all fires every missed hour");
    assert_eq!(fires(&h, &latest).await, hours(&[4]), "latest_only fires once, for the latest");
    assert_eq!(fires(&h, &skip).await, hours(&[]), "skip fires none that is late");
    let stamps: Vec<String> =
        jobs_of(&h, &all).await.iter().map(|(_, p)| p["fireAt"].as_str().unwrap().to_owned()).collect();
    assert_eq!(stamps.len(), 4, "each job knows its fire time: {stamps:?}");
    assert_eq!(jobs_of(&h, &all).await[0].1["what"], "usage", "the schedule's payload is kept");

    // A second tick at the same time finds nothing due; on time, every policy fires.
    assert_eq!(tick(h.db.pool(), &h.queues(), &clock).await.unwrap().started, 0);
    clock.set(t("2026-12-06T05:00:01Z"));
    assert_eq!(tick(h.db.pool(), &h.queues(), &clock).await.unwrap().started, 3);
    assert_eq!(fires(&h, &skip).await, hours(&[5]));
    let listed = schedules::list(h.db.pool(), &Default::default(), Default::default()).await.unwrap().0;
    assert!(listed.iter().all(|l| l.schedule.next_fire_at == t("2026-12-06T06:00:00Z")), "{listed:?}");
    assert!(listed.iter().all(|l| l.schedule.last_fire_at == Some(t("2026-12-06T05:00:00Z"))));
    assert!(listed.iter().all(|l| l.last_job_status == Some(nimbus_domain::JobStatus::Queued)));
}

#[tokio::test]
async fn month_ends_and_leap_days_fire_where_they_exist() {
    let h = Harness::new().await;
    let spec = |c: &str, after: &str| CronSpec::parse(c).unwrap().next_after(t(after)).unwrap();
    let month_end =
        schedule(&h, "0 0 31 * *", MissedFirePolicy::CatchUpAll, spec("0 0 31 * *", "2027-01-01T00:00:00Z")).await;
    let leap =
        schedule(&h, "0 12 29 2 *", MissedFirePolicy::CatchUpAll, spec("0 12 29 2 *", "2026-12-06T00:00:00Z")).await;
    let monthly = schedule(&h, "monthly", MissedFirePolicy::CatchUpAll, t("2027-01-01T00:00:00Z")).await;
    let clock = ManualClock::at(t("2027-01-01T00:00:00Z"));
    // Month by month to the end of 2028: one tick a day (nothing is missed).
    while clock.now() < t("2029-01-01T00:00:00Z") {
        tick(h.db.pool(), &h.queues(), &clock).await.unwrap();
        clock.advance(chrono::Duration::days(1));
    }
    let ends: Vec<String> = fires(&h, &month_end).await.iter().map(|(at, _)| at.format("%Y-%m").to_string()).collect();
    // 7 months of each year have a 31st.
    assert_eq!(ends.len(), 14, "{ends:?}");
    assert!(!ends.iter().any(|m| m.ends_with("-02") || m.ends_with("-04") || m.ends_with("-11")), "{ends:?}");
    assert_eq!(fires(&h, &leap).await, vec![(t("2028-02-29T12:00:00Z"), true)], "only 2028 has a February 29th");
    assert_eq!(fires(&h, &monthly).await.len(), 24);
}

#[tokio::test]
async fn a_busy_instance_and_a_paused_schedule() {
    let h = Harness::new().await;
    let (instance, provision) = h.accept("sched-busy", 3).await;
    // A backup schedule of an instance whose provision is still queued.
    let mut job = NewJob::new(JobKind::Backup, "backup", json!({}));
    job.resources = vec![ResourceRef::instance(instance.id)];
    let new = NewSchedule {
        tenant: Some(h.tenant),
        name: "nightly backup".into(),
        cron: "0 3 * * *".into(),
        job,
        policy: MissedFirePolicy::LatestOnly,
        first_fire_at: t("2026-12-07T03:00:00Z"),
    };
    let backup = schedules::create(h.db.pool(), &new).await.unwrap();
    let clock = ManualClock::at(t("2026-12-07T03:00:00Z"));
    let done = tick(h.db.pool(), &h.queues(), &clock).await.unwrap();
    assert_eq!((done.started, done.busy), (0, 1));
    let recorded = schedules::fires(h.db.pool(), backup.id, 10).await.unwrap();
    assert_eq!(recorded, vec![(t("2026-12-07T03:00:00Z"), None, Some(schedules::SKIPPED_BUSY.to_owned()))]);
    let listed = schedules::list(h.db.pool(), &Default::default(), Default::default()).await.unwrap().0;
    assert_eq!(listed[0].last_skipped.as_deref(), Some(schedules::SKIPPED_BUSY));

    // Paused for two days: nothing fires; resumed, `latest_only` fires once.
    schedules::set_paused(h.db.pool(), backup.id, true).await.unwrap();
    clock.set(t("2026-12-09T03:30:00Z"));
    assert_eq!(tick(h.db.pool(), &h.queues(), &clock).await.unwrap().schedules, 0);
    // The provision is over by now (its job no longer holds the instance).
    nimbus_db::jobs::cancel(h.db.pool(), provision.job.id, None).await.unwrap();
    schedules::set_paused(h.db.pool(), backup.id, false).await.unwrap();
    let resumed = tick(h.db.pool(), &h.queues(), &clock).await.unwrap();
    assert_eq!((resumed.started, resumed.busy), (1, 0));
    assert_eq!(schedules::fires(h.db.pool(), backup.id, 10).await.unwrap()[0].0, t("2026-12-09T03:00:00Z"));
}

#[tokio::test]
async fn fires_while_redis_is_down_are_owed_to_the_outbox() {
    let h = Harness::new().await;
    let s = schedule(&h, "0 * * * *", MissedFirePolicy::CatchUpAll, t("2026-12-06T01:00:00Z")).await;
    let clock = ManualClock::at(t("2026-12-06T02:30:00Z"));
    // A Redis nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let down = nimbus_jobs::Queues::new(&format!("redis://127.0.0.1:{port}/0"), h.key_prefix()).unwrap();
    let fired = tick(h.db.pool(), &down, &clock).await.unwrap();
    assert_eq!(fired.started, 2, "the fires and their jobs commit whatever Redis does");
    let owed: Vec<String> = sqlx::query_scalar(
        "select j.payload->>'fireAt' from outbox o join jobs j on j.id = o.job_id where o.pushed_at is null order by 1",
    )
    .fetch_all(h.db.pool())
    .await
    .unwrap();
    assert_eq!(owed.len(), 2, "each job is owed its dispatch: {owed:?}");
    assert_eq!(fires(&h, &s).await.len(), 2);
}
