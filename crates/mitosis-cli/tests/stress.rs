//! The stress programs, short. `mitosis stress rpc`: MITOSIS's RPC stress
//! program between two test hosts (the client on host b, daemon a
//! answering). `mitosis stress fork` (the C parent, and the cheapest Python
//! function) and `mitosis stress soak`, each on a cluster of its own, a few
//! seconds: the programs judge their own pass rules; the tests check that
//! they passed, printed their lines and saw every child right, and that the
//! checker fails when children are told to expect another pattern. Their
//! figures belong to the long runs, not to tests.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::*;

/// The numbers of the summary line `requests: R, mismatches: M, errors: E (...)`.
fn summary(out: &Finished) -> (u64, u64, u64) {
    let line = out.line("requests: ");
    let number = |word: &str| -> u64 {
        let rest = &line[line.find(word).unwrap_or_else(|| panic!("no {word:?} in {line:?}")) + word.len()..];
        rest.split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()
    };
    (number("requests: "), number("mismatches: "), number("errors: "))
}

fn stress_from_b(c: &Cluster, key: &std::path::Path, args: &[&str]) -> Finished {
    let b = bin();
    let addr = c.a.addr();
    let mut full = vec![b.to_str().unwrap(), "stress", "rpc", "--peer", &addr, "--key-file", key.to_str().unwrap()];
    full.extend_from_slice(args);
    c.start_in(&c.hosts.b, "stress", &full).finish(STEP + Duration::from_secs(10))
}

#[test]
fn checksummed_payloads_from_four_clients_all_check() {
    let Some(c) = Cluster::new("stress_rpc_checksum") else { return };
    let out = stress_from_b(&c, &c.key, &["--checksum", "--clients", "4", "--seconds", "2"]);
    assert_eq!(out.code(), Some(0), "{out}\n{}", c.logs());
    let (requests, mismatches, errors) = summary(&out);
    assert!(requests > 0, "{out}");
    assert_eq!((mismatches, errors), (0, 0), "{out}");
    // MITOSIS's line, once a second.
    let ticks: Vec<&str> = out.lines().into_iter().filter(|l| l.starts_with("passed: ")).collect();
    assert!(!ticks.is_empty(), "{out}");
    assert!(ticks.iter().all(|l| l.contains("us, thpt: ") && l.ends_with(" requests/s")), "{out}");
    assert!(!out.stderr.contains("ERROR"), "{out}");
}

#[test]
fn a_client_that_cannot_authenticate_fails_the_run() {
    let Some(c) = Cluster::new("stress_rpc_wrong_key") else { return };
    let wrong = mitosis_testkit::write_key(&c.dir, "wrong.key", "not-the-cluster-key-0123456789");
    let out = stress_from_b(&c, &wrong, &["--checksum", "--clients", "2", "--seconds", "1"]);
    assert_eq!(out.code(), Some(1), "{out}");
    let (requests, mismatches, errors) = summary(&out);
    assert_eq!((requests, mismatches), (0, 0), "{out}");
    assert!(errors > 0, "{out}");
    assert!(out.stderr.contains("ERROR client"), "{out}");
}

// ----------------------------------------------------- stress fork, soak --

/// How long a short stress run may take, set-up and teardown included.
const SHORT_RUN: Duration = Duration::from_secs(300);

/// Runs `mitosis <args>` (a stress program that builds its own cluster)
/// from the repository's root, where it finds the function suite.
fn stress(args: &[&str]) -> Finished {
    let mut cmd = Command::new(bin());
    cmd.args(args).current_dir(repo());
    let mut p = Proc::spawn(&format!("mitosis {}", args[..2].join(" ")), &mut cmd);
    p.close_stdin();
    p.finish(SHORT_RUN)
}

/// The rule table's line for the rule starting with `rule`: (passed, detail).
fn rule<'a>(out: &'a Finished, rule: &str) -> (bool, &'a str) {
    let line = out.line(rule);
    let (at, result) = ["PASS", "FAIL", "SKIP"]
        .iter()
        .filter_map(|r| line.find(&format!(" {r} ")).map(|i| (i, *r)))
        .min()
        .unwrap_or_else(|| panic!("no PASS, FAIL or SKIP in {line:?}"));
    assert_ne!(result, "SKIP", "rule {rule:?} was not judged: {line:?}");
    (result == "PASS", line[at + 6..].trim())
}

/// `N of M children` in a rule's detail.
fn of_children(detail: &str) -> (usize, usize) {
    let mut words = detail.split_whitespace();
    let n = words.next().and_then(|w| w.parse().ok()).unwrap_or_else(|| panic!("no count in {detail:?}"));
    assert_eq!(words.next(), Some("of"), "{detail:?}");
    let m = words.next().and_then(|w| w.parse().ok()).unwrap_or_else(|| panic!("no total in {detail:?}"));
    (n, m)
}

/// MITOSIS's per-second lines of workload `label`: at least `seconds` of them.
fn assert_throughput_lines(out: &Finished, label: &str, seconds: usize) {
    let prefix = format!("[{label}] Throughput: ");
    let ticks: Vec<&str> = out.lines().into_iter().filter(|l| l.starts_with(&prefix)).collect();
    assert!(ticks.len() >= seconds, "{} lines of {prefix:?}, wanted {seconds}:\n{out}", ticks.len());
    for t in &ticks {
        let rest = &t[prefix.len()..];
        let (rate, latency) = rest.split_once(" containers/sec, latency ").unwrap_or_else(|| panic!("malformed {t:?}"));
        assert!(rate.parse::<f64>().is_ok(), "{t:?}");
        assert!(latency.ends_with(" ms"), "{t:?}");
    }
}

