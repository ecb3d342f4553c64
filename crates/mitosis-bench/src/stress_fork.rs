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
//! - **flat**: each daemon's resident memory (less its page cache, which is
//!   bounded by `--cache-size`) and its open descriptors, sampled four times
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

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use mitosis::{ChildEnd, Client};
use serde::Serialize;

use crate::functions::{self, Suite, FUNCTIONS};
use crate::hosts::{ensure_root, host_command, Cluster, HostProcess, Seed};
use crate::{median, percentile};

/// The C parent's source, written into the run's directory and compiled there.
const PARENT_SOURCE: &str = include_str!("../programs/stress_parent.c");
/// A second under this share of its workload's median fails the run.
const STEADY_SHARE: f64 = 0.5;
/// Allowed growth of a daemon's memory or descriptors, first to last window.
const FLAT_TOLERANCE: f64 = 0.10;
/// Flatness is judged on at least this much sampled time (shorter windows
/// see the daemons' allocator warm up, not leaks).
const FLAT_MIN_SPAN: Duration = Duration::from_secs(30);
/// Runs of at least this long compare their first and last minute.
const MINUTE_WINDOWS_FROM: Duration = Duration::from_secs(180);
/// How long a C child may take; a Python child gets the suite's patience.
const C_CHILD_PATIENCE: Duration = Duration::from_secs(60);
const PYTHON_CHILD_PATIENCE: Duration = Duration::from_secs(120);
/// How long the daemons get to tear down the last containers and refill
/// their pools before "left behind" is judged.
const SETTLE: Duration = Duration::from_secs(30);
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

// ------------------------------------------------------------ C parent --

/// Writes the C parent's source into `dir` and compiles it with `cc`.
pub(crate) fn compile_parent(dir: &Path) -> anyhow::Result<PathBuf> {
    let src = dir.join("stress_parent.c");
    let out = dir.join("stress_parent");
    std::fs::write(&src, PARENT_SOURCE).with_context(|| format!("writing {}", src.display()))?;
    let res = Command::new("cc")
        .args(["-O2", "-Wall", "-o"])
        .arg(&out)
        .arg(&src)
        .output()
        .context("running cc, the system C compiler (install gcc or clang)")?;
    ensure!(res.status.success(), "compiling {}: {}", src.display(), String::from_utf8_lossy(&res.stderr));
    Ok(out)
}

/// A C parent running on host `a`, its memory filled with the pattern of `key`.
pub(crate) struct CParent {
    proc: HostProcess,
    pub pid: i32,
    pub key: u64,
}

impl CParent {
    pub(crate) fn start(cluster: &Cluster, program: &Path, mib: u64, key: u64) -> anyhow::Result<CParent> {
        let mut proc = HostProcess::spawn(host_command(&cluster.hosts.a, program).args([mib.to_string(), format!("{key:x}")]))?;
        let pid = proc.chan.recv_number("ready", Duration::from_secs(60)).context("the C parent's start")? as i32;
        Ok(CParent { proc, pid, key })
    }

    /// Fills the memory again with the pattern of `key`.
    pub(crate) fn fill(&mut self, key: u64) -> anyhow::Result<()> {
        self.proc.chan.send(&format!("fill {key:x}"))?;
        let line = self.proc.chan.recv(Duration::from_secs(60)).context("the C parent's answer to fill")?;
        ensure!(line == format!("filled {key:016x}"), "the C parent answered {line:?} to fill {key:x}");
        self.key = key;
        Ok(())
    }

    /// Lets it exit (its process group is killed anyway when dropped).
    pub(crate) fn exit(mut self) {
        let _ = self.proc.chan.send("exit");
        let _ = self.proc.guard.wait_timeout(Duration::from_secs(5));
    }
}

/// A key from the kernel's random bytes.
pub(crate) fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)).expect("reading /dev/urandom");
    u64::from_le_bytes(b)
}

/// The line a C child gets on stdin: check against `key`.
pub(crate) fn verify_line(key: u64) -> String {
    format!("verify {key:x}\n")
}

/// What a C child printed: `Ok(key)` for `ok key=<hex> ...`, else the reason.
pub(crate) fn c_verdict(stdout: &str) -> Result<u64, String> {
    let line = stdout.lines().find(|l| l.starts_with("ok ") || l.starts_with("WRONG"));
    match line {
        Some(l) if l.starts_with("ok key=") => {
            let hex = l["ok key=".len()..].split_whitespace().next().unwrap_or("");
            u64::from_str_radix(hex, 16).map_err(|_| format!("unreadable answer {l:?}"))
        }
        Some(l) => Err(l.to_string()),
        None => Err(format!("no verdict in its output {stdout:?}")),
    }
}

// --------------------------------------------------------------- children --

/// How one child went.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    /// Right bytes or digest.
    Good,
    /// It ran and saw something wrong (or printed a wrong digest).
    Wrong(String),
    /// A loud failure the run provokes on purpose (soak: the child's seed
    /// generation went away while it ran, and mitosis killed it, saying why).
    Expected(String),
    /// A resume refused, as the run provokes on purpose (soak: the id had
    /// no seed at that moment); no child ran.
    Refused(String),
    /// Anything else: the resume failed, the child crashed or hung.
    Failed(String),
}

