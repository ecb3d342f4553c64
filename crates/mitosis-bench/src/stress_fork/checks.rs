//! What a stress run checks besides its children: the daemons' memory and
//! descriptors sampled while children are resumed ([`Sampler`],
//! [`flatness`]), what they hold before and after the run ([`Footprint`])
//! and after the cluster's teardown ([`Teardown`]), and the pass rules
//! printed PASS, FAIL or SKIP ([`Rule`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mitosis::Client;
use serde::Serialize;

use super::loops::LoopsRun;
use crate::kernel_log::KernelLogReport;
use crate::hosts::Cluster;
use crate::median;

/// A second under this share of its workload's median fails the run.
const STEADY_SHARE: f64 = 0.5;
/// Allowed growth of a daemon's memory or descriptors, first to last window.
const FLAT_TOLERANCE: f64 = 0.10;
/// Flatness is judged on at least this much sampled time (shorter windows
/// see the daemons' allocator warm up, not leaks).
const FLAT_MIN_SPAN: Duration = Duration::from_secs(30);
/// Runs of at least this long compare their first and last minute.
const MINUTE_WINDOWS_FROM: Duration = Duration::from_secs(180);
/// How long the daemons get to tear down the last containers and refill
/// their pools before "left behind" is judged.
const SETTLE: Duration = Duration::from_secs(30);

/// A daemon's resources at one moment.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ResourceSample {
    /// Seconds from the start of sampling.
    pub t_s: f64,
    pub daemon: &'static str,
    pub rss_kib: u64,
    /// Its page cache of other hosts' pages (bounded by `--cache-size`):
    /// memfds, not part of `rss_kib`.
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

    pub(super) fn set_active(&self, on: bool) {
        self.active.store(on, Ordering::Relaxed);
    }

    pub(crate) fn stop(self) -> Vec<ResourceSample> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap_or_default()
    }
}

fn resources_of(name: &'static str, pid: i32, socket: &Path, t_s: f64) -> Option<ResourceSample> {
    let usage = crate::hosts::ProcessUsage::of(pid).ok()?;
    let cache_kib = Client::connect(socket).and_then(|mut c| c.stats()).map(|s| s.cache.bytes / 1024).unwrap_or(0);
    Some(ResourceSample { t_s, daemon: name, rss_kib: usage.rss_kb, cache_kib, fds: usage.fds })
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
        let own_kib = |s: &ResourceSample| s.rss_kib as f64;
        let fds = |s: &ResourceSample| s.fds as f64;
        for (what, f) in [("resident memory, KiB", &own_kib as &dyn Fn(&ResourceSample) -> f64), ("open descriptors", &fds)] {
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
            let dirs = mitosis_testkit::cgroup_subtrees_of(pid)
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
        Teardown { subtrees: daemons.iter().flat_map(|&p| mitosis_testkit::cgroup_subtrees_of(p)).collect(), daemons }
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
pub(crate) fn common_rules(
    runs: &[LoopsRun],
    wrong_name: &str,
    failed_name: &str,
    leaks: &[String],
    flat: &[Flatness],
    kernel: &KernelLogReport,
) -> Vec<Rule> {
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
    let kernel_rule = "clean kernel log (no kernel bug, oops or warning during the run)";
    if kernel.readable {
        let detail = match kernel.kernel_failures.first() {
            Some(first) => format!("{}; first: {first}", kernel.summary()),
            None => kernel.summary(),
        };
        rules.push(Rule::new(kernel_rule, kernel.kernel_clean(), detail));
    } else {
        rules.push(Rule { rule: kernel_rule.into(), passed: None, detail: kernel.summary() });
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
