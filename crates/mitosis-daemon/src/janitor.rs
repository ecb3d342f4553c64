//! The janitor: a small process that cleans up after this daemon if it dies
//! without doing so itself (SIGKILL, a crash).
//!
//! It is forked at start-up and leaves the daemon's session (a kill of the
//! daemon's process group must not take it along). The daemon hands it:
//! - a pidfd of every seed snapshot: a snapshot is parked until its daemon
//!   kills it, and nothing else would end it;
//! - a copy of every userfaultfd a pager serves (children and their own
//!   forks): while the janitor holds one, the kernel keeps it, so that the
//!   memory it covers never falls back to zero pages once its pager is gone.
//!   A fault then waits, and the faulting process is killed while it waits:
//!   a descendant of a child never reads a zero page for a missing one;
//! - the `cgroup.procs` file of every child's cgroup (its container's, or a
//!   cgroup of its own for a child without one), which holds the child and
//!   all its descendants. (A container's holder needs nothing here: it dies
//!   with the daemon by its parent-death signal, and its PID namespace with it.)
//! - the daemon's cgroup subtrees (`.../mitosis-<pid>`, one per hierarchy),
//!   which hold every container's and child's cgroup directories, warm
//!   containers' included;
//! - the number of its zram swap device (`--zram-swap`), turned off and
//!   removed once the processes that could use it are gone.
//!
//! When its socket reaches end of file (the daemon is gone, however it
//! went), it SIGKILLs the snapshots and every process in those cgroups, then
//! removes the daemon's cgroup subtrees (killing whatever is still inside,
//! removing directories children first, each once its processes are gone),
//! then waits until the memory of every userfaultfd it holds is gone before
//! it closes them and exits. What the daemon ended itself is gone already:
//! pidfds and empty cgroups make a late kill harmless. So a killed daemon
//! leaves no cgroup directory behind, whether or not another daemon starts
//! later (one that does also sweeps dead daemons' subtrees: see
//! `mitosis_container::Cgroups::sweep_dead_daemons`).

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use mitosis_sys::uffd::Uffd;
use mitosis_sys::{after_fork, fdpass, pidfd};

pub struct Janitor {
    sock: Mutex<OwnedFd>,
}

/// What one message to the janitor is about (its first byte).
const SNAPSHOT: u8 = b's';
const USERFAULTFD: u8 = b'u';
const CGROUP: u8 = b'g';
const SUBTREE: u8 = b't';
const ZRAM: u8 = b'z';

/// The janitor looks for entries whose process ended once it holds this many.
const PRUNE_MIN: usize = 64;

impl Janitor {
    /// Forks the janitor. Call while the daemon is still single-threaded.
    pub fn start() -> std::io::Result<Janitor> {
        let sock = crate::spawner::fork_helper(|theirs| janitor_main(theirs))?;
        Ok(Janitor { sock: Mutex::new(sock) })
    }

    fn send(&self, message: &[u8], fds: &[i32], what: &str) {
        let sock = self.sock.lock().unwrap();
        if let Err(e) = fdpass::send_with_fds(&*sock, message, fds) {
            tracing::warn!(error = %e, "the janitor cannot take {what}: it is not cleaned up if this daemon is killed");
        }
    }

    /// Has the janitor end `snapshot` should this daemon die first.
    pub fn watch(&self, snapshot: &OwnedFd) {
        self.send(&[SNAPSHOT], &[snapshot.as_raw_fd()], "a snapshot");
    }

    /// Has the janitor keep a copy of `uffd` while its memory lives.
    pub fn keep_userfaultfd(&self, uffd: &Uffd) {
        self.send(&[USERFAULTFD], &[uffd.as_raw_fd()], "a userfaultfd");
    }

    /// A pager's keeper that hands every userfaultfd it serves to `janitor`.
    pub fn keeper(janitor: &std::sync::Arc<Janitor>) -> mitosis_pager::Keeper {
        let janitor = janitor.clone();
        std::sync::Arc::new(move |uffd: &Uffd| janitor.keep_userfaultfd(uffd))
    }

    /// Has the janitor kill every process listed in `procs` (a cgroup's
    /// `cgroup.procs`) should this daemon die first.
    pub fn watch_cgroup(&self, procs: &std::path::Path) {
        let mut message = vec![CGROUP];
        message.extend_from_slice(procs.as_os_str().as_encoded_bytes());
        self.send(&message, &[], "a cgroup");
    }

