//! Faults injected between test hosts while children page: the link cut,
//! the link made slow (`tc tbf`), the seed host's daemon hung (SIGSTOP),
//! the seed host or the resuming host's daemon killed, a full disk for
//! `--log`, memory pressure at `--memory`, a seed dropped under 20 children.
//!
//! The rules under test: a child that can no longer get a page is killed
//! with the reason and its resumer exits 69, within 2 s of the fault
//! (issue 13's bound, asserted with a margin that the old 10 s fetch
//! timeout fails); a slow but live link never kills a child; no child ever
//! sees a wrong page; nothing is left behind; the other seeds and children
//! on the same daemons go on. Times are printed (`eprintln!`) for the
//! README's Reliability table; see also `failures.rs`.

#![forbid(unsafe_code)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use mitosis_testkit::{cgroup_subtrees_of, dirs_below, wait_until, LinkCut, Paused, SlowLink, SmallTmpfs};

/// Issue 13's bound from a fault to the resumer's exit is 2 s; this leaves
/// room for a loaded test machine and still fails the 10 s fetch timeout.
const FAULT_TO_EXIT_BOUND: Duration = Duration::from_secs(4);

/// A pattern process on host b prepared on daemon b as `id`, and a child of
/// it resumed on b from b itself (its pages never cross the test link).
fn local_child_on_b(c: &Cluster, id: &str) -> (Proc, String, Proc) {
    let b = bin();
    let (mut parent, ppid) = c.target_in(&c.hosts.b, "parent b", &[b.to_str().unwrap(), "workload", "pattern", "--mb", "16"]);
    let sum = parent.verify();
    prepare_ok(c.b.socket(), ppid, id, c);
    let mut child = resume_proc(&c.b.addr(), id, c.b.socket());
    child.ask("pid", "pid ");
    (parent, sum, child)
}

/// Waits until b runs no child and no container beyond the warm ones.
fn assert_no_child_left_on_b(c: &Cluster) {
    let settled = b_settles_to_warm_containers(c);
    assert!(settled, "children or containers left behind on b: {}\n{}", c.ps_on_b(false), c.logs());
}

/// The link to the seed host is cut (its end goes down; nothing tells b)
/// while a child pages from it one page per fault. The child is killed with
/// the reason within the bound, not after the 10 s fetch timeout; a child
/// of b's own seed and a child of a's seed on a go on; nothing is left.
#[test]
fn a_cut_link_kills_the_child_within_2_s_and_others_go_on() {
    let Some(c) = Cluster::build("cut-link", KEY, KEY, &[], &["--window-pages", "1"]) else { return };
    let (mut parent, ppid) = c.pattern_in_a(256);
    let sum_a = parent.verify();
    c.prepare_a(ppid, "far");
    let (_parent_b, sum_b, mut local) = local_child_on_b(&c, "near");

    let mut child = c.resume_on_b("far");
    let pid_line = child.ask("pid", "pid ");
    child.send("touch random\n");
    // 65536 single-page fetches take seconds: cut the link in the middle.
    if let Some(l) = child.line(Duration::from_millis(300)) {
        panic!("the touch ended ({l:?}) too early to test anything\n{}", child.describe());
    }
    let cut = LinkCut::new(&c.hosts.a).expect("cutting the link");
    let t = Instant::now();
    child.wait(STEP);
    let took = t.elapsed();
    eprintln!("cut link: resumer exited {:.0} ms after the cut", took.as_secs_f64() * 1000.0);
    let out = child.finish(STEP);
    eprintln!("cut link: {}", out.stderr.trim());
    assert_killed_by_mitosis(&out, "stopped answering", &[pid_line.as_str()], &c.logs());
    assert!(out.stderr.contains(&c.a.addr()), "the reason names the seed host: {out}");
    assert!(took < FAULT_TO_EXIT_BOUND, "the resumer exited {took:?} after the cut\n{out}");

    // Pages that never cross the link: b's own seed, and a's seed on a.
    assert_eq!(local.verify(), sum_b, "a child of b's own seed");
    local.send("exit 0\n");
    assert_eq!(local.finish(STEP).code(), Some(0));
    let mut on_a = resume_proc(&c.a.addr(), "far", c.a.socket());
    on_a.send("verify\nexit 0\n");
    on_a.close_stdin();
    let out = on_a.finish(STEP);
    assert_eq!((out.code(), out.stdout.as_str()), (Some(0), format!("verify ok {sum_a}\n").as_str()), "{out}\n{}", c.logs());

    assert_no_child_left_on_b(&c);
    // With the link back, b resumes from a again.
    assert!(cut.restore(&c.hosts.b), "a is not reachable again");
    let again = c.resume_on_b_with("far", "verify\nexit 0\n");
    assert_eq!(again.code(), Some(0), "{again}\n{}", c.logs());
    assert_eq!(again.stdout, format!("verify ok {sum_a}\n"));
}

