//! Remote fork of real programs between two test hosts, checked after restore
//! (zdtm style): the `pattern` workload verifies every word of its memory,
//! heap and stack in the resumed child, while its parent goes on unharmed.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;

/// Parses `pid <n>`.
fn pid_of(line: &str) -> i32 {
    line.strip_prefix("pid ").and_then(|p| p.trim().parse().ok()).unwrap_or_else(|| panic!("not a pid line: {line:?}"))
}

/// Prepare, mutate the parent, resume a child on b that verifies the memory
/// as it was at the prepare instant and exits with status 5.
fn parent_mutates_child_verifies(name: &str, mb: usize) {
    let Some(c) = Cluster::new(name) else { return };
    let (mut parent, ppid) = c.pattern_in_a(mb);
    let sum0 = parent.verify();

    let seed = c.prepare_a(ppid, "s");
    assert_eq!(seed["id"], "s");
    assert_eq!(seed["source_pid"], ppid);
    assert!(seed["mapped_bytes"].as_u64().unwrap() >= (mb as u64) << 20, "{seed}");

    // The parent keeps running and changes all its memory after the prepare.
    parent.ask("mutate", "mutated");
    let sum1 = parent.verify();
    assert_ne!(sum0, sum1, "mutate must change the checksum");

    let out = c.resume_on_b_with("s", "verify\npid\nexit 5\n");
    assert_eq!(out.code(), Some(5), "child must exit with its own status 5: {out}\n{}", c.logs());
    let lines = out.lines();
    assert_eq!(lines.len(), 2, "{out}");
    assert_eq!(lines[0], format!("verify ok {sum0}"), "child must see the memory of the prepare instant: {out}");
    let cpid = pid_of(lines[1]);
    assert_ne!(cpid, ppid, "the child is a new process");

    // The parent still has its own, mutated memory and still answers.
    assert_eq!(parent.verify(), sum1);
    parent.send("exit 0\n");
    assert_eq!(parent.wait(STEP).code(), Some(0), "{}", parent.describe());
}

#[test]
fn pattern_1mib_child_sees_prepare_instant_parent_keeps_mutation() {
    parent_mutates_child_verifies("pattern-1m", 1);
}

#[test]
fn pattern_256mib_child_sees_prepare_instant_parent_keeps_mutation() {
    parent_mutates_child_verifies("pattern-256m", 256);
}

/// Twenty children of one seed: twelve one after the other, then two waves of
/// four at once. Every one verifies; all pids are distinct.
#[test]
fn twenty_children_from_one_seed() {
    let Some(c) = Cluster::new("twenty") else { return };
    let (mut parent, ppid) = c.pattern_in_a(8);
    let sum0 = parent.verify();
    c.prepare_a(ppid, "many");
    parent.ask("mutate", "mutated");

    let mut pids = HashSet::new();
    let mut check = |out: Finished, n: usize| {
        assert_eq!(out.code(), Some(0), "child {n}: {out}\n{}", c.logs());
        let lines = out.lines();
        assert_eq!(lines.len(), 2, "child {n}: {out}");
        assert_eq!(lines[0], format!("verify ok {sum0}"), "child {n}: {out}");
        let pid = pid_of(lines[1]);
        assert_ne!(pid, ppid);
        assert!(pids.insert(pid), "child {n} reuses pid {pid}");
    };
    for n in 0..12 {
        let out = c.resume_on_b_with("many", "verify\npid\nexit 0\n");
        check(out, n);
    }
    for wave in 0..2 {
        let mut procs: Vec<Proc> = (0..4).map(|_| c.resume_on_b("many")).collect();
        // All four are started before any is given work.
        for p in &mut procs {
            p.send("verify\npid\nexit 0\n");
            p.close_stdin();
        }
        for (i, p) in procs.into_iter().enumerate() {
            check(p.finish(STEP), 12 + wave * 4 + i);
        }
    }
    assert_eq!(pids.len(), 20);
    // The parent is untouched by all this.
    parent.verify();
}

