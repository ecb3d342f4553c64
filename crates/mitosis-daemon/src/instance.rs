//! Function instances on this worker: the daemon side of
//! [`mitosis_proto::instance`] (whose module doc is the protocol).
//!
//! A gateway sends `StartInstance` on an authenticated peer connection; from
//! then on that connection belongs to the instance. The instance is a Python
//! runtime (`<python> -m mitosis.runtime --dir <dir>`) in a lean container of
//! its own, either started anew (a cold start: the zygote forks it into the
//! container, where it drops to the instance user and `execve`s, see
//! [`crate::spawner::Spawner::exec`]) or resumed from a seed on some daemon
//! (a fork start, through [`crate::resume`]: it keeps its seed's owner, which
//! must be the instance user). Its stdin, stdout and stderr are pipes to the
//! daemon; [`relay`] carries calls to its stdin and its stdout frames back as
//! events, keeps the end of its stderr, and reports its end. When the
//! instance ends, for whatever reason, its container is torn down with
//! whatever it started; when the connection ends, the instance is killed.
//!
//! Who may start one: any peer that completed the cluster key's handshake.
//! Such a peer can already read every seed's pages on this host (`ReadPages`)
//! and have them resumed anywhere, so running the instance user's code in a
//! container adds nothing it could not do; instances never run as anyone but
//! the instance user (`--instance-user`, by default `nobody`): a fork start
//! of a seed owned by someone else is refused.
//!
//! Two threads per instance: the connection's reader (calls are decoded from
//! buffered, sealed records, which polling the socket cannot see, and a
//! request body may be larger than a pipe, so writing it must not hold up
//! the relay of the instance's output) and the relay, which polls the
//! instance's stdout and stderr, its pidfd, and the socket for a hang-up.

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use mitosis_container::Container;
use mitosis_proto::instance::{
    read_call, send_event, InstanceCall, InstanceEvent, InstanceSpec, InstanceStart, InstanceUsage, RuntimeFrames, WorkerUsage,
    SeedUsage, STDERR_TAIL,
};
use mitosis_proto::frame::write_msg;
use mitosis_proto::local::{ChildEnd, ContainerLimits, ContainerSpec, Paging};
use mitosis_proto::peer::PeerResponse;
use mitosis_proto::secure::{SecureReader, SecureWriter};
use mitosis_proto::{ErrorKind, ProtoError, RemoteError};
use mitosis_sys::creds::UserIds;
use mitosis_sys::fdpass::PeerCred;
use mitosis_sys::pidfd::{self, Exit};
use mitosis_sys::poll::{self, PollFd};

use crate::children::ChildRecord;
use crate::memory::{Boundary, InstanceMemory};
use crate::resume::{self, Body, Started};
use crate::spawner::{ExecFailure, ExecSpec, ExecStep};
use crate::Daemon;

type PeerReader = SecureReader<BufReader<TcpStream>>;
type PeerWriter = SecureWriter<TcpStream>;

/// How this daemon runs instances (`--instance-user`, `--python`).
#[derive(Debug, Clone)]
pub struct InstanceConfig {
    /// Who instances run as: `None` when the daemon is not root (then they
    /// run as the daemon's own user, the only one it can be).
    pub user: Option<InstanceUser>,
    /// The interpreter of cold starts (absolute); `None`: none was found.
    pub python: Option<PathBuf>,
    /// Offload an instance idle this long (`--offload-idle-after`, see
    /// [`crate::memory`]); fork-started ones are resumed with write tracking.
    pub offload_idle_after: Option<std::time::Duration>,
    /// How semi-warm instances drain (`--semi-warm-drain`, `--semi-warm-floor`).
    pub drain: crate::memory::Drain,
    /// The `tmo` policy's controller (`--tmo-interval`, `--tmo-ratio`).
    pub tmo: crate::memory::Tmo,
}

#[derive(Debug, Clone)]
pub struct InstanceUser {
    pub name: String,
    pub ids: UserIds,
}

/// Why the instance settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum InstanceConfigError {
    #[error("cannot look up the instance user {name:?}")]
    User {
        name: String,
        #[source]
        source: std::io::Error,
    },
}

