//! Passing descriptors over Unix sockets (`SCM_RIGHTS`) and asking who is on
//! the other end (`SO_PEERCRED`).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::{Result, SysError};

const MAX_FDS: usize = 8;

/// A control-message payload size as the u32 the CMSG macros take; at most
/// [`MAX_FDS`] descriptors, so it always fits.
fn cmsg_u32(bytes: usize) -> u32 {
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

fn cmsg_space() -> usize {
    // SAFETY: CMSG_SPACE is a pure size computation.
    unsafe { libc::CMSG_SPACE(cmsg_u32(MAX_FDS * std::mem::size_of::<RawFd>())) as usize }
}

/// A connected pair of `SOCK_SEQPACKET` Unix sockets (close-on-exec):
/// messages keep their boundaries, descriptors travel with them.
pub fn seqpacket_pair() -> Result<(OwnedFd, OwnedFd)> {
    let mut pair = [0; 2];
    // SAFETY: a valid out array of two ints.
    if unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0, pair.as_mut_ptr()) } != 0 {
        return Err(SysError::last("socketpair"));
    }
    // SAFETY: both descriptors are new and owned by nothing else.
    Ok(unsafe { (OwnedFd::from_raw_fd(pair[0]), OwnedFd::from_raw_fd(pair[1])) })
}

/// Sends `bytes` with `fds` attached to the first byte.
pub fn send_with_fds(sock: &impl AsRawFd, bytes: &[u8], fds: &[RawFd]) -> Result<()> {
    assert!(fds.len() <= MAX_FDS);
    let mut iov = libc::iovec { iov_base: bytes.as_ptr() as *mut libc::c_void, iov_len: bytes.len() };
    let mut control = vec![0u8; cmsg_space()];
    // SAFETY: msghdr is plain data; every pointer set below refers to live buffers.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        msg.msg_control = control.as_mut_ptr().cast();
        // SAFETY: pure size computation.
        msg.msg_controllen = unsafe { libc::CMSG_SPACE(cmsg_u32(std::mem::size_of_val(fds))) } as usize;
        // SAFETY: the control buffer is large enough for one header with `fds`.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(cmsg_u32(std::mem::size_of_val(fds))) as usize;
            std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(c).cast::<RawFd>(), fds.len());
        }
    }
    let mut sent = 0usize;
    while sent < bytes.len() {
        // SAFETY: msg points to live iov/control buffers.
        let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        if n < 0 {
            let e = SysError::last("sendmsg");
            if e.errno == libc::EINTR {
                continue;
            }
            return Err(e);
        }
        // n >= 0 here: failures returned above.
        sent += n.unsigned_abs();
        // Descriptors travel with the first chunk only.
        msg.msg_control = std::ptr::null_mut();
        msg.msg_controllen = 0;
        // SAFETY: msg_iov still points at `iov`, which lives until the end of the function.
        unsafe {
            (*msg.msg_iov).iov_base = bytes[sent..].as_ptr() as *mut libc::c_void;
            (*msg.msg_iov).iov_len = bytes.len() - sent;
        }
    }
    Ok(())
}

/// Receives up to `buf.len()` bytes and any descriptors that came with them.
pub fn recv_with_fds(sock: &impl AsRawFd, buf: &mut [u8]) -> Result<(usize, Vec<OwnedFd>)> {
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    let mut control = vec![0u8; cmsg_space()];
    // SAFETY: plain data, pointers set to live buffers below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = control.len();
    let n = loop {
        // SAFETY: msg points to live buffers; MSG_CMSG_CLOEXEC keeps received fds out of children.
        let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n < 0 {
            let e = SysError::last("recvmsg");
            if e.errno == libc::EINTR {
                continue;
            }
            return Err(e);
        }
        break n.unsigned_abs();
    };
    let mut fds = Vec::new();
    // SAFETY: walking the control messages the kernel wrote into `control`.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let count = ((*c).cmsg_len - libc::CMSG_LEN(0) as usize) / std::mem::size_of::<RawFd>();
                let data = libc::CMSG_DATA(c).cast::<RawFd>();
                for i in 0..count {
                    fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok((n, fds))
}

/// Credentials of the process on the other end of a Unix socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCred {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
}

pub fn peer_cred(sock: &impl AsRawFd) -> Result<PeerCred> {
    let mut c = libc::ucred { pid: 0, uid: 0, gid: 0 };
    let mut len = libc::socklen_t::try_from(std::mem::size_of::<libc::ucred>()).unwrap_or(0);
    // SAFETY: `c` is a ucred-sized out buffer with its length.
    let r = unsafe {
        libc::getsockopt(sock.as_raw_fd(), libc::SOL_SOCKET, libc::SO_PEERCRED, (&mut c as *mut libc::ucred).cast(), &mut len)
    };
    if r < 0 {
        return Err(SysError::last("getsockopt(SO_PEERCRED)"));
    }
    Ok(PeerCred { pid: c.pid, uid: c.uid, gid: c.gid })
}

/// The memory of a `recvmsg(2)` that *another* process makes to receive one
/// descriptor: its `msghdr`, a one-byte `iovec` and room for one
/// `SCM_RIGHTS` descriptor, laid out for the address `at` in that process.
/// The daemon writes [`RemoteRecv::image`] into a frozen process, injects
/// `recvmsg(sock, msghdr_addr(), MSG_CMSG_CLOEXEC)` there, reads the bytes
/// back and takes the descriptor number with [`RemoteRecv::received_fd`].
/// The layout is the kernel's, so it lives here with the other socket ABI.
#[derive(Debug, Clone, Copy)]
pub struct RemoteRecv {
    at: u64,
}

const RECV_IOV: usize = 64;
const RECV_BYTE: usize = 80;
const RECV_CONTROL: usize = 96;

