//! `mitosis bench rpc` and `mitosis stress rpc`: the peer protocol itself,
//! with requests that touch no seed (`Ping`, `Checksummed`, see
//! [`mitosis_proto::peer`]), MITOSIS's RPC stress programs.
//!
//! - **bench**: empty requests (`Ping` -> `Pong`, in authenticated and
//!   encrypted records, as every peer frame) from clients on host `b` to the
//!   daemon of host `a`, for each number of client connections, one request
//!   outstanding per connection and pipelined (`depth` requests sent in one
//!   record, then their answers read). Beside each, in the same run and over
//!   the same veth path, the same clients against a raw TCP echo server (the
//!   `tcp-echo` workload, 16-byte requests and answers, no protocol at all).
//!   The latency of one request is that of the single unpipelined client, its
//!   median beside the raw TCP round trip's.
//! - **stress**: `clients` connections for `seconds`, each request answered
//!   with a fresh random payload and its checksum (`--checksum`; else
//!   `Ping`), every answer checked; MITOSIS's line every second and a
//!   summary. Against a cluster of its own (root), where children checking
//!   every byte of the pages they fetched run beside the RPCs (the real page
//!   path, [`CheckedSeed`]), or `--peer` a daemon (with `--key-file`).

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use mitosis_proto::auth::{client_handshake, ClusterKey};
use mitosis_proto::frame::{read_msg, write_msg, MAX_CONTROL_FRAME};
use mitosis_proto::peer::{check_checksummed, PeerRequest, PeerResponse, CHECKSUMMED_PAYLOAD};
use mitosis_proto::secure::{Protection, SecureReader, SecureWriter};
use mitosis_testkit::Host;
use serde::Serialize;

use crate::hosts::{ensure_root, host_command, CheckedSeed, Cluster, HostProcess};
use crate::kernel_log::{KernelLog, KernelLogReport};
use crate::modes::RTT_REQUEST;
use crate::{median, now_ns, percentile};

/// MITOSIS's figures (RDMA, one server thread).
const MITOSIS_LATENCY_US: f64 = 4.16;
const MITOSIS_REQUESTS_PER_S: f64 = 240_000.0;
/// Targets: one request at most this many raw TCP round trips ...
const TARGET_LATENCY_RATIO: f64 = 1.2;
/// ... and at least this many requests/s with pipelined clients.
const TARGET_PIPELINED_PER_S: f64 = 100_000.0;
/// How long each client sends before the measured interval.
const WARMUP: Duration = Duration::from_millis(300);
/// Wait after starting the daemons, whose start-up work (the lean-container
/// pool) would otherwise fall into the first configuration.
const SETTLE: Duration = Duration::from_secs(3);
/// First port of the raw TCP echo servers on host `a` (one per configuration).
const ECHO_PORT: u16 = 7110;
/// The seed of the children that check the page path beside `stress rpc` (MiB).
const PAGE_PATH_SEED_MB: u64 = 8;
/// Connect, handshake and answer timeout of every connection.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------- connections --

/// Where client sockets are opened: here, or inside a test host.
#[derive(Clone)]
enum Origin {
    Here,
    Inside(Host),
}

impl Origin {
    fn connect(&self, addr: &str) -> anyhow::Result<TcpStream> {
        let addr = addr.to_string();
        let open = move || -> anyhow::Result<TcpStream> {
            let sa = std::net::ToSocketAddrs::to_socket_addrs(&addr)?.next().with_context(|| format!("{addr} does not resolve"))?;
            let s = TcpStream::connect_timeout(&sa, IO_TIMEOUT).with_context(|| format!("connecting to {addr}"))?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(IO_TIMEOUT))?;
            s.set_write_timeout(Some(IO_TIMEOUT))?;
            Ok(s)
        };
        match self {
            Origin::Here => open(),
            // A socket stays in the namespace it was made in.
            Origin::Inside(host) => host.run_inside(open)?,
        }
    }
}

/// An authenticated peer connection speaking the measuring requests.
pub struct RpcClient {
    reader: SecureReader<BufReader<TcpStream>>,
    writer: SecureWriter<TcpStream>,
}

