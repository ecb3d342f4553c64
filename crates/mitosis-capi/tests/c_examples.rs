//! The C API as a C programmer gets it: `scripts/install-c-api` into a
//! temporary prefix, programs compiled with the system C compiler against the
//! installed header through `pkg-config mitosis`, run across two hosts
//! (network namespaces with a daemon each, from `mitosis-testkit`).
//!
//! What the tests take from the build, found from the path of this test
//! executable (`target/<profile>/deps/c_examples-<hash>`):
//!
//! - the libraries from `target/<profile>/deps`: cargo builds
//!   `libmitosis_capi.so` and `.a` there in the same compilation as the rlib
//!   this test links (so they are never stale), but copies them up to
//!   `target/<profile>` only on `cargo build`; the install script is pointed
//!   at `deps` with `MITOSIS_BUILD_DIR`;
//! - the `mitosis` binary (daemons, `mitosis ls`) from `target/<profile>`.
//!   `cargo test --workspace` builds it; before `cargo test -p mitosis-capi`
//!   alone, build it (`cargo build --release`): the tests stop with that
//!   message if it is missing.
//!
//! The tests that start daemons need root, like the other end-to-end tests:
//! without it they print `skipped: needs root` and pass. Everything they
//! start is killed by guards (programs, daemons) and the namespaces and
//! temporary directory are removed, also when a test fails.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

use mitosis_testkit::{require_root, wait_until, write_key, Daemon, Host, Proc, TestDir, TwoHosts, STEP};

/// Bound for one step (a resume, a program's run).
const KEY: &str = "mitosis-capi-test-cluster-key-0123456789";

/// `target/<profile>/deps`, where this test executable runs from.
fn deps_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent().expect("deps dir").to_path_buf()
}

/// The build directory of this profile: `target/<profile>`.
fn build_dir() -> PathBuf {
    deps_dir().parent().expect("profile dir").to_path_buf()
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The `mitosis` binary of this build (for the daemons and `mitosis ls`).
fn mitosis_bin() -> PathBuf {
    let bin = build_dir().join("mitosis");
    assert!(
        bin.is_file(),
        "{} is missing: build the workspace first (cargo build --release), or run cargo test --workspace",
        bin.display()
    );
    bin
}

/// Runs `cmd` to completion; panics with its output unless it succeeds.
fn run_ok(cmd: &mut Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The C API installed with `scripts/install-c-api` under `<dir>/prefix`.
struct Installed {
    prefix: PathBuf,
}

/// How a program links libmitosis.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Link {
    /// `pkg-config --cflags --libs mitosis`, with an rpath to the prefix.
    Shared,
    /// libmitosis.a, with what `pkg-config --static` says it needs.
    Static,
}

impl Installed {
    fn new(dir: &TestDir) -> Installed {
        let prefix = dir.path().join("prefix");
        run_ok(
            Command::new(repo_root().join("scripts/install-c-api")).arg(&prefix).env("MITOSIS_BUILD_DIR", deps_dir()),
            "scripts/install-c-api",
        );
        Installed { prefix }
    }

    fn lib(&self) -> PathBuf {
        self.prefix.join("lib")
    }

    /// `pkg-config <args> mitosis` against this prefix only, split into words.
    fn pkg_config(&self, args: &[&str]) -> Vec<String> {
        let out = run_ok(
            Command::new("pkg-config").args(args).arg("mitosis").env("PKG_CONFIG_LIBDIR", self.lib().join("pkgconfig")),
            "pkg-config (see scripts/setup)",
        );
        out.split_whitespace().map(str::to_string).collect()
    }

    /// Compiles `src` with `cc -std=c99 -Wall -Wextra -Werror` into `<dir>/<name>`.
    fn compile(&self, dir: &TestDir, src: &Path, name: &str, link: Link, extra: &[&str]) -> PathBuf {
        let out = dir.path().join(name);
        let mut cmd = Command::new("cc");
        cmd.args(["-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-o"]).arg(&out).arg(src).args(extra);
        match link {
            Link::Shared => {
                cmd.args(self.pkg_config(&["--cflags", "--libs"]));
                cmd.arg(format!("-Wl,-rpath,{}", self.lib().display()));
            }
            Link::Static => {
                cmd.args(self.pkg_config(&["--cflags"]));
                cmd.arg(self.lib().join("libmitosis.a"));
                cmd.args(self.pkg_config(&["--static", "--libs-only-l"]).into_iter().filter(|l| l != "-lmitosis"));
            }
        }
        run_ok(&mut cmd, &format!("compiling {}", src.display()));
        out
    }
}

/// The shared libraries `exe` needs (DT_NEEDED).
fn needed(exe: &Path) -> Vec<String> {
    let out = run_ok(Command::new("readelf").arg("-d").arg(exe), "readelf");
    out.lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| l.split('[').nth(1).map(|s| s.trim_end_matches(']').to_string()))
        .collect()
}

