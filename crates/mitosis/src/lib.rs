//! The mitosis client library: what programs and the `mitosis` command use to
//! talk to the daemon of their host.
//!
//! ```no_run
//! match mitosis::fork_prepare(mitosis::default_socket(), "my-function")? {
//!     mitosis::Role::Parent(seed) => println!("prepared {} ({} bytes mapped)", seed.id, seed.mapped_bytes),
//!     mitosis::Role::Child(me) => println!("I am a child of {} resumed as pid {}", me.seed_id, me.pid),
//! }
//! # Ok::<(), mitosis::Error>(())
//! ```
//!
//! Unlike MITOSIS, the two sides of a remote fork can tell themselves apart:
//! [`fork_prepare`] returns [`Role::Parent`] in the caller and [`Role::Child`]
//! in every child resumed from the seed, on whatever host.
//!
//! Every child starts with the seed's memory, random-number generators
//! included: see [`Role::Child`] for what a child must reseed, and
//! [`on_child`] for hooks that [`fork_prepare`] runs in every child before it
//! returns.
//!
//! This crate only speaks the local protocol; it never touches another
//! process or the network. For a resume in place it runs the prologue
//! (crate `mitosis-prologue`) itself, and links neither the capture nor the
//! restore engine. Its raw calls are mitosis-sys's.

#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use mitosis_proto::frame::{read_msg, MAX_IMAGE_FRAME};
pub use mitosis_proto::local::{
    CacheStats, ChildEnd, ChildInfo, ChildStatus, ContainerLimits, ContainerSpec, DaemonStats, PagerStats, Paging, PoolStats,
    ResumeOptions, ResumeTimings, SeedInfo, SeedStats,
};
use mitosis_proto::local::{Envelope, LocalRequest, LocalResponse, ReplySlot, CHILD_MARKER};
pub use mitosis_proto::{error_chain, ErrorKind, RemoteError};
use mitosis_proto::PROTOCOL_VERSION;

/// Errors of the client library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot reach the mitosis daemon at {path} (is `mitosis daemon` running?)")]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("lost the connection to the daemon")]
    Io(#[from] std::io::Error),
    #[error("daemon protocol error")]
    Proto(#[from] mitosis_proto::ProtoError),
    #[error("{0}")]
    Daemon(RemoteError),
    #[error("{0}")]
    Usage(String),
    /// Refused in this process, before asking the daemon, with the kinds
    /// (and exit statuses) the daemon gives its own errors.
    #[error("{0}")]
    Local(RemoteError),
}

impl Error {
    /// The exit status `mitosis` uses for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Daemon(e) | Error::Local(e) => e.kind.exit_code(),
            Error::Usage(_) => 64,
            Error::Connect { .. } => 69,
            Error::Io(_) | Error::Proto(_) => 70,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// The daemon socket from `$MITOSIS_SOCKET`, or the default path.
pub fn default_socket() -> PathBuf {
    std::env::var_os("MITOSIS_SOCKET")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(mitosis_proto::local::DEFAULT_SOCKET))
}

/// Which side of a remote fork the caller is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// The process that prepared; the seed is ready.
    Parent(SeedInfo),
    /// A child resumed from the seed.
    ///
    /// Like a child of `fork()`, and unlike the parent, it must make its own
    /// random numbers: it starts with the seed's memory, so every userspace
    /// generator (rand's `ThreadRng` and `StdRng`, libc `random()`,
    /// OpenSSL's DRBGs when the child has the seed's pid, which a reused pid
    /// can be; hash-map keys) would give every child of the seed the same
    /// sequence, and nothing tells them apart but this value. Reseed them
    /// from the kernel (`getrandom`, which is never shared) here, or in a
    /// hook registered with [`on_child`] (`pthread_atfork` handlers are not
    /// run: the child was not made by `fork()`). Values read straight from
    /// the kernel (`OsRng`, `getrandom`, `/dev/urandom`) are unique already.
    /// See "Clone uniqueness" in the README.
    Child(ChildInfo),
}

/// A hook registered with [`on_child`].
type ChildHook = Arc<dyn Fn() + Send + Sync>;

