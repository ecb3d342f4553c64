//! A function's instances: which one serves a request, and when a new one
//! may start.
//!
//! Idle instances are reused last-in first-out (the most recently used one
//! first, as FaaSMem and OpenWhisk do: it is the warmest). A new instance may
//! start only while the function has fewer than `max_instances` live or
//! starting ones; otherwise the request waits for one to come free, up to
//! its timeout. Idle instances older than the keep-alive are ended by
//! [`FunctionPool::reap`]; with a keep-alive of 0 an instance ends after its
//! request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::function::{FunctionConfig, Policy};
use crate::instance::Instance;

/// Where a function's seed lives (fork policy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeedState {
    /// None yet: the next new instance is a cold start that prepares itself.
    None,
    /// That cold start is under way; new instances wait for it.
    Seeding,
    /// Forks come from seed `id` at worker `worker`. `shared`: another
    /// gateway prepared it (found in the cluster's view, `crate::cluster`);
    /// this one forks from it but never drops it.
    Ready { worker: String, id: String, generation: u64, shared: bool },
}

struct Idle {
    instance: Arc<Instance>,
    since: Instant,
}

#[derive(Default)]
struct Counts {
    busy: usize,
    starting: usize,
}

struct Inner {
    idle: Vec<Idle>,
    counts: Counts,
    live: HashMap<String, Arc<Instance>>,
    seed: SeedState,
    removed: bool,
}

/// The outcome of [`FunctionPool::acquire`].
pub enum Acquired {
    /// An idle instance, now busy.
    Warm(Arc<Instance>),
    /// Room for a new instance: the caller starts one, then calls
    /// [`FunctionPool::started`] or [`FunctionPool::start_failed`].
    Start,
    /// Every instance is busy and there is no room: wait on [`FunctionPool::freed`].
    Full,
    /// The function was removed.
    Removed,
}

/// Counts of a function's instances, for metrics and `GET /functions`.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct PoolCounts {
    pub live: usize,
    pub idle: usize,
    pub busy: usize,
    pub starting: usize,
}

/// One registered function and its instances.
pub struct FunctionPool {
    pub name: String,
    pub config: FunctionConfig,
    /// The policy in force (the registration's, or the gateway's default).
    pub policy: Policy,
    inner: Mutex<Inner>,
    /// Signalled when an instance comes free or room opens up.
    pub freed: Notify,
    /// Signalled (to all) when the seed's state changes.
    pub seed_changed: Notify,
}

