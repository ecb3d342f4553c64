//! Children in lean containers: what a child can see and do (hostname, its
//! own PID namespace, a read-only root with a private /tmp, no signals to
//! the host's processes), resource limits (the OOM killer at `--memory`),
//! the lifecycle (`ps`, `kill`, `--detach`) and that nothing is left behind.
//!
//! The seed is `programs/probe.c`, which answers questions about its world.

#![forbid(unsafe_code)]

mod common;

use std::time::Duration;

use common::*;
use mitosis_testkit::{cgroup_subtrees_of, dirs_below, wait_until};

/// A prepared probe on host a, seed id `probe`.
fn probe_seed(c: &Cluster) -> Proc {
    let prog = compile(&c.dir, "probe", &["-O2"]);
    let (p, pid) = c.target_in(&c.hosts.a, "probe", &[prog.to_str().unwrap()]);
    c.prepare_a(pid, "probe");
    p
}

fn answer(p: &mut Proc, cmd: &str) -> String {
    let first = cmd.split_whitespace().next().unwrap();
    let line = p.ask(cmd, &format!("{first} "));
    line[first.len() + 1..].to_string()
}

/// The pool counters and cgroup directories of daemon b show no container
/// beyond the warm ones, and b has no processes beyond its zygote, its
/// janitor and the warm holders.
fn assert_nothing_left_on_b(c: &Cluster) {
    let settled = b_settles_to_warm_containers(c);
    let ps = c.ps_on_b(false);
    assert!(settled, "containers left behind on b: {ps}\n{}", c.logs());
    let warm = ps["pool"]["warm"].as_u64().unwrap() as usize;
    let kids = descendants_of(c.b.pid());
    // The zygote, the janitor and the warm holders; no zombies, no stray processes.
    assert_eq!(kids.len(), warm + 2, "processes under daemon b: {kids:?} with {warm} warm containers");
}

fn descendants_of(pid: i32) -> Vec<(i32, char)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten() {
        let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        for child in children.split_whitespace().filter_map(|c| c.parse::<i32>().ok()) {
            let state = std::fs::read_to_string(format!("/proc/{child}/stat"))
                .ok()
                .and_then(|s| s.rsplit(')').next().and_then(|r| r.trim_start().chars().next()))
                .unwrap_or('?');
            out.push((child, state));
            out.extend(descendants_of(child));
        }
    }
    out
}

/// The child is pid 2 of its own PID namespace (the container's holder is
/// pid 1), sees only those processes, cannot signal the host's, has its own
/// hostname, a read-only root and a private, writable /tmp.
#[test]
fn child_sees_only_its_container() {
    let Some(c) = Cluster::new("container-view") else { return };
    let _parent = probe_seed(&c);
    let marker = format!("mitosis-probe-{}", std::process::id());

    let mut child = c.resume_on_b_args("probe", &["--hostname", "fn-one"]);
    assert_eq!(answer(&mut child, "hostname"), "fn-one");
    assert_eq!(answer(&mut child, "pid"), "2");
    assert_eq!(answer(&mut child, "procs"), "2", "the holder and the child only");
    let daemon_b = c.b.pid();
    assert_eq!(answer(&mut child, &format!("signal {daemon_b}")), format!("{daemon_b} ESRCH"));
    assert_eq!(answer(&mut child, &format!("write /tmp/{marker}")), format!("/tmp/{marker} ok"));
    assert!(!std::path::Path::new(&format!("/tmp/{marker}")).exists(), "the container's /tmp is the host's");
    assert_eq!(answer(&mut child, &format!("write /var/tmp/{marker}")), format!("/var/tmp/{marker} EROFS"));
    assert_eq!(answer(&mut child, &format!("write /dev/shm/{marker}")), format!("/dev/shm/{marker} ok"));
    assert!(!std::path::Path::new(&format!("/dev/shm/{marker}")).exists());
    let ps = c.ps_on_b(false);
    let container = ps["children"][0]["container"].as_str().unwrap().to_string();
    child.send("exit 0\n");
    assert_eq!(child.finish(STEP).code(), Some(0));

    // Without --hostname the hostname is the container's name.
    let mut child = c.resume_on_b("probe");
    let name = answer(&mut child, "hostname");
    assert!(name.starts_with("mitosis-") && name != container, "{name} vs {container}");
    child.send("exit 0\n");
    assert_eq!(child.finish(STEP).code(), Some(0));

    // Without a container: the host's view.
    let mut child = c.resume_on_b_args("probe", &["--no-container"]);
    assert_ne!(answer(&mut child, "pid"), "2");
    assert_eq!(answer(&mut child, &format!("signal {daemon_b}")), format!("{daemon_b} ok"));
    child.send("exit 7\n");
    assert_eq!(child.finish(STEP).code(), Some(7));
    assert_nothing_left_on_b(&c);
}

