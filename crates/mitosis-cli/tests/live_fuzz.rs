//! The bounded live fuzz (`mitosis stress fuzz`): random and mutated frames
//! against a running daemon's peer port (before and after authentication)
//! and local socket (as user nobody), 1,000 slow-loris connections held on
//! each, while real remote forks run beside them and must all succeed; then
//! both daemons must be back to their descriptors and threads of before, and
//! their memory within 16 MiB of before (they run with one glibc arena, so
//! that freed memory is reused and a leak shows).
//! Only correctness is asserted; the figures belong to the stress program.

#![forbid(unsafe_code)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

/// Setup, the run, and the daemons' settling time after it.
const RUN_LIMIT: Duration = Duration::from_secs(120);

fn stress_fuzz(args: &[&str]) -> Finished {
    let mut cmd = Command::new(bin());
    cmd.args(["stress", "fuzz"]).args(args);
    let mut p = Proc::spawn("mitosis stress fuzz", &mut cmd);
    p.close_stdin();
    p.finish(RUN_LIMIT)
}

#[test]
fn garbage_on_both_sockets_leaves_remote_forks_and_the_daemons_whole() {
    if !mitosis_testkit::require_root() {
        return;
    }
    let out = stress_fuzz(&["--seconds", "6", "--hold", "1000", "--json"]);
    assert_eq!(out.code(), Some(0), "{out}");
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(report["passed"], true, "{report:#}");
    assert_eq!(report["errors"], 0, "{report:#}");
    assert!(!out.stderr.contains("ERROR"), "{out}");
    // Every kind of input reached the daemon, and the daemon reacted to some
    // (an answer or a close), not only by waiting.
    let kinds = report["kinds"].as_array().unwrap();
    assert_eq!(kinds.len(), 3, "{report:#}");
    for k in kinds {
        let n = |f: &str| k[f].as_u64().unwrap();
        assert!(n("inputs") > 0, "{k}");
        assert!(n("answered") + n("closed") > 0, "{k}");
    }
    // The held connections were made and, as the daemons let them go, made again.
    assert!(report["held_opened"].as_u64().unwrap() >= 2000, "{report:#}");
    // Real remote forks beside the garbage, every one checked byte for byte.
    assert!(report["resumes_ok"].as_u64().unwrap() > 0, "{report:#}");
    assert!(report["liveness_checks"].as_u64().unwrap() > 0, "{report:#}");
    // One thread per admitted connection: the caps (64 pending handshakes
    // per address on a's port; 128 connections of nobody's on b's socket),
    // not the 1,000 held on each, bound the daemons' threads.
    let daemons = report["daemons"].as_array().unwrap();
    let peak = |i: usize| daemons[i]["peak_threads"].as_u64().unwrap();
    assert!(peak(0) < 128, "daemon a: {}", daemons[0]);
    assert!(peak(1) < 256, "daemon b: {}", daemons[1]);
    // No leak: descriptors, threads and memory back.
    for d in daemons {
        let kb = |when: &str| d[when]["rss_kb"].as_u64().unwrap();
        assert!(kb("after") <= kb("before") + (16 << 10), "{d}");
        assert_eq!(d["settled"], true, "{d}");
        assert!(d["after"]["fds"].as_u64() <= Some(d["before"]["fds"].as_u64().unwrap() + 8), "{d}");
        assert!(d["after"]["threads"].as_u64() <= d["before"]["threads"].as_u64(), "{d}");
    }
    // One line a second, MITOSIS's format, on stderr under --json.
    let ticks = out.stderr.lines().filter(|l| l.starts_with("passed: ") && l.contains(" inputs/s")).count();
    assert!(ticks >= 5, "{out}");
}

#[test]
fn a_daemon_that_does_not_answer_fails_the_run() {
    // Nothing listens on port 1 of this loopback: every input and every
    // liveness check fails, and the run must say so (the checker can fail).
    let out = stress_fuzz(&["--peer", "127.0.0.1:1", "--seconds", "1", "--hold", "0"]);
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(out.stderr.contains("ERROR peer liveness"), "{out}");
    assert!(out.stdout.contains("FAILED"), "{out}");
}
