//! The `mitosis` command's own exit statuses: usage errors are 64 (also the
//! ones the argument parser finds), `--help` and `--version` 0, a closed
//! stdout (`mitosis ls | head -c0`) ends a command quietly with 141
//! (128 + SIGPIPE, as for a command SIGPIPE killed), never with a panic, and
//! `resume --in-place` by a user the kernel gives no userfaultfd is refused
//! with the reason and 77.

mod common;

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};

use common::*;
use mitosis_testkit::{ProcessGuard, TestDir};

/// Which of the command's streams is the pipe nobody reads.
#[derive(Clone, Copy, Debug)]
enum Closed {
    Stdout,
    Stderr,
}

/// Runs `mitosis <args>` with stdout or stderr a pipe whose reading end is
/// closed (every write to it fails with EPIPE) and the other one in a file;
/// returns the exit status and what the other stream got.
fn with_closed_pipe(dir: &TestDir, closed: Closed, args: &[&str]) -> (Option<i32>, String) {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let other = dir.path().join("other-stream");
    let file = File::create(&other).unwrap();
    let mut cmd = Command::new(bin());
    cmd.args(args).stdin(Stdio::null());
    match closed {
        Closed::Stdout => cmd.stdout(writer).stderr(file),
        Closed::Stderr => cmd.stderr(writer).stdout(file),
    };
    let mut guard = ProcessGuard::spawn(&mut cmd).unwrap();
    drop(cmd);
    let status = guard.wait_timeout(STEP).unwrap_or_else(|| panic!("mitosis {args:?} did not exit"));
    (status.code(), std::fs::read_to_string(&other).unwrap())
}

/// Usage errors exit 64, as the README says (clap's own status is 2);
/// `--help` and `--version` exit 0.
#[test]
fn usage_errors_are_64_and_help_is_0() {
    for args in [&["ls", "--bogus"][..], &[], &["resume", "--id", "x"], &["prepare", "--pid", "x", "--id", "y"], &["frobnicate"]] {
        let out = cli(args);
        assert_eq!(out.code(), Some(64), "mitosis {args:?}: {out}");
        assert!(!out.stderr.is_empty(), "mitosis {args:?} says why: {out}");
    }
    for args in [&["--help"][..], &["-h"], &["--version"], &["ls", "--help"], &["help", "resume"]] {
        let out = cli(args);
        assert_eq!(out.code(), Some(0), "mitosis {args:?}: {out}");
        assert!(!out.stdout.is_empty(), "{out}");
    }
}

/// Every command that prints, with its stdout a closed pipe, exits 141
/// without a word (no panic, no 101); with stderr a closed pipe an error
/// still gets its documented status.
#[test]
fn closed_stdout_ends_a_command_quietly() {
    let dir = TestDir::new("closed-stdout");
    for args in [&["--help"][..], &["--version"]] {
        assert_eq!(with_closed_pipe(&dir, Closed::Stdout, args).0, Some(0), "{args:?}");
    }
    // With stderr closed: the error's status, without a panic.
    let (code, out) = with_closed_pipe(&dir, Closed::Stderr, &["ls", "--socket", "/nonexistent/mitosis.sock"]);
    assert_eq!(code, Some(69), "{out}");
    assert_eq!(with_closed_pipe(&dir, Closed::Stderr, &["ls", "--bogus"]).0, Some(64));

    // A library's println! (the benchmarks' and workloads' output): the
    // raw TCP baseline prints one line when its transfer is done.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let to = listener.local_addr().unwrap().to_string();
    let sink = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        std::io::copy(&mut conn, &mut std::io::sink()).unwrap()
    });
    let (code, err) = with_closed_pipe(&dir, Closed::Stdout, &["workload", "tcp-source", "--to", &to, "--mb", "1"]);
    assert_eq!((code, err.as_str()), (Some(141), ""));
    assert_eq!(sink.join().unwrap(), 1 << 20);

    let Some(c) = Cluster::new("closed-stdout-cluster") else { return };
    let (_p, pid) = c.pattern_in_a(1);
    c.prepare_a(pid, "seed");
    let mut child = c.resume_on_b("seed");
    child.ask("pid", "pid ");
    let (a, b) = (c.a.socket().to_str().unwrap(), c.b.socket().to_str().unwrap());
    let pid_s = pid.to_string();
    let commands: [&[&str]; 8] = [
        &["ls", "--socket", a],
        &["ls", "--json", "--socket", a],
        &["ps", "--socket", b],
        &["ps", "--all", "--json", "--socket", b],
        &["stats", "--socket", a],
        &["stats", "--json", "--socket", b],
        &["prepare", "--pid", &pid_s, "--id", "again", "--socket", a],
        &["prepare", "--pid", &pid_s, "--id", "again-json", "--json", "--socket", a],
    ];
    for args in commands {
        let (code, err) = with_closed_pipe(&c.dir, Closed::Stdout, args);
        assert_eq!(code, Some(141), "mitosis {args:?}: {err}");
        // prepare --pid warns on stderr that children are clones, before its report.
        let err: String = err.lines().filter(|l| !l.contains("Clone uniqueness")).collect();
        assert_eq!(err, "", "mitosis {args:?} with a closed stdout says nothing but its warning");
    }
    // The prepare was done all the same; only its report was lost.
    let ls = c.cli(&["ls", "--json", "--socket", a]);
    assert!(ls.stdout.contains("\"again-json\""), "{ls}");
    let cpid = c.only_child_on_b().to_string();
    let (code, err) = with_closed_pipe(&c.dir, Closed::Stdout, &["kill", &cpid, "--socket", b]);
    assert_eq!((code, err.as_str()), (Some(141), ""));
    assert_ne!(child.wait(STEP).code(), Some(0));
}

