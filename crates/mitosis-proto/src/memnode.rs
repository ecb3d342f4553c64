//! The memory node's protocol (TCP, after the same [`crate::auth`] handshake
//! as daemon-to-daemon connections, every byte in [`crate::secure`] records).
//!
//! A memory node keeps pages that a worker's daemon offloaded from its
//! instances, by instance (an id the daemon chooses, unique in the cluster)
//! and page address:
//! ```text
//! client (a worker's daemon)                memory node
//!   |-- Hello{magic} ---------------------->|  (first, once: "this is a memory node")
//!   |<----- Hello{capacity, compression} ---|
//!   |-- Put{instance, runs, digests} ------>|  followed by the runs' bytes back to back
//!   |<- Stored{..} | Full{..} | Error ------|  (a refused put stores nothing)
//!   |-- Get{instance, runs} --------------->|
//!   |<- Pages{len, digests} + len bytes ----|  or Error (NotFound: never put, never zeros)
//!   |-- DropInstance{instance} ------------>|
//!   |<------------------ Dropped{..} -------|
//!   |-- Stats ----------------------------->|
//!   |<----------------------- Stats(..) ----|
//! ```
//! `runs` are page-aligned `(address, length)` pairs. Every page carries a
//! [`page_digest`] made by the client that put it (over the instance, the
//! address and the bytes); the node keeps it and returns it with the page, so
//! the client that gets the page checks it end to end: a page of another
//! instance or address, or one the node mangled, is an error, never a wrong
//! page.
//!
//! The `Hello` exchange keeps a daemon and a memory node from taking each
//! other's requests for their own (their first messages do not decode as
//! each other's). Requests are checked with [`MemnodeRequest::validate`]
//! before any work; an undecodable or oversized frame is answered with an
//! error and the connection closed; other connections are not affected.

use serde::{Deserialize, Serialize};

use crate::{RemoteError, PAGE_SIZE};

/// What a client sends in its `Hello`.
pub const MEMNODE_MAGIC: [u8; 8] = *b"MEMNODE1";
/// Longest instance id.
pub const MAX_INSTANCE_ID: usize = 128;
/// Most runs in one put or get.
pub const MAX_RUNS: usize = 4096;
/// Most bytes in one put or get (16384 pages: their digests fit a control frame).
pub const MAX_BATCH_BYTES: u64 = 64 << 20;
/// Most instances listed one by one in [`MemnodeStats::per_instance`] (the largest).
pub const MAX_STATS_INSTANCES: usize = 1024;
/// Bytes of a page digest.
pub const DIGEST_LEN: usize = 16;

/// A page's digest: see [`page_digest`].
pub type PageDigest = [u8; DIGEST_LEN];

/// How a memory node stores pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Lz4,
    Zstd,
}

