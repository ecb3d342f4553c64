//! Shared helpers of the mitosis-cli integration tests.
//!
//! Every test builds its own [`Cluster`] (two fresh network namespaces, a
//! daemon in each, a private [`TestDir`]) and starts its programs through
//! [`Proc`], whose guard kills the whole process group on drop, so a failing
//! test cleans up everything it started. Every wait has a timeout.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

pub use mitosis_testkit::{Finished, Proc, STEP};
use mitosis_testkit::{require_root, write_key, Daemon, Host, TestDir, TwoHosts};

/// Command prefix that runs a target program with address-space
/// randomization off (`setarch -R`), so that it always gets the same memory
/// layout.
///
/// Targets run with randomized layouts, like real programs, unless
/// `MITOSIS_TEST_NO_ASLR=1` is set: then every target gets this prefix,
/// which makes a layout-dependent failure reproducible. (One such bug: a
/// pager window starting on a `PROT_NONE` page, e.g. the guard page of
/// Rust's signal stack, killed the child a few percent of the time; see
/// `prot_none_page_at_the_start_of_a_fault_window` in programs.rs.)
pub const NO_ASLR: [&str; 3] = ["setarch", "x86_64", "-R"];

fn no_aslr() -> bool {
    std::env::var_os("MITOSIS_TEST_NO_ASLR").is_some_and(|v| v == "1")
}

/// The cluster key used by default.
pub const KEY: &str = "mitosis-test-cluster-key-0123456789";

/// The `mitosis` binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mitosis"))
}

/// Two hosts with a daemon each. Fields drop in order: daemons first (their
/// children die with them), then the namespaces, then the directory.
pub struct Cluster {
    pub a: Daemon,
    pub b: Daemon,
    pub hosts: TwoHosts,
    pub key: PathBuf,
    pub dir: TestDir,
}

impl Cluster {
    /// A cluster for test `name`, or `None` (after printing why) when the
    /// test cannot run here.
    pub fn new(name: &str) -> Option<Cluster> {
        Cluster::build(name, KEY, KEY, &[], &[])
    }

    /// Like [`Cluster::new`] with a key per daemon and extra daemon arguments,
    /// in which `{a}` and `{b}` stand for the daemons' peer addresses (e.g.
    /// `&["--peers", "{a}"]` for daemon b), and `{memnode-a}` for a test
    /// memory node's in host a.
    pub fn build(name: &str, key_a: &str, key_b: &str, args_a: &[&str], args_b: &[&str]) -> Option<Cluster> {
        if !require_root() {
            return None;
        }
        let dir = TestDir::new(name);
        let hosts = TwoHosts::new().expect("creating test hosts");
        let key = write_key(&dir, "key", key_a);
        let key_b_path = if key_b == key_a { key.clone() } else { write_key(&dir, "key-b", key_b) };
        // Every test daemon listens on port 7070 of its host's address.
        let (addr_a, addr_b) = (format!("{}:7070", hosts.a.ip), format!("{}:7070", hosts.b.ip));
        // `{memnode-a}`: where a test memory node in host a listens.
        let memnode_a = format!("{}:{}", hosts.a.ip, mitosis_testkit::MEMNODE_PORT);
        let fill = |args: &[&str]| -> Vec<String> {
            args.iter().map(|s| s.replace("{a}", &addr_a).replace("{b}", &addr_b).replace("{memnode-a}", &memnode_a)).collect()
        };
        let (args_a, args_b) = (fill(args_a), fill(args_b));
        let args_a: Vec<&str> = args_a.iter().map(String::as_str).collect();
        let args_b: Vec<&str> = args_b.iter().map(String::as_str).collect();
        let a = Daemon::start_with_args(&bin(), &hosts.a, &dir, "a", &key, &args_a).expect("starting daemon a");
        let b = Daemon::start_with_args(&bin(), &hosts.b, &dir, "b", &key_b_path, &args_b).expect("starting daemon b");
        assert_eq!((a.addr(), b.addr()), (addr_a, addr_b), "daemons listen where {{a}} and {{b}} say");
        Some(Cluster { a, b, hosts, key, dir })
    }

    /// Both daemons' logs, for failure messages.
    pub fn logs(&self) -> String {
        format!("--- daemon a log ---\n{}\n--- daemon b log ---\n{}", tail(&self.a.log(), 60), tail(&self.b.log(), 60))
    }