impl RpcClient {
    fn over(stream: TcpStream, key: &ClusterKey, protection: Protection) -> anyhow::Result<RpcClient> {
        let mut s = stream.try_clone()?;
        let channel = client_handshake(&mut s, key, protection).context("peer handshake")?;
        let (reader, writer) = channel.split(BufReader::with_capacity(64 << 10, stream.try_clone()?), stream);
        Ok(RpcClient { reader, writer })
    }

    /// Sends `requests` in one record.
    fn send_all<'a>(&mut self, requests: impl IntoIterator<Item = &'a PeerRequest>) -> anyhow::Result<()> {
        for r in requests {
            write_msg(&mut self.writer, r)?;
        }
        self.writer.flush()?;
        Ok(())
    }

    fn recv(&mut self) -> anyhow::Result<PeerResponse> {
        Ok(read_msg(&mut self.reader, MAX_CONTROL_FRAME)?)
    }
}

/// What the bench's clients drive: `send(n)` sends n requests at once,
/// `recv` takes one answer.
trait Conn: Send {
    fn send(&mut self, n: usize) -> anyhow::Result<()>;
    fn recv(&mut self) -> anyhow::Result<()>;
}

/// `Ping`s to a daemon.
struct PingConn {
    rpc: RpcClient,
    batch: Vec<PeerRequest>,
}

impl Conn for PingConn {
    fn send(&mut self, n: usize) -> anyhow::Result<()> {
        self.batch.resize(n, PeerRequest::Ping);
        self.rpc.send_all(&self.batch[..n])
    }
    fn recv(&mut self) -> anyhow::Result<()> {
        match self.rpc.recv()? {
            PeerResponse::Pong => Ok(()),
            other => bail!("expected Pong, got {other:?}"),
        }
    }
}

/// 16-byte requests to the raw TCP echo server.
struct RawConn {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
    batch: Vec<u8>,
}

impl Conn for RawConn {
    fn send(&mut self, n: usize) -> anyhow::Result<()> {
        self.batch.resize(n * RTT_REQUEST, 7);
        self.stream.write_all(&self.batch[..n * RTT_REQUEST])?;
        Ok(())
    }
    fn recv(&mut self) -> anyhow::Result<()> {
        let mut answer = [0u8; RTT_REQUEST];
        self.reader.read_exact(&mut answer)?;
        Ok(())
    }
}

// ---------------------------------------------------------------- bench --

/// What `mitosis bench rpc` measures.
pub struct BenchOptions {
    /// Numbers of client connections.
    pub clients: Vec<usize>,
    /// Requests in flight per pipelined connection.
    pub depth: usize,
    /// Measured seconds per configuration and server.
    pub seconds: f64,
    pub json: bool,
}

/// One configuration's run against one server.
#[derive(Serialize, Clone, Default)]
struct Run {
    requests: u64,
    seconds: f64,
    requests_per_s: f64,
    /// Round trips of the first client (unpipelined runs only), in µs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    latencies_us: Vec<f64>,
}

#[derive(Serialize)]
struct Row {
    clients: usize,
    depth: usize,
    rpc: Run,
    raw_tcp: Run,
}

#[derive(Serialize)]
struct LatencyLine {
    rpc_p50_us: f64,
    rpc_p99_us: f64,
    raw_tcp_p50_us: f64,
    raw_tcp_p99_us: f64,
    ratio: f64,
}

#[derive(Serialize)]
struct BenchReport {
    seconds_per_configuration: f64,
    depth: usize,
    protection: &'static str,
    raw_request_bytes: usize,
    rows: Vec<Row>,
    latency: LatencyLine,
    best_pipelined_requests_per_s: f64,
    latency_target_met: bool,
    throughput_target_met: bool,
}

