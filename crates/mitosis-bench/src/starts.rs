//! `mitosis bench starts`: a new instance by remote fork against a cold
//! start, per function of the suite, through the gateway.
//!
//! For each function, from request to response: a cold start (a new runtime
//! process imports the function), a remote fork of the function's seed, and
//! a warm instance (the handler's own run time, the baseline). The *start
//! overhead* of a kind is its first response time minus the warm one.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use mitosis_gateway::client::Client;
use mitosis_gateway::{FunctionConfig, Policy};
use serde::Serialize;

use crate::functions::Suite;
use crate::median;
use crate::platform::Workers;

/// Options of `mitosis bench starts`.
#[derive(Debug, Clone)]
pub struct Options {
    /// Functions of the suite (empty: all).
    pub functions: Vec<String>,
    pub runs: usize,
    pub json: bool,
}

const TARGET_HELLO_FORK_MS: f64 = 10.0;
const TARGET_OVERHEAD_RATIO: f64 = 0.1;

#[derive(Debug, Serialize)]
struct Row {
    function: String,
    cold_ms: f64,
    fork_ms: f64,
    warm_ms: f64,
    cold_overhead_ms: f64,
    fork_overhead_ms: f64,
    /// Fork overhead / cold overhead (target <= 0.1).
    overhead_ratio: f64,
    met: bool,
    samples: Samples,
}

#[derive(Debug, Serialize)]
struct Samples {
    cold_ms: Vec<f64>,
    fork_ms: Vec<f64>,
    warm_ms: Vec<f64>,
}

/// Every function of the suite, in table order.
pub const SUITE: [&str; 16] = [
    "helloworld", "json", "pyaes", "chameleon", "compression", "image", "pagerank", "recognition", "micro", "float", "matmul",
    "linpack", "gzip", "bert", "graph", "web",
];

fn timed(client: &Client, function: &str, want: &str) -> anyhow::Result<f64> {
    let t = Instant::now();
    let a = client.invoke(function, b"").with_context(|| format!("invoking {function}"))?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    if a.start.as_deref() != Some(want) {
        bail!("{function}: expected a {want} start, the gateway reports {:?}", a.start);
    }
    Ok(ms)
}

pub fn run(bin: &Path, opts: &Options) -> anyhow::Result<()> {
    let suite = Suite::locate(None, None)?;
    suite.check()?;
    let names: Vec<String> =
        if opts.functions.is_empty() { SUITE.iter().map(|s| s.to_string()).collect() } else { opts.functions.clone() };
    let workers = Workers::start(bin, "bench-starts", suite)?;
    let configs: Vec<(String, FunctionConfig)> = names.iter().map(|n| (n.clone(), workers.function(n))).collect();
    let runs = opts.runs.max(1);
    let json = opts.json;
    let rows = workers.cluster.run(|_| {
        workers.with_gateway(Policy::Fork, move |_rt, gateway, url| {
            let client = Client::new(url, Duration::from_secs(300));
            let bar = crate::progress(json, (configs.len() * (3 * runs + 2)) as u64);
            let mut rows = Vec::new();
            for (name, base) in &configs {
                bar.set_message(name.clone());
                let with = |policy: Policy, keep_alive_s: u64| FunctionConfig { policy: Some(policy), keep_alive_s, ..base.clone() };
                gateway.register(name, with(Policy::Cold, 0));
                let mut cold = Vec::new();
                for _ in 0..runs {
                    cold.push(timed(&client, name, "cold")?);
                    bar.inc(1);
                }
                gateway.register(name, with(Policy::Fork, 0));
                timed(&client, name, "cold")?; // the seed's own cold start
                bar.inc(1);
                let mut fork = Vec::new();
                for _ in 0..runs {
                    fork.push(timed(&client, name, "fork")?);
                    bar.inc(1);
                }
                gateway.register(name, with(Policy::Fork, 600));
                timed(&client, name, "cold")?;
                bar.inc(1);
                let mut warm = Vec::new();
                for _ in 0..runs {
                    warm.push(timed(&client, name, "warm")?);
                    bar.inc(1);
                }
                gateway.unregister(name);
                let (c, f, w) = (median(&cold), median(&fork), median(&warm));
                let (co, fo) = (c - w, f - w);
                let ratio = fo / co.max(1e-9);
                let met = ratio <= TARGET_OVERHEAD_RATIO && (name != "helloworld" || f <= TARGET_HELLO_FORK_MS);
                rows.push(Row {
                    function: name.clone(),
                    cold_ms: c,
                    fork_ms: f,
                    warm_ms: w,
                    cold_overhead_ms: co,
                    fork_overhead_ms: fo,
                    overhead_ratio: ratio,
                    met,
                    samples: Samples { cold_ms: cold, fork_ms: fork, warm_ms: warm },
                });
            }
            bar.finish_and_clear();
            Ok(rows)
        })
    })?;
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!("new instances through the gateway, request to response (medians of {runs}; baseline: a warm instance)");
    println!("| function | cold start | remote fork | warm (baseline) | cold overhead | fork overhead | fork/cold overhead | target <= {TARGET_OVERHEAD_RATIO} |");
    println!("|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {:.3} | {} |",
            r.function,
            r.cold_ms,
            r.fork_ms,
            r.warm_ms,
            r.cold_overhead_ms,
            r.fork_overhead_ms,
            r.overhead_ratio,
            if r.met { "met" } else { "MISSED" }
        );
    }
    if let Some(h) = rows.iter().find(|r| r.function == "helloworld") {
        println!(
            "helloworld by remote fork, request to response: {:.1} ms (target <= {TARGET_HELLO_FORK_MS} ms: {})",
            h.fork_ms,
            if h.fork_ms <= TARGET_HELLO_FORK_MS { "met" } else { "MISSED" }
        );
    }
    Ok(())
}
