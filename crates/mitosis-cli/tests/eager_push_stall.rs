//! Reproducer of a pager bug found by `mitosis bench micro` (ignored, so the
//! suite stays green until the pager is fixed; run it with
//! `cargo test --release -p mitosis-cli --test eager_push_stall -- --ignored --nocapture`).
//!
//! An eager child that faults sequentially (so the pager sends a read-ahead
//! window) and then stops touching that memory never gets the rest of its
//! stream: the read-ahead sits at the front of the pager's queue of
//! requests, `pump` only takes answers in while a *push* is at the front and
//! sends no more than `PUSH_DEPTH` (2) requests, so nothing moves, and the
//! pager thread spins in `poll` with a zero timeout (a whole CPU) until the
//! child happens to fault on the read-ahead window. The same holds for a
//! pushed working set.

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
#[ignore = "reproduces a pager bug: an outstanding read-ahead stalls the eager stream (see the module doc)"]
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
    child.send("exit 0\n");
    parent.send("exit 0\n");
}