impl Outcome {
    fn name(&self) -> &'static str {
        match self {
            Outcome::Good => "good",
            Outcome::Wrong(_) => "wrong",
            Outcome::Expected(_) => "expected_failure",
            Outcome::Refused(_) => "expected_refusal",
            Outcome::Failed(_) => "failed",
        }
    }
    fn detail(&self) -> Option<String> {
        match self {
            Outcome::Good => None,
            Outcome::Wrong(s) | Outcome::Expected(s) | Outcome::Refused(s) | Outcome::Failed(s) => Some(s.clone()),
        }
    }
}

/// A child that ended: how, and what it printed.
pub(crate) struct Ended {
    pub end: ChildEnd,
    pub stdout: String,
    pub stderr: String,
}

/// A resume attempt.
pub(crate) enum Attempt {
    Ended(Ended),
    /// The daemon refused the resume (with its error).
    Refused(mitosis::Error),
    /// Something broke on the way (connection, timeout).
    Broken(anyhow::Error),
}

/// Resumes a child of seed `id` (on host `a`) on host `b` in a lean
/// container, gives it `stdin` (or /dev/null), collects its stdout, and its
/// stderr through the file `err_path`, and waits (up to `patience`) for its end.
pub(crate) fn run_child(cluster: &Cluster, id: &str, stdin: Option<&str>, err_path: &Path, patience: Duration) -> Attempt {
    match try_run_child(cluster, id, stdin, err_path, patience) {
        Ok(a) => a,
        Err(e) => Attempt::Broken(e),
    }
}

fn try_run_child(cluster: &Cluster, id: &str, stdin: Option<&str>, err_path: &Path, patience: Duration) -> anyhow::Result<Attempt> {
    let child_in: OwnedFd = match stdin {
        Some(text) => {
            let (rx, mut tx) = std::io::pipe()?;
            // A line fits the pipe's buffer: no reader needed yet.
            tx.write_all(text.as_bytes())?;
            rx.into()
        }
        None => File::open("/dev/null")?.into(),
    };
    let (from_out, child_out) = std::io::pipe()?;
    let child_err = File::create(err_path).with_context(|| format!("creating {}", err_path.display()))?;
    let client = Client::connect(cluster.b.socket()).context("connecting to daemon b")?;
    let resumed = match client.resume(&cluster.a.addr(), id, [child_in.as_raw_fd(), child_out.as_raw_fd(), child_err.as_raw_fd()]) {
        Ok(r) => r,
        Err(e) => return Ok(Attempt::Refused(e)),
    };
    // Only the child keeps its ends: its output ends when it does.
    drop((child_in, child_out, child_err));
    let stdout = read_to_end_within(from_out, patience);
    // Dropping `resumed` on a timeout kills the child.
    let stdout = stdout.with_context(|| format!("the child's output; stderr: {}", tail(err_path)))?;
    let (end, _stats) = resumed.wait().context("waiting for the child's end")?;
    Ok(Attempt::Ended(Ended { end, stdout, stderr: tail(err_path) }))
}

/// Reads `from` to its end; fails if the end does not come within `timeout`.
fn read_to_end_within(from: impl Into<OwnedFd>, timeout: Duration) -> anyhow::Result<String> {
    let mut from = File::from(from.into());
    let deadline = Instant::now() + timeout;
    let mut bytes = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if !mitosis_sys::poll::wait_readable(&from, left).context("poll")? {
            bail!("no end of output within {timeout:?}; so far: {:?}", String::from_utf8_lossy(&bytes));
        }
        let mut chunk = [0u8; 8192];
        match from.read(&mut chunk) {
            Ok(0) => return Ok(String::from_utf8_lossy(&bytes).into_owned()),
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context("reading the child's output"),
        }
    }
}

/// The last lines of a file (a child's stderr), on one line.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(6)..].join(" | ")
}

/// The outcome of an attempt whose child should have exited 0 with output
/// that `judge` accepts (`Err(reason)`: a wrong result).
pub(crate) fn judge_attempt(attempt: Attempt, judge: impl FnOnce(&str) -> Result<(), String>) -> Outcome {
    match attempt {
        Attempt::Ended(Ended { end: ChildEnd::Exited(0), stdout, .. }) => match judge(&stdout) {
            Ok(()) => Outcome::Good,
            Err(why) => Outcome::Wrong(why),
        },
        // The C child exits 1 after printing what it found wrong.
        Attempt::Ended(Ended { end: ChildEnd::Exited(1), stdout, stderr }) if stdout.contains("WRONG") => {
            let _ = stderr;
            Outcome::Wrong(stdout.lines().find(|l| l.starts_with("WRONG")).unwrap_or_default().to_string())
        }
        Attempt::Ended(Ended { end, stdout, stderr }) => {
            Outcome::Failed(format!("the child {end}; stdout {:?}; stderr: {stderr}", stdout.trim()))
        }
        Attempt::Refused(e) => Outcome::Failed(format!("resume refused: {e} (exit status {})", e.exit_code())),
        Attempt::Broken(e) => Outcome::Failed(format!("{e:#}")),
    }
}