/// Waits for `p` to exit; returns its status and every stdout line (all of
/// them, also those already read).
fn finish_all(p: &mut Proc) -> (ExitStatus, Vec<String>) {
    let out = p.wait_output(STEP);
    (out.status, p.seen.clone())
}

/// Two hosts with a daemon each and the C API installed. Fields drop in
/// order: daemons (their children die with them), namespaces, directory.
struct Cluster {
    a: Daemon,
    b: Daemon,
    hosts: TwoHosts,
    lib: Installed,
    dir: TestDir,
}

impl Cluster {
    /// A cluster for test `name`, or `None` (after saying why) without root.
    fn new(name: &str) -> Option<Cluster> {
        if !require_root() {
            return None;
        }
        let bin = mitosis_bin();
        let dir = TestDir::new(name);
        let lib = Installed::new(&dir);
        let hosts = TwoHosts::new().expect("creating test hosts");
        let key = write_key(&dir, "key", KEY);
        let a = Daemon::start(&bin, &hosts.a, &dir, "a", &key).expect("starting daemon a");
        let b = Daemon::start(&bin, &hosts.b, &dir, "b", &key).expect("starting daemon b");
        Some(Cluster { a, b, hosts, lib, dir })
    }

    fn logs(&self) -> String {
        format!("--- daemon a ---\n{}\n--- daemon b ---\n{}", self.a.log(), self.b.log())
    }

    fn example(&self, name: &str, link: Link) -> PathBuf {
        let src = repo_root().join("examples/c").join(format!("{name}.c"));
        let out = if link == Link::Static { format!("{name}-static") } else { name.to_string() };
        self.lib.compile(&self.dir, &src, &out, link, &[])
    }

    /// Starts `args` inside `host`, with `MITOSIS_SOCKET` set to `daemon`'s socket.
    fn start(&self, host: &Host, daemon: &Daemon, name: &str, args: &[&str]) -> Proc {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &host.ns]).args(args).env("MITOSIS_SOCKET", daemon.socket());
        {
            let mut p = Proc::spawn(name, &mut cmd);
            p.close_stdin();
            p
        }
    }

    /// simple_parent on host a as seed `id`; returns once it has prepared.
    fn parent(&self, exe: &Path, id: &str, pin: bool, interval_ms: u32, ticks: u32) -> Proc {
        let args = [
            exe.to_str().unwrap(),
            &format!("-handler_id={id}"),
            &format!("-pin={}", pin as u8),
            &format!("-interval_ms={interval_ms}"),
            &format!("-ticks={ticks}"),
        ];
        let mut p = self.start(&self.hosts.a, &self.a, &format!("simple_parent {id}"), &args);
        p.expect_line("time 0", STEP);
        let how = if pin { "pinned" } else { "until this process exits" };
        p.expect_stderr(&format!("simple_parent: parent: prepared seed {id} ({how}, generation "), STEP);
        p
    }

    /// simple_child `exe` on host b, resuming seed `id` from host a (by IP, default port).
    fn child(&self, exe: &Path, id: &str) -> Proc {
        let args = [exe.to_str().unwrap(), &format!("-host={}", self.hosts.a.ip), &format!("-handler_id={id}")];
        self.start(&self.hosts.b, &self.b, &format!("{} {id}", exe.display()), &args)
    }

    /// Ids of host a's seeds (`mitosis ls --json`).
    fn seeds_on_a(&self) -> Vec<String> {
        let out = run_ok(Command::new(mitosis_bin()).args(["ls", "--json", "--socket"]).arg(self.a.socket()), "mitosis ls");
        let v: serde_json::Value = serde_json::from_str(&out).expect("ls --json");
        v.as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap().to_string()).collect()
    }
}

