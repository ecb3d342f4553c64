//! End-to-end tests of the Python package `mitosis`: Python programs prepare
//! themselves, resume children and run MITOSIS function scripts across two
//! test hosts (network namespaces) with a daemon each.
//!
//! What they need:
//! * root (they build network namespaces): otherwise each test prints
//!   `skipped: needs root` and passes, like the other end-to-end tests;
//! * the package installed in `<repo>/.venv` and up to date: run
//!   `scripts/setup-python` before `cargo test` (the tests check it with
//!   `scripts/setup-python --check` and fail saying so otherwise);
//! * the `mitosis` binary: `$MITOSIS_BIN`, or `mitosis` in the directory of
//!   this test's profile (`target/release/mitosis` for
//!   `target/release/deps/python_api-<hash>`). `cargo test --workspace`
//!   builds it; with `-p mitosis-python` alone, build it first
//!   (`cargo build --release -p mitosis-cli`).
//!
//! Every process a test starts is in its own process group, killed on drop,
//! and every wait has a timeout, so a failing test cleans up after itself.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use mitosis_testkit::{require_root, wait_until, write_key, Daemon, Finished, Host, Proc, TestDir, TwoHosts, STEP};

/// Generous bound for one step (a prepare, a resume, a Python start).
const KEY: &str = "mitosis-python-test-cluster-key-0123";

/// The repository's root.
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repository root")
}

/// The `mitosis` binary under test (see the module doc).
fn mitosis_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("MITOSIS_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/python_api-<hash> -> target/<profile>/mitosis
    let bin = exe.parent().and_then(Path::parent).map(|d| d.join("mitosis")).expect("test executable's directory");
    assert!(
        bin.is_file(),
        "no mitosis binary at {} (build it: `cargo build --release -p mitosis-cli`, or set MITOSIS_BIN)",
        bin.display()
    );
    bin
}

/// The interpreter of `<repo>/.venv`, once `scripts/setup-python --check`
/// says the package there is installed and up to date; panics otherwise.
fn python() -> PathBuf {
    static CHECKED: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    CHECKED
        .get_or_init(|| {
            let out = Command::new(repo().join("scripts/setup-python"))
                .arg("--check")
                .output()
                .map_err(|e| format!("running scripts/setup-python --check: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "the Python package is not installed or out of date: run scripts/setup-python first\n{}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            Ok(repo().join(".venv/bin/python"))
        })
        .clone()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Two hosts with a daemon each. Fields drop in order: daemons first (their
/// children die with them), then the namespaces, then the directory.
struct Cluster {
    a: Daemon,
    b: Daemon,
    hosts: TwoHosts,
    dir: TestDir,
    python: PathBuf,
}

impl Cluster {
    /// A cluster for test `name`, or `None` (after saying why) without root.
    fn new(name: &str) -> Option<Cluster> {
        if !require_root() {
            return None;
        }
        let python = python();
        let bin = mitosis_bin();
        let dir = TestDir::new(name);
        let hosts = TwoHosts::new().expect("creating test hosts");
        let key = write_key(&dir, "key", KEY);
        let a = Daemon::start(&bin, &hosts.a, &dir, "a", &key).expect("starting daemon a");
        let b = Daemon::start(&bin, &hosts.b, &dir, "b", &key).expect("starting daemon b");
        Some(Cluster { a, b, hosts, dir, python })
    }

    fn sock_a(&self) -> String {
        self.a.socket().to_str().unwrap().to_string()
    }

    fn sock_b(&self) -> String {
        self.b.socket().to_str().unwrap().to_string()
    }

    /// Writes `text` to `<dir>/<name>` (creating directories) and returns its path.
    fn write(&self, name: &str, text: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    }

    /// Starts `python <args>` inside `host`.
    fn python_in(&self, host: &Host, name: &str, args: &[&str]) -> Proc {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &host.ns]).arg(&self.python).args(args);
        Proc::spawn(name, &mut cmd)
    }

    /// Starts `mitosis resume --from <a> --id <id> --socket <b>` inside host b.
    fn cli_resume_on_b(&self, id: &str) -> Proc {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.hosts.b.ns])
            .arg(mitosis_bin())
            .args(["resume", "--from", &self.a.addr(), "--id", id, "--socket", &self.sock_b()]);
        Proc::spawn(&format!("mitosis resume {id}"), &mut cmd)
    }

    /// Both daemons' logs, for failure messages.
    fn logs(&self) -> String {
        format!("--- daemon a log ---\n{}\n--- daemon b log ---\n{}", tail(&self.a.log()), tail(&self.b.log()))
    }
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// `key=value` from a line of space-separated fields.
fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|f| f.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
}

/// A Python program that builds some state, prepares itself with
/// `fork_prepare` and says which side it is on, with a digest of its state.
/// Children exit with 7; the parent changes its state, then answers `state`
/// lines on stdin until `exit`. With a fourth argument `wait`, each child
/// first waits for a line `go` on its stdin (the resumer's).
const SELF_PREPARE_PY: &str = r#"
import os, sys
import mitosis

sock, seed_id, pin = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
wait = sys.argv[4:] == ["wait"]
table = {i: i * 7 for i in range(100_000)}

def make_counter():
    n = 0
    def bump():
        nonlocal n
        n += 1
        return n
    return bump

bump = make_counter()
for _ in range(41):
    bump()
# stdout is a pipe, so this stays in Python's buffer: fork_prepare must flush
# it, or every child prints it again.
print("buffered line before prepare")
me = mitosis.fork_prepare(seed_id, pin=pin, socket=sock)
state = "len=%d sum=%d counter=%d" % (len(table), sum(table.values()), bump())
if me.is_child:
    if wait:
        got = os.read(0, 64)
        if got != b"go\n":
            print("child got %r instead of go" % got, flush=True)
            os._exit(9)
    print("child is_child=%s is_parent=%s pid=%d getpid=%d seed=%s host=%s generation=%d %s"
          % (me.is_child, me.is_parent, me.pid, os.getpid(), me.seed_id, me.seed_host, me.generation, state), flush=True)
    os._exit(7)
