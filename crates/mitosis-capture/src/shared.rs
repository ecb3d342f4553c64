//! Shared anonymous memory of a target: deciding whether a child may have
//! it, and freezing its content at the prepare instant in the snapshot.
//!
//! A `MAP_SHARED | MAP_ANONYMOUS` mapping (or a shared mapping of
//! `/dev/zero`, the same thing in the kernel) is a shmem object. Its
//! identity is the object's inode, which `/proc/PID/maps` shows for every
//! process mapping it. Children get such a mapping only if no other process
//! maps the object at prepare: its whole state is then the target's, and a
//! child gets fresh shared anonymous memory with that content (shared
//! again with the child's own forks). Memory shared with a process that
//! stays behind is refused with a message naming that process.
//!
//! Content: the snapshot is a fork of the target, so it maps the very same
//! object, and whatever the target writes after the prepare would show
//! through it. Prepare therefore reads the object's content while the
//! target is stopped (through `/proc/PID/map_files`, only the runs that
//! hold data: holes are neither read nor allocated) and, once the snapshot
//! exists, replaces the snapshot's mapping with private anonymous memory
//! holding that content. Children then fetch it like any anonymous page.
//! The copy costs the object's written size once per seed, in the snapshot.
//!
//! Race left open: a process that forks from one that maps the object, and
//! then unmaps it while the scan of `/proc` runs, can be missed (the target
//! itself is stopped and cannot hand the object on meanwhile).

use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::FileExt;

use mitosis_sys::procfs::MapsEntry;
use mitosis_sys::ptrace::{Regs, Tracee};
use mitosis_sys::{mem, usize_of, SysError};

use crate::CaptureError;

/// Whether `m` is shared anonymous memory (a shmem object without a name
/// of its own; `/proc` names it after the `/dev/zero` it stands for).
pub(crate) fn is_shared_anon(m: &MapsEntry) -> bool {
    m.shared && m.inode != 0 && m.name == "/dev/zero (deleted)"
}

/// One shared anonymous mapping and its content at the prepare instant.
pub(crate) struct SharedMapping {
    start: u64,
    end: u64,
    prot: i32,
    /// (address, bytes) of the runs that hold data; the rest reads as zero.
    data: Vec<(u64, Vec<u8>)>,
}

/// The target's shared anonymous mappings with their content, read while it
/// is stopped, after checking that no other process maps any of them.
pub(crate) fn read_shared_anon(pid: i32, maps: &[MapsEntry]) -> Result<Vec<SharedMapping>, CaptureError> {
    let ours: Vec<&MapsEntry> = maps.iter().filter(|m| is_shared_anon(m)).collect();
    if ours.is_empty() {
        return Ok(Vec::new());
    }
    check_sole_mapper(pid, &ours)?;
    let mut out = Vec::with_capacity(ours.len());
    for m in ours {
        let step = "reading shared anonymous memory";
        let file = File::open(format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end))
            .map_err(|e| CaptureError::Sys { step, source: SysError::new("open map_files", e.raw_os_error().unwrap_or(libc::EIO)) })?;
        let len = m.end - m.start;
        let mut data = Vec::new();
        for (s, e) in mem::data_runs(&file, m.offset, m.offset + len).map_err(CaptureError::sys(step))? {
            let mut bytes = vec![0u8; usize_of(e - s)];
            file.read_exact_at(&mut bytes, s)
                .map_err(|e| CaptureError::Sys { step, source: SysError::new("read map_files", e.raw_os_error().unwrap_or(libc::EIO)) })?;
            data.push((m.start + (s - m.offset), bytes));
        }
        let prot = (i32::from(m.read) * libc::PROT_READ) | (i32::from(m.write) * libc::PROT_WRITE) | (i32::from(m.exec) * libc::PROT_EXEC);
        out.push(SharedMapping { start: m.start, end: m.end, prot, data });
    }
    Ok(out)
}

