//! Real, unmodified programs (CPython, C programs in tests/programs/) prepared
//! by pid on host a and resumed on host b; each checks its own state after
//! the restore.

#![forbid(unsafe_code)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// What `compute(n)` of the CPython script prints, computed independently.
fn python_expected(n: u64) -> String {
    let total: u64 = (0..100_000u64).filter(|i| i % n == 0).map(|i| (i * i) % 9973).sum();
    let sample = (12345u64 * 12345) % 9973;
    format!(
        r#"{{"n": {n}, "total": {total}, "entries": 100000, "sample": {sample}, "keys": ["k0", "k1", "k10"], "f": 1024}}"#
    )
}

const PY_SCRIPT: &str = r#"
import json, os, sys
state = {"k%d" % i: (i * i) % 9973 for i in range(100000)}
def compute(n):
    total = sum(v for k, v in state.items() if int(k[1:]) % n == 0)
    return {"n": n, "total": total, "entries": len(state), "sample": state["k12345"],
            "keys": sorted(state)[:3], "f": helper(10)}
def helper(k):
    return 2 ** k
print("ready", os.getpid(), flush=True)
line = sys.stdin.readline()
print(json.dumps(compute(int(line))), flush=True)
"#;

/// An unmodified CPython, prepared by pid while blocked in `sys.stdin.readline()`.
#[test]
fn cpython_prepared_by_pid() {
    let Some(python) = mitosis_testkit::real_python() else {
        mitosis_testkit::skip("no python3 interpreter found");
        return;
    };
    let Some(c) = Cluster::new("cpython") else { return };
    let py = python.to_str().unwrap();
    let (mut parent, ppid) = c.target_in(&c.hosts.a, "python", &[py, "-c", PY_SCRIPT]);
    wait_blocked_in_read_stdin(ppid);
    let seed = c.prepare_a(ppid, "py");
    assert_eq!(seed["source_pid"], ppid);

    for n in [7u64, 3] {
        let out = c.resume_on_b_with("py", &format!("{n}\n"));
        assert_eq!(out.code(), Some(0), "{out}\n{}", c.logs());
        assert_eq!(out.stdout, format!("{}\n", python_expected(n)), "{out}");
    }
    // The parent computes exactly the same from its own state.
    parent.send("7\n");
    let l = parent.expect_prefix("{", STEP);
    assert_eq!(l, python_expected(7));
    assert_eq!(parent.wait(STEP).code(), Some(0));
}

/// Starts `program <mode>` in host a, prepares it while blocked reading
/// stdin, and checks that a child on b and the parent both print `expected`
/// for `input`.
fn fpu_mode(name: &str, mode: &str, cflags: &[&str]) {
    let Some(c) = Cluster::new(name) else { return };
    let mut flags = vec!["-O2"];
    flags.extend_from_slice(cflags);
    flags.push("-lm");
    let prog = compile(&c.dir, "fpu", &flags);
    let (mut parent, ppid) = c.target_in(&c.hosts.a, "fpu", &[prog.to_str().unwrap(), mode]);
    wait_blocked_in_read_stdin(ppid);
    c.prepare_a(ppid, "fpu");

    for _ in 0..2 {
        let out = c.resume_on_b_with("fpu", "x\n");
        assert_eq!(out.stdout, "fpu ok\n", "fpu {mode} in the child: {out}\n{}", c.logs());
        assert_eq!(out.code(), Some(0), "{out}");
    }
    parent.send("x\n");
    parent.expect_prefix("fpu ok", STEP);
    assert_eq!(parent.wait(STEP).code(), Some(0));
}

#[test]
fn avx_registers_and_mxcsr_survive() {
    fpu_mode("fpu-avx", "avx", &["-mavx"]);
}

#[test]
fn avx512_registers_and_masks_survive() {
    if !(cpu_has("avx512f") && cpu_has("avx512bw")) {
        mitosis_testkit::skip("this CPU has no AVX-512");
        return;
    }
    fpu_mode("fpu-avx512", "avx512", &["-mavx"]);
}

#[test]
fn x87_register_stack_and_control_word_survive() {
    fpu_mode("fpu-x87", "x87", &["-mavx"]);
}

