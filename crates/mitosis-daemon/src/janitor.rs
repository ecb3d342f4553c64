//! The janitor: a small process that ends this daemon's snapshots if the
//! daemon dies without dropping its seeds (SIGKILL, a crash).
//!
//! A snapshot is a child of the prepared process, in a session of its own
//! (so that signals to that process's group never reach it), parked until
//! its daemon kills it: nothing else would end it. The janitor is forked at
//! start-up, leaves the daemon's session (a kill of the daemon's process
//! group must not take it along), and gets a pidfd of every snapshot. When
//! its socket reaches end of file (the daemon is gone, however it went), it
//! SIGKILLs every snapshot it still knows and exits. Snapshots the daemon
//! ended itself are gone already; their pidfds make a late kill harmless.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Mutex;

use mitosis_sys::{fdpass, pidfd};

pub struct Janitor {
    sock: Mutex<OwnedFd>,
}

impl Janitor {
    /// Forks the janitor. Call while the daemon is still single-threaded.
    pub fn start() -> std::io::Result<Janitor> {
        let sock = crate::spawner::fork_helper(|theirs| janitor_main(theirs))?;
        Ok(Janitor { sock: Mutex::new(sock) })
    }

    /// Has the janitor end `snapshot` should this daemon die first.
    pub fn watch(&self, snapshot: &OwnedFd) {
        let sock = self.sock.lock().unwrap();
        if let Err(e) = fdpass::send_with_fds(&*sock, b"s", &[snapshot.as_raw_fd()]) {
            tracing::warn!(error = %e, "the janitor cannot take a snapshot: it stays if this daemon is killed");
        }
    }
}

fn janitor_main(sock: OwnedFd) -> ! {
    // SAFETY: plain syscalls in a single-threaded process.
    unsafe {
        libc::setsid();
        let keep = sock.as_raw_fd() as u32;
        libc::syscall(libc::SYS_close_range, 0u32, keep.saturating_sub(1), 0u32);
        libc::syscall(libc::SYS_close_range, keep + 1, u32::MAX, 0u32);
    }
    let mut snapshots: Vec<OwnedFd> = Vec::new();
    let mut buf = [0u8; 16];
    // Ends at end of file (or any error): the daemon is gone.
    while let Ok((n, fds)) = fdpass::recv_with_fds(&sock, &mut buf) {
        if n == 0 {
            break;
        }
        snapshots.retain(|s| !pidfd::has_exited(s));
        snapshots.extend(fds);
    }
    for s in &snapshots {
        let _ = pidfd::send_signal(s, libc::SIGKILL);
    }
    // SAFETY: leaving the janitor.
    unsafe { libc::_exit(0) }
}
