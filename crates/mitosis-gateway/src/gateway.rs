//! The gateway's core: registered functions, workers, and how an invocation
//! finds its instance.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use mitosis_proto::instance::{InstanceSpec, InstanceStart};

use crate::function::{FunctionConfig, Policy};
use crate::instance::{Instance, InstanceError, StartError, Started};
use crate::metrics::Metrics;
use crate::pool::{Acquired, FunctionPool, SeedState, REAP_EVERY};
use crate::worker::{WorkerAuth, WorkerConn};

/// How a gateway is run.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Workers' daemons, `addr:port`.
    pub workers: Vec<String>,
    pub auth: WorkerAuth,
    /// The start policy of functions whose registration names none.
    pub default_policy: Policy,
    /// How long a new instance may take to be ready (a cold start's imports included).
    pub start_timeout: Duration,
    /// How long a worker that could not be reached is passed over.
    pub worker_retry: Duration,
    /// Bytes of local memory this gateway's instances and seeds may hold on
    /// its workers, in all (`--memory-budget`): once a memory poll finds
    /// them over it, idle instances end, least recently used first, until
    /// they are not. Busy instances and seeds are never ended for it.
    pub memory_budget: Option<u64>,
}

/// How the instance that served a request started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StartKind {
    /// A new runtime process.
    Cold,
    /// A remote fork of the function's seed.
    Fork,
    /// An idle instance, reused.
    Warm,
}

impl StartKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StartKind::Cold => "cold",
            StartKind::Fork => "fork",
            StartKind::Warm => "warm",
        }
    }
}

/// A successful invocation.
#[derive(Debug, Clone)]
pub struct Invoked {
    /// The runtime's answer (JSON: `result` and `output`).
    pub body: Vec<u8>,
    pub start: StartKind,
    pub instance: String,
    pub worker: String,
}

/// Why an invocation failed; each maps to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    #[error("no function {0:?} is registered")]
    UnknownFunction(String),
    #[error("the handler raised: {0}")]
    Handler(String),
    #[error("{0}")]
    Instance(InstanceError),
    #[error("no instance of {function} could be started: {error}")]
    Start { function: String, error: StartError },
    #[error("no worker is available")]
    NoWorker,
    #[error("no instance of {function} came free within its timeout of {timeout:?} (all {max} are busy)")]
    QueueTimeout { function: String, timeout: Duration, max: u32 },
    #[error("the function {0:?} was removed while the request waited")]
    Removed(String),
}

impl InvokeError {
    /// The HTTP status the gateway answers with.
    pub fn http_status(&self) -> u16 {
        match self {
            InvokeError::UnknownFunction(_) | InvokeError::Removed(_) => 404,
            InvokeError::Instance(InstanceError::Timeout(_)) | InvokeError::QueueTimeout { .. } => 504,
            InvokeError::NoWorker => 503,
            InvokeError::Start { error, .. } if error.is_worker_fault() => 503,
            _ => 500,
        }
    }
}

/// A boxed future, for the [`ClusterSync`] methods that wait on etcd.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the gateway tells shared cluster state (etcd: [`crate::cluster`])
/// and asks of it. The seed methods are called on seed changes and must not
/// wait (they write in the background); the function methods are the HTTP
/// API's registrations, which answer once the write is done. No method is
/// called on an invocation's path but [`ClusterSync::shared_seeds`], which
/// reads a cache.
pub trait ClusterSync: Send + Sync {
    /// Seeds of `function` that other gateways published, whose ids start
    /// with `prefix` (made from the same registration) and that are not
    /// known to be unusable: (worker, seed id, generation).
    fn shared_seeds(&self, function: &str, prefix: &str) -> Vec<(String, String, u64)>;
    /// This gateway prepared seed `id` of `function` on `worker`.
    fn seed_ready(&self, function: &str, worker: &str, id: &str, generation: u64);
    /// This gateway no longer forks from `seed` (a [`SeedState::Ready`]);
    /// `unusable`: a fork from it failed.
    fn seed_gone(&self, function: &str, seed: &SeedState, unusable: bool);
    /// Stores a registration; resolves once this gateway applies it: true if it is new.
    fn put_function<'a>(&'a self, name: &'a str, config: &'a FunctionConfig) -> BoxFuture<'a, Result<bool, crate::cluster::SyncError>>;
    /// Removes a registration; resolves once this gateway applies it: false if there was none.
    fn delete_function<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<bool, crate::cluster::SyncError>>;
}

