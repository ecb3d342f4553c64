//! `mitosis stress soak`: many resumes of one seed id (10,000 by default),
//! each child checking every page of its memory, while the seed is dropped,
//! prepared again and replaced under the children's feet.
//!
//! Two C parents run on host `a` (`programs/stress_parent.c`). The seed id
//! starts as the first one's. A churn thread then, at random intervals,
//! - **drops** the seed, waits a little (resumes meanwhile find no seed),
//!   and prepares its process again;
//! - **re-prepares** it: the same process, its memory filled with a new
//!   key first, prepared again under the id (a new generation);
//! - **replaces** it: the other process, filled with a new key, prepared
//!   under the id.
//!
//! Every generation has a key of its own, and a child checks every word of
//! its memory against the key in its own memory (`verify self`): a page of
//! another generation, of the other process, a zero or a torn page is a
//! wrong result, and so is a key that no generation had. A child whose
//! generation went away while it was fetching pages must fail loudly: the
//! daemon kills it and reports why (`mitosis resume` exits 69), or the
//! resume is refused because the id has no seed for the moment (66) or its
//! generation went away during the resume (69). Those are *expected
//! failures*, counted apart from wrong results and unexpected failures,
//! both of which must be zero. The other rules are `stress fork`'s (see
//! [`crate::stress_fork`]); a second's containers/sec counts the children
//! that ended as they must (right bytes, or the loud failure of a dropped
//! generation).

use crate::kernel_log::{KernelLog, KernelLogReport};
use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use mitosis::{ChildEnd, Client, ErrorKind};
use serde::Serialize;

use crate::hosts::{ensure_root, Cluster};
use crate::stress_fork::{
    c_verdict, common_rules, compile_parent, drive, flatness, footprint_before, fork_exit_median_us, left_behind, live_snapshots,
    print_rules, random_u64, all_passed, run_child, verify_line, Attempt, Budget, CParent, Ended, Flatness, LoopsRun, Outcome, ResourceSample,
    Rule, Sampler, Teardown,
};

/// How long a loop waits after a resume was refused (the id had no seed).
const REFUSED_BACKOFF: Duration = Duration::from_millis(10);
/// How long a child may take.
const CHILD_PATIENCE: Duration = Duration::from_secs(60);

/// What `mitosis stress soak` was asked.
#[derive(Debug, Clone)]
pub struct SoakOptions {
    pub loops: usize,
    pub resumes: usize,
    /// Memory of each C parent.
    pub mib: u64,
    /// The churn thread waits a random time in this range between changes.
    pub churn_min_ms: u64,
    pub churn_max_ms: u64,
    pub json: bool,
    /// Tell children to expect a key no generation has (a check of the
    /// checker: every child that runs must then report wrong bytes).
    pub expect_wrong_pattern: bool,
}

/// What the churn thread did.
#[derive(Debug, Clone, Default, Serialize)]
struct Churn {
    drops: usize,
    reprepares: usize,
    replaces: usize,
    /// Generations the seed id went through (the daemon's numbers).
    generations: Vec<u64>,
    /// Every generation's key, in order.
    keys: Vec<String>,
    /// Every change, in order, to line up with the children's samples.
    events: Vec<ChurnEvent>,
}

