//! The watched cache: the whole state under the prefix, loaded once and
//! kept current from one etcd watch, readable without any etcd call.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use etcd_client::{EventType, WatchOptions, WatchResponse};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::schema::{Key, Schema, SeedRecord, WorkerRecord};
use crate::{Cluster, ClusterError};

/// The cluster as last seen in etcd.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterState {
    /// Live workers by address.
    pub workers: BTreeMap<String, WorkerRecord>,
    /// Function registrations by name (opaque strings).
    pub functions: BTreeMap<String, String>,
    /// Seeds by function, sorted by host.
    pub seeds: BTreeMap<String, Vec<SeedRecord>>,
    /// The etcd revision this state reflects.
    pub revision: i64,
}

impl ClusterState {
    /// Applies a put of `key` (a key of ours; others are ignored). A value
    /// that does not parse is logged and skipped: one bad record must not
    /// blind the cache to the others.
    pub(crate) fn apply_put(&mut self, schema: &Schema, key: &[u8], value: &[u8]) {
        let Ok(key) = std::str::from_utf8(key) else { return };
        let Some(parsed) = schema.parse(key) else { return };
        let malformed = |e: serde_json::Error| {
            tracing::warn!("{}", ClusterError::Malformed { key: key.to_string(), source: e });
        };
        match parsed {
            Key::Worker(addr) => match serde_json::from_slice::<WorkerRecord>(value) {
                Ok(record) => {
                    self.workers.insert(addr.to_string(), record);
                }
                Err(e) => malformed(e),
            },
            Key::Function(name) => match String::from_utf8(value.to_vec()) {
                Ok(registration) => {
                    self.functions.insert(name.to_string(), registration);
                }
                Err(_) => tracing::warn!(key, "function registration is not UTF-8; skipped"),
            },
            Key::Seed { function, host } => match serde_json::from_slice::<SeedRecord>(value) {
                Ok(mut seed) => {
                    // The key decides where the record lives.
                    seed.function = function.to_string();
                    seed.host = host.to_string();
                    let seeds = self.seeds.entry(function.to_string()).or_default();
                    match seeds.binary_search_by(|s| s.host.as_str().cmp(host)) {
                        Ok(i) => seeds[i] = seed,
                        Err(i) => seeds.insert(i, seed),
                    }
                }
                Err(e) => malformed(e),
            },
        }
    }

    /// Applies a delete of `key`.
    pub(crate) fn apply_delete(&mut self, schema: &Schema, key: &[u8]) {
        let Ok(key) = std::str::from_utf8(key) else { return };
        match schema.parse(key) {
            Some(Key::Worker(addr)) => {
                self.workers.remove(addr);
            }
            Some(Key::Function(name)) => {
                self.functions.remove(name);
            }
            Some(Key::Seed { function, host }) => {
                if let Some(seeds) = self.seeds.get_mut(function) {
                    seeds.retain(|s| s.host != host);
                    if seeds.is_empty() {
                        self.seeds.remove(function);
                    }
                }
            }
            None => {}
        }
    }

    /// The seeds of `function` (none if it has none).
    pub fn seeds_of(&self, function: &str) -> &[SeedRecord] {
        self.seeds.get(function).map(Vec::as_slice).unwrap_or(&[])
    }
}

/// The live cache. Reading it ([`ClusterView::snapshot`]) is a pointer
/// load; dropping it stops the watch.
pub struct ClusterView {
    state: Arc<ArcSwap<ClusterState>>,
    changes: watch::Receiver<u64>,
    task: JoinHandle<()>,
}

impl ClusterView {
    /// The state as of the last change seen (cheap: an `Arc` clone).
    pub fn snapshot(&self) -> Arc<ClusterState> {
        self.state.load_full()
    }

    /// A counter bumped after each change is applied to the snapshot:
    /// `changed().await` on it wakes a gateway that waits for, say, a
    /// worker to appear.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.clone()
    }

    /// Waits up to `timeout` until `ready` holds for the snapshot; returns
    /// the snapshot it held for, or `None` on timeout.
    pub async fn wait_for(&self, timeout: Duration, mut ready: impl FnMut(&ClusterState) -> bool) -> Option<Arc<ClusterState>> {
        let mut changes = self.changes();
        tokio::time::timeout(timeout, async {
            loop {
                // Marks the current value seen before reading the state, so
                // that a change between the two wakes the next `changed`.
                changes.borrow_and_update();
                let state = self.snapshot();
                if ready(&state) {
                    return Some(state);
                }
                if changes.changed().await.is_err() {
                    return None;
                }
            }
        })
        .await
        .ok()
        .flatten()
    }
}