    /// Has the janitor remove zram swap device `device` should this daemon
    /// die first.
    pub fn watch_zram(&self, device: u32) {
        let mut message = vec![ZRAM];
        message.extend_from_slice(device.to_string().as_bytes());
        self.send(&message, &[], "the zram swap device");
    }

    /// Has the janitor remove the daemon's cgroup subtrees `dirs` (and
    /// everything in them) should this daemon die first.
    pub fn watch_subtrees(&self, dirs: &[PathBuf]) {
        for dir in dirs {
            let mut message = vec![SUBTREE];
            message.extend_from_slice(dir.as_os_str().as_encoded_bytes());
            self.send(&message, &[], "the daemon's cgroup subtree");
        }
    }
}

fn janitor_main(sock: OwnedFd) -> ! {
    // Out of the daemon's session and process group, pinning nothing else
    // the daemon had open. Failures leave it working, only less detached.
    let _ = mitosis_sys::process::new_session();
    let _ = after_fork::close_all_except(sock.as_raw_fd());
    let mut snapshots: Vec<OwnedFd> = Vec::new();
    let mut uffds: Vec<Uffd> = Vec::new();
    let mut cgroups: Vec<PathBuf> = Vec::new();
    let mut subtrees: Vec<PathBuf> = Vec::new();
    let mut zram: Option<u32> = None;
    let mut buf = [0u8; 4096];
    // What ended meanwhile needs nothing more, but looking costs a system
    // call per entry: done when the lists have doubled since the last look,
    // so that each message costs O(1) on average and the lists stay within
    // twice what is alive.
    let mut prune_at = PRUNE_MIN;
    // Ends at end of file (or any error): the daemon is gone.
    while let Ok((n, fds)) = fdpass::recv_with_fds(&sock, &mut buf) {
        if n == 0 {
            break;
        }
        if snapshots.len() + uffds.len() + cgroups.len() >= prune_at {
            snapshots.retain(|s| !pidfd::has_exited(s));
            uffds.retain(|u| u.memory_alive(mitosis_pager::PROBE_ADDR));
            cgroups.retain(|c| c.exists());
            prune_at = (2 * (snapshots.len() + uffds.len() + cgroups.len())).max(PRUNE_MIN);
        }
        match buf[0] {
            SNAPSHOT => snapshots.extend(fds),
            USERFAULTFD => uffds.extend(fds.into_iter().map(Uffd::from_fd)),
            CGROUP => cgroups.push(PathBuf::from(std::ffi::OsStr::from_bytes(&buf[1..n]))),
            SUBTREE => subtrees.push(PathBuf::from(std::ffi::OsStr::from_bytes(&buf[1..n]))),
            ZRAM => zram = std::str::from_utf8(&buf[1..n]).ok().and_then(|d| d.parse().ok()),
            _ => {}
        }
    }
    for p in &snapshots {
        let _ = pidfd::send_signal(p, libc::SIGKILL);
    }
    for procs in &cgroups {
        kill_all_in(procs);
    }
    // Their processes are gone (or going: a directory is removed once its
    // last one has exited); warm containers' holders die by their
    // parent-death signal, and are killed here should one linger.
    for dir in &subtrees {
        let _ = mitosis_container::cgroup::remove_tree(dir);
    }
    // Its users are gone: swapoff has little to bring back.
    if let Some(device) = zram {
        let _ = crate::swap::remove(device);
    }
    // Only once no process can fault on them any more.
    while !uffds.is_empty() {
        uffds.retain(|u| u.memory_alive(mitosis_pager::PROBE_ADDR));
        std::thread::sleep(Duration::from_millis(20));
    }
    // Leaving the janitor, a copy of the daemon: no destructors of that copy.
    after_fork::exit(0)
}

/// SIGKILLs every process listed in `procs` until none is left (a process
/// that forks meanwhile is listed in the next round; a killed one cannot fork).
fn kill_all_in(procs: &std::path::Path) {
    for _ in 0..500 {
        let Ok(list) = std::fs::read_to_string(procs) else { return };
        let pids: Vec<i32> = list.split_whitespace().filter_map(|p| p.parse().ok()).collect();
        if pids.is_empty() {
            return;
        }
        for pid in pids {
            // A listed process that exited and was reaped just now could have
            // its pid reused by another: a narrow race, run only once the
            // daemon has died.
            let _ = mitosis_sys::process::kill(pid, libc::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
