//! `mitosis bench threads`: what each thread of a seed adds to prepare and
//! to resume. A C program (programs/threads_parent.c, built with `cc` at run
//! time) runs on host a with 1, 2, 8, 32 and 64 threads, the extra ones
//! blocked in a futex wait. Each run prepares every one of them (the
//! daemon's own prepare time) and resumes two children of each on host b
//! (the restore's time in daemon b, and the whole resume), round-robin, so
//! that all see the same machine. The first child of a seed fetches each
//! thread's control block from host a while its threads are set up; the
//! second finds them in host b's page cache, which shows what the threads
//! themselves cost. Each child checks that it has every thread
//! and that each woke with its own thread-local value before it exits.
//! Beside: a local fork+exit+wait of this process, in the same run.
//!
//! The figure that matters is the slope: microseconds per extra thread,
//! `(median(N) - median(1)) / (N - 1)`.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Context};
use serde::Serialize;

use crate::hosts::{ensure_root, host_command, Channel, Cluster, HostProcess, Seed};
use crate::median;

const SOURCE: &str = include_str!("../programs/threads_parent.c");

/// What the user chose.
pub struct Options {
    /// Thread counts (the first should be 1: the others are compared with it).
    pub counts: Vec<usize>,
    pub runs: usize,
    /// Resume children without a container (fresh tids, glibc's rewritten).
    pub no_container: bool,
    pub json: bool,
}

#[derive(Serialize)]
struct Row {
    threads: usize,
    prepare_us_median: f64,
    prepare_us: Vec<f64>,
    /// First child of each seed.
    restore_us_median: f64,
    restore_us: Vec<f64>,
    resume_us_median: f64,
    resume_us: Vec<f64>,
    /// Second child of each seed (page cache on host b).
    second_restore_us_median: f64,
    second_restore_us: Vec<f64>,
    /// Per extra thread, against the one-thread row (None for it).
    prepare_per_extra_thread_us: Option<f64>,
    restore_per_extra_thread_us: Option<f64>,
    second_restore_per_extra_thread_us: Option<f64>,
}

#[derive(Serialize)]
struct Report {
    runs: usize,
    container: bool,
    fork_exit_us_median: f64,
    fork_exit_us: Vec<f64>,
    rows: Vec<Row>,
}

/// One seed program per thread count, running on host a.
struct Parent {
    threads: usize,
    proc: HostProcess,
    pid: i32,
}

/// Resumes a child of `seed` on b, checks its threads, lets it exit.
/// Returns (restore µs, whole resume µs) as daemon b measured them.
fn resume_and_check(cluster: &Cluster, seed: &Seed, threads: usize, container: bool) -> anyhow::Result<(f64, f64)> {
    let (child_in, mut to_child) = std::io::pipe()?;
    let (from_child, child_out) = std::io::pipe()?;
    let options = mitosis::ResumeOptions {
        container: container.then(mitosis::ContainerSpec::default),
        detach: false,
        paging: mitosis::Paging::default(),
    };
    let resumed = mitosis::Client::connect(cluster.b.socket())?
        .resume_with(&cluster.a.addr(), seed.id(), [child_in.as_raw_fd(), child_out.as_raw_fd(), 2], &options)
        .with_context(|| format!("resuming a child of the {threads}-thread seed on host b"))?;
    drop((child_in, child_out));
    let timings = resumed.timings.clone();
    writeln!(to_child, "check")?;
    let mut chan = Channel::new(to_child, from_child);
    let line = match chan.recv(Duration::from_secs(30)) {
        Ok(line) => line,
        Err(e) => {
            let end = resumed.wait();
            anyhow::bail!("the child of the {threads}-thread seed did not answer ({e:#}); it ended {end:?}");
        }
    };
    let want = format!("check {threads} {}", threads - 1);
    ensure!(line == want, "the child of the {threads}-thread seed answered {line:?}, not {want:?}");
    chan.send("exit")?;
    let (end, _) = resumed.wait()?;
    ensure!(end == mitosis_proto::local::ChildEnd::Exited(0), "the child of the {threads}-thread seed ended {end:?}");
    Ok((timings.restore_us as f64, timings.total_us as f64))
}