// ------------------------------------------------------------ the loops --

/// When the loops stop taking new children.
pub(crate) enum Budget {
    /// Start children for this many seconds.
    Seconds(u64),
    /// Start this many children in all.
    Count { started: AtomicUsize, total: usize },
}

impl Budget {
    pub(crate) fn count(total: usize) -> Budget {
        Budget::Count { started: AtomicUsize::new(0), total }
    }

    fn take(&self, t0: Instant) -> bool {
        match self {
            Budget::Seconds(s) => t0.elapsed() < Duration::from_secs(*s),
            Budget::Count { started, total } => started.fetch_add(1, Ordering::Relaxed) < *total,
        }
    }
}

/// One child as the JSON report lists it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ChildSample {
    #[serde(rename = "loop")]
    pub loop_index: usize,
    /// From the workload's start, ms.
    pub start_ms: f64,
    /// Resume request to the child's end, ms.
    pub latency_ms: f64,
    pub outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// One second of a workload.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Sample {
    pub second: usize,
    /// Children (good, or failing as expected), each counted by the share
    /// of its run that falls into this second.
    pub containers_per_s: f64,
    /// Median latency of the counted children that overlap this second
    /// (`None` when there are none).
    pub latency_ms: Option<f64>,
    /// Children that ended in this second, by outcome.
    pub ended_good: usize,
    pub ended_wrong: usize,
    pub ended_failed: usize,
    pub ended_expected: usize,
}

/// What the loops of one workload did.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct LoopsRun {
    pub label: String,
    pub loops: usize,
    /// Full seconds measured (a last, partial second is left out).
    pub seconds: usize,
    pub elapsed_s: f64,
    pub samples: Vec<Sample>,
    pub children: Vec<ChildSample>,
    pub good: usize,
    pub wrong: usize,
    pub failed: usize,
    /// Children killed by mitosis because their generation went away.
    pub expected_failures: usize,
    /// Resumes refused because the id had no seed at that moment.
    pub expected_refusals: usize,
    /// Seconds the first child ran in (its seed's first child on host b:
    /// its pages come over the network and fill b's page cache; later
    /// children map them from there). Printed, not judged.
    pub warmup_seconds: usize,
    /// Of the judged seconds (after the warm-up).
    pub median_per_s: f64,
    pub min_per_s: f64,
    pub min_second: usize,
    /// Of the counted children.
    pub latency_median_ms: f64,
    pub latency_p99_ms: f64,
    /// Up to a few reasons of each kind of failure, for the summary.
    pub first_wrong: Vec<String>,
    pub first_failed: Vec<String>,
    pub first_expected: Vec<String>,
}

struct Shared {
    /// Start (s from t0) of each loop's child in flight.
    in_flight: Vec<Option<f64>>,
    children: Vec<(ChildSample, f64)>,
}

/// Runs `loops` loops, each calling `one(loop)` for a child while `budget`
/// allows, printing `[label]` lines as seconds become final (to stderr when
/// `json`), with `sampler` active from the first child's end to the end of
/// the loops. `counted` says which outcomes are containers/sec.
pub(crate) fn drive(
    label: &str,
    loops: usize,
    budget: &Budget,
    json: bool,
    sampler: &Sampler,
    counted: fn(&Outcome) -> bool,
    one: &(dyn Fn(usize) -> Outcome + Sync),
) -> LoopsRun {
    let t0 = Instant::now();
    let shared = Mutex::new(Shared { in_flight: vec![None; loops], children: Vec::new() });
    let done = AtomicBool::new(false);
    let mut printed = 0usize;
    let print = |second: usize, shared: &Shared| {
        let s = sample_of(second, &shared.children, counted);
        let latency = s.latency_ms.map_or("n/a".to_string(), |l| format!("{l:.3}"));
        let line = format!("[{label}] Throughput: {:.3} containers/sec, latency {latency} ms", s.containers_per_s);
        if json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    };
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..loops)
            .map(|l| {
                let shared = &shared;
                scope.spawn(move || {
                    while budget.take(t0) {
                        let start = {
                            let mut sh = shared.lock().unwrap();
                            let start = t0.elapsed().as_secs_f64();
                            sh.in_flight[l] = Some(start);
                            start
                        };
                        let outcome = one(l);
                        let mut sh = shared.lock().unwrap();
                        let end = t0.elapsed().as_secs_f64();
                        sh.in_flight[l] = None;
                        let sample = ChildSample {
                            loop_index: l,
                            start_ms: start * 1e3,
                            latency_ms: (end - start) * 1e3,
                            outcome: outcome.name(),
                            detail: outcome.detail(),
                        };
                        if let Outcome::Wrong(why) | Outcome::Failed(why) = &outcome {
                            eprintln!("ERROR [{label}] loop {l}: {}: {why}", outcome.name());
                        }
                        sh.children.push((sample, end));
                        sampler.set_active(true);
                    }
                })
            })
            .collect();
        let done = &done;
        scope.spawn(move || {
            for w in workers {
                let _ = w.join();
            }
            sampler.set_active(false);
            done.store(true, Ordering::Relaxed);
        });
        // Print each second once no child in flight can still add to it.
        while !done.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50));
            let sh = shared.lock().unwrap();
            let now = t0.elapsed().as_secs_f64();
            let oldest = sh.in_flight.iter().flatten().fold(f64::INFINITY, |a, &b| a.min(b));
            let cap = if let Budget::Seconds(s) = budget { *s as usize } else { usize::MAX };
            let final_below = (now.min(oldest).floor() as usize).min(cap);
            while printed < final_below {
                print(printed, &sh);
                printed += 1;
            }
        }
    });
    let elapsed = t0.elapsed().as_secs_f64();
    let sh = shared.into_inner().unwrap();
    // A count budget ends within a second, which is left out.
    let seconds = match budget {
        Budget::Seconds(s) => *s as usize,
        Budget::Count { .. } => (elapsed.floor() as usize).max(1),
    };
    while printed < seconds {
        print(printed, &sh);
        printed += 1;
    }
    summarize(label, loops, seconds, elapsed, sh.children, counted)
}

