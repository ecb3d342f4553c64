//! Acting as another user from one thread, and looking users up.

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

/// A local user's ids, as the system's user database (NSS) gives them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserIds {
    pub uid: u32,
    pub gid: u32,
    /// Every group the user is in, the primary one included.
    pub groups: Vec<u32>,
}

/// Looks up user `name` (`getpwnam_r`, then `getgrouplist`). `NotFound` when
/// there is no such user.
pub fn lookup_user(name: &str) -> std::io::Result<UserIds> {
    let cname = std::ffi::CString::new(name).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let mut buf = vec![0u8; 16 << 10];
    // SAFETY: a zeroed passwd (integers and null pointers) is a valid value to be overwritten.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    loop {
        // SAFETY: `cname` is NUL-terminated; `pwd`, `buf` (of its length) and
        // `found` are valid for writes for the duration of the call.
        let r = unsafe { libc::getpwnam_r(cname.as_ptr(), &mut pwd, buf.as_mut_ptr().cast(), buf.len(), &mut found) };
        match r {
            0 => break,
            libc::ERANGE if buf.len() < 1 << 20 => buf.resize(buf.len() * 4, 0),
            e => return Err(std::io::Error::from_raw_os_error(e)),
        }
    }
    if found.is_null() {
        return Err(std::io::Error::new(std::io::ErrorKind::NotFound, format!("no user {name:?}")));
    }
    let (uid, gid) = (pwd.pw_uid, pwd.pw_gid);
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut n = libc::c_int::try_from(groups.len()).unwrap_or(libc::c_int::MAX);
        // SAFETY: `cname` is NUL-terminated; `groups` holds `n` gids the call may write.
        let r = unsafe { libc::getgrouplist(cname.as_ptr(), gid, groups.as_mut_ptr(), &mut n) };
        let n = usize::try_from(n).unwrap_or(0);
        if r >= 0 {
            groups.truncate(n);
            break;
        }
        if n <= groups.len() || n > 1 << 16 {
            return Err(std::io::Error::other(format!("cannot list the groups of user {name:?}")));
        }
        groups.resize(n, 0);
    }
    groups.sort_unstable();
    groups.dedup();
    Ok(UserIds { uid, gid, groups })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_are_looked_up() {
        let root = lookup_user("root").unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
        assert!(root.groups.contains(&0));
        assert_eq!(lookup_user("no-such-user-mitosis").unwrap_err().kind(), std::io::ErrorKind::NotFound);
    }
}