/// One change of the seed.
#[derive(Debug, Clone, Serialize)]
struct ChurnEvent {
    /// When it began, ms from the loops' start (within a millisecond).
    at_ms: f64,
    op: &'static str,
    /// How long it took (drop: the drop, the pause and the prepare after it).
    took_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
struct SoakReport {
    loops: usize,
    resumes: usize,
    c_parent_mib: u64,
    churn_ms: (u64, u64),
    fork_exit_median_us: f64,
    churn: Churn,
    run: LoopsRun,
    resources: Vec<ResourceSample>,
    flatness: Vec<Flatness>,
    left_behind: Vec<String>,
    /// What the kernel logged during the run.
    kernel_log: KernelLogReport,
    rules: Vec<Rule>,
    passed: bool,
}

/// The seed id's owner and what the churn did. The keys of every
/// generation are kept apart (`Keys`), so that judging a child never waits
/// for a prepare in progress.
struct Lineage {
    parents: [CParent; 2],
    owner: usize,
    snapshots: Vec<i32>,
    churn: Churn,
}

/// The keys of every generation so far (only ever grows).
type Keys = Mutex<HashSet<u64>>;

impl Lineage {
    /// Fills parent `which` with a new key and prepares it as `id`.
    fn prepare(&mut self, cluster: &Cluster, which: usize, id: &str, fill: bool, keys: &Keys) -> anyhow::Result<()> {
        if fill {
            let key = random_u64();
            // Known before any child can see it.
            keys.lock().unwrap().insert(key);
            self.parents[which].fill(key)?;
        }
        let info = Client::connect(cluster.a.socket())?
            .prepare(self.parents[which].pid, id, true)
            .with_context(|| format!("preparing parent {which} as {id}"))?;
        self.owner = which;
        self.snapshots.push(info.snapshot_pid);
        self.churn.generations.push(info.generation);
        self.churn.keys.push(format!("{:016x}", self.parents[which].key));
        Ok(())
    }
}

/// A small xorshift generator for the churn's timing and choices.
struct Dice(u64);

impl Dice {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi.saturating_sub(lo) + 1)
    }
}

