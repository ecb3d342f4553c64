//! The zygote: a small process that forks children on the daemon's behalf.
//!
//! Restoring a child starts by unmapping everything it inherited, and forking
//! costs in proportion to the forking process's memory. The daemon grows
//! (threads, buffers, seeds' images); the zygote, forked once at start-up while
//! the daemon is small and single-threaded, stays small. It forks each child
//! with `CLONE_PARENT`, so the child is the daemon's own child: the daemon
//! reaps it through its pidfd, and the child's `PR_SET_PDEATHSIG` fires when
//! the daemon's main thread (its parent thread) ends: a child never outlives
//! the daemon whose pager it depends on. The zygote dies with the daemon too.
//!
//! Requests travel over a `SOCK_SEQPACKET` pair: a postcard [`Prologue`] with
//! four descriptors attached (the child's stdin, stdout, stderr and the write
//! end of its ready pipe); the answer is the child's pid (i32, or -errno).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Mutex;

use mitosis_restore::prologue::Prologue;
use mitosis_sys::fdpass;

pub struct Spawner {
    sock: Mutex<OwnedFd>,
}

impl Spawner {
    /// Forks the zygote. Call while the daemon is still single-threaded.
    pub fn start() -> std::io::Result<Spawner> {
        let mut pair = [0; 2];
        // SAFETY: valid out array of two ints.
        if unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0, pair.as_mut_ptr()) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: both descriptors are new and owned by nobody else.
        let (ours, theirs) = unsafe { (OwnedFd::from_raw_fd(pair[0]), OwnedFd::from_raw_fd(pair[1])) };
        let parent = std::process::id() as i32;
        // SAFETY: the caller guarantees that no other thread exists, so the child
        // may use the allocator; it never returns from `zygote_main`.
        match unsafe { libc::fork() } {
            -1 => Err(std::io::Error::last_os_error()),
            0 => {
                drop(ours);
                zygote_main(theirs, parent)
            }
            _ => Ok(Spawner { sock: Mutex::new(ours) }),
        }
    }

    /// Forks a child that runs `prologue` with `stdio` and `ready`; returns its pid.
    pub fn spawn(&self, prologue: &Prologue, stdio: [RawFd; 3], ready: RawFd) -> std::io::Result<i32> {
        let bytes = postcard::to_stdvec(prologue).map_err(|e| std::io::Error::other(e.to_string()))?;
        let sock = self.sock.lock().unwrap();
        fdpass::send_with_fds(&*sock, &bytes, &[stdio[0], stdio[1], stdio[2], ready])
            .map_err(|e| std::io::Error::from_raw_os_error(e.errno))?;
        let mut answer = [0u8; 4];
        // SAFETY: reading 4 bytes into a 4-byte buffer.
        let n = unsafe { libc::recv(sock.as_raw_fd(), answer.as_mut_ptr().cast(), 4, 0) };
        if n != 4 {
            return Err(std::io::Error::other("the zygote is gone"));
        }
        let pid = i32::from_le_bytes(answer);
        if pid < 0 {
            return Err(std::io::Error::from_raw_os_error(-pid));
        }
        Ok(pid)
    }
}

fn zygote_main(sock: OwnedFd, daemon: i32) -> ! {
    // SAFETY: plain prctl; the zygote must not outlive the daemon.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        if libc::getppid() != daemon {
            libc::_exit(0);
        }
    }
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let (n, fds) = match fdpass::recv_with_fds(&sock, &mut buf) {
            Ok((0, _)) | Err(_) => {
                // SAFETY: leaving the zygote.
                unsafe { libc::_exit(0) }
            }
            Ok(x) => x,
        };
        let answer = match (postcard::from_bytes::<Prologue>(&buf[..n]), fds.len()) {
            (Ok(prologue), 4) => fork_child(&prologue, &fds),
            _ => -libc::EINVAL,
        };
        drop(fds);
        // SAFETY: sending 4 bytes from a live buffer.
        unsafe { libc::send(sock.as_raw_fd(), answer.to_le_bytes().as_ptr().cast(), 4, libc::MSG_NOSIGNAL) };
    }
}

fn fork_child(prologue: &Prologue, fds: &[OwnedFd]) -> i32 {
    // SAFETY: clone without CLONE_VM behaves like fork; CLONE_PARENT makes the
    // child the daemon's. The zygote is single-threaded, so the child may run
    // anything; the prologue makes raw syscalls only anyway.
    let pid = unsafe { libc::syscall(libc::SYS_clone, (libc::CLONE_PARENT | libc::SIGCHLD) as u64, 0u64, 0u64, 0u64, 0u64) };
    if pid == 0 {
        let stdio = [fds[0].as_raw_fd(), fds[1].as_raw_fd(), fds[2].as_raw_fd()];
        prologue.run(stdio, fds[3].as_raw_fd());
    }
    if pid < 0 {
        return -std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO);
    }
    pid as i32
}