/// The hooks [`fork_prepare`] runs in children, in registration order.
static CHILD_HOOKS: Mutex<Vec<ChildHook>> = Mutex::new(Vec::new());

/// Registers `hook` to run in every child of a later [`fork_prepare`] (and
/// of [`fork_prepare_with`]) of this process, right before it returns
/// [`Role::Child`], after the hooks registered before it: the place to
/// reseed random-number generators (see [`Role::Child`]). Hooks never run in
/// the parent. A child resumed in place ([`resume_in_place`]) continues in
/// its seed's `fork_prepare`, so it runs the seed's hooks. Hooks stay
/// registered (children inherit them, for a nested prepare); a hook may
/// register more, which run from the next prepare on.
pub fn on_child(hook: impl Fn() + Send + Sync + 'static) {
    CHILD_HOOKS.lock().unwrap_or_else(PoisonError::into_inner).push(Arc::new(hook));
}

/// Runs the [`on_child`] hooks. The list is copied first, so that a hook may
/// register another without deadlocking. (Another thread of a
/// multi-threaded seed that held the lock at the prepare holds it in the
/// child too, and goes on and lets it go: unlike a fork, a child keeps
/// every thread.)
fn run_child_hooks() {
    let hooks: Vec<ChildHook> = CHILD_HOOKS.lock().unwrap_or_else(PoisonError::into_inner).clone();
    for hook in hooks {
        hook();
    }
}

/// A connection to the local daemon.
pub struct Client {
    stream: UnixStream,
}

fn encode(request: LocalRequest) -> Vec<u8> {
    let body = postcard::to_stdvec(&Envelope { version: PROTOCOL_VERSION, request }).expect("requests encode");
    let mut frame = (body.len() as u32).to_le_bytes().to_vec();
    frame.extend_from_slice(&body);
    frame
}

impl Client {
    pub fn connect(socket: impl AsRef<Path>) -> Result<Client> {
        let path = socket.as_ref();
        let stream = UnixStream::connect(path).map_err(|source| Error::Connect { path: path.to_path_buf(), source })?;
        Ok(Client { stream })
    }

    fn call(&mut self, request: LocalRequest) -> Result<LocalResponse> {
        let sent = self.stream.write_all(&encode(request));
        self.after_send(sent)
    }

    /// The answer to a request just sent. A daemon that refuses the
    /// connection (it holds as many as it takes) answers and hangs up at
    /// once, maybe before the request was written: its answer says why.
    fn after_send(&mut self, sent: std::io::Result<()>) -> Result<LocalResponse> {
        match sent {
            Ok(()) => self.read(),
            Err(e) => match self.read() {
                Err(Error::Daemon(refusal)) => Err(Error::Daemon(refusal)),
                _ => Err(Error::Io(e)),
            },
        }
    }

    fn read(&mut self) -> Result<LocalResponse> {
        match read_msg(&mut self.stream, MAX_IMAGE_FRAME)? {
            LocalResponse::Error(e) => Err(Error::Daemon(e)),
            other => Ok(other),
        }
    }

    /// Prepares process `pid` (unmodified; it keeps running) as seed `id`. A
    /// `pinned` seed lives until dropped; otherwise it goes when `pid` exits.
    pub fn prepare(&mut self, pid: i32, id: &str, pinned: bool) -> Result<SeedInfo> {
        self.prepare_with(pid, id, pinned, false)
    }

    /// [`Client::prepare`]; with `copy`, the seed's memory is copied into the
    /// daemon (the prepare takes longer, no snapshot process stays).
    pub fn prepare_with(&mut self, pid: i32, id: &str, pinned: bool, copy: bool) -> Result<SeedInfo> {
        match self.call(LocalRequest::Prepare { pid, id: id.to_string(), reply_slot: None, pinned, copy })? {
            LocalResponse::Prepared(info) => Ok(info),
            other => Err(unexpected(other)),
        }
    }

