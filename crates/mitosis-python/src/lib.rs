//! The native half of the Python package `mitosis` (imported as
//! `mitosis._native`; programs use `import mitosis`).
//!
//! It owns the translation between Python and the Rust client library
//! [`mitosis`]: Python arguments in, Python objects (`Parent`, `Child`,
//! `Resumed`, dicts) out, and every [`mitosis::Error`] turned into an instance
//! of the exception hierarchy that the pure-Python part defines in
//! `mitosis/errors.py` (one class per error kind, each with `.kind` and the
//! `.exit_code` that the `mitosis` command would exit with).
//!
//! It must not touch anything else: it only speaks the local protocol, through
//! the client library, to the daemon of this host. It never starts a thread
//! (only single-threaded processes can be prepared or resumed in place), never
//! talks to the network and never changes the process beyond what the library
//! does (`fork_resume` replaces the process on purpose).
//!
//! Two details matter for Python programs:
//!
//! * Before preparing or resuming, it flushes `sys.stdout` and `sys.stderr`:
//!   what is still in their buffers would otherwise be printed again by every
//!   child (the buffers are part of the memory the children get), or lost
//!   when the process is replaced.
//! * Calls that wait for another process (`resume()`, `Resumed.wait()`)
//!   release the GIL. `fork_prepare` and `fork_resume` do not: the process is
//!   single-threaded by requirement, so there is nobody to give it to.
//! * `fork_prepare` is a fork for the interpreter ([`AsAFork`]): it runs
//!   CPython's own fork machinery around the prepare, as `os.fork()` does,
//!   so hooks registered with `os.register_at_fork` run (`before` and
//!   `after_in_parent` in the parent, `after_in_child` in every child) and
//!   the interpreter's locks and thread states are reset in children. That
//!   is what makes children unique: `random` reseeds itself from such a hook,
//!   and so do other modules and programs. Then `mitosis._child` reseeds
//!   what has no hook (OpenSSL's generator, see there).
//!
//! # The interpreter's fork API
//!
//! `PyOS_BeforeFork`, `PyOS_AfterFork_Parent` and `PyOS_AfterFork_Child` are
//! the C functions `os.fork()` calls around `fork()`. They are in the stable
//! ABI since Python 3.7 (this module is built for abi3 >= 3.9), and pyo3's
//! `ffi` declares them in abi3 mode. They are called from Rust, because
//! nothing in Python may run between them and the prepare: `PyOS_BeforeFork`
//! takes the import lock (and, from 3.13, the runtime's thread-state lock),
//! which the child's `PyOS_AfterFork_Child` resets and the parent's
//! `PyOS_AfterFork_Parent` releases. (Calling them through `ctypes` would
//! run Python code with those locks held; replaying `os.register_at_fork`
//! hooks from Python is impossible, the interpreter keeps them private.)
//! These three calls are this crate's only `unsafe` code: a foreign-function
//! boundary, like the C API's, that no wrapper in `mitosis-sys` could make
//! safe without the GIL token that only pyo3 has.
//!
//! The crate is built by maturin (`pip install ./crates/mitosis-python`, see
//! `pyproject.toml`). Cargo builds it too, as part of the workspace: pyo3's
//! `extension-module` feature keeps the library from linking libpython, so no
//! Python development files are needed, and its tests (`tests/`) are
//! end-to-end tests that run Python programs against real daemons.

use std::path::PathBuf;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use mitosis::{ChildEnd, Error, ErrorKind, PagerStats, ResumeTimings, Role, SeedInfo};

/// The `kind` string of an error, as `MitosisError.kind` shows it.
fn kind_name(e: &Error) -> &'static str {
    match e {
        Error::Daemon(r) | Error::Local(r) => match r.kind {
            ErrorKind::NotFound => "not_found",
            ErrorKind::AuthFailed => "auth_failed",
            ErrorKind::VersionMismatch => "version_mismatch",
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::PermissionDenied => "permission_denied",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::SeedGone => "seed_gone",
            ErrorKind::Internal => "internal",
            ErrorKind::Busy => "busy",
        },
        Error::Connect { .. } => "daemon_unreachable",
        Error::Io(_) | Error::Proto(_) => "connection_lost",
        Error::Usage(_) => "usage",
    }
}

