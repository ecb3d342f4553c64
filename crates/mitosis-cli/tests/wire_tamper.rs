//! Page traffic between daemons is protected end to end: a relay on the path
//! between daemon b and daemon a that flips a byte, or replays a record, of
//! the page answers gets the child killed with a reason, never run on the
//! bad data; and the cluster key can be rotated with SIGHUP.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;

/// What the relay does to the first record of page data (the first record
/// from a after b's first `ReadPages`).
#[derive(Clone, Copy, PartialEq)]
enum Attack {
    /// Forward everything unchanged (the control).
    None,
    /// Flip one bit of the record's body.
    FlipByte,
    /// Send the record twice.
    Replay,
}

/// Messages a sends during the handshake: REPLY, then status and Noise message.
const SERVER_HANDSHAKE: [usize; 2] = [77, 1 + 2 + 48];
/// Messages b sends during the handshake: HELLO, then a Noise message.
const CLIENT_HANDSHAKE: [usize; 2] = [44, 2 + 48];

struct Relay {
    addr: String,
    /// Records the relay attacked, over all its connections.
    attacked: Arc<AtomicUsize>,
}

fn read_record(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 2];
    s.read_exact(&mut len)?;
    let mut rec = len.to_vec();
    rec.resize(2 + u16::from_le_bytes(len) as usize, 0);
    s.read_exact(&mut rec[2..])?;
    Ok(rec)
}

/// Forwards the handshake messages of `sizes`, one at a time (each side waits for the other's).
fn pass(sizes: [usize; 2], from: &mut TcpStream, to: &mut TcpStream) -> std::io::Result<()> {
    for n in sizes {
        let mut b = vec![0u8; n];
        from.read_exact(&mut b)?;
        to.write_all(&b)?;
    }
    Ok(())
}

/// One relayed connection: b's requests go up unchanged; once b sent its
/// second request (the first `ReadPages`: b sends it only after it read the
/// whole `GetSeed` answer), the next record from a is attacked.
fn relay_one(mut down: TcpStream, upstream: &str, attack: Attack, attacked: Arc<AtomicUsize>) {
    let Ok(mut up) = TcpStream::connect(upstream) else { return };
    let pages_asked = Arc::new(AtomicBool::new(false));
    let (mut up_r, mut down_w) = (up.try_clone().unwrap(), down.try_clone().unwrap());
    let asked = pages_asked.clone();
    let back = std::thread::spawn(move || {
        if pass(SERVER_HANDSHAKE, &mut up_r, &mut down_w).is_err() {
            return;
        }
        let mut done = false;
        while let Ok(mut rec) = read_record(&mut up_r) {
            let mut copies = 1;
            if !done && asked.load(Ordering::SeqCst) && attack != Attack::None {
                done = true;
                attacked.fetch_add(1, Ordering::SeqCst);
                match attack {
                    Attack::FlipByte => {
                        let at = 2 + (rec.len() - 2) / 2;
                        rec[at] ^= 0x10;
                    }
                    Attack::Replay => copies = 2,
                    Attack::None => {}
                }
            }
            for _ in 0..copies {
                if down_w.write_all(&rec).is_err() {
                    return;
                }
            }
        }
        let _ = down_w.shutdown(Shutdown::Both);
    });
    if pass(CLIENT_HANDSHAKE, &mut down, &mut up).is_ok() {
        let mut requests = 0;
        while let Ok(rec) = read_record(&mut down) {
            requests += 1;
            if requests == 2 {
                pages_asked.store(true, Ordering::SeqCst);
            }
            if up.write_all(&rec).is_err() {
                break;
            }
        }
    }
    let _ = up.shutdown(Shutdown::Both);
    let _ = back.join();
}

/// A relay in host a on `port` to daemon a that applies `attack` on every connection.
fn relay(c: &Cluster, port: u16, attack: Attack) -> Relay {
    let addr = format!("{}:{port}", c.hosts.a.ip);
    let upstream = c.a.addr();
    let attacked = Arc::new(AtomicUsize::new(0));
    let (listen, count) = (addr.clone(), attacked.clone());
    in_netns(&c.hosts.a, move || {
        let listener = TcpListener::bind(&listen).unwrap();
        // Threads started here stay in host a's namespace, so they can reach daemon a.
        std::thread::spawn(move || {
            for down in listener.incoming() {
                let Ok(down) = down else { return };
                let (up, count) = (upstream.clone(), count.clone());
                std::thread::spawn(move || relay_one(down, &up, attack, count));
            }
        });
    });
    Relay { addr, attacked }
}

/// Resumes seed "s" from a on b through a relay with `attack`; the child
/// verifies its whole memory.
fn resume_through(c: &Cluster, relay: &Relay) -> Finished {
    let mut p = resume_proc(&relay.addr, "s", c.b.socket());
    p.send("verify\nexit 0\n");
    p.close_stdin();
    p.finish(STEP)
}

/// Resumes seed "s" through a relay on `port` that applies `attack`: the
/// relay must have attacked page traffic and the child must be killed for it.
fn assert_attack_kills_the_child(c: &Cluster, port: u16, attack: Attack) {
    let r = relay(c, port, attack);
    let out = resume_through(c, &r);
    assert!(r.attacked.load(Ordering::SeqCst) >= 1, "the relay saw no page traffic: {out}\n{}", c.logs());
    assert_killed_for_a_bad_record(&out, &c.logs());
}

