//! `mitosis bench crypto`: what protecting page traffic costs. A page server
//! and a client in this process, on loopback TCP, speak the real peer
//! protocol (`ReadPages` requests, `Pages` answers with their bytes) in four
//! ways, round-robin within each run so that all see the same machine load:
//!
//! - **raw TCP**: frames on the bare stream, as protocol version 2 did (the baseline);
//! - **integrity only**: `--no-encrypt` records (payload in clear, GMAC tag);
//! - **AES-256-GCM**: encrypted Noise records, the daemons' suite;
//! - **ChaCha20-Poly1305**: encrypted Noise records, the other Noise suite.
//!
//! It reports the page throughput of one connection per window size
//! (medians of the runs) and each mode's cost relative to raw TCP.
//!
//! Then, as root, end to end: two clusters of two hosts, one with encrypting
//! daemons and one with `--no-encrypt` daemons, each resuming children of a
//! pattern seed that touch all of it in order, with neither page cache nor
//! working set (every page crosses the wire), alternating between the
//! clusters; beside raw TCP between the hosts measured in the same run.

use std::io::{BufReader, BufWriter, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use mitosis_proto::auth::{client_handshake_with, server_handshake_with, ClusterKey};
use mitosis_proto::frame::{read_msg, write_msg, MAX_CONTROL_FRAME};
use mitosis_proto::peer::{PeerRequest, PeerResponse};
use mitosis_proto::secure::{Protection, Suite};
use serde::Serialize;

use crate::hosts::{host_command, Channel, Cluster, HostProcess, Seed};
use crate::median;

/// The ways of carrying page traffic that are compared.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Raw,
    Integrity,
    AesGcm,
    ChaChaPoly,
}

const MODES: [Mode; 4] = [Mode::Raw, Mode::Integrity, Mode::AesGcm, Mode::ChaChaPoly];

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Raw => "raw TCP",
            Mode::Integrity => "integrity only",
            Mode::AesGcm => "AES-256-GCM",
            Mode::ChaChaPoly => "ChaCha20-Poly1305",
        }
    }

    fn security(self) -> Option<(Protection, Suite)> {
        match self {
            Mode::Raw => None,
            Mode::Integrity => Some((Protection::Integrity, Suite::AesGcm)),
            Mode::AesGcm => Some((Protection::Encrypted, Suite::AesGcm)),
            Mode::ChaChaPoly => Some((Protection::Encrypted, Suite::ChaChaPoly)),
        }
    }
}

#[derive(Serialize)]
struct Row {
    mode: &'static str,
    window_kib: u64,
    mb_per_s_median: f64,
    mb_per_s: Vec<f64>,
    /// Throughput lost relative to raw TCP, in percent of raw TCP.
    cost_pct: f64,
}

#[derive(Serialize)]
struct Report {
    mib_per_sample: usize,
    runs: usize,
    rows: Vec<Row>,
    end_to_end: Option<EndToEnd>,
}

/// First touch of a whole seed by children on host b, per daemon protection.
#[derive(Serialize)]
struct EndToEnd {
    seed_mib: usize,
    raw_tcp_mb_per_s_median: f64,
    encrypted_mb_per_s_median: f64,
    encrypted_mb_per_s: Vec<f64>,
    integrity_mb_per_s_median: f64,
    integrity_mb_per_s: Vec<f64>,
}

/// One child of `seed` on b that touches all of it in order with no help;
/// returns MB/s of that touch.
fn touch_all(cluster: &Cluster, seed: &Seed, mib: usize) -> anyhow::Result<f64> {
    let (child_in, mut to_child) = std::io::pipe()?;
    let (from_child, child_out) = std::io::pipe()?;
    let paging = mitosis::Paging { no_cache: true, no_working_set: true, ..mitosis::Paging::default() };
    let resumed = mitosis::Client::connect(cluster.b.socket())?
        .resume_with(
            &cluster.a.addr(),
            seed.id(),
            [child_in.as_raw_fd(), child_out.as_raw_fd(), 2],
            &mitosis::ResumeOptions { container: Some(mitosis::ContainerSpec::default()), detach: false, paging },
        )
        .context("resuming on host b")?;
    drop((child_in, child_out));
    writeln!(to_child, "touch seq")?;
    let mut chan = Channel::new(to_child, from_child);
    let ns = chan.recv_number("touch", Duration::from_secs(30) + Duration::from_millis(100 * mib as u64))?;
    chan.send("exit 0")?;
    let _ = resumed.wait();
    Ok((mib << 20) as f64 / ns as f64 * 1e3)
}