/// Past `--memory` the kernel's OOM killer ends the child; the resume says so
/// and exits 137. Within the limit the same allocation works.
#[test]
fn memory_limit_ends_the_child_by_the_oom_killer() {
    let Some(c) = Cluster::new("container-oom") else { return };
    let _parent = probe_seed(&c);
    let out = c.resume_on_b_with_args("probe", "alloc 16\nexit 0\n", &["--memory", "64M"]);
    assert_eq!(out.code(), Some(0), "{out}\n{}", c.logs());
    assert_eq!(out.lines(), ["alloc 16 ok"]);

    let out = c.resume_on_b_with_args("probe", "alloc 128\nexit 0\n", &["--memory", "48M", "--pids", "8", "--cpus", "0.5"]);
    assert_eq!(out.code(), Some(137), "{out}\n{}", c.logs());
    assert!(out.stderr.contains("OOM killer") && out.stderr.contains("48.0 MiB"), "{out}");
    assert!(out.lines().is_empty(), "{out}");
    let ps = c.ps_on_b(true);
    let ended = ps["children"].as_array().unwrap();
    assert!(ended.iter().any(|e| e["end"]["OutOfMemory"]["limit_bytes"] == 48 << 20), "{ps}");
    assert_nothing_left_on_b(&c);
}

/// `--cpus` limits the CPU time a container gets: a child busy for 600 ms
/// of wall time with `--cpus 0.2` gets well under half of it.
#[test]
fn cpu_limit_holds() {
    let Some(c) = Cluster::new("container-cpu") else { return };
    let _parent = probe_seed(&c);
    let out = c.resume_on_b_with_args("probe", "spin 600\nexit 0\n", &["--cpus", "0.2"]);
    assert_eq!(out.code(), Some(0), "{out}\n{}", c.logs());
    let cpu_ms: u64 = out.lines()[0].strip_prefix("spin ").unwrap().parse().unwrap();
    assert!(cpu_ms < 300, "with --cpus 0.2, 600 ms of spinning got {cpu_ms} ms of CPU: {out}");
    assert_nothing_left_on_b(&c);
}

/// `--pids` limits the processes of a container (the child counts).
#[test]
fn pids_limit_holds() {
    let Some(c) = Cluster::new("container-pids") else { return };
    let _parent = probe_seed(&c);
    let out = c.resume_on_b_with_args("probe", "forks 10\nexit 0\n", &["--pids", "4"]);
    assert_eq!(out.code(), Some(0), "{out}\n{}", c.logs());
    assert_eq!(out.lines(), ["forks 3"], "the child and three more: {out}");
    let out = c.resume_on_b_with("probe", "forks 10\nexit 0\n");
    assert_eq!(out.lines(), ["forks 10"], "no limit by default: {out}");
    assert_nothing_left_on_b(&c);
}

/// Orphans inside a container are reaped by its holder (pid 1): no zombies.
#[test]
fn orphans_in_a_container_are_reaped() {
    let Some(c) = Cluster::new("container-orphans") else { return };
    let _parent = probe_seed(&c);
    let mut child = c.resume_on_b("probe");
    let orphan = answer(&mut child, "orphan");
    assert!(orphan.parse::<i32>().unwrap() > 2, "{orphan}");
    assert_eq!(answer(&mut child, "procs"), "3", "holder, child and the orphan");
    // The orphan sleeps one second, then exits; pid 1 must reap it.
    let reaped = wait_until(Duration::from_secs(5), || answer(&mut child, "procs") == "2");
    assert!(reaped, "the orphan stayed in /proc (a zombie)");
    child.send("exit 0\n");
    assert_eq!(child.finish(STEP).code(), Some(0));
    assert_nothing_left_on_b(&c);
}

