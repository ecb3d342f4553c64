//! Acting as another user from one thread.

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
