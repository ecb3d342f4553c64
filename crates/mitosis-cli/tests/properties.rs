//! Process properties a child takes from its seed (zdtm style: our own C
//! program, tests/programs/props.c, reports its state after a resume on
//! another host): umask, every resource limit, oom_score_adj, dumpable
//! state, THP setting, personality, child-subreaper flag, supplementary
//! groups, executable, interval and POSIX timers (ids and time left) and
//! membarrier registration, in a container and without one, of root and of
//! another user. The program's address space and data limits sit a little
//! above what it uses, so a restore that applied them before mapping the
//! seed's layout would fail.

#![forbid(unsafe_code)]

mod common;

use common::*;

/// A personality flag the seed adds (`sys/personality.h`).
const ADDR_COMPAT_LAYOUT: u32 = 0x0200000;

const INPUT: &str = "report\ncreate\nalloc\nexit\n";

/// Runs props (with `args`) on host a, resumes it on host b (resume options
/// `extra`) and checks that the child reports what its seed reports, the
/// seed's own report holding what it set.
fn properties_carried(name: &str, args: &[&str], extra: &[&str]) {
    let Some(c) = Cluster::new(name) else { return };
    let prog = compile(&c.dir, "props", &["-O2"]);
    let mut argv = vec![prog.to_str().unwrap()];
    argv.extend_from_slice(args);
    let (mut parent, ppid) = c.target_in(&c.hosts.a, "props", &argv);
    wait_blocked_in_read_stdin(ppid);
    c.prepare_a(ppid, "props");
    let out = c.resume_on_b_with_args("props", INPUT, extra);
    parent.send(INPUT);
    let expected = parent.finish(STEP);
    assert_eq!(expected.code(), Some(0), "{expected}");
    // What the seed set is what it reports (the test cannot pass on two equally wrong reports).
    for line in ["umask 0027\n", "limit 7 200 300\n", "limit 4 4096 1048576\n", "limit 12 100000 200000\n", "create mode 0640\n", "alloc refused\n",
        "oom_score_adj 500\n", "dumpable 0\n", "thp_disable 1\n", "subreaper 1\n", "groups 2: 4242 4343\n",
        // Interval timers (which, interval, hundreds of seconds left), POSIX
        // timers 0 and 2 (1 was deleted), the membarrier registration.
        "itimer 0 1000 20\n", "itimer 1 0 30\n", "timer 0 10 40\n", "timer 2 0 0\n", "membarrier 16\n",
        // Mappings with advice and a lock, and one wiped on fork.
        "advised lo dd hg\n", "wiped 90 wf\n",
        // A deleted directory held open.
        "dirfd directory 1 links 0 deleted 1\n", "cwd held by 41 1\n",
        // The name it gave itself (PR_SET_NAME).
        "name props-renamed\n"] {
        assert!(expected.stdout.contains(line), "the seed reports {line:?}: {expected}");
    }
    assert!(expected.stdout.contains(&format!("exe {}\n", prog.display())), "{expected}");
    if args == ["user"] {
        assert!(expected.stdout.contains("uid 65534\n") && expected.stdout.contains("capeff 0000000000000000\n"), "{expected}");
    }
    let personality = expected.stdout.lines().find_map(|l| l.strip_prefix("personality 0x")).and_then(|p| u32::from_str_radix(p, 16).ok());
    assert!(personality.is_some_and(|p| p & ADDR_COMPAT_LAYOUT != 0), "the seed reports its personality: {expected}");
    // A child is a fork: memory the seed marked MADV_WIPEONFORK reads zero.
    let mut expected = expected.stdout.replace("wiped 90 wf\n", "wiped 0 wf\n");
    let mut got = out.stdout.clone();
    if args == ["user"] {
        // Nobody may not make a directory where the seed's deleted one was
        // (root made that): the child's deleted working directory is in /tmp.
        let line = |text: &str| text.lines().find(|l| l.starts_with("cwd ")).unwrap_or_default().to_string();
        let child_cwd = line(&got);
        // (Made for the descriptor that also holds it, by its name.)
        assert!(child_cwd.starts_with("cwd /tmp/mitosis-deleted-dir-props-") && child_cwd.ends_with(" (deleted)"), "{out}");
        expected = expected.replace(&line(&expected), "cwd elsewhere");
        got = got.replace(&child_cwd, "cwd elsewhere");
    }
    assert_eq!(got, expected, "the child's properties differ from its seed's: {out}\n{}", c.logs());
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(!out.stderr.contains("warning"), "no limit had to be kept lower: {out}");
}

/// Lowers the hard limits `limits` (`prlimit` options) of process `pid`
/// and of all its descendants (a daemon's zygote and what it forks).
fn lower_hard_limits_of_tree(pid: i32, limits: &[&str]) {
    let out = std::process::Command::new("prlimit").arg("--pid").arg(pid.to_string()).args(limits).output().expect("running prlimit");
    assert!(out.status.success(), "prlimit on {pid}: {}", String::from_utf8_lossy(&out.stderr));
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        for child in children.split_whitespace().filter_map(|c| c.parse().ok()) {
            lower_hard_limits_of_tree(child, limits);
        }
    }
}

/// The seed's hard limits are above what children on host b may have
/// (daemon b and its zygote run with lower ones, and without
/// CAP_SYS_RESOURCE nothing raises them): the child gets the highest it
/// may have, and says so: RLIMIT_CORE (set by the prologue) on the
/// resume's stderr, RLIMIT_STACK (set by the restore) in daemon b's log.
/// Everything else is the seed's.
#[test]
fn hard_limits_above_the_childs_are_kept_with_a_warning() {
    let Some(c) = Cluster::new("props-lower") else { return };
    lower_hard_limits_of_tree(c.b.pid(), &["--core=2048:2048", "--stack=:33554432"]);
    let prog = compile(&c.dir, "props", &["-O2"]);
    let (mut parent, ppid) = c.target_in(&c.hosts.a, "props", &[prog.to_str().unwrap()]);
    wait_blocked_in_read_stdin(ppid);
    c.prepare_a(ppid, "props");
    let out = c.resume_on_b_with_args("props", INPUT, &["--no-container"]);
    parent.send(INPUT);
    let expected = parent.finish(STEP);
    assert!(expected.stdout.contains("limit 3 4194304 67108864\n") && expected.stdout.contains("limit 4 4096 1048576\n"), "{expected}");
    let kept = expected
        .stdout
        .replace("limit 3 4194304 67108864\n", "limit 3 4194304 33554432\n")
        .replace("limit 4 4096 1048576\n", "limit 4 2048 2048\n")
        .replace("wiped 90 wf\n", "wiped 0 wf\n");
    assert_eq!(out.stdout, kept, "the child has the highest limits it may have, the seed's otherwise: {out}\n{}", c.logs());
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(out.stderr.contains("warning: the seed's hard limit of RLIMIT_CORE is above what this child may set"), "{out}");
    assert!(c.b.log().contains("the seed's hard RLIMIT_STACK is above what the child may set"), "{}", c.logs());
}

#[test]
fn process_properties_in_a_container() {
    properties_carried("props-ct", &[], &[]);
}

#[test]
fn process_properties_without_a_container() {
    properties_carried("props-noct", &[], &["--no-container"]);
}

/// A seed of uid 65534: the child is that user again, with the seed's
/// executable as /proc/self/exe (set during its restore with a capability
/// the restore then drops: the child has none, as its seed).
#[test]
fn process_properties_of_a_seed_other_than_root() {
    properties_carried("props-user", &["user"], &["--no-container"]);
}
