//! Client-to-daemon protocol on the host-local Unix socket.
//!
//! The daemon checks the caller's credentials (`SO_PEERCRED`) on every
//! request: root may do anything; another user may prepare only its own
//! processes and drop, list or resume only its own seeds. A `Resume` request
//! carries the caller's stdin, stdout and stderr as `SCM_RIGHTS` descriptors
//! in the same message; the connection then stays open until the child exits
//! and the daemon sends `Exited` (closing the connection early kills the child).

use serde::{Deserialize, Serialize};

use crate::RemoteError;

/// Default path of a daemon's local socket.
pub const DEFAULT_SOCKET: &str = "/run/mitosis/mitosis.sock";

/// Every local request travels in an envelope carrying the protocol version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub version: u32,
    pub request: LocalRequest,
}

/// Where a self-prepare's caller waits for the answer: the child's copy of
/// this buffer gets the [`ChildInfo`] (postcard) and the blocked `read` returns its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplySlot {
    pub addr: u64,
    pub len: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LocalRequest {
    /// Prepare process `pid` as seed `id`. With `reply_slot`, the process is
    /// the caller itself, blocked reading this connection. A `pinned` seed
    /// lives until it is dropped (MITOSIS's `fork_prepare_ping`); otherwise it
    /// is dropped when process `pid` exits. With `copy`, the daemon copies
    /// the snapshot's memory into itself and lets the snapshot go, instead
    /// of keeping the copy-on-write snapshot process.
    Prepare { pid: i32, id: String, reply_slot: Option<ReplySlot>, pinned: bool, copy: bool },
    /// Resume seed `id` from the daemon at `from` as a new child on this host.
    Resume { from: String, id: String, options: ResumeOptions },
    /// Resume seed `id` from the daemon at `from` into the calling process,
    /// which is replaced by the child (it must be single-threaded). The daemon
    /// answers `InPlace`; the caller runs that prologue, which writes one byte
    /// on this connection when done and closes it.
    ResumeInPlace { from: String, id: String },
    /// Forget a seed and free its snapshot.
    Drop { id: String },
    /// List this host's seeds.
    List,
    /// List this host's children (with `all`, also recently ended ones) and
    /// the container pool's counters.
    Ps { all: bool },
    /// Kill a running child, by container name or pid.
    Kill { id: String },
    /// Offload a running child's memory (by container name or pid), answered
    /// with `Offloaded`: the pages it changed go to the daemon's memory node,
    /// those it did not are dropped (they come back from the seed), and a
    /// later touch brings each back.
    Offload { id: String },
    /// Bring an offloaded child's memory back ahead of its touches
    /// (prefetch on reuse), answered with `Prefetching` once it has started.
    Prefetch { id: String },
    /// Counters of this daemon: its seeds, page cache and containers.
    Stats,
    /// Start a container of `spec` with a process that only enters it and
    /// exits, and tear it down: the cost of the container layer alone
    /// (benchmarks), answered with `BareContainer`.
    BareContainer { spec: ContainerSpec },
}

/// Resource limits of a container; `None` is unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerLimits {
    pub memory_bytes: Option<u64>,
    /// CPU time per wall time, in thousandths of a CPU.
    pub cpu_millis: Option<u32>,
    pub pids: Option<u32>,
}

/// The lean container a child runs in.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSpec {
    pub limits: ContainerLimits,
    /// Root directory (made read-only); `None`: the host's root, read-only.
    pub rootfs: Option<String>,
    /// An own network namespace with only loopback.
    pub network: bool,
    /// Hostname inside; default: the container's name.
    pub hostname: Option<String>,
}

/// How a child is run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumeOptions {
    /// `None` runs the child without a container, as a plain process.
    pub container: Option<ContainerSpec>,
    /// The daemon answers `Started` and keeps the child running after the
    /// resumer disconnects (its stdio should be a log file, not a terminal).
    pub detach: bool,
    pub paging: Paging,
}

/// How a child's memory comes in. The default: lazily by fault windows that
/// grow while the child streams through memory, with read-ahead; the seed's recorded working
/// set pushed in ahead of faults; pages found in this host's page cache not
/// fetched again.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Paging {
    /// Stream the whole snapshot in while the child runs.
    pub eager: bool,
    /// One page per fault, no read-ahead, no push (for measurements).
    pub no_prefetch: bool,
    /// Neither push a recorded working set nor record one.
    pub no_working_set: bool,
    /// Neither read from nor fill this host's page cache.
    pub no_cache: bool,
    /// Pages go in write-protected (`UFFD_FEATURE_WP_ASYNC`), so that an
    /// offload drops the ones the child did not write without sending
    /// them: they come back from the seed. Costs one minor fault on each
    /// page's first write.
    pub track_writes: bool,
}

