//! `mitosis bench offload`: giving an idle child's memory back and getting
//! it back (`mitosis offload`, `mitosis prefetch`). A `pattern` seed of
//! `mib` MiB in host a, a child of it in host b resumed with write tracking
//! (and neither the working-set push nor host b's page cache, so that every
//! page comes over the network), and a memory node (lz4) in host a. Each
//! run, with a fresh child:
//!
//! 1. the child reads all its memory (`verify`): the first touch, lazily
//!    from the seed, the remote fork's own paging;
//! 2. offload of unchanged memory (nothing sent), then the child reads it
//!    all again, lazily from the seed;
//! 3. the child writes all of it (`mutate`), offload (all of it put on the
//!    node), then reads it all, lazily from the node;
//! 4. offload again (unchanged since it came back: nothing sent), then
//!    `prefetch`, timed until every page is back (`resident`, which
//!    touches nothing), and a read that must find all of it right.
//!
//! Every read checks every word (a wrong page fails the run). Beside them,
//! in the same run: raw TCP bulk throughput from host a to host b over the
//! same veth, and memcpy of `mib` MiB. Medians over `runs` runs.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use mitosis::{Client, Paging};
use mitosis_proto::local::OffloadReport;
use mitosis_testkit::Memnode;
use serde::Serialize;

use crate::hosts::{ensure_root, host_command, Cluster, HostProcess, Seed};
use crate::micro::Samples;
use crate::modes::Kid;

const MIB: f64 = 1048576.0;

/// What to measure.
pub struct Options {
    pub mib: usize,
    pub runs: usize,
    pub json: bool,
}

/// One run's figures.
#[derive(Serialize, Clone)]
struct Sample {
    first_touch_ms: f64,
    offload_clean: OffloadReport,
    back_from_seed_ms: f64,
    offload_written: OffloadReport,
    back_from_node_ms: f64,
    offload_clean_at_node: OffloadReport,
    prefetch_ms: f64,
}

#[derive(Serialize)]
struct Report {
    mib: usize,
    runs: usize,
    raw_tcp_mib_s: Samples,
    memcpy_mib_s: Samples,
    /// Child reads all its memory (MiB/s): first touch from the seed, back
    /// from the seed after an offload, back from the node, and with prefetch.
    first_touch_mib_s: Samples,
    back_from_seed_mib_s: Samples,
    back_from_node_mib_s: Samples,
    prefetch_mib_s: Samples,
    /// Offload of unchanged memory, of written memory, and of memory back
    /// from the node unchanged (ms), and the child's time held still.
    offload_clean_ms: Samples,
    offload_written_ms: Samples,
    offload_written_mib_s: Samples,
    offload_clean_at_node_ms: Samples,
    held_still_written_ms: Samples,
    /// Resident MiB of the child before and after the offload of written memory.
    resident_before_mib: Samples,
    resident_after_mib: Samples,
    /// What the node held for the child, MiB (lz4).
    node_mib: Samples,
    samples: Vec<Sample>,
}

fn progress(msg: &str) {
    eprintln!("[bench offload] {msg}");
}

pub fn run(bin: &Path, opts: &Options) -> anyhow::Result<()> {
    ensure_root("mitosis bench offload")?;
    let runs = opts.runs.max(1);
    let mib = opts.mib.max(1);
    let cluster = Cluster::start_with_args(bin, "bench-offload", &["--memnode", crate::hosts::MEMNODE_A])?;
    let key = cluster.dir.path().join("cluster.key");
    let node = Memnode::start(bin, &cluster.hosts.a, &cluster.dir, "memnode", &key, &["--capacity", "8G", "--compress", "lz4"])?;
    let report = cluster.run(|c| measure(bin, c, mib, runs))?;
    ensure!(node.log().lines().all(|l| !l.contains("panicked")), "the memory node panicked:\n{}", node.log());
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    Ok(())
}

fn measure(bin: &Path, cluster: &Cluster, mib: usize, runs: usize) -> anyhow::Result<Report> {
    progress("raw TCP baseline");
    let tcp = crate::micro::raw_tcp(bin, &cluster.hosts, runs)?;
    let raw_tcp = tcp.mib_per_s_samples();
    let pattern = vec![7u8; mib << 20];
    let memcpy: Vec<f64> = (0..runs).map(|_| crate::memnode::memcpy_mib_s(&pattern, mib << 20, mib << 20)).collect();
    progress(&format!("{mib} MiB pattern seed on host a"));
    let mut workload = HostProcess::spawn(host_command(&cluster.hosts.a, bin).args(["workload", "pattern", "--mb", &mib.to_string()]))?;
    let pid = workload.chan.recv_number("ready", Duration::from_secs(60)).context("workload start")?;
    let seed = Seed::prepare(&cluster.a, i32::try_from(pid)?, &format!("offload-{}", std::process::id()))?;
    let mut samples = Vec::new();
    for run in 1..=runs {
        progress(&format!("run {run}/{runs}"));
        samples.push(one_run(cluster, &seed, mib)?);
    }
    seed.drop_and_wait(Duration::from_secs(30))?;
    let _ = workload.chan.send("exit 0");
    let rate = |f: &dyn Fn(&Sample) -> f64| Samples::new(samples.iter().map(|s| mib as f64 / (f(s) / 1e3)).collect());
    let ms = |f: &dyn Fn(&Sample) -> f64| Samples::new(samples.iter().map(f).collect());
    let mib_of = |bytes: u64| bytes as f64 / MIB;
    Ok(Report {
        mib,
        runs,
        raw_tcp_mib_s: Samples::new(raw_tcp),
        memcpy_mib_s: Samples::new(memcpy),
        first_touch_mib_s: rate(&|s| s.first_touch_ms),
        back_from_seed_mib_s: rate(&|s| s.back_from_seed_ms),
        back_from_node_mib_s: rate(&|s| s.back_from_node_ms),
        prefetch_mib_s: rate(&|s| s.prefetch_ms),
        offload_clean_ms: ms(&|s| s.offload_clean.total_us as f64 / 1e3),
        offload_written_ms: ms(&|s| s.offload_written.total_us as f64 / 1e3),
        offload_written_mib_s: ms(&|s| mib_of(s.offload_written.pages_put * 4096) / (s.offload_written.total_us as f64 / 1e6)),
        offload_clean_at_node_ms: ms(&|s| s.offload_clean_at_node.total_us as f64 / 1e3),
        held_still_written_ms: ms(&|s| s.offload_written.frozen_us as f64 / 1e3),
        resident_before_mib: ms(&|s| mib_of(s.offload_written.rss_before_bytes)),
        resident_after_mib: ms(&|s| mib_of(s.offload_written.rss_after_bytes)),
        node_mib: ms(&|s| mib_of(s.offload_written.node_bytes)),
        samples,
    })
}

