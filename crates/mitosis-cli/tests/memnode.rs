//! The memory node between two hosts: `mitosis memnode` in host a, its
//! clients (the library's `MemnodeClient`, `mitosis memnode stats`) in host
//! b. Round trips, a wrong key, a full node, garbage beside a working client.

#![forbid(unsafe_code)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::bin;
use mitosis_memnode::{MemnodeClient, MemnodeError};
use mitosis_proto::auth::{client_handshake, ClusterKey};
use mitosis_proto::frame::{read_msg, write_msg, MAX_CONTROL_FRAME};
use mitosis_proto::memnode::{MemnodeRequest, MemnodeResponse, MEMNODE_MAGIC};
use mitosis_proto::secure::Protection;
use mitosis_proto::ErrorKind;
use mitosis_testkit::{require_root, write_key, Memnode, TestDir, TwoHosts};

const KEY: &str = "memnode-test-cluster-key-0123456789";
const PAGE: usize = 4096;
const TIMEOUT: Duration = Duration::from_secs(10);

/// A memory node in host a; fields drop in order (node, hosts, directory).
struct Setup {
    node: Memnode,
    hosts: TwoHosts,
    key: PathBuf,
    _dir: TestDir,
}

fn setup(name: &str, args: &[&str]) -> Option<Setup> {
    if !require_root() {
        return None;
    }
    let dir = TestDir::new(name);
    let hosts = TwoHosts::new().expect("creating test hosts");
    let key = write_key(&dir, "key", KEY);
    let node = Memnode::start(&bin(), &hosts.a, &dir, "memnode", &key, args).expect("starting the memory node");
    Some(Setup { node, hosts, key, _dir: dir })
}

fn cluster_key() -> ClusterKey {
    ClusterKey::from_file_contents(KEY.as_bytes()).unwrap()
}

fn connect(addr: &str) -> MemnodeClient {
    MemnodeClient::connect(addr, &cluster_key(), Protection::Encrypted, TIMEOUT).expect("connecting to the memory node")
}

/// `pages` pages, different from each other and for each `salt`, and
/// compressible like text.
fn pattern(pages: usize, salt: u64) -> Vec<u8> {
    (0..pages).flat_map(|p| format!("page {p} of pattern {salt}; ").into_bytes().into_iter().cycle().take(PAGE)).collect()
}