fn times(from: u32, to: u32) -> Vec<String> {
    (from..=to).map(|n| format!("time {n}")).collect()
}

/// Runs simple_child (`exe`) for seed `id` and checks that it became a child
/// of simple_parent: it says so with its own pid, prints `time 1` ..
/// `time <ticks>` and exits 0 as the parent's program does.
fn check_child_counts(c: &Cluster, exe: &Path, id: &str, ticks: u32) {
    let mut child = c.child(exe, id);
    let pid = child.pid();
    let (status, lines) = finish_all(&mut child);
    let ctx = || format!("{}\n{}", child.describe(), c.logs());
    assert_eq!(status.code(), Some(0), "{}", ctx());
    assert_eq!(lines, times(1, ticks), "the child must count on from the parent's prepare point\n{}", ctx());
    let err = child.stderr();
    assert!(err.contains(&format!("simple_child: pid {pid} resuming seed {id} from {}", c.hosts.a.ip)), "{}", ctx());
    let me = format!("simple_parent: child: resumed as pid {pid} from seed {id} at {}:7070", c.hosts.a.ip);
    assert!(err.contains(&me), "the child must know it is one, with its own pid\n{}", ctx());
    assert!(!err.contains("parent: prepared"), "{}", ctx());
}

/// MITOSIS's demo: simple_parent on host a prints a counter and prepares
/// after its first tick; simple_child on host b, linked against the shared
/// and against the static library, becomes its child and counts on from 1,
/// although the parent is further along by then.
#[test]
fn simple_parent_and_simple_child_count_across_two_hosts() {
    let Some(c) = Cluster::new("capi-simple") else { return };
    let parent_exe = c.example("simple_parent", Link::Shared);
    let child_exe = c.example("simple_child", Link::Shared);
    let child_static = c.example("simple_child", Link::Static);
    assert!(needed(&child_exe).contains(&"libmitosis.so.0".to_string()), "{:?}", needed(&child_exe));
    assert!(!needed(&child_static).iter().any(|l| l.contains("mitosis")), "{:?}", needed(&child_static));

    let ticks = 8;
    let mut parent = c.parent(&parent_exe, "73", true, 50, ticks);
    for t in times(1, 3) {
        parent.expect_line(&t, STEP);
    }
    check_child_counts(&c, &child_exe, "73", ticks);
    check_child_counts(&c, &child_static, "73", ticks);

    let (status, lines) = finish_all(&mut parent);
    assert_eq!(status.code(), Some(0), "{}", parent.describe());
    assert_eq!(lines, times(0, ticks), "{}", parent.describe());
    assert!(!parent.stderr().contains("child"), "{}", parent.describe());
}

/// A pinned seed outlives its parent; an unpinned one goes when its parent
/// exits, and then resuming it fails with the not-found error.
#[test]
fn pinned_seed_outlives_its_parent_unpinned_one_goes_with_it() {
    let Some(c) = Cluster::new("capi-lifetime") else { return };
    let parent_exe = c.example("simple_parent", Link::Shared);
    let child_exe = c.example("simple_child", Link::Shared);
    let ticks = 3;
    let mut pinned = c.parent(&parent_exe, "pinned", true, 50, ticks);
    let mut tied = c.parent(&parent_exe, "tied", false, 50, ticks);
    for p in [&mut pinned, &mut tied] {
        let (status, lines) = finish_all(p);
        assert_eq!(status.code(), Some(0), "{}", p.describe());
        assert_eq!(lines, times(0, ticks));
    }
    let only_pinned = wait_until(STEP, || c.seeds_on_a() == ["pinned"]);
    assert!(only_pinned, "seeds on a after both parents exited: {:?}\n{}", c.seeds_on_a(), c.logs());

    check_child_counts(&c, &child_exe, "pinned", ticks);

    let mut gone = c.child(&child_exe, "tied");
    let (status, lines) = finish_all(&mut gone);
    assert_eq!(status.code(), Some(66), "{}", gone.describe());
    assert!(lines.is_empty(), "{}", gone.describe());
    let err = gone.stderr();
    assert!(
        err.contains("simple_child: cannot resume seed tied from")
            && err.contains("no seed \"tied\"")
            && err.contains("(no such seed (or process))"),
        "{}",
        gone.describe()
    );
}