/// A worker as the gateway sees it.
struct Worker {
    addr: String,
    /// Instances placed there (live or starting), for least-loaded placement.
    load: AtomicUsize,
    down_until: Mutex<Option<Instant>>,
    /// The connection for `ListInstances` and `DropSeed`.
    control: Mutex<Option<WorkerConn>>,
}

impl Worker {
    fn is_up(&self, now: Instant) -> bool {
        self.down_until.lock().unwrap_or_else(|e| e.into_inner()).is_none_or(|t| now >= t)
    }
}

/// A worker as `GET /workers` shows it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct WorkerStatus {
    pub addr: String,
    pub up: bool,
}

/// Memory of a function's instances and seed, as last polled from the workers.
#[derive(Debug, Clone, Copy, Default)]
pub struct FunctionMemory {
    pub instances_bytes: u64,
    pub seed_bytes: u64,
}

/// The gateway (see the crate doc).
pub struct Gateway {
    config: GatewayConfig,
    functions: RwLock<BTreeMap<String, Arc<FunctionPool>>>,
    workers: RwLock<Vec<Arc<Worker>>>,
    pub metrics: Metrics,
    memory: RwLock<HashMap<String, FunctionMemory>>,
    /// Distinguishes this gateway's instance and seed names from another's.
    nonce: String,
    next: AtomicU64,
    round_robin: AtomicUsize,
    /// Shared cluster state, when the gateway runs with etcd.
    cluster: OnceLock<Arc<dyn ClusterSync>>,
}

impl Gateway {
    pub fn new(config: GatewayConfig) -> Arc<Gateway> {
        let workers = config.workers.iter().map(|w| Arc::new(new_worker(w))).collect();
        let mut nonce = [0u8; 3];
        let _ = getrandom::getrandom(&mut nonce);
        Arc::new(Gateway {
            config,
            functions: RwLock::new(BTreeMap::new()),
            workers: RwLock::new(workers),
            metrics: Metrics::new(),
            memory: RwLock::new(HashMap::new()),
            nonce: nonce.iter().map(|b| format!("{b:02x}")).collect(),
            next: AtomicU64::new(1),
            round_robin: AtomicUsize::new(0),
            cluster: OnceLock::new(),
        })
    }

