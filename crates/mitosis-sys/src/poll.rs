//! Waiting for descriptors (`poll(2)`).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::time::Duration;

use crate::{Result, SysError};

/// One descriptor to wait on and, after [`poll`], what it is ready for.
#[derive(Debug, Clone, Copy)]
pub struct PollFd<'a> {
    raw: libc::pollfd,
    _fd: std::marker::PhantomData<BorrowedFd<'a>>,
}

impl<'a> PollFd<'a> {
    /// Waits on `fd` for readability (`POLLIN`).
    pub fn readable(fd: BorrowedFd<'a>) -> PollFd<'a> {
        PollFd { raw: libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 }, _fd: std::marker::PhantomData }
    }

    /// Waits on `fd` for readability or for its peer to shut down its side
    /// (`POLLIN | POLLRDHUP`: a socket whose other end went away).
    pub fn readable_or_hangup(fd: BorrowedFd<'a>) -> PollFd<'a> {
        let raw = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN | libc::POLLRDHUP, revents: 0 };
        PollFd { raw, _fd: std::marker::PhantomData }
    }

    /// Waits only for `fd`'s peer to shut down its side (`POLLRDHUP`; errors
    /// and hang-ups always come): a socket someone else reads.
    pub fn hangup(fd: BorrowedFd<'a>) -> PollFd<'a> {
        PollFd { raw: libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLRDHUP, revents: 0 }, _fd: std::marker::PhantomData }
    }

    /// A slot poll ignores (a negative descriptor): keeps positions in an array fixed.
    pub fn none() -> PollFd<'static> {
        PollFd { raw: libc::pollfd { fd: -1, events: 0, revents: 0 }, _fd: std::marker::PhantomData }
    }

    /// The events that came (`POLLIN`, `POLLERR`, `POLLHUP`, ...).
    pub fn revents(&self) -> libc::c_short {
        self.raw.revents
    }
}

/// Waits until one of `fds` is ready or `timeout_ms` passes (-1: forever);
/// returns how many are ready. EINTR comes back as an error for the caller to
/// decide (see [`SysError::errno`]).
pub fn poll(fds: &mut [PollFd<'_>], timeout_ms: i32) -> Result<usize> {
    // PollFd is a pollfd plus a zero-sized marker: the array is one of pollfds.
    const _: () = assert!(std::mem::size_of::<PollFd<'static>>() == std::mem::size_of::<libc::pollfd>());
    let n = libc::nfds_t::try_from(fds.len()).map_err(|_| SysError::new("poll", libc::EINVAL))?;
    // SAFETY: `fds` is valid for reads and writes of `n` pollfds (PollFd has
    // the layout of pollfd, checked above); the descriptors are borrowed for
    // the call.
    let r = unsafe { libc::poll(fds.as_mut_ptr().cast::<libc::pollfd>(), n, timeout_ms) };
    usize::try_from(r).map_err(|_| SysError::last("poll"))
}

/// Whether `fd` can be read without blocking (data or end of file) within
/// `timeout`; retries on EINTR.
pub fn wait_readable(fd: &impl AsFd, timeout: Duration) -> Result<bool> {
    let ms = i32::try_from(timeout.as_millis().max(1)).unwrap_or(i32::MAX);
    loop {
        let mut fds = [PollFd::readable(fd.as_fd())];
        match poll(&mut fds, ms) {
            Ok(n) => return Ok(n > 0),
            Err(e) if e.errno == libc::EINTR => continue,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    #[test]
    fn readable_after_data_and_at_end_of_file() {
        let (mut a, b) = UnixStream::pair().unwrap();
        assert!(!wait_readable(&b, Duration::from_millis(10)).unwrap());
        a.write_all(b"x").unwrap();
        assert!(wait_readable(&b, Duration::from_millis(10)).unwrap());
        let (c, d) = UnixStream::pair().unwrap();
        drop(c);
        let mut fds = [PollFd::readable(d.as_fd()), PollFd::none()];
        assert_eq!(poll(&mut fds, 0).unwrap(), 1);
        assert_ne!(fds[0].revents() & (libc::POLLIN | libc::POLLHUP), 0);
        assert_eq!(fds[1].revents(), 0);
    }
}
