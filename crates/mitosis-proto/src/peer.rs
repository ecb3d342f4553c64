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
//!
//! Two requests exist for measuring and stressing the protocol itself
//! (`mitosis bench rpc`, `mitosis stress rpc`), and touch no seed:
//! ```text
//!   |-- Ping ------------------------------>|  (the empty request)
//!   |<----------------------------- Pong ---|
//!   |-- Checksummed{seq} ------------------>|
//!   |<-- Checksummed{seq, payload, checksum}|  (CHECKSUMMED_PAYLOAD random bytes,
//!                                              checksum = BLAKE3(seq LE || payload))
//! ```
//! The server draws a fresh random payload for every `Checksummed`; the
//! client recomputes the checksum with [`check_checksummed`]. Either may be
//! pipelined: answers come in the order of the requests.

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
    /// The empty request; answered with `Pong`.
    Ping,
    /// A random payload and its checksum, tagged with `seq`.
    Checksummed { seq: u64 },
}

/// Bytes of random payload in a `Checksummed` answer (MITOSIS's default).
pub const CHECKSUMMED_PAYLOAD: usize = 2048;

/// Most ranges a recorded working set may have.
pub const MAX_WORKING_SET_RANGES: usize = 1 << 16;

/// A range of a recorded working set: `(start, len)`, page aligned, with
/// bit 0 of `start` set where the recording child *wrote* (its fault there
/// was a write): a later child gets such pages as its own copies at once,
/// the others shared through its host's page cache.
pub fn working_set_range(start: u64, len: u64, written: bool) -> (u64, u64) {
    (start | u64::from(written), len)
}

/// The start, length and written flag of a working-set range.
pub fn working_set_parts(range: (u64, u64)) -> (u64, u64, bool) {
    (range.0 & !1, range.1, range.0 & 1 != 0)
}

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
    /// The answer to `Ping`.
    Pong,
    /// The answer to `Checksummed { seq }`: `checksum` is [`checksum`] of `seq` and `payload`.
    Checksummed { seq: u64, payload: Vec<u8>, checksum: [u8; 32] },
}

/// BLAKE3 of `seq` (little endian) followed by `payload`.
pub fn checksum(seq: u64, payload: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(&seq.to_le_bytes());
    h.update(payload);
    *h.finalize().as_bytes()
}

impl PeerResponse {
    /// The `Checksummed` answer for `seq` carrying `payload`.
    pub fn checksummed(seq: u64, payload: Vec<u8>) -> PeerResponse {
        let checksum = checksum(seq, &payload);
        PeerResponse::Checksummed { seq, payload, checksum }
    }
}

/// Why a `Checksummed` answer is not the one asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChecksumMismatch {
    #[error("answer for request {got}, expected {want}")]
    WrongSeq { want: u64, got: u64 },
    #[error("payload of {got} bytes, expected {CHECKSUMMED_PAYLOAD}")]
    WrongLength { got: usize },
    #[error("checksum does not match the payload of request {seq}")]
    BadChecksum { seq: u64 },
    #[error("not a Checksummed answer")]
    NotChecksummed,
}

/// Checks that `resp` answers `Checksummed { seq: want }`: same seq, a
/// payload of [`CHECKSUMMED_PAYLOAD`] bytes, and a checksum that matches it.
pub fn check_checksummed(want: u64, resp: &PeerResponse) -> Result<(), ChecksumMismatch> {
    let PeerResponse::Checksummed { seq, payload, checksum: sum } = resp else {
        return Err(ChecksumMismatch::NotChecksummed);
    };
    if *seq != want {
        return Err(ChecksumMismatch::WrongSeq { want, got: *seq });
    }
    if payload.len() != CHECKSUMMED_PAYLOAD {
        return Err(ChecksumMismatch::WrongLength { got: payload.len() });
    }
    if checksum(*seq, payload) != *sum {
        return Err(ChecksumMismatch::BadChecksum { seq: *seq });
    }
    Ok(())
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
            let aligned = |r: &(u64, u64)| {
                let (a, l, _) = working_set_parts(*r);
                a % crate::PAGE_SIZE == 0 && l % crate::PAGE_SIZE == 0 && l != 0
            };
            if !ranges.iter().all(aligned) {
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
        let written = PeerRequest::RecordWorkingSet { id: "a".into(), generation: 1, ranges: vec![working_set_range(4096, 4096, true)] };
        assert!(written.validate().is_ok(), "bit 0 of a working-set start is its written flag");
        let unaligned = PeerRequest::RecordWorkingSet { id: "a".into(), generation: 1, ranges: vec![(4098, 4096)] };
        assert!(unaligned.validate().is_err());
        let unaligned = PeerRequest::ReadPages { id: "a".into(), generation: 1, ranges: vec![(4095, 4096)] };
        assert!(unaligned.validate().is_err());
        let huge = PeerRequest::ReadPages { id: "a".into(), generation: 1, ranges: vec![(0, 1 << 40)] };
        assert!(huge.validate().is_err());
    }

    #[test]
    fn checksummed_answers_are_checked() {
        let payload: Vec<u8> = (0..CHECKSUMMED_PAYLOAD).map(|i| (i * 7) as u8).collect();
        let good = PeerResponse::checksummed(42, payload);
        assert_eq!(check_checksummed(42, &good), Ok(()));
        assert_eq!(check_checksummed(43, &good), Err(ChecksumMismatch::WrongSeq { want: 43, got: 42 }));
        // Through the wire encoding and back, then one bit of the payload flipped.
        let mut wire: PeerResponse = postcard::from_bytes(&postcard::to_stdvec(&good).unwrap()).unwrap();
        assert_eq!(check_checksummed(42, &wire), Ok(()));
        if let PeerResponse::Checksummed { payload, .. } = &mut wire {
            payload[1000] ^= 0x10;
        }
        assert_eq!(check_checksummed(42, &wire), Err(ChecksumMismatch::BadChecksum { seq: 42 }));
        let short = PeerResponse::checksummed(1, vec![0; 16]);
        assert_eq!(check_checksummed(1, &short), Err(ChecksumMismatch::WrongLength { got: 16 }));
        assert_eq!(check_checksummed(1, &PeerResponse::Pong), Err(ChecksumMismatch::NotChecksummed));
    }
}
