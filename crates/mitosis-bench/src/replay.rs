//! `mitosis bench replay`: a FaaSMem-shaped open-loop replay of the suite's
//! functions through the gateway, one table per start policy.
//!
//! A synthetic trace with the published shapes (Zipf popularity, bursty
//! arrivals; `../shared/traces/README.md`) is mapped by popularity rank onto
//! the suite's functions, the most invoked trace function onto the lightest
//! handler (so that the machine is not saturated: 2 vCPUs). Instances are
//! kept alive 600 s, at most 16 per function, reused last-in first-out, as
//! in FaaSMem. The same schedule is replayed at the same time through two
//! gateways over the same two workers, one per policy (`fork`, `cold`), so
//! that both see the same load and the same machine noise; each gateway
//! counts only its own instances' memory. With `offload_idle`, a third
//! gateway replays the schedule at the same time: fork starts whose
//! instances are offloaded to a memory node (in host a) once idle that
//! many seconds (`fork+offload`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use mitosis_gateway::{FunctionConfig, Gateway, GatewayConfig, Policy};
use mitosis_trace::formats::synthetic::Spec;
use mitosis_trace::schedule::{FunctionMap, Schedule, ScheduleOptions};
use mitosis_trace::replay::ReplayRun;
use mitosis_trace::{report, ReplayConfig};

use mitosis_proto::instance::OffloadPolicy;

use crate::functions::Suite;
use crate::platform::Workers;

/// Options of `mitosis bench replay`.
#[derive(Debug, Clone)]
pub struct Options {
    pub minutes: f64,
    /// Seconds of idleness after which the third gateway's instances are offloaded.
    pub offload_idle: Option<u64>,
    /// How the third gateway's instances are offloaded.
    pub offload_policy: OffloadPolicy,
    /// The synthetic trace (see `mitosis replay --help`); functions are mapped onto the suite.
    pub spec: String,
    pub out: PathBuf,
    pub json: bool,
}

/// The suite's functions from the lightest handler to the heaviest: the
/// most invoked trace function goes to the first. FaaSMem's three large
/// ones (bert, graph, web: 0.2 to 0.5 GB an instance) are left out of this
/// default trace, whose 13 functions its published figures were made with;
/// `mitosis replay --map` can name them.
pub const BY_WEIGHT: [&str; 13] = [
    "helloworld", "json", "chameleon", "gzip", "compression", "image", "micro", "pyaes", "float", "matmul", "linpack", "pagerank",
    "recognition",
];

/// The default trace: 13 functions, 1.2 invocations/s in all, bursty (CV 2).
pub const DEFAULT_SPEC: &str = "functions=13,rate=1.2,skew=1.1,cv=2,seed=11";

/// One gateway of a replay: how its instances start, and how they give
/// their memory back when idle.
#[derive(Debug, Clone)]
pub struct Arm {
    pub label: String,
    pub policy: Policy,
    /// Seconds of idleness (at least) and the offload policy; `None`: plain keep-alive.
    pub offload: Option<(u64, OffloadPolicy)>,
    /// The gateway's memory budget in bytes (`GatewayConfig::memory_budget`);
    /// not for the first arm, the baseline.
    pub memory_budget: Option<u64>,
}

impl Arm {
    pub fn new(label: &str, policy: Policy, offload: Option<(u64, OffloadPolicy)>) -> Arm {
        Arm { label: label.into(), policy, offload, memory_budget: None }
    }
}

/// What [`replay_arms`] replays.
pub struct ArmsOptions<'a> {
    pub bench: &'a str,
    pub minutes: f64,
    pub spec: &'a str,
    /// Suite functions, the most invoked trace function onto the first.
    pub functions: &'a [&'a str],
    pub arms: &'a [Arm],
    /// Extra `mitosis daemon` arguments of the workers.
    pub worker_args: &'a [&'a str],
    /// Draw a progress bar (the first arm's).
    pub progress: bool,
}

/// What [`replay_arms`] measured: one run per arm, and the two workers'
/// `mitosis stats` at the end.
pub struct ArmsOutcome {
    pub runs: Vec<ReplayRun>,
    pub workers: Vec<mitosis_proto::local::DaemonStats>,
}

