//! `mitosis bench memnode`: the memory node (crate `mitosis-memnode`) over
//! the veth between two hosts, for each way it stores pages (none, lz4,
//! zstd): put and get throughput and per-request latency with runs of 4 KiB
//! and 64 KiB, one request outstanding, every page got back compared with
//! what was put; and the compression ratio on real pages, the present
//! anonymous pages of a live Python process's heap (read through
//! `/proc/PID/mem`).
//!
//! Beside them, in the same run: raw TCP bulk throughput over the same veth
//! (`tcp-source` / `tcp-sink`), the raw TCP round trip of a 16-byte request
//! answered with a run's bytes over the same path (the `tcp-echo` workload,
//! a process in host a like the node, and a thread of the client's process
//! in host b; no protocol), measured right before each run of the memory
//! node, memcpy of
//! the same bytes in the same run sizes, and, on one core, each codec and
//! the page digests alone. The whole heap is also put and got in 1 MiB requests
//! (256 pages each), the batches a fault-in path would send, and 64 KiB
//! runs from 4 connections at once (aggregate). Medians over `runs` runs.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, ensure, Context};
use mitosis_memnode::codec::{decode, encode, PAGE};
use mitosis_memnode::MemnodeClient;
use mitosis_proto::auth::ClusterKey;
use mitosis_proto::memnode::Compression;
use mitosis_proto::secure::Protection;
use mitosis_testkit::{write_key, Host, Memnode, ProcessGuard, TestDir, TwoHosts};
use serde::Serialize;

use crate::hosts::{ensure_root, host_command, HostProcess};
use crate::modes::RTT_REQUEST;
use crate::{median, percentile};

/// The run sizes measured.
const RUN_SIZES: [usize; 2] = [4 << 10, 64 << 10];
const COMPRESSIONS: [Compression; 3] = [Compression::None, Compression::Lz4, Compression::Zstd];
/// First port of the raw TCP round-trip servers on host a (one per row).
const ECHO_PORT: u16 = 7120;
/// Connections at once in the parallel measurement.
const PARALLEL_CLIENTS: usize = 4;
/// Bytes per request when the whole heap is put and got (256 pages).
const BATCH_BYTES: usize = 1 << 20;
/// Most bytes of the Python process's pages used.
const MAX_HEAP_BYTES: usize = 128 << 20;
/// Raw TCP round trips measured right before each run of the memory node.
const ECHO_ROUND_TRIPS: usize = 500;
const MIB: f64 = 1048576.0;

/// What to measure.
pub struct Options {
    /// Runs per configuration (medians are reported).
    pub runs: usize,
    /// MiB put and got per run with 64 KiB runs (a quarter of it, at least
    /// 4 MiB, with 4 KiB runs: their requests take as long as larger ones).
    pub mib: usize,
    pub json: bool,
}

#[derive(Serialize)]
struct Latency {
    p50_us: f64,
    p99_us: f64,
}

impl Latency {
    fn of(samples_ns: &[f64]) -> Latency {
        Latency { p50_us: percentile(samples_ns, 50.0) / 1e3, p99_us: percentile(samples_ns, 99.0) / 1e3 }
    }
}

/// One run size with one compression: medians of the runs.
#[derive(Serialize)]
struct Row {
    compression: Compression,
    run_bytes: usize,
    bytes_per_run: usize,
    put_mib_s: f64,
    get_mib_s: f64,
    /// Medians over the runs of each run's percentiles.
    put_latency: Latency,
    get_latency: Latency,
    /// The raw TCP round trip of a run's bytes, measured right before each
    /// run over the same path (medians over the runs of each run's percentiles).
    tcp_round_trip: Latency,
    /// The run's bytes over one raw round trip at its median.
    tcp_round_trip_mib_s: f64,
    put_mib_s_samples: Vec<f64>,
    get_mib_s_samples: Vec<f64>,
}

/// The Python pages stored with one compression.
#[derive(Serialize)]
struct Ratio {
    compression: Compression,
    raw_bytes: u64,
    stored_bytes: u64,
    ratio: f64,
    /// One core, in this process: compress and decompress every page.
    codec_compress_mib_s: f64,
    codec_decompress_mib_s: f64,
    /// The whole heap in 1 MiB requests, one outstanding (medians of the runs).
    batch_put_mib_s: f64,
    batch_get_mib_s: f64,
    batch_put_mib_s_samples: Vec<f64>,
    batch_get_mib_s_samples: Vec<f64>,
}

