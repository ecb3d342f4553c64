//! `mitosis bench throughput`: MITOSIS's peak-throughput benchmark. N loops
//! on host `b` each resume a child of one seed on host `a` and wait for its
//! end, over and over, for S seconds; every second each loop prints
//! `[loop i] Throughput: X containers/sec, latency Y ms` as the MITOSIS
//! scripts did, and a summary gives the total rate and the median and p99
//! latency.
//!
//! In the same run, the cost of each layer below it, measured the same way
//! (one after the other, medians):
//! - **fork+exit**: a plain local `fork()`, `_exit(0)` in the child, and
//!   `waitpid` in this process: the floor of starting any process;
//! - **bare lean container**: daemon `b` takes a container (warm pool),
//!   forks a process into it that joins its namespaces and cgroups and lets
//!   it exit (no seed, no restore); the container's teardown follows in the
//!   background, as after every child.
//!
//! The seed is a `pattern` workload of `--seed` bytes; each child answers
//! one `exit 0` queued on its stdin, so it touches only the few pages that
//! takes (like MITOSIS's children, which resume and end).
//!
//! With `--clients N`, a second part measures the *seed host's capacity*
//! (MITOSIS served over 10,000 children/s from one seed): a center host with
//! the seed and N client hosts (network namespaces on one bridge), each
//! running `--loops` loops against it, after the same with one client host
//! (the baseline of the same run). It reports children/s, the seed host
//! daemon's CPU time per child and the pages per second it served. All hosts
//! share this machine's two vCPUs, so the figure is the whole cluster's on
//! two CPUs, not the seed host's alone; the CPU per child is the seed host's.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use mitosis::{ChildEnd, Client, ContainerSpec, ResumeOptions};
use serde::Serialize;

use crate::hosts::{ensure_root, host_command, Cluster, HostProcess, Seed};
use crate::{median, percentile};

/// What to run.
pub struct Options {
    pub seed_bytes: u64,
    pub loops: usize,
    pub seconds: u64,
    pub container: bool,
    pub json: bool,
    /// Client hosts of the seed-host capacity part (0: no such part).
    pub clients: usize,
}

/// The targets, printed beside the figures (never asserted).
const TARGET_BARE_MS: f64 = 0.5;
const TARGET_RESUME_MS: f64 = 3.0;
const TARGET_PER_SEC: f64 = 1000.0;
/// Repetitions of each baseline.
const BASELINE_RUNS: usize = 300;

#[derive(Serialize)]
struct Layer {
    median_us: f64,
    p99_us: f64,
    runs: usize,
}

impl Layer {
    fn of(us: &[f64]) -> Layer {
        Layer { median_us: median(us), p99_us: percentile(us, 99.0), runs: us.len() }
    }
}

#[derive(Serialize)]
struct Report {
    seed_bytes: u64,
    loops: usize,
    seconds: u64,
    container: bool,
    fork_exit: Layer,
    bare_container: Layer,
    /// Of a bare container: taking it from the pool, and starting the process in it.
    bare_take_median_us: f64,
    bare_start_median_us: f64,
    /// Children per second over the whole run, all loops together.
    throughput_per_sec: f64,
    /// Resume request to the child's end, as each loop saw it.
    latency: Layer,
    /// The daemon's own resume time (request to child running).
    resume: Layer,
    /// Per second, per loop: children that ended in that second.
    per_second: Vec<Vec<u32>>,
    failures: usize,
    /// The seed-host capacity part (`--clients`): one client host, then all.
    seed_host: Option<[SeedHostRun; 2]>,
}

/// One run of the seed-host capacity part.
#[derive(Serialize)]
struct SeedHostRun {
    client_hosts: usize,
    children: usize,
    failures: usize,
    children_per_sec: f64,
    /// The seed host's daemon: CPU time (user + system) per child.
    seed_cpu_us_per_child: f64,
    /// Pages its peer server read for children, per second.
    pages_served_per_sec: f64,
    latency: Layer,
}

