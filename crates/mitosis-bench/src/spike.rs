//! `mitosis bench spike`: MITOSIS's Fn experiment. One function's request
//! rate jumps (by default from 1/s to 50/s for 10 s) and falls back; the
//! same open-loop schedule is replayed through the gateway under each start
//! policy in turn:
//! - `cold` with no keep-alive: every request is a cold start (the physical
//!   baseline of a start);
//! - `cold` with a 600 s keep-alive: a warm pool that grows by cold starts;
//! - `fork` with no keep-alive: every request beyond the seed's own is a
//!   remote fork of the function's seed.
//!
//! The default function, `spiky`, is the benchmark's own: the kind of
//! function a spike hurts, with a heavy initialisation (a 64 MiB model built
//! at import) and a handler that mostly waits (100 ms, as on a storage or
//! service call) and reads 1% of the model. `--function NAME` runs a suite
//! function instead (those handlers are short and CPU-bound: at 50/s a few
//! warm instances absorb the spike, and a seed's memory weighs as much as
//! one of them).
//!
//! For each: P50 and P99 latency (from the scheduled time, so queueing
//! shows) and memory-seconds of the function's instances and seed (the
//! gateway's `/metrics`, polled from the workers every second).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use mitosis_gateway::{FunctionConfig, Policy};
use mitosis_trace::formats::synthetic::Spec;
use mitosis_trace::schedule::{Schedule, ScheduleOptions};
use mitosis_trace::{report, ReplayConfig, ReplayRun};
use serde::Serialize;

use crate::functions::Suite;
use crate::platform::Workers;

/// Options of `mitosis bench spike`.
#[derive(Debug, Clone)]
pub struct Options {
    pub function: String,
    pub base: f64,
    pub peak: f64,
    pub at_s: f64,
    pub for_s: f64,
    pub seconds: f64,
    pub out: PathBuf,
    pub json: bool,
}

/// The default function (see the module doc).
pub const SPIKY: &str = "spiky";
const SPIKY_SOURCE: &str = r#"
import hashlib, time

# The initialisation: a 64 MiB "model" built at import.
MODEL = bytearray(64 << 20)
for i in range(0, len(MODEL), 4096):
    MODEL[i] = i // 4096 % 251

def handler():
    # A call to storage or another service, then a look at 1% of the model.
    time.sleep(0.1)
    h = hashlib.sha256()
    for i in range(0, len(MODEL), 100 * 4096):
        h.update(MODEL[i:i + 4096])
    print("result:", h.hexdigest())
    return h.hexdigest()
"#;

const TARGET_P99_VS_COLD: f64 = 5.0;
const TARGET_MEMORY_VS_WARM: f64 = 0.2;

/// The policies compared, with their keep-alive.
const POLICIES: [(&str, Policy, u64); 3] =
    [("cold, no keep-alive", Policy::Cold, 0), ("cold, 600 s keep-alive (warm pool)", Policy::Cold, 600), ("fork", Policy::Fork, 0)];

#[derive(Debug, Serialize)]
struct Row {
    policy: String,
    p50_ms: f64,
    p99_ms: f64,
    memory_mib_s: f64,
    peak_memory_mib: f64,
    cold: u64,
    fork: u64,
    warm: u64,
    errors: u64,
    requests: u64,
}

#[derive(Debug, Serialize)]
struct Verdict {
    fork_p99_vs_cold: f64,
    fork_p99_vs_warm_pool: f64,
    fork_memory_vs_warm_pool: f64,
    p99_5x_below_cold: bool,
    p99_at_most_warm_pool: bool,
    memory_at_most_20pct_of_warm_pool: bool,
}