    /// Starts `args` (a program and its arguments) inside host `host`.
    pub fn start_in(&self, host: &Host, name: &str, args: &[&str]) -> Proc {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &host.ns]).args(args);
        Proc::spawn(name, &mut cmd)
    }

    /// Starts a target program (`args`) in host `host` (see [`NO_ASLR`]).
    pub fn start_target_in(&self, host: &Host, name: &str, args: &[&str]) -> Proc {
        let mut full: Vec<&str> = if no_aslr() { NO_ASLR.to_vec() } else { Vec::new() };
        full.extend_from_slice(args);
        self.start_in(host, name, &full)
    }

    /// Starts a target program (`args`) in host `host` (see [`NO_ASLR`]),
    /// waits for its `ready <pid>` line and returns it with that pid.
    pub fn target_in(&self, host: &Host, name: &str, args: &[&str]) -> (Proc, i32) {
        let mut p = self.start_target_in(host, name, args);
        let line = p.expect_prefix("ready ", STEP);
        let pid = line["ready ".len()..].trim().parse().expect("pid in `ready` line");
        (p, pid)
    }

    /// Starts `mitosis workload pattern --mb <mb>` in host a and returns it with its pid.
    pub fn pattern_in_a(&self, mb: usize) -> (Proc, i32) {
        let b = bin();
        let mb = mb.to_string();
        self.target_in(&self.hosts.a, "parent", &[b.to_str().unwrap(), "workload", "pattern", "--mb", &mb])
    }

    /// `mitosis prepare --pid <pid> --id <id>` on daemon a; panics unless it succeeds.
    pub fn prepare_a(&self, pid: i32, id: &str) -> serde_json::Value {
        prepare_ok(self.a.socket(), pid, id, self)
    }

    /// Starts `mitosis resume --from <a> --id <id> --socket <b>` (stdin piped).
    pub fn resume_on_b(&self, id: &str) -> Proc {
        self.resume_on_b_args(id, &[])
    }

    /// [`Cluster::resume_on_b`] with more arguments (e.g. `--no-container`).
    pub fn resume_on_b_args(&self, id: &str, extra: &[&str]) -> Proc {
        let mut cmd = Command::new(bin());
        cmd.args(["resume", "--from", &self.a.addr(), "--id", id, "--socket"]).arg(self.b.socket()).args(extra);
        Proc::spawn(&format!("resume {id}"), &mut cmd)
    }

    /// Resumes `id` from a on b, feeds it `input`, closes its stdin and waits.
    pub fn resume_on_b_with(&self, id: &str, input: &str) -> Finished {
        self.resume_on_b_with_args(id, input, &[])
    }

    /// [`Cluster::resume_on_b_with`] with more arguments.
    pub fn resume_on_b_with_args(&self, id: &str, input: &str, extra: &[&str]) -> Finished {
        let mut p = self.resume_on_b_args(id, extra);
        p.send(input);
        p.close_stdin();
        p.finish(STEP)
    }

    /// `mitosis ps --json` on b: the running children (host pids, containers) and the pool.
    pub fn ps_on_b(&self, all: bool) -> serde_json::Value {
        let sock = self.b.socket().to_str().unwrap();
        let out = if all { cli(&["ps", "--all", "--json", "--socket", sock]) } else { cli(&["ps", "--json", "--socket", sock]) };
        assert_eq!(out.code(), Some(0), "ps: {out}");
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("ps --json printed no JSON ({e}): {out}"))
    }

    /// Host pid of the one child running on b (a child in a container sees
    /// itself under another pid).
    pub fn only_child_on_b(&self) -> i32 {
        let ps = self.ps_on_b(false);
        let children = ps["children"].as_array().unwrap();
        assert_eq!(children.len(), 1, "expected one child on b: {ps}");
        children[0]["pid"].as_i64().unwrap() as i32
    }

    /// Runs a `mitosis` subcommand in the root namespace and waits for it.
    pub fn cli(&self, args: &[&str]) -> Finished {
        cli(args)
    }
}

/// Command prefix that runs a program as user nobody, without groups.
pub const NOBODY: [&str; 4] = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"];

/// `mitosis <args>` as user nobody, not started yet.
pub fn nobody_cmd(args: &[&str]) -> Command {
    let mut cmd = Command::new(NOBODY[0]);
    cmd.args(&NOBODY[1..]).arg(bin()).args(args);
    cmd
}

/// Runs `mitosis <args>` as user nobody (stdin empty) and waits up to [`STEP`].
pub fn as_nobody(args: &[&str]) -> Finished {
    let mut p = Proc::spawn("mitosis as nobody", &mut nobody_cmd(args));
    p.close_stdin();
    p.finish(STEP)
}

/// Whether user nobody can run the binary under test (it may sit in a
/// directory nobody cannot enter); if not, the calling test is recorded as
/// skipped and should return.
pub fn nobody_can_run_mitosis() -> bool {
    let version = as_nobody(&["--version"]);
    if version.code() != Some(0) {
        mitosis_testkit::skip(format!("user nobody cannot run {} ({version})", bin().display()));
        return false;
    }
    true
}

