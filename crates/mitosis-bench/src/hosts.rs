//! The setting shared by the benchmarks and the demo: two hosts (network
//! namespaces) with a daemon each, seeds that are dropped when done with,
//! programs started inside a host, and line-by-line conversations with them.
//!
//! Everything here cleans up on drop, also when a benchmark fails half-way.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use mitosis::{Client, SeedInfo};
use serde::Serialize;
use mitosis_testkit::{wait_until, write_key, Daemon, Host, ProcessGuard, TestDir, TwoHosts};

/// Fails unless the process runs as root (namespaces and ptrace need it).
pub fn ensure_root(what: &str) -> anyhow::Result<()> {
    ensure!(mitosis_sys::process::euid() == 0, "{what} needs root: it creates network namespaces and runs daemons");
    Ok(())
}

/// Two hosts `a` and `b`, each running a `mitosis daemon`, sharing a fresh
/// cluster key kept in a temporary directory.
///
/// Dropping it stops both daemons (with their seeds and children), deletes
/// the namespaces and removes the directory, in that order (field order).
pub struct Cluster {
    /// The daemon of host `a`, where seeds are prepared.
    pub a: Daemon,
    /// The daemon of host `b`, where children are resumed.
    pub b: Daemon,
    pub hosts: TwoHosts,
    /// Holds the key, the daemons' sockets and logs, and any scratch files.
    pub dir: TestDir,
}

impl Cluster {
    /// Creates the hosts and starts a daemon (the binary `bin`) in each.
    /// `name` labels the temporary directory.
    pub fn start(bin: &Path, name: &str) -> anyhow::Result<Cluster> {
        Cluster::start_with_args(bin, name, &[])
    }

    /// [`Cluster::start`] with extra arguments for both daemons.
    pub fn start_with_args(bin: &Path, name: &str, daemon_args: &[&str]) -> anyhow::Result<Cluster> {
        Cluster::start_in(bin, TestDir::new(name), daemon_args)
    }

    /// [`Cluster::start_with_args`] keeping the key, sockets and logs in
    /// `dir` (one outside /tmp when containers must see the sockets). An
    /// argument [`MEMNODE_A`] stands for where a memory node of host a
    /// listens (`mitosis_testkit::Memnode`).
    pub fn start_in(bin: &Path, dir: TestDir, daemon_args: &[&str]) -> anyhow::Result<Cluster> {
        let hosts = TwoHosts::new().context("creating the two hosts")?;
        let memnode_a = format!("{}:{}", hosts.a.ip, mitosis_testkit::MEMNODE_PORT);
        let daemon_args: Vec<&str> = daemon_args.iter().map(|a| if *a == MEMNODE_A { memnode_a.as_str() } else { a }).collect();
        let daemon_args = daemon_args.as_slice();
        let key = write_key(&dir, "cluster.key", &random_key()?);
        let a = Daemon::start_with_args(bin, &hosts.a, &dir, "a", &key, daemon_args).context("starting the daemon of host a")?;
        let b = Daemon::start_with_args(bin, &hosts.b, &dir, "b", &key, daemon_args).context("starting the daemon of host b")?;
        Ok(Cluster { a, b, hosts, dir })
    }

    /// Runs `f` on the cluster; if it fails, prints the last lines of both
    /// daemons' logs to stderr first (the logs go with the cluster).
    pub fn run<T>(&self, f: impl FnOnce(&Cluster) -> anyhow::Result<T>) -> anyhow::Result<T> {
        let result = f(self);
        if result.is_err() {
            for (name, daemon) in [("a", &self.a), ("b", &self.b)] {
                eprintln!("--- last lines of the log of daemon {name} ---");
                let log = daemon.log();
                let lines: Vec<&str> = log.lines().collect();
                for line in &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..] {
                    eprintln!("{line}");
                }
            }
        }
        result
    }
}

/// A daemon argument that stands for the address of a memory node in host a.
pub const MEMNODE_A: &str = "{memnode-a}";

/// Lines of each daemon's log shown when a run fails.
const LOG_TAIL_LINES: usize = 20;

/// 32 random bytes from the kernel, hex-encoded: a fresh cluster key.
fn random_key() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes)).context("reading /dev/urandom")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// A command that runs `program` inside `host`, with stdin and stdout piped
/// to us (stderr inherited).
pub fn host_command(host: &Host, program: impl AsRef<OsStr>) -> Command {
    let prefix = host.exec_prefix();
    let mut cmd = Command::new(&prefix[0]);
    cmd.args(&prefix[1..]).arg(program).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit());
    cmd
}