/// What an offload did, in pages of 4 KiB.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffloadReport {
    pub pid: i32,
    /// Changed pages put on the memory node.
    pub pages_put: u64,
    /// Unchanged pages dropped, whose copy is at the seed host.
    pub pages_clean_at_seed: u64,
    /// Unchanged pages dropped, whose copy is on the memory node already.
    pub pages_clean_at_node: u64,
    /// Pages that were all zero: dropped, they read zero.
    pub pages_zero: u64,
    /// What the memory node holds for this child, after compression.
    pub node_bytes: u64,
    /// The child's resident memory before and after.
    pub rss_before_bytes: u64,
    pub rss_after_bytes: u64,
    /// How long the child was held still, and the whole offload.
    pub frozen_us: u64,
    pub total_us: u64,
}

impl OffloadReport {
    /// Every page the child gave back: put, dropped unchanged, or zero.
    pub fn pages_given(&self) -> u64 {
        self.pages_put + self.pages_clean_at_seed + self.pages_clean_at_node + self.pages_zero
    }
}

/// A child as listed by `mitosis ps`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildStatus {
    /// Pid on this host.
    pub pid: i32,
    pub seed_id: String,
    pub seed_host: String,
    pub container: Option<String>,
    /// Memory charged to its container (or its resident set without one).
    pub memory_bytes: u64,
    /// Its resident pages that it shares with its seed's other children on
    /// this host (mapped from the host's page cache, which holds them once,
    /// and charged there) and those that are its own (anonymous: written,
    /// or private copies). 0 for ended children.
    pub shared_bytes: u64,
    pub private_bytes: u64,
    pub age_ms: u64,
    pub detached: bool,
    pub uid: u32,
    /// How it ended, for children that have.
    pub end: Option<ChildEnd>,
}

/// What a seed of this host has served.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeedStats {
    pub id: String,
    pub generation: u64,
    /// Children started from it (on any host).
    pub children: u64,
    pub pages_served: u64,
    pub bytes_served: u64,
    /// Pages of its recorded working set (0: none recorded yet).
    pub working_set_pages: u64,
}

/// Everything `mitosis stats` shows of a daemon.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonStats {
    pub seeds: Vec<SeedStats>,
    pub cache: CacheStats,
    pub pool: PoolStats,
    pub children_running: u64,
    pub barriers: BarrierStats,
}

/// The packet barriers of this daemon's instances (FaaSMem's phase
/// boundaries): how many, and how long each took (the last 4096), in all
/// and in the instance's pager alone (its page-table scan).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BarrierStats {
    pub count: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    pub pager_p50_us: u64,
    pub pager_p99_us: u64,
}

impl std::fmt::Display for PoolStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "containers: {} warm of {}, {} created, {} destroyed, {} cgroup directories",
            self.warm, self.target, self.created, self.destroyed, self.cgroup_dirs
        )
    }
}

/// This host's page cache.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheStats {
    pub limit_bytes: u64,
    pub bytes: u64,
    /// Seed generations with pages here.
    pub generations: u64,
    /// Pages found (and not found) here by children's fetches.
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
    /// Bytes held per seed id (of any host and generation).
    pub seeds: Vec<(String, u64)>,
}

/// Counters of the daemon's container pool (leak checks compare them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolStats {
    /// Warm containers, of every kind.
    pub warm: u32,
    /// Warm containers kept per kind in use.
    pub target: u32,
    pub created: u64,
    pub destroyed: u64,
    /// Container cgroup directories that exist now (the most in any one
    /// controller's hierarchy: each container has one in each).
    pub cgroup_dirs: u64,
}

/// A seed as listed by `mitosis ls`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeedInfo {
    pub id: String,
    pub generation: u64,
    pub source_pid: i32,
    pub snapshot_pid: i32,
    pub uid: u32,
    pub mapped_bytes: u64,
    pub rss_bytes: u64,
    pub vmas: u32,
    pub age_ms: u64,
    pub prepare_us: u64,
    /// Lives until dropped; otherwise it goes when its source process exits.
    pub pinned: bool,
    /// Bytes of memory copied into the daemon (prepared with `copy`; there
    /// is no snapshot process then, and `snapshot_pid` is 0).
    pub copied_bytes: Option<u64>,
    /// Descriptors children will not get, with what they were.
    pub closed_fds: Vec<(i32, String)>,
    /// Threads of the seed (each is recreated in every child).
    pub threads: u32,
}

