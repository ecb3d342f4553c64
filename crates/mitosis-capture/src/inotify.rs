//! inotify instances of the target and their watches, recorded so that
//! children get them recreated: each watch's descriptor, event mask and
//! the path of the watched file.
//!
//! An instance's fdinfo lists each watch with the watched inode's file
//! handle; the file is opened by that handle on one of the target's mounts
//! of its filesystem, and its path is the mount's mount point (as the
//! target sees it) followed by the file's place below the mount. A watch
//! whose file has no path any more (deleted), or whose handle cannot be
//! opened, is dropped with a warning. Pending events are not read.

use std::os::fd::AsRawFd;

use mitosis_proto::descriptors::{InotifyWatch, MAX_INOTIFY_WD};
use mitosis_sys::{fdstate, procfs};

/// Event and flag bits a watch keeps: `IN_ALL_EVENTS`, `IN_EXCL_UNLINK`, `IN_ONESHOT`.
const KEPT_MASK: u32 = 0xfff | 0x0400_0000 | 0x8000_0000;

/// One watch as fdinfo shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RawWatch {
    wd: i32,
    /// The kernel's `s_dev` of the watched file's filesystem (major << 20 | minor).
    sdev: u32,
    mask: u32,
    handle_type: i32,
    handle: Vec<u8>,
}

/// One of the target's mounts: its device, its root within the
/// filesystem, and its mount point.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Mount {
    major: u32,
    minor: u32,
    point: String,
}

/// The watches of the target's inotify instance (its fdinfo text) whose
/// files have a path, in order of watch descriptor.
pub(crate) fn watches(pid: i32, fd: i32, fdinfo: &str) -> Vec<InotifyWatch> {
    let mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).map(|t| parse_mountinfo(&t)).unwrap_or_default();
    let mut out: Vec<InotifyWatch> = parse_watches(fdinfo)
        .into_iter()
        .filter_map(|w| match path_of(pid, &mounts, &w) {
            Some(_) if w.wd > MAX_INOTIFY_WD => {
                tracing::warn!(pid, fd, wd = w.wd, "an inotify watch descriptor this high is not carried: the watch is dropped in children");
                None
            }
            Some(path) => Some(InotifyWatch { wd: w.wd, path, mask: w.mask & KEPT_MASK }),
            None => {
                tracing::warn!(pid, fd, wd = w.wd, "an inotify watch's file has no path on this host: the watch is dropped in children");
                None
            }
        })
        .collect();
    out.sort_by_key(|w| w.wd);
    out
}

/// The path of a watch's file as the target sees it: opened by its handle
/// on each mount of its filesystem in turn, until one has it below its
/// mount point.
fn path_of(pid: i32, mounts: &[Mount], w: &RawWatch) -> Option<String> {
    let (major, minor) = (w.sdev >> 20, w.sdev & 0xf_ffff);
    for m in mounts.iter().filter(|m| m.major == major && m.minor == minor) {
        let Ok(mount) = std::fs::File::open(format!("/proc/{pid}/root{}", m.point)) else { continue };
        let Ok(file) = fdstate::open_by_handle(&mount, w.handle_type, &w.handle) else { continue };
        let link = |fd: i32| std::fs::read_link(format!("/proc/self/fd/{fd}")).ok().map(|p| p.to_string_lossy().into_owned());
        let (Some(file_path), Some(mount_path)) = (link(file.as_raw_fd()), link(mount.as_raw_fd())) else { continue };
        if file_path.ends_with(" (deleted)") {
            return None;
        }
        let below = if mount_path == "/" { Some(file_path.as_str()) } else { file_path.strip_prefix(&mount_path) };
        let Some(below) = below.filter(|b| b.is_empty() || b.starts_with('/')) else { continue };
        let point = m.point.trim_end_matches('/');
        return Some(if below.is_empty() { m.point.clone() } else { format!("{point}{below}") });
    }
    None
}

/// The watches of an inotify fdinfo text: `inotify wd:HEX ino:HEX sdev:HEX
/// mask:HEX ignored_mask:HEX fhandle-bytes:HEX fhandle-type:HEX f_handle:HEX`.
fn parse_watches(fdinfo: &str) -> Vec<RawWatch> {
    fdinfo
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("inotify ")?;
            let get = |key: &str| rest.split_ascii_whitespace().find_map(|f| f.strip_prefix(key));
            let hex = |key: &str| u32::from_str_radix(get(key)?, 16).ok();
            let handle_hex = get("f_handle:")?;
            let handle: Option<Vec<u8>> =
                (0..handle_hex.len() / 2).map(|i| u8::from_str_radix(handle_hex.get(2 * i..2 * i + 2)?, 16).ok()).collect();
            let handle = handle?;
            (handle.len() == usize::try_from(hex("fhandle-bytes:")?).ok()?).then_some(())?;
            Some(RawWatch {
                wd: i32::try_from(hex("wd:")?).ok()?,
                sdev: hex("sdev:")?,
                mask: hex("mask:")?,
                handle_type: i32::try_from(hex("fhandle-type:")?).ok()?,
                handle,
            })
        })
        .collect()
}

/// The mounts of a mountinfo text (`ID PARENT MAJOR:MINOR ROOT POINT ...`;
/// octal escapes in the point undone).
fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_ascii_whitespace().skip(2);
            let (major, minor) = it.next()?.split_once(':')?;
            let _root = it.next()?;
            Some(Mount { major: major.parse().ok()?, minor: minor.parse().ok()?, point: procfs::unescape_mountinfo(it.next()?) })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fdinfo_watches_and_mounts_parse() {
        let fdinfo = "pos:\t0\nflags:\t02004000\nmnt_id:\t15\nino:\t1057\n\
            inotify wd:a ino:2a1 sdev:800001 mask:100 ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:a1020000d7c6b2e9\n\
            inotify wd:2 ino:2a2 sdev:2d mask:4000fff ignored_mask:0 fhandle-bytes:2 fhandle-type:81 f_handle:0102\n\
            inotify wd:3 ino:2a3 sdev:2d mask:2 ignored_mask:0 fhandle-bytes:4 fhandle-type:1 f_handle:01\n";
        assert_eq!(
            parse_watches(fdinfo),
            [
                RawWatch { wd: 10, sdev: 0x80_0001, mask: 0x100, handle_type: 1, handle: vec![0xa1, 2, 0, 0, 0xd7, 0xc6, 0xb2, 0xe9] },
                RawWatch { wd: 2, sdev: 0x2d, mask: 0x400_0fff, handle_type: 0x81, handle: vec![1, 2] },
            ],
            "a handle shorter than its length is left out"
        );
        let mountinfo = "22 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw\n\
            30 22 0:45 /sub /mnt/with\\040space rw - tmpfs tmpfs rw\n";
        assert_eq!(
            parse_mountinfo(mountinfo),
            [Mount { major: 8, minor: 1, point: "/".into() }, Mount { major: 0, minor: 45, point: "/mnt/with space".into() }]
        );
    }
}
