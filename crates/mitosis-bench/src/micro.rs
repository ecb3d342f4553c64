//! `mitosis bench micro`: the micro benchmark of MITOSIS, each figure beside
//! its physical baseline measured in the same run on the same two hosts.
//!
//! - **raw TCP**: a bulk transfer from host `a` to host `b` (the
//!   `tcp-source` / `tcp-sink` workloads), the ceiling for remote paging;
//! - per working-set size, a `pattern` workload on host `a`:
//!   - **local fork()**: timed inside the workload (parent side);
//!   - **prepare**: the client's round trip to daemon `a` (and the daemon's
//!     own figure);
//!   - **resume**: from just before connecting to daemon `b` until the child
//!     answers its first command (`now`; CLOCK_MONOTONIC is the same in
//!     every network namespace), and the daemon's `total_us`;
//!   - **first / second touch**: one write per page, in order or shuffled,
//!     timed inside the child, and the child's pager counters.
//!
//! Throughputs are in MB/s with 1 MB = 10^6 bytes; sizes are in MiB.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use mitosis::{ChildEnd, Client, PagerStats, ResumeTimings, SeedInfo};
use mitosis_testkit::TwoHosts;
use serde::Serialize;

use crate::hosts::{ensure_root, host_command, Channel, Cluster, HostProcess, Seed};
use crate::{median, now_ns};

const MIB: usize = 1 << 20;
/// Size of the raw TCP baseline transfer.
const TCP_MB: usize = 256;
/// Port of the raw TCP baseline's sink, on host `b`.
const TCP_PORT: u16 = 7100;
/// Repetitions of one size stop early (after at least one) once another
/// would likely end past this much time spent on the size.
const SIZE_BUDGET: Duration = Duration::from_secs(40);
/// How long quick answers (`ready`, `now`, `fork`, raw TCP) may take.
const QUICK: Duration = Duration::from_secs(30);

/// The issue's targets, printed beside the figures (never asserted).
const TARGET_PREPARE_OVER_FORK: f64 = 1.5;
const TARGET_RESUME_MS: f64 = 5.0;
const TARGET_TOUCH_MB: usize = 256;
const TARGET_TOUCH_MB_S: f64 = 300.0;

/// Runs the benchmark for `sizes` (MiB), `runs` repetitions each, and prints
/// a table, or with `json` one JSON object with every sample. Needs root.
pub fn run(bin: &Path, sizes: &[usize], runs: usize, json: bool) -> anyhow::Result<()> {
    ensure_root("mitosis bench micro")?;
    ensure!(runs > 0, "--runs must be at least 1");
    ensure!(!sizes.is_empty() && !sizes.contains(&0), "--sizes must list sizes of at least 1 MiB");
    progress("starting hosts a and b with a daemon each");
    let cluster = Cluster::start(bin, "bench-micro")?;
    let report = cluster.run(|cluster| {
        let raw_tcp = raw_tcp(bin, &cluster.hosts, runs)?;
        let rows = sizes.iter().map(|&mb| measure_size(bin, cluster, mb, runs)).collect::<anyhow::Result<_>>()?;
        Ok(Report::new(raw_tcp, rows))
    })?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    progress("done; stopping daemons and removing hosts");
    Ok(())
}

/// Prints a progress line to stderr.
fn progress(msg: &str) {
    eprintln!("bench micro: {msg}");
}

// ---------------------------------------------------------------- raw TCP --

/// The `tcp-sink` workload: accepts one connection on `listen`, reads until
/// end of file and prints `received <bytes> <ns>` (from accept to EOF).
pub fn tcp_sink(listen: SocketAddr) -> anyhow::Result<i32> {
    let listener = TcpListener::bind(listen).with_context(|| format!("listening on {listen}"))?;
    let (mut conn, _) = listener.accept().context("accepting the source")?;
    let t0 = now_ns();
    let mut buf = vec![0u8; MIB];
    let mut bytes = 0u64;
    loop {
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => bytes += n as u64,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context("receiving"),
        }
    }
    println!("received {bytes} {}", now_ns() - t0);
    Ok(0)
}