/// Runs the benchmark. Needs root.
pub fn run(bin: &Path, opts: &Options) -> anyhow::Result<()> {
    ensure_root("mitosis bench throughput")?;
    ensure!(opts.loops > 0 && opts.seconds > 0, "--loops and --seconds must be at least 1");
    let mb = opts.seed_bytes.div_ceil(1 << 20).max(1);
    let say = |m: &str| if !opts.json { eprintln!("bench throughput: {m}") };
    say("starting hosts a and b with a daemon each");
    let cluster = Cluster::start(bin, "bench-throughput")?;
    let report = cluster.run(|cluster| {
        say("baseline: local fork+exit");
        let fork_exit = fork_exit_us(BASELINE_RUNS);
        say("baseline: bare lean containers on host b");
        let (bare, take, start) = bare_containers(cluster, BASELINE_RUNS)?;
        say(&format!("preparing a {mb} MiB seed on host a"));
        let mut workload =
            HostProcess::spawn(host_command(&cluster.hosts.a, bin).args(["workload", "pattern", "--mb", &mb.to_string()]))?;
        let pid = workload.chan.recv_number("ready", Duration::from_secs(60)).context("workload start")? as i32;
        let seed = Seed::prepare(&cluster.a, pid, &format!("throughput-{}", std::process::id()))?;
        say(&format!("{} loops for {} s", opts.loops, opts.seconds));
        let run = loops(&[cluster.b.socket()], &cluster.a.addr(), seed.id(), opts)?;
        seed.drop_and_wait(Duration::from_secs(30))?;
        workload.chan.send("exit 0")?;
        let seed_host = match opts.clients {
            0 => None,
            n => {
                say(&format!("seed host capacity: a seed host and 1, then {n} client hosts"));
                Some([seed_host_run(bin, opts, 1)?, seed_host_run(bin, opts, n)?])
            }
        };
        Ok(Report {
            seed_bytes: opts.seed_bytes,
            loops: opts.loops,
            seconds: opts.seconds,
            container: opts.container,
            fork_exit: Layer::of(&fork_exit),
            bare_container: Layer::of(&bare),
            bare_take_median_us: median(&take),
            bare_start_median_us: median(&start),
            throughput_per_sec: run.latencies_us.len() as f64 / run.elapsed.as_secs_f64(),
            latency: Layer::of(&run.latencies_us),
            resume: Layer::of(&run.resume_us),
            per_second: run.per_second,
            failures: run.failures,
            seed_host,
        })
    })?;
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_summary(&report);
    }
    Ok(())
}

/// fork(), `_exit(0)` in the child, waitpid here; microseconds each.
fn fork_exit_us(runs: usize) -> Vec<f64> {
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            let pid = mitosis_sys::process::fork_exit_child().expect("fork");
            mitosis_sys::process::wait_pid(pid).expect("waitpid");
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect()
}

/// Bare containers on daemon b, timed by the client: (total, take, start) in µs.
fn bare_containers(cluster: &Cluster, runs: usize) -> anyhow::Result<(Vec<f64>, Vec<f64>, Vec<f64>)> {
    let mut client = Client::connect(cluster.b.socket())?;
    let (mut total, mut take, mut start) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let t = Instant::now();
        let (take_us, start_us, _) = client.bare_container(&ContainerSpec::default()).context("bare container on host b")?;
        total.push(t.elapsed().as_secs_f64() * 1e6);
        take.push(take_us as f64);
        start.push(start_us as f64);
        // Let the pool refill as it would between requests of a steady load.
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok((total, take, start))
}

struct LoopsRun {
    latencies_us: Vec<f64>,
    resume_us: Vec<f64>,
    per_second: Vec<Vec<u32>>,
    failures: usize,
    elapsed: Duration,
}

