//! `mitosis demo`: two hosts on this machine, a Python process prepared on
//! host `a`, three children of it resumed on host `b`.
//!
//! The Python program imports a few modules and builds some state before it
//! says `ready`; then it blocks reading one line. Each child continues from
//! that very read on host `b`, with its own stdin carrying its own line, so
//! it skips the start-up entirely and answers from the inherited state.

use std::fs;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use anyhow::Context;
use mitosis::{ChildEnd, Client, PagerStats, ResumeTimings};
use mitosis_testkit::real_python;

use crate::hosts::{ensure_root, host_command, Cluster, HostProcess, Seed};

/// Id of the demo's seed on host `a`.
const SEED_ID: &str = "demo-python";
/// How many children are resumed.
const CHILDREN: usize = 3;
/// How long the Python program may take to start or to answer.
const PATIENCE: Duration = Duration::from_secs(60);
/// Entries of the table the Python program builds before it is prepared.
const TABLE_ENTRIES: usize = 100_000;

/// The seed program; its argument is the number of table entries. The state
/// is built before `ready`; everything after the `readline` runs in the
/// parent and in each child alike.
const SCRIPT: &str = r#""""The mitosis demo's seed: builds state, then waits for one line."""
import hashlib
import json
import os
import statistics
import sys

table = {f"key-{i}": i * i for i in range(int(sys.argv[1]))}
digest = hashlib.sha256(json.dumps(table, sort_keys=True).encode()).hexdigest()
mean = statistics.fmean(table.values())
seed_pid = os.getpid()

print(f"ready {seed_pid}", flush=True)
line = sys.stdin.readline().strip()
links = ",".join(sorted(n for n in os.listdir("/sys/class/net") if n != "lo"))
answer = hashlib.sha256((line + digest).encode()).hexdigest()[:12]
print(
    f"{line}: pid {os.getpid()} (prepared as pid {seed_pid}), network link {links}; "
    f"{len(table)} entries of mean {mean:.6g}, JSON digest {digest[:12]}, "
    f"hash of my line with the digest {answer}",
    flush=True,
)
"#;

/// Runs the demo. Needs root and `python3`.
pub fn run(bin: &Path) -> anyhow::Result<()> {
    ensure_root("mitosis demo")?;
    let python = real_python().context("the demo needs python3 on PATH")?;
    println!("mitosis demo: remote fork of a running Python process\n");
    let cluster = Cluster::start(bin, "demo")?;
    println!(
        "1. Created two hosts on this machine, each a network namespace with a mitosis daemon:\n   \
         host a = {} ({}), host b = {} ({}), joined by a virtual link; daemons share a fresh cluster key.",
        cluster.hosts.a.ns, cluster.hosts.a.ip, cluster.hosts.b.ns, cluster.hosts.b.ip
    );
    cluster.run(|cluster| steps(cluster, &python))
}

/// Steps 2 to 5 and the summary, on a running cluster.
fn steps(cluster: &Cluster, python: &Path) -> anyhow::Result<()> {
    let script = cluster.dir.path().join("seed.py");
    fs::write(&script, SCRIPT).with_context(|| format!("writing {}", script.display()))?;
    let mut parent = start_python(cluster, python, &script)?;
    println!(
        "2. Started {} on host a (pid {}). It imported json, hashlib and statistics and built a\n   \
         {TABLE_ENTRIES}-entry table, then said `ready` after {:.1} ms (cold start) and waits for a line on stdin.",
        python.display(),
        parent.pid,
        parent.cold_start.as_secs_f64() * 1e3
    );

    let seed = Seed::prepare(&cluster.a, parent.pid, SEED_ID)?;
    print_seed(&seed);

    println!("4. Resumed {CHILDREN} children of it on host b, one after another, each with its own line on stdin:");
    let mut children = Vec::new();
    for i in 1..=CHILDREN {
        let child = resume_child(cluster, &seed, &format!("child-{i}"))?;
        child.print();
        children.push(child);
    }

    parent.process.chan.send("parent")?;
    let answer = parent.process.chan.recv(PATIENCE).context("the original Python process")?;
    println!("5. The original process on host a, given the line \"parent\", still answers:\n     {answer}");
    let status = parent.process.guard.wait_timeout(PATIENCE);

    print_summary(&parent, &seed, &children, status);
    Ok(())
}

/// Step 3: what the prepare made.
fn print_seed(seed: &Seed) {
    let info = &seed.info;
    println!(
        "3. Prepared it as seed {SEED_ID:?} on host a in {:.2} ms (daemon: {:.2} ms): {} mappings,\n   \
         {:.1} MiB mapped, {:.1} MiB resident. The Python process itself keeps running, unchanged.",
        seed.round_trip_us / 1e3,
        info.prepare_us as f64 / 1e3,
        info.vmas,
        info.mapped_bytes as f64 / 1048576.0,
        info.rss_bytes as f64 / 1048576.0
    );
    for (fd, what) in &info.closed_fds {
        println!("   note: descriptor {fd} ({what}) is closed in children");
    }
}

/// The Python program running on host `a`.
struct Parent {
    process: HostProcess,
    pid: i32,
    /// From spawning it to its `ready`.
    cold_start: Duration,
}

