//! `mitosis stress fork`, and the harness it shares with `mitosis stress
//! soak` ([`crate::soak`]): MITOSIS's remote-fork stress tests, stricter.
//!
//! N loops on host `b` resume children of one seed on host `a`, over and
//! over, for S seconds per workload: the C parent (`programs/stress_parent.c`,
//! compiled at run time with the system `cc`; each child checks every word
//! of every page of its memory) and each Python function of the suite
//! (each child runs the handler; its result lines must equal its parent's
//! warm run's). Every second it prints MITOSIS's line
//! `[name] Throughput: X containers/sec, latency Y ms`.
//!
//! The run passes only if all of these hold, each printed PASS or FAIL:
//! - **steady**: no second of a workload under 50% of that workload's
//!   median second, after a warm-up: the seconds in which the workload's
//!   first child ran (the seed's first child on host `b` fetches its pages
//!   over the network into `b`'s page cache, the next ones map them from
//!   there), which are printed but not judged;
//! - **no wrong result**: every child's bytes or digest were right;
//! - **no failed resume**: every resume started a child that ended well;
//! - **nothing left behind**: after the run (daemons settled), the
//!   processes under both daemons, their container cgroup directories, the
//!   run's network namespaces and the daemons' own mounts are what they were
//!   before it; every seed's snapshot has exited; and after the cluster's
//!   teardown none of the run's namespaces and cgroup directories remain;
//! - **flat**: each daemon's resident memory (its page cache, bounded by
//!   `--cache-size`, is in memfds outside it) and its open descriptors, sampled four times
//!   a second while children are resumed (from the first child's end), grew
//!   at most 10% between the first and the last minute (runs under 3
//!   minutes: the first and the last third), medians of each window; a
//!   drop is no leak and passes. Under 30 s of samples (the short runs of
//!   CI) it is printed as SKIP, not judged: windows of a second or two see
//!   the allocator warm up, not leaks.
//!
//! How a second is counted: a child that ran from `t1` to `t2` adds the
//! part of `[t1, t2]` that falls into that second, over `t2 - t1`, to its
//! containers/sec; so a loop whose children take 400 ms adds 2.5 to every
//! second it is busy, even to a second in which none of them ended (as
//! MITOSIS's `1/latency` does). A second's line is printed once every child
//! that overlaps it has ended, so the lines are final. Its latency is the
//! median end-to-end time (resume request to the child's exit) of the
//! children that overlap it.

mod checks;
mod cparent;
mod loops;

use crate::kernel_log::{KernelLog, KernelLogReport};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use serde::Serialize;

pub(crate) use checks::{
    all_passed, common_rules, flatness, footprint_before, left_behind, live_snapshots, print_rules, Flatness, ResourceSample, Rule,
    Sampler, Teardown,
};
pub(crate) use cparent::{c_verdict, compile_c, compile_parent, random_u64, verify_line, CParent};
pub(crate) use loops::{drive, judge_attempt, run_child, Attempt, Budget, Ended, LoopsRun, Outcome};

use crate::functions::{self, Suite, FUNCTIONS};
use crate::hosts::{ensure_root, host_command, Cluster, HostProcess, Seed};
use crate::median;

/// How long a C child may take; a Python child gets the suite's patience.
const C_CHILD_PATIENCE: Duration = Duration::from_secs(60);
const PYTHON_CHILD_PATIENCE: Duration = Duration::from_secs(120);
/// Repetitions of the local baselines.
const FORK_EXIT_RUNS: usize = 300;
const COLD_RUNS: usize = 3;

// ------------------------------------------------------------ workloads --

/// What the children of a run are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Workload {
    /// The C parent; each child checks every page.
    C,
    /// A function of the suite; each child runs its handler once.
    Python(String),
}

impl Workload {
    /// The name in the per-second lines.
    pub fn label(&self) -> String {
        match self {
            Workload::C => "c".into(),
            Workload::Python(f) => f.clone(),
        }
    }
}