impl RemoteRecv {
    /// Bytes the image takes.
    pub const LEN: usize = 128;

    pub fn new(at: u64) -> RemoteRecv {
        RemoteRecv { at }
    }

    /// Where the `msghdr` is: the call's second argument.
    pub fn msghdr_addr(&self) -> u64 {
        self.at
    }

    fn control_len() -> usize {
        // SAFETY: CMSG_SPACE is a pure size computation.
        unsafe { libc::CMSG_SPACE(cmsg_u32(std::mem::size_of::<RawFd>())) as usize }
    }

    /// The bytes to write at `at`.
    pub fn image(&self) -> Vec<u8> {
        let mut bytes = vec![0u8; Self::LEN];
        let mut put = |offset: usize, value: u64| bytes[offset..offset + 8].copy_from_slice(&value.to_ne_bytes());
        put(std::mem::offset_of!(libc::msghdr, msg_iov), self.at + RECV_IOV as u64);
        put(std::mem::offset_of!(libc::msghdr, msg_iovlen), 1);
        put(std::mem::offset_of!(libc::msghdr, msg_control), self.at + RECV_CONTROL as u64);
        put(std::mem::offset_of!(libc::msghdr, msg_controllen), Self::control_len() as u64);
        put(RECV_IOV + std::mem::offset_of!(libc::iovec, iov_base), self.at + RECV_BYTE as u64);
        put(RECV_IOV + std::mem::offset_of!(libc::iovec, iov_len), 1);
        bytes
    }

    /// The descriptor number the call received, read from the image's bytes
    /// after the call; `None` if none came whole (no `SCM_RIGHTS` message,
    /// or the control data was cut).
    pub fn received_fd(&self, bytes: &[u8]) -> Option<RawFd> {
        if bytes.len() < Self::LEN {
            return None;
        }
        let word = |offset: usize| u64::from_ne_bytes(bytes[offset..offset + 8].try_into().unwrap_or_default());
        let int = |offset: usize| i32::from_ne_bytes(bytes[offset..offset + 4].try_into().unwrap_or_default());
        let flags = int(std::mem::offset_of!(libc::msghdr, msg_flags));
        let control = RECV_CONTROL;
        let header = std::mem::size_of::<libc::cmsghdr>();
        // SAFETY: CMSG_LEN is a pure size computation.
        let one_fd = unsafe { libc::CMSG_LEN(cmsg_u32(std::mem::size_of::<RawFd>())) } as u64;
        let whole = flags & libc::MSG_CTRUNC == 0
            && word(control + std::mem::offset_of!(libc::cmsghdr, cmsg_len)) == one_fd
            && int(control + std::mem::offset_of!(libc::cmsghdr, cmsg_level)) == libc::SOL_SOCKET
            && int(control + std::mem::offset_of!(libc::cmsghdr, cmsg_type)) == libc::SCM_RIGHTS;
        whole.then(|| int(control + header)).filter(|&fd| fd >= 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    #[test]
    fn seqpacket_pairs_keep_message_boundaries() {
        let (a, b) = seqpacket_pair().unwrap();
        send_with_fds(&a, b"one", &[]).unwrap();
        send_with_fds(&a, b"three", &[]).unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(recv_with_fds(&b, &mut buf).unwrap().0, 3);
        assert_eq!(recv_with_fds(&b, &mut buf).unwrap().0, 5);
        drop(a);
        assert_eq!(recv_with_fds(&b, &mut buf).unwrap().0, 0);
    }

    #[test]
    fn descriptors_travel_with_bytes() {
        let (a, b) = UnixStream::pair().unwrap();
        let (mut r, w) = std::io::pipe().unwrap();
        send_with_fds(&a, b"hello", &[w.as_raw_fd()]).unwrap();
        drop(w);
        let mut buf = [0u8; 16];
        let (n, fds) = recv_with_fds(&b, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"hello");
        assert_eq!(fds.len(), 1);
        let mut f = std::fs::File::from(fds.into_iter().next().unwrap());
        f.write_all(b"x").unwrap();
        drop(f);
        let mut s = String::new();
        std::io::Read::read_to_string(&mut r, &mut s).unwrap();
        assert_eq!(s, "x");
        assert_eq!(peer_cred(&a).unwrap().pid, i32::try_from(std::process::id()).unwrap());
    }

    #[test]
    fn a_remote_recv_image_receives_one_descriptor() {
        let (a, b) = UnixStream::pair().unwrap();
        let (_r, w) = std::io::pipe().unwrap();
        send_with_fds(&a, b"u", &[w.as_raw_fd()]).unwrap();
        // The "other process" is this one: the image at its own address.
        let mut buf = vec![0u8; RemoteRecv::LEN];
        let recv = RemoteRecv::new(buf.as_mut_ptr() as u64);
        buf.copy_from_slice(&recv.image());
        // SAFETY: the image is a msghdr whose pointers all point into `buf`.
        let n = unsafe { libc::recvmsg(b.as_raw_fd(), recv.msghdr_addr() as *mut libc::msghdr, libc::MSG_CMSG_CLOEXEC) };
        assert_eq!(n, 1);
        let fd = recv.received_fd(&buf).expect("one descriptor came");
        // SAFETY: the descriptor the kernel just gave us.
        let got = unsafe { OwnedFd::from_raw_fd(fd) };
        let same = |f: &OwnedFd| std::fs::metadata(format!("/proc/self/fd/{}", f.as_raw_fd())).map(|m| std::os::unix::fs::MetadataExt::ino(&m)).unwrap();
        assert_eq!(same(&got), same(&w.into()));
        assert_eq!(recv.received_fd(&recv.image()), None, "nothing received yet");
    }
}
