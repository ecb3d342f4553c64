//! Conversations with programs under test: started with piped stdio in
//! their own process group (killed on drop), read line by line, with
//! timeouts everywhere.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::ProcessGuard;

/// Generous bound for one step of a test (a resume, a prepare, a verify).
pub const STEP: Duration = Duration::from_secs(30);

/// A finished command: status and everything it printed.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
    pub fn lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }
    /// The only stdout line starting with `prefix`; panics unless there is exactly one.
    pub fn line(&self, prefix: &str) -> &str {
        let found: Vec<&str> = self.stdout.lines().filter(|l| l.starts_with(prefix)).collect();
        assert_eq!(found.len(), 1, "expected one line starting with {prefix:?}:\n{self}");
        found[0]
    }
}

impl std::fmt::Display for Finished {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "status {}\n--- stdout ---\n{}--- stderr ---\n{}", self.status, self.stdout, self.stderr)
    }
}

/// A running program with piped stdio, in its own process group (killed on drop).
///
/// Stdout is read line by line by a thread; stderr is collected by another.
/// Neither thread is ever joined, so a descriptor kept open by some other
/// process (a seed's snapshot holds copies of its target's pipes) cannot hang a test.
pub struct Proc {
    pub name: String,
    guard: ProcessGuard,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    /// Every stdout line received so far.
    pub seen: Vec<String>,
    stdout_closed: bool,
    stderr: Arc<Mutex<Vec<u8>>>,
    stderr_done: Arc<Mutex<bool>>,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command) -> Proc {
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut guard = ProcessGuard::spawn(cmd).unwrap_or_else(|e| panic!("spawning {name}: {e}"));
        let child = guard.child_mut();
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let mut stderr_pipe = child.stderr.take().expect("piped stderr");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            loop {
                let mut buf = Vec::new();
                match r.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        let s = String::from_utf8_lossy(&buf).trim_end_matches('\n').to_string();
                        if tx.send(s).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let stderr_done = Arc::new(Mutex::new(false));
        let (e, d) = (stderr.clone(), stderr_done.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                match stderr_pipe.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => e.lock().unwrap().extend_from_slice(&buf[..n]),
                }
            }
            *d.lock().unwrap() = true;
        });
        Proc {
            name: name.to_string(),
            guard,
            stdin,
            lines,
            seen: Vec::new(),
            stdout_closed: false,
            stderr,
            stderr_done,
        }
    }

    pub fn pid(&self) -> i32 {
        self.guard.pid()
    }

    /// Writes `s` to the program's stdin. A broken pipe is ignored (the
    /// program may have exited; the caller checks its output and status).
    pub fn send(&mut self, s: &str) {
        if let Some(stdin) = self.stdin.as_mut() {
            let _ = stdin.write_all(s.as_bytes()).and_then(|()| stdin.flush());
        }
    }

    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Everything written to stderr so far.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// What the program has shown so far, for failure messages.
    pub fn describe(&self) -> String {
        format!("{}: stdout so far:\n{}\nstderr so far:\n{}", self.name, self.seen.join("\n"), self.stderr())
    }

    /// The next stdout line, or `None` at end of file or after `timeout`.
    pub fn line(&mut self, timeout: Duration) -> Option<String> {
        if self.stdout_closed {
            return None;
        }
        match self.lines.recv_timeout(timeout) {
            Ok(l) => {
                self.seen.push(l.clone());
                Some(l)
            }
            Err(RecvTimeoutError::Disconnected) => {
                self.stdout_closed = true;
                None
            }
            Err(RecvTimeoutError::Timeout) => None,
        }
    }

    /// The next stdout line, which must start with `prefix`; panics otherwise.
    pub fn expect_prefix(&mut self, prefix: &str, timeout: Duration) -> String {
        match self.line(timeout) {
            Some(l) if l.starts_with(prefix) => l,
            Some(l) => panic!("expected a line starting with {prefix:?}, got {l:?}\n{}", self.describe()),
            None => {
                panic!("no line starting with {prefix:?} within {timeout:?} (or end of output)\n{}", self.describe())
            }
        }
    }

    /// The next stdout line, which must be `want`; panics otherwise.
    pub fn expect_line(&mut self, want: &str, timeout: Duration) {
        match self.line(timeout) {
            Some(l) if l == want => {}
            got => panic!("expected {want:?}, got {got:?}\n{}", self.describe()),
        }
    }

    /// Waits until stderr contains `needle`; panics after `timeout`.
    pub fn expect_stderr(&self, needle: &str, timeout: Duration) {
        let ok = crate::wait_until(timeout, || self.stderr().contains(needle));
        assert!(ok, "no {needle:?} on stderr\n{}", self.describe());
    }

    /// Sends `cmd` (a line) and returns the next line, which must start with `prefix`.
    pub fn ask(&mut self, cmd: &str, prefix: &str) -> String {
        self.send(&format!("{cmd}\n"));
        self.expect_prefix(prefix, STEP)
    }

    /// Sends `verify` and returns the sum of `verify ok <sum>`; panics on anything else.
    pub fn verify(&mut self) -> String {
        let l = self.ask("verify", "verify ok ");
        l["verify ok ".len()..].to_string()
    }

    /// Waits up to `timeout` for the program to exit; panics if it does not.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        match self.guard.wait_timeout(timeout) {
            Some(s) => s,
            None => panic!("{} did not exit within {timeout:?}\n{}", self.name, self.describe()),
        }
    }

    /// Waits for the exit and returns the status with the stdout lines not
    /// read yet (through [`Proc::line`] and friends) and all of stderr.
    /// Dropping the `Proc` then kills its process group.
    pub fn finish(mut self, timeout: Duration) -> Finished {
        self.wait_output(timeout)
    }

    /// [`Proc::finish`] without dropping the process group (what the program
    /// left in it, such as seeds' snapshots, stays until the `Proc` goes).
    pub fn wait_output(&mut self, timeout: Duration) -> Finished {
        let already_read = self.seen.len();
        let status = self.wait(timeout);
        // Everything the program wrote is in the pipe by now, but the pipe
        // may stay open after it exits (a seed's snapshot holds a copy of
        // its target's descriptors): read until end of file or until nothing
        // more comes for a moment, not until the pipe closes.
        let deadline = Instant::now() + Duration::from_secs(2);
        while !self.stdout_closed && Instant::now() < deadline {
            if self.line(Duration::from_millis(100)).is_none() {
                break;
            }
        }
        crate::wait_until(Duration::from_millis(100), || *self.stderr_done.lock().unwrap());
        let mut stdout = self.seen[already_read..].join("\n");
        if !stdout.is_empty() {
            stdout.push('\n');
        }
        Finished { status, stdout, stderr: self.stderr() }
    }

    /// Whether the program is still running (it has not exited).
    pub fn running(&mut self) -> bool {
        self.guard.wait_timeout(Duration::ZERO).is_none()
    }
}

