//! What runs beside the inputs: connections held open and fed a byte a
//! second (slow-loris), and the liveness checks that must be answered.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mitosis::Client;
use mitosis_proto::auth::{client_handshake, hello, ClusterKey};
use mitosis_proto::frame::{read_msg, write_msg, MAX_CONTROL_FRAME};
use mitosis_proto::peer::{PeerRequest, PeerResponse};
use mitosis_proto::secure::Protection;

use super::inputs::connect_tcp;
use super::{Counters, PeerTarget, Targets, LIVENESS_EVERY, LIVENESS_TIMEOUT};

/// One held connection: the stream and where it was opened.
enum Held {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Held {
    fn drip(&mut self, byte: u8) -> bool {
        let r = match self {
            Held::Tcp(s) => s.write(&[byte]),
            Held::Unix(s) => s.write(&[byte]),
        };
        if r.is_err() {
            return false;
        }
        // Anything the daemon sent back (a deadline's error, "busy") means it let go.
        let mut buf = [0u8; 256];
        let read = match self {
            Held::Tcp(s) => s.read(&mut buf),
            Held::Unix(s) => s.read(&mut buf),
        };
        matches!(read, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }
}

/// Holds `n` connections on each target, a byte a second on each, opening
/// again those the daemon has let go.
pub(super) fn holder(t: &Targets, n: usize, stop: &AtomicBool, counters: &Counters) {
    if n == 0 {
        return;
    }
    let open_tcp = |count: usize| -> Vec<Held> {
        let Some(PeerTarget { addr, strangers_from: netns, .. }) = &t.peer else { return Vec::new() };
        let addr = addr.clone();
        let open = move || -> Vec<Held> {
            (0..count)
                .filter_map(|_| {
                    let s = connect_tcp(&addr).ok()?;
                    s.set_nonblocking(true).ok()?;
                    Some(Held::Tcp(s))
                })
                .collect()
        };
        match netns {
            None => open(),
            Some(host) => host.run_inside(open).unwrap_or_default(),
        }
    };
    let (socket, local_as) = (t.socket.clone(), t.local_as);
    // Unix connections as nobody, from a thread of nobody's.
    let open_unix = |count: usize| -> Vec<Held> {
        let Some(path) = socket.clone() else { return Vec::new() };
        std::thread::spawn(move || -> Vec<Held> {
            if let Some((uid, gid)) = local_as {
                if mitosis_sys::creds::become_user_in_this_thread(uid, gid).is_err() {
                    return Vec::new();
                }
            }
            (0..count)
                .filter_map(|_| {
                    let s = UnixStream::connect(&path).ok()?;
                    s.set_nonblocking(true).ok()?;
                    Some(Held::Unix(s))
                })
                .collect()
        })
        .join()
        .unwrap_or_default()
    };
    let mut tcp = open_tcp(n);
    let mut unix = open_unix(n);
    counters.held_opened.fetch_add((tcp.len() + unix.len()) as u64, Ordering::Relaxed);
    let hello = hello(t.protection);
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_secs(1));
        if stop.load(Ordering::Relaxed) {
            break;
        }
        i += 1;
        tcp.retain_mut(|h| h.drip(hello[i % hello.len()]));
        unix.retain_mut(|h| h.drip(0x7f));
        let (more_tcp, more_unix) = (open_tcp(n.saturating_sub(tcp.len())), open_unix(n.saturating_sub(unix.len())));
        counters.held_opened.fetch_add((more_tcp.len() + more_unix.len()) as u64, Ordering::Relaxed);
        tcp.extend(more_tcp);
        unix.extend(more_unix);
    }
}

/// Every [`LIVENESS_EVERY`], one well-formed request per target on a fresh
/// connection must get a well-formed answer.
pub(super) fn liveness(t: &Targets, stop: &AtomicBool, counters: &Counters) {
    while !stop.load(Ordering::Relaxed) {
        if let Some(PeerTarget { addr, members_from: netns, .. }) = &t.peer {
            let (addr, key, protection) = (addr.clone(), t.key.clone(), t.protection);
            let check = move || peer_alive(&addr, key.as_ref(), protection);
            let result = match netns {
                None => check(),
                Some(host) => host.run_inside(check).unwrap_or_else(|e| Err(format!("{e:#}"))),
            };
            match result {
                Ok(()) => {
                    counters.liveness_checks.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => counters.error(&format!("peer liveness: {e}")),
            }
        }
        if let Some(socket) = &t.socket {
            match local_alive(socket) {
                Ok(()) => {
                    counters.liveness_checks.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => counters.error(&format!("local liveness: {e}")),
            }
        }
        std::thread::sleep(LIVENESS_EVERY);
    }
}

/// A `Ping` answered with `Pong` (with the key), or a HELLO answered with a
/// REPLY (without); "busy" counts as an answer.
fn peer_alive(addr: &str, key: Option<&ClusterKey>, protection: Protection) -> Result<(), String> {
    let mut s = connect_tcp(addr).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(LIVENESS_TIMEOUT)).map_err(|e| e.to_string())?;
    let Some(key) = key else {
        s.write_all(&hello(protection)).map_err(|e| e.to_string())?;
        let mut reply = [0u8; 77];
        s.read_exact(&mut reply).map_err(|e| format!("no REPLY to a HELLO: {e}"))?;
        return if &reply[..8] == b"MITOSIS1" { Ok(()) } else { Err(format!("not a REPLY: {:?}", &reply[..8])) };
    };
    let channel = match client_handshake(&mut s, key, protection) {
        Ok(c) => c,
        Err(mitosis_proto::ProtoError::Busy) => return Ok(()),
        Err(e) => return Err(format!("handshake: {e}")),
    };
    let mut stream = channel.over(s);
    write_msg(&mut stream, &PeerRequest::Ping).map_err(|e| e.to_string())?;
    stream.flush().map_err(|e| e.to_string())?;
    match read_msg::<_, PeerResponse>(&mut stream, MAX_CONTROL_FRAME) {
        Ok(PeerResponse::Pong) => Ok(()),
        Ok(other) => Err(format!("Ping answered with {other:?}")),
        Err(e) => Err(format!("no answer to Ping: {e}")),
    }
}

/// `List` answered with the seeds (or "busy"), as this process's user.
fn local_alive(socket: &Path) -> Result<(), String> {
    match Client::connect(socket).and_then(|mut c| c.list()) {
        Ok(_) => Ok(()),
        Err(e) if e.exit_code() == 75 => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}