/// Parses `--workload`: a comma-separated list of `c`, `python:<function>`,
/// `python:all` and `all` (the C parent, then every function).
pub fn parse_workloads(spec: &str) -> anyhow::Result<Vec<Workload>> {
    let mut out = Vec::new();
    let all_python = || FUNCTIONS.iter().map(|f| Workload::Python(f.to_string()));
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part {
            "c" => out.push(Workload::C),
            "all" => {
                out.push(Workload::C);
                out.extend(all_python());
            }
            "python:all" => out.extend(all_python()),
            _ => match part.strip_prefix("python:") {
                Some(f) if FUNCTIONS.contains(&f) => out.push(Workload::Python(f.to_string())),
                Some(f) => bail!("unknown function {f:?} in --workload; the suite has {}", FUNCTIONS.join(", ")),
                None => bail!("unknown workload {part:?}: use c, python:<function>, python:all or all"),
            },
        }
    }
    ensure!(!out.is_empty(), "--workload names no workload");
    let mut seen = Vec::new();
    out.retain(|w| if seen.contains(w) { false } else { seen.push(w.clone()); true });
    Ok(out)
}

// ------------------------------------------------------------ baselines --

/// The fork+exit baseline: medians of a local fork, `_exit(0)`, waitpid (µs).
pub(crate) fn fork_exit_median_us() -> f64 {
    let v: Vec<f64> = (0..FORK_EXIT_RUNS)
        .filter_map(|_| {
            let t = Instant::now();
            let pid = mitosis_sys::process::fork_exit_child().ok()?;
            mitosis_sys::process::wait_pid(pid).ok()?;
            Some(t.elapsed().as_secs_f64() * 1e6)
        })
        .collect();
    median(&v)
}