/// The sample of `second` from the children so far (`(child, end s)`).
fn sample_of(second: usize, children: &[(ChildSample, f64)], counted: fn(&Outcome) -> bool) -> Sample {
    let (lo, hi) = (second as f64, second as f64 + 1.0);
    let mut per_s = 0.0;
    let mut latencies = Vec::new();
    let mut s = Sample { second, containers_per_s: 0.0, latency_ms: None, ended_good: 0, ended_wrong: 0, ended_failed: 0, ended_expected: 0 };
    for (c, end) in children {
        let start = c.start_ms / 1e3;
        if *end >= lo && *end < hi {
            match c.outcome {
                "good" => s.ended_good += 1,
                "wrong" => s.ended_wrong += 1,
                "expected_failure" | "expected_refusal" => s.ended_expected += 1,
                _ => s.ended_failed += 1,
            }
        }
        if !counted(&outcome_of(c)) {
            continue;
        }
        let overlap = (end.min(hi) - start.max(lo)).max(0.0);
        if overlap > 0.0 || (*end >= lo && *end < hi) {
            let length = (end - start).max(1e-9);
            per_s += if length <= 1e-9 { 1.0 } else { overlap / length };
            latencies.push(c.latency_ms);
        }
    }
    s.containers_per_s = per_s;
    s.latency_ms = (!latencies.is_empty()).then(|| median(&latencies));
    s
}

/// An outcome's kind back from its sample (the detail does not matter here).
fn outcome_of(c: &ChildSample) -> Outcome {
    match c.outcome {
        "good" => Outcome::Good,
        "wrong" => Outcome::Wrong(String::new()),
        "expected_failure" => Outcome::Expected(String::new()),
        "expected_refusal" => Outcome::Refused(String::new()),
        _ => Outcome::Failed(String::new()),
    }
}

fn summarize(label: &str, loops: usize, seconds: usize, elapsed: f64, children: Vec<(ChildSample, f64)>, counted: fn(&Outcome) -> bool) -> LoopsRun {
    let samples: Vec<Sample> = (0..seconds).map(|s| sample_of(s, &children, counted)).collect();
    let first_end = children.iter().map(|(_, end)| *end).fold(f64::INFINITY, f64::min);
    let warmup_seconds = if first_end.is_finite() { (first_end.ceil() as usize).min(seconds) } else { 0 };
    let judged: Vec<(usize, f64)> = samples.iter().skip(warmup_seconds).map(|s| (s.second, s.containers_per_s)).collect();
    let rates: Vec<f64> = judged.iter().map(|(_, r)| *r).collect();
    let (min_second, min_per_s) = judged.iter().copied().fold((0, f64::INFINITY), |a, (i, r)| if r < a.1 { (i, r) } else { a });
    let lat: Vec<f64> = children.iter().filter(|(c, _)| counted(&outcome_of(c))).map(|(c, _)| c.latency_ms).collect();
    let count = |kind: &str| children.iter().filter(|(c, _)| c.outcome == kind).count();
    let firsts = |kind: &str| -> Vec<String> {
        children.iter().filter(|(c, _)| c.outcome == kind).filter_map(|(c, _)| c.detail.clone()).take(5).collect()
    };
    LoopsRun {
        label: label.to_string(),
        loops,
        seconds,
        elapsed_s: elapsed,
        warmup_seconds,
        median_per_s: median(&rates),
        min_per_s: if rates.is_empty() { 0.0 } else { min_per_s },
        min_second,
        latency_median_ms: median(&lat),
        latency_p99_ms: percentile(&lat, 99.0),
        good: count("good"),
        wrong: count("wrong"),
        failed: count("failed"),
        expected_failures: count("expected_failure"),
        expected_refusals: count("expected_refusal"),
        first_wrong: firsts("wrong"),
        first_failed: firsts("failed"),
        first_expected: firsts("expected_failure").into_iter().chain(firsts("expected_refusal")).collect(),
        samples,
        children: children.into_iter().map(|(c, _)| c).collect(),
    }
}