/// A double / long double computation under a non-default rounding mode,
/// half done before the prepare and finished in the child.
#[test]
fn x87_and_sse_computation_continues_after_resume() {
    let Some(c) = Cluster::new("fpu-compute") else { return };
    let prog = compile(&c.dir, "fpu", &["-O2", "-mavx", "-lm"]);
    // The same program run start to end with no mitosis involved.
    let reference =
        Command::new("sh").arg("-c").arg(format!("echo 300000 | {} compute", prog.display())).output().unwrap();
    let reference = String::from_utf8(reference.stdout).unwrap();
    let reference = reference.lines().find(|l| l.starts_with("compute ")).expect("reference result").to_string();

    let (mut parent, ppid) = c.target_in(&c.hosts.a, "compute", &[prog.to_str().unwrap(), "compute"]);
    wait_blocked_in_read_stdin(ppid);
    c.prepare_a(ppid, "compute");
    let out = c.resume_on_b_with("compute", "300000\n");
    assert_eq!(out.code(), Some(0), "{out}\n{}", c.logs());
    assert_eq!(out.stdout, format!("{reference}\n"), "{out}");
    parent.send("300000\n");
    assert_eq!(parent.expect_prefix("compute ", STEP), reference);
}

/// A fault whose aligned window starts on a `PROT_NONE` page of the seed
/// (here a guard page made with mprotect; in real programs e.g. the guard page
/// of Rust's signal stack, which lands there with randomized layouts).
#[test]
fn prot_none_page_at_the_start_of_a_fault_window() {
    guarded("guard", &[], &[]);
}

/// A guard region (`MADV_GUARD_INSTALL`) in the middle of the seed's memory
/// is a guard region in the child, and an eager resume, which streams every
/// page in, does not try to read it (its snapshot cannot be read there).
#[test]
fn guard_region_is_a_guard_again_and_has_no_pages_to_fetch() {
    guarded("guard-region", &["region"], &["--eager"]);
}

fn guarded(name: &str, args: &[&str], resume: &[&str]) {
    let Some(c) = Cluster::new(name) else { return };
    let prog = compile(&c.dir, "guard", &["-O2"]);
    let mut argv = vec![prog.to_str().unwrap()];
    argv.extend_from_slice(args);
    let (mut parent, ppid) = c.target_in(&c.hosts.a, "guard", &argv);
    wait_blocked_in_read_stdin(ppid);
    c.prepare_a(ppid, "guard");

    let out = c.resume_on_b_with_args("guard", "go\n", resume);
    parent.send("go\n");
    let expected = parent.expect_prefix("guard ok ", STEP);
    assert_eq!(out.stdout, format!("{expected}\n"), "{out}\n{}", c.logs());
    assert_eq!(out.code(), Some(0), "{out}");
}

/// Signal mask, dispositions, handler flags and the alternate signal stack
/// are the same in the child as in the parent (as after fork(2)), and a
/// handler runs on the same kind of stack. A blocked, pending SIGTRAP with a
/// handler survives in both (a tracer's traps must not reset the handler).
fn signal_state(name: &str, mode: &str) {
    let Some(c) = Cluster::new(name) else { return };
    let prog = compile(&c.dir, "signals", &["-O2"]);
    let (mut parent, ppid) = c.target_in(&c.hosts.a, "signals", &[prog.to_str().unwrap(), mode]);
    wait_blocked_in_read_stdin(ppid);
    c.prepare_a(ppid, "sig");
    let input = "state\nraise\nraise\ntrap\nexit\n";
    let out = c.resume_on_b_with("sig", input);
    parent.send(input);
    let expected = parent.finish(STEP);
    assert_eq!(expected.code(), Some(0), "{expected}");
    // The seed kept its SIGTRAP handler and pending SIGTRAP through the
    // prepare's injected calls, and reports them.
    assert!(expected.stdout.contains("trap pending 1\ntrap handled 2\n"), "{expected}");
    assert_eq!(out.stdout, expected.stdout, "the child's signal state differs from its parent's: {out}\n{}", c.logs());
    assert_eq!(out.code(), Some(0), "{out}");
}

#[test]
fn signal_state_and_handler_on_an_alternate_stack() {
    signal_state("sig-alt", "altstack");
}

#[test]
fn signal_handler_without_an_alternate_stack() {
    signal_state("sig-noalt", "noaltstack");
}

/// mmap-level operations in the child on memory it has not faulted in yet:
/// the pager must follow them (zeros after MADV_DONTNEED and munmap, content
/// moving with mremap) and serve a local fork() and concurrent threads; the
/// brk heap keeps its content and can grow and shrink (mm fields restored).
#[test]
fn memory_operations_on_untouched_memory_in_the_child() {
    let Some(c) = Cluster::new("memops") else { return };
    let prog = compile(&c.dir, "memops", &["-O2", "-pthread"]);
    let (mut parent, ppid) = c.target_in(&c.hosts.a, "memops", &[prog.to_str().unwrap()]);
    wait_blocked_in_read_stdin(ppid);
    c.prepare_a(ppid, "memops");
    let input = "madvise\nmremap\nremap\nfork\nthreads\nexec\nverify\nbrk\nexit\n";
    let out = c.resume_on_b_with("memops", input);
    assert_eq!(out.code(), Some(0), "{out}\n{}", c.logs());
    let expected = "madvise zeros=1\nmremap moved=1 old-place-zeros=1\nremap zeros=1\n\
                    fork child-verified=1 status=0 parent-verified=1\nthreads verified=1\nexec works\n\
                    exec status=0\nverify ok=1\nbrk grown=1 ok=1 shrunk=1 top=";
    assert!(out.stdout.starts_with(expected), "{out}\n{}", c.logs());
    parent.send(input);
    let p = parent.finish(STEP);
    assert_eq!(out.stdout, p.stdout, "the child and its parent must print the same (brk top included)");
}

