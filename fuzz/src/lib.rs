//! The fuzz targets' common part: what each target does with an input
//! ([`decoders`], shared with the corpus replay test of mitosis-proto) and a
//! cap on the memory a run may hold.
//!
//! The cap is the check that no decoder allocates without bound: an input is
//! at most a few KiB (libFuzzer's `-max_len`), so a decoder that holds more
//! than [`MEMORY_CAP`] for one trusted a length it read instead of the bytes
//! that came. Past the cap an allocation fails, Rust aborts, and libFuzzer
//! saves the input as a crash.
#![forbid(unsafe_code)]

pub mod decoders;

use cap::Cap;

/// Most bytes of Rust heap one fuzz run may hold. Above what any input of
/// `-max_len` bytes legitimately needs (serde's preallocation stops at
/// 1 MiB per collection, the record layer's buffers are 64 KiB each, a
/// record script sends at most 1 MiB), far below the frame limits
/// (`MAX_IMAGE_FRAME` is 256 MiB).
pub const MEMORY_CAP: usize = 48 << 20;

#[global_allocator]
static ALLOCATOR: Cap<std::alloc::System> = Cap::new(std::alloc::System, usize::MAX);

/// Runs one target on one input under the memory cap.
pub fn run(target: fn(&[u8]), data: &[u8]) {
    ALLOCATOR.set_limit(ALLOCATOR.allocated() + MEMORY_CAP).expect("the cap is above what is held");
    target(data);
}