/// A program prepares itself through the library (`mitosis::fork_prepare`):
/// the original learns it is the parent, every resumed child that it is a child.
#[test]
fn self_prepare_through_the_library() {
    let Some(c) = Cluster::new("self-prepare") else { return };
    let bin = bin();
    let sock = c.a.socket().to_str().unwrap().to_string();
    let mut parent = c.start_in(
        &c.hosts.a,
        "self-preparing parent",
        &[bin.to_str().unwrap(), "workload", "pattern", "--mb", "8", "--self-prepare", "self1", "--socket", &sock],
    );
    parent.expect_prefix("role parent", STEP);
    let ppid = parent.pid();
    let sum0 = parent.verify();

    let seeds = c.cli(&["ls", "--json", "--socket", &sock]);
    assert_eq!(seeds.code(), Some(0), "{seeds}");
    let seeds: serde_json::Value = serde_json::from_str(&seeds.stdout).unwrap();
    assert_eq!(seeds[0]["id"], "self1", "{seeds}");
    assert_eq!(seeds[0]["source_pid"], ppid, "{seeds}");

    for _ in 0..2 {
        let out = c.resume_on_b_with("self1", "verify\npid\nexit 0\n");
        assert_eq!(out.code(), Some(0), "{out}\n{}", c.logs());
        let lines = out.lines();
        assert_eq!(lines.len(), 3, "{out}");
        let role: Vec<&str> = lines[0].split_whitespace().collect();
        assert_eq!(role.len(), 4, "{out}");
        assert_eq!(&role[..2], ["role", "child"], "{out}");
        assert_eq!(role[3], "self1", "{out}");
        let cpid: i32 = role[2].parse().unwrap();
        assert_ne!(cpid, ppid);
        assert_eq!(lines[1], format!("verify ok {sum0}"), "{out}");
        assert_eq!(pid_of(lines[2]), cpid, "fork_prepare must report the child's own pid: {out}");
    }
    assert_eq!(parent.verify(), sum0);
}

/// A resumed child is itself prepared on host b and resumed back on host a:
/// the grandchild sees the original memory, though most of it never reached b.
#[test]
fn nested_fork_of_a_resumed_child() {
    let Some(c) = Cluster::new("nested") else { return };
    let (mut parent, ppid) = c.pattern_in_a(8);
    let sum0 = parent.verify();
    c.prepare_a(ppid, "s1");
    parent.ask("mutate", "mutated");

    // The child stays alive, blocked on its stdin, having touched almost nothing.
    let mut child = c.resume_on_b("s1");
    let cpid = pid_of(&child.ask("pid", "pid "));
    assert_ne!(cpid, ppid);
    let seed2 = prepare_ok(c.b.socket(), cpid, "s2", &c);
    assert_eq!(seed2["source_pid"], cpid);

    let mut grandchild = resume_proc(&c.b.addr(), "s2", c.a.socket());
    grandchild.send("verify\npid\nexit 3\n");
    grandchild.close_stdin();
    let out = grandchild.finish(STEP);
    assert_eq!(out.code(), Some(3), "{out}\n{}", c.logs());
    let lines = out.lines();
    assert_eq!(lines.len(), 2, "{out}");
    assert_eq!(lines[0], format!("verify ok {sum0}"), "grandchild must see the original memory: {out}\n{}", c.logs());
    let gpid = pid_of(lines[1]);
    assert!(gpid != cpid && gpid != ppid);

    // The first child is still fine, then ends at end of input.
    assert_eq!(child.verify(), sum0);
    child.close_stdin();
    let out = child.finish(STEP);
    assert_eq!(out.code(), Some(0), "{out}\n{}", c.logs());
}

/// Preparing an id again replaces the seed: new children see the memory of
/// the second prepare.
#[test]
fn prepare_again_under_the_same_id() {
    let Some(c) = Cluster::new("reprepare") else { return };
    let (mut parent, ppid) = c.pattern_in_a(8);
    let sum0 = parent.verify();
    let first = c.prepare_a(ppid, "again");

    let out = c.resume_on_b_with("again", "verify\nexit 0\n");
    assert_eq!(out.code(), Some(0), "{out}");
    assert_eq!(out.stdout, format!("verify ok {sum0}\n"));

    parent.ask("mutate", "mutated");
    let sum1 = parent.verify();
    assert_ne!(sum0, sum1);
    let second = c.prepare_a(ppid, "again");
    assert_ne!(first["generation"], second["generation"], "a new prepare is a new generation");

    let out = c.resume_on_b_with("again", "verify\nexit 0\n");
    assert_eq!(out.code(), Some(0), "{out}\n{}", c.logs());
    assert_eq!(out.stdout, format!("verify ok {sum1}\n"), "the new child must see the mutated memory");

    let ls = c.cli(&["ls", "--json", "--socket", c.a.socket().to_str().unwrap()]);
    let seeds: serde_json::Value = serde_json::from_str(&ls.stdout).unwrap();
    let seeds = seeds.as_array().unwrap();
    assert_eq!(seeds.len(), 1, "{ls}");
    assert_eq!(seeds[0]["generation"], second["generation"]);
}

