//! Namespaces and mounts: what a container's namespace holder and the cgroup
//! setup call, and what tests use to enter a test host's network namespace.
//!
//! Paths are `&CStr`, so that callers after a fork can pass prepared strings
//! and nothing here allocates.

use std::ffi::CStr;
use std::os::fd::{AsFd, AsRawFd};

use crate::{Result, SysError};

fn check(op: &'static str, r: libc::c_int) -> Result<()> {
    if r == 0 {
        Ok(())
    } else {
        Err(SysError::last(op))
    }
}

fn ptr_or_null(s: Option<&CStr>) -> *const libc::c_char {
    s.map_or(std::ptr::null(), CStr::as_ptr)
}

/// `mount(2)`: `None` stands for the NULL the kernel accepts for the source,
/// the file system type and the data (e.g. of a remount or a bind).
pub fn mount(source: Option<&CStr>, target: &CStr, fstype: Option<&CStr>, flags: libc::c_ulong, data: Option<&CStr>) -> Result<()> {
    // SAFETY: every pointer is NULL or a NUL-terminated string that outlives
    // the call.
    let r = unsafe { libc::mount(ptr_or_null(source), target.as_ptr(), ptr_or_null(fstype), flags, ptr_or_null(data).cast()) };
    check("mount", r)
}

/// `umount2(2)` with `flags` (e.g. `libc::MNT_DETACH`).
pub fn umount(target: &CStr, flags: libc::c_int) -> Result<()> {
    // SAFETY: a NUL-terminated string that outlives the call.
    check("umount2", unsafe { libc::umount2(target.as_ptr(), flags) })
}

/// Changes the working directory of this process.
pub fn chdir(path: &CStr) -> Result<()> {
    // SAFETY: a NUL-terminated string that outlives the call.
    check("chdir", unsafe { libc::chdir(path.as_ptr()) })
}

/// `pivot_root(2)`: makes `new_root` the root of this mount namespace and
/// puts the old root at `put_old`.
pub fn pivot_root(new_root: &CStr, put_old: &CStr) -> Result<()> {
    // SAFETY: NUL-terminated strings that outlive the call.
    let r = unsafe { libc::syscall(libc::SYS_pivot_root, new_root.as_ptr(), put_old.as_ptr()) };
    check("pivot_root", if r == 0 { 0 } else { -1 })
}

/// Sets the host name of this UTS namespace.
pub fn sethostname(name: &[u8]) -> Result<()> {
    // SAFETY: a buffer valid for reads of its length.
    check("sethostname", unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) })
}

/// Moves the calling thread into namespace `ns` of type `nstype` (e.g.
/// `libc::CLONE_NEWNET`; 0 accepts any type).
pub fn setns(ns: &impl AsFd, nstype: libc::c_int) -> Result<()> {
    // SAFETY: a descriptor borrowed for the call and an integer.
    check("setns", unsafe { libc::setns(ns.as_fd().as_raw_fd(), nstype) })
}

/// Brings network interface `name` (e.g. `lo`) of this thread's network
/// namespace up (`SIOCSIFFLAGS` with `IFF_UP`).
pub fn interface_up(name: &[u8]) -> Result<()> {
    // SAFETY: an ifreq is plain data for which all-zeroes is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    // One byte is left for the terminating NUL.
    if name.len() >= req.ifr_name.len() {
        return Err(SysError::new("interface name", libc::EINVAL));
    }
    for (dst, b) in req.ifr_name.iter_mut().zip(name) {
        *dst = libc::c_char::from_ne_bytes([*b]);
    }
    // SAFETY: plain integer arguments; returns a new descriptor we close below.
    let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if s < 0 {
        return Err(SysError::last("socket"));
    }
    // SAFETY: the ioctls read and write only `req`, a valid ifreq.
    let r = unsafe {
        let mut r = libc::ioctl(s, libc::SIOCGIFFLAGS, &mut req);
        if r == 0 {
            // IFF_UP is 1: it fits the short flags field.
            req.ifr_ifru.ifru_flags |= libc::c_short::try_from(libc::IFF_UP).unwrap_or(1);
            r = libc::ioctl(s, libc::SIOCSIFFLAGS, &req);
        }
        r
    };
    let result = check("ioctl(SIOCSIFFLAGS)", r);
    // SAFETY: `s` is the socket made above, used by nothing else.
    unsafe { libc::close(s) };
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_carry_their_errno() {
        // An unknown interface, a missing directory, a non-namespace descriptor.
        assert_eq!(interface_up(b"no-such-if0").unwrap_err().errno, libc::ENODEV);
        assert_eq!(interface_up(&[b'x'; 40]).unwrap_err().errno, libc::EINVAL);
        assert_eq!(chdir(c"/no/such/dir").unwrap_err().errno, libc::ENOENT);
        let f = std::fs::File::open("/proc/self/status").unwrap();
        assert_eq!(setns(&f, libc::CLONE_NEWNET).unwrap_err().errno, libc::EINVAL);
    }

    #[test]
    fn own_namespace_and_loopback() {
        // Entering the namespace we are in is allowed for root and changes
        // nothing; bringing up a loopback that is up is a no-op.
        if crate::process::euid() != 0 {
            return;
        }
        let ns = std::fs::File::open("/proc/thread-self/ns/net").unwrap();
        setns(&ns, libc::CLONE_NEWNET).unwrap();
        interface_up(b"lo").unwrap();
    }

    #[test]
    fn mounts_in_a_private_namespace() {
        if crate::process::euid() != 0 {
            return;
        }
        // In a forked child with its own mount namespace: a tmpfs mounted,
        // seen, and detached; nothing reaches the test's namespace.
        let dir = std::env::temp_dir().join(format!("mitosis-sys-ns-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let target = std::ffi::CString::new(dir.to_str().unwrap()).unwrap();
        let marker = std::ffi::CString::new(dir.join("m").to_str().unwrap()).unwrap();
        // SAFETY: test only: the child makes only async-signal-safe calls on
        // strings prepared before the fork.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: plain syscalls on prepared strings.
            let ok = unsafe { libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWUTS) } == 0
                && mount(None, c"/", None, libc::MS_REC | libc::MS_PRIVATE, None).is_ok()
                && mount(Some(c"tmpfs"), &target, Some(c"tmpfs"), libc::MS_NOSUID, Some(c"mode=0700")).is_ok()
                && chdir(&target).is_ok()
                // SAFETY: a prepared string; creat returns a descriptor or -1.
                && unsafe { libc::creat(marker.as_ptr(), 0o600) } >= 0
                && umount(&target, libc::MNT_DETACH).is_ok()
                && sethostname(b"mitosis-sys-test").is_ok();
            crate::after_fork::exit(if ok { 0 } else { 1 });
        }
        let status = crate::process::wait_pid(pid).unwrap();
        assert_eq!(status, 0);
        // The file went to the tmpfs, which only the child saw.
        assert!(!dir.join("m").exists());
        std::fs::remove_dir(&dir).unwrap();
    }
}
