//! The data that crosses process and host boundaries in mitosis.
//!
//! This crate owns three things and nothing else:
//! - [`image`]: the *seed image* (descriptor) of a prepared process: registers,
//!   FPU state, memory layout, signal state, files. It says what a child must
//!   get, not how to capture or restore it.
//! - [`frame`]: length-prefixed frames over any `Read`/`Write` stream, with a
//!   hard size limit so that garbage can never make a reader allocate without bound.
//! - [`instance`]: function instances that a gateway starts on a worker's
//!   daemon, and the runtime's pipe protocol inside them.
//! - [`peer`] and [`local`]: the two protocols spoken on those frames: daemon to
//!   daemon over TCP (a Noise handshake keyed with the shared cluster key, see
//!   [`auth`], then every byte in authenticated and by default encrypted
//!   records, see [`secure`]), and client to daemon over the host-local Unix socket.
//! - [`memnode`]: a worker's daemon to a memory node (offloaded pages), over
//!   the same handshake and records as [`peer`].
//!
//! It must not make syscalls other than reading and writing the stream it is
//! handed, so everything here is testable and fuzzable without root.
//!
//! # Versioning
//! [`PROTOCOL_VERSION`] is exchanged in the first bytes of every TCP connection
//! (a fixed binary layout that never changes, see [`auth`]) and carried in every
//! local request. Peers accept only their own version and answer anything else
//! with a clear "version mismatch" error naming both versions.

#![forbid(unsafe_code)]

pub mod auth;
pub mod error;
pub mod frame;
pub mod descriptors;
pub mod image;
pub mod instance;
pub mod local;
pub mod memnode;
pub mod peer;
pub mod secure;

pub use error::{error_chain, ErrorKind, ProtoError, RemoteError};

/// Version of both wire protocols and of the seed image encoding.
pub const PROTOCOL_VERSION: u32 = 18;

/// Size of a page on every host mitosis runs on (x86-64).
pub const PAGE_SIZE: u64 = 4096;
