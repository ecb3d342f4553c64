//! Tests that cannot run here say so, and are reported as skipped, never as
//! passed.
//!
//! libtest has no "skipped" outcome: a test that returns early passes. So a
//! test that skips calls [`skip`], which prints `skipped: REASON` and appends
//! `TEST\tREASON` to the file named by `MITOSIS_SKIP_LOG` (set by
//! `scripts/test`, which subtracts those tests from the passed ones and lists
//! them). Under CI (`CI=true`) a root-only test run without root fails
//! instead ([`require_root`]): CI runs as root, so such a skip is a broken
//! setup, not a machine without a feature.

use std::fmt::Display;
use std::io::Write;
use std::path::Path;

/// The environment variable naming the skip log.
pub const SKIP_LOG_ENV: &str = "MITOSIS_SKIP_LOG";

/// The calling test's name: `BINARY::TEST` (the test binary's name without
/// cargo's hash, and the name libtest gives the thread that runs the test).
pub fn test_name() -> String {
    let binary = std::env::args()
        .next()
        .as_deref()
        .and_then(|a| Path::new(a).file_name().map(|f| f.to_string_lossy().into_owned()))
        .unwrap_or_default();
    // cargo names test binaries NAME-HASH.
    let binary = match binary.rsplit_once('-') {
        Some((name, hash)) if hash.len() == 16 && hash.chars().all(|c| c.is_ascii_hexdigit()) => name.to_string(),
        _ => binary,
    };
    let thread = std::thread::current().name().unwrap_or("unnamed").to_string();
    format!("{binary}::{thread}")
}

/// One line of the skip log: tabs and newlines in either part become spaces,
/// so the line always has exactly two fields.
fn log_line(test: &str, reason: &str) -> String {
    let clean = |s: &str| s.replace(['\t', '\n', '\r'], " ");
    format!("{}\t{}\n", clean(test), clean(reason))
}

/// Appends the skip of `test` to `log` (one `write` of one line on an
/// `O_APPEND` file, so concurrent tests never interleave).
fn record(log: &Path, test: &str, reason: &str) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
    f.write_all(log_line(test, reason).as_bytes())
}

/// Records that the calling test skips because of `reason`, and prints
/// `skipped: REASON`. The test then returns: `if !cond { skip("..."); return; }`.
pub fn skip(reason: impl Display) {
    let reason = reason.to_string();
    let test = test_name();
    eprintln!("skipped: {reason}");
    if let Some(log) = std::env::var_os(SKIP_LOG_ENV) {
        if let Err(e) = record(Path::new(&log), &test, &reason) {
            // The skip must not pass silently as a pass.
            panic!("cannot record the skip of {test} in {}: {e}", Path::new(&log).display());
        }
    }
}

/// Whether the environment says this is a CI run (`CI=true` or `CI=1`, as
/// the common CI services set it).
pub fn in_ci() -> bool {
    matches!(std::env::var("CI").as_deref(), Ok("true" | "1"))
}

/// What a root-only test does, given whether it is root and runs under CI.
#[derive(Debug, PartialEq, Eq)]
enum RootCheck {
    Run,
    Skip,
    Fail,
}

fn root_check(root: bool, ci: bool) -> RootCheck {
    match (root, ci) {
        (true, _) => RootCheck::Run,
        (false, false) => RootCheck::Skip,
        (false, true) => RootCheck::Fail,
    }
}

/// Returns whether the test runs as root. When not, the test is recorded as
/// skipped ("needs root") and should return; under CI it panics instead.
/// Use as `if !require_root() { return; }`.
pub fn require_root() -> bool {
    match root_check(mitosis_sys::process::euid() == 0, in_ci()) {
        RootCheck::Run => true,
        RootCheck::Skip => {
            skip("needs root");
            false
        }
        RootCheck::Fail => panic!("{} needs root, and CI must run it: refusing to skip", test_name()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_name_is_binary_and_test() {
        let name = test_name();
        assert!(name.ends_with("::skip::tests::the_test_name_is_binary_and_test"), "{name}");
        // The hash cargo appends is gone.
        assert!(name.starts_with("mitosis_testkit::"), "{name}");
    }

    #[test]
    fn records_append_one_clean_line_each() {
        let dir = crate::TestDir::new("skip-log");
        let log = dir.path().join("skips");
        record(&log, "a::one", "needs root").unwrap();
        record(&log, "b::two", "no\tAVX-512\nhere").unwrap();
        let text = std::fs::read_to_string(&log).unwrap();
        assert_eq!(text, "a::one\tneeds root\nb::two\tno AVX-512 here\n");
        // A log that cannot be written is an error, not a silent pass.
        assert!(record(&dir.path().join("no/such/dir"), "c", "x").is_err());
    }

    #[test]
    fn root_only_tests_skip_outside_ci_and_fail_under_it() {
        assert_eq!(root_check(true, false), RootCheck::Run);
        assert_eq!(root_check(true, true), RootCheck::Run);
        assert_eq!(root_check(false, false), RootCheck::Skip);
        assert_eq!(root_check(false, true), RootCheck::Fail);
    }

    #[test]
    fn the_summary_counts_skipped_tests_apart_from_passed_ones() {
        // scripts/test's summary over a skip log and cargo test output: the
        // skipped test that passed is counted once, as skipped; a test in
        // another binary with the same name is not; failures stay failures.
        let dir = crate::TestDir::new("skip-summary");
        let (log, out) = (dir.path().join("skips"), dir.path().join("out"));
        record(&log, "programs::avx512", "this CPU has no AVX-512").unwrap();
        record(&log, "programs::avx512", "this CPU has no AVX-512").unwrap();
        record(&log, "failures::boom", "needs root").unwrap();
        std::fs::write(
            &out,
            "     Running tests/programs.rs (target/release/deps/programs-0123456789abcdef)\n\
             test avx512 ... ok\n\
             test other ... ok\n\
             test result: ok. 2 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.01s\n\
             \x20    Running tests/failures.rs (target/release/deps/failures-fedcba9876543210)\n\
             test avx512 ... ok\n\
             test boom ... FAILED\n\
             test result: FAILED. 1 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.01s\n",
        )
        .unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/test-summary");
        let got = std::process::Command::new(script).arg(&log).arg(&out).output().unwrap();
        assert!(got.status.success(), "{}", String::from_utf8_lossy(&got.stderr));
        assert_eq!(
            String::from_utf8_lossy(&got.stdout),
            "skipped: programs::avx512: this CPU has no AVX-512\ntests: 2 passed, 1 failed, 1 skipped\n"
        );
    }

    #[test]
    fn skip_writes_to_the_log_named_by_the_environment() {
        // In a child process, so that setting the variable races with nothing.
        if std::env::var_os("MITOSIS_SKIP_SELFTEST").is_some() {
            skip("self test");
            return;
        }
        let dir = crate::TestDir::new("skip-env");
        let log = dir.path().join("skips");
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "skip::tests::skip_writes_to_the_log_named_by_the_environment", "--test-threads=1", "--nocapture"])
            .env("MITOSIS_SKIP_SELFTEST", "1")
            .env(SKIP_LOG_ENV, &log)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stderr).contains("skipped: self test"));
        let text = std::fs::read_to_string(&log).unwrap();
        assert_eq!(text, "mitosis_testkit::skip::tests::skip_writes_to_the_log_named_by_the_environment\tself test\n");
    }
}
