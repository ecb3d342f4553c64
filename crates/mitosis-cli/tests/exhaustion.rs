//! The daemon cannot be exhausted by the unauthenticated or the
//! unprivileged: 3,000 half-sent or silent connections on each of its
//! sockets (the local socket, from user nobody; the peer port, from another
//! address than the real peer, dripping a HELLO) while legitimate resumes
//! run. Every legitimate resume succeeds, connections over the caps are told
//! so and closed at once, the ones admitted are closed at their deadline,
//! and the daemons' memory stays near its baseline.

#![forbid(unsafe_code)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use mitosis_proto::auth::{client_handshake, ClusterKey};
use mitosis_proto::ProtoError;

/// Hostile connections on each socket.
const HOSTILE: usize = 3000;
/// How far above its baseline a daemon's memory may go.
const SLACK_KB: u64 = 64 << 10;

/// VmRSS of process `pid`, in KiB.
fn rss_kb(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Whether the daemon has closed `s` (end of file, a reset, or an answer
/// followed by its close); `false` while it stays silent and open.
fn closed_by_daemon(mut s: &TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 128];
    let closed = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break false,
            Err(_) => break true,
        }
    };
    s.set_nonblocking(false).unwrap();
    closed
}

#[test]
fn three_thousand_hostile_connections_on_each_socket_do_not_stop_legitimate_resumes() {
    let Some(c) = Cluster::new("exhaustion") else { return };
    if !nobody_can_run_mitosis() {
        return;
    }
    let t0 = Instant::now();
    let (mut parent, pid) = c.pattern_in_a(2);
    let sum = parent.verify();
    c.prepare_a(pid, "s");
    let resume_ok = |what: &str| {
        let out = c.resume_on_b_with("s", "verify\nexit 0\n");
        assert_eq!(out.code(), Some(0), "{what}: {out}\n{}", c.logs());
        assert_eq!(out.stdout, format!("verify ok {sum}\n"), "{what}: {out}");
    };
    // Warm: the first resume's caches and pools are part of the baseline.
    resume_ok("warm-up");
    resume_ok("warm-up");
    let (pid_a, pid_b) = (c.a.pid(), c.b.pid());
    let (base_a, base_b) = (rss_kb(pid_a), rss_kb(pid_b));
    eprintln!("baseline VmRSS: a {base_a} KiB, b {base_b} KiB");

    // This process and the helper (which inherits the limit) hold thousands of descriptors.
    let want = HOSTILE as u64 + 1024;
    let got = mitosis_sys::rlimit::raise_nofile(want).unwrap();
    assert!(got >= want, "descriptor limit {got}, {want} needed");

    // Local: user nobody holds 3,000 connections to b's socket, half of
    // them having announced a 1 MiB request and sent 10 bytes of it.
    let helper = compile(&c.dir, "hold_local", &["-O2"]);
    let mut cmd = Command::new(NOBODY[0]);
    cmd.args(&NOBODY[1..]).arg(&helper).arg(c.b.socket()).arg(HOSTILE.to_string());
    let mut local = Proc::spawn("hostile local client", &mut cmd);
    local.expect_line(&format!("held {HOSTILE}"), STEP);
    // Over the cap: told so, at once (before the first deadlines free places).
    let sock_b = c.b.socket().to_str().unwrap().to_string();
    let out = as_nobody(&["ls", "--socket", &sock_b]);
    assert_eq!(out.code(), Some(75), "nobody over its cap: {out}");
    assert!(out.stderr.contains("uid 65534 holds") && out.stderr.contains("try again later"), "{out}");
    let flooded_b = rss_kb(pid_b);
    eprintln!("VmRSS of b with nobody's {HOSTILE} connections just made: {flooded_b} KiB");

    // Peer: 3,000 connections to a's port from a's own address (b, the real
    // peer, has another one), each with one byte of a HELLO, then dripping
    // a byte each second (a timeout per read of 5 s never fires).
    // Legitimate resumes run while the peer flood comes in, too.
    let flooding = AtomicBool::new(true);
    let addr = c.a.addr();
    let (peers, busy) = std::thread::scope(|scope| {
        let resumer = scope.spawn(|| {
            let mut n = 0;
            while flooding.load(Ordering::Relaxed) {
                resume_ok(&format!("resume {n} during the flood"));
                n += 1;
            }
            n
        });
        let r = in_netns(&c.hosts.a, move || {
        let sa: SocketAddr = addr.parse().unwrap();
        let mut busy = None;
        let peers: Vec<TcpStream> = (0..HOSTILE)
            .map(|i| {
                if i == 200 {
                    // Over the address's cap (of 64 handshakes): told so, at once.
                    let mut s = TcpStream::connect(sa).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    let key = ClusterKey::from_file_contents(KEY.as_bytes()).unwrap();
                    busy = Some(client_handshake(&mut s, &key, mitosis_proto::secure::Protection::Encrypted).map(|_| ()));
                }
                let mut s = TcpStream::connect_timeout(&sa, Duration::from_secs(10)).expect("connecting to daemon a");
                let _ = s.write_all(b"M");
                s
            })
            .collect();
        (peers, busy.unwrap())
        });
        flooding.store(false, Ordering::Relaxed);
        eprintln!("{} legitimate resumes during the peer flood", resumer.join().unwrap());
        r
    });
    assert!(matches!(busy, Err(ProtoError::Busy)), "a handshake over the address's cap: {busy:?}");
    let connected = Instant::now();
    eprintln!("{HOSTILE} peer connections made {:?} into the test", t0.elapsed());
    let stop = Arc::new(AtomicBool::new(false));
    let dripping: Vec<TcpStream> = peers.iter().map(|s| s.try_clone().unwrap()).collect();
    let stop2 = stop.clone();
    let dripper = std::thread::spawn(move || {
        let hello = b"MITOSIS1";
        let mut i = 1;
        while !stop2.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_secs(1));
            for mut s in &dripping {
                let _ = s.write_all(&hello[i % hello.len()..][..1]);
            }
            i += 1;
        }
    });

    // Meanwhile legitimate resumes (root on b, from a): all succeed.
    for i in 0..6 {
        resume_ok(&format!("resume {i} under attack"));
    }
    let (held_a, held_b) = (rss_kb(pid_a), rss_kb(pid_b).max(flooded_b));
    eprintln!("VmRSS while held: a {held_a} KiB, b {held_b} KiB ({:?} after connecting)", connected.elapsed());
    assert!(held_b < base_b + SLACK_KB, "daemon b grew from {base_b} to {held_b} KiB under the local flood");
    assert!(held_a < base_a + SLACK_KB, "daemon a grew from {base_a} to {held_a} KiB under the peer flood");

    // The connections admitted are closed at their deadlines: a handshake
    // within 5 s, a request within 5 s of its first byte, a first request
    // within 10 s, however slowly their bytes come.
    let all_closed = mitosis_testkit::wait_until(Duration::from_secs(15), || {
        std::thread::sleep(Duration::from_millis(250));
        local.send("open?\n");
        local.expect_prefix("open ", STEP) == "open 0"
    });
    assert!(all_closed, "local connections the daemon still holds: {}", local.describe());
    // (Places freed by deadlines admit later connections of the flood: the
    // last ones admitted have their 5 s from then.)
    let mut open_peers = HOSTILE;
    let peers_closed = mitosis_testkit::wait_until(Duration::from_secs(10), || {
        std::thread::sleep(Duration::from_millis(250));
        open_peers = peers.iter().filter(|s| !closed_by_daemon(s)).count();
        open_peers == 0
    });
    assert!(peers_closed, "{open_peers} peer connections still open {:?} after the last connected", connected.elapsed());
    stop.store(true, Ordering::Relaxed);
    dripper.join().unwrap();
    drop(peers);
    local.close_stdin();
    local.wait(STEP);

    resume_ok("after the attack");
    let back = mitosis_testkit::wait_until(Duration::from_secs(10), || {
        rss_kb(pid_a) < base_a + SLACK_KB && rss_kb(pid_b) < base_b + SLACK_KB
    });
    let (end_a, end_b) = (rss_kb(pid_a), rss_kb(pid_b));
    eprintln!("VmRSS after: a {end_a} KiB, b {end_b} KiB; test took {:?}", t0.elapsed());
    assert!(back, "memory did not come back: a {base_a} -> {end_a} KiB, b {base_b} -> {end_b} KiB");
    assert!(!c.a.log().contains("panicked") && !c.b.log().contains("panicked"), "{}", c.logs());
    parent.send("exit 0\n");
}