/// First bytes of what a self-prepared child's `read` returns, followed by a
/// postcard [`ChildInfo`]. A frame never starts this way (its length would be
/// far over any limit), so parent and child tell themselves apart by it.
pub const CHILD_MARKER: &[u8; 8] = b"MTSCHILD";

/// What a resumed child learns about itself from `fork_prepare`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildInfo {
    pub seed_id: String,
    pub seed_host: String,
    pub generation: u64,
    pub pid: i32,
}

/// Steps of a resume, in microseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumeTimings {
    pub fetch_image_us: u64,
    pub spawn_us: u64,
    pub restore_us: u64,
    pub total_us: u64,
    pub image_bytes: u64,
}

/// How a child ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChildEnd {
    Exited(i32),
    Signaled(i32),
    /// Killed by mitosis because it could not be given a correct page.
    KilledByMitosis { reason: String },
    /// Killed by the kernel's OOM killer at its container's memory limit.
    OutOfMemory { limit_bytes: Option<u64> },
}

impl ChildEnd {
    /// The exit status `mitosis resume` passes on: the child's own code,
    /// 128+N for signal N (137 for the OOM killer's SIGKILL), and 69
    /// (`SeedGone`) when mitosis had to kill it.
    pub fn exit_status(&self) -> i32 {
        match self {
            ChildEnd::Exited(c) => *c,
            // A signal number off the wire is not trusted to exist: any
            // gives a status in 128..=255 (an i32::MAX overflowed here).
            ChildEnd::Signaled(s) => 128 + (*s).clamp(0, 127),
            ChildEnd::KilledByMitosis { .. } => crate::ErrorKind::SeedGone.exit_code(),
            ChildEnd::OutOfMemory { .. } => 128 + 9,
        }
    }
}

impl std::fmt::Display for ChildEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChildEnd::Exited(0) => write!(f, "exited normally (status 0)"),
            ChildEnd::Exited(c) => write!(f, "exited with status {c}"),
            ChildEnd::Signaled(s) => write!(f, "was killed by signal {s}"),
            ChildEnd::KilledByMitosis { reason } => write!(f, "was killed by mitosis: {reason}"),
            ChildEnd::OutOfMemory { limit_bytes: Some(l) } => {
                write!(f, "was killed by the OOM killer at its memory limit of {:.1} MiB", *l as f64 / 1048576.0)
            }
            ChildEnd::OutOfMemory { limit_bytes: None } => write!(f, "was killed by the OOM killer"),
        }
    }
}

/// Counters of one child's pager.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PagerStats {
    /// Missing-page faults of the child (and its forks).
    pub faults: u64,
    /// Of those, on memory the seed did not have (served a zero page).
    pub zero_faults: u64,
    /// Of those, on a seed page not yet there: the child waited for the network
    /// (or for the host's page cache).
    pub remote_faults: u64,
    /// Pages that came in (by fault windows, read-ahead and pushes).
    pub pages_fetched: u64,
    pub bytes_fetched: u64,
    /// Requests made for them.
    pub fetches: u64,
    /// Of `pages_fetched`, pushed ahead of any fault (recorded working set or eager resume).
    pub pages_pushed: u64,
    /// Of `pages_fetched`, found in this host's page cache (no network).
    pub cache_hits: u64,
    /// Offloaded pages brought back from the memory node (not in `pages_fetched`).
    pub pages_from_node: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LocalResponse {
    Prepared(SeedInfo),
    /// The child runs; `Exited` follows on the same connection unless it
    /// was detached.
    Started { pid: i32, timings: ResumeTimings, container: Option<String> },
    Exited { end: ChildEnd, stats: PagerStats },
    Dropped { id: String },
    /// What the caller of `ResumeInPlace` must run before the daemon takes it
    /// over (a postcard `mitosis_prologue::Prologue`).
    InPlace { prologue: Vec<u8> },
    Seeds(Vec<SeedInfo>),
    Children { children: Vec<ChildStatus>, pool: PoolStats },
    Killed { pid: i32 },
    Offloaded(OffloadReport),
    /// A prefetch started: bytes to come from the memory node and the seed.
    Prefetching { pid: i32, from_node_bytes: u64, from_seed_bytes: u64 },
    Stats(DaemonStats),
    /// Microseconds: getting the container (warm or new), starting the
    /// process in it (fork, setns, cgroups), and everything up to the
    /// container's teardown.
    BareContainer { take_us: u64, start_us: u64, total_us: u64 },
    Error(RemoteError),
}
