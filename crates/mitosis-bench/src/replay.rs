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
//! counts only its own instances' memory.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use mitosis_gateway::{FunctionConfig, Gateway, Policy};
use mitosis_trace::formats::synthetic::Spec;
use mitosis_trace::schedule::{FunctionMap, Schedule, ScheduleOptions};
use mitosis_trace::{report, ReplayConfig};

use crate::functions::Suite;
use crate::platform::Workers;

/// Options of `mitosis bench replay`.
#[derive(Debug, Clone)]
pub struct Options {
    pub minutes: f64,
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
    let workers = Workers::start(bin, "bench-replay", suite)?;
    let configs: Vec<(String, FunctionConfig)> = schedule.functions().iter().map(|f| (f.clone(), workers.function(f))).collect();
    let cold_config = workers.gateway_config(Policy::Cold)?;
    let json = opts.json;
    let runs = workers.cluster.run(|_| {
        workers.with_gateway(Policy::Fork, move |rt, fork_gateway, fork_url| {
            // The second gateway, the cold policy's, in the same runtime and namespace.
            let cold_gateway = Gateway::new(cold_config);
            let cold_url = rt.block_on(async {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                let url = format!("http://{}", listener.local_addr()?);
                cold_gateway.start_background();
                tokio::spawn(mitosis_gateway::http::serve(cold_gateway.clone(), listener, std::future::pending()));
                anyhow::Ok(url)
            })?;
            for g in [fork_gateway, &cold_gateway] {
                for (name, config) in &configs {
                    g.register(name, FunctionConfig { keep_alive_s: 600, max_instances: 16, ..config.clone() });
                }
            }
            if !json {
                eprintln!("replay: {} requests over {seconds:.0} s, through both gateways at once", schedule.invocations.len());
            }
            let cfg = |label: &str, url: &str, progress| ReplayConfig {
                label: label.into(),
                progress,
                timeout: Duration::from_secs(120),
                ..ReplayConfig::new(url)
            };
            let (fork_cfg, cold_cfg) = (cfg("fork", fork_url, !json), cfg("cold", &cold_url, false));
            let (fork, cold) = rt.block_on(async {
                tokio::join!(mitosis_trace::replay(&fork_cfg, &schedule), mitosis_trace::replay(&cold_cfg, &schedule))
            });
            retire(&cold_gateway);
            Ok(vec![fork.map_err(|e| anyhow::anyhow!("{e}"))?, cold.map_err(|e| anyhow::anyhow!("{e}"))?])
        })
    })?;
    let report = report::Report::new(&runs);
    std::fs::create_dir_all(&opts.out).with_context(|| format!("creating {}", opts.out.display()))?;
    let note = format!("{} (synthetic, FaaSMem-shaped; keep-alive 600 s, max 16, LIFO)", opts.spec);
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
