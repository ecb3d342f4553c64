//! Refusals and bad input: unknown seeds, wrong cluster keys, processes
//! mitosis cannot prepare, garbage on the daemon's TCP port and on its local
//! socket, bogus seed hosts. Every refusal must come with the documented
//! exit status and a message; no garbage may hurt a daemon, which must go on
//! serving real requests afterwards.

#![forbid(unsafe_code)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use mitosis_proto::auth::{client_handshake, ClusterKey};
use mitosis_proto::secure::{Protection, SecureStream};
use mitosis_proto::frame::{read_msg, write_msg};
use mitosis_proto::local::{Envelope, LocalRequest, LocalResponse, ReplySlot};
use mitosis_proto::peer::{PeerRequest, PeerResponse};
use mitosis_proto::{ErrorKind, PROTOCOL_VERSION};

const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Checks that daemon a still serves: a fresh pattern process is prepared
/// there and a child resumed on b verifies it.
fn assert_a_still_serves(c: &Cluster, id: &str) {
    let (mut p, pid) = c.pattern_in_a(2);
    let sum = p.verify();
    c.prepare_a(pid, id);
    let out = c.resume_on_b_with(id, "verify\nexit 0\n");
    assert_eq!(out.code(), Some(0), "{out}\n{}", c.logs());
    assert_eq!(out.stdout, format!("verify ok {sum}\n"));
    assert!(!c.a.log().contains("panicked"), "daemon a panicked:\n{}", c.logs());
}

