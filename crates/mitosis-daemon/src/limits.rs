//! What keeps the daemon from being exhausted by those it has not
//! authenticated (the peer port) or does not trust (local users):
//!
//! - [`Deadline`]: a whole handshake or request must arrive before one
//!   instant, however its bytes are dripped (a timeout per read would let a
//!   byte every few seconds hold a connection forever);
//! - [`ConnLimiter`]: caps on connections held at once, per key (a local
//!   uid, a peer's address) and in total. One thread serves each admitted
//!   connection, so the caps also bound the daemon's threads.
//!
//! Buffers grow with the bytes that arrived
//! ([`mitosis_proto::frame::read_payload`]), never with a length announced.

use std::collections::HashMap;
use std::hash::Hash;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The caps and deadlines of a daemon (see the README's daemon usage).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Local connections held at once by one non-root uid.
    pub local_per_user: usize,
    /// Local connections held at once, in total (root's too).
    pub local_total: usize,
    /// Peer connections still in their handshake at once from one address.
    pub handshakes_per_ip: usize,
    /// Peer connections held at once, in total (authenticated or not).
    pub peer_total: usize,
    /// How long a local connection may wait before its first request byte
    /// (and between requests).
    pub local_idle: Duration,
    /// How long the rest of a local request may take once its first byte came.
    pub request: Duration,
    /// How long a peer's whole handshake may take.
    pub handshake: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            local_per_user: 128,
            local_total: 4096,
            handshakes_per_ip: 64,
            peer_total: 4096,
            local_idle: Duration::from_secs(10),
            request: Duration::from_secs(5),
            handshake: Duration::from_secs(5),
        }
    }
}

/// A socket whose read and write timeouts can be set.
pub trait Timeouts {
    fn set_read_timeout(&self, t: Option<Duration>) -> std::io::Result<()>;
    fn set_write_timeout(&self, t: Option<Duration>) -> std::io::Result<()>;
}

impl Timeouts for TcpStream {
    fn set_read_timeout(&self, t: Option<Duration>) -> std::io::Result<()> {
        TcpStream::set_read_timeout(self, t)
    }
    fn set_write_timeout(&self, t: Option<Duration>) -> std::io::Result<()> {
        TcpStream::set_write_timeout(self, t)
    }
}

impl Timeouts for UnixStream {
    fn set_read_timeout(&self, t: Option<Duration>) -> std::io::Result<()> {
        UnixStream::set_read_timeout(self, t)
    }
    fn set_write_timeout(&self, t: Option<Duration>) -> std::io::Result<()> {
        UnixStream::set_write_timeout(self, t)
    }
}

impl<T: Timeouts> Timeouts for &T {
    fn set_read_timeout(&self, t: Option<Duration>) -> std::io::Result<()> {
        (**self).set_read_timeout(t)
    }
    fn set_write_timeout(&self, t: Option<Duration>) -> std::io::Result<()> {
        (**self).set_write_timeout(t)
    }
}

/// A socket that must finish what it reads and writes before `at`: before
/// each read or write it sets the socket's timeout to the time left, and
/// once that is none every call fails with `TimedOut`. It leaves the last
/// timeout set: clear it (or drop the socket) when the deadline is over.
pub struct Deadline<S> {
    inner: S,
    at: Instant,
}

impl<S: Timeouts> Deadline<S> {
    pub fn new(inner: S, within: Duration) -> Deadline<S> {
        Deadline { inner, at: Instant::now() + within }
    }

    fn left(&self) -> std::io::Result<Duration> {
        let left = self.at.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timed_out());
        }
        Ok(left)
    }
}

fn timed_out() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, "the deadline passed")
}

/// A socket timeout reads as `WouldBlock`: here it is the deadline.
fn deadline_error(e: std::io::Error) -> std::io::Error {
    if e.kind() == std::io::ErrorKind::WouldBlock {
        timed_out()
    } else {
        e
    }
}

impl<S: Timeouts + Read> Read for Deadline<S> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.left()?;
        self.inner.set_read_timeout(Some(left))?;
        self.inner.read(buf).map_err(deadline_error)
    }
}

impl<S: Timeouts + Write> Write for Deadline<S> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let left = self.left()?;
        self.inner.set_write_timeout(Some(left))?;
        self.inner.write(buf).map_err(deadline_error)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the daemon holds {0} connections, as many as it takes in total")]
    Total(usize),
    #[error("{who} holds {cap} connections, as many as the daemon takes from one")]
    PerKey { who: String, cap: usize },
}

