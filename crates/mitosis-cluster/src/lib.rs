//! Cluster state of the serverless platform, kept in etcd.
//!
//! Several gateways share one cluster of workers (hosts running
//! `mitosis daemon`) by keeping its state in etcd rather than in their own
//! memory. This crate owns that state's schema ([`schema`]), the client
//! ([`Cluster`]), worker membership by leases ([`WorkerLease`], and
//! [`register_worker_blocking`] for the synchronous daemon) and the watched
//! in-memory cache that gateways route from ([`ClusterView`]): no etcd call
//! is on an invocation's path, every route comes from the cache.
//!
//! It must not know HTTP, the gateway's routing policy, or the internals of
//! instances and seeds: a function's registration is an opaque string, and
//! a seed is only a (function, host, seed id, generation) record.
//! Membership and consensus are etcd's (leases and transactions): this crate
//! is no cluster manager of its own.
//!
//! # Use
//!
//! * A worker: `mitosis daemon --etcd URLS` registers itself (through
//!   [`register_worker_blocking`]); its record carries a lease of a few
//!   seconds, refreshed every TTL/3, revoked when the daemon stops.
//! * A gateway: [`Cluster::connect`], then [`Cluster::watch`] once at start;
//!   route each invocation from [`ClusterView::snapshot`] (live workers,
//!   registrations, seeds per function) and wake on
//!   [`ClusterView::changes`]. Write only on control events, never per
//!   request: [`Cluster::put_function`] on registration,
//!   [`Cluster::put_seed`] after preparing a seed on a worker (it goes under
//!   that worker's lease, so it vanishes with the worker),
//!   [`Cluster::delete_seed`] when dropping one. A worker that re-registers
//!   after its lease expired comes back with no seeds in etcd: whoever
//!   placed them puts them again if they still exist on it.

#![forbid(unsafe_code)]

mod blocking;
mod client;
mod error;
mod lease;
pub mod schema;
mod view;

pub use blocking::{register_worker_blocking, BlockingRegistration};
pub use client::{Cluster, Timeouts, Written};
pub use error::ClusterError;
pub use lease::WorkerLease;
pub use schema::{SeedRecord, WorkerRecord, DEFAULT_PREFIX};
pub use view::{ClusterState, ClusterView};