impl InstanceConfig {
    /// Resolves the instance user `user` and the interpreter: `python`, else
    /// `$MITOSIS_PYTHON`, else `python3` on `PATH` (`None` if there is none:
    /// cold starts then fail, saying so).
    pub fn resolve(user: &str, python: Option<PathBuf>) -> Result<InstanceConfig, InstanceConfigError> {
        let user = if mitosis_sys::process::euid() == 0 {
            let ids = mitosis_sys::creds::lookup_user(user).map_err(|source| InstanceConfigError::User { name: user.to_string(), source })?;
            Some(InstanceUser { name: user.to_string(), ids })
        } else {
            None
        };
        let python = python
            .or_else(|| std::env::var_os("MITOSIS_PYTHON").filter(|p| !p.is_empty()).map(PathBuf::from))
            .or_else(|| find_on_path("python3"))
            .map(|p| std::path::absolute(&p).unwrap_or(p));
        Ok(InstanceConfig { user, python, offload_idle_after: None, drain: crate::memory::Drain::default(), tmo: crate::memory::Tmo::default() })
    }

    /// The uid instances run as.
    pub fn uid(&self) -> u32 {
        self.user.as_ref().map_or_else(mitosis_sys::process::euid, |u| u.ids.uid)
    }
}

/// The first executable `name` in a directory of `$PATH`.
fn find_on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

/// One running instance, as `ListInstances` reports it.
struct Record {
    name: String,
    function: String,
    pid: i32,
    container: Arc<Container>,
}

/// The instances running on this host.
#[derive(Default)]
pub struct Instances {
    live: Mutex<Vec<Arc<Record>>>,
}

impl Instances {
    fn add(&self, record: Arc<Record>) {
        self.live.lock().unwrap().push(record);
    }

    fn remove(&self, pid: i32) {
        self.live.lock().unwrap().retain(|r| r.pid != pid);
    }

    fn usage(&self) -> Vec<InstanceUsage> {
        let live = self.live.lock().unwrap().clone();
        live.iter()
            .map(|r| InstanceUsage {
                name: r.name.clone(),
                function: r.function.clone(),
                pid: r.pid,
                memory_bytes: r.container.memory_usage().unwrap_or(0),
            })
            .collect()
    }
}

/// `ListInstances`: every live instance and its container's memory, and
/// each seed with the bytes copied into this daemon (known without any
/// system call; a snapshot seed's pages are counted by its container), and
/// each other host's seed with its pages in this host's page cache.
pub fn worker_usage(daemon: &Daemon) -> WorkerUsage {
    let mut seeds: Vec<SeedUsage> = daemon
        .seeds
        .list()
        .iter()
        .map(|s| SeedUsage {
            id: s.image.id.clone(),
            bytes: match &s.memory {
                crate::seeds::SeedMemory::Copied(c) => c.bytes(),
                crate::seeds::SeedMemory::Snapshot { .. } => 0,
            },
        })
        .collect();
    seeds.extend(daemon.cache.usage().into_iter().map(|(id, bytes)| SeedUsage { id, bytes }));
    WorkerUsage { instances: daemon.instances.usage(), seeds }
}

/// `DropSeed`: forgets seed `id`, as a local `Drop` by root does.
pub fn drop_seed(daemon: &Daemon, id: &str) -> PeerResponse {
    match daemon.seeds.remove(id) {
        Some(_) => {
            tracing::info!(%id, "seed dropped by a peer");
            PeerResponse::Dropped
        }
        None => PeerResponse::Error(RemoteError::new(ErrorKind::NotFound, format!("no seed {id:?} on this host"))),
    }
}

fn remote_err(kind: ErrorKind, message: impl Into<String>) -> RemoteError {
    RemoteError::new(kind, message)
}

