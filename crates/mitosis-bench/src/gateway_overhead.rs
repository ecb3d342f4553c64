//! `mitosis bench gateway`: what the gateway adds to a call of a warm
//! instance, and how many invocations per second it serves.
//!
//! Baseline, in the same run: the same function's warm instance on the same
//! worker called directly over its worker connection (what the gateway does
//! once it has picked the instance), without HTTP, routing or pools.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use mitosis_gateway::client::Client;
use mitosis_gateway::instance::Instance;
use mitosis_gateway::Policy;
use mitosis_proto::instance::{InstanceSpec, InstanceStart};
use serde::Serialize;

use crate::functions::Suite;
use crate::platform::Workers;
use crate::{median, percentile};

/// Options of `mitosis bench gateway`.
#[derive(Debug, Clone)]
pub struct Options {
    pub function: String,
    /// Sequential calls per path (medians and P99 reported).
    pub calls: usize,
    /// Concurrent closed-loop clients for the throughput part.
    pub clients: Vec<usize>,
    pub seconds: u64,
    pub json: bool,
}

/// Targets from the issue.
const TARGET_ADDED_P50_MS: f64 = 0.5;
const TARGET_RATE: f64 = 5000.0;

#[derive(Debug, Serialize)]
struct Latency {
    p50_ms: f64,
    p99_ms: f64,
}

impl Latency {
    fn of(samples_ms: &[f64]) -> Latency {
        Latency { p50_ms: median(samples_ms), p99_ms: percentile(samples_ms, 99.0) }
    }
}

#[derive(Debug, Serialize)]
struct Rate {
    clients: usize,
    direct_per_s: f64,
    gateway_per_s: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    function: String,
    calls: usize,
    worker: String,
    direct: Latency,
    gateway: Latency,
    added_p50_ms: f64,
    rates: Vec<Rate>,
    target_added_p50_ms: f64,
    target_rate_per_s: f64,
    added_p50_met: bool,
    rate_met: bool,
}

pub fn run(bin: &Path, opts: &Options) -> anyhow::Result<()> {
    let suite = Suite::locate(None, None)?;
    let workers = Workers::start(bin, "bench-gateway", suite)?;
    let mut function = workers.function(&opts.function);
    let max_clients = opts.clients.iter().copied().max().unwrap_or(1);
    function.max_instances = u32::try_from(max_clients).unwrap_or(16).max(1);
    let auth = workers.auth()?;
    let opts2 = opts.clone();
    let report = workers.cluster.run(|_| {
        workers.with_gateway(Policy::Fork, move |rt, gateway, url| {
            gateway.register(&opts2.function, function.clone());
            let client = Client::new(url, Duration::from_secs(120));
            // The first call starts (and seeds) the instance; the next ones are warm.
            let first = client.invoke(&opts2.function, b"").context("the first invocation")?;
            if first.status != 200 {
                bail!("the first invocation answered {}", first.status);
            }
            let worker = gateway.functions()[0].live().first().map(|(_, w)| w.clone()).context("no live instance")?;
            for _ in 0..50 {
                client.invoke(&opts2.function, b"")?;
            }
            let mut via_gateway = Vec::with_capacity(opts2.calls);
            for _ in 0..opts2.calls {
                let t = Instant::now();
                let a = client.invoke(&opts2.function, b"")?;
                via_gateway.push(t.elapsed().as_secs_f64() * 1e3);
                if a.start.as_deref() != Some("warm") {
                    bail!("a sequential call was not served warm ({:?})", a.start);
                }
            }
            // The baseline: an instance of the same function on the same worker, called directly.
            let direct = start_direct(rt, &worker, &auth, &function.dir, &opts2.function, 0)?;
            let mut direct_ms = Vec::with_capacity(opts2.calls);
            rt.block_on(async {
                for _ in 0..50 {
                    direct.invoke(Vec::new(), Duration::from_secs(30)).await?;
                }
                for _ in 0..opts2.calls {
                    let t = Instant::now();
                    direct.invoke(Vec::new(), Duration::from_secs(30)).await?;
                    direct_ms.push(t.elapsed().as_secs_f64() * 1e3);
                }
                anyhow::Ok(())
            })?;
            drop(direct);
            let mut rates = Vec::new();
            for &clients in &opts2.clients {
                let direct_rate = direct_rate(rt, &worker, &auth, &function.dir, &opts2.function, clients, opts2.seconds)?;
                let gateway_rate = gateway_rate(url, &opts2.function, clients, opts2.seconds)?;
                rates.push(Rate { clients, direct_per_s: direct_rate, gateway_per_s: gateway_rate });
            }
            let direct = Latency::of(&direct_ms);
            let gateway_lat = Latency::of(&via_gateway);
            let added = gateway_lat.p50_ms - direct.p50_ms;
            let best = rates.iter().map(|r| r.gateway_per_s).fold(0.0, f64::max);
            Ok(Report {
                function: opts2.function.clone(),
                calls: opts2.calls,
                worker,
                added_p50_ms: added,
                added_p50_met: added <= TARGET_ADDED_P50_MS,
                rate_met: best >= TARGET_RATE,
                direct,
                gateway: gateway_lat,
                rates,
                target_added_p50_ms: TARGET_ADDED_P50_MS,
                target_rate_per_s: TARGET_RATE,
            })
        })
    })?;
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!("gateway overhead on a warm `{}` instance ({} sequential calls each, worker {})", report.function, report.calls, report.worker);
    println!("| path | P50 | P99 |");
    println!("|---|---|---|");
    println!("| direct call of the instance (baseline) | {:.3} ms | {:.3} ms |", report.direct.p50_ms, report.direct.p99_ms);
    println!("| through the gateway (HTTP) | {:.3} ms | {:.3} ms |", report.gateway.p50_ms, report.gateway.p99_ms);
    println!(
        "| added by the gateway | {:.3} ms | target <= {} ms: {} |",
        report.added_p50_ms,
        TARGET_ADDED_P50_MS,
        if report.added_p50_met { "met" } else { "MISSED" }
    );
    println!();
    println!("throughput, closed-loop clients for {} s each", opts.seconds);
    println!("| clients | direct (baseline) | through the gateway | ratio |");
    println!("|---|---|---|---|");
    for r in &report.rates {
        println!("| {} | {:.0}/s | {:.0}/s | {:.2} |", r.clients, r.direct_per_s, r.gateway_per_s, r.gateway_per_s / r.direct_per_s.max(1e-9));
    }
    println!("target >= {TARGET_RATE:.0} invocations/s through the gateway: {}", if report.rate_met { "met" } else { "MISSED" });
    Ok(())
}