#[derive(Serialize)]
struct Baselines {
    raw_tcp_mib_s: f64,
    raw_tcp_mib_s_samples: Vec<f64>,
    /// Per run size: memcpy of the same bytes in chunks of that size.
    per_run_size: Vec<RunBaseline>,
    /// One core making the page digests every put and get checks (XXH3-128).
    digest_mib_s: f64,
}

#[derive(Serialize)]
struct RunBaseline {
    run_bytes: usize,
    memcpy_mib_s: f64,
}

#[derive(Serialize)]
struct Report {
    runs: usize,
    python_pid_pages: u64,
    python_heap_bytes: u64,
    baselines: Baselines,
    rows: Vec<Row>,
    ratios: Vec<Ratio>,
    parallel: Vec<Parallel>,
}

/// 64 KiB runs from [`PARALLEL_CLIENTS`] connections at once, each putting
/// then getting its own share (medians of the runs' aggregate MiB/s).
#[derive(Serialize)]
struct Parallel {
    compression: Compression,
    clients: usize,
    bytes_per_client: usize,
    put_mib_s: f64,
    get_mib_s: f64,
    put_mib_s_samples: Vec<f64>,
    get_mib_s_samples: Vec<f64>,
}

impl Parallel {
    fn of(compression: Compression, volume: usize, samples: &[(f64, f64)]) -> Parallel {
        let put: Vec<f64> = samples.iter().map(|s| s.0).collect();
        let get: Vec<f64> = samples.iter().map(|s| s.1).collect();
        Parallel {
            compression,
            clients: PARALLEL_CLIENTS,
            bytes_per_client: volume / PARALLEL_CLIENTS,
            put_mib_s: median(&put),
            get_mib_s: median(&get),
            put_mib_s_samples: put,
            get_mib_s_samples: get,
        }
    }
}

/// `runs` times: [`PARALLEL_CLIENTS`] connections, started together, each
/// puts its share of `volume` in 64 KiB runs and then gets it back (checked),
/// with a barrier between the phases; aggregate put and get MiB/s, the
/// phases timed from the barrier to the last client done.
fn parallel_runs(addr: &str, key: &ClusterKey, heap: &[u8], volume: usize, runs: usize) -> anyhow::Result<Vec<(f64, f64)>> {
    use std::sync::Barrier;
    let size = 64 << 10;
    let share = (volume / PARALLEL_CLIENTS / size).max(1) * size;
    let payload = Arc::new(cycled(heap, share));
    let mut clients = (0..PARALLEL_CLIENTS)
        .map(|_| MemnodeClient::connect(addr, key, Protection::Encrypted, std::time::Duration::from_secs(10)))
        .collect::<Result<Vec<_>, _>>()?;
    let mut out = Vec::new();
    for run in 0..runs {
        let barrier = Arc::new(Barrier::new(PARALLEL_CLIENTS + 1));
        let workers: Vec<_> = clients
            .drain(..)
            .enumerate()
            .map(|(i, mut c)| {
                let (barrier, payload) = (barrier.clone(), payload.clone());
                std::thread::spawn(move || -> anyhow::Result<MemnodeClient> {
                    let instance = format!("parallel-{run}-{i}");
                    let base = 0x5555_0000_0000u64;
                    // Every barrier is passed whatever happened, so that a failed
                    // client ends the run with its error instead of stalling it.
                    let mut got = vec![1u8; payload.len()];
                    barrier.wait();
                    let put = payload
                        .chunks_exact(size)
                        .enumerate()
                        .try_for_each(|(k, chunk)| c.put(&instance, &[(base + (k * size) as u64, chunk)]).map(|_| ()));
                    barrier.wait();
                    barrier.wait();
                    let get = put.and_then(|()| {
                        got.chunks_exact_mut(size)
                            .enumerate()
                            .try_for_each(|(k, chunk)| c.get(&instance, &[(base + (k * size) as u64, size as u64)], chunk))
                    });
                    barrier.wait();
                    get?;
                    ensure!(got[..] == payload[..], "pages got back differ from those put ({instance})");
                    c.drop_instance(&instance)?;
                    Ok(c)
                })
            })
            .collect();
        barrier.wait();
        let t0 = Instant::now();
        barrier.wait();
        let put_s = t0.elapsed().as_secs_f64();
        barrier.wait();
        let t0 = Instant::now();
        barrier.wait();
        let get_s = t0.elapsed().as_secs_f64();
        for w in workers {
            clients.push(w.join().map_err(|_| anyhow::anyhow!("a client thread panicked"))??);
        }
        let mib = (share * PARALLEL_CLIENTS) as f64 / MIB;
        out.push((mib / put_s, mib / get_s));
    }
    Ok(out)
}