/// Serves a `StartInstance` on its connection. `Ok(false)`: the instance
/// could not start (the error was answered) and the connection may carry
/// other requests; `Ok(true)`: it started and has ended, and the connection
/// is done.
pub fn serve(daemon: &Daemon, spec: InstanceSpec, reader: &mut PeerReader, writer: &mut PeerWriter) -> Result<bool, ProtoError> {
    let t0 = Instant::now();
    let pipes = match Pipes::new() {
        Ok(p) => p,
        Err(e) => {
            answer(writer, &PeerResponse::Error(remote_err(ErrorKind::Internal, format!("cannot make pipes: {e}"))))?;
            return Ok(false);
        }
    };
    let Pipes { far, stdin, stdout, stderr } = pipes;
    let started = start(daemon, &spec, &far);
    drop(far);
    let running = match started {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(name = %spec.name, function = %spec.function, error = %e.message, "instance not started");
            answer(writer, &PeerResponse::Error(e))?;
            return Ok(false);
        }
    };
    let (pid, container) = (running.pid(), running.container().clone());
    let start_us = t0.elapsed().as_micros() as u64;
    tracing::info!(name = %spec.name, function = %spec.function, pid, container = %container.name, start_us, "instance started");
    daemon.instances.add(Arc::new(Record { name: spec.name.clone(), function: spec.function.clone(), pid, container: container.clone() }));
    drop(container);
    let answered = answer(writer, &PeerResponse::InstanceStarted { pid, container: Some(running.container().name.clone()), start_us });
    let verdict = Verdict::default();
    if answered.is_err() {
        verdict.kill(running.pidfd(), Kill::GatewayGone);
    }
    let socket = writer.get_ref().try_clone()?;
    let pidfd = running.pidfd_arc();
    let timeline = Timeline { t0, first_call_us: AtomicU64::new(u64::MAX) };
    // Every instance, a seed's preparer too: it prepared with `copy` (the
    // seed's memory is the daemon's copy), and it is idle only after that.
    // `tmo` needs no idle setting: its controller runs from the start.
    let managed = offload_idle_after(daemon, &spec).or(spec.offload_policy.tmo.then_some(std::time::Duration::ZERO));
    let memory = managed.map(|after| {
        let reuse = daemon.reuse.of(&spec.function);
        let first_barrier = match &spec.start {
            InstanceStart::Cold { prepare_as: None } => Boundary::RuntimeReady,
            InstanceStart::Cold { prepare_as: Some(_) } | InstanceStart::Fork { .. } => Boundary::Ready,
        };
        InstanceMemory::new(after, spec.offload_policy, daemon.config.instances.drain, pid, reuse)
            .first_barrier_at(first_barrier)
            .with_tmo(daemon.config.instances.tmo, running.container().clone())
    });
    std::thread::scope(|scope| {
        let verdict = &verdict;
        let calls_pidfd = &*pidfd;
        let timeline = &timeline;
        let memory = memory.as_ref();
        let on_request = move || {
            if let Some(m) = memory {
                m.on_request(daemon);
            }
        };
        let calls = std::thread::Builder::new()
            .name(format!("calls-{pid}"))
            .spawn_scoped(scope, move || take_calls(reader, stdin, calls_pidfd, verdict, timeline, &on_request));
        if calls.is_err() {
            verdict.kill(&pidfd, Kill::Protocol("the daemon cannot start a thread for the instance's calls".into()));
        }
        let mut milestone = |m: Milestone| {
            if let Some(memory) = memory {
                match m {
                    Milestone::RuntimeReady => memory.on_boundary(daemon, Boundary::RuntimeReady),
                    Milestone::InitDone => memory.on_boundary(daemon, Boundary::InitDone),
                    Milestone::Ready => memory.on_boundary(daemon, Boundary::Ready),
                    Milestone::Answered => memory.on_answer(daemon),
                    Milestone::FirstReply => {}
                }
            }
            on_milestone(daemon, &running, timeline, m)
        };
        // Between events: an idle instance's drain step, when due; the
        // relay wakes up when the next one is due.
        let mut tick = || {
            let m = memory?;
            m.offload_if_due(daemon);
            m.due_in()
        };
        let output = relay(&running, stdout, stderr, &socket, writer, verdict, &mut milestone, &mut tick);
        daemon.instances.remove(pid);
        let killed = verdict.take();
        let gateway_gone = matches!(killed, Some(Kill::GatewayGone)) || !output.gateway_ok;
        let end = running.finish(daemon);
        let (end, reason) = match killed {
            Some(Kill::Protocol(why)) => (ChildEnd::KilledByMitosis { reason: why.clone() }, why),
            Some(Kill::Stopped) => (ChildEnd::KilledByMitosis { reason: "stopped by the gateway".into() }, "stopped by the gateway".into()),
            Some(Kill::GatewayGone) => (end, "killed: the gateway closed the connection".into()),
            None => {
                let reason = describe(&end);
                (end, reason)
            }
        };
        tracing::info!(name = %spec.name, pid, %reason, "instance ended");
        if !output.stderr.is_empty() {
            tracing::debug!(name = %spec.name, pid, stderr = %output.stderr, "instance's last stderr");
        }
        if !gateway_gone {
            let _ = send_event(writer, &InstanceEvent::Ended { end: Some(end), reason, stderr_tail: output.stderr });
        }
        // Ends the calls thread's read (the scope waits for it).
        let _ = socket.shutdown(std::net::Shutdown::Both);
    });
    Ok(true)
}

fn answer(writer: &mut PeerWriter, resp: &PeerResponse) -> Result<(), ProtoError> {
    write_msg(writer, resp)?;
    writer.flush()?;
    Ok(())
}