/// The seed host's capacity with `clients` client hosts: a star of
/// network namespaces, the seed on the center, `opts.loops` loops on each
/// client host for `opts.seconds`.
fn seed_host_run(bin: &Path, opts: &Options, clients: usize) -> anyhow::Result<SeedHostRun> {
    let star = mitosis_testkit::Star::new(clients).context("creating the seed host and its client hosts")?;
    let dir = mitosis_testkit::TestDir::new("bench-seed-host");
    let key = mitosis_testkit::write_key(&dir, "key", "bench seed host capacity key");
    let center = mitosis_testkit::Daemon::start(bin, &star.center, &dir, "center", &key)?;
    let daemons: Vec<mitosis_testkit::Daemon> = star
        .leaves
        .iter()
        .enumerate()
        .map(|(i, leaf)| mitosis_testkit::Daemon::start(bin, leaf, &dir, &format!("client{i}"), &key))
        .collect::<anyhow::Result<_>>()?;
    let mb = opts.seed_bytes.div_ceil(1 << 20).max(1);
    let mut workload = HostProcess::spawn(host_command(&star.center, bin).args(["workload", "pattern", "--mb", &mb.to_string()]))?;
    let pid = workload.chan.recv_number("ready", Duration::from_secs(60)).context("workload start")? as i32;
    let seed = Seed::prepare(&center, pid, &format!("seed-host-{}-{clients}", std::process::id()))?;
    let served = || -> anyhow::Result<u64> {
        let stats = Client::connect(center.socket())?.stats()?;
        Ok(stats.seeds.iter().map(|s| s.pages_served).sum())
    };
    let (cpu0, served0) = (cpu_us(center.pid())?, served()?);
    let sockets: Vec<&Path> = daemons.iter().map(|d| d.socket()).collect();
    let quiet = Options { json: true, ..*opts };
    let run = loops(&sockets, &center.addr(), seed.id(), &quiet)?;
    let (cpu1, served1) = (cpu_us(center.pid())?, served()?);
    seed.drop_and_wait(Duration::from_secs(30))?;
    workload.chan.send("exit 0")?;
    let children = run.latencies_us.len();
    let seconds = run.elapsed.as_secs_f64();
    Ok(SeedHostRun {
        client_hosts: clients,
        children,
        failures: run.failures,
        children_per_sec: children as f64 / seconds,
        seed_cpu_us_per_child: cpu1.saturating_sub(cpu0) as f64 / children.max(1) as f64,
        pages_served_per_sec: served1.saturating_sub(served0) as f64 / seconds,
        latency: Layer::of(&run.latencies_us),
    })
}

/// CPU time (user + system, all threads) of process `pid` so far, in µs.
fn cpu_us(pid: i32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces): state is the
    // first, utime and stime the 12th and 13th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).context("no command name in /proc/PID/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> anyhow::Result<u64> { fields.get(i).context("short /proc/PID/stat")?.parse().context("bad /proc/PID/stat") };
    let hz = mitosis_sys::process::clock_ticks_per_second();
    Ok((ticks(11)? + ticks(12)?) * 1_000_000 / hz.max(1))
}

/// One child: resume, wait; (latency µs, daemon's resume µs).
fn one_child(client: &Path, seed_addr: &str, seed_id: &str, options: &ResumeOptions) -> anyhow::Result<(f64, f64)> {
    let (stdin_rx, mut stdin_tx) = std::io::pipe()?;
    writeln!(stdin_tx, "exit 0")?;
    drop(stdin_tx);
    let devnull = std::fs::OpenOptions::new().write(true).open("/dev/null")?;
    let t = Instant::now();
    let resumed = Client::connect(client)?.resume_with(
        seed_addr,
        seed_id,
        [stdin_rx.as_raw_fd(), devnull.as_raw_fd(), 2],
        options,
    )?;
    drop(stdin_rx);
    let resume_us = resumed.timings.total_us as f64;
    let (end, _) = resumed.wait()?;
    ensure!(end == ChildEnd::Exited(0), "a child {end}");
    Ok((t.elapsed().as_secs_f64() * 1e6, resume_us))
}

/// `opts.loops` loops on each daemon of `clients` (their sockets), each
/// resuming children of seed `seed_id` of `seed_addr` one after another.
fn loops(clients: &[&Path], seed_addr: &str, seed_id: &str, opts: &Options) -> anyhow::Result<LoopsRun> {
    let options = ResumeOptions { container: opts.container.then(ContainerSpec::default), ..Default::default() };
    let seconds = opts.seconds as usize;
    let stop = AtomicBool::new(false);
    let results = Mutex::new((Vec::new(), Vec::new(), 0usize, String::new()));
    let all_loops = opts.loops * clients.len();
    // counts[loop][second]
    let counts: Arc<Vec<Vec<std::sync::atomic::AtomicU32>>> =
        Arc::new((0..all_loops).map(|_| (0..seconds + 1).map(|_| Default::default()).collect()).collect());
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for l in 0..all_loops {
            let client = clients[l / opts.loops];
            let (stop, results, counts, options) = (&stop, &results, counts.clone(), &options);
            s.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match one_child(client, seed_addr, seed_id, options) {
                        Ok((lat, resume)) => {
                            let sec = t0.elapsed().as_secs() as usize;
                            if sec < seconds {
                                counts[l][sec].fetch_add(1, Ordering::Relaxed);
                                let mut r = results.lock().unwrap();
                                r.0.push(lat);
                                r.1.push(resume);
                            }
                        }
                        Err(e) => {
                            let mut r = results.lock().unwrap();
                            r.2 += 1;
                            r.3 = format!("{e:#}");
                        }
                    }
                }
            });
        }
        for sec in 0..seconds {
            std::thread::sleep(Duration::from_secs(sec as u64 + 1).saturating_sub(t0.elapsed()));
            if !opts.json {
                for (l, c) in counts.iter().enumerate() {
                    let n = c[sec].load(Ordering::Relaxed);
                    let lat = if n > 0 { 1000.0 / n as f64 } else { f64::NAN };
                    println!("[loop {l}] Throughput: {n} containers/sec, latency {lat:.2} ms");
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
    });
    let (latencies_us, resume_us, failures, last_error) = results.into_inner().unwrap();
    ensure!(failures == 0 || !latencies_us.is_empty(), "every child failed; last error: {last_error}");
    if failures > 0 {
        eprintln!("bench throughput: {failures} children failed; last error: {last_error}");
    }
    let per_second = counts.iter().map(|c| c[..seconds].iter().map(|a| a.load(Ordering::Relaxed)).collect()).collect();
    Ok(LoopsRun { latencies_us, resume_us, per_second, failures, elapsed: Duration::from_secs(opts.seconds) })
}

