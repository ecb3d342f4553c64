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
//! end of its ready pipe, the host's shared copy of its seed's pages if its
//! plan maps memory from it, and its container's holder pidfd if any; for a
//! holder: its control pipe and ready pipe; for a program of a function
//! instance: its stdin, stdout, stderr, go pipe, status pipe and holder
//! pidfd); the answer is the new process's pid (i32, or -errno).
//!
//! A program ([`Spawner::exec`]) is forked into its container, joins it,
//! waits for a byte on its go pipe (the daemon sends it once the process is
//! in the container's cgroups, so that everything it allocates is charged
//! there), drops to its user, takes its stdio and nothing else, and
//! `execve`s. Its status pipe is close-on-exec: the daemon reads end of file
//! once the program runs, or a [`ExecFailure`] record of the step that failed.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::Mutex;

use mitosis_container::HolderSpec;
use mitosis_restore::prologue::Prologue;
use mitosis_sys::process::{fork_single_threaded, Forked};
use mitosis_sys::{after_fork, fdpass};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
enum Request {
    Child(Box<Prologue>),
    /// A process that joins a container (`join_flags` on the holder pidfd),
    /// writes a byte on its ready pipe, waits for one on its go pipe and exits.
    Bare { join_flags: i32 },
    Holder { spec: HolderSpec, name: String },
    Exec(ExecSpec),
}

/// A program for [`Spawner::exec`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecSpec {
    /// Absolute path of the executable.
    pub program: Vec<u8>,
    /// Its arguments, its name first.
    pub argv: Vec<Vec<u8>>,
    /// Its whole environment (`NAME=value`).
    pub env: Vec<Vec<u8>>,
    /// Its working directory.
    pub cwd: Vec<u8>,
    /// Who it runs as; `None`: as the daemon.
    pub user: Option<(u32, u32, Vec<u32>)>,
    /// The namespaces it joins through the holder's pidfd (`HolderSpec::join_flags`).
    pub join_flags: i32,
}

/// The step of a program's start that failed, as its status pipe reports it
/// (`u8` step, `i32` errno, little-endian).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecFailure {
    pub step: ExecStep,
    pub errno: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecStep {
    JoinContainer = 1,
    Groups = 2,
    Ids = 3,
    Signals = 4,
    Descriptors = 5,
    Chdir = 6,
    Execve = 7,
}

impl ExecFailure {
    /// Length of a status record.
    pub const LEN: usize = 5;

    /// Decodes a status record (`None` for anything else).
    pub fn parse(record: &[u8]) -> Option<ExecFailure> {
        let [step, e0, e1, e2, e3] = *record else { return None };
        let step = match step {
            1 => ExecStep::JoinContainer,
            2 => ExecStep::Groups,
            3 => ExecStep::Ids,
            4 => ExecStep::Signals,
            5 => ExecStep::Descriptors,
            6 => ExecStep::Chdir,
            7 => ExecStep::Execve,
            _ => return None,
        };
        Some(ExecFailure { step, errno: i32::from_le_bytes([e0, e1, e2, e3]) })
    }

    fn record(step: ExecStep, errno: i32) -> [u8; ExecFailure::LEN] {
        let e = errno.to_le_bytes();
        [step as u8, e[0], e[1], e[2], e[3]]
    }
}

pub struct Spawner {
    sock: Mutex<OwnedFd>,
}

/// Forks a helper process of the daemon (the zygote, the janitor) that runs
/// `main` with its end of a `SOCK_SEQPACKET` pair; returns the daemon's end.
/// Call while the daemon is still single-threaded (the helper may allocate):
/// otherwise it fails (EBUSY).
pub(crate) fn fork_helper(main: impl FnOnce(OwnedFd)) -> std::io::Result<OwnedFd> {
    let (ours, theirs) = fdpass::seqpacket_pair().map_err(io_error)?;
    match fork_single_threaded(0).map_err(io_error)? {
        Forked::Child => {
            drop(ours);
            main(theirs);
            // `main` does not return; if it did, the helper must not go on as
            // a copy of the daemon.
            after_fork::exit(127)
        }
        Forked::Parent(_) => Ok(ours),
    }
}

fn io_error(e: mitosis_sys::SysError) -> std::io::Error {
    std::io::Error::from_raw_os_error(e.errno)
}

impl Spawner {
    /// Forks the zygote. Call while the daemon is still single-threaded.
    pub fn start() -> std::io::Result<Spawner> {
        let parent = std::process::id() as i32;
        let sock = fork_helper(|theirs| zygote_main(theirs, parent))?;
        Ok(Spawner { sock: Mutex::new(sock) })
    }

    /// Forks a child that runs `prologue` with `stdio` and `ready`, in the
    /// container of holder pidfd `holder` if given, with `shared_pages` (its
    /// plan's shared copy of the seed's pages, if it maps memory from one);
    /// returns its pid.
    pub fn spawn(&self, prologue: &Prologue, stdio: [RawFd; 3], ready: RawFd, holder: Option<RawFd>, shared_pages: Option<RawFd>) -> std::io::Result<i32> {
        if shared_pages.is_some() != prologue.plan.shared_pages_fd.is_some() {
            return Err(std::io::Error::other("a shared copy of the seed's pages must come with a plan that maps from it"));
        }
        let mut fds = vec![stdio[0], stdio[1], stdio[2], ready];
        fds.extend(shared_pages);
        fds.extend(holder);
        self.call(&Request::Child(Box::new(prologue.clone())), &fds)
    }