/// A detached child keeps running after `resume --detach` returns, writes to
/// its log, shows in `ps`, and `kill` by container name ends it and its
/// container; `ps --all` then shows how it ended.
#[test]
fn detached_child_ps_and_kill() {
    let Some(c) = Cluster::new("container-detach") else { return };
    let _parent = probe_seed(&c);
    let log = c.dir.path().join("child.log");
    let sock_b = c.b.socket().to_str().unwrap().to_string();
    let out = c.cli(&["resume", "--from", &c.a.addr(), "--id", "probe", "--socket", &sock_b, "--detach", "--log", log.to_str().unwrap()]);
    assert_eq!(out.code(), Some(0), "{out}\n{}", c.logs());
    assert!(out.stdout.starts_with("started child "), "{out}");
    assert!(wait_until(STEP, || std::fs::read_to_string(&log).unwrap_or_default().contains("eof")), "log: {:?}", std::fs::read_to_string(&log));

    let ps = c.ps_on_b(false);
    let child = &ps["children"][0];
    assert_eq!(child["detached"], true, "{ps}");
    assert_eq!(child["seed_id"], "probe", "{ps}");
    assert!(child["memory_bytes"].as_u64().unwrap() > 0, "{ps}");
    let container = child["container"].as_str().unwrap().to_string();
    let pid = child["pid"].as_i64().unwrap() as i32;
    let text = c.cli(&["ps", "--socket", &sock_b]);
    assert!(text.stdout.contains(&container) && text.stdout.contains("running (detached)"), "{text}");

    let out = c.cli(&["kill", &container, "--socket", &sock_b]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert_eq!(out.stdout.trim(), format!("killed child {pid}"));
    assert!(wait_until(STEP, || !alive(pid)), "child {pid} survived kill");
    let out = c.cli(&["kill", &container, "--socket", &sock_b]);
    assert_eq!(out.code(), Some(66), "killing it again: {out}");
    assert_nothing_left_on_b(&c);
    let ps = c.ps_on_b(true);
    assert_eq!(ps["children"][0]["end"]["Signaled"], 9, "{ps}");
}

/// Many containers one after the other (some of them crashing children):
/// every one is torn down, and the pool's counters and cgroups add up.
#[test]
fn many_containers_leave_nothing_behind() {
    let Some(c) = Cluster::new("container-churn") else { return };
    let _parent = probe_seed(&c);
    for i in 0..30 {
        let (input, code) = if i % 3 == 0 { ("signal 1\nexit 9\n", 9) } else { ("exit 0\n", 0) };
        let out = c.resume_on_b_with("probe", input);
        assert_eq!(out.code(), Some(code), "child {i}: {out}\n{}", c.logs());
    }
    assert_nothing_left_on_b(&c);
    let pool = &c.ps_on_b(false)["pool"];
    assert!(pool["created"].as_u64().unwrap() >= 30, "{pool}");
}

/// `--rootfs DIR` gives the child DIR as its root, read-only (the seed's
/// working directory, not in DIR, stays the child's, as after a fork).
#[test]
fn rootfs_directory_becomes_the_root() {
    let Some(c) = Cluster::new("container-rootfs") else { return };
    let _parent = probe_seed(&c);
    let root = c.dir.path().join("rootfs");
    for d in ["proc", "tmp", "dev"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let mut child = c.resume_on_b_args("probe", &["--rootfs", root.to_str().unwrap()]);
    // /etc does not exist in this root; on the host's (read-only) root it would be EROFS.
    assert_eq!(answer(&mut child, "write /etc/x"), "/etc/x ENOENT");
    assert_eq!(answer(&mut child, "write /x"), "/x EROFS");
    assert_eq!(answer(&mut child, "write /tmp/x"), "/tmp/x ok");
    assert_eq!(answer(&mut child, "procs"), "2");
    child.send("exit 0\n");
    assert_eq!(child.finish(STEP).code(), Some(0));

    let out = c.resume_on_b_with_args("probe", "exit 0\n", &["--rootfs", c.dir.path().join("missing").to_str().unwrap()]);
    assert_eq!(out.code(), Some(64), "{out}");
    assert_nothing_left_on_b(&c);
}

/// `--isolate-network`: the child has its own network namespace with only
/// loopback; without it, it sees host b's interfaces. Containers of that
/// kind are kept warm once asked for.
#[test]
fn isolated_network_has_only_loopback() {
    let Some(c) = Cluster::new("container-net") else { return };
    let _parent = probe_seed(&c);
    let out = c.resume_on_b_with("probe", "netdevs\nexit 0\n");
    assert_eq!(out.code(), Some(0), "{out}");
    assert_eq!(out.lines(), ["netdevs 2"], "loopback and host b's veth: {out}");
    for _ in 0..3 {
        let out = c.resume_on_b_with_args("probe", "netdevs\nexit 0\n", &["--isolate-network"]);
        assert_eq!(out.code(), Some(0), "{out}\n{}", c.logs());
        assert_eq!(out.lines(), ["netdevs 1"], "loopback only: {out}");
    }
    let warm_kinds = wait_until(Duration::from_secs(10), || {
        let pool = &c.ps_on_b(false)["pool"];
        pool["warm"].as_u64().unwrap() == 2 * pool["target"].as_u64().unwrap()
    });
    assert!(warm_kinds, "both kinds are kept warm: {}", c.ps_on_b(false));
    assert_nothing_left_on_b(&c);
}

/// `mitosis bench throughput` runs end to end (one short loop) and reports
/// every layer, and the seed host's capacity with one and two client hosts.
#[test]
fn throughput_benchmark_reports_every_layer() {
    if !mitosis_testkit::require_root() {
        return;
    }
    let out = cli(&["bench", "throughput", "--seconds", "1", "--loops", "1", "--clients", "2", "--json"]);
    assert_eq!(out.code(), Some(0), "{out}");
    let r: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("no JSON ({e}): {out}"));
    for layer in ["fork_exit", "bare_container", "latency", "resume"] {
        assert!(r[layer]["median_us"].as_f64().unwrap() > 0.0, "{layer}: {r}");
    }
    assert!(r["throughput_per_sec"].as_f64().unwrap() > 0.0, "{r}");
    assert_eq!(r["failures"], 0, "{r}");
    // The seed host's capacity, with one client host and then two.
    let runs = r["seed_host"].as_array().unwrap_or_else(|| panic!("no seed host part: {r}"));
    for (run, hosts) in runs.iter().zip([1, 2]) {
        assert_eq!(run["client_hosts"], hosts, "{r}");
        assert_eq!(run["failures"], 0, "{r}");
        for figure in ["children_per_sec", "seed_cpu_us_per_child", "pages_served_per_sec"] {
            assert!(run[figure].as_f64().unwrap() > 0.0, "{figure}: {r}");
        }
    }
}

/// A seed working in a directory of the host's /tmp (private in a
/// container) runs in a container all the same, in that directory, as a
/// forked process would.
#[test]
fn seed_working_in_tmp_keeps_its_working_directory() {
    let Some(c) = Cluster::new("container-cwd") else { return };
    let prog = compile(&c.dir, "probe", &["-O2"]);
    let work = c.dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let script = format!("cd {} && exec {}", work.display(), prog.display());
    let (_parent, pid) = c.target_in(&c.hosts.a, "probe in /tmp", &["sh", "-c", &script]);
    c.prepare_a(pid, "cwd");
    let mut child = c.resume_on_b("cwd");
    assert_eq!(answer(&mut child, "pid"), "2", "in a container");
    assert_eq!(answer(&mut child, "write relative"), "relative ok");
    assert!(work.join("relative").exists(), "the child writes where its seed worked");
    child.send("exit 0\n");
    assert_eq!(child.finish(STEP).code(), Some(0));
}

/// A daemon killed by SIGKILL cannot remove its cgroup subtree (its own and
/// its containers' directories). The next daemon started in that cgroup
/// removes it at start-up, killing a process still inside, and leaves the
/// subtree of the live daemon a (another network namespace, same cgroup)
/// alone.
#[test]
fn a_killed_daemons_cgroups_are_swept_by_the_next_one() {
    let Some(c) = Cluster::new("container-sweep") else { return };
    let _parent = probe_seed(&c);
    let mut child = c.resume_on_b("probe");
    assert_eq!(answer(&mut child, "pid"), "2", "in a container");
    let dead = c.b.pid();
    let subtrees = cgroup_subtrees_of(dead);
    assert!(!subtrees.is_empty(), "daemon b has no cgroup subtree");
    let live_a: Vec<_> = cgroup_subtrees_of(c.a.pid()).iter().flat_map(|d| dirs_below(d)).collect();
    assert!(!live_a.is_empty(), "daemon a has no cgroup subtree");

    // Its janitor would remove the directories itself (see faults.rs): it
    // is killed first, as when the OOM killer takes both, so that the sweep
    // is what is tested here.
    let janitor = c.b.janitor_pid().expect("daemon b's janitor");
    mitosis_sys::process::kill(janitor, libc::SIGKILL).unwrap();
    assert!(wait_until(STEP, || !alive(janitor)), "the janitor {janitor} survived SIGKILL");
    // SIGKILL to the daemon process only, as the OOM killer would: its
    // helpers and containers die by PDEATHSIG. It stays unreaped (its pid
    // reserved) until the Cluster goes.
    let killed = std::process::Command::new("kill").args(["-KILL", &dead.to_string()]).status().unwrap();
    assert!(killed.success());
    assert_ne!(child.wait(STEP).code(), Some(0), "{}", child.describe());
    let stale: Vec<_> = subtrees.iter().flat_map(|d| dirs_below(d)).collect();
    assert!(stale.len() > subtrees.len(), "no container directories under {subtrees:?}");
    // A process left in one of the dead daemon's container cgroups.
    let container_dir = stale.iter().find(|d| !subtrees.contains(d)).unwrap();
    let mut stray = Proc::spawn("stray", std::process::Command::new("sleep").arg("1000"));
    // A daemon another test starts meanwhile may sweep the directory first.
    let placed = std::fs::write(container_dir.join("cgroup.procs"), stray.pid().to_string()).is_ok();

    let b2 = mitosis_testkit::Daemon::start(&bin(), &c.hosts.b, &c.dir, "b2", &c.key).expect("restarting daemon b");
    let log = b2.log();
    for d in &stale {
        assert!(!d.exists(), "{} is left after a new daemon started:\n{log}", d.display());
    }
    if placed {
        assert!(wait_until(STEP, || !stray.running()), "the process left in {} survived", container_dir.display());
    }
    // Every daemon that starts sweeps, and the tests' daemons share one
    // cgroup: a daemon another test started meanwhile may have swept first
    // (or the dead daemon's janitor killed the stray); then b2 had nothing
    // left to say. (The sweep's own unit tests pin what it does.)
    let swept_by_b2 = log.contains(&format!("mitosis-{dead}"));
    if swept_by_b2 {
        assert!(log.contains("removed a dead daemon's cgroup directory"), "{log}");
    }
    for d in &live_a {
        assert!(d.exists(), "live daemon a's {} was removed:\n{log}", d.display());
    }
    assert!(!cgroup_subtrees_of(b2.pid()).is_empty(), "the new daemon has its own subtree");
    let mut again = resume_proc(&c.a.addr(), "probe", b2.socket());
    assert_eq!(answer(&mut again, "pid"), "2", "the new daemon resumes into containers");
    again.send("exit 0\n");
    assert_eq!(again.finish(STEP).code(), Some(0), "{log}");
}