print("parent is_child=%s getpid=%d seed=%s generation=%d pinned=%s source_pid=%d mapped=%d %s"
      % (me.is_child, os.getpid(), me.seed_id, me.generation, me.pinned, me.source_pid, me.mapped_bytes, state), flush=True)
table.clear()
for line in sys.stdin:
    if line.strip() == "state":
        print("parent-state len=%d counter=%d" % (len(table), bump()), flush=True)
    elif line.strip() == "exit":
        break
"#;

/// Resumes a child with `mitosis.resume()` (in a container, or not with
/// `plain`) and waits for it. With `release`, the child's stdin is a pipe of
/// ours into which a thread writes `go` while the main thread is in `wait()`:
/// a child that waits for it ends only if `wait()` released the GIL.
const RESUME_PY: &str = r#"
import json, os, sys, threading, time
import mitosis

host, seed_id, sock, mode = sys.argv[1:5]
release = sys.argv[5:] == ["release"]
if release:
    r_end, w_end = os.pipe()
    os.dup2(r_end, 0)
try:
    if mode == "container":
        r = mitosis.resume(host, seed_id, socket=sock, memory=512 << 20, cpus=1.5, pids=64, hostname="py-child")
    else:
        r = mitosis.resume(host, seed_id, socket=sock, container=False)
        try:
            mitosis.resume(host, seed_id, socket=sock, container=False, memory=1 << 30)
            raise SystemExit("limits without a container were accepted")
        except ValueError:
            pass
except mitosis.MitosisError as e:
    print("error %s kind=%s exit_code=%d isinstance=%s" % (type(e).__name__, e.kind, e.exit_code, isinstance(e, mitosis.MitosisError)), flush=True)
    sys.exit(e.exit_code)
print("started pid=%d container=%s total_us=%d" % (r.pid, r.container, r.timings["total_us"]), flush=True)
if release:
    def go():
        time.sleep(0.05)
        os.write(w_end, b"go\n")
    threading.Thread(target=go).start()
end = r.wait()
assert r.wait() == end
print("ended " + json.dumps(end, sort_keys=True), flush=True)
"#;

/// Tries `fork_resume` with each id in turn; reports each failure and goes on.
const IN_PLACE_PY: &str = r#"
import os, sys
import mitosis

host, sock = sys.argv[1:3]
print("resumer getpid=%d" % os.getpid(), flush=True)
for seed_id in sys.argv[3:]:
    try:
        mitosis.fork_resume(host, seed_id, socket=sock)
    except mitosis.MitosisError as e:
        print("error %s kind=%s exit_code=%d still getpid=%d" % (type(e).__name__, e.kind, e.exit_code, os.getpid()), flush=True)
print("fork_resume returned every time", flush=True)
sys.exit(3)
"#;

/// `seeds()`, `drop()` twice, `seeds()` again, and an unreachable daemon.
const DROP_PY: &str = r#"
import json, sys
import mitosis

sock, seed_id = sys.argv[1:3]
print("seeds " + json.dumps([[s["id"], s["pinned"]] for s in mitosis.seeds(socket=sock)]), flush=True)
mitosis.drop(seed_id, socket=sock)
print("seeds-after-drop " + json.dumps([s["id"] for s in mitosis.seeds(socket=sock)]), flush=True)
try:
    mitosis.drop(seed_id, socket=sock)
    print("dropped twice?!", flush=True)
except mitosis.SeedNotFound as e:
    print("drop-again %s kind=%s exit_code=%d" % (type(e).__name__, e.kind, e.exit_code), flush=True)
try:
    mitosis.seeds(socket=sock + ".missing")
except mitosis.Unavailable as e:
    print("no-daemon %s kind=%s exit_code=%d" % (type(e).__name__, e.kind, e.exit_code), flush=True)
"#;

/// Prints `[id, pinned]` of each seed.
const SEEDS_PY: &str = r#"
import json, sys
import mitosis
print(json.dumps([[s["id"], s["pinned"]] for s in mitosis.seeds(socket=sys.argv[1])]), flush=True)
"#;

/// The checks every child line of [`SELF_PREPARE_PY`] must pass.
fn check_child_line(line: &str, parent_pid: i32, generation: &str, host_a: &str) -> i32 {
    assert!(line.starts_with("child is_child=True is_parent=False "), "{line}");
    let pid: i32 = field(line, "pid").parse().unwrap();
    assert_eq!(field(line, "getpid"), pid.to_string(), "Child.pid must be the child's own pid: {line}");
    assert_ne!(pid, parent_pid, "{line}");
    assert_eq!(field(line, "seed"), "state", "{line}");
    assert_eq!(field(line, "host"), host_a, "{line}");
    assert_eq!(field(line, "generation"), generation, "{line}");
    // The state of the prepare instant, not the parent's cleared table.
    assert_eq!(field(line, "len"), "100000", "{line}");
    assert_eq!(field(line, "sum"), "34999650000", "{line}");
    assert_eq!(field(line, "counter"), "42", "the closure's counter goes on from the prepare point: {line}");
    pid
}