fn print_summary(r: &Report) {
    let ms = |us: f64| us / 1000.0;
    let what = if r.container { "resume in a lean container + run + exit" } else { "resume (no container) + run + exit" };
    println!();
    println!("Peak throughput: {} loops, {} s, seed of {:.1} MiB (medians; p99 in brackets)", r.loops, r.seconds, r.seed_bytes as f64 / 1048576.0);
    println!("  {:<48} {:>10} {:>10} {:>10}", "layer", "ms", "p99 ms", "target");
    println!("  {:<48} {:>10.3} {:>10.3} {:>10}", "local fork+exit (baseline)", ms(r.fork_exit.median_us), ms(r.fork_exit.p99_us), "");
    println!(
        "  {:<48} {:>10.3} {:>10.3} {:>10}",
        "bare lean container (start + exit)",
        ms(r.bare_container.median_us),
        ms(r.bare_container.p99_us),
        format!("<= {TARGET_BARE_MS}")
    );
    println!(
        "  {:<48} {:>10.3} {:>10} {:>10}",
        "  of which: take from pool / start process",
        ms(r.bare_take_median_us),
        format!("{:.3}", ms(r.bare_start_median_us)),
        ""
    );
    println!("  {:<48} {:>10.3} {:>10.3} {:>10}", "resume (daemon: request -> child running)", ms(r.resume.median_us), ms(r.resume.p99_us), format!("<= {TARGET_RESUME_MS}"));
    println!("  {:<48} {:>10.3} {:>10.3} {:>10}", what, ms(r.latency.median_us), ms(r.latency.p99_us), "");
    println!(
        "  throughput: {:.0} children/s over {} children ({} failed); target >= {TARGET_PER_SEC}/s",
        r.throughput_per_sec, r.latency.runs, r.failures
    );
    println!(
        "  ratios: bare container / fork+exit {:.1}x; resume+exit / bare container {:.1}x",
        r.bare_container.median_us / r.fork_exit.median_us,
        r.latency.median_us / r.bare_container.median_us
    );
    if let Some(runs) = &r.seed_host {
        println!();
        println!("Seed host capacity: one seed host, client hosts with {} loops each, {} s (all hosts on this machine's CPUs)", r.loops, r.seconds);
        println!("  {:>12} {:>10} {:>12} {:>16} {:>16} {:>12} {:>8}", "client hosts", "children", "children/s", "seed CPU/child", "pages served/s", "latency ms", "failed");
        for run in runs {
            println!(
                "  {:>12} {:>10} {:>12.0} {:>13.0} µs {:>16.0} {:>12.2} {:>8}",
                run.client_hosts,
                run.children,
                run.children_per_sec,
                run.seed_cpu_us_per_child,
                run.pages_served_per_sec,
                ms(run.latency.median_us),
                run.failures
            );
        }
        let [one, all] = runs;
        println!(
            "  {} client hosts / 1 (baseline of this run): {:.2}x children/s; the seed host spends {:.0} µs of CPU per child, so one CPU of it would serve {:.0} children/s",
            all.client_hosts,
            all.children_per_sec / one.children_per_sec.max(f64::MIN_POSITIVE),
            all.seed_cpu_us_per_child,
            1e6 / all.seed_cpu_us_per_child.max(1.0)
        );
    }
}
