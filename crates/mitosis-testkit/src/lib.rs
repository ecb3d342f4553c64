//! Hosts on one machine, for mitosis's end-to-end tests, benchmarks and demo.
//!
//! It owns everything a test (or `mitosis bench` / `mitosis demo`) needs
//! around the code under test, and nothing of the product itself:
//!
//! * **temp dirs** — [`TestDir`], a unique directory under `/tmp` that is
//!   removed when the test passes and kept for post-mortem when it panics;
//! * **test hosts** — [`TwoHosts`], two private network namespaces joined by
//!   a veth pair, each seen as a [`Host`] with its own address, and [`Star`],
//!   a center and several leaves joined by a bridge in the center;
//! * **daemon processes** — [`Daemon`], a `mitosis daemon` started inside a
//!   [`Host`] and stopped (SIGTERM, then SIGKILL) when dropped, and
//!   [`Memnode`], a `mitosis memnode`, killed when dropped;
//! * **process cleanup** — [`ProcessGuard`], a child in its own process
//!   group whose whole group is killed and reaped when dropped;
//! * **etcd clusters** — [`EtcdCluster`], N etcd members on loopback
//!   ports with their data on tmpfs, killed and removed when dropped;
//! * **faults** — [`LinkCut`], [`SlowLink`], [`Paused`] and [`SmallTmpfs`]:
//!   a cut or slow (`tc tbf`) test link, a hung process and a full
//!   filesystem, undone on drop;
//! * **skips** — [`skip`] and [`require_root`]: a test that cannot run here
//!   is recorded as skipped (see `scripts/test`), and under CI a root-only
//!   test without root fails.
//!
//! # Network safety
//!
//! The testkit must never touch addresses outside the machine. Every address
//! it assigns (`10.213.<k>.1` / `10.213.<k>.2`) lives on a veth pair whose
//! both ends are inside namespaces it just created; nothing is configured in
//! the host's own network namespace, no routes leave the pair, and daemons
//! only listen on those private addresses. etcd members listen on 127.0.0.1
//! only.

#![forbid(unsafe_code)]
#![deny(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_possible_wrap)]

mod dir;
mod etcd;
mod faults;
mod memnode;
mod conversation;
mod netns;
mod process;
mod skip;
pub mod python;

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub use dir::{write_key, TestDir};
pub use etcd::{EtcdCluster, ETCD_BINARY};
pub use faults::{cgroup_subtrees_of, dirs_below, LinkCut, Paused, SlowLink, SmallTmpfs};
pub use conversation::{Finished, Proc, STEP};
pub use memnode::{Memnode, MEMNODE_PORT};
pub use netns::{Host, Star, TwoHosts};
pub use process::{Daemon, ProcessGuard};
pub use skip::{in_ci, require_root, skip, test_name, SKIP_LOG_ENV};

/// Calls `f` every 5 ms until it returns `true` (then returns `true`) or
/// `timeout` has passed (then returns `false`, after one last try).
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The real CPython interpreter behind `python3` on `PATH`.
///
/// `python3` is often a (slow) pyenv shim script; tests that start Python
/// many times, or that must trace the interpreter itself, want the real
/// binary. The answer is computed once per process.
pub fn real_python() -> Option<PathBuf> {
    static PYTHON: OnceLock<Option<PathBuf>> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let out = Command::new("python3")
                .args(["-c", "import sys; print(sys.executable)"])
                .output()
                .ok()?;
            if !out.status.success() {
                return None;
            }
            let path = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
            (path.is_absolute() && path.exists()).then_some(path)
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_until_polls_and_times_out() {
        let mut n = 0;
        assert!(wait_until(Duration::from_secs(1), || {
            n += 1;
            n == 3
        }));
        assert!(!wait_until(Duration::from_millis(20), || false));
    }

    #[test]
    fn real_python_is_an_executable_file() {
        if let Some(p) = real_python() {
            assert!(p.is_file(), "{}", p.display());
        }
    }
}
