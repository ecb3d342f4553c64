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
//! It also clones the namespace holders of containers (also with
//! `CLONE_PARENT`), and forks a child into a container by entering the
//! holder's PID namespace for that one fork.
//!
//! Requests travel over a `SOCK_SEQPACKET` pair: a postcard [`Request`] with
//! descriptors attached (for a child: its stdin, stdout, stderr, the write
//! end of its ready pipe, and its container's holder pidfd if any; for a
//! holder: its control pipe and ready pipe); the answer is the new process's
//! pid (i32, or -errno).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Mutex;

use mitosis_container::HolderSpec;
use mitosis_restore::prologue::Prologue;
use mitosis_sys::fdpass;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
enum Request {
    Child(Prologue),
    /// A process that joins a container (`join_flags` on the holder pidfd),
    /// writes a byte on its ready pipe, waits for one on its go pipe and exits.
    Bare { join_flags: i32 },
    Holder { spec: HolderSpec, name: String },
}

pub struct Spawner {
    sock: Mutex<OwnedFd>,
}

/// Forks a helper process of the daemon (the zygote, the janitor) that runs
/// `main` with its end of a `SOCK_SEQPACKET` pair; returns the daemon's end.
/// Call while the daemon is still single-threaded (the helper may allocate).
pub(crate) fn fork_helper(main: impl FnOnce(OwnedFd)) -> std::io::Result<OwnedFd> {
    let mut pair = [0; 2];
    // SAFETY: valid out array of two ints.
    if unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0, pair.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors are new and owned by nobody else.
    let (ours, theirs) = unsafe { (OwnedFd::from_raw_fd(pair[0]), OwnedFd::from_raw_fd(pair[1])) };
    // SAFETY: the caller guarantees that no other thread exists, so the child
    // may use the allocator; `main` never returns.
    match unsafe { libc::fork() } {
        -1 => Err(std::io::Error::last_os_error()),
        0 => {
            drop(ours);
            main(theirs);
            // SAFETY: `main` does not return; if it did, the helper must not go on
            // as a copy of the daemon.
            unsafe { libc::_exit(127) }
        }
        _ => Ok(ours),
    }
}

impl Spawner {
    /// Forks the zygote. Call while the daemon is still single-threaded.
    pub fn start() -> std::io::Result<Spawner> {
        let parent = std::process::id() as i32;
        let sock = fork_helper(|theirs| zygote_main(theirs, parent))?;
        Ok(Spawner { sock: Mutex::new(sock) })
    }

    /// Forks a child that runs `prologue` with `stdio` and `ready`, in the
    /// container of holder pidfd `holder` if given; returns its pid.
    pub fn spawn(&self, prologue: &Prologue, stdio: [RawFd; 3], ready: RawFd, holder: Option<RawFd>) -> std::io::Result<i32> {
        let mut fds = vec![stdio[0], stdio[1], stdio[2], ready];
        fds.extend(holder);
        self.call(&Request::Child(prologue.clone()), &fds)
    }

