//! Calls for a freshly forked or cloned process that owns its whole
//! descriptor table and never returns to the code that forked it (a
//! container's namespace holder, a zygote's child).
//!
//! Every function here is allocation-free and async-signal-safe, so it may
//! run right after `fork` in a multi-threaded parent. They take raw
//! descriptor numbers because such a process has no `OwnedFd`s of its own:
//! it was handed numbers across the fork. Using them on a descriptor some
//! other part of a running program owns would break that owner's I/O (never
//! memory); they are meant for the forked process only.

use std::os::fd::RawFd;

use crate::{Result, SysError};

/// Asks the kernel to send `sig` to this process when its parent (the thread
/// that forked it) dies (`PR_SET_PDEATHSIG`).
pub fn set_parent_death_signal(sig: i32) -> Result<()> {
    let sig = libc::c_ulong::from(sig.unsigned_abs());
    // SAFETY: prctl with integer arguments touches no memory of ours.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, sig, 0, 0, 0) } != 0 {
        return Err(SysError::last("prctl(PR_SET_PDEATHSIG)"));
    }
    Ok(())
}

/// Sets `sig`'s disposition to "ignore" (for SIGCHLD: children are reaped by
/// the kernel, never become zombies).
pub fn ignore_signal(sig: i32) -> Result<()> {
    // SAFETY: SIG_IGN installs no handler, so no code of ours can run in
    // signal context.
    if unsafe { libc::signal(sig, libc::SIG_IGN) } == libc::SIG_ERR {
        return Err(SysError::last("signal"));
    }
    Ok(())
}

/// Writes all of `bytes` to descriptor `fd` (retrying short writes and EINTR).
pub fn write_all(fd: RawFd, mut bytes: &[u8]) -> Result<()> {
    while !bytes.is_empty() {
        // SAFETY: `bytes` is valid for reads of its length.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        match usize::try_from(n) {
            Ok(0) => return Err(SysError::new("write", libc::EIO)),
            Ok(n) => bytes = &bytes[n..],
            Err(_) => {
                let e = SysError::last("write");
                if e.errno != libc::EINTR {
                    return Err(e);
                }
            }
        }
    }
    Ok(())
}

/// Closes descriptor `fd`.
pub fn close(fd: RawFd) {
    // SAFETY: closing a number touches no memory; see the module docs for
    // whose descriptor it may be.
    unsafe { libc::close(fd) };
}

/// Closes every descriptor except `keep` (`close_range` on both sides of it),
/// so that this process pins nothing its parent had open.
pub fn close_all_except(keep: RawFd) -> Result<()> {
    let keep = keep.unsigned_abs();
    if keep > 0 {
        // SAFETY: close_range takes plain integers.
        if unsafe { libc::syscall(libc::SYS_close_range, 0u32, keep - 1, 0u32) } != 0 {
            return Err(SysError::last("close_range"));
        }
    }
    // SAFETY: as above.
    if unsafe { libc::syscall(libc::SYS_close_range, keep.saturating_add(1), u32::MAX, 0u32) } != 0 {
        return Err(SysError::last("close_range"));
    }
    Ok(())
}

/// Blocks until `fd` reaches end of file or fails (other than EINTR),
/// discarding what it reads.
pub fn wait_for_eof(fd: RawFd) {
    let mut byte = [0u8; 1];
    loop {
        // SAFETY: `byte` is valid for a write of one byte.
        let n = unsafe { libc::read(fd, byte.as_mut_ptr().cast(), 1) };
        if n == 0 || (n < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR)) {
            return;
        }
    }
}

/// Ends this process at once with `code`, running no destructors or atexit
/// handlers (`_exit`): the forked copy of the parent's state is not ours to
/// tear down.
pub fn exit(code: i32) -> ! {
    // SAFETY: _exit is async-signal-safe and never returns.
    unsafe { libc::_exit(code) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::{AsRawFd, IntoRawFd};
    use std::os::unix::net::UnixStream;

    #[test]
    fn writes_and_waits_for_end_of_file() {
        let (a, mut b) = UnixStream::pair().unwrap();
        write_all(a.as_raw_fd(), b"ok").unwrap();
        let mut got = [0u8; 2];
        b.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ok");
        // wait_for_eof returns once the other end is gone.
        let (c, d) = UnixStream::pair().unwrap();
        let t = std::thread::spawn(move || wait_for_eof(c.as_raw_fd()));
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(!t.is_finished());
        drop(d);
        t.join().unwrap();
        // close really closes.
        let raw = b.into_raw_fd();
        close(raw);
        assert_eq!(write_all(a.as_raw_fd(), b"x").unwrap_err().errno, libc::EPIPE);
    }

    #[test]
    fn signals_and_close_range_in_a_forked_child() {
        // The child ignores SIGCHLD, closes everything but stdout, and exits
        // with what it saw; run it as a real forked process.
        let pid = {
            // SAFETY: test only: the child below makes only async-signal-safe calls.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                let ok = ignore_signal(libc::SIGCHLD).is_ok()
                    && set_parent_death_signal(libc::SIGKILL).is_ok()
                    && close_all_except(1).is_ok()
                    && write_all(2, b"x").is_err()
                    && write_all(1, b"").is_ok();
                exit(if ok { 7 } else { 1 });
            }
            pid
        };
        let status = crate::process::wait_pid(pid).unwrap();
        assert_eq!(libc::WEXITSTATUS(status), 7);
    }
}