struct Counts<K> {
    total: usize,
    by_key: HashMap<K, usize>,
}

/// Counts the connections held, per key and in total, and admits a new one
/// only under both caps.
pub struct ConnLimiter<K: Hash + Eq + Clone> {
    counts: Mutex<Counts<K>>,
    per_key: usize,
    total: usize,
}

/// One admitted connection; dropping it gives its place back.
pub struct Permit<K: Hash + Eq + Clone> {
    limiter: Arc<ConnLimiter<K>>,
    key: Option<K>,
}

impl<K: Hash + Eq + Clone + std::fmt::Display> ConnLimiter<K> {
    pub fn new(per_key: usize, total: usize) -> Arc<ConnLimiter<K>> {
        Arc::new(ConnLimiter { counts: Mutex::new(Counts { total: 0, by_key: HashMap::new() }), per_key, total })
    }

    /// Admits a connection of `key` (`None`: counted in the total only).
    pub fn admit(self: &Arc<Self>, key: Option<K>) -> Result<Permit<K>, Refused> {
        let mut c = self.counts.lock().unwrap();
        if c.total >= self.total {
            return Err(Refused::Total(c.total));
        }
        if let Some(k) = &key {
            let n = c.by_key.entry(k.clone()).or_insert(0);
            if *n >= self.per_key {
                return Err(Refused::PerKey { who: k.to_string(), cap: self.per_key });
            }
            *n += 1;
        }
        c.total += 1;
        Ok(Permit { limiter: self.clone(), key })
    }

    /// Connections held now (in total).
    pub fn held(&self) -> usize {
        self.counts.lock().unwrap().total
    }
}

impl<K: Hash + Eq + Clone> Drop for Permit<K> {
    fn drop(&mut self) {
        let mut c = self.limiter.counts.lock().unwrap();
        c.total -= 1;
        if let Some(k) = &self.key {
            if let Some(n) = c.by_key.get_mut(k) {
                *n -= 1;
                if *n == 0 {
                    c.by_key.remove(k);
                }
            }
        }
    }
}

/// Logs refused connections at most once a second (a flood must not flood the log).
#[derive(Default)]
pub struct RefusalLog {
    last: Option<std::time::Instant>,
    since: u64,
}

impl RefusalLog {
    pub fn note(&mut self, why: &dyn std::fmt::Display) {
        self.since += 1;
        if self.last.is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(1)) {
            tracing::warn!(refused = self.since, "connection refused: {why}");
            self.last = Some(std::time::Instant::now());
            self.since = 0;
        }
    }
}

/// A local uid, as connection caps name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Uid(pub u32);

impl std::fmt::Display for Uid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "uid {}", self.0)
    }
}

/// A peer's address, as connection caps name it: an IPv4 address (also when
/// it comes IPv4-mapped), or the /64 of an IPv6 one (what one machine
/// usually has to choose from).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerIp(IpAddr);

impl PeerIp {
    pub fn of(ip: IpAddr) -> PeerIp {
        match ip {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => PeerIp(IpAddr::V4(v4)),
                None => PeerIp(IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into())),
            },
            v4 => PeerIp(v4),
        }
    }
}

impl std::fmt::Display for PeerIp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V4(v4) => write!(f, "address {v4}"),
            IpAddr::V6(v6) => write!(f, "addresses {v6}/64"),
        }
    }
}

/// The seed hosts a non-root caller may have this daemon dial: the
/// configured peers (`--peers`) and this daemon's own address. Root may name
/// any address.
#[derive(Debug, Clone, Default)]
pub struct Peers {
    /// As configured, compared as text.
    names: Vec<String>,
    /// What the configured names resolved to at start-up, and our own address.
    addrs: Vec<SocketAddr>,
}

impl Peers {
    /// Resolves `names` once (a name that does not resolve is kept as text
    /// and logged); `own` is this daemon's listen address.
    pub fn new(names: &[String], own: SocketAddr) -> Peers {
        let mut addrs = Vec::new();
        if !own.ip().is_unspecified() {
            addrs.push(own);
        }
        for name in names {
            match name.to_socket_addrs() {
                Ok(found) => addrs.extend(found),
                Err(e) => tracing::warn!(peer = %name, error = %e, "a configured peer does not resolve (now); it is matched by name only"),
            }
        }
        Peers { names: names.to_vec(), addrs }
    }

