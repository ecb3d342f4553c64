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
use mitosis_gateway::{FunctionConfig, Gateway, Policy};
use mitosis_trace::formats::synthetic::Spec;
use mitosis_trace::schedule::{FunctionMap, Schedule, ScheduleOptions};
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

pub fn run(bin: &Path, opts: &Options) -> anyhow::Result<()> {
    let suite = Suite::locate(None, None)?;
    suite.check()?;
    let seconds = opts.minutes * 60.0;
    let spec: Spec = opts.spec.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
    let trace = spec.generate(seconds).map_err(|e| anyhow::anyhow!("{e}"))?;
    let map = FunctionMap::parse(&BY_WEIGHT.join(",")).map_err(|e| anyhow::anyhow!("{e}"))?;
    let schedule = Schedule::build(&trace, &ScheduleOptions { map, ..ScheduleOptions::new(Duration::from_secs_f64(seconds)) })
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let workers = Workers::start_with(bin, "bench-replay", suite, opts.offload_idle.is_some())?;
    let configs: Vec<(String, FunctionConfig)> = schedule.functions().iter().map(|f| (f.clone(), workers.function(f))).collect();
    let cold_config = workers.gateway_config(Policy::Cold)?;
    let offload_config = workers.gateway_config(Policy::Fork)?;
    let offload_idle = opts.offload_idle;
    let offload_policy = opts.offload_policy;
    let json = opts.json;
    let runs = workers.cluster.run(|_| {
        workers.with_gateway(Policy::Fork, move |rt, fork_gateway, fork_url| {
            // The other gateways, in the same runtime and namespace.
            let serve = |config| {
                let gateway = Gateway::new(config);
                let url = rt.block_on(async {
                    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                    let url = format!("http://{}", listener.local_addr()?);
                    gateway.start_background();
                    tokio::spawn(mitosis_gateway::http::serve(gateway.clone(), listener, std::future::pending()));
                    anyhow::Ok(url)
                })?;
                anyhow::Ok((gateway, url))
            };
            let (cold_gateway, cold_url) = serve(cold_config)?;
            let offloading = offload_idle.map(|_| serve(offload_config)).transpose()?;
            let register = |g: &Gateway, offload_idle_s: Option<u64>| {
                for (name, config) in &configs {
                    g.register(name, FunctionConfig { keep_alive_s: 600, max_instances: 16, offload_idle_s, offload_policy, ..config.clone() });
                }
            };
            register(fork_gateway, None);
            register(&cold_gateway, None);
            if let Some((g, _)) = &offloading {
                register(g, offload_idle);
            }
            if !json {
                let n = if offloading.is_some() { "three" } else { "both" };
                eprintln!("replay: {} requests over {seconds:.0} s, through {n} gateways at once", schedule.invocations.len());
            }
            let cfg = |label: &str, url: &str, progress| ReplayConfig {
                label: label.into(),
                progress,
                timeout: Duration::from_secs(120),
                ..ReplayConfig::new(url)
            };
            let (fork_cfg, cold_cfg) = (cfg("fork", fork_url, !json), cfg("cold", &cold_url, false));
            let offload_cfg = offloading.as_ref().map(|(_, url)| cfg("fork+offload", url, false));
            let (fork, cold, offloaded) = rt.block_on(async {
                let offloaded = async {
                    match &offload_cfg {
                        Some(c) => Some(mitosis_trace::replay(c, &schedule).await),
                        None => None,
                    }
                };
                tokio::join!(mitosis_trace::replay(&fork_cfg, &schedule), mitosis_trace::replay(&cold_cfg, &schedule), offloaded)
            });
            retire(&cold_gateway);
            if let Some((g, _)) = &offloading {
                retire(g);
            }
            let mut runs = vec![fork.map_err(|e| anyhow::anyhow!("{e}"))?, cold.map_err(|e| anyhow::anyhow!("{e}"))?];
            if let Some(run) = offloaded {
                runs.push(run.map_err(|e| anyhow::anyhow!("{e}"))?);
            }
            Ok(runs)
        })
    })?;
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
