//! Unix sockets whose whole state is inside the target, recorded so that
//! children get them recreated: pairs whose two sockets are both the
//! target's and unnamed (`socketpair`), with what is queued on each side,
//! and sockets that are not connected (unbound, bound, listening).
//!
//! Which socket is whose peer, its name and state come from the kernel's
//! socket diagnostics (`unix_diag`, asked in the socket's own network
//! namespace); queued messages are peeked through a copy of the socket
//! taken with `pidfd_getfd`, never consumed. A socket connected to one
//! outside the target (or to a named one: an accepted connection) stays
//! closed in children, as TCP connections do, and prepare lists it.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;

use mitosis_proto::descriptors::{CarriedObject, ObjectEnd, ObjectKind, UnixSide, SOCKET_OPTIONS};
use mitosis_sys::unixsock::{self, UnixSocketInfo};
use mitosis_sys::fdstate;

use crate::CaptureError;

/// A Unix socket of the target: its inode, the end its descriptors make,
/// and a copy of it in this process.
pub(crate) struct UnixCandidate {
    pub inode: u64,
    pub end: ObjectEnd,
    pub copy: OwnedFd,
}

/// `TCP_CLOSE`: the state of a socket that is neither connected nor listening.
const STATE_CLOSE: u8 = 7;

/// The carried objects of `sockets` (Unix sockets of `pid`); those that are
/// not carried are left out (they stay in the closed list).
pub(crate) fn carry(pid: i32, sockets: Vec<UnixCandidate>) -> Result<Vec<CarriedObject>, CaptureError> {
    let infos = describe(&sockets)?;
    let by_inode: BTreeMap<u64, usize> = sockets.iter().enumerate().map(|(i, s)| (s.inode, i)).collect();
    let mut objects = Vec::new();
    let mut paired = vec![false; sockets.len()];
    for (i, socket) in sockets.iter().enumerate() {
        let Some(info) = infos.get(&socket.inode) else { continue };
        let fd = socket.end.fds[0].fd;
        match info.peer {
            Some(peer) => {
                if paired[i] {
                    continue;
                }
                // Both sockets the target's, each the other's peer, neither named.
                let Some(&j) = by_inode.get(&u64::from(peer)) else { continue };
                let Some(other) = infos.get(&u64::from(peer)) else { continue };
                if other.peer != Some(info.inode) || info.name.is_some() || other.name.is_some() || other.kind != info.kind {
                    continue;
                }
                paired[i] = true;
                paired[j] = true;
                let kind = i32::from(info.kind);
                let stream = kind == libc::SOCK_STREAM;
                let (Some(mine), Some(theirs)) = (side(&socket.copy, info, stream, fd)?, side(&sockets[j].copy, other, stream, fd)?) else { continue };
                objects.push(CarriedObject {
                    kind: ObjectKind::UnixPair { kind, sides: vec![mine, theirs] },
                    ends: vec![socket.end.clone(), sockets[j].end.clone()],
                });
            }
            None if [STATE_CLOSE, unixsock::STATE_LISTEN].contains(&info.state) => {
                let listening = info.state == unixsock::STATE_LISTEN;
                if listening && info.queued > 0 {
                    tracing::warn!(pid, fd, pending = info.queued, "connections pending on a listening Unix socket are not carried: a child's has none");
                } else if !listening && info.queued > 0 {
                    tracing::warn!(pid, fd, bytes = info.queued, "messages queued on an unconnected Unix socket are not carried: a child's has none");
                }
                let (name_unlinked, file_mode) = match (&info.name, info.file) {
                    (Some(name), Some((inode, _))) if name.first() != Some(&0) => match socket_file_mode(pid, name, inode) {
                        Some(mode) => (false, Some(mode)),
                        None => (true, None),
                    },
                    _ => (false, None),
                };
                objects.push(CarriedObject {
                    kind: ObjectKind::UnixSocket {
                        kind: i32::from(info.kind),
                        options: options(&socket.copy),
                        name: info.name.clone(),
                        name_unlinked,
                        file_mode,
                        backlog: listening.then_some(info.backlog_or_unread),
                        shutdown: info.shutdown,
                    },
                    ends: vec![socket.end.clone()],
                });
            }
            // Connected once, its peer gone: not carried.
            None => {}
        }
    }
    Ok(objects)
}

/// What the kernel says of each of `sockets`, by inode, asked in each
/// socket's network namespace.
fn describe(sockets: &[UnixCandidate]) -> Result<BTreeMap<u64, UnixSocketInfo>, CaptureError> {
    // Sockets by network namespace (its inode), with a descriptor of it.
    let mut by_netns: BTreeMap<u64, (OwnedFd, Vec<u32>)> = BTreeMap::new();
    for s in sockets {
        let netns = unixsock::netns_of(&s.copy).map_err(CaptureError::sys("finding a Unix socket's network namespace"))?;
        let key = std::fs::metadata(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&netns)))
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .unwrap_or_default();
        let Ok(inode) = u32::try_from(s.inode) else { continue };
        by_netns.entry(key).or_insert((netns, Vec::new())).1.push(inode);
    }
    let mut out = BTreeMap::new();
    for (netns, inodes) in by_netns.values() {
        for info in unixsock::describe(netns, inodes).map_err(CaptureError::sys("asking the kernel about Unix sockets (unix_diag)"))? {
            out.insert(u64::from(info.inode), info);
        }
    }
    Ok(out)
}

/// One side of a pair: options, what is queued on it and its shutdown
/// bits; `None` (with a warning) when a queued message carries
/// descriptors, which are not carried (the pair then stays closed).
fn side(copy: &OwnedFd, info: &UnixSocketInfo, stream: bool, fd: i32) -> Result<Option<UnixSide>, CaptureError> {
    let queue = match unixsock::peek_queue(copy, stream) {
        Ok(q) => q,
        Err(e) if e.errno == libc::EBADMSG => {
            tracing::warn!(fd, "a Unix socket pair has descriptors in flight, which are not carried: it is closed in children");
            return Ok(None);
        }
        Err(e) => return Err(CaptureError::sys("peeking at a Unix socket's queued messages")(e)),
    };
    Ok(Some(UnixSide { options: options(copy), queue, shutdown: info.shutdown }))
}

/// The socket-level options of [`SOCKET_OPTIONS`] the socket has.
fn options(copy: &OwnedFd) -> Vec<(i32, i32, i32)> {
    SOCKET_OPTIONS
        .iter()
        .filter(|(level, _)| *level == libc::SOL_SOCKET)
        .filter_map(|&(level, name)| Some((level, name, fdstate::sockopt_int(copy, level, name).ok()?)))
        .collect()
}

/// The permission bits of the socket file of inode `inode` when path name
/// `name` (relative ones from the target's working directory) still leads
/// to it on this host, as the target sees it; `None` when it does not
/// (unlinked, or replaced).
fn socket_file_mode(pid: i32, name: &[u8], inode: u32) -> Option<u32> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
    let path = String::from_utf8_lossy(name.split(|&b| b == 0).next().unwrap_or_default()).into_owned();
    let seen = if path.starts_with('/') { format!("/proc/{pid}/root{path}") } else { format!("/proc/{pid}/cwd/{path}") };
    let meta = std::fs::symlink_metadata(seen).ok()?;
    (meta.file_type().is_socket() && meta.ino() == u64::from(inode)).then(|| meta.permissions().mode() & 0o7777)
}
