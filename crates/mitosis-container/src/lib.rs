//! Lean containers for mitosis children.
//!
//! A container is a namespace holder process (PID 1 of a new PID namespace,
//! owner of new mount, UTS and IPC namespaces, and optionally a network one;
//! see [`holder`]) plus one cgroup directory per controller (memory, cpu,
//! pids; see [`cgroup`]). A child enters it by being forked into the holder's
//! PID namespace, joining the others with one `setns` on the holder's pidfd,
//! and having its pid written to the cgroups: no namespace or mount is
//! created on that path. A [`Pool`] keeps containers of the default kind
//! warm, so starting one costs that `setns` and a few cgroup writes.
//!
//! Dropping a [`Container`] closes the holder's control pipe and kills it;
//! the kernel then kills whatever is left in its PID namespace, and the
//! cgroup directories are removed. Containers are never reused.
//!
//! This crate owns namespaces, mounts and cgroups of containers. It does not
//! fork children (the daemon's zygote does, calling into [`holder`]) and
//! knows nothing about seeds, restore or paging.

#![forbid(unsafe_code)]
#![deny(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_possible_wrap)]

pub mod cgroup;
pub mod holder;

use std::collections::VecDeque;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

pub use cgroup::{Cgroups, ContainerCgroup, Sweep};
pub use holder::HolderSpec;
use mitosis_proto::local::{ContainerLimits, PoolStats};
use mitosis_sys::pidfd;

/// Forks namespace holders (implemented by the daemon's zygote).
pub trait HolderSpawner: Send + Sync {
    /// Clones a process with `spec.clone_flags()` that runs
    /// [`holder::holder_main`] with `name` as hostname, `control` and `ready`;
    /// returns its pid. The holder must be a child of the caller's process.
    fn spawn_holder(&self, spec: &HolderSpec, name: &str, control: RawFd, ready: RawFd) -> io::Result<i32>;
}

/// Counters shared by a pool and its containers.
#[derive(Default)]
struct Counters {
    created: AtomicU64,
    destroyed: AtomicU64,
}

/// A ready container (see the crate doc).
pub struct Container {
    pub name: String,
    pub spec: HolderSpec,
    pub holder_pid: i32,
    holder: OwnedFd,
    /// Write end of the holder's control pipe: dropping it ends the holder.
    control: Option<OwnedFd>,
    cgroup: ContainerCgroup,
    counters: Arc<Counters>,
    memory_limit: Option<u64>,
}

impl Container {
    /// The holder's pidfd: `setns` on it joins the container's namespaces.
    pub fn holder_pidfd(&self) -> &OwnedFd {
        &self.holder
    }

    /// Sets the container's resource limits.
    pub fn apply(&mut self, limits: &ContainerLimits) -> io::Result<()> {
        self.memory_limit = limits.memory_bytes;
        self.cgroup.apply(limits)
    }

    /// The memory limit set by [`Container::apply`].
    pub fn memory_limit(&self) -> Option<u64> {
        self.memory_limit
    }

    /// Puts process `pid` into the container's cgroups.
    pub fn add(&self, pid: i32) -> io::Result<()> {
        self.cgroup.add(pid)
    }

    pub fn memory_usage(&self) -> Option<u64> {
        self.cgroup.memory_usage()
    }

    /// See [`ContainerCgroup::procs_file`].
    pub fn procs_file(&self) -> Option<std::path::PathBuf> {
        self.cgroup.procs_file()
    }

    /// Processes of this container killed by the kernel's OOM killer so far.
    pub fn oom_kills(&self) -> u64 {
        self.cgroup.oom_kills()
    }

    /// See [`ContainerCgroup::join_pressure`].
    pub fn join_pressure(&self, pid: i32) -> io::Result<()> {
        self.cgroup.join_pressure(pid)
    }

    /// See [`ContainerCgroup::memory_pressure`].
    pub fn memory_pressure(&self) -> Option<f64> {
        self.cgroup.memory_pressure()
    }

    /// See [`ContainerCgroup::allow_swap`].
    pub fn allow_swap(&self) -> io::Result<()> {
        self.cgroup.allow_swap()
    }

    /// See [`ContainerCgroup::swap_usage`].
    pub fn swap_usage(&self) -> u64 {
        self.cgroup.swap_usage()
    }

