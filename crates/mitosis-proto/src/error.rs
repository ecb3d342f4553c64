//! Errors of the wire layer and the error values that travel on the wire.

use serde::{Deserialize, Serialize};

/// Why a request failed, as told to the other side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    /// No seed with that id on the host asked.
    NotFound,
    /// The peer could not prove it holds the cluster key.
    AuthFailed,
    /// The peer speaks another protocol version.
    VersionMismatch,
    /// The request could not be decoded or is out of bounds.
    BadRequest,
    /// The caller may not do this (local socket credential check).
    PermissionDenied,
    /// The process uses something mitosis cannot capture or restore.
    Unsupported,
    /// The seed was dropped or prepared again: its pages are gone.
    SeedGone,
    /// The host could not do what was asked (I/O, syscall failure).
    Internal,
    /// The daemon holds as many connections as it takes (from this user or
    /// address, or in total); try again later.
    Busy,
}

impl ErrorKind {
    /// Exit status that `mitosis` uses for a failure of this kind (sysexits.h).
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorKind::NotFound => 66,         // EX_NOINPUT
            ErrorKind::AuthFailed => 77,       // EX_NOPERM
            ErrorKind::PermissionDenied => 77, // EX_NOPERM
            ErrorKind::VersionMismatch => 76,  // EX_PROTOCOL
            ErrorKind::BadRequest => 64,       // EX_USAGE
            ErrorKind::Unsupported => 65,      // EX_DATAERR
            ErrorKind::SeedGone => 69,         // EX_UNAVAILABLE
            ErrorKind::Internal => 70,         // EX_SOFTWARE
            ErrorKind::Busy => 75,             // EX_TEMPFAIL
        }
    }
}

/// An error reported by the other side of a connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct RemoteError {
    pub kind: ErrorKind,
    pub message: String,
}

impl RemoteError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        RemoteError { kind, message: message.into() }
    }
}

/// Failure to speak a protocol.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    #[error("connection i/o failed")]
    Io(#[source] std::io::Error),
    #[error("peer closed the connection")]
    Closed,
    #[error("frame of {len} bytes exceeds the limit of {limit} bytes")]
    FrameTooLarge { len: u64, limit: u64 },
    #[error("undecodable message ({what})")]
    Decode { what: &'static str },
    #[error("protocol version mismatch: we speak {ours}, peer speaks {theirs}")]
    VersionMismatch { ours: u32, theirs: u32 },
    /// A seed image that decoded but fails [`SeedImage::validate`](crate::image::SeedImage::validate).
    #[error("invalid seed image: {0}")]
    InvalidImage(String),
    #[error("peer is not a mitosis daemon (bad magic)")]
    BadMagic,
    #[error("authentication failed: {0}")]
    AuthFailed(&'static str),
    #[error("peer answered with an unexpected message")]
    Unexpected,
    /// A record after the handshake failed its check: changed, replayed,
    /// reordered or dropped on the way. The connection is over.
    #[error("a wire record failed authentication (tampered, replayed or reordered): connection ended")]
    Tampered,
    #[error("wire protection mismatch: we use {ours}, peer uses {theirs} (start both daemons with the same --no-encrypt setting)")]
    ProtectionMismatch { ours: crate::secure::Protection, theirs: crate::secure::Protection },
    #[error("the peer holds as many connections as it takes; try again later")]
    Busy,
    #[error(transparent)]
    Remote(#[from] RemoteError),
}

impl ProtoError {
    /// The error kind to report to a user or the other side.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ProtoError::VersionMismatch { .. } | ProtoError::ProtectionMismatch { .. } => ErrorKind::VersionMismatch,
            ProtoError::AuthFailed(_) => ErrorKind::AuthFailed,
            ProtoError::Remote(r) => r.kind,
            ProtoError::Busy => ErrorKind::Busy,
            ProtoError::FrameTooLarge { .. }
            | ProtoError::Decode { .. }
            | ProtoError::InvalidImage(_)
            | ProtoError::BadMagic => {
                ErrorKind::BadRequest
            }
            _ => ErrorKind::SeedGone,
        }
    }
}
impl From<std::io::Error> for ProtoError {
    /// I/O errors, except a record layer's refusal, which becomes [`ProtoError::Tampered`]
    /// (it travels as an `io::Error` through `Read` and `read_exact`).
    fn from(e: std::io::Error) -> Self {
        if e.get_ref().is_some_and(|inner| inner.is::<crate::secure::RecordRejected>()) {
            ProtoError::Tampered
        } else {
            ProtoError::Io(e)
        }
    }
}

/// `e` and its causes, joined by ": " (a cause whose text the message has
/// already is left out): the one-line form of an error for users.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let c = cause.to_string();
        if !s.contains(&c) {
            s.push_str(": ");
            s.push_str(&c);
        }
        source = cause.source();
    }
    s
}