// ------------------------------------------------------------ resources --

/// A daemon's resources at one moment.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ResourceSample {
    /// Seconds from the start of sampling.
    pub t_s: f64,
    pub daemon: &'static str,
    pub rss_kib: u64,
    /// Its page cache of other hosts' pages (bounded by `--cache-size`).
    pub cache_kib: u64,
    pub fds: u64,
}

/// How often the daemons are sampled (several times a second, so that even
/// a short run has many samples in each window).
const SAMPLE_EVERY: Duration = Duration::from_millis(250);

/// Samples both daemons every [`SAMPLE_EVERY`] while children are being
/// resumed: [`drive`] makes it active from its first child's end (the
/// daemons warmed up) to its loops' end. A sample's time counts active time
/// only, so the windows of a run of several workloads span their loops and
/// not the preparations between them.
pub(crate) struct Sampler {
    stop: Arc<AtomicBool>,
    active: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<Vec<ResourceSample>>,
}

impl Sampler {
    pub(crate) fn start(cluster: &Cluster) -> Sampler {
        let (stop, active) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let daemons = [("a", cluster.a.pid(), cluster.a.socket().to_path_buf()), ("b", cluster.b.pid(), cluster.b.socket().to_path_buf())];
        let (stop_flag, active_flag) = (stop.clone(), active.clone());
        let handle = std::thread::spawn(move || {
            let mut out = Vec::new();
            let mut active_s = 0.0;
            while !stop_flag.load(Ordering::Relaxed) {
                std::thread::sleep(SAMPLE_EVERY);
                if !active_flag.load(Ordering::Relaxed) {
                    continue;
                }
                active_s += SAMPLE_EVERY.as_secs_f64();
                for (name, pid, socket) in &daemons {
                    if let Some(s) = resources_of(name, *pid, socket, active_s) {
                        out.push(s);
                    }
                }
            }
            out
        });
        Sampler { stop, active, handle }
    }

    fn set_active(&self, on: bool) {
        self.active.store(on, Ordering::Relaxed);
    }

    pub(crate) fn stop(self) -> Vec<ResourceSample> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap_or_default()
    }
}

fn resources_of(name: &'static str, pid: i32, socket: &Path, t_s: f64) -> Option<ResourceSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    let cache_kib = Client::connect(socket).and_then(|mut c| c.stats()).map(|s| s.cache.bytes / 1024).unwrap_or(0);
    Some(ResourceSample { t_s, daemon: name, rss_kib, cache_kib, fds })
}

/// One daemon's figure in the first and the last window.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Flatness {
    pub daemon: &'static str,
    pub what: &'static str,
    pub windows: &'static str,
    pub first: f64,
    pub last: f64,
    pub change: f64,
    pub flat: bool,
    /// Seconds of samples.
    pub span_s: f64,
}

/// Compares the median of the first and the last window of each daemon's
/// memory (less its cache) and descriptors.
pub(crate) fn flatness(samples: &[ResourceSample]) -> Vec<Flatness> {
    let span = samples.iter().map(|s| s.t_s).fold(0.0, f64::max);
    let (windows, first_end, last_start) = if span >= MINUTE_WINDOWS_FROM.as_secs_f64() {
        ("first and last minute", 60.0, span - 60.0)
    } else {
        ("first and last third (run under 3 minutes)", span / 3.0, span * 2.0 / 3.0)
    };
    let mut out = Vec::new();
    for daemon in ["a", "b"] {
        let of = |f: &dyn Fn(&ResourceSample) -> f64, lo: f64, hi: f64| -> f64 {
            let v: Vec<f64> = samples.iter().filter(|s| s.daemon == daemon && s.t_s >= lo && s.t_s <= hi).map(f).collect();
            median(&v)
        };
        let own_kib = |s: &ResourceSample| s.rss_kib.saturating_sub(s.cache_kib) as f64;
        let fds = |s: &ResourceSample| s.fds as f64;
        for (what, f) in [("resident memory less page cache, KiB", &own_kib as &dyn Fn(&ResourceSample) -> f64), ("open descriptors", &fds)] {
            let (first, last) = (of(f, 0.0, first_end), of(f, last_start, f64::INFINITY));
            let change = if first > 0.0 { last / first - 1.0 } else { 0.0 };
            // A drop is no leak: only growth counts.
            let flat = first > 0.0 && change <= FLAT_TOLERANCE;
            out.push(Flatness { daemon, what, windows, first, last, change, flat, span_s: span });
        }
    }
    out
}

// ------------------------------------------------------------ footprint --

/// What the daemons hold, for "nothing left behind".
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Footprint {
    /// Per daemon: the commands of every process under it (sorted).
    pub processes: BTreeMap<String, Vec<String>>,
    /// Per daemon: container cgroup directories (most in any hierarchy).
    pub cgroup_dirs: BTreeMap<String, usize>,
    /// Per daemon: mounts of its own (not in this process's namespace), sorted.
    pub mounts: BTreeMap<String, Vec<String>>,
    /// This run's network namespaces (`ip netns`).
    pub netns: Vec<String>,
}

