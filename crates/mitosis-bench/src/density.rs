//! `mitosis bench faasmem --experiment density`: issue 11's experiment 6,
//! density measured rather than modelled (FaaSMem computed it from a
//! formula). Every arm's gateway gets the same local memory budget for its
//! instances and seeds (`--budget`, `GatewayConfig::memory_budget`): over
//! it, its idle instances end, least recently used first. The more memory
//! an idle instance gives back, the more instances the budget holds. The
//! same schedule is replayed through all of them at once, beside a first
//! gateway without a budget under `none`, the P95 reference.
//!
//! Per arm: the mean number of live instances (the density), its ratio to
//! budgeted `none`'s, P95 against the reference's, and whether it stays
//! within FaaSMem's +10% line; the mean memory held (a `tmo` arm's zram
//! swap included), to show the budget held.

use std::path::Path;

use anyhow::Context;
use mitosis_gateway::Policy;
use mitosis_trace::chart::{line_chart, LineChart, Scale, Series};
use mitosis_trace::replay::ReplayRun;
use mitosis_trace::report::Report;

use crate::faasmem::{arm, Options, SwapSampler};
use crate::replay::{replay_arms, Arm, ArmsOptions};

/// The arms of `--experiment density` by default: `fork` would only repeat
/// `mitosis` without giving memory back.
pub const DEFAULT_ARMS: [&str; 4] = ["none", "tmo", "faasmem", "mitosis"];

/// The label of the first, unbudgeted gateway.
pub const REFERENCE: &str = "none-no-budget";

/// FaaSMem's line: P95 at most 10% over the baseline's.
const P95_LINE: f64 = 1.10;

/// One arm's figures.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DensityFigures {
    pub arm: String,
    /// `None` for the reference.
    pub budget_mib: Option<u64>,
    pub requests: u64,
    pub errors: u64,
    pub p95_ms: f64,
    /// P95 over the unbudgeted reference's.
    pub p95_ratio: f64,
    pub within_p95_line: bool,
    /// Live instances, averaged over the window.
    pub mean_live_instances: f64,
    /// Live instances over budgeted `none`'s (1 for it; NaN for the reference).
    pub density: f64,
    /// Instances' and seeds' memory (and a `tmo` arm's swap), averaged, MiB.
    pub mean_memory_mib: f64,
}

/// The figures of `runs` (the reference first), with `swap_mib` the mean
/// memory of the workers' zram swap (counted for a `tmo` arm).
pub fn figures(runs: &[ReplayRun], report: &Report, budget_mib: u64, swap_mib: f64) -> Vec<DensityFigures> {
    let reference_p95 = report.runs[0].overall.p95_ms;
    let live = |run: &ReplayRun| run.mean_of(|m| m.live_instances);
    let none_live = runs.iter().skip(1).find(|r| r.label == "none").map(live);
    runs.iter()
        .zip(&report.runs)
        .enumerate()
        .map(|(i, (run, s))| {
            let swap = if s.label == "tmo" { swap_mib } else { 0.0 };
            let p95_ratio = s.overall.p95_ms / reference_p95;
            DensityFigures {
                arm: s.label.clone(),
                budget_mib: (i > 0).then_some(budget_mib),
                requests: s.requests,
                errors: s.overall.errors,
                p95_ms: s.overall.p95_ms,
                p95_ratio,
                within_p95_line: p95_ratio <= P95_LINE,
                mean_live_instances: live(run),
                density: match (i, none_live) {
                    (0, _) | (_, None) => f64::NAN,
                    (_, Some(n)) => live(run) / n,
                },
                mean_memory_mib: run.mean_of(mitosis_trace::replay::MemorySample::total_bytes) / f64::from(1u32 << 20) + swap,
            }
        })
        .collect()
}

pub fn table(figures: &[DensityFigures]) -> String {
    let mut s = format!(
        "{:<16} {:>10} {:>8} {:>6} {:>9} {:>9} {:>8} {:>15} {:>8} {:>11}\n",
        "ARM", "BUDGET MiB", "REQUESTS", "ERRORS", "P95 ms", "P95/REF", "<= +10%", "LIVE INSTANCES", "DENSITY", "MEMORY MiB"
    );
    for f in figures {
        s.push_str(&format!(
            "{:<16} {:>10} {:>8} {:>6} {:>9.1} {:>9.2} {:>8} {:>15.2} {:>8} {:>11.1}\n",
            f.arm,
            f.budget_mib.map_or_else(|| "-".to_string(), |b| b.to_string()),
            f.requests,
            f.errors,
            f.p95_ms,
            f.p95_ratio,
            if f.within_p95_line { "yes" } else { "no" },
            f.mean_live_instances,
            if f.density.is_nan() { "-".to_string() } else { format!("{:.2}", f.density) },
            f.mean_memory_mib
        ));
    }
    s
}