/// The instance's three pipes: the far ends (its stdin, stdout, stderr) and ours.
struct Pipes {
    far: [OwnedFd; 3],
    stdin: std::io::PipeWriter,
    stdout: std::io::PipeReader,
    stderr: std::io::PipeReader,
}

impl Pipes {
    fn new() -> std::io::Result<Pipes> {
        let (stdin_rx, stdin) = std::io::pipe()?;
        let (stdout, stdout_tx) = std::io::pipe()?;
        let (stderr, stderr_tx) = std::io::pipe()?;
        Ok(Pipes { far: [stdin_rx.into(), stdout_tx.into(), stderr_tx.into()], stdin, stdout, stderr })
    }
}

/// An instance's process.
enum Running {
    /// A cold start: the runtime, exec'd in its container.
    Cold { pid: i32, pidfd: Arc<OwnedFd>, container: Arc<Container> },
    /// A fork start: a child resumed from a seed (always in a container).
    Fork { started: Box<Started>, container: Arc<Container> },
}

impl Running {
    fn pid(&self) -> i32 {
        match self {
            Running::Cold { pid, .. } => *pid,
            Running::Fork { started, .. } => started.pid,
        }
    }

    fn pidfd(&self) -> &OwnedFd {
        match self {
            Running::Cold { pidfd, .. } => pidfd,
            Running::Fork { started, .. } => &started.pidfd,
        }
    }

    fn pidfd_arc(&self) -> Arc<OwnedFd> {
        match self {
            Running::Cold { pidfd, .. } => pidfd.clone(),
            Running::Fork { started, .. } => started.pidfd.clone(),
        }
    }

    fn container(&self) -> &Arc<Container> {
        match self {
            Running::Cold { container, .. } | Running::Fork { container, .. } => container,
        }
    }

    /// Reaps the ended process and tears its container down; says how it ended.
    fn finish(self, daemon: &Daemon) -> ChildEnd {
        match self {
            Running::Cold { pid, pidfd, container } => {
                let exit = pidfd::wait_exit(&pidfd);
                // The pager of an adopted instance kills it when a page cannot come back.
                let pager_failure = daemon
                    .children
                    .find(&pid.to_string())
                    .and_then(|c| c.offload.as_ref().and_then(|o| o.lock().unwrap_or_else(|e| e.into_inner()).adopted_failure()));
                let end = if container.oom_kills() > 0 {
                    ChildEnd::OutOfMemory { limit_bytes: container.memory_limit() }
                } else if let Some(reason) = pager_failure {
                    ChildEnd::KilledByMitosis { reason }
                } else {
                    match exit {
                        Ok(Exit::Code(c)) => ChildEnd::Exited(c),
                        Ok(Exit::Signal(s)) => ChildEnd::Signaled(s),
                        Err(e) => ChildEnd::KilledByMitosis { reason: format!("lost track of the instance: {e}") },
                    }
                };
                // The record holds the other reference to the container.
                drop(daemon.children.finish(pid, Some(end.clone())));
                if let Ok(c) = Arc::try_unwrap(container) {
                    daemon.pool.retire(c);
                }
                end
            }
            Running::Fork { started, container } => {
                // Its waiter retires the container once it holds the last reference.
                drop(container);
                resume::wait_child(daemon, *started, None).0
            }
        }
    }
}

/// The `reason` of an `Ended` for a process that ended by itself.
fn describe(end: &ChildEnd) -> String {
    match end {
        ChildEnd::Exited(0) => "the instance exited (code 0)".into(),
        ChildEnd::Exited(c) => format!("the instance exited with code {c}"),
        ChildEnd::Signaled(s) => format!("the instance was killed by signal {s}{}", signal_name(*s).map(|n| format!(" ({n})")).unwrap_or_default()),
        ChildEnd::OutOfMemory { limit_bytes: Some(l) } => format!("the instance ran out of memory at its container's limit of {l} bytes"),
        ChildEnd::OutOfMemory { limit_bytes: None } => "the instance was killed by the kernel's OOM killer".into(),
        ChildEnd::KilledByMitosis { reason } => format!("mitosis killed the instance: {reason}"),
    }
}

fn signal_name(sig: i32) -> Option<&'static str> {
    Some(match sig {
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGBUS => "SIGBUS",
        libc::SIGILL => "SIGILL",
        libc::SIGFPE => "SIGFPE",
        libc::SIGINT => "SIGINT",
        libc::SIGHUP => "SIGHUP",
        libc::SIGPIPE => "SIGPIPE",
        _ => return None,
    })
}

