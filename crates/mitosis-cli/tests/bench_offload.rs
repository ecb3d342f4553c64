//! Smoke test of `mitosis bench offload`: its smallest run (8 MiB, one run)
//! goes through every step of the benchmark (raw TCP, memcpy, the first
//! touch, the three offloads, memory back from the seed, from the node and
//! by prefetch, every word checked by the child) and its JSON has every
//! figure, with sane values. It checks that the bench works, not how fast
//! anything is.

#![forbid(unsafe_code)]

mod common;

use std::process::Command;

use common::json_num as num;
use serde_json::Value;

#[test]
fn bench_offload_smallest_run_reports_every_figure() {
    if !mitosis_testkit::require_root() {
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_mitosis"))
        .args(["bench", "offload", "--mib", "8", "--runs", "1", "--json"])
        .output()
        .expect("running mitosis bench offload");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench offload failed ({}):\n{stderr}", out.status);
    let r: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", String::from_utf8_lossy(&out.stdout)));
    for path in [
        "raw_tcp_mib_s.median",
        "memcpy_mib_s.median",
        "first_touch_mib_s.median",
        "back_from_seed_mib_s.median",
        "back_from_node_mib_s.median",
        "prefetch_mib_s.median",
        "offload_written_mib_s.median",
    ] {
        assert!(num(&r, path) > 1.0, "{path} = {}", num(&r, path));
    }
    let s = &r["samples"][0];
    let pages = 8.0 * 256.0;
    assert!(num(s, "offload_clean.pages_clean_at_seed") >= pages, "the read memory was the seed's: {s}");
    assert!(num(s, "offload_written.pages_put") >= pages, "the written memory went to the node: {s}");
    assert!(num(s, "offload_clean_at_node.pages_clean_at_node") >= pages, "it came back and stayed unchanged: {s}");
    assert!(num(s, "offload_written.rss_after_bytes") < num(s, "offload_written.rss_before_bytes"), "{s}");
}
