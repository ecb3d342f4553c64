//! A `mitosis memnode` running inside a test [`Host`].

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use mitosis_sys::process;

use crate::{Host, ProcessGuard, TestDir};

/// Port every test memory node listens on (each host has its own address).
pub const MEMNODE_PORT: u16 = 7080;

/// A `mitosis memnode` inside a test host, in its own process group, logging
/// to `<dir>/<name>.log`; killed and reaped on drop (its pages go with it).
#[derive(Debug)]
pub struct Memnode {
    proc: ProcessGuard,
    log: PathBuf,
    addr: String,
}

impl Memnode {
    /// Starts `<bin> memnode --listen <ip>:7080 --key-file <key_file>
    /// --log-level debug <args>` inside `host` (`args` gives `--capacity` and
    /// any other option) and waits (up to 10 s) until it serves.
    pub fn start(bin: &Path, host: &Host, dir: &TestDir, name: &str, key_file: &Path, args: &[&str]) -> anyhow::Result<Memnode> {
        let log = dir.path().join(format!("{name}.log"));
        let addr = format!("{}:{MEMNODE_PORT}", host.ip);
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &host.ns])
            .arg(bin)
            .args(["memnode", "--listen", &addr, "--key-file"])
            .arg(key_file)
            .args(["--log-level", "debug"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        process::parent_death_signal_on_spawn(&mut cmd, libc::SIGKILL);
        let mut proc = ProcessGuard::spawn(&mut cmd).with_context(|| format!("spawning memory node {name} ({})", bin.display()))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            // Logged once it is bound, before it accepts.
            if text.contains("memory node serving") {
                return Ok(Memnode { proc, log, addr });
            }
            if let Some(status) = proc.wait_timeout(Duration::ZERO) {
                bail!("memory node {name} exited during startup ({status}); log:\n{text}");
            }
            if Instant::now() >= deadline {
                bail!("memory node {name} did not start within 10 s; log:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Its address, `<ip>:7080`.
    pub fn addr(&self) -> String {
        self.addr.clone()
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        self.proc.pid()
    }

    /// Whether it still runs.
    pub fn running(&mut self) -> bool {
        self.proc.wait_timeout(Duration::ZERO).is_none()
    }
}