/// Error paths and resuming as a new child, from a C program on host b
/// (tests/programs/capi_check.c): codes and messages, connect errors,
/// unknown and dropped seeds, an unreachable seed host, wait statuses,
/// freeing a running child, MITOSIS's names.
#[test]
fn error_paths_and_resume_as_a_new_child_from_c() {
    let Some(c) = Cluster::new("capi-check") else { return };
    let parent_exe = c.example("simple_parent", Link::Shared);
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/programs/capi_check.c");
    let check = c.lib.compile(&c.dir, &src, "capi_check", Link::Shared, &["-pthread"]);

    let _short = c.parent(&parent_exe, "capi-short", true, 20, 3);
    let _long = c.parent(&parent_exe, "capi-long", true, 50, 0);
    let a_sock = c.a.socket().to_str().unwrap().to_string();
    let args = [check.to_str().unwrap(), &c.hosts.a.ip, "capi-short", "capi-long", &a_sock];
    let mut p = c.start(&c.hosts.b, &c.b, "capi_check", &args);
    let (status, lines) = finish_all(&mut p);
    let ctx = || format!("{}\n{}", p.describe(), c.logs());
    assert!(!lines.iter().any(|l| l.starts_with("FAIL")), "{}", ctx());
    assert_eq!(status.code(), Some(0), "{}", ctx());
    assert_eq!(lines.last().map(String::as_str), Some("done"), "{}", ctx());

    let oks: Vec<&str> = lines.iter().filter_map(|l| l.strip_prefix("ok ")).collect();
    let want = [
        "strerror",
        "exit codes",
        "open without a daemon",
        "open $MITOSIS_SOCKET",
        "NULL id",
        "unknown flag",
        "invalid seed id",
        "multi-threaded resume in place",
        "resume in place, unknown seed",
        "resume, unknown seed",
        "resume from an unreachable seed host",
        "compat sopen",
        "compat fork_resume_remote",
        "resume a new child",
        "child exited 0",
        "wait again",
        "resume a long child",
        "kill it",
        "child killed by SIGTERM",
        "resume another long child",
        "free kills a running child",
        "open the seed host's daemon",
        "drop",
        "drop again",
        "resume a dropped seed",
    ];
    assert_eq!(oks, want, "{}", ctx());

    // The short child wrote its count to the checker's stdout, between its resume and its end.
    let at = |s: &str| lines.iter().position(|l| l == s).unwrap_or_else(|| panic!("no {s:?}\n{}", ctx()));
    let (begin, end) = (at("begin short child"), at("ok child exited 0"));
    let mut got: Vec<&str> = lines[begin + 1..end].iter().map(String::as_str).collect();
    got.retain(|l| !l.starts_with("ok "));
    assert_eq!(got, times(1, 3), "{}", ctx());
    assert_eq!(c.seeds_on_a(), ["capi-long"], "the short seed was dropped");
}

