//! Open files and file identities of a target.

use std::os::unix::fs::{FileTypeExt, MetadataExt};

use mitosis_proto::image::{FileIdentity, OpenFile};
use mitosis_sys::procfs;

/// Identity of the file at `path` on this host, if it is there.
pub fn identity(path: &str) -> Option<FileIdentity> {
    let md = std::fs::metadata(path).ok()?;
    Some(FileIdentity {
        dev: md.dev(),
        ino: md.ino(),
        size: md.size(),
        mtime_sec: md.mtime(),
        mtime_nsec: md.mtime_nsec(),
    })
}

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
        let reopenable = link.starts_with('/')
            && !link.ends_with(" (deleted)")
            && std::fs::metadata(&link).map(|m| m.is_file() || m.is_dir() || m.file_type().is_char_device()).unwrap_or(false);
        if reopenable {
            let (flags, pos) = procfs::parse_fdinfo(&std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).unwrap_or_default());
            let flags = flags & !(libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC | libc::O_NOCTTY);
            files.push(OpenFile { fd, path: link, flags, pos });
        } else {
            closed.push((fd, link));
        }
    }
    (files, closed)
}

