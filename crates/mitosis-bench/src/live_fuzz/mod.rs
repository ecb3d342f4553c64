//! `mitosis stress fuzz`: a bounded live fuzz of running daemons, the
//! garbage half of the stress programs.
//!
//! For `seconds`, `senders` threads per target throw inputs at a daemon, each
//! input on a connection of its own, and read whatever comes back:
//! - **peer port, before authentication** (anyone on the network): random
//!   bytes, mutated HELLOs, a valid HELLO followed by a random or oversized
//!   Noise message, a valid HELLO dripped a byte at a time;
//! - **peer port, after authentication** (with the cluster key: a member
//!   gone wrong): mutated request frames inside authenticated records, frames
//!   announcing oversized lengths, and raw bytes where records belong (which
//!   the record layer must refuse as tampering). Mutants that decode to the
//!   two requests that change a worker's state for the whole cluster
//!   (`StartInstance`, `DropSeed`) are not sent: a holder of the key may send
//!   them on purpose, and they are counted as skipped;
//! - **local socket, as an unprivileged user** (user `nobody`, by the
//!   connecting thread's own credentials when this runs as root): mutated
//!   request envelopes of every kind, random bytes, oversized lengths. As
//!   root, mutated requests would be real orders (prepare this pid, kill that
//!   child), and the local socket's threat is the unprivileged user anyway.
//!
//! Meanwhile `hold` connections per target are held open and fed one byte a
//! second (slow-loris); those the daemon closes at their deadline, or refuses
//! over its caps, are opened again. Every half second a well-formed request
//! on a fresh connection must get a well-formed answer (a `Pong`, a `Seeds`
//! list, or a clear "busy"), else it is an `ERROR`.
//!
//! Without `--peer` and `--socket` it runs against a two-host cluster of its
//! own (root), with a real remote fork beside the garbage: children of a seed
//! on host a are resumed on host b over and over, each checking every byte of
//! its memory, and every one must succeed. The peer garbage comes from host
//! a's own address, so that it competes with b's pager connections for the
//! daemon but not for b's per-address handshake cap; the authenticated
//! garbage from host b's. Afterwards both daemons must be back to their
//! descriptors (within [`FD_SLACK`]) and threads of before, and their
//! resident memory within [`RSS_SLACK`] of before. Those daemons run with
//! glibc's `MALLOC_ARENA_MAX=1` ([`LEAK_CHECK_ARENAS`]): by default glibc
//! gives threads up to 8 arenas per CPU, each keeping megabytes that its
//! threads freed, so a daemon's memory rises by tens of MiB under any
//! many-threaded load and says nothing about leaks (a first half's plateau
//! was tried as the yardstick and failed a CI run: a 6 s run had not reached
//! it). With one arena, what one connection freed is reused by the next,
//! and memory that does not come back is a leak.
//!
//! The kernel must log no failure of its own meanwhile (see
//! [`crate::kernel_log`]). Exit status 0 when every check held; 1 otherwise. With `--seed` a run's
//! inputs are the same again (as far as timing allows).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use mitosis_proto::auth::ClusterKey;
use mitosis_proto::secure::Protection;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::hosts::{ensure_root, CheckedSeed, Cluster, ProcessUsage};
use crate::kernel_log::{KernelLog, KernelLogReport};

mod inputs;
mod watch;

use inputs::sender;
use watch::{holder, liveness};

/// How long an input's connection waits for the daemon's answer or close.
pub(super) const ANSWER_WAIT: Duration = Duration::from_millis(150);
/// Between two liveness checks of each target.
pub(super) const LIVENESS_EVERY: Duration = Duration::from_millis(500);
/// How long a liveness check may take.
pub(super) const LIVENESS_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the daemons get, after the run, to close what was left and
/// come back to their descriptors and threads of before.
const SETTLE: Duration = Duration::from_secs(20);
/// Resident memory a daemon may hold, after the run, above its baseline
/// (fragmentation of its one arena; the page cache is full before the
/// baseline is taken).
const RSS_SLACK: u64 = 16 << 20;
/// glibc's arena cap for the daemons of a self-made cluster (see the module doc).
const LEAK_CHECK_ARENAS: &str = "1";
/// Descriptors a daemon may hold above its baseline after the run: the
/// lean-container pool refills in the background, a few descriptors per
/// container.
const FD_SLACK: u64 = 8;
/// The seed of the real remote forks beside the garbage (MiB).
const SEED_MB: u64 = 8;

