//! The paging-modes part of `mitosis bench micro`: every way a child's memory
//! can come in, side by side on the same seed, each beside a baseline
//! measured in the same run.
//!
//! Per working-set size and round, after the lazy first child (default
//! paging, the `1st seq` of the main table, which records the seed's working
//! set and fills host `b`'s page cache), on the same seed:
//!
//! - **second child** (default paging: page cache of host `b` and the
//!   recorded working set pushed): first sequential touch, timed inside the
//!   child, queued on its stdin with its first command so that it starts as
//!   soon as the child runs (the push gets no head start); speedup = first
//!   child's touch time / this one's. It waits until
//!   daemon `a` reports the working set recorded (the first child reports it
//!   when it exits, in the background).
//! - **eager** (`--eager --no-cache --no-working-set`): the child is resumed
//!   with `resident` queued on its stdin and polls `mincore` (which never
//!   faults, so it does not disturb the stream) every 0.5 ms until every page
//!   of its working set and heap vector is resident. Stream rate = those
//!   bytes / (time the child saw them all - time just before the resume
//!   request), both CLOCK_MONOTONIC; compared with the raw TCP bulk rate a ->
//!   b of the same run. (Pages outside those spans, a few hundred KiB of
//!   libraries' data and stack, are streamed too and counted in
//!   `pages_pushed`, not in the rate.) It then touches everything once, which
//!   must cost no remote fault.
//! - **resident memory**: while the second child (all touched) is still
//!   alive, the eager child has all pages too; the two children's RssAnon
//!   (the seed's pages they hold) together / the larger one's, and the same
//!   with VmRSS (which also counts the binary's shared file pages in each).
//!   Children get private copies of every page (no sharing), so the anon
//!   ratio is about 2 (it cannot exceed 2).
//! - **no-prefetch** (`--no-prefetch --no-cache`, sizes up to
//!   [`NO_PREFETCH_MAX_MB`]): first sequential touch, one page per fault.
//! - **fault latency** (`--no-prefetch --no-cache`): `latency N` touches N
//!   distinct random pages one at a time, each timed inside the child, then
//!   `local-latency N` does the same on a fresh anonymous mapping of the
//!   child (a local zero-fill fault, no pager): the local floor. Beside them,
//!   the TCP round trip b -> a (16-byte request, 4 KiB answer, like a
//!   one-page fetch) measured once per bench run ([`rtt`]).
//!
//! And once per bench run, the Python working-set line ([`python_working_set`]).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use mitosis::{ChildEnd, Client, ContainerSpec, PagerStats, Paging, ResumeOptions, Resumed};
use mitosis_testkit::TwoHosts;
use serde::Serialize;

use crate::hosts::{host_command, Channel, Cluster, HostProcess, Seed};
use crate::{median, now_ns, percentile};

/// Sizes up to this (MiB) also get a no-prefetch child (one fault per page).
pub const NO_PREFETCH_MAX_MB: usize = 64;
/// Pages touched one at a time by a fault-latency child (fewer when the
/// working set is smaller).
pub const LATENCY_PAGES: usize = 2000;
/// Round trips per TCP RTT baseline run.
const RTT_COUNT: usize = 5000;
/// Request and answer sizes of the RTT baseline (a one-page fetch).
pub const RTT_REQUEST: usize = 16;
const RTT_REPLY: usize = 4096;
/// Port of the RTT baseline's echo server, on host `a`.
const RTT_PORT: u16 = 7101;
/// How long quick answers may take.
const QUICK: Duration = Duration::from_secs(30);
/// How long to wait for the first child's working set to be recorded.
const WORKING_SET_WAIT: Duration = Duration::from_secs(10);

fn progress(msg: &str) {
    eprintln!("bench micro: {msg}");
}

// ------------------------------------------------------------ TCP RTT --

/// The `tcp-echo` workload: accepts `connections` connections on `listen`
/// (a thread each); for each [`RTT_REQUEST`]-byte request answers `reply`
/// bytes, until every connection has reached end of file.
pub fn tcp_echo(listen: SocketAddr, reply: usize, connections: usize) -> anyhow::Result<i32> {
    let listener = TcpListener::bind(listen).with_context(|| format!("listening on {listen}"))?;
    println!("listening");
    std::io::stdout().flush()?;
    let mut served = Vec::new();
    for _ in 0..connections.max(1) {
        let (conn, _) = listener.accept().context("accepting a pinger")?;
        served.push(std::thread::spawn(move || echo(conn, reply)));
    }
    for s in served {
        s.join().map_err(|_| anyhow::anyhow!("an echo thread panicked"))??;
    }
    Ok(0)
}

