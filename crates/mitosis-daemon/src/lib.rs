//! The per-host daemon, run by `mitosis daemon`.
//!
//! It owns, for its host:
//! - the **seeds** prepared here (image + stopped snapshot process), until they
//!   are dropped or the daemon stops ([`seeds`]); a [`janitor`] process ends
//!   the snapshots if the daemon dies without doing so;
//! - the **peer server**: authenticated TCP for other daemons, which fetch seed
//!   images and read snapshot pages by address ([`peer`]);
//! - the **local server**: the Unix socket clients on this host use to
//!   prepare, resume, drop and list, with a credential check per request ([`local`]);
//! - the **children** resumed here: a small zygote process forks them
//!   ([`spawner`]), by default into a lean container from a warm pool
//!   (`mitosis-container`); the daemon restores them, runs one pager thread
//!   per child ([`resume`]) and keeps track of them ([`children`]);
//! - the **function instances** a gateway starts over a peer connection: a
//!   Python runtime started cold or resumed from a seed, in a container, with
//!   its requests and answers relayed over that connection ([`instance`]).
//!
//! Threads, not async: every connection and every pager is a blocking thread.
//! ptrace requires that one thread does all of a tracee's operations, and
//! page faults are served fastest by a thread that blocks on the userfaultfd.
//! Connections are capped per local uid, per peer address (until it has
//! authenticated) and in total, and must send a whole request or handshake
//! before a deadline ([`limits`]), so these threads stay bounded.
//!
//! It must not contain capture, restore or paging logic itself: those are the
//! `mitosis-capture`, `mitosis-restore` and `mitosis-pager` crates.

#![forbid(unsafe_code)]

pub mod cache;
pub mod memory;
pub mod children;
pub mod instance;
pub mod janitor;
pub mod limits;
pub mod liveness;
pub mod local;
pub mod offload;
pub mod own_seed;
pub mod peer;
pub mod resume;
pub mod seeds;
pub mod spawner;
pub mod swap;
pub mod wirekey;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use mitosis_pager::PagerConfig;
pub use wirekey::WireKey;
use mitosis_sys::signals::SignalSet;
use mitosis_sys::vdso::VdsoInfo;