/// The installed header declares exactly what the library exports, compiles
/// cleanly as C99 and as C++, agrees with the library on constants and
/// struct layout; the install has the SONAME links and a pkg-config file of
/// the crate's version. No daemon, no root needed.
#[test]
fn installed_header_library_and_pkg_config_agree() {
    let dir = TestDir::new("capi-header");
    let lib = Installed::new(&dir);
    let header = std::fs::read_to_string(lib.prefix.join("include/mitosis.h")).expect("installed header");
    assert_eq!(header, std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("include/mitosis.h")).unwrap());

    // Installed names: libmitosis.so -> .so.0 (the SONAME) -> .so.<version>.
    let version = env!("CARGO_PKG_VERSION");
    let so = lib.lib().join("libmitosis.so");
    assert_eq!(std::fs::read_link(&so).unwrap(), Path::new("libmitosis.so.0"));
    assert_eq!(std::fs::read_link(lib.lib().join("libmitosis.so.0")).unwrap(), PathBuf::from(format!("libmitosis.so.{version}")));
    let dynamic = run_ok(Command::new("readelf").arg("-d").arg(&so), "readelf");
    assert!(dynamic.contains("Library soname: [libmitosis.so.0]"), "{dynamic}");
    assert!(lib.lib().join("libmitosis.a").is_file());
    assert_eq!(lib.pkg_config(&["--modversion"]), [version]);
    let libs = lib.pkg_config(&["--libs"]);
    assert!(libs.contains(&"-lmitosis".to_string()), "{libs:?}");

    // Exported symbols = declared functions (static inline helpers aside).
    let nm = run_ok(Command::new("nm").args(["-D", "--defined-only"]).arg(&so), "nm");
    let exported: HashSet<String> = nm
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 3 && f[1] == "T").then(|| f[2].to_string())
        })
        .collect();
    let declared = declared_functions(&header);
    assert!(!exported.is_empty());
    for s in &exported {
        assert!(s.starts_with("mitosis_"), "the library exports a non-API symbol {s}");
    }
    assert_eq!(exported, declared, "exported (left) vs declared in mitosis.h (right)");

    // Compiles cleanly, with MITOSIS's names too, as C99 and as C++.
    let probe = dir.path().join("probe.c");
    std::fs::write(&probe, PROBE).unwrap();
    let cflags = lib.pkg_config(&["--cflags"]);
    let strict = ["-Wall", "-Wextra", "-Werror", "-pedantic"];
    for compat in [false, true] {
        let mut cmd = Command::new("cc");
        cmd.arg("-std=c99").args(strict).args(&cflags).arg("-fsyntax-only").arg(&probe);
        if compat {
            cmd.arg("-DMITOSIS_COMPAT");
        }
        run_ok(&mut cmd, "cc -std=c99 on mitosis.h");
        if Command::new("g++").arg("--version").output().is_ok_and(|o| o.status.success()) {
            let mut cmd = Command::new("g++");
            cmd.args(["-x", "c++", "-std=c++11"]).args(strict).args(&cflags).arg("-fsyntax-only").arg(&probe);
            if compat {
                cmd.arg("-DMITOSIS_COMPAT");
            }
            run_ok(&mut cmd, "g++ on mitosis.h");
        } else {
            eprintln!("g++ not found: the header was not compiled as C++");
        }
    }

    // Constants, struct layout and static texts, as C sees them.
    let exe = lib.compile(&dir, &probe, "probe", Link::Shared, &[]);
    let out = run_ok(&mut Command::new(&exe), "probe");
    let mut seen = HashSet::new();
    for line in out.lines() {
        let (name, value) = line.rsplit_once(' ').unwrap();
        seen.insert(name.to_string());
        let want: String = match name {
            "MITOSIS_OK" | "MITOSIS_PARENT" => mitosis_capi::MITOSIS_PARENT.to_string(),
            "MITOSIS_CHILD" => mitosis_capi::MITOSIS_CHILD.to_string(),
            "MITOSIS_PIN" => mitosis_capi::MITOSIS_PIN.to_string(),
            "MITOSIS_DEFAULT_PORT" => mitosis_capi::MITOSIS_DEFAULT_PORT.to_string(),
            "version" => version.to_string(),
            "sizeof" => std::mem::size_of::<mitosis_capi::mitosis_prepare_info>().to_string(),
            "offsets" => {
                use std::mem::offset_of;
                use mitosis_capi::mitosis_prepare_info as I;
                [
                    offset_of!(I, role),
                    offset_of!(I, pid),
                    offset_of!(I, generation),
                    offset_of!(I, prepare_us),
                    offset_of!(I, mapped_bytes),
                    offset_of!(I, snapshot_pid),
                    offset_of!(I, closed_fds),
                    offset_of!(I, seed_host),
                ]
                .map(|o| o.to_string())
                .join(",")
            }
            code => {
                let (code, text) = code.split_once('=').unwrap_or((code, ""));
                let info = mitosis_capi::CODES.iter().find(|c| c.name == code).unwrap_or_else(|| panic!("{code} unknown"));
                assert_eq!(text, info.text.to_str().unwrap(), "strerror({code})");
                info.code.to_string()
            }
        };
        assert_eq!(value, want, "{name} in C");
    }
    for c in mitosis_capi::CODES {
        let name = format!("{}={}", c.name, c.text.to_str().unwrap());
        assert!(seen.contains(&name), "{} is not in the probe (not in the header?)", c.name);
    }
    let in_header = header.lines().filter(|l| l.starts_with("#define MITOSIS_E_")).count();
    assert_eq!(in_header, mitosis_capi::CODES.len(), "every error code of the header is a known one");
}