pub fn run(bin: &Path, opts: &Options) -> anyhow::Result<()> {
    ensure_root("bench threads")?;
    ensure!(opts.counts.first() == Some(&1), "the thread counts must start with 1 (the others are compared with it)");
    ensure!(opts.counts.iter().all(|&n| (1..=1024).contains(&n)), "thread counts are 1 to 1024");
    let cluster = Cluster::start(bin, "bench-threads")?;
    let program = crate::stress_fork::compile_c(cluster.dir.path(), "threads_parent", SOURCE, &["-pthread"])?;
    let mut parents = Vec::new();
    for &threads in &opts.counts {
        let mut proc = HostProcess::spawn(host_command(&cluster.hosts.a, &program).arg(threads.to_string()))?;
        let pid = i32::try_from(proc.chan.recv_number("ready", Duration::from_secs(30))?)?;
        parents.push(Parent { threads, proc, pid });
    }
    let mut samples: Vec<[Vec<f64>; 4]> = opts.counts.iter().map(|_| Default::default()).collect();
    let mut fork_exit = Vec::new();
    for run in 1..=opts.runs.max(1) {
        eprintln!("bench threads: run {run}/{}", opts.runs);
        fork_exit.push(crate::stress_fork::fork_exit_median_us());
        for (i, p) in parents.iter().enumerate() {
            let id = format!("bench-threads-{}-{run}", p.threads);
            let seed = Seed::prepare(&cluster.a, p.pid, &id)?;
            ensure!(seed.info.threads as usize == p.threads, "seed {id} has {} threads, not {}", seed.info.threads, p.threads);
            let (restore, resume) = cluster.run(|c| resume_and_check(c, &seed, p.threads, !opts.no_container))?;
            let (second, _) = cluster.run(|c| resume_and_check(c, &seed, p.threads, !opts.no_container))?;
            samples[i][0].push(seed.info.prepare_us as f64);
            samples[i][1].push(restore);
            samples[i][2].push(resume);
            samples[i][3].push(second);
            seed.drop_and_wait(Duration::from_secs(10))?;
        }
    }
    for mut p in parents {
        let _ = p.proc.chan.send("exit");
    }
    let base = [median(&samples[0][0]), median(&samples[0][1]), median(&samples[0][3])];
    let rows: Vec<Row> = opts
        .counts
        .iter()
        .zip(samples)
        .map(|(&threads, [prepare, restore, resume, second])| {
            let (p, r, s) = (median(&prepare), median(&restore), median(&second));
            let slope = |m: f64, b: f64| (threads > 1).then(|| (m - b) / (threads - 1) as f64);
            Row {
                threads,
                prepare_us_median: p,
                prepare_per_extra_thread_us: slope(p, base[0]),
                restore_us_median: r,
                restore_per_extra_thread_us: slope(r, base[1]),
                resume_us_median: median(&resume),
                second_restore_us_median: s,
                second_restore_per_extra_thread_us: slope(s, base[2]),
                prepare_us: prepare,
                restore_us: restore,
                resume_us: resume,
                second_restore_us: second,
            }
        })
        .collect();
    let report = Report { runs: opts.runs, container: !opts.no_container, fork_exit_us_median: median(&fork_exit), fork_exit_us: fork_exit, rows };
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    print_table(&report);
    Ok(())
}

fn print_table(r: &Report) {
    println!(
        "Threads: prepare on host a, resume on host b ({}), medians of {} runs",
        if r.container { "lean container" } else { "no container" },
        r.runs
    );
    println!(
        "{:>7} {:>10} {:>10} {:>12} {:>10} {:>12} {:>10} {:>10} {:>10}",
        "threads", "prepare ms", "µs/thread", "restore ms", "µs/thread", "2nd child ms", "µs/thread", "resume ms", "x fork"
    );
    let per = |v: Option<f64>| v.map(|v| format!("{v:.1}")).unwrap_or_else(|| "-".into());
    for row in &r.rows {
        println!(
            "{:>7} {:>10.2} {:>10} {:>12.2} {:>10} {:>12.2} {:>10} {:>10.2} {:>10.1}",
            row.threads,
            row.prepare_us_median / 1e3,
            per(row.prepare_per_extra_thread_us),
            row.restore_us_median / 1e3,
            per(row.restore_per_extra_thread_us),
            row.second_restore_us_median / 1e3,
            per(row.second_restore_per_extra_thread_us),
            row.resume_us_median / 1e3,
            row.resume_us_median / r.fork_exit_us_median
        );
    }
    println!("µs/thread: per extra thread against the one-thread row; restore: first child of a seed (fetches each thread's control block), 2nd child: page cache on host b; resume: the first child's, request to running");
    println!("baseline: local fork+exit+wait of this process {:.0} µs (median, same run); targets: prepare <= 50 µs and restore <= 100 µs per extra thread", r.fork_exit_us_median);
}
