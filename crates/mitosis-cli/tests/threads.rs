//! Multi-threaded programs across a remote fork (zdtm style: our own C
//! program, tests/programs/mt.c, checks its threads after a resume on
//! another host): every thread goes on where it was, blocked in a futex, a
//! condition variable, a mutex, nanosleep, epoll_wait or read, or busy
//! computing in registers, with its own vector registers, thread-local
//! value and name; signals reach each thread; new threads can be created.
//! Then the refusals: a thread in vfork() and a thread traced by someone
//! else.

#![forbid(unsafe_code)]

mod common;

use common::*;

/// The threads that report on themselves, in mt.c's order.
const THREADS: [&str; 8] = ["reader", "futex", "cond", "mutex", "sleeper", "epoll", "counter", "spawner"];

/// mt.c, with AVX (ymm registers) where the CPU has it.
fn compile_mt(c: &Cluster) -> std::path::PathBuf {
    let mut flags = vec!["-O2", "-pthread"];
    if cpu_has("avx") {
        flags.push("-mavx");
    }
    compile(&c.dir, "mt", &flags)
}

/// The lines that must be the same in the seed and in the child (all but
/// the `tid` lines: whether a tid is kept depends on where the child runs).
fn without_tid_lines(out: &str) -> String {
    out.lines().filter(|l| !l.starts_with("tid ")).map(|l| format!("{l}\n")).collect()
}

/// The threads whose tid changed, by name.
fn changed_tids(out: &str) -> Vec<&str> {
    out.lines().filter_map(|l| l.strip_prefix("tid ")?.strip_suffix(" changed")).collect()
}

fn threads_carried(name: &str, extra: &[&str]) -> (String, String) {
    let Some(c) = Cluster::new(name) else { return (String::new(), String::new()) };
    let prog = compile_mt(&c);
    let (mut parent, ppid) = c.target_in(&c.hosts.a, "mt", &[prog.to_str().unwrap()]);
    // 9, and the spawner's short-lived one now and then.
    assert!((9..=10).contains(&mitosis_sys::procfs::thread_count(ppid).unwrap()));
    let seed = c.prepare_a(ppid, "mt");
    assert_eq!(seed["source_pid"], ppid);
    let out = c.resume_on_b_with_args("mt", "check\n", extra);
    // The seed goes on unharmed, and reports the same.
    parent.send("check\n");
    let expected = parent.finish(STEP);
    assert_eq!(expected.code(), Some(0), "{expected}");
    for t in THREADS {
        assert!(expected.stdout.lines().any(|l| l == format!("{t} ok")), "the seed's {t} thread: {expected}");
    }
    assert!(expected.stdout.contains("tasks 9\n") && expected.stdout.ends_with("main ok\njoined 8\n"), "{expected}");
    assert!(changed_tids(&expected.stdout).is_empty(), "{expected}");
    assert_eq!(without_tid_lines(&out.stdout), without_tid_lines(&expected.stdout), "the child's threads: {out}\n{}", c.logs());
    assert_eq!(out.code(), Some(0), "{out}");
    (out.stdout, c.logs())
}

/// In a container of its own (a PID namespace), every thread but the
/// leader (the container's process 2) keeps its tid.
#[test]
fn threads_resume_in_a_container_with_their_tids() {
    let (out, logs) = threads_carried("mt-ct", &[]);
    if out.is_empty() {
        return;
    }
    assert_eq!(changed_tids(&out), ["main"], "{out}\n{logs}");
}

/// Without a container the seed's tids are taken on this machine (the seed
/// runs here, in another network namespace): each thread gets a fresh tid,
/// and glibc's cached tids are rewritten (pthread_kill works, above).
#[test]
fn threads_resume_without_a_container() {
    let (out, logs) = threads_carried("mt-noct", &["--no-container"]);
    if out.is_empty() {
        return;
    }
    assert_eq!(changed_tids(&out).len(), 9, "{out}\n{logs}");
}

/// The suite's venv Python (it has numpy), or `None` after saying why;
/// panics in CI, which sets it up.
fn venv_python() -> Option<String> {
    let found = mitosis_bench::functions::Suite::locate(None, None).map(|s| s.python);
    match found {
        Ok(p) => Some(p.to_string_lossy().into_owned()),
        Err(e) if mitosis_testkit::in_ci() => panic!("the suite's venv is not set up in CI: {e:#}"),
        Err(e) => {
            mitosis_testkit::skip(format!("the suite's venv is not set up: {e:#}"));
            None
        }
    }
}

/// Python worker threads (`threading`) keep counting in the child from
/// where they were at the prepare, each under its own name.
const PY_COUNTERS: &str = r#"
import os, sys, threading, time
counts = [0] * 4
stop = False
def work(i):
    n = 0
    while not stop:
        n += 1
        counts[i] = n
        if n % 500 == 0:
            time.sleep(0.001)