/// The daemons' cgroup subtrees, as this process sees them (`mitosis-<pid>`
/// under the daemon's cgroup in each hierarchy mounted here).
pub(crate) fn cgroup_subtrees(daemon_pid: i32) -> Vec<PathBuf> {
    let own = std::fs::read_to_string(format!("/proc/{daemon_pid}/cgroup")).unwrap_or_default();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut out = Vec::new();
    for line in own.lines() {
        let mut it = line.splitn(3, ':');
        let (Some(_), Some(ctrls), Some(path)) = (it.next(), it.next(), it.next()) else { continue };
        for m in mounts.lines() {
            let Some((pre, post)) = m.split_once(" - ") else { continue };
            let pre: Vec<&str> = pre.split_whitespace().collect();
            let post: Vec<&str> = post.split_whitespace().collect();
            if pre.len() < 5 || post.len() < 3 || pre[3] != "/" {
                continue;
            }
            let fits = if ctrls.is_empty() {
                post[0] == "cgroup2"
            } else {
                post[0] == "cgroup" && ctrls.split(',').all(|c| post[2].split(',').any(|o| o == c))
            };
            if fits {
                let dir = Path::new(pre[4]).join(path.trim_start_matches('/')).join(format!("mitosis-{daemon_pid}"));
                if dir.is_dir() && !out.contains(&dir) {
                    out.push(dir);
                }
            }
        }
    }
    out
}

/// Descendants of `pid`: "comm" of each.
fn descendants(pid: i32) -> Vec<String> {
    let mut parent_of = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else { continue };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
        let comm = stat[open + 1..close].to_string();
        let ppid: i32 = stat[close + 1..].split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        parent_of.push((p, ppid, comm));
    }
    let mut found = vec![pid];
    let mut out = Vec::new();
    let mut i = 0;
    while i < found.len() {
        let cur = found[i];
        for (p, pp, comm) in &parent_of {
            if *pp == cur && !found.contains(p) {
                found.push(*p);
                out.push(comm.clone());
            }
        }
        i += 1;
    }
    out.sort();
    out
}

/// Mount lines (mount point, type, source) of process `pid`.
fn mounts_of(pid: &str) -> Vec<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let point = pre.split_whitespace().nth(4)?;
            let mut post = post.split_whitespace();
            Some(format!("{point} {} {}", post.next()?, post.next()?))
        })
        .collect()
}

/// This run's network namespaces: those of the test-host names of this process.
fn own_namespaces() -> Vec<String> {
    let prefix = format!("mts{}x", std::process::id());
    let mut v: Vec<String> = std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| n.starts_with(&prefix))
        .collect();
    v.sort();
    v
}

impl Footprint {
    pub(crate) fn take(cluster: &Cluster) -> Footprint {
        let mut f = Footprint { processes: BTreeMap::new(), cgroup_dirs: BTreeMap::new(), mounts: BTreeMap::new(), netns: own_namespaces() };
        for (name, pid) in [("a", cluster.a.pid()), ("b", cluster.b.pid())] {
            f.processes.insert(name.into(), descendants(pid));
            let dirs = cgroup_subtrees(pid)
                .iter()
                .map(|d| std::fs::read_dir(d).map(|r| r.flatten().filter(|e| e.path().is_dir()).count()).unwrap_or(0))
                .max()
                .unwrap_or(0);
            f.cgroup_dirs.insert(name.into(), dirs);
            // Mounts seen here too came from this namespace (propagated):
            // read before and after, and keep only the daemon's own.
            let here_before = mounts_of("self");
            let theirs = mounts_of(&pid.to_string());
            let here_after = mounts_of("self");
            let mut own: Vec<String> = theirs.into_iter().filter(|m| !here_before.contains(m) && !here_after.contains(m)).collect();
            own.sort();
            f.mounts.insert(name.into(), own);
        }
        f
    }

    /// What differs from `before`, in words.
    pub(crate) fn differences(&self, before: &Footprint) -> Vec<String> {
        let mut out = Vec::new();
        for (d, procs) in &self.processes {
            let was = before.processes.get(d).cloned().unwrap_or_default();
            if *procs != was {
                out.push(format!("daemon {d}: {} processes under it ({procs:?}), {} before ({was:?})", procs.len(), was.len()));
            }
        }
        for (d, n) in &self.cgroup_dirs {
            let was = before.cgroup_dirs.get(d).copied().unwrap_or(0);
            if *n != was {
                out.push(format!("daemon {d}: {n} container cgroup directories, {was} before"));
            }
        }
        for (d, m) in &self.mounts {
            let was = before.mounts.get(d).cloned().unwrap_or_default();
            if *m != was {
                out.push(format!("daemon {d}: its own mounts {m:?}, before {was:?}"));
            }
        }
        if self.netns != before.netns {
            out.push(format!("network namespaces {:?}, before {:?}", self.netns, before.netns));
        }
        out
    }
}