/// What `mitosis stress fuzz` does.
pub struct FuzzOptions {
    /// Fuzz this peer address (with `key_file`, also behind authentication).
    pub peer: Option<String>,
    pub key_file: Option<PathBuf>,
    pub no_encrypt: bool,
    /// Fuzz this local socket (as user nobody when run as root).
    pub socket: Option<PathBuf>,
    pub seconds: u64,
    /// Threads sending inputs, per target.
    pub senders: usize,
    /// Connections held open per target.
    pub hold: usize,
    pub seed: Option<u64>,
    pub json: bool,
}

/// The kinds of input, each counted on its own.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Kind {
    PeerPreAuth,
    PeerPostAuth,
    Local,
}

impl Kind {
    pub(super) fn name(self) -> &'static str {
        match self {
            Kind::PeerPreAuth => "peer, unauthenticated",
            Kind::PeerPostAuth => "peer, authenticated",
            Kind::Local => "local socket, unprivileged",
        }
    }
}

/// Counters of one kind of input.
#[derive(Default)]
pub(super) struct KindCounters {
    pub(super) inputs: AtomicU64,
    /// The daemon sent something back (an error answer, a REPLY, "busy").
    pub(super) answered: AtomicU64,
    /// The daemon closed the connection (end of file or reset) without a word.
    pub(super) closed: AtomicU64,
    /// Still open and silent when the wait ended: closed by us.
    pub(super) silent: AtomicU64,
    /// Mutants not sent (they decode to cluster-wide orders).
    pub(super) skipped: AtomicU64,
    /// Not delivered: the connect timed out under load, or the daemon was
    /// busy (over its caps) before the input reached a decoder.
    pub(super) undelivered: AtomicU64,
}

#[derive(Serialize, Clone)]
struct KindReport {
    kind: &'static str,
    inputs: u64,
    answered: u64,
    closed: u64,
    silent: u64,
    skipped: u64,
    undelivered: u64,
}

impl KindCounters {
    fn report(&self, kind: Kind) -> KindReport {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        KindReport {
            kind: kind.name(),
            inputs: l(&self.inputs),
            answered: l(&self.answered),
            closed: l(&self.closed),
            silent: l(&self.silent),
            skipped: l(&self.skipped),
            undelivered: l(&self.undelivered),
        }
    }
}

/// Everything the threads count.
#[derive(Default)]
pub(super) struct Counters {
    pub(super) peer_pre: KindCounters,
    pub(super) peer_post: KindCounters,
    pub(super) local: KindCounters,
    /// Held connections opened (again) during the run.
    pub(super) held_opened: AtomicU64,
    pub(super) liveness_checks: AtomicU64,
    pub(super) resumes_ok: AtomicU64,
    /// Every one an ERROR line: a failed liveness check, a failed or wrong resume,
    /// a connection refused by a daemon that should be listening.
    pub(super) errors: AtomicU64,
}

impl Counters {
    pub(super) fn of(&self, kind: Kind) -> &KindCounters {
        match kind {
            Kind::PeerPreAuth => &self.peer_pre,
            Kind::PeerPostAuth => &self.peer_post,
            Kind::Local => &self.local,
        }
    }

    fn inputs(&self) -> u64 {
        [&self.peer_pre, &self.peer_post, &self.local].iter().map(|k| k.inputs.load(Ordering::Relaxed)).sum()
    }

    pub(super) fn error(&self, what: &str) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        eprintln!("ERROR {what}");
    }
}

/// Whether a daemon's usage `after` the run is back to the descriptors and
/// threads of `before`, with memory within the slack of it.
fn settled(after: &ProcessUsage, before: &ProcessUsage) -> bool {
    after.fds <= before.fds + FD_SLACK && after.threads <= before.threads && after.rss_kb <= before.rss_kb + RSS_SLACK / 1024
}

