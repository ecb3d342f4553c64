//! The namespace holder: the first process (PID 1) of a container's PID
//! namespace, which also owns its mount, UTS and IPC (and optionally network)
//! namespaces and keeps them alive while children join them with `setns`.
//!
//! The zygote forks it with the namespace flags of [`HolderSpec::clone_flags`]
//! and calls [`holder_main`]. The holder sets up the container's file system
//! view, reports on its `ready` pipe, then waits on its `control` pipe: when
//! the daemon closes the other end (the container is dropped, or the daemon
//! died), it exits, and the kernel kills every process left in its PID
//! namespace. As PID 1 it reaps orphans (SIGCHLD ignored: the kernel reaps).

use std::ffi::CString;
use std::os::fd::RawFd;

use mitosis_sys::{after_fork, ns, procfs, SysError};
use serde::{Deserialize, Serialize};

/// What kind of container a holder makes. Containers of the default kind
/// (host root read-only, host network) are kept warm in the pool.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HolderSpec {
    /// The container's root: a directory made read-only (with private /tmp,
    /// /dev/shm and /proc) and pivoted into; `None` is the host's root made
    /// read-only the same way.
    pub rootfs: Option<String>,
    /// An own network namespace (only loopback, brought up).
    pub network: bool,
}

impl HolderSpec {
    /// `clone` flags of the holder.
    pub fn clone_flags(&self) -> i32 {
        let base = libc::CLONE_NEWPID | libc::CLONE_NEWNS | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC;
        if self.network {
            base | libc::CLONE_NEWNET
        } else {
            base
        }
    }

    /// The namespaces a child joins through the holder's pidfd (its PID
    /// namespace is entered by whoever forks it).
    pub fn join_flags(&self) -> i32 {
        self.clone_flags() & !libc::CLONE_NEWPID
    }
}

/// Mount flags that a read-only remount keeps, by their mountinfo names.
const KEPT_FLAGS: [(&str, libc::c_ulong); 6] = [
    ("nosuid", libc::MS_NOSUID),
    ("nodev", libc::MS_NODEV),
    ("noexec", libc::MS_NOEXEC),
    ("noatime", libc::MS_NOATIME),
    ("nodiratime", libc::MS_NODIRATIME),
    ("relatime", libc::MS_RELATIME),
];

/// Mount points and per-mount flags from mountinfo, with octal escapes decoded.
fn mount_points(mountinfo: &str) -> Vec<(String, libc::c_ulong)> {
    mountinfo
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let point = procfs::unescape_mountinfo(f.get(4)?);
            let opts = f.get(5)?;
            let flags = opts
                .split(',')
                .filter_map(|o| KEPT_FLAGS.iter().find(|(n, _)| *n == o).map(|(_, f)| *f))
                .fold(0, |a, b| a | b);
            Some((point, flags))
        })
        .collect()
}

/// Is `point` below (or at) `dir`?
fn under(point: &str, dir: &str) -> bool {
    point == dir || point.strip_prefix(dir).is_some_and(|rest| rest.starts_with('/'))
}

fn c(s: &str) -> CString {
    CString::new(s).unwrap_or_default()
}

/// The message of a failed step: what was done, then the system's error.
fn failed(what: &str) -> impl FnOnce(SysError) -> String + '_ {
    move |e| format!("{what}: {}", std::io::Error::from_raw_os_error(e.errno))
}

/// `mount(2)`; an empty source, type or data is passed as NULL.
fn mount(src: &str, target: &str, fstype: &str, flags: libc::c_ulong, data: &str) -> Result<(), String> {
    let (s, t, f, d) = (c(src), c(target), c(fstype), c(data));
    fn some(c: &CString) -> Option<&std::ffi::CStr> {
        (!c.is_empty()).then_some(c.as_c_str())
    }
    ns::mount(some(&s), &t, some(&f), flags, some(&d)).map_err(failed(&format!("mount {fstype} on {target}")))
}

/// Private /tmp and /dev/shm, and a /proc of the container's PID namespace,
/// under `root` ("" for the current root).
fn private_mounts(root: &str) -> Result<(), String> {
    let nosuid_nodev = libc::MS_NOSUID | libc::MS_NODEV;
    for (dir, fstype, flags, data) in [
        ("/proc", "proc", nosuid_nodev | libc::MS_NOEXEC, ""),
        ("/tmp", "tmpfs", nosuid_nodev, "mode=1777"),
        ("/dev/shm", "tmpfs", nosuid_nodev, "mode=1777"),
    ] {
        let target = format!("{root}{dir}");
        if std::path::Path::new(&target).is_dir() {
            mount(fstype, &target, fstype, flags, data)?;
        }
    }
    Ok(())
}

