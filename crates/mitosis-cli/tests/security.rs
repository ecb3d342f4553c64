//! A hostile local user against the root daemon: files swapped between
//! prepare and resume, processes the kernel would not let the user trace,
//! and root-only requests.

mod common;

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use common::*;

fn chown_nobody(path: &Path) {
    std::os::unix::fs::chown(path, Some(65534), Some(65534)).unwrap();
}

/// A directory of nobody's with `f` ("hello\n") and `cwd/here`, plus a
/// root-only secret beside it; returns (dir, secret).
fn nobodys_files(c: &Cluster) -> (PathBuf, PathBuf) {
    let root = c.dir.path();
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir = root.join("home");
    std::fs::create_dir_all(dir.join("cwd")).unwrap();
    std::fs::write(dir.join("f"), "hello\n").unwrap();
    std::fs::write(dir.join("cwd/here"), "").unwrap();
    for p in [dir.clone(), dir.join("f"), dir.join("cwd"), dir.join("cwd/here")] {
        chown_nobody(&p);
    }
    let secret = root.join("secret");
    std::fs::write(&secret, "TOPSECRET\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    (dir, secret)
}

/// Resumes `id` on b (as root, who may resume anyone's seed: the files are
/// opened as the seed's owner all the same) and runs `input`.
fn resume(c: &Cluster, id: &str, input: &str) -> Finished {
    c.resume_on_b_with(id, input)
}

fn assert_refused(out: &Finished, needle: &str, logs: &str) {
    assert_eq!(out.code(), Some(77), "a resume that would give the child another file must be refused with 77: {out}\n{logs}");
    assert!(out.stderr.contains(needle), "the refusal must say why ({needle:?}): {out}");
    assert!(!out.stdout.contains("read "), "the child must never run: {out}");
}

/// The seed's descriptor and working directory are given back only as the
/// objects it had, reached without symbolic links and opened as its owner:
/// a symlink to a root-only file, another file, a file its owner may no
/// longer open, or a working directory swapped for a link are all refused,
/// and nothing is opened.
#[test]
fn files_swapped_after_prepare_are_refused_and_never_opened() {
    let Some(c) = Cluster::new("swapped-files") else { return };
    let holder = compile(&c.dir, "holder", &["-O2"]);
    let (dir, secret) = nobodys_files(&c);
    let mut args: Vec<&str> = NOBODY.to_vec();
    args.extend_from_slice(&[holder.to_str().unwrap(), "keep", dir.to_str().unwrap()]);
    let (mut seed, pid) = c.target_in(&c.hosts.a, "nobody's holder", &args);
    assert_eq!(seed.ask("read", "read "), "read hello");
    let out = as_nobody(&["prepare", "--pid", &pid.to_string(), "--id", "holder", "--socket", c.a.socket().to_str().unwrap()]);
    assert_eq!(out.code(), Some(0), "{out}\n{}", c.logs());

    // Untouched: the child reads and writes its file, in its directory.
    let out = resume(&c, "holder", "read\npwd\nexit 0\n");
    assert_eq!(out.stdout, "read hello\npwd here\n", "{out}\n{}", c.logs());

    let f = dir.join("f");
    let kept = dir.join("f.kept");
    std::fs::rename(&f, &kept).unwrap();

    // A symbolic link to root's secret, swapped in by the user.
    symlink(&secret, &f).unwrap();
    let out = resume(&c, "holder", "read\nappend pwned\nexit 0\n");
    assert_refused(&out, "symbolic link", &c.logs());
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "TOPSECRET\n", "the secret must be neither read nor written");
    std::fs::remove_file(&f).unwrap();

    // Another file of the user's at the same path.
    std::fs::write(&f, "other\n").unwrap();
    chown_nobody(&f);
    let out = resume(&c, "holder", "read\nexit 0\n");
    assert_refused(&out, "replaced", &c.logs());
    std::fs::remove_file(&f).unwrap();

    // The same file, which its owner may no longer open: root could.
    std::fs::rename(&kept, &f).unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o000)).unwrap();
    let out = resume(&c, "holder", "read\nexit 0\n");
    assert_refused(&out, "uid 65534", &c.logs());
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();

    // A directory on the way swapped for a link to the same directory.
    let cwd = dir.join("cwd");
    let moved = dir.join("cwd.moved");
    std::fs::rename(&cwd, &moved).unwrap();
    symlink(&moved, &cwd).unwrap();
    let out = resume(&c, "holder", "pwd\nexit 0\n");
    assert_eq!(out.code(), Some(77), "{out}");
    assert!(out.stderr.contains("working directory") && out.stderr.contains("symbolic link"), "{out}");
    std::fs::remove_file(&cwd).unwrap();
    std::fs::rename(&moved, &cwd).unwrap();

    // Everything as it was: children work again.
    let out = resume(&c, "holder", "read\npwd\nexit 0\n");
    assert_eq!(out.stdout, "read hello\npwd here\n", "{out}\n{}", c.logs());
    assert_eq!(seed.ask("read", "read "), "read hello");
}