    /// See [`ContainerCgroup::reclaim`].
    pub fn reclaim(&self, bytes: u64) -> io::Result<u64> {
        self.cgroup.reclaim(bytes)
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        self.control = None;
        let _ = pidfd::send_signal(&self.holder, libc::SIGKILL);
        // The holder is our child (the zygote clones with CLONE_PARENT): reap it.
        let _ = pidfd::wait_exit(&self.holder);
        if let Err(e) = self.cgroup.remove() {
            tracing::warn!(container = %self.name, error = %e, "cannot remove a container's cgroup");
        }
        self.counters.destroyed.fetch_add(1, Ordering::Relaxed);
    }
}

/// Most kinds of containers kept warm (the default kind and the first
/// others asked for: an own network namespace, a rootfs).
const WARM_KINDS: usize = 4;

/// Warm containers, `target` of each kind in use, refilled in the background.
pub struct Pool {
    cgroups: Cgroups,
    spawner: Arc<dyn HolderSpawner>,
    /// Per kind, in the order kinds were first asked for (the default first).
    warm: Mutex<Vec<(HolderSpec, VecDeque<Container>)>>,
    wake: Condvar,
    target: usize,
    next: AtomicU64,
    prefix: String,
    counters: Arc<Counters>,
    stopping: AtomicBool,
    /// Containers whose child ended, torn down by the reaper thread.
    retired: std::sync::mpsc::Sender<Container>,
}

impl Pool {
    /// Creates the daemon's cgroup subtrees and starts refilling `target`
    /// warm containers (0: containers are made on demand only).
    pub fn start(spawner: Arc<dyn HolderSpawner>, target: usize) -> io::Result<Arc<Pool>> {
        let pid = std::process::id();
        let cgroups = Cgroups::discover(pid)?;
        let missing = cgroups.missing();
        if !missing.is_empty() {
            tracing::warn!(?missing, "cgroup controllers not found: containers will not be limited by them");
        }
        let (retired, to_reap) = std::sync::mpsc::channel::<Container>();
        // Tearing a container down (killing and reaping its holder, removing
        // its cgroups) takes about half a millisecond; off the path of
        // whoever reports the child's end.
        std::thread::Builder::new().name("container-reaper".into()).spawn(move || {
            for container in to_reap {
                drop(container);
            }
        })?;
        let pool = Arc::new(Pool {
            retired,
            cgroups,
            spawner,
            warm: Mutex::new(vec![(HolderSpec::default(), VecDeque::new())]),
            wake: Condvar::new(),
            target,
            next: AtomicU64::new(0),
            prefix: format!("mitosis-{pid}-"),
            counters: Arc::default(),
            stopping: AtomicBool::new(false),
        });
        if target > 0 {
            let p = pool.clone();
            std::thread::Builder::new().name("container-pool".into()).spawn(move || p.refill())?;
        }
        Ok(pool)
    }

    fn refill(&self) {
        loop {
            let kind = {
                let mut warm = self.warm.lock().unwrap();
                loop {
                    if self.stopping.load(Ordering::Relaxed) {
                        return;
                    }
                    if let Some((kind, _)) = warm.iter().find(|(_, q)| q.len() < self.target) {
                        break kind.clone();
                    }
                    warm = self.wake.wait(warm).unwrap();
                }
            };
            match self.create(&kind) {
                Ok(c) => {
                    let mut warm = self.warm.lock().unwrap();
                    if self.stopping.load(Ordering::Relaxed) {
                        return;
                    }
                    if let Some((_, q)) = warm.iter_mut().find(|(k, _)| *k == kind) {
                        q.push_back(c);
                    }
                }
                Err(e) if kind == HolderSpec::default() => {
                    tracing::error!(error = %e, "cannot create a warm container; retrying in 1 s");
                    std::thread::sleep(Duration::from_secs(1));
                }
                Err(e) => {
                    // That kind (a rootfs gone, say) is made on demand from now on.
                    tracing::warn!(error = %e, ?kind, "cannot keep containers of this kind warm");
                    self.warm.lock().unwrap().retain(|(k, _)| *k != kind);
                }
            }
        }
    }