/// Answers `conn`'s requests until end of file. Answers to requests that
/// came together go out together (flushed when no further request is
/// buffered), as the daemon does for pipelined peer requests.
fn echo(conn: std::net::TcpStream, reply: usize) -> anyhow::Result<()> {
    conn.set_nodelay(true)?;
    let mut reader = std::io::BufReader::with_capacity(64 << 10, conn.try_clone()?);
    let mut writer = std::io::BufWriter::with_capacity(64 << 10, conn);
    let answer = vec![0x5au8; reply];
    let mut req = [0u8; RTT_REQUEST];
    loop {
        match reader.read_exact(&mut req) {
            Ok(()) => writer.write_all(&answer).context("answering")?,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e).context("reading a request"),
        }
        if reader.buffer().is_empty() {
            writer.flush().context("answering")?;
        }
    }
}

/// The `tcp-ping` workload: connects to `to`, makes `count` round trips
/// (a [`RTT_REQUEST`]-byte request, a `reply`-byte answer) and prints
/// `rtt <count> <p50> <p90> <p99> <max>` in ns (the first 10% are warm-up and
/// not counted).
pub fn tcp_ping(to: SocketAddr, count: usize, reply: usize) -> anyhow::Result<i32> {
    let mut conn = std::net::TcpStream::connect(to).with_context(|| format!("connecting to {to}"))?;
    conn.set_nodelay(true)?;
    let req = [7u8; RTT_REQUEST];
    let mut answer = vec![0u8; reply];
    let warmup = count / 10;
    let mut samples = Vec::with_capacity(count);
    for i in 0..count + warmup {
        let t = now_ns();
        conn.write_all(&req).context("sending a request")?;
        conn.read_exact(&mut answer).context("reading an answer")?;
        if i >= warmup {
            samples.push((now_ns() - t) as f64);
        }
    }
    let p = |q: f64| percentile(&samples, q) as u64;
    println!("rtt {} {} {} {} {}", samples.len(), p(50.0), p(90.0), p(99.0), p(100.0));
    Ok(0)
}

/// Percentiles of a latency distribution, in microseconds.
#[derive(Serialize, Clone, Copy, Default)]
pub struct Latency {
    pub n: u64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
}

impl Latency {
    /// Parses `<word> <n> <p50> <p90> <p99> <max>` (ns).
    fn parse(line: &str, word: &str) -> anyhow::Result<Latency> {
        let f: Vec<&str> = line.split_whitespace().collect();
        ensure!(f.len() == 6 && f[0] == word, "expected `{word} <n> <p50> <p90> <p99> <max>`, got {line:?}");
        let n = |i: usize| -> anyhow::Result<f64> { f[i].parse::<f64>().with_context(|| format!("bad number in {line:?}")) };
        Ok(Latency { n: n(1)? as u64, p50_us: n(2)? / 1e3, p90_us: n(3)? / 1e3, p99_us: n(4)? / 1e3, max_us: n(5)? / 1e3 })
    }

    /// Medians over runs, per percentile.
    pub fn median_of(v: &[Latency]) -> Latency {
        let m = |f: fn(&Latency) -> f64| median(&v.iter().map(f).collect::<Vec<_>>());
        Latency {
            n: v.iter().map(|l| l.n).sum(),
            p50_us: m(|l| l.p50_us),
            p90_us: m(|l| l.p90_us),
            p99_us: m(|l| l.p99_us),
            max_us: m(|l| l.max_us),
        }
    }
}

/// The TCP round trip b -> a, per run and the medians of its percentiles.
#[derive(Serialize)]
pub struct RttReport {
    pub request_bytes: usize,
    pub reply_bytes: usize,
    pub runs: Vec<Latency>,
    pub median: Latency,
}

