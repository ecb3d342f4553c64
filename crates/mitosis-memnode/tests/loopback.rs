//! The client against the server on loopback, in this process: round trips,
//! refusals, bad input, and a fake node that returns wrong pages.

#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use mitosis_memnode::{MemnodeClient, MemnodeError, ServerConfig, Store};
use mitosis_proto::auth::{client_handshake, server_handshake, ClusterKey};
use mitosis_proto::frame::{read_msg, write_msg, MAX_CONTROL_FRAME};
use mitosis_proto::memnode::{Compression, MemnodeRequest, MemnodeResponse, MEMNODE_MAGIC};
use mitosis_proto::secure::Protection;
use mitosis_proto::ErrorKind;

const KEY: &[u8] = b"memnode-loopback-test-key-0123456789";
const PAGE: usize = 4096;
const TIMEOUT: Duration = Duration::from_secs(10);

fn key(k: &[u8]) -> ClusterKey {
    ClusterKey::from_file_contents(k).unwrap()
}

/// A server on an ephemeral loopback port, serving until the test process ends.
fn start(capacity: u64, compression: Compression) -> (SocketAddr, Arc<Store>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let store = Arc::new(Store::new(capacity, compression));
    let s = store.clone();
    std::thread::spawn(move || mitosis_memnode::serve(listener, s, ServerConfig::new(key(KEY), Protection::Encrypted)));
    (addr, store)
}

fn connect(addr: SocketAddr) -> MemnodeClient {
    MemnodeClient::connect(&addr.to_string(), &key(KEY), Protection::Encrypted, TIMEOUT).unwrap()
}

/// Pages that differ from each other and from run to run.
fn pattern(pages: usize, salt: u64) -> Vec<u8> {
    (0..pages * PAGE / 8).flat_map(|i| ((i as u64 * 0x9e37_79b9) ^ salt).to_le_bytes()).collect()
}

#[test]
fn puts_gets_and_drops_round_trip_with_every_codec() {
    for compression in [Compression::None, Compression::Lz4, Compression::Zstd] {
        let (addr, _store) = start(1 << 30, compression);
        let mut c = connect(addr);
        assert_eq!((c.capacity(), c.compression()), (1 << 30, compression));
        let a = pattern(16, 1);
        let b = pattern(1, 2);
        let receipt = c.put("w1/i1", &[(0x7f00_0000_0000, &a), (0x5000, &b)]).unwrap();
        assert_eq!((receipt.pages, receipt.instance_pages), (17, 17));
        let mut out = vec![0u8; 17 * PAGE];
        c.get("w1/i1", &[(0x5000, PAGE as u64), (0x7f00_0000_0000, 16 * PAGE as u64)], &mut out).unwrap();
        assert_eq!(&out[..PAGE], &b[..]);
        assert_eq!(&out[PAGE..], &a[..], "{compression}");
        // A page never put: an error naming it, never zeros; the connection goes on.
        let mut one = vec![0u8; PAGE];
        let err = c.get("w1/i1", &[(0x6000, PAGE as u64)], &mut one).unwrap_err();
        assert!(matches!(&err, MemnodeError::Remote(r) if r.kind == ErrorKind::NotFound), "{err}");
        assert!(err.to_string().contains("0x6000"), "{err}");
        // The same address of another instance is another page.
        assert!(c.get("w1/i2", &[(0x5000, PAGE as u64)], &mut one).is_err());
        let stats = c.stats().unwrap();
        assert_eq!((stats.pages, stats.instances, stats.misses, stats.puts, stats.gets), (17, 1, 2, 1, 1));
        assert_eq!(c.drop_instance("w1/i1").unwrap(), (17, 17 * PAGE as u64));
        assert!(c.get("w1/i1", &[(0x5000, PAGE as u64)], &mut one).is_err(), "dropped pages are gone");
        assert_eq!(c.stats().unwrap().pages, 0);
    }
}

#[test]
fn gets_asked_ahead_are_answered_in_order() {
    let (addr, _store) = start(1 << 30, Compression::Lz4);
    let mut c = connect(addr);
    let (a, b) = (pattern(4, 1), pattern(4, 2));
    c.put("w1/i1", &[(0x10000, &a), (0x20000, &b)]).unwrap();
    let (ra, rb, missing) = ([(0x10000, 4 * PAGE as u64)], [(0x20000, 4 * PAGE as u64)], [(0x30000, PAGE as u64)]);
    // Three on the wire at once, one of them for a page never put.
    c.ask_get("w1/i1", &ra).unwrap();
    c.ask_get("w1/i1", &missing).unwrap();
    c.ask_get("w1/i1", &rb).unwrap();
    let mut out = vec![0u8; 4 * PAGE];
    c.take_get("w1/i1", &ra, &mut out).unwrap();
    assert_eq!(out, a);
    let err = c.take_get("w1/i1", &missing, &mut out[..PAGE]).unwrap_err();
    assert!(matches!(&err, MemnodeError::Remote(r) if r.kind == ErrorKind::NotFound), "{err}");
    c.take_get("w1/i1", &rb, &mut out).unwrap();
    assert_eq!(out, b, "the answer after an error is still the next one asked");
}