#[test]
fn stress_fork_with_the_c_parent_checks_every_page_of_every_child() {
    if !mitosis_testkit::require_root() {
        return;
    }
    let out = stress(&["stress", "fork", "--workload", "c", "--seconds", "3", "--loops", "2", "--mib", "16"]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert_throughput_lines(&out, "c", 3);
    let (passed, detail) = rule(&out, "no wrong result");
    let (wrong, children) = of_children(detail);
    assert!(passed && wrong == 0 && children > 0, "{out}");
    let (passed, detail) = rule(&out, "no failed resume");
    assert!(passed && of_children(detail).0 == 0, "{out}");
    assert!(rule(&out, "nothing left behind").0, "{out}");
    assert!(out.lines().contains(&"PASSED"), "{out}");
    assert!(!out.stderr.contains("ERROR"), "{out}");
}

#[test]
fn stress_fork_fails_when_the_children_expect_another_pattern() {
    if !mitosis_testkit::require_root() {
        return;
    }
    // Every child is told the wrong key: each must find every word wrong and
    // say so. A child that skipped its check would exit 0 and pass the run.
    let out = stress(&["stress", "fork", "--workload", "c", "--seconds", "2", "--loops", "1", "--mib", "4", "--expect-wrong-pattern"]);
    assert_eq!(out.code(), Some(1), "{out}");
    let (passed, detail) = rule(&out, "no wrong result");
    let (wrong, children) = of_children(detail);
    assert!(!passed && wrong > 0 && wrong == children, "{out}");
    assert!(detail.contains("WRONG 524288 of 524288 words in 1024 of 1024 pages differ"), "{out}");
    assert!(out.stderr.contains("ERROR [c] loop 0: wrong: WRONG"), "{out}");
    assert!(out.lines().contains(&"FAILED"), "{out}");
}

/// Whether the function suite is set up (skips, or fails in CI, if not).
fn suite_ready() -> bool {
    let python = std::env::var_os("MITOSIS_FUNCTIONS_PYTHON").map(PathBuf::from);
    match mitosis_bench::functions::Suite::locate(Some(&repo().join("functions")), python.as_deref()).and_then(|s| s.check()) {
        Ok(()) => true,
        Err(e) if mitosis_testkit::in_ci() => panic!("the function suite is not set up in CI: {e:#}"),
        Err(e) => {
            mitosis_testkit::skip(format!("the function suite is not set up: {e:#}"));
            false
        }
    }
}

#[test]
fn stress_fork_with_a_python_function_checks_every_childs_result() {
    if !mitosis_testkit::require_root() || !suite_ready() {
        return;
    }
    let mut args = vec!["stress", "fork", "--workload", "python:helloworld", "--seconds", "3", "--loops", "2"];
    let python = std::env::var("MITOSIS_FUNCTIONS_PYTHON").ok();
    if let Some(p) = &python {
        args.extend(["--python", p.as_str()]);
    }
    let out = stress(&args);
    assert_eq!(out.code(), Some(0), "{out}");
    assert_throughput_lines(&out, "helloworld", 3);
    let (passed, detail) = rule(&out, "no wrong result");
    let (wrong, children) = of_children(detail);
    assert!(passed && wrong == 0 && children > 0, "{out}");
    assert!(rule(&out, "no failed resume").0, "{out}");
    assert!(rule(&out, "nothing left behind").0, "{out}");
    assert!(!out.stderr.contains("ERROR"), "{out}");
}

#[test]
fn stress_soak_churns_the_seed_and_no_child_sees_a_wrong_byte() {
    if !mitosis_testkit::require_root() {
        return;
    }
    let out = stress(&["stress", "soak", "--resumes", "200", "--loops", "2", "--mib", "16", "--churn-min-ms", "50", "--churn-max-ms", "300"]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert_throughput_lines(&out, "soak", 1);
    let (passed, detail) = rule(&out, "no wrong result");
    assert!(passed && of_children(detail) == (0, 200), "{out}");
    let (passed, detail) = rule(&out, "no unexpected failure");
    assert!(passed && of_children(detail).0 == 0, "{out}");
    assert!(rule(&out, "all 200 resumes done").0, "{out}");
    let (churned, detail) = rule(&out, "the seed was churned");
    assert!(churned, "{detail}\n{out}");
    assert!(rule(&out, "nothing left behind").0, "{out}");
    // Right children and expected failures, all accounted for.
    let counts = out.line("  children: ");
    assert!(counts.contains(" 0 wrong, 0 failed unexpectedly"), "{out}");
}

#[test]
fn stress_soak_fails_when_the_children_expect_another_pattern() {
    if !mitosis_testkit::require_root() {
        return;
    }
    let out = stress(&[
        "stress", "soak", "--resumes", "30", "--loops", "1", "--mib", "4", "--churn-min-ms", "50", "--churn-max-ms", "100",
        "--expect-wrong-pattern",
    ]);
    assert_eq!(out.code(), Some(1), "{out}");
    let (passed, detail) = rule(&out, "no wrong result");
    let (wrong, _) = of_children(detail);
    assert!(!passed && wrong > 0, "{out}");
    assert!(detail.contains("WRONG"), "{out}");
}