#[derive(Serialize)]
struct DaemonCheck {
    name: &'static str,
    before: ProcessUsage,
    /// The most threads seen during the run: one per admitted connection,
    /// so the connection caps bound it, not the 1,000s held.
    peak_threads: u64,
    after: ProcessUsage,
    settled: bool,
}

#[derive(Serialize)]
struct Tick {
    passed_us: u64,
    inputs_per_s: u64,
    /// The daemons' footprints at the end of this second (self-made cluster only).
    daemons: Vec<ProcessUsage>,
}

#[derive(Serialize)]
struct FuzzReport {
    seconds: u64,
    senders: usize,
    hold: usize,
    seed: u64,
    samples: Vec<Tick>,
    kinds: Vec<KindReport>,
    inputs: u64,
    held_opened: u64,
    liveness_checks: u64,
    resumes_ok: u64,
    errors: u64,
    daemons: Vec<DaemonCheck>,
    /// What the kernel logged during the run.
    kernel_log: KernelLogReport,
    passed: bool,
}

/// A peer port to fuzz, and the network namespaces (test hosts) to connect
/// from (`None`: this process's own).
#[derive(Clone)]
pub(super) struct PeerTarget {
    pub(super) addr: String,
    /// Of the garbage before authentication and the held connections.
    pub(super) strangers_from: Option<mitosis_testkit::Host>,
    /// Of the authenticated garbage: another address than the strangers',
    /// whose 64 pending handshakes the held connections take.
    pub(super) members_from: Option<mitosis_testkit::Host>,
}

/// Where the inputs go.
#[derive(Clone)]
pub(super) struct Targets {
    pub(super) peer: Option<PeerTarget>,
    pub(super) key: Option<ClusterKey>,
    pub(super) protection: Protection,
    pub(super) socket: Option<PathBuf>,
    /// The user (uid, gid) the local connections act as: nobody when this
    /// runs as root (a thread's own credentials), else this process's user.
    pub(super) local_as: Option<(u32, u32)>,
}

/// `mitosis stress fuzz`; the exit status.
pub fn run(bin: &Path, opts: &FuzzOptions) -> anyhow::Result<i32> {
    ensure!(opts.seconds > 0 && opts.senders > 0, "--seconds and --senders must be at least 1");
    let seed = opts.seed.unwrap_or_else(|| rand::rng().random());
    let protection = if opts.no_encrypt { Protection::Integrity } else { Protection::Encrypted };
    if opts.peer.is_some() || opts.socket.is_some() {
        let key = match &opts.key_file {
            Some(path) => Some(crate::rpc::read_key(path)?),
            None => None,
        };
        let peer = opts.peer.clone().map(|addr| PeerTarget { addr, strangers_from: None, members_from: None });
        let targets = Targets { peer, key, protection, socket: opts.socket.clone(), local_as: unprivileged_user()? };
        let report = fuzz(&targets, opts, seed, None, Vec::new())?;
        return finish(report, opts);
    }
    ensure_root("mitosis stress fuzz (without --peer or --socket)")?;
    // Inherited by the daemons started next (and by nothing this process
    // runs on other threads: none has started yet).
    std::env::set_var("MALLOC_ARENA_MAX", LEAK_CHECK_ARENAS);
    let daemon_args: &[&str] = if opts.no_encrypt { &["--no-encrypt"] } else { &[] };
    let cluster = Cluster::start_with_args(bin, "stress-fuzz", daemon_args)?;
    let report = cluster.run(|c| {
        let key = crate::rpc::read_key(&c.dir.path().join("cluster.key"))?;
        let seed_of_children = CheckedSeed::prepare(c, bin, SEED_MB, &format!("fuzz-{}", std::process::id()))?;
        let resumer = || seed_of_children.resume_checked(c);
        // Warm-up: the first resumes fill pools and caches that belong to the baseline.
        for _ in 0..3 {
            resumer().context("a warm-up resume")?;
        }
        let daemons = vec![("a", c.a.pid()), ("b", c.b.pid())];
        let targets = Targets {
            peer: Some(PeerTarget { addr: c.a.addr(), strangers_from: Some(c.hosts.a.clone()), members_from: Some(c.hosts.b.clone()) }),
            key: Some(key),
            protection,
            socket: Some(c.b.socket().to_path_buf()),
            local_as: unprivileged_user()?,
        };
        let report = fuzz(&targets, opts, seed, Some(&resumer), daemons)?;
        seed_of_children.finish()?;
        Ok(report)
    })?;
    finish(report, opts)
}