/// Names of the functions mitosis.h declares (prototypes at file level;
/// `static inline` definitions are not library symbols).
fn declared_functions(header: &str) -> HashSet<String> {
    // Drop comments.
    let mut text = String::new();
    let mut rest = header;
    while let Some(i) = rest.find("/*") {
        text.push_str(&rest[..i]);
        let j = rest[i..].find("*/").expect("unterminated comment") + i + 2;
        rest = &rest[j..];
    }
    text.push_str(rest);
    text.lines()
        .filter(|l| !l.starts_with(char::is_whitespace) && !l.starts_with('#') && !l.starts_with("static"))
        .filter(|l| l.trim_end().ends_with(");"))
        .filter_map(|l| {
            let name = l[..l.find('(')?].rsplit(|c: char| !(c.is_alphanumeric() || c == '_')).next()?;
            Some(name.to_string())
        })
        .collect()
}

/// Prints every constant of the header, the prepare_info layout, strerror of
/// every code and the library version, one `name value` per line.
const PROBE: &str = r#"
#include <mitosis.h>
#include <stddef.h>
#include <stdio.h>

#define P(x) printf("%s %d\n", #x, (int)(x))
#define E(x) printf("%s=%s %d\n", #x, mitosis_strerror(x), (int)(x))

int main(void) {
    P(MITOSIS_OK); P(MITOSIS_PARENT); P(MITOSIS_CHILD); P(MITOSIS_PIN); P(MITOSIS_DEFAULT_PORT);
    E(MITOSIS_E_NOT_FOUND); E(MITOSIS_E_AUTH); E(MITOSIS_E_VERSION); E(MITOSIS_E_BAD_REQUEST);
    E(MITOSIS_E_PERMISSION); E(MITOSIS_E_UNSUPPORTED); E(MITOSIS_E_SEED_GONE); E(MITOSIS_E_INTERNAL);
    E(MITOSIS_E_CONNECT); E(MITOSIS_E_IO); E(MITOSIS_E_USAGE); E(MITOSIS_E_BUSY);
    printf("sizeof %d\n", (int)sizeof(mitosis_prepare_info));
    printf("offsets %d,%d,%d,%d,%d,%d,%d,%d\n", (int)offsetof(mitosis_prepare_info, role),
           (int)offsetof(mitosis_prepare_info, pid), (int)offsetof(mitosis_prepare_info, generation),
           (int)offsetof(mitosis_prepare_info, prepare_us), (int)offsetof(mitosis_prepare_info, mapped_bytes),
           (int)offsetof(mitosis_prepare_info, snapshot_pid), (int)offsetof(mitosis_prepare_info, closed_fds),
           (int)offsetof(mitosis_prepare_info, seed_host));
    printf("version %s\n", mitosis_version());
    return 0;
}
"#;