/// Waits until both daemons run no child and have refilled their pools.
fn wait_for_quiet(cluster: &Cluster, timeout: Duration) {
    mitosis_testkit::wait_until(timeout, || {
        [cluster.a.socket(), cluster.b.socket()].iter().all(|s| {
            Client::connect(s).and_then(|mut c| c.stats()).is_ok_and(|st| st.children_running == 0 && st.pool.warm >= st.pool.target)
        })
    });
}

/// The footprint before a run, once the daemons are quiet.
pub(crate) fn footprint_before(cluster: &Cluster) -> Footprint {
    wait_for_quiet(cluster, SETTLE);
    Footprint::take(cluster)
}

/// The differences from `before` once the daemons settled (up to [`SETTLE`]).
pub(crate) fn left_behind(cluster: &Cluster, before: &Footprint) -> Vec<String> {
    wait_for_quiet(cluster, SETTLE);
    let deadline = Instant::now() + SETTLE;
    loop {
        let diff = Footprint::take(cluster).differences(before);
        if diff.is_empty() || Instant::now() >= deadline {
            return diff;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// What must be gone once the cluster was torn down.
pub(crate) struct Teardown {
    subtrees: Vec<PathBuf>,
    daemons: Vec<i32>,
}

impl Teardown {
    pub(crate) fn of(cluster: &Cluster) -> Teardown {
        let daemons = vec![cluster.a.pid(), cluster.b.pid()];
        Teardown { subtrees: daemons.iter().flat_map(|&p| cgroup_subtrees(p)).collect(), daemons }
    }

    /// What is still there (call after dropping the cluster).
    pub(crate) fn remains(&self) -> Vec<String> {
        let mut out = Vec::new();
        mitosis_testkit::wait_until(Duration::from_secs(10), || self.subtrees.iter().all(|d| !d.exists()));
        for d in &self.subtrees {
            if d.exists() {
                out.push(format!("cgroup directory {} remains", d.display()));
            }
        }
        for p in &self.daemons {
            if !has_exited(*p) {
                out.push(format!("daemon {p} still runs"));
            }
        }
        let ns = own_namespaces();
        if !ns.is_empty() {
            out.push(format!("network namespaces {ns:?} remain"));
        }
        out
    }
}

/// Whether process `pid` has exited (gone, or a zombie).
pub(crate) fn has_exited(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit(')').next().map(str::trim_start).is_some_and(|r| r.starts_with(['Z', 'X'])),
        Err(_) => true,
    }
}

/// Snapshots (of every seed the run prepared) still alive after a wait.
pub(crate) fn live_snapshots(pids: &[i32]) -> Vec<i32> {
    mitosis_testkit::wait_until(Duration::from_secs(10), || pids.iter().all(|&p| has_exited(p)));
    pids.iter().copied().filter(|&p| !has_exited(p)).collect()
}

// ---------------------------------------------------------------- rules --

/// One pass rule and how it went.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Rule {
    pub rule: String,
    /// Whether it held; `None`: not judged (the run was too short for it),
    /// which the verdict does not count.
    pub passed: Option<bool>,
    pub detail: String,
}

impl Rule {
    pub(crate) fn new(rule: impl Into<String>, passed: bool, detail: impl Into<String>) -> Rule {
        Rule { rule: rule.into(), passed: Some(passed), detail: detail.into() }
    }

    fn result(&self) -> &'static str {
        match self.passed {
            Some(true) => "PASS",
            Some(false) => "FAIL",
            None => "SKIP",
        }
    }
}

/// Whether every judged rule passed.
pub(crate) fn all_passed(rules: &[Rule]) -> bool {
    rules.iter().all(|r| r.passed != Some(false))
}

/// The rules every stress run shares, from its workloads' loops, the leak
/// checks and the resource samples.
pub(crate) fn common_rules(runs: &[LoopsRun], wrong_name: &str, failed_name: &str, leaks: &[String], flat: &[Flatness]) -> Vec<Rule> {
    let mut rules = Vec::new();
    for r in runs {
        let floor = STEADY_SHARE * r.median_per_s;
        let judged = r.seconds - r.warmup_seconds;
        rules.push(Rule::new(
            format!("[{}] steady: no second under {:.0}% of the median", r.label, STEADY_SHARE * 100.0),
            judged > 0 && r.median_per_s > 0.0 && r.min_per_s >= floor,
            if judged == 0 {
                format!("no second to judge: the first child ran for all {} s", r.seconds)
            } else {
                format!(
                    "lowest {:.3}/s (second {}), median {:.3}/s over {judged} s after {} s of warm-up",
                    r.min_per_s, r.min_second, r.median_per_s, r.warmup_seconds
                )
            },
        ));
    }
    let wrong: usize = runs.iter().map(|r| r.wrong).sum();
    let total: usize = runs.iter().map(|r| r.children.len()).sum();
    let first = |f: &dyn Fn(&LoopsRun) -> &Vec<String>| runs.iter().flat_map(f).next().cloned().map(|s| format!("; first: {s}")).unwrap_or_default();
    rules.push(Rule::new(wrong_name, wrong == 0, format!("{wrong} of {total} children{}", first(&|r| &r.first_wrong))));
    let failed: usize = runs.iter().map(|r| r.failed).sum();
    rules.push(Rule::new(failed_name, failed == 0, format!("{failed} of {total} children{}", first(&|r| &r.first_failed))));
    rules.push(Rule::new(
        "nothing left behind (processes, cgroups, namespaces, mounts, snapshots)",
        leaks.is_empty(),
        if leaks.is_empty() { "as before the run; all gone after teardown".into() } else { leaks.join("; ") },
    ));
    for f in flat {
        let rule = format!("daemon {} flat (grew at most {:.0}%): {}", f.daemon, FLAT_TOLERANCE * 100.0, f.what);
        let figures = format!("{:.0} -> {:.0} ({:+.1}%), medians of the {}", f.first, f.last, f.change * 100.0, f.windows);
        if f.span_s < FLAT_MIN_SPAN.as_secs_f64() {
            // Seconds-long windows see the allocator's ramp-up, not a leak.
            rules.push(Rule {
                rule,
                passed: None,
                detail: format!("not judged: {:.0} s of samples, under {} s; {figures}", f.span_s, FLAT_MIN_SPAN.as_secs()),
            });
        } else {
            rules.push(Rule::new(rule, f.flat, figures));
        }
    }
    rules
}