/// The C workload's local baseline on host b: start the program (which fills
/// its memory) and let it check it, no remote fork (ms, median).
fn c_cold_ms(cluster: &Cluster, program: &Path, mib: u64) -> anyhow::Result<f64> {
    let mut v = Vec::new();
    for _ in 0..COLD_RUNS {
        let key = random_u64();
        let t = Instant::now();
        let mut p = HostProcess::spawn(host_command(&cluster.hosts.b, program).args([mib.to_string(), format!("{key:x}")]))?;
        p.chan.recv_number("ready", Duration::from_secs(60))?;
        p.chan.send(verify_line(key).trim_end())?;
        let line = p.chan.recv(Duration::from_secs(60))?;
        ensure!(line.starts_with("ok "), "the local baseline run answered {line:?}");
        p.guard.wait_timeout(Duration::from_secs(10)).context("the local baseline run did not exit")?;
        v.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(median(&v))
}

// ----------------------------------------------------------------- fork --

/// What `mitosis stress fork` was asked.
#[derive(Debug, Clone)]
pub struct ForkOptions {
    pub loops: usize,
    pub seconds: u64,
    pub workloads: Vec<Workload>,
    /// Memory of the C parent.
    pub mib: u64,
    pub json: bool,
    pub python: Option<PathBuf>,
    pub functions_dir: Option<PathBuf>,
    /// Tell C children to expect another pattern than their parent's (a
    /// check of the checker: every child must then report wrong bytes).
    pub expect_wrong_pattern: bool,
}

/// One workload's part of the report.
#[derive(Debug, Clone, Serialize)]
struct WorkloadReport {
    workload: String,
    /// Same-run local baseline: the C program started and checking its
    /// memory, or the function's cold start (`python function.py
    /// -run_once=1`), on host b; median ms.
    cold_ms: f64,
    /// Python: the seed's warm handler run, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    warm_ms: Option<f64>,
    run: LoopsRun,
}

#[derive(Debug, Clone, Serialize)]
struct ForkReport {
    loops: usize,
    seconds_per_workload: u64,
    c_parent_mib: u64,
    fork_exit_median_us: f64,
    workloads: Vec<WorkloadReport>,
    resources: Vec<ResourceSample>,
    flatness: Vec<Flatness>,
    left_behind: Vec<String>,
    /// What the kernel logged during the run.
    kernel_log: KernelLogReport,
    rules: Vec<Rule>,
    passed: bool,
}

/// `mitosis stress fork`: exit status 0 when every rule passed, 1 otherwise.
pub fn fork(bin: &Path, opts: &ForkOptions) -> anyhow::Result<i32> {
    ensure_root("mitosis stress fork")?;
    let mut kernel_log = KernelLog::mark();
    ensure!(opts.loops > 0 && opts.seconds > 0 && opts.mib > 0, "--loops, --seconds and --mib must be at least 1");
    let say = |m: &str| eprintln!("stress fork: {m}");
    let suite = if opts.workloads.iter().any(|w| matches!(w, Workload::Python(_))) {
        let s = Suite::locate(opts.functions_dir.as_deref(), opts.python.as_deref())?;
        s.check()?;
        Some(s)
    } else {
        None
    };
    say("starting hosts a and b with a daemon each");
    let cluster = Cluster::start(bin, "stress-fork")?;
    let program = if opts.workloads.contains(&Workload::C) { Some(compile_parent(cluster.dir.path())?) } else { None };
    let teardown = Teardown::of(&cluster);
    let mut report = cluster.run(|cluster| {
        let fork_exit = fork_exit_median_us();
        let before = footprint_before(cluster);
        let sampler = Sampler::start(cluster);
        let mut workloads = Vec::new();
        let mut snapshots = Vec::new();
        for w in &opts.workloads {
            let label = w.label();
            let report = match w {
                Workload::C => {
                    let program = program.as_deref().expect("compiled above");
                    say(&format!("[{label}] local baseline, then a {} MiB C parent on host a", opts.mib));
                    let cold_ms = c_cold_ms(cluster, program, opts.mib)?;
                    let parent = CParent::start(cluster, program, opts.mib, random_u64())?;
                    let seed = Seed::prepare(&cluster.a, parent.pid, &format!("stress-c-{}", std::process::id()))?;
                    snapshots.push(seed.info.snapshot_pid);
                    let expect = if opts.expect_wrong_pattern { parent.key ^ 1 } else { parent.key };
                    say(&format!("[{label}] {} loops for {} s", opts.loops, opts.seconds));
                    let run = drive(&label, opts.loops, &Budget::Seconds(opts.seconds), opts.json, &sampler, |o| matches!(o, Outcome::Good), &|l| {
                        let err = cluster.dir.path().join(format!("c-loop{l}.stderr"));
                        let attempt = run_child(cluster, seed.id(), Some(&verify_line(expect)), &err, C_CHILD_PATIENCE);
                        judge_attempt(attempt, |out| match c_verdict(out) {
                            Ok(k) if k == expect => Ok(()),
                            Ok(k) => Err(format!("the child checked key {k:016x}, not {expect:016x}")),
                            Err(why) => Err(why),
                        })
                    });
                    seed.drop_and_wait(Duration::from_secs(30))?;
                    parent.exit();
                    WorkloadReport { workload: label, cold_ms, warm_ms: None, run }
                }
                Workload::Python(name) => {
                    let suite = suite.as_ref().expect("located above");
                    say(&format!("[{label}] cold start on host b (baseline), then its seed on host a"));
                    let colds: Vec<f64> = (0..COLD_RUNS)
                        .map(|_| functions::cold_start(suite, &cluster.hosts.b, cluster.dir.path(), name).map(|c| c.wall_ms))
                        .collect::<anyhow::Result<_>>()?;
                    let id = format!("stress-{name}-{}", std::process::id());
                    let seed = functions::prepare_seed(suite, cluster, name, &id)?;
                    let guard = functions::SeedGuard::new(cluster, seed.seed.clone());
                    snapshots.push(seed.seed.snapshot_pid);
                    let expected = seed.warm_results.clone();
                    say(&format!("[{label}] {} loops for {} s", opts.loops, opts.seconds));
                    let run = drive(&label, opts.loops, &Budget::Seconds(opts.seconds), opts.json, &sampler, |o| matches!(o, Outcome::Good), &|l| {
                        let err = cluster.dir.path().join(format!("{name}-loop{l}.stderr"));
                        let attempt = run_child(cluster, &id, None, &err, PYTHON_CHILD_PATIENCE);
                        judge_attempt(attempt, |out| {
                            let lines: Vec<String> = out.lines().map(str::to_string).collect();
                            let got = functions::results(&lines);
                            if got == expected {
                                Ok(())
                            } else {
                                Err(format!("the child printed {got:?}, its parent {expected:?}"))
                            }
                        })
                    });
                    guard.drop_now()?;
                    WorkloadReport { workload: label, cold_ms: median(&colds), warm_ms: Some(seed.warm_ms), run }
                }
            };
            workloads.push(report);
        }
        let resources = sampler.stop();
        let mut leaks = left_behind(cluster, &before);
        let alive = live_snapshots(&snapshots);
        if !alive.is_empty() {
            leaks.push(format!("snapshots {alive:?} outlived their seeds"));
        }
        let flat = flatness(&resources);
        Ok(ForkReport {
            loops: opts.loops,
            seconds_per_workload: opts.seconds,
            c_parent_mib: opts.mib,
            fork_exit_median_us: fork_exit,
            workloads,
            resources,
            flatness: flat,
            left_behind: leaks,
            kernel_log: KernelLogReport::default(),
            rules: Vec::new(),
            passed: false,
        })
    })?;
    drop(cluster);
    report.left_behind.extend(teardown.remains());
    let runs: Vec<LoopsRun> = report.workloads.iter().map(|w| w.run.clone()).collect();
    report.kernel_log = kernel_log.since();
    report.rules =
        common_rules(&runs, "no wrong result (bytes or digest)", "no failed resume", &report.left_behind, &report.flatness, &report.kernel_log);
    report.passed = all_passed(&report.rules);
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_fork_summary(&report);
        print_rules(&report.rules);
    }
    Ok(if report.passed { 0 } else { 1 })
}