/// A program started inside a host, killed with its process group on drop,
/// and the conversation with it over its stdin and stdout.
pub struct HostProcess {
    pub guard: ProcessGuard,
    pub chan: Channel,
}

impl HostProcess {
    /// Spawns `cmd` (made by [`host_command`]) and takes its pipes.
    pub fn spawn(cmd: &mut Command) -> anyhow::Result<HostProcess> {
        let mut guard = ProcessGuard::spawn(cmd).with_context(|| format!("spawning {cmd:?}"))?;
        let child = guard.child_mut();
        let stdin = child.stdin.take().context("the child's stdin is not piped")?;
        let stdout = child.stdout.take().context("the child's stdout is not piped")?;
        Ok(HostProcess { guard, chan: Channel::new(stdin, stdout) })
    }
}

/// A seed prepared on a daemon; dropped from it when this value is dropped.
pub struct Seed {
    socket: PathBuf,
    /// What the daemon reported.
    pub info: SeedInfo,
    /// Client-side round trip of the prepare request, in microseconds.
    pub round_trip_us: f64,
    /// Whether it has been dropped from the daemon already.
    dropped: bool,
}

impl Seed {
    /// Prepares process `pid` as seed `id` on `daemon`, timing the request.
    pub fn prepare(daemon: &Daemon, pid: i32, id: &str) -> anyhow::Result<Seed> {
        let t0 = Instant::now();
        let info = Client::connect(daemon.socket())?.prepare(pid, id, true).with_context(|| format!("preparing pid {pid} as seed {id}"))?;
        let round_trip_us = t0.elapsed().as_secs_f64() * 1e6;
        Ok(Seed { socket: daemon.socket().to_path_buf(), info, round_trip_us, dropped: false })
    }

    /// The seed's id.
    pub fn id(&self) -> &str {
        &self.info.id
    }

    /// Drops the seed and waits up to `timeout` until its snapshot process
    /// has exited, so that freeing the snapshot's memory (which the daemon
    /// leaves to the kernel after a SIGKILL) does not overlap what is
    /// measured next.
    pub fn drop_and_wait(mut self, timeout: Duration) -> anyhow::Result<()> {
        self.dropped = true;
        Client::connect(&self.socket)?.drop_seed(&self.info.id).with_context(|| format!("dropping seed {}", self.info.id))?;
        let pid = self.info.snapshot_pid;
        ensure!(wait_until(timeout, || has_exited(pid)), "the snapshot {pid} of seed {} outlived its drop by {timeout:?}", self.info.id);
        Ok(())
    }
}

impl Drop for Seed {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        let dropped = Client::connect(&self.socket).and_then(|mut c| c.drop_seed(&self.info.id));
        if let Err(e) = dropped {
            eprintln!("warning: could not drop seed {}: {e}", self.info.id);
        }
    }
}

/// A `pattern` workload prepared on host a whose children, resumed on host
/// b in a lean container, check every byte of their memory (and their heap
/// and stack) against the seed's own check: the real page path, end to end.
/// Dropping it drops the seed, then kills the workload.
pub struct CheckedSeed {
    seed: Seed,
    workload: HostProcess,
    /// The seed's own `verify` answer, which every child must give.
    want: String,
}

impl CheckedSeed {
    /// Starts a workload of `mb` MiB on host a with `bin` and prepares it as seed `id`.
    pub fn prepare(cluster: &Cluster, bin: &Path, mb: u64, id: &str) -> anyhow::Result<CheckedSeed> {
        let mut workload = HostProcess::spawn(host_command(&cluster.hosts.a, bin).args(["workload", "pattern", "--mb", &mb.to_string()]))?;
        let pid = workload.chan.recv_number("ready", Duration::from_secs(60)).context("workload start")? as i32;
        workload.chan.send("verify")?;
        let want = workload.chan.recv(Duration::from_secs(60)).context("the seed's own verify")?;
        ensure!(want.starts_with("verify ok "), "the seed's own memory check: {want}");
        let seed = Seed::prepare(&cluster.a, pid, id)?;
        Ok(CheckedSeed { seed, workload, want })
    }

