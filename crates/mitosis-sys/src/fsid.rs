//! Opening a path without following any symbolic link, and the identity of
//! what a descriptor refers to.
//!
//! A seed's files are reopened by path in its children. Between prepare and
//! resume a user may have replaced a file, or a directory on its path, with a
//! symbolic link to something else; so the daemon opens them with
//! `openat2(RESOLVE_NO_SYMLINKS)` (which refuses a link anywhere on the path,
//! magic `/proc` links included) and compares the opened object's
//! [`Identity`] with the one recorded at prepare (the rule is
//! `mitosis_proto::image::FileIdentity::matches`). Every function here is allocation-free,
//! so that the prologue of a freshly forked child may call them.

use std::ffi::CStr;
use std::os::fd::RawFd;

/// The file-type bits of `st_mode` (`S_IFMT`) for the kinds of objects that
/// children get back.
pub const TYPE_REGULAR: u32 = libc::S_IFREG;
pub const TYPE_DIRECTORY: u32 = libc::S_IFDIR;
pub const TYPE_CHAR_DEVICE: u32 = libc::S_IFCHR;
/// A symbolic link itself, held by an `O_PATH | O_NOFOLLOW` descriptor.
pub const TYPE_SYMLINK: u32 = libc::S_IFLNK;

/// What an open object is, as `fstat` tells it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Identity {
    /// `st_mode & S_IFMT`.
    pub file_type: u32,
    pub dev: u64,
    pub ino: u64,
    /// Device number, for device nodes.
    pub rdev: u64,
    pub size: u64,
    pub mtime_sec: i64,
    pub mtime_nsec: i64,
}

impl Identity {
    fn of_stat(st: &libc::stat) -> Identity {
        Identity {
            file_type: st.st_mode & libc::S_IFMT,
            dev: st.st_dev,
            ino: st.st_ino,
            rdev: st.st_rdev,
            size: u64::try_from(st.st_size).unwrap_or(0),
            mtime_sec: st.st_mtime,
            mtime_nsec: st.st_mtime_nsec,
        }
    }
}

/// Identity of the object open at `fd`; `Err(errno)` on failure.
pub fn identity_of_fd(fd: RawFd) -> Result<Identity, i32> {
    // SAFETY: `st` is a plain C struct that fstat fills completely on success.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(fd, &mut st) != 0 {
            return Err(errno());
        }
        Ok(Identity::of_stat(&st))
    }
}

/// Identity of what `path` names, following symbolic links (the magic links
/// of `/proc/PID/fd/N` and `/proc/PID/cwd` lead to the open object itself).
pub fn identity_of_path(path: &CStr) -> Result<Identity, i32> {
    // SAFETY: `path` is NUL-terminated; `st` is filled by stat on success.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::stat(path.as_ptr(), &mut st) != 0 {
            return Err(errno());
        }
        Ok(Identity::of_stat(&st))
    }
}