/// Prints the rules, PASS or FAIL each, and the verdict.
pub(crate) fn print_rules(rules: &[Rule]) {
    println!();
    println!("{:<72} {:<6} detail", "rule", "result");
    for r in rules {
        println!("{:<72} {:<6} {}", r.rule, r.result(), r.detail);
    }
    let passed = all_passed(rules);
    println!("{}", if passed { "PASSED" } else { "FAILED" });
}

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
    rules: Vec<Rule>,
    passed: bool,
}

/// `mitosis stress fork`: exit status 0 when every rule passed, 1 otherwise.
pub fn fork(bin: &Path, opts: &ForkOptions) -> anyhow::Result<i32> {
    ensure_root("mitosis stress fork")?;
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
            rules: Vec::new(),
            passed: false,
        })
    })?;
    drop(cluster);
    report.left_behind.extend(teardown.remains());
    let runs: Vec<LoopsRun> = report.workloads.iter().map(|w| w.run.clone()).collect();
    report.rules = common_rules(&runs, "no wrong result (bytes or digest)", "no failed resume", &report.left_behind, &report.flatness);
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

    #[test]
    fn c_verdicts() {
        assert_eq!(c_verdict("ok key=00000000000000ff pages=256\n"), Ok(255));
        assert!(c_verdict("WRONG 3 of 8 words ...\n").unwrap_err().starts_with("WRONG"));
        assert!(c_verdict("").is_err());
    }

    fn child(start_s: f64, end_s: f64, outcome: &'static str) -> (ChildSample, f64) {
        (ChildSample { loop_index: 0, start_ms: start_s * 1e3, latency_ms: (end_s - start_s) * 1e3, outcome, detail: None }, end_s)
    }

    #[test]
    fn a_child_counts_by_its_share_of_each_second() {
        // 0.5..1.5 s: half in second 0, half in second 1.
        let children = vec![child(0.5, 1.5, "good"), child(0.1, 0.2, "good"), child(0.2, 0.3, "wrong")];
        let counted = |o: &Outcome| matches!(o, Outcome::Good);
        let s0 = sample_of(0, &children, counted);
        assert!((s0.containers_per_s - 1.5).abs() < 1e-9, "{s0:?}");
        assert_eq!((s0.ended_good, s0.ended_wrong), (1, 1));
        let s1 = sample_of(1, &children, counted);
        assert!((s1.containers_per_s - 0.5).abs() < 1e-9, "{s1:?}");
        assert_eq!(s1.latency_ms, Some(1000.0));
        assert_eq!(sample_of(2, &children, counted).latency_ms, None);
    }

    #[test]
    fn flatness_uses_thirds_for_short_runs() {
        let s = |t: f64, rss: u64, fds: u64| ResourceSample { t_s: t, daemon: "a", rss_kib: rss, cache_kib: 0, fds };
        let mut samples: Vec<ResourceSample> = (0..10).map(|t| s(t as f64, 1000, 20)).collect();
        samples.extend((0..10).map(|t| ResourceSample { daemon: "b", ..s(t as f64, 1000, 20) }));
        assert!(flatness(&samples).iter().all(|f| f.flat && f.windows.contains("third")));
        // Memory of b grows by half: not flat.
        for x in samples.iter_mut().filter(|x| x.daemon == "b" && x.t_s >= 7.0) {
            x.rss_kib = 1500;
        }
        let f = flatness(&samples);
        assert!(!f.iter().find(|f| f.daemon == "b" && f.what.starts_with("resident")).unwrap().flat);
        assert!(f.iter().find(|f| f.daemon == "b" && f.what.starts_with("open")).unwrap().flat);
        // Memory that shrinks is no leak.
        for x in samples.iter_mut().filter(|x| x.daemon == "b" && x.t_s >= 7.0) {
            x.rss_kib = 500;
        }
        assert!(flatness(&samples).iter().all(|f| f.flat));
    }
}
