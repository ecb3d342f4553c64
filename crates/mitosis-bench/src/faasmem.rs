//! `mitosis bench faasmem`: FaaSMem's evaluation on this platform, as far
//! as what is built allows.
//!
//! One synthetic FaaSMem-shaped schedule, mapped onto FaaSMem's functions,
//! is replayed at the same time through one gateway per *arm* over the
//! same two workers (a memory node in host a), each gateway counting its
//! own instances' and seeds' memory. The arms by default:
//!
//! - `none`: cold starts, plain keep-alive (FaaSMem's baseline);
//! - `tmo`: cold starts, the kernel reclaiming each instance's memory to
//!   the workers' zram swap under a pressure-driven controller (FaaSMem's
//!   TMO baseline; the swap's own memory is counted as the arm's);
//! - `faasmem`: cold starts, packets and the semi-warm drain, every page
//!   put on the memory node, no prefetch (FaaSMem's policy);
//! - `fork`: remote forks, plain keep-alive (mitosis without offload);
//! - `mitosis`: remote forks, packets, the semi-warm drain, pages
//!   unchanged since the seed dropped free, prefetch on reuse.
//!
//! Ablations are arms too (`--arms none,mitosis,mitosis-no-packets,...`):
//! `-no-packets`, `-no-semi-warm`, `-no-prefetch`.
//!
//! Printed: experiment 1 (memory and P95 of each arm, normalised to the
//! first arm), experiment 3 (the ablations, as arms) and experiment 5 (the
//! packet barriers' times, from the workers' `mitosis stats`). Experiment 4
//! (the share of idle time spent semi-warm) is `--experiment semi-warm`, a
//! simulation over whole traces ([`crate::semi_warm`]), and experiment 6
//! (density) is `--experiment density` ([`crate::density`]). Experiment 2
//! (popularity) is the functions by thirds of their popularity rank.

use std::path::{Path, PathBuf};

use anyhow::Context;
use mitosis_gateway::Policy;
use mitosis_proto::instance::OffloadPolicy;
use mitosis_trace::report::{self, LatencyStats, Report, RunSummary};

use crate::replay::{replay_arms, Arm, ArmsOptions};

/// FaaSMem's functions in this suite, the most invoked trace function onto
/// the first: its FunctionBench eight (lightest first), then web and graph
/// (0.35 and 0.9 GB an instance). bert (1.8 GB) is left out by default:
/// five arms of its instances and seeds would not fit next to the rest.
pub const FUNCTIONS: [&str; 10] = ["json", "pyaes", "chameleon", "gzip", "image", "float", "linpack", "matmul", "web", "graph"];

/// 10 functions, 0.6 invocations/s, bursty: five arms replay it at once on 2 vCPUs.
pub const DEFAULT_SPEC: &str = "functions=10,rate=0.6,skew=1.1,cv=2,seed=7";

/// Options of `mitosis bench faasmem`.
#[derive(Debug, Clone)]
pub struct Options {
    pub minutes: f64,
    /// Seconds an instance is idle, at least, before it turns semi-warm (FaaSMem: 60).
    pub offload_idle: u64,
    /// Percent of its memory a semi-warm instance gives back a second (FaaSMem: 1).
    pub drain_percent: f64,
    pub functions: Vec<String>,
    /// Arm names ([`arm`]); the first is the baseline.
    pub arms: Vec<String>,
    pub spec: String,
    /// `--experiment density`: each budgeted gateway's memory budget, MiB.
    pub budget_mib: u64,
    pub out: PathBuf,
    pub json: bool,
}

/// The arms replayed by default, `none` first (the baseline of every ratio).
pub const DEFAULT_ARMS: [&str; 5] = ["none", "tmo", "faasmem", "fork", "mitosis"];