impl Compression {
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemnodeRequest {
    /// The first request of a connection; `magic` is [`MEMNODE_MAGIC`].
    Hello { magic: [u8; 8] },
    /// Store pages of `instance` (replacing any stored at the same
    /// addresses), all or none. Followed by exactly the runs' bytes, back to
    /// back in the order of `runs`; `digests` has one entry per page.
    Put { instance: String, runs: Vec<(u64, u64)>, digests: Vec<PageDigest> },
    /// The pages of `runs`, every one of which must have been put.
    Get { instance: String, runs: Vec<(u64, u64)> },
    /// Forget every page of `instance` (none stored is not an error).
    DropInstance { instance: String },
    Stats,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemnodeResponse {
    /// The node's capacity (bytes) and how it stores pages.
    Hello { capacity: u64, compression: Compression },
    /// The put is stored: its pages, and the instance's pages and bytes used now.
    Stored { pages: u64, instance_pages: u64, instance_used_bytes: u64 },
    /// The put would take the node past its capacity and was refused whole:
    /// nothing of it is stored, nothing stored before is lost.
    Full { needed: u64, used: u64, capacity: u64 },
    /// Followed by exactly `len` raw bytes, the runs' pages in order; one digest per page.
    Pages { len: u64, digests: Vec<PageDigest> },
    /// What the dropped instance held.
    Dropped { pages: u64, raw_bytes: u64 },
    Stats(MemnodeStats),
    Error(RemoteError),
}

/// A memory node's counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemnodeStats {
    pub compression: Compression,
    pub capacity_bytes: u64,
    /// What counts against the capacity: stored bytes plus a fixed charge per
    /// page for its index entry and digest.
    pub used_bytes: u64,
    pub pages: u64,
    /// Bytes of the stored pages as put.
    pub raw_bytes: u64,
    /// Bytes they take stored (compressed, or as put when compression did not help).
    pub stored_bytes: u64,
    pub instances: u64,
    /// The instances holding the most bytes (at most [`MAX_STATS_INSTANCES`]).
    pub per_instance: Vec<InstanceUsage>,
    pub puts: u64,
    pub pages_put: u64,
    pub gets: u64,
    pub pages_served: u64,
    /// Gets that asked for a page never put (or dropped).
    pub misses: u64,
    pub drops: u64,
    /// Puts refused because the node was full.
    pub refusals: u64,
    /// Requests refused as malformed (undecodable, oversized, out of bounds).
    pub bad_requests: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceUsage {
    pub instance: String,
    pub pages: u64,
    pub raw_bytes: u64,
    pub stored_bytes: u64,
}

/// The digest of the page at `addr` of `instance` holding `page`: XXH3-128
/// of the page, seeded by XXH3-64 of the id's length and bytes and the
/// address, so that a page of another instance or address never matches.
///
/// Why not a cryptographic hash: the digest travels to the node with the
/// page, so it can only catch accidents (a node's bug, a mixed-up or stale
/// page), never a lying node, which could digest its own bytes; what the
/// wire does to a page is caught by its authenticated record. XXH3 does
/// that job about 3 times faster than BLAKE3 on these 4 KiB pages, and the
/// digest is the largest cost of bringing a page back after the record's
/// decryption (`bench memnode` prints both).
pub fn page_digest(instance: &str, addr: u64, page: &[u8]) -> PageDigest {
    let mut place = Vec::with_capacity(16 + instance.len());
    place.extend_from_slice(&(instance.len() as u64).to_le_bytes());
    place.extend_from_slice(instance.as_bytes());
    place.extend_from_slice(&addr.to_le_bytes());
    let seed = xxhash_rust::xxh3::xxh3_64(&place);
    xxhash_rust::xxh3::xxh3_128_with_seed(page, seed).to_le_bytes()
}

/// Checks an instance id: 1 to [`MAX_INSTANCE_ID`] bytes, no control characters.
pub fn validate_instance(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > MAX_INSTANCE_ID {
        return Err(format!("instance id of {} bytes (1 to {MAX_INSTANCE_ID})", id.len()));
    }
    if id.chars().any(char::is_control) {
        return Err("instance id holds control characters".into());
    }
    Ok(())
}

/// Checks a batch of runs: at most [`MAX_RUNS`], page aligned, not empty, not
/// wrapping, not overlapping, at most [`MAX_BATCH_BYTES`] in all. Returns
/// the total bytes.
pub fn validate_runs(runs: &[(u64, u64)]) -> Result<u64, String> {
    if runs.is_empty() {
        return Err("no runs".into());
    }
    if runs.len() > MAX_RUNS {
        return Err(format!("{} runs in one request (limit {MAX_RUNS})", runs.len()));
    }
    let mut total = 0u64;
    for &(addr, len) in runs {
        if addr % PAGE_SIZE != 0 || len % PAGE_SIZE != 0 || len == 0 {
            return Err(format!("run {addr:#x}+{len:#x} is not page aligned"));
        }
        if addr.checked_add(len).is_none() {
            return Err(format!("run {addr:#x}+{len:#x} wraps around"));
        }
        total = total.saturating_add(len);
    }
    if total > MAX_BATCH_BYTES {
        return Err(format!("{total} bytes in one request (limit {MAX_BATCH_BYTES})"));
    }
    let mut sorted = runs.to_vec();
    sorted.sort_unstable();
    if let Some(w) = sorted.windows(2).find(|w| w[0].0 + w[0].1 > w[1].0) {
        return Err(format!("runs {:#x}+{:#x} and {:#x}+{:#x} overlap", w[0].0, w[0].1, w[1].0, w[1].1));
    }
    Ok(total)
}

impl MemnodeRequest {
    /// Checks the bounds of a request before any work is done for it.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            MemnodeRequest::Hello { magic } if *magic != MEMNODE_MAGIC => Err("not a memory node client (bad hello)".into()),
            MemnodeRequest::Hello { .. } | MemnodeRequest::Stats => Ok(()),
            MemnodeRequest::Put { instance, runs, digests } => {
                validate_instance(instance)?;
                let total = validate_runs(runs)?;
                let pages = total / PAGE_SIZE;
                if digests.len() as u64 != pages {
                    return Err(format!("{} digests for {pages} pages", digests.len()));
                }
                Ok(())
            }
            MemnodeRequest::Get { instance, runs } => {
                validate_instance(instance)?;
                validate_runs(runs).map(|_| ())
            }
            MemnodeRequest::DropInstance { instance } => validate_instance(instance),
        }
    }