impl FunctionPool {
    pub fn new(name: &str, config: FunctionConfig, default_policy: Policy) -> FunctionPool {
        let policy = config.policy.unwrap_or(default_policy);
        FunctionPool {
            name: name.to_string(),
            config,
            policy,
            inner: Mutex::new(Inner {
                idle: Vec::new(),
                counts: Counts::default(),
                live: HashMap::new(),
                seed: SeedState::None,
                removed: false,
            }),
            freed: Notify::new(),
            seed_changed: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the most recently used live idle instance, or room for a new one.
    pub fn acquire(&self) -> Acquired {
        let mut inner = self.lock();
        if inner.removed {
            return Acquired::Removed;
        }
        while let Some(idle) = inner.idle.pop() {
            if idle.instance.is_alive() {
                inner.counts.busy += 1;
                return Acquired::Warm(idle.instance);
            }
            inner.live.remove(&idle.instance.name);
        }
        let max = usize::try_from(self.config.max_instances).unwrap_or(usize::MAX);
        if inner.counts.busy + inner.counts.starting + inner.idle.len() < max {
            inner.counts.starting += 1;
            return Acquired::Start;
        }
        Acquired::Full
    }

    /// A started instance joins the pool, busy with the request that started it.
    /// Returns false (and the caller drops it) if the function was removed meanwhile.
    pub fn started(&self, instance: &Arc<Instance>) -> bool {
        let mut inner = self.lock();
        inner.counts.starting -= 1;
        if inner.removed {
            drop(inner);
            self.freed.notify_one();
            return false;
        }
        inner.counts.busy += 1;
        inner.live.insert(instance.name.clone(), instance.clone());
        true
    }

    pub fn start_failed(&self) {
        self.lock().counts.starting -= 1;
        self.freed.notify_one();
    }

    /// The request on `instance` is done: it goes back to the idle stack,
    /// or ends (keep-alive 0, dead, function removed).
    pub fn release(&self, instance: Arc<Instance>) {
        let mut inner = self.lock();
        inner.counts.busy -= 1;
        if instance.is_alive() && !inner.removed && self.config.keep_alive_s > 0 {
            inner.idle.push(Idle { instance, since: Instant::now() });
        } else {
            inner.live.remove(&instance.name);
            instance.kill();
        }
        drop(inner);
        self.freed.notify_one();
    }

    /// An instance ended on its own (called from its reader thread).
    pub fn ended(&self, name: &str) {
        let mut inner = self.lock();
        inner.live.remove(name);
        inner.idle.retain(|i| i.instance.name != name);
        drop(inner);
        self.freed.notify_one();
    }

    /// Its idle instances and since when each has been idle.
    pub fn idle_since(&self) -> Vec<(String, Instant)> {
        self.lock().idle.iter().map(|i| (i.instance.name.clone(), i.since)).collect()
    }

    /// Ends idle instance `name` (to make room in the gateway's memory
    /// budget); false if it is not idle any more.
    pub fn end_idle(&self, name: &str) -> bool {
        let mut inner = self.lock();
        let Some(at) = inner.idle.iter().position(|i| i.instance.name == name) else { return false };
        let idle = inner.idle.remove(at);
        inner.live.remove(name);
        idle.instance.kill();
        drop(inner);
        // Room for a request that waits at the instance cap.
        self.freed.notify_one();
        true
    }

    /// Ends idle instances past their keep-alive; returns how many.
    pub fn reap(&self, now: Instant) -> usize {
        let keep = self.config.keep_alive();
        let mut inner = self.lock();
        let before = inner.idle.len();
        let mut gone = Vec::new();
        inner.idle.retain(|i| {
            let keep_it = i.instance.is_alive() && now.duration_since(i.since) < keep;
            if !keep_it {
                gone.push(i.instance.clone());
            }
            keep_it
        });
        for i in &gone {
            inner.live.remove(&i.name);
            i.kill();
        }
        before - inner.idle.len()
    }

    /// Marks the function removed and ends every instance; returns its seed.
    pub fn remove(&self) -> SeedState {
        let mut inner = self.lock();
        inner.removed = true;
        for (_, i) in inner.live.drain() {
            i.kill();
        }
        inner.idle.clear();
        let seed = std::mem::replace(&mut inner.seed, SeedState::None);
        drop(inner);
        self.freed.notify_waiters();
        self.seed_changed.notify_waiters();
        seed
    }

    pub fn counts(&self) -> PoolCounts {
        let inner = self.lock();
        PoolCounts { live: inner.live.len(), idle: inner.idle.len(), busy: inner.counts.busy, starting: inner.counts.starting }
    }

    /// Names and workers of the live instances.
    pub fn live(&self) -> Vec<(String, String)> {
        self.lock().live.values().map(|i| (i.name.clone(), i.worker.clone())).collect()
    }

    pub fn seed(&self) -> SeedState {
        self.lock().seed.clone()
    }

    /// Moves the seed from `None` to `Seeding`; false if another start got there first.
    pub fn begin_seeding(&self) -> bool {
        let mut inner = self.lock();
        if inner.seed == SeedState::None {
            inner.seed = SeedState::Seeding;
            true
        } else {
            false
        }
    }

    /// Sets the seed (or clears it: `SeedState::None`) and wakes those waiting for it.
    pub fn set_seed(&self, seed: SeedState) {
        let mut inner = self.lock();
        if !inner.removed {
            inner.seed = seed;
        }
        drop(inner);
        self.seed_changed.notify_waiters();
    }

    /// Takes `seed` (another gateway's) if the function has none; false if it has one by now.
    pub fn adopt_seed(&self, seed: SeedState) -> bool {
        let mut inner = self.lock();
        let adopted = !inner.removed && inner.seed == SeedState::None;
        if adopted {
            inner.seed = seed;
        }
        drop(inner);
        self.seed_changed.notify_waiters();
        adopted
    }

    /// Clears the seed if it is still `id` (a fork from it failed); returns it.
    pub fn forget_seed(&self, id: &str) -> Option<SeedState> {
        self.forget_seed_if(|_, i| i == id)
    }

    /// Clears a seed that lives on `worker` (the worker is gone); returns it.
    pub fn forget_seed_on(&self, worker: &str) -> Option<SeedState> {
        self.forget_seed_if(|w, _| w == worker)
    }

    fn forget_seed_if(&self, gone: impl Fn(&str, &str) -> bool) -> Option<SeedState> {
        let mut inner = self.lock();
        let forgotten = match &inner.seed {
            SeedState::Ready { worker, id, .. } if gone(worker, id) => Some(std::mem::replace(&mut inner.seed, SeedState::None)),
            _ => None,
        };
        drop(inner);
        self.seed_changed.notify_waiters();
        forgotten
    }

    /// Ends the instances on `worker` (it left the cluster), and those
    /// forked from a seed on it (their next missing page would kill them,
    /// in the middle of a request): idle ones at once; busy ones too, so
    /// that their requests get an error answer now rather than whenever
    /// the worker's connection times out.
    pub fn end_instances_on(&self, worker: &str) -> usize {
        let mut inner = self.lock();
        let depends = |i: &Instance| i.worker == worker || i.seed_host.as_deref() == Some(worker);
        let gone: Vec<Arc<Instance>> = inner.live.values().filter(|i| depends(i)).cloned().collect();
        for i in &gone {
            inner.live.remove(&i.name);
            i.kill();
        }
        inner.idle.retain(|i| !depends(&i.instance));
        drop(inner);
        self.freed.notify_waiters();
        gone.len()
    }
}

/// Idle time after which a keep-alive reaper should run again.
pub const REAP_EVERY: Duration = Duration::from_millis(250);
