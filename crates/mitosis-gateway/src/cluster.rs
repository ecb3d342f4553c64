//! Cluster state shared through etcd (`mitosis gateway --etcd`), so that
//! several gateways serve one cluster of workers.
//!
//! [`EtcdSync`] watches the cluster's state (crate `mitosis-cluster`) and
//! keeps the gateway in step with it, from its own task:
//!
//! * **workers**: the live worker records (plus any `--workers` given too).
//!   A worker whose record goes (its daemon stopped or died, or its lease
//!   expired) is no longer picked; its instances are ended, busy ones with
//!   an error answer, and the seeds on it are forgotten.
//! * **functions**: the registrations under `functions/`, as JSON
//!   [`FunctionConfig`]s. `PUT` and `DELETE /functions/{f}` write there and
//!   answer once this gateway has applied its own write; every gateway
//!   applies every registration (a new one is registered, a changed one
//!   replaced, a removed one unregistered; one that does not parse is
//!   logged and skipped). A put of an unchanged registration changes nothing
//!   on the gateways (embedded, it would restart the function's instances).
//! * **seeds**: a seed this gateway prepares is published under
//!   `seeds/<function>/<worker>` (under that worker's lease: it vanishes with
//!   it) and deleted when the gateway stops using it. A gateway whose
//!   function has no seed forks from one another gateway published, if the
//!   view has one made from the same registration (seed ids carry the
//!   registration's [`FunctionConfig::tag`]); it never drops such a seed.
//!   A shared seed whose record goes is forgotten; one a fork failed from is
//!   never taken again.
//!
//! Nothing here is on an invocation's path: routes come from the gateway's
//! own state, and the one read an invocation may make
//! ([`ClusterSync::shared_seeds`]) is of the watched cache. Seed records are
//! written in the background, in order, by one writer task.

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use mitosis_cluster::{Cluster, ClusterError, ClusterState, ClusterView, SeedRecord};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::function::{validate_name, FunctionConfig};
use crate::gateway::{BoxFuture, ClusterSync, Gateway};
use crate::pool::SeedState;

/// How long a registration's answer waits for this gateway's view to show the write.
pub const APPLIED_WITHIN: Duration = Duration::from_secs(10);

/// Where the cluster state lives.
#[derive(Debug, Clone)]
pub struct EtcdOptions {
    /// etcd endpoints (`host:port` or `http://host:port`).
    pub endpoints: Vec<String>,
    /// Key prefix (`mitosis_cluster::DEFAULT_PREFIX` by default).
    pub prefix: String,
}

/// Why a registration could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Etcd(#[from] ClusterError),
    #[error("the registration was written to etcd (revision {revision}) but this gateway had not seen it within {within:?}")]
    NotApplied { revision: i64, within: Duration },
}

/// A seed record write, done in order by the writer task.
enum SeedWrite {
    Put(SeedRecord),
    Delete { function: String, host: String },
    /// Answers once the writes before it are done.
    Flush(oneshot::Sender<()>),
}

