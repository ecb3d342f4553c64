//! `mitosis stress rpc`: MITOSIS's RPC stress program, short, between two
//! test hosts (the client on host b, daemon a answering). Only correctness
//! is asserted; its figures belong to benchmarks.

mod common;

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