/// The arm named `name`: `none` (cold starts, keep-alive), `fork` (remote
/// forks, keep-alive), or an offload policy (`mitosis` and its ablations
/// on remote forks; `faasmem` and its ablations, and `tmo`, on cold
/// starts, as FaaSMem has no remote fork).
pub fn arm(name: &str, offload_idle: u64) -> anyhow::Result<Arm> {
    Ok(match name {
        "none" => Arm::new(name, Policy::Cold, None),
        "fork" => Arm::new(name, Policy::Fork, None),
        _ => {
            let policy: OffloadPolicy = name.parse().map_err(|e: String| anyhow::anyhow!("arm {name:?}: {e}"))?;
            let start = if name.starts_with("faasmem") || policy.tmo { Policy::Cold } else { Policy::Fork };
            Arm::new(name, start, Some((offload_idle, policy)))
        }
    })
}

/// One arm's figures beside the baseline's.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ArmFigures {
    pub arm: String,
    pub requests: u64,
    pub errors: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    /// P95 over the baseline's.
    pub p95_ratio: f64,
    /// Average memory over the window, instances and seeds, MiB.
    pub avg_instance_mib: f64,
    pub avg_seed_mib: f64,
    /// Under `tmo`: the workers' zram swap's own memory (what the instances
    /// swapped out, compressed), averaged the same way; 0 for other arms.
    pub avg_swap_mib: f64,
    /// Instances' and seeds' memory over the baseline's.
    pub memory_ratio: f64,
    /// Per function: P95 over the baseline's.
    pub function_p95_ratio: std::collections::BTreeMap<String, f64>,
    /// Per function: its instances' and seed's memory, averaged (MiB), and
    /// over the baseline's.
    pub function_avg_mib: std::collections::BTreeMap<String, f64>,
    pub function_memory_ratio: std::collections::BTreeMap<String, f64>,
    /// Experiment 2: the functions by popularity class.
    pub classes: Vec<ClassFigures>,
}

/// One popularity class's figures in one arm (experiment 2).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ClassFigures {
    /// `high`, `middle` or `low`.
    pub class: &'static str,
    pub functions: Vec<String>,
    pub requests: u64,
    /// P95 of the class's requests, over the baseline's.
    pub p95_ratio: f64,
    /// The class's memory (instances and seeds), over the baseline's.
    pub memory_ratio: f64,
}

/// The popularity classes of `functions` (most invoked first): thirds by
/// rank, the first third `high`. FaaSMem's classes are by invocations a
/// day (512 and 64); a replay of minutes over ten functions puts every one
/// of them above 512 a day, so ranks stand in.
pub fn popularity_classes<'a>(functions: &[&'a str]) -> Vec<(&'static str, Vec<&'a str>)> {
    let n = functions.len();
    let (a, b) = (n.div_ceil(3), (2 * n).div_ceil(3));
    [("high", &functions[..a]), ("middle", &functions[a..b]), ("low", &functions[b..])]
        .into_iter()
        .filter(|(_, f)| !f.is_empty())
        .map(|(c, f)| (c, f.to_vec()))
        .collect()
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        f64::NAN
    }
}

fn average_mib(run: &mitosis_trace::replay::ReplayRun, part: impl Fn(&mitosis_trace::replay::MemorySample) -> u64) -> f64 {
    run.mean_of(part) / f64::from(1u32 << 20)
}

