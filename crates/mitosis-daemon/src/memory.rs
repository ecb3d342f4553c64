//! What a function instance's memory does between its requests: FaaSMem's
//! packets and semi-warm state, built in user space on a worker's memory
//! node (`mitosis daemon --memnode`), for instances whose spec asks for it
//! (`offload_idle_after_ms`; a worker's default `--offload-idle-after`),
//! under their function's [`OffloadPolicy`].
//!
//! **Packets.** The relay thread cuts the instance's life into phases at
//! its own boundaries with a barrier ([`crate::offload::barrier`], see
//! `mitosis_pager::packets`): the runtime is up, its initialisation is
//! done, it is ready, and each answer. A cold-started instance's memory is
//! adopted at the first (a seed's preparer at `Ready`, after its prepare).
//! After each answer the pages not touched in the last two phases are
//! offloaded, at the first answer (the runtime's packet) and then at most
//! every [`ROLLBACK_EVERY`] (FaaSMem's periodic rollback of the
//! initialisation's packet, a sliding window of the working set).
//!
//! **Semi-warm.** An instance that has answered everything asked of it and
//! then waited long enough turns semi-warm. "Long enough" is the P99 of its
//! function's reuse intervals on this worker (the time from an instance's
//! answer to its next request, learned online from the last
//! [`REUSE_KEPT`]), and at least the instance's idle setting. Its memory
//! then drains gradually ([`Drain`]: by default FaaSMem's 1% of what it
//! holds per second, down to 8 MiB), each step one offload with a budget,
//! clean pages first.
//!
//! Under `mitosis` pages unchanged since they came from the seed are
//! dropped at no transfer; under `faasmem` they go to the memory node like
//! the others, since FaaSMem has no seed. The next request stops the drain
//! and (under `mitosis`) prefetches the last two request phases' pages
//! back before the runtime reads the request (prefetch on reuse).
//!
//! A cold-started instance's first offload adopts its memory; since no seed
//! holds any of it, every page goes to the node. One that prepared a seed
//! is offloaded too: it prepared with `copy`, so the seed is the daemon's
//! copy, not its memory.
//!
//! **`tmo`**, FaaSMem's other baseline, is none of the above: the kernel's
//! own reclaim, driven the way FaaSMem imitated Meta's TMO ([`Tmo`]), to
//! swap (`mitosis daemon --zram-swap`, see [`crate::swap`]). What cgroup
//! v1 lacks, and what stands in for it: `memory.reclaim` (the limit is set
//! under the usage for a moment, `ContainerCgroup::reclaim`) and per-cgroup
//! memory pressure (the instance also joins a cgroup of its own on the
//! unified hierarchy, whose `memory.pressure` every v2 cgroup has).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mitosis_pager::offload::ScanLimits;
use mitosis_proto::instance::OffloadPolicy;
use mitosis_sys::PAGE;

use crate::Daemon;

/// Least time between two packet offloads of one instance after its first
/// (FaaSMem: 10 s).
pub const ROLLBACK_EVERY: Duration = Duration::from_secs(10);

/// A phase boundary of an instance, as its relay sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Boundary {
    RuntimeReady,
    InitDone,
    Ready,
}

/// How a semi-warm instance drains (`mitosis daemon --semi-warm-drain
/// --semi-warm-floor`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Drain {
    /// Share of what the instance holds given back per step, in percent.
    pub percent_per_step: f64,
    /// It drains no further than this (bytes resident).
    pub floor_bytes: u64,
}

impl Default for Drain {
    /// FaaSMem's: 1% per second, down to 8 MiB.
    fn default() -> Self {
        Drain { percent_per_step: 1.0, floor_bytes: 8 << 20 }
    }
}

impl Drain {
    /// What one step gives back of an instance holding `held` bytes:
    /// `None` once it is at the floor.
    pub fn budget(&self, held: u64) -> Option<u64> {
        let above = held.checked_sub(self.floor_bytes).filter(|&b| b >= PAGE)?;
        let share = (held as f64 * self.percent_per_step / 100.0) as u64;
        Some(share.clamp(PAGE, above))
    }
}