    fn call(&self, request: &Request, fds: &[RawFd]) -> std::io::Result<i32> {
        let bytes = postcard::to_stdvec(request).map_err(|e| std::io::Error::other(e.to_string()))?;
        let sock = self.sock.lock().unwrap();
        fdpass::send_with_fds(&*sock, &bytes, fds).map_err(|e| std::io::Error::from_raw_os_error(e.errno))?;
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

impl Spawner {
    /// Forks a process into the container of holder pidfd `holder` that
    /// joins its namespaces, reports on `ready` and exits once `go` is
    /// readable (or closed). Returns its pid.
    pub fn spawn_bare(&self, holder: RawFd, join_flags: i32, ready: RawFd, go: RawFd) -> std::io::Result<i32> {
        self.call(&Request::Bare { join_flags }, &[ready, go, holder])
    }
}

impl mitosis_container::HolderSpawner for Spawner {
    fn spawn_holder(&self, spec: &HolderSpec, name: &str, control: RawFd, ready: RawFd) -> std::io::Result<i32> {
        self.call(&Request::Holder { spec: spec.clone(), name: name.to_string() }, &[control, ready])
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
    // To come back to our own PID namespace after forking into a container's.
    // SAFETY: a valid NUL-terminated path.
    let own_pidns = unsafe { libc::open(c"/proc/self/ns/pid".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let (n, fds) = match fdpass::recv_with_fds(&sock, &mut buf) {
            Ok((0, _)) | Err(_) => {
                // SAFETY: leaving the zygote.
                unsafe { libc::_exit(0) }
            }
            Ok(x) => x,
        };
        let answer = match (postcard::from_bytes::<Request>(&buf[..n]), fds.len()) {
            (Ok(Request::Child(prologue)), 4 | 5) => fork_child(&prologue, &fds, own_pidns),
            (Ok(Request::Holder { spec, name }), 2) => fork_holder(&spec, &name, &fds),
            (Ok(Request::Bare { join_flags }), 3) => fork_bare(join_flags, &fds, own_pidns),
            _ => -libc::EINVAL,
        };
        drop(fds);
        // SAFETY: sending 4 bytes from a live buffer.
        unsafe { libc::send(sock.as_raw_fd(), answer.to_le_bytes().as_ptr().cast(), 4, libc::MSG_NOSIGNAL) };
    }
}

/// `clone` without CLONE_VM (a fork) with `flags`; CLONE_PARENT makes the
/// new process the daemon's child. Returns 0 in the new process.
fn clone(flags: i32) -> i64 {
    // SAFETY: behaves like fork. The zygote is single-threaded, so the new
    // process may run anything.
    unsafe { libc::syscall(libc::SYS_clone, (flags | libc::CLONE_PARENT | libc::SIGCHLD) as u64, 0u64, 0u64, 0u64, 0u64) }
}

fn pid_or_errno(pid: i64) -> i32 {
    if pid < 0 {
        -std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO)
    } else {
        pid as i32
    }
}

/// Forks a process that runs `body`; with `holder` (a container's holder
/// pidfd) into the holder's PID namespace, coming back to `own_pidns`
/// afterwards.
fn fork_into(holder: Option<RawFd>, own_pidns: RawFd, body: impl FnOnce()) -> i32 {
    if let Some(h) = holder {
        // SAFETY: setns on a pidfd we were given; affects only our next fork.
        if unsafe { libc::setns(h, libc::CLONE_NEWPID) } != 0 {
            return -std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO);
        }
    }
    let pid = clone(0);
    if pid == 0 {
        body();
        // SAFETY: `body` does not return; if it did, the process must not go on as a zygote.
        unsafe { libc::_exit(127) };
    }
    let answer = pid_or_errno(pid);
    // SAFETY: back to forking into our own PID namespace.
    if holder.is_some() && unsafe { libc::setns(own_pidns, libc::CLONE_NEWPID) } != 0 {
        // Every later child would land in that container: stop serving; the
        // daemon reports the zygote gone.
        // SAFETY: leaving the zygote.
        unsafe { libc::_exit(1) };
    }
    answer
}

/// Forks a child that runs its prologue (fds: stdin, stdout, stderr, ready,
/// and the holder pidfd of its container if any).
fn fork_child(prologue: &Prologue, fds: &[OwnedFd], own_pidns: RawFd) -> i32 {
    let holder = fds.get(4).map(|fd| fd.as_raw_fd());
    fork_into(holder, own_pidns, || {
        let stdio = [fds[0].as_raw_fd(), fds[1].as_raw_fd(), fds[2].as_raw_fd()];
        prologue.run(stdio, fds[3].as_raw_fd(), holder);
    })
}

/// Forks the process of a bare container (fds: ready, go, holder pidfd).
fn fork_bare(join_flags: i32, fds: &[OwnedFd], own_pidns: RawFd) -> i32 {
    let holder = fds[2].as_raw_fd();
    fork_into(Some(holder), own_pidns, || {
        // SAFETY: raw syscalls in the new process, which never returns.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
            let code = if libc::setns(holder, join_flags) == 0 { 0 } else { 1 };
            let byte = [0u8; 1];
            libc::write(fds[0].as_raw_fd(), byte.as_ptr().cast(), 1);
            let mut go = [0u8; 1];
            libc::read(fds[1].as_raw_fd(), go.as_mut_ptr().cast(), 1);
            libc::_exit(code);
        }
    })
}

/// Clones a container's namespace holder (fds: control pipe, ready pipe).
fn fork_holder(spec: &HolderSpec, name: &str, fds: &[OwnedFd]) -> i32 {
    let pid = clone(spec.clone_flags());
    if pid == 0 {
        mitosis_container::holder::holder_main(spec, name, fds[0].as_raw_fd(), fds[1].as_raw_fd());
    }
    pid_or_errno(pid)
}
