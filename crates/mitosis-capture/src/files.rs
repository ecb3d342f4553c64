//! Open files and file identities of a target.

use mitosis_proto::image::{FileIdentity, OpenFile};
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

/// The target's descriptors from 3 up: regular files, directories and devices
/// are reopened in children; anything else (sockets, pipes, eventfds, ...) is
/// closed in children and listed, so that the user is told at prepare.
/// Descriptors 0-2 are always the resumer's stdio.
pub fn open_files(pid: i32) -> (Vec<OpenFile>, Vec<(i32, String)>) {
    let mut files = Vec::new();
    let mut closed = Vec::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return (files, closed) };
    let mut fds: Vec<i32> = dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect();
    fds.sort_unstable();
    for fd in fds.into_iter().filter(|&fd| fd > 2) {
        let Ok(link) = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")) else { continue };
        let link = link.to_string_lossy().into_owned();
        // The identity of the open object itself (the magic link leads to
        // it), not of whatever its path names now: a child gets this object
        // again or is not resumed.
        let opened = identity(&format!("/proc/{pid}/fd/{fd}")).filter(|id| {
            [fsid::TYPE_REGULAR, fsid::TYPE_DIRECTORY, fsid::TYPE_CHAR_DEVICE].contains(&id.file_type)
        });
        match opened {
            Some(identity) if link.starts_with('/') && !link.ends_with(" (deleted)") => {
                let (flags, pos) = procfs::parse_fdinfo(&std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).unwrap_or_default());
                let flags = flags & !(libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC | libc::O_NOCTTY);
                files.push(OpenFile { fd, path: link, flags, pos, identity });
            }
            _ => closed.push((fd, link)),
        }
    }
    (files, closed)
}

