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
//! resident memory may not have grown past the plateau it reached in the
//! run's first half (within [`RSS_SLACK`]): glibc keeps what threads freed in
//! per-thread arenas, so a daemon's memory rises to a plateau under any load;
//! a leak keeps rising past it.
//!
//! Exit status 0 when every check held; 1 otherwise. With `--seed` a run's
//! inputs are the same again (as far as timing allows).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use mitosis::Client;
use mitosis_proto::auth::{client_handshake, hello, ClusterKey};
use mitosis_proto::frame::{read_msg, write_msg, MAX_CONTROL_FRAME};
use mitosis_proto::local::{ContainerSpec, Envelope, LocalRequest, ResumeOptions};
use mitosis_proto::peer::{PeerRequest, PeerResponse};
use mitosis_proto::secure::Protection;
use mitosis_proto::PROTOCOL_VERSION;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::hosts::{ensure_root, host_command, Cluster, HostProcess, Seed};

/// How long an input's connection waits for the daemon's answer or close.
const ANSWER_WAIT: Duration = Duration::from_millis(150);
/// Between two liveness checks of each target.
const LIVENESS_EVERY: Duration = Duration::from_millis(500);
/// How long a liveness check may take.
const LIVENESS_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the daemons get, after the run, to close what was left and
/// come back to their descriptors and threads of before.
const SETTLE: Duration = Duration::from_secs(20);
/// Resident memory a daemon may hold, after the run, above the highest it
/// reached in the run's first half.
const RSS_SLACK: u64 = 16 << 20;
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
enum Kind {
    PeerPreAuth,
    PeerPostAuth,
    Local,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::PeerPreAuth => "peer, unauthenticated",
            Kind::PeerPostAuth => "peer, authenticated",
            Kind::Local => "local socket, as nobody",
        }
    }
}

/// Counters of one kind of input.
#[derive(Default)]
struct KindCounters {
    inputs: AtomicU64,
    /// The daemon sent something back (an error answer, a REPLY, "busy").
    answered: AtomicU64,
    /// The daemon closed the connection (end of file or reset) without a word.
    closed: AtomicU64,
    /// Still open and silent when the wait ended: closed by us.
    silent: AtomicU64,
    /// Mutants not sent (they decode to cluster-wide orders).
    skipped: AtomicU64,
    /// Not delivered: the connect timed out under load, or the daemon was
    /// busy (over its caps) before the input reached a decoder.
    undelivered: AtomicU64,
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
struct Counters {
    peer_pre: KindCounters,
    peer_post: KindCounters,
    local: KindCounters,
    /// Held connections opened (again) during the run.
    held_opened: AtomicU64,
    liveness_checks: AtomicU64,
    resumes_ok: AtomicU64,
    /// Every one an ERROR line: a failed liveness check, a failed or wrong resume,
    /// a connection refused by a daemon that should be listening.
    errors: AtomicU64,
}

impl Counters {
    fn of(&self, kind: Kind) -> &KindCounters {
        match kind {
            Kind::PeerPreAuth => &self.peer_pre,
            Kind::PeerPostAuth => &self.peer_post,
            Kind::Local => &self.local,
        }
    }

    fn inputs(&self) -> u64 {
        [&self.peer_pre, &self.peer_post, &self.local].iter().map(|k| k.inputs.load(Ordering::Relaxed)).sum()
    }

    fn error(&self, what: &str) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        eprintln!("ERROR {what}");
    }
}

/// A daemon's descriptors, threads and resident memory.
#[derive(Serialize, Clone, Copy, Default, Debug)]
struct Footprint {
    fds: u64,
    threads: u64,
    rss_kb: u64,
}

impl Footprint {
    fn of(pid: i32) -> anyhow::Result<Footprint> {
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).with_context(|| format!("daemon {pid} is gone"))?.count() as u64;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let field = |name: &str| -> u64 {
            status.lines().find(|l| l.starts_with(name)).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse().ok()).unwrap_or(0)
        };
        Ok(Footprint { fds, threads: field("Threads:"), rss_kb: field("VmRSS:") })
    }

    /// Whether `self` (after the run) is back to the descriptors and threads
    /// of `before`, with no more memory than `plateau_kb` (+ the slack).
    fn settled(&self, before: &Footprint, plateau_kb: u64) -> bool {
        self.fds <= before.fds + FD_SLACK && self.threads <= before.threads && self.rss_kb <= plateau_kb + RSS_SLACK / 1024
    }
}

