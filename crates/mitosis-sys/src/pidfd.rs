//! Process file descriptors: handles that cannot be confused by pid reuse.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::{Result, SysError};

/// Opens a pidfd for `pid`.
pub fn open(pid: i32) -> Result<OwnedFd> {
    // SAFETY: pidfd_open takes plain integers; on success the kernel returns a
    // fresh descriptor that we own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(SysError::last("pidfd_open"));
    }
    let fd = crate::fd_of(fd, "pidfd_open")?;
    // SAFETY: fd is a new descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Duplicates descriptor `target_fd` of the process behind `pidfd` into ours.
pub fn getfd(pidfd: &OwnedFd, target_fd: i32) -> Result<OwnedFd> {
    // SAFETY: plain integer arguments; returns a new descriptor we own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), target_fd, 0) };
    if fd < 0 {
        return Err(SysError::last("pidfd_getfd"));
    }
    let fd = crate::fd_of(fd, "pidfd_getfd")?;
    // SAFETY: fd is a new descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sends `sig` to the process behind `pidfd`. A process that is already gone is not an error.
pub fn send_signal(pidfd: &OwnedFd, sig: i32) -> Result<()> {
    // SAFETY: plain integer arguments and a null siginfo.
    let r = unsafe {
        libc::syscall(libc::SYS_pidfd_send_signal, pidfd.as_raw_fd(), sig, std::ptr::null::<u8>(), 0)
    };
    if r < 0 {
        let e = SysError::last("pidfd_send_signal");
        if e.errno != libc::ESRCH {
            return Err(e);
        }
    }
    Ok(())
}

/// How a waited-for process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

/// Waits for the child behind `pidfd` to end and reaps it. The process must be
/// a child of this process (of any of its threads).
pub fn wait_exit(pidfd: &OwnedFd) -> Result<Exit> {
    loop {
        // SAFETY: siginfo_t is plain data; waitid fills it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: valid pointer to a siginfo_t; P_PIDFD takes the descriptor as id.
        let r = unsafe {
            libc::waitid(libc::P_PIDFD, pidfd.as_raw_fd().unsigned_abs(), &mut info, libc::WEXITED)
        };
        if r < 0 {
            let e = SysError::last("waitid");
            if e.errno == libc::EINTR {
                continue;
            }
            return Err(e);
        }
        // SAFETY: waitid succeeded with WEXITED, so the child fields are valid.
        let (code, status) = unsafe { (info.si_code, info.si_status()) };
        return Ok(if code == libc::CLD_EXITED { Exit::Code(status) } else { Exit::Signal(status) });
    }
}

/// True when the process behind `pidfd` has exited (does not reap it).
pub fn has_exited(pidfd: &OwnedFd) -> bool {
    let mut p = libc::pollfd { fd: pidfd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd, zero timeout.
    let r = unsafe { libc::poll(&mut p, 1, 0) };
    r > 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::zombie_processes)] // reaped through its pidfd: that is what is tested
    fn wait_for_a_child() {
        let child = std::process::Command::new("sh").args(["-c", "exit 7"]).spawn().unwrap();
        let fd = open(i32::try_from(child.id()).unwrap()).unwrap();
        assert_eq!(wait_exit(&fd).unwrap(), Exit::Code(7));
        assert!(has_exited(&fd));
    }
}