/// Who the local connections act as: user nobody when this runs as root
/// (as root, mutated requests would be real orders); otherwise this
/// process's own user, unprivileged already.
fn unprivileged_user() -> anyhow::Result<Option<(u32, u32)>> {
    if mitosis_sys::process::euid() != 0 {
        return Ok(None);
    }
    let nobody = mitosis_sys::creds::lookup_user("nobody").context("the local socket is fuzzed as user nobody")?;
    Ok(Some((nobody.uid, nobody.gid)))
}

/// Runs the fuzz; `resumer` (if any) starts one checked remote child, over
/// and over beside it.
fn fuzz(
    targets: &Targets,
    opts: &FuzzOptions,
    seed: u64,
    resumer: Option<&(dyn Fn() -> anyhow::Result<()> + Sync)>,
    daemons: Vec<(&'static str, i32)>,
) -> anyhow::Result<FuzzReport> {
    let before: Vec<ProcessUsage> = daemons.iter().map(|(_, pid)| ProcessUsage::of(*pid)).collect::<anyhow::Result<_>>()?;
    let mut kernel_log = KernelLog::mark();
    let counters = Counters::default();
    let stop = AtomicBool::new(false);
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(opts.seconds);
    let mut kinds = Vec::new();
    if targets.peer.is_some() {
        kinds.push(Kind::PeerPreAuth);
        if targets.key.is_some() {
            kinds.push(Kind::PeerPostAuth);
        }
    }
    if targets.socket.is_some() {
        kinds.push(Kind::Local);
    }
    ensure!(!kinds.is_empty(), "nothing to fuzz: give --peer and/or --socket");
    let samples = Mutex::new(Vec::new());
    std::thread::scope(|s| -> anyhow::Result<()> {
        let (counters, stop) = (&counters, &stop);
        let mut n = 0u64;
        for &kind in &kinds {
            for _ in 0..opts.senders {
                n += 1;
                let rng = StdRng::seed_from_u64(seed.wrapping_add(n.wrapping_mul(0x9E37_79B9_7F4A_7C15)));
                let targets = targets.clone();
                s.spawn(move || sender(kind, &targets, rng, deadline, counters));
            }
        }
        let holders = targets.clone();
        let hold = opts.hold;
        s.spawn(move || holder(&holders, hold, stop, counters));
        let live = targets.clone();
        s.spawn(move || liveness(&live, stop, counters));
        if let Some(r) = resumer {
            s.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match r() {
                        Ok(()) => {
                            counters.resumes_ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => counters.error(&format!("resume beside the fuzz: {e:#}")),
                    }
                }
            });
        }
        let (mut last_t, mut last_n) = (t0, 0u64);
        while Instant::now() < deadline {
            let next = (last_t + Duration::from_secs(1)).min(deadline);
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
            let (now, n) = (Instant::now(), counters.inputs());
            let passed_us = now.duration_since(last_t).as_micros() as u64;
            let footprints: Vec<ProcessUsage> = daemons.iter().map(|(_, pid)| ProcessUsage::of(*pid).unwrap_or_default()).collect();
            let tick = Tick { passed_us, inputs_per_s: ((n - last_n) as f64 * 1e6 / passed_us.max(1) as f64) as u64, daemons: footprints };
            let mut line = format!(
                "passed: {}us, thpt: {} inputs/s, resumes ok: {}, errors: {}",
                tick.passed_us,
                tick.inputs_per_s,
                counters.resumes_ok.load(Ordering::Relaxed),
                counters.errors.load(Ordering::Relaxed)
            );
            for ((name, _), f) in daemons.iter().zip(&tick.daemons) {
                line += &format!(", daemon {name}: {} fds {} threads {} KiB", f.fds, f.threads, f.rss_kb);
            }
            if opts.json {
                eprintln!("{line}");
            } else {
                println!("{line}");
            }
            samples.lock().unwrap().push(tick);
            (last_t, last_n) = (now, n);
        }
        stop.store(true, Ordering::Relaxed);
        Ok(())
    })?;
    if resumer.is_some() && counters.resumes_ok.load(Ordering::Relaxed) == 0 {
        counters.error("no resume beside the fuzz succeeded");
    }
    // Every connection of ours is closed now: the daemons must come back.
    let samples = samples.into_inner().unwrap();
    let mut after = Vec::new();
    for (i, ((name, pid), before)) in daemons.iter().zip(&before).enumerate() {
        let mut now = ProcessUsage::of(*pid)?;
        mitosis_testkit::wait_until(SETTLE, || {
            std::thread::sleep(Duration::from_millis(200));
            now = ProcessUsage::of(*pid).unwrap_or(now);
            settled(&now, before)
        });
        let back = settled(&now, before);
        if !back {
            counters.error(&format!(
                "daemon {name} did not come back: before {before:?}, after {now:?}"
            ));
        }
        let peak_threads = samples.iter().filter_map(|t| t.daemons.get(i)).map(|f| f.threads).max().unwrap_or(0);
        after.push(DaemonCheck { name, before: *before, peak_threads, after: now, settled: back });
    }
    let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let report = FuzzReport {
        seconds: opts.seconds,
        senders: opts.senders,
        hold: opts.hold,
        seed,
        samples,
        kinds: kinds.iter().map(|&k| counters.of(k).report(k)).collect(),
        inputs: counters.inputs(),
        held_opened: l(&counters.held_opened),
        liveness_checks: l(&counters.liveness_checks),
        resumes_ok: l(&counters.resumes_ok),
        errors: l(&counters.errors),
        daemons: after,
        kernel_log: kernel_log.since(),
        passed: false,
    };
    // Every kind of input must have reached the daemon: a run whose inputs
    // were all refused at the door (or never connected) proves nothing.
    for failure in &report.kernel_log.kernel_failures {
        eprintln!("ERROR the kernel logged: {failure}");
    }
    let passed = report.errors == 0
        && report.kinds.iter().all(|k| k.inputs > 0)
        && report.liveness_checks > 0
        && report.kernel_log.kernel_clean();
    Ok(FuzzReport { passed, ..report })
}