/// An instance of `mitosis.errors.<class for kind>`, as a `PyErr`.
fn mitosis_error(py: Python<'_>, kind: &str, exit_code: i32, message: String) -> PyErr {
    let made = py
        .import("mitosis.errors")
        .and_then(|m| m.getattr("_from_native"))
        .and_then(|f| f.call1((kind, exit_code, message.clone())));
    match made {
        Ok(exc) => PyErr::from_value(exc),
        // The Python half is missing or broken: still say what went wrong.
        Err(e) => pyo3::exceptions::PyRuntimeError::new_err(format!(
            "{message} (mitosis error kind {kind}, exit code {exit_code}; mitosis.errors unusable: {e})"
        )),
    }
}

fn to_py_err(py: Python<'_>, e: Error) -> PyErr {
    mitosis_error(py, kind_name(&e), e.exit_code(), mitosis::error_chain(&e))
}

/// Fails with `Unsupported` (exit code 65) unless the calling process has
/// one thread: a process resumed in place is replaced by the child.
fn ensure_single_threaded(py: Python<'_>, what: &str) -> PyResult<()> {
    let threads = mitosis_sys::procfs::thread_count("self").unwrap_or(1);
    if threads == 1 {
        return Ok(());
    }
    Err(mitosis_error(
        py,
        "unsupported",
        ErrorKind::Unsupported.exit_code(),
        format!(
            "this process has {threads} threads; only a single-threaded process can be {what}. \
             Stop Python threads and thread pools first, and make numeric libraries single-threaded \
             before importing them (OPENBLAS_NUM_THREADS=1, MKL_NUM_THREADS=1, OMP_NUM_THREADS=1; \
             `import mitosis.wrapper` sets these)"
        ),
    ))
}

/// Flushes `sys.stdout` and `sys.stderr` (when they exist and can be flushed).
fn flush_python_stdio(py: Python<'_>) {
    if let Ok(sys) = py.import("sys") {
        for name in ["stdout", "stderr"] {
            if let Ok(stream) = sys.getattr(name) {
                if !stream.is_none() {
                    // A closed or broken stream is the program's business.
                    let _ = stream.call_method0("flush");
                }
            }
        }
    }
}

/// The interpreter's side of a fork (see the crate doc), around a prepare:
/// [`AsAFork::begin`] runs `PyOS_BeforeFork`; then exactly one of
/// `PyOS_AfterFork_Child` ([`AsAFork::child`]) or `PyOS_AfterFork_Parent`
/// ([`AsAFork::parent`], also on drop, so a prepare that failed or panicked
/// still releases the import lock) runs, as `os.fork()` pairs them. Nothing
/// may run Python code in between.
struct AsAFork<'py> {
    py: Python<'py>,
    ended: bool,
    /// `mitosis._child`, imported before the prepare: a child may not see
    /// the files it was imported from (a container has a /tmp of its own).
    child_module: Option<PyResult<Bound<'py, pyo3::types::PyModule>>>,
}

