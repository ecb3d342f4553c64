//! TCP connection health: keepalive and user-timeout socket options, and the
//! kernel's view of a connection (`TCP_INFO`) — enough to tell a peer that
//! stopped answering from one that is only slow.
//!
//! A live peer's kernel acknowledges our data and our keepalive probes even
//! while its program has nothing to send; a cut link or a dead host leaves
//! them unacknowledged. [`TcpHealth`] says how long the connection has heard
//! nothing and whether something of ours waits for an acknowledgement.

use std::os::fd::{AsFd, AsRawFd};
use std::time::Duration;

use crate::{Result, SysError};

/// Sets an `int` socket option.
fn set_int(fd: &impl AsFd, level: libc::c_int, name: libc::c_int, value: libc::c_int, op: &'static str) -> Result<()> {
    let len = libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>()).map_err(|_| SysError::new(op, libc::EINVAL))?;
    // SAFETY: `value` is a live c_int for the call and `len` its size; the
    // descriptor is borrowed for the call.
    let r = unsafe { libc::setsockopt(fd.as_fd().as_raw_fd(), level, name, std::ptr::addr_of!(value).cast(), len) };
    if r == 0 {
        Ok(())
    } else {
        Err(SysError::last(op))
    }
}

/// Whole seconds of `d`, at least 1, as the kernel's keepalive options take them.
fn seconds(d: Duration) -> libc::c_int {
    libc::c_int::try_from(d.as_secs().max(1)).unwrap_or(libc::c_int::MAX)
}

/// Sets how TCP keepalive probes `fd`'s peer once it is on ([`set_keepalive`]):
/// a probe after `idle` without any segment from the peer, then one every
/// `interval`, the connection given up after `count` unanswered ones (or
/// sooner by [`set_user_timeout`]). The kernel counts in whole seconds:
/// shorter durations are rounded up to 1 s.
pub fn set_keepalive_timing(fd: &impl AsFd, idle: Duration, interval: Duration, count: u32) -> Result<()> {
    set_int(fd, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, seconds(idle), "setsockopt(TCP_KEEPIDLE)")?;
    set_int(fd, libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, seconds(interval), "setsockopt(TCP_KEEPINTVL)")?;
    let count = libc::c_int::try_from(count.max(1)).unwrap_or(libc::c_int::MAX);
    set_int(fd, libc::IPPROTO_TCP, libc::TCP_KEEPCNT, count, "setsockopt(TCP_KEEPCNT)")
}

/// Turns TCP keepalive on or off for `fd` (`SO_KEEPALIVE`). Turned on, the
/// first probe goes out an idle time (see [`set_keepalive_timing`]) later at
/// the earliest.
pub fn set_keepalive(fd: &impl AsFd, on: bool) -> Result<()> {
    set_int(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE, libc::c_int::from(on), "setsockopt(SO_KEEPALIVE)")
}

/// Sets `TCP_USER_TIMEOUT`: the kernel drops the connection (reads and
/// writes then fail with `ETIMEDOUT`) once data sent, or a keepalive probe,
/// has gone unacknowledged this long. Milliseconds; zero is the system default.
pub fn set_user_timeout(fd: &impl AsFd, timeout: Duration) -> Result<()> {
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    set_int(fd, libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, ms, "setsockopt(TCP_USER_TIMEOUT)")
}

/// What the kernel knows about a TCP connection's traffic (from `TCP_INFO`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpHealth {
    /// Since the last segment with data came from the peer.
    pub since_data_received: Duration,
    /// Since the last acknowledgement came from the peer (of data, or of a
    /// keepalive or window probe).
    pub since_ack_received: Duration,
    /// Keepalive or zero-window probes sent and not answered yet.
    pub probes_out: u8,
    /// Retransmissions of the oldest unacknowledged segment so far.
    pub retransmits: u8,
    /// Segments sent and not acknowledged yet.
    pub unacked: u32,
    /// Whether the connection is still established (not closed, reset or timed out).
    pub established: bool,
}

impl TcpHealth {
    /// How long nothing at all (no data, no acknowledgement) has come.
    pub fn silent_for(&self) -> Duration {
        self.since_data_received.min(self.since_ack_received)
    }

    /// Whether the peer owes us an answer its kernel would give at once if
    /// it were reachable: a probe, a retransmission or data of ours waits
    /// for its acknowledgement.
    pub fn awaits_acknowledgement(&self) -> bool {
        self.probes_out > 0 || self.retransmits > 0 || self.unacked > 0
    }

    /// Whether the peer is to be taken for unreachable: silent for at least
    /// `silence` while something of ours waits for an acknowledgement (see
    /// [`awaits_acknowledgement`](Self::awaits_acknowledgement)). A live
    /// peer, however slow its link, keeps sending data or acknowledgements;
    /// a live peer with nothing to send answers keepalive probes. (The
    /// caller also makes sure it has itself waited that long: a connection
    /// idle for minutes is silent for minutes, and a request just sent
    /// deserves the same `silence` for its acknowledgement.)
    pub fn unreachable_after(&self, silence: Duration) -> bool {
        self.awaits_acknowledgement() && self.silent_for() >= silence
    }
}