/// The same operations in a child whose memory this host's page cache
/// already holds (another child read all of it): each page is then mapped
/// from the cache, shared, and the pager must still follow the child (zeros
/// after MADV_DONTNEED even though the cache holds the seed's page, content
/// moving with mremap, a local fork, brk growing past a heap mapped from
/// the cache), and the first child's pages never change under the second.
#[test]
fn memory_operations_on_memory_shared_through_the_page_cache() {
    let Some(c) = Cluster::new("memops-shared") else { return };
    let prog = compile(&c.dir, "memops", &["-O2", "-pthread"]);
    let (mut parent, ppid) = c.target_in(&c.hosts.a, "memops", &[prog.to_str().unwrap()]);
    wait_blocked_in_read_stdin(ppid);
    c.prepare_a(ppid, "memops");
    let mut reader = c.resume_on_b("memops");
    assert_eq!(reader.ask("read", "read "), "read ok=1", "{}", c.logs());
    let input = "madvise\nmremap\nremap\nfork\nthreads\nexec\nverify\nbrk\nread\nexit\n";
    let out = c.resume_on_b_with("memops", input);
    assert_eq!(out.code(), Some(0), "{out}\n{}", c.logs());
    parent.send(input);
    let p = parent.finish(STEP);
    assert_eq!(out.stdout, p.stdout, "the child and its parent must print the same\n{}", c.logs());
    assert!(out.stdout.starts_with("madvise zeros=1\nmremap moved=1 old-place-zeros=1\nremap zeros=1\n"), "{out}");
    assert!(out.stdout.ends_with("read ok=0\n"), "regions 0 and 2 read zero after madvise and remap: {out}");
    assert_eq!(reader.ask("read", "read "), "read ok=1", "the other child's operations never reach this one's pages");
    reader.send("exit\n");
    assert_eq!(reader.finish(STEP).code(), Some(0));
}

/// Prepared in the middle of a computation, between two instructions of a
/// loop whose state lives in registers: the child finishes the computation
/// with exactly the parent's result.
#[test]
fn prepared_in_the_middle_of_a_computation() {
    let Some(c) = Cluster::new("busy") else { return };
    let prog = compile(&c.dir, "busy", &["-O2"]);
    let (mut parent, ppid) = c.target_in(&c.hosts.a, "busy", &[prog.to_str().unwrap(), "1200000000"]);
    std::thread::sleep(Duration::from_millis(100));
    let stat = std::fs::read_to_string(format!("/proc/{ppid}/syscall")).unwrap_or_default();
    assert!(stat.starts_with("running"), "the program must be computing, not in a system call: {stat:?}");
    c.prepare_a(ppid, "busy");
    let child = c.resume_on_b("busy");
    let theirs = parent.expect_prefix("busy ", STEP);
    let mut child = child;
    let mine = child.expect_prefix("busy ", STEP);
    assert_eq!(mine, theirs, "\n{}", c.logs());
    child.close_stdin();
    let out = child.finish(STEP);
    assert_eq!(out.code(), Some(0), "{out}");
}

/// Prepared while blocked in a waiting system call that is restarted in
/// the child (or returns EINTR there, which the program handles).
fn blocked_in(c: &Cluster, prog: &std::path::Path, mode: &str) -> Duration {
    let (mut parent, ppid) = c.target_in(&c.hosts.a, mode, &[prog.to_str().unwrap(), mode]);
    let ready = Instant::now();
    wait_blocked_in_syscall(ppid);
    let id = format!("wait-{mode}");
    c.prepare_a(ppid, &id);
    let out = c.resume_on_b_with(&id, "x\n");
    let took = ready.elapsed();
    assert_eq!(out.code(), Some(0), "{mode}: {out}\n{}", c.logs());
    let last = out.lines().last().map(|l| l.to_string()).unwrap_or_default();
    assert_eq!(last, format!("{mode} ok x"), "{mode}: {out}");
    parent.send("x\n");
    let p = parent.finish(STEP);
    assert_eq!(p.stdout, out.stdout, "{mode}: the child and its parent must print the same");
    took
}

#[test]
fn blocked_in_poll_or_select() {
    let Some(c) = Cluster::new("waits-io") else { return };
    let prog = compile(&c.dir, "waits", &["-O2"]);
    for mode in ["poll", "poll-timeout", "ppoll", "select", "pselect"] {
        blocked_in(&c, &prog, mode);
    }
}

