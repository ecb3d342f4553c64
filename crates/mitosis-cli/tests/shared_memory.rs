//! Shared anonymous memory across a remote fork (zdtm style: our own C
//! program, tests/programs/shared.c, daemonizes the way CRIU's zdtm tests
//! do and reports its shared memory after a resume on another host).
//!
//! A child gets shared anonymous memory that only its seed mapped, with the
//! content of the prepare instant (not what the seed wrote after), shared
//! again with the child's own forks. Memory another process also maps is
//! refused at prepare, naming that process.

#![forbid(unsafe_code)]

mod common;

use common::*;

fn carried(name: &str, extra: &[&str]) {
    let Some(c) = Cluster::new(name) else { return };
    let prog = compile(&c.dir, "shared", &["-O2"]);
    let (mut parent, pid) = c.target_in(&c.hosts.a, "shared", &[prog.to_str().unwrap()]);
    wait_blocked_in_read_stdin(pid);
    c.prepare_a(pid, "shared");
    // The seed writes after the prepare instant: its child must not see it.
    parent.ask("scribble", "scribbled");
    parent.send("report\n");
    assert_eq!(parent.expect_prefix("handshake ", STEP), "handshake 3");
    assert_eq!(parent.expect_prefix("page0 ", STEP), "page0 later");
    let out = c.resume_on_b_with_args("shared", "report\nforkshare\nexit\n", extra);
    let expected = "handshake 2\npage0 seed-0\npage1 zero\npage2 seed-2\nmaps 3\nforkshare fork\n";
    assert_eq!(out.stdout, expected, "the child's shared memory differs from its seed's at prepare: {out}\n{}", c.logs());
    assert_eq!(out.code(), Some(0), "{out}");
}

#[test]
fn shared_anonymous_memory_of_the_seed_alone_in_a_container() {
    carried("shared-ct", &[]);
}

#[test]
fn shared_anonymous_memory_of_the_seed_alone_without_a_container() {
    carried("shared-noct", &["--no-container"]);
}

#[test]
fn shared_memory_another_process_maps_is_refused() {
    let Some(c) = Cluster::new("shared-helper") else { return };
    let prog = compile(&c.dir, "shared", &["-O2"]);
    let (_parent, pid) = c.target_in(&c.hosts.a, "shared", &[prog.to_str().unwrap(), "--keep-helper"]);
    wait_blocked_in_read_stdin(pid);
    let pid_s = pid.to_string();
    let out = c.cli(&["prepare", "--pid", &pid_s, "--id", "shared", "--socket", c.a.socket().to_str().unwrap()]);
    assert_eq!(out.code(), Some(65), "prepare refuses memory shared with a process that stays behind: {out}");
    assert!(out.stderr.contains("is also mapped by process") && out.stderr.contains("(shared)"), "the message names the other process: {out}");
}