#[test]
fn a_full_node_refuses_the_put_and_keeps_the_rest() {
    // Room for 8 raw pages with their charges.
    let capacity = 8 * (PAGE as u64 + mitosis_memnode::store::PAGE_CHARGE);
    let (addr, _store) = start(capacity, Compression::None);
    let mut c = connect(addr);
    let kept = pattern(6, 3);
    c.put("i", &[(0, &kept)]).unwrap();
    let err = c.put("i", &[(0x100000, &pattern(3, 4))]).unwrap_err();
    assert!(matches!(err, MemnodeError::Full { capacity: cap, .. } if cap == capacity), "{err}");
    assert!(err.to_string().contains("full"), "{err}");
    assert_eq!(err.kind().exit_code(), 75);
    // Nothing of the refused put, all of the earlier one; the connection still serves.
    let mut out = vec![0u8; PAGE];
    assert!(c.get("i", &[(0x100000, PAGE as u64)], &mut out).is_err());
    let mut all = vec![0u8; 6 * PAGE];
    c.get("i", &[(0, 6 * PAGE as u64)], &mut all).unwrap();
    assert_eq!(all, kept);
    let s = c.stats().unwrap();
    assert_eq!((s.refusals, s.pages), (1, 6));
    c.put("i", &[(0x100000, &pattern(2, 5))]).unwrap();
}

#[test]
fn a_wrong_key_is_refused_and_others_go_on() {
    let (addr, _store) = start(1 << 20, Compression::Lz4);
    let err = MemnodeClient::connect(&addr.to_string(), &key(b"another-key-entirely-0123456789"), Protection::Encrypted, TIMEOUT)
        .err()
        .expect("refused");
    assert_eq!(err.kind(), ErrorKind::AuthFailed, "{err}");
    assert_eq!(err.kind().exit_code(), 77);
    let err = MemnodeClient::connect(&addr.to_string(), &key(KEY), Protection::Integrity, TIMEOUT).err().expect("refused");
    assert_eq!(err.kind(), ErrorKind::VersionMismatch, "{err}");
    let mut c = connect(addr);
    c.put("i", &[(0, &pattern(1, 1))]).unwrap();
}

/// An authenticated stream to the node, hello done.
fn authenticated(addr: SocketAddr) -> mitosis_proto::secure::SecureStream<TcpStream> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    let ch = client_handshake(&mut s, &key(KEY), Protection::Encrypted).unwrap();
    let mut s = ch.over(s);
    write_msg(&mut s, &MemnodeRequest::Hello { magic: MEMNODE_MAGIC }).unwrap();
    s.flush().unwrap();
    assert!(matches!(read_msg(&mut s, MAX_CONTROL_FRAME).unwrap(), MemnodeResponse::Hello { .. }));
    s
}

fn expect_bad_request(s: &mut impl Read) -> String {
    match read_msg(s, MAX_CONTROL_FRAME).unwrap() {
        MemnodeResponse::Error(e) if e.kind == ErrorKind::BadRequest => e.message,
        other => panic!("expected a BadRequest error, got {other:?}"),
    }
}

#[test]
fn garbage_is_answered_with_an_error_and_others_keep_working() {
    let (addr, store) = start(1 << 24, Compression::Zstd);
    let mut good = connect(addr);
    let data = pattern(4, 9);
    good.put("good", &[(0x1000, &data)]).unwrap();

    // Undecodable frame, behind authentication: an error, then the connection ends.
    let mut s = authenticated(addr);
    s.write_all(&5u32.to_le_bytes()).unwrap();
    s.write_all(&[0xff; 5]).unwrap();
    s.flush().unwrap();
    assert!(expect_bad_request(&mut s).contains("undecodable"));
    // Oversized frame.
    let mut s = authenticated(addr);
    s.write_all(&u32::MAX.to_le_bytes()).unwrap();
    s.flush().unwrap();
    assert!(expect_bad_request(&mut s).contains("exceeds"));
    // A request out of bounds (unaligned get): an error, and the connection goes on.
    let mut s = authenticated(addr);
    write_msg(&mut s, &MemnodeRequest::Get { instance: "good".into(), runs: vec![(0x1001, 4096)] }).unwrap();
    s.flush().unwrap();
    assert!(expect_bad_request(&mut s).contains("not page aligned"));
    write_msg(&mut s, &MemnodeRequest::Stats).unwrap();
    s.flush().unwrap();
    assert!(matches!(read_msg(&mut s, MAX_CONTROL_FRAME).unwrap(), MemnodeResponse::Stats(_)));
    // A request before the hello.
    let mut raw = TcpStream::connect(addr).unwrap();
    raw.set_read_timeout(Some(TIMEOUT)).unwrap();
    let ch = client_handshake(&mut raw, &key(KEY), Protection::Encrypted).unwrap();
    let mut s = ch.over(raw);
    write_msg(&mut s, &MemnodeRequest::Stats).unwrap();
    s.flush().unwrap();
    assert!(expect_bad_request(&mut s).contains("hello"));
    // Garbage before any handshake: the connection is closed.
    let mut raw = TcpStream::connect(addr).unwrap();
    raw.set_read_timeout(Some(TIMEOUT)).unwrap();
    raw.write_all(&[0x47; 200]).unwrap();
    let mut rest = Vec::new();
    let _ = raw.read_to_end(&mut rest);

    // The good client never noticed.
    let mut out = vec![0u8; 4 * PAGE];
    good.get("good", &[(0x1000, 4 * PAGE as u64)], &mut out).unwrap();
    assert_eq!(out, data);
    assert_eq!(store.stats().bad_requests, 4);
}