/// Starts the seed program on host `a` and waits for its `ready`.
fn start_python(cluster: &Cluster, python: &Path, script: &Path) -> anyhow::Result<Parent> {
    let t0 = Instant::now();
    let mut process = HostProcess::spawn(
        host_command(&cluster.hosts.a, python).arg(script).arg(TABLE_ENTRIES.to_string()),
    )?;
    let pid = process.chan.recv_number("ready", PATIENCE).context("starting the Python program")?;
    let cold_start = t0.elapsed();
    Ok(Parent { process, pid: i32::try_from(pid).context("Python's pid")?, cold_start })
}

/// What one child did.
struct ChildRun {
    input: String,
    pid: i32,
    output: String,
    errors: String,
    end: ChildEnd,
    timings: ResumeTimings,
    stats: PagerStats,
    /// From just before asking daemon `b` to resume until the child ended.
    end_to_end: Duration,
}

/// Resumes a child of `seed` on host `b` whose stdin holds `input`, and
/// collects its output and end.
fn resume_child(cluster: &Cluster, seed: &Seed, input: &str) -> anyhow::Result<ChildRun> {
    let (child_in, mut to_child) = std::io::pipe()?;
    let (from_out, child_out) = std::io::pipe()?;
    let (from_err, child_err) = std::io::pipe()?;
    writeln!(to_child, "{input}")?;
    drop(to_child);

    let t0 = Instant::now();
    let resumed = Client::connect(cluster.b.socket())?
        .resume(&cluster.a.addr(), seed.id(), [child_in.as_raw_fd(), child_out.as_raw_fd(), child_err.as_raw_fd()])
        .with_context(|| format!("resuming {input} on host b"))?;
    // Only the child keeps its ends: its output ends when it does.
    drop((child_in, child_out, child_err));
    let pid = resumed.pid;
    let timings = resumed.timings.clone();
    let stdout = std::thread::spawn(move || read_all(from_out));
    let stderr = std::thread::spawn(move || read_all(from_err));
    let (end, stats) = resumed.wait().with_context(|| format!("waiting for {input}"))?;
    let end_to_end = t0.elapsed();
    let output = stdout.join().map_err(|_| anyhow::anyhow!("stdout reader panicked"))?;
    let errors = stderr.join().map_err(|_| anyhow::anyhow!("stderr reader panicked"))?;
    Ok(ChildRun { input: input.to_string(), pid, output, errors, end, timings, stats, end_to_end })
}

/// Everything `r` yields until end of file, as text.
fn read_all(mut r: impl Read) -> String {
    let mut bytes = Vec::new();
    let _ = r.read_to_end(&mut bytes);
    String::from_utf8_lossy(&bytes).trim_end().to_string()
}

impl ChildRun {
    /// Prints what the child said and how it went.
    fn print(&self) {
        println!("   {} (pid {} on host b) said:", self.input, self.pid);
        for line in self.output.lines() {
            println!("     {line}");
        }
        for line in self.errors.lines() {
            println!("     [stderr] {line}");
        }
        println!(
            "     {}; resumed in {:.2} ms, ended {:.1} ms after the resume started; fetched {} pages ({:.1} MiB) in {} requests",
            self.end,
            self.timings.total_us as f64 / 1e3,
            self.end_to_end.as_secs_f64() * 1e3,
            self.stats.pages_fetched,
            self.stats.bytes_fetched as f64 / 1048576.0,
            self.stats.fetches
        );
    }
}

/// Prints the timings table and what happened, in plain words.
fn print_summary(parent: &Parent, seed: &Seed, children: &[ChildRun], parent_status: Option<ExitStatus>) {
    let cold_ms = parent.cold_start.as_secs_f64() * 1e3;
    println!("\nTimings (ms)");
    println!("  cold start of Python on host a (spawn -> ready): {cold_ms:>8.1}");
    println!(
        "  prepare on host a (client round trip / daemon):  {:>8.2} / {:.2}",
        seed.round_trip_us / 1e3,
        seed.info.prepare_us as f64 / 1e3
    );
    println!("  {:<8} {:>10} {:>14} {:>14} {:>8}", "child", "resume", "end-to-end", "pages fetched", "exit");
    for c in children {
        let exit = match &c.end {
            ChildEnd::Exited(code) => code.to_string(),
            other => format!("{other:?}"),
        };
        println!(
            "  {:<8} {:>10.2} {:>14.1} {:>14} {:>8}",
            c.input,
            c.timings.total_us as f64 / 1e3,
            c.end_to_end.as_secs_f64() * 1e3,
            c.stats.pages_fetched,
            exit
        );
    }

    let ok = children.iter().filter(|c| c.end == ChildEnd::Exited(0)).count();
    let fastest = children.iter().map(|c| c.end_to_end.as_secs_f64() * 1e3).fold(f64::INFINITY, f64::min);
    println!("\nWhat happened:");
    println!(
        "  A Python process started on host a and spent {cold_ms:.0} ms importing modules and building its table.\n  \
         mitosis took a snapshot of it while it waited for input (the process went on running) and\n  \
         {ok} of {} children continued from that exact point on host b: each read its own line, printed\n  \
         its own pid and the inherited table's figures, and exited. The children never re-ran the\n  \
         start-up: the fastest went from resume request to exit in {fastest:.1} ms, fetching only the\n  \
         memory pages it touched from host a over the network.",
        children.len()
    );
    match parent_status {
        Some(s) => println!("  The original Python process answered its own line and exited ({s})."),
        None => println!("  The original Python process did not exit in time; it is killed now."),
    }
    println!("  Stopping the daemons (dropping the seed) and removing both hosts.");
}