/// The gateway's link to etcd (see the module doc).
pub struct EtcdSync {
    cluster: Cluster,
    view: ClusterView,
    /// Workers given with `--workers`, kept beside the view's.
    static_workers: Vec<String>,
    /// The etcd revision this gateway has applied.
    applied: watch::Sender<i64>,
    /// Seed ids never to fork from again: a fork from them failed, or this
    /// gateway gave them up.
    unusable: Mutex<HashSet<String>>,
    /// Registrations already reported as malformed (name, value).
    reported: Mutex<HashSet<(String, String)>>,
    writes: mpsc::UnboundedSender<SeedWrite>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl EtcdSync {
    /// Connects, loads the state, applies it to `gateway`, links the two,
    /// and keeps applying changes (call inside the gateway's tokio runtime).
    pub async fn start(gateway: &Arc<Gateway>, options: &EtcdOptions) -> Result<Arc<EtcdSync>, ClusterError> {
        let cluster = Cluster::connect(&options.endpoints, &options.prefix).await?;
        let view = cluster.watch().await?;
        let (writes, queue) = mpsc::unbounded_channel();
        let sync = Arc::new(EtcdSync {
            cluster: cluster.clone(),
            view,
            static_workers: gateway.config().workers.clone(),
            applied: watch::channel(0).0,
            unusable: Mutex::new(HashSet::new()),
            reported: Mutex::new(HashSet::new()),
            writes,
            tasks: Mutex::new(Vec::new()),
        });
        gateway.set_cluster(sync.clone());
        let mut changes = sync.view.changes();
        changes.borrow_and_update();
        sync.apply(gateway, &sync.view.snapshot());
        let follower = tokio::spawn(follow(Arc::downgrade(&sync), Arc::downgrade(gateway), changes));
        let writer = tokio::spawn(write_seeds(cluster, queue));
        sync.tasks.lock().unwrap_or_else(|e| e.into_inner()).extend([follower, writer]);
        Ok(sync)
    }

    /// Stops following the view (at shutdown, before the gateway ends its
    /// functions) after the seed writes queued so far are done, or `within`.
    pub async fn stop(&self, within: Duration) {
        let follower = self.tasks.lock().unwrap_or_else(|e| e.into_inner()).first().map(JoinHandle::abort_handle);
        if let Some(f) = follower {
            f.abort();
        }
        let (done, flushed) = oneshot::channel();
        if self.writes.send(SeedWrite::Flush(done)).is_ok() {
            let _ = tokio::time::timeout(within, flushed).await;
        }
    }

    /// The state as last seen in etcd.
    pub fn snapshot(&self) -> Arc<ClusterState> {
        self.view.snapshot()
    }

    /// Brings `gateway` in step with `state`.
    fn apply(&self, gateway: &Gateway, state: &ClusterState) {
        self.apply_workers(gateway, state);
        self.apply_functions(gateway, state);
        self.forget_vanished_seeds(gateway, state);
        self.applied.send_replace(state.revision);
    }

    fn apply_workers(&self, gateway: &Gateway, state: &ClusterState) {
        let mut wanted = self.static_workers.clone();
        wanted.extend(state.workers.keys().filter(|w| !self.static_workers.contains(w)).cloned());
        let now: BTreeSet<String> = gateway.worker_addrs().into_iter().collect();
        if now != wanted.iter().cloned().collect::<BTreeSet<String>>() {
            tracing::info!(workers = ?wanted, "workers from etcd");
            gateway.set_workers(&wanted);
        }
    }

    fn apply_functions(&self, gateway: &Gateway, state: &ClusterState) {
        let mut wanted = Vec::new();
        for (name, registration) in &state.functions {
            match parse_registration(name, registration) {
                Ok(config) => wanted.push((name, config)),
                Err(message) => {
                    let first = self.reported.lock().unwrap_or_else(|e| e.into_inner()).insert((name.clone(), registration.clone()));
                    if first {
                        tracing::warn!(function = %name, %message, "skipping a registration in etcd that does not parse");
                    }
                }
            }
        }
        for pool in gateway.functions() {
            if !wanted.iter().any(|(name, _)| **name == pool.name) {
                tracing::info!(function = %pool.name, "unregistered (etcd)");
                gateway.unregister(&pool.name);
            }
        }
        for (name, config) in wanted {
            if gateway.function(name).is_some_and(|pool| pool.config == config) {
                continue;
            }
            let new = gateway.register(name, config);
            tracing::info!(function = %name, "{} (etcd)", if new { "registered" } else { "replaced" });
        }
    }

    /// Shared seeds whose record is gone (their owner dropped them, or their
    /// worker left) are not forked from any more.
    fn forget_vanished_seeds(&self, gateway: &Gateway, state: &ClusterState) {
        for pool in gateway.functions() {
            if let SeedState::Ready { worker, id, shared: true, .. } = pool.seed() {
                if !state.seeds_of(&pool.name).iter().any(|s| s.host == worker && s.seed_id == id) {
                    pool.forget_seed(&id);
                }
            }
        }
    }

    /// Waits until this gateway has applied etcd revision `revision`.
    async fn applied(&self, revision: i64) -> Result<(), SyncError> {
        let mut applied = self.applied.subscribe();
        let seen = tokio::time::timeout(APPLIED_WITHIN, async { applied.wait_for(|r| *r >= revision).await.is_ok() }).await;
        match seen {
            Ok(true) => Ok(()),
            _ => Err(SyncError::NotApplied { revision, within: APPLIED_WITHIN }),
        }
    }

    fn write(&self, w: SeedWrite) {
        // The writer task ends only with the runtime.
        let _ = self.writes.send(w);
    }
}

/// A registration from etcd, checked as the HTTP API checks one.
fn parse_registration(name: &str, registration: &str) -> Result<FunctionConfig, String> {
    validate_name(name)?;
    let config: FunctionConfig = serde_json::from_str(registration).map_err(|e| format!("malformed registration: {e}"))?;
    config.validate()?;
    Ok(config)
}

/// Applies each change of the view until the gateway or the link is gone.
async fn follow(sync: Weak<EtcdSync>, gateway: Weak<Gateway>, mut changes: watch::Receiver<u64>) {
    while changes.changed().await.is_ok() {
        let (Some(sync), Some(gateway)) = (sync.upgrade(), gateway.upgrade()) else { return };
        changes.borrow_and_update();
        let state = sync.view.snapshot();
        sync.apply(&gateway, &state);
    }
}

/// Writes seed records in the order they were asked for.
async fn write_seeds(cluster: Cluster, mut queue: mpsc::UnboundedReceiver<SeedWrite>) {
    while let Some(w) = queue.recv().await {
        match w {
            SeedWrite::Put(seed) => match cluster.put_seed(&seed).await {
                Ok(()) => tracing::debug!(function = %seed.function, seed = %seed.seed_id, host = %seed.host, "seed published"),
                // A worker given by --workers only, or one that just left.
                Err(e @ ClusterError::NoLiveWorker { .. }) => tracing::debug!(seed = %seed.seed_id, error = %e, "seed not published"),
                Err(e) => tracing::warn!(seed = %seed.seed_id, error = %e, "cannot publish a seed in etcd"),
            },
            SeedWrite::Delete { function, host } => {
                if let Err(e) = cluster.delete_seed(&function, &host).await {
                    tracing::warn!(%function, %host, error = %e, "cannot delete a seed's record in etcd");
                }
            }
            SeedWrite::Flush(done) => {
                let _ = done.send(());
            }
        }
    }
}

impl ClusterSync for EtcdSync {
    fn shared_seeds(&self, function: &str, prefix: &str) -> Vec<(String, String, u64)> {
        let state = self.view.snapshot();
        let unusable = self.unusable.lock().unwrap_or_else(|e| e.into_inner());
        state
            .seeds_of(function)
            .iter()
            .filter(|s| s.seed_id.starts_with(prefix) && !unusable.contains(&s.seed_id))
            .map(|s| (s.host.clone(), s.seed_id.clone(), s.generation))
            .collect()
    }