/// Runs `mitosis <args>` in the root namespace (stdin empty) and waits up to [`STEP`].
pub fn cli(args: &[&str]) -> Finished {
    let mut cmd = Command::new(bin());
    cmd.args(args);
    let mut p = Proc::spawn(&format!("mitosis {}", args.first().copied().unwrap_or("")), &mut cmd);
    p.close_stdin();
    p.finish(STEP)
}

/// `mitosis prepare --json` through `socket`; panics (with the daemon logs) unless it succeeds.
pub fn prepare_ok(socket: &Path, pid: i32, id: &str, cluster: &Cluster) -> serde_json::Value {
    let pid_s = pid.to_string();
    let out = cli(&["prepare", "--pid", &pid_s, "--id", id, "--socket", socket.to_str().unwrap(), "--json"]);
    assert!(out.code() == Some(0), "prepare of pid {pid} as {id} failed: {out}\n{}", cluster.logs());
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("prepare --json printed no JSON ({e}): {out}"))
}

/// Starts `mitosis resume --from <from> --id <id> --socket <socket>` with piped stdio.
pub fn resume_proc(from: &str, id: &str, socket: &Path) -> Proc {
    let mut cmd = Command::new(bin());
    cmd.args(["resume", "--from", from, "--id", id, "--socket"]).arg(socket);
    Proc::spawn(&format!("resume {id}"), &mut cmd)
}

/// Whether `pid` is a live (not zombie) process.
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
        .unwrap_or(false)
}

/// Compiles `tests/programs/<name>.c` with `cc -o <exe> <source> <flags>` into the test
/// directory and returns the executable's path.
pub fn compile(dir: &TestDir, name: &str, flags: &[&str]) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/programs").join(format!("{name}.c"));
    let out = dir.path().join(name);
    let res = Command::new("cc")
        .arg("-o")
        .arg(&out)
        .arg(&src)
        .args(flags)
        .output()
        .expect("running cc (is a C compiler installed?)");
    assert!(res.status.success(), "compiling {}: {}", src.display(), String::from_utf8_lossy(&res.stderr));
    out
}

/// Whether this CPU has `flag` in /proc/cpuinfo.
pub fn cpu_has(flag: &str) -> bool {
    std::fs::read_to_string("/proc/cpuinfo")
        .map(|s| s.lines().filter(|l| l.starts_with("flags")).any(|l| l.split_whitespace().any(|f| f == flag)))
        .unwrap_or(false)
}

/// Runs `f` in a thread that has entered `host`'s network namespace (only
/// that thread does, so the test process itself stays where it is).
pub fn in_netns<T: Send + 'static>(host: &Host, f: impl FnOnce() -> T + Send + 'static) -> T {
    host.run_inside(f).unwrap_or_else(|e| panic!("running inside {}: {e:#}", host.ns))
}

/// Waits up to 10 s until `pid` is blocked in `read(0, ...)` (per
/// /proc/PID/syscall), so that a prepare catches it inside that syscall.
pub fn wait_blocked_in_read_stdin(pid: i32) {
    let ok = mitosis_testkit::wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(format!("/proc/{pid}/syscall"))
            .map(|s| {
                let f: Vec<&str> = s.split_whitespace().collect();
                f.len() > 1 && f[0] == "0" && f[1] == "0x0"
            })
            .unwrap_or(false)
    });
    assert!(ok, "process {pid} never blocked in read(0, ...)");
}

/// Waits up to 10 s until `pid` sleeps (state S) inside a system call other
/// than write(2): after printing its `ready` line, that is the wait it is
/// meant to be prepared in.
pub fn wait_blocked_in_syscall(pid: i32) -> u64 {
    let mut nr = u64::MAX;
    let ok = mitosis_testkit::wait_until(Duration::from_secs(10), || {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.rsplit(')').next().unwrap_or("").trim_start().starts_with('S'))
            .unwrap_or(false);
        let sys = std::fs::read_to_string(format!("/proc/{pid}/syscall")).unwrap_or_default();
        match sys.split_whitespace().next().and_then(|f| f.parse::<u64>().ok()) {
            Some(n) if state && n != libc::SYS_write as u64 => {
                nr = n;
                true
            }
            _ => false,
        }
    });
    assert!(ok, "process {pid} never blocked in a system call");
    nr
}

/// Two hosts with a daemon each that runs function instances as nobody,
/// and function directories written by the test. Fields drop in order:
/// daemons first, then the namespaces, then the directory (under
/// /var/tmp, not /tmp: a container has a /tmp of its own).
pub struct Workers {
    pub a: Daemon,
    pub b: Daemon,
    pub hosts: TwoHosts,
    /// The instances' interpreter (and the mount that keeps its packages in
    /// reach), undone before the directory goes.
    pub python: mitosis_testkit::python::NobodyPython,
    pub dir: TestDir,
}

