//! Descriptors whose whole state is inside the seed, recreated in a child
//! on another host (zdtm style: our own C program, tests/programs/fds.c,
//! reports each one's state after the resume): a pipe with both ends and
//! 100000 bytes in its 256 KiB buffer, a dup of its write end and a second
//! open file description of its read end, eventfds (a counter, a
//! semaphore), an armed timerfd, an expired one and an expired interval
//! timer, a signalfd, an epoll instance with three watches (one under a
//! number since given to another file) and one watching it; each at its
//! number with its close-on-exec and non-blocking flags; a sealed memfd
//! with a hole, and an unlinked file (write-only, mode, mtime, content
//! past a hole, positions) with a second, read-only description; a
//! listening TCP socket and two UDP sockets, one bound, one connected to
//! it (with a filter, linger, a receive timeout and a buffer lock), each
//! working in the child on its own host, one more shut for sending, and
//! two TCP listeners sharing a port (SO_REUSEPORT, which the first turned
//! off after).
//!
//! And (tests/programs/unixfds.c) Unix socket pairs of each type with
//! messages queued both ways (boundaries and a shutdown kept), Unix
//! sockets listening on a path (with a connection accepted from it and one
//! waiting) and on an abstract name, a socket whose peer closed, a bound
//! datagram one with another sending to it by default (two messages
//! waiting), an unbound one, a socket connected to another process's
//! (closed in the child, listed at prepare), a fifo with buffered bytes
//! opened twice, an unlinked fifo, and an inotify watch that fires in the
//! child.

#![forbid(unsafe_code)]

mod common;

use common::*;

fn carried(name: &str, extra: &[&str]) {
    let Some(c) = Cluster::new(name) else { return };
    let prog = compile(&c.dir, "fds", &["-O2"]);
    let (mut parent, pid) = c.target_in(&c.hosts.a, "fds", &[prog.to_str().unwrap()]);
    wait_blocked_in_read_stdin(pid);
    let prepared = c.prepare_a(pid, "fds");
    let out = c.resume_on_b_with_args("fds", "report\nexit\n", extra);
    parent.send("report\nexit\n");
    let expected = parent.finish(STEP);
    assert_eq!(expected.code(), Some(0), "{expected}");
    // What the seed opened is what it reports (the test cannot pass on two equally wrong reports).
    for line in [
        "fds 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 32\n",
        "second read description nonblock 0\n",
        "fd 19 anon_inode:[eventfd]\n",
        "flags cloexec 0100000000 nonblock 1000101100\n",
        "nested epoll 1 data 5\n",
        "epoll 3 data 0x19 0x4d 0xabc\n",
        "pipe capacity 262144\n",
        "pipe 100000 bytes as written, then EAGAIN\n",
        "eventfd 42\n",
        "semaphore reads 3\n",
        "timer interval 1.500000000 armed yes\n",
        "expired timer ticks 1\n",
        "expired interval timer 3600 rearmed yes ticks 1\n",
        "memfd size 5013 seals 0x6 pos 7 content as written, hole zero\n",
        "unlinked size 1114112 mode 0640 links 0 mtime 1234567890.000000500 write-only 1 pos 100 1048576\n",
        "unlinked in a directory\n",
        // O_LARGEFILE | O_RDWR: nothing of how a child makes it (O_TMPFILE).
        "unlinked read-write flags 0x8002\n",
        "unlinked content as written\n",
        "tcp listening 1 reuseaddr 1 nodelay 1 on 127.0.0.1 with a port, accepts yes\n",
        "udp connected to the bound one 1, broadcast 1, delivers 1\n",
        "udp filter 2 entries, linger 1 7, receive timeout 2.500000, buffer lock 1\n",
        "tcp reuseport 29 0 30 1, listening 1 1, one port 1\n",
        // EPIPE
        "udp shut for sending: send -1 errno 32\n",
        "signalfd 12\n",
    ] {
        assert!(expected.stdout.contains(line), "the seed reports {line:?}: {expected}");
    }
    assert_eq!(out.stdout, expected.stdout, "the child's descriptors differ from its seed's: {out}\n{}", c.logs());
    assert_eq!(out.code(), Some(0), "{out}");
    // (A test harness may leak a descriptor of its own into the seed, above 20.)
    let closed: Vec<i64> = prepared["closed_fds"].as_array().expect("closed_fds").iter().filter_map(|c| c[0].as_i64()).collect();
    assert!(closed.iter().all(|fd| !(10..=32).contains(fd)), "prepare lists none of them as closed: {prepared}");
}

