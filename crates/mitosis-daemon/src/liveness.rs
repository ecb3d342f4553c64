//! Telling a dead seed host from a slow one, below the record layer.
//!
//! A child paging from another host waits on its connection for every page
//! it faults on. When that host dies, its kernel closes the connection and
//! the wait ends at once; when the link is cut (or the host loses power),
//! nothing comes at all, and a plain read timeout is the only way out. A
//! read timeout short enough to give up quickly would also cut a slow but
//! healthy link in the middle of a record, so it cannot be short.
//!
//! Decision: the connection is watched in the transport, by the kernel's own
//! evidence, and the record layer above never sees a timeout for a live peer:
//!
//! - [`WatchedStream::read`] waits in slices of [`POLL_EVERY`]. Once a wait
//!   outlasts one slice, TCP keepalive is turned on, with a probe after
//!   [`KEEPALIVE_IDLE`] of silence and then every [`KEEPALIVE_INTERVAL`]: a
//!   live peer's kernel answers every probe at once, even while its daemon
//!   is busy or has nothing to send. (It is turned off again once bytes
//!   come: an idle connection, such as a child's that faults no more,
//!   costs no probes.)
//! - While no byte has come, the read asks the kernel (`TCP_INFO`,
//!   [`mitosis_sys::net::tcp_health`]) whether a keepalive probe or a
//!   retransmission of ours is unanswered and nothing at all (no data, no
//!   acknowledgement) has come for [`SILENCE`], nor since the read began
//!   that long ago. Then the peer is unreachable and the read fails with
//!   [`Stall::Unreachable`].
//!   [`SILENCE`] leaves a probe sent after [`KEEPALIVE_IDLE`] 500 ms for its
//!   answer: a round trip through a full queue of a slow link, and far
//!   longer than a cluster's. With [`POLL_EVERY`], a child whose seed host
//!   went away is killed about 1.6 s after the last thing that came from it.
//! - A slow link (a narrow pipe, a deep queue) keeps delivering data or
//!   acknowledgements, so it is never taken for a dead one.
//! - A peer that is alive (its kernel acknowledges) but whose daemon never
//!   answers ends at the daemon's `--fetch-timeout`, as before: no byte for
//!   that long within one read fails with [`Stall::NoAnswer`].
//! - `TCP_USER_TIMEOUT` is set to the same deadline, so that the kernel
//!   itself gives up a connection whose data stays unacknowledged that long
//!   (a write to a dead peer, which no read watches).

use std::io::{self, Read};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use mitosis_sys::net;

/// Silence after which the kernel sends a keepalive probe (whole seconds).
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(1);
/// Between keepalive probes.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
/// How long nothing may come while a probe or retransmission of ours is
/// unanswered before the peer is taken for unreachable.
pub const SILENCE: Duration = Duration::from_millis(1500);
/// How often a waiting read looks at the connection's health.
pub const POLL_EVERY: Duration = Duration::from_millis(50);
/// Unanswered probes after which the kernel itself would give up (a
/// backstop; `TCP_USER_TIMEOUT` and [`SILENCE`] come first).
pub const KEEPALIVE_COUNT: u32 = 10;

/// Why a read from a peer gave up (the payload of its `TimedOut` error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Stall {
    /// Nothing came, not even an acknowledgement of a probe or a
    /// retransmission of ours: the host is down or the link is cut.
    #[error("stopped answering: no data and no acknowledgement for {:.1} s", .silent_for.as_secs_f64())]
    Unreachable { silent_for: Duration },
    /// The peer's kernel answers, its daemon has sent nothing for `deadline`.
    #[error("did not answer within {:?}", .deadline)]
    NoAnswer { deadline: Duration },
}

impl Stall {
    /// The stall behind `e`, if `e` is one.
    pub fn of(e: &io::Error) -> Option<&Stall> {
        e.get_ref().and_then(|inner| inner.downcast_ref::<Stall>())
    }
}

/// The reading side of a connection to a peer, whose reads end when the
/// peer stops answering (see the module's doc comment).
pub struct WatchedStream {
    stream: TcpStream,
    /// No byte for this long within one read: [`Stall::NoAnswer`].
    deadline: Duration,
    /// Whether keepalive is on now (only while a read waits).
    probing: bool,
}

