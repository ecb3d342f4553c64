//! Open files and file identities of a target.

use mitosis_proto::image::{FileIdentity, FileLock, LockKind, OpenFile, Remade};
use mitosis_sys::{fsid, procfs};

/// Identity of the file at `path` on this host, if it is there (following
/// symbolic links: for `/proc/PID/fd/N`, `/proc/PID/cwd` and
/// `/proc/PID/map_files/...`, the object the process has open).
pub fn identity(path: &str) -> Option<FileIdentity> {
    let path = std::ffi::CString::new(path).ok()?;
    fsid::identity_of_path(&path).ok().map(from_sys)
}

/// The wire form of an identity `fstat` gave: the prologue's, which checks
/// what capture records.
pub use mitosis_prologue::identity_from_sys as from_sys;

/// The locks and lease held through a descriptor, from its fdinfo; an
/// error for a kind a child cannot take again (an NFS delegation).
fn locks_of(fdinfo: &str) -> Result<Vec<FileLock>, String> {
    let mut locks = Vec::new();
    for l in procfs::parse_fdinfo_locks(fdinfo)? {
        let kind = match l.kind.as_str() {
            "POSIX" => LockKind::Posix,
            "OFDLCK" => LockKind::OpenFileDescription,
            "FLOCK" => LockKind::Flock,
            "LEASE" => LockKind::Lease,
            other => return Err(format!("it holds a {other} lock, which a child cannot take again")),
        };
        // A lease being given up (a break in progress) is gone by the time a child could take it.
        if l.access == "UNLCK" {
            continue;
        }
        locks.push(FileLock { kind, write: l.access == "WRITE", start: l.start, end: l.end });
    }
    Ok(locks)
}

/// The target's descriptors from 3 up: regular files, directories, devices and
/// symbolic links (held by `O_PATH`)
/// are reopened in children; anything else (sockets, pipes, eventfds, ...) is
/// closed in children and listed, so that the user is told at prepare.
/// Descriptors 0-2 are always the resumer's stdio.
///
/// A deleted directory or symbolic link is made again for a child; a
/// deleted device node only for a seed running as root (`root`: making one
/// needs `CAP_MKNOD`, and the child makes it as the seed's owner) and never
/// a terminal's (a pty's slave cannot be made).
pub fn open_files(pid: i32, root: bool) -> (Vec<OpenFile>, Vec<(i32, String)>) {
    let mut files = Vec::new();
    let mut closed = Vec::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return (files, closed) };
    let mut fds: Vec<i32> = dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect();
    fds.sort_unstable();
    for fd in fds.into_iter().filter(|&fd| fd > 2) {
        let held = format!("/proc/{pid}/fd/{fd}");
        let Ok(link) = std::fs::read_link(&held) else { continue };
        let link = link.to_string_lossy().into_owned();
        // The identity of the open object itself (the magic link leads to
        // it), not of whatever its path names now: a child gets this object
        // again or is not resumed.
        let opened = identity(&held).filter(|id| {
            [fsid::TYPE_REGULAR, fsid::TYPE_DIRECTORY, fsid::TYPE_CHAR_DEVICE, fsid::TYPE_SYMLINK].contains(&id.file_type)
        });
        let deleted = link.ends_with(" (deleted)");
        let remade = match opened {
            Some(id) if deleted && (id.file_type != fsid::TYPE_CHAR_DEVICE || (root && !is_pty_slave(id.rdev))) => remade(&held, &id),
            _ => None,
        };
        match opened {
            // A deleted directory, link or device too (its path keeps the
            // mark): a child gets one made again and deleted again, a
            // directory empty.
            Some(identity) if link.starts_with('/') && (!deleted || identity.file_type == fsid::TYPE_DIRECTORY || remade.is_some()) => {
                let fdinfo = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).unwrap_or_default();
                let (flags, pos) = procfs::parse_fdinfo(&fdinfo);
                let mut flags = flags & !(libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC | libc::O_NOCTTY);
                if identity.file_type == fsid::TYPE_SYMLINK {
                    // Only an O_PATH descriptor holds a link itself; opened again so.
                    flags |= libc::O_PATH | libc::O_NOFOLLOW;
                }
                match locks_of(&fdinfo) {
                    Ok(locks) => files.push(OpenFile { fd, path: link, flags, pos, identity, locks, remade }),
                    Err(why) => closed.push((fd, format!("{link} ({why})"))),
                }
            }
            _ => closed.push((fd, link)),
        }
    }
    (files, closed)
}

/// What a child needs to make again the deleted link or device held at
/// `held` (`/proc/PID/fd/N`); `None` for anything else.
fn remade(held: &str, identity: &FileIdentity) -> Option<Remade> {
    use std::os::unix::fs::PermissionsExt;
    match identity.file_type {
        fsid::TYPE_SYMLINK => {
            let target = fsid::link_target(&std::ffi::CString::new(held).ok()?).ok()?;
            Some(Remade::Symlink { target: String::from_utf8(target).ok()? })
        }
        fsid::TYPE_CHAR_DEVICE => {
            let permissions = std::fs::metadata(held).ok()?.permissions().mode() & 0o7777;
            Some(Remade::CharDevice { permissions })
        }
        _ => None,
    }
}

/// Whether device number `rdev` is a pty's slave (majors 136-143, Linux's
/// `UNIX98_PTY_SLAVE_MAJOR` and the seven after it).
fn is_pty_slave(rdev: u64) -> bool {
    (136..=143).contains(&libc::major(rdev))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pty_slaves_are_told_from_other_devices() {
        assert!(is_pty_slave(libc::makedev(136, 0)));
        assert!(is_pty_slave(libc::makedev(143, 7)));
        assert!(!is_pty_slave(libc::makedev(1, 3)), "/dev/null");
        assert!(!is_pty_slave(libc::makedev(5, 2)), "/dev/ptmx");
    }
}