/// Time between two drain steps.
pub const STEP: Duration = Duration::from_secs(1);

/// The `tmo` policy's controller, as FaaSMem imitated TMO (its Senpai) on
/// cgroup v2: every `interval`, reclaim `ratio` of what the instance holds,
/// scaled down linearly as its memory pressure (PSI `some avg10`, percent)
/// nears `pressure_threshold`, and nothing from there on; at least 128
/// pages when anything (`mitosis daemon --tmo-interval --tmo-ratio`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tmo {
    pub interval: Duration,
    pub ratio: f64,
    pub pressure_threshold: f64,
}

impl Default for Tmo {
    /// FaaSMem's: 0.05% every 6 s under 0.1% pressure.
    fn default() -> Self {
        Tmo { interval: Duration::from_secs(6), ratio: 0.0005, pressure_threshold: 0.1 }
    }
}

impl Tmo {
    /// Bytes to reclaim from an instance holding `held` under `pressure`.
    pub fn reclaim_bytes(&self, held: u64, pressure: f64) -> u64 {
        let scale = (1.0 - pressure / self.pressure_threshold).max(0.0);
        if scale <= 0.0 || held == 0 {
            return 0;
        }
        ((held as f64 * self.ratio * scale) as u64).max(128 * PAGE)
    }
}

/// A `tmo` instance's controller state.
struct TmoControl {
    settings: Tmo,
    container: Arc<mitosis_container::Container>,
    last_step: Mutex<Instant>,
}

/// Reuse intervals kept per function.
pub const REUSE_KEPT: usize = 512;

/// The recent reuse intervals of one function's instances on this worker.
#[derive(Debug, Default)]
pub struct ReuseIntervals {
    recent: Mutex<VecDeque<Duration>>,
}

impl ReuseIntervals {
    pub fn record(&self, interval: Duration) {
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if recent.len() == REUSE_KEPT {
            recent.pop_front();
        }
        recent.push_back(interval);
    }

    /// The 99th percentile (nearest rank); `None` before any reuse.
    pub fn p99(&self) -> Option<Duration> {
        let mut all: Vec<Duration> = self.recent.lock().unwrap_or_else(|e| e.into_inner()).iter().copied().collect();
        all.sort();
        nearest_rank(&all, 99)
    }
}

/// The `q`th percentile of `sorted` by nearest rank; `None` when it is empty.
fn nearest_rank<T: Copy>(sorted: &[T], q: usize) -> Option<T> {
    let rank = (sorted.len() * q).div_ceil(100).clamp(1, sorted.len().max(1));
    sorted.get(rank - 1).copied()
}

/// Every function's reuse intervals on this worker.
#[derive(Debug, Default)]
pub struct ReuseHistory {
    by_function: Mutex<HashMap<String, Arc<ReuseIntervals>>>,
}

impl ReuseHistory {
    pub fn of(&self, function: &str) -> Arc<ReuseIntervals> {
        self.by_function.lock().unwrap_or_else(|e| e.into_inner()).entry(function.to_string()).or_default().clone()
    }
}

/// How long this daemon's packet barriers took, in all and their pagers'
/// part (the last [`BARRIERS_KEPT`]).
#[derive(Debug, Default)]
pub struct BarrierTimes {
    recent: Mutex<(u64, VecDeque<(u64, u64)>)>,
}

pub const BARRIERS_KEPT: usize = 4096;

impl BarrierTimes {
    pub fn record(&self, us: u64, pager_us: u64) {
        let mut r = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        r.0 += 1;
        if r.1.len() == BARRIERS_KEPT {
            r.1.pop_front();
        }
        r.1.push_back((us, pager_us));
    }