/// `mitosis memnode stats` run in host b: (exit status, stdout, stderr).
fn stats_cli(s: &Setup, key: &std::path::Path, extra: &[&str]) -> (i32, String, String) {
    let out = Command::new("ip")
        .args(["netns", "exec", &s.hosts.b.ns])
        .arg(bin())
        .args(["memnode", "stats", "--peer", &s.node.addr(), "--key-file"])
        .arg(key)
        .args(extra)
        .output()
        .expect("running mitosis memnode stats");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[test]
fn pages_put_from_another_host_come_back_exactly() {
    let Some(s) = setup("memnode-round-trip", &["--capacity", "64M", "--compress", "lz4"]) else { return };
    let addr = s.node.addr();
    s.hosts
        .b
        .run_inside(move || {
            let mut c = connect(&addr);
            let (heap, stack) = (pattern(48, 1), pattern(16, 2));
            c.put("worker-b/instance-1", &[(0x5555_0000_0000, &heap), (0x7ffd_0000_0000, &stack)]).unwrap();
            c.put("worker-b/instance-2", &[(0x5555_0000_0000, &pattern(4, 3))]).unwrap();
            let mut out = vec![0u8; 64 * PAGE];
            c.get("worker-b/instance-1", &[(0x7ffd_0000_0000, 16 * PAGE as u64), (0x5555_0000_0000, 48 * PAGE as u64)], &mut out)
                .unwrap();
            assert_eq!(&out[..16 * PAGE], &stack[..]);
            assert_eq!(&out[16 * PAGE..], &heap[..]);
            // Never put: an error naming the page, not zeros.
            let mut page = vec![0u8; PAGE];
            let err = c.get("worker-b/instance-1", &[(0x5555_0003_0000, PAGE as u64)], &mut page).unwrap_err();
            assert!(matches!(&err, MemnodeError::Remote(r) if r.kind == ErrorKind::NotFound), "{err}");
            assert!(err.to_string().contains("never put"), "{err}");
            assert_eq!(c.drop_instance("worker-b/instance-1").unwrap(), (64, 64 * PAGE as u64));
            assert!(c.get("worker-b/instance-1", &[(0x5555_0000_0000, PAGE as u64)], &mut page).is_err());
            // The other instance is untouched.
            let mut four = vec![0u8; 4 * PAGE];
            c.get("worker-b/instance-2", &[(0x5555_0000_0000, 4 * PAGE as u64)], &mut four).unwrap();
            assert_eq!(four, pattern(4, 3));
        })
        .unwrap();

    let (code, out, err) = stats_cli(&s, &s.key, &["--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["compression"], "lz4");
    assert_eq!((v["pages"].as_u64(), v["instances"].as_u64()), (Some(4), Some(1)), "{v}");
    assert_eq!((v["puts"].as_u64(), v["gets"].as_u64(), v["misses"].as_u64(), v["drops"].as_u64()), (Some(2), Some(2), Some(2), Some(1)));
    assert!(v["stored_bytes"].as_u64().unwrap() < v["raw_bytes"].as_u64().unwrap(), "{v}");
    assert_eq!(v["per_instance"][0]["instance"], "worker-b/instance-2");
    let (code, out, err) = stats_cli(&s, &s.key, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("lz4 compression") && out.contains("worker-b/instance-2"), "{out}");
}

#[test]
fn a_wrong_key_is_refused_with_77() {
    let Some(s) = setup("memnode-wrong-key", &["--capacity", "1M"]) else { return };
    let wrong = s.key.with_file_name("wrong-key");
    std::fs::write(&wrong, "a-key-of-another-cluster-987654321").unwrap();
    let (code, out, err) = stats_cli(&s, &wrong, &[]);
    assert_eq!(code, 77, "{out}{err}");
    assert!(out.is_empty());
    assert!(err.contains("cluster key"), "{err}");
    // Protection must match too.
    let (code, _, err) = stats_cli(&s, &s.key, &["--no-encrypt"]);
    assert_eq!(code, 76, "{err}");
    // Nothing listens there: 69.
    let out = Command::new("ip")
        .args(["netns", "exec", &s.hosts.b.ns])
        .arg(bin())
        .args(["memnode", "stats", "--peer", &format!("{}:7081", s.hosts.a.ip), "--key-file"])
        .arg(&s.key)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(69), "{}", String::from_utf8_lossy(&out.stderr));
    // Holders of the key are served.
    let (code, _, err) = stats_cli(&s, &s.key, &[]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn a_full_node_refuses_the_put_whole_and_loses_nothing() {
    // 1 MiB: room for 248 raw pages with their index charge.
    let Some(s) = setup("memnode-full", &["--capacity", "1M", "--compress", "none"]) else { return };
    let addr = s.node.addr();
    s.hosts
        .b
        .run_inside(move || {
            let mut c = connect(&addr);
            let first = pattern(200, 7);
            c.put("i1", &[(0x10000, &first)]).unwrap();
            // 64 more pages in two runs of another instance: the second would not fit.
            let err = c.put("i2", &[(0x10000, &pattern(32, 8)), (0x90000, &pattern(32, 9))]).unwrap_err();
            assert!(matches!(err, MemnodeError::Full { capacity: 1048576, .. }), "{err}");
            assert!(err.to_string().contains("nothing of it was stored"), "{err}");
            let mut page = vec![0u8; PAGE];
            assert!(c.get("i2", &[(0x10000, PAGE as u64)], &mut page).is_err(), "half a refused put was stored");
            let mut all = vec![0u8; 200 * PAGE];
            c.get("i1", &[(0x10000, 200 * PAGE as u64)], &mut all).unwrap();
            assert_eq!(all, first);
            // A put that fits still goes in, on the same connection.
            c.put("i2", &[(0x10000, &pattern(32, 8))]).unwrap();
            let st = c.stats().unwrap();
            assert_eq!((st.refusals, st.pages, st.instances), (1, 232, 2));
            assert!(st.used_bytes <= st.capacity_bytes);
        })
        .unwrap();
    assert!(s.node.log().contains("the memory node is full"), "{}", s.node.log());
}

/// An authenticated connection that said hello, as a raw stream.
fn authenticated(addr: &str) -> mitosis_proto::secure::SecureStream<TcpStream> {
    let mut t = TcpStream::connect(addr).unwrap();
    t.set_read_timeout(Some(TIMEOUT)).unwrap();
    let ch = client_handshake(&mut t, &cluster_key(), Protection::Encrypted).unwrap();
    let mut st = ch.over(t);
    write_msg(&mut st, &MemnodeRequest::Hello { magic: MEMNODE_MAGIC }).unwrap();
    st.flush().unwrap();
    assert!(matches!(read_msg(&mut st, MAX_CONTROL_FRAME).unwrap(), MemnodeResponse::Hello { .. }));
    st
}

fn bad_request_answer(st: &mut impl Read) -> String {
    match read_msg(st, MAX_CONTROL_FRAME) {
        Ok(MemnodeResponse::Error(e)) if e.kind == ErrorKind::BadRequest => e.message,
        other => panic!("expected a BadRequest answer, got {other:?}"),
    }
}

#[test]
fn garbage_gets_clear_errors_while_another_client_keeps_working() {
    let Some(mut s) = setup("memnode-garbage", &["--capacity", "64M", "--compress", "zstd"]) else { return };
    let addr = s.node.addr();
    let (ops, answers) = s
        .hosts
        .b
        .run_inside(move || {
            let stop = Arc::new(AtomicBool::new(false));
            let worker = {
                let (addr, stop) = (addr.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut c = connect(&addr);
                    let mut ops = 0u64;
                    while !stop.load(Ordering::Relaxed) || ops < 20 {
                        let data = pattern(8, ops);
                        c.put("steady", &[(0x1000, &data)]).expect("a put of the steady client");
                        let mut out = vec![0u8; 8 * PAGE];
                        c.get("steady", &[(0x1000, 8 * PAGE as u64)], &mut out).expect("a get of the steady client");
                        assert_eq!(out, data, "the steady client got other bytes than it put");
                        ops += 1;
                    }
                    ops
                })
            };
            let mut answers = Vec::new();
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(1) {
                // Garbage before any handshake: closed without an answer.
                let mut raw = TcpStream::connect(&addr).unwrap();
                raw.set_read_timeout(Some(TIMEOUT)).unwrap();
                let _ = raw.write_all(&[0x5a; 300]);
                let mut rest = Vec::new();
                let _ = raw.read_to_end(&mut rest);
                // An undecodable frame behind authentication.
                let mut st = authenticated(&addr);
                st.write_all(&7u32.to_le_bytes()).unwrap();
                st.write_all(&[0xfe; 7]).unwrap();
                st.flush().unwrap();
                answers.push(bad_request_answer(&mut st));
                // An oversized frame.
                let mut st = authenticated(&addr);
                st.write_all(&(64u32 << 20).to_le_bytes()).unwrap();
                st.flush().unwrap();
                answers.push(bad_request_answer(&mut st));
                // A put whose digests do not match its pages' count.
                let mut st = authenticated(&addr);
                write_msg(&mut st, &MemnodeRequest::Put { instance: "x".into(), runs: vec![(0, 8192)], digests: vec![] }).unwrap();
                st.flush().unwrap();
                answers.push(bad_request_answer(&mut st));
            }
            stop.store(true, Ordering::Relaxed);
            (worker.join().expect("the steady client failed"), answers)
        })
        .unwrap();
    assert!(ops >= 20, "{ops}");
    assert!(answers.iter().any(|a| a.contains("undecodable")), "{answers:?}");
    assert!(answers.iter().any(|a| a.contains("exceeds the limit")), "{answers:?}");
    assert!(answers.iter().any(|a| a.contains("digests for 2 pages")), "{answers:?}");
    assert!(s.node.running(), "the memory node died:\n{}", s.node.log());
    let (code, out, err) = stats_cli(&s, &s.key, &["--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["bad_requests"].as_u64(), Some(answers.len() as u64), "{v}");
    assert!(!s.node.log().contains("panicked"), "{}", s.node.log());
}

/// `mitosis memnode ARGS` on this host: (exit status, stderr).
fn memnode_cli(args: &[&str]) -> (i32, String) {
    let out = Command::new(bin()).arg("memnode").args(args).output().expect("running mitosis memnode");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into())
}

#[test]
fn usage_errors_are_64_and_a_taken_address_is_69() {
    let dir = TestDir::new("memnode-usage");
    let key = write_key(&dir, "key", KEY);
    let short = write_key(&dir, "short", "too-short");
    let key_arg = key.to_str().unwrap();
    let (code, err) = memnode_cli(&[]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("--listen") && err.contains("--capacity"), "{err}");
    let (code, err) = memnode_cli(&["--listen", "127.0.0.1:0", "--key-file", key_arg, "--capacity", "12Q"]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("unknown unit"), "{err}");
    let (code, err) = memnode_cli(&["--listen", "127.0.0.1:0", "--key-file", key_arg, "--capacity", "1M", "--compress", "gzip"]);
    assert_eq!(code, 64, "{err}");
    let missing = dir.path().join("no-such-key");
    let (code, err) = memnode_cli(&["--listen", "127.0.0.1:0", "--key-file", missing.to_str().unwrap(), "--capacity", "1M"]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("cannot read key file"), "{err}");
    let (code, err) = memnode_cli(&["--listen", "127.0.0.1:0", "--key-file", short.to_str().unwrap(), "--capacity", "1M"]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("at least 16 bytes"), "{err}");
    // An address another socket holds (on loopback).
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, err) = memnode_cli(&["--listen", &addr, "--key-file", key_arg, "--capacity", "1M"]);
    assert_eq!(code, 69, "{err}");
    assert!(err.contains("cannot listen on"), "{err}");
    // `stats` with a key file it cannot read.
    let (code, err) = memnode_cli(&["stats", "--peer", &addr, "--key-file", missing.to_str().unwrap()]);
    assert_eq!(code, 64, "{err}");
}