/// A slow but live link (`tc tbf`, 8 Mbit/s out of the seed host) never
/// kills a child, however long its pages take (a few seconds here, longer
/// than the keepalive interval, and one window's answer takes longer than
/// the silence after which a dead peer is given up).
#[test]
fn a_slow_link_delivers_every_page_and_kills_nobody() {
    let Some(c) = Cluster::new("slow-link") else { return };
    let (mut parent, ppid) = c.pattern_in_a(6);
    let sum = parent.verify();
    c.prepare_a(ppid, "slow");
    let _slow = SlowLink::new(&c.hosts.a, "8mbit", "100ms").expect("shaping the link");

    let t = Instant::now();
    let out = c.resume_on_b_with_args("slow", "verify\nexit 0\n", &["--no-cache"]);
    let took = t.elapsed();
    eprintln!("slow link (8 Mbit/s): a child paged 6 MiB in {:.0} ms", took.as_secs_f64() * 1000.0);
    assert_eq!(out.code(), Some(0), "a child on a slow link must finish: {out}\n{}", c.logs());
    assert_eq!(out.stdout, format!("verify ok {sum}\n"));
    // Not a performance bound: without it the test would test nothing.
    assert!(took > Duration::from_secs(2), "the link was not slow ({took:?}): nothing was tested");
}

/// The seed host's daemon hangs (SIGSTOP) while a child pages from it: its
/// kernel still acknowledges b's requests and probes, so b waits instead of
/// giving the host up. Hung for longer than the silence after which a dead
/// host is given up, the child goes on once the daemon does; hung past
/// `--fetch-timeout` (4 s here), the child is killed saying so.
#[test]
fn a_hung_seed_daemon_is_waited_for_until_the_fetch_timeout() {
    let Some(c) = Cluster::build("hung-seed", KEY, KEY, &[], &["--window-pages", "1", "--fetch-timeout", "4"]) else { return };
    let (mut parent, ppid) = c.pattern_in_a(256);
    let sum = parent.verify();
    c.prepare_a(ppid, "big");

    // Every page from a: not from b's page cache, none pushed ahead.
    let paging_child = || {
        let mut child = c.resume_on_b_args("big", &["--no-cache", "--no-working-set"]);
        let pid_line = child.ask("pid", "pid ");
        child.send("touch random\n");
        if let Some(l) = child.line(Duration::from_millis(300)) {
            panic!("the touch ended ({l:?}) too early to test anything\n{}", child.describe());
        }
        (child, pid_line)
    };
    let (mut child, _) = paging_child();
    let hung = Paused::new(c.a.pid()).expect("stopping daemon a");
    std::thread::sleep(Duration::from_millis(2500));
    drop(hung);
    let touched = child.expect_prefix("touch ", STEP);
    assert_eq!(child.verify(), sum, "after {touched:?}");
    child.send("exit 0\n");
    assert_eq!(child.finish(STEP).code(), Some(0));

    let (mut child, pid_line) = paging_child();
    let hung = Paused::new(c.a.pid()).expect("stopping daemon a");
    let t = Instant::now();
    child.wait(STEP);
    let took = t.elapsed();
    drop(hung);
    eprintln!("hung seed daemon (--fetch-timeout 4): resumer exited {:.0} ms after the daemon stopped", took.as_secs_f64() * 1000.0);
    let out = child.finish(STEP);
    assert_killed_by_mitosis(&out, "did not answer within 4s", &[pid_line.as_str()], &c.logs());
    assert!(took >= Duration::from_millis(3500), "a live seed host was given up after {took:?}\n{out}");
    assert_no_child_left_on_b(&c);
    // Continued, daemon a serves on.
    let again = c.resume_on_b_with("big", "verify\nexit 0\n");
    assert_eq!((again.code(), again.stdout.clone()), (Some(0), format!("verify ok {sum}\n")), "{again}\n{}", c.logs());
}