fn os(e: mitosis_sys::SysError) -> io::Error {
    io::Error::from_raw_os_error(e.errno)
}

impl WatchedStream {
    /// Sets `stream`'s keepalive timing and its user timeout to `deadline`,
    /// and watches its reads.
    pub fn new(stream: TcpStream, deadline: Duration) -> io::Result<WatchedStream> {
        net::set_keepalive_timing(&stream, KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_COUNT).map_err(os)?;
        net::set_user_timeout(&stream, deadline).map_err(os)?;
        Ok(WatchedStream { stream, deadline, probing: false })
    }

    /// What the wait for a byte has come to so far (`None`: go on waiting).
    fn verdict(&self, waited: Duration) -> io::Result<Option<Stall>> {
        let health = net::tcp_health(&self.stream).map_err(os)?;
        if waited >= SILENCE && health.unreachable_after(SILENCE) {
            return Ok(Some(Stall::Unreachable { silent_for: health.silent_for().min(waited) }));
        }
        Ok((waited >= self.deadline).then_some(Stall::NoAnswer { deadline: self.deadline }))
    }

    /// Turns keepalive on for a wait that outlasted a poll slice.
    fn start_probing(&mut self) -> io::Result<()> {
        if !self.probing {
            net::set_keepalive(&self.stream, true).map_err(os)?;
            self.probing = true;
        }
        Ok(())
    }
}

impl Read for WatchedStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let start = Instant::now();
        loop {
            match mitosis_sys::poll::wait_readable(&self.stream, POLL_EVERY) {
                // Data, end of file or an error: the read does not block.
                Ok(true) => {
                    let got = self.stream.read(buf);
                    // The bytes read must reach the caller: should keepalive
                    // not go off, it stays on (a probe a second, no harm).
                    if self.probing && got.as_ref().is_ok_and(|&n| n > 0) && net::set_keepalive(&self.stream, false).is_ok() {
                        self.probing = false;
                    }
                    return got;
                }
                Ok(false) => {}
                Err(e) => return Err(os(e)),
            }
            self.start_probing()?;
            if let Some(stall) = self.verdict(start.elapsed())? {
                return Err(io::Error::new(io::ErrorKind::TimedOut, stall));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpListener;

    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        (a, b)
    }

    #[test]
    fn reads_what_comes_and_end_of_file() {
        let (a, mut b) = pair();
        let mut w = WatchedStream::new(a, Duration::from_secs(5)).unwrap();
        b.write_all(b"page").unwrap();
        let mut got = [0u8; 4];
        w.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"page");
        drop(b);
        assert_eq!(w.read(&mut got).unwrap(), 0);
    }

    #[test]
    fn a_live_peer_that_never_answers_ends_at_the_deadline_not_sooner() {
        // b's kernel acknowledges everything and answers probes; b's
        // program sends nothing. Longer than SILENCE and a keepalive round.
        let (mut a, mut b) = pair();
        let mut w = WatchedStream::new(a.try_clone().unwrap(), Duration::from_millis(2500)).unwrap();
        a.write_all(b"request").unwrap();
        let mut req = [0u8; 7];
        b.read_exact(&mut req).unwrap();
        let t = Instant::now();
        let e = w.read(&mut [0u8; 16]).unwrap_err();
        assert!(t.elapsed() >= Duration::from_millis(2500), "gave up after {:?}: {e}", t.elapsed());
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(matches!(Stall::of(&e), Some(Stall::NoAnswer { .. })), "{e}");
        assert_eq!(e.to_string(), "did not answer within 2.5s");
    }

    #[test]
    fn messages_say_what_happened() {
        let s = Stall::Unreachable { silent_for: Duration::from_millis(1234) };
        assert_eq!(s.to_string(), "stopped answering: no data and no acknowledgement for 1.2 s");
        let e = io::Error::new(io::ErrorKind::TimedOut, s.clone());
        assert_eq!(Stall::of(&e), Some(&s));
        assert_eq!(Stall::of(&io::Error::other("x")), None);
    }
}
