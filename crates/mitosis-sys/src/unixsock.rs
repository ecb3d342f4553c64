//! Unix sockets of another process, read without changing them: what the
//! kernel's socket diagnostics (`NETLINK_SOCK_DIAG`, `unix_diag`) say of
//! one (its type, state, bound name, peer, shutdown bits, queue lengths),
//! the messages waiting in its receive queue (peeked through a copy taken
//! with `pidfd_getfd`, with `SO_PEEK_OFF` stepping over them, never
//! consumed), and sending into one without blocking.

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

use crate::{Result, SysError};

/// `NLM_F_REQUEST`, `NLMSG_ERROR`, `AF_UNIX` in the widths of their fields.
const NLM_F_REQUEST: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const AF_UNIX: u8 = 1;
/// `SOCK_DIAG_BY_FAMILY`.
pub(crate) const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// `unix_diag` request flags (`UDIAG_SHOW_*`).
const SHOW_NAME: u32 = 0x01;
const SHOW_VFS: u32 = 0x02;
const SHOW_PEER: u32 = 0x04;
const SHOW_ICONS: u32 = 0x08;
const SHOW_RQLEN: u32 = 0x10;
/// `unix_diag` attributes (`UNIX_DIAG_*`).
const ATTR_NAME: u16 = 0;
const ATTR_VFS: u16 = 1;
const ATTR_PEER: u16 = 2;
const ATTR_ICONS: u16 = 3;
const ATTR_RQLEN: u16 = 4;
const ATTR_SHUTDOWN: u16 = 6;
/// `SIOCGSKNS`: a descriptor of a socket's network namespace.
const SIOCGSKNS: libc::c_ulong = 0x894C;
/// The socket state of a listening socket (`TCP_LISTEN`).
pub const STATE_LISTEN: u8 = 10;

/// What the kernel says of one Unix socket.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UnixSocketInfo {
    pub inode: u32,
    /// `SOCK_STREAM`, `SOCK_DGRAM` or `SOCK_SEQPACKET`.
    pub kind: u8,
    /// `TCP_ESTABLISHED` (1) when connected, [`STATE_LISTEN`], `TCP_CLOSE` (7) otherwise.
    pub state: u8,
    /// The bound name (`sun_path` bytes; an abstract one starts with 0), if bound.
    pub name: Option<Vec<u8>>,
    /// The bound file's inode and device (the kernel's `s_dev`), for a path name.
    pub file: Option<(u32, u32)>,
    /// The peer's inode, if connected.
    pub peer: Option<u32>,
    /// `RCV_SHUTDOWN` (1) and `SEND_SHUTDOWN` (2) bits.
    pub shutdown: u8,
    /// Bytes waiting to be read, or a listening socket's pending connections.
    pub queued: u32,
    /// A listening socket's backlog (otherwise bytes sent and not yet read).
    pub backlog_or_unread: u32,
    /// A listening socket's connections not accepted yet, in the order
    /// `accept` takes them: the inodes of their clients (whose `peer`, the
    /// server side not accepted yet, has no inode and shows as `None`).
    pub pending: Vec<u32>,
}

/// A descriptor of the network namespace socket `fd` lives in (`SIOCGSKNS`).
pub fn netns_of(fd: &impl AsFd) -> Result<OwnedFd> {
    // SAFETY: SIOCGSKNS takes no argument and returns a new descriptor.
    let r = unsafe { libc::ioctl(fd.as_fd().as_raw_fd(), SIOCGSKNS) };
    if r < 0 {
        return Err(SysError::last("ioctl(SIOCGSKNS)"));
    }
    // SAFETY: a new descriptor that nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(r) })
}

/// What the kernel says of the Unix sockets with `inodes` in network
/// namespace `netns` (a socket's, from [`netns_of`]); a socket it does not
/// know (gone) is left out. The query runs in a thread of its own that
/// joins `netns` first when it is not this thread's (diagnostics answer
/// for one namespace only).
pub fn describe(netns: &OwnedFd, inodes: &[u32]) -> Result<Vec<UnixSocketInfo>> {
    let inodes = inodes.to_vec();
    in_netns(netns, move || describe_here(&inodes))
}

