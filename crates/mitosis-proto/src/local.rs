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
    /// is dropped when process `pid` exits.
    Prepare { pid: i32, id: String, reply_slot: Option<ReplySlot>, pinned: bool },
    /// Resume seed `id` from the daemon at `from` as a new child on this host.
    Resume { from: String, id: String },
    /// Resume seed `id` from the daemon at `from` into the calling process,
    /// which is replaced by the child (it must be single-threaded). The daemon
    /// answers `InPlace`; the caller runs that prologue, which writes one byte
    /// on this connection when done and closes it.
    ResumeInPlace { from: String, id: String },
    /// Forget a seed and free its snapshot.
    Drop { id: String },
    /// List this host's seeds.
    List,
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
    /// Descriptors children will not get, with what they were.
    pub closed_fds: Vec<(i32, String)>,
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
}

/// Counters of one child's pager.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PagerStats {
    pub faults: u64,
    pub zero_faults: u64,
    pub pages_fetched: u64,
    pub bytes_fetched: u64,
    pub fetches: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LocalResponse {
    Prepared(SeedInfo),
    /// The child runs; `Exited` follows on the same connection.
    Started { pid: i32, timings: ResumeTimings },
    Exited { end: ChildEnd, stats: PagerStats },
    Dropped { id: String },
    /// What the caller of `ResumeInPlace` must run before the daemon takes it
    /// over (a postcard `mitosis_restore::prologue::Prologue`).
    InPlace { prologue: Vec<u8> },
    Seeds(Vec<SeedInfo>),
    Error(RemoteError),
}