impl<'py> AsAFork<'py> {
    fn begin(py: Python<'py>) -> AsAFork<'py> {
        // Before PyOS_BeforeFork, which takes the import lock.
        let child_module = py.import("mitosis._child");
        // SAFETY: called with the GIL held (the `py` token) and paired with
        // exactly one AfterFork call by the returned value (its methods or
        // its drop).
        unsafe { pyo3::ffi::PyOS_BeforeFork() };
        AsAFork { py, ended: false, child_module: Some(child_module) }
    }

    /// This process is the parent (or the prepare failed).
    fn parent(mut self) {
        self.end_parent();
    }

    fn end_parent(&mut self) {
        if !std::mem::replace(&mut self.ended, true) {
            // SAFETY: the GIL is held (self.py) and PyOS_BeforeFork ran in
            // begin; `ended` makes this the only AfterFork call for it.
            unsafe { pyo3::ffi::PyOS_AfterFork_Parent() };
        }
    }

    /// This process is a child resumed from the seed: the interpreter's
    /// after-fork work, then what `mitosis._child` reseeds.
    ///
    /// A child of a multi-threaded seed has all of the seed's threads, each
    /// going on where it was; `PyOS_AfterFork_Child` would delete every
    /// thread state but this one (a fork's child has one thread). The
    /// interpreter is told it is the parent instead (which releases what
    /// `PyOS_BeforeFork` took and runs the `after_in_parent` hooks), and
    /// `mitosis._child` reseeds `random` itself, the one hook of the
    /// standard library that a child must not miss.
    fn child(mut self) {
        let threaded = mitosis_sys::procfs::thread_count("self").unwrap_or(1) > 1;
        if threaded {
            self.end_parent();
        } else {
            self.ended = true;
            // SAFETY: the GIL is held (self.py), PyOS_BeforeFork ran in begin (in
            // the seed, whose memory this child has) and this is the only
            // AfterFork call for it. The child is single-threaded, as the seed
            // was, which is what PyOS_AfterFork_Child expects of a fork's child.
            unsafe { pyo3::ffi::PyOS_AfterFork_Child() };
        }
        let child_module = self.child_module.take().unwrap_or_else(|| self.py.import("mitosis._child"));
        let reseeded = child_module.and_then(|m| m.call_method1("after_fork_prepare", (threaded,)));
        if let Err(e) = reseeded {
            // As the interpreter does for a failing at-fork hook: report it
            // and go on; the child is resumed and must run.
            e.write_unraisable(self.py, None);
        }
    }
}

impl Drop for AsAFork<'_> {
    fn drop(&mut self) {
        self.end_parent();
    }
}

fn socket_or_default(socket: Option<PathBuf>) -> PathBuf {
    socket.unwrap_or_else(mitosis::default_socket)
}

/// The parent side of `fork_prepare`: the process that prepared itself. The
/// seed is ready; children can be resumed from it on any host.
#[pyclass(frozen, module = "mitosis", name = "Parent")]
struct Parent {
    /// The seed's id.
    #[pyo3(get)]
    seed_id: String,
    /// Random number of this prepare; children of an older prepare of the same id are refused pages.
    #[pyo3(get)]
    generation: u64,
    /// How long the daemon took to prepare, in microseconds.
    #[pyo3(get)]
    prepare_us: u64,
    /// Bytes mapped by the process when it was prepared.
    #[pyo3(get)]
    mapped_bytes: u64,
    /// Resident bytes of the snapshot.
    #[pyo3(get)]
    rss_bytes: u64,
    /// Number of memory mappings.
    #[pyo3(get)]
    vmas: u32,
    /// This process's pid (the seed's source).
    #[pyo3(get)]
    source_pid: i32,
    /// Pid of the daemon's copy-on-write snapshot of this process.
    #[pyo3(get)]
    snapshot_pid: i32,
    /// Whether the seed outlives this process (until `drop`).
    #[pyo3(get)]
    pinned: bool,
    /// Descriptors that children will not get, as (fd, what it was).
    #[pyo3(get)]
    closed_fds: Vec<(i32, String)>,
    /// Threads of this process at the prepare (each goes on in every child).
    #[pyo3(get)]
    threads: u32,
}

#[pymethods]
impl Parent {
    /// Always False here: this is the process that prepared.
    #[getter]
    fn is_child(&self) -> bool {
        false
    }
    /// Always True here.
    #[getter]
    fn is_parent(&self) -> bool {
        true
    }
    /// The daemon's prepare time in milliseconds.
    #[getter]
    fn prepare_ms(&self) -> f64 {
        self.prepare_us as f64 / 1000.0
    }
    fn __repr__(&self) -> String {
        format!(
            "<mitosis.Parent seed_id={:?} generation={:#x} pinned={} mapped_bytes={} prepare_us={}>",
            self.seed_id,
            self.generation,
            if self.pinned { "True" } else { "False" },
            self.mapped_bytes,
            self.prepare_us
        )
    }
}