#[derive(Serialize)]
struct DaemonCheck {
    name: &'static str,
    before: Footprint,
    /// The highest resident memory of the run's first half.
    plateau_kb: u64,
    /// The most threads seen during the run: one per admitted connection,
    /// so the connection caps bound it, not the 1,000s held.
    peak_threads: u64,
    after: Footprint,
    settled: bool,
}

#[derive(Serialize)]
struct Tick {
    passed_us: u64,
    inputs_per_s: u64,
    /// The daemons' footprints at the end of this second (self-made cluster only).
    daemons: Vec<Footprint>,
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
    passed: bool,
}

/// A peer port to fuzz, and the network namespaces (test hosts) to connect
/// from (`None`: this process's own).
#[derive(Clone)]
struct PeerTarget {
    addr: String,
    /// Of the garbage before authentication and the held connections.
    strangers_from: Option<mitosis_testkit::Host>,
    /// Of the authenticated garbage: another address than the strangers',
    /// whose 64 pending handshakes the held connections take.
    members_from: Option<mitosis_testkit::Host>,
}

/// Where the inputs go.
#[derive(Clone)]
struct Targets {
    peer: Option<PeerTarget>,
    key: Option<ClusterKey>,
    protection: Protection,
    socket: Option<PathBuf>,
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
        let targets = Targets { peer, key, protection, socket: opts.socket.clone() };
        let report = fuzz(&targets, opts, seed, None, Vec::new())?;
        return finish(report, opts);
    }
    ensure_root("mitosis stress fuzz (without --peer or --socket)")?;
    let daemon_args: &[&str] = if opts.no_encrypt { &["--no-encrypt"] } else { &[] };
    let cluster = Cluster::start_with_args(bin, "stress-fuzz", daemon_args)?;
    let report = cluster.run(|c| {
        let key = crate::rpc::read_key(&c.dir.path().join("cluster.key"))?;
        let mut workload = HostProcess::spawn(host_command(&c.hosts.a, bin).args(["workload", "pattern", "--mb", &SEED_MB.to_string()]))?;
        let pid = workload.chan.recv_number("ready", Duration::from_secs(60)).context("workload start")? as i32;
        workload.chan.send("verify")?;
        let want = workload.chan.recv(Duration::from_secs(60)).context("the seed's own verify")?;
        ensure!(want.starts_with("verify ok "), "the seed's own memory check: {want}");
        let seed_of_children = Seed::prepare(&c.a, pid, &format!("fuzz-{}", std::process::id()))?;
        let resumer = Resumer { cluster: c, seed: &seed_of_children, want };
        // Warm-up: the first resumes fill pools and caches that belong to the baseline.
        for _ in 0..3 {
            resumer.one().context("a warm-up resume")?;
        }
        let daemons = vec![("a", c.a.pid()), ("b", c.b.pid())];
        let targets = Targets {
            peer: Some(PeerTarget { addr: c.a.addr(), strangers_from: Some(c.hosts.a.clone()), members_from: Some(c.hosts.b.clone()) }),
            key: Some(key),
            protection,
            socket: Some(c.b.socket().to_path_buf()),
        };
        let report = fuzz(&targets, opts, seed, Some(&resumer), daemons)?;
        seed_of_children.drop_and_wait(Duration::from_secs(30))?;
        workload.chan.send("exit 0")?;
        Ok(report)
    })?;
    finish(report, opts)
}

/// Real remote forks beside the garbage: a child of `seed` on host b checks
/// all of its memory.
struct Resumer<'a> {
    cluster: &'a Cluster,
    seed: &'a Seed,
    /// The seed's own `verify` answer.
    want: String,
}