#[test]
fn unknown_seed_id_is_66() {
    let Some(c) = Cluster::new("unknown-seed") else { return };
    let (_p, pid) = c.pattern_in_a(1);
    c.prepare_a(pid, "real");
    let out = c.resume_on_b_with("no-such-seed", "verify\n");
    assert_eq!(out.code(), Some(66), "{out}");
    assert!(out.stdout.is_empty(), "{out}");
    assert!(out.stderr.contains("no seed") && out.stderr.contains("no-such-seed"), "{out}");
    // Ids are names, not paths or patterns.
    for id in ["../real", "real/..", "*", "REAL"] {
        let out = c.resume_on_b_with(id, "verify\n");
        assert!(matches!(out.code(), Some(66) | Some(64)), "{id}: {out}");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn wrong_cluster_key_is_77() {
    let Some(c) = Cluster::build("wrong-key", KEY, "another-cluster-key-9876543210", &[], &[]) else { return };
    let (mut p, pid) = c.pattern_in_a(1);
    let sum = p.verify();
    c.prepare_a(pid, "s");
    let out = c.resume_on_b_with("s", "verify\n");
    assert_eq!(out.code(), Some(77), "{out}\n{}", c.logs());
    assert!(out.stdout.is_empty(), "{out}");
    assert!(out.stderr.contains("cluster key"), "the message must name the cluster key: {out}");

    // Daemon a still serves peers that hold the key: here itself (a resume on
    // host a from host a).
    let mut same_host = resume_proc(&c.a.addr(), "s", c.a.socket());
    same_host.send("verify\nexit 0\n");
    same_host.close_stdin();
    let out = same_host.finish(STEP);
    assert_eq!(out.code(), Some(0), "{out}\n{}", c.logs());
    assert_eq!(out.stdout, format!("verify ok {sum}\n"));
}

/// A thread that cannot be captured makes the prepare fail with 65 and a
/// message naming it, and the process goes on unharmed: a thread another
/// tracer (a debugger) is attached to, a thread waiting in vfork() for its
/// child. The daemon itself is refused too.
#[test]
fn threads_that_cannot_be_captured_are_refused_unharmed() {
    let Some(c) = Cluster::new("threads") else { return };
    let prog = compile(&c.dir, "threads", &["-O2", "-pthread"]);
    let sock = c.a.socket().to_str().unwrap().to_string();
    let prepare = |pid: i32, id: &str| c.cli(&["prepare", "--pid", &pid.to_string(), "--id", id, "--socket", &sock]);

    let (mut p, pid) = c.target_in(&c.hosts.a, "threads", &[prog.to_str().unwrap(), "3"]);
    let other = mitosis_sys::procfs::thread_ids(pid).unwrap().into_iter().find(|&t| t != pid).unwrap();
    let tracer = compile(&c.dir, "tracer", &["-O2"]);
    let mut t = Proc::spawn("tracer", Command::new(&tracer).arg(other.to_string()));
    t.expect_prefix("traced", STEP);
    let out = prepare(pid, "mt");
    assert_eq!(out.code(), Some(65), "{out}");
    assert!(out.stderr.contains(&format!("thread {other} is already traced with ptrace")), "the message names the thread: {out}");
    assert!(out.stdout.is_empty());
    p.ask("hello", "still here");
    let ls = c.cli(&["ls", "--json", "--socket", &sock]);
    assert_eq!(ls.stdout.trim(), "[]", "nothing was kept: {ls}");
    drop(t);
    // Without the debugger, the same process is prepared, every thread.
    let seed = c.prepare_a(pid, "mt");
    assert_eq!(seed["threads"], 3, "{seed}");
    p.ask("hello", "still here");

    let (mut v, vpid) = c.target_in(&c.hosts.a, "vfork", &[prog.to_str().unwrap(), "1", "vfork"]);
    let out = prepare(vpid, "vf");
    assert_eq!(out.code(), Some(65), "{out}");
    assert!(out.stderr.contains("did not stop") && out.stderr.contains("vfork()"), "{out}");
    v.ask("hello", "still here");

    let out = prepare(c.a.pid(), "daemon");
    assert_eq!(out.code(), Some(65), "{out}");
    assert!(out.stderr.contains("this daemon itself"), "{out}");
    assert_a_still_serves(&c, "after-threads");
}

#[test]
fn prepare_of_a_nonexistent_pid_is_66_and_bad_ids_are_64() {
    let Some(c) = Cluster::new("no-pid") else { return };
    let sock = c.a.socket().to_str().unwrap().to_string();
    let pid_max: i32 = std::fs::read_to_string("/proc/sys/kernel/pid_max").unwrap().trim().parse().unwrap();
    let missing = (1..pid_max).rev().find(|p| !Path::new(&format!("/proc/{p}")).exists()).unwrap();
    for pid in [missing.to_string(), "0".to_string(), "-7".to_string()] {
        let out = c.cli(&["prepare", &format!("--pid={pid}"), "--id", "ghost", "--socket", &sock]);
        assert_eq!(out.code(), Some(66), "pid {pid}: {out}");
        assert!(out.stderr.contains(&pid), "the message names the pid: {out}");
    }
    let (_p, pid) = c.pattern_in_a(1);
    let pid = pid.to_string();
    let long = "x".repeat(129);
    for id in ["", "a/b", "../x", "white space", "ünïcode", long.as_str()] {
        let out = c.cli(&["prepare", "--pid", &pid, "--id", id, "--socket", &sock]);
        assert_eq!(out.code(), Some(64), "id {id:?}: {out}");
        assert!(!out.stderr.is_empty());
    }
    let ls = c.cli(&["ls", "--json", "--socket", &sock]);
    assert_eq!(ls.stdout.trim(), "[]", "{ls}");
}

/// Deterministic pseudo-random bytes.
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn tcp(addr: &str) -> TcpStream {
    let s =
        TcpStream::connect_timeout(&addr.parse::<SocketAddr>().unwrap(), IO_TIMEOUT).expect("connecting to daemon a");
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s
}

/// Reads until end of file (or an error such as a reset); panics on timeout.
fn read_to_close(s: &mut impl Read) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                panic!("the daemon neither answered nor closed within {IO_TIMEOUT:?}")
            }
            Err(_) => return got,
        }
    }
}

fn authenticated(addr: &str) -> SecureStream<TcpStream> {
    let mut s = tcp(addr);
    let key = ClusterKey::from_file_contents(KEY.as_bytes()).unwrap();
    client_handshake(&mut s, &key, Protection::Encrypted).expect("handshake with the right key").over(s)
}