impl From<SeedInfo> for Parent {
    fn from(s: SeedInfo) -> Parent {
        Parent {
            seed_id: s.id,
            generation: s.generation,
            prepare_us: s.prepare_us,
            mapped_bytes: s.mapped_bytes,
            rss_bytes: s.rss_bytes,
            vmas: s.vmas,
            source_pid: s.source_pid,
            snapshot_pid: s.snapshot_pid,
            pinned: s.pinned,
            closed_fds: s.closed_fds,
            threads: s.threads,
        }
    }
}

/// The child side of `fork_prepare`: a process resumed from the seed, on
/// whatever host, continuing from the prepare point.
#[pyclass(frozen, module = "mitosis", name = "Child")]
struct Child {
    /// The id of the seed this child was resumed from.
    #[pyo3(get)]
    seed_id: String,
    /// The address of the daemon that holds the seed.
    #[pyo3(get)]
    seed_host: String,
    /// The generation of the seed.
    #[pyo3(get)]
    generation: u64,
    /// This child's own pid.
    #[pyo3(get)]
    pid: i32,
}

#[pymethods]
impl Child {
    /// Always True here: this process is a resumed child.
    #[getter]
    fn is_child(&self) -> bool {
        true
    }
    /// Always False here.
    #[getter]
    fn is_parent(&self) -> bool {
        false
    }
    fn __repr__(&self) -> String {
        format!(
            "<mitosis.Child seed_id={:?} seed_host={:?} generation={:#x} pid={}>",
            self.seed_id, self.seed_host, self.generation, self.pid
        )
    }
}

/// Prepares the calling process as seed `id` with the daemon at `socket`
/// (default: `$MITOSIS_SOCKET` or /run/mitosis/mitosis.sock).
///
/// Returns a `Parent` here and a `Child` in every child resumed from the
/// seed, on any host: test `.is_child`. An unpinned seed is dropped when this
/// process exits; with `pin=True` it stays until `drop(id)`. With
/// `copy=True` the daemon copies this process's memory into itself and
/// keeps no snapshot process, so the seed also outlives this process's
/// container (where the snapshot would live and die). Preparing an
/// existing id replaces that seed. Every thread is prepared, and goes on
/// in each child where it was (see `AsAFork::child` for the interpreter's
/// side). `sys.stdout` and `sys.stderr` are flushed first.
/// Raises a `MitosisError` subclass on failure. The seed's snapshot is a
/// stopped copy of this process in its process group: a SIGKILL to the whole
/// group kills it too.
///
/// For the interpreter it is a fork: hooks registered with
/// `os.register_at_fork` run as around `os.fork()` (`before`, then
/// `after_in_parent` here, `after_in_child` in every child), so `random` is
/// reseeded in each child; OpenSSL's generator gets fresh entropy there too.
#[pyfunction]
#[pyo3(signature = (id, pin = false, socket = None, copy = false))]
fn fork_prepare(py: Python<'_>, id: &str, pin: bool, socket: Option<PathBuf>, copy: bool) -> PyResult<Py<PyAny>> {
    flush_python_stdio(py);
    let socket = socket_or_default(socket);
    // The GIL stays held: other Python threads wait for it (in the seed and
    // in every child), and the child must come back from this exact call
    // with it. No Python code runs between
    // the fork machinery's begin and its end.
    let fork = AsAFork::begin(py);
    let role = mitosis::fork_prepare_copy(&socket, id, pin, copy);
    match role {
        Ok(Role::Child(_)) => fork.child(),
        _ => fork.parent(),
    }
    match role.map_err(|e| to_py_err(py, e))? {
        Role::Parent(seed) => Ok(Py::new(py, Parent::from(seed))?.into_any()),
        Role::Child(me) => Ok(Py::new(
            py,
            Child { seed_id: me.seed_id, seed_host: me.seed_host, generation: me.generation, pid: me.pid },
        )?
        .into_any()),
    }
}

