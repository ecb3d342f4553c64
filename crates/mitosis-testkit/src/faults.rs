//! Faults a test inflicts on its own hosts, each undone when its guard drops:
//! a cut link ([`LinkCut`]), a slow link ([`SlowLink`], `tc tbf`), a hung
//! process ([`Paused`]), a small full filesystem ([`SmallTmpfs`]); and where a daemon's cgroups are
//! ([`cgroup_subtrees_of`]), to see what a killed one left.
//!
//! They only ever touch the veth ends inside a test's own namespaces
//! ([`Host`]) and mounts on directories the test made.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

use crate::Host;

/// Runs `program args`, failing with its stderr if it does not succeed.
fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(program).args(args).output().with_context(|| format!("running `{program}`"))?;
    if !out.status.success() {
        bail!("`{program} {}` failed ({}): {}", args.join(" "), out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// The host's end of its test link is down: nothing goes in or out, and
/// nothing tells the other side (its packets are dropped silently), as when
/// a cable is pulled. Brought back up on drop.
#[derive(Debug)]
pub struct LinkCut {
    host: Host,
}

impl LinkCut {
    /// Takes `host`'s link down.
    pub fn new(host: &Host) -> anyhow::Result<LinkCut> {
        run("ip", &["-n", &host.ns, "link", "set", &host.ns, "down"])?;
        Ok(LinkCut { host: host.clone() })
    }
}

impl LinkCut {
    /// Brings the link back up and waits (up to 10 s) until the host
    /// answers a ping from `from` again (addresses are resolved anew).
    pub fn restore(self, from: &Host) -> bool {
        let host = self.host.clone();
        drop(self);
        crate::wait_until(std::time::Duration::from_secs(10), || ping(from, &host))
    }
}

/// Whether `to` answers one ping from `from` within a second.
pub(crate) fn ping(from: &Host, to: &Host) -> bool {
    Command::new("ip")
        .args(["netns", "exec", &from.ns, "ping", "-c1", "-W1", &to.ip])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

impl Drop for LinkCut {
    fn drop(&mut self) {
        // The namespace may be gone already (then so is the link).
        let _ = run("ip", &["-n", &self.host.ns, "link", "set", &self.host.ns, "up"]);
    }
}

/// What leaves the host through its test link is shaped by a token bucket
/// (`tc qdisc ... tbf`): a slow but healthy link. (`netem` may be missing
/// from the kernel; `tbf` is part of every distribution kernel.) Removed on drop.
#[derive(Debug)]
pub struct SlowLink {
    host: Host,
}

impl SlowLink {
    /// Shapes `host`'s outgoing traffic to `rate` (tc's syntax, e.g.
    /// `"4mbit"`), with a 32 KiB bucket and at most `latency` (e.g.
    /// `"200ms"`) of queue.
    pub fn new(host: &Host, rate: &str, latency: &str) -> anyhow::Result<SlowLink> {
        run("tc", &["-n", &host.ns, "qdisc", "add", "dev", &host.ns, "root", "tbf", "rate", rate, "burst", "32kb", "latency", latency])?;
        Ok(SlowLink { host: host.clone() })
    }
}

impl Drop for SlowLink {
    fn drop(&mut self) {
        let _ = run("tc", &["-n", &self.host.ns, "qdisc", "del", "dev", &self.host.ns, "root"]);
    }
}

/// A process stopped (SIGSTOP) as a hung program would be: its kernel still
/// acknowledges what comes over its connections, it answers nothing.
/// Continued (SIGCONT) on drop.
#[derive(Debug)]
pub struct Paused {
    pid: i32,
}

impl Paused {
    /// Stops `pid`.
    pub fn new(pid: i32) -> anyhow::Result<Paused> {
        mitosis_sys::process::kill(pid, libc::SIGSTOP).map_err(|e| anyhow::anyhow!("stopping {pid}: {e}"))?;
        Ok(Paused { pid })
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        let _ = mitosis_sys::process::kill(self.pid, libc::SIGCONT);
    }
}

/// A tmpfs of a few pages mounted on a fresh directory, to make a
/// filesystem full. Unmounted (lazily, should a process still hold a file
/// there) and its directory removed on drop.
#[derive(Debug)]
pub struct SmallTmpfs {
    dir: PathBuf,
}

impl SmallTmpfs {
    /// Mounts a tmpfs of `bytes` (rounded up to pages by the kernel) with
    /// room for `inodes` inodes (the root directory takes one) on `dir`,
    /// which is created and must not exist yet.
    pub fn new(dir: &Path, bytes: u64, inodes: u64) -> anyhow::Result<SmallTmpfs> {
        std::fs::create_dir(dir).with_context(|| format!("creating {}", dir.display()))?;
        let guard = SmallTmpfs { dir: dir.to_path_buf() };
        let options = format!("size={bytes},nr_inodes={inodes},mode=0755");
        run("mount", &["-t", "tmpfs", "-o", &options, "mitosis-test-tmpfs", &dir.to_string_lossy()])?;
        Ok(guard)
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Writes `name` until the filesystem is full; returns its size.
    pub fn fill(&self, name: &str) -> anyhow::Result<u64> {
        use std::io::Write;
        let mut f = std::fs::File::create(self.dir.join(name))?;
        let chunk = vec![0x5au8; 4096];
        let mut written = 0u64;
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(written)
    }
}

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        let _ = run("umount", &["-l", &self.dir.to_string_lossy()]);
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// The cgroup subtrees (`mitosis-<pid>` directories) of daemon `pid`, one
/// per hierarchy it uses, as seen from the caller's mount namespace (read
/// while the daemon lives: its `/proc/<pid>/cgroup` says where they are).
pub fn cgroup_subtrees_of(pid: i32) -> Vec<PathBuf> {
    let paths = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut out = Vec::new();
    for line in mounts.lines() {
        let Some((left, right)) = line.split_once(" - ") else { continue };
        let (Some(mount), r) = (left.split(' ').nth(4), right.split(' ').collect::<Vec<_>>()) else { continue };
        let (v2, options): (bool, Vec<&str>) = match (r[0], r.get(2)) {
            ("cgroup", Some(o)) => (false, o.split(',').collect()),
            ("cgroup2", _) => (true, Vec::new()),
            _ => continue,
        };
        for l in paths.lines() {
            let mut it = l.splitn(3, ':');
            let (Some(_), Some(ctrls), Some(path)) = (it.next(), it.next(), it.next()) else { continue };
            let ctrls: Vec<&str> = ctrls.split(',').filter(|c| !c.is_empty()).collect();
            let same = if v2 { ctrls.is_empty() } else { !ctrls.is_empty() && ctrls.iter().all(|c| options.contains(c)) };
            let dir = Path::new(mount).join(path.trim_start_matches('/')).join(format!("mitosis-{pid}"));
            if same && dir.is_dir() && !out.contains(&dir) {
                out.push(dir);
            }
        }
    }
    out
}

/// `dir` and every directory below it (none if `dir` is gone).
pub fn dirs_below(dir: &Path) -> Vec<PathBuf> {
    if !dir.is_dir() {
        return Vec::new();
    }
    let mut out = vec![dir.to_path_buf()];
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(dirs_below(&e.path()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{require_root, TestDir, TwoHosts};

    #[test]
    fn a_cut_link_comes_back_on_drop() {
        if !require_root() {
            return;
        }
        let hosts = TwoHosts::new().unwrap();
        assert!(crate::wait_until(std::time::Duration::from_secs(5), || ping(&hosts.a, &hosts.b)));
        let cut = LinkCut::new(&hosts.a).unwrap();
        assert!(!ping(&hosts.b, &hosts.a));
        assert!(cut.restore(&hosts.b));
    }

    #[test]
    fn a_slow_link_is_shaped_and_unshaped() {
        if !require_root() {
            return;
        }
        let hosts = TwoHosts::new().unwrap();
        let qdiscs = |h: &Host| String::from_utf8_lossy(&Command::new("tc").args(["-n", &h.ns, "qdisc", "show", "dev", &h.ns]).output().unwrap().stdout).into_owned();
        let slow = SlowLink::new(&hosts.a, "4mbit", "200ms").unwrap();
        assert!(qdiscs(&hosts.a).contains("tbf"), "{}", qdiscs(&hosts.a));
        drop(slow);
        assert!(!qdiscs(&hosts.a).contains("tbf"), "{}", qdiscs(&hosts.a));
    }

    #[test]
    fn a_small_tmpfs_fills_up_and_goes() {
        if !require_root() {
            return;
        }
        let dir = TestDir::new("small-tmpfs");
        let at = dir.path().join("full");
        let fs = SmallTmpfs::new(&at, 64 << 10, 16).unwrap();
        let n = fs.fill("filler").unwrap();
        assert!(n > 0 && n <= 64 << 10, "{n}");
        let e = std::fs::write(at.join("more"), b"x").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
        drop(fs);
        assert!(!at.exists());
    }
}