fn finish(report: FuzzReport, opts: &FuzzOptions) -> anyhow::Result<i32> {
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    Ok(if report.passed { 0 } else { 1 })
}

fn print_report(r: &FuzzReport) {
    println!();
    println!("Live fuzz: {} s, {} senders per target, {} held connections per target, seed {:#x}", r.seconds, r.senders, r.hold, r.seed);
    println!(
        "  {:<26} {:>10} {:>10} {:>10} {:>10} {:>10} {:>12}",
        "inputs", "sent", "answered", "closed", "silent", "skipped", "undelivered"
    );
    for k in &r.kinds {
        println!(
            "  {:<26} {:>10} {:>10} {:>10} {:>10} {:>10} {:>12}",
            k.kind, k.inputs, k.answered, k.closed, k.silent, k.skipped, k.undelivered
        );
    }
    println!("  held connections opened (slow-loris, reopened when closed): {}", r.held_opened);
    for d in &r.daemons {
        println!(
            "  daemon {}: fds {} -> {}, threads {} -> {} (at most {} during the run), VmRSS {} -> {} KiB: {}",
            d.name,
            d.before.fds,
            d.after.fds,
            d.before.threads,
            d.after.threads,
            d.peak_threads,
            d.before.rss_kb,
            d.after.rss_kb,
            if d.settled { "back" } else { "NOT BACK" }
        );
    }
    println!(
        "{}\ninputs: {}, liveness checks: {}, resumes ok: {}, errors: {}: {}",
        r.kernel_log.summary(),
        r.inputs,
        r.liveness_checks,
        r.resumes_ok,
        r.errors,
        if r.passed { "PASSED" } else { "FAILED" }
    );
}