    /// Whether a non-root caller may resume from `from`. Only text is
    /// compared: a caller's name is never resolved (no lookup, no connection
    /// on its behalf before it is allowed).
    pub fn allows(&self, from: &str) -> bool {
        let from = from.trim();
        self.names.iter().any(|n| n == from) || from.parse::<SocketAddr>().is_ok_and(|a| self.addrs.contains(&a))
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_holds_for_the_whole_read_however_slowly_bytes_come() {
        let (mut tx, rx) = UnixStream::pair().unwrap();
        // A byte every 100 ms: a timeout per read (of 300 ms) never fires.
        let dripper = std::thread::spawn(move || {
            for _ in 0..30 {
                if tx.write_all(b"x").is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let t0 = Instant::now();
        let mut r = Deadline::new(&rx, Duration::from_millis(350));
        let mut buf = [0u8; 20];
        let err = r.read_exact(&mut buf).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
        let took = t0.elapsed();
        assert!(took >= Duration::from_millis(340) && took < Duration::from_millis(900), "{took:?}");
        // The dripper stops at its next write, once its peer is gone.
        let _ = r;
        drop(rx);
        dripper.join().unwrap();
    }

    #[test]
    fn a_deadline_lets_what_comes_in_time_through() {
        let (mut tx, rx) = UnixStream::pair().unwrap();
        tx.write_all(b"hello").unwrap();
        let mut r = Deadline::new(&rx, Duration::from_secs(5));
        let mut buf = [0u8; 5];
        r.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hello");
        r.write_all(b"back").unwrap();
        let mut back = [0u8; 4];
        tx.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"back");
        // Silence: the rest of the deadline, then TimedOut.
        let mut r = Deadline::new(&rx, Duration::from_millis(50));
        assert_eq!(r.read(&mut buf).unwrap_err().kind(), std::io::ErrorKind::TimedOut);
    }

    #[test]
    fn caps_per_key_and_in_total() {
        let l = ConnLimiter::new(2, 3);
        let a1 = l.admit(Some(Uid(1000))).unwrap();
        let _a2 = l.admit(Some(Uid(1000))).unwrap();
        let refused = l.admit(Some(Uid(1000))).err().unwrap();
        assert_eq!(refused, Refused::PerKey { who: "uid 1000".into(), cap: 2 });
        let _root = l.admit(None).unwrap();
        assert_eq!(l.admit(Some(Uid(7))).err().unwrap(), Refused::Total(3));
        assert_eq!(l.admit(None).err().unwrap(), Refused::Total(3));
        drop(a1);
        assert_eq!(l.held(), 2);
        let _again = l.admit(Some(Uid(1000))).unwrap();
        assert_eq!(l.held(), 3);
    }

    #[test]
    fn peers_are_counted_by_ipv4_address_or_ipv6_64() {
        let ip = |s: &str| PeerIp::of(s.parse().unwrap());
        assert_eq!(ip("::ffff:10.0.0.1"), ip("10.0.0.1"));
        assert_ne!(ip("10.0.0.1"), ip("10.0.0.2"));
        assert_eq!(ip("2001:db8::1"), ip("2001:db8::ffff:1"));
        assert_ne!(ip("2001:db8::1"), ip("2001:db8:0:1::1"));
        assert_eq!(ip("2001:db8::1").to_string(), "addresses 2001:db8::/64");
    }

    #[test]
    fn only_listed_peers_and_our_own_address() {
        let own: SocketAddr = "10.0.0.1:7070".parse().unwrap();
        let p = Peers::new(&["10.0.0.2:7070".into(), "localhost:7070".into()], own);
        assert!(p.allows("10.0.0.2:7070"));
        assert!(p.allows(" 10.0.0.1:7070"));
        assert!(p.allows("localhost:7070"));
        assert!(p.allows("127.0.0.1:7070"), "what a listed name resolved to");
        for no in ["10.0.0.2:7071", "10.0.0.3:7070", "not an address", "", "localhost:22"] {
            assert!(!p.allows(no), "{no}");
        }
        let nobody = Peers::new(&[], "0.0.0.0:7070".parse().unwrap());
        assert!(!nobody.allows("0.0.0.0:7070"));
    }
}