/// `mitosis stress soak`: exit status 0 when every rule passed, 1 otherwise.
pub fn soak(bin: &Path, opts: &SoakOptions) -> anyhow::Result<i32> {
    ensure_root("mitosis stress soak")?;
    let mut kernel_log = KernelLog::mark();
    ensure!(opts.loops > 0 && opts.resumes > 0 && opts.mib > 0, "--loops, --resumes and --mib must be at least 1");
    ensure!(opts.churn_min_ms <= opts.churn_max_ms, "--churn-min-ms must not exceed --churn-max-ms");
    let say = |m: &str| eprintln!("stress soak: {m}");
    say("starting hosts a and b with a daemon each");
    let cluster = Cluster::start(bin, "stress-soak")?;
    let program = compile_parent(cluster.dir.path())?;
    let teardown = Teardown::of(&cluster);
    let mut report = cluster.run(|cluster| {
        let fork_exit = fork_exit_median_us();
        let before = footprint_before(cluster);
        let sampler = Sampler::start(cluster);
        let id = format!("stress-soak-{}", std::process::id());
        let (k0, k1) = (random_u64(), random_u64());
        say(&format!("two C parents of {} MiB on host a", opts.mib));
        let parents = [CParent::start(cluster, &program, opts.mib, k0)?, CParent::start(cluster, &program, opts.mib, k1)?];
        let keys: Keys = Mutex::new(HashSet::from([k0, k1]));
        let mut lineage = Lineage { parents, owner: 0, snapshots: Vec::new(), churn: Churn::default() };
        lineage.prepare(cluster, 0, &id, false, &keys)?;
        let lineage = Mutex::new(lineage);
        // A key no generation has: children told to expect it must all fail.
        let wrong_key = loop {
            let k = random_u64();
            if !keys.lock().unwrap().contains(&k) {
                break k;
            }
        };
        let stop = AtomicBool::new(false);
        say(&format!("{} resumes over {} loops, the seed churned every {}-{} ms", opts.resumes, opts.loops, opts.churn_min_ms, opts.churn_max_ms));
        let t0 = Instant::now();
        let (run, churned) = std::thread::scope(|scope| {
            let churner = scope.spawn(|| churn(cluster, &lineage, &keys, &id, opts, &stop, t0));
            let budget = Budget::count(opts.resumes);
            let run = drive("soak", opts.loops, &budget, opts.json, &sampler, |o| matches!(o, Outcome::Good | Outcome::Expected(_)), &|l| {
                let err = cluster.dir.path().join(format!("soak-loop{l}.stderr"));
                let line = if opts.expect_wrong_pattern { verify_line(wrong_key) } else { "verify self\n".to_string() };
                let attempt = run_child(cluster, &id, Some(&line), &err, CHILD_PATIENCE);
                judge(attempt, &keys)
            });
            stop.store(true, Ordering::Relaxed);
            let churned = churner.join().map_err(|_| anyhow::anyhow!("the churn thread panicked"))?;
            anyhow::Ok((run, churned))
        })?;
        churned.context("the churn thread")?;
        let lineage = lineage.into_inner().unwrap();
        Client::connect(cluster.a.socket())?.drop_seed(&id).with_context(|| format!("dropping {id}"))?;
        let Lineage { parents, snapshots, churn, .. } = lineage;
        for p in parents {
            p.exit();
        }
        let resources = sampler.stop();
        let mut leaks = left_behind(cluster, &before);
        let alive = live_snapshots(&snapshots);
        if !alive.is_empty() {
            leaks.push(format!("snapshots {alive:?} outlived their seeds"));
        }
        if let Ok(seeds) = Client::connect(cluster.a.socket()).and_then(|mut c| c.list()) {
            if !seeds.is_empty() {
                leaks.push(format!("seeds left on daemon a: {:?}", seeds.iter().map(|s| &s.id).collect::<Vec<_>>()));
            }
        }
        Ok(SoakReport {
            loops: opts.loops,
            resumes: opts.resumes,
            c_parent_mib: opts.mib,
            churn_ms: (opts.churn_min_ms, opts.churn_max_ms),
            fork_exit_median_us: fork_exit,
            churn,
            flatness: flatness(&resources),
            run,
            resources,
            left_behind: leaks,
            kernel_log: KernelLogReport::default(),
            rules: Vec::new(),
            passed: false,
        })
    })?;
    drop(cluster);
    report.left_behind.extend(teardown.remains());
    report.kernel_log = kernel_log.since();
    let mut rules = common_rules(
        std::slice::from_ref(&report.run),
        "no wrong result (every child's bytes right)",
        "no unexpected failure",
        &report.left_behind,
        &report.flatness,
        &report.kernel_log,
    );
    let done = report.run.children.len();
    rules.push(Rule::new(format!("all {} resumes done", report.resumes), done == report.resumes, format!("{done} done")));
    let c = &report.churn;
    rules.push(Rule::new(
        "the seed was churned (dropped, re-prepared and replaced at least once each)",
        c.drops > 0 && c.reprepares > 0 && c.replaces > 0,
        format!("{} drops, {} re-prepares, {} replaces; {} generations", c.drops, c.reprepares, c.replaces, c.generations.len()),
    ));
    report.rules = rules;
    report.passed = all_passed(&report.rules);
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_soak_summary(&report);
        print_rules(&report.rules);
    }
    Ok(if report.passed { 0 } else { 1 })
}