workers = [threading.Thread(target=work, args=(i,), name="counter-%d" % i) for i in range(4)]
for t in workers:
    t.start()
while min(counts) < 1000:
    time.sleep(0.01)
print("ready", os.getpid(), flush=True)
sys.stdin.readline()
before = list(counts)
time.sleep(0.3)
after = list(counts)
names = sorted(t.name for t in threading.enumerate())
stop = True
for t in workers:
    t.join()
print("went on from where they were:", min(before) >= 1000)
print("still counting:", all(a > b for a, b in zip(after, before)))
print("threads:", names)
print("joined:", threading.active_count())
"#;

#[test]
fn python_threads_go_on_counting() {
    let Some(python) = venv_python() else { return };
    let Some(c) = Cluster::new("mt-py") else { return };
    let (mut parent, ppid) = c.target_in(&c.hosts.a, "python", &[&python, "-c", PY_COUNTERS]);
    let seed = c.prepare_a(ppid, "py");
    assert_eq!(seed["threads"], 5, "{seed}");
    let out = c.resume_on_b_with("py", "go\n");
    parent.send("go\n");
    let expected = parent.finish(STEP);
    let want = "went on from where they were: True\nstill counting: True\n\
                threads: ['MainThread', 'counter-0', 'counter-1', 'counter-2', 'counter-3']\njoined: 1\n";
    assert_eq!(expected.stdout, want, "{expected}");
    assert_eq!(out.stdout, want, "{out}\n{}", c.logs());
    assert_eq!(out.code(), Some(0), "{out}");
}

/// numpy with OpenBLAS worker threads: the child's
/// matrix product, computed by those threads, is the seed's, bit for bit.
const PY_MATMUL: &str = r#"
import hashlib, os, sys, threading
import numpy as np
rng = np.random.default_rng(7)
a = rng.random((700, 700))
b = rng.random((700, 700))
warm = a @ b
print("ready", os.getpid(), flush=True)
sys.stdin.readline()
c = a @ b
print("digest", hashlib.sha256(c.tobytes()).hexdigest(), "same as before:", bool((c == warm).all()))
"#;

#[test]
fn numpy_with_openblas_threads() {
    let Some(python) = venv_python() else { return };
    let Some(c) = Cluster::new("mt-numpy") else { return };
    let (mut parent, ppid) = c.target_in(&c.hosts.a, "numpy", &[&python, "-c", PY_MATMUL]);
    let threads = mitosis_sys::procfs::thread_count(ppid).unwrap();
    // OpenBLAS caps its pool at the CPUs it sees: a worker per CPU but the caller.
    assert!(threads >= 2, "OpenBLAS started its threads: {threads}");
    let seed = c.prepare_a(ppid, "np");
    assert_eq!(seed["threads"].as_u64(), Some(threads as u64), "{seed}");
    let out = c.resume_on_b_with("np", "go\n");
    parent.send("go\n");
    let expected = parent.finish(STEP);
    assert!(expected.stdout.starts_with("digest ") && expected.stdout.ends_with("same as before: True\n"), "{expected}");
    assert_eq!(out.stdout, expected.stdout, "{out}\n{}", c.logs());
    assert_eq!(out.code(), Some(0), "{out}");
}

/// A multi-threaded seed prepared with `--copy` (the daemon keeps a copy of
/// its memory, no snapshot process), and a nested fork: a child of it on
/// host b, itself prepared there, has a child on host a. Every generation
/// checks its threads as the seed does.
#[test]
fn copied_and_nested_threads() {
    let Some(c) = Cluster::new("mt-nested") else { return };
    let prog = compile_mt(&c);
    let (mut parent, ppid) = c.target_in(&c.hosts.a, "mt", &[prog.to_str().unwrap()]);
    let sock_a = c.a.socket().to_str().unwrap().to_string();
    let out = c.cli(&["prepare", "--pid", &ppid.to_string(), "--id", "mtc", "--copy", "--json", "--socket", &sock_a]);
    assert_eq!(out.code(), Some(0), "{out}\n{}", c.logs());
    let seed: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert!(seed["copied_bytes"].as_u64().is_some_and(|b| b > 0), "{seed}");
    assert!(seed["threads"].as_u64().is_some_and(|n| (9..=10).contains(&n)), "{seed}");
    parent.send("check\n");
    let expected = parent.finish(STEP);
    assert_eq!(expected.code(), Some(0), "{expected}");
    let expected_child = without_tid_lines(&expected.stdout);

    // The first generation, on b, in a container: prepared again there
    // while its threads wait (by its host pid), before it is told to check.
    let child = c.resume_on_b("mtc");
    assert!(
        mitosis_testkit::wait_until(std::time::Duration::from_secs(10), || c.ps_on_b(false)["children"].as_array().is_some_and(|a| a.len() == 1)),
        "the child never ran: {}",
        c.logs()
    );
    let child_pid = c.only_child_on_b();
    assert!(mitosis_testkit::wait_until(std::time::Duration::from_secs(10), || {
        mitosis_sys::procfs::thread_count(child_pid).is_ok_and(|n| n >= 9)
    }));
    let nested = prepare_ok(c.b.socket(), child_pid, "mtn", &c);
    assert!(nested["threads"].as_u64().is_some_and(|n| (9..=10).contains(&n)), "{nested}");
    let grandchild = resume_proc(&c.b.addr(), "mtn", c.a.socket());
    // The grandchild first: the nested seed's snapshot lives in the child's
    // container, which goes when the child ends.
    for (who, mut p) in [("grandchild", grandchild), ("child", child)] {
        p.send("check\n");
        p.close_stdin();
        let out = p.finish(STEP);
        assert_eq!(out.code(), Some(0), "{who}: {out}\n{}", c.logs());
        assert_eq!(without_tid_lines(&out.stdout), expected_child, "{who}'s threads: {out}\n{}", c.logs());
    }
}