/// Runs `query` in network namespace `netns`: here when it is this
/// thread's, else in a thread of its own that joins it first (socket
/// diagnostics answer for one namespace only).
pub(crate) fn in_netns<T: Send + 'static>(netns: &OwnedFd, query: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    let ours = std::fs::metadata("/proc/thread-self/ns/net").map_err(|e| SysError::new("stat(ns/net)", e.raw_os_error().unwrap_or(libc::EIO)))?;
    let theirs = crate::fsid::identity_of_fd(netns.as_raw_fd()).map_err(|e| SysError::new("fstat(netns)", e))?;
    use std::os::unix::fs::MetadataExt;
    if theirs.ino == ours.ino() && theirs.dev == ours.dev() {
        return query();
    }
    let netns = netns.try_clone().map_err(|e| SysError::new("dup", e.raw_os_error().unwrap_or(libc::EMFILE)))?;
    std::thread::spawn(move || {
        crate::ns::setns(&netns, libc::CLONE_NEWNET)?;
        query()
    })
    .join()
    .unwrap_or(Err(SysError::new("sock_diag thread", libc::EIO)))
}

/// A `NETLINK_SOCK_DIAG` socket of this thread's network namespace.
pub(crate) fn diag_socket() -> Result<OwnedFd> {
    // SAFETY: socket takes integers and returns a new descriptor.
    let raw = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, libc::NETLINK_SOCK_DIAG) };
    if raw < 0 {
        return Err(SysError::last("socket(NETLINK_SOCK_DIAG)"));
    }
    // SAFETY: a new descriptor that nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Sends a `SOCK_DIAG_BY_FAMILY` request with `flags` and sequence number
/// `seq` whose body (after `struct nlmsghdr`) is `body`.
pub(crate) fn send_request(sock: &OwnedFd, flags: u16, seq: u32, body: &[u8], op: &'static str) -> Result<()> {
    let len = u32::try_from(16 + body.len()).map_err(|_| SysError::new(op, libc::EMSGSIZE))?;
    let mut req = Vec::with_capacity(16 + body.len());
    req.extend_from_slice(&len.to_ne_bytes());
    req.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    req.extend_from_slice(&flags.to_ne_bytes());
    req.extend_from_slice(&seq.to_ne_bytes());
    req.extend_from_slice(&0u32.to_ne_bytes());
    req.extend_from_slice(body);
    // SAFETY: a buffer valid for reads of its length.
    if unsafe { libc::send(sock.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) } < 0 {
        return Err(SysError::last(op));
    }
    Ok(())
}

fn describe_here(inodes: &[u32]) -> Result<Vec<UnixSocketInfo>> {
    let sock = diag_socket()?;
    let mut out = Vec::new();
    // Room for a listener with a full queue of the largest backlog (4 bytes a connection).
    let mut reply = vec![0u8; 1 << 18];
    for (seq, &inode) in (1u32..).zip(inodes) {
        // struct unix_diag_req: family, protocol, pad, states, ino, show, cookie (none).
        let mut req = Vec::with_capacity(24);
        req.extend_from_slice(&[AF_UNIX, 0, 0, 0]);
        req.extend_from_slice(&u32::MAX.to_ne_bytes());
        req.extend_from_slice(&inode.to_ne_bytes());
        req.extend_from_slice(&(SHOW_NAME | SHOW_VFS | SHOW_PEER | SHOW_ICONS | SHOW_RQLEN).to_ne_bytes());
        req.extend_from_slice(&[0xff; 8]);
        send_request(&sock, NLM_F_REQUEST, seq, &req, "send(unix_diag)")?;
        // SAFETY: a buffer valid for writes of its length.
        let n = unsafe { libc::recv(sock.as_raw_fd(), reply.as_mut_ptr().cast(), reply.len(), 0) };
        let n = usize::try_from(n).map_err(|_| SysError::last("recv(unix_diag)"))?;
        match parse_reply(&reply[..n])? {
            Some(info) => out.push(info),
            None => continue,
        }
    }
    Ok(out)
}