/// Runs `conns` clients sending `depth` requests at a time for `seconds`
/// (after a warm-up); the first client's round trips are kept when `depth` is 1.
fn drive(conns: Vec<Box<dyn Conn>>, depth: usize, seconds: f64) -> anyhow::Result<Run> {
    let start = Arc::new(Barrier::new(conns.len() + 1));
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, mut conn)| {
            let (start, stop) = (start.clone(), stop.clone());
            let timed = i == 0 && depth == 1;
            std::thread::spawn(move || -> anyhow::Result<(u64, Vec<f64>)> {
                let batch = |conn: &mut Box<dyn Conn>| -> anyhow::Result<()> {
                    conn.send(depth)?;
                    (0..depth).try_for_each(|_| conn.recv())
                };
                let warm_until = Instant::now() + WARMUP;
                let warm = std::iter::from_fn(|| (Instant::now() < warm_until).then_some(())).try_for_each(|()| batch(&mut conn));
                // Everyone meets here, also a client that failed (or the rest would wait forever).
                start.wait();
                warm?;
                let (mut count, mut latencies) = (0u64, Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    let t = now_ns();
                    batch(&mut conn)?;
                    if timed {
                        latencies.push((now_ns() - t) as f64 / 1e3);
                    }
                    count += depth as u64;
                }
                Ok((count, latencies))
            })
        })
        .collect();
    start.wait();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(seconds));
    stop.store(true, Ordering::Relaxed);
    let mut run = Run::default();
    for t in threads {
        let (count, latencies) = t.join().map_err(|_| anyhow::anyhow!("a client thread panicked"))??;
        run.requests += count;
        if !latencies.is_empty() {
            run.latencies_us = latencies;
        }
    }
    run.seconds = t0.elapsed().as_secs_f64();
    run.requests_per_s = run.requests as f64 / run.seconds;
    Ok(run)
}

/// `mitosis bench rpc`.
pub fn bench(bin: &Path, opts: &BenchOptions) -> anyhow::Result<()> {
    ensure_root("mitosis bench rpc")?;
    ensure!(opts.depth > 1 && opts.seconds > 0.0, "--depth must be at least 2 and --seconds positive");
    let mut clients = opts.clients.clone();
    // The latency line needs the single unpipelined client.
    if !clients.contains(&1) {
        clients.insert(0, 1);
    }
    ensure!(clients.iter().all(|&c| c > 0), "--clients must be at least 1");
    let say = |m: &str| if !opts.json { eprintln!("bench rpc: {m}") };
    say("starting hosts a and b with a daemon each");
    let cluster = Cluster::start(bin, "bench-rpc")?;
    let key = read_key(&cluster.dir.path().join("cluster.key"))?;
    let origin = Origin::Inside(cluster.hosts.b.clone());
    std::thread::sleep(SETTLE);
    let report = cluster.run(|cluster| {
        let mut rows = Vec::new();
        let mut port = ECHO_PORT;
        for &n in &clients {
            for depth in [1, opts.depth] {
                say(&format!("{n} client(s), depth {depth}: peer RPC, then raw TCP"));
                let mut conns: Vec<Box<dyn Conn>> = Vec::new();
                for _ in 0..n {
                    let rpc = RpcClient::over(origin.connect(&cluster.a.addr())?, &key, Protection::Encrypted)?;
                    conns.push(Box::new(PingConn { rpc, batch: Vec::new() }));
                }
                let rpc = drive(conns, depth, opts.seconds)?;
                let raw = raw_run(bin, cluster, &origin, port, n, depth, opts.seconds)?;
                port += 1;
                rows.push(Row { clients: n, depth, rpc, raw_tcp: raw });
            }
        }
        Ok(rows)
    })?;
    let single = report.iter().find(|r| r.clients == 1 && r.depth == 1).expect("the single client ran");
    let latency = LatencyLine {
        rpc_p50_us: median(&single.rpc.latencies_us),
        rpc_p99_us: percentile(&single.rpc.latencies_us, 99.0),
        raw_tcp_p50_us: median(&single.raw_tcp.latencies_us),
        raw_tcp_p99_us: percentile(&single.raw_tcp.latencies_us, 99.0),
        ratio: median(&single.rpc.latencies_us) / median(&single.raw_tcp.latencies_us),
    };
    let best = report.iter().filter(|r| r.depth > 1).map(|r| r.rpc.requests_per_s).fold(0.0, f64::max);
    let report = BenchReport {
        seconds_per_configuration: opts.seconds,
        depth: opts.depth,
        protection: "encrypted (AES-256-GCM records)",
        raw_request_bytes: RTT_REQUEST,
        latency_target_met: latency.ratio <= TARGET_LATENCY_RATIO,
        throughput_target_met: best >= TARGET_PIPELINED_PER_S,
        rows: report,
        latency,
        best_pipelined_requests_per_s: best,
    };
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_bench(&report);
    }
    Ok(())
}

