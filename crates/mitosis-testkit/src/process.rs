//! Child processes that are cleaned up with their whole process group.

use std::fs::File;
use std::io;
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use mitosis_sys::process;

use crate::{Host, TestDir};

/// Port every test daemon listens on (each host has its own address).
const DAEMON_PORT: u16 = 7070;

/// A child process leading its own process group. On drop the whole group
/// gets SIGKILL and the child is reaped.
///
/// The child is never reaped behind the caller's back before drop: while it
/// is an unreaped zombie its pid, hence its process group id, cannot be
/// reused, so signalling the group is always safe.
#[derive(Debug)]
pub struct ProcessGuard {
    child: Child,
}

impl ProcessGuard {
    /// Spawns `cmd` as the leader of a new process group.
    pub fn spawn(cmd: &mut Command) -> io::Result<ProcessGuard> {
        let child = cmd.process_group(0).spawn()?;
        Ok(ProcessGuard { child })
    }

    /// The child's pid (also its process group id).
    pub fn pid(&self) -> i32 {
        // Linux pids fit an i32 (pid_max is at most 2^22).
        i32::try_from(self.child.id()).unwrap_or(i32::MAX)
    }

    /// The underlying child, e.g. to take its pipes. If the caller reaps it
    /// through this, drop no longer signals the group.
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Waits up to `timeout` for the child to exit and returns its status,
    /// or `None` if it is still running. The child stays unreaped (a zombie)
    /// until drop.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.peek_exit() {
                Ok(Some(status)) => return Some(status),
                Ok(None) => {}
                // Already reaped through `child_mut`: `Child` cached the status.
                Err(_) => return self.child.try_wait().ok().flatten(),
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The child's exit status if it has exited, without reaping it.
    /// Fails (ECHILD) once it has been reaped.
    fn peek_exit(&self) -> io::Result<Option<ExitStatus>> {
        // WNOWAIT leaves the child waitable, so `Child`'s own bookkeeping is
        // unaffected.
        let status = process::peek_exit(self.child.id()).map_err(|e| io::Error::from_raw_os_error(e.errno))?;
        Ok(status.map(ExitStatus::from_raw))
    }

    /// Sends `sig` to the child's process group, unless the child has
    /// already been reaped (then the group id may belong to someone else).
    fn signal_group(&self, sig: libc::c_int) {
        if self.peek_exit().is_ok() {
            // The negative pid names our child's own group, which is still
            // reserved by the unreaped child.
            let _ = process::kill(-self.pid(), sig);
        }
    }

