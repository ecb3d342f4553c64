//! The descriptor limit (`RLIMIT_NOFILE`): a daemon that holds one descriptor
//! per connection raises its soft limit so that its connection caps, not the
//! limit, decide who is served; tests that hold thousands of connections do
//! the same.

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raising_to_the_current_soft_limit_changes_nothing() {
        let (soft, hard) = nofile().unwrap();
        assert!(soft <= hard);
        assert_eq!(raise_nofile(soft).unwrap(), soft);
        assert_eq!(raise_nofile(soft.min(hard)).unwrap(), soft);
        assert_eq!(nofile().unwrap(), (soft, hard));
    }
}