/// The kernel's `TCP_INFO` for connected TCP socket `fd`.
pub fn tcp_health(fd: &impl AsFd) -> Result<TcpHealth> {
    // SAFETY: tcp_info is plain integers; all zeroes is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = libc::socklen_t::try_from(std::mem::size_of::<libc::tcp_info>()).map_err(|_| SysError::new("getsockopt(TCP_INFO)", libc::EINVAL))?;
    // SAFETY: `info` is valid for writes of `len` bytes, which the kernel
    // writes at most (it may write fewer: the rest stays zero); the
    // descriptor is borrowed for the call.
    let r = unsafe { libc::getsockopt(fd.as_fd().as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_INFO, std::ptr::addr_of_mut!(info).cast(), &mut len) };
    if r != 0 {
        return Err(SysError::last("getsockopt(TCP_INFO)"));
    }
    let ms = |v: u32| Duration::from_millis(u64::from(v));
    Ok(TcpHealth {
        since_data_received: ms(info.tcpi_last_data_recv),
        since_ack_received: ms(info.tcpi_last_ack_recv),
        probes_out: info.tcpi_probes,
        retransmits: info.tcpi_retransmits,
        unacked: info.tcpi_unacked,
        // TCP_ESTABLISHED is 1 in the kernel's enum of states.
        established: info.tcpi_state == 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        (a, b)
    }

    #[test]
    fn options_are_taken_and_read_back() {
        let (a, _b) = pair();
        set_keepalive_timing(&a, Duration::from_millis(300), Duration::from_secs(2), 3).unwrap();
        set_keepalive(&a, true).unwrap();
        set_user_timeout(&a, Duration::from_millis(1500)).unwrap();
        let get = |level, name| {
            let mut v: libc::c_int = 0;
            let mut len = libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>()).unwrap();
            // SAFETY: `v` is a live c_int and `len` its size.
            let r = unsafe { libc::getsockopt(a.as_raw_fd(), level, name, std::ptr::addr_of_mut!(v).cast(), &mut len) };
            assert_eq!(r, 0);
            v
        };
        assert_eq!(get(libc::SOL_SOCKET, libc::SO_KEEPALIVE), 1);
        // Rounded up to the kernel's whole seconds.
        assert_eq!(get(libc::IPPROTO_TCP, libc::TCP_KEEPIDLE), 1);
        assert_eq!(get(libc::IPPROTO_TCP, libc::TCP_KEEPINTVL), 2);
        assert_eq!(get(libc::IPPROTO_TCP, libc::TCP_KEEPCNT), 3);
        assert_eq!(get(libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT), 1500);
        set_keepalive(&a, false).unwrap();
        assert_eq!(get(libc::SOL_SOCKET, libc::SO_KEEPALIVE), 0);
    }

    #[test]
    fn a_live_connection_is_healthy_and_counts_its_silence() {
        let (mut a, mut b) = pair();
        a.write_all(b"ping").unwrap();
        let mut got = [0u8; 4];
        b.read_exact(&mut got).unwrap();
        b.write_all(b"pong").unwrap();
        a.read_exact(&mut got).unwrap();
        // Long enough for b's acknowledgement of our bytes to have come.
        std::thread::sleep(Duration::from_millis(300));
        let h = tcp_health(&a).unwrap();
        assert!(h.established, "{h:?}");
        assert_eq!((h.unacked, h.retransmits, h.probes_out), (0, 0, 0), "{h:?}");
        assert!(!h.awaits_acknowledgement());
        assert!(h.since_data_received >= Duration::from_millis(250), "{h:?}");
        assert!(h.since_data_received < Duration::from_secs(5), "{h:?}");
        assert!(h.silent_for() <= h.since_data_received);
        assert!(!h.unreachable_after(Duration::from_millis(100)), "nothing of ours is unanswered: {h:?}");
    }

    #[test]
    fn a_closed_connection_is_not_established() {
        let (a, b) = pair();
        drop(b);
        // Our FIN answers theirs: the socket leaves ESTABLISHED.
        a.shutdown(std::net::Shutdown::Write).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert!(!tcp_health(&a).unwrap().established);
    }

    #[test]
    fn unreachable_needs_both_silence_and_something_unanswered() {
        let quiet = TcpHealth {
            since_data_received: Duration::from_secs(3),
            since_ack_received: Duration::from_secs(2),
            probes_out: 0,
            retransmits: 0,
            unacked: 0,
            established: true,
        };
        assert_eq!(quiet.silent_for(), Duration::from_secs(2));
        assert!(!quiet.unreachable_after(Duration::from_secs(1)), "a quiet peer owing nothing");
        let probed = TcpHealth { probes_out: 1, ..quiet };
        assert!(probed.unreachable_after(Duration::from_secs(1)));
        assert!(!probed.unreachable_after(Duration::from_secs(3)), "not silent long enough");
        let retransmitting = TcpHealth { retransmits: 2, ..quiet };
        assert!(retransmitting.unreachable_after(Duration::from_secs(2)));
        let streaming = TcpHealth { since_data_received: Duration::from_millis(5), ..probed };
        assert!(!streaming.unreachable_after(Duration::from_secs(1)), "data is coming");
    }

    #[test]
    fn not_a_tcp_socket_is_an_error() {
        let (u, _v) = std::os::unix::net::UnixStream::pair().unwrap();
        let e = tcp_health(&u).unwrap_err();
        assert_eq!(e.op, "getsockopt(TCP_INFO)");
    }
}