/// The `tcp-source` workload: connects to `to` (retrying while the sink is
/// not listening yet), writes `mb` MiB in 1 MiB writes, closes, and prints
/// `sent <bytes> <ns>` (from connected to all written).
pub fn tcp_source(to: SocketAddr, mb: usize) -> anyhow::Result<i32> {
    let mut conn = connect_retrying(to, Duration::from_secs(5))?;
    let buf: Vec<u8> = (0..MIB).map(|i| (i * 31 % 251) as u8).collect();
    let t0 = now_ns();
    for _ in 0..mb {
        conn.write_all(&buf).context("sending")?;
    }
    conn.shutdown(std::net::Shutdown::Write).context("closing")?;
    println!("sent {} {}", mb * MIB, now_ns() - t0);
    Ok(0)
}

/// Connects to `to`, retrying refused connections for up to `patience`.
fn connect_retrying(to: SocketAddr, patience: Duration) -> anyhow::Result<TcpStream> {
    let deadline = Instant::now() + patience;
    loop {
        match TcpStream::connect(to) {
            Ok(s) => return Ok(s),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(e).with_context(|| format!("connecting to {to}")),
        }
    }
}

/// Raw TCP throughput from host `a` to host `b`, `runs` times, as the sink
/// measured it.
fn raw_tcp(bin: &Path, hosts: &TwoHosts, runs: usize) -> anyhow::Result<TcpReport> {
    let sink_addr = format!("{}:{TCP_PORT}", hosts.b.ip);
    let mut mb_s = Vec::new();
    for run in 1..=runs {
        progress(&format!("raw TCP baseline, {TCP_MB} MiB a -> b, run {run}/{runs}"));
        let mut sink = HostProcess::spawn(host_command(&hosts.b, bin).args(["workload", "tcp-sink", "--listen", &sink_addr]))?;
        let mb = TCP_MB.to_string();
        let mut source = HostProcess::spawn(host_command(&hosts.a, bin).args(["workload", "tcp-source", "--to", &sink_addr, "--mb", &mb]))?;
        let sent = source.chan.recv(QUICK).context("raw TCP source")?;
        ensure!(sent.starts_with("sent "), "raw TCP source said {sent:?}");
        let (bytes, ns) = parse_received(&sink.chan.recv(QUICK).context("raw TCP sink")?)?;
        ensure!(bytes == (TCP_MB * MIB) as u64, "the sink received {bytes} bytes of {}", TCP_MB * MIB);
        mb_s.push(mb_per_s(bytes, ns));
    }
    Ok(TcpReport { bytes: (TCP_MB * MIB) as u64, mb_per_s: Samples::new(mb_s) })
}

/// Parses the sink's `received <bytes> <ns>`.
fn parse_received(line: &str) -> anyhow::Result<(u64, u64)> {
    match line.split_whitespace().collect::<Vec<_>>().as_slice() {
        ["received", b, ns] => Ok((b.parse()?, ns.parse()?)),
        _ => bail!("raw TCP sink said {line:?}"),
    }
}

/// Throughput in MB/s (10^6 bytes per second).
fn mb_per_s(bytes: u64, ns: u64) -> f64 {
    bytes as f64 * 1e3 / ns.max(1) as f64
}

// ------------------------------------------------------------- one size --

/// How a child touches its working set.
#[derive(Clone, Copy)]
enum Order {
    Seq,
    Random,
}

impl Order {
    fn command(self) -> &'static str {
        match self {
            Order::Seq => "touch seq",
            Order::Random => "touch random",
        }
    }
}

/// Everything measured on one remote child.
#[derive(Serialize)]
struct ChildSample {
    /// From just before connecting to daemon `b` until the child ran its
    /// first command, in microseconds.
    resume_wall_us: f64,
    /// The daemon's own account of the resume.
    timings: ResumeTimings,
    first_touch_ns: u64,
    second_touch_ns: u64,
    /// The child's pager counters (both touches).
    stats: PagerStats,
}