#[test]
fn a_daemon_is_not_taken_for_a_memory_node() {
    // A server that authenticates like a daemon and answers as one.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let ch = server_handshake(&mut conn, &key(KEY), Protection::Encrypted).unwrap();
        let mut s = ch.over(conn);
        let body = mitosis_proto::frame::read_frame(&mut s, MAX_CONTROL_FRAME).unwrap();
        let as_peer: Result<mitosis_proto::peer::PeerRequest, _> = postcard::from_bytes(&body);
        assert!(as_peer.is_err());
        let err = mitosis_proto::RemoteError::new(ErrorKind::BadRequest, "undecodable message");
        write_msg(&mut s, &mitosis_proto::peer::PeerResponse::Error(err)).unwrap();
        s.flush().unwrap();
    });
    let err = MemnodeClient::connect(&addr.to_string(), &key(KEY), Protection::Encrypted, TIMEOUT).err().expect("refused");
    assert!(matches!(err, MemnodeError::NotAMemnode { .. }), "{err}");
}

/// A fake node that answers every get with the page it was given, whatever
/// was asked: the client must refuse it.
#[test]
fn a_wrong_page_from_the_node_is_refused() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let ch = server_handshake(&mut conn, &key(KEY), Protection::Encrypted).unwrap();
        let mut s = ch.over(conn);
        let mut stored: Option<(Vec<u8>, Vec<[u8; 16]>)> = None;
        loop {
            let Ok(req) = read_msg::<_, MemnodeRequest>(&mut s, MAX_CONTROL_FRAME) else { return };
            let answer = match req {
                MemnodeRequest::Hello { .. } => MemnodeResponse::Hello { capacity: 1 << 30, compression: Compression::None },
                MemnodeRequest::Put { digests, runs, .. } => {
                    let mut data = vec![0u8; runs.iter().map(|r| r.1 as usize).sum()];
                    s.read_exact(&mut data).unwrap();
                    stored = Some((data, digests));
                    MemnodeResponse::Stored { pages: 1, instance_pages: 1, instance_used_bytes: 4096 }
                }
                MemnodeRequest::Get { .. } => {
                    let (data, digests) = stored.clone().unwrap();
                    write_msg(&mut s, &MemnodeResponse::Pages { len: data.len() as u64, digests }).unwrap();
                    s.write_all(&data).unwrap();
                    s.flush().unwrap();
                    continue;
                }
                _ => return,
            };
            write_msg(&mut s, &answer).unwrap();
            s.flush().unwrap();
        }
    });
    let mut c = connect(addr);
    c.put("i", &[(0x1000, &pattern(1, 1))]).unwrap();
    let mut out = vec![0u8; PAGE];
    // The page of 0x1000 handed out for 0x2000: refused.
    let err = c.get("i", &[(0x2000, PAGE as u64)], &mut out).unwrap_err();
    assert!(matches!(err, MemnodeError::WrongPage { addr: 0x2000, .. }), "{err}");
    // The connection is not trusted any more.
    assert!(matches!(c.get("i", &[(0x1000, PAGE as u64)], &mut out), Err(MemnodeError::Broken)));
}

/// Connections that never finish their handshake hold their address's
/// handshake places; one more is told "busy"; once they go, it is served.
#[test]
fn one_address_holds_few_handshakes_at_once() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let store = Arc::new(Store::new(1 << 20, Compression::Lz4));
    let mut config = ServerConfig::new(key(KEY), Protection::Encrypted);
    config.max_handshakes_per_ip = 2;
    std::thread::spawn(move || mitosis_memnode::serve(listener, store, config));
    let silent: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(addr).unwrap()).collect();
    // The server counts them once it has accepted them.
    let deadline = std::time::Instant::now() + TIMEOUT;
    let busy = loop {
        match MemnodeClient::connect(&addr.to_string(), &key(KEY), Protection::Encrypted, TIMEOUT) {
            Err(e) if e.kind() == ErrorKind::Busy => break e,
            Ok(_) | Err(_) if std::time::Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            other => panic!("expected busy, got {:?}", other.err()),
        }
    };
    assert_eq!(busy.kind().exit_code(), 75, "{busy}");
    drop(silent);
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        match MemnodeClient::connect(&addr.to_string(), &key(KEY), Protection::Encrypted, TIMEOUT) {
            Ok(mut c) => {
                c.put("i", &[(0, &pattern(1, 1))]).unwrap();
                break;
            }
            Err(e) if e.kind() == ErrorKind::Busy && std::time::Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("{e}"),
        }
    }
}