/// Replaces the calling process by a child of seed `id` from the daemon at
/// `host` ("addr:port"), through the local daemon at `socket` (MITOSIS's
/// `fork_resume_remote`).
///
/// Does not return on success: the process continues as the child, from the
/// seed's prepare point, keeping its pid, parent and stdio. An error found
/// before the takeover starts (unknown seed, unreachable daemon, several
/// threads) raises a `MitosisError` subclass and leaves the process as it
/// was; a failure during the takeover kills the process. Known limit: a
/// process running the same executable as the seed (Python resuming a Python
/// seed) is killed during the takeover today (the daemon's `PR_SET_MM_MAP`
/// step fails with EBUSY); use `resume()` or `mitosis resume --in-place`.
#[pyfunction]
#[pyo3(signature = (host, id, socket = None))]
fn fork_resume(py: Python<'_>, host: &str, id: &str, socket: Option<PathBuf>) -> PyResult<()> {
    ensure_single_threaded(py, "resumed in place")?;
    flush_python_stdio(py);
    let socket = socket_or_default(socket);
    match mitosis::resume_in_place(&socket, host, id) {
        Err(e) => Err(to_py_err(py, e)),
        Ok(never) => match never {},
    }
}

fn timings_dict<'py>(py: Python<'py>, t: &ResumeTimings) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("fetch_image_us", t.fetch_image_us)?;
    d.set_item("spawn_us", t.spawn_us)?;
    d.set_item("restore_us", t.restore_us)?;
    d.set_item("total_us", t.total_us)?;
    d.set_item("image_bytes", t.image_bytes)?;
    Ok(d)
}

fn pager_dict<'py>(py: Python<'py>, s: &PagerStats) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("faults", s.faults)?;
    d.set_item("zero_faults", s.zero_faults)?;
    d.set_item("remote_faults", s.remote_faults)?;
    d.set_item("pages_pushed", s.pages_pushed)?;
    d.set_item("cache_hits", s.cache_hits)?;
    d.set_item("pages_fetched", s.pages_fetched)?;
    d.set_item("bytes_fetched", s.bytes_fetched)?;
    d.set_item("fetches", s.fetches)?;
    Ok(d)
}

/// How a child ended, as the dict `Resumed.wait()` returns.
fn end_dict<'py>(py: Python<'py>, end: &ChildEnd, stats: &PagerStats) -> PyResult<Bound<'py, PyDict>> {
    // The OOM killer's signal.
    const SIGKILL: i32 = 9;
    let (exit_code, signal, killed, oom_limit) = match end {
        ChildEnd::Exited(c) => (Some(*c), None, None, None),
        ChildEnd::Signaled(s) => (None, Some(*s), None, None),
        ChildEnd::KilledByMitosis { reason } => (None, None, Some(reason.as_str()), None),
        ChildEnd::OutOfMemory { limit_bytes } => (None, Some(SIGKILL), None, Some(*limit_bytes)),
    };
    let d = PyDict::new(py);
    d.set_item("status", end.exit_status())?;
    d.set_item("exit_code", exit_code)?;
    d.set_item("signal", signal)?;
    d.set_item("killed_by_mitosis", killed)?;
    d.set_item("out_of_memory", oom_limit.is_some())?;
    d.set_item("memory_limit_bytes", oom_limit.flatten())?;
    d.set_item("description", end.to_string())?;
    d.set_item("pager", pager_dict(py, stats)?)?;
    Ok(d)
}

/// A child started by `resume()`, running as a new process on this host.
#[pyclass(module = "mitosis", name = "Resumed")]
struct Resumed {
    /// The child's pid (as this host sees it; inside its container it is 2).
    #[pyo3(get)]
    pid: i32,
    /// The name of the child's lean container, or None when it runs without one.
    #[pyo3(get)]
    container: Option<String>,
    timings: ResumeTimings,
    running: Option<mitosis::Resumed>,
    ended: Option<Py<PyDict>>,
}