fn progress(msg: &str) {
    eprintln!("bench memnode: {msg}");
}

pub fn run(bin: &Path, opts: &Options) -> anyhow::Result<()> {
    ensure_root("mitosis bench memnode")?;
    let runs = opts.runs.max(1);
    progress("reading a live Python process's heap");
    let heap = Arc::new(python_heap_pages()?);
    let heap_pages = (heap.len() / PAGE) as u64;
    ensure!(heap_pages >= 256, "the Python process had only {heap_pages} present anonymous pages");
    let dir = TestDir::new("bench-memnode");
    let hosts = TwoHosts::new().context("creating the two hosts")?;
    let key_text = random_key()?;
    let key_path = write_key(&dir, "cluster.key", &key_text);
    let key = ClusterKey::from_file_contents(key_text.as_bytes()).map_err(anyhow::Error::msg)?;

    progress("raw TCP baseline");
    let tcp = crate::micro::raw_tcp(bin, &hosts, runs)?;
    let tcp_mib: Vec<f64> = tcp.mib_per_s_samples();
    let mut per_run_size = Vec::new();
    for &size in &RUN_SIZES {
        let volume = volume_for(size, opts.mib);
        let memcpy = median(&(0..runs).map(|_| memcpy_mib_s(&heap, size, volume)).collect::<Vec<_>>());
        per_run_size.push(RunBaseline { run_bytes: size, memcpy_mib_s: memcpy });
    }
    let digest_mib_s = median(&(0..runs).map(|_| digest_mib_s(&heap)).collect::<Vec<_>>());
    let mut echo_port = ECHO_PORT;

    let mut rows = Vec::new();
    let mut ratios = Vec::new();
    let mut parallel = Vec::new();
    for compression in COMPRESSIONS {
        let name = compression.name();
        let node = Memnode::start(bin, &hosts.a, &dir, &format!("memnode-{name}"), &key_path, &["--capacity", "8G", "--compress", name])?;
        let addr = node.addr();
        progress(&format!("{name}: compression ratio on {:.1} MiB of Python heap", heap.len() as f64 / MIB));
        let heap_runs = {
            let (heap, key, addr) = (heap.clone(), key.clone(), addr.clone());
            hosts.b.run_inside(move || store_heap(&addr, &key, &heap, runs))??
        };
        let (raw_bytes, stored_bytes) = (heap_runs.raw_bytes, heap_runs.stored_bytes);
        let (codec_compress_mib_s, codec_decompress_mib_s) = codec_speed(compression, &heap)?;
        ratios.push(Ratio {
            compression,
            raw_bytes,
            stored_bytes,
            ratio: raw_bytes as f64 / stored_bytes.max(1) as f64,
            codec_compress_mib_s,
            codec_decompress_mib_s,
            batch_put_mib_s: median(&heap_runs.put_mib_s),
            batch_get_mib_s: median(&heap_runs.get_mib_s),
            batch_put_mib_s_samples: heap_runs.put_mib_s,
            batch_get_mib_s_samples: heap_runs.get_mib_s,
        });
        for &size in &RUN_SIZES {
            let volume = volume_for(size, opts.mib);
            progress(&format!("{name}: {} KiB runs, {} MiB per run, {runs} runs", size >> 10, volume >> 20));
            // A port per row: the previous row's server may still be closing.
            let _echo = start_echo(bin, &hosts.a, echo_port, size, runs)?;
            let echo_addr = format!("{}:{echo_port}", hosts.a.ip);
            echo_port += 1;
            let (heap, key, addr, echo_addr) = (heap.clone(), key.clone(), addr.clone(), echo_addr.clone());
            let samples = hosts.b.run_inside(move || -> anyhow::Result<Vec<Sample>> {
                let mut client = MemnodeClient::connect(&addr, &key, Protection::Encrypted, std::time::Duration::from_secs(10))?;
                let payload = cycled(&heap, volume);
                (0..runs)
                    .map(|r| {
                        let rtt_ns = echo_round_trips(&echo_addr, size, ECHO_ROUND_TRIPS)?;
                        Ok(Sample { rtt_ns, ..one_run(&mut client, &payload, size, r)? })
                    })
                    .collect()
            })??;
            rows.push(Row::of(compression, size, volume, &samples));
        }
        progress(&format!("{name}: 64 KiB runs from {PARALLEL_CLIENTS} connections at once, {runs} runs"));
        let (heap, key, addr2) = (heap.clone(), key.clone(), addr.clone());
        let volume = volume_for(64 << 10, opts.mib);
        let samples = hosts.b.run_inside(move || parallel_runs(&addr2, &key, &heap, volume, runs))??;
        parallel.push(Parallel::of(compression, volume, &samples));
        ensure!(node.log().lines().all(|l| !l.contains("panicked")), "the memory node panicked:\n{}", node.log());
    }
    let report = Report {
        runs,
        python_pid_pages: heap_pages,
        python_heap_bytes: heap.len() as u64,
        baselines: Baselines { raw_tcp_mib_s: median(&tcp_mib), raw_tcp_mib_s_samples: tcp_mib, per_run_size, digest_mib_s },
        rows,
        ratios,
        parallel,
    };
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    Ok(())
}