/// Replays one synthetic schedule through one gateway per arm, all at the
/// same time over the same two workers (a memory node in host a when an
/// arm offloads): each gateway counts only its own instances' memory.
pub fn replay_arms(bin: &Path, opts: &ArmsOptions) -> anyhow::Result<ArmsOutcome> {
    let (first, others) = opts.arms.split_first().context("a replay needs at least one arm")?;
    let suite = Suite::locate(None, None)?;
    suite.check()?;
    let seconds = opts.minutes * 60.0;
    let spec: Spec = opts.spec.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
    let trace = spec.generate(seconds).map_err(|e| anyhow::anyhow!("{e}"))?;
    let map = FunctionMap::parse(&opts.functions.join(",")).map_err(|e| anyhow::anyhow!("{e}"))?;
    let schedule = Schedule::build(&trace, &ScheduleOptions { map, ..ScheduleOptions::new(Duration::from_secs_f64(seconds)) })
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let memnode = opts.arms.iter().any(|a| a.offload.is_some());
    let workers = Workers::start_with_args(bin, opts.bench, suite, memnode, opts.worker_args)?;
    let configs: Vec<(String, FunctionConfig)> = schedule.functions().iter().map(|f| (f.clone(), workers.function(f))).collect();
    anyhow::ensure!(first.memory_budget.is_none(), "the first arm, the baseline, has no memory budget");
    let other_configs = others
        .iter()
        .map(|a| Ok((a.clone(), GatewayConfig { memory_budget: a.memory_budget, ..workers.gateway_config(a.policy)? })))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let first = first.clone();
    let progress = opts.progress;
    let schedule = Arc::new(schedule);
    let runs = workers.cluster.run(|_| {
        workers.with_gateway(first.policy, move |rt, first_gateway, first_url| {
            // The other gateways, in the same runtime and namespace.
            let mut gateways = Vec::new();
            for (arm, config) in other_configs {
                let gateway = Gateway::new(config);
                let url = rt.block_on(async {
                    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                    let url = format!("http://{}", listener.local_addr()?);
                    gateway.start_background();
                    tokio::spawn(mitosis_gateway::http::serve(gateway.clone(), listener, std::future::pending()));
                    anyhow::Ok(url)
                })?;
                gateways.push((arm, gateway, url));
            }
            let register = |g: &Gateway, arm: &Arm| {
                for (name, config) in &configs {
                    let (offload_idle_s, offload_policy) = arm.offload.map_or((None, OffloadPolicy::default()), |(s, p)| (Some(s), p));
                    g.register(name, FunctionConfig { keep_alive_s: 600, max_instances: 16, offload_idle_s, offload_policy, ..config.clone() });
                }
            };
            register(first_gateway, &first);
            for (arm, g, _) in &gateways {
                register(g, arm);
            }
            let cfg = |label: &str, url: &str, progress| ReplayConfig { label: label.into(), progress, timeout: Duration::from_secs(120), ..ReplayConfig::new(url) };
            let mut cfgs = vec![cfg(&first.label, first_url, progress)];
            cfgs.extend(gateways.iter().map(|(arm, _, url)| cfg(&arm.label, url, false)));
            let replays: Vec<_> = cfgs
                .into_iter()
                .map(|c| {
                    let schedule = schedule.clone();
                    rt.spawn(async move { mitosis_trace::replay(&c, &schedule).await })
                })
                .collect();
            let outcomes = rt.block_on(async {
                let mut all = Vec::new();
                for r in replays {
                    all.push(r.await);
                }
                all
            });
            for (_, g, _) in &gateways {
                retire(g);
            }
            outcomes.into_iter().map(|o| o.map_err(|e| anyhow::anyhow!("a replay task failed: {e}"))?.map_err(|e| anyhow::anyhow!("{e}"))).collect()
        })
    })?;
    let stats = [&workers.cluster.a, &workers.cluster.b]
        .iter()
        .map(|d| mitosis::Client::connect(d.socket()).and_then(|mut c| c.stats()).map_err(|e| anyhow::anyhow!("the stats of a worker: {e}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(ArmsOutcome { runs, workers: stats })
}

pub fn run(bin: &Path, opts: &Options) -> anyhow::Result<()> {
    let mut arms = vec![Arm::new("fork", Policy::Fork, None), Arm::new("cold", Policy::Cold, None)];
    if let Some(idle) = opts.offload_idle {
        arms.push(Arm::new("fork+offload", Policy::Fork, Some((idle, opts.offload_policy))));
    }
    if !opts.json {
        let n = if arms.len() == 3 { "three" } else { "both" };
        eprintln!("replay: {:.0} s, through {n} gateways at once", opts.minutes * 60.0);
    }
    let arms_options =
        ArmsOptions { bench: "bench-replay", minutes: opts.minutes, spec: &opts.spec, functions: &BY_WEIGHT, arms: &arms, worker_args: &[], progress: !opts.json };
    let runs = replay_arms(bin, &arms_options)?.runs;
    let report = report::Report::new(&runs);
    std::fs::create_dir_all(&opts.out).with_context(|| format!("creating {}", opts.out.display()))?;
    let offload_note = opts
        .offload_idle
        .map(|s| format!("; fork+offload: idle instances semi-warm after {s} s or their function's P99 reuse interval, policy {}", opts.offload_policy.name()))
        .unwrap_or_default();
    let note = format!("{} (synthetic, FaaSMem-shaped; keep-alive 600 s, max 16, LIFO{offload_note})", opts.spec);
    let files = report::write_dir(&opts.out, &runs, &report, Some(&note)).map_err(|e| anyhow::anyhow!("{e}"))?;
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!("replay of {:.0} min, {note}; the same schedule through a fork and a cold gateway at once", opts.minutes);
    print!("{}", report.table());
    for f in files {
        println!("wrote {}", f.display());
    }
    Ok(())
}

fn retire(gateway: &Arc<Gateway>) {
    for f in gateway.functions() {
        gateway.unregister(&f.name);
    }
}
