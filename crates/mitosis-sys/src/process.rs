//! Process-level calls: who we are, signals, waiting, clocks, robust futex
//! lists, and the hooks a [`Command`] runs in its child between fork and exec.
//!
//! The spawn hooks ([`parent_death_signal_on_spawn`], [`setns_on_spawn`]) run
//! in the forked child of a possibly multi-threaded parent, so they only make
//! async-signal-safe system calls and never allocate.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

use crate::{Result, SysError};

/// The effective user id of the calling process.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions, cannot fail and touches no memory.
    unsafe { libc::geteuid() }
}

/// Sends `sig` to `pid` (`kill(2)`: a negative pid names a process group).
///
/// The caller must know the pid is still theirs to signal (an unreaped child,
/// or a group such a child leads): a reaped pid may belong to someone else.
pub fn kill(pid: i32, sig: i32) -> Result<()> {
    // SAFETY: kill takes plain integers and touches no memory of ours.
    if unsafe { libc::kill(pid, sig) } != 0 {
        return Err(SysError::last("kill"));
    }
    Ok(())
}

/// Forks a child that does nothing but `_exit(0)`; returns its pid (reap it
/// with [`wait_pid`]). This is the local-fork baseline of the benchmarks.
pub fn fork_exit_child() -> Result<i32> {
    // SAFETY: the child calls only _exit, which is async-signal-safe, so
    // forking a multi-threaded process is fine.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(SysError::last("fork"));
    }
    if pid == 0 {
        // SAFETY: leaving the forked child at once, running no destructors.
        unsafe { libc::_exit(0) };
    }
    Ok(pid)
}

/// Waits for child `pid` to end and reaps it; returns its raw wait status.
pub fn wait_pid(pid: i32) -> Result<i32> {
    let mut status = 0;
    loop {
        // SAFETY: `status` is a valid out pointer for the duration of the call.
        if unsafe { libc::waitpid(pid, &mut status, 0) } >= 0 {
            return Ok(status);
        }
        let e = SysError::last("waitpid");
        if e.errno != libc::EINTR {
            return Err(e);
        }
    }
}

/// The raw wait(2) status word of child `pid` if it has ended, without
/// reaping it (`waitid` with `WNOWAIT`): `None` while it runs. Fails (ECHILD)
/// once it has been reaped.
pub fn peek_exit(pid: u32) -> Result<Option<i32>> {
    // SAFETY: siginfo_t is plain data for which all-zeroes is valid.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is a valid, writable siginfo_t; WNOWAIT leaves the child
    // waitable for its owner.
    let r = unsafe { libc::waitid(libc::P_PID, pid, &mut info, libc::WEXITED | libc::WNOHANG | libc::WNOWAIT) };
    if r != 0 {
        return Err(SysError::last("waitid"));
    }
    // SAFETY: waitid succeeded, so `info` holds SIGCHLD data (or zeroes when
    // the child still runs, as WNOHANG documents).
    let (who, status) = unsafe { (info.si_pid(), info.si_status()) };
    if who == 0 {
        return Ok(None);
    }
    // Re-encoded as a wait(2) status word.
    Ok(Some(match info.si_code {
        libc::CLD_EXITED => (status & 0xff) << 8,
        libc::CLD_DUMPED => status | 0x80,
        _ => status,
    }))
}

/// `CLOCK_MONOTONIC` in nanoseconds (the same clock in every network namespace).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid out pointer; CLOCK_MONOTONIC always exists, so the call
    // cannot fail.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    // Both fields are non-negative for CLOCK_MONOTONIC.
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

/// The robust futex list of thread `pid`: (head address, length).
pub fn robust_list(pid: i32) -> Result<(u64, u64)> {
    let mut head = 0u64;
    let mut len = 0usize;
    // SAFETY: two valid out pointers of the sizes the syscall writes.
    let r = unsafe { libc::syscall(libc::SYS_get_robust_list, pid, &mut head as *mut u64, &mut len as *mut usize) };
    if r != 0 {
        return Err(SysError::last("get_robust_list"));
    }
    Ok((head, len as u64))
}

/// Makes `cmd`'s child receive `sig` when the thread that spawned it dies
/// (`PR_SET_PDEATHSIG`), so a killed test or benchmark leaves no process
/// behind.
pub fn parent_death_signal_on_spawn(cmd: &mut Command, sig: i32) {
    let sig = libc::c_ulong::from(sig.unsigned_abs());
    // SAFETY: the hook makes one async-signal-safe call (prctl) and allocates
    // nothing, as code between fork and exec must.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Makes `cmd`'s child enter namespace `ns` (a `/proc/PID/ns/*` or
/// `/run/netns/*` descriptor of type `nstype`, e.g. `libc::CLONE_NEWNET`)
/// just before exec. The descriptor is kept open until `cmd` is dropped.
pub fn setns_on_spawn(cmd: &mut Command, ns: OwnedFd, nstype: i32) {
    // SAFETY: the hook makes one async-signal-safe call (setns) on a
    // descriptor the closure owns, and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(ns.as_raw_fd(), nstype) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Stdio;

    #[test]
    fn fork_wait_and_peek() {
        let pid = fork_exit_child().unwrap();
        // Not reaped yet: peeking sees the exit and leaves it waitable.
        assert!(crate::pidfd::open(pid).is_ok());
        let mut peeked = None;
        for _ in 0..1000 {
            peeked = peek_exit(pid.unsigned_abs()).unwrap();
            if peeked.is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        assert_eq!(peeked, Some(0));
        assert_eq!(wait_pid(pid).unwrap(), 0);
        assert_eq!(peek_exit(pid.unsigned_abs()).unwrap_err().errno, libc::ECHILD);
    }

    #[test]
    fn kill_and_peek_report_the_signal() {
        let mut child = Command::new("sleep").arg("100").spawn().unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        assert_eq!(peek_exit(child.id()).unwrap(), None);
        kill(pid, libc::SIGKILL).unwrap();
        let status = wait_pid(pid).unwrap();
        assert!(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL);
        assert_eq!(kill(pid, 0).unwrap_err().errno, libc::ESRCH);
        // Reaped above: Child agrees there is nothing left to wait for.
        assert!(child.try_wait().is_err());
    }

    #[test]
    fn clock_and_ids() {
        let a = monotonic_ns();
        let b = monotonic_ns();
        assert!(a > 0 && b >= a);
        assert_eq!(euid(), std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m)).unwrap());
        let (head, len) = robust_list(0).unwrap();
        // glibc registers a robust list for every thread.
        assert!(head != 0 && len > 0);
    }

    #[test]
    fn spawn_hooks_run_in_the_child() {
        let mut cmd = Command::new("grep");
        cmd.args(["^SigQ\\|^PPid", "/proc/self/status"]).stdout(Stdio::null());
        parent_death_signal_on_spawn(&mut cmd, libc::SIGTERM);
        let ns = OwnedFd::from(std::fs::File::open("/proc/self/ns/net").unwrap());
        setns_on_spawn(&mut cmd, ns, libc::CLONE_NEWNET);
        assert!(cmd.status().unwrap().success());
        // A namespace descriptor of the wrong type makes the spawn fail.
        let mut cmd = Command::new("true");
        let ns = OwnedFd::from(std::fs::File::open("/proc/self/ns/net").unwrap());
        setns_on_spawn(&mut cmd, ns, libc::CLONE_NEWUTS);
        assert_eq!(cmd.status().unwrap_err().raw_os_error(), Some(libc::EINVAL));
    }
}