pub(crate) fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

pub(crate) fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// One reply to an exact `unix_diag` request: the socket, or `None` when
/// the kernel knows no such socket (`ENOENT`).
fn parse_reply(b: &[u8]) -> Result<Option<UnixSocketInfo>> {
    let bad = || SysError::new("unix_diag reply", libc::EPROTO);
    let len = usize::try_from(u32_at(b, 0).ok_or_else(bad)?).map_err(|_| bad())?;
    let kind = u16_at(b, 4).ok_or_else(bad)?;
    let b = b.get(..len).ok_or_else(bad)?;
    if kind == NLMSG_ERROR {
        let errno = i32::from_ne_bytes(b.get(16..20).ok_or_else(bad)?.try_into().map_err(|_| bad())?);
        return match -errno {
            0 | libc::ENOENT => Ok(None),
            e => Err(SysError::new("unix_diag", e)),
        };
    }
    if kind != SOCK_DIAG_BY_FAMILY || b.len() < 32 {
        return Err(bad());
    }
    let mut info = UnixSocketInfo { kind: b[17], state: b[18], inode: u32_at(b, 20).ok_or_else(bad)?, ..Default::default() };
    let mut at = 32;
    while at + 4 <= b.len() {
        let attr_len = usize::from(u16_at(b, at).ok_or_else(bad)?);
        let attr = u16_at(b, at + 2).ok_or_else(bad)?;
        let payload = b.get(at + 4..at + attr_len).ok_or_else(bad)?;
        match attr {
            ATTR_NAME => info.name = Some(payload.to_vec()),
            ATTR_VFS => info.file = Some((u32_at(payload, 0).ok_or_else(bad)?, u32_at(payload, 4).ok_or_else(bad)?)),
            ATTR_PEER => info.peer = u32_at(payload, 0).filter(|&p| p != 0),
            ATTR_RQLEN => {
                info.queued = u32_at(payload, 0).ok_or_else(bad)?;
                info.backlog_or_unread = u32_at(payload, 4).ok_or_else(bad)?;
            }
            ATTR_SHUTDOWN => info.shutdown = *payload.first().ok_or_else(bad)?,
            ATTR_ICONS => info.pending = payload.chunks_exact(4).filter_map(|c| u32_at(c, 0)).collect(),
            _ => {}
        }
        if attr_len < 4 {
            return Err(bad());
        }
        at += (attr_len + 3) & !3;
    }
    Ok(Some(info))
}

/// The messages waiting in socket `fd`'s receive queue, oldest first, read
/// without consuming them (`MSG_PEEK`, stepping with `SO_PEEK_OFF`, whose
/// previous value is put back): one per datagram or packet (an empty one
/// too) for `SOCK_DGRAM` and `SOCK_SEQPACKET`, chunks of the byte stream
/// for `SOCK_STREAM`. `Err` with `EBADMSG` when a message carries
/// descriptors (`SCM_RIGHTS`), which cannot be read without taking them.
///
/// An empty datagram that was peeked at before (by the owner, or by an
/// earlier call) is stepped over: the kernel skips an empty message it has
/// marked peeked when peeking at an offset, and there is no other way to
/// see past the head of a datagram queue.
///
/// `SO_PASSCRED` is on while a message queue is peeked at (and put back
/// after): every message then comes with its sender's credentials, which
/// tells an empty message from the end of a `SOCK_SEQPACKET` stream whose
/// sender shut down (both read as 0 bytes).
pub fn peek_queue(fd: &impl AsFd, stream: bool) -> Result<Vec<Vec<u8>>> {
    let fd = fd.as_fd();
    let old_offset = crate::fdstate::sockopt_int(&fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF)?;
    let old_passcred = crate::fdstate::sockopt_int(&fd, libc::SOL_SOCKET, libc::SO_PASSCRED)?;
    if !stream {
        set_int(&fd, libc::SO_PASSCRED, 1)?;
    }
    let result = peek_all(&fd, stream);
    set_int(&fd, libc::SO_PEEK_OFF, old_offset)?;
    if !stream {
        set_int(&fd, libc::SO_PASSCRED, old_passcred)?;
    }
    result
}

