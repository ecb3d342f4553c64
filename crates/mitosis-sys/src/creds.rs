//! This process's own credentials.

/// Whether this process runs as root (real uid 0).
pub fn is_root() -> bool {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() == 0 }
}

/// Makes the calling thread (only it: the raw syscalls, not glibc's
/// process-wide wrappers) act as `uid`/`gid` with no supplementary groups,
/// for good. A socket it connects then carries those credentials
/// (`SO_PEERCRED`): how a test acts as another local user from one thread.
pub fn become_user_in_this_thread(uid: u32, gid: u32) -> std::io::Result<()> {
    // SAFETY: raw credential syscalls with plain integer arguments; they
    // change only the calling thread's credentials.
    let failed = unsafe {
        libc::syscall(libc::SYS_setgroups, 0usize, std::ptr::null::<libc::gid_t>()) != 0
            || libc::syscall(libc::SYS_setresgid, gid, gid, gid) != 0
            || libc::syscall(libc::SYS_setresuid, uid, uid, uid) != 0
    };
    if failed {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn root_is_uid_zero() {
        let uid = std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("Uid:").map(|v| v.split_whitespace().next().unwrap().to_string()))
            .unwrap();
        assert_eq!(super::is_root(), uid == "0");
    }
}