/// Starts the instance's process with `far` as its stdin, stdout and stderr.
fn start(daemon: &Daemon, spec: &InstanceSpec, far: &[OwnedFd; 3]) -> Result<Running, RemoteError> {
    if offload_idle_after(daemon, spec).is_some() && daemon.config.memnode.is_none() {
        return Err(remote_err(ErrorKind::Unsupported, "this worker has no memory node to offload idle instances to (mitosis daemon --memnode)"));
    }
    let container_spec = ContainerSpec {
        limits: ContainerLimits { memory_bytes: spec.memory_bytes, ..Default::default() },
        ..Default::default()
    };
    match &spec.start {
        InstanceStart::Cold { prepare_as } => start_cold(daemon, spec, prepare_as.as_deref(), &container_spec, far),
        InstanceStart::Fork { seed_host, seed_id } => {
            let offload = offload_idle_after(daemon, spec);
            // As root: the daemon itself resumes, for a trusted peer (see the module doc).
            let daemon_cred = PeerCred { pid: std::process::id() as i32, uid: 0, gid: 0 };
            let owner = Some(daemon.config.instances.uid());
            let body = Body::NewChild { stdio: far, container: Some(&container_spec), detach: false, owner };
            let paging = Paging { track_writes: offload.is_some(), ..Paging::default() };
            let started = resume::start(daemon, daemon_cred, seed_host, seed_id, body, &paging, Instant::now())?;
            resume::fetch_process_strings(started.pid, &started.mm);
            let container = started.container.clone().expect("a fork start asks for a container");
            Ok(Running::Fork { started: Box::new(started), container })
        }
    }
}

/// How long instance `spec` may be idle before it is offloaded: its own
/// setting, else this worker's default; never under `tmo`, which puts
/// nothing on a memory node.
fn offload_idle_after(daemon: &Daemon, spec: &InstanceSpec) -> Option<std::time::Duration> {
    if spec.offload_policy.tmo {
        return None;
    }
    spec.offload_idle_after_ms.map(std::time::Duration::from_millis).or(daemon.config.instances.offload_idle_after)
}

fn start_cold(
    daemon: &Daemon,
    spec: &InstanceSpec,
    prepare_as: Option<&str>,
    container_spec: &ContainerSpec,
    far: &[OwnedFd; 3],
) -> Result<Running, RemoteError> {
    let dir = Path::new(&spec.dir);
    if !dir.is_dir() {
        return Err(remote_err(ErrorKind::NotFound, format!("no function directory {} on this worker", spec.dir)));
    }
    if !dir.join("function.py").is_file() {
        return Err(remote_err(ErrorKind::NotFound, format!("{} holds no function.py", spec.dir)));
    }
    let config = &daemon.config.instances;
    let python = config.python.as_ref().ok_or_else(|| {
        remote_err(ErrorKind::Internal, "this worker has no Python interpreter for instances (no python3 on PATH; see --python)")
    })?;
    let container = Arc::new(resume::take_container(daemon, container_spec)?);
    let exec = runtime_program(daemon, python, spec, prepare_as, container.spec.join_flags());
    let pipe_err = |e: std::io::Error| remote_err(ErrorKind::Internal, format!("cannot make pipes: {e}"));
    let (go_rx, mut go_tx) = std::io::pipe().map_err(pipe_err)?;
    let (mut status_rx, status_tx) = std::io::pipe().map_err(pipe_err)?;
    let stdio = [far[0].as_raw_fd(), far[1].as_raw_fd(), far[2].as_raw_fd()];
    let holder = container.holder_pidfd().as_raw_fd();
    let pid = daemon
        .spawner
        .exec(&exec, stdio, go_rx.as_raw_fd(), status_tx.as_raw_fd(), holder)
        .map_err(|e| remote_err(ErrorKind::Internal, format!("cannot fork the runtime: {e}")))?;
    drop((go_rx, status_tx));
    let pidfd = Arc::new(pidfd::open(pid).map_err(|e| remote_err(ErrorKind::Internal, e.to_string()))?);
    let reap = |why: String| {
        let _ = pidfd::send_signal(&pidfd, libc::SIGKILL);
        let _ = pidfd::wait_exit(&pidfd);
        why
    };
    // Into the cgroups before it runs anything of its own; then it may go.
    if let Err(e) = container.add(pid) {
        return Err(remote_err(ErrorKind::Internal, reap(format!("cannot put the runtime into container {}: {e}", container.name))));
    }
    if let Err(e) = go_tx.write_all(&[1]) {
        return Err(remote_err(ErrorKind::Internal, reap(format!("the runtime's process died before it started: {e}"))));
    }
    drop(go_tx);
    // End of file once it has exec'd (the pipe is close-on-exec), or why it could not.
    let mut record = Vec::new();
    let _ = status_rx.read_to_end(&mut record);
    if let Some(failure) = ExecFailure::parse(&record) {
        let _ = pidfd::wait_exit(&pidfd);
        return Err(exec_error(failure, python, spec, config));
    }
    daemon.children.add(Arc::new(ChildRecord {
        pid,
        pidfd: pidfd.clone(),
        seed_id: format!("{} (cold)", spec.function),
        seed_host: String::new(),
        uid: config.uid(),
        container: Some(container.clone()),
        started: Instant::now(),
        detached: false,
        // Adopted at its first offload.
        offload: Some(std::sync::Mutex::new(crate::offload::Offloader::adoptable(pid))),
    }));
    Ok(Running::Cold { pid, pidfd, container })
}