/// Most messages one queue is read for (a bound on the loop, far above
/// what socket buffers hold).
const MAX_MESSAGES: usize = 1 << 20;

fn set_int(fd: &impl AsFd, name: i32, value: i32) -> Result<()> {
    let len = libc::socklen_t::try_from(std::mem::size_of::<i32>()).unwrap_or(4);
    // SAFETY: the kernel reads `len` bytes from `value`.
    let r = unsafe { libc::setsockopt(fd.as_fd().as_raw_fd(), libc::SOL_SOCKET, name, (&value as *const i32).cast(), len) };
    if r != 0 {
        return Err(SysError::last("setsockopt"));
    }
    Ok(())
}

fn peek_all(fd: &impl AsFd, stream: bool) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    let mut offset = 0i32;
    let mut buf = vec![0u8; 64 << 10];
    // Room for one control message of descriptors or credentials.
    let mut control = vec![0u8; 4096];
    loop {
        set_int(fd, libc::SO_PEEK_OFF, offset)?;
        let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
        // SAFETY: msghdr is plain data; all zeroes is valid.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = control.len();
        let flags = libc::MSG_PEEK | libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC | if stream { 0 } else { libc::MSG_TRUNC };
        // SAFETY: `msg` points at `iov` and `control`, which live across the call.
        let n = unsafe { libc::recvmsg(fd.as_fd().as_raw_fd(), &mut msg, flags) };
        if n < 0 {
            let e = SysError::last("recvmsg(MSG_PEEK)");
            if e.errno == libc::EAGAIN {
                return Ok(out);
            }
            return Err(e);
        }
        let n = usize::try_from(n).unwrap_or(0);
        let (descriptors, credentials) = control_messages(&msg);
        if descriptors {
            return Err(SysError::new("recvmsg(MSG_PEEK): a message carries descriptors", libc::EBADMSG));
        }
        if !stream && n > buf.len() {
            // Truncated: again from the same offset with room for all of it.
            buf.resize(n, 0);
            continue;
        }
        if n == 0 && (stream || !credentials) {
            // The peer shut down its sending side and the queue is empty.
            return Ok(out);
        }
        if out.len() >= MAX_MESSAGES {
            return Err(SysError::new("recvmsg(MSG_PEEK): too many messages", libc::E2BIG));
        }
        out.push(buf[..n].to_vec());
        offset = offset.checked_add(i32::try_from(n).map_err(|_| SysError::new("recvmsg(MSG_PEEK)", libc::EOVERFLOW))?).ok_or(SysError::new(
            "recvmsg(MSG_PEEK)",
            libc::EOVERFLOW,
        ))?;
    }
}

/// Closes the descriptors a peek received (`SCM_RIGHTS`); whether there
/// were any, and whether credentials came (`SCM_CREDENTIALS`).
fn control_messages(msg: &libc::msghdr) -> (bool, bool) {
    let mut found = false;
    let mut credentials = false;
    // SAFETY: `msg` was filled in by recvmsg; the CMSG macros walk its control buffer within `msg_controllen`.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(msg);
        while !c.is_null() {
            credentials |= (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_CREDENTIALS;
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                found = true;
                let data = libc::CMSG_DATA(c).cast::<i32>();
                let count = ((*c).cmsg_len - libc::CMSG_LEN(0) as usize) / std::mem::size_of::<i32>();
                for i in 0..count {
                    libc::close(data.add(i).read_unaligned());
                }
            }
            c = libc::CMSG_NXTHDR(msg, c);
        }
    }
    // Truncated control data may have held descriptors too.
    (found || msg.msg_flags & libc::MSG_CTRUNC != 0, credentials)
}