#[test]
fn blocked_in_a_sleep() {
    let Some(c) = Cluster::new("waits-sleep") else { return };
    let prog = compile(&c.dir, "waits", &["-O2"]);
    for mode in ["nanosleep", "clock-abs", "futex"] {
        let took = blocked_in(&c, &prog, mode);
        // The child sleeps until (about) the parent's deadline, 1.5 s after start.
        assert!(took >= Duration::from_millis(1300), "{mode}: the child woke early ({took:?})");
    }
}

/// Open files, private file mappings (pages written by the process, pages
/// only read), a file replaced after the prepare, an unbound socket, and a
/// symbolic link and a device node held after their names were removed.
#[test]
fn files_descriptors_and_file_mappings() {
    let Some(c) = Cluster::new("files") else { return };
    let prog = compile(&c.dir, "files", &["-O2"]);
    let data_dir = c.dir.path().join("data");
    std::fs::create_dir(&data_dir).unwrap();
    let text: String = (0..1000).map(|i| format!("line {i}\n")).collect();
    std::fs::write(data_dir.join("data.txt"), &text).unwrap();
    let bytes = |n: usize, salt: u32| -> Vec<u8> {
        (0..n as u32).map(|i| (i.wrapping_mul(2654435761) >> 13 ^ salt) as u8).collect()
    };
    std::fs::write(data_dir.join("map.bin"), bytes(1 << 20, 1)).unwrap();
    std::fs::write(data_dir.join("replaced.bin"), bytes(256 << 10, 2)).unwrap();

    let (mut parent, ppid) = c.target_in(&c.hosts.a, "files", &[prog.to_str().unwrap(), data_dir.to_str().unwrap()]);
    wait_blocked_in_read_stdin(ppid);
    let seed = c.prepare_a(ppid, "files");
    // Its unbound Unix datagram socket is carried (its whole state is in the seed).
    let closed = seed["closed_fds"].as_array().unwrap();
    assert!(!closed.iter().any(|e| e[1].as_str().unwrap_or("").starts_with("socket:")), "no socket is closed in children: {seed}");
    // replaced.bin is replaced by another file (new inode) after the prepare.
    let tmp = data_dir.join("replaced.new");
    std::fs::write(&tmp, bytes(256 << 10, 3)).unwrap();
    std::fs::rename(&tmp, data_dir.join("replaced.bin")).unwrap();

    let out = c.resume_on_b_with("files", "check\n");
    assert_eq!(out.code(), Some(0), "{out}\n{}", c.logs());
    parent.send("check\n");
    let theirs = parent.expect_prefix("check ", STEP);
    // The removed link and device node are made again, and removed again, for the child.
    assert!(theirs.ends_with("socket=open link=symlink:data.txt gone=symlink:data.txt node=1:3:20640:3:none"), "{theirs}");
    assert!(!closed.iter().any(|e| e[1].as_str().unwrap_or("").ends_with("(deleted)")), "no deleted link or node is closed in children: {seed}");
    assert_eq!(out.stdout, format!("{theirs}\n"), "the child sees what its parent sees: {out}");
}

/// A file mapping longer than its file (its tail would be SIGBUS in the
/// seed): a copy-mode prepare copies what can be read instead of failing,
/// and the child reads the backed page as its parent does. (Python's numpy
/// and Pillow map such files; their copy-mode prepares failed with EIO.)
#[test]
fn copy_mode_prepare_of_a_mapping_past_its_file_end() {
    let Some(c) = Cluster::new("pasteof") else { return };
    let prog = compile(&c.dir, "pasteof", &["-O2"]);
    let file = c.dir.path().join("one-page.bin");
    std::fs::write(&file, (0..4096u32).map(|i| (i * 7 % 253) as u8).collect::<Vec<u8>>()).unwrap();
    let (mut parent, ppid) = c.target_in(&c.hosts.a, "pasteof", &[prog.to_str().unwrap(), file.to_str().unwrap()]);
    wait_blocked_in_read_stdin(ppid);
    let sock = c.a.socket().to_str().unwrap().to_string();
    let out = c.cli(&["prepare", "--pid", &ppid.to_string(), "--id", "pasteof", "--copy", "--json", "--socket", &sock]);
    assert_eq!(out.code(), Some(0), "{out}\n{}", c.logs());
    parent.send("check\n");
    let theirs = parent.expect_prefix("check ", STEP);
    let child = c.resume_on_b_with("pasteof", "check\n");
    assert_eq!(child.code(), Some(0), "{child}\n{}", c.logs());
    assert_eq!(child.stdout, format!("{theirs}\n"), "the child reads the mapped page as its parent does");
}