/// Opens the absolute `path` with `flags`, refusing (`ELOOP`) any symbolic
/// link on the way, magic links included; never creates a file. Returns the
/// new descriptor or the errno.
pub fn open_no_symlinks(path: &CStr, flags: i32) -> Result<RawFd, i32> {
    #[repr(C)]
    struct OpenHow {
        flags: u64,
        mode: u64,
        resolve: u64,
    }
    let flags = flags & !(libc::O_CREAT | libc::O_TMPFILE | libc::O_EXCL | libc::O_TRUNC);
    let how = OpenHow {
        flags: u64::from(flags.cast_unsigned()),
        mode: 0,
        resolve: libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: openat2 reads `how` (of the size given) and the NUL-terminated path.
    let fd = unsafe {
        libc::syscall(libc::SYS_openat2, libc::AT_FDCWD, path.as_ptr(), &how as *const OpenHow, std::mem::size_of::<OpenHow>())
    };
    if fd < 0 {
        Err(errno())
    } else {
        RawFd::try_from(fd).map_err(|_| libc::EBADF)
    }
}

/// Where the symbolic link that `path` leads to points: `path` is followed
/// (so `/proc/PID/fd/N` of a descriptor holding a link with `O_PATH` gives
/// that link, even once its name is removed) and the link it ends at is
/// read. `Err(errno)` on failure (ENOENT: not a link).
pub fn link_target(path: &CStr) -> Result<Vec<u8>, i32> {
    // SAFETY: `path` is NUL-terminated; a new descriptor is returned.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(errno());
    }
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    // SAFETY: an empty path reads the link open at `fd` itself; `buf` has room for `buf.len()` bytes.
    let n = unsafe { libc::readlinkat(fd, c"".as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    let result = if n < 0 { Err(errno()) } else { Ok(n.unsigned_abs()) };
    close(fd);
    let n = result?;
    if n >= buf.len() {
        return Err(libc::ENAMETOOLONG);
    }
    buf.truncate(n);
    Ok(buf)
}

/// Closes `fd`, ignoring errors (allocation-free).
pub fn close(fd: RawFd) {
    // SAFETY: closing a descriptor this process owns; a bad one is only EBADF.
    unsafe { libc::close(fd) };
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn c(p: &std::path::Path) -> std::ffi::CString {
        std::ffi::CString::new(p.to_str().unwrap()).unwrap()
    }

    fn dir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("mitosis-fsid-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn symlinks_anywhere_on_the_path_are_refused() {
        let d = dir("links");
        std::fs::create_dir(d.join("real")).unwrap();
        std::fs::write(d.join("real/f"), b"x").unwrap();
        symlink(d.join("real/f"), d.join("link")).unwrap();
        symlink(d.join("real"), d.join("dirlink")).unwrap();
        let fd = open_no_symlinks(&c(&d.join("real/f")), libc::O_RDONLY | libc::O_CLOEXEC).unwrap();
        close(fd);
        assert_eq!(open_no_symlinks(&c(&d.join("link")), libc::O_RDONLY), Err(libc::ELOOP));
        assert_eq!(open_no_symlinks(&c(&d.join("dirlink/f")), libc::O_RDONLY), Err(libc::ELOOP));
        // O_CREAT is stripped: a missing file is not created.
        assert_eq!(open_no_symlinks(&c(&d.join("new")), libc::O_RDWR | libc::O_CREAT), Err(libc::ENOENT));
        assert!(!d.join("new").exists());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_link_held_with_o_path_is_read_through_its_descriptor_after_it_is_removed() {
        let d = dir("target");
        let link = d.join("link");
        symlink("/some/where", &link).unwrap();
        let fd = open_no_symlinks(&c(&link), libc::O_PATH | libc::O_NOFOLLOW).unwrap();
        std::fs::remove_file(&link).unwrap();
        let held = std::ffi::CString::new(format!("/proc/self/fd/{fd}")).unwrap();
        assert_eq!(link_target(&held), Ok(b"/some/where".to_vec()));
        close(fd);
        // A file is not a link.
        std::fs::write(d.join("file"), b"x").unwrap();
        assert_eq!(link_target(&c(&d.join("file"))), Err(libc::ENOENT));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn identity_of_a_descriptor_is_that_of_its_file() {
        let d = dir("ident");
        std::fs::write(d.join("a"), b"one").unwrap();
        std::fs::write(d.join("b"), b"one").unwrap();
        let a = identity_of_path(&c(&d.join("a"))).unwrap();
        let b = identity_of_path(&c(&d.join("b"))).unwrap();
        assert_eq!((a.file_type, a.size), (TYPE_REGULAR, 3));
        assert_ne!(a.ino, b.ino);
        let fd = open_no_symlinks(&c(&d.join("a")), libc::O_WRONLY | libc::O_APPEND).unwrap();
        assert_eq!(identity_of_fd(fd).unwrap(), a);
        close(fd);
        assert_eq!(identity_of_path(&c(&d)).unwrap().file_type, TYPE_DIRECTORY);
        let null = identity_of_path(c"/dev/null").unwrap();
        assert_eq!(null.file_type, TYPE_CHAR_DEVICE);
        assert_ne!(null.rdev, identity_of_path(c"/dev/zero").unwrap().rdev);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