/// The churn thread: until `stop`, drop, re-prepare or replace the seed at
/// random intervals. The three come in rounds, each once per round in a
/// random order, so that even a short run has every kind (a free draw of
/// ten missed one kind in one run of twenty). Leaves the seed prepared.
fn churn(cluster: &Cluster, lineage: &Mutex<Lineage>, keys: &Keys, id: &str, opts: &SoakOptions, stop: &AtomicBool, t0: Instant) -> anyhow::Result<()> {
    let mut dice = Dice(random_u64() | 1);
    let sleep = |ms: u64| {
        let until = Instant::now() + Duration::from_millis(ms);
        while !stop.load(Ordering::Relaxed) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    let mut round: Vec<u64> = Vec::new();
    loop {
        if round.is_empty() {
            round = vec![0, 1, 2];
            let first = dice.between(0, 2) as usize;
            round.swap(0, first);
            let second = dice.between(1, 2) as usize;
            round.swap(1, second);
        }
        let kind = round.pop().unwrap_or(0);
        sleep(dice.between(opts.churn_min_ms, opts.churn_max_ms));
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        let began = Instant::now();
        let mut l = lineage.lock().unwrap();
        let owner = l.owner;
        let op = match kind {
            0 => {
                Client::connect(cluster.a.socket())?.drop_seed(id).with_context(|| format!("dropping {id}"))?;
                l.churn.drops += 1;
                // Resumes meanwhile find no seed (an expected failure).
                drop(l);
                sleep(dice.between(0, opts.churn_min_ms / 2 + 1));
                l = lineage.lock().unwrap();
                l.prepare(cluster, owner, id, true, keys)?;
                "drop"
            }
            1 => {
                l.churn.reprepares += 1;
                l.prepare(cluster, owner, id, true, keys)?;
                "re-prepare"
            }
            _ => {
                l.churn.replaces += 1;
                l.prepare(cluster, 1 - owner, id, true, keys)?;
                "replace"
            }
        };
        let at_ms = began.duration_since(t0).as_secs_f64() * 1e3;
        l.churn.events.push(ChurnEvent { at_ms, op, took_ms: began.elapsed().as_secs_f64() * 1e3 });
    }
}

/// The outcome of a soak child.
fn judge(attempt: Attempt, keys: &Keys) -> Outcome {
    match attempt {
        Attempt::Refused(mitosis::Error::Daemon(e)) if matches!(e.kind, ErrorKind::NotFound | ErrorKind::SeedGone) => {
            // Back off as a client would, rather than spin through the budget.
            std::thread::sleep(REFUSED_BACKOFF);
            Outcome::Refused(format!("resume refused with {}: {}", e.kind.exit_code(), e.message))
        }
        Attempt::Ended(Ended { end: ChildEnd::KilledByMitosis { reason }, .. }) if !reason.is_empty() => {
            Outcome::Expected(format!("killed by mitosis (exit status 69): {reason}"))
        }
        Attempt::Ended(Ended { end: ChildEnd::Exited(0), stdout, .. }) => match c_verdict(&stdout) {
            Ok(k) if keys.lock().unwrap().contains(&k) => Outcome::Good,
            Ok(k) => Outcome::Wrong(format!("the child's memory is all of key {k:016x}, which no generation had")),
            Err(why) => Outcome::Wrong(why),
        },
        other => crate::stress_fork::judge_attempt(other, |_| Err("unreachable: exit 0 judged above".into())),
    }
}

fn print_soak_summary(r: &SoakReport) {
    let run = &r.run;
    let c = &r.churn;
    println!();
    println!(
        "Soak: {} resumes over {} loops in {:.1} s, two C parents of {} MiB, churn every {}-{} ms (medians; local fork+exit {:.0} us)",
        r.resumes, r.loops, run.elapsed_s, r.c_parent_mib, r.churn_ms.0, r.churn_ms.1, r.fork_exit_median_us
    );
    println!(
        "  children: {} right, {} killed as expected (generation gone), {} resumes refused as expected (no seed), {} wrong, {} failed unexpectedly",
        run.good, run.expected_failures, run.expected_refusals, run.wrong, run.failed
    );
    println!(
        "  containers/s: median {:.2}, lowest {:.2} (second {}); latency median {:.2} ms, p99 {:.2} ms",
        run.median_per_s, run.min_per_s, run.min_second, run.latency_median_ms, run.latency_p99_ms
    );
    println!("  churn: {} drops, {} re-prepares, {} replaces, {} generations", c.drops, c.reprepares, c.replaces, c.generations.len());
    for e in &run.first_expected {
        println!("  expected failure, e.g.: {e}");
    }
    for f in &r.flatness {
        println!("  daemon {} {}: {:.0} -> {:.0} ({:+.1}%, {})", f.daemon, f.what, f.first, f.last, f.change * 100.0, f.windows);
    }
}