/// Bytes put and got per run with runs of `size`.
fn volume_for(size: usize, mib: usize) -> usize {
    let mib = mib.max(4);
    if size < (64 << 10) {
        (mib / 4).max(4) << 20
    } else {
        mib << 20
    }
}

/// `heap` repeated to `len` bytes.
fn cycled(heap: &[u8], len: usize) -> Vec<u8> {
    heap.iter().copied().cycle().take(len).collect()
}

struct Sample {
    put_mib_s: f64,
    get_mib_s: f64,
    put_ns: Vec<f64>,
    get_ns: Vec<f64>,
    rtt_ns: Vec<f64>,
}

impl Row {
    fn of(compression: Compression, size: usize, volume: usize, samples: &[Sample]) -> Row {
        let put: Vec<f64> = samples.iter().map(|s| s.put_mib_s).collect();
        let get: Vec<f64> = samples.iter().map(|s| s.get_mib_s).collect();
        let lat = |f: &dyn Fn(&Sample) -> &Vec<f64>| {
            let per_run: Vec<Latency> = samples.iter().map(|s| Latency::of(f(s))).collect();
            Latency {
                p50_us: median(&per_run.iter().map(|l| l.p50_us).collect::<Vec<_>>()),
                p99_us: median(&per_run.iter().map(|l| l.p99_us).collect::<Vec<_>>()),
            }
        };
        let tcp_round_trip = lat(&|s| &s.rtt_ns);
        let tcp_round_trip_mib_s = size as f64 / MIB / (tcp_round_trip.p50_us / 1e6).max(f64::MIN_POSITIVE);
        Row {
            tcp_round_trip,
            tcp_round_trip_mib_s,
            compression,
            run_bytes: size,
            bytes_per_run: volume,
            put_mib_s: median(&put),
            get_mib_s: median(&get),
            put_latency: lat(&|s| &s.put_ns),
            get_latency: lat(&|s| &s.get_ns),
            put_mib_s_samples: put,
            get_mib_s_samples: get,
        }
    }
}

