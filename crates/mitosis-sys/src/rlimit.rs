//! Resource limits.
//!
//! The descriptor limit (`RLIMIT_NOFILE`): a daemon that holds one descriptor
//! per connection raises its soft limit so that its connection caps, not the
//! limit, decide who is served; tests that hold thousands of connections do
//! the same.
//!
//! Another process's limits ([`of_process`]), which prepare records so that
//! a child gets its seed's limits (a child sets them itself, with
//! `after_fork::set_rlimit`).

use crate::{Result, SysError};

fn get() -> Result<libc::rlimit> {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `r` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return Err(SysError::last("getrlimit(RLIMIT_NOFILE)"));
    }
    Ok(r)
}

/// This process's (soft, hard) descriptor limits.
pub fn nofile() -> Result<(u64, u64)> {
    let r = get()?;
    Ok((r.rlim_cur, r.rlim_max))
}

/// Raises the soft descriptor limit to at least `want` where the hard limit
/// allows; a process with `CAP_SYS_RESOURCE` raises the hard limit too (up to
/// the kernel's `nr_open`). Never lowers either. Returns the soft limit now
/// in force.
pub fn raise_nofile(want: u64) -> Result<u64> {
    let mut r = get()?;
    if r.rlim_cur >= want {
        return Ok(r.rlim_cur);
    }
    if r.rlim_max < want {
        let raised = libc::rlimit { rlim_cur: want, rlim_max: want };
        // SAFETY: a valid rlimit; failure (no privilege, over nr_open) leaves the limits as they were.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return Ok(want);
        }
    }
    r.rlim_cur = want.min(r.rlim_max);
    // SAFETY: a valid rlimit with soft <= hard.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) } != 0 {
        return Err(SysError::last("setrlimit(RLIMIT_NOFILE)"));
    }
    Ok(r.rlim_cur)
}

/// Number of resources (`RLIM_NLIMITS`): `RLIMIT_CPU` (0) to `RLIMIT_RTTIME` (15).
pub const COUNT: u32 = 16;

/// Process `pid`'s (soft, hard) limit of `resource` (`prlimit64` with no new
/// limit; `RLIM_INFINITY` is `u64::MAX`). The kernel allows this for
/// oneself, for a process of the same uids and gids, or with
/// `CAP_SYS_RESOURCE` (EPERM otherwise: see [`of_process`]).
pub fn prlimit(pid: i32, resource: u32) -> Result<(u64, u64)> {
    let mut old = libc::rlimit64 { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: no new limit is passed; `old` is a valid, writable rlimit64.
    let r = unsafe { libc::syscall(libc::SYS_prlimit64, pid, resource, std::ptr::null::<libc::rlimit64>(), &mut old as *mut libc::rlimit64) };
    if r != 0 {
        return Err(SysError::last("prlimit64"));
    }
    Ok((old.rlim_cur, old.rlim_max))
}

/// Every limit of process `pid`, as `(resource, soft, hard)` for resources
/// 0 to [`COUNT`] - 1: with [`prlimit`], or where that is refused (EPERM: a
/// process of another user, read by a root without `CAP_SYS_RESOURCE`) from
/// `/proc/PID/limits`, which shows the same values to whoever may read it.
pub fn of_process(pid: i32) -> Result<Vec<(u32, u64, u64)>> {
    let mut out = Vec::with_capacity(COUNT as usize);
    for resource in 0..COUNT {
        match prlimit(pid, resource) {
            Ok((soft, hard)) => out.push((resource, soft, hard)),
            Err(e) if e.errno == libc::EPERM => {
                let text = std::fs::read_to_string(format!("/proc/{pid}/limits"))
                    .map_err(|e| SysError::new("read /proc/PID/limits", e.raw_os_error().unwrap_or(libc::EIO)))?;
                return crate::procfs::parse_limits(&text).map_err(|_| SysError::new("parse /proc/PID/limits", libc::EINVAL));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_of_a_process_by_syscall_and_by_proc_agree() {
        let me = i32::try_from(std::process::id()).unwrap();
        let all = of_process(me).unwrap();
        assert_eq!(all.len(), COUNT as usize);
        let (soft, hard) = nofile().unwrap();
        assert_eq!(all[libc::RLIMIT_NOFILE as usize], (libc::RLIMIT_NOFILE, soft, hard));
        let text = std::fs::read_to_string("/proc/self/limits").unwrap();
        assert_eq!(crate::procfs::parse_limits(&text).unwrap(), all);
        assert_eq!(prlimit(me, COUNT).unwrap_err().errno, libc::EINVAL);
        assert_eq!(prlimit(i32::MAX, 0).unwrap_err().errno, libc::ESRCH);
    }

    #[test]
    fn raising_to_the_current_soft_limit_changes_nothing() {
        let (soft, hard) = nofile().unwrap();
        assert!(soft <= hard);
        assert_eq!(raise_nofile(soft).unwrap(), soft);
        assert_eq!(raise_nofile(soft.min(hard)).unwrap(), soft);
        assert_eq!(nofile().unwrap(), (soft, hard));
    }
}