/// `mitosis ls` (table and JSON) and `mitosis drop`.
#[test]
fn ls_json_and_drop() {
    let Some(c) = Cluster::new("ls-drop") else { return };
    let sock_a = c.a.socket().to_str().unwrap().to_string();
    let sock_b = c.b.socket().to_str().unwrap().to_string();
    let (_p1, pid1) = c.pattern_in_a(4);
    let (_p2, pid2) = c.pattern_in_a(16);
    let ls = |sock: &str| -> Vec<serde_json::Value> {
        let out = cli(&["ls", "--json", "--socket", sock]);
        assert_eq!(out.code(), Some(0), "{out}");
        serde_json::from_str::<serde_json::Value>(&out.stdout).unwrap().as_array().unwrap().clone()
    };
    assert!(ls(&sock_a).is_empty());

    let s1 = c.prepare_a(pid1, "seed.one");
    let s2 = c.prepare_a(pid2, "seed-two_2");
    let seeds = ls(&sock_a);
    assert_eq!(seeds.len(), 2, "{seeds:?}");
    let ids: Vec<&str> = seeds.iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["seed-two_2", "seed.one"], "seeds are listed by id");
    for (s, prepared, pid, mb) in [(&seeds[1], &s1, pid1, 4u64), (&seeds[0], &s2, pid2, 16)] {
        assert_eq!(s["source_pid"], pid);
        assert_eq!(s["uid"], 0);
        assert_eq!(s["generation"], prepared["generation"]);
        assert_eq!(s["snapshot_pid"], prepared["snapshot_pid"]);
        assert!(s["mapped_bytes"].as_u64().unwrap() >= mb << 20, "{s}");
        assert!(s["rss_bytes"].as_u64().unwrap() >= mb << 20, "{s}");
        assert!(s["vmas"].as_u64().unwrap() > 0);
        let snap = s["snapshot_pid"].as_i64().unwrap() as i32;
        assert!(alive(snap), "snapshot {snap} of {} must be alive", s["id"]);
    }
    assert!(ls(&sock_b).is_empty(), "seeds belong to their host");

    let table = c.cli(&["ls", "--socket", &sock_a]);
    assert_eq!(table.code(), Some(0));
    let t = table.lines();
    assert_eq!(t.len(), 3, "{table}");
    assert!(t[0].starts_with("ID"), "{table}");
    assert!(t[2].starts_with("seed.one") && t[2].contains(&pid1.to_string()), "{table}");

    let dropped = c.cli(&["drop", "--id", "seed.one", "--socket", &sock_a]);
    assert_eq!(dropped.code(), Some(0), "{dropped}");
    let seeds = ls(&sock_a);
    assert_eq!(seeds.len(), 1);
    assert_eq!(seeds[0]["id"], "seed-two_2");
    let snap1 = s1["snapshot_pid"].as_i64().unwrap() as i32;
    assert!(
        mitosis_testkit::wait_until(Duration::from_secs(5), || !alive(snap1)),
        "the dropped seed's snapshot {snap1} must die"
    );

    // The dropped seed is gone for good; the other one still resumes.
    let again = c.cli(&["drop", "--id", "seed.one", "--socket", &sock_a]);
    assert_eq!(again.code(), Some(66), "{again}");
    assert!(again.stderr.contains("seed.one"), "{again}");
    let out = c.resume_on_b_with("seed.one", "verify\n");
    assert_eq!(out.code(), Some(66), "{out}");
    assert!(out.stdout.is_empty());
    let out = c.resume_on_b_with("seed-two_2", "verify\nexit 0\n");
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(out.stdout.starts_with("verify ok "), "{out}");
}
