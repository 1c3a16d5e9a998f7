//! Metering and invoicing at scale (issue 13, item 7): one hour of 100,000 instances metered by
//! `nimbus_db::usage::meter_hour` (what the `meter` job runs), next to the floor: a plain
//! `INSERT … SELECT` of the same rows (the same columns and amounts, the price looked up the same
//! way) into a copy of the table, in the same run on the same database. Then a month of
//! invoices for 10,000 tenants (`nimbus_db::invoices::issue`, one transaction per tenant, as the
//! `invoice` job does).
//!
//! Printed: seconds and rows per second for each, the ratio to the floor, and checks (every row
//! once; a second metering of the hour inserts nothing; one invoice per tenant, numbers gapless).
//! Goal: 100,000 instances metered in ≤ 10 s, ≥ 0.5× the floor's rate.
//!
//! PostgreSQL runs durable (fsync and synchronous_commit on, `services.sh --persist`).
//!
//! Reproduce: `cargo build --release -p nimbus-load-tests --bins && target/release/meter-bench`
//! (or `make bench`).

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::time::Instant;

use chrono::{DateTime, Duration, Utc};
use clap::Parser;
use nimbus_db::PgPool;
use nimbus_load_tests::services::Services;

#[derive(Parser, Debug)]
#[command(about = "Metering one hour of 100,000 instances and invoicing 10,000 tenants")]
struct Args {
    /// Instances metered.
    #[arg(long, default_value_t = 100_000)]
    instances: usize,
    /// Tenants they belong to (each is invoiced).
    #[arg(long, default_value_t = 10_000)]
    tenants: usize,
    /// Services folder (removed at the end); default /tmp/nimbus-meter-bench-PID.
    #[arg(long)]
    dir: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir =
        args.dir.clone().unwrap_or_else(|| PathBuf::from(format!("/tmp/nimbus-meter-bench-{}", std::process::id())));
    let services = Services::start(&dir, true)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let result = runtime.block_on(run(&args, &services));
    drop(services);
    result
}

/// `tenants` tenants on one priced plan and `instances` running instances spread over them,
/// created a day before `hour`.
async fn seed(owner: &PgPool, tenants: usize, instances: usize, hour: DateTime<Utc>) -> anyhow::Result<()> {
    let demo = nimbus_db::seed::seed_demo(owner).await?;
    let plan = nimbus_db::plans::for_tenant(owner, demo.tenant.id).await?;
    // Room for every instance within the plan (the database checks quotas on insert).
    sqlx::query(
        "update plans set max_instances = 1000000, max_vcpus = 10000000, max_memory_mib = 1000000000000, \
         max_disk_gib = 1000000000 where id = $1",
    )
    .bind(plan.id.as_uuid())
    .execute(owner)
    .await?;
    sqlx::query(
        "update plan_prices set vcpu_hour = 0.0052, memory_gib_hour = 0.0031, disk_gib_hour = 0.00006, \
         monthly_cap = 25 where plan_id = $1",
    )
    .bind(plan.id.as_uuid())
    .execute(owner)
    .await?;
    sqlx::query(
        "insert into tenants (id, name, plan_id) select gen_random_uuid(), 'bench tenant ' || i, $1 \
         from generate_series(1, $2) as i",
    )
    .bind(plan.id.as_uuid())
    .bind(tenants as i64)
    .execute(owner)
    .await?;
    sqlx::query(
        "insert into instances (id, tenant_id, name, kind, template, cores, memory_mib, disk_gib, node, status, created_at) \
         select gen_random_uuid(), t.id, 'vm-' || i, 'qemu', 'debian-12-cloudinit', 1 + i % 4, 1024 * (1 + i % 8), \
                20 + i % 100, 'pve1', 'running', $3 \
         from generate_series(1, $1) as i \
         join (select id, row_number() over (order by id) - 1 as n from tenants where name like 'bench tenant %') t \
           on t.n = i % $2",
    )
    .bind(instances as i64)
    .bind(tenants as i64)
    .bind(hour - Duration::days(1))
    .execute(owner)
    .await?;
    sqlx::query("vacuum analyze").execute(owner).await?;
    Ok(())
}

