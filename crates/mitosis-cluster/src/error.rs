//! The crate's one error type.

use std::time::Duration;

/// What went wrong talking to etcd or with what was asked of it.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("no etcd endpoints given")]
    NoEndpoints,
    #[error("no etcd endpoint of {endpoints} answered within {timeout:?} (last error: {last})")]
    Unreachable { endpoints: String, timeout: Duration, last: String },
    #[error("etcd {op}: {source}")]
    Etcd {
        op: &'static str,
        #[source]
        source: etcd_client::Error,
    },
    #[error("etcd {op}: no answer within {timeout:?}")]
    Timeout { op: &'static str, timeout: Duration },
    #[error("worker {addr} has no live record in etcd (not registered, or its lease expired)")]
    NoLiveWorker { addr: String },
    #[error("invalid {what} {name:?}: it must be non-empty and contain no '/'")]
    InvalidName { what: &'static str, name: String },
    #[error("TTL {0:?} is too short: etcd leases last whole seconds, at least 1")]
    InvalidTtl(Duration),
    #[error("malformed record at {key}: {source}")]
    Malformed {
        key: String,
        #[source]
        source: serde_json::Error,
    },
}

impl ClusterError {
    /// Whether trying again (another endpoint, a moment later) may succeed:
    /// transport failures, a member without a leader, an overloaded or
    /// restarting member. Not: refusals about the request itself.
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            ClusterError::Etcd { source, .. } => is_transient(source),
            ClusterError::Timeout { .. } | ClusterError::Unreachable { .. } => true,
            _ => false,
        }
    }
}

pub(crate) fn is_transient(e: &etcd_client::Error) -> bool {
    use tonic::Code;
    match e {
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        etcd_client::Error::GRpcStatus(s) => {
            matches!(s.code(), Code::Unavailable | Code::DeadlineExceeded | Code::Aborted | Code::Unknown | Code::Internal | Code::Cancelled)
        }
        _ => false,
    }
}

/// Whether `e` says the lease is gone (expired or revoked).
pub(crate) fn is_lease_not_found(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::LeaseKeepAliveError(m) => m.contains("not found"),
        etcd_client::Error::GRpcStatus(s) => s.code() == tonic::Code::NotFound && s.message().contains("lease"),
        _ => false,
    }
}