pub fn run(bin: &Path, opts: &Options) -> anyhow::Result<()> {
    let suite = Suite::locate(None, None)?;
    if opts.function != SPIKY {
        suite.check()?;
    }
    let spec_text = format!(
        "spike:function={},base={},peak={},at={},for={},seed=1",
        opts.function, opts.base, opts.peak, opts.at_s, opts.for_s
    );
    let spec: Spec = spec_text.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
    let trace = spec.generate(opts.seconds).map_err(|e| anyhow::anyhow!("{e}"))?;
    let schedule = Schedule::build(&trace, &ScheduleOptions::new(Duration::from_secs_f64(opts.seconds)))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let workers = Workers::start(bin, "bench-spike", suite)?;
    let base = match opts.function.as_str() {
        SPIKY => workers.own_function(SPIKY, SPIKY_SOURCE)?,
        name => workers.function(name),
    };
    let (function, json, seconds) = (opts.function.clone(), opts.json, opts.seconds);
    let runs = workers.cluster.run(|_| {
        workers.with_gateway(Policy::Fork, move |rt, gateway, url| {
            let mut runs: Vec<ReplayRun> = Vec::new();
            for (label, policy, keep_alive_s) in POLICIES {
                if !json {
                    eprintln!("spike: {label} ({} requests over {seconds} s)", schedule.invocations.len());
                }
                gateway.register(&function, FunctionConfig { policy: Some(policy), keep_alive_s, max_instances: 16, ..base.clone() });
                let cfg = ReplayConfig { label: label.to_string(), progress: !json, timeout: Duration::from_secs(60), ..ReplayConfig::new(url) };
                let run = rt.block_on(mitosis_trace::replay(&cfg, &schedule)).map_err(|e| anyhow::anyhow!("{e}"))?;
                runs.push(run);
                gateway.unregister(&function);
                // Let the ended instances' memory leave the workers' books before the next policy.
                std::thread::sleep(Duration::from_secs(2));
            }
            Ok(runs)
        })
    })?;
    let report = report::Report::new(&runs);
    let rows: Vec<Row> = report
        .runs
        .iter()
        .map(|r| Row {
            policy: r.label.clone(),
            p50_ms: r.overall.p50_ms,
            p99_ms: r.overall.p99_ms,
            memory_mib_s: r.memory_mib_s,
            peak_memory_mib: r.peak_memory_mib,
            cold: r.starts.cold,
            fork: r.starts.fork,
            warm: r.starts.warm,
            errors: r.overall.errors,
            requests: r.requests,
        })
        .collect();
    let (cold, pool, fork) = (&rows[0], &rows[1], &rows[2]);
    let verdict = Verdict {
        fork_p99_vs_cold: cold.p99_ms / fork.p99_ms.max(1e-9),
        fork_p99_vs_warm_pool: fork.p99_ms / pool.p99_ms.max(1e-9),
        fork_memory_vs_warm_pool: fork.memory_mib_s / pool.memory_mib_s.max(1e-9),
        p99_5x_below_cold: cold.p99_ms >= TARGET_P99_VS_COLD * fork.p99_ms,
        p99_at_most_warm_pool: fork.p99_ms <= pool.p99_ms,
        memory_at_most_20pct_of_warm_pool: fork.memory_mib_s <= TARGET_MEMORY_VS_WARM * pool.memory_mib_s,
    };
    std::fs::create_dir_all(&opts.out).with_context(|| format!("creating {}", opts.out.display()))?;
    let files = report::write_dir(&opts.out, &runs, &report, Some(&spec_text)).map_err(|e| anyhow::anyhow!("{e}"))?;
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "spec": spec_text, "policies": rows, "verdict": verdict }))?);
        return Ok(());
    }
    println!("spike on `{}`: {spec_text}, {} s, open loop (latency from the scheduled time)", opts.function, opts.seconds);
    println!("| policy | P50 | P99 | memory-seconds | peak memory | cold / fork / warm | errors |");
    println!("|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {:.1} ms | {:.1} ms | {:.0} MiB·s | {:.0} MiB | {} / {} / {} | {} of {} |",
            r.policy, r.p50_ms, r.p99_ms, r.memory_mib_s, r.peak_memory_mib, r.cold, r.fork, r.warm, r.errors, r.requests
        );
    }
    let yes = |b: bool| if b { "met" } else { "MISSED" };
    println!(
        "fork P99 {:.1}x below cold without keep-alive (target >= {TARGET_P99_VS_COLD}x: {}); {:.2}x the warm pool's P99 (target <= 1: {}); \
         {:.1}% of the warm pool's memory-seconds (target <= {:.0}%: {})",
        verdict.fork_p99_vs_cold,
        yes(verdict.p99_5x_below_cold),
        verdict.fork_p99_vs_warm_pool,
        yes(verdict.p99_at_most_warm_pool),
        100.0 * verdict.fork_memory_vs_warm_pool,
        100.0 * TARGET_MEMORY_VS_WARM,
        yes(verdict.memory_at_most_20pct_of_warm_pool)
    );
    for f in files {
        println!("wrote {}", f.display());
    }
    Ok(())
}