/// The seed host dies (SIGKILL to its daemon's group) while a child pages
/// from it, one page per fault: its kernel closes the connection, the child
/// is killed at once, with the reason, and never answers with wrong data.
#[test]
fn a_killed_seed_host_is_detected_at_once() {
    let Some(mut c) = Cluster::build("kill-seed-fast", KEY, KEY, &[], &["--window-pages", "1"]) else { return };
    let (_parent, ppid) = c.pattern_in_a(256);
    c.prepare_a(ppid, "big");
    let mut child = c.resume_on_b("big");
    let pid_line = child.ask("pid", "pid ");
    child.send("touch random\n");
    if let Some(l) = child.line(Duration::from_millis(300)) {
        panic!("the touch ended ({l:?}) too early to test anything\n{}", child.describe());
    }
    let t = Instant::now();
    c.a.kill_hard();
    child.wait(STEP);
    let took = t.elapsed();
    eprintln!("killed seed host: resumer exited {:.0} ms after the kill", took.as_secs_f64() * 1000.0);
    let out = child.finish(STEP);
    assert_killed_by_mitosis(&out, &c.a.addr(), &[pid_line.as_str()], &c.logs());
    assert!(took < FAULT_TO_EXIT_BOUND, "the resumer exited {took:?} after the kill\n{out}");
    assert_no_child_left_on_b(&c);
}

/// The resuming host's daemon is SIGKILLed (the daemon process only, as the
/// OOM killer would) with children in a container, without one, and warm
/// containers: the children die, their resumers fail, and its janitor
/// removes every cgroup directory of the daemon, with no other daemon
/// started to sweep them.
#[test]
fn a_killed_daemon_leaves_no_cgroup_directory() {
    let Some(c) = Cluster::new("daemon-cgroups") else { return };
    let (_parent, ppid) = c.pattern_in_a(8);
    c.prepare_a(ppid, "s");
    let mut contained = c.resume_on_b("s");
    contained.ask("pid", "pid ");
    let mut plain = c.resume_on_b_args("s", &["--no-container"]);
    plain.ask("pid", "pid ");
    let children: Vec<i32> = c.ps_on_b(false)["children"].as_array().unwrap().iter().map(|ch| ch["pid"].as_i64().unwrap() as i32).collect();
    assert_eq!(children.len(), 2, "{}", c.ps_on_b(false));
    let dead = c.b.pid();
    let subtrees = cgroup_subtrees_of(dead);
    assert!(!subtrees.is_empty(), "daemon b has no cgroup subtree");
    let before: Vec<_> = subtrees.iter().flat_map(|d| dirs_below(d)).collect();
    assert!(before.len() > subtrees.len(), "no container directories under {subtrees:?}");
    let janitor = c.b.janitor_pid().expect("daemon b's janitor");

    let t = Instant::now();
    mitosis_sys::process::kill(dead, libc::SIGKILL).unwrap();
    for pid in &children {
        assert!(wait_until(Duration::from_secs(10), || !alive(*pid)), "child {pid} outlived its daemon");
    }
    for resumer in [&mut contained, &mut plain] {
        assert_ne!(resumer.wait(STEP).code(), Some(0), "{}", resumer.describe());
    }
    let gone = wait_until(Duration::from_secs(10), || subtrees.iter().all(|d| !d.exists()));
    let left: Vec<_> = subtrees.iter().flat_map(|d| dirs_below(d)).collect();
    eprintln!(
        "killed daemon: {} cgroup directories before, {} left {:.0} ms after the kill",
        before.len(),
        left.len(),
        t.elapsed().as_secs_f64() * 1000.0
    );
    assert!(gone, "cgroup directories left by the killed daemon: {left:?}\n{}", c.logs());
    assert!(wait_until(Duration::from_secs(10), || !alive(janitor)), "the janitor {janitor} did not finish");
}