/// TCP round trips from host `b` to host `a` (the direction of a page
/// fetch), `runs` times [`RTT_COUNT`].
pub fn rtt(bin: &Path, hosts: &TwoHosts, runs: usize) -> anyhow::Result<RttReport> {
    let addr = format!("{}:{RTT_PORT}", hosts.a.ip);
    let mut all = Vec::new();
    for run in 1..=runs {
        progress(&format!("TCP round-trip baseline b -> a ({RTT_REQUEST} B request, {RTT_REPLY} B answer), run {run}/{runs}"));
        let reply = RTT_REPLY.to_string();
        let mut echo = HostProcess::spawn(host_command(&hosts.a, bin).args(["workload", "tcp-echo", "--listen", &addr, "--reply", &reply]))?;
        let said = echo.chan.recv(QUICK).context("tcp-echo")?;
        ensure!(said == "listening", "tcp-echo said {said:?}");
        let count = RTT_COUNT.to_string();
        let mut ping = HostProcess::spawn(
            host_command(&hosts.b, bin).args(["workload", "tcp-ping", "--to", &addr, "--count", &count, "--reply", &reply]),
        )?;
        all.push(Latency::parse(&ping.chan.recv(QUICK).context("tcp-ping")?, "rtt")?);
    }
    Ok(RttReport { request_bytes: RTT_REQUEST, reply_bytes: RTT_REPLY, median: Latency::median_of(&all), runs: all })
}

// ------------------------------------------------------------ children --

/// A running child of a seed on host `b`, and the conversation with it.
pub struct Kid {
    pub chan: Channel,
    resumed: Resumed,
    /// Just before the resume request (CLOCK_MONOTONIC ns).
    pub t0: u64,
}

/// The container every bench child runs in (the default one, as `mitosis resume`).
fn options(paging: Paging) -> ResumeOptions {
    ResumeOptions { container: Some(ContainerSpec::default()), detach: false, paging }
}

impl Kid {
    /// Resumes a child of seed `id` on host `b` with `paging`; `queued` lines
    /// are on its stdin before it runs.
    pub fn start(cluster: &Cluster, id: &str, paging: Paging, queued: &[&str]) -> anyhow::Result<Kid> {
        let (child_in, mut to_child) = std::io::pipe()?;
        let (from_child, child_out) = std::io::pipe()?;
        for line in queued {
            writeln!(to_child, "{line}")?;
        }
        let t0 = now_ns();
        let resumed = Client::connect(cluster.b.socket())?
            .resume_with(&cluster.a.addr(), id, [child_in.as_raw_fd(), child_out.as_raw_fd(), 2], &options(paging))
            .with_context(|| format!("resuming {id} on host b"))?;
        drop((child_in, child_out));
        Ok(Kid { chan: Channel::new(to_child, from_child), resumed, t0 })
    }

    pub fn pid(&self) -> i32 {
        self.resumed.pid
    }

    /// Tells the child to exit; returns its pager counters. A child that
    /// mitosis kills on its way out (all its figures are taken by then) is
    /// noted (see [`killed_at_exit`]), not an error.
    pub fn finish(self, what: &str) -> anyhow::Result<PagerStats> {
        let (end, stats) = self.end()?;
        tolerate_kill_at_exit(what, &end)?;
        Ok(stats)
    }

    /// Tells the child to exit; returns how it ended and its pager counters.
    pub fn end(mut self) -> anyhow::Result<(ChildEnd, PagerStats)> {
        let _ = self.chan.send("exit 0");
        self.resumed.wait().context("waiting for the child's end")
    }
}