fn print_fork_summary(r: &ForkReport) {
    println!();
    println!(
        "Remote fork stress: {} loops, {} s per workload, C parent of {} MiB (medians; local fork+exit {:.0} us)",
        r.loops, r.seconds_per_workload, r.c_parent_mib, r.fork_exit_median_us
    );
    println!(
        "  {:<12} {:>10} {:>10} {:>11} {:>11} {:>12} {:>8} {:>6} {:>7}",
        "workload", "median/s", "lowest/s", "latency ms", "p99 ms", "cold ms (b)", "good", "wrong", "failed"
    );
    for w in &r.workloads {
        println!(
            "  {:<12} {:>10.2} {:>10.2} {:>11.2} {:>11.2} {:>12.2} {:>8} {:>6} {:>7}",
            w.workload, w.run.median_per_s, w.run.min_per_s, w.run.latency_median_ms, w.run.latency_p99_ms, w.cold_ms, w.run.good, w.run.wrong, w.run.failed
        );
    }
    for f in &r.flatness {
        println!("  daemon {} {}: {:.0} -> {:.0} ({:+.1}%, {})", f.daemon, f.what, f.first, f.last, f.change * 100.0, f.windows);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workloads_parse() {
        assert_eq!(parse_workloads("c").unwrap(), vec![Workload::C]);
        assert_eq!(parse_workloads("python:json, c").unwrap(), vec![Workload::Python("json".into()), Workload::C]);
        assert_eq!(parse_workloads("all").unwrap().len(), 1 + FUNCTIONS.len());
        assert_eq!(parse_workloads("c,all").unwrap().len(), 1 + FUNCTIONS.len());
        assert!(parse_workloads("python:nope").is_err());
        assert!(parse_workloads("rust").is_err());
        assert!(parse_workloads(",").is_err());
    }
}
