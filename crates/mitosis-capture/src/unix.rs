//! Unix sockets whose whole state is inside the target, recorded so that
//! children get them recreated: pairs whose two sockets are both the
//! target's and unnamed (`socketpair`), with what is queued on each side;
//! sockets that are not connected (unbound, bound, listening); connections
//! between two of its sockets made through one of its listeners (accepted,
//! or still waiting in the listener's queue); sockets whose peer closed,
//! with what is still queued on them; datagram sockets sending by default
//! to a named socket of the target.
//!
//! Which socket is whose peer, its name and state come from the kernel's
//! socket diagnostics (`unix_diag`, asked in the socket's own network
//! namespace); queued messages are peeked through a copy of the socket
//! taken with `pidfd_getfd`, never consumed. A socket connected to one
//! outside the target stays closed in children, as TCP connections do, and
//! prepare lists it.

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
/// `TCP_ESTABLISHED`: a connected socket's state.
const STATE_ESTABLISHED: u8 = 1;

/// The carried objects of `sockets` (Unix sockets of `pid`); those that are
/// not carried are left out (they stay in the closed list).
pub(crate) fn carry(pid: i32, sockets: Vec<UnixCandidate>) -> Result<Vec<CarriedObject>, CaptureError> {
    let infos = describe(&sockets)?;
    let by_inode: BTreeMap<u64, usize> = sockets.iter().enumerate().map(|(i, s)| (s.inode, i)).collect();
    // The target's listeners (carried: not connected), by name, and the
    // clients waiting in their queues: (listener's name, place in its queue).
    let listening = |info: &UnixSocketInfo| info.state == unixsock::STATE_LISTEN && info.peer.is_none();
    let listeners: Vec<&UnixSocketInfo> = sockets.iter().filter_map(|s| infos.get(&s.inode)).filter(|i| listening(i)).collect();
    let mut waiting: BTreeMap<u32, (Vec<u8>, usize)> = BTreeMap::new();
    for l in &listeners {
        if let Some(name) = &l.name {
            for (place, &client) in l.pending.iter().enumerate() {
                waiting.insert(client, (name.clone(), place));
            }
        }
    }
    let mut lone = Vec::new();
    let mut pairs = Vec::new();
    let mut accepted = Vec::new();
    let mut pending = Vec::new();
    let mut paired = vec![false; sockets.len()];
    for (i, socket) in sockets.iter().enumerate() {
        let Some(info) = infos.get(&socket.inode) else { continue };
        let fd = socket.end.fds[0].fd;
        let kind = i32::from(info.kind);
        let stream = kind == libc::SOCK_STREAM;
        match info.peer {
            Some(peer) => {
                if paired[i] {
                    continue;
                }
                let Some(&j) = by_inode.get(&u64::from(peer)) else { continue };
                let Some(other) = infos.get(&u64::from(peer)) else { continue };
                // A datagram socket sending by default to a named one of the
                // target (or to itself): not a pair, unless both are unnamed.
                let unnamed_pair = other.peer == Some(info.inode) && info.name.is_none() && other.name.is_none() && j != i;
                if kind == libc::SOCK_DGRAM && !unnamed_pair {
                    if let Some(target) = &other.name {
                        lone.push(lone_socket(pid, socket, info, Some(target.clone())));
                    }
                    continue;
                }
                // Both sockets the target's, each the other's peer.
                if other.peer != Some(info.inode) || other.kind != info.kind || j == i {
                    continue;
                }
                // Unnamed both (a socketpair), or a client and the server side
                // accepted from a listener of the target (it shows the listener's name).
                let (client, server) = match (&info.name, &other.name) {
                    (None, None) => (i, j),
                    (None, Some(name)) | (Some(name), None) if listeners.iter().any(|l| l.name.as_ref() == Some(name)) => {
                        if info.name.is_none() { (i, j) } else { (j, i) }
                    }
                    _ => continue,
                };
                paired[i] = true;
                paired[j] = true;
                let (ci, si) = (&infos[&sockets[client].inode], &infos[&sockets[server].inode]);
                let (Some(c), Some(s)) = (side(&sockets[client].copy, ci, stream, fd)?, side(&sockets[server].copy, si, stream, fd)?) else { continue };
                let ends = vec![sockets[client].end.clone(), sockets[server].end.clone()];
                match &si.name {
                    None => pairs.push(CarriedObject { kind: ObjectKind::UnixPair { kind, sides: vec![c, s] }, ends }),
                    Some(listener) => accepted.push(CarriedObject {
                        kind: ObjectKind::UnixConnection { kind, listener: listener.clone(), accepted: true, sides: vec![c, s] },
                        ends,
                    }),
                }
            }
            // A client waiting in a listener's queue of the target.
            None if info.state == STATE_ESTABLISHED && info.name.is_none() && waiting.contains_key(&info.inode) => {
                if info.backlog_or_unread > 0 {
                    tracing::warn!(pid, fd, "a Unix socket waiting to be accepted has sent bytes, which are not carried: it is closed in children");
                    continue;
                }
                let Some(c) = side(&socket.copy, info, stream, fd)? else { continue };
                let (listener, place) = waiting[&info.inode].clone();
                pending.push((
                    (listener.clone(), place),
                    CarriedObject {
                        kind: ObjectKind::UnixConnection { kind, listener, accepted: false, sides: vec![c] },
                        ends: vec![socket.end.clone()],
                    },
                ));
            }
            // Its peer closed (a stream or seqpacket socket is then shut both
            // ways; a client waiting to be accepted elsewhere is not).
            None if info.state == STATE_ESTABLISHED && info.name.is_none() && (!stream && kind != libc::SOCK_SEQPACKET || info.shutdown == 3) => {
                let Some(side) = side(&socket.copy, info, stream, fd)? else { continue };
                lone.push(CarriedObject { kind: ObjectKind::UnixOrphan { kind, side }, ends: vec![socket.end.clone()] });
            }
            // (A named datagram socket that another connected to shows as connected too.)
            None if [STATE_CLOSE, unixsock::STATE_LISTEN].contains(&info.state) || kind == libc::SOCK_DGRAM => {
                let listening = info.state == unixsock::STATE_LISTEN;
                let carried_pending = info.pending.iter().filter(|c| by_inode.contains_key(&u64::from(**c))).count();
                if listening && info.pending.len() > carried_pending {
                    tracing::warn!(pid, fd, pending = info.pending.len() - carried_pending, "connections pending on a listening Unix socket from clients outside the process are not carried");
                }
                lone.push(lone_socket(pid, socket, info, None));
            }
            // Connected once, its peer gone: not carried.
            None => {}
        }
    }
    // Sockets whose path was unlinked first: a child binds and unlinks them
    // before a socket that still has the path binds it for good. Listeners
    // before the connections made through them, accepted ones before those
    // still waiting (an accept takes the oldest), these in queue order.
    lone.sort_by_key(|o| !matches!(o.kind, ObjectKind::UnixSocket { name_unlinked: true, .. }));
    pending.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(lone.into_iter().chain(pairs).chain(accepted).chain(pending.into_iter().map(|(_, o)| o)).collect())
}

