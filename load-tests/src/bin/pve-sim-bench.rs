//! Benchmark of the Proxmox simulator: is it fast enough never to be the bottleneck of our load tests?
//!
//! Targets (issue "Proxmox VE client and pve-sim"): at least 5,000 `GET .../status/current` per second
//! and a list of 10,000 guests in under 50 ms. The anchor, measured in the same run, is `GET /version`
//! over the same TLS connections and token check: the floor of the simulator's HTTP stack, so the
//! ratio shows what the cluster model itself costs.
//!
//! Reproduce: `make bench` (= `cargo run --release -p nimbus-load-tests --bin pve-sim-bench`).

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use nimbus_load_tests::{Summary, closed_loop};

#[derive(Parser, Debug)]
struct Args {
    /// Guests created on node pve1 before measuring.
    #[arg(long, default_value_t = 10_000)]
    guests: usize,
    /// Concurrent closed-loop clients.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Requests per throughput scenario (bounded by --max-seconds as well).
    #[arg(long, default_value_t = 50_000)]
    requests: usize,
    #[arg(long, default_value_t = 20)]
    max_seconds: u64,
    /// Sequential list calls measured for the list-latency figure.
    #[arg(long, default_value_t = 50)]
    list_samples: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // The simulator gets its own runtime (own threads), as it would in its own process.
    let sim_runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let sim = sim_runtime.block_on(pve_sim::start(pve_sim::SimConfig::for_tests(), "127.0.0.1:0".parse()?))?;
    let load_runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let result = load_runtime.block_on(run(&args, sim.base_url(), sim.auth_header()));
    sim_runtime.block_on(sim.shutdown());
    result
}

async fn run(args: &Args, base_url: String, auth: String) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .danger_accept_invalid_certs(true) // the simulator's self-signed certificate; benchmark only
        .pool_max_idle_per_host(args.concurrency)
        .build()?;
    let api = format!("{base_url}/api2/json");

    println!("pve-sim benchmark: {} guests on pve1, {} concurrent clients", args.guests, args.concurrency);
    let first_vmid = 100_000;
    let created = closed_loop(32, args.guests, Duration::from_secs(600), {
        let (http, api, auth) = (http.clone(), api.clone(), auth.clone());
        move |i| {
            let (http, api, auth) = (http.clone(), api.clone(), auth.clone());
            async move {
                let vmid = (first_vmid + i).to_string();
                let name = format!("bench-{i}");
                let form = [("vmid", vmid.as_str()), ("name", name.as_str()), ("memory", "512"), ("cores", "1")];
                let resp = http
                    .post(format!("{api}/nodes/pve1/qemu"))
                    .header("Authorization", &auth)
                    .form(&form)
                    .send()
                    .await?;
                anyhow::ensure!(resp.status().is_success(), "create {vmid}: {}", resp.status());
                Ok(())
            }
        }
    })
    .await;
    anyhow::ensure!(created.errors == 0, "{} guest creations failed", created.errors);
    println!(
        "created {} guests in {:.1} s ({:.0}/s)",
        created.requests,
        created.elapsed.as_secs_f64(),
        created.per_second()
    );
    wait_for_guest_count(&http, &api, &auth, args.guests).await?;

    let max_time = Duration::from_secs(args.max_seconds);
    let version_url = format!("{api}/version");
    let anchor =
        closed_loop(args.concurrency, args.requests, max_time, get_ok(&http, &auth, move |_| version_url.clone()))
            .await;
    let guests = args.guests;
    let qemu_url = format!("{api}/nodes/pve1/qemu");
    // A stride through the vmids so consecutive requests hit different guests.
    let status_url = move |i: usize| format!("{qemu_url}/{}/status/current", first_vmid + (i * 7919) % guests);
    let status = closed_loop(args.concurrency, args.requests, max_time, get_ok(&http, &auth, status_url)).await;
    report("GET /version (anchor)", &anchor);
    report("GET /nodes/pve1/qemu/{vmid}/status/current", &status);
    println!("status/current vs anchor: {:.2}x", status.per_second() / anchor.per_second());

    let node_list = sequential(&http, &auth, &format!("{api}/nodes/pve1/qemu"), args.list_samples).await?;
    let cluster_list = sequential(&http, &auth, &format!("{api}/cluster/resources?type=vm"), args.list_samples).await?;
    report(&format!("GET /nodes/pve1/qemu ({guests} guests)"), &node_list);
    report(&format!("GET /cluster/resources?type=vm ({guests}+ guests)"), &cluster_list);

    let status_ok = status.per_second() >= 5_000.0 && status.errors == 0;
    let lists_ok = node_list.percentile_ms(0.5) < 50.0 && cluster_list.percentile_ms(0.5) < 50.0;
    println!("target status/current >= 5,000/s: {}", verdict(status_ok));
    println!("target list of {guests} guests < 50 ms (median): {}", verdict(lists_ok));
    println!("reproduce: cargo run --release -p nimbus-load-tests --bin pve-sim-bench");
    Ok(())
}

/// A request factory for `closed_loop`: GET the URL built from the request index, expect 200.
fn get_ok(
    http: &reqwest::Client,
    auth: &str,
    url: impl Fn(usize) -> String + Clone + Send + Sync + 'static,
) -> impl Fn(usize) -> std::pin::Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>> + Clone + Send + 'static {
    let (http, auth) = (http.clone(), auth.to_string());
    move |i| {
        let (http, auth) = (http.clone(), auth.clone());
        let target = url(i);
        Box::pin(async move {
            let resp = http.get(&target).header("Authorization", &auth).send().await?;
            anyhow::ensure!(resp.status().is_success(), "GET {target}: {}", resp.status());
            resp.bytes().await?;
            Ok(())
        })
    }
}

async fn sequential(http: &reqwest::Client, auth: &str, url: &str, samples: usize) -> anyhow::Result<Summary> {
    let mut micros = Vec::with_capacity(samples);
    let started = std::time::Instant::now();
    for _ in 0..samples {
        let t = std::time::Instant::now();
        let resp = http.get(url).header("Authorization", auth).send().await?;
        anyhow::ensure!(resp.status().is_success(), "GET {url}: {}", resp.status());
        resp.bytes().await?;
        micros.push(t.elapsed().as_micros() as u64);
    }
    Ok(Summary::from_samples(micros, 0, started.elapsed()))
}

/// Creation tasks run asynchronously: wait until the cluster lists every guest we created.
async fn wait_for_guest_count(http: &reqwest::Client, api: &str, auth: &str, want: usize) -> anyhow::Result<()> {
    for _ in 0..600 {
        let body: serde_json::Value =
            http.get(format!("{api}/nodes/pve1/qemu")).header("Authorization", auth).send().await?.json().await?;
        let have =
            body["data"].as_array().context("qemu list is not an array")?.iter().filter(|g| g["template"] != 1).count();
        if have >= want {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("the simulator never listed {want} guests")
}

fn report(label: &str, s: &Summary) {
    println!(
        "{label:<55} {:>9.0} req/s  p50 {:>7.2} ms  p99 {:>7.2} ms  ({} requests, {} errors)",
        s.per_second(),
        s.percentile_ms(0.5),
        s.percentile_ms(0.99),
        s.requests,
        s.errors
    );
}

fn verdict(ok: bool) -> &'static str {
    if ok { "PASS" } else { "FAIL" }
}