    pub fn stats(&self) -> mitosis_proto::local::BarrierStats {
        let (count, recent) = {
            let r = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            (r.0, r.1.iter().copied().collect::<Vec<(u64, u64)>>())
        };
        let sorted = |pick: fn(&(u64, u64)) -> u64| {
            let mut all: Vec<u64> = recent.iter().map(pick).collect();
            all.sort_unstable();
            all
        };
        let at = |all: &[u64], q: usize| nearest_rank(all, q).unwrap_or(0);
        let (all, pager) = (sorted(|r| r.0), sorted(|r| r.1));
        mitosis_proto::local::BarrierStats {
            count,
            p50_us: at(&all, 50),
            p99_us: at(&all, 99),
            max_us: all.last().copied().unwrap_or(0),
            pager_p50_us: at(&pager, 50),
            pager_p99_us: at(&pager, 99),
        }
    }
}

/// One instance's packets, idle clock and drain.
pub struct InstanceMemory {
    /// The least idle time before it turns semi-warm.
    after: Duration,
    policy: OffloadPolicy,
    drain: Drain,
    pid: i32,
    reuse: Arc<ReuseIntervals>,
    /// A request is in the runtime's hands.
    busy: AtomicBool,
    /// When it last answered (or started), and whether it has answered yet.
    last_answer: Mutex<(Instant, bool)>,
    /// Something was offloaded since its last request: the next one prefetches.
    offloaded: AtomicBool,
    /// Nothing more to give back until its next request.
    drained: AtomicBool,
    /// When the last drain step ran (since the last request).
    last_step: Mutex<Option<Instant>>,
    /// Packets: the phase running now (`None`: no barrier yet, or packets
    /// are off or failed), and when the last packet offload ran.
    phase: Mutex<Option<u32>>,
    last_rollback: Mutex<Option<Instant>>,
    /// The boundary of its first barrier: a cold start's runtime start (its
    /// memory is adopted there), else `Ready` (a fork start reports only
    /// that; a seed's preparer is adopted only after its prepare).
    first_barrier: Boundary,
    /// Under `tmo`: its controller.
    tmo: Option<TmoControl>,
}

impl InstanceMemory {
    pub fn new(after: Duration, policy: OffloadPolicy, drain: Drain, pid: i32, reuse: Arc<ReuseIntervals>) -> InstanceMemory {
        InstanceMemory {
            after,
            policy,
            drain,
            pid,
            reuse,
            busy: AtomicBool::new(false),
            last_answer: Mutex::new((Instant::now(), false)),
            offloaded: AtomicBool::new(false),
            drained: AtomicBool::new(false),
            last_step: Mutex::new(None),
            phase: Mutex::new(None),
            last_rollback: Mutex::new(None),
            first_barrier: Boundary::Ready,
            tmo: None,
        }
    }

    /// Under the `tmo` policy: lets the instance's container swap, puts it
    /// where its memory pressure is read, and starts the controller's clock.
    /// Without pressure readings it runs as if there were none.
    pub fn with_tmo(mut self, settings: Tmo, container: Arc<mitosis_container::Container>) -> InstanceMemory {
        if !self.policy.tmo {
            return self;
        }
        if let Err(e) = container.allow_swap() {
            tracing::warn!(pid = self.pid, error = %e, "tmo: the instance may not swap; only file pages can be reclaimed");
        }
        if let Err(e) = container.join_pressure(self.pid) {
            tracing::warn!(pid = self.pid, error = %e, "tmo: no memory pressure for this instance; reclaiming as if there were none");
        }
        self.tmo = Some(TmoControl { settings, container, last_step: Mutex::new(Instant::now()) });
        self
    }

    /// Its packets start at `boundary` (a cold start that prepares no seed:
    /// [`Boundary::RuntimeReady`]).
    pub fn first_barrier_at(mut self, boundary: Boundary) -> InstanceMemory {
        self.first_barrier = boundary;
        self
    }

    /// A phase of the instance's start ended (its runtime reported it): a
    /// barrier at its first boundary, and at the end of its initialisation
    /// once packets have started.
    pub fn on_boundary(&self, daemon: &Daemon, boundary: Boundary) {
        let started = self.phase.lock().unwrap_or_else(|e| e.into_inner()).is_some();
        let cut = boundary == self.first_barrier || (started && boundary == Boundary::InitDone);
        if self.policy.packets && cut {
            self.barrier(daemon);
        }
    }