/// The floor: the same rows for `hour`, into `usage_records` itself, by one plain statement
/// (no conflict handling, no `metered_hours` row), in its own transaction.
async fn floor(owner: &PgPool, hour: DateTime<Utc>) -> anyhow::Result<(std::time::Duration, u64)> {
    let started = Instant::now();
    let rows = sqlx::query(
        "insert into usage_records (instance_id, hour, tenant_id, price_id, vcpus, memory_mib, disk_gib, amount, \
                                    currency, tier, monthly_cap) \
         select i.id, $1, i.tenant_id, p.id, i.cores, i.memory_mib, i.disk_gib, \
                coalesce(tr.hour_price, \
                         i.cores * p.vcpu_hour + i.memory_mib / 1024.0 * p.memory_gib_hour + i.disk_gib * p.disk_gib_hour), \
                p.currency, tr.name, case when tr.name is null then p.monthly_cap else tr.monthly_cap end \
         from instances i join tenants t on t.id = i.tenant_id \
         join lateral (select * from plan_prices pp where pp.plan_id = t.plan_id and pp.valid_from <= $1 \
                       order by pp.valid_from desc limit 1) p on true \
         left join plan_price_tiers tr on tr.price_id = p.id and tr.cores = i.cores \
                                      and tr.memory_mib = i.memory_mib and tr.disk_gib = i.disk_gib",
    )
    .bind(hour)
    .execute(owner)
    .await?
    .rows_affected();
    Ok((started.elapsed(), rows))
}

async fn run(args: &Args, services: &Services) -> anyhow::Result<()> {
    let owner = nimbus_db::connect(&services.var("NIMBUS_DATABASE_URL")?, 4).await?;
    nimbus_db::migrate(&owner).await?;
    let app = nimbus_db::connect(&services.var("NIMBUS_APP_DATABASE_URL")?, 4).await?;
    let hour: DateTime<Utc> = "2026-11-30T23:00:00Z".parse()?;
    seed(&owner, args.tenants, args.instances, hour).await?;
    println!("metering one hour of {} instances of {} tenants (PostgreSQL durable)", args.instances, args.tenants);

    // The floor before and after (other hours of the same table), their mean beside the meter.
    let (before, floor_rows) = floor(&owner, hour - Duration::hours(2)).await?;
    let started = Instant::now();
    let rows = nimbus_db::usage::meter_hour(&app, hour).await?;
    let took = started.elapsed();
    let again = nimbus_db::usage::meter_hour(&app, hour).await?;
    let (after, _) = floor(&owner, hour - Duration::hours(1)).await?;
    let floor_took = (before + after) / 2;
    let rate = rows as f64 / took.as_secs_f64();
    let floor_rate = floor_rows as f64 / floor_took.as_secs_f64();
    println!(
        "  floor (INSERT … SELECT): {floor_rows} rows in {:.2} s = {floor_rate:.0} rows/s (runs before and after: {:.2} s, {:.2} s)",
        floor_took.as_secs_f64(),
        before.as_secs_f64(),
        after.as_secs_f64()
    );
    println!("  meter_hour:              {rows} rows in {:.2} s = {rate:.0} rows/s", took.as_secs_f64());
    println!(
        "  ratio to the floor: {:.2}x (goal ≥ 0.5x); within 10 s: {}",
        rate / floor_rate,
        took.as_secs_f64() <= 10.0
    );
    let once = rows == args.instances as u64 && again == 0;
    println!("  every instance once, the second run inserting nothing: {}", if once { "PASS" } else { "FAIL" });

    // A day of usage per instance: 21 more hours by plain statements (the hour's rows again, one
    // hour apart), then every tenant invoiced as the `invoice` job does.
    sqlx::query(
        "insert into usage_records (instance_id, hour, tenant_id, price_id, vcpus, memory_mib, disk_gib, amount, currency, \
                                    tier, monthly_cap) \
         select u.instance_id, u.hour - h * interval '1 hour', u.tenant_id, u.price_id, u.vcpus, u.memory_mib, \
                u.disk_gib, u.amount, u.currency, u.tier, u.monthly_cap \
         from usage_records u, generate_series(3, 23) as h where u.hour = $1",
    )
    .bind(hour)
    .execute(&owner)
    .await?;
    sqlx::query("analyze usage_records").execute(&owner).await?;
    let (from, to) = nimbus_db::invoices::month_of(hour);
    let started = Instant::now();
    let tenants = nimbus_db::usage::tenants_to_invoice(&app, from, to).await?.len();
    let issued = nimbus_db::invoices::issue_all(&app, from, to, 100).await? as i32;
    let took = started.elapsed();
    println!(
        "invoicing {tenants} tenants ({} instances, 24 hours each; 100 to a transaction): {issued} invoices in {:.2} s = {:.0} invoices/s",
        args.instances,
        took.as_secs_f64(),
        issued as f64 / took.as_secs_f64()
    );
    let (count, last): (i64, Option<i32>) =
        sqlx::query_as("select (select count(*) from invoices), (select last from invoice_numbers where year = 2026)")
            .fetch_one(&owner)
            .await?;
    let gapless = count == i64::from(issued) && last == Some(issued);
    println!("  one invoice per tenant, numbers 1..{issued} without gaps: {}", if gapless { "PASS" } else { "FAIL" });
    Ok(())
}