    fn seed_ready(&self, function: &str, worker: &str, id: &str, generation: u64) {
        self.write(SeedWrite::Put(SeedRecord {
            function: function.to_string(),
            host: worker.to_string(),
            seed_id: id.to_string(),
            generation,
        }));
    }

    fn seed_gone(&self, function: &str, seed: &SeedState, unusable: bool) {
        let SeedState::Ready { worker, id, shared, .. } = seed else { return };
        if unusable || !shared {
            self.unusable.lock().unwrap_or_else(|e| e.into_inner()).insert(id.clone());
        }
        if !shared {
            // Unconditional: should another gateway have published a seed of
            // the same function on the same worker meanwhile (a race of two
            // first cold starts), its record goes too and the next start
            // there makes a new seed.
            self.write(SeedWrite::Delete { function: function.to_string(), host: worker.clone() });
        }
    }

    fn put_function<'a>(&'a self, name: &'a str, config: &'a FunctionConfig) -> BoxFuture<'a, Result<bool, SyncError>> {
        Box::pin(async move {
            let json = serde_json::to_string(config).expect("a FunctionConfig is plain data and always serializes");
            let written = self.cluster.put_function(name, &json).await?;
            self.applied(written.revision).await?;
            Ok(!written.existed)
        })
    }

    fn delete_function<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<bool, SyncError>> {
        Box::pin(async move {
            let written = self.cluster.delete_function(name).await?;
            if written.existed {
                self.applied(written.revision).await?;
            }
            Ok(written.existed)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registrations_from_etcd_are_checked_like_the_apis() {
        let config = FunctionConfig::new("/srv/f");
        let json = serde_json::to_string(&config).unwrap();
        assert_eq!(parse_registration("f", &json).unwrap(), config);
        assert!(parse_registration("f", "{not json").is_err());
        assert!(parse_registration("f", r#"{"dir": "relative"}"#).is_err());
        assert!(parse_registration("../f", &json).is_err());
    }

    #[test]
    fn equal_registrations_have_equal_tags() {
        let a = FunctionConfig::new("/srv/f");
        assert_eq!(a.tag(), FunctionConfig::new("/srv/f").tag());
        assert_ne!(a.tag(), FunctionConfig::new("/srv/g").tag());
        assert_eq!(a.tag().len(), 16);
    }
}