fn end_to_end(bin: &Path, mib: usize, runs: usize) -> anyhow::Result<EndToEnd> {
    let clusters =
        [Cluster::start_with_args(bin, "bench-crypto-enc", &[])?, Cluster::start_with_args(bin, "bench-crypto-int", &["--no-encrypt"])?];
    let raw = crate::micro::raw_tcp(bin, &clusters[0].hosts, runs)?.mb_per_s.median;
    let mut workloads = Vec::new();
    let mut seeds = Vec::new();
    for (i, c) in clusters.iter().enumerate() {
        let mut w = HostProcess::spawn(host_command(&c.hosts.a, bin).args(["workload", "pattern", "--mb", &mib.to_string()]))?;
        let pid = w.chan.recv_number("ready", Duration::from_secs(30) + Duration::from_millis(20 * mib as u64))?;
        seeds.push(Seed::prepare(&c.a, i32::try_from(pid)?, &format!("crypto-{i}-{}", std::process::id()))?);
        workloads.push(w);
    }
    let mut samples = [Vec::new(), Vec::new()];
    for run in 1..=runs.max(1) {
        for (i, c) in clusters.iter().enumerate() {
            eprintln!("bench crypto: end to end, {} daemons, run {run}/{runs}", ["encrypting", "--no-encrypt"][i]);
            samples[i].push(c.run(|c| touch_all(c, &seeds[i], mib))?);
        }
    }
    for mut w in workloads {
        let _ = w.chan.send("exit 0");
    }
    drop(seeds);
    Ok(EndToEnd {
        seed_mib: mib,
        raw_tcp_mb_per_s_median: raw,
        encrypted_mb_per_s_median: median(&samples[0]),
        integrity_mb_per_s_median: median(&samples[1]),
        encrypted_mb_per_s: samples[0].clone(),
        integrity_mb_per_s: samples[1].clone(),
    })
}

fn key() -> ClusterKey {
    ClusterKey::from_file_contents(b"mitosis-bench-crypto-key-0123456789").expect("a valid key")
}

/// Serves `ReadPages` on `conn` until the client hangs up.
fn serve(conn: TcpStream, mode: Mode) -> anyhow::Result<()> {
    conn.set_nodelay(true)?;
    let pages = vec![0x5au8; 8 << 20];
    let answer = |r: &mut dyn Read, w: &mut dyn Write| -> anyhow::Result<bool> {
        let req: PeerRequest = match read_msg(&mut &mut *r, MAX_CONTROL_FRAME) {
            Ok(req) => req,
            Err(mitosis_proto::ProtoError::Closed) => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        let PeerRequest::ReadPages { ranges, .. } = req else { anyhow::bail!("unexpected request") };
        let len: u64 = ranges.iter().map(|r| r.1).sum();
        write_msg(&mut &mut *w, &PeerResponse::Pages { len })?;
        w.write_all(&pages[..len as usize])?;
        w.flush()?;
        Ok(true)
    };
    match mode.security() {
        None => {
            let (mut r, mut w) = (BufReader::with_capacity(64 << 10, conn.try_clone()?), BufWriter::with_capacity(64 << 10, conn));
            while answer(&mut r, &mut w)? {}
        }
        Some((protection, suite)) => {
            let mut s = conn.try_clone()?;
            let channel = server_handshake_with(&mut s, &key(), protection, suite)?;
            let (mut r, mut w) = channel.split(BufReader::with_capacity(64 << 10, conn.try_clone()?), conn);
            while answer(&mut r, &mut w)? {}
        }
    }
    Ok(())
}

/// Reads `total` bytes in answers of `window` bytes over one connection in
/// `mode`, one request outstanding at a time (as a pager's fault does);
/// returns MB/s.
fn sample(mode: Mode, window: u64, total: u64) -> anyhow::Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding loopback")?;
    let addr = listener.local_addr()?;
    let server = std::thread::spawn(move || -> anyhow::Result<()> {
        let (conn, _) = listener.accept()?;
        serve(conn, mode)
    });
    let conn = TcpStream::connect(addr)?;
    conn.set_nodelay(true)?;
    let mut out = vec![0u8; window as usize];
    let rounds = total / window;
    let req = PeerRequest::ReadPages { id: "bench".into(), generation: 1, ranges: vec![(0x1000_0000, window)] };
    let mut run = |r: &mut dyn Read, w: &mut dyn Write| -> anyhow::Result<f64> {
        let t = Instant::now();
        for _ in 0..rounds {
            write_msg(&mut &mut *w, &req)?;
            w.flush()?;
            match read_msg(&mut &mut *r, MAX_CONTROL_FRAME)? {
                PeerResponse::Pages { len } if len == window => r.read_exact(&mut out)?,
                other => anyhow::bail!("unexpected answer {other:?}"),
            }
        }
        let secs = t.elapsed().as_secs_f64();
        anyhow::ensure!(out.iter().all(|&b| b == 0x5a), "pages arrived wrong");
        Ok((rounds * window) as f64 / secs / 1e6)
    };
    let mb_s = match mode.security() {
        None => {
            let mut w = conn.try_clone()?;
            run(&mut BufReader::with_capacity(256 << 10, conn), &mut w)?
        }
        Some((protection, suite)) => {
            let mut s = conn.try_clone()?;
            let channel = client_handshake_with(&mut s, &key(), protection, suite)?;
            let (mut r, mut w) = channel.split(BufReader::with_capacity(256 << 10, conn.try_clone()?), conn);
            run(&mut r, &mut w)?
        }
    };
    server.join().map_err(|_| anyhow::anyhow!("page server panicked"))??;
    Ok(mb_s)
}