/// Each arm beside the first (the baseline). `swap_mib`: the mean memory
/// of the workers' zram swap, counted for the arm that swaps (`tmo`: only
/// its containers may).
pub fn figures(runs: &[mitosis_trace::replay::ReplayRun], report: &Report, swap_mib: f64, functions: &[&str]) -> Vec<ArmFigures> {
    let base_run = &runs[0];
    let base: &RunSummary = &report.runs[0];
    let function_mib = |run: &mitosis_trace::replay::ReplayRun, f: &str| average_mib(run, |m| m.per_function.get(f).copied().unwrap_or(0));
    let classes = popularity_classes(functions);
    let class_p95 = |run: &mitosis_trace::replay::ReplayRun, members: &[&str]| {
        mitosis_trace::report::stats(run.records.iter().filter(|r| members.contains(&r.function.as_str())))
    };
    let swapping = |label: &str| label.parse::<OffloadPolicy>().is_ok_and(|p| p.tmo);
    let swap_of = |label: &str| if swapping(label) { swap_mib } else { 0.0 };
    let base_total = average_mib(base_run, |m| m.total_bytes()) + swap_of(&base.label);
    runs.iter()
        .zip(&report.runs)
        .map(|(run, s)| {
            let p95 = |l: &LatencyStats| l.p95_ms;
            let function_p95_ratio =
                s.functions.iter().filter_map(|(f, l)| base.functions.get(f).map(|b| (f.clone(), ratio(p95(l), p95(b))))).collect();
            ArmFigures {
                arm: s.label.clone(),
                requests: s.requests,
                errors: s.overall.errors,
                p50_ms: s.overall.p50_ms,
                p95_ms: s.overall.p95_ms,
                p99_ms: s.overall.p99_ms,
                p95_ratio: ratio(s.overall.p95_ms, base.overall.p95_ms),
                avg_instance_mib: average_mib(run, |m| m.instance_bytes),
                avg_seed_mib: average_mib(run, |m| m.seed_bytes),
                avg_swap_mib: swap_of(&s.label),
                memory_ratio: ratio(average_mib(run, |m| m.total_bytes()) + swap_of(&s.label), base_total),
                function_p95_ratio,
                function_avg_mib: functions.iter().map(|f| (f.to_string(), function_mib(run, f))).collect(),
                function_memory_ratio: functions.iter().map(|f| (f.to_string(), ratio(function_mib(run, f), function_mib(base_run, f)))).collect(),
                classes: classes
                    .iter()
                    .map(|(class, members)| {
                        let (mine, theirs) = (class_p95(run, members), class_p95(base_run, members));
                        let mib = |r| members.iter().map(|f| function_mib(r, f)).sum::<f64>();
                        ClassFigures {
                            class,
                            functions: members.iter().map(|f| f.to_string()).collect(),
                            requests: mine.count + mine.errors,
                            p95_ratio: ratio(mine.p95_ms, theirs.p95_ms),
                            memory_ratio: ratio(mib(run), mib(base_run)),
                        }
                    })
                    .collect(),
            }
        })
        .collect()
}

fn table(figures: &[ArmFigures]) -> String {
    let mut s = format!(
        "{:<14} {:>8} {:>6} {:>9} {:>9} {:>9} {:>9} {:>13} {:>10} {:>9} {:>11}\n",
        "ARM", "REQUESTS", "ERRORS", "P50 ms", "P95 ms", "P99 ms", "P95/none", "INSTANCES MiB", "SEEDS MiB", "SWAP MiB", "MEMORY/none"
    );
    for f in figures {
        s.push_str(&format!(
            "{:<14} {:>8} {:>6} {:>9.1} {:>9.1} {:>9.1} {:>9.2} {:>13.1} {:>10.1} {:>9.1} {:>11.2}\n",
            f.arm,
            f.requests,
            f.errors,
            f.p50_ms,
            f.p95_ms,
            f.p99_ms,
            f.p95_ratio,
            f.avg_instance_mib,
            f.avg_seed_mib,
            f.avg_swap_mib,
            f.memory_ratio
        ));
    }
    per_function(&mut s, figures, "P95 over none's, per function", |f| &f.function_p95_ratio);
    per_function(&mut s, figures, "Memory (instances and seed) over none's, per function", |f| &f.function_memory_ratio);
    s.push_str("\nBy popularity (thirds by rank): P95 / memory over none's\n");
    s.push_str(&format!("{:<14}", "ARM"));
    for c in figures.first().map(|f| f.classes.as_slice()).unwrap_or_default() {
        s.push_str(&format!(" {:>15}", format!("{} ({})", c.class, c.functions.len())));
    }
    s.push('\n');
    for arm in figures {
        s.push_str(&format!("{:<14}", arm.arm));
        for c in &arm.classes {
            s.push_str(&format!(" {:>15}", format!("{:.2} / {:.2}", c.p95_ratio, c.memory_ratio)));
        }
        s.push('\n');
    }
    s
}

