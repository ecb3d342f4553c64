//! The memory node: where a worker's daemon offloads the pages of idle
//! instances (FaaSMem's remote memory, over TCP instead of RDMA swap), and
//! the client that puts them there and gets them back.
//!
//! This crate owns:
//! - [`store`]: the pages held, per instance (an id the worker's daemon
//!   chooses) and page address, each optionally compressed by [`codec`]
//!   (lz4 or zstd, one page at a time) and kept with the digest its client
//!   made; the capacity rule (a put that would go past it is refused whole:
//!   nothing half-stored, nothing stored before lost); the counters;
//! - [`server`]: `mitosis memnode`'s TCP server, peers authenticated exactly
//!   as daemons authenticate each other (the Noise handshake and records of
//!   `mitosis_proto::auth` and `secure`), a thread per connection, within a
//!   cap on connections and a handshake deadline;
//! - [`client`]: connect and authenticate, put runs, get runs (every page
//!   checked against its digest: a page never put is an error, never zeros,
//!   and a wrong page is an error, never handed out), drop an instance, stats.
//!
//! Its wire types are `mitosis_proto::memnode`. It must not touch processes,
//! userfaultfd or the daemon's state: deciding what to offload, dropping
//! pages locally and faulting them back in belong to the daemon and its
//! pager, which use [`client`].

#![forbid(unsafe_code)]

pub mod client;
pub mod codec;
mod deadline;
pub mod server;
pub mod store;

pub use client::MemnodeClient;
pub use server::{serve, ServerConfig};
pub use store::Store;

use mitosis_proto::{ErrorKind, ProtoError, RemoteError};

/// Why the store did not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("memory node full: the put needs {needed} more bytes, {used} of {capacity} are in use; nothing of it was stored")]
    Full { needed: u64, used: u64, capacity: u64 },
    #[error("{}", missing_message(instance, *addr, *instance_known))]
    Missing { instance: String, addr: u64, instance_known: bool },
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("page codec failed: {0}")]
    Codec(String),
}

fn missing_message(instance: &str, addr: u64, instance_known: bool) -> String {
    if instance_known {
        format!("page {addr:#x} of instance {instance:?} was never put on this memory node")
    } else {
        format!("instance {instance:?} has no pages on this memory node")
    }
}

impl StoreError {
    /// The error as told to a client (`Full` has an answer of its own).
    pub fn to_remote(&self) -> RemoteError {
        let kind = match self {
            StoreError::Full { .. } => ErrorKind::Busy,
            StoreError::Missing { .. } => ErrorKind::NotFound,
            StoreError::BadRequest(_) => ErrorKind::BadRequest,
            StoreError::Codec(_) => ErrorKind::Internal,
        };
        RemoteError::new(kind, self.to_string())
    }
}

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum MemnodeError {
    #[error("cannot reach memory node {addr}")]
    Connect {
        addr: String,
        #[source]
        source: ProtoError,
    },
    #[error("{addr} is not a memory node (it did not answer the memory node's hello)")]
    NotAMemnode { addr: String },
    #[error("memory node connection failed")]
    Proto(#[from] ProtoError),
    #[error("memory node full: the put needs {needed} more bytes, {used} of {capacity} are in use; nothing of it was stored")]
    Full { needed: u64, used: u64, capacity: u64 },
    #[error("memory node: {0}")]
    Remote(RemoteError),
    /// A page whose digest does not match: another instance's or address's, or mangled.
    #[error("memory node returned a wrong page {addr:#x} for instance {instance:?} (digest mismatch); it was not used")]
    WrongPage { instance: String, addr: u64 },
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("this memory node connection failed earlier and is closed")]
    Broken,
}

impl MemnodeError {
    /// The error kind, for exit statuses (`ErrorKind::exit_code`).
    pub fn kind(&self) -> ErrorKind {
        match self {
            MemnodeError::Connect { source, .. } => match source.kind() {
                ErrorKind::SeedGone => ErrorKind::SeedGone,
                k => k,
            },
            MemnodeError::Proto(e) => e.kind(),
            MemnodeError::NotAMemnode { .. } => ErrorKind::VersionMismatch,
            MemnodeError::Full { .. } => ErrorKind::Busy,
            MemnodeError::Remote(r) => r.kind,
            MemnodeError::WrongPage { .. } | MemnodeError::Broken => ErrorKind::Internal,
            MemnodeError::BadRequest(_) => ErrorKind::BadRequest,
        }
    }

    /// Whether the connection is still usable after this error (the node
    /// answered it; nothing was left half-read).
    pub fn connection_usable(&self) -> bool {
        matches!(self, MemnodeError::Full { .. } | MemnodeError::Remote(_) | MemnodeError::BadRequest(_))
    }
}