impl Workers {
    /// `None` (the test is skipped) without root, or when nobody cannot
    /// run mitosis or a Python with the repo venv's packages.
    pub fn new(name: &str, functions: &[(&str, &str)]) -> Option<Workers> {
        Workers::with_args(name, functions, &[])
    }

    /// [`Workers::new`] with more daemon arguments (`{memnode-a}` stands
    /// for a test memory node's address in host a).
    pub fn with_args(name: &str, functions: &[(&str, &str)], extra: &[&str]) -> Option<Workers> {
        if !require_root() || !nobody_can_run_mitosis() {
            return None;
        }
        let dir = TestDir::new_in(Path::new("/var/tmp"), name);
        // Made by root with mode 0755, its files 0644: nobody reads them.
        let venv = repo().join(".venv");
        let python = mitosis_testkit::python::python_for_nobody(&venv, dir.path()).map_err(mitosis_testkit::skip).ok()?;
        for (fname, source) in functions {
            let fdir = dir.path().join(fname);
            std::fs::create_dir(&fdir).unwrap();
            std::fs::write(fdir.join("function.py"), source).unwrap();
        }
        let hosts = TwoHosts::new().expect("creating test hosts");
        let key = write_key(&dir, "key", KEY);
        let interpreter = python.python.to_str().unwrap().to_string();
        let memnode_a = format!("{}:{}", hosts.a.ip, mitosis_testkit::MEMNODE_PORT);
        let mut args = vec!["--instance-user", "nobody", "--python", &interpreter];
        args.extend(extra.iter().map(|a| if *a == "{memnode-a}" { memnode_a.as_str() } else { a }));
        let a = Daemon::start_with_args(&bin(), &hosts.a, &dir, "a", &key, &args).expect("starting daemon a");
        let b = Daemon::start_with_args(&bin(), &hosts.b, &dir, "b", &key, &args).expect("starting daemon b");
        Some(Workers { a, b, hosts, python, dir })
    }

    /// The directory of the test's function `name`.
    pub fn function(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_string()
    }

    pub fn key_file(&self) -> PathBuf {
        self.dir.path().join("key")
    }

    /// The suite's function `name` (`functions/<name>/function.py`), copied
    /// next to the test's own: the repository may be under /tmp, which a
    /// container has of its own. Returns its directory.
    pub fn suite_function(&self, name: &str) -> String {
        let dir = self.dir.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(repo().join("functions").join(name).join("function.py"), dir.join("function.py")).unwrap();
        dir.to_str().unwrap().to_string()
    }

    /// The last lines of both daemons' logs.
    pub fn logs(&self) -> String {
        format!("--- daemon a ---\n{}\n--- daemon b ---\n{}", tail(&self.a.log(), 40), tail(&self.b.log(), 40))
    }
}

/// The last `n` lines of `s` (of a long log).
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The repository's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// Asserts that `out` is the end of a child killed by mitosis: status 69,
/// "child killed" and `reason` on stderr, and no answer to any
/// memory-reading command on stdout (only the lines in `allowed` may appear).
pub fn assert_killed_by_mitosis(out: &Finished, reason: &str, allowed: &[&str], logs: &str) {
    assert_eq!(out.code(), Some(69), "the child must be killed by mitosis: {out}\n{logs}");
    assert!(out.stderr.contains("child killed"), "{out}");
    assert!(out.stderr.contains(reason), "the reason must say {reason:?}: {out}");
    for l in out.lines() {
        assert!(allowed.contains(&l), "the killed child must not answer ({l:?}): {out}");
    }
}

/// Waits up to 10 s until daemon b runs no child and holds no container
/// (counted by its pool, and as cgroup directories) beyond its warm ones;
/// whether it got there.
pub fn b_settles_to_warm_containers(c: &Cluster) -> bool {
    mitosis_testkit::wait_until(Duration::from_secs(10), || {
        let ps = c.ps_on_b(false);
        let pool = &ps["pool"];
        let warm = pool["warm"].as_u64().unwrap();
        let live = pool["created"].as_u64().unwrap() - pool["destroyed"].as_u64().unwrap();
        ps["children"].as_array().unwrap().is_empty() && live == warm && pool["cgroup_dirs"].as_u64().unwrap() == warm
    })
}

/// The number at `path` (keys and array indices joined by dots) in `v`;
/// panics, naming the path, if there is none.
pub fn json_num(v: &serde_json::Value, path: &str) -> f64 {
    let mut at = v;
    for key in path.split('.') {
        at = match key.parse::<usize>() {
            Ok(i) => &at[i],
            Err(_) => &at[key],
        };
    }
    at.as_f64().unwrap_or_else(|| panic!("{path} is not a number in the JSON: {at}"))
}