/// The runtime's command line and environment (and nothing else of ours).
fn runtime_program(daemon: &Daemon, python: &Path, spec: &InstanceSpec, prepare_as: Option<&str>, join_flags: i32) -> ExecSpec {
    use std::os::unix::ffi::OsStrExt;
    let bytes = |s: &str| s.as_bytes().to_vec();
    let python = python.as_os_str().as_bytes().to_vec();
    let mut argv = vec![python.clone(), bytes("-m"), bytes("mitosis.runtime"), bytes("--dir"), bytes(&spec.dir)];
    if let Some(id) = prepare_as {
        argv.extend([bytes("--prepare-as"), bytes(id)]);
    }
    let socket = std::path::absolute(&daemon.config.socket).unwrap_or_else(|_| daemon.config.socket.clone());
    let mut socket_var = b"MITOSIS_SOCKET=".to_vec();
    socket_var.extend_from_slice(socket.as_os_str().as_bytes());
    let env = vec![
        socket_var,
        bytes("PATH=/usr/local/bin:/usr/bin:/bin"),
        bytes("HOME=/"),
        bytes("LANG=C.UTF-8"),
        bytes("PYTHONDONTWRITEBYTECODE=1"),
    ];
    let user = daemon.config.instances.user.as_ref().map(|u| (u.ids.uid, u.ids.gid, u.ids.groups.clone()));
    ExecSpec { program: python, argv, env, cwd: bytes(&spec.dir), user, join_flags }
}

fn exec_error(failure: ExecFailure, python: &Path, spec: &InstanceSpec, config: &InstanceConfig) -> RemoteError {
    let why = std::io::Error::from_raw_os_error(failure.errno);
    let user = config.user.as_ref().map_or_else(|| "the daemon's user".to_string(), |u| format!("user {}", u.name));
    match failure.step {
        ExecStep::Chdir => remote_err(ErrorKind::PermissionDenied, format!("{user} cannot enter {}: {why}", spec.dir)),
        ExecStep::Execve if failure.errno == libc::EACCES => {
            remote_err(ErrorKind::PermissionDenied, format!("{user} cannot run {}: {why}", python.display()))
        }
        ExecStep::Execve => remote_err(ErrorKind::Internal, format!("cannot run the interpreter {}: {why}", python.display())),
        ExecStep::Groups | ExecStep::Ids => remote_err(ErrorKind::Internal, format!("cannot become {user}: {why}")),
        ExecStep::JoinContainer => remote_err(ErrorKind::Internal, format!("the runtime cannot join its container: {why}")),
        ExecStep::Signals | ExecStep::Descriptors => remote_err(ErrorKind::Internal, format!("cannot set up the runtime's process: {why}")),
    }
}

/// Why the daemon ended an instance itself (the first reason stands).
enum Kill {
    /// The instance or the gateway broke the protocol.
    Protocol(String),
    /// The gateway sent `Stop`.
    Stopped,
    /// The connection ended: nobody to report to.
    GatewayGone,
}

#[derive(Default)]
struct Verdict(Mutex<Option<Kill>>);

impl Verdict {
    fn kill(&self, pidfd: &OwnedFd, why: Kill) {
        {
            let mut v = self.0.lock().unwrap();
            if v.is_none() {
                *v = Some(why);
            }
        }
        // An instance that already ended is not signalled (its pidfd stays its own).
        let _ = pidfd::send_signal(pidfd, libc::SIGKILL);
    }

    fn take(&self) -> Option<Kill> {
        self.0.lock().unwrap().take()
    }
}

/// When an instance's first steps happened, from its `StartInstance` on
/// (for the debug log: where a start's time goes).
struct Timeline {
    t0: Instant,
    /// When the first `Invoke` came (`u64::MAX`: not yet).
    first_call_us: AtomicU64,
}