    /// Ends the current phase; packets stop (for this instance) if it fails.
    fn barrier(&self, daemon: &Daemon) -> Option<u32> {
        let child = daemon.children.find(&self.pid.to_string())?;
        match crate::offload::barrier(daemon, &child) {
            Ok((phase, written, took, pager)) => {
                let (us, pager_us) = (crate::offload::micros(took), crate::offload::micros(pager));
                daemon.barriers.record(us, pager_us);
                tracing::debug!(pid = self.pid, phase, written, us, pager_us, "packet barrier");
                *self.phase.lock().unwrap_or_else(|e| e.into_inner()) = Some(phase);
                Some(phase)
            }
            Err(e) => {
                tracing::warn!(pid = self.pid, error = %e.message, "no packets for this instance");
                *self.phase.lock().unwrap_or_else(|e| e.into_inner()) = None;
                None
            }
        }
    }

    /// After an answer: ends the request's phase and, at the first answer
    /// and then at most every [`ROLLBACK_EVERY`], offloads the pages not
    /// touched in the last two phases.
    fn after_answer(&self, daemon: &Daemon) {
        if !self.policy.packets || self.phase.lock().unwrap_or_else(|e| e.into_inner()).is_none() {
            return;
        }
        let Some(phase) = self.barrier(daemon) else { return };
        // Phases 0 and 1 are the last two until phase 3 runs: nothing is older.
        if phase < 3 {
            return;
        }
        let due = {
            let mut last = self.last_rollback.lock().unwrap_or_else(|e| e.into_inner());
            let due = last.is_none_or(|at| at.elapsed() >= ROLLBACK_EVERY);
            if due {
                *last = Some(Instant::now());
            }
            due
        };
        if !due {
            return;
        }
        let Some(child) = daemon.children.find(&self.pid.to_string()) else { return };
        let limits = ScanLimits { budget: None, seed_backed: self.policy.seed_backed, older_than: Some(phase - 2) };
        match crate::offload::offload(daemon, &child, limits) {
            Ok(r) => {
                let given = r.pages_given();
                if given > 0 {
                    self.offloaded.store(true, Ordering::SeqCst);
                }
                tracing::debug!(pid = self.pid, older_than = phase - 2, pages_put = r.pages_put, pages = given, rss_after = r.rss_after_bytes, "packets offloaded");
            }
            Err(e) => tracing::warn!(pid = self.pid, error = %e.message, "packets not offloaded"),
        }
    }

    /// How long it waits idle before turning semi-warm.
    pub fn delay(&self) -> Duration {
        self.reuse.p99().map_or(self.after, |p| p.max(self.after))
    }

    /// A request came for the instance: its drain stops, and if it gave
    /// memory back, that memory starts coming back now.
    pub fn on_request(&self, daemon: &Daemon) {
        self.busy.store(true, Ordering::SeqCst);
        {
            let (at, answered) = *self.last_answer.lock().unwrap_or_else(|e| e.into_inner());
            if answered {
                self.reuse.record(at.elapsed());
            }
        }
        *self.last_step.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.drained.store(false, Ordering::SeqCst);
        if !self.offloaded.swap(false, Ordering::SeqCst) || !self.policy.prefetch {
            return;
        }
        let Some(child) = daemon.children.find(&self.pid.to_string()) else { return };
        // With packets, the last two request phases' pages (the instance's
        // working set); without, everything.
        let phase = *self.phase.lock().unwrap_or_else(|e| e.into_inner());
        let from_phase = phase.map(|p| p.saturating_sub(2));
        match crate::offload::prefetch(&child, from_phase) {
            Ok((node, seed)) => tracing::debug!(pid = self.pid, from_node = node, from_seed = seed, "instance reused: prefetching its memory"),
            Err(e) => tracing::warn!(pid = self.pid, error = %e.message, "instance reused: no prefetch"),
        }
    }

    /// The instance answered its request.
    pub fn on_answer(&self, daemon: &Daemon) {
        self.after_answer(daemon);
        *self.last_answer.lock().unwrap_or_else(|e| e.into_inner()) = (Instant::now(), true);
        self.busy.store(false, Ordering::SeqCst);
    }

