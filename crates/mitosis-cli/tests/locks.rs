//! File locks and leases a child takes again (zdtm style: tests/programs/
//! locks.c reports the locks it holds, from /proc/self/fdinfo): a POSIX
//! record lock, an open file description lock, a flock and a lease. A child
//! continues as the process that held them, so a lock it cannot take (here
//! the seed, still running on the same machine, holds it) fails the resume
//! with exit status 65 and says why, rather than leave the child believing
//! it holds a lock it does not.

#![forbid(unsafe_code)]

mod common;

use common::*;

#[test]
fn locks_and_a_lease_are_taken_again_or_the_resume_says_why_not() {
    let Some(c) = Cluster::new("locks") else { return };
    let prog = compile(&c.dir, "locks", &["-O2"]);
    let file = c.dir.path().join("locked");
    let leased = c.dir.path().join("leased");
    std::fs::write(&file, vec![7u8; 4096]).unwrap();
    std::fs::write(&leased, b"lease me").unwrap();
    let (mut parent, ppid) = c.target_in(&c.hosts.a, "locks", &[prog.to_str().unwrap(), file.to_str().unwrap(), leased.to_str().unwrap()]);
    wait_blocked_in_read_stdin(ppid);
    c.prepare_a(ppid, "locks");

    // The seed still holds its locks: a child cannot take them.
    let refused = c.resume_on_b_with("locks", "report\nexit\n");
    assert_eq!(refused.code(), Some(65), "{refused}\n{}", c.logs());
    assert!(refused.stderr.contains("POSIX write lock on ") && refused.stderr.contains("which another process holds now"), "{refused}");

    parent.send("report\n");
    let mut expected = Vec::new();
    loop {
        let line = parent.line(STEP).expect("the seed's report");
        expected.push(line.clone());
        if line == "report done" {
            break;
        }
    }
    for want in ["lock 3 POSIX WRITE 0 99", "lock 4 OFDLCK READ 200 EOF", "lock 5 FLOCK READ 0 EOF", "lock 6 LEASE READ 0 EOF", "lease 0"] {
        assert!(expected.iter().any(|l| l == want), "the seed reports {want:?}: {expected:?}");
    }
    parent.send("release\n");
    parent.expect_line("released", STEP);

    let out = c.resume_on_b_with("locks", "report\nexit\n");
    assert_eq!(out.code(), Some(0), "{out}\n{}", c.logs());
    assert_eq!(out.stdout, format!("{}\n", expected.join("\n")), "the child holds what its seed held: {out}");
    parent.send("exit\n");
    assert_eq!(parent.finish(STEP).code(), Some(0));
}