fn one_run(cluster: &Cluster, seed: &Seed, mib: usize) -> anyhow::Result<Sample> {
    let paging = Paging { no_working_set: true, no_cache: true, track_writes: true, ..Paging::default() };
    let mut kid = Kid::start(cluster, seed.id(), paging, &[])?;
    let pid = kid.pid().to_string();
    let patience = Duration::from_secs(30) + Duration::from_millis(100 * mib as u64);
    let read_all = |kid: &mut Kid| -> anyhow::Result<(String, f64)> {
        let t = Instant::now();
        kid.chan.send("verify")?;
        let line = kid.chan.recv(patience)?;
        ensure!(line.starts_with("verify ok"), "the child found a wrong page: {line}");
        Ok((line, t.elapsed().as_secs_f64() * 1e3))
    };
    let offload = |what: &str| -> anyhow::Result<OffloadReport> {
        Client::connect(cluster.b.socket())?.offload(&pid).with_context(|| format!("offloading {what}"))
    };
    let (seed_sum, first_touch_ms) = read_all(&mut kid)?;
    let offload_clean = offload("unchanged memory")?;
    let (sum, back_from_seed_ms) = read_all(&mut kid)?;
    ensure!(sum == seed_sum, "memory back from the seed differs: {sum} after {seed_sum}");
    kid.chan.send("mutate")?;
    ensure!(kid.chan.recv(patience)? == "mutated", "the child did not write its memory");
    let (written_sum, _) = read_all(&mut kid)?;
    let offload_written = offload("written memory")?;
    let (sum, back_from_node_ms) = read_all(&mut kid)?;
    ensure!(sum == written_sum, "memory back from the node differs: {sum} after {written_sum}");
    let offload_clean_at_node = offload("memory back from the node")?;
    let t = Instant::now();
    Client::connect(cluster.b.socket())?.prefetch(&pid).context("prefetch")?;
    kid.chan.send("resident")?;
    let resident = kid.chan.recv(patience)?;
    let prefetch_ms = t.elapsed().as_secs_f64() * 1e3;
    ensure!(!resident.contains("STALLED") && !resident.contains("FAILED"), "prefetch: {resident}");
    let (sum, _) = read_all(&mut kid)?;
    ensure!(sum == written_sum, "memory prefetched differs: {sum} after {written_sum}");
    kid.finish("offload child")?;
    Ok(Sample { first_touch_ms, offload_clean, back_from_seed_ms, offload_written, back_from_node_ms, offload_clean_at_node, prefetch_ms })
}

fn print_report(r: &Report) {
    let tcp = r.raw_tcp_mib_s.median;
    println!("offload and bring back: {} MiB pattern child in host b, seed and memory node (lz4) in host a; medians of {} runs", r.mib, r.runs);
    println!();
    println!("{:<52} {:>10} {:>12}", "the child reads all its memory", "MiB/s", "x raw TCP");
    for (what, f) in [
        ("first touch, lazily from the seed (remote fork)", &r.first_touch_mib_s),
        ("after an offload of it unchanged: from the seed", &r.back_from_seed_mib_s),
        ("after an offload of it written: from the node", &r.back_from_node_mib_s),
        ("the same, with prefetch (until all resident)", &r.prefetch_mib_s),
    ] {
        println!("{:<52} {:>10.0} {:>12.2}", what, f.median, f.median / tcp);
    }
    println!("{:<52} {:>10.0} {:>12.2}", "baseline: raw TCP a -> b", tcp, 1.0);
    println!("{:<52} {:>10.0} {:>12.2}", "baseline: memcpy", r.memcpy_mib_s.median, r.memcpy_mib_s.median / tcp);
    println!();
    println!("{:<52} {:>10}", "offload", "ms");
    println!("{:<52} {:>10.1}", "unchanged memory (dropped, nothing sent)", r.offload_clean_ms.median);
    println!("{:<52} {:>10.1}", "written memory (all put on the node)", r.offload_written_ms.median);
    println!("{:<52} {:>10.1}", "  of which the child was held still", r.held_still_written_ms.median);
    println!("{:<52} {:>10.1}", "back from the node, unchanged (nothing sent)", r.offload_clean_at_node_ms.median);
    println!();
    println!(
        "written memory: put at {:.0} MiB/s ({:.2} x raw TCP); resident {:.1} -> {:.1} MiB; the node holds {:.1} MiB",
        r.offload_written_mib_s.median,
        r.offload_written_mib_s.median / tcp,
        r.resident_before_mib.median,
        r.resident_after_mib.median,
        r.node_mib.median
    );
}