/// A table of one ratio per arm and function (`-` where it is missing).
fn per_function(s: &mut String, figures: &[ArmFigures], title: &str, of: impl Fn(&ArmFigures) -> &std::collections::BTreeMap<String, f64>) {
    let functions: Vec<&String> = figures.first().map(|f| of(f).keys().collect()).unwrap_or_default();
    s.push_str(&format!("\n{title}\n{:<14}", "ARM"));
    for f in &functions {
        s.push_str(&format!(" {:>9}", truncate(f, 9)));
    }
    s.push('\n');
    for arm in figures {
        s.push_str(&format!("{:<14}", arm.arm));
        for f in &functions {
            match of(arm).get(*f) {
                Some(r) => s.push_str(&format!(" {r:>9.2}")),
                None => s.push_str(&format!(" {:>9}", "-")),
            }
        }
        s.push('\n');
    }
}

fn truncate(s: &str, n: usize) -> &str {
    s.char_indices().nth(n).map_or(s, |(i, _)| &s[..i])
}

pub fn run(bin: &Path, opts: &Options) -> anyhow::Result<()> {
    let arms = opts.arms.iter().map(|a| arm(a, opts.offload_idle)).collect::<anyhow::Result<Vec<_>>>()?;
    let functions: Vec<&str> = opts.functions.iter().map(String::as_str).collect();
    let drain = format!("{}", opts.drain_percent);
    let mut worker_args = vec!["--semi-warm-drain", drain.as_str()];
    let tmo = arms.iter().any(|a| a.offload.is_some_and(|(_, p)| p.tmo));
    if tmo {
        worker_args.extend(["--zram-swap", TMO_SWAP_MIB]);
    }
    if !opts.json {
        eprintln!("faasmem: {:.0} s of {} through {} gateways at once ({})", opts.minutes * 60.0, opts.spec, arms.len(), arms.iter().map(|a| a.label.as_str()).collect::<Vec<_>>().join(", "));
    }
    let arms_options = ArmsOptions { bench: "bench-faasmem", minutes: opts.minutes, spec: &opts.spec, functions: &functions, arms: &arms, worker_args: &worker_args, progress: !opts.json };
    let swap = tmo.then(SwapSampler::start);
    let outcome = replay_arms(bin, &arms_options)?;
    let swap_mib = swap.map_or(0.0, SwapSampler::mean_mib);
    let runs = outcome.runs;
    let report = Report::new(&runs);
    let barriers: Vec<mitosis_proto::local::BarrierStats> = outcome.workers.iter().map(|w| w.barriers.clone()).collect();
    let figures = figures(&runs, &report, swap_mib, &functions);
    std::fs::create_dir_all(&opts.out).with_context(|| format!("creating {}", opts.out.display()))?;
    let note = format!(
        "{} on {} (keep-alive 600 s, max 16, LIFO; semi-warm after {} s or the P99 reuse interval, draining {}%/s to 8 MiB)",
        opts.spec,
        functions.join(","),
        opts.offload_idle,
        opts.drain_percent
    );
    let mut files = report::write_dir(&opts.out, &runs, &report, Some(&note)).map_err(|e| anyhow::anyhow!("{e}"))?;
    let json = serde_json::json!({ "bench": "faasmem", "note": note, "minutes": opts.minutes, "arms": figures, "barriers": barriers });
    let figures_path = opts.out.join("faasmem.json");
    std::fs::write(&figures_path, serde_json::to_string_pretty(&json)?).with_context(|| format!("writing {}", figures_path.display()))?;
    files.push(figures_path);
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(());
    }
    println!("faasmem: {note}");
    print!("{}", table(&figures));
    for (host, b) in ["a", "b"].iter().zip(&barriers) {
        println!(
            "packet barriers on worker {host}: {}, median {} µs, P99 {} µs, max {} µs; the pager's part: median {} µs, P99 {} µs",
            b.count, b.p50_us, b.p99_us, b.max_us, b.pager_p50_us, b.pager_p99_us
        );
    }
    println!("experiments 4 and 6: --experiment semi-warm, --experiment density");
    for f in files {
        println!("wrote {}", f.display());
    }
    Ok(())
}