/// The host's root, read-only: every mount of this (new, private) mount
/// namespace remounted read-only, except /proc and /dev (device nodes stay
/// usable); then the private mounts on top.
fn host_root_read_only() -> Result<(), String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| format!("reading mountinfo: {e}"))?;
    for (point, flags) in mount_points(&info) {
        if under(&point, "/proc") || under(&point, "/dev") {
            continue;
        }
        let r = mount("", &point, "", libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | flags, "");
        // A mount hidden under another one cannot be reached by its path; the
        // one on top is remounted in its own turn. The root must succeed.
        if point == "/" {
            r?;
        }
    }
    private_mounts("")
}

/// `rootfs` as the root, read-only, with the private mounts and the host's /dev.
fn pivot_into(rootfs: &str) -> Result<(), String> {
    mount(rootfs, rootfs, "", libc::MS_BIND | libc::MS_REC, "")?;
    private_mounts(rootfs)?;
    let dev = format!("{rootfs}/dev");
    if std::path::Path::new(&dev).is_dir() {
        mount("/dev", &dev, "", libc::MS_BIND | libc::MS_REC, "")?;
        // /dev/shm came with the host's /dev: replace it by a private one.
        let shm = format!("{dev}/shm");
        if std::path::Path::new(&shm).is_dir() {
            mount("tmpfs", &shm, "tmpfs", libc::MS_NOSUID | libc::MS_NODEV, "mode=1777")?;
        }
    }
    // pivot_root(".", ".") stacks the old root on top of the new one;
    // detaching it leaves the new root alone.
    ns::chdir(&c(rootfs)).map_err(failed("chdir into the rootfs"))?;
    ns::pivot_root(c".", c".").map_err(failed("pivot_root"))?;
    ns::umount(c".", libc::MNT_DETACH).map_err(failed("detaching the old root"))?;
    ns::chdir(c"/").map_err(failed("chdir /"))?;
    mount("", "/", "", libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY, "")
}

/// Brings the loopback interface of a new network namespace up.
fn loopback_up() -> Result<(), String> {
    ns::interface_up(b"lo").map_err(failed("bringing up lo"))
}

fn setup(spec: &HolderSpec, hostname: &str) -> Result<(), String> {
    // Nothing mounted here may propagate back to the host.
    mount("", "/", "", libc::MS_REC | libc::MS_PRIVATE, "")?;
    match &spec.rootfs {
        Some(dir) => pivot_into(dir)?,
        None => host_root_read_only()?,
    }
    ns::sethostname(hostname.as_bytes()).map_err(failed("sethostname"))?;
    if spec.network {
        loopback_up()?;
    }
    Ok(())
}

/// Runs in the freshly cloned holder (forked from a single-threaded process,
/// so it may allocate). Writes "ok" or an error message to `ready` and closes
/// it; then lives until `control` reaches end of file.
pub fn holder_main(spec: &HolderSpec, hostname: &str, control: RawFd, ready: RawFd) -> ! {
    // Neither can fail with these constant arguments; a holder without them
    // would still work (the daemon closes `control` when it goes).
    let _ = after_fork::set_parent_death_signal(libc::SIGKILL);
    let _ = after_fork::ignore_signal(libc::SIGCHLD);
    let answer = match setup(spec, hostname) {
        Ok(()) => "ok".to_string(),
        Err(e) => e,
    };
    // The daemon reads this answer; if it cannot arrive, the daemon sees the
    // pipe close without "ok" and gives up on this holder.
    let _ = after_fork::write_all(ready, answer.as_bytes());
    after_fork::close(ready);
    if answer != "ok" {
        after_fork::exit(1);
    }
    // Close everything else the zygote had, so the holder pins nothing.
    let _ = after_fork::close_all_except(control);
    after_fork::wait_for_eof(control);
    after_fork::exit(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_points_and_flags() {
        let mi = "23 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw\n\
                  24 23 0:5 / /dev rw,nosuid - devtmpfs udev rw\n\
                  25 23 0:6 / /my\\040dir rw,nosuid,nodev,noexec - tmpfs t rw\n";
        let p = mount_points(mi);
        assert_eq!(p[0], ("/".to_string(), libc::MS_RELATIME));
        assert_eq!(p[1], ("/dev".to_string(), libc::MS_NOSUID));
        assert_eq!(p[2], ("/my dir".to_string(), libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC));
    }

    #[test]
    fn under_is_by_path_component() {
        assert!(under("/proc", "/proc"));
        assert!(under("/proc/sys/fs/binfmt_misc", "/proc"));
        assert!(!under("/procx", "/proc"));
    }

    #[test]
    fn join_flags_leave_the_pid_namespace_to_the_forker() {
        let spec = HolderSpec { rootfs: None, network: true };
        assert_eq!(spec.join_flags() & libc::CLONE_NEWPID, 0);
        assert_ne!(spec.join_flags() & libc::CLONE_NEWNET, 0);
        assert_ne!(spec.clone_flags() & libc::CLONE_NEWPID, 0);
    }
}
