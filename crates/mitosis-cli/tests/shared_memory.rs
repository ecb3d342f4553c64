//! Shared anonymous memory across a remote fork (zdtm style: our own C
//! program, tests/programs/shared.c, daemonizes the way CRIU's zdtm tests
//! do and reports its shared memory after a resume on another host).
//!
//! A child gets shared anonymous memory that only its seed mapped, with the
//! content of the prepare instant (not what the seed wrote after), shared
//! again with the child's own forks. Memory another process also maps is
//! refused at prepare, naming that process.
//!
//! And (tests/programs/sharedfile.c) shared mappings of a file: a child
//! maps the same file shared again, sees what it holds now (as a fork()ed
//! process would) and writes through to it; a file that is no longer the
//! same one fails the resume with 65, saying which.

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

#[test]
fn a_shared_file_mapping_maps_the_same_file_again() {
    let Some(c) = Cluster::new("sharedfile") else { return };
    let prog = compile(&c.dir, "sharedfile", &["-O2"]);
    let file = c.dir.path().join("mapped");
    std::fs::write(&file, vec![0u8; 8192]).unwrap();
    let (mut parent, pid) = c.target_in(&c.hosts.a, "sharedfile", &[prog.to_str().unwrap(), file.to_str().unwrap()]);
    wait_blocked_in_read_stdin(pid);
    c.prepare_a(pid, "sharedfile");
    // Written to the file after the prepare: a shared mapping shows it.
    let mut bytes = std::fs::read(&file).unwrap();
    assert_eq!(&bytes[..5], b"seed\0", "the seed wrote through its mapping");
    bytes[4096..4103].copy_from_slice(b"outside");
    std::fs::write(&file, &bytes).unwrap();

    let out = c.resume_on_b_with("sharedfile", "report\nwrite\nexit\n");
    assert_eq!(out.stdout, "rw seed\nro outside\nwritten\n", "{out}\n{}", c.logs());
    assert_eq!(out.code(), Some(0), "{out}");
    let bytes = std::fs::read(&file).unwrap();
    assert_eq!(&bytes[4196..4202], b"child\0", "the child's write reached the file");
    parent.send("report\n");
    assert_eq!(parent.expect_prefix("rw ", STEP), "rw seed");
    assert_eq!(parent.expect_prefix("ro ", STEP), "ro outside", "and its seed's mapping");

    // Another file at that path: a child must not map it as if it were.
    std::fs::remove_file(&file).unwrap();
    std::fs::write(&file, vec![0u8; 8192]).unwrap();
    let refused = c.resume_on_b_with("sharedfile", "report\nexit\n");
    assert_eq!(refused.code(), Some(65), "{refused}\n{}", c.logs());
    assert!(refused.stderr.contains("maps ") && refused.stderr.contains("shared") && refused.stderr.contains("mapped"), "{refused}");
    assert_eq!(refused.stdout, "", "the refused child ran nothing");
    parent.send("exit\n");
    assert_eq!(parent.finish(STEP).code(), Some(0));
}