    /// Starts the keep-alive reaper and the memory poller (call inside a tokio runtime).
    pub fn start_background(self: &Arc<Gateway>) {
        let g = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(REAP_EVERY);
            loop {
                tick.tick().await;
                let now = Instant::now();
                for f in g.pools() {
                    f.reap(now);
                }
            }
        });
        let g = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let g2 = g.clone();
                let _ = tokio::task::spawn_blocking(move || g2.poll_memory()).await;
            }
        });
    }

    /// Makes the gateway keep its seeds in step with shared cluster state
    /// (once, before serving; false if it already had one).
    pub fn set_cluster(&self, sync: Arc<dyn ClusterSync>) -> bool {
        self.cluster.set(sync).is_ok()
    }

    pub fn cluster(&self) -> Option<&Arc<dyn ClusterSync>> {
        self.cluster.get()
    }

    /// Tells the cluster state that `function` no longer forks from `seed`.
    fn seed_gone(&self, function: &str, seed: Option<SeedState>, unusable: bool) {
        if let (Some(c), Some(seed)) = (self.cluster(), seed) {
            c.seed_gone(function, &seed, unusable);
        }
    }

    /// How the ids of `pool`'s seeds begin. With shared cluster state they
    /// carry the registration's tag, so that no gateway forks from a seed
    /// of a replaced registration.
    pub fn seed_prefix(&self, pool: &FunctionPool) -> String {
        match self.cluster() {
            Some(_) => format!("fn-{}-{}-", pool.name, pool.config.tag()),
            None => format!("fn-{}-", pool.name),
        }
    }

    /// Takes a seed another gateway published for `pool` (on a worker that
    /// is up), if there is one; true if the pool's seed may have changed.
    fn adopt_shared_seed(&self, pool: &FunctionPool) -> bool {
        let Some(c) = self.cluster() else { return false };
        let now = Instant::now();
        let found = c.shared_seeds(&pool.name, &self.seed_prefix(pool)).into_iter().find(|(w, _, _)| self.worker(w).is_some_and(|w| w.is_up(now)));
        let Some((worker, id, generation)) = found else { return false };
        tracing::debug!(function = %pool.name, seed = %id, %worker, "forking from another gateway's seed");
        pool.adopt_seed(SeedState::Ready { worker, id, generation, shared: true });
        true
    }

    pub fn config(&self) -> &GatewayConfig {
        &self.config
    }

    fn pools(&self) -> Vec<Arc<FunctionPool>> {
        self.functions.read().unwrap_or_else(|e| e.into_inner()).values().cloned().collect()
    }

    pub fn function(&self, name: &str) -> Option<Arc<FunctionPool>> {
        self.functions.read().unwrap_or_else(|e| e.into_inner()).get(name).cloned()
    }

    pub fn functions(&self) -> Vec<Arc<FunctionPool>> {
        self.pools()
    }

    /// Registers (or replaces) a function; true if it is new. A replaced
    /// function's instances and seed are ended: new requests use the new registration.
    pub fn register(&self, name: &str, config: FunctionConfig) -> bool {
        let pool = Arc::new(FunctionPool::new(name, config, self.config.default_policy));
        let old = self.functions.write().unwrap_or_else(|e| e.into_inner()).insert(name.to_string(), pool);
        let new = old.is_none();
        if let Some(old) = old {
            self.retire(&old);
        }
        new
    }

    /// Removes a function; false if there was none.
    pub fn unregister(&self, name: &str) -> bool {
        let old = self.functions.write().unwrap_or_else(|e| e.into_inner()).remove(name);
        match old {
            Some(old) => {
                self.retire(&old);
                true
            }
            None => false,
        }
    }

    fn retire(&self, pool: &FunctionPool) {
        // Each killed instance's reader thread then takes it off its
        // worker's load (`on_end`), as for an instance that ended by itself.
        let seed = pool.remove();
        if let SeedState::Ready { worker, id, shared: false, .. } = &seed {
            self.drop_seed(worker, id);
        }
        self.seed_gone(&pool.name, Some(seed).filter(|s| *s != SeedState::None), false);
    }

    fn drop_seed(&self, worker: &str, id: &str) {
        let Some(w) = self.worker(worker) else { return };
        let auth = self.config.auth.clone();
        let id = id.to_string();
        std::thread::spawn(move || {
            let mut control = w.control.lock().unwrap_or_else(|e| e.into_inner());
            let result = with_control(&mut control, &w.addr, &auth, |c| c.drop_seed(&id));
            if let Err(e) = result {
                tracing::warn!(seed = %id, worker = %w.addr, error = %e, "cannot drop a removed function's seed");
            }
        });
    }

    fn worker(&self, addr: &str) -> Option<Arc<Worker>> {
        self.workers.read().unwrap_or_else(|e| e.into_inner()).iter().find(|w| w.addr == addr).cloned()
    }

    /// Replaces the set of workers (from etcd); workers that are gone lose
    /// their seeds and instances (busy ones get an error answer).
    pub fn set_workers(&self, addrs: &[String]) {
        let mut workers = self.workers.write().unwrap_or_else(|e| e.into_inner());
        let gone: Vec<String> = workers.iter().filter(|w| !addrs.contains(&w.addr)).map(|w| w.addr.clone()).collect();
        workers.retain(|w| addrs.contains(&w.addr));
        for a in addrs {
            if !workers.iter().any(|w| &w.addr == a) {
                workers.push(Arc::new(new_worker(a)));
            }
        }
        drop(workers);
        for g in gone {
            tracing::info!(worker = %g, "worker left the cluster");
            for f in self.pools() {
                let ended = f.end_instances_on(&g);
                if ended > 0 {
                    tracing::info!(function = %f.name, worker = %g, ended, "ended the instances on, or forked from, a worker that left");
                }
                self.seed_gone(&f.name, f.forget_seed_on(&g), false);
            }
        }
    }

    /// Each worker's address and whether it is up (not passed over after a failure).
    pub fn workers_status(&self) -> Vec<WorkerStatus> {
        let now = Instant::now();
        let workers = self.workers.read().unwrap_or_else(|e| e.into_inner());
        workers.iter().map(|w| WorkerStatus { addr: w.addr.clone(), up: w.is_up(now) }).collect()
    }

    pub fn worker_addrs(&self) -> Vec<String> {
        self.workers.read().unwrap_or_else(|e| e.into_inner()).iter().map(|w| w.addr.clone()).collect()
    }

    /// The least loaded worker that is up, other than those in `skip`; of
    /// equally loaded ones `prefer` (a fork's seed host, whose daemon reads
    /// the seed's pages in place), else the next in turn.
    fn pick_worker(&self, skip: &[String], prefer: Option<&str>) -> Option<Arc<Worker>> {
        let now = Instant::now();
        let workers = self.workers.read().unwrap_or_else(|e| e.into_inner());
        let up: Vec<&Arc<Worker>> = workers.iter().filter(|w| w.is_up(now) && !skip.contains(&w.addr)).collect();
        let least = up.iter().map(|w| w.load.load(Ordering::Relaxed)).min()?;
        let tied: Vec<&&Arc<Worker>> = up.iter().filter(|w| w.load.load(Ordering::Relaxed) == least).collect();
        if let Some(w) = tied.iter().find(|w| Some(w.addr.as_str()) == prefer) {
            return Some((**w).clone());
        }
        let i = self.round_robin.fetch_add(1, Ordering::Relaxed) % tied.len();
        Some((*tied[i]).clone())
    }

    fn placed_gone(&self, addr: &str) {
        if let Some(w) = self.worker(addr) {
            let _ = w.load.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        }
    }

    fn mark_down(&self, addr: &str) {
        if let Some(w) = self.worker(addr) {
            *w.down_until.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now() + self.config.worker_retry);
        }
        for f in self.pools() {
            self.seed_gone(&f.name, f.forget_seed_on(addr), false);
        }
    }

    /// Runs `function`'s handler once with `body`.
    pub async fn invoke(self: &Arc<Gateway>, function: &str, body: Vec<u8>) -> Result<Invoked, InvokeError> {
        let t0 = Instant::now();
        let pool = self.function(function).ok_or_else(|| InvokeError::UnknownFunction(function.to_string()))?;
        let result = self.invoke_on(&pool, body, t0).await;
        self.metrics.observe(function, &result, t0.elapsed());
        result
    }

    async fn invoke_on(self: &Arc<Gateway>, pool: &Arc<FunctionPool>, body: Vec<u8>, t0: Instant) -> Result<Invoked, InvokeError> {
        let timeout = pool.config.timeout();
        let deadline = tokio::time::Instant::from_std(t0 + timeout);
        let (instance, start) = loop {
            let freed = pool.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            match pool.acquire() {
                Acquired::Warm(i) => break (i, StartKind::Warm),
                Acquired::Start => match self.start_instance(pool, deadline).await {
                    Ok((i, kind)) => {
                        if !pool.started(&i) {
                            return Err(InvokeError::Removed(pool.name.clone()));
                        }
                        break (i, kind);
                    }
                    Err(e) => {
                        pool.start_failed();
                        return Err(e);
                    }
                },
                Acquired::Full => {
                    if tokio::time::timeout_at(deadline, freed).await.is_err() {
                        return Err(InvokeError::QueueTimeout {
                            function: pool.name.clone(),
                            timeout,
                            max: pool.config.max_instances,
                        });
                    }
                }
                Acquired::Removed => return Err(InvokeError::Removed(pool.name.clone())),
            }
        };
        let left = deadline.saturating_duration_since(tokio::time::Instant::now()).max(Duration::from_millis(1));
        let answer = instance.invoke(body, left).await;
        let (name, worker) = (instance.name.clone(), instance.worker.clone());
        pool.release(instance);
        match answer {
            Ok(reply) if reply.ok => Ok(Invoked { body: reply.body, start, instance: name, worker }),
            Ok(reply) => Err(InvokeError::Handler(String::from_utf8_lossy(&reply.body).into_owned())),
            Err(e) => Err(InvokeError::Instance(e)),
        }
    }

    /// Starts a new instance of `pool` by its policy; with `fork`, waits for
    /// the seed while another start prepares it.
    async fn start_instance(
        self: &Arc<Gateway>,
        pool: &Arc<FunctionPool>,
        deadline: tokio::time::Instant,
    ) -> Result<(Arc<Instance>, StartKind), InvokeError> {
        loop {
            let changed = pool.seed_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let start = match (pool.policy, pool.seed()) {
                (Policy::Cold, _) => InstanceStart::Cold { prepare_as: None },
                (Policy::Fork, SeedState::Ready { worker, id, .. }) => InstanceStart::Fork { seed_host: worker, seed_id: id },
                (Policy::Fork, SeedState::None) if self.adopt_shared_seed(pool) => continue,
                (Policy::Fork, SeedState::None) if pool.begin_seeding() => {
                    InstanceStart::Cold { prepare_as: Some(format!("{}{}-{}", self.seed_prefix(pool), self.nonce, self.next_id())) }
                }
                (Policy::Fork, _) => {
                    // Another request is making the seed: a fork from it comes sooner than a cold start.
                    if tokio::time::timeout_at(deadline, changed).await.is_err() {
                        return Err(InvokeError::QueueTimeout {
                            function: pool.name.clone(),
                            timeout: pool.config.timeout(),
                            max: pool.config.max_instances,
                        });
                    }
                    continue;
                }
            };
            let seeding = matches!(start, InstanceStart::Cold { prepare_as: Some(_) });
            let forking = match &start {
                InstanceStart::Fork { seed_id, .. } => Some(seed_id.clone()),
                _ => None,
            };
            match self.start_on_some_worker(pool, start).await {
                Ok(started) => {
                    if seeding {
                        match &started.prepared {
                            Some((id, generation)) => {
                                let worker = started.instance.worker.clone();
                                if let Some(c) = self.cluster() {
                                    c.seed_ready(&pool.name, &worker, id, *generation);
                                }
                                pool.set_seed(SeedState::Ready { worker, id: id.clone(), generation: *generation, shared: false });
                            }
                            None => pool.set_seed(SeedState::None),
                        }
                    }
                    let kind = if forking.is_some() { StartKind::Fork } else { StartKind::Cold };
                    self.metrics.started(&pool.name, kind, started.times.ready_us);
                    return Ok((started.instance, kind));
                }
                Err(e) => {
                    if seeding {
                        pool.set_seed(SeedState::None);
                    }
                    if let (Some(id), InvokeError::Start { error: StartError::Refused { .. }, .. }) = (&forking, &e) {
                        // The seed is gone or unusable: the next start makes a new one.
                        tracing::warn!(function = %pool.name, seed = %id, error = %e, "a fork failed; the function gets a new seed");
                        let forgotten = pool.forget_seed(id);
                        self.seed_gone(&pool.name, forgotten, true);
                        continue;
                    }
                    return Err(e);
                }
            }
        }
    }

    fn next_id(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    /// Tries the least loaded worker first, then the others.
    async fn start_on_some_worker(self: &Arc<Gateway>, pool: &Arc<FunctionPool>, start: InstanceStart) -> Result<Started, InvokeError> {
        let mut tried = Vec::new();
        let seed_host = match &start {
            InstanceStart::Fork { seed_host, .. } => Some(seed_host.clone()),
            InstanceStart::Cold { .. } => None,
        };
        loop {
            let Some(worker) = self.pick_worker(&tried, seed_host.as_deref()) else {
                return Err(match tried.is_empty() {
                    true => InvokeError::NoWorker,
                    false => InvokeError::Start {
                        function: pool.name.clone(),
                        error: StartError::Unreachable { worker: tried.join(", "), message: "no worker could be reached".into() },
                    },
                });
            };
            tried.push(worker.addr.clone());
            let spec = InstanceSpec {
                name: format!("{}-{}-{}", pool.name, self.nonce, self.next_id()),
                function: pool.name.clone(),
                dir: pool.config.dir.clone(),
                start: start.clone(),
                memory_bytes: Some(pool.config.memory_bytes()),
                offload_idle_after_ms: pool.config.offload_idle_ms(),
                offload_policy: pool.config.offload_policy,
            };
            worker.load.fetch_add(1, Ordering::Relaxed);
            let (g, p, w) = (self.clone(), Arc::downgrade(pool), worker.addr.clone());
            let auth = self.config.auth.clone();
            let within = self.config.start_timeout;
            let name = spec.name.clone();
            let on_end = move || {
                g.placed_gone(&w);
                if let Some(p) = p.upgrade() {
                    p.ended(&name);
                }
            };
            let addr = worker.addr.clone();
            let started = tokio::task::spawn_blocking(move || Instance::start(&addr, &auth, &spec, within, on_end))
                .await
                .unwrap_or_else(|e| Err(StartError::Refused { worker: worker.addr.clone(), message: e.to_string() }));
            match started {
                Ok(s) => return Ok(s),
                Err(error) => {
                    self.placed_gone(&worker.addr);
                    if error.is_worker_fault() {
                        tracing::warn!(worker = %worker.addr, %error, "worker unreachable; trying another");
                        self.mark_down(&worker.addr);
                        if matches!(start, InstanceStart::Fork { .. }) {
                            return Err(InvokeError::Start {
                                function: pool.name.clone(),
                                error: StartError::Refused { worker: worker.addr.clone(), message: error.to_string() },
                            });
                        }
                        continue;
                    }
                    return Err(InvokeError::Start { function: pool.name.clone(), error });
                }
            }
        }
    }

    /// Polls every worker's instances' memory (blocking).
    fn poll_memory(&self) {
        let workers: Vec<Arc<Worker>> = self.workers.read().unwrap_or_else(|e| e.into_inner()).clone();
        let mut per_function: HashMap<String, FunctionMemory> = HashMap::new();
        let seeds: HashMap<String, String> = self
            .pools()
            .iter()
            .filter_map(|p| match p.seed() {
                SeedState::Ready { id, .. } => Some((id, p.name.clone())),
                _ => None,
            })
            .collect();
        let now = Instant::now();
        let mut per_instance: HashMap<String, u64> = HashMap::new();
        for w in workers.iter().filter(|w| w.is_up(now)) {
            let mut control = w.control.lock().unwrap_or_else(|e| e.into_inner());
            match with_control(&mut control, &w.addr, &self.config.auth, |c| c.list_instances()) {
                Ok(usage) => {
                    // Only this gateway's instances (another may share the workers).
                    let ours = format!("-{}-", self.nonce);
                    for i in usage.instances.into_iter().filter(|i| i.name.contains(&ours)) {
                        per_function.entry(i.function).or_default().instances_bytes += i.memory_bytes;
                        per_instance.insert(i.name, i.memory_bytes);
                    }
                    for s in usage.seeds {
                        if let Some(f) = seeds.get(&s.id) {
                            per_function.entry(f.clone()).or_default().seed_bytes += s.bytes;
                        }
                    }
                }
                Err(e) => tracing::debug!(worker = %w.addr, error = %e, "cannot poll a worker's memory"),
            }
        }
        let total: u64 = per_function.values().map(|m| m.instances_bytes + m.seed_bytes).sum();
        *self.memory.write().unwrap_or_else(|e| e.into_inner()) = per_function;
        if let Some(budget) = self.config.memory_budget {
            self.make_room(budget, total, &per_instance);
        }
    }

    /// Ends idle instances, the least recently used first, until `total`
    /// (the memory last polled) is within `budget`, counting each ended one
    /// at what it held then.
    fn make_room(&self, budget: u64, mut total: u64, per_instance: &HashMap<String, u64>) {
        if total <= budget {
            return;
        }
        let mut idle: Vec<(Instant, Arc<FunctionPool>, String)> =
            self.pools().into_iter().flat_map(|p| p.idle_since().into_iter().map(move |(name, since)| (since, p.clone(), name))).collect();
        idle.sort_by_key(|(since, _, _)| *since);
        for (_, pool, name) in idle {
            if total <= budget {
                break;
            }
            if pool.end_idle(&name) {
                total = total.saturating_sub(per_instance.get(&name).copied().unwrap_or(0));
                self.metrics.evicted(&pool.name);
                tracing::debug!(function = %pool.name, instance = %name, "idle instance ended: over the memory budget");
            }
        }
    }

    /// The memory of `function`'s instances and seed, as last polled.
    pub fn memory_of(&self, function: &str) -> FunctionMemory {
        self.memory.read().unwrap_or_else(|e| e.into_inner()).get(function).copied().unwrap_or_default()
    }
}

fn new_worker(addr: &str) -> Worker {
    Worker { addr: addr.to_string(), load: AtomicUsize::new(0), down_until: Mutex::new(None), control: Mutex::new(None) }
}

/// Runs `f` on the worker's control connection, connecting (once more) if needed.
fn with_control<T>(
    slot: &mut Option<WorkerConn>,
    addr: &str,
    auth: &WorkerAuth,
    f: impl Fn(&mut WorkerConn) -> Result<T, mitosis_proto::ProtoError>,
) -> Result<T, mitosis_proto::ProtoError> {
    for attempt in 0..2 {
        if slot.is_none() {
            *slot = Some(WorkerConn::connect(addr, auth)?);
        }
        let conn = slot.as_mut().expect("just connected");
        match f(conn) {
            Ok(v) => return Ok(v),
            Err(mitosis_proto::ProtoError::Remote(e)) => return Err(mitosis_proto::ProtoError::Remote(e)),
            Err(e) => {
                *slot = None;
                if attempt == 1 {
                    return Err(e);
                }
            }
        }
    }
    unreachable!("the loop returns")
}