/// The same clients against a raw TCP echo server on host `a`.
fn raw_run(bin: &Path, cluster: &Cluster, origin: &Origin, port: u16, n: usize, depth: usize, seconds: f64) -> anyhow::Result<Run> {
    let addr = format!("{}:{port}", cluster.hosts.a.ip);
    let reply = RTT_REQUEST.to_string();
    let mut echo = HostProcess::spawn(host_command(&cluster.hosts.a, bin).args([
        "workload",
        "tcp-echo",
        "--listen",
        &addr,
        "--reply",
        &reply,
        "--connections",
        &n.to_string(),
    ]))?;
    let said = echo.chan.recv(IO_TIMEOUT).context("tcp-echo")?;
    ensure!(said == "listening", "tcp-echo said {said:?}");
    let mut conns: Vec<Box<dyn Conn>> = Vec::new();
    for _ in 0..n {
        let stream = origin.connect(&addr)?;
        let reader = BufReader::with_capacity(64 << 10, stream.try_clone()?);
        conns.push(Box::new(RawConn { stream, reader, batch: Vec::new() }));
    }
    drive(conns, depth, seconds)
}

fn kilo(x: f64) -> String {
    format!("{:.1}K", x / 1e3)
}

fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

fn print_bench(r: &BenchReport) {
    println!();
    println!(
        "Peer RPC: empty requests (Ping -> Pong, {}) from host b to the daemon of host a, beside a raw TCP echo ({} B requests and answers) over the same veth pair; {} s per configuration",
        r.protection, r.raw_request_bytes, r.seconds_per_configuration
    );
    println!("  {:>7} {:>6} {:>14} {:>14} {:>8}", "clients", "depth", "RPC req/s", "raw TCP req/s", "RPC/raw");
    for row in &r.rows {
        println!(
            "  {:>7} {:>6} {:>14} {:>14} {:>7.0}%",
            row.clients,
            row.depth,
            kilo(row.rpc.requests_per_s),
            kilo(row.raw_tcp.requests_per_s),
            100.0 * row.rpc.requests_per_s / row.raw_tcp.requests_per_s
        );
    }
    let l = &r.latency;
    println!(
        "  one request (1 client, not pipelined): RPC {:.1} µs (p99 {:.1}), raw TCP round trip {:.1} µs (p99 {:.1}): {:.2}x",
        l.rpc_p50_us, l.rpc_p99_us, l.raw_tcp_p50_us, l.raw_tcp_p99_us, l.ratio
    );
    println!("  MITOSIS (RDMA): {MITOSIS_LATENCY_US} µs, {} requests/s per server thread", kilo(MITOSIS_REQUESTS_PER_S));
    println!("  target: one request at most {TARGET_LATENCY_RATIO}x the raw TCP round trip: {:.2}x, {}", l.ratio, met(r.latency_target_met));
    println!(
        "  target: at least {} requests/s with pipelined clients: {}, {}",
        kilo(TARGET_PIPELINED_PER_S),
        kilo(r.best_pipelined_requests_per_s),
        met(r.throughput_target_met)
    );
}

// --------------------------------------------------------------- stress --

/// What `mitosis stress rpc` does.
pub struct StressOptions {
    /// `Checksummed` requests, every answer checked (else `Ping`).
    pub checksum: bool,
    pub clients: usize,
    pub seconds: u64,
    /// A daemon's peer address; `None` starts a cluster of two hosts (root).
    pub peer: Option<String>,
    /// The cluster key (with `peer`).
    pub key_file: Option<PathBuf>,
    /// The daemon runs with `--no-encrypt`.
    pub no_encrypt: bool,
    pub json: bool,
}

/// One second's line.
#[derive(Serialize)]
struct Tick {
    passed_us: u64,
    requests_per_s: u64,
}

