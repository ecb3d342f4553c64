//! Daemon-to-daemon protocol (TCP, after the [`crate::auth`] handshake).
//!
//! ```text
//! resuming host                          seed host
//!   |-- GetSeed{id} ----------------------->|
//!   |<--------------------- Seed(image) ----|
//!   |-- ReadPages{id, gen, ranges} -------->|  (one per fault window, pipelined)
//!   |<------ Pages{len} + len raw bytes ----|
//!   |-- RecordWorkingSet{id, gen, ranges} ->|  (when a child ends, if the seed
//!   |<------------------------- Recorded ---|   had no working set yet)
//! ```
//! The `Seed` answer carries the seed's recorded working set: the pages its
//! first child fetched because it touched them, in that order. Later children
//! get them pushed in ahead of their faults.
//! Pages are served by address from the seed's snapshot; `ranges` lists
//! page-aligned `(address, length)` pairs and the answer holds their bytes
//! back to back in the same order.

use serde::{Deserialize, Serialize};

use crate::image::SeedImage;
use crate::instance::{InstanceSpec, WorkerUsage};
use crate::RemoteError;

/// Most bytes one `ReadPages` may ask for.
pub const MAX_READ_BYTES: u64 = 64 << 20;
/// Most ranges one `ReadPages` may list.
pub const MAX_READ_RANGES: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerRequest {
    /// Fetch a seed's image.
    GetSeed { id: String },
    /// Read pages of a seed's snapshot.
    ReadPages { id: String, generation: u64, ranges: Vec<(u64, u64)> },
    /// The pages a child of this generation touched (seed addresses, lengths).
    RecordWorkingSet { id: String, generation: u64, ranges: Vec<(u64, u64)> },
    /// Start a function instance; the connection then carries only its
    /// traffic (see [`crate::instance`]).
    StartInstance(InstanceSpec),
    /// This worker's instances and their memory.
    ListInstances,
    /// Forget seed `id` (a function's seed, when the function goes).
    DropSeed { id: String },
}

/// Most ranges a recorded working set may have.
pub const MAX_WORKING_SET_RANGES: usize = 1 << 16;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerResponse {
    /// The image and the recorded working set (empty if none yet).
    Seed { image: Box<SeedImage>, working_set: Vec<(u64, u64)> },
    Recorded,
    /// Followed by exactly `len` raw bytes (not a frame).
    Pages { len: u64 },
    /// The instance's process runs (pid on the worker), after `start_us`.
    InstanceStarted { pid: i32, container: Option<String>, start_us: u64 },
    Instances(WorkerUsage),
    Dropped,
    Error(RemoteError),
}

impl PeerRequest {
    /// Checks the bounds of a request before any work is done for it.
    pub fn validate(&self) -> Result<(), String> {
        if let PeerRequest::StartInstance(spec) = self {
            spec.validate()?;
        }
        if let PeerRequest::RecordWorkingSet { ranges, .. } = self {
            if ranges.len() > MAX_WORKING_SET_RANGES {
                return Err(format!("working set of {} ranges (limit {MAX_WORKING_SET_RANGES})", ranges.len()));
            }
            if ranges.iter().any(|&(a, l)| a % crate::PAGE_SIZE != 0 || l % crate::PAGE_SIZE != 0 || l == 0) {
                return Err("a working-set range is not page aligned".into());
            }
        }
        if let PeerRequest::ReadPages { ranges, .. } = self {
            if ranges.len() > MAX_READ_RANGES {
                return Err(format!("{} ranges in one read (limit {MAX_READ_RANGES})", ranges.len()));
            }
            let mut total = 0u64;
            for &(addr, len) in ranges {
                if addr % crate::PAGE_SIZE != 0 || len % crate::PAGE_SIZE != 0 || len == 0 {
                    return Err(format!("range {addr:#x}+{len:#x} is not page aligned"));
                }
                total = total.saturating_add(len);
            }
            if total > MAX_READ_BYTES {
                return Err(format!("read of {total} bytes exceeds the limit of {MAX_READ_BYTES}"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_bounds() {
        let ok = PeerRequest::ReadPages { id: "a".into(), generation: 1, ranges: vec![(4096, 8192)] };
        assert!(ok.validate().is_ok());
        let unaligned = PeerRequest::ReadPages { id: "a".into(), generation: 1, ranges: vec![(4095, 4096)] };
        assert!(unaligned.validate().is_err());
        let huge = PeerRequest::ReadPages { id: "a".into(), generation: 1, ranges: vec![(0, 1 << 40)] };
        assert!(huge.validate().is_err());
    }
}