fn assert_killed_for_a_bad_record(out: &Finished, logs: &str) {
    eprintln!("resume through the attacking relay: {out}");
    assert_eq!(out.code(), Some(69), "the child must be killed by mitosis: {out}\n{logs}");
    assert!(out.stderr.contains("child killed"), "{out}");
    assert!(out.stderr.contains("failed authentication"), "the reason names the bad record: {out}");
    assert!(out.lines().is_empty(), "the killed child must not answer: {out}");
}

#[test]
fn untouched_relay_serves_right_pages() {
    let Some(c) = Cluster::new("relay-none") else { return };
    let (mut p, pid) = c.pattern_in_a(16);
    let sum = p.verify();
    c.prepare_a(pid, "s");
    let r = relay(&c, 7081, Attack::None);
    let out = resume_through(&c, &r);
    assert_eq!(out.code(), Some(0), "{out}\n{}", c.logs());
    assert_eq!(out.stdout, format!("verify ok {sum}\n"));
}

#[test]
fn flipped_byte_in_page_traffic_kills_the_child() {
    let Some(c) = Cluster::new("relay-flip") else { return };
    let (_p, pid) = c.pattern_in_a(16);
    c.prepare_a(pid, "s");
    assert_attack_kills_the_child(&c, 7082, Attack::FlipByte);
}

#[test]
fn replayed_record_in_page_traffic_kills_the_child() {
    let Some(c) = Cluster::new("relay-replay") else { return };
    let (_p, pid) = c.pattern_in_a(16);
    c.prepare_a(pid, "s");
    assert_attack_kills_the_child(&c, 7083, Attack::Replay);
}

/// The same attacks on daemons that only authenticate (`--no-encrypt`).
#[test]
fn integrity_only_daemons_refuse_tampered_records_too() {
    let no = ["--no-encrypt"];
    let Some(c) = Cluster::build("relay-integrity", KEY, KEY, &no, &no) else { return };
    let (mut p, pid) = c.pattern_in_a(16);
    let sum = p.verify();
    c.prepare_a(pid, "s");
    let fine = resume_through(&c, &relay(&c, 7084, Attack::None));
    assert_eq!(fine.code(), Some(0), "{fine}\n{}", c.logs());
    assert_eq!(fine.stdout, format!("verify ok {sum}\n"));
    for (port, attack) in [(7085, Attack::FlipByte), (7086, Attack::Replay)] {
        assert_attack_kills_the_child(&c, port, attack);
    }
}

/// Daemons that disagree on encryption refuse each other with a clear message.
#[test]
fn encrypting_and_integrity_only_daemons_refuse_each_other() {
    let Some(c) = Cluster::build("protection-mismatch", KEY, KEY, &["--no-encrypt"], &[]) else { return };
    let (_p, pid) = c.pattern_in_a(1);
    c.prepare_a(pid, "s");
    let out = c.resume_on_b_with("s", "exit 0\n");
    assert_eq!(out.code(), Some(76), "{out}\n{}", c.logs());
    assert!(out.stderr.contains("wire protection mismatch"), "{out}");
}

fn sighup(pid: i32) {
    let st = Command::new("kill").args(["-HUP", &pid.to_string()]).status().unwrap();
    assert!(st.success());
}

/// Waits until `log()` has `n` lines containing `what`.
fn wait_log(log: impl Fn() -> String, what: &str, n: usize) {
    let ok = mitosis_testkit::wait_until(Duration::from_secs(10), || log().matches(what).count() >= n);
    assert!(ok, "daemon never logged {what:?} {n} times:\n{}", log());
}

#[test]
fn sighup_rotates_the_cluster_key() {
    // Two key files with the same key (white space around a key is ignored),
    // so that each daemon can be rotated on its own.
    let Some(c) = Cluster::build("key-rotation", KEY, &format!("{KEY}\n"), &[], &[]) else { return };
    let key_a = c.key.clone();
    let key_b = c.dir.path().join("key-b");
    let (mut p, pid) = c.pattern_in_a(2);
    let sum = p.verify();
    c.prepare_a(pid, "s");
    let works = |what: &str| {
        let out = c.resume_on_b_with("s", "verify\nexit 0\n");
        assert_eq!(out.code(), Some(0), "{what}: {out}\n{}", c.logs());
        assert_eq!(out.stdout, format!("verify ok {sum}\n"), "{what}");
    };
    works("before the rotation");

    // A bad new key file is logged and the old key kept.
    std::fs::write(&key_a, "short\n").unwrap();
    sighup(c.a.pid());
    wait_log(|| c.a.log(), "cluster key not reloaded", 1);
    works("after a bad key file");

    // Only a rotates: b, which did not, is refused with the auth error.
    let new_key = "mitosis-rotated-cluster-key-9876543210";
    std::fs::write(&key_a, new_key).unwrap();
    sighup(c.a.pid());
    wait_log(|| c.a.log(), "cluster key reloaded", 1);
    let out = c.resume_on_b_with("s", "exit 0\n");
    assert_eq!(out.code(), Some(77), "a daemon with the old key must be refused: {out}\n{}", c.logs());
    assert!(out.stderr.contains("authentication failed"), "{out}");

    // b rotates too: resumes work again, with the new key only.
    std::fs::write(&key_b, new_key).unwrap();
    sighup(c.b.pid());
    wait_log(|| c.b.log(), "cluster key reloaded", 1);
    works("after both rotated");
}