    /// Resumes one child on host b and fails unless it exits 0 having found
    /// its memory exactly as the seed's.
    pub fn resume_checked(&self, cluster: &Cluster) -> anyhow::Result<()> {
        use std::os::fd::AsRawFd;
        let (stdin_rx, mut stdin_tx) = std::io::pipe()?;
        stdin_tx.write_all(b"verify\nexit 0\n")?;
        drop(stdin_tx);
        let (mut stdout_rx, stdout_tx) = std::io::pipe()?;
        let options = mitosis::ResumeOptions { container: Some(mitosis::ContainerSpec::default()), ..Default::default() };
        let resumed = Client::connect(cluster.b.socket())?.resume_with(
            &cluster.a.addr(),
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

    /// Drops the seed (waiting for its snapshot to go) and ends the workload.
    pub fn finish(mut self) -> anyhow::Result<()> {
        let CheckedSeed { seed, ref mut workload, .. } = self;
        seed.drop_and_wait(Duration::from_secs(30))?;
        workload.chan.send("exit 0")
    }
}

/// A process's open descriptors, threads and resident memory, from /proc.
#[derive(Serialize, Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct ProcessUsage {
    pub fds: u64,
    pub threads: u64,
    pub rss_kb: u64,
}

impl ProcessUsage {
    /// Reads them for process `pid` (an error once it is gone).
    pub fn of(pid: i32) -> anyhow::Result<ProcessUsage> {
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).with_context(|| format!("process {pid} is gone"))?.count() as u64;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).with_context(|| format!("process {pid} is gone"))?;
        let field = |name: &str| -> u64 {
            status.lines().find(|l| l.starts_with(name)).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse().ok()).unwrap_or(0)
        };
        Ok(ProcessUsage { fds, threads: field("Threads:"), rss_kb: field("VmRSS:") })
    }
}

/// Whether process `pid` has exited (is gone or a zombie, its memory freed).
fn has_exited(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which ends at the last ')'.
        Ok(stat) => matches!(stat.rsplit(')').next().map(str::trim_start), Some(rest) if rest.starts_with(['Z', 'X'])),
        Err(_) => true,
    }
}

/// Line-based conversation with a program: commands go to its stdin,
/// answers are read from its stdout, each read bounded by a timeout.
pub struct Channel {
    to: File,
    from: File,
    /// Bytes read but not yet returned as a line.
    pending: Vec<u8>,
}

impl Channel {
    /// Talks through `to` (the program's stdin) and `from` (its stdout).
    pub fn new(to: impl Into<OwnedFd>, from: impl Into<OwnedFd>) -> Channel {
        Channel { to: File::from(to.into()), from: File::from(from.into()), pending: Vec::new() }
    }

    /// Writes one line.
    pub fn send(&mut self, line: &str) -> anyhow::Result<()> {
        writeln!(self.to, "{line}").with_context(|| format!("sending {line:?}"))
    }

    /// Reads one line (without its newline); fails on end of file or when
    /// none comes within `timeout`.
    pub fn recv(&mut self, timeout: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=end).collect();
                return Ok(String::from_utf8_lossy(&line[..end]).into_owned());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !readable(&self.from, left)? {
                bail!("no answer within {timeout:?}");
            }
            let mut chunk = [0u8; 4096];
            let n = self.from.read(&mut chunk).context("reading an answer")?;
            if n == 0 {
                bail!("the program closed its output (it died?)");
            }
            self.pending.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads a line `<word> <number>` and returns the number.
    pub fn recv_number(&mut self, word: &str, timeout: Duration) -> anyhow::Result<u64> {
        let line = self.recv(timeout).with_context(|| format!("waiting for `{word}`"))?;
        match line.split_whitespace().collect::<Vec<_>>().as_slice() {
            [w, n] if *w == word => n.parse().with_context(|| format!("bad number in {line:?}")),
            _ => bail!("expected `{word} <number>`, got {line:?}"),
        }
    }

    /// Sends `cmd` and returns the number of the `<word> <number>` answer.
    pub fn ask_number(&mut self, cmd: &str, word: &str, timeout: Duration) -> anyhow::Result<u64> {
        self.send(cmd)?;
        self.recv_number(word, timeout).with_context(|| format!("answer to {cmd:?}"))
    }
}

/// Waits until `f` can be read without blocking (data or end of file), for
/// at most `timeout`; returns whether it can.
fn readable(f: &File, timeout: Duration) -> anyhow::Result<bool> {
    mitosis_sys::poll::wait_readable(f, timeout).context("poll")
}