/// MiB of each worker's zram swap under a `tmo` arm (taken only as used).
pub(crate) const TMO_SWAP_MIB: &str = "4096";

/// Samples the memory of every zram device of the machine once a second
/// while the arms replay: the workers' swap, which only `tmo` instances may
/// use (the bench owns the machine; other zram devices are counted too).
pub(crate) struct SwapSampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Vec<u64>>,
}

impl SwapSampler {
    pub(crate) fn start() -> SwapSampler {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut samples = Vec::new();
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                samples.push(zram_used_bytes());
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
            samples
        });
        SwapSampler { stop, thread }
    }

    pub(crate) fn mean_mib(self) -> f64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let samples = self.thread.join().unwrap_or_default();
        ratio(samples.iter().sum::<u64>() as f64, samples.len() as f64) / f64::from(1u32 << 20)
    }
}

/// `mem_used_total` (the third field of `mm_stat`) summed over zram devices.
fn zram_used_bytes() -> u64 {
    let Ok(entries) = std::fs::read_dir("/sys/block") else { return 0 };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("zram"))
        .filter_map(|e| std::fs::read_to_string(e.path().join("mm_stat")).ok())
        .filter_map(|s| s.split_whitespace().nth(2).and_then(|v| v.parse::<u64>().ok()))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use mitosis_trace::replay::{MemorySample, ReplayRun};

    fn run(label: &str, instance_mib: u64, seed_mib: u64) -> ReplayRun {
        let per_function = std::collections::BTreeMap::from([("json".to_string(), (instance_mib + seed_mib) << 20)]);
        let sample = |t_s| MemorySample { t_s, instance_bytes: instance_mib << 20, seed_bytes: seed_mib << 20, live_instances: 2, per_function: per_function.clone() };
        ReplayRun { label: label.into(), records: Vec::new(), memory: vec![sample(0.0), sample(10.0)], memory_failures: 0, window_s: 10.0 }
    }

    #[test]
    fn figures_are_ratios_to_the_first_arm() {
        let runs = [run("none", 100, 0), run("mitosis", 20, 30)];
        let report = Report::new(&runs);
        let f = figures(&runs, &report, 0.0, &["json", "gzip"]);
        assert_eq!(f[0].memory_ratio, 1.0);
        assert!((f[1].avg_instance_mib - 20.0).abs() < 1e-9 && (f[1].avg_seed_mib - 30.0).abs() < 1e-9);
        assert!((f[1].memory_ratio - 0.5).abs() < 1e-9, "{}", f[1].memory_ratio);
        assert!(table(&f).contains("mitosis"));
        assert!((f[1].function_avg_mib["json"] - 50.0).abs() < 1e-9 && (f[1].function_memory_ratio["json"] - 0.5).abs() < 1e-9);
        assert_eq!(f[1].function_avg_mib["gzip"], 0.0);
        assert_eq!(f[1].classes.iter().map(|c| c.class).collect::<Vec<_>>(), ["high", "middle"]);
        assert!((f[1].classes[0].memory_ratio - 0.5).abs() < 1e-9);
    }

    #[test]
    fn popularity_classes_are_thirds_by_rank() {
        let ten = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"];
        let c = popularity_classes(&ten);
        assert_eq!(c.iter().map(|(_, f)| f.len()).collect::<Vec<_>>(), [4, 3, 3]);
        assert_eq!((c[0].0, c[0].1[0], c[2].0, c[2].1[2]), ("high", "a", "low", "j"));
        assert_eq!(popularity_classes(&["a"]).len(), 1);
    }
}