/// `resume --detach --log FILE` on a full filesystem: a log that cannot be
/// created is a clear error and starts nothing; a log that fills up leaves
/// the child to its own write errors (it ends, nobody hangs); the daemon
/// goes on serving.
#[test]
fn a_full_disk_for_the_log_is_a_clear_error() {
    let Some(c) = Cluster::new("full-log") else { return };
    let (mut parent, ppid) = c.pattern_in_a(8);
    let sum = parent.verify();
    c.prepare_a(ppid, "s");
    let sock = c.b.socket().to_str().unwrap().to_string();

    // No room for another file at all (one inode for the root, one for the filler).
    let full = SmallTmpfs::new(&c.dir.path().join("no-inodes"), 16 << 10, 2).expect("mounting a tmpfs");
    full.fill("filler").unwrap();
    let log = full.path().join("child.log");
    let t = Instant::now();
    let out = c.cli(&["resume", "--from", &c.a.addr(), "--id", "s", "--socket", &sock, "--detach", "--log", log.to_str().unwrap()]);
    assert_eq!(out.code(), Some(73), "cannot create its output (EX_CANTCREAT): {out}");
    assert!(out.stderr.contains("cannot open log file") && out.stderr.contains("No space left on device"), "{out}");
    assert!(t.elapsed() < STEP, "{out}");
    assert!(c.ps_on_b(false)["children"].as_array().unwrap().is_empty(), "a child started without its log");

    // Room for the log file, none for what goes into it: a shell seed whose
    // child writes until the disk is full, then ends by its own error.
    let mut shell = c.start_target_in(&c.hosts.a, "shell", &["sh", "-c", "echo ready $$; read x; yes mitosis-log-line"]);
    let ready = shell.expect_prefix("ready ", STEP);
    let spid: i32 = ready["ready ".len()..].trim().parse().unwrap();
    wait_blocked_in_read_stdin(spid);
    c.prepare_a(spid, "writer");
    let tiny = SmallTmpfs::new(&c.dir.path().join("no-space"), 16 << 10, 16).expect("mounting a tmpfs");
    let log = tiny.path().join("child.log");
    let out = c.cli(&["resume", "--from", &c.a.addr(), "--id", "writer", "--socket", &sock, "--detach", "--log", log.to_str().unwrap()]);
    assert_eq!(out.code(), Some(0), "{out}\n{}", c.logs());
    assert!(out.stdout.contains("started child"), "{out}");
    let ended = wait_until(STEP, || c.ps_on_b(false)["children"].as_array().unwrap().is_empty());
    assert!(ended, "the child writing to a full disk did not end: {}", c.ps_on_b(true));
    let ps = c.ps_on_b(true);
    let writer = ps["children"].as_array().unwrap().iter().find(|ch| ch["seed_id"] == "writer").cloned().unwrap_or_default();
    eprintln!("full log disk: the detached child ended: {}", writer["end"]);
    // `yes` ends by its own write error (status 1), not killed by anyone.
    assert!(writer["end"]["Exited"].as_i64().is_some_and(|s| s != 0), "{ps}");
    let size = std::fs::metadata(&log).unwrap().len();
    assert!(size > 0 && size <= 16 << 10, "the log holds {size} bytes");

    // The daemon serves on.
    let again = c.resume_on_b_with("s", "verify\nexit 0\n");
    assert_eq!((again.code(), again.stdout.clone()), (Some(0), format!("verify ok {sum}\n")), "{again}\n{}", c.logs());
    assert_no_child_left_on_b(&c);
}

