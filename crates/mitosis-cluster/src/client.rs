//! The connection to etcd and the plain reads and writes of the schema.

use std::future::Future;
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, ConnectOptions, GetOptions, PutOptions, Txn, TxnOp};
use tokio::time::Instant;

use crate::error::is_lease_not_found;
use crate::schema::{Schema, SeedRecord};
use crate::view::ClusterState;
use crate::ClusterError;

/// How long the client waits for etcd.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// For [`Cluster::connect`] to find an endpoint that answers (and for
    /// each TCP connection to an endpoint).
    pub connect: Duration,
    /// For one request, retries on other endpoints included.
    pub request: Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts { connect: Duration::from_secs(3), request: Duration::from_secs(5) }
    }
}

/// What a write of a registration did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Written {
    /// The etcd revision after the write: a [`crate::ClusterView`] whose
    /// `revision` is at least this one has seen it.
    pub revision: i64,
    /// Whether the key held a value before.
    pub existed: bool,
}

/// A client of the cluster's etcd, for one schema prefix. Cheap to clone
/// (clones share the connections).
#[derive(Clone)]
pub struct Cluster {
    pub(crate) client: Client,
    pub(crate) schema: Schema,
    pub(crate) timeouts: Timeouts,
}

impl Cluster {
    /// Connects to the etcd cluster of `endpoints` (`host:port` or
    /// `http://host:port`) with [`Timeouts::default`], keys under `prefix`.
    pub async fn connect(endpoints: &[String], prefix: &str) -> Result<Cluster, ClusterError> {
        Cluster::connect_with(endpoints, prefix, Timeouts::default()).await
    }

    /// [`Cluster::connect`] with other timeouts.
    pub async fn connect_with(endpoints: &[String], prefix: &str, timeouts: Timeouts) -> Result<Cluster, ClusterError> {
        let schema = Schema::new(prefix)?;
        let endpoints: Vec<String> = endpoints.iter().map(|e| e.trim().to_string()).filter(|e| !e.is_empty()).collect();
        if endpoints.is_empty() {
            return Err(ClusterError::NoEndpoints);
        }
        let options = ConnectOptions::new()
            .with_connect_timeout(timeouts.connect)
            // HTTP/2 pings notice a member that vanished without closing its
            // connections (a watch would otherwise wait on it forever).
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
            .with_keep_alive_while_idle(true)
            // A member cut off from the quorum refuses (and cancels watches)
            // instead of serving stale state: the client moves to another.
            .with_require_leader(true);
        let client = Client::connect(&endpoints, Some(options))
            .await
            .map_err(|source| ClusterError::Etcd { op: "connect", source })?;
        let cluster = Cluster { client, schema, timeouts };
        // The channel connects lazily: one read proves that an endpoint
        // answers and has a quorum behind it (reads are linearizable).
        let prefix = cluster.schema.prefix().to_string();
        let probe = cluster
            .request_within("probe", timeouts.connect, |mut c| {
                let prefix = prefix.clone();
                async move { c.get(prefix, Some(GetOptions::new().with_prefix().with_count_only())).await }
            })
            .await;
        match probe {
            Ok(_) => Ok(cluster),
            Err(e) if e.is_transient() => Err(ClusterError::Unreachable {
                endpoints: endpoints.join(","),
                timeout: timeouts.connect,
                last: e.to_string(),
            }),
            Err(e) => Err(e),
        }
    }

    /// The key prefix, with its trailing `/`.
    pub fn prefix(&self) -> &str {
        self.schema.prefix()
    }

    /// Stores function `name`'s registration (opaque to this crate); says
    /// at which revision, and whether it replaced one.
    pub async fn put_function(&self, name: &str, registration: &str) -> Result<Written, ClusterError> {
        let key = self.schema.function(name)?;
        let value = registration.to_string();
        let answer = self
            .request("put function", |mut c| {
                let (key, value) = (key.clone(), value.clone());
                async move { c.put(key, value, Some(PutOptions::new().with_prev_key())).await }
            })
            .await?;
        let revision = answer.header().map(|h| h.revision()).unwrap_or(0);
        Ok(Written { revision, existed: answer.prev_key().is_some() })
    }

    /// Removes function `name`'s registration (its seeds are left to their
    /// owner: [`Cluster::delete_seed`]); says at which revision, and whether
    /// there was one.
    pub async fn delete_function(&self, name: &str) -> Result<Written, ClusterError> {
        let key = self.schema.function(name)?;
        let answer = self
            .request("delete function", |mut c| {
                let key = key.clone();
                async move { c.delete(key, None).await }
            })
            .await?;
        let revision = answer.header().map(|h| h.revision()).unwrap_or(0);
        Ok(Written { revision, existed: answer.deleted() > 0 })
    }