/// One prepare-and-resume round of a size.
#[derive(Serialize)]
struct RunSample {
    seed: SeedInfo,
    prepare_round_trip_us: f64,
    seq: ChildSample,
    random: ChildSample,
}

/// Measures working-set size `mb`: local fork, then up to `runs` rounds of
/// prepare and two remote children (sequential and random touch).
fn measure_size(bin: &Path, cluster: &Cluster, mb: usize, runs: usize) -> anyhow::Result<SizeReport> {
    progress(&format!("{mb} MiB: starting the workload on host a"));
    let mut workload = HostProcess::spawn(host_command(&cluster.hosts.a, bin).args(["workload", "pattern", "--mb", &mb.to_string()]))?;
    let pid = workload.chan.recv_number("ready", fill_timeout(mb)).context("workload start")?;
    let pid = i32::try_from(pid).context("workload pid")?;

    let mut fork_us = Vec::new();
    for _ in 0..runs {
        fork_us.push(workload.chan.ask_number("fork", "fork", QUICK)? as f64 / 1e3);
    }

    let started = Instant::now();
    let mut samples = Vec::new();
    for run in 1..=runs {
        progress(&format!("{mb} MiB: prepare and resume, run {run}/{runs}"));
        samples.push(measure_run(cluster, pid, mb, run)?);
        let spent = started.elapsed();
        let next = spent / run as u32;
        if run < runs && spent + next > SIZE_BUDGET {
            progress(&format!("{mb} MiB: stopping after {run} of {runs} runs ({SIZE_BUDGET:?} time budget per size)"));
            break;
        }
    }
    workload.chan.send("exit 0")?;
    Ok(SizeReport::new(mb, fork_us, samples))
}

/// One round: prepare `pid` under a fresh id, resume a sequential-touch and a
/// random-touch child on host `b`, drop the seed and wait until its memory is
/// freed (rounds do not overlap, even on few CPUs).
fn measure_run(cluster: &Cluster, pid: i32, mb: usize, run: usize) -> anyhow::Result<RunSample> {
    let id = format!("micro-{mb}mib-{run}-{}", std::process::id());
    let seed = Seed::prepare(&cluster.a, pid, &id)?;
    let seq = remote_child(cluster, &seed, mb, Order::Seq)?;
    let random = remote_child(cluster, &seed, mb, Order::Random)?;
    let sample = RunSample { prepare_round_trip_us: seed.round_trip_us, seed: seed.info.clone(), seq, random };
    seed.drop_and_wait(QUICK)?;
    Ok(sample)
}

/// Resumes a child of `seed` on host `b`, times its start with `now`, has it
/// touch its working set twice in `order`, and lets it exit.
fn remote_child(cluster: &Cluster, seed: &Seed, mb: usize, order: Order) -> anyhow::Result<ChildSample> {
    let (child_in, mut to_child) = std::io::pipe()?;
    let (from_child, child_out) = std::io::pipe()?;
    // Queued before the resume: the first thing the child does is answer it.
    writeln!(to_child, "now")?;
    let t0 = now_ns();
    let resumed = Client::connect(cluster.b.socket())?
        .resume(&cluster.a.addr(), seed.id(), [child_in.as_raw_fd(), child_out.as_raw_fd(), 2])
        .with_context(|| format!("resuming {} on host b", seed.id()))?;
    // Only the child keeps its ends, so its death shows as end of file.
    drop((child_in, child_out));
    let mut chan = Channel::new(to_child, from_child);
    let running = chan.recv_number("now", QUICK).context("resumed child")?;
    let touch_timeout = touch_timeout(mb);
    let first_touch_ns = chan.ask_number(order.command(), "touch", touch_timeout)?;
    let second_touch_ns = chan.ask_number(order.command(), "touch", touch_timeout)?;
    chan.send("exit 0")?;
    let timings = resumed.timings.clone();
    let (end, stats) = resumed.wait().context("waiting for the child's end")?;
    ensure!(end == ChildEnd::Exited(0), "the resumed child ended with {end:?}");
    Ok(ChildSample { resume_wall_us: running.saturating_sub(t0) as f64 / 1e3, timings, first_touch_ns, second_touch_ns, stats })
}