/// A child paging a seed bigger than its `--memory` into private copies
/// (`--no-cache`): its pages are charged to it as they come in, so the OOM
/// killer ends it (137, reported as such) or mitosis kills it with the
/// reason (69); it never prints a wrong sum. A child of the same seed
/// without a limit meanwhile gets every page right, and the daemon serves
/// on. A child under the same limit that shares the seed's pages through
/// the host's page cache (the default) reads them all: they are the
/// cache's, bounded by `--cache-size`, and only what it writes is its own.
#[test]
fn memory_pressure_at_the_limit_never_gives_a_wrong_page() {
    let Some(c) = Cluster::new("paging-oom") else { return };
    let (mut parent, ppid) = c.pattern_in_a(96);
    let sum = parent.verify();
    c.prepare_a(ppid, "big");

    let mut squeezed = c.resume_on_b_args("big", &["--memory", "48M", "--no-cache"]);
    let mut free = c.resume_on_b("big");
    for p in [&mut squeezed, &mut free] {
        p.send("verify\nexit 0\n");
        p.close_stdin();
    }
    let out = squeezed.finish(STEP);
    eprintln!("paging past --memory 48M: status {:?}, {}", out.code(), out.stderr.trim());
    for l in out.lines() {
        assert_eq!(l, format!("verify ok {sum}"), "a wrong page: {out}");
    }
    match out.code() {
        Some(137) => assert!(out.stderr.contains("OOM killer"), "the report says why: {out}"),
        Some(69) => assert!(out.stderr.contains("child killed"), "{out}"),
        _ => panic!("a 96 MiB seed cannot be paged into 48M: {out}\n{}", c.logs()),
    }
    let out = free.finish(STEP);
    assert_eq!((out.code(), out.stdout.clone()), (Some(0), format!("verify ok {sum}\n")), "{out}\n{}", c.logs());
    let shared = c.resume_on_b_with_args("big", "verify\nexit 0\n", &["--memory", "48M"]);
    assert_eq!((shared.code(), shared.stdout.clone()), (Some(0), format!("verify ok {sum}\n")), "{shared}\n{}", c.logs());

    // Within its limit the same seed pages in whole.
    let (mut small, small_pid) = c.pattern_in_a(16);
    let small_sum = small.verify();
    c.prepare_a(small_pid, "small");
    let out = c.resume_on_b_with_args("small", "verify\nexit 0\n", &["--memory", "96M"]);
    assert_eq!((out.code(), out.stdout.clone()), (Some(0), format!("verify ok {small_sum}\n")), "{out}\n{}", c.logs());
    assert_no_child_left_on_b(&c);
}

/// A seed is dropped while 20 children page from it (half of them well
/// into their pages, half just starting): each either finishes
/// with the right sum or is killed (69) saying the seed was dropped; none
/// prints a wrong sum. A child of another seed on the same daemon is
/// resumed and verified meanwhile.
#[test]
fn a_seed_dropped_under_20_children() {
    let Some(c) = Cluster::new("drop-under-20") else { return };
    let (mut parent, ppid) = c.pattern_in_a(32);
    let sum = parent.verify();
    c.prepare_a(ppid, "many");
    let (mut other, other_pid) = c.pattern_in_a(8);
    let other_sum = other.verify();
    c.prepare_a(other_pid, "other");

    let mut children: Vec<(Proc, String)> = (0..20)
        .map(|_| {
            let mut p = c.resume_on_b_args("many", &["--no-cache"]);
            let pid_line = p.ask("pid", "pid ");
            (p, pid_line)
        })
        .collect();
    // Half of them page first; the seed is dropped once the first of those
    // got all its pages, just as the other half starts.
    for (p, _) in &mut children[..10] {
        p.send("verify\nexit 0\n");
        p.close_stdin();
    }
    let first = children[0].0.line(STEP);
    assert_eq!(first, Some(format!("verify ok {sum}")), "{}", children[0].0.describe());
    for (p, _) in &mut children[10..] {
        p.send("verify\nexit 0\n");
        p.close_stdin();
    }
    let dropped = c.cli(&["drop", "--id", "many", "--socket", c.a.socket().to_str().unwrap()]);
    assert_eq!(dropped.code(), Some(0), "{dropped}");
    let meanwhile = c.resume_on_b_with("other", "verify\nexit 0\n");

    let (mut finished, mut killed) = (0, 0);
    for (i, (p, pid_line)) in children.into_iter().enumerate() {
        let out = p.finish(STEP);
        let rest = if i == 0 { String::new() } else { format!("verify ok {sum}\n") };
        match out.code() {
            Some(0) => {
                assert_eq!(out.stdout, rest, "{pid_line}: {out}");
                finished += 1;
            }
            _ => {
                // Possibly on its way out, after verifying: the right sum.
                assert_killed_by_mitosis(&out, "dropped", &[format!("verify ok {sum}").as_str()], &c.logs());
                killed += 1;
            }
        }
    }
    eprintln!("seed dropped under 20 children: {finished} finished with the right sum, {killed} killed (69, \"dropped\")");
    assert_eq!((meanwhile.code(), meanwhile.stdout.clone()), (Some(0), format!("verify ok {other_sum}\n")), "{meanwhile}\n{}", c.logs());
    assert_no_child_left_on_b(&c);
}