#[test]
fn descriptors_recreated_in_a_container() {
    carried("fds-ct", &[]);
}

#[test]
fn descriptors_recreated_without_a_container() {
    carried("fds-noct", &["--no-container"]);
}

/// What tests/programs/unixfds.c reports of its descriptors as it made
/// them (then whether its socket connected to another process is open).
const UNIX_REPORT: &str = "fds 30 31 32 33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 49 51
flags cloexec 01 nonblock 101
stream 30 100000 bytes as written, then EAGAIN
stream 31 13 \"hello from 30\"
stream pair connected 1
seqpacket 33 3 0 3000 0 0
seqpacket 32 4 \"back\", sends no
dgram 35 1a 2b 3c 100d 5000e; sndbuf of 34 200000
dgram pair connected 1
accepted 45 \"to server\" 44 \"to client\" named as the listener 1
waiting 46 accepted 1 delivers 1
orphan 47 \"last words\" then 0
path listener type 1 listening 1 file 1 mode 0600 accepts 1
abstract listener type 5 listening 1 named 1 accepts 1
dgram 38 queued 11 waiting one, 11 waiting two, then -1
abstract dgram delivers 1
dgram 49 sends to 38 1
unbound type 1 name length 2 listening 0
fifo 1 mode 0640 rdwr 1 capacity 65536 5000 bytes as written
fifo ends one fifo 1
ghost fifo 1 links 0 \"ghost\"
inotify event wd 2 mask 0x100, nonblock 1
removed directory 51 named 1 directory there 0
";

/// [`UNIX_REPORT`] and its last lines.
fn unix_report(outside_open: bool) -> String {
    format!("{UNIX_REPORT}outside 50 open {}\nreport done\n", u8::from(outside_open))
}

/// `dir`: where the seed binds its socket, makes its fifos and watches.
///
/// In /tmp, which a container has a private one of: the seed reports first
/// (its report must be [`UNIX_REPORT`]: the test cannot pass on two equally
/// wrong reports) and removes its files; the child binds anew, makes the
/// fifo with the seed's mode and fills it with the seed's bytes.
///
/// In the working directory, without a container: the seed exits without
/// touching anything, as zdtm's are killed. Its socket file is then a stale
/// one to the child, whose bind replaces it; its fifo is the very fifo the
/// child opens, empty once the seed is gone, and given the seed's bytes.
fn unix_carried(name: &str, dir: &str, extra: &[&str]) {
    let Some(c) = Cluster::new(name) else { return };
    let prog = compile(&c.dir, "unixfds", &["-O2"]);
    let (mut parent, pid) = c.target_in(&c.hosts.a, "unixfds", &[prog.to_str().unwrap(), dir]);
    wait_blocked_in_read_stdin(pid);
    let prepared = c.prepare_a(pid, "unixfds");
    let in_tmp = dir != ".";
    parent.send(if in_tmp { "report\ncleanup\nexit\n" } else { "exit\n" });
    let seed = parent.finish(STEP);
    assert_eq!(seed.code(), Some(0), "{seed}");
    if in_tmp {
        assert_eq!(seed.stdout, unix_report(true), "the seed's own report");
    }
    let out = c.resume_on_b_with_args("unixfds", if in_tmp { "report\nexit\n" } else { "report\ncleanup\nexit\n" }, extra);
    // Its socket connected to another process's is closed: the peer stays behind.
    assert_eq!(out.stdout, unix_report(false), "the child's descriptors differ from its seed's: {out}\n{}", c.logs());
    assert_eq!(out.code(), Some(0), "{out}");
    let closed: Vec<i64> = prepared["closed_fds"].as_array().expect("closed_fds").iter().filter_map(|c| c[0].as_i64()).collect();
    assert!(closed.iter().all(|fd| !(30..=49).contains(fd)), "prepare lists none of them as closed: {prepared}");
    assert!(closed.contains(&50), "prepare lists the socket connected to another process as closed: {prepared}");
}

#[test]
fn unix_sockets_fifos_and_inotify_recreated_in_a_container() {
    unix_carried("unixfds-ct", "/tmp", &[]);
}

#[test]
fn unix_sockets_fifos_and_inotify_recreated_without_a_container() {
    unix_carried("unixfds-noct", ".", &["--no-container"]);
}