#[derive(Serialize)]
struct StressReport {
    clients: usize,
    seconds: u64,
    checksum: bool,
    payload_bytes: usize,
    samples: Vec<Tick>,
    requests: u64,
    mismatches: u64,
    errors: u64,
    /// Children resumed beside the RPCs that found all their memory right
    /// (a run against its own cluster only).
    children_checked: Option<u64>,
    /// What the kernel logged during the run.
    kernel_log: KernelLogReport,
    passed: bool,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    mismatches: AtomicU64,
    errors: AtomicU64,
    children: AtomicU64,
}

/// `mitosis stress rpc`: exit status 0 when every answer was right, there
/// was no error and at least one request was answered; 1 otherwise.
pub fn stress(bin: &Path, opts: &StressOptions) -> anyhow::Result<i32> {
    ensure!(opts.clients > 0 && opts.seconds > 0, "--clients and --seconds must be at least 1");
    match &opts.peer {
        Some(addr) => {
            let key_file = opts.key_file.as_deref().context("--peer needs --key-file")?;
            let protection = if opts.no_encrypt { Protection::Integrity } else { Protection::Encrypted };
            stress_against(Origin::Here, addr, read_key(key_file)?, protection, opts, None)
        }
        None => {
            ensure_root("mitosis stress rpc (without --peer)")?;
            let daemon_args: &[&str] = if opts.no_encrypt { &["--no-encrypt"] } else { &[] };
            let cluster = Cluster::start_with_args(bin, "stress-rpc", daemon_args)?;
            let key = read_key(&cluster.dir.path().join("cluster.key"))?;
            let protection = if opts.no_encrypt { Protection::Integrity } else { Protection::Encrypted };
            let origin = Origin::Inside(cluster.hosts.b.clone());
            let code = cluster.run(|c| {
                // The real page path beside the RPCs: children that check
                // every byte of the pages they fetched.
                let seed = CheckedSeed::prepare(c, bin, PAGE_PATH_SEED_MB, &format!("stress-rpc-{}", std::process::id()))?;
                let child = || seed.resume_checked(c);
                let code = stress_against(origin, &c.a.addr(), key, protection, opts, Some(&child))?;
                seed.finish()?;
                Ok(code)
            })?;
            Ok(code)
        }
    }
}

/// Runs the clients until the run's end; `page_path` (if any) resumes one
/// checked child, over and over beside them.
fn stress_against(
    origin: Origin,
    addr: &str,
    key: ClusterKey,
    protection: Protection,
    opts: &StressOptions,
    page_path: Option<&(dyn Fn() -> anyhow::Result<()> + Sync)>,
) -> anyhow::Result<i32> {
    let counters = Arc::new(Counters::default());
    let kernel_log = KernelLog::mark();
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(opts.seconds);
    let connect = Arc::new(move |addr: &str| RpcClient::over(origin.connect(addr)?, &key, protection));
    let clients: Vec<_> = (0..opts.clients)
        .map(|id| {
            let (counters, connect, addr, checksum) = (counters.clone(), connect.clone(), addr.to_string(), opts.checksum);
            std::thread::spawn(move || stress_client(id, &|| connect(&addr), checksum, deadline, &counters))
        })
        .collect();
    std::thread::scope(|s| -> anyhow::Result<i32> {
        if let Some(child) = page_path {
            let counters = &counters;
            s.spawn(move || {
                while Instant::now() < deadline {
                    match child() {
                        Ok(()) => {
                            counters.children.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            counters.errors.fetch_add(1, Ordering::Relaxed);
                            eprintln!("ERROR page path: {e:#}");
                        }
                    }
                }
            });
        }
        report_stress(clients, &counters, t0, deadline, opts, page_path.is_some(), kernel_log)
    })
}