    /// Stores `seed` under the lease of the worker it lives on, so that it
    /// vanishes with that worker. Fails with [`ClusterError::NoLiveWorker`]
    /// when `seed.host` has no live record.
    pub async fn put_seed(&self, seed: &SeedRecord) -> Result<(), ClusterError> {
        let worker_key = self.schema.worker(&seed.host)?;
        let seed_key = self.schema.seed(&seed.function, &seed.host)?;
        let value = serde_json::to_string(seed).expect("a SeedRecord is plain data and always serializes");
        let no_worker = || ClusterError::NoLiveWorker { addr: seed.host.clone() };
        // A worker that re-registers between the read and the write moves to
        // a new lease: the transaction then fails its compare and is retried
        // with the new lease. Twice is plenty for a record renewed at most
        // once per expiry.
        for _ in 0..3 {
            let got = self
                .request("get worker", |mut c| {
                    let key = worker_key.clone();
                    async move { c.get(key, None).await }
                })
                .await?;
            let Some(worker) = got.kvs().first() else { return Err(no_worker()) };
            // The lease etcd holds the record under (the record's JSON names
            // the same one; etcd's own is the one that decides expiry).
            let (lease, revision) = (worker.lease(), worker.mod_revision());
            if lease == 0 {
                return Err(no_worker());
            }
            let txn = Txn::new()
                .when([Compare::mod_revision(worker_key.clone(), CompareOp::Equal, revision)])
                .and_then([TxnOp::put(seed_key.clone(), value.clone(), Some(PutOptions::new().with_lease(lease)))]);
            let done = match self.request("put seed", |mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await
            {
                Ok(r) => r.succeeded(),
                // The lease ran out between the read and the write.
                Err(ClusterError::Etcd { source, .. }) if is_lease_not_found(&source) => return Err(no_worker()),
                Err(e) => return Err(e),
            };
            if done {
                return Ok(());
            }
        }
        Err(no_worker())
    }

    /// Removes the record of `function`'s seed on `host`.
    pub async fn delete_seed(&self, function: &str, host: &str) -> Result<(), ClusterError> {
        let key = self.schema.seed(function, host)?;
        self.request("delete seed", |mut c| {
            let key = key.clone();
            async move { c.delete(key, None).await }
        })
        .await?;
        Ok(())
    }

    /// Reads the whole state once (what [`Cluster::watch`] starts from),
    /// with the etcd revision it was read at.
    pub async fn load(&self) -> Result<(ClusterState, i64), ClusterError> {
        let prefix = self.schema.prefix().to_string();
        let got = self
            .request("load", |mut c| {
                let prefix = prefix.clone();
                async move { c.get(prefix, Some(GetOptions::new().with_prefix())).await }
            })
            .await?;
        let revision = got.header().map(|h| h.revision()).unwrap_or(0);
        let mut state = ClusterState::default();
        for kv in got.kvs() {
            state.apply_put(&self.schema, kv.key(), kv.value());
        }
        Ok((state, revision))
    }

    /// Runs `call` (on a fresh clone of the client) until it succeeds, fails
    /// for good, or the request timeout has passed; transient failures
    /// (an endpoint down, a member without leader) are retried after a
    /// short, growing pause.
    pub(crate) async fn request<T, F, Fut>(&self, op: &'static str, call: F) -> Result<T, ClusterError>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        self.request_within(op, self.timeouts.request, call).await
    }

    async fn request_within<T, F, Fut>(&self, op: &'static str, budget: Duration, mut call: F) -> Result<T, ClusterError>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let deadline = Instant::now() + budget;
        let mut pause = Duration::from_millis(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            // One attempt may not take the whole budget: an attempt sent to a
            // member that just died (or lost its leader) can hang until its
            // connection is found dead, while the others would answer.
            let error = match tokio::time::timeout(left.min(ATTEMPT_TIMEOUT), call(self.client.clone())).await {
                Ok(Ok(answer)) => return Ok(answer),
                Ok(Err(source)) => ClusterError::Etcd { op, source },
                Err(_) => ClusterError::Timeout { op, timeout: budget },
            };
            if !error.is_transient() || Instant::now() + pause >= deadline {
                return Err(error);
            }
            tracing::debug!(op, error = %error, "etcd request failed; retrying");
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }
}

/// Longest single attempt of a request (see `request_within`); an election
/// after a member's death takes about a second.
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(1500);