    /// SIGKILLs the whole group and reaps the child.
    fn kill_and_reap(&mut self) {
        self.signal_group(libc::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Drop for ProcessGuard {
    fn drop(&mut self) {
        self.kill_and_reap();
    }
}

/// A `mitosis daemon` running inside a test [`Host`], in its own process
/// group, logging to `<dir>/<name>.log`. Dropping it sends SIGTERM to the
/// group, waits up to 2 s, then SIGKILLs and reaps.
#[derive(Debug)]
pub struct Daemon {
    proc: ProcessGuard,
    socket: PathBuf,
    log: PathBuf,
    addr: String,
}

impl Daemon {
    /// Starts `<bin> daemon --listen <ip>:7070 --socket <dir>/<name>.sock
    /// --key-file <key_file> --log-level debug` inside `host` and waits (up
    /// to 10 s) until its control socket accepts connections.
    pub fn start(
        bin: &Path,
        host: &Host,
        dir: &TestDir,
        name: &str,
        key_file: &Path,
    ) -> anyhow::Result<Daemon> {
        Self::start_with_args(bin, host, dir, name, key_file, &[])
    }

    /// Like [`Daemon::start`], with `extra_args` appended to the command line.
    pub fn start_with_args(
        bin: &Path,
        host: &Host,
        dir: &TestDir,
        name: &str,
        key_file: &Path,
        extra_args: &[&str],
    ) -> anyhow::Result<Daemon> {
        let socket = dir.path().join(format!("{name}.sock"));
        let log = dir.path().join(format!("{name}.log"));
        let addr = format!("{}:{DAEMON_PORT}", host.ip);
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;

        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &host.ns])
            .arg(bin)
            .args(["daemon", "--listen", &addr, "--socket"])
            .arg(&socket)
            .arg("--key-file")
            .arg(key_file)
            .args(["--log-level", "debug"])
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        // A test or benchmark killed before its guards run must not leave the
        // daemon running (its janitor then ends its snapshots).
        process::parent_death_signal_on_spawn(&mut cmd, libc::SIGTERM);
        let proc = ProcessGuard::spawn(&mut cmd)
            .with_context(|| format!("spawning daemon {name} ({})", bin.display()))?;
        let mut daemon = Daemon {
            proc,
            socket,
            log,
            addr,
        };

        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if UnixStream::connect(&daemon.socket).is_ok() {
                return Ok(daemon);
            }
            if let Some(status) = daemon.proc.wait_timeout(Duration::ZERO) {
                bail!(
                    "daemon {name} exited during startup ({status}); log:\n{}",
                    daemon.log()
                );
            }
            if Instant::now() >= deadline {
                daemon.kill_hard();
                bail!(
                    "daemon {name} did not open {} within 10 s; log:\n{}",
                    daemon.socket.display(),
                    daemon.log()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Path of the daemon's control socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The daemon's network address, `<ip>:7070`.
    pub fn addr(&self) -> String {
        self.addr.clone()
    }

    /// The daemon's log (stdout and stderr) so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The daemon's pid (also its process group id).
    pub fn pid(&self) -> i32 {
        self.proc.pid()
    }

    /// The pid of the daemon's janitor (the helper that cleans up after a
    /// killed daemon): the one child of the daemon that leads a session of
    /// its own (the janitor leaves the daemon's; the zygote does not).
    pub fn janitor_pid(&self) -> Option<i32> {
        let pid = self.pid();
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
        let children: Vec<i32> = tasks
            .flatten()
            .flat_map(|t| std::fs::read_to_string(t.path().join("children")).unwrap_or_default().split_whitespace().filter_map(|c| c.parse().ok()).collect::<Vec<i32>>())
            .collect();
        children.into_iter().find(|&c| {
            // `pid (comm) state ppid pgrp session ...`
            let stat = std::fs::read_to_string(format!("/proc/{c}/stat")).unwrap_or_default();
            let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
            fields.get(3).and_then(|s| s.parse::<i32>().ok()) == Some(c)
        })
    }

    /// SIGKILLs the daemon's whole process group and reaps it, simulating a
    /// crash.
    pub fn kill_hard(&mut self) {
        self.proc.kill_and_reap();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.proc.signal_group(libc::SIGTERM);
        self.proc.wait_timeout(Duration::from_secs(2));
        // `self.proc`'s own drop now SIGKILLs whatever is left and reaps.
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wait_until;

    fn alive(pid: i32) -> bool {
        // Zombies count as dead.
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                !s.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
            .unwrap_or(false)
    }

    #[test]
    fn guard_kills_whole_group_on_drop() {
        let dir = TestDir::new("guard");
        let pidfile = dir.path().join("grandchild");
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!("sleep 100 & echo $! > {}; wait", pidfile.display()));
        let mut guard = ProcessGuard::spawn(&mut cmd).unwrap();
        assert!(wait_until(Duration::from_secs(5), || {
            std::fs::read_to_string(&pidfile).is_ok_and(|s| s.ends_with('\n'))
        }));
        let grandchild: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(guard.wait_timeout(Duration::from_millis(20)).is_none());
        assert!(alive(grandchild));
        drop(guard);
        assert!(wait_until(Duration::from_secs(5), || !alive(grandchild)));
    }

    /// Writes an executable stand-in for the mitosis binary.
    fn fake_bin(dir: &TestDir, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.path().join("fake-mitosis");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn daemon_starts_in_host_and_stops_on_drop() {
        let Some(python) = crate::real_python() else {
            return;
        };
        if !crate::require_root() {
            return;
        }
        let hosts = crate::TwoHosts::new().unwrap();
        let dir = TestDir::new("daemon");
        let key = crate::write_key(&dir, "key", "k");
        // Prints its arguments and network namespace, then serves the socket
        // named after --socket until killed.
        let bin = fake_bin(
            &dir,
            &format!(
                "echo \"args: $*\"; ip -o addr show; exec {} -c '\
import socket, sys\n\
s = socket.socket(socket.AF_UNIX)\n\
s.bind(sys.argv[sys.argv.index(\"--socket\") + 1])\n\
s.listen()\n\
while True: s.accept()\n' \"$@\"",
                python.display()
            ),
        );
        let d = Daemon::start_with_args(&bin, &hosts.b, &dir, "b", &key, &["--extra"]).unwrap();
        assert_eq!(d.addr(), format!("{}:7070", hosts.b.ip));
        assert!(d.socket().ends_with("b.sock"));
        let log = d.log();
        let expected = format!(
            "args: daemon --listen {}:7070 --socket {} --key-file {} --log-level debug --extra",
            hosts.b.ip,
            d.socket().display(),
            key.display()
        );
        assert!(log.contains(&expected), "{log}");
        assert!(log.contains(&hosts.b.ip), "not inside host b: {log}");
        let pid = d.pid();
        assert!(alive(pid));
        drop(d);
        assert!(!alive(pid));
    }

    #[test]
    fn daemon_startup_failure_reports_log() {
        if !crate::require_root() {
            return;
        }
        let hosts = crate::TwoHosts::new().unwrap();
        let dir = TestDir::new("daemon-fail");
        let key = crate::write_key(&dir, "key", "k");
        let bin = fake_bin(&dir, "echo 'bad key file' >&2; exit 2");
        let err = Daemon::start(&bin, &hosts.a, &dir, "a", &key).unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("exited during startup") && msg.contains("bad key file"),
            "{msg}"
        );
    }

    #[test]
    fn wait_timeout_reports_exit_status() {
        let mut guard = ProcessGuard::spawn(Command::new("sh").args(["-c", "exit 3"])).unwrap();
        let status = guard.wait_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(status.code(), Some(3));
        // Still the same answer, and reaping through child_mut is respected.
        assert_eq!(guard.wait_timeout(Duration::ZERO).unwrap().code(), Some(3));
        assert_eq!(guard.child_mut().wait().unwrap().code(), Some(3));
        assert_eq!(guard.wait_timeout(Duration::ZERO).unwrap().code(), Some(3));

        let mut guard = ProcessGuard::spawn(Command::new("sleep").arg("100")).unwrap();
        // The pid is our unreaped child.
        process::kill(guard.pid(), libc::SIGKILL).unwrap();
        let status = guard.wait_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL));
    }
}