impl Resumer<'_> {
    fn one(&self) -> anyhow::Result<()> {
        use std::os::fd::AsRawFd;
        let (stdin_rx, mut stdin_tx) = std::io::pipe()?;
        stdin_tx.write_all(b"verify\nexit 0\n")?;
        drop(stdin_tx);
        let (mut stdout_rx, stdout_tx) = std::io::pipe()?;
        let options = ResumeOptions { container: Some(ContainerSpec::default()), ..Default::default() };
        let resumed = Client::connect(self.cluster.b.socket())?.resume_with(
            &self.cluster.a.addr(),
            self.seed.id(),
            [stdin_rx.as_raw_fd(), stdout_tx.as_raw_fd(), 2],
            &options,
        )?;
        drop((stdin_rx, stdout_tx));
        let (end, _) = resumed.wait()?;
        let mut out = String::new();
        stdout_rx.read_to_string(&mut out)?;
        ensure!(end == mitosis::ChildEnd::Exited(0), "the child {end}; it printed {out:?}");
        ensure!(out.trim_end() == self.want, "the child's memory check says {:?}, the seed's {:?}", out.trim_end(), self.want);
        Ok(())
    }
}

fn fuzz(targets: &Targets, opts: &FuzzOptions, seed: u64, resumer: Option<&Resumer>, daemons: Vec<(&'static str, i32)>) -> anyhow::Result<FuzzReport> {
    let before: Vec<Footprint> = daemons.iter().map(|(_, pid)| Footprint::of(*pid)).collect::<anyhow::Result<_>>()?;
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
    let nobody = mitosis_sys::creds::lookup_user("nobody").context("the local socket is fuzzed as user nobody")?;
    let samples = Mutex::new(Vec::new());
    std::thread::scope(|s| -> anyhow::Result<()> {
        let (counters, stop) = (&counters, &stop);
        let mut n = 0u64;
        for &kind in &kinds {
            for _ in 0..opts.senders {
                n += 1;
                let rng = StdRng::seed_from_u64(seed.wrapping_add(n.wrapping_mul(0x9E37_79B9_7F4A_7C15)));
                let (targets, uid_gid) = (targets.clone(), (nobody.uid, nobody.gid));
                s.spawn(move || sender(kind, &targets, rng, uid_gid, deadline, counters));
            }
        }
        let holders = targets.clone();
        let hold = opts.hold;
        s.spawn(move || holder(&holders, hold, (nobody.uid, nobody.gid), stop, counters));
        let live = targets.clone();
        s.spawn(move || liveness(&live, stop, counters));
        if let Some(r) = resumer {
            s.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match r.one() {
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
            let footprints: Vec<Footprint> = daemons.iter().map(|(_, pid)| Footprint::of(*pid).unwrap_or_default()).collect();
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
    let first_half = &samples[..samples.len().div_ceil(2)];
    let mut after = Vec::new();
    for (i, ((name, pid), before)) in daemons.iter().zip(&before).enumerate() {
        let plateau_kb = first_half.iter().filter_map(|t| t.daemons.get(i)).map(|f| f.rss_kb).chain([before.rss_kb]).max().unwrap_or(0);
        let mut now = Footprint::of(*pid)?;
        mitosis_testkit::wait_until(SETTLE, || {
            std::thread::sleep(Duration::from_millis(200));
            now = Footprint::of(*pid).unwrap_or(now);
            now.settled(before, plateau_kb)
        });
        let settled = now.settled(before, plateau_kb);
        if !settled {
            counters.error(&format!(
                "daemon {name} did not come back: before {before:?}, after {now:?}, memory plateau of the first half {plateau_kb} KiB"
            ));
        }
        let peak_threads = samples.iter().filter_map(|t| t.daemons.get(i)).map(|f| f.threads).max().unwrap_or(0);
        after.push(DaemonCheck { name, before: *before, plateau_kb, peak_threads, after: now, settled });
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
        passed: false,
    };
    // Every kind of input must have reached the daemon: a run whose inputs
    // were all refused at the door (or never connected) proves nothing.
    let passed = report.errors == 0 && report.kinds.iter().all(|k| k.inputs > 0) && report.liveness_checks > 0;
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
            "  daemon {}: fds {} -> {}, threads {} -> {} (at most {} during the run), VmRSS {} -> {} KiB (first half's plateau {} KiB): {}",
            d.name,
            d.before.fds,
            d.after.fds,
            d.before.threads,
            d.after.threads,
            d.peak_threads,
            d.before.rss_kb,
            d.after.rss_kb,
            d.plateau_kb,
            if d.settled { "back" } else { "NOT BACK" }
        );
    }
    println!(
        "inputs: {}, liveness checks: {}, resumes ok: {}, errors: {}: {}",
        r.inputs,
        r.liveness_checks,
        r.resumes_ok,
        r.errors,
        if r.passed { "PASSED" } else { "FAILED" }
    );
}

// -------------------------------------------------------------- senders --

/// Opens a TCP connection to `addr` (from the calling thread's network namespace).
fn connect_tcp(addr: &str) -> std::io::Result<TcpStream> {
    let sa = std::net::ToSocketAddrs::to_socket_addrs(addr)?
        .next()
        .ok_or_else(|| std::io::Error::other(format!("{addr} does not resolve")))?;
    let s = TcpStream::connect_timeout(&sa, Duration::from_secs(5))?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// One sender: inputs of `kind` until `deadline`.
fn sender(kind: Kind, targets: &Targets, mut rng: StdRng, (uid, gid): (u32, u32), deadline: Instant, counters: &Counters) {
    if kind == Kind::Local {
        if let Err(e) = mitosis_sys::creds::become_user_in_this_thread(uid, gid) {
            counters.error(&format!("cannot act as user nobody: {e}"));
            return;
        }
    }
    let mut run = || {
        while Instant::now() < deadline {
            let counted = counters.of(kind);
            let outcome = match kind {
                Kind::PeerPreAuth => peer_pre_auth(targets, &mut rng),
                Kind::PeerPostAuth => peer_post_auth(targets, &mut rng),
                Kind::Local => local_input(targets, &mut rng),
            };
            match outcome {
                Ok(Outcome::Skipped) => {
                    counted.skipped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                Ok(o) => {
                    counted.inputs.fetch_add(1, Ordering::Relaxed);
                    let c = match o {
                        Outcome::Answered => &counted.answered,
                        Outcome::Closed => &counted.closed,
                        _ => &counted.silent,
                    };
                    c.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused || e.kind() == std::io::ErrorKind::NotFound => {
                    counters.error(&format!("{}: the daemon does not listen any more: {e}", kind.name()));
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(_) => {
                    counted.undelivered.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    };
    // The peer senders of a test cluster run inside host a's namespace: this
    // thread enters it once, not once per input.
    let netns = match (&targets.peer, kind) {
        (Some(p), Kind::PeerPreAuth) => p.strangers_from.as_ref(),
        (Some(p), Kind::PeerPostAuth) => p.members_from.as_ref(),
        _ => None,
    };
    if let Some(host) = netns {
        let entered = std::fs::File::open(format!("/run/netns/{}", host.ns))
            .map_err(|e| e.to_string())
            .and_then(|ns| mitosis_sys::ns::setns(&ns, libc::CLONE_NEWNET).map_err(|e| e.to_string()));
        if let Err(e) = entered {
            counters.error(&format!("cannot enter the network namespace of host {}: {e}", host.ns));
            return;
        }
    }
    run();
}

/// What became of one input.
enum Outcome {
    Answered,
    Closed,
    Silent,
    Skipped,
}

/// Sends `bytes` in `chunks` writes (a pause between them), then waits for an answer.
fn deliver<S: Read + Write>(s: &mut S, bytes: &[u8], chunks: usize, rng: &mut StdRng) -> Outcome {
    let chunks = chunks.clamp(1, bytes.len().max(1));
    let step = bytes.len().div_ceil(chunks).max(1);
    for part in bytes.chunks(step) {
        if s.write_all(part).is_err() {
            return Outcome::Closed;
        }
        if chunks > 1 {
            std::thread::sleep(Duration::from_micros(rng.random_range(100..2000)));
        }
    }
    answer(s)
}

/// Reads what the daemon says within [`ANSWER_WAIT`] (the caller set the timeout).
fn answer<S: Read>(s: &mut S) -> Outcome {
    let mut buf = [0u8; 4096];
    match s.read(&mut buf) {
        Ok(0) => Outcome::Closed,
        Ok(_) => Outcome::Answered,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => Outcome::Silent,
        Err(_) => Outcome::Closed,
    }
}

fn peer_pre_auth(t: &Targets, rng: &mut StdRng) -> std::io::Result<Outcome> {
    let addr = &t.peer.as_ref().expect("a peer target").addr;
    let mut s = connect_tcp(addr)?;
    s.set_read_timeout(Some(ANSWER_WAIT))?;
    s.set_write_timeout(Some(Duration::from_secs(2)))?;
    let valid = hello(t.protection);
    let bytes = match rng.random_range(0..5) {
        0 => random_bytes(rng, 0..8192),
        1 => mutate(rng, &valid),
        2 => {
            // A valid HELLO, then a Noise message of garbage.
            let mut b = valid.to_vec();
            let msg = random_bytes(rng, 0..300);
            b.extend_from_slice(&(msg.len() as u16).to_le_bytes());
            b.extend_from_slice(&msg);
            b
        }
        3 => {
            // A valid HELLO announcing an oversized Noise message.
            let mut b = valid.to_vec();
            b.extend_from_slice(&rng.random_range(257u16..=u16::MAX).to_le_bytes());
            b.extend_from_slice(&random_bytes(rng, 0..64));
            b
        }
        _ => {
            // A HELLO with a Noise message's worth of bytes after it, mutated together.
            let tail = random_bytes(rng, 50..51);
            mutate(rng, &[&valid[..], &tail[..]].concat())
        }
    };
    let chunks = if rng.random_ratio(1, 8) { rng.random_range(2..8) } else { 1 };
    Ok(deliver(&mut s, &bytes, chunks, rng))
}

/// Samples of every peer request a member sends in normal work (ids no seed has).
fn peer_samples() -> Vec<Vec<u8>> {
    let id = "fuzz-no-such-seed".to_string();
    [
        PeerRequest::Ping,
        PeerRequest::Checksummed { seq: 7 },
        PeerRequest::GetSeed { id: id.clone() },
        PeerRequest::ReadPages { id: id.clone(), generation: 3, ranges: vec![(0x7f00_0000_0000, 4096), (0x1000, 65536)] },
        PeerRequest::RecordWorkingSet { id, generation: 3, ranges: vec![(0x7f00_0000_0000, 4096)] },
        PeerRequest::ListInstances,
    ]
    .iter()
    .map(framed)
    .collect()
}

fn framed<T: Serialize>(msg: &T) -> Vec<u8> {
    let mut b = Vec::new();
    write_msg(&mut b, msg).expect("encoding to memory");
    b
}

/// Whether a frame decodes to a cluster-wide order that is not sent.
fn is_order(frame: &[u8]) -> bool {
    let Some(body) = frame.get(4..) else { return false };
    matches!(
        postcard::from_bytes::<PeerRequest>(body),
        Ok(PeerRequest::StartInstance(_) | PeerRequest::DropSeed { .. })
    )
}

fn peer_post_auth(t: &Targets, rng: &mut StdRng) -> std::io::Result<Outcome> {
    let addr = &t.peer.as_ref().expect("a peer target").addr;
    let key = t.key.as_ref().expect("a key");
    let samples = peer_samples();
    let sample = &samples[rng.random_range(0..samples.len())];
    let input = match rng.random_range(0..6) {
        0..=2 => mutate(rng, sample),
        3 => {
            // An oversized length, with a little of a body.
            let mut b = rng.random_range(MAX_CONTROL_FRAME as u32 + 1..=u32::MAX).to_le_bytes().to_vec();
            b.extend_from_slice(&random_bytes(rng, 0..256));
            b
        }
        4 => random_bytes(rng, 0..4096),
        _ => Vec::new(), // raw bytes where records belong: below
    };
    if is_order(&input) {
        return Ok(Outcome::Skipped);
    }
    let mut s = connect_tcp(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(2)))?;
    let channel = match client_handshake(&mut s, key, t.protection) {
        Ok(c) => c,
        // Over the daemon's caps: the input never reached a decoder.
        Err(mitosis_proto::ProtoError::Busy) => return Err(std::io::Error::other("busy")),
        Err(e) => return Err(std::io::Error::other(format!("handshake: {e}"))),
    };
    s.set_read_timeout(Some(ANSWER_WAIT))?;
    if input.is_empty() {
        // Not a record: the record layer must refuse it.
        let raw = random_bytes(rng, 1..2048);
        return Ok(deliver(&mut s, &raw, 1, rng));
    }
    let mut stream = channel.over(s);
    if stream.write_all(&input).and_then(|()| stream.flush()).is_err() {
        return Ok(Outcome::Closed);
    }
    Ok(answer(&mut stream))
}

/// Samples of every local request (ids and pids no one has; nothing a
/// refusal does not end).
fn local_samples() -> Vec<Vec<u8>> {
    let id = "fuzz-no-such-seed".to_string();
    let requests = [
        LocalRequest::List,
        LocalRequest::Ps { all: true },
        LocalRequest::Stats,
        LocalRequest::Drop { id: id.clone() },
        LocalRequest::Kill { id: "mitosis-no-such-child".into() },
        LocalRequest::Prepare { pid: 0x3fff_fff0, id: id.clone(), reply_slot: None, pinned: true, copy: false },
        LocalRequest::Resume { from: "127.0.0.1:1".into(), id: id.clone(), options: ResumeOptions::default() },
        LocalRequest::ResumeInPlace { from: "127.0.0.1:1".into(), id },
        LocalRequest::BareContainer { spec: ContainerSpec::default() },
    ];
    requests.into_iter().map(|request| framed(&Envelope { version: PROTOCOL_VERSION, request })).collect()
}

fn local_input(t: &Targets, rng: &mut StdRng) -> std::io::Result<Outcome> {
    let socket = t.socket.as_ref().expect("a local target");
    let samples = local_samples();
    let input = match rng.random_range(0..5) {
        0..=2 => {
            let sample = &samples[rng.random_range(0..samples.len())];
            mutate(rng, sample)
        }
        3 => {
            let mut b = rng.random_range(MAX_CONTROL_FRAME as u32 + 1..=u32::MAX).to_le_bytes().to_vec();
            b.extend_from_slice(&random_bytes(rng, 0..256));
            b
        }
        _ => random_bytes(rng, 0..4096),
    };
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(ANSWER_WAIT))?;
    s.set_write_timeout(Some(Duration::from_secs(2)))?;
    let chunks = if rng.random_ratio(1, 8) { rng.random_range(2..8) } else { 1 };
    Ok(deliver(&mut s, &input, chunks, rng))
}

// ------------------------------------------------------------- mutation --

fn random_bytes(rng: &mut StdRng, len: std::ops::Range<usize>) -> Vec<u8> {
    let n = rng.random_range(len.start..len.end.max(len.start + 1));
    (0..n).map(|_| rng.random()).collect()
}

/// A few random edits of `sample`: bit flips, byte sets, inserts, deletes,
/// duplicated runs, a truncation, a rewritten length prefix, interesting values.
pub fn mutate(rng: &mut StdRng, sample: &[u8]) -> Vec<u8> {
    let mut b = sample.to_vec();
    for _ in 0..rng.random_range(1..=4) {
        let len = b.len();
        match rng.random_range(0..8) {
            0 if len > 0 => {
                let i = rng.random_range(0..len);
                b[i] ^= 1 << rng.random_range(0..8);
            }
            1 if len > 0 => {
                let i = rng.random_range(0..len);
                b[i] = rng.random();
            }
            2 => {
                let i = rng.random_range(0..=len);
                let extra = random_bytes(rng, 1..32);
                b.splice(i..i, extra);
            }
            3 if len > 1 => {
                let i = rng.random_range(0..len);
                let j = rng.random_range(i..=len.min(i + 16));
                b.drain(i..j);
            }
            4 if len > 1 => {
                let i = rng.random_range(0..len);
                let j = rng.random_range(i..=len.min(i + 32));
                let run = b[i..j].to_vec();
                let k = rng.random_range(0..=b.len());
                b.splice(k..k, run);
            }
            5 if len > 0 => b.truncate(rng.random_range(0..len)),
            6 if len >= 4 => {
                let v: u32 = match rng.random_range(0..4) {
                    0 => 0,
                    1 => u32::MAX,
                    2 => MAX_CONTROL_FRAME as u32 + 1,
                    _ => rng.random(),
                };
                b[..4].copy_from_slice(&v.to_le_bytes());
            }
            7 if len > 0 => {
                // A varint or small integer made huge.
                let i = rng.random_range(0..len);
                b[i] = [0x80, 0xff, 0x7f, 0x00][rng.random_range(0..4)];
            }
            _ => b.push(rng.random()),
        }
    }
    b
}

// ------------------------------------------------------ held and checked --

/// One held connection: the stream and where it was opened.
enum Held {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Held {
    fn drip(&mut self, byte: u8) -> bool {
        let r = match self {
            Held::Tcp(s) => s.write(&[byte]),
            Held::Unix(s) => s.write(&[byte]),
        };
        if r.is_err() {
            return false;
        }
        // Anything the daemon sent back (a deadline's error, "busy") means it let go.
        let mut buf = [0u8; 256];
        let read = match self {
            Held::Tcp(s) => s.read(&mut buf),
            Held::Unix(s) => s.read(&mut buf),
        };
        matches!(read, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }
}

/// Holds `n` connections on each target, a byte a second on each, opening
/// again those the daemon has let go.
fn holder(t: &Targets, n: usize, (uid, gid): (u32, u32), stop: &AtomicBool, counters: &Counters) {
    if n == 0 {
        return;
    }
    let open_tcp = |count: usize| -> Vec<Held> {
        let Some(PeerTarget { addr, strangers_from: netns, .. }) = &t.peer else { return Vec::new() };
        let addr = addr.clone();
        let open = move || -> Vec<Held> {
            (0..count)
                .filter_map(|_| {
                    let s = connect_tcp(&addr).ok()?;
                    s.set_nonblocking(true).ok()?;
                    Some(Held::Tcp(s))
                })
                .collect()
        };
        match netns {
            None => open(),
            Some(host) => host.run_inside(open).unwrap_or_default(),
        }
    };
    let socket = t.socket.clone();
    // Unix connections as nobody, from a thread of nobody's.
    let open_unix = |count: usize| -> Vec<Held> {
        let Some(path) = socket.clone() else { return Vec::new() };
        std::thread::spawn(move || -> Vec<Held> {
            if mitosis_sys::creds::become_user_in_this_thread(uid, gid).is_err() {
                return Vec::new();
            }
            (0..count)
                .filter_map(|_| {
                    let s = UnixStream::connect(&path).ok()?;
                    s.set_nonblocking(true).ok()?;
                    Some(Held::Unix(s))
                })
                .collect()
        })
        .join()
        .unwrap_or_default()
    };
    let mut tcp = open_tcp(n);
    let mut unix = open_unix(n);
    counters.held_opened.fetch_add((tcp.len() + unix.len()) as u64, Ordering::Relaxed);
    let hello = hello(t.protection);
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_secs(1));
        if stop.load(Ordering::Relaxed) {
            break;
        }
        i += 1;
        tcp.retain_mut(|h| h.drip(hello[i % hello.len()]));
        unix.retain_mut(|h| h.drip(0x7f));
        let (more_tcp, more_unix) = (open_tcp(n.saturating_sub(tcp.len())), open_unix(n.saturating_sub(unix.len())));
        counters.held_opened.fetch_add((more_tcp.len() + more_unix.len()) as u64, Ordering::Relaxed);
        tcp.extend(more_tcp);
        unix.extend(more_unix);
    }
}

/// Every [`LIVENESS_EVERY`], one well-formed request per target on a fresh
/// connection must get a well-formed answer.
fn liveness(t: &Targets, stop: &AtomicBool, counters: &Counters) {
    while !stop.load(Ordering::Relaxed) {
        if let Some(PeerTarget { addr, members_from: netns, .. }) = &t.peer {
            let (addr, key, protection) = (addr.clone(), t.key.clone(), t.protection);
            let check = move || peer_alive(&addr, key.as_ref(), protection);
            let result = match netns {
                None => check(),
                Some(host) => host.run_inside(check).unwrap_or_else(|e| Err(format!("{e:#}"))),
            };
            match result {
                Ok(()) => {
                    counters.liveness_checks.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => counters.error(&format!("peer liveness: {e}")),
            }
        }
        if let Some(socket) = &t.socket {
            match local_alive(socket) {
                Ok(()) => {
                    counters.liveness_checks.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => counters.error(&format!("local liveness: {e}")),
            }
        }
        std::thread::sleep(LIVENESS_EVERY);
    }
}

/// A `Ping` answered with `Pong` (with the key), or a HELLO answered with a
/// REPLY (without); "busy" counts as an answer.
fn peer_alive(addr: &str, key: Option<&ClusterKey>, protection: Protection) -> Result<(), String> {
    let mut s = connect_tcp(addr).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(LIVENESS_TIMEOUT)).map_err(|e| e.to_string())?;
    let Some(key) = key else {
        s.write_all(&hello(protection)).map_err(|e| e.to_string())?;
        let mut reply = [0u8; 77];
        s.read_exact(&mut reply).map_err(|e| format!("no REPLY to a HELLO: {e}"))?;
        return if &reply[..8] == b"MITOSIS1" { Ok(()) } else { Err(format!("not a REPLY: {:?}", &reply[..8])) };
    };
    let channel = match client_handshake(&mut s, key, protection) {
        Ok(c) => c,
        Err(mitosis_proto::ProtoError::Busy) => return Ok(()),
        Err(e) => return Err(format!("handshake: {e}")),
    };
    let mut stream = channel.over(s);
    write_msg(&mut stream, &PeerRequest::Ping).map_err(|e| e.to_string())?;
    stream.flush().map_err(|e| e.to_string())?;
    match read_msg::<_, PeerResponse>(&mut stream, MAX_CONTROL_FRAME) {
        Ok(PeerResponse::Pong) => Ok(()),
        Ok(other) => Err(format!("Ping answered with {other:?}")),
        Err(e) => Err(format!("no answer to Ping: {e}")),
    }
}

/// `List` answered with the seeds (or "busy"), as this process's user.
fn local_alive(socket: &Path) -> Result<(), String> {
    match Client::connect(socket).and_then(|mut c| c.list()) {
        Ok(_) => Ok(()),
        Err(e) if e.exit_code() == 75 => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutants_differ_from_their_sample_and_stay_small() {
        let mut rng = StdRng::seed_from_u64(1);
        let sample = framed(&PeerRequest::GetSeed { id: "x".repeat(40) });
        let mutants: Vec<_> = (0..1000).map(|_| mutate(&mut rng, &sample)).collect();
        assert!(mutants.iter().filter(|m| **m != sample).count() > 950);
        assert!(mutants.iter().all(|m| m.len() < sample.len() + 4 * 64));
    }

    #[test]
    fn orders_are_recognised_and_samples_are_not_orders() {
        assert!(is_order(&framed(&PeerRequest::DropSeed { id: "s".into() })));
        assert!(peer_samples().iter().all(|s| !is_order(s)));
        assert!(!is_order(b"\x01"));
    }

    #[test]
    fn samples_decode_as_the_daemon_decodes_them() {
        for s in peer_samples() {
            assert!(postcard::from_bytes::<PeerRequest>(&s[4..]).is_ok());
        }
        for s in local_samples() {
            assert!(postcard::from_bytes::<Envelope>(&s[4..]).is_ok());
        }
    }
}