    /// How long until its next offload step; `None` while it is busy or
    /// has nothing more to give back (under `tmo`, busy or not, the time to
    /// the controller's next step).
    pub fn due_in(&self) -> Option<Duration> {
        if let Some(t) = &self.tmo {
            // Busy or idle alike: the kernel's reclaim does not know.
            return Some(t.settings.interval.saturating_sub(t.last_step.lock().unwrap_or_else(|e| e.into_inner()).elapsed()));
        }
        if !self.policy.semi_warm || self.busy.load(Ordering::SeqCst) || self.drained.load(Ordering::SeqCst) {
            return None;
        }
        let idle = self.last_answer.lock().unwrap_or_else(|e| e.into_inner()).0.elapsed();
        let delay = self.delay();
        if idle < delay {
            return Some(delay - idle);
        }
        Some(self.last_step.lock().unwrap_or_else(|e| e.into_inner()).map_or(Duration::ZERO, |at| STEP.saturating_sub(at.elapsed())))
    }

    /// Runs its next offload step if it is due.
    pub fn offload_if_due(&self, daemon: &Daemon) {
        if self.due_in() != Some(Duration::ZERO) {
            return;
        }
        if let Some(t) = &self.tmo {
            return self.tmo_step(t);
        }
        let first = self.last_step.lock().unwrap_or_else(|e| e.into_inner()).replace(Instant::now()).is_none();
        let Some(budget) = self.drain.budget(crate::children::resident_bytes(self.pid)) else {
            self.drained.store(true, Ordering::SeqCst);
            return;
        };
        let Some(child) = daemon.children.find(&self.pid.to_string()) else { return };
        // Marked first: a request that comes during the offload waits for
        // it and then starts the prefetch.
        self.offloaded.store(true, Ordering::SeqCst);
        let limits = ScanLimits { budget: Some(budget), seed_backed: self.policy.seed_backed, older_than: None };
        match crate::offload::offload(daemon, &child, limits) {
            Ok(r) => {
                let given = r.pages_given();
                // Nothing left it could give: done until its next request.
                if given == 0 {
                    self.drained.store(true, Ordering::SeqCst);
                }
                if first {
                    tracing::info!(pid = self.pid, policy = %self.policy.name(), pages_put = r.pages_put, rss_after = r.rss_after_bytes, "idle instance offloaded");
                } else {
                    tracing::debug!(pid = self.pid, pages_put = r.pages_put, rss_after = r.rss_after_bytes, "semi-warm drain step");
                }
            }
            Err(e) => {
                self.drained.store(true, Ordering::SeqCst);
                tracing::warn!(pid = self.pid, error = %e.message, "idle instance not offloaded");
            }
        }
    }

