//! TCP and UDP sockets of another process, read without changing them:
//! what the kernel's socket diagnostics (`NETLINK_SOCK_DIAG`, `inet_diag`)
//! say of one that `getsockopt` does not tell (its shutdown bits).

use std::os::fd::{AsRawFd, OwnedFd};

use crate::unixsock::{diag_socket, in_netns, send_request, u16_at, u32_at, SOCK_DIAG_BY_FAMILY};
use crate::{Result, SysError};

/// `NLM_F_REQUEST | NLM_F_DUMP`, `NLMSG_DONE`, `NLMSG_ERROR`.
const NLM_F_DUMP_REQUEST: u16 = 1 | 0x300;
const NLMSG_DONE: u16 = 3;
const NLMSG_ERROR: u16 = 2;
/// `INET_DIAG_SHUTDOWN`: the socket's `sk_shutdown` (u8).
const ATTR_SHUTDOWN: u16 = 8;
/// The length of `struct inet_diag_msg`, after which its attributes come.
const MSG_LEN: usize = 72;
/// Where `struct inet_diag_msg` has `idiag_inode`.
const INODE_AT: usize = 68;

/// The `RCV_SHUTDOWN` (1) and `SEND_SHUTDOWN` (2) bits of the socket with
/// `inode` of `family` (`AF_INET`, `AF_INET6`) and `protocol` (`IPPROTO_TCP`,
/// `IPPROTO_UDP`, `IPPROTO_UDPLITE`) in network namespace `netns` (a
/// socket's, from [`crate::unixsock::netns_of`]); `None` when the kernel
/// lists no such socket.
pub fn shutdown_bits(netns: &OwnedFd, family: u8, protocol: u8, inode: u32) -> Result<Option<u8>> {
    in_netns(netns, move || shutdown_bits_here(family, protocol, inode))
}

fn shutdown_bits_here(family: u8, protocol: u8, inode: u32) -> Result<Option<u8>> {
    let sock = diag_socket()?;
    // struct inet_diag_req_v2: family, protocol, extensions, pad, states
    // (all), and an id of zeroes (a dump matches all).
    let mut req = Vec::with_capacity(56);
    req.extend_from_slice(&[family, protocol, 0, 0]);
    req.extend_from_slice(&u32::MAX.to_ne_bytes());
    req.resize(56, 0);
    send_request(&sock, NLM_F_DUMP_REQUEST, 1, &req, "send(inet_diag)")?;
    let bad = || SysError::new("inet_diag reply", libc::EPROTO);
    let mut reply = vec![0u8; 1 << 16];
    let mut found = None;
    loop {
        // SAFETY: a buffer valid for writes of its length.
        let n = unsafe { libc::recv(sock.as_raw_fd(), reply.as_mut_ptr().cast(), reply.len(), 0) };
        let n = usize::try_from(n).map_err(|_| SysError::last("recv(inet_diag)"))?;
        let mut at = 0;
        while at + 16 <= n {
            let len = usize::try_from(u32_at(&reply, at).ok_or_else(bad)?).map_err(|_| bad())?;
            let kind = u16_at(&reply, at + 4).ok_or_else(bad)?;
            let msg = reply.get(at..at + len).filter(|_| len >= 16).ok_or_else(bad)?;
            match kind {
                NLMSG_DONE => return Ok(found),
                NLMSG_ERROR => {
                    let errno = i32::from_ne_bytes(msg.get(16..20).ok_or_else(bad)?.try_into().map_err(|_| bad())?);
                    return Err(SysError::new("inet_diag", -errno));
                }
                SOCK_DIAG_BY_FAMILY if found.is_none() => found = shutdown_of(&msg[16..], inode).map_err(|()| bad())?,
                _ => {}
            }
            at += (len + 3) & !3;
        }
    }
}

/// The shutdown bits in one `inet_diag_msg` and its attributes, when it
/// is the socket of `inode` (0 when the kernel gave none).
fn shutdown_of(msg: &[u8], inode: u32) -> std::result::Result<Option<u8>, ()> {
    if u32_at(msg, INODE_AT).ok_or(())? != inode {
        return Ok(None);
    }
    let mut at = MSG_LEN;
    while at + 4 <= msg.len() {
        let attr_len = usize::from(u16_at(msg, at).ok_or(())?);
        let attr = u16_at(msg, at + 2).ok_or(())?;
        if attr_len < 4 {
            return Err(());
        }
        if attr == ATTR_SHUTDOWN {
            return msg.get(at + 4).map(|&b| Some(b)).ok_or(());
        }
        at += (attr_len + 3) & !3;
    }
    Ok(Some(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn inode_of(fd: &impl AsRawFd) -> u32 {
        let meta = std::fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap();
        u32::try_from(meta.ino()).unwrap()
    }

    #[test]
    fn a_udp_sockets_shutdown_bits_are_read() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.connect(peer.local_addr().unwrap()).unwrap();
        let netns = crate::unixsock::netns_of(&socket).unwrap();
        let (family, udp) = (u8::try_from(libc::AF_INET).unwrap(), u8::try_from(libc::IPPROTO_UDP).unwrap());
        assert_eq!(shutdown_bits(&netns, family, udp, inode_of(&socket)).unwrap(), Some(0));
        // SAFETY: shutdown takes integers.
        assert_eq!(unsafe { libc::shutdown(socket.as_raw_fd(), libc::SHUT_WR) }, 0);
        assert_eq!(shutdown_bits(&netns, family, udp, inode_of(&socket)).unwrap(), Some(2), "SEND_SHUTDOWN");
        assert_eq!(shutdown_bits(&netns, family, udp, inode_of(&peer)).unwrap(), Some(0));
        assert_eq!(shutdown_bits(&netns, family, udp, u32::MAX).unwrap(), None, "no such socket");
    }
}