/// `mitosis_child_hook` (tests/programs/child_hook.c): the hooks run in
/// registration order in every child, before `mitosis_fork_prepare`
/// returns `MITOSIS_CHILD` (a new child from `mitosis resume`, and a process
/// resumed in place by simple_child), and never in the parent. The hook
/// that reseeds random() makes the children draw their own numbers.
#[test]
fn child_hooks_run_in_every_child_and_never_in_the_parent() {
    let Some(c) = Cluster::new("capi-child-hook") else { return };
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/programs/child_hook.c");
    let prog = c.lib.compile(&c.dir, &src, "child_hook", Link::Shared, &[]);
    let child_exe = c.example("simple_child", Link::Shared);

    // Kept until the end: the pinned seed's snapshot is in its process group.
    let mut parent = c.start(&c.hosts.a, &c.a, "child_hook parent", &[prog.to_str().unwrap(), "hooked"]);
    let out = parent.wait_output(STEP);
    assert_eq!(out.code(), Some(0), "{out}\n{}", c.logs());
    let pline = out.line("parent ");
    assert!(pline.starts_with("parent log= random="), "no hook may run in the parent: {out}");
    assert_eq!(out.lines().len(), 1, "{out}");
    let random_of = |line: &str| line.split_whitespace().find_map(|f| f.strip_prefix("random=")).unwrap().to_string();
    let mut draws = vec![random_of(pline)];

    let resumed = resume_on_b(&c, "hooked");
    let in_place = c.child(&child_exe, "hooked").finish(STEP);
    for out in [resumed, in_place] {
        assert_eq!(out.code(), Some(0), "{out}\n{}", c.logs());
        assert_eq!(out.lines().len(), 1, "{out}");
        let line = out.line("child ");
        assert!(line.starts_with("child log=ab:tag random="), "both hooks, in order, before the prepare returned: {out}");
        let mine = random_of(line);
        assert!(!draws.contains(&mine), "reseeded in the hook, each child draws its own number: {out} {draws:?}");
        draws.push(mine);
    }
}

/// `mitosis resume` of seed `id` from host a in host b, stdin closed, to its end.
fn resume_on_b(c: &Cluster, id: &str) -> mitosis_testkit::Finished {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &c.hosts.b.ns]).arg(mitosis_bin());
    cmd.args(["resume", "--from", &c.a.addr(), "--id", id, "--socket"]).arg(c.b.socket());
    let mut p = Proc::spawn(&format!("mitosis resume {id}"), &mut cmd);
    p.close_stdin();
    p.finish(STEP)
}

/// `mitosis_fork_prepare` called from a second thread while a third counts:
/// every child (a new one from `mitosis resume`, and a single-threaded
/// process resumed in place) has the seed's threads, the counter goes on,
/// and the hooks run in the thread that called the prepare.
#[test]
fn fork_prepare_from_a_thread_in_c() {
    let Some(c) = Cluster::new("capi-threaded") else { return };
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/programs/child_hook.c");
    let prog = c.lib.compile(&c.dir, &src, "child_hook", Link::Shared, &["-pthread"]);
    let child_exe = c.example("simple_child", Link::Shared);
    let mut parent = c.start(&c.hosts.a, &c.a, "child_hook parent", &[prog.to_str().unwrap(), "threaded", "thread"]);
    let out = parent.wait_output(STEP);
    assert_eq!(out.code(), Some(0), "{out}\n{}", c.logs());
    // After the prepare the preparing thread has ended: main and the counter.
    assert!(out.line("parent ").ends_with(" threads=2 counting=1"), "{out}");
    let resumed = resume_on_b(&c, "threaded");
    let in_place = c.child(&child_exe, "threaded").finish(STEP);
    for out in [resumed, in_place] {
        assert_eq!(out.code(), Some(0), "{out}\n{}", c.logs());
        let line = out.line("child ");
        assert!(line.starts_with("child log=ab:tag ") && line.ends_with(" threads=2 counting=1"), "{out}\n{}", c.logs());
    }
}