/// An unprivileged user may prepare only what the kernel would let it
/// trace: not a process with root in any uid or gid, not a non-dumpable
/// one, not one holding capabilities the user lacks (77, with the reason).
#[test]
fn prepare_follows_the_kernels_ptrace_rules() {
    let Some(c) = Cluster::new("ptrace-rules") else { return };
    let holder = compile(&c.dir, "holder", &["-O2"]);
    let (dir, _) = nobodys_files(&c);
    let sock = c.a.socket().to_str().unwrap().to_string();
    let cases = [
        ("nondumpable", Some("not dumpable")),
        ("saved-root-uid", Some("uids [0, 65534, 0]")),
        ("saved-root-gid", Some("gids [0, 65534, 0]")),
        ("caps", Some("capabilities")),
        ("plain", None),
    ];
    for (mode, refusal) in cases {
        let (mut p, pid) = c.target_in(&c.hosts.a, mode, &[holder.to_str().unwrap(), mode, dir.to_str().unwrap()]);
        let out = as_nobody(&["prepare", "--pid", &pid.to_string(), "--id", mode, "--socket", &sock]);
        match refusal {
            Some(why) => {
                assert_eq!(out.code(), Some(77), "{mode}: {out}\n{}", c.logs());
                assert!(out.stderr.contains(why), "{mode}: the refusal must say {why:?}: {out}");
            }
            None => assert_eq!(out.code(), Some(0), "{mode}: {out}\n{}", c.logs()),
        }
        // Refused or not, the process is unharmed.
        assert_eq!(p.ask("read", "read "), "read hello", "{mode}");
    }
    let out = as_nobody(&["ls", "--json", "--socket", &sock]);
    let seeds: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let ids: Vec<&str> = seeds.as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["plain"], "{out}");
}

/// The benchmark hook that has root build a container is root's alone.
#[test]
fn unprivileged_bare_container_is_refused() {
    let Some(c) = Cluster::new("bare-container") else { return };
    let sock = c.b.socket().to_path_buf();
    let asked = std::thread::spawn(move || {
        mitosis_sys::creds::become_user_in_this_thread(65534, 65534).unwrap();
        let mut client = mitosis::Client::connect(&sock).unwrap();
        client.bare_container(&Default::default())
    })
    .join()
    .unwrap();
    let err = asked.expect_err("nobody must not get a bare container");
    assert_eq!(err.exit_code(), 77, "{err}");
    // Root still gets one.
    let sock = c.b.socket().to_path_buf();
    let mut client = mitosis::Client::connect(&sock).unwrap();
    client.bare_container(&Default::default()).unwrap();
}

/// A child's own fork outlives its parent, and the daemon that serves its
/// pages is SIGKILLed while it is still reading them: it must die, never
/// read a zero page for a page it has not got yet. (The janitor keeps its
/// userfaultfd, so its faults wait, and kills everything in the child's
/// cgroup.)
#[test]
fn grandchild_of_a_killed_daemon_dies_and_never_reads_zeros() {
    let Some(c) = Cluster::new("grandchild") else { return };
    let prog = compile(&c.dir, "grandchild", &["-O2"]);
    let (_seed, pid) = c.target_in(&c.hosts.a, "grandchild seed", &[prog.to_str().unwrap(), "64"]);
    c.prepare_a(pid, "gc");
    let mut child = c.resume_on_b_args("gc", &["--no-container", "--no-working-set"]);
    child.send("fork\n");
    let forked = child.expect_prefix("forked ", STEP);
    let gc: i32 = forked["forked ".len()..].trim().parse().unwrap();
    // It is reading remote pages now.
    while child.expect_prefix("gc progress ", STEP) != "gc progress 64" {}
    assert!(alive(gc));
    mitosis_sys::process::kill(c.b.pid(), libc::SIGKILL).unwrap();
    assert!(
        mitosis_testkit::wait_until(std::time::Duration::from_secs(10), || !alive(gc)),
        "grandchild {gc} outlived the daemon that served its pages"
    );
    let mut rest = Vec::new();
    while let Some(line) = child.line(std::time::Duration::from_secs(2)) {
        rest.push(line);
    }
    assert!(!rest.iter().any(|l| l.starts_with("WRONG") || l.starts_with("gc done")), "the grandchild went on after its pager died: {rest:?}");
}