/// Puts `payload` in runs of `size`, one request each, gets it back the
/// same way, checks every byte and drops the instance.
fn one_run(client: &mut MemnodeClient, payload: &[u8], size: usize, run: usize) -> anyhow::Result<Sample> {
    let instance = format!("bench-{size}-{run}");
    let base = 0x5555_0000_0000u64;
    let n = payload.len() / size;
    let mut put_ns = Vec::with_capacity(n);
    let t0 = Instant::now();
    for (i, chunk) in payload.chunks_exact(size).enumerate() {
        let t = Instant::now();
        client.put(&instance, &[(base + (i * size) as u64, chunk)])?;
        put_ns.push(t.elapsed().as_nanos() as f64);
    }
    let put_s = t0.elapsed().as_secs_f64();
    // Touched before, as the memcpy baseline's destination.
    let mut got = vec![1u8; payload.len()];
    let mut get_ns = Vec::with_capacity(n);
    let t0 = Instant::now();
    for (i, chunk) in got.chunks_exact_mut(size).enumerate() {
        let t = Instant::now();
        client.get(&instance, &[(base + (i * size) as u64, size as u64)], chunk)?;
        get_ns.push(t.elapsed().as_nanos() as f64);
    }
    let get_s = t0.elapsed().as_secs_f64();
    ensure!(got == payload, "pages got back differ from those put ({instance})");
    let (pages, _) = client.drop_instance(&instance)?;
    ensure!(pages == (payload.len() / PAGE) as u64, "dropped {pages} pages of {}", payload.len() / PAGE);
    let mib = payload.len() as f64 / MIB;
    Ok(Sample { put_mib_s: mib / put_s, get_mib_s: mib / get_s, put_ns, get_ns, rtt_ns: Vec::new() })
}

/// Puts the heap's pages in 1 MiB requests (256 pages each), reads the
/// node's raw and stored bytes, gets every page back the same way and
/// compares, drops them; `runs` times. Returns the bytes of the first run
/// and the put and get MiB/s of every run.
fn store_heap(addr: &str, key: &ClusterKey, heap: &[u8], runs: usize) -> anyhow::Result<HeapRuns> {
    let mut client = MemnodeClient::connect(addr, key, Protection::Encrypted, std::time::Duration::from_secs(10))?;
    let step = BATCH_BYTES;
    let mib = heap.len() as f64 / MIB;
    let mut out = HeapRuns { raw_bytes: 0, stored_bytes: 0, put_mib_s: Vec::new(), get_mib_s: Vec::new() };
    let mut back = vec![1u8; heap.len()];
    for _ in 0..runs {
        let t0 = Instant::now();
        for (i, chunk) in heap.chunks(step).enumerate() {
            client.put("python-heap", &[((i * step) as u64, chunk)])?;
        }
        out.put_mib_s.push(mib / t0.elapsed().as_secs_f64());
        let stats = client.stats()?;
        if out.raw_bytes == 0 {
            (out.raw_bytes, out.stored_bytes) = (stats.raw_bytes, stats.stored_bytes);
        }
        let t0 = Instant::now();
        for (i, chunk) in back.chunks_mut(step).enumerate() {
            client.get("python-heap", &[((i * step) as u64, chunk.len() as u64)], chunk)?;
        }
        out.get_mib_s.push(mib / t0.elapsed().as_secs_f64());
        ensure!(back == heap, "the heap's pages came back different");
        client.drop_instance("python-heap")?;
    }
    Ok(out)
}

/// What [`store_heap`] measured.
struct HeapRuns {
    raw_bytes: u64,
    stored_bytes: u64,
    put_mib_s: Vec<f64>,
    get_mib_s: Vec<f64>,
}

/// One core compressing and decompressing every page of `heap` (MiB/s of pages).
fn codec_speed(compression: Compression, heap: &[u8]) -> anyhow::Result<(f64, f64)> {
    let t0 = Instant::now();
    let encoded = heap.chunks_exact(PAGE).map(|p| encode(compression, p)).collect::<Result<Vec<_>, _>>()?;
    let enc_s = t0.elapsed().as_secs_f64();
    let mut out = vec![0u8; PAGE];
    let t0 = Instant::now();
    for ((enc, bytes), page) in encoded.iter().zip(heap.chunks_exact(PAGE)) {
        decode(*enc, bytes, &mut out)?;
        ensure!(out == page, "a page did not decode to itself");
    }
    let dec_s = t0.elapsed().as_secs_f64();
    let mib = heap.len() as f64 / MIB;
    Ok((mib / enc_s, mib / dec_s))
}

/// One core making the digest of every page of `heap` (MiB/s).
fn digest_mib_s(heap: &[u8]) -> f64 {
    let t0 = Instant::now();
    for (i, page) in heap.chunks_exact(PAGE).enumerate() {
        std::hint::black_box(mitosis_proto::memnode::page_digest("bench", (i * PAGE) as u64, page));
    }
    heap.len() as f64 / MIB / t0.elapsed().as_secs_f64()
}