/// How long the workload may take to fill `mb` MiB.
fn fill_timeout(mb: usize) -> Duration {
    QUICK + Duration::from_millis(20 * mb as u64)
}

/// How long one touch of `mb` MiB may take (at a pessimistic 10 MB/s).
fn touch_timeout(mb: usize) -> Duration {
    QUICK + Duration::from_millis(100 * mb as u64)
}

// ---------------------------------------------------------------- report --

/// A sample and its median.
#[derive(Serialize)]
struct Samples {
    median: f64,
    samples: Vec<f64>,
}

impl Samples {
    fn new(samples: Vec<f64>) -> Samples {
        Samples { median: median(&samples), samples }
    }

    /// The samples `f` extracts from `items`.
    fn of<T>(items: &[T], f: impl Fn(&T) -> f64) -> Samples {
        Samples::new(items.iter().map(f).collect())
    }
}

#[derive(Serialize)]
struct TcpReport {
    bytes: u64,
    mb_per_s: Samples,
}

/// The figures of one working-set size.
#[derive(Serialize)]
struct SizeReport {
    mb: usize,
    /// Rounds actually run (fewer than asked when the time budget ran out).
    runs: usize,
    local_fork_us: Samples,
    prepare_round_trip_us: Samples,
    prepare_daemon_us: Samples,
    /// Median prepare round trip over median local fork.
    prepare_over_fork: f64,
    /// Command start to child running (sequential-touch children).
    resume_wall_ms: Samples,
    /// The daemon's `total_us` (sequential-touch children).
    resume_daemon_ms: Samples,
    first_touch_seq_mb_s: Samples,
    second_touch_seq_mb_s: Samples,
    first_touch_random_mb_s: Samples,
    second_touch_random_mb_s: Samples,
    pages_fetched_seq: Samples,
    fetches_seq: Samples,
    pages_fetched_random: Samples,
    fetches_random: Samples,
    rounds: Vec<RunSample>,
}

impl SizeReport {
    fn new(mb: usize, fork_us: Vec<f64>, rounds: Vec<RunSample>) -> SizeReport {
        let bytes = (mb * MIB) as u64;
        let touch = |ns: u64| mb_per_s(bytes, ns);
        let local_fork_us = Samples::new(fork_us);
        let prepare_round_trip_us = Samples::of(&rounds, |r| r.prepare_round_trip_us);
        SizeReport {
            mb,
            runs: rounds.len(),
            prepare_over_fork: prepare_round_trip_us.median / local_fork_us.median.max(f64::MIN_POSITIVE),
            prepare_daemon_us: Samples::of(&rounds, |r| r.seed.prepare_us as f64),
            resume_wall_ms: Samples::of(&rounds, |r| r.seq.resume_wall_us / 1e3),
            resume_daemon_ms: Samples::of(&rounds, |r| r.seq.timings.total_us as f64 / 1e3),
            first_touch_seq_mb_s: Samples::of(&rounds, |r| touch(r.seq.first_touch_ns)),
            second_touch_seq_mb_s: Samples::of(&rounds, |r| touch(r.seq.second_touch_ns)),
            first_touch_random_mb_s: Samples::of(&rounds, |r| touch(r.random.first_touch_ns)),
            second_touch_random_mb_s: Samples::of(&rounds, |r| touch(r.random.second_touch_ns)),
            pages_fetched_seq: Samples::of(&rounds, |r| r.seq.stats.pages_fetched as f64),
            fetches_seq: Samples::of(&rounds, |r| r.seq.stats.fetches as f64),
            pages_fetched_random: Samples::of(&rounds, |r| r.random.stats.pages_fetched as f64),
            fetches_random: Samples::of(&rounds, |r| r.random.stats.fetches as f64),
            local_fork_us,
            prepare_round_trip_us,
            rounds,
        }
    }
}

/// One of the issue's targets checked against one figure.
#[derive(Serialize)]
struct TargetCheck {
    target: String,
    mb: usize,
    value: f64,
    met: bool,
}

