//! Reading the state of another process's descriptors without changing
//! it: whether two of its descriptors are one open file, or one is the
//! file an epoll watch watches (`kcmp`), and the bytes in a pipe's buffer
//! (duplicated with `tee`, never consumed); a memfd's seals; the file a
//! file handle names (an inotify watch's); a socket's options and filter.

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

use crate::{Result, SysError};

/// `KCMP_FILE`: compare two descriptors' open file descriptions.
const KCMP_FILE: i32 = 0;

/// Whether descriptor `fd1` of process `pid1` and `fd2` of `pid2` are the
/// same open file description (one was made from the other by `dup` or
/// `fork`), by `kcmp(KCMP_FILE)`.
pub fn same_file(pid1: i32, fd1: i32, pid2: i32, fd2: i32) -> Result<bool> {
    // SAFETY: kcmp takes integers only and touches no memory of ours.
    let r = unsafe { libc::syscall(libc::SYS_kcmp, pid1, pid2, KCMP_FILE, fd1, fd2) };
    if r < 0 {
        return Err(SysError::last("kcmp"));
    }
    Ok(r == 0)
}

/// `KCMP_EPOLL_TFD`: is a descriptor's file the target of an epoll watch.
const KCMP_EPOLL_TFD: i32 = 7;

/// `struct kcmp_epoll_slot`.
#[repr(C)]
struct EpollSlot {
    efd: u32,
    tfd: u32,
    toff: u32,
}

/// Whether descriptor `fd` of process `pid` is the file that the `toff`-th
/// watch registered under descriptor number `tfd` (counting from 0, in the
/// order `/proc/PID/fdinfo` lists them) of epoll instance `efd` of the same
/// process watches (`kcmp(KCMP_EPOLL_TFD)`). The number a watch was added
/// under may since have been closed or given to another file.
pub fn epoll_watches_file(pid: i32, fd: i32, efd: i32, tfd: i32, toff: u32) -> Result<bool> {
    let bad = |_| SysError::new("kcmp(KCMP_EPOLL_TFD)", libc::EBADF);
    let slot = EpollSlot { efd: u32::try_from(efd).map_err(bad)?, tfd: u32::try_from(tfd).map_err(bad)?, toff };
    // SAFETY: the kernel reads one `struct kcmp_epoll_slot` from `slot`, which lives across the call.
    let r = unsafe { libc::syscall(libc::SYS_kcmp, pid, pid, KCMP_EPOLL_TFD, fd, &slot as *const EpollSlot) };
    if r < 0 {
        return Err(SysError::last("kcmp(KCMP_EPOLL_TFD)"));
    }
    Ok(r == 0)
}

fn fcntl_int(fd: &impl AsRawFd, cmd: i32, arg: i32, op: &'static str) -> Result<i32> {
    // SAFETY: fcntl with integer arguments touches no memory of ours.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), cmd, arg) };
    if r < 0 {
        return Err(SysError::last(op));
    }
    Ok(r)
}

/// A memfd's seals (`F_GET_SEALS`); 0 for a file that has none to give
/// (not a memfd: `EINVAL`).
pub fn seals(fd: &impl AsFd) -> Result<u32> {
    match fcntl_int(&fd.as_fd(), libc::F_GET_SEALS, 0, "fcntl(F_GET_SEALS)") {
        Ok(s) => Ok(s.unsigned_abs()),
        Err(e) if e.errno == libc::EINVAL => Ok(0),
        Err(e) => Err(e),
    }
}

/// Adds `seals` to a memfd (`F_ADD_SEALS`).
pub fn add_seals(fd: &impl AsFd, seals: u32) -> Result<()> {
    let seals = i32::try_from(seals).map_err(|_| SysError::new("fcntl(F_ADD_SEALS)", libc::EINVAL))?;
    fcntl_int(&fd.as_fd(), libc::F_ADD_SEALS, seals, "fcntl(F_ADD_SEALS)").map(|_| ())
}