fn start_direct(
    rt: &tokio::runtime::Runtime,
    worker: &str,
    auth: &mitosis_gateway::worker::WorkerAuth,
    dir: &str,
    function: &str,
    n: usize,
) -> anyhow::Result<Arc<Instance>> {
    let spec = InstanceSpec {
        name: format!("{function}-direct-{n}"),
        function: format!("{function}-direct"),
        dir: dir.to_string(),
        start: InstanceStart::Cold { prepare_as: None },
        memory_bytes: Some(512 << 20),
        offload_idle_after_ms: None,
        offload_policy: Default::default(),
    };
    let (worker, auth) = (worker.to_string(), auth.clone());
    let started = rt.block_on(async {
        tokio::task::spawn_blocking(move || Instance::start(&worker, &auth, &spec, Duration::from_secs(120), || {})).await
    })??;
    Ok(started.instance)
}

/// Invocations per second of `clients` closed loops, each on its own directly called instance.
fn direct_rate(
    rt: &tokio::runtime::Runtime,
    worker: &str,
    auth: &mitosis_gateway::worker::WorkerAuth,
    dir: &str,
    function: &str,
    clients: usize,
    seconds: u64,
) -> anyhow::Result<f64> {
    let mut instances = Vec::new();
    for n in 0..clients {
        instances.push(start_direct(rt, worker, auth, dir, function, n + 1)?);
    }
    let done = Arc::new(AtomicU64::new(0));
    rt.block_on(async {
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for i in &instances {
            let (i, done, stop) = (i.clone(), done.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                let _ = i.invoke(Vec::new(), Duration::from_secs(30)).await;
                while !stop.load(Ordering::Relaxed) {
                    if i.invoke(Vec::new(), Duration::from_secs(30)).await.is_err() {
                        break;
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        let before = done.load(Ordering::Relaxed);
        let t = Instant::now();
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        let n = done.load(Ordering::Relaxed) - before;
        let rate = n as f64 / t.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            let _ = t.await;
        }
        anyhow::Ok(rate)
    })
}

/// Invocations per second of `clients` closed-loop HTTP clients through the gateway.
fn gateway_rate(url: &str, function: &str, clients: usize, seconds: u64) -> anyhow::Result<f64> {
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let counting = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for _ in 0..clients {
        let (url, function) = (url.to_string(), function.to_string());
        let (done, failed, stop, counting) = (done.clone(), failed.clone(), stop.clone(), counting.clone());
        threads.push(std::thread::spawn(move || {
            let client = Client::new(&url, Duration::from_secs(60));
            while !stop.load(Ordering::Relaxed) {
                match client.invoke(&function, b"") {
                    Ok(_) if counting.load(Ordering::Relaxed) => {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    // Warm-up: every client's instance started.
    std::thread::sleep(Duration::from_secs(2));
    counting.store(true, Ordering::Relaxed);
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    let n = done.load(Ordering::Relaxed);
    let rate = n as f64 / t.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let failed = failed.load(Ordering::Relaxed);
    if failed > 0 {
        bail!("{failed} invocations failed during the throughput run");
    }
    Ok(rate)
}