fn peer_call(s: &mut SecureStream<TcpStream>, req: &PeerRequest) -> PeerResponse {
    write_msg(s, req).unwrap();
    s.flush().unwrap();
    read_msg(s, 256 << 20).expect("an answer")
}

fn expect_peer_error(resp: PeerResponse, kind: ErrorKind, what: &str) -> String {
    match resp {
        PeerResponse::Error(e) => {
            assert_eq!(e.kind, kind, "{what}: {e:?}");
            e.message
        }
        other => panic!("{what}: expected an error, got {other:?}"),
    }
}

/// Garbage of every kind on daemon a's TCP port, sent from host b. None of
/// it may crash the daemon, make it serve memory it should not, or stop it
/// from serving a real resume afterwards (even while a connection that never
/// finishes its handshake is held open).
#[test]
fn garbage_on_the_peer_port_does_not_hurt_the_daemon() {
    let Some(c) = Cluster::new("peer-garbage") else { return };
    let (mut p, pid) = c.pattern_in_a(1);
    let sum = p.verify();
    let seed = c.prepare_a(pid, "s");
    let generation = seed["generation"].as_u64().unwrap();
    let addr = c.a.addr();

    let slowloris = in_netns(&c.hosts.b, move || {
        // Random bytes, then an HTTP request: the daemon just hangs up.
        for (i, junk) in
            [noise(4096, 7), b"GET / HTTP/1.1\r\nHost: mitosis\r\n\r\n".to_vec(), vec![0u8; 44]].into_iter().enumerate()
        {
            let mut s = tcp(&addr);
            let _ = s.write_all(&junk);
            let answer = read_to_close(&mut s);
            assert!(answer.is_empty() || answer.starts_with(b"MITOSIS1"), "junk {i}: answered {answer:?}");
        }
        // A hello of another protocol version is told so.
        let mut s = tcp(&addr);
        let mut hello = b"MITOSIS1".to_vec();
        hello.extend_from_slice(&(PROTOCOL_VERSION + 41).to_le_bytes());
        hello.extend_from_slice(&[9u8; 32]);
        s.write_all(&hello).unwrap();
        let answer = read_to_close(&mut s);
        assert!(answer.len() >= 13 && &answer[..8] == b"MITOSIS1" && answer[12] == 1, "{answer:?}");
        // A right hello with a Noise message not made with the key is refused.
        let mut s = tcp(&addr);
        let mut hello = b"MITOSIS1".to_vec();
        hello.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
        hello.push(1); // encrypted
        hello.extend_from_slice(&[0u8; 31]);
        s.write_all(&hello).unwrap();
        let mut reply = [0u8; 77];
        s.read_exact(&mut reply).unwrap();
        assert_eq!(reply[12], 0);
        let mut forged = 48u16.to_le_bytes().to_vec();
        forged.extend_from_slice(&noise(48, 3));
        s.write_all(&forged).unwrap();
        let answer = read_to_close(&mut s);
        assert_eq!(answer, [2u8], "a wrong proof gets the AUTH status");

        // Authenticated garbage: an oversized frame, then an undecodable one.
        let mut s = authenticated(&addr);
        s.write_all(&u32::MAX.to_le_bytes()).unwrap();
        s.flush().unwrap();
        let resp: PeerResponse = read_msg(&mut s, 1 << 20).expect("an error answer");
        expect_peer_error(resp, ErrorKind::BadRequest, "oversized frame");
        read_to_close(&mut s);
        let mut s = authenticated(&addr);
        s.write_all(&[4, 0, 0, 0, 0xff, 0xfe, 0xfd, 0xfc]).unwrap();
        s.flush().unwrap();
        let resp: PeerResponse = read_msg(&mut s, 1 << 20).expect("an error answer");
        expect_peer_error(resp, ErrorKind::BadRequest, "undecodable frame");
        read_to_close(&mut s);

        // Well-formed but wrong requests get errors, and the connection goes on.
        let mut s = authenticated(&addr);
        type BadRead = (Vec<(u64, u64)>, u64, ErrorKind, &'static str);
        let bad_reads: Vec<BadRead> = vec![
            (vec![(0x1001, 4096)], generation, ErrorKind::BadRequest, "unaligned"),
            (vec![(0x1000, 0)], generation, ErrorKind::BadRequest, "empty range"),
            (vec![(0x1000, 128 << 20)], generation, ErrorKind::BadRequest, "over the size limit"),
            (
                (0..4097u64).map(|i| (0x10000 + i * 8192, 4096)).collect(),
                generation,
                ErrorKind::BadRequest,
                "too many ranges",
            ),
            (vec![(0x1000, 4096)], generation ^ 2, ErrorKind::SeedGone, "wrong generation"),
            (vec![(0x1000, 4096)], generation, ErrorKind::SeedGone, "unmapped address"),
            (vec![(0xffff_ffff_ffff_f000, 8192)], generation, ErrorKind::SeedGone, "address space end"),
            (vec![(0xffff_8000_0000_0000, 4096)], generation, ErrorKind::SeedGone, "kernel address"),
        ];
        for (ranges, g, kind, what) in bad_reads {
            let resp = peer_call(&mut s, &PeerRequest::ReadPages { id: "s".into(), generation: g, ranges });
            expect_peer_error(resp, kind, what);
        }
        let resp = peer_call(&mut s, &PeerRequest::GetSeed { id: "nope".into() });
        expect_peer_error(resp, ErrorKind::NotFound, "unknown seed");
        match peer_call(&mut s, &PeerRequest::GetSeed { id: "s".into() }) {
            PeerResponse::Seed { image, .. } => assert_eq!(image.generation, generation),
            other => panic!("the same connection must still work: {other:?}"),
        }

        // Finally a connection that never completes its hello, kept open.
        let mut s = tcp(&addr);
        s.write_all(b"MITOS").unwrap();
        s
    });

    let out = c.resume_on_b_with("s", "verify\nexit 0\n");
    assert_eq!(out.code(), Some(0), "{out}\n{}", c.logs());
    assert_eq!(out.stdout, format!("verify ok {sum}\n"));
    drop(slowloris);
    assert_a_still_serves(&c, "after-garbage");
}

/// Sends raw bytes on daemon a's local socket and reads one answer (or
/// `None` if the daemon hangs up without one).
fn local_exchange(socket: &Path, bytes: &[u8]) -> Option<LocalResponse> {
    let mut s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    // The daemon may hang up before taking everything.
    let _ = s.write_all(bytes);
    match read_msg::<_, LocalResponse>(&mut s, 1 << 20) {
        Ok(r) => Some(r),
        Err(mitosis_proto::ProtoError::Closed) => None,
        Err(mitosis_proto::ProtoError::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => None,
        Err(e) => panic!("the daemon answered undecodably or not in time: {e}"),
    }
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut f = (body.len() as u32).to_le_bytes().to_vec();
    f.extend_from_slice(body);
    f
}

fn envelope(version: u32, request: LocalRequest) -> Vec<u8> {
    let mut v = Vec::new();
    write_msg(&mut v, &Envelope { version, request }).unwrap();
    v
}

fn expect_local_error(resp: Option<LocalResponse>, kind: ErrorKind, what: &str) -> String {
    match resp {
        Some(LocalResponse::Error(e)) => {
            assert_eq!(e.kind, kind, "{what}: {e:?}");
            assert!(!e.message.is_empty());
            e.message
        }
        other => panic!("{what}: expected an error answer, got {other:?}"),
    }
}

/// Well-framed garbage on the local socket gets a clear error answer; the
/// daemon goes on serving.
#[test]
fn garbage_on_the_local_socket_gets_a_clear_error() {
    let Some(c) = Cluster::new("local-garbage") else { return };
    let sock = c.a.socket();

    let m = expect_local_error(local_exchange(sock, &frame(&[0xff; 5])), ErrorKind::BadRequest, "undecodable");
    assert!(m.contains("undecodable"), "{m}");
    let m = expect_local_error(
        local_exchange(sock, &envelope(PROTOCOL_VERSION + 1, LocalRequest::List)),
        ErrorKind::VersionMismatch,
        "other version",
    );
    assert!(m.contains("protocol"), "{m}");
    let resume = LocalRequest::Resume { from: c.a.addr(), id: "x".into(), options: Default::default() };
    let m =
        expect_local_error(local_exchange(sock, &envelope(PROTOCOL_VERSION, resume)), ErrorKind::BadRequest, "no fds");
    assert!(m.contains("stdin"), "{m}");
    // Only a process itself may ask for a reply slot.
    let prepare =
        LocalRequest::Prepare { pid: 1, id: "init".into(), reply_slot: Some(ReplySlot { addr: 4096, len: 64 }), pinned: true, copy: false };
    expect_local_error(local_exchange(sock, &envelope(PROTOCOL_VERSION, prepare)), ErrorKind::PermissionDenied, "slot");
    let prepare = LocalRequest::Prepare { pid: 1, id: "bad id".into(), reply_slot: None, pinned: true, copy: false };
    expect_local_error(local_exchange(sock, &envelope(PROTOCOL_VERSION, prepare)), ErrorKind::BadRequest, "bad id");
    let drop_req = LocalRequest::Drop { id: "none".into() };
    expect_local_error(local_exchange(sock, &envelope(PROTOCOL_VERSION, drop_req)), ErrorKind::NotFound, "drop");

    // Half a frame, then hang up; an empty connection; a frame cut short.
    for bytes in [&[7u8, 0][..], &[][..], &[50, 0, 0, 0, 1, 2, 3][..]] {
        let mut s = UnixStream::connect(sock).unwrap();
        s.write_all(bytes).unwrap();
    }
    // Many requests on one connection.
    let mut s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    for _ in 0..50 {
        s.write_all(&envelope(PROTOCOL_VERSION, LocalRequest::List)).unwrap();
        assert!(matches!(read_msg::<_, LocalResponse>(&mut s, 1 << 20).unwrap(), LocalResponse::Seeds(_)));
    }
    assert_a_still_serves(&c, "after-local-garbage");
}

/// Unframed garbage (text, random bytes) on the local socket: its first four
/// bytes read as a huge frame length. The daemon must survive, and tell the
/// client what is wrong rather than just hang up.
#[test]
fn unframed_garbage_on_the_local_socket_gets_an_error_answer() {
    let Some(c) = Cluster::new("local-unframed") else { return };
    let sock = c.a.socket();
    let mut answers = Vec::new();
    for bytes in [b"hello daemon, list your seeds please\n".to_vec(), noise(300, 3), frame(&vec![0u8; 2 << 20])] {
        answers.push(local_exchange(sock, &bytes));
    }
    assert_a_still_serves(&c, "after-unframed");
    for (i, a) in answers.into_iter().enumerate() {
        expect_local_error(a, ErrorKind::BadRequest, &format!("unframed garbage {i}"));
    }
}

/// `mitosis` pointed at things that are not a working mitosis daemon.
#[test]
fn resume_from_unreachable_or_bogus_seed_hosts() {
    let Some(c) = Cluster::build("bogus-hosts", KEY, KEY, &[], &["--fetch-timeout", "2"]) else { return };
    let sock_b = c.b.socket().to_path_buf();

    // Nothing listens there.
    let closed_port = format!("{}:7071", c.hosts.a.ip);
    let out = resume_proc(&closed_port, "s", &sock_b).finish(STEP);
    assert_eq!(out.code(), Some(69), "{out}");
    assert!(out.stderr.contains("cannot reach seed host"), "{out}");
    // Not an address at all.
    let out = resume_proc("not an address", "s", &sock_b).finish(STEP);
    assert_eq!(out.code(), Some(69), "{out}");
    assert!(out.stderr.contains("not an address"), "{out}");
    // No daemon behind --socket.
    let out = resume_proc(&c.a.addr(), "s", &c.dir.path().join("nothing.sock")).finish(STEP);
    assert_eq!(out.code(), Some(69), "{out}");
    assert!(out.stderr.contains("cannot reach the mitosis daemon"), "{out}");

    // Fake seed hosts inside host a: one answers garbage, one says nothing.
    let garbage_at = format!("{}:7072", c.hosts.a.ip);
    let silent_at = format!("{}:7073", c.hosts.a.ip);
    let (g, s) = (garbage_at.clone(), silent_at.clone());
    let (garbage, silent) =
        in_netns(&c.hosts.a, move || (TcpListener::bind(&g).unwrap(), TcpListener::bind(&s).unwrap()));
    let garbage_server = std::thread::spawn(move || {
        let (mut conn, _) = garbage.accept().unwrap();
        let _ = conn.write_all(&noise(200, 11));
        std::thread::sleep(Duration::from_millis(500));
    });
    let silent_server = std::thread::spawn(move || {
        let (conn, _) = silent.accept().unwrap();
        std::thread::sleep(Duration::from_secs(8));
        drop(conn);
    });
    let out = resume_proc(&garbage_at, "s", &sock_b).finish(STEP);
    assert_ne!(out.code(), Some(0), "{out}");
    assert!(out.stderr.contains("not a mitosis daemon"), "{out}");
    let t = Instant::now();
    let out = resume_proc(&silent_at, "s", &sock_b).finish(STEP);
    assert_eq!(out.code(), Some(69), "{out}");
    assert!(t.elapsed() < Duration::from_secs(7), "the handshake must time out (--fetch-timeout 2): {:?}", t.elapsed());
    garbage_server.join().unwrap();
    drop(silent_server);

    // Daemon b is unhurt.
    let (mut p, pid) = c.pattern_in_a(1);
    let sum = p.verify();
    c.prepare_a(pid, "s");
    let out = c.resume_on_b_with("s", "verify\nexit 0\n");
    assert_eq!(out.stdout, format!("verify ok {sum}\n"), "{out}\n{}", c.logs());
    assert!(!c.b.log().contains("panicked"), "{}", c.logs());
}

/// A daemon refuses to start with a key that is too short or missing.
#[test]
fn daemon_refuses_short_or_missing_key_files() {
    if !mitosis_testkit::require_root() {
        return;
    }
    let dir = mitosis_testkit::TestDir::new("keys");
    let short = mitosis_testkit::write_key(&dir, "short", "tooshort\n");
    let sock = dir.path().join("d.sock");
    let sock = sock.to_str().unwrap();
    let out = cli(&["daemon", "--listen", "127.0.0.1:0", "--socket", sock, "--key-file", short.to_str().unwrap()]);
    assert_ne!(out.code(), Some(0), "{out}");
    assert!(out.stderr.contains("16 bytes"), "{out}");
    let missing = dir.path().join("missing");
    let out = cli(&["daemon", "--listen", "127.0.0.1:0", "--socket", sock, "--key-file", missing.to_str().unwrap()]);
    assert_ne!(out.code(), Some(0), "{out}");
    assert!(out.stderr.contains("key file"), "{out}");
}

/// Memory shared with a process that stays behind cannot be given to children: refused with 65.
#[test]
fn shared_memory_is_refused_with_65() {
    let Some(c) = Cluster::new("shared") else { return };
    let prog = compile(&c.dir, "memops", &["-O2", "-pthread"]);
    let (_p, pid) = c.target_in(&c.hosts.a, "shared", &[prog.to_str().unwrap(), "shared"]);
    let pid_s = pid.to_string();
    let out = c.cli(&["prepare", "--pid", &pid_s, "--id", "shm", "--socket", c.a.socket().to_str().unwrap()]);
    assert_eq!(out.code(), Some(65), "{out}");
    assert!(out.stderr.contains("shared anonymous memory") && out.stderr.contains("is also mapped by process"), "{out}");
    assert!(alive(pid));
}

fn uid_of(pid: i32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The local socket checks credentials: another user may not prepare root's
/// processes, see, drop or resume root's seeds (77), but works with its own;
/// children run as the seed's user.
#[test]
fn other_users_are_confined_to_their_own_processes_and_seeds() {
    // Non-root users may resume only from the cluster's peers.
    let Some(c) = Cluster::build("perms", KEY, KEY, &[], &["--peers", "{a}"]) else { return };
    if !nobody_can_run_mitosis() {
        return;
    }
    let sock_a = c.a.socket().to_str().unwrap().to_string();
    let sock_b = c.b.socket().to_str().unwrap().to_string();
    let addr_a = c.a.addr();

    let (_root_proc, root_pid) = c.pattern_in_a(1);
    let root_pid_s = root_pid.to_string();
    let out = as_nobody(&["prepare", "--pid", &root_pid_s, "--id", "steal", "--socket", &sock_a]);
    assert_eq!(out.code(), Some(77), "{out}");
    assert!(out.stderr.contains("uid 0"), "{out}");
    c.prepare_a(root_pid, "root-seed");
    let out = as_nobody(&["ls", "--json", "--socket", &sock_a]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert_eq!(out.stdout.trim(), "[]", "nobody must not see root's seeds: {out}");
    let out = as_nobody(&["drop", "--id", "root-seed", "--socket", &sock_a]);
    assert_eq!(out.code(), Some(77), "{out}");
    let out = as_nobody(&["resume", "--from", &addr_a, "--id", "root-seed", "--socket", &sock_b]);
    assert_eq!(out.code(), Some(77), "{out}");
    assert!(out.stdout.is_empty());

    // nobody's own process: prepared and resumed by nobody, resumed by root.
    let b = bin();
    let mut args: Vec<&str> = NOBODY.to_vec();
    args.extend_from_slice(&[b.to_str().unwrap(), "workload", "pattern", "--mb", "2"]);
    let (mut mine, my_pid) = c.target_in(&c.hosts.a, "nobody's pattern", &args);
    assert_eq!(uid_of(my_pid), 65534);
    let sum = mine.verify();
    let my_pid_s = my_pid.to_string();
    let out = as_nobody(&["prepare", "--pid", &my_pid_s, "--id", "mine", "--socket", &sock_a]);
    assert_eq!(out.code(), Some(0), "{out}\n{}", c.logs());
    let out = as_nobody(&["ls", "--json", "--socket", &sock_a]);
    let seeds: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(seeds.as_array().unwrap().len(), 1, "{out}");
    assert_eq!(seeds[0]["id"], "mine");
    assert_eq!(seeds[0]["uid"], 65534);

    for resumer in ["nobody", "root"] {
        let mut cmd = if resumer == "nobody" {
            let mut cmd = Command::new(NOBODY[0]);
            cmd.args(&NOBODY[1..]).arg(bin());
            cmd
        } else {
            Command::new(bin())
        };
        cmd.args(["resume", "--from", &addr_a, "--id", "mine", "--socket", &sock_b]);
        let mut child = Proc::spawn(&format!("resume by {resumer}"), &mut cmd);
        child.ask("pid", "pid ");
        // Its pid here (in its container it sees another one).
        let cpid = c.only_child_on_b();
        assert_eq!(uid_of(cpid), 65534, "a child resumed by {resumer} runs as the seed's user");
        assert_eq!(child.verify(), sum);
        child.close_stdin();
        let out = child.finish(STEP);
        assert_eq!(out.code(), Some(0), "{out}");
    }
}

/// A non-root user may have its daemon dial only the cluster's peers
/// (`--peers`): any other address, an open port or a closed one or no
/// address at all, gets one refusal (77) before any connection is made, so
/// the daemon is no port scanner. Root may name any address.
#[test]
fn nobody_may_resume_only_from_listed_peers() {
    let Some(c) = Cluster::build("dial", KEY, KEY, &[], &["--peers", "{a}"]) else { return };
    if !nobody_can_run_mitosis() {
        return;
    }
    let sock_b = c.b.socket().to_str().unwrap().to_string();
    let open_at = format!("{}:7072", c.hosts.a.ip);
    let closed_at = format!("{}:7071", c.hosts.a.ip);
    let o = open_at.clone();
    let listener = in_netns(&c.hosts.a, move || TcpListener::bind(&o).unwrap());
    listener.set_nonblocking(true).unwrap();

    let mut refusals = Vec::new();
    for from in [open_at.as_str(), closed_at.as_str(), "not an address"] {
        let out = as_nobody(&["resume", "--from", from, "--id", "s", "--socket", &sock_b]);
        assert_eq!(out.code(), Some(77), "{from}: {out}");
        assert!(out.stdout.is_empty(), "{out}");
        assert!(out.stderr.contains("--peers") && out.stderr.contains(&c.a.addr()), "the refusal names the peers: {out}");
        refusals.push(out.stderr.replace(from, "ADDR"));
    }
    assert!(refusals.iter().all(|r| *r == refusals[0]), "one refusal for every address: {refusals:#?}");
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the daemon connected to an address it refused: {other:?}"),
    }
    // Root may name any address (and learns what is there).
    let out = resume_proc(&closed_at, "s", c.b.socket()).finish(STEP);
    assert_eq!(out.code(), Some(69), "{out}");
    assert!(out.stderr.contains("cannot reach seed host"), "{out}");
    // A listed peer is dialled for nobody: there is no seed "s" there.
    let out = as_nobody(&["resume", "--from", &c.a.addr(), "--id", "s", "--socket", &sock_b]);
    assert_eq!(out.code(), Some(66), "{out}\n{}", c.logs());
}

/// A process another tracer (a debugger) is attached to cannot be prepared:
/// a clear error, and the process is unharmed.
#[test]
fn process_traced_by_a_debugger_is_refused_unharmed() {
    let Some(c) = Cluster::new("traced") else { return };
    let tracer = compile(&c.dir, "tracer", &["-O2"]);
    let (mut p, pid) = c.pattern_in_a(1);
    let sum = p.verify();
    let mut t = Proc::spawn("tracer", Command::new(&tracer).arg(pid.to_string()));
    t.expect_prefix("traced", STEP);
    let pid_s = pid.to_string();
    let out = c.cli(&["prepare", "--pid", &pid_s, "--id", "dbg", "--socket", c.a.socket().to_str().unwrap()]);
    assert_ne!(out.code(), Some(0), "{out}");
    assert!(out.stderr.contains("ptrace"), "{out}");
    drop(t);
    assert_eq!(p.verify(), sum);
    // Once the debugger is gone the process can be prepared.
    c.prepare_a(pid, "dbg");
    let out = c.resume_on_b_with("dbg", "verify\nexit 0\n");
    assert_eq!(out.stdout, format!("verify ok {sum}\n"), "{out}");
}

/// Several prepares of one process at once: each either succeeds or fails
/// cleanly; the process is unharmed and every seed made resumes correctly.
#[test]
fn concurrent_prepares_of_one_process() {
    let Some(c) = Cluster::new("concurrent-prepare") else { return };
    let (mut p, pid) = c.pattern_in_a(64);
    let sum = p.verify();
    let pid_s = pid.to_string();
    let sock = c.a.socket().to_str().unwrap().to_string();
    let runs: Vec<_> = (0..4)
        .map(|i| {
            let (pid_s, sock) = (pid_s.clone(), sock.clone());
            std::thread::spawn(move || cli(&["prepare", "--pid", &pid_s, "--id", &format!("c{i}"), "--socket", &sock]))
        })
        .collect();
    let outs: Vec<Finished> = runs.into_iter().map(|h| h.join().unwrap()).collect();
    let mut made = 0;
    for (i, out) in outs.iter().enumerate() {
        match out.code() {
            Some(0) => {
                made += 1;
                let r = c.resume_on_b_with(&format!("c{i}"), "verify\nexit 0\n");
                assert_eq!(r.stdout, format!("verify ok {sum}\n"), "seed c{i}: {r}\n{}", c.logs());
            }
            _ => assert!(!out.stderr.is_empty() && out.code() != Some(1), "prepare c{i} failed unclearly: {out}"),
        }
    }
    assert!(made >= 1, "at least one prepare must succeed");
    assert_eq!(p.verify(), sum);
    assert!(!c.a.log().contains("panicked"), "{}", c.logs());
}