/// Live instances over time, one line per arm.
fn live_svg(runs: &[ReplayRun], note: &str) -> String {
    let series = runs
        .iter()
        .map(|run| Series { label: run.label.clone(), points: run.memory.iter().map(|m| (m.t_s, m.live_instances as f64)).collect() })
        .collect();
    line_chart(&LineChart {
        title: "Live instances under the memory budget".into(),
        x_label: "time (s)".into(),
        y_label: "live instances".into(),
        x_scale: Scale::Linear,
        y_max: None,
        series,
        note: Some(note.to_string()),
    })
}

pub fn run(bin: &Path, opts: &Options) -> anyhow::Result<()> {
    let budget = opts.budget_mib.saturating_mul(1 << 20);
    let mut arms = vec![Arm::new(REFERENCE, Policy::Cold, None)];
    for name in &opts.arms {
        arms.push(Arm { memory_budget: Some(budget), ..arm(name, opts.offload_idle)? });
    }
    let functions: Vec<&str> = opts.functions.iter().map(String::as_str).collect();
    let drain = format!("{}", opts.drain_percent);
    let mut worker_args = vec!["--semi-warm-drain", drain.as_str()];
    let tmo = arms.iter().any(|a| a.offload.is_some_and(|(_, p)| p.tmo));
    if tmo {
        worker_args.extend(["--zram-swap", crate::faasmem::TMO_SWAP_MIB]);
    }
    if !opts.json {
        eprintln!(
            "faasmem density: {:.0} s of {} through {} gateways at once, each but the first within {} MiB",
            opts.minutes * 60.0,
            opts.spec,
            arms.len(),
            opts.budget_mib
        );
    }
    let arms_options = ArmsOptions { bench: "bench-density", minutes: opts.minutes, spec: &opts.spec, functions: &functions, arms: &arms, worker_args: &worker_args, progress: !opts.json };
    let swap = tmo.then(SwapSampler::start);
    let outcome = replay_arms(bin, &arms_options)?;
    let swap_mib = swap.map_or(0.0, SwapSampler::mean_mib);
    let runs = outcome.runs;
    let report = Report::new(&runs);
    let figures = figures(&runs, &report, opts.budget_mib, swap_mib);
    let note = format!(
        "{} on {}; budget {} MiB of instances and seeds per gateway (idle instances end LRU first); keep-alive 600 s, max 16; semi-warm after {} s",
        opts.spec,
        functions.join(","),
        opts.budget_mib,
        opts.offload_idle
    );
    std::fs::create_dir_all(&opts.out).with_context(|| format!("creating {}", opts.out.display()))?;
    let mut files = mitosis_trace::report::write_dir(&opts.out, &runs, &report, Some(&note)).map_err(|e| anyhow::anyhow!("{e}"))?;
    let json = serde_json::json!({ "bench": "faasmem", "experiment": "density", "note": note, "minutes": opts.minutes, "arms": figures });
    let json_path = opts.out.join("density.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&json)?).with_context(|| format!("writing {}", json_path.display()))?;
    let svg_path = opts.out.join("density-live.svg");
    std::fs::write(&svg_path, live_svg(&runs, &note)).with_context(|| format!("writing {}", svg_path.display()))?;
    files.extend([json_path, svg_path]);
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(());
    }
    println!("faasmem density: {note}");
    print!("{}", table(&figures));
    for f in files {
        println!("wrote {}", f.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mitosis_trace::replay::MemorySample;

    fn run(label: &str, live: u64, mib: u64) -> ReplayRun {
        let sample = |t_s| MemorySample { t_s, instance_bytes: mib << 20, seed_bytes: 0, live_instances: live, per_function: Default::default() };
        ReplayRun { label: label.into(), records: Vec::new(), memory: vec![sample(0.0), sample(10.0)], memory_failures: 0, window_s: 10.0 }
    }

    #[test]
    fn density_is_live_instances_over_budgeted_none() {
        let runs = [run(REFERENCE, 10, 900), run("none", 4, 500), run("tmo", 5, 450), run("mitosis", 9, 480)];
        let report = Report::new(&runs);
        let f = figures(&runs, &report, 512, 30.0);
        assert!(f[0].density.is_nan() && f[0].budget_mib.is_none());
        assert_eq!((f[1].density, f[1].budget_mib), (1.0, Some(512)));
        assert!((f[3].density - 9.0 / 4.0).abs() < 1e-9);
        assert!((f[2].mean_memory_mib - 480.0).abs() < 1e-9, "tmo counts its swap: {}", f[2].mean_memory_mib);
        assert!((f[3].mean_live_instances - 9.0).abs() < 1e-9);
        assert!(table(&f).contains("mitosis"));
    }
}