/// How a daemon is run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address of the peer server.
    pub listen: SocketAddr,
    /// Path of the local Unix socket.
    pub socket: PathBuf,
    /// Cluster key (re-read from its file on SIGHUP) and record protection of peer connections.
    pub key: WireKey,
    /// How children's pagers fetch (window, adaptivity, read-ahead).
    pub pager: mitosis_pager::PagerConfig,
    /// Size limit of this host's page cache (0: no cache).
    pub cache_bytes: u64,
    /// Children of other hosts' seeds map their memory from the page cache
    /// and share every page none of them wrote (`false`: each gets private
    /// copies, `--private-pages`).
    pub share_pages: bool,
    /// How long a page fetch may take before the child is killed.
    pub fetch_timeout: Duration,
    /// Containers of the default kind kept ready.
    pub container_pool: usize,
    /// Connection caps and deadlines of both servers.
    pub limits: limits::Limits,
    /// The seed hosts non-root callers may resume from (`--peers`).
    pub peers: limits::Peers,
    /// How function instances run (`--instance-user`, `--python`).
    pub instances: instance::InstanceConfig,
    /// The memory node children's memory is offloaded to (`--memnode`),
    /// reached with the cluster key.
    pub memnode: Option<String>,
    /// Bytes of a zram swap device this daemon sets up and removes
    /// (`--zram-swap`; see [`swap`]).
    pub zram_swap_bytes: Option<u64>,
}

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create the local socket {path}")]
    Socket {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot inspect this kernel's vDSO: {0}")]
    Vdso(String),
    #[error("cannot start the zygote process")]
    Zygote(#[source] std::io::Error),
    #[error("cannot block the signals the daemon waits for")]
    Signals(#[source] mitosis_sys::SysError),
    #[error("cannot start the janitor process")]
    Janitor(#[source] std::io::Error),
    #[error("cannot set up containers (cgroups)")]
    Containers(#[source] std::io::Error),
    #[error("cannot set up the zram swap device")]
    Swap(#[source] swap::SwapError),
}

/// State shared by every thread of a daemon.
pub struct Daemon {
    pub config: Config,
    pub vdso: VdsoInfo,
    pub seeds: seeds::Seeds,
    pub spawner: Arc<spawner::Spawner>,
    pub pool: Arc<mitosis_container::Pool>,
    pub children: children::Children,
    pub instances: instance::Instances,
    /// Each function's reuse intervals here: when its idle instances turn semi-warm.
    pub reuse: memory::ReuseHistory,
    /// How long its instances' packet barriers took.
    pub barriers: memory::BarrierTimes,
    pub cache: Arc<cache::PageCache>,
    pub janitor: Arc<janitor::Janitor>,
    /// Its zram swap device (`--zram-swap`), removed at shutdown.
    pub swap: std::sync::Mutex<Option<swap::ZramSwap>>,
}

impl Daemon {
    /// Binds both servers and runs until SIGTERM or SIGINT; then kills every
    /// seed snapshot and child of this daemon and removes the socket. SIGHUP
    /// re-reads the cluster key file: new peer connections, both ways, use
    /// the new key; a file that holds no valid key is logged and the old key kept.
    pub fn run(config: Config) -> Result<(), StartError> {
        // Signals are taken synchronously by the main thread; every thread
        // spawned below inherits the blocked mask.
        let set = SignalSet::of(&[libc::SIGTERM, libc::SIGINT, libc::SIGHUP]).map_err(StartError::Signals)?;
        set.block().map_err(StartError::Signals)?;
        let vdso = VdsoInfo::of_self().map_err(StartError::Vdso)?;
        // First, while this process is small and has one thread.
        let spawner = Arc::new(spawner::Spawner::start().map_err(StartError::Zygote)?);
        let janitor = Arc::new(janitor::Janitor::start().map_err(StartError::Janitor)?);
        let pool = mitosis_container::Pool::start(spawner.clone(), config.container_pool).map_err(StartError::Containers)?;
        // Before the sockets open: a daemon killed without its shutdown left
        // its cgroup subtree (and the directories of its containers) behind.
        sweep_dead_daemons(&pool);
        // Should this daemon be killed, its janitor removes them.
        janitor.watch_subtrees(&pool.subtrees());
        let swap = config.zram_swap_bytes.map(swap::ZramSwap::create).transpose().map_err(StartError::Swap)?;
        if let Some(s) = &swap {
            janitor.watch_zram(s.device());
            tracing::info!(device = s.device(), "zram swap on");
        }
        // One descriptor per connection: the caps, not the descriptor limit,
        // must decide who is refused. Raised after the zygote and the janitor
        // started, so that children keep the limit the daemon was given.
        let want = (config.limits.local_total + config.limits.peer_total) as u64 + 4096;
        match mitosis_sys::rlimit::raise_nofile(want) {
            Ok(got) if got < want => tracing::warn!(limit = got, want, "descriptor limit is below the connection caps; connections over it fail"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot raise the descriptor limit"),
        }
        let tcp = std::net::TcpListener::bind(config.listen)
            .map_err(|source| StartError::Listen { addr: config.listen, source })?;
        let unix = local::bind(&config.socket)
            .map_err(|source| StartError::Socket { path: config.socket.clone(), source })?;
        let cache = Arc::new(cache::PageCache::new(config.cache_bytes));
        let daemon = Arc::new(Daemon {
            config,
            vdso,
            seeds: seeds::Seeds::default(),
            spawner,
            pool,
            children: children::Children::default(),
            instances: instance::Instances::default(),
            reuse: memory::ReuseHistory::default(),
            barriers: memory::BarrierTimes::default(),
            cache,
            janitor,
            swap: std::sync::Mutex::new(swap),
        });
        tracing::info!(listen = %daemon.config.listen, socket = %daemon.config.socket.display(), "daemon ready");
        let d = daemon.clone();
        std::thread::Builder::new().name("peer-accept".into()).spawn(move || peer::serve(d, tcp)).expect("thread");
        let d = daemon.clone();
        std::thread::Builder::new().name("local-accept".into()).spawn(move || local::serve(d, unix)).expect("thread");

        let sig = loop {
            let sig = match set.wait() {
                Ok(sig) => sig,
                Err(e) => {
                    tracing::error!(error = %e, "cannot wait for signals; stopping");
                    libc::SIGTERM
                }
            };
            if sig != libc::SIGHUP {
                break sig;
            }
            match daemon.config.key.reload() {
                Ok(()) => tracing::info!("cluster key reloaded: new peer connections use it"),
                Err(e) => tracing::error!(error = %mitosis_proto::error_chain(&e), "cluster key not reloaded: keeping the old key"),
            }
        };
        tracing::info!(signal = sig, "stopping: killing children and dropping seeds");
        daemon.shutdown();
        Ok(())
    }

    fn shutdown(&self) {
        for child in self.children.live() {
            let pid = child.pid;
            // A child's own children are served by this daemon's pagers too.
            for descendant in descendants(pid) {
                tracing::debug!(pid = descendant, "killing a child's descendant");
                // A reused pid is not possible while its parent (our child) is alive.
                let _ = mitosis_sys::process::kill(descendant, libc::SIGKILL);
            }
            tracing::debug!(pid, "killing child");
            let _ = mitosis_sys::pidfd::send_signal(&child.pidfd, libc::SIGKILL);
            if let Some(c) = &child.container {
                // Its namespace goes with its holder.
                let _ = mitosis_sys::pidfd::send_signal(c.holder_pidfd(), libc::SIGKILL);
            }
        }
        self.pool.shutdown();
        self.seeds.clear();
        // After the children, whose swapped pages would come back first.
        drop(self.swap.lock().unwrap_or_else(|e| e.into_inner()).take());
        let _ = std::fs::remove_file(&self.config.socket);
    }
}

/// Removes the cgroup subtrees of dead daemons, logging what it did.
fn sweep_dead_daemons(pool: &mitosis_container::Pool) {
    let sweep = pool.sweep_dead_daemons();
    for pid in &sweep.killed {
        tracing::warn!(pid, "killed a process left in a dead daemon's cgroup");
    }
    for dir in &sweep.removed {
        tracing::info!(dir = %dir.display(), "removed a dead daemon's cgroup directory");
    }
    for (dir, error) in &sweep.failed {
        tracing::warn!(dir = %dir.display(), %error, "cannot remove a dead daemon's cgroup directory");
    }
    if !sweep.removed.is_empty() {
        tracing::info!(directories = sweep.removed.len(), processes_killed = sweep.killed.len(), "swept the cgroups of dead daemons");
    }
}

/// Every process below `pid` in the process tree, children first.
fn descendants(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten();
    for task in tasks {
        let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        for child in children.split_whitespace().filter_map(|c| c.parse().ok()) {
            out.push(child);
            out.extend(descendants(child));
        }
    }
    out
}

/// A fresh random 64-bit value (seed generations, never zero).
pub fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    getrandom::getrandom(&mut b).expect("kernel random source");
    u64::from_ne_bytes(b) | 1
}