/// One pinned Python seed on host a; children on host b through the CLI,
/// through `mitosis.resume()` and (its error path) `fork_resume`; then
/// `drop`, after which resuming fails with `SeedNotFound` (66).
#[test]
fn children_on_another_host_see_the_prepared_state() {
    let Some(c) = Cluster::new("py-state") else { return };
    let prog = c.write("self_prepare.py", SELF_PREPARE_PY);
    let (sock_a, sock_b, addr_a) = (c.sock_a(), c.sock_b(), c.a.addr());

    // Children wait for a line `go` on their stdin.
    let mut parent = c.python_in(&c.hosts.a, "self-preparing parent", &[&prog, &sock_a, "state", "1", "wait"]);
    parent.expect_prefix("buffered line before prepare", STEP);
    let pline = parent.expect_prefix("parent ", STEP);
    let ppid = parent.pid();
    assert!(pline.starts_with("parent is_child=False "), "{pline}");
    assert_eq!(field(&pline, "source_pid"), ppid.to_string());
    assert_eq!(field(&pline, "pinned"), "True");
    assert_eq!(field(&pline, "len"), "100000");
    assert_eq!(field(&pline, "counter"), "42");
    assert!(field(&pline, "mapped").parse::<u64>().unwrap() > 1 << 20, "{pline}");
    let generation = field(&pline, "generation").to_string();

    // A child through the command line, on host b, in a lean container (the
    // default): pid 2 there.
    let mut child = c.cli_resume_on_b("state");
    child.send("go\n");
    let out = child.finish(STEP);
    assert_eq!(out.code(), Some(7), "the child's own exit status: {out}\n{}", c.logs());
    assert_eq!(out.lines().len(), 1, "the parent's buffered output must not be printed again: {out}");
    let pid = check_child_line(out.lines()[0], ppid, &generation, &addr_a);
    assert_eq!(pid, 2, "Child.pid is the child's own view, pid 2 of its container: {out}");

    // `mitosis resume --in-place`: the resuming process becomes the child.
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &c.hosts.b.ns]).arg(mitosis_bin()).args([
        "resume", "--in-place", "--from", &addr_a, "--id", "state", "--socket", &sock_b,
    ]);
    let mut resumer = Proc::spawn("mitosis resume --in-place", &mut cmd);
    resumer.send("go\n");
    let resumer_pid = resumer.pid(); // `ip netns exec` execs, it does not fork
    let out = resumer.finish(STEP);
    assert_eq!(out.code(), Some(7), "{out}\n{}", c.logs());
    let pid = check_child_line(out.line("child "), ppid, &generation, &addr_a);
    assert_eq!(pid, resumer_pid, "in place: the resumer itself is the child: {out}");

    // Children through mitosis.resume(), from a Python program on host b,
    // in a container and without: a child writes to that program's stdout,
    // and is released by a thread of that program while its main thread is
    // in wait().
    let resumer = c.write("resume.py", RESUME_PY);
    for mode in ["container", "plain"] {
        let args = [resumer.as_str(), &addr_a, "state", &sock_b, mode, "release"];
        let out = c.python_in(&c.hosts.b, &format!("python resume ({mode})"), &args).finish(STEP);
        assert_eq!(out.code(), Some(0), "{out}\n{}", c.logs());
        assert_eq!(out.lines().len(), 3, "{out}");
        let child_pid = check_child_line(out.line("child "), ppid, &generation, &addr_a);
        let started = out.line("started ");
        let host_pid: i32 = field(started, "pid").parse().unwrap();
        if mode == "container" {
            assert_eq!(child_pid, 2, "{out}");
            assert_ne!(field(started, "container"), "None", "Resumed.container names it: {out}");
        } else {
            assert_eq!(host_pid, child_pid, "Resumed.pid is the child's pid: {out}");
            assert_eq!(field(started, "container"), "None", "{out}");
        }
        let end: serde_json::Value = serde_json::from_str(&out.line("ended ")["ended ".len()..]).unwrap();
        assert_eq!(end["status"], 7, "{out}");
        assert_eq!(end["exit_code"], 7, "{out}");
        assert_eq!(end["out_of_memory"], false, "{out}");
        assert!(end["signal"].is_null() && end["killed_by_mitosis"].is_null(), "{out}");
        // Pages came in: by faults, or pushed ahead of them once the first
        // child recorded the seed's working set.
        assert!(end["pager"]["pages_fetched"].as_u64().unwrap() > 0, "the child's pages came from host a: {out}");
        assert!(end["pager"]["bytes_fetched"].as_u64().unwrap() > 1 << 20, "100k entries are over 1 MiB: {out}");
    }

    // fork_resume of an unknown seed raises and leaves the process as it was.
    let in_place = c.write("in_place.py", IN_PLACE_PY);
    let out = c.python_in(&c.hosts.b, "fork_resume", &[&in_place, &addr_a, &sock_b, "no-such-seed"]).finish(STEP);
    assert_eq!(out.code(), Some(3), "{out}");
    let me = field(out.line("resumer "), "getpid").to_string();
    let err = out.line("error ");
    assert!(err.starts_with("error SeedNotFound kind=not_found exit_code=66 "), "{out}");
    assert_eq!(field(err, "getpid"), me);

    // The parent is still the parent, with its own (changed) state.
    parent.send("state\n");
    assert_eq!(parent.expect_prefix("parent-state", STEP), "parent-state len=0 counter=43");

    // drop(), then resuming fails with SeedNotFound / exit status 66.
    let dropper = c.write("drop.py", DROP_PY);
    let out = c.python_in(&c.hosts.a, "python drop", &[&dropper, &sock_a, "state"]).finish(STEP);
    assert_eq!(out.code(), Some(0), "{out}");
    assert_eq!(out.line("seeds "), r#"seeds [["state", true]]"#);
    assert_eq!(out.line("seeds-after-drop "), "seeds-after-drop []");
    assert_eq!(out.line("drop-again "), "drop-again SeedNotFound kind=not_found exit_code=66");
    assert_eq!(out.line("no-daemon "), "no-daemon DaemonUnreachable kind=daemon_unreachable exit_code=69");

    let out = c.python_in(&c.hosts.b, "python resume after drop", &[&resumer, &addr_a, "state", &sock_b, "container"]).finish(STEP);
    assert_eq!(out.code(), Some(66), "{out}");
    assert_eq!(out.stdout, "error SeedNotFound kind=not_found exit_code=66 isinstance=True\n", "{out}");
    let out = c.cli_resume_on_b("state").finish(STEP);
    assert_eq!(out.code(), Some(66), "{out}");
    assert!(out.stdout.is_empty(), "{out}");

    parent.send("exit\n");
    let out = parent.finish(STEP);
    assert_eq!(out.code(), Some(0), "{out}");
}