    /// Bytes that follow this request on the wire (a put's pages).
    pub fn payload_len(&self) -> u64 {
        match self {
            MemnodeRequest::Put { runs, .. } => runs.iter().map(|r| r.1).sum(),
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::MAX_CONTROL_FRAME;

    fn put(runs: Vec<(u64, u64)>) -> MemnodeRequest {
        let pages: u64 = runs.iter().map(|r| r.1 / PAGE_SIZE).sum();
        MemnodeRequest::Put { instance: "w1/i7".into(), runs, digests: vec![[0; DIGEST_LEN]; pages as usize] }
    }

    #[test]
    fn bounds_are_checked() {
        assert!(put(vec![(0x1000, 0x2000), (0x8000, 0x1000)]).validate().is_ok());
        assert!(put(vec![(0x1001, 0x1000)]).validate().is_err(), "unaligned");
        assert!(put(vec![(0x1000, 0)]).validate().is_err(), "empty run");
        assert!(put(vec![(0x1000, 0x2000), (0x2000, 0x1000)]).validate().is_err(), "overlap");
        assert!(put(vec![(u64::MAX - 0xfff, 0x2000)]).validate().is_err(), "wraps");
        assert!(put(vec![]).validate().is_err(), "no runs");
        let huge = MemnodeRequest::Get { instance: "x".into(), runs: vec![(0, MAX_BATCH_BYTES + PAGE_SIZE)] };
        assert!(huge.validate().is_err());
        let mut wrong_digests = put(vec![(0, 0x2000)]);
        if let MemnodeRequest::Put { digests, .. } = &mut wrong_digests {
            digests.pop();
        }
        assert!(wrong_digests.validate().is_err());
        assert!(MemnodeRequest::DropInstance { instance: String::new() }.validate().is_err());
        assert!(MemnodeRequest::DropInstance { instance: "a\nb".into() }.validate().is_err());
        assert!(MemnodeRequest::DropInstance { instance: "x".repeat(MAX_INSTANCE_ID + 1) }.validate().is_err());
        assert!(MemnodeRequest::Hello { magic: *b"MITOSIS1" }.validate().is_err());
        assert!(MemnodeRequest::Hello { magic: MEMNODE_MAGIC }.validate().is_ok());
    }

    /// The largest get's answer header (a digest per page) fits a control frame.
    #[test]
    fn largest_answer_fits_a_control_frame() {
        let pages = (MAX_BATCH_BYTES / PAGE_SIZE) as usize;
        let resp = MemnodeResponse::Pages { len: MAX_BATCH_BYTES, digests: vec![[0xff; DIGEST_LEN]; pages] };
        assert!((postcard::to_stdvec(&resp).unwrap().len() as u64) < MAX_CONTROL_FRAME);
        let req = MemnodeRequest::Put {
            instance: "x".repeat(MAX_INSTANCE_ID),
            runs: (0..MAX_RUNS as u64).map(|i| (i << 24, PAGE_SIZE)).collect(),
            digests: vec![[0xff; DIGEST_LEN]; pages],
        };
        assert!((postcard::to_stdvec(&req).unwrap().len() as u64) < MAX_CONTROL_FRAME);
    }

    #[test]
    fn digests_bind_instance_address_and_bytes() {
        let page = vec![7u8; PAGE_SIZE as usize];
        let d = page_digest("a", 0x1000, &page);
        assert_eq!(d, page_digest("a", 0x1000, &page));
        assert_ne!(d, page_digest("b", 0x1000, &page));
        assert_ne!(d, page_digest("a", 0x2000, &page));
        let mut other = page.clone();
        other[4095] ^= 1;
        assert_ne!(d, page_digest("a", 0x1000, &other));
        // The id's length is part of it: ("ab", addr) and ("a", ...) cannot be confused.
        assert_ne!(page_digest("ab", 0, &page), page_digest("a", 0, &page));
    }

    /// A daemon's first request does not decode as a memory node's and the
    /// other way round, so the two cannot take each other's requests.
    #[test]
    fn peer_and_memnode_requests_do_not_mix() {
        use crate::peer::PeerRequest;
        for peer in [PeerRequest::GetSeed { id: "s".into() }, PeerRequest::Ping, PeerRequest::ListInstances] {
            let bytes = postcard::to_stdvec(&peer).unwrap();
            let as_memnode: Result<MemnodeRequest, _> = postcard::from_bytes(&bytes);
            let is_hello = matches!(as_memnode, Ok(MemnodeRequest::Hello { magic }) if magic == MEMNODE_MAGIC);
            assert!(!is_hello, "{peer:?}");
        }
        let hello = postcard::to_stdvec(&MemnodeRequest::Hello { magic: MEMNODE_MAGIC }).unwrap();
        let as_peer: Result<PeerRequest, _> = postcard::from_bytes(&hello);
        assert!(as_peer.is_err(), "{as_peer:?}");
    }
}