/// Prepares of a process whose spawner thread creates and joins a thread
/// all the time catch it anywhere: before, inside or after a clone, or
/// while the short-lived thread exits (then the seed has 10 threads). Every
/// child of every one of them checks its threads like the seed.
#[test]
fn prepares_catch_threads_being_created_and_exiting() {
    let Some(c) = Cluster::new("mt-churn") else { return };
    let prog = compile_mt(&c);
    let (mut parent, ppid) = c.target_in(&c.hosts.a, "mt", &[prog.to_str().unwrap()]);
    let ids: Vec<String> = (0..8).map(|i| format!("churn{i}")).collect();
    let counts: Vec<u64> = ids.iter().map(|id| c.prepare_a(ppid, id)["threads"].as_u64().unwrap()).collect();
    assert!(counts.iter().all(|n| (9..=10).contains(n)), "{counts:?}");
    parent.send("check\n");
    let expected = parent.finish(STEP);
    assert_eq!(expected.code(), Some(0), "{expected}");
    let expected_child = without_tid_lines(&expected.stdout);
    for (id, n) in ids.iter().zip(&counts) {
        let out = c.resume_on_b_with(id, "check\n");
        assert_eq!(out.code(), Some(0), "{id} ({n} threads): {out}\n{}", c.logs());
        assert_eq!(without_tid_lines(&out.stdout), expected_child, "{id} ({n} threads): {out}\n{}", c.logs());
    }
}

/// A seed that runs in a PID namespace of its own (as a function instance
/// in a container does) knows its threads by that namespace's tids: those
/// are what a child recreates, or rewrites in glibc where they are taken.
#[test]
fn threads_of_a_seed_in_its_own_pid_namespace() {
    let Some(c) = Cluster::new("mt-pidns") else { return };
    let prog = compile_mt(&c);
    // mt is process 2 of the new namespace (the shell is its init).
    let script = format!("{}; true", prog.display());
    let (mut parent, inside) = c.target_in(&c.hosts.a, "mt", &["unshare", "--pid", "--fork", "--mount-proc", "sh", "-c", &script]);
    let host_pid = host_pid_of(inside, "mt").expect("the seed's pid on this host");
    assert_ne!(host_pid, inside);
    let seed = c.prepare_a(host_pid, "mtns");
    assert!(seed["threads"].as_u64().is_some_and(|n| (9..=10).contains(&n)), "{seed}");
    let out = c.resume_on_b_with("mtns", "check\n");
    parent.send("check\n");
    let expected = parent.finish(STEP);
    assert_eq!(expected.code(), Some(0), "{expected}");
    assert_eq!(without_tid_lines(&out.stdout), without_tid_lines(&expected.stdout), "{out}\n{}", c.logs());
    assert_eq!(out.code(), Some(0), "{out}");
}

/// The host pid of the process named `comm` whose pid in its own (nested)
/// PID namespace is `inside`, and whose parent is a shell (the namespace's
/// init): a resumed child of another test, which has the seed's name and
/// may have the same pid in its container, is the daemon's child.
fn host_pid_of(inside: i32, comm: &str) -> Option<i32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let status = std::fs::read_to_string(e.path().join("status")).ok()?;
        let name = status.lines().find_map(|l| l.strip_prefix("Name:"))?.trim().to_string();
        let nspid: Vec<i32> = status.lines().find_map(|l| l.strip_prefix("NSpid:"))?.split_whitespace().filter_map(|p| p.parse().ok()).collect();
        let ppid = status.lines().find_map(|l| l.strip_prefix("PPid:"))?.trim().to_string();
        let parent = std::fs::read_to_string(format!("/proc/{ppid}/comm")).ok()?;
        (name == comm && nspid.len() >= 2 && nspid.last() == Some(&inside) && parent.trim() == "sh").then_some(pid)
    })
}