    /// Drops seed `id` on this host.
    pub fn drop_seed(&mut self, id: &str) -> Result<()> {
        match self.call(LocalRequest::Drop { id: id.to_string() })? {
            LocalResponse::Dropped { .. } => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Lists this host's seeds (a non-root caller sees its own).
    pub fn list(&mut self) -> Result<Vec<SeedInfo>> {
        match self.call(LocalRequest::List)? {
            LocalResponse::Seeds(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }

    /// Lists this host's children (with `all`, also recently ended ones) and
    /// the container pool's counters.
    pub fn ps(&mut self, all: bool) -> Result<(Vec<ChildStatus>, PoolStats)> {
        match self.call(LocalRequest::Ps { all })? {
            LocalResponse::Children { children, pool } => Ok((children, pool)),
            other => Err(unexpected(other)),
        }
    }

    /// This daemon's counters: its seeds, page cache and containers.
    pub fn stats(&mut self) -> Result<DaemonStats> {
        match self.call(LocalRequest::Stats)? {
            LocalResponse::Stats(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }

    /// Kills a running child, by container name or pid; returns its pid.
    /// Offloads running child `id`'s memory to the daemon's memory node.
    pub fn offload(&mut self, id: &str) -> Result<mitosis_proto::local::OffloadReport> {
        match self.call(LocalRequest::Offload { id: id.to_string() })? {
            LocalResponse::Offloaded(report) => Ok(report),
            other => Err(unexpected(other)),
        }
    }

    /// Starts bringing running child `id`'s offloaded memory back; returns
    /// the bytes to come from the memory node and from the seed.
    pub fn prefetch(&mut self, id: &str) -> Result<(u64, u64)> {
        match self.call(LocalRequest::Prefetch { id: id.to_string() })? {
            LocalResponse::Prefetching { from_node_bytes, from_seed_bytes, .. } => Ok((from_node_bytes, from_seed_bytes)),
            other => Err(unexpected(other)),
        }
    }

    pub fn kill(&mut self, id: &str) -> Result<i32> {
        match self.call(LocalRequest::Kill { id: id.to_string() })? {
            LocalResponse::Killed { pid } => Ok(pid),
            other => Err(unexpected(other)),
        }
    }

    /// Starts and tears down a container of `spec` holding only a process
    /// that joins it and exits; returns (take, start, total) microseconds.
    pub fn bare_container(&mut self, spec: &ContainerSpec) -> Result<(u64, u64, u64)> {
        match self.call(LocalRequest::BareContainer { spec: spec.clone() })? {
            LocalResponse::BareContainer { take_us, start_us, total_us } => Ok((take_us, start_us, total_us)),
            other => Err(unexpected(other)),
        }
    }

    /// Starts a child of seed `id` from the daemon at `from` on this host, in
    /// a lean container of default limits, with `stdio` (stdin, stdout,
    /// stderr) as its descriptors 0-2. Call [`Resumed::wait`] for its end;
    /// dropping the `Resumed` kills the child.
    pub fn resume(self, from: &str, id: &str, stdio: [RawFd; 3]) -> Result<Resumed> {
        self.resume_with(from, id, stdio, &ResumeOptions { container: Some(ContainerSpec::default()), ..Default::default() })
    }

    /// [`Client::resume`] with explicit options: container or not, its
    /// limits, and whether the child is detached (then it keeps running when
    /// the returned `Resumed` is dropped, and `wait` is not available).
    pub fn resume_with(mut self, from: &str, id: &str, stdio: [RawFd; 3], options: &ResumeOptions) -> Result<Resumed> {
        let frame = encode(LocalRequest::Resume { from: from.to_string(), id: id.to_string(), options: options.clone() });
        let sent = mitosis_sys::fdpass::send_with_fds(&self.stream, &frame, &stdio)
            .map_err(|e| std::io::Error::from_raw_os_error(e.errno));
        match self.after_send(sent)? {
            LocalResponse::Started { pid, timings, container } => Ok(Resumed { client: self, pid, timings, container }),
            other => Err(unexpected(other)),
        }
    }
}

/// A running child started by [`Client::resume`].
pub struct Resumed {
    client: Client,
    pub pid: i32,
    pub timings: ResumeTimings,
    /// The child's container, if it runs in one.
    pub container: Option<String>,
}

impl Resumed {
    /// Waits for the child to end.
    pub fn wait(mut self) -> Result<(ChildEnd, PagerStats)> {
        match self.client.read()? {
            LocalResponse::Exited { end, stats } => Ok((end, stats)),
            other => Err(unexpected(other)),
        }
    }
}

fn unexpected(r: LocalResponse) -> Error {
    Error::Usage(format!("daemon answered with an unexpected message: {r:?}"))
}

/// A process resumed in place is replaced by the child: it must have one
/// thread (the child's threads are the seed's).
fn ensure_single_threaded(what: &str) -> Result<()> {
    let threads = mitosis_sys::procfs::thread_count("self").unwrap_or(1);
    if threads != 1 {
        return Err(Error::Usage(format!("this process has {threads} threads; only a single-threaded process can be {what}")));
    }
    Ok(())
}

/// The prologue that turns this process into the child creates a
/// userfaultfd for it (see `mitosis_sys::uffd::create_raw`); an
/// unprivileged user may not be allowed one. Found out here, the caller gets
/// a reason and 77, rather than the prologue's bare exit status 92 once the
/// daemon has started the takeover.
fn ensure_userfaultfd() -> Result<()> {
    match mitosis_sys::uffd::Uffd::create() {
        Ok(_) => Ok(()),
        Err(e) if e.errno == libc::EPERM => Err(Error::Local(RemoteError::new(
            ErrorKind::PermissionDenied,
            "resuming in place needs a userfaultfd in this process, which the kernel refuses to this user: \
             it allows one to root, to every user when sysctl vm.unprivileged_userfaultfd is 1, \
             and to users who may open /dev/userfaultfd read-write; or resume without --in-place",
        ))),
        Err(e) => Err(Error::Local(RemoteError::new(ErrorKind::Unsupported, format!("resuming in place needs a userfaultfd: {e}")))),
    }
}

/// Replaces the calling process by a child of seed `id` from the daemon at
/// `from` (MITOSIS's `fork_resume_remote`). On success it does not return: the
/// process continues from the seed's prepare point, keeping its pid, parent
/// and stdio (for a seed that prepared itself: in its [`fork_prepare`], which
/// runs the seed's [`on_child`] hooks and returns [`Role::Child`]). An error
/// before the daemon starts the takeover is returned; a failure after it
/// kills the process (it is no longer itself). The process must be
/// single-threaded.
pub fn resume_in_place(socket: impl AsRef<Path>, from: &str, id: &str) -> Result<std::convert::Infallible> {
    ensure_single_threaded("resumed in place")?;
    ensure_userfaultfd()?;
    let mut client = Client::connect(socket)?;
    match client.call(LocalRequest::ResumeInPlace { from: from.to_string(), id: id.to_string() })? {
        LocalResponse::InPlace { prologue } => {
            let prologue: mitosis_prologue::Prologue =
                postcard::from_bytes(&prologue).map_err(|_| Error::Usage("undecodable prologue from the daemon".into()))?;
            // Never returns: ends parked until the daemon has rebuilt this process.
            prologue.run([0, 1, 2], client.stream.as_raw_fd(), None, None)
        }
        other => Err(unexpected(other)),
    }
}

/// Prepares the calling process as seed `id` with the daemon at `socket`.
/// Returns [`Role::Parent`] here and [`Role::Child`] in every resumed child.
/// The seed is dropped when this process exits (MITOSIS's `fork_prepare`);
/// see [`fork_prepare_with`] for a pinned one. Every thread of the process
/// is prepared (it may be called from any of them) and goes on in each
/// child.
pub fn fork_prepare(socket: impl AsRef<Path>, id: &str) -> Result<Role> {
    fork_prepare_with(socket, id, false)
}

/// [`fork_prepare`], choosing the seed's lifetime: a `pinned` seed outlives
/// this process and stays until it is dropped (MITOSIS's `fork_prepare_ping`).
/// In a child, the [`on_child`] hooks run before it returns.
pub fn fork_prepare_with(socket: impl AsRef<Path>, id: &str, pinned: bool) -> Result<Role> {
    fork_prepare_copy(socket, id, pinned, false)
}

/// [`fork_prepare_with`]; with `copy`, the daemon copies this process's
/// memory into itself at prepare and lets its snapshot process go (as
/// `mitosis prepare --copy`): a pinned seed then outlives this process's
/// whole process tree and container too, since the snapshot (a clone of
/// this process, in its PID namespace and cgroups) would not.
pub fn fork_prepare_copy(socket: impl AsRef<Path>, id: &str, pinned: bool, copy: bool) -> Result<Role> {
    let role = prepare_self(socket.as_ref(), id, pinned, copy)?;
    if matches!(role, Role::Child(_)) {
        run_child_hooks();
    }
    Ok(role)
}

/// The prepare of [`fork_prepare_with`]; returns twice, as `fork()` does.
fn prepare_self(socket: &Path, id: &str, pinned: bool, copy: bool) -> Result<Role> {
    let mut client = Client::connect(socket)?;
    // The daemon captures us while we are blocked in the read below. In each
    // child that read returns the child's answer, written into this buffer.
    let mut buf = vec![0u8; 4096];
    let request = LocalRequest::Prepare {
        pid: std::process::id() as i32,
        id: id.to_string(),
        reply_slot: Some(ReplySlot { addr: buf.as_ptr() as u64, len: buf.len() as u64 }),
        pinned,
        copy,
    };
    client.stream.write_all(&encode(request))?;
    let n = loop {
        // One read(2): the child's copy of this exact call returns its answer.
        match mitosis_sys::process::read_syscall(&client.stream, &mut buf) {
            Err(e) if e.errno == libc::EINTR => continue,
            Err(e) => return Err(Error::Io(std::io::Error::from_raw_os_error(e.errno))),
            Ok(n) => break n,
        }
    };
    if n >= CHILD_MARKER.len() && &buf[..CHILD_MARKER.len()] == CHILD_MARKER {
        let info: ChildInfo = postcard::from_bytes(&buf[CHILD_MARKER.len()..n])
            .map_err(|_| Error::Usage("undecodable child answer".into()))?;
        // Our copy of the socket was closed when we were restored.
        std::mem::forget(client);
        return Ok(Role::Child(info));
    }
    let mut whole = (&buf[..n]).chain(&mut client.stream);
    match read_msg(&mut whole, MAX_IMAGE_FRAME)? {
        LocalResponse::Prepared(info) => Ok(Role::Parent(info)),
        LocalResponse::Error(e) => Err(Error::Daemon(e)),
        other => Err(unexpected(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A daemon over its connection caps answers and hangs up before the
    /// request is written: the request's write fails, and the answer is
    /// still the error the caller gets.
    #[test]
    fn a_refusal_that_comes_before_the_request_is_the_error() {
        let dir = std::env::temp_dir().join(format!("mitosis-refusal-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("d.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let mut client = Client::connect(&path).unwrap();
        let (mut conn, _) = listener.accept().unwrap();
        let refusal = RemoteError::new(ErrorKind::Busy, "uid 1000 holds 128 connections; try again later");
        mitosis_proto::frame::write_msg(&mut conn, &LocalResponse::Error(refusal.clone())).unwrap();
        drop(conn);
        match client.list() {
            Err(Error::Daemon(e)) => assert_eq!(e, refusal),
            other => panic!("expected the refusal, got {other:?}"),
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The only test of the process-wide hook list.
    #[test]
    fn child_hooks_run_in_registration_order_and_may_register_more() {
        static LOG: Mutex<Vec<u32>> = Mutex::new(Vec::new());
        let log = || LOG.lock().unwrap().clone();
        on_child(|| LOG.lock().unwrap().push(1));
        on_child(|| {
            LOG.lock().unwrap().push(2);
            on_child(|| LOG.lock().unwrap().push(3));
        });
        assert_eq!(log(), [] as [u32; 0], "registering runs nothing");
        run_child_hooks();
        assert_eq!(log(), [1, 2], "a hook registered by a hook runs from the next child on");
        run_child_hooks();
        assert_eq!(log(), [1, 2, 1, 2, 3]);
    }
}