/// A Unix socket made again on its own: unbound, bound, listening, or a
/// datagram socket sending to `peer_name` by default.
fn lone_socket(pid: i32, socket: &UnixCandidate, info: &UnixSocketInfo, peer_name: Option<Vec<u8>>) -> CarriedObject {
    let fd = socket.end.fds[0].fd;
    let listening = info.state == unixsock::STATE_LISTEN;
    let (name_unlinked, file) = match (&info.name, info.file) {
        (Some(name), Some((inode, _))) if name.first() != Some(&0) => match socket_file(pid, name, inode) {
            Some(file) => (false, Some(file)),
            None => (true, None),
        },
        _ => (false, None),
    };
    // Only by its name can a child's socket be sent its messages again.
    let by_name = i32::from(info.kind) == libc::SOCK_DGRAM && info.name.is_some() && !name_unlinked;
    let queue = match (listening || info.queued == 0, by_name) {
        (true, _) => Vec::new(),
        (false, true) => unixsock::peek_queue(&socket.copy, false).unwrap_or_else(|e| {
            tracing::warn!(pid, fd, error = %e, "messages queued on a Unix datagram socket cannot be read (descriptors in flight?): a child's has none");
            Vec::new()
        }),
        (false, false) => {
            tracing::warn!(pid, fd, bytes = info.queued, "messages queued on a Unix socket without a name that leads to it are not carried: a child's has none");
            Vec::new()
        }
    };
    CarriedObject {
        kind: ObjectKind::UnixSocket {
            kind: i32::from(info.kind),
            options: options(&socket.copy),
            extras: crate::fds::socket_extras(&socket.copy),
            name: info.name.clone(),
            name_unlinked,
            file_mode: file.map(|f| f.0),
            file_owner: file.map(|f| f.1),
            backlog: listening.then_some(info.backlog_or_unread),
            peer_name,
            shutdown: info.shutdown,
            queue,
        },
        ends: vec![socket.end.clone()],
    }
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
    Ok(Some(UnixSide { options: options(copy), queue, shutdown: info.shutdown, extras: crate::fds::socket_extras(copy) }))
}

/// The socket-level options of [`SOCKET_OPTIONS`] the socket has.
fn options(copy: &OwnedFd) -> Vec<(i32, i32, i32)> {
    SOCKET_OPTIONS
        .iter()
        .filter(|(level, _)| *level == libc::SOL_SOCKET)
        .filter_map(|&(level, name)| Some((level, name, fdstate::sockopt_int(copy, level, name).ok()?)))
        .collect()
}

/// The permission bits, owner and group of the socket file of inode
/// `inode` when path name `name` (relative ones from the target's working
/// directory) still leads to it on this host, as the target sees it;
/// `None` when it does not (unlinked, or replaced).
fn socket_file(pid: i32, name: &[u8], inode: u32) -> Option<(u32, (u32, u32))> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
    let path = String::from_utf8_lossy(name.split(|&b| b == 0).next().unwrap_or_default()).into_owned();
    let seen = if path.starts_with('/') { format!("/proc/{pid}/root{path}") } else { format!("/proc/{pid}/cwd/{path}") };
    let meta = std::fs::symlink_metadata(seen).ok()?;
    (meta.file_type().is_socket() && meta.ino() == u64::from(inode)).then(|| (meta.permissions().mode() & 0o7777, (meta.uid(), meta.gid())))
}