/// An integer socket option of `fd` (`getsockopt`).
pub fn sockopt_int(fd: &impl AsFd, level: i32, name: i32) -> Result<i32> {
    let mut value: libc::c_int = 0;
    let mut len = libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>()).unwrap_or(4);
    // SAFETY: the kernel writes at most `len` bytes to `value` and the length to `len`.
    let r = unsafe { libc::getsockopt(fd.as_fd().as_raw_fd(), level, name, (&mut value as *mut libc::c_int).cast(), &mut len) };
    if r != 0 {
        return Err(SysError::last("getsockopt"));
    }
    Ok(value)
}

/// A socket option of `fd` as the kernel's bytes (`getsockopt`), at most
/// `max` of them: for options that are structures or strings
/// (`SO_LINGER`, `SO_BINDTODEVICE`, `SO_RCVTIMEO`).
pub fn sockopt_bytes(fd: &impl AsFd, level: i32, name: i32, max: usize) -> Result<Vec<u8>> {
    let mut value = vec![0u8; max];
    let mut len = libc::socklen_t::try_from(max).map_err(|_| SysError::new("getsockopt", libc::EINVAL))?;
    // SAFETY: the kernel writes at most `len` bytes to `value` and the length to `len`.
    let r = unsafe { libc::getsockopt(fd.as_fd().as_raw_fd(), level, name, value.as_mut_ptr().cast(), &mut len) };
    if r != 0 {
        return Err(SysError::last("getsockopt"));
    }
    value.truncate(usize::try_from(len).unwrap_or(0).min(max));
    Ok(value)
}

/// `SO_GET_FILTER` (the same number as `SO_ATTACH_FILTER`).
const SO_GET_FILTER: i32 = libc::SO_ATTACH_FILTER;

/// The classic BPF program attached to socket `fd` (`SO_ATTACH_FILTER`), as
/// its raw `struct sock_filter` entries (8 bytes each); empty when it has
/// none. The kernel counts this option's length in entries, not bytes.
pub fn socket_filter(fd: &impl AsFd) -> Result<Vec<u8>> {
    let raw = fd.as_fd().as_raw_fd();
    let mut count: libc::socklen_t = 0;
    // SAFETY: with a length of 0 the kernel writes only the entry count to `count`.
    let r = unsafe { libc::getsockopt(raw, libc::SOL_SOCKET, SO_GET_FILTER, std::ptr::null_mut(), &mut count) };
    if r != 0 {
        return Err(SysError::last("getsockopt(SO_GET_FILTER)"));
    }
    if count == 0 {
        return Ok(Vec::new());
    }
    let entries = usize::try_from(count).map_err(|_| SysError::new("getsockopt(SO_GET_FILTER)", libc::EINVAL))?;
    let mut program = vec![0u8; entries * 8];
    let mut len = count;
    // SAFETY: the kernel writes at most `len` entries of 8 bytes to `program`.
    let r = unsafe { libc::getsockopt(raw, libc::SOL_SOCKET, SO_GET_FILTER, program.as_mut_ptr().cast(), &mut len) };
    if r != 0 {
        return Err(SysError::last("getsockopt(SO_GET_FILTER)"));
    }
    program.truncate(usize::try_from(len).unwrap_or(0).min(entries) * 8);
    Ok(program)
}