    /// A container of kind `spec`: a warm one if there is one, else a new
    /// one. A kind asked for the first time is kept warm from then on (up to
    /// [`WARM_KINDS`] kinds).
    pub fn take(&self, spec: &HolderSpec) -> io::Result<Container> {
        let taken = {
            let mut warm = self.warm.lock().unwrap();
            match warm.iter_mut().find(|(k, _)| k == spec) {
                Some((_, q)) => q.pop_front(),
                None => {
                    if warm.len() < WARM_KINDS {
                        warm.push((spec.clone(), VecDeque::new()));
                    }
                    None
                }
            }
        };
        self.wake.notify_one();
        match taken {
            Some(c) => Ok(c),
            None => self.create(spec),
        }
    }

    /// A cgroup without limits for a child that runs without a container:
    /// it holds the child and its descendants together, so that all of them
    /// can be found and killed should their pager die.
    pub fn plain_cgroup(&self) -> io::Result<ContainerCgroup> {
        self.cgroups.create(&format!("{}plain-{}", self.prefix, self.next.fetch_add(1, Ordering::Relaxed)))
    }

    /// Makes a new container of kind `spec` (a holder and its cgroups).
    pub fn create(&self, spec: &HolderSpec) -> io::Result<Container> {
        if let Some(dir) = &spec.rootfs {
            if !std::path::Path::new(dir).is_dir() {
                return Err(io::Error::new(io::ErrorKind::NotFound, format!("rootfs {dir} is not a directory")));
            }
        }
        let t0 = Instant::now();
        let name = format!("{}{}", self.prefix, self.next.fetch_add(1, Ordering::Relaxed));
        let cgroup = self.cgroups.create(&name)?;
        let (control_rx, control_tx) = std::io::pipe()?;
        let (mut ready_rx, ready_tx) = std::io::pipe()?;
        let spawned = self.spawner.spawn_holder(spec, &name, control_rx.as_raw_fd(), ready_tx.as_raw_fd());
        drop((control_rx, ready_tx));
        let holder_pid = match spawned {
            Ok(pid) => pid,
            Err(e) => {
                let _ = cgroup.remove();
                return Err(e);
            }
        };
        let holder = pidfd::open(holder_pid).map_err(|e| io::Error::from_raw_os_error(e.errno))?;
        let container = Container {
            name,
            spec: spec.clone(),
            holder_pid,
            holder,
            control: Some(OwnedFd::from(control_tx)),
            cgroup,
            counters: self.counters.clone(),
            memory_limit: None,
        };
        self.counters.created.fetch_add(1, Ordering::Relaxed);
        let mut answer = String::new();
        let _ = ready_rx.read_to_string(&mut answer);
        if answer != "ok" {
            let why = if answer.is_empty() { "the namespace holder died".to_string() } else { answer };
            return Err(io::Error::other(format!("cannot set up container {}: {why}", container.name)));
        }
        tracing::debug!(container = %container.name, us = u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX), "container created");
        Ok(container)
    }

    /// Tears `container` down in the background (its processes die at once:
    /// the holder's control pipe is closed here).
    pub fn retire(&self, mut container: Container) {
        container.control = None;
        if let Err(std::sync::mpsc::SendError(c)) = self.retired.send(container) {
            drop(c);
        }
    }

    pub fn stats(&self) -> PoolStats {
        let created = self.counters.created.load(Ordering::Relaxed);
        let destroyed = self.counters.destroyed.load(Ordering::Relaxed);
        PoolStats {
            warm: self.warm.lock().unwrap().iter().map(|(_, q)| u32::try_from(q.len()).unwrap_or(u32::MAX)).sum(),
            target: u32::try_from(self.target).unwrap_or(u32::MAX),
            created,
            destroyed,
            cgroup_dirs: self.cgroups.live_directories() as u64,
        }
    }

    /// The daemon's cgroup subtrees (see [`Cgroups::subtrees`]).
    pub fn subtrees(&self) -> Vec<std::path::PathBuf> {
        self.cgroups.subtrees()
    }

    /// Removes the cgroup subtrees of daemons that died without removing
    /// their own (see [`Cgroups::sweep_dead_daemons`]); for start-up.
    pub fn sweep_dead_daemons(&self) -> Sweep {
        self.cgroups.sweep_dead_daemons()
    }

    /// Destroys the warm containers and the daemon's cgroup subtree. Containers
    /// handed out must have been dropped first.
    pub fn shutdown(&self) {
        self.stopping.store(true, Ordering::Relaxed);
        self.wake.notify_all();
        let drained: Vec<Container> = self.warm.lock().unwrap().iter_mut().flat_map(|(_, q)| q.drain(..)).collect();
        drop(drained);
        self.cgroups.remove_all();
    }
}
