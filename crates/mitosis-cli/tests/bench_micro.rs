//! Smoke test of `mitosis bench micro`: its smallest run (one size of 1 MiB,
//! one round) goes through every code path of the benchmark (raw TCP, TCP
//! round trip, every paging mode, fault latency, resident memory, and the
//! Python line when the venv exists) and its JSON has every figure, with
//! sane values. It checks that the bench works, not how fast anything is.

#![forbid(unsafe_code)]

mod common;

use std::process::Command;
use std::time::Instant;

use common::json_num as num;
use serde_json::Value;

#[test]
fn bench_micro_smallest_run_reports_every_mode() {
    if !mitosis_testkit::require_root() {
        return;
    }
    let t0 = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_mitosis"))
        .args(["bench", "micro", "--sizes", "1", "--runs", "1", "--json"])
        .output()
        .expect("running mitosis bench micro");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench micro failed ({}):\n{stderr}", out.status);
    eprintln!("bench micro --sizes 1 --runs 1 took {:.1} s", t0.elapsed().as_secs_f64());
    let r: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", String::from_utf8_lossy(&out.stdout)));

    assert!(num(&r, "raw_tcp.mb_per_s.median") > 10.0);
    let rtt = num(&r, "tcp_rtt.median.p50_us");
    assert!(rtt > 1.0 && rtt < 100_000.0, "TCP round trip {rtt} µs");
    assert!(num(&r, "tcp_rtt.median.p99_us") >= rtt);

    let s = &r["sizes"][0];
    assert_eq!(num(s, "mb"), 1.0);
    let m = &s["modes"];
    // Every page of the 1 MiB working set comes in by each mode.
    let pages = 256.0;
    for path in ["lazy_first_mb_s.median", "second_mb_s.median", "no_prefetch_mb_s.median"] {
        assert!(num(m, path) > 1.0, "{path} = {}", num(m, path));
    }
    assert!(num(m, "second_speedup.median") > 0.0);
    assert!(num(m, "stats_lazy_first.pages_fetched") >= pages);
    assert!(num(m, "stats_second.cache_hits") >= pages, "the second child found its pages in host b's cache");
    assert!(num(m, "stats_no_prefetch.faults") >= pages, "one fault per page without prefetch");
    // An eager stream can stall (a pager bug, tests/eager_push_stall.rs):
    // the bench says so and has no eager rate or resident-memory figure then.
    if num(m, "eager_stalled") > 0.0 {
        eprintln!("the eager stream stalled in this run: no eager figures to check");
    } else {
        for path in ["eager_mb_s.median", "eager_touch_after_mb_s.median"] {
            assert!(num(m, path) > 1.0, "{path} = {}", num(m, path));
        }
        assert!(num(m, "eager_of_raw_tcp") > 0.0);
        assert!(num(m, "stats_eager.pages_pushed") >= pages * 0.9, "the eager child got its pages pushed");
        // Two children hold at least one child's memory and at most twice it.
        let rss = num(m, "rss_anon_ratio.median");
        assert!((1.0..=2.0).contains(&rss), "RSS ratio {rss}");
    }
    // A remote fault costs more than a local one and stays below seconds.
    let (remote, local) = (num(m, "remote_fault.p50_us"), num(m, "local_fault.p50_us"));
    assert!(remote > local && local > 0.0 && remote < 1_000_000.0, "remote {remote} µs, local {local} µs");
    assert!(num(m, "remote_fault.n") >= 200.0);

    let targets = r["targets"].as_array().expect("targets");
    for name in ["remote page fault median", "remote page fault p99", "2nd child (cache)"] {
        assert!(targets.iter().any(|t| t["target"].as_str().is_some_and(|s| s.starts_with(name))), "no target {name:?}");
    }
    match (&r["python_working_set"], &r["python_skipped"]) {
        (Value::Null, Value::String(why)) => eprintln!("Python line skipped: {why}"),
        (p, Value::Null) => {
            assert!(num(p, "faults_without") > 0.0);
            assert!(num(p, "working_set_pages") > 0.0, "the first Python child recorded a working set");
            assert!(num(p, "fault_ratio") >= 0.0);
        }
        other => panic!("python_working_set / python_skipped: {other:?}"),
    }
}