#[pymethods]
impl Resumed {
    /// The steps of the resume, in microseconds (and the image size in bytes).
    #[getter]
    fn timings<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        timings_dict(py, &self.timings)
    }

    /// Waits for the child to end (the GIL is released meanwhile) and returns
    /// how it ended, the same dict on every call: `status` (what `mitosis
    /// resume` would exit with: the exit code, 128 + signal, or 69 when
    /// mitosis killed it), `exit_code` and `signal` (None unless it exited,
    /// resp. was killed by a signal), `killed_by_mitosis` (the reason, or
    /// None), `out_of_memory` (killed by the OOM killer at its container's
    /// limit; then `signal` is 9) with `memory_limit_bytes`, `description`
    /// (in words) and `pager` (faults, zero_faults, remote_faults,
    /// pages_fetched, bytes_fetched, fetches, pages_pushed, cache_hits).
    fn wait(&mut self, py: Python<'_>) -> PyResult<Py<PyDict>> {
        if let Some(done) = &self.ended {
            return Ok(done.clone_ref(py));
        }
        let Some(running) = self.running.take() else {
            return Err(mitosis_error(py, "usage", 64, "this child is already being waited for".into()));
        };
        let (end, stats) = py.detach(move || running.wait()).map_err(|e| to_py_err(py, e))?;
        let d = end_dict(py, &end, &stats)?.unbind();
        self.ended = Some(d.clone_ref(py));
        Ok(d)
    }

    fn __repr__(&self) -> String {
        let state = if self.ended.is_some() { "ended" } else { "running" };
        match &self.container {
            Some(name) => format!("<mitosis.Resumed pid={} container={name:?} {state}>", self.pid),
            None => format!("<mitosis.Resumed pid={} {state}>", self.pid),
        }
    }
}

/// Starts a child of seed `id` from the daemon at `host` ("addr:port") as a
/// new process on this host, through the local daemon at `socket`.
///
/// As with `mitosis resume`, the child runs in a lean container (its own PID,
/// mount, UTS and IPC namespaces: it is pid 2 there) unless
/// `container=False`, with the limits `memory` (bytes), `cpus` (a float) and
/// `pids`, and `hostname` and `isolate_network` as the command's flags of the
/// same names. `eager=True` streams the whole snapshot in while it runs. Its stdin, stdout and stderr are the caller's
/// descriptors 0, 1 and 2 (`sys.stdout` and `sys.stderr` are flushed first).
/// Returns a `Resumed` with `.pid`, `.container`, `.timings` and `.wait()`;
/// the child is killed if the `Resumed` is garbage-collected before it
/// ended. The GIL is released while waiting for the daemon. Raises a
/// `MitosisError` subclass on failure (`SeedNotFound` for an unknown id).
#[pyfunction]
#[pyo3(signature = (host, id, socket = None, *, container = true, memory = None, cpus = None, pids = None, hostname = None, isolate_network = false, eager = false))]
#[allow(clippy::too_many_arguments)]
fn resume(
    py: Python<'_>,
    host: &str,
    id: &str,
    socket: Option<PathBuf>,
    container: bool,
    memory: Option<u64>,
    cpus: Option<f64>,
    pids: Option<u32>,
    hostname: Option<String>,
    isolate_network: bool,
    eager: bool,
) -> PyResult<Resumed> {
    let shaped = memory.is_some() || cpus.is_some() || pids.is_some() || hostname.is_some() || isolate_network;
    if !container && shaped {
        return Err(pyo3::exceptions::PyValueError::new_err("container limits, hostname and isolate_network need container=True"));
    }
    let cpu_millis = match cpus {
        Some(c) if !(0.001..=1024.0).contains(&c) => {
            return Err(pyo3::exceptions::PyValueError::new_err("cpus must be between 0.001 and 1024"))
        }
        c => c.map(|c| (c * 1000.0).round() as u32),
    };
    flush_python_stdio(py);
    let socket = socket_or_default(socket);
    let (host, id) = (host.to_string(), id.to_string());
    let spec = mitosis::ContainerSpec {
        limits: mitosis::ContainerLimits { memory_bytes: memory, cpu_millis, pids },
        rootfs: None,
        network: isolate_network,
        hostname,
    };
    let options = mitosis::ResumeOptions {
        container: container.then_some(spec),
        paging: mitosis::Paging { eager, ..Default::default() },
        ..Default::default()
    };
    let started = py
        .detach(move || mitosis::Client::connect(&socket)?.resume_with(&host, &id, [0, 1, 2], &options))
        .map_err(|e| to_py_err(py, e))?;
    Ok(Resumed {
        pid: started.pid,
        container: started.container.clone(),
        timings: started.timings.clone(),
        running: Some(started),
        ended: None,
    })
}