impl Timeline {
    fn us(&self) -> u64 {
        self.t0.elapsed().as_micros() as u64
    }
}

/// A step of the instance the relay saw.
enum Milestone {
    /// Its runtime is up (a cold start).
    RuntimeReady,
    /// Its function's module is imported (a cold start).
    InitDone,
    /// It reported `ready`.
    Ready,
    /// It answered its first request.
    FirstReply,
    /// It answered a request (every one, the first too).
    Answered,
}

fn on_milestone(daemon: &Daemon, running: &Running, timeline: &Timeline, m: Milestone) {
    let pid = running.pid();
    let kind = match running {
        Running::Cold { .. } => "cold",
        Running::Fork { .. } => "fork",
    };
    let (faults, fault_wait_us, pushed) = match running {
        Running::Fork { started, .. } => {
            let c = &started.counters;
            (c.faults.load(Ordering::Relaxed), c.fault_wait_us.load(Ordering::Relaxed), c.pages_pushed.load(Ordering::Relaxed))
        }
        Running::Cold { .. } => (0, 0, 0),
    };
    match m {
        Milestone::Answered | Milestone::RuntimeReady | Milestone::InitDone => {}
        Milestone::Ready => tracing::debug!(pid, kind, at_us = timeline.us(), faults, fault_wait_us, pushed, "instance ready"),
        Milestone::FirstReply => {
            let call = timeline.first_call_us.load(Ordering::Relaxed);
            tracing::debug!(pid, kind, at_us = timeline.us(), call_at_us = call, faults, fault_wait_us, pushed, "instance answered its first request");
            if let Running::Fork { started, .. } = running {
                started.report_working_set_now(daemon);
            }
        }
    }
}

/// The connection's reader: each `Invoke` goes to the instance's stdin;
/// `Stop`, a bad call or the end of the connection kills the instance.
fn take_calls(reader: &mut PeerReader, mut stdin: std::io::PipeWriter, pidfd: &OwnedFd, verdict: &Verdict, timeline: &Timeline, on_request: &dyn Fn()) {
    loop {
        let call = match read_call(reader) {
            Ok(c) => c,
            Err(e @ (ProtoError::Decode { .. } | ProtoError::FrameTooLarge { .. })) => {
                return verdict.kill(pidfd, Kill::Protocol(format!("a bad call from the gateway: {e}")));
            }
            Err(_) => return verdict.kill(pidfd, Kill::GatewayGone),
        };
        if let Err(why) = call.validate() {
            return verdict.kill(pidfd, Kill::Protocol(format!("a bad call from the gateway: {why}")));
        }
        match call {
            InstanceCall::Invoke { body } => {
                let _ = timeline.first_call_us.compare_exchange(u64::MAX, timeline.us(), Ordering::Relaxed, Ordering::Relaxed);
                on_request();
                let mut frame = Vec::with_capacity(4 + body.len());
                frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
                frame.extend_from_slice(&body);
                // A failure means the instance is gone: the relay reports its end.
                let _ = stdin.write_all(&frame);
            }
            InstanceCall::Stop => return verdict.kill(pidfd, Kill::Stopped),
        }
    }
}

/// What the relay saw of the instance's output.
struct Output {
    stderr: String,
    /// Every event could be sent.
    gateway_ok: bool,
}

