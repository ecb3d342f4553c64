//! The serverless function suite (`functions/`) end to end: every function
//! once from scratch, checked by its result line, and a few representative
//! ones prepared on host `a` (pinned seed) and resumed on host `b`, where the
//! child must compute exactly what its parent computed.
//!
//! Needs root and the suite's venv (`scripts/setup-python` and
//! `scripts/setup-functions`). Without the venv the test is skipped on a
//! developer's machine and fails in CI (`CI=true`). `MITOSIS_FUNCTIONS_PYTHON`
//! names another interpreter.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::time::Instant;

use mitosis_bench::functions::{cold_start, prepare_seed, remote_child, SeedGuard, Suite, FUNCTIONS};
use mitosis_bench::hosts::Cluster;
use mitosis_testkit::require_root;

/// Functions whose result line is fixed by the suite's own code and inputs
/// (pure Python or exact integer arithmetic), with that line.
const EXACT: [(&str, &str); 6] = [
    ("helloworld", "result: hello world"),
    ("json", "result: 179 records, 128414 chars, sha256 6d0602700b2a5007"),
    ("pyaes", "result: 22000 bytes, sha256 b1ece5b000bf475c"),
    ("chameleon", "result: 2020041 chars, sha256 96b188825e8f9094"),
    // 4096 pages, page p holding (7p + 1) mod 256: sixteen times 0 + ... + 255.
    ("micro", "result: touched 4096 of 4096 pages, sum 522240"),
    // Barabasi(100000, 50) from Python's seeded generator (igraph pinned):
    // its BFS from vertex 0, order and parents.
    ("graph", "result: 100000 vertices, 4998725 edges, levels [1, 2972, 96531, 496], sha256 40cb662c3490788e"),
];

/// The beginning of the result line of the others (their digests depend on
/// zlib, libjpeg, libm or BLAS; each handler checks its own result).
const PREFIX: [(&str, &str); 10] = [
    ("compression", "result: 28 entries, "),
    ("image", "result: 640x480 rotated 3 times, sha256 "),
    ("pagerank", "result: top "),
    ("recognition", "result: top-5 "),
    ("float", "result: n 1000000, sums "),
    ("matmul", "result: 1000x1000, trace "),
    ("linpack", "result: n 1000, normalised residual "),
    ("gzip", "result: 1048576 -> "),
    // BERT-base: 109,482,240 parameters, hidden states of 128 tokens.
    ("bert", "result: 12 layers, 109482240 parameters, 128x768 states, pooled[0] "),
    // 50 pages of exactly 4 MiB (their JPEGs depend on Pillow's libjpeg).
    ("web", "result: 50 pages, 209715200 bytes, sha3_512 "),
];

/// Remote-forked in the test: a pure-Python one, a C-library one with a
/// large heap, the numpy network, and 200 MiB of Python bytes objects
/// (web's pages, every byte of which the child's handler hashes).
const REMOTE: [&str; 5] = ["json", "pyaes", "pagerank", "recognition", "web"];

/// The suite, or `None` (after saying why) when it is not set up here;
/// panics in CI, which must have set it up.
fn suite() -> Option<Suite> {
    let python = std::env::var_os("MITOSIS_FUNCTIONS_PYTHON").map(PathBuf::from);
    let found = Suite::locate(None, python.as_deref()).and_then(|s| s.check().map(|_| s));
    match found {
        Ok(s) => Some(s),
        Err(e) if mitosis_testkit::in_ci() => panic!("the function suite is not set up in CI: {e:#}"),
        Err(e) => {
            mitosis_testkit::skip(format!("the function suite is not set up: {e:#}"));
            None
        }
    }
}

#[test]
fn every_function_runs_and_representative_ones_remote_fork() {
    if !require_root() {
        return;
    }
    let Some(suite) = suite() else { return };
    let started = Instant::now();
    let cluster = Cluster::start(&PathBuf::from(env!("CARGO_BIN_EXE_mitosis")), "functions").expect("starting two hosts");

    let mut cold_results = Vec::new();
    for name in FUNCTIONS {
        let cold = cold_start(&suite, &cluster.hosts.a, cluster.dir.path(), name).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        assert_eq!(cold.results.len(), 1, "{name}: expected one result line, got {:?}", cold.results);
        let line = &cold.results[0];
        if let Some((_, want)) = EXACT.iter().find(|(n, _)| *n == name) {
            assert_eq!(line, want, "{name}: wrong result");
        } else {
            let (_, prefix) = PREFIX.iter().find(|(n, _)| *n == name).unwrap_or_else(|| panic!("{name} has no expected result"));
            assert!(line.starts_with(prefix), "{name}: result {line:?} does not start with {prefix:?}");
        }
        cold_results.push((name, cold.results));
    }

    cluster
        .run(|cluster| {
            for name in REMOTE {
                let id = format!("test-{name}");
                let seed = prepare_seed(&suite, cluster, name, &id)?;
                let guard = SeedGuard::new(cluster, seed.seed.clone());
                let child = remote_child(cluster, name, &id)?;
                let (_, cold) = cold_results.iter().find(|(n, _)| *n == name).expect("cold run");
                anyhow::ensure!(seed.warm_results == *cold, "{name}: warm {:?} differs from cold {cold:?}", seed.warm_results);
                anyhow::ensure!(
                    child.results == seed.warm_results,
                    "{name}: the child on host b computed {:?}, its parent {:?}",
                    child.results,
                    seed.warm_results
                );
                anyhow::ensure!(child.stats.pages_fetched > 0, "{name}: the child fetched no page from host a");
                guard.drop_now()?;
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!("function suite: {} functions cold, {} remote forks in {:.1} s", FUNCTIONS.len(), REMOTE.len(), started.elapsed().as_secs_f64());
}