    /// One step of the `tmo` controller (on the instance's relay thread,
    /// which the reclaim holds for as long as it takes: milliseconds).
    fn tmo_step(&self, t: &TmoControl) {
        *t.last_step.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        let held = t.container.memory_usage().unwrap_or(0);
        let pressure = t.container.memory_pressure().unwrap_or(0.0);
        let want = t.settings.reclaim_bytes(held, pressure);
        if want == 0 {
            tracing::debug!(pid = self.pid, pressure, "tmo: under pressure, nothing reclaimed");
            return;
        }
        match t.container.reclaim(want) {
            Ok(got) => tracing::debug!(pid = self.pid, held, pressure, want, got, swap = t.container.swap_usage(), "tmo: reclaimed"),
            Err(e) => tracing::warn!(pid = self.pid, error = %e, "tmo: cannot reclaim"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tmo_reclaims_less_as_pressure_rises_and_nothing_past_the_threshold() {
        let tmo = Tmo::default();
        // Large enough that even half the share is over the 128-page floor.
        let held = 4u64 << 30;
        assert_eq!(tmo.reclaim_bytes(held, 0.0), (held as f64 * 0.0005) as u64);
        assert_eq!(tmo.reclaim_bytes(held, 0.05), (held as f64 * 0.0005 * 0.5) as u64);
        assert_eq!(tmo.reclaim_bytes(held, 0.1), 0);
        assert_eq!(tmo.reclaim_bytes(held, 3.0), 0);
        assert_eq!(tmo.reclaim_bytes(1 << 20, 0.0), 128 * PAGE, "at least 128 pages");
        assert_eq!(tmo.reclaim_bytes(0, 0.0), 0);
    }

    fn idle(after_ms: u64, reuse: Arc<ReuseIntervals>) -> InstanceMemory {
        InstanceMemory::new(Duration::from_millis(after_ms), OffloadPolicy::MITOSIS, Drain::default(), 1, reuse)
    }

    #[test]
    fn an_instance_is_due_once_idle_and_not_while_busy() {
        let idle = idle(50, Arc::default());
        assert!(idle.due_in().unwrap() > Duration::ZERO);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(idle.due_in(), Some(Duration::ZERO));
        idle.busy.store(true, Ordering::SeqCst);
        assert_eq!(idle.due_in(), None, "not while a request is in");
        *idle.last_answer.lock().unwrap() = (Instant::now(), true);
        idle.busy.store(false, Ordering::SeqCst);
        assert!(idle.due_in().unwrap() > Duration::ZERO, "the clock starts again at the answer");
        *idle.last_step.lock().unwrap() = Some(Instant::now());
        std::thread::sleep(Duration::from_millis(60));
        let next = idle.due_in().unwrap();
        assert!(next > STEP / 2 && next <= STEP, "semi-warm: the next step a step later, not at once ({next:?})");
        idle.drained.store(true, Ordering::SeqCst);
        assert_eq!(idle.due_in(), None, "drained: nothing until the next request");
        let no_semi_warm = InstanceMemory::new(Duration::ZERO, "mitosis-no-semi-warm".parse().unwrap(), Drain::default(), 1, Arc::default());
        assert_eq!(no_semi_warm.due_in(), None, "no semi-warm: never due");
    }

    #[test]
    fn the_delay_is_the_p99_of_reuse_and_at_least_the_setting() {
        let reuse = Arc::new(ReuseIntervals::default());
        let idle = idle(1000, reuse.clone());
        assert_eq!(idle.delay(), Duration::from_secs(1), "nothing learned yet");
        for ms in 1..=100 {
            reuse.record(Duration::from_millis(ms * 100));
        }
        assert_eq!(reuse.p99(), Some(Duration::from_millis(9900)));
        assert_eq!(idle.delay(), Duration::from_millis(9900));
        let short = ReuseIntervals::default();
        short.record(Duration::from_millis(5));
        assert_eq!(InstanceMemory::new(Duration::from_secs(2), OffloadPolicy::MITOSIS, Drain::default(), 1, Arc::new(short)).delay(), Duration::from_secs(2));
        for _ in 0..REUSE_KEPT * 2 {
            reuse.record(Duration::from_millis(1));
        }
        assert_eq!(reuse.p99(), Some(Duration::from_millis(1)), "only the recent intervals count");
    }

    #[test]
    fn barrier_times_give_their_percentiles() {
        let t = BarrierTimes::default();
        assert_eq!(t.stats(), mitosis_proto::local::BarrierStats::default());
        for us in 1..=100 {
            t.record(us, us / 10);
        }
        let s = t.stats();
        assert_eq!((s.count, s.p50_us, s.p99_us, s.max_us), (100, 50, 99, 100));
        assert_eq!((s.pager_p50_us, s.pager_p99_us), (5, 9));
    }

    #[test]
    fn a_drain_step_gives_a_share_down_to_the_floor() {
        let drain = Drain::default();
        assert_eq!(drain.budget(1000 << 20), Some(10 << 20));
        assert_eq!(drain.budget(9 << 20), Some(PAGE.max((9u64 << 20) / 100)), "a small share is at least a page");
        assert_eq!(drain.budget((8 << 20) + PAGE), Some(PAGE), "never below the floor");
        assert_eq!(drain.budget(8 << 20), None);
        assert_eq!(drain.budget(1 << 20), None);
    }
}