/// Relays the instance's stdout frames as events and keeps the end of its
/// stderr, until its process ends (then drains both pipes of what is left).
/// `tick` runs between events and says when it wants to run next (`None`:
/// only at the next event).
#[allow(clippy::too_many_arguments)]
fn relay(
    running: &Running,
    mut stdout: std::io::PipeReader,
    mut stderr: std::io::PipeReader,
    socket: &TcpStream,
    writer: &mut PeerWriter,
    verdict: &Verdict,
    milestone: &mut dyn FnMut(Milestone),
    tick: &mut dyn FnMut() -> Option<std::time::Duration>,
) -> Output {
    let pidfd = running.pidfd();
    let mut frames = RuntimeFrames::default();
    let mut tail = Tail::default();
    let mut buf = vec![0u8; 64 << 10];
    let (mut out_open, mut err_open, mut watch_socket, mut gateway_ok) = (true, true, true, true);
    // Reads what stdout holds and sends the events in it; false once it is closed (or ignored).
    let mut answered = false;
    let mut pump_stdout = |stdout: &mut std::io::PipeReader, buf: &mut [u8], gateway_ok: &mut bool| -> bool {
        let n = match stdout.read(buf) {
            Ok(0) | Err(_) => return false,
            Ok(n) => n,
        };
        frames.push(&buf[..n]);
        loop {
            match frames.next_event() {
                None => return true,
                Some(Ok(event)) => {
                    if *gateway_ok && send_event(writer, &event).is_err() {
                        *gateway_ok = false;
                        verdict.kill(pidfd, Kill::GatewayGone);
                    }
                    match event {
                        InstanceEvent::Phase(mitosis_proto::instance::Phase::RuntimeReady) => milestone(Milestone::RuntimeReady),
                        InstanceEvent::Phase(mitosis_proto::instance::Phase::InitDone) => milestone(Milestone::InitDone),
                        InstanceEvent::Phase(mitosis_proto::instance::Phase::Ready) => milestone(Milestone::Ready),
                        InstanceEvent::Reply { .. } => {
                            milestone(Milestone::Answered);
                            if !answered {
                                answered = true;
                                milestone(Milestone::FirstReply);
                            }
                        }
                        _ => {}
                    }
                }
                Some(Err(why)) => {
                    verdict.kill(pidfd, Kill::Protocol(why));
                    return false;
                }
            }
        }
    };
    let pump_stderr = |stderr: &mut std::io::PipeReader, buf: &mut [u8], tail: &mut Tail| -> bool {
        match stderr.read(buf) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                tail.push(&buf[..n]);
                true
            }
        }
    };
    loop {
        let timeout = tick().map_or(-1, |d| i32::try_from(d.as_millis()).unwrap_or(i32::MAX).max(1));
        let polled = {
            let mut fds = [
                if out_open { PollFd::readable(stdout.as_fd()) } else { PollFd::none() },
                if err_open { PollFd::readable(stderr.as_fd()) } else { PollFd::none() },
                PollFd::readable(pidfd.as_fd()),
                if watch_socket { PollFd::hangup(socket.as_fd()) } else { PollFd::none() },
            ];
            poll::poll(&mut fds, timeout).map(|_| fds.map(|f| f.revents() != 0))
        };
        let ready = match polled {
            Ok(ready) => ready,
            Err(e) if e.errno == libc::EINTR => continue,
            Err(e) => {
                verdict.kill(pidfd, Kill::Protocol(format!("the daemon cannot wait for the instance: {e}")));
                break;
            }
        };
        if ready[0] {
            out_open = pump_stdout(&mut stdout, &mut buf, &mut gateway_ok);
        }
        if ready[1] {
            err_open = pump_stderr(&mut stderr, &mut buf, &mut tail);
        }
        if ready[3] {
            watch_socket = false;
            verdict.kill(pidfd, Kill::GatewayGone);
        }
        if ready[2] {
            break;
        }
    }
    // What it wrote before it ended (a process it started may hold the
    // pipes open: only what is there now is taken).
    for _ in 0..64 {
        let ready = {
            let mut fds = [
                if out_open { PollFd::readable(stdout.as_fd()) } else { PollFd::none() },
                if err_open { PollFd::readable(stderr.as_fd()) } else { PollFd::none() },
            ];
            match poll::poll(&mut fds, 0) {
                Ok(n) if n > 0 => fds.map(|f| f.revents() != 0),
                _ => break,
            }
        };
        if ready[0] {
            out_open = pump_stdout(&mut stdout, &mut buf, &mut gateway_ok);
        }
        if ready[1] {
            err_open = pump_stderr(&mut stderr, &mut buf, &mut tail);
        }
    }
    Output { stderr: tail.text(), gateway_ok }
}

/// The last [`STDERR_TAIL`] bytes of a stream.
#[derive(Default)]
struct Tail {
    bytes: Vec<u8>,
}

impl Tail {
    fn push(&mut self, more: &[u8]) {
        self.bytes.extend_from_slice(more);
        if self.bytes.len() > STDERR_TAIL {
            let cut = self.bytes.len() - STDERR_TAIL;
            self.bytes.drain(..cut);
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_keeps_the_last_bytes() {
        let mut t = Tail::default();
        t.push(&vec![b'a'; STDERR_TAIL]);
        t.push(b"end");
        assert_eq!(t.bytes.len(), STDERR_TAIL);
        assert!(t.text().ends_with("aend"));
    }

    #[test]
    fn ends_are_described() {
        assert_eq!(describe(&ChildEnd::Signaled(9)), "the instance was killed by signal 9 (SIGKILL)");
        assert_eq!(describe(&ChildEnd::Exited(3)), "the instance exited with code 3");
    }
}