/// Drops seed `id` on this host (daemon at `socket`): its snapshot is freed
/// and no child can be resumed from it any more. Raises `SeedNotFound` when
/// there is no such seed.
#[pyfunction]
#[pyo3(name = "drop", signature = (id, socket = None))]
fn drop_seed(py: Python<'_>, id: &str, socket: Option<PathBuf>) -> PyResult<()> {
    let socket = socket_or_default(socket);
    let id = id.to_string();
    py.detach(move || mitosis::Client::connect(&socket)?.drop_seed(&id)).map_err(|e| to_py_err(py, e))
}

/// This host's seeds (daemon at `socket`; a non-root caller sees its own),
/// as a list of dicts with the keys id, generation, source_pid, snapshot_pid,
/// uid, mapped_bytes, rss_bytes, vmas, age_ms, prepare_us, pinned,
/// closed_fds and threads, sorted by id.
#[pyfunction]
#[pyo3(signature = (socket = None))]
fn seeds<'py>(py: Python<'py>, socket: Option<PathBuf>) -> PyResult<Bound<'py, PyList>> {
    let socket = socket_or_default(socket);
    let list = py.detach(move || mitosis::Client::connect(&socket)?.list()).map_err(|e| to_py_err(py, e))?;
    let out = PyList::empty(py);
    for s in list {
        let d = PyDict::new(py);
        d.set_item("id", &s.id)?;
        d.set_item("generation", s.generation)?;
        d.set_item("source_pid", s.source_pid)?;
        d.set_item("snapshot_pid", s.snapshot_pid)?;
        d.set_item("uid", s.uid)?;
        d.set_item("mapped_bytes", s.mapped_bytes)?;
        d.set_item("rss_bytes", s.rss_bytes)?;
        d.set_item("vmas", s.vmas)?;
        d.set_item("age_ms", s.age_ms)?;
        d.set_item("prepare_us", s.prepare_us)?;
        d.set_item("pinned", s.pinned)?;
        d.set_item("closed_fds", s.closed_fds.clone())?;
        d.set_item("threads", s.threads)?;
        out.append(d)?;
    }
    Ok(out)
}

/// The daemon socket used when none is given: `$MITOSIS_SOCKET`, or the default path.
#[pyfunction]
fn default_socket() -> String {
    mitosis::default_socket().to_string_lossy().into_owned()
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<Parent>()?;
    m.add_class::<Child>()?;
    m.add_class::<Resumed>()?;
    m.add_function(wrap_pyfunction!(fork_prepare, m)?)?;
    m.add_function(wrap_pyfunction!(fork_resume, m)?)?;
    m.add_function(wrap_pyfunction!(resume, m)?)?;
    m.add_function(wrap_pyfunction!(drop_seed, m)?)?;
    m.add_function(wrap_pyfunction!(seeds, m)?)?;
    m.add_function(wrap_pyfunction!(default_socket, m)?)?;
    Ok(())
}