/// Sends `bytes` as one message on socket `fd` without blocking
/// (`MSG_DONTWAIT`; `EAGAIN` when there is no room); the count sent (a
/// stream socket may take fewer).
pub fn send_nonblocking(fd: &impl AsFd, bytes: &[u8]) -> Result<usize> {
    // SAFETY: a buffer valid for reads of its length.
    let n = unsafe { libc::send(fd.as_fd().as_raw_fd(), bytes.as_ptr().cast(), bytes.len(), libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
    usize::try_from(n).map_err(|_| SysError::last("send"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_constants_are_libcs() {
        assert_eq!(i32::from(NLM_F_REQUEST), libc::NLM_F_REQUEST);
        assert_eq!(i32::from(NLMSG_ERROR), libc::NLMSG_ERROR);
        assert_eq!(i32::from(AF_UNIX), libc::AF_UNIX);
    }

    fn pair(kind: i32) -> (OwnedFd, OwnedFd) {
        let mut fds = [0i32; 2];
        // SAFETY: socketpair writes two ints to `fds`.
        assert_eq!(unsafe { libc::socketpair(libc::AF_UNIX, kind | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) }, 0);
        // SAFETY: both descriptors are new and ours alone.
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
    }

    fn inode(fd: &OwnedFd) -> u32 {
        u32::try_from(crate::fsid::identity_of_fd(fd.as_raw_fd()).unwrap().ino).unwrap()
    }

    #[test]
    fn messages_are_peeked_with_their_boundaries_and_left_in_place() {
        for kind in [libc::SOCK_DGRAM, libc::SOCK_SEQPACKET] {
            let (a, b) = pair(kind);
            for m in [&b"one"[..], b"", &[7u8; 100_000], b"four"] {
                assert_eq!(send_nonblocking(&a, m).unwrap(), m.len());
            }
            let queue = peek_queue(&b, false).unwrap();
            assert_eq!(queue.iter().map(Vec::len).collect::<Vec<_>>(), [3, 0, 100_000, 4], "type {kind}");
            assert!(queue[3] == b"four");
            // Still there, the peek offset off again, read in order.
            assert_eq!(crate::fdstate::sockopt_int(&b, libc::SOL_SOCKET, libc::SO_PEEK_OFF).unwrap(), -1);
            // (An empty message, once peeked at, is stepped over by the kernel: see `peek_queue`.)
            let again: Vec<Vec<u8>> = queue.iter().filter(|m| !m.is_empty()).cloned().collect();
            assert!(peek_queue(&b, false).unwrap() == again);
            let mut buf = [0u8; 8];
            // SAFETY: a buffer valid for writes of its length.
            let n = unsafe { libc::recv(b.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
            assert_eq!(&buf[..usize::try_from(n).unwrap()], b"one");
        }
    }

    #[test]
    fn the_end_of_a_shut_seqpacket_stream_is_not_an_empty_message() {
        let (a, b) = pair(libc::SOCK_SEQPACKET);
        send_nonblocking(&a, b"one").unwrap();
        send_nonblocking(&a, b"").unwrap();
        // SAFETY: shutdown takes integers.
        assert_eq!(unsafe { libc::shutdown(a.as_raw_fd(), libc::SHUT_WR) }, 0);
        let queue = peek_queue(&b, false).unwrap();
        assert_eq!(queue.iter().map(Vec::len).collect::<Vec<_>>(), [3, 0]);
        assert_eq!(crate::fdstate::sockopt_int(&b, libc::SOL_SOCKET, libc::SO_PASSCRED).unwrap(), 0, "put back");
    }

    #[test]
    fn a_stream_is_peeked_whole() {
        let (a, b) = pair(libc::SOCK_STREAM);
        send_nonblocking(&a, b"hello ").unwrap();
        send_nonblocking(&a, &[b'x'; 150_000]).unwrap();
        let bytes: Vec<u8> = peek_queue(&b, true).unwrap().concat();
        assert_eq!(bytes.len(), 150_006);
        assert!(bytes.starts_with(b"hello x"));
        assert_eq!(crate::fdstate::readable_bytes(&b).unwrap(), 150_006);
        assert!(peek_queue(&a, true).unwrap().is_empty());
    }

    #[test]
    fn pending_connections_are_listed_in_accept_order() {
        let path = std::env::temp_dir().join(format!("mitosis-diag-pending-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let first = std::os::unix::net::UnixStream::connect(&path).unwrap();
        let second = std::os::unix::net::UnixStream::connect(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let (first, second, listener) = (OwnedFd::from(first), OwnedFd::from(second), OwnedFd::from(listener));
        let netns = netns_of(&listener).unwrap();
        let infos = describe(&netns, &[inode(&listener), inode(&first), inode(&second)]).unwrap();
        assert_eq!(infos[0].pending.len(), 2);
        assert_eq!(infos[0].queued, 2);
        // The clients, in connect order; a pending server side has no inode, so a client's peer shows none.
        assert_eq!(infos[0].pending, [inode(&first), inode(&second)]);
        assert_eq!((infos[1].peer, infos[1].state), (None, 1));
        let name = infos[0].name.clone().unwrap();
        assert!(name.starts_with(path.as_os_str().as_encoded_bytes()), "{name:?}");
        assert!(infos[0].file.is_some(), "a path name has a socket file");
    }

    #[test]
    fn passed_descriptors_are_refused_and_not_leaked() {
        let (a, b) = pair(libc::SOCK_DGRAM);
        let (extra, _) = pair(libc::SOCK_DGRAM);
        let mut space = vec![0u8; 64];
        let fd = extra.as_raw_fd();
        let mut iov = libc::iovec { iov_base: (&fd as *const i32).cast_mut().cast(), iov_len: 4 };
        // SAFETY: msghdr is plain data; all zeroes is valid.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = space.as_mut_ptr().cast();
        // SAFETY: CMSG_SPACE is arithmetic; the header is written inside `space`.
        unsafe {
            msg.msg_controllen = libc::CMSG_SPACE(4) as usize;
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(4) as usize;
            libc::CMSG_DATA(c).cast::<i32>().write_unaligned(fd);
            assert_eq!(libc::sendmsg(a.as_raw_fd(), &msg, 0), 4);
        }
        assert_eq!(peek_queue(&b, false).unwrap_err().errno, libc::EBADMSG);
        // No descriptor of ours but `extra` is the passed socket (the peek's copy was closed).
        let link = std::fs::read_link(format!("/proc/self/fd/{fd}")).unwrap();
        let copies = std::fs::read_dir("/proc/self/fd").unwrap().filter(|e| e.as_ref().is_ok_and(|e| std::fs::read_link(e.path()).ok().as_ref() == Some(&link))).count();
        assert_eq!(copies, 1);
    }

    #[test]
    fn diagnostics_name_peers_names_and_listeners() {
        let (a, b) = pair(libc::SOCK_STREAM);
        // SAFETY: shutdown takes integers.
        assert_eq!(unsafe { libc::shutdown(a.as_raw_fd(), libc::SHUT_WR) }, 0);
        send_nonblocking(&b, b"12345").unwrap();
        let listener = std::os::unix::net::UnixListener::bind_addr(
            &<std::os::unix::net::SocketAddr as std::os::linux::net::SocketAddrExt>::from_abstract_name(
                format!("mitosis-diag-test-{}", std::process::id()).as_bytes(),
            )
            .unwrap(),
        )
        .unwrap();
        let listener = OwnedFd::from(listener);
        let netns = netns_of(&a).unwrap();
        let infos = describe(&netns, &[inode(&a), inode(&b), inode(&listener), u32::MAX]).unwrap();
        assert_eq!(infos.len(), 3, "an unknown inode is left out: {infos:?}");
        assert_eq!((infos[0].peer, infos[1].peer), (Some(inode(&b)), Some(inode(&a))));
        assert_eq!((infos[0].shutdown, infos[1].shutdown), (2, 1));
        assert_eq!(infos[0].queued, 5);
        assert_eq!(i32::from(infos[0].kind), libc::SOCK_STREAM);
        assert_eq!(infos[0].name, None);
        let name = infos[2].name.clone().unwrap();
        assert!(name.starts_with(b"\0mitosis-diag-test-"), "{name:?}");
        assert_eq!(infos[2].state, STATE_LISTEN);
        assert!(infos[2].pending.is_empty());
        assert!(infos[2].backlog_or_unread > 0, "the backlog: {infos:?}");
    }
}
