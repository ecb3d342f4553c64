//! The serverless gateway of mitosis.
//!
//! It owns the platform's control of functions: the registry of functions
//! ([`function`]), their instances on worker hosts ([`worker`], [`instance`]),
//! which instance serves a request and when a new one starts ([`pool`]: LIFO
//! reuse of idle instances, at most `max_instances` per function, keep-alive),
//! how a new instance starts ([`function::Policy`]: a remote fork of the
//! function's seed, or a cold start), the HTTP API ([`http`]) and its metrics
//! ([`metrics`]). [`client`] is the blocking HTTP client that `mitosis fn`
//! uses. By default the registry and the workers live in the gateway's
//! memory; with etcd ([`cluster`]) they are shared by several gateways.
//!
//! A worker is a host running `mitosis daemon`; the gateway reaches it on its
//! peer port with the cluster key, one connection per instance (see
//! `mitosis_proto::instance`). It must not touch processes, memory or
//! containers itself: the workers' daemons do that. It knows traces and
//! replay only as an HTTP client would (crate `mitosis-trace`).

#![forbid(unsafe_code)]

pub mod client;
pub mod cluster;
pub mod function;
pub mod gateway;
pub mod http;
pub mod instance;
pub mod metrics;
pub mod pool;
pub mod run;
pub mod worker;

pub use function::{FunctionConfig, Policy};
pub use gateway::{ClusterSync, Gateway, GatewayConfig, InvokeError, Invoked, StartKind, WorkerStatus};
