//! The loops of a stress run: resuming one child (stdin given, stdout and
//! stderr collected, its end awaited, all bounded), judging how it went
//! ([`Outcome`]), and [`drive`]: N loops under a budget, the per-second
//! lines printed as seconds become final, and the samples of the run.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use mitosis::{ChildEnd, Client};
use serde::Serialize;

use super::checks::Sampler;
use crate::hosts::Cluster;
use crate::{median, percentile};

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