/// The address a socket is bound to, as the kernel's raw `sockaddr` bytes
/// (`getsockname`); `peer` asks for the connected peer's instead
/// (`getpeername`, `ENOTCONN` when there is none).
pub fn socket_address(fd: &impl AsFd, peer: bool) -> Result<Vec<u8>> {
    // SAFETY: sockaddr_storage is plain bytes; all zero is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_storage>()).unwrap_or(128);
    let raw = fd.as_fd().as_raw_fd();
    let at = (&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr>();
    // SAFETY: the kernel writes at most `len` bytes to `storage` and the length to `len`.
    let r = unsafe { if peer { libc::getpeername(raw, at, &mut len) } else { libc::getsockname(raw, at, &mut len) } };
    if r != 0 {
        return Err(SysError::last(if peer { "getpeername" } else { "getsockname" }));
    }
    let len = usize::try_from(len).unwrap_or(0).min(std::mem::size_of::<libc::sockaddr_storage>());
    // SAFETY: `storage` is `size_of::<sockaddr_storage>()` initialized bytes and `len` is at most that.
    Ok(unsafe { std::slice::from_raw_parts((&storage as *const libc::sockaddr_storage).cast::<u8>(), len) }.to_vec())
}

/// Bytes waiting to be read from a pipe, socket or terminal (`FIONREAD`).
pub fn readable_bytes(fd: &impl AsFd) -> Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int to `n`.
    if unsafe { libc::ioctl(fd.as_fd().as_raw_fd(), libc::FIONREAD, &mut n) } != 0 {
        return Err(SysError::last("ioctl(FIONREAD)"));
    }
    usize::try_from(n).map_err(|_| SysError::new("ioctl(FIONREAD)", libc::EINVAL))
}

/// A new pipe of this process (read end, write end), close-on-exec and
/// non-blocking.
pub fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 writes two ints to `fds`.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return Err(SysError::last("pipe2"));
    }
    // SAFETY: both descriptors are new and ours alone.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The buffer size of a pipe (`F_GETPIPE_SZ`) and the bytes in it, oldest
/// first, read from `read_end` (a pipe's read end, possibly another
/// process's, taken with `pidfd_getfd`) without consuming them: they are
/// duplicated into a pipe of our own with `tee` and read from there.
pub fn pipe_contents(read_end: &impl AsFd) -> Result<(u32, Vec<u8>)> {
    let read_end = read_end.as_fd();
    let capacity = fcntl_int(&read_end, libc::F_GETPIPE_SZ, 0, "fcntl(F_GETPIPE_SZ)")?;
    let waiting = readable_bytes(&read_end)?;
    let capacity_u32 = u32::try_from(capacity).map_err(|_| SysError::new("fcntl(F_GETPIPE_SZ)", libc::EINVAL))?;
    if waiting == 0 {
        return Ok((capacity_u32, Vec::new()));
    }
    let (ours_r, ours_w) = pipe()?;
    // As many buffer slots as the source, so that one tee takes them all
    // (each of its buffers, however full, takes one slot).
    fcntl_int(&ours_w, libc::F_SETPIPE_SZ, capacity, "fcntl(F_SETPIPE_SZ)")?;
    // SAFETY: tee takes descriptors and integers only.
    let teed = unsafe { libc::tee(read_end.as_raw_fd(), ours_w.as_raw_fd(), waiting, libc::SPLICE_F_NONBLOCK) };
    let teed = usize::try_from(teed).map_err(|_| SysError::last("tee"))?;
    if teed != waiting {
        // tee always starts at the head of the pipe: a second call would
        // copy the same bytes again, so a short one is an error.
        return Err(SysError::new("tee (short: the pipe changed while it was read)", libc::EAGAIN));
    }
    let mut data = vec![0u8; waiting];
    let mut got = 0;
    let file = std::fs::File::from(ours_r);
    while got < waiting {
        match std::io::Read::read(&mut &file, &mut data[got..]) {
            Ok(0) => return Err(SysError::new("read (pipe copy)", libc::EIO)),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(SysError::new("read (pipe copy)", e.raw_os_error().unwrap_or(libc::EIO))),
        }
    }
    drop(ours_w);
    Ok((capacity_u32, data))
}

