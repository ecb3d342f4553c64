//! A whole handshake must arrive before one instant, however slowly its
//! bytes are dripped (a timeout per read would let a byte every few seconds
//! hold a connection and its thread forever).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// `stream` with every read and write bounded by the time left until `end`.
pub struct Deadline<'a> {
    stream: &'a TcpStream,
    end: Instant,
}

impl<'a> Deadline<'a> {
    pub fn new(stream: &'a TcpStream, within: Duration) -> Deadline<'a> {
        Deadline { stream, end: Instant::now() + within }
    }

    fn arm(&self) -> std::io::Result<()> {
        let left = self.end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "handshake deadline passed"));
        }
        self.stream.set_read_timeout(Some(left))?;
        self.stream.set_write_timeout(Some(left))
    }
}

impl Read for Deadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.arm()?;
        (&*self.stream).read(buf)
    }
}

impl Write for Deadline<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.arm()?;
        (&*self.stream).write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn a_dripping_peer_runs_out_of_time() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let dripper = std::thread::spawn(move || {
            let mut s = TcpStream::connect(addr).unwrap();
            for _ in 0..20 {
                if s.write_all(b"x").is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(40));
            }
        });
        let (conn, _) = listener.accept().unwrap();
        let t0 = Instant::now();
        let mut buf = [0u8; 100];
        let err = Deadline::new(&conn, Duration::from_millis(200)).read_exact(&mut buf).unwrap_err();
        assert!(matches!(err.kind(), std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock), "{err}");
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
        drop(conn);
        dripper.join().unwrap();
    }
}