#[derive(Serialize)]
struct Report {
    units: &'static str,
    raw_tcp: TcpReport,
    sizes: Vec<SizeReport>,
    targets: Vec<TargetCheck>,
}

impl Report {
    fn new(raw_tcp: TcpReport, sizes: Vec<SizeReport>) -> Report {
        let targets = check_targets(&sizes);
        Report { units: "sizes in MiB; throughputs in MB/s (10^6 bytes/s); medians over runs", raw_tcp, sizes, targets }
    }
}

/// Checks every size against the issue's targets.
fn check_targets(sizes: &[SizeReport]) -> Vec<TargetCheck> {
    let mut checks = Vec::new();
    for s in sizes {
        checks.push(TargetCheck {
            target: format!("prepare within {TARGET_PREPARE_OVER_FORK}x of local fork"),
            mb: s.mb,
            value: s.prepare_over_fork,
            met: s.prepare_over_fork <= TARGET_PREPARE_OVER_FORK,
        });
        checks.push(TargetCheck {
            target: format!("resume under {TARGET_RESUME_MS} ms"),
            mb: s.mb,
            value: s.resume_wall_ms.median,
            met: s.resume_wall_ms.median < TARGET_RESUME_MS,
        });
        if s.mb == TARGET_TOUCH_MB {
            checks.push(TargetCheck {
                target: format!("first touch of {TARGET_TOUCH_MB} MiB at {TARGET_TOUCH_MB_S} MB/s or more"),
                mb: s.mb,
                value: s.first_touch_seq_mb_s.median,
                met: s.first_touch_seq_mb_s.median >= TARGET_TOUCH_MB_S,
            });
        }
    }
    checks
}

/// Prints the header line, the table and the targets.
fn print_table(r: &Report) {
    let tcp = r.raw_tcp.mb_per_s.median;
    let ratios: Vec<String> = r.sizes.iter().map(|s| format!("{:.2} at {} MiB", s.first_touch_seq_mb_s.median / tcp, s.mb)).collect();
    println!("raw TCP a -> b ({} MiB): {tcp:.0} MB/s; first-touch seq / raw TCP: {}", TCP_MB, ratios.join(", "));
    println!("({})", r.units);
    println!();
    println!(
        "{:>6} {:>4} {:>9} {:>10} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>11}",
        "MiB",
        "runs",
        "fork µs",
        "prep µs",
        "(daemon)",
        "prep/fork",
        "resume ms",
        "(daemon)",
        "1st seq",
        "2nd seq",
        "1st rand",
        "pages",
        "fetches s/r"
    );
    for s in &r.sizes {
        println!(
            "{:>6} {:>4} {:>9.0} {:>10.0} {:>10.0} {:>8.2}x {:>9.2} {:>9.2} {:>9.0} {:>9.0} {:>9.0} {:>8.0} {:>11}",
            s.mb,
            s.runs,
            s.local_fork_us.median,
            s.prepare_round_trip_us.median,
            s.prepare_daemon_us.median,
            s.prepare_over_fork,
            s.resume_wall_ms.median,
            s.resume_daemon_ms.median,
            s.first_touch_seq_mb_s.median,
            s.second_touch_seq_mb_s.median,
            s.first_touch_random_mb_s.median,
            s.pages_fetched_seq.median,
            format!("{:.0}/{:.0}", s.fetches_seq.median, s.fetches_random.median),
        );
    }
    println!();
    println!("columns: touch figures in MB/s; pages = pages fetched by a sequential-touch child; fetches = requests (seq/random child)");
    println!("targets of the issue (reported, not asserted):");
    for t in &r.targets {
        println!("  {:<52} {:>6} MiB: {:>9.2}  {}", t.target, t.mb, t.value, if t.met { "met" } else { "MISSED" });
    }
    if !r.sizes.iter().any(|s| s.mb == TARGET_TOUCH_MB) {
        println!("  first touch of {TARGET_TOUCH_MB} MiB: not measured ({TARGET_TOUCH_MB} is not among --sizes)");
    }
}