    fn call(&self, request: &Request, fds: &[RawFd]) -> std::io::Result<i32> {
        let bytes = postcard::to_stdvec(request).map_err(|e| std::io::Error::other(e.to_string()))?;
        let sock = self.sock.lock().unwrap();
        fdpass::send_with_fds(&*sock, &bytes, fds).map_err(io_error)?;
        let mut answer = [0u8; 4];
        if !matches!(fdpass::recv_with_fds(&*sock, &mut answer), Ok((4, _))) {
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

impl Spawner {
    /// Forks a process into the container of holder pidfd `holder` that
    /// runs `spec` once a byte comes on `go` (see the module doc), with
    /// `stdio`; `status` is the write end of its status pipe. Returns its pid.
    pub fn exec(&self, spec: &ExecSpec, stdio: [RawFd; 3], go: RawFd, status: RawFd, holder: RawFd) -> std::io::Result<i32> {
        self.call(&Request::Exec(spec.clone()), &[stdio[0], stdio[1], stdio[2], go, status, holder])
    }
}

impl mitosis_container::HolderSpawner for Spawner {
    fn spawn_holder(&self, spec: &HolderSpec, name: &str, control: RawFd, ready: RawFd) -> std::io::Result<i32> {
        self.call(&Request::Holder { spec: spec.clone(), name: name.to_string() }, &[control, ready])
    }
}

fn zygote_main(sock: OwnedFd, daemon: i32) -> ! {
    // The zygote must not outlive the daemon.
    if after_fork::set_parent_death_signal(libc::SIGKILL).is_err() || after_fork::parent_pid() != daemon {
        after_fork::exit(0);
    }
    // To come back to our own PID namespace after forking into a container's.
    let Ok(own_pidns) = std::fs::File::open("/proc/self/ns/pid") else { after_fork::exit(1) };
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let (n, fds) = match fdpass::recv_with_fds(&sock, &mut buf) {
            Ok((0, _)) | Err(_) => after_fork::exit(0),
            Ok(x) => x,
        };
        let answer = match (postcard::from_bytes::<Request>(&buf[..n]), fds.len()) {
            (Ok(Request::Child(prologue)), 4..=6) => fork_child(&prologue, &fds, own_pidns.as_fd()),
            (Ok(Request::Holder { spec, name }), 2) => fork_holder(&spec, &name, &fds),
            (Ok(Request::Bare { join_flags }), 3) => fork_bare(join_flags, &fds, own_pidns.as_fd()),
            (Ok(Request::Exec(spec)), 6) => fork_exec(&spec, &fds, own_pidns.as_fd()),
            _ => -libc::EINVAL,
        };
        drop(fds);
        // The daemon sees the zygote gone if this fails.
        let _ = fdpass::send_with_fds(&sock, &answer.to_le_bytes(), &[]);
    }
}

/// Forks the zygote (single-threaded, so the new process may run anything)
/// with `flags`, and `CLONE_PARENT`: the new process is the daemon's child.
/// The pid, or -errno.
fn clone(flags: i32, child: impl FnOnce()) -> i32 {
    match fork_single_threaded(flags | libc::CLONE_PARENT) {
        Ok(Forked::Child) => {
            child();
            // `child` does not return; if it did, the process must not go on as a zygote.
            after_fork::exit(127)
        }
        Ok(Forked::Parent(pid)) => pid,
        Err(e) => -e.errno,
    }
}

/// Forks a process that runs `body`; with `holder` (a container's holder
/// pidfd) into the holder's PID namespace, coming back to `own_pidns`
/// afterwards.
fn fork_into(holder: Option<BorrowedFd<'_>>, own_pidns: BorrowedFd<'_>, body: impl FnOnce()) -> i32 {
    if let Some(h) = holder {
        // Affects only our next fork.
        if let Err(e) = mitosis_sys::ns::setns(&h, libc::CLONE_NEWPID) {
            return -e.errno;
        }
    }
    let answer = clone(0, body);
    if holder.is_some() && mitosis_sys::ns::setns(&own_pidns, libc::CLONE_NEWPID).is_err() {
        // Every later child would land in that container: stop serving; the
        // daemon reports the zygote gone.
        after_fork::exit(1);
    }
    answer
}

/// Forks a child that runs its prologue (fds: stdin, stdout, stderr, ready,
/// the shared copy of its seed's pages if its plan maps from one, and the
/// holder pidfd of its container if any).
fn fork_child(prologue: &Prologue, fds: &[OwnedFd], own_pidns: BorrowedFd<'_>) -> i32 {
    let shared_pages = prologue.plan.shared_pages_fd.and_then(|_| fds.get(4)).map(|fd| fd.as_raw_fd());
    let holder = fds.get(4 + usize::from(shared_pages.is_some())).map(|fd| fd.as_fd());
    fork_into(holder, own_pidns, || {
        let stdio = [fds[0].as_raw_fd(), fds[1].as_raw_fd(), fds[2].as_raw_fd()];
        prologue.run(stdio, fds[3].as_raw_fd(), holder.map(|h| h.as_raw_fd()), shared_pages);
    })
}

/// Forks the process of a bare container (fds: ready, go, holder pidfd).
fn fork_bare(join_flags: i32, fds: &[OwnedFd], own_pidns: BorrowedFd<'_>) -> i32 {
    let holder = fds[2].as_fd();
    fork_into(Some(holder), own_pidns, || {
        let joined = after_fork::set_parent_death_signal(libc::SIGKILL).is_ok()
            && mitosis_sys::ns::setns(&holder, join_flags).is_ok();
        // The daemon reads a byte, then closes `go` when the process may exit.
        let _ = after_fork::write_all(fds[0].as_raw_fd(), &[0]);
        after_fork::wait_for_eof(fds[1].as_raw_fd());
        after_fork::exit(if joined { 0 } else { 1 });
    })
}

/// Clones a container's namespace holder (fds: control pipe, ready pipe).
fn fork_holder(spec: &HolderSpec, name: &str, fds: &[OwnedFd]) -> i32 {
    clone(spec.clone_flags(), || {
        mitosis_container::holder::holder_main(spec, name, fds[0].as_raw_fd(), fds[1].as_raw_fd());
    })
}

/// Forks the process of a program (fds: stdin, stdout, stderr, go, status,
/// holder pidfd); see the module doc. Its strings are made here, before the
/// fork.
fn fork_exec(spec: &ExecSpec, fds: &[OwnedFd], own_pidns: BorrowedFd<'_>) -> i32 {
    let Ok(image) = after_fork::ExecImage::new(&spec.program, &spec.argv, &spec.env) else { return -libc::EINVAL };
    let Ok(cwd) = std::ffi::CString::new(spec.cwd.clone()) else { return -libc::EINVAL };
    let holder = fds[5].as_fd();
    fork_into(Some(holder), own_pidns, || exec_child(spec, &image, &cwd, fds))
}

/// The forked program's process, up to its `execve` (allocation-free).
fn exec_child(spec: &ExecSpec, image: &after_fork::ExecImage, cwd: &std::ffi::CStr, fds: &[OwnedFd]) {
    let status = fds[4].as_raw_fd();
    let fail = |step: ExecStep, e: mitosis_sys::SysError| {
        // Nobody else can tell the daemon why; it sees the pipe close if this fails.
        let _ = after_fork::write_all(status, &ExecFailure::record(step, e.errno));
        after_fork::exit(126)
    };
    // (A change of credentials clears it: set again below.)
    if let Err(e) = after_fork::set_parent_death_signal(libc::SIGKILL) {
        fail(ExecStep::Signals, e);
    }
    if let Err(e) = mitosis_sys::ns::setns(&fds[5], spec.join_flags) {
        fail(ExecStep::JoinContainer, e);
    }
    // No byte: the daemon could not put us in the cgroups, or is gone.
    if !matches!(after_fork::read_byte(fds[3].as_raw_fd()), Ok(Some(_))) {
        after_fork::exit(0);
    }
    if let Some((uid, gid, groups)) = &spec.user {
        if let Err(e) = after_fork::set_groups(groups) {
            fail(ExecStep::Groups, e);
        }
        if let Err(e) = after_fork::set_ids(*uid, *gid) {
            fail(ExecStep::Ids, e);
        }
    }
    if let Err(e) = after_fork::set_parent_death_signal(libc::SIGKILL).and_then(|()| after_fork::reset_signals()) {
        fail(ExecStep::Signals, e);
    }
    // Copies above every number we keep, then onto 0-2 and the status pipe
    // onto 3 (close-on-exec), then nothing else.
    let moved = (|| -> mitosis_sys::Result<()> {
        let high: [RawFd; 4] = [
            after_fork::dup_at_or_above(fds[0].as_raw_fd(), 10)?,
            after_fork::dup_at_or_above(fds[1].as_raw_fd(), 10)?,
            after_fork::dup_at_or_above(fds[2].as_raw_fd(), 10)?,
            after_fork::dup_at_or_above(status, 10)?,
        ];
        after_fork::dup_onto(high[0], 0, false)?;
        after_fork::dup_onto(high[1], 1, false)?;
        after_fork::dup_onto(high[2], 2, false)?;
        after_fork::dup_onto(high[3], 3, true)?;
        after_fork::close_from(4)
    })();
    if let Err(e) = moved {
        fail(ExecStep::Descriptors, e);
    }
    let status = 3;
    let fail = |step: ExecStep, e: mitosis_sys::SysError| {
        let _ = after_fork::write_all(status, &ExecFailure::record(step, e.errno));
        after_fork::exit(126)
    };
    if let Err(e) = mitosis_sys::ns::chdir(cwd) {
        fail(ExecStep::Chdir, e);
    }
    fail(ExecStep::Execve, after_fork::exec(image));
}