/// memcpy of `volume` bytes of `heap` in chunks of `size` (MiB/s).
pub(crate) fn memcpy_mib_s(heap: &[u8], size: usize, volume: usize) -> f64 {
    let src = cycled(heap, volume);
    // Touched before: a first touch of fresh memory (tens of µs a page on this
    // VM) is not what is measured.
    let mut dst = vec![1u8; volume];
    let t0 = Instant::now();
    for (d, s) in dst.chunks_exact_mut(size).zip(src.chunks_exact(size)) {
        d.copy_from_slice(std::hint::black_box(s));
    }
    std::hint::black_box(&dst);
    volume as f64 / MIB / t0.elapsed().as_secs_f64()
}

/// The raw TCP round-trip server for one row: the `tcp-echo` workload, a
/// process of its own in host `a` like the memory node, answering each
/// [`RTT_REQUEST`]-byte request with `size` bytes, for `connections`
/// connections (one per run); killed on drop if still running.
fn start_echo(bin: &Path, host: &Host, port: u16, size: usize, connections: usize) -> anyhow::Result<HostProcess> {
    let listen = format!("{}:{port}", host.ip);
    let (size, connections) = (size.to_string(), connections.to_string());
    let mut echo = HostProcess::spawn(host_command(host, bin).args([
        "workload",
        "tcp-echo",
        "--listen",
        &listen,
        "--reply",
        &size,
        "--connections",
        &connections,
    ]))?;
    let line = echo.chan.recv(std::time::Duration::from_secs(10)).context("starting the raw TCP round-trip server")?;
    ensure!(line == "listening", "the raw TCP round-trip server said {line:?}");
    Ok(echo)
}

/// `count` round trips of an [`RTT_REQUEST`]-byte request answered with
/// `size` bytes (ns each), on a connection of its own.
fn echo_round_trips(addr: &str, size: usize, count: usize) -> anyhow::Result<Vec<f64>> {
    let mut conn = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    conn.set_nodelay(true)?;
    let mut buf = vec![0u8; size];
    let mut out = Vec::with_capacity(count);
    for _ in 0..count + count / 10 {
        let t = Instant::now();
        conn.write_all(&[7u8; RTT_REQUEST])?;
        conn.read_exact(&mut buf)?;
        out.push(t.elapsed().as_nanos() as f64);
    }
    // The first tenth warms up.
    Ok(out.split_off(count / 10))
}

/// 32 random bytes, hex: a fresh cluster key.
fn random_key() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes)).context("reading /dev/urandom")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The Python program whose heap is measured: records like a function's
/// (dicts of ints, strings, floats, lists), some JSON text of them.
const PYTHON_HEAP: &str = r#"
import json, random, sys
random.seed(7)
records = [{"id": i, "user": "user%06d" % i, "email": "u%d@example.com" % i,
            "score": random.random(), "tags": ["t%d" % (i % 13), "x%d" % (i % 7)],
            "active": i % 3 == 0} for i in range(150000)]
text = json.dumps(records[:30000])
index = {r["user"]: r for r in records}
sys.stdout.write("ready\n"); sys.stdout.flush()
sys.stdin.read()
"#;