/// `fork_prepare(pin=False)` ties the seed to the process: it goes when the
/// process exits. `pin=True` keeps it until dropped.
#[test]
fn unpinned_seed_goes_with_its_process_pinned_one_stays() {
    let Some(c) = Cluster::new("py-pin") else { return };
    let prog = c.write("self_prepare.py", SELF_PREPARE_PY);
    let seeds_py = c.write("seeds.py", SEEDS_PY);
    let sock_a = c.sock_a();
    let seeds = || {
        let out = c.python_in(&c.hosts.a, "seeds", &[&seeds_py, &sock_a]).finish(STEP);
        assert_eq!(out.code(), Some(0), "{out}");
        out.stdout.trim().to_string()
    };

    let mut tied = c.python_in(&c.hosts.a, "unpinned parent", &[&prog, &sock_a, "tied", "0"]);
    let mut pinned = c.python_in(&c.hosts.a, "pinned parent", &[&prog, &sock_a, "state", "1"]);
    tied.expect_prefix("buffered line before prepare", STEP);
    pinned.expect_prefix("buffered line before prepare", STEP);
    assert_eq!(field(&tied.expect_prefix("parent ", STEP), "pinned"), "False");
    let pline = pinned.expect_prefix("parent ", STEP);
    assert_eq!(field(&pline, "pinned"), "True");
    assert_eq!(seeds(), r#"[["state", true], ["tied", false]]"#);

    // While its process lives, the unpinned seed resumes like any other.
    let out = c.cli_resume_on_b("tied").finish(STEP);
    assert_eq!(out.code(), Some(7), "{out}\n{}", c.logs());

    for p in [&mut tied, &mut pinned] {
        p.send("exit\n");
    }
    assert_eq!(tied.wait_output(STEP).code(), Some(0));
    // (Only waited for: the pinned seed's snapshot is in this process group.)
    assert_eq!(pinned.wait_output(STEP).code(), Some(0));
    let mut last = String::new();
    let gone = wait_until(Duration::from_secs(10), || {
        last = seeds();
        last == r#"[["state", true]]"#
    });
    assert!(gone, "the unpinned seed must go with its process: {last}\n{}", c.logs());

    let out = c.cli_resume_on_b("tied").finish(STEP);
    assert_eq!(out.code(), Some(66), "{out}");
    let out = c.cli_resume_on_b("state").finish(STEP);
    assert_eq!(out.code(), Some(7), "the pinned seed outlives its process: {out}\n{}", c.logs());
    check_child_line(out.lines()[0], 0, field(&pline, "generation"), &c.a.addr());
}

/// MITOSIS's helloworld function script (seed 000, section 4), without its
/// `sys.path.append("../../common")` line.
const HELLOWORLD_PY: &str = r#"import os
import sys
import time
import mmap

from mitosis_wrapper import *

os.environ['OPENBLAS_NUM_THREADS'] = '1'
os.environ['MKL_NUM_THREADS'] = '1'


@tick_execution_time
def handler():
    print("hello world")


@mitosis_bench
def bench():
    handler()


if __name__ == '__main__':
    bench()
"#;

/// `(app, phase, ms)` of a timing line, checked against the wrapper's
/// contract: `^\[(?P<app>[^\]]+)-(?P<phase>cold|warm|prepare|parent|child|execution)\] duration: (?P<ms>[0-9]+\.[0-9]{3}) ms$`.
fn timing(line: &str) -> Option<(&str, &str, &str)> {
    let rest = line.strip_prefix('[')?;
    let close = rest.find(']')?;
    let (tag, tail) = (&rest[..close], &rest[close + 1..]);
    let (app, phase) = tag.rsplit_once('-')?;
    if app.is_empty() || !["cold", "warm", "prepare", "parent", "child", "execution"].contains(&phase) {
        return None;
    }
    let ms = tail.strip_prefix(" duration: ")?.strip_suffix(" ms")?;
    let (int, frac) = ms.split_once('.')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (digits(int) && frac.len() == 3 && digits(frac)).then_some((app, phase, ms))
}

#[test]
fn timing_lines_follow_the_contract() {
    assert_eq!(timing("[json-cold] duration: 12.345 ms"), Some(("json", "cold", "12.345")));
    assert_eq!(timing("[my-app-child] duration: 0.030 ms"), Some(("my-app", "child", "0.030")));
    for bad in [
        "[json-cold] duration: 12.34 ms",
        "[json-cold] duration: 12 ms",
        "[json-boot] duration: 1.000 ms",
        "[-cold] duration: 1.000 ms",
        "[json-cold] duration: 1.000 ms ",
        "[json-prepared] id=73",
    ] {
        assert_eq!(timing(bad), None, "{bad}");
    }
}

/// The phases of the timing lines in `out` (all for app `app`), and the
/// parsed `MITOSIS_PROFILE` records; every other line must be `others`.
fn phases(out: &Finished, app: &str, others: &[&str]) -> (Vec<String>, Vec<serde_json::Value>) {
    let (mut ph, mut profiles) = (Vec::new(), Vec::new());
    for l in out.lines() {
        if let Some((a, p, _)) = timing(l) {
            assert_eq!(a, app, "{out}");
            ph.push(p.to_string());
        } else if let Some(json) = l.strip_prefix("MITOSIS_PROFILE ") {
            let v: serde_json::Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {l}"));
            assert_eq!(v["app"], app, "{l}");
            assert!(v["ms"].as_f64().is_some(), "{l}");
            profiles.push(v);
        } else {
            assert!(others.contains(&l), "unexpected line {l:?}:\n{out}");
        }
    }
    (ph, profiles)
}

/// A MITOSIS function script runs unchanged (but for its path line) with
/// MITOSIS's flags: cold, warm and prepare in the parent, the child line in
/// a child resumed on the other host; `-run_once`; and the failures (no
/// daemon, several threads) exit with the error's code.
#[test]
fn mitosis_function_script_runs_with_the_wrapper() {
    let Some(c) = Cluster::new("py-wrapper") else { return };
    let script = c.write("helloworld/function.py", HELLOWORLD_PY);
    let sock_flag = format!("-socket={}", c.sock_a());

    let args = [script.as_str(), "-pin=1", "-handler_id=hw73", "-profile=1", "-exclude_execution=0", &sock_flag];
    // Kept until the end: the pinned seed's snapshot is in its process group.
    let mut parent = c.python_in(&c.hosts.a, "helloworld parent", &args);
    let out = parent.wait_output(STEP);
    assert_eq!(out.code(), Some(0), "{out}\n{}", c.logs());
    let (ph, prof_parent) = phases(&out, "helloworld", &["hello world", "[helloworld-prepared] id=hw73"]);
    assert_eq!(ph, ["execution", "cold", "execution", "warm", "prepare", "execution", "parent"], "{out}");
    let prof = &prof_parent;
    assert_eq!(out.lines().iter().filter(|l| **l == "hello world").count(), 3, "{out}");
    assert_eq!(out.line("[helloworld-prepared]"), "[helloworld-prepared] id=hw73");
    let prof_phases: Vec<&str> = prof.iter().map(|v| v["phase"].as_str().unwrap()).collect();
    assert_eq!(prof_phases, ["cold", "warm", "prepare", "parent"], "{out}");
    assert_eq!(prof[2]["seed_id"], "hw73", "{out}");
    assert_eq!(prof[2]["pinned"], true, "{out}");
    assert!(prof[2]["mapped_bytes"].as_u64().unwrap() > 0, "{out}");

    // The seed is pinned: it outlives the script, and children run the function once.
    for _ in 0..2 {
        let child = c.cli_resume_on_b("hw73").finish(STEP);
        assert_eq!(child.code(), Some(0), "{child}\n{}", c.logs());
        let (ph, prof) = phases(&child, "helloworld", &["hello world"]);
        assert_eq!(ph, ["execution", "child"], "only the child's run, nothing of the parent's: {child}");
        assert_eq!(prof.len(), 1, "{child}");
        assert_eq!(prof[0]["phase"], "child");
        assert_eq!(prof[0]["seed_id"], "hw73");
        assert_eq!(prof[0]["seed_host"], c.a.addr().as_str());
        assert_eq!(prof[0]["generation"], prof_parent[2]["generation"], "{child}");
    }

    // -run_once: the cold run only; nothing is prepared. --flag=value works too.
    let args = [script.as_str(), "--run_once=true", "-app_name=json", "-handler_id=once", &sock_flag];
    let out = c.python_in(&c.hosts.a, "run once", &args).finish(STEP);
    assert_eq!(out.code(), Some(0), "{out}");
    let (ph, prof) = phases(&out, "json", &["hello world"]);
    assert_eq!(ph, ["execution", "cold"], "{out}");
    assert!(prof.is_empty(), "no -profile, no profile lines: {out}");

    // Default flags but the socket: app name from the directory, unpinned, no parent run.
    let out = c.python_in(&c.hosts.a, "defaults", &[&script, &sock_flag]).finish(STEP);
    assert_eq!(out.code(), Some(0), "{out}");
    let (ph, _) = phases(&out, "helloworld", &["hello world", "[helloworld-prepared] id=73"]);
    assert_eq!(ph, ["execution", "cold", "execution", "warm", "prepare"], "{out}");

    // No daemon: a message on stderr and the error's exit code (69).
    let out = c.python_in(&c.hosts.a, "no daemon", &[&script, "-socket=/nonexistent/mitosis.sock"]).finish(STEP);
    assert_eq!(out.code(), Some(69), "{out}");
    assert!(
        out.stderr.contains("mitosis_wrapper: preparing seed '73'") && out.stderr.contains("/nonexistent/mitosis.sock"),
        "{out}"
    );

    // A function with a thread of its own is prepared like any other.
    let threaded = c.write(
        "threaded/function.py",
        &HELLOWORLD_PY.replace(
            "if __name__ == '__main__':\n",
            "import threading\nthreading.Thread(target=time.sleep, args=(5,), daemon=True).start()\n\nif __name__ == '__main__':\n",
        ),
    );
    let out = c.python_in(&c.hosts.a, "threaded", &[&threaded, &sock_flag]).finish(STEP);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(out.stdout.contains("[threaded-prepared] id=73"), "{out}");

    // -hang=1 keeps the process, hence its unpinned seed, until it is killed.
    let args = [script.as_str(), "-hang=1", "-handler_id=hanging", &sock_flag];
    let mut hanging = c.python_in(&c.hosts.a, "hanging parent", &args);
    while hanging.expect_prefix("", STEP) != "[helloworld-prepared] id=hanging" {}
    let child = c.cli_resume_on_b("hanging").finish(STEP);
    assert_eq!(child.code(), Some(0), "{child}\n{}", c.logs());
    assert_eq!(phases(&child, "helloworld", &["hello world"]).0, ["execution", "child"], "{child}");
    let seeds_py = c.write("seeds.py", SEEDS_PY);
    let seeds = || c.python_in(&c.hosts.a, "seeds", &[&seeds_py, &c.sock_a()]).finish(STEP).stdout;
    assert!(seeds().contains(r#"["hanging", false]"#), "{}", seeds());
    drop(hanging);
    assert!(wait_until(Duration::from_secs(10), || !seeds().contains("hanging")), "{}", seeds());
}

/// `fork_resume`: a Python process on host b becomes a child of a Python
/// seed of host a, keeping its pid.
///
/// (This once failed at `PR_SET_MM_MAP` with EBUSY: the restore plan compared
/// the process is killed. The restore plan (mitosis-restore `plan.rs`) sets
/// the executable when the seed's differs from the *daemon's* own; in place,
/// the process's executable is the resumer's (here python, the seed's too),
/// and the kernel refuses to replace an executable that is still mapped
/// (`mitosis resume --in-place` of the same Python seed works: its old
/// executable, mitosis, is not mapped in the seed). Run with `--ignored`
/// once that is fixed.
#[test]
fn fork_resume_turns_a_python_process_into_the_child() {
    let Some(c) = Cluster::new("py-in-place") else { return };
    let prog = c.write("self_prepare.py", SELF_PREPARE_PY);
    let mut parent = c.python_in(&c.hosts.a, "parent", &[&prog, &c.sock_a(), "state", "1"]);
    parent.expect_prefix("buffered line before prepare", STEP);
    let pline = parent.expect_prefix("parent ", STEP);
    let in_place = c.write("in_place.py", IN_PLACE_PY);
    let out = c.python_in(&c.hosts.b, "fork_resume", &[&in_place, &c.a.addr(), &c.sock_b(), "no-such-seed", "state"]).finish(STEP);
    assert_eq!(out.code(), Some(7), "{out}\n{}", c.logs());
    let me = field(out.line("resumer "), "getpid").to_string();
    assert!(out.line("error ").starts_with("error SeedNotFound "), "{out}");
    let pid = check_child_line(out.line("child "), parent.pid(), field(&pline, "generation"), &c.a.addr());
    assert_eq!(pid.to_string(), me, "resumed in place: the same process: {out}");
}

/// Runs `python -c <code> <args>` (no cluster, no root) and returns its output.
fn run_python(code: &str, args: &[&str], env: &[(&str, &str)]) -> Finished {
    let mut cmd = Command::new(python());
    cmd.arg("-c").arg(code).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    // A clean slate for the variables the wrapper sets.
    for var in ["OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"] {
        if !env.iter().any(|(k, _)| *k == var) {
            cmd.env_remove(var);
        }
    }
    Proc::spawn("python -c", &mut cmd).finish(STEP)
}

/// The wrapper's flags, gflags-style, and what its import does to the
/// environment; `mitosis_wrapper` is the same module under MITOSIS's name.
#[test]
fn wrapper_flags_and_import() {
    let code = r#"
import json, os, sys
import mitosis_wrapper
from mitosis_wrapper import *
import mitosis.wrapper
assert FLAGS is mitosis.wrapper.FLAGS and mitosis_bench is mitosis.wrapper.mitosis_bench
assert tick_execution_time is mitosis.wrapper.tick_execution_time
print("env " + json.dumps({k: os.environ.get(k) for k in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS", "NUMEXPR_NUM_THREADS")}, sort_keys=True))
print("argv " + json.dumps(FLAGS.as_dict(), sort_keys=True))
for args in (["/fn/json/function.py"],
             ["/fn/json/function.py", "-exclude_execution=0", "-handler_id=73", "-pin=1", "-profile=1", "-app_name=json"],
             ["f.py", "--pin=true", "-run_once", "-nohang", "-working_set=1M", "-touch_ratio", "50",
              "-unknown=3", "--other", "positional", "-app_name=a-b", "-profile=False", "-socket=/s"]):
    print("parsed " + json.dumps(parse_flags(args).as_dict(), sort_keys=True))
"#;
    let out = run_python(code, &["-handler_id=h1", "-pin=1"], &[("OMP_NUM_THREADS", "4"), ("MITOSIS_SOCKET", "/run/x.sock")]);
    assert_eq!(out.code(), Some(0), "{out}");
    let json = |prefix: &str| -> serde_json::Value { serde_json::from_str(&out.line(prefix)[prefix.len()..]).unwrap() };
    assert_eq!(
        json("env "),
        serde_json::json!({"OPENBLAS_NUM_THREADS": null, "MKL_NUM_THREADS": null, "OMP_NUM_THREADS": "4", "NUMEXPR_NUM_THREADS": null}),
        "the import leaves thread counts alone: multi-threaded processes are prepared"
    );
    let argv = json("argv ");
    assert_eq!((argv["handler_id"].as_str(), argv["pin"].as_i64()), (Some("h1"), Some(1)), "{argv}");
    assert_eq!(argv["socket"], "/run/x.sock", "$MITOSIS_SOCKET is the default socket: {argv}");
    let parsed: Vec<serde_json::Value> = out
        .lines()
        .iter()
        .filter_map(|l| l.strip_prefix("parsed "))
        .map(|j| serde_json::from_str(j).unwrap())
        .collect();
    assert_eq!(
        parsed[0],
        serde_json::json!({"handler_id": "73", "pin": 0, "profile": 0, "exclude_execution": 1, "app_name": "json",
            "run_once": 0, "working_set": 16 << 20, "touch_ratio": 100, "hang": 0, "socket": "/run/x.sock"}),
        "defaults; the app name is the script's directory"
    );
    assert_eq!(
        parsed[1],
        serde_json::json!({"handler_id": "73", "pin": 1, "profile": 1, "exclude_execution": 0, "app_name": "json",
            "run_once": 0, "working_set": 16 << 20, "touch_ratio": 100, "hang": 0, "socket": "/run/x.sock"}),
        "MITOSIS's own command line"
    );
    assert_eq!(
        parsed[2],
        serde_json::json!({"handler_id": "73", "pin": 1, "profile": 0, "exclude_execution": 1, "app_name": "a-b",
            "run_once": 1, "working_set": 1 << 20, "touch_ratio": 50, "hang": 0, "socket": "/s"}),
        "--flag, bare and -no booleans, `-flag value`, unknown flags ignored"
    );

    let out = run_python("import mitosis_wrapper", &["-pin=maybe"], &[]);
    assert_eq!(out.code(), Some(64), "{out}");
    assert!(out.stderr.contains("bad value 'maybe' for -pin"), "{out}");
}

/// Registers at-fork hooks that say where they run, prepares itself with
/// `fork_prepare`, then draws from `random`, `uuid4` and OpenSSL. Children
/// print their draw and exit 0; the parent prints its own and waits for a
/// line on stdin.
const UNIQUE_PY: &str = r#"
import os, random, ssl, sys, uuid
import mitosis

sock, seed_id = sys.argv[1:3]

def hook(where):
    def run():
        print("hook %s getpid=%d" % (where, os.getpid()), flush=True)
    return run

os.register_at_fork(before=hook("before"), after_in_parent=hook("after_in_parent"), after_in_child=hook("after_in_child"))
# In use before the prepare, as a warm process's generators are.
random.random(), ssl.RAND_bytes(16)
me = mitosis.fork_prepare(seed_id, pin=True, socket=sock)
draw = "random=%r uuid4=%s ssl=%s" % (random.random(), uuid.uuid4(), ssl.RAND_bytes(16).hex())
if me.is_child:
    print("child getpid=%d %s" % (os.getpid(), draw), flush=True)
    os._exit(0)
print("parent getpid=%d %s" % (os.getpid(), draw), flush=True)
sys.stdin.readline()
print("parent exits", flush=True)
"#;

/// Two children of one `fork_prepare` seed draw different numbers from
/// `random` (the same ones without the interpreter's fork machinery: they
/// start with the seed's state), different `uuid4`s and OpenSSL bytes, and
/// none the parent's. Hooks registered with `os.register_at_fork` run as
/// around `os.fork()`: `after_in_child` in each child and never in the
/// parent, `before` and `after_in_parent` in the parent only.
#[test]
fn children_of_one_seed_draw_their_own_random_numbers() {
    let Some(c) = Cluster::new("py-unique") else { return };
    let prog = c.write("unique.py", UNIQUE_PY);
    let mut parent = c.python_in(&c.hosts.a, "unique parent", &[&prog, &c.sock_a(), "unique"]);
    let ppid = parent.pid();
    assert_eq!(parent.expect_prefix("hook ", STEP), format!("hook before getpid={ppid}"));
    assert_eq!(parent.expect_prefix("hook ", STEP), format!("hook after_in_parent getpid={ppid}"));
    let pline = parent.expect_prefix("parent ", STEP);

    let draws = |line: &str| ["random", "uuid4", "ssl"].map(|k| field(line, k).to_string());
    let mut seen = vec![draws(&pline)];
    for n in 0..2 {
        let out = c.cli_resume_on_b("unique").finish(STEP);
        assert_eq!(out.code(), Some(0), "child {n}: {out}\n{}", c.logs());
        assert_eq!(out.lines().len(), 2, "the child's hook and draw only: {out}");
        assert_eq!(out.lines()[0], "hook after_in_child getpid=2", "after_in_child runs in the child: {out}");
        let mine = draws(out.line("child "));
        for earlier in &seen {
            for (k, what) in ["random", "uuid4", "ssl"].iter().enumerate() {
                assert_ne!(earlier[k], mine[k], "{what}: a child drew what the parent or another child drew: {out}\n{seen:?}");
            }
        }
        seen.push(mine);
    }

    parent.send("\n");
    let out = parent.finish(STEP);
    assert_eq!(out.code(), Some(0), "{out}");
    assert_eq!(out.stdout, "parent exits\n", "no hook ran in the parent after the prepare: {out}");
}

/// A program that draws a number from `random` for each line on stdin,
/// prepared from outside with `mitosis prepare --pid` while blocked reading.
const DRAW_PY: &str = r#"
import os, random, sys
print("ready %d" % os.getpid(), flush=True)
for line in sys.stdin:
    print("random=%r" % random.random(), flush=True)
"#;

/// Waits up to 10 s until `pid` is blocked in read(0, ...).
fn wait_blocked_reading_stdin(pid: i32) {
    let blocked = wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(format!("/proc/{pid}/syscall"))
            .is_ok_and(|s| s.split_whitespace().take(2).eq(["0", "0x0"]))
    });
    assert!(blocked, "process {pid} never blocked in read(0, ...)");
}

/// `mitosis prepare --pid` warns on stderr, in one line that points to the
/// README, that the process cannot know it is cloned; stdout stays the seed
/// (valid JSON with `--json`). Its children do draw the same numbers: the
/// reason for the warning.
#[test]
fn prepare_by_pid_warns_that_children_are_clones() {
    let Some(c) = Cluster::new("py-clones") else { return };
    let prog = c.write("draw.py", DRAW_PY);
    let mut target = c.python_in(&c.hosts.a, "drawing target", &[&prog]);
    let pid: i32 = target.expect_prefix("ready ", STEP)["ready ".len()..].parse().unwrap();
    wait_blocked_reading_stdin(pid);
    let prepare = |id: &str, json: bool| {
        let mut cmd = Command::new(mitosis_bin());
        cmd.args(["prepare", "--pid", &pid.to_string(), "--id", id, "--socket", &c.sock_a()]);
        if json {
            cmd.arg("--json");
        }
        let mut p = Proc::spawn("mitosis prepare", &mut cmd);
        p.close_stdin();
        p.finish(STEP)
    };
    let warned = |out: &Finished| {
        let lines: Vec<&str> = out.stderr.lines().filter(|l| l.contains("warning")).collect();
        assert_eq!(lines.len(), 1, "one warning line: {out}");
        let l = lines[0];
        assert!(l.starts_with("mitosis: warning: ") && l.contains("random-number state"), "{out}");
        assert!(l.contains(&pid.to_string()) && l.contains("\"Clone uniqueness\" in the README"), "{out}");
    };

    let out = prepare("clones", true);
    assert_eq!(out.code(), Some(0), "{out}\n{}", c.logs());
    warned(&out);
    let seed: serde_json::Value =
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("--json stdout is not JSON ({e}): {out}"));
    assert_eq!(seed["id"], "clones", "{out}");
    assert_eq!(seed["source_pid"], pid, "{out}");
    assert!(!out.stdout.contains("warning"), "{out}");

    let out = prepare("clones-text", false);
    assert_eq!(out.code(), Some(0), "{out}\n{}", c.logs());
    warned(&out);
    assert!(out.stdout.starts_with("prepared seed clones-text from pid "), "{out}");
    assert!(!out.stdout.contains("warning"), "{out}");

    let mut draws = Vec::new();
    for _ in 0..2 {
        let mut child = c.cli_resume_on_b("clones");
        child.send("draw\n");
        child.close_stdin();
        let out = child.finish(STEP);
        assert_eq!(out.code(), Some(0), "{out}\n{}", c.logs());
        draws.push(field(out.line("random="), "random").to_string());
    }
    assert_eq!(draws[0], draws[1], "children of a seed prepared by pid start with its random state");
    target.send("draw\n");
    assert_eq!(field(&target.expect_prefix("random=", STEP), "random"), draws[0], "the parent's next draw too");
}

/// A `fork_prepare` that fails is, for the interpreter, a fork that failed
/// (as `os.fork()` raising): the `before` and `after_in_parent` hooks run,
/// `after_in_child` does not, and the import lock taken for the prepare is
/// released (another thread can import). `mitosis._child` reseeds OpenSSL
/// only when Python's OpenSSL binding is loaded, and never loads it. No
/// daemon, no root needed.
#[test]
fn failed_prepare_ends_the_fork_and_child_reseed_needs_no_ssl() {
    let code = r#"
import os, sys, threading
import mitosis, mitosis._child
os.register_at_fork(before=lambda: print("before"), after_in_parent=lambda: print("after_in_parent"),
                    after_in_child=lambda: print("after_in_child"))
try:
    mitosis.fork_prepare("x", socket="/nonexistent/mitosis.sock")
except mitosis.DaemonUnreachable as e:
    print("raised " + e.kind)
t = threading.Thread(target=lambda: __import__("colorsys"))
t.start()
t.join(10)
print("thread imported" if not t.is_alive() and "colorsys" in sys.modules else "thread blocked in import")

mitosis._child.after_fork_prepare()
print("_ssl loaded: %s" % ("_ssl" in sys.modules))
import _ssl
calls = []
real = _ssl.RAND_add
_ssl.RAND_add = lambda data, entropy: calls.append((type(data).__name__, len(data), entropy)) or real(data, entropy)
mitosis._child.after_fork_prepare()
mitosis._child.after_fork_prepare()
print("RAND_add %r" % calls)
"#;
    let out = run_python(code, &[], &[]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert_eq!(
        out.lines(),
        [
            "before",
            "after_in_parent",
            "raised daemon_unreachable",
            "thread imported",
            "_ssl loaded: False",
            "RAND_add [('bytes', 32, 32.0), ('bytes', 32, 32.0)]",
        ],
        "{out}"
    );
}

/// `fork_prepare` called from a worker thread while another thread counts:
/// every thread is prepared, the caller comes back as the child in the
/// child (in that same worker thread), and the counting thread goes on
/// from where it was. `random` is reseeded in each child (the interpreter
/// runs its parent hooks in a child that keeps all its threads).
const THREADED_PY: &str = r#"
import os, random, sys, threading, time
import mitosis

sock, seed_id = sys.argv[1:3]
count = 0
stop = False
def counter():
    global count
    while not stop:
        count += 1
        if count % 500 == 0:
            time.sleep(0.001)
threading.Thread(target=counter, name="counter", daemon=True).start()
while count < 1000:
    time.sleep(0.01)
random.random()
result = {}
def preparer():
    result["me"] = mitosis.fork_prepare(seed_id, pin=True, socket=sock)
t = threading.Thread(target=preparer, name="preparer")
t.start()
t.join()
me = result["me"]
at = count
time.sleep(0.2)
names = sorted(x.name for x in threading.enumerate())
line = "threads=%s counting=%s from_seed=%s random=%r" % (",".join(names), count > at, at >= 1000, random.random())
if me.is_child:
    print("child %s" % line, flush=True)
    os._exit(0)
print("parent threads=%d %s" % (me.threads, line), flush=True)
sys.stdin.readline()
"#;

#[test]
fn fork_prepare_from_a_thread_while_others_run() {
    let Some(c) = Cluster::new("py-threaded") else { return };
    let prog = c.write("threaded.py", THREADED_PY);
    let mut parent = c.python_in(&c.hosts.a, "threaded parent", &[&prog, &c.sock_a(), "threaded"]);
    let pline = parent.expect_prefix("parent ", STEP);
    assert!(pline.starts_with("parent threads=3 threads=MainThread,counter counting=True from_seed=True "), "{pline}");
    let mut draws = vec![field(&pline, "random").to_string()];
    for n in 0..2 {
        let out = c.cli_resume_on_b("threaded").finish(STEP);
        assert_eq!(out.code(), Some(0), "child {n}: {out}\n{}", c.logs());
        let line = out.line("child ");
        assert!(line.starts_with("child threads=MainThread,counter counting=True from_seed=True "), "{out}");
        let mine = field(line, "random").to_string();
        assert!(!draws.contains(&mine), "a child drew what the parent or another child drew: {out}");
        draws.push(mine);
    }
    parent.send("\n");
    assert_eq!(parent.finish(STEP).code(), Some(0));
}