/// Runs the benchmark: `mib` MiB per sample, `runs` samples per mode and
/// window; then, as root and unless `e2e_mib` is 0, the end-to-end part with
/// a seed of `e2e_mib` MiB.
pub fn run(bin: &Path, mib: usize, runs: usize, e2e_mib: usize, json: bool) -> anyhow::Result<()> {
    let windows: [u64; 3] = [16 << 10, 256 << 10, 2 << 20];
    let total = (mib as u64) << 20;
    let mut rows = Vec::new();
    for window in windows {
        let mut samples: Vec<Vec<f64>> = vec![Vec::new(); MODES.len()];
        for _ in 0..runs.max(1) {
            for (i, mode) in MODES.iter().enumerate() {
                samples[i].push(sample(*mode, window, total)?);
            }
        }
        let raw = median(&samples[0]);
        for (i, mode) in MODES.iter().enumerate() {
            let m = median(&samples[i]);
            rows.push(Row {
                mode: mode.name(),
                window_kib: window >> 10,
                mb_per_s_median: m,
                mb_per_s: samples[i].clone(),
                cost_pct: 100.0 * (raw - m) / raw,
            });
        }
    }
    let end_to_end = if e2e_mib == 0 {
        None
    } else if crate::hosts::ensure_root("mitosis bench crypto (end to end)").is_err() {
        eprintln!("bench crypto: not root, skipping the end-to-end part");
        None
    } else {
        Some(end_to_end(bin, e2e_mib, runs)?)
    };
    let report = Report { mib_per_sample: mib, runs, rows, end_to_end };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!("page throughput of one peer connection, loopback TCP, {mib} MiB per sample, median of {runs}");
    println!("{:>10}  {:<18} {:>10}  {:>16}", "window", "mode", "MB/s", "cost vs raw TCP");
    for r in &report.rows {
        let cost = if r.mode == Mode::Raw.name() { "(baseline)".to_string() } else { format!("{:.1}%", r.cost_pct) };
        println!("{:>7} KiB  {:<18} {:>10.0}  {:>16}", r.window_kib, r.mode, r.mb_per_s_median, cost);
    }
    if let Some(e) = &report.end_to_end {
        println!();
        println!("first touch of a {} MiB seed by a child on host b (no cache, no working set), median of {runs}", e.seed_mib);
        let pct = |v: f64| 100.0 * v / e.raw_tcp_mb_per_s_median;
        println!("  raw TCP a -> b          {:>8.0} MB/s  (baseline)", e.raw_tcp_mb_per_s_median);
        println!("  encrypting daemons      {:>8.0} MB/s  ({:.0}% of raw TCP)", e.encrypted_mb_per_s_median, pct(e.encrypted_mb_per_s_median));
        println!("  --no-encrypt daemons    {:>8.0} MB/s  ({:.0}% of raw TCP)", e.integrity_mb_per_s_median, pct(e.integrity_mb_per_s_median));
    }
    Ok(())
}