/// Prints a line a second until `deadline`, then the summary; the exit status.
fn report_stress(
    clients: Vec<std::thread::JoinHandle<()>>,
    counters: &Counters,
    t0: Instant,
    deadline: Instant,
    opts: &StressOptions,
    page_path: bool,
    mut kernel_log: KernelLog,
) -> anyhow::Result<i32> {
    let mut samples = Vec::new();
    let (mut last_t, mut last_n) = (t0, 0u64);
    while Instant::now() < deadline {
        let next = (last_t + Duration::from_secs(1)).min(deadline);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        let (now, n) = (Instant::now(), counters.requests.load(Ordering::Relaxed));
        let passed_us = now.duration_since(last_t).as_micros() as u64;
        let tick = Tick { passed_us, requests_per_s: ((n - last_n) as f64 * 1e6 / passed_us.max(1) as f64) as u64 };
        // MITOSIS's line (stderr under --json, where stdout is the report).
        let line = format!("passed: {}us, thpt: {} requests/s", tick.passed_us, tick.requests_per_s);
        if opts.json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
        samples.push(tick);
        (last_t, last_n) = (now, n);
    }
    for c in clients {
        c.join().map_err(|_| anyhow::anyhow!("a client thread panicked"))?;
    }
    let report = StressReport {
        clients: opts.clients,
        seconds: opts.seconds,
        checksum: opts.checksum,
        payload_bytes: if opts.checksum { CHECKSUMMED_PAYLOAD } else { 0 },
        samples,
        requests: counters.requests.load(Ordering::Relaxed),
        mismatches: counters.mismatches.load(Ordering::Relaxed),
        errors: counters.errors.load(Ordering::Relaxed),
        children_checked: page_path.then(|| counters.children.load(Ordering::Relaxed)),
        kernel_log: kernel_log.since(),
        passed: false,
    };
    for failure in &report.kernel_log.kernel_failures {
        eprintln!("ERROR the kernel logged: {failure}");
    }
    let page_path_ran = report.children_checked.is_none_or(|n| n > 0);
    let passed = report.mismatches == 0 && report.errors == 0 && report.requests > 0 && page_path_ran && report.kernel_log.kernel_clean();
    let report = StressReport { passed, ..report };
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{}", report.kernel_log.summary());
        println!(
            "requests: {}, mismatches: {}, errors: {} ({} clients, {} s{}{}): {}",
            report.requests,
            report.mismatches,
            report.errors,
            report.clients,
            report.seconds,
            if report.checksum { format!(", {CHECKSUMMED_PAYLOAD} B checksummed payloads") } else { String::new() },
            match report.children_checked {
                Some(n) => format!(", {n} remote children checked every byte of their {PAGE_PATH_SEED_MB} MiB"),
                None => String::new(),
            },
            if report.passed { "PASSED" } else { "FAILED" }
        );
    }
    Ok(if report.passed { 0 } else { 1 })
}

/// One client until `deadline`: one request outstanding, every answer
/// checked. A broken connection or a wrong answer (after which the stream
/// cannot be trusted to be in step) is counted and the client connects again.
fn stress_client(id: usize, connect: &dyn Fn() -> anyhow::Result<RpcClient>, checksum: bool, deadline: Instant, counters: &Counters) {
    // Distinct sequence numbers across clients.
    let mut seq = (id as u64) << 40;
    let mut conn: Option<RpcClient> = None;
    while Instant::now() < deadline {
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match connect() {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    counters.errors.fetch_add(1, Ordering::Relaxed);
                    eprintln!("ERROR client {id}: cannot connect: {e:#}");
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            },
        };
        seq += 1;
        let req = if checksum { PeerRequest::Checksummed { seq } } else { PeerRequest::Ping };
        let answer = c.send_all([&req]).and_then(|()| c.recv());
        match answer {
            Ok(PeerResponse::Error(e)) => {
                counters.errors.fetch_add(1, Ordering::Relaxed);
                eprintln!("ERROR client {id}: the daemon answered: {e}");
            }
            Ok(resp) => {
                counters.requests.fetch_add(1, Ordering::Relaxed);
                let wrong = if checksum {
                    check_checksummed(seq, &resp).err().map(|m| m.to_string())
                } else {
                    (resp != PeerResponse::Pong).then(|| format!("expected Pong, got {resp:?}"))
                };
                if let Some(why) = wrong {
                    counters.mismatches.fetch_add(1, Ordering::Relaxed);
                    eprintln!("ERROR client {id}: mismatch: {why}");
                    conn = None;
                }
            }
            Err(e) => {
                counters.errors.fetch_add(1, Ordering::Relaxed);
                eprintln!("ERROR client {id}: {e:#}");
                conn = None;
            }
        }
    }
}

pub(crate) fn read_key(path: &Path) -> anyhow::Result<ClusterKey> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    ClusterKey::from_file_contents(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}
