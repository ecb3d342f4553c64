//! The inputs of the live fuzz: samples of every request a daemon decodes,
//! their mutants, and the sender threads that deliver them, each on a
//! connection of its own, and tell what the daemon did with them.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mitosis_proto::auth::{client_handshake, hello};
use mitosis_proto::frame::{write_msg, MAX_CONTROL_FRAME};
use mitosis_proto::local::{ContainerSpec, Envelope, LocalRequest, ResumeOptions};
use mitosis_proto::peer::PeerRequest;
use mitosis_proto::PROTOCOL_VERSION;
use rand::rngs::StdRng;
use rand::Rng;
use serde::Serialize;

use super::{Counters, Kind, Targets, ANSWER_WAIT};

/// Opens a TCP connection to `addr` (from the calling thread's network namespace).
pub(super) fn connect_tcp(addr: &str) -> std::io::Result<TcpStream> {
    let sa = std::net::ToSocketAddrs::to_socket_addrs(addr)?
        .next()
        .ok_or_else(|| std::io::Error::other(format!("{addr} does not resolve")))?;
    let s = TcpStream::connect_timeout(&sa, Duration::from_secs(5))?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// One sender: inputs of `kind` until `deadline`.
pub(super) fn sender(kind: Kind, targets: &Targets, mut rng: StdRng, deadline: Instant, counters: &Counters) {
    if let (Kind::Local, Some((uid, gid))) = (kind, targets.local_as) {
        if let Err(e) = mitosis_sys::creds::become_user_in_this_thread(uid, gid) {
            counters.error(&format!("cannot act as user nobody: {e}"));
            return;
        }
    }
    let mut run = || {
        while Instant::now() < deadline {
            let counted = counters.of(kind);
            let outcome = match kind {
                Kind::PeerPreAuth => peer_pre_auth(targets, &mut rng),
                Kind::PeerPostAuth => peer_post_auth(targets, &mut rng),
                Kind::Local => local_input(targets, &mut rng),
            };
            match outcome {
                Ok(Outcome::Skipped) => {
                    counted.skipped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                Ok(o) => {
                    counted.inputs.fetch_add(1, Ordering::Relaxed);
                    let c = match o {
                        Outcome::Answered => &counted.answered,
                        Outcome::Closed => &counted.closed,
                        _ => &counted.silent,
                    };
                    c.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused || e.kind() == std::io::ErrorKind::NotFound => {
                    counters.error(&format!("{}: the daemon does not listen any more: {e}", kind.name()));
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(_) => {
                    counted.undelivered.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    };
    // The peer senders of a test cluster run inside host a's namespace: this
    // thread enters it once, not once per input.
    let netns = match (&targets.peer, kind) {
        (Some(p), Kind::PeerPreAuth) => p.strangers_from.as_ref(),
        (Some(p), Kind::PeerPostAuth) => p.members_from.as_ref(),
        _ => None,
    };
    if let Some(host) = netns {
        let entered = std::fs::File::open(format!("/run/netns/{}", host.ns))
            .map_err(|e| e.to_string())
            .and_then(|ns| mitosis_sys::ns::setns(&ns, libc::CLONE_NEWNET).map_err(|e| e.to_string()));
        if let Err(e) = entered {
            counters.error(&format!("cannot enter the network namespace of host {}: {e}", host.ns));
            return;
        }
    }
    run();
}

/// What became of one input.
enum Outcome {
    Answered,
    Closed,
    Silent,
    Skipped,
}

/// Sends `bytes` in `chunks` writes (a pause between them), then waits for an answer.
fn deliver<S: Read + Write>(s: &mut S, bytes: &[u8], chunks: usize, rng: &mut StdRng) -> Outcome {
    let chunks = chunks.clamp(1, bytes.len().max(1));
    let step = bytes.len().div_ceil(chunks).max(1);
    for part in bytes.chunks(step) {
        if s.write_all(part).is_err() {
            return Outcome::Closed;
        }
        if chunks > 1 {
            std::thread::sleep(Duration::from_micros(rng.random_range(100..2000)));
        }
    }
    answer(s)
}

/// Reads what the daemon says within [`ANSWER_WAIT`] (the caller set the timeout).
fn answer<S: Read>(s: &mut S) -> Outcome {
    let mut buf = [0u8; 4096];
    match s.read(&mut buf) {
        Ok(0) => Outcome::Closed,
        Ok(_) => Outcome::Answered,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => Outcome::Silent,
        Err(_) => Outcome::Closed,
    }
}

fn peer_pre_auth(t: &Targets, rng: &mut StdRng) -> std::io::Result<Outcome> {
    let addr = &t.peer.as_ref().expect("a peer target").addr;
    let mut s = connect_tcp(addr)?;
    s.set_read_timeout(Some(ANSWER_WAIT))?;
    s.set_write_timeout(Some(Duration::from_secs(2)))?;
    let valid = hello(t.protection);
    let bytes = match rng.random_range(0..5) {
        0 => random_bytes(rng, 0..8192),
        1 => mutate(rng, &valid),
        2 => {
            // A valid HELLO, then a Noise message of garbage.
            let mut b = valid.to_vec();
            let msg = random_bytes(rng, 0..300);
            b.extend_from_slice(&(msg.len() as u16).to_le_bytes());
            b.extend_from_slice(&msg);
            b
        }
        3 => {
            // A valid HELLO announcing an oversized Noise message.
            let mut b = valid.to_vec();
            b.extend_from_slice(&rng.random_range(257u16..=u16::MAX).to_le_bytes());
            b.extend_from_slice(&random_bytes(rng, 0..64));
            b
        }
        _ => {
            // A HELLO with a Noise message's worth of bytes after it, mutated together.
            let tail = random_bytes(rng, 50..51);
            mutate(rng, &[&valid[..], &tail[..]].concat())
        }
    };
    let chunks = if rng.random_ratio(1, 8) { rng.random_range(2..8) } else { 1 };
    Ok(deliver(&mut s, &bytes, chunks, rng))
}

/// Samples of every peer request a member sends in normal work (ids no seed has).
pub(super) fn peer_samples() -> Vec<Vec<u8>> {
    let id = "fuzz-no-such-seed".to_string();
    [
        PeerRequest::Ping,
        PeerRequest::Checksummed { seq: 7 },
        PeerRequest::GetSeed { id: id.clone() },
        PeerRequest::ReadPages { id: id.clone(), generation: 3, ranges: vec![(0x7f00_0000_0000, 4096), (0x1000, 65536)] },
        PeerRequest::RecordWorkingSet { id, generation: 3, ranges: vec![(0x7f00_0000_0000, 4096)] },
        PeerRequest::ListInstances,
    ]
    .iter()
    .map(framed)
    .collect()
}

pub(super) fn framed<T: Serialize>(msg: &T) -> Vec<u8> {
    let mut b = Vec::new();
    write_msg(&mut b, msg).expect("encoding to memory");
    b
}

/// Whether a frame decodes to a cluster-wide order that is not sent.
pub(super) fn is_order(frame: &[u8]) -> bool {
    let Some(body) = frame.get(4..) else { return false };
    matches!(
        postcard::from_bytes::<PeerRequest>(body),
        Ok(PeerRequest::StartInstance(_) | PeerRequest::DropSeed { .. })
    )
}

fn peer_post_auth(t: &Targets, rng: &mut StdRng) -> std::io::Result<Outcome> {
    let addr = &t.peer.as_ref().expect("a peer target").addr;
    let key = t.key.as_ref().expect("a key");
    let samples = peer_samples();
    let sample = &samples[rng.random_range(0..samples.len())];
    let input = match rng.random_range(0..6) {
        0..=2 => mutate(rng, sample),
        3 => {
            // An oversized length, with a little of a body.
            let mut b = rng.random_range(MAX_CONTROL_FRAME as u32 + 1..=u32::MAX).to_le_bytes().to_vec();
            b.extend_from_slice(&random_bytes(rng, 0..256));
            b
        }
        4 => random_bytes(rng, 0..4096),
        _ => Vec::new(), // raw bytes where records belong: below
    };
    if is_order(&input) {
        return Ok(Outcome::Skipped);
    }
    let mut s = connect_tcp(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(2)))?;
    let channel = match client_handshake(&mut s, key, t.protection) {
        Ok(c) => c,
        // Over the daemon's caps: the input never reached a decoder.
        Err(mitosis_proto::ProtoError::Busy) => return Err(std::io::Error::other("busy")),
        Err(e) => return Err(std::io::Error::other(format!("handshake: {e}"))),
    };
    s.set_read_timeout(Some(ANSWER_WAIT))?;
    if input.is_empty() {
        // Not a record: the record layer must refuse it.
        let raw = random_bytes(rng, 1..2048);
        return Ok(deliver(&mut s, &raw, 1, rng));
    }
    let mut stream = channel.over(s);
    if stream.write_all(&input).and_then(|()| stream.flush()).is_err() {
        return Ok(Outcome::Closed);
    }
    Ok(answer(&mut stream))
}

/// Samples of every local request (ids and pids no one has; nothing a
/// refusal does not end).
pub(super) fn local_samples() -> Vec<Vec<u8>> {
    let id = "fuzz-no-such-seed".to_string();
    let requests = [
        LocalRequest::List,
        LocalRequest::Ps { all: true },
        LocalRequest::Stats,
        LocalRequest::Drop { id: id.clone() },
        LocalRequest::Kill { id: "mitosis-no-such-child".into() },
        LocalRequest::Prepare { pid: 0x3fff_fff0, id: id.clone(), reply_slot: None, pinned: true, copy: false },
        LocalRequest::Resume { from: "127.0.0.1:1".into(), id: id.clone(), options: ResumeOptions::default() },
        LocalRequest::ResumeInPlace { from: "127.0.0.1:1".into(), id },
        LocalRequest::BareContainer { spec: ContainerSpec::default() },
    ];
    requests.into_iter().map(|request| framed(&Envelope { version: PROTOCOL_VERSION, request })).collect()
}

fn local_input(t: &Targets, rng: &mut StdRng) -> std::io::Result<Outcome> {
    let socket = t.socket.as_ref().expect("a local target");
    let samples = local_samples();
    let input = match rng.random_range(0..5) {
        0..=2 => {
            let sample = &samples[rng.random_range(0..samples.len())];
            mutate(rng, sample)
        }
        3 => {
            let mut b = rng.random_range(MAX_CONTROL_FRAME as u32 + 1..=u32::MAX).to_le_bytes().to_vec();
            b.extend_from_slice(&random_bytes(rng, 0..256));
            b
        }
        _ => random_bytes(rng, 0..4096),
    };
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(ANSWER_WAIT))?;
    s.set_write_timeout(Some(Duration::from_secs(2)))?;
    let chunks = if rng.random_ratio(1, 8) { rng.random_range(2..8) } else { 1 };
    Ok(deliver(&mut s, &input, chunks, rng))
}

// ------------------------------------------------------------- mutation --

fn random_bytes(rng: &mut StdRng, len: std::ops::Range<usize>) -> Vec<u8> {
    let n = rng.random_range(len.start..len.end.max(len.start + 1));
    (0..n).map(|_| rng.random()).collect()
}

/// A few random edits of `sample`: bit flips, byte sets, inserts, deletes,
/// duplicated runs, a truncation, a rewritten length prefix, interesting values.
pub(super) fn mutate(rng: &mut StdRng, sample: &[u8]) -> Vec<u8> {
    let mut b = sample.to_vec();
    for _ in 0..rng.random_range(1..=4) {
        let len = b.len();
        match rng.random_range(0..8) {
            0 if len > 0 => {
                let i = rng.random_range(0..len);
                b[i] ^= 1 << rng.random_range(0..8);
            }
            1 if len > 0 => {
                let i = rng.random_range(0..len);
                b[i] = rng.random();
            }
            2 => {
                let i = rng.random_range(0..=len);
                let extra = random_bytes(rng, 1..32);
                b.splice(i..i, extra);
            }
            3 if len > 1 => {
                let i = rng.random_range(0..len);
                let j = rng.random_range(i..=len.min(i + 16));
                b.drain(i..j);
            }
            4 if len > 1 => {
                let i = rng.random_range(0..len);
                let j = rng.random_range(i..=len.min(i + 32));
                let run = b[i..j].to_vec();
                let k = rng.random_range(0..=b.len());
                b.splice(k..k, run);
            }
            5 if len > 0 => b.truncate(rng.random_range(0..len)),
            6 if len >= 4 => {
                let v: u32 = match rng.random_range(0..4) {
                    0 => 0,
                    1 => u32::MAX,
                    2 => MAX_CONTROL_FRAME as u32 + 1,
                    _ => rng.random(),
                };
                b[..4].copy_from_slice(&v.to_le_bytes());
            }
            7 if len > 0 => {
                // A varint or small integer made huge.
                let i = rng.random_range(0..len);
                b[i] = [0x80, 0xff, 0x7f, 0x00][rng.random_range(0..4)];
            }
            _ => b.push(rng.random()),
        }
    }
    b
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn mutants_differ_from_their_sample_and_stay_small() {
        let mut rng = StdRng::seed_from_u64(1);
        let sample = framed(&PeerRequest::GetSeed { id: "x".repeat(40) });
        let mutants: Vec<_> = (0..1000).map(|_| mutate(&mut rng, &sample)).collect();
        assert!(mutants.iter().filter(|m| **m != sample).count() > 950);
        assert!(mutants.iter().all(|m| m.len() < sample.len() + 4 * 64));
    }

    #[test]
    fn orders_are_recognised_and_samples_are_not_orders() {
        assert!(is_order(&framed(&PeerRequest::DropSeed { id: "s".into() })));
        assert!(peer_samples().iter().all(|s| !is_order(s)));
        assert!(!is_order(b"\x01"));
    }

    #[test]
    fn samples_decode_as_the_daemon_decodes_them() {
        for s in peer_samples() {
            assert!(postcard::from_bytes::<PeerRequest>(&s[4..]).is_ok());
        }
        for s in local_samples() {
            assert!(postcard::from_bytes::<Envelope>(&s[4..]).is_ok());
        }
    }
}