/// Opens (`O_PATH`) the file that file handle `handle` of type
/// `handle_type` names on the filesystem `mount` is on
/// (`open_by_handle_at`; needs `CAP_DAC_READ_SEARCH`): what an inotify
/// watch watches, whose handle its fdinfo shows.
pub fn open_by_handle(mount: &impl AsFd, handle_type: i32, handle: &[u8]) -> Result<OwnedFd> {
    let len = u32::try_from(handle.len()).map_err(|_| SysError::new("open_by_handle_at", libc::EINVAL))?;
    // struct file_handle: handle_bytes, handle_type, then the bytes, 4-aligned.
    let mut raw = vec![0u32; 2 + handle.len().div_ceil(4)];
    raw[0] = len;
    raw[1] = handle_type.cast_unsigned();
    for (i, chunk) in handle.chunks(4).enumerate() {
        let mut word = [0u8; 4];
        word[..chunk.len()].copy_from_slice(chunk);
        raw[2 + i] = u32::from_ne_bytes(word);
    }
    // SAFETY: `raw` holds a struct file_handle of `len` bytes, alive across the call.
    let r = unsafe {
        libc::syscall(libc::SYS_open_by_handle_at, mount.as_fd().as_raw_fd(), raw.as_mut_ptr(), libc::O_PATH | libc::O_CLOEXEC)
    };
    if r < 0 {
        return Err(SysError::last("open_by_handle_at"));
    }
    let fd = crate::fd_of(r, "open_by_handle_at")?;
    // SAFETY: a new descriptor that nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn pipe_contents_are_read_and_left_in_place() {
        let (r, w) = pipe().unwrap();
        let mut writer = std::fs::File::from(w);
        writer.write_all(b"first ").unwrap();
        writer.write_all(&[b'x'; 5000]).unwrap();
        writer.write_all(b" last").unwrap();
        let (capacity, data) = pipe_contents(&r).unwrap();
        assert!(capacity >= 4096, "{capacity}");
        assert_eq!(data.len(), 6 + 5000 + 5);
        assert!(data.starts_with(b"first x") && data.ends_with(b"x last"));
        // Still there, and read again the same.
        assert_eq!(readable_bytes(&r).unwrap(), data.len());
        assert_eq!(pipe_contents(&r).unwrap().1, data);
        let (_, empty_w) = pipe().unwrap();
        let (empty_r, _) = (pipe().unwrap().0, empty_w);
        assert_eq!(pipe_contents(&empty_r).unwrap().1, Vec::<u8>::new());
    }

    #[test]
    fn structured_options_and_a_socket_filter_are_read() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert_eq!(socket_filter(&socket).unwrap(), Vec::<u8>::new(), "no filter yet");
        let linger = sockopt_bytes(&socket, libc::SOL_SOCKET, libc::SO_LINGER, 8).unwrap();
        assert_eq!(linger, vec![0u8; 8], "linger off");
        // "accept everything" twice: ret #0xffff.
        let program: Vec<u8> = [[6u8, 0, 0, 0, 0xff, 0xff, 0, 0]; 2].concat();
        let fprog = libc::sock_fprog { len: 2, filter: program.as_ptr().cast_mut().cast() };
        let size = libc::socklen_t::try_from(std::mem::size_of::<libc::sock_fprog>()).unwrap();
        // SAFETY: fprog points at two valid entries that outlive the call.
        let r = unsafe { libc::setsockopt(socket.as_raw_fd(), libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, (&fprog as *const libc::sock_fprog).cast(), size) };
        assert_eq!(r, 0);
        assert_eq!(socket_filter(&socket).unwrap(), program);
    }

    #[test]
    fn socket_options_and_addresses_are_read() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert_eq!(sockopt_int(&listener, libc::SOL_SOCKET, libc::SO_ACCEPTCONN).unwrap(), 1);
        assert_eq!(sockopt_int(&listener, libc::SOL_SOCKET, libc::SO_TYPE).unwrap(), libc::SOCK_STREAM);
        let name = socket_address(&listener, false).unwrap();
        let port = listener.local_addr().unwrap().port();
        assert_eq!(name.len(), std::mem::size_of::<libc::sockaddr_in>());
        assert_eq!(u16::from_be_bytes([name[2], name[3]]), port);
        assert_eq!(&name[4..8], &[127, 0, 0, 1]);
        assert_eq!(socket_address(&listener, true).unwrap_err().errno, libc::ENOTCONN);
    }

    #[test]
    fn a_file_is_opened_again_by_its_handle() {
        let dir = std::env::temp_dir();
        let path = std::ffi::CString::new(dir.to_str().unwrap()).unwrap();
        let mut raw = vec![0u32; 2 + 32];
        raw[0] = 128;
        let mut mount_id = 0;
        // SAFETY: `raw` has room for a handle of 128 bytes; the path is a C string.
        let r = unsafe { libc::syscall(libc::SYS_name_to_handle_at, libc::AT_FDCWD, path.as_ptr(), raw.as_mut_ptr(), &mut mount_id, 0) };
        assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
        let bytes: Vec<u8> = raw[2..].iter().flat_map(|w| w.to_ne_bytes()).take(raw[0] as usize).collect();
        let mount = std::fs::File::open(&dir).unwrap();
        let opened = open_by_handle(&mount, raw[1].cast_signed(), &bytes).unwrap();
        let link = std::fs::read_link(format!("/proc/self/fd/{}", opened.as_raw_fd())).unwrap();
        assert_eq!(link, dir.canonicalize().unwrap());
        assert!(open_by_handle(&mount, raw[1].cast_signed(), &bytes[..bytes.len() - 1]).is_err(), "a handle cut short");
    }

    #[test]
    fn seals_are_read_and_added() {
        // SAFETY: memfd_create with a valid name returns a new descriptor of ours.
        let fd = unsafe { OwnedFd::from_raw_fd(libc::memfd_create(c"sealed".as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING)) };
        assert_eq!(seals(&fd).unwrap(), 0);
        add_seals(&fd, (libc::F_SEAL_GROW | libc::F_SEAL_SHRINK).unsigned_abs()).unwrap();
        assert_eq!(seals(&fd).unwrap(), (libc::F_SEAL_GROW | libc::F_SEAL_SHRINK).unsigned_abs());
        let (r, _w) = pipe().unwrap();
        assert_eq!(seals(&r).unwrap(), 0, "not a memfd");
    }

    #[test]
    fn kcmp_tells_duplicates_apart_from_other_files() {
        let (r, w) = pipe().unwrap();
        let dup = r.try_clone().unwrap();
        let me = std::process::id().cast_signed();
        assert!(same_file(me, r.as_raw_fd(), me, dup.as_raw_fd()).unwrap());
        assert!(!same_file(me, r.as_raw_fd(), me, w.as_raw_fd()).unwrap());
    }

    #[test]
    fn kcmp_finds_the_file_of_an_epoll_watch_whose_number_was_reused() {
        let me = std::process::id().cast_signed();
        let (r, _w) = pipe().unwrap();
        let (other, _other_w) = pipe().unwrap();
        // SAFETY: epoll_create1 returns a new descriptor of ours.
        let ep = unsafe { OwnedFd::from_raw_fd(libc::epoll_create1(libc::EPOLL_CLOEXEC)) };
        let dup = r.try_clone().unwrap();
        let mut ev = libc::epoll_event { events: libc::EPOLLIN as u32, u64: 1 };
        // SAFETY: a valid epoll instance, descriptor and event.
        assert_eq!(unsafe { libc::epoll_ctl(ep.as_raw_fd(), libc::EPOLL_CTL_ADD, dup.as_raw_fd(), &mut ev) }, 0);
        let number = dup.as_raw_fd();
        drop(dup);
        // The watch lives on (the file is open at `r`); its number now names nothing, or another file.
        assert!(epoll_watches_file(me, r.as_raw_fd(), ep.as_raw_fd(), number, 0).unwrap());
        assert!(!epoll_watches_file(me, other.as_raw_fd(), ep.as_raw_fd(), number, 0).unwrap());
        assert!(epoll_watches_file(me, r.as_raw_fd(), ep.as_raw_fd(), number, 1).is_err(), "only one watch under that number");
    }
}