/// Children that mitosis killed after they had answered everything (when
/// told to exit), with why: pager bugs the bench reports instead of stopping.
static KILLED_AT_EXIT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// What [`KILLED_AT_EXIT`] holds.
pub fn killed_at_exit() -> Vec<String> {
    KILLED_AT_EXIT.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Accepts a normal exit, notes a kill by mitosis (the child had given all
/// its figures), fails on anything else.
pub fn tolerate_kill_at_exit(what: &str, end: &ChildEnd) -> anyhow::Result<()> {
    match end {
        ChildEnd::Exited(0) => Ok(()),
        ChildEnd::KilledByMitosis { reason } => {
            progress(&format!("{what}: killed by mitosis when told to exit (after its figures): {reason}"));
            KILLED_AT_EXIT.lock().unwrap_or_else(|e| e.into_inner()).push(format!("{what}: {reason}"));
            Ok(())
        }
        other => bail!("{what} ended with {other:?}"),
    }
}

/// VmRSS and RssAnon of process `pid`, in bytes.
/// VmRSS, RssAnon and RssShmem of `pid`, in bytes.
fn rss(pid: i32) -> anyhow::Result<(u64, u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).with_context(|| format!("reading /proc/{pid}/status"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        let line = status.lines().find(|l| l.starts_with(name)).with_context(|| format!("no {name} in /proc/{pid}/status"))?;
        let kb: u64 = line[name.len()..].trim().trim_end_matches("kB").trim().parse().with_context(|| format!("bad {line:?}"))?;
        Ok(kb * 1024)
    };
    Ok((field("VmRSS:")?, field("RssAnon:")?, field("RssShmem:")?))
}

/// Waits until daemon `a` has a recorded working set for seed `id`; returns its pages (0: none came in time).
fn wait_working_set(cluster: &Cluster, id: &str) -> anyhow::Result<u64> {
    let deadline = Instant::now() + WORKING_SET_WAIT;
    loop {
        let stats = Client::connect(cluster.a.socket())?.stats().context("stats of daemon a")?;
        let pages = stats.seeds.iter().find(|s| s.id == id).map_or(0, |s| s.working_set_pages);
        if pages > 0 || Instant::now() > deadline {
            return Ok(pages);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn touch_timeout(mb: usize) -> Duration {
    QUICK + Duration::from_millis(100 * mb as u64)
}

/// Paging of the children that must not get help from the cache or the working set.
fn isolated(eager: bool, no_prefetch: bool) -> Paging {
    Paging { eager, no_prefetch, no_working_set: true, no_cache: true, ..Paging::default() }
}

// ------------------------------------------------------------ one round --

/// A child's first touch and its counters.
#[derive(Serialize, Clone)]
pub struct TouchSample {
    pub first_touch_ns: u64,
    pub stats: PagerStats,
}

/// The eager child.
#[derive(Serialize, Clone)]
pub struct EagerSample {
    /// Bytes of its working set and heap vector (what `resident` waits for).
    pub bytes: u64,
    /// From just before the resume request until it saw them all resident.
    pub request_to_resident_ns: u64,
    /// From its first answer (`now`, the child running) until then.
    pub running_to_resident_ns: u64,
    /// The stream stopped (no page for 5 s): pages resident and waited for.
    /// The times are then 0 and the round has no eager rate.
    pub stalled: Option<(u64, u64)>,
    /// `mincore` polls it made.
    pub polls: u64,
    /// A full touch after everything came in (no remote fault expected;
    /// none after a stall).
    pub touch_after_ns: Option<u64>,
    pub stats: PagerStats,
    /// How the child ended when its stream had stalled (told to exit).
    pub end_after_stall: Option<String>,
}

/// Resident memory of two children that both wrote to every page, both
/// alive: the second child and the eager one. (VmRSS counts shared file
/// pages, the binary's, in each; RssAnon is the seed's pages the child
/// holds as its own: every page it wrote.)
#[derive(Serialize, Clone)]
pub struct RssSample {
    /// VmRSS of the second child alone (before the eager child started).
    pub second_alone_vm_rss: u64,
    pub second_vm_rss: u64,
    pub eager_vm_rss: u64,
    pub second_rss_anon: u64,
    pub eager_rss_anon: u64,
    /// Host `b`'s page cache (one more copy of the seed's pages), bytes.
    pub page_cache_bytes: u64,
}

/// Two children of default paging that read every page (writing none),
/// both alive: their own memory (RssAnon), what each maps from this host's
/// shared copy of the seed (RssShmem), and the bytes of this seed's pages
/// in the page cache (the copy; other seeds' pages there are left out).
#[derive(Serialize, Clone)]
pub struct SharingSample {
    pub rss_anon: [u64; 2],
    pub rss_shmem: [u64; 2],
    pub page_cache_bytes: u64,
}

impl SharingSample {
    /// What the two cost this host (their own pages and the one shared
    /// copy) over what one of them maps (its own and shared pages): 1.0 is
    /// perfect sharing, 3.0 private copies beside the cache's.
    pub fn host_ratio(&self) -> f64 {
        let one = self.rss_anon[0] + self.rss_shmem[0];
        (self.rss_anon[0] + self.rss_anon[1] + self.page_cache_bytes) as f64 / one.max(1) as f64
    }
}

/// Starts two readers of seed `id` one after the other, each reading all of
/// its memory, and measures them while both live. They take no working set:
/// this seed's was recorded by a child that wrote every page, and written
/// ranges are pushed as private copies (a writer would copy them anyway).
fn readers(cluster: &Cluster, id: &str, mb: usize) -> anyhow::Result<SharingSample> {
    let mut kids = Vec::new();
    for n in 0..2 {
        let mut kid = Kid::start(cluster, id, Paging { no_working_set: true, ..Paging::default() }, &["verify"])?;
        let line = kid.chan.recv(touch_timeout(mb)).with_context(|| format!("reader {n}"))?;
        ensure!(line.starts_with("verify ok "), "reader {n} said {line:?}");
        kids.push(kid);
    }
    let (mut rss_anon, mut rss_shmem) = ([0; 2], [0; 2]);
    for (n, kid) in kids.iter().enumerate() {
        (_, rss_anon[n], rss_shmem[n]) = rss(kid.pid())?;
    }
    let cache = Client::connect(cluster.b.socket())?.stats()?.cache;
    let page_cache_bytes = cache.seeds.iter().filter(|(seed, _)| seed == id).map(|(_, bytes)| bytes).sum();
    for (n, kid) in kids.into_iter().enumerate() {
        kid.finish(&format!("{mb} MiB reader {n}"))?;
    }
    Ok(SharingSample { rss_anon, rss_shmem, page_cache_bytes })
}

/// Everything the modes part measures in one round of a size.
#[derive(Serialize, Clone)]
pub struct ModesSample {
    /// Pages of the seed's working set recorded by the first child (0: none in time).
    pub working_set_pages: u64,
    pub second: TouchSample,
    pub eager: EagerSample,
    /// None when the eager stream stalled.
    pub rss: Option<RssSample>,
    pub sharing: SharingSample,
    pub no_prefetch: Option<TouchSample>,
    pub remote_fault: Latency,
    pub local_fault: Latency,
    pub latency_stats: PagerStats,
}

/// The modes part of one round, on `seed` (its lazy first child has run).
pub fn measure_round(cluster: &Cluster, seed: &Seed, mb: usize) -> anyhow::Result<ModesSample> {
    let id = seed.id();
    let bytes = (mb << 20) as u64;
    let working_set_pages = wait_working_set(cluster, id)?;
    if working_set_pages == 0 {
        progress(&format!("{mb} MiB: no working set recorded within {WORKING_SET_WAIT:?}; the second child gets none"));
    }

    // Second child, default paging: page cache + working set. Its touch is
    // queued with its first command, so that it starts as soon as the child
    // runs and the push gets no head start (the lazy first child has none to get).
    let mut second = Kid::start(cluster, id, Paging::default(), &["now", "touch seq"])?;
    second.chan.recv_number("now", QUICK).context("second child")?;
    let second_touch = second.chan.recv_number("touch", touch_timeout(mb)).context("second child's touch")?;
    let (second_alone_vm_rss, _, _) = rss(second.pid())?;

    // Eager child, while the second one is alive (for the resident-memory ratio).
    let mut eager = Kid::start(cluster, id, isolated(true, false), &["now", "resident"])?;
    let running = eager.chan.recv_number("now", QUICK).context("eager child")?;
    let line = eager.chan.recv(touch_timeout(mb)).context("eager child: resident")?;
    let (resident_at, polls, resident_bytes, stalled) = match line.split_whitespace().collect::<Vec<_>>().as_slice() {
        ["resident", "STALLED", got, total] => {
            let (got, total) = (got.parse::<u64>()?, total.parse::<u64>()?);
            progress(&format!("{mb} MiB: the eager stream STALLED at {got} of {total} pages (a pager bug; see tests/eager_push_stall.rs)"));
            (0, 0, total * 4096, Some((got, total)))
        }
        ["resident", t, p, b] => (t.parse::<u64>()?, p.parse::<u64>()?, b.parse::<u64>()?, None),
        _ => bail!("eager child said {line:?}"),
    };
    let eager_t0 = eager.t0;
    let (touch_after_ns, rss_sample, eager_stats, eager_end) = if stalled.is_none() {
        let touch_after_ns = eager.chan.ask_number("touch seq", "touch", touch_timeout(mb))?;
        let (eager_vm_rss, eager_rss_anon, _) = rss(eager.pid())?;
        let (second_vm_rss, second_rss_anon, _) = rss(second.pid())?;
        let page_cache_bytes = Client::connect(cluster.b.socket())?.stats()?.cache.bytes;
        let rss = RssSample { second_alone_vm_rss, second_vm_rss, eager_vm_rss, second_rss_anon, eager_rss_anon, page_cache_bytes };
        (Some(touch_after_ns), Some(rss), eager.finish(&format!("{mb} MiB eager child"))?, None)
    } else {
        // Its missing pages may not come any more (the child can even be
        // killed at its next fault): no touch, no resident-memory figure.
        let (end, stats) = eager.end()?;
        (None, None, stats, Some(end.to_string()))
    };
    let second_stats = second.finish(&format!("{mb} MiB second child"))?;
    ensure!(resident_bytes >= bytes, "the eager child waited for {resident_bytes} bytes, less than its {mb} MiB");
    let eager_sample = EagerSample {
        bytes: resident_bytes,
        request_to_resident_ns: resident_at.saturating_sub(eager_t0),
        running_to_resident_ns: resident_at.saturating_sub(running),
        stalled,
        polls,
        touch_after_ns,
        stats: eager_stats,
        end_after_stall: eager_end,
    };

    let sharing = readers(cluster, id, mb)?;

    let no_prefetch = if mb <= NO_PREFETCH_MAX_MB {
        let mut kid = Kid::start(cluster, id, isolated(false, true), &["now"])?;
        kid.chan.recv_number("now", QUICK).context("no-prefetch child")?;
        let t = kid.chan.ask_number("touch seq", "touch", touch_timeout(mb) * 10)?;
        Some(TouchSample { first_touch_ns: t, stats: kid.finish(&format!("{mb} MiB no-prefetch child"))? })
    } else {
        None
    };

    // Fault latency: one page per fault, nothing cached or pushed.
    let pages = (mb << 20) / 4096;
    let n = LATENCY_PAGES.min(pages);
    let mut kid = Kid::start(cluster, id, isolated(false, true), &["now"])?;
    kid.chan.recv_number("now", QUICK).context("latency child")?;
    kid.chan.send(&format!("latency {n}"))?;
    let remote_fault = Latency::parse(&kid.chan.recv(QUICK + Duration::from_millis(n as u64 * 10))?, "latency")?;
    kid.chan.send(&format!("local-latency {n}"))?;
    let local_fault = Latency::parse(&kid.chan.recv(QUICK)?, "latency")?;
    let latency_stats = kid.finish(&format!("{mb} MiB latency child"))?;

    Ok(ModesSample {
        working_set_pages,
        second: TouchSample { first_touch_ns: second_touch, stats: second_stats },
        eager: eager_sample,
        rss: rss_sample,
        sharing,
        no_prefetch,
        remote_fault,
        local_fault,
        latency_stats,
    })
}

// ------------------------------------------------------- Python working set --

/// The Python seed: imports json, builds a dict of about 50 MB, says
/// `ready`, waits for a line; the function after it walks the whole dict and
/// answers in JSON, then leaves without the interpreter's teardown.
const PYTHON_SCRIPT: &str = r#"import json, os, sys
n = int(sys.argv[1])
table = {}
for i in range(n):
    table[f"key-{i:08d}"] = {"id": i, "name": f"item-{i}", "tags": [i % 7, i % 11, i % 13], "score": i * 0.5}
print(f"ready {os.getpid()}", flush=True)
line = sys.stdin.readline().strip()
total = 0
for key, value in table.items():
    total += value["id"] + len(value["tags"]) + len(key)
print(json.dumps({"line": line, "entries": len(table), "total": total}), flush=True)
os._exit(0)
"#;
/// Entries of the Python seed's dict (about 50 MB with the script above).
const PYTHON_ENTRIES: usize = 100_000;

/// One Python child.
#[derive(Serialize, Clone)]
pub struct PythonChild {
    /// From just before the resume request until its answer.
    pub answer_ms: f64,
    pub stats: PagerStats,
}

#[derive(Serialize)]
pub struct PythonReport {
    pub python: PathBuf,
    pub entries: usize,
    /// The seed's resident memory at prepare.
    pub seed_rss_bytes: u64,
    pub working_set_pages: u64,
    /// The first child (records the working set).
    pub first: PythonChild,
    /// Children with the working set pushed, and with `--no-working-set` (all `--no-cache`).
    pub with_working_set: Vec<PythonChild>,
    pub without_working_set: Vec<PythonChild>,
    pub faults_with: f64,
    pub faults_without: f64,
    pub remote_faults_with: f64,
    pub remote_faults_without: f64,
    /// Median faults with / without.
    pub fault_ratio: f64,
    pub remote_fault_ratio: f64,
}

/// `<repo>/.venv/bin/python`, the repository found upwards from the current
/// directory or from this executable.
pub fn venv_python() -> Option<PathBuf> {
    let starts = [std::env::current_dir().ok(), std::env::current_exe().ok()];
    for start in starts.into_iter().flatten() {
        for dir in start.ancestors() {
            let python = dir.join(".venv/bin/python");
            if dir.join("Cargo.toml").is_file() && python.exists() {
                return Some(python);
            }
        }
    }
    None
}

/// Runs one Python child with `paging`; `entries` checks its answer.
fn python_child(cluster: &Cluster, id: &str, paging: Paging, line: &str) -> anyhow::Result<PythonChild> {
    let mut kid = Kid::start(cluster, id, paging, &[line])?;
    let answer = kid.chan.recv(QUICK).context("Python child")?;
    let answer_ms = (now_ns() - kid.t0) as f64 / 1e6;
    ensure!(answer.contains(&format!("\"entries\": {PYTHON_ENTRIES}")), "the Python child answered {answer:?}");
    let (end, stats) = kid.resumed.wait().context("waiting for the Python child")?;
    ensure!(end == ChildEnd::Exited(0), "the Python child ended with {end:?}");
    Ok(PythonChild { answer_ms, stats })
}

/// The Python working-set line: a first child records, then `runs` children
/// with the working set pushed and `runs` with `--no-working-set`, all
/// `--no-cache`, alternating.
pub fn python_working_set(cluster: &Cluster, python: &Path, runs: usize) -> anyhow::Result<PythonReport> {
    let script = cluster.dir.path().join("ws-seed.py");
    std::fs::write(&script, PYTHON_SCRIPT).with_context(|| format!("writing {}", script.display()))?;
    progress(&format!("Python working set: starting {} on host a ({PYTHON_ENTRIES}-entry dict)", python.display()));
    let mut parent = HostProcess::spawn(
        host_command(&cluster.hosts.a, python).arg(&script).arg(PYTHON_ENTRIES.to_string()),
    )?;
    let pid = parent.chan.recv_number("ready", Duration::from_secs(120)).context("starting the Python seed")?;
    let id = format!("micro-python-{}", std::process::id());
    let seed = Seed::prepare(&cluster.a, i32::try_from(pid)?, &id)?;
    let no_cache = |no_working_set| Paging { no_working_set, no_cache: true, ..Paging::default() };
    progress("Python working set: first child (records the working set)");
    let first = python_child(cluster, &id, no_cache(false), "first")?;
    let working_set_pages = wait_working_set(cluster, &id)?;
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for run in 1..=runs {
        progress(&format!("Python working set: children with and without it, run {run}/{runs}"));
        with.push(python_child(cluster, &id, no_cache(false), "with")?);
        without.push(python_child(cluster, &id, no_cache(true), "without")?);
    }
    let rss_bytes = seed.info.rss_bytes;
    seed.drop_and_wait(QUICK)?;
    parent.chan.send("parent")?;
    let m = |v: &[PythonChild], f: fn(&PagerStats) -> u64| median(&v.iter().map(|c| f(&c.stats) as f64).collect::<Vec<_>>());
    let (fw, fo) = (m(&with, |s| s.faults), m(&without, |s| s.faults));
    let (rw, ro) = (m(&with, |s| s.remote_faults), m(&without, |s| s.remote_faults));
    Ok(PythonReport {
        python: python.to_path_buf(),
        entries: PYTHON_ENTRIES,
        seed_rss_bytes: rss_bytes,
        working_set_pages,
        first,
        faults_with: fw,
        faults_without: fo,
        remote_faults_with: rw,
        remote_faults_without: ro,
        fault_ratio: fw / fo.max(1.0),
        remote_fault_ratio: rw / ro.max(1.0),
        with_working_set: with,
        without_working_set: without,
    })
}