/// The present pages of the private anonymous writable mappings of a live
/// Python process running [`PYTHON_HEAP`], back to back (at most
/// [`MAX_HEAP_BYTES`]).
fn python_heap_pages() -> anyhow::Result<Vec<u8>> {
    let python = mitosis_testkit::real_python().context("no python3 on PATH: the compression ratio needs a live Python process")?;
    let mut cmd = Command::new(&python);
    cmd.args(["-S", "-c", PYTHON_HEAP]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit());
    let mut guard = ProcessGuard::spawn(&mut cmd).context("starting python")?;
    let pid = guard.pid();
    let mut line = [0u8; 6];
    guard.child_mut().stdout.as_mut().context("python's stdout")?.read_exact(&mut line).context("waiting for python")?;
    ensure!(&line == b"ready\n", "python said {:?}", String::from_utf8_lossy(&line));
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))?;
    let maps = mitosis_sys::procfs::parse_maps(&maps).map_err(anyhow::Error::msg)?;
    let pagemap = std::fs::File::open(format!("/proc/{pid}/pagemap")).context("opening python's pagemap")?;
    let mem = mitosis_sys::mem::ProcMem::open(pid, false).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut pages = Vec::new();
    let mut page = vec![0u8; PAGE];
    for m in maps.iter().filter(|m| m.write && !m.shared && (m.name.is_empty() || m.name == "[heap]")) {
        let n = ((m.end - m.start) / PAGE as u64) as usize;
        let mut entries = vec![0u8; n * 8];
        pagemap.read_exact_at(&mut entries, m.start / PAGE as u64 * 8).context("reading python's pagemap")?;
        for (i, e) in entries.chunks_exact(8).enumerate() {
            let entry = u64::from_le_bytes(e.try_into().expect("8 bytes"));
            if entry & mitosis_sys::procfs::pagemap::PRESENT == 0 {
                continue;
            }
            mem.read_exact_at(&mut page, m.start + (i * PAGE) as u64).map_err(|e| anyhow::anyhow!("{e}"))?;
            pages.extend_from_slice(&page);
            if pages.len() >= MAX_HEAP_BYTES {
                return Ok(pages);
            }
        }
    }
    if pages.is_empty() {
        bail!("python {pid} had no present anonymous pages");
    }
    Ok(pages)
}

fn print_report(r: &Report) {
    let b = &r.baselines;
    println!(
        "Memory node, client on host b, node on host a (veth), one request outstanding; medians of {} runs.",
        r.runs
    );
    println!(
        "Pages: the present anonymous pages of a live Python process's heap ({:.1} MiB, {} pages), repeated.",
        r.python_heap_bytes as f64 / MIB,
        r.python_pid_pages
    );
    println!("Raw TCP bulk a -> b (same veth, same run): {:.0} MiB/s", b.raw_tcp_mib_s);
    println!();
    let memcpy: Vec<String> = b.per_run_size.iter().map(|m| format!("{} KiB chunks {:.0} MiB/s", m.run_bytes >> 10, m.memcpy_mib_s)).collect();
    println!("memcpy of the same bytes: {}; page digests (XXH3-128), one core: {:.0} MiB/s", memcpy.join(", "), b.digest_mib_s);
    println!();
    println!("| run | stored | put MiB/s | get MiB/s | put p50 / p99 | get p50 / p99 | raw TCP round trip p50 / p99 (same run) | get / raw TCP bulk |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    for row in &r.rows {
        println!(
            "| {} KiB | {} | {:.0} | {:.0} | {:.1} / {:.1} µs | {:.1} / {:.1} µs | {:.1} / {:.1} µs | {:.2} |",
            row.run_bytes >> 10,
            row.compression,
            row.put_mib_s,
            row.get_mib_s,
            row.put_latency.p50_us,
            row.put_latency.p99_us,
            row.get_latency.p50_us,
            row.get_latency.p99_us,
            row.tcp_round_trip.p50_us,
            row.tcp_round_trip.p99_us,
            row.get_mib_s / b.raw_tcp_mib_s.max(f64::MIN_POSITIVE)
        );
    }
    println!();
    println!("| 64 KiB runs | connections at once | put MiB/s | get MiB/s | get / raw TCP bulk |");
    println!("|---|---:|---:|---:|---:|");
    for p in &r.parallel {
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.2} |",
            p.compression,
            p.clients,
            p.put_mib_s,
            p.get_mib_s,
            p.get_mib_s / b.raw_tcp_mib_s.max(f64::MIN_POSITIVE)
        );
    }
    println!();
    println!("| stored | Python heap as put | stored | ratio | codec alone, one core: compress / decompress | heap in 1 MiB requests: put / get |");
    println!("|---|---:|---:|---:|---:|---:|");
    for q in &r.ratios {
        println!(
            "| {} | {:.1} MiB | {:.1} MiB | {:.2} | {:.0} / {:.0} MiB/s | {:.0} / {:.0} MiB/s |",
            q.compression,
            q.raw_bytes as f64 / MIB,
            q.stored_bytes as f64 / MIB,
            q.ratio,
            q.codec_compress_mib_s,
            q.codec_decompress_mib_s,
            q.batch_put_mib_s,
            q.batch_get_mib_s
        );
    }
}