/// `resume --in-place` by an unprivileged user (nobody, of nobody's own
/// seed). Where the kernel gives that user no userfaultfd (neither
/// vm.unprivileged_userfaultfd nor access to /dev/userfaultfd, the default),
/// it is refused up front with the reason and 77; it used to exit 92 without
/// a word. With /dev/userfaultfd open to the user (a node of its own bound
/// over it, in the resumer's own mount namespace only) the user's process
/// becomes the child.
#[test]
fn resume_in_place_by_an_unprivileged_user() {
    // Non-root users may resume only from the cluster's peers.
    let Some(c) = Cluster::build("in-place-nobody", KEY, KEY, &[], &["--peers", "{a}"]) else { return };
    let version = nobody_cmd(&["--version"]).output().unwrap();
    if !version.status.success() {
        eprintln!("skipped: user nobody cannot run {} ({version:?})", bin().display());
        return;
    }
    let b = bin();
    let mut args: Vec<&str> = NOBODY.to_vec();
    args.extend_from_slice(&[b.to_str().unwrap(), "workload", "pattern", "--mb", "2"]);
    let (mut mine, pid) = c.target_in(&c.hosts.a, "nobody's pattern", &args);
    let sum = mine.verify();
    let pid_s = pid.to_string();
    let mut prepare = Proc::spawn("prepare as nobody", &mut nobody_cmd(&["prepare", "--pid", &pid_s, "--id", "mine", "--socket", c.a.socket().to_str().unwrap()]));
    prepare.close_stdin();
    let out = prepare.finish(STEP);
    assert_eq!(out.code(), Some(0), "{out}\n{}", c.logs());
    let (addr_a, sock_b) = (c.a.addr(), c.b.socket().to_str().unwrap().to_string());
    let resume: [&str; 8] = ["resume", "--in-place", "--from", &addr_a, "--id", "mine", "--socket", &sock_b];

    let open_to_all = std::fs::read_to_string("/proc/sys/vm/unprivileged_userfaultfd").is_ok_and(|s| s.trim() == "1");
    let dev = std::fs::metadata("/dev/userfaultfd").ok();
    let dev_open_to_nobody = dev.as_ref().is_some_and(|m| m.mode() & 0o006 == 0o006 || (m.uid() == 65534 && m.mode() & 0o600 == 0o600));
    if !open_to_all && !dev_open_to_nobody {
        let mut me = Proc::spawn("resume --in-place as nobody", &mut nobody_cmd(&resume));
        me.close_stdin();
        let out = me.finish(STEP);
        assert_eq!(out.code(), Some(77), "{out}\n{}", c.logs());
        assert!(out.stderr.contains("userfaultfd") && out.stderr.contains("vm.unprivileged_userfaultfd"), "{out}");
        assert!(out.stdout.is_empty(), "{out}");
        assert!(c.ps_on_b(true)["children"].as_array().unwrap().is_empty(), "the daemon was not asked: {}", c.ps_on_b(true));
    }

    let Some(dev) = dev else {
        eprintln!("skipped the /dev/userfaultfd half: this kernel has none");
        return;
    };
    let (major, minor) = ((dev.rdev() >> 8) & 0xfff, (dev.rdev() & 0xff) | ((dev.rdev() >> 12) & 0xfff00));
    let mnt = c.dir.path().join("dev");
    std::fs::create_dir_all(&mnt).unwrap();
    let script = format!(
        "set -e; mount -t tmpfs -o mode=755 none {m}; mknod -m 600 {m}/userfaultfd c {major} {minor}; \
         chown 65534 {m}/userfaultfd; mount --bind {m}/userfaultfd /dev/userfaultfd; exec \"$@\"",
        m = mnt.display()
    );
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c", &script, "sh"]).args(NOBODY).arg(bin()).args(resume);
    let mut me = Proc::spawn("resume --in-place as nobody with /dev/userfaultfd", &mut cmd);
    me.send("verify\npid\nexit 7\n");
    me.close_stdin();
    let my_pid = me.pid();
    let out = me.finish(STEP);
    assert_eq!(out.code(), Some(7), "{out}\n{}", c.logs());
    assert_eq!(out.stdout, format!("verify ok {sum}\npid {my_pid}\n"), "{out}");
}
