//! A regression test for a pager bug found by `mitosis bench micro`: an
//! eager child that faults sequentially (so the pager sends a read-ahead
//! window) and then stops touching that memory must still get the rest of
//! its stream. The read-ahead sat at the front of the pager's queue of
//! requests, and `pump` took answers in only while a *push* was in front, so
//! nothing moved, and the pager thread spun in `poll` with a zero timeout
//! until the child faulted again. The same held for a pushed working set.

#![forbid(unsafe_code)]

mod common;

use std::time::{Duration, Instant};

use common::*;

/// CPU time (user + system, in clock ticks) of daemon `pid`'s thread named `name`.
fn thread_ticks(pid: i32, name: &str) -> Option<u64> {
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() == name {
            let stat = std::fs::read_to_string(task.path().join("stat")).ok()?;
            let f: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
            return Some(f[11].parse::<u64>().ok()? + f[12].parse::<u64>().ok()?);
        }
    }
    None
}

#[test]
fn eager_stream_completes_after_a_read_ahead() {
    let Some(c) = Cluster::new("eager-push-stall") else { return };
    let (mut parent, ppid) = c.pattern_in_a(64);
    c.prepare_a(ppid, "s");
    let mut child = c.resume_on_b_args("s", &["--eager", "--no-cache", "--no-container"]);
    // Sequential faults on the first 256 pages (a read-ahead goes out beyond
    // them), then nothing but waiting for the stream, which never faults.
    child.send("touch seq 256\nresident\n");
    child.expect_prefix("touch ", STEP);
    let t0 = Instant::now();
    let answer = child.line(Duration::from_secs(30)).unwrap_or_default();
    let pid = c.only_child_on_b();
    let pager = format!("pager-{pid}");
    let spin = thread_ticks(c.b.pid(), &pager).map(|before| {
        std::thread::sleep(Duration::from_secs(1));
        thread_ticks(c.b.pid(), &pager).unwrap_or(before) - before
    });
    eprintln!("after {:.1} s the child said {answer:?}; its pager thread used {spin:?} ticks in the next second", t0.elapsed().as_secs_f64());
    assert!(answer.starts_with("resident ") && !answer.contains("STALLED"), "the eager stream stalled: {answer:?}\n{}", c.logs());
    // With nothing left to do, the pager sleeps in poll (100 ticks would be a whole CPU).
    assert!(spin.unwrap_or(0) < 20, "the pager thread spins: {spin:?} ticks in a second");
    child.send("exit 0\n");
    parent.send("exit 0\n");
}