impl Drop for ClusterView {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Cluster {
    /// Loads everything under the prefix and keeps it current from one
    /// watch, in a background task, until the view is dropped. A broken
    /// watch resumes from the last revision seen; when that revision has
    /// been compacted away, the state is loaded again.
    pub async fn watch(&self) -> Result<ClusterView, ClusterError> {
        let (state, revision) = self.load().await?;
        let state = ClusterState { revision, ..state };
        let shared = Arc::new(ArcSwap::from_pointee(state.clone()));
        let (changes_tx, changes) = watch::channel(0);
        let watcher = Watcher { cluster: self.clone(), shared: shared.clone(), changes: changes_tx, state };
        let task = tokio::spawn(watcher.run());
        Ok(ClusterView { state: shared, changes, task })
    }
}

/// The background task of one view.
struct Watcher {
    cluster: Cluster,
    shared: Arc<ArcSwap<ClusterState>>,
    changes: watch::Sender<u64>,
    /// The task's own copy, published after each batch of events.
    state: ClusterState,
}

/// Why a watch stream ended.
enum Ended {
    /// The stream broke (member gone, connection reset): resume.
    Broken,
    /// The revision to resume from was compacted: load again.
    Compacted,
}

const RETRY_PAUSE: Duration = Duration::from_millis(200);

impl Watcher {
    async fn run(mut self) {
        loop {
            match self.follow().await {
                Ended::Broken => tokio::time::sleep(RETRY_PAUSE).await,
                Ended::Compacted => loop {
                    match self.cluster.load().await {
                        Ok((state, revision)) => {
                            self.publish(ClusterState { revision, ..state });
                            break;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot reload the cluster state; retrying");
                            tokio::time::sleep(RETRY_PAUSE).await;
                        }
                    }
                },
            }
        }
    }

    /// Watches from just after the last revision applied until the stream
    /// ends.
    async fn follow(&mut self) -> Ended {
        let prefix = self.cluster.schema.prefix().to_string();
        let options = WatchOptions::new().with_prefix().with_start_revision(self.state.revision + 1);
        let mut stream = match self.cluster.client.clone().watch(prefix, Some(options)).await {
            Ok(stream) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "cannot open the etcd watch; retrying");
                return Ended::Broken;
            }
        };
        loop {
            match stream.message().await {
                Ok(Some(response)) => {
                    if response.compact_revision() > 0 {
                        tracing::warn!(revision = self.state.revision, compacted = response.compact_revision(), "watch revision compacted; reloading");
                        return Ended::Compacted;
                    }
                    if response.canceled() {
                        // E.g. the member lost its leader (require-leader).
                        tracing::warn!(reason = response.cancel_reason(), "etcd canceled the watch; resuming");
                        return Ended::Broken;
                    }
                    self.apply(&response);
                }
                Ok(None) => return Ended::Broken,
                Err(e) => {
                    tracing::warn!(error = %e, "etcd watch broke; resuming");
                    return Ended::Broken;
                }
            }
        }
    }

    fn apply(&mut self, response: &WatchResponse) {
        let schema = self.cluster.schema.clone();
        let mut changed = false;
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            match event.event_type() {
                EventType::Put => self.state.apply_put(&schema, kv.key(), kv.value()),
                EventType::Delete => self.state.apply_delete(&schema, kv.key()),
            }
            self.state.revision = self.state.revision.max(kv.mod_revision());
            changed = true;
        }
        if changed {
            self.publish(self.state.clone());
        }
    }

    fn publish(&mut self, state: ClusterState) {
        self.state = state.clone();
        self.shared.store(Arc::new(state));
        self.changes.send_modify(|n| *n += 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed(function: &str, host: &str) -> SeedRecord {
        SeedRecord { function: function.into(), host: host.into(), seed_id: format!("{function}-1"), generation: 1 }
    }

    #[test]
    fn puts_and_deletes_shape_the_state() {
        let schema = Schema::new("/t/").unwrap();
        let mut s = ClusterState::default();
        let w = serde_json::to_vec(&WorkerRecord { addr: "a:1".into(), lease: 7 }).unwrap();
        s.apply_put(&schema, b"/t/workers/a:1", &w);
        s.apply_put(&schema, b"/t/functions/f", b"{\"x\":1}");
        for host in ["b:1", "a:1"] {
            s.apply_put(&schema, schema.seed("f", host).unwrap().as_bytes(), &serde_json::to_vec(&seed("f", host)).unwrap());
        }
        s.apply_put(&schema, b"/t/workers/bad", b"not json");
        s.apply_put(&schema, b"/other/workers/x", &w);
        assert_eq!(s.workers.len(), 1);
        assert_eq!(s.functions["f"], "{\"x\":1}");
        let hosts: Vec<_> = s.seeds_of("f").iter().map(|s| s.host.as_str()).collect();
        assert_eq!(hosts, ["a:1", "b:1"]);
        s.apply_delete(&schema, b"/t/seeds/f/a:1");
        s.apply_delete(&schema, b"/t/seeds/f/b:1");
        assert!(s.seeds.is_empty());
        s.apply_delete(&schema, b"/t/workers/a:1");
        s.apply_delete(&schema, b"/t/functions/f");
        assert_eq!(s, ClusterState::default());
    }
}