/// Refuses if any process but `pid` maps one of the shmem objects of `ours`
/// (the kernel's identity: device and inode in every `/proc/PID/maps`).
fn check_sole_mapper(pid: i32, ours: &[&MapsEntry]) -> Result<(), CaptureError> {
    let wanted: HashSet<(u32, u32, u64)> = ours.iter().map(|m| (m.dev_major, m.dev_minor, m.inode)).collect();
    let Ok(dir) = std::fs::read_dir("/proc") else { return Ok(()) };
    for entry in dir.flatten() {
        let Some(other) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        if other == pid {
            continue;
        }
        // Gone meanwhile, or a kernel thread: maps nothing.
        let Ok(text) = std::fs::read_to_string(format!("/proc/{other}/maps")) else { continue };
        if let Some(inode) = text.lines().find_map(|line| shared_object_of(line).filter(|id| wanted.contains(id))) {
            let m = ours.iter().find(|m| (m.dev_major, m.dev_minor, m.inode) == inode).expect("wanted comes from ours");
            let comm = std::fs::read_to_string(format!("/proc/{other}/comm")).unwrap_or_default();
            return Err(CaptureError::Unsupported {
                pid,
                what: format!(
                    "shared anonymous memory {:#x}-{:#x} is also mapped by process {other} ({}): memory shared with a process that stays behind cannot be given to children",
                    m.start,
                    m.end,
                    comm.trim()
                ),
            });
        }
    }
    Ok(())
}

/// The (device major, minor, inode) of a shared mapping's line of
/// `/proc/PID/maps`, or `None` for a private or unparsable one.
fn shared_object_of(line: &str) -> Option<(u32, u32, u64)> {
    let mut it = line.split_ascii_whitespace();
    let _range = it.next()?;
    let perms = it.next()?;
    if perms.as_bytes().get(3) != Some(&b's') {
        return None;
    }
    let _offset = it.next()?;
    let (major, minor) = it.next()?.split_once(':')?;
    let inode = it.next()?.parse().ok()?;
    Some((u32::from_str_radix(major, 16).ok()?, u32::from_str_radix(minor, 16).ok()?, inode))
}

/// Replaces each of `shared` in the snapshot (stopped under ptrace, `regs`
/// its registers, `gadget` a `syscall` instruction) with private anonymous
/// memory holding the content read at the prepare instant.
pub(crate) fn privatize(snap: &Tracee, regs: &Regs, gadget: u64, shared: &[SharedMapping]) -> Result<(), CaptureError> {
    if shared.is_empty() {
        return Ok(());
    }
    let step = "giving the snapshot its own copy of shared anonymous memory";
    let no_events = |_: &Tracee, _: i32| Ok(());
    let memory = mem::ProcMem::open(snap.pid(), true).map_err(CaptureError::sys(step))?;
    for m in shared {
        let flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED).unsigned_abs();
        let prot = u64::from(m.prot.unsigned_abs());
        let r = snap
            .inject_syscall(regs, gadget, libc::SYS_mmap, &[m.start, m.end - m.start, prot, u64::from(flags), u64::MAX, 0], no_events)
            .map_err(CaptureError::sys(step))?;
        if r != mitosis_sys::signed(m.start) {
            let errno = if r < 0 { crate::errno_of(r) } else { libc::EINVAL };
            return Err(CaptureError::Sys { step, source: SysError::new("mmap in the snapshot", errno) });
        }
        // Through /proc/PID/mem, which writes also where the mapping is not
        // writable (copy-on-write of a private mapping).
        for (addr, bytes) in &m.data {
            memory.write_all_at(bytes, *addr).map_err(CaptureError::sys(step))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_objects_are_read_from_maps_lines() {
        let line = "7f35a0000000-7f35a0001000 rw-s 00000000 00:01 1234                       /dev/zero (deleted)";
        assert_eq!(shared_object_of(line), Some((0, 1, 1234)));
        let memfd = "7f35a0000000-7f35a0001000 r--s 00002000 00:1a 99 /memfd:x (deleted)";
        assert_eq!(shared_object_of(memfd), Some((0, 0x1a, 99)));
        assert_eq!(shared_object_of("7f35a0000000-7f35a0001000 rw-p 00000000 00:00 0"), None, "private");
        assert_eq!(shared_object_of("garbage"), None);
    }

    #[test]
    fn only_anonymous_shared_memory_is_shared_anon() {
        let m = |shared, inode, name: &str| MapsEntry {
            start: 0,
            end: 4096,
            read: true,
            write: true,
            exec: false,
            shared,
            offset: 0,
            dev_major: 0,
            dev_minor: 1,
            inode,
            name: name.into(),
        };
        assert!(is_shared_anon(&m(true, 5, "/dev/zero (deleted)")));
        assert!(!is_shared_anon(&m(false, 5, "/dev/zero (deleted)")), "private");
        assert!(!is_shared_anon(&m(true, 5, "/memfd:x (deleted)")));
        assert!(!is_shared_anon(&m(true, 5, "/SYSV00000000 (deleted)")));
    }
}
