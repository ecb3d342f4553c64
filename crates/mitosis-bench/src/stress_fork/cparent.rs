//! The C parent of the stress programs (`programs/stress_parent.c`):
//! compiled at run time with the system `cc`, started on host `a` with its
//! memory filled with the pattern of a key, filled again on request; and
//! what its children answer (`ok key=...` or `WRONG ...`).

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context};

use crate::hosts::{host_command, Cluster, HostProcess};

/// The C parent's source, written into the run's directory and compiled there.
const PARENT_SOURCE: &str = include_str!("../../programs/stress_parent.c");

/// Writes the C parent's source into `dir` and compiles it with `cc`.
pub(crate) fn compile_parent(dir: &Path) -> anyhow::Result<PathBuf> {
    compile_c(dir, "stress_parent", PARENT_SOURCE, &[])
}

/// Writes C program `name`'s `source` into `dir` and compiles it there with
/// the system `cc` (`-O2 -Wall` and `flags`); returns the executable.
pub(crate) fn compile_c(dir: &Path, name: &str, source: &str, flags: &[&str]) -> anyhow::Result<PathBuf> {
    let src = dir.join(format!("{name}.c"));
    let out = dir.join(name);
    std::fs::write(&src, source).with_context(|| format!("writing {}", src.display()))?;
    let res = Command::new("cc")
        .args(["-O2", "-Wall"])
        .args(flags)
        .arg("-o")
        .arg(&out)
        .arg(&src)
        .output()
        .context("running cc, the system C compiler (install gcc or clang)")?;
    ensure!(res.status.success(), "compiling {}: {}", src.display(), String::from_utf8_lossy(&res.stderr));
    Ok(out)
}

/// A C parent running on host `a`, its memory filled with the pattern of `key`.
pub(crate) struct CParent {
    proc: HostProcess,
    pub pid: i32,
    pub key: u64,
}

impl CParent {
    pub(crate) fn start(cluster: &Cluster, program: &Path, mib: u64, key: u64) -> anyhow::Result<CParent> {
        let mut proc = HostProcess::spawn(host_command(&cluster.hosts.a, program).args([mib.to_string(), format!("{key:x}")]))?;
        let pid = proc.chan.recv_number("ready", Duration::from_secs(60)).context("the C parent's start")? as i32;
        Ok(CParent { proc, pid, key })
    }

    /// Fills the memory again with the pattern of `key`.
    pub(crate) fn fill(&mut self, key: u64) -> anyhow::Result<()> {
        self.proc.chan.send(&format!("fill {key:x}"))?;
        let line = self.proc.chan.recv(Duration::from_secs(60)).context("the C parent's answer to fill")?;
        ensure!(line == format!("filled {key:016x}"), "the C parent answered {line:?} to fill {key:x}");
        self.key = key;
        Ok(())
    }

    /// Lets it exit (its process group is killed anyway when dropped).
    pub(crate) fn exit(mut self) {
        let _ = self.proc.chan.send("exit");
        let _ = self.proc.guard.wait_timeout(Duration::from_secs(5));
    }
}

/// A key from the kernel's random bytes.
pub(crate) fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)).expect("reading /dev/urandom");
    u64::from_le_bytes(b)
}

/// The line a C child gets on stdin: check against `key`.
pub(crate) fn verify_line(key: u64) -> String {
    format!("verify {key:x}\n")
}

/// What a C child printed: `Ok(key)` for `ok key=<hex> ...`, else the reason.
pub(crate) fn c_verdict(stdout: &str) -> Result<u64, String> {
    let line = stdout.lines().find(|l| l.starts_with("ok ") || l.starts_with("WRONG"));
    match line {
        Some(l) if l.starts_with("ok key=") => {
            let hex = l["ok key=".len()..].split_whitespace().next().unwrap_or("");
            u64::from_str_radix(hex, 16).map_err(|_| format!("unreadable answer {l:?}"))
        }
        Some(l) => Err(l.to_string()),
        None => Err(format!("no verdict in its output {stdout:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c_verdicts() {
        assert_eq!(c_verdict("ok key=00000000000000ff pages=256\n"), Ok(255));
        assert!(c_verdict("WRONG 3 of 8 words ...\n").unwrap_err().starts_with("WRONG"));
        assert!(c_verdict("").is_err());
    }
}
