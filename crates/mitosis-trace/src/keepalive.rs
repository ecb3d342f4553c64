//! Keep-alive and semi-warm over a whole trace, simulated: how much of the
//! time instances sit idle would FaaSMem's semi-warm rule turn into
//! semi-warm time (its "applicability of semi-warm" experiment, issue 11's
//! experiment 4).
//!
//! Each function has its own pool, as in the platform's gateway: an
//! invocation takes the instance that went idle last (LIFO), or starts a
//! new one; it holds it for its execution time (none in the trace: an
//! instant); an instance idle for the keep-alive is ended. An instance that
//! goes idle turns semi-warm once it has been idle for the *semi-warm
//! delay*: the 99th percentile of its function's last [`REUSE_KEPT`] reuse
//! intervals (an idle instance's time until it was taken again), and at
//! least a floor (FaaSMem: 60 s), the rule the daemon applies
//! (`mitosis-daemon`'s memory module). The simulator fixes an idle
//! period's delay when the period starts; the daemon looks at the current
//! percentile while it waits, which differs only when the function's other
//! instances are reused meanwhile.
//!
//! Idle time past the trace's end is not counted. Nothing here knows what
//! an instance holds: a function's share of idle *memory*-time spent
//! semi-warm is its share of idle time when its instances' memory is
//! constant, and across functions each may be weighted by its memory
//! ([`Summary::of`]).

use std::collections::{BinaryHeap, HashMap, VecDeque};

use crate::formats::Trace;

/// Reuse intervals kept per function for the semi-warm delay (the daemon's).
pub const REUSE_KEPT: usize = 512;

/// The platform's rules.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KeepAlive {
    /// An instance idle this long is ended (FaaSMem and the gateway: 600 s).
    pub keep_alive_s: f64,
    /// The semi-warm delay's floor (FaaSMem: 60 s).
    pub min_delay_s: f64,
}

impl Default for KeepAlive {
    fn default() -> Self {
        KeepAlive { keep_alive_s: 600.0, min_delay_s: 60.0 }
    }
}

/// One function's instances over the trace.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FunctionIdle {
    pub function: String,
    pub invocations: u64,
    /// Instances started (every invocation that found none idle).
    pub instances: u64,
    /// Seconds its instances sat idle, summed over instances.
    pub idle_s: f64,
    /// Of which semi-warm.
    pub semi_warm_s: f64,
}

impl FunctionIdle {
    /// The share of its idle time spent semi-warm; `None` if never idle.
    pub fn share(&self) -> Option<f64> {
        (self.idle_s > 0.0).then(|| self.semi_warm_s / self.idle_s)
    }
}

/// Microseconds: event times are ordered exactly.
type Micros = i64;

fn micros(s: f64) -> Micros {
    (s * 1e6).round() as Micros
}

fn secs(us: Micros) -> f64 {
    us as f64 / 1e6
}

/// One function's pool while the simulation runs.
struct Pool {
    rule: KeepAlive,
    /// Idle instances, oldest first: (idle since, semi-warm delay).
    idle: VecDeque<(Micros, Micros)>,
    /// Busy instances' ends (a min-heap by way of negation).
    busy: BinaryHeap<Micros>,
    /// The last [`REUSE_KEPT`] reuse intervals, in arrival order and sorted.
    reuses: VecDeque<Micros>,
    reuses_sorted: Vec<Micros>,
    out: FunctionIdle,
}

impl Pool {
    fn new(function: &str, rule: KeepAlive) -> Pool {
        Pool {
            rule,
            idle: VecDeque::new(),
            busy: BinaryHeap::new(),
            reuses: VecDeque::new(),
            reuses_sorted: Vec::new(),
            out: FunctionIdle { function: function.to_string(), invocations: 0, instances: 0, idle_s: 0.0, semi_warm_s: 0.0 },
        }
    }

    /// The semi-warm delay as of now: the reuse intervals' P99 (nearest
    /// rank), at least the floor.
    fn delay(&self) -> Micros {
        let floor = micros(self.rule.min_delay_s);
        let all = &self.reuses_sorted;
        if all.is_empty() {
            return floor;
        }
        let rank = (all.len() * 99).div_ceil(100).max(1);
        all[rank - 1].max(floor)
    }

    fn record_reuse(&mut self, gap: Micros) {
        if self.reuses.len() == REUSE_KEPT {
            if let Some(old) = self.reuses.pop_front() {
                let at = self.reuses_sorted.partition_point(|&r| r < old);
                self.reuses_sorted.remove(at);
            }
        }
        self.reuses.push_back(gap);
        let at = self.reuses_sorted.partition_point(|&r| r < gap);
        self.reuses_sorted.insert(at, gap);
    }

    /// An idle period of `idle` µs whose semi-warm delay was `delay`.
    fn count_idle(&mut self, idle: Micros, delay: Micros) {
        self.out.idle_s += secs(idle);
        self.out.semi_warm_s += secs((idle - delay).max(0));
    }

    /// Everything up to `now`: busy instances that ended go idle (in the
    /// order they ended), idle ones past the keep-alive end.
    fn advance(&mut self, now: Micros) {
        while let Some(end) = self.busy.peek().map(|e| -e) {
            if end > now {
                break;
            }
            self.busy.pop();
            self.expire(end);
            let delay = self.delay();
            self.idle.push_back((end, delay));
        }
        self.expire(now);
    }

    /// Ends the idle instances whose keep-alive ran out by `now`.
    fn expire(&mut self, now: Micros) {
        let keep = micros(self.rule.keep_alive_s);
        while let Some(&(since, delay)) = self.idle.front() {
            if since + keep > now {
                break;
            }
            self.idle.pop_front();
            self.count_idle(keep, delay);
        }
    }

    fn invoke(&mut self, at: Micros, duration: Micros) {
        self.advance(at);
        self.out.invocations += 1;
        match self.idle.pop_back() {
            Some((since, delay)) => {
                let gap = at - since;
                self.count_idle(gap, delay);
                self.record_reuse(gap);
            }
            None => self.out.instances += 1,
        }
        self.busy.push(-(at + duration.max(0)));
    }

    /// The trace ends at `end`: idle time up to it counts, no more.
    fn finish(mut self, end: Micros) -> FunctionIdle {
        self.advance(end);
        while let Some((since, delay)) = self.idle.pop_front() {
            self.count_idle((end - since).max(0), delay);
        }
        self.out
    }
}

/// Runs `rule` over `trace` up to `end_s` seconds (invocations from then on
/// are left out): one entry per function, the most invoked first.
pub fn simulate(trace: &Trace, rule: KeepAlive, end_s: f64) -> Vec<FunctionIdle> {
    let mut by_function: HashMap<&str, Vec<(Micros, Micros)>> = HashMap::new();
    for i in trace.invocations.iter().filter(|i| i.start_s < end_s) {
        by_function.entry(i.function.as_str()).or_default().push((micros(i.start_s), micros(i.duration_s.unwrap_or(0.0))));
    }
    let end = micros(end_s);
    let mut out: Vec<FunctionIdle> = by_function
        .into_iter()
        .map(|(function, mut calls)| {
            calls.sort_unstable();
            let mut pool = Pool::new(function, rule);
            for (at, duration) in calls {
                pool.invoke(at, duration);
            }
            pool.finish(end)
        })
        .collect();
    out.sort_by(|a, b| b.invocations.cmp(&a.invocations).then_with(|| a.function.cmp(&b.function)));
    out
}

/// The functions of one simulation together.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Summary {
    pub functions: usize,
    pub invocations: u64,
    pub instances: u64,
    pub idle_hours: f64,
    /// Semi-warm share of all idle time, every instance-second alike.
    pub share_of_time: f64,
    /// Semi-warm share of idle memory-time, each function's time weighted
    /// by its memory; `None` without weights for every function.
    pub share_of_memory_time: Option<f64>,
    /// Per-function shares (of the functions ever idle): P10, median, P90.
    pub function_share_p10: f64,
    pub function_share_p50: f64,
    pub function_share_p90: f64,
}

impl Summary {
    /// `weights`: a function's memory (any unit), where known.
    pub fn of(functions: &[FunctionIdle], weights: &HashMap<String, f64>) -> Summary {
        let idle: f64 = functions.iter().map(|f| f.idle_s).sum();
        let semi: f64 = functions.iter().map(|f| f.semi_warm_s).sum();
        let weighted = functions.iter().all(|f| weights.contains_key(&f.function)) && !functions.is_empty();
        let share_of_memory_time = weighted.then(|| {
            let w = |f: &FunctionIdle| weights[&f.function];
            let idle: f64 = functions.iter().map(|f| w(f) * f.idle_s).sum();
            let semi: f64 = functions.iter().map(|f| w(f) * f.semi_warm_s).sum();
            if idle > 0.0 {
                semi / idle
            } else {
                0.0
            }
        });
        let shares = sorted_shares(functions);
        let at = |q: f64| shares.get(((shares.len() as f64 * q).ceil() as usize).clamp(1, shares.len().max(1)) - 1).copied().unwrap_or(0.0);
        Summary {
            functions: functions.len(),
            invocations: functions.iter().map(|f| f.invocations).sum(),
            instances: functions.iter().map(|f| f.instances).sum(),
            idle_hours: idle / 3600.0,
            share_of_time: if idle > 0.0 { semi / idle } else { 0.0 },
            share_of_memory_time,
            function_share_p10: at(0.10),
            function_share_p50: at(0.50),
            function_share_p90: at(0.90),
        }
    }
}

/// The per-function shares in ascending order (functions never idle left out).
pub fn sorted_shares(functions: &[FunctionIdle]) -> Vec<f64> {
    let mut shares: Vec<f64> = functions.iter().filter_map(FunctionIdle::share).collect();
    shares.sort_by(f64::total_cmp);
    shares
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::TraceInvocation;

    fn trace(calls: &[(&str, f64, f64)]) -> Trace {
        Trace {
            invocations: calls
                .iter()
                .map(|&(f, start_s, d)| TraceInvocation { start_s, function: f.into(), duration_s: Some(d) })
                .collect(),
        }
    }

    fn one(calls: &[(f64, f64)], end_s: f64) -> FunctionIdle {
        let calls: Vec<(&str, f64, f64)> = calls.iter().map(|&(s, d)| ("f", s, d)).collect();
        simulate(&trace(&calls), KeepAlive::default(), end_s).remove(0)
    }

    #[test]
    fn an_idle_gap_past_the_delay_is_semi_warm_for_the_rest() {
        // Busy 0-10 s, idle 10-210 s: 60 s warm, 140 s semi-warm; then idle
        // from 211 s to the end at 311 s (the delay is now the one reuse
        // interval, 200 s): 100 s, none of it semi-warm.
        let f = one(&[(0.0, 10.0), (210.0, 1.0)], 311.0);
        assert_eq!((f.invocations, f.instances), (2, 1));
        assert!((f.idle_s - 300.0).abs() < 1e-6, "{f:?}");
        assert!((f.semi_warm_s - 140.0).abs() < 1e-6, "{f:?}");
    }

    #[test]
    fn keep_alive_ends_an_instance_and_the_next_call_starts_one() {
        // Idle 0-600 s, then ended: 540 s of it semi-warm; a new instance at
        // 1000 s idles to the end, 1100 s: 100 s, 40 s semi-warm.
        let f = one(&[(0.0, 0.0), (1000.0, 0.0)], 1100.0);
        assert_eq!(f.instances, 2);
        assert!((f.idle_s - 700.0).abs() < 1e-6, "{f:?}");
        assert!((f.semi_warm_s - 580.0).abs() < 1e-6, "{f:?}");
    }

    #[test]
    fn the_last_idle_instance_is_taken_first_and_a_long_p99_delays_semi_warm() {
        // Two overlapping calls make two instances; the next call takes the
        // one that went idle last (ended at 5 s, not 2 s).
        let f = one(&[(0.0, 2.0), (1.0, 4.0), (50.0, 0.0)], 50.0);
        assert_eq!(f.instances, 2);
        assert!((f.idle_s - (45.0 + 48.0)).abs() < 1e-6, "{f:?}");
        // Reuse intervals of 500 s make the delay 500 s: a 550 s gap is
        // then semi-warm for 50 s only.
        let f = one(&[(0.0, 0.0), (500.0, 0.0), (1050.0, 0.0)], 1050.0);
        assert!((f.idle_s - 1050.0).abs() < 1e-6 && (f.semi_warm_s - (440.0 + 50.0)).abs() < 1e-6, "{f:?}");
    }

    #[test]
    fn the_summary_weights_memory_only_when_every_function_has_it() {
        let fs = simulate(&trace(&[("a", 0.0, 0.0), ("b", 0.0, 0.0), ("b", 100.0, 0.0)]), KeepAlive::default(), 160.0);
        // a: idle 160 s, 100 semi-warm; b: 100 s (40 semi-warm) then 60 s (0: delay 100 s).
        let s = Summary::of(&fs, &HashMap::new());
        assert_eq!((s.functions, s.invocations, s.instances), (2, 3, 2));
        assert!((s.share_of_time - 140.0 / 320.0).abs() < 1e-9, "{s:?}");
        assert_eq!(s.share_of_memory_time, None);
        let weights = HashMap::from([("a".to_string(), 3.0), ("b".to_string(), 1.0)]);
        let m = Summary::of(&fs, &weights).share_of_memory_time.unwrap();
        assert!((m - (300.0 + 40.0) / (480.0 + 160.0)).abs() < 1e-9, "{m}");
        assert_eq!(sorted_shares(&fs), vec![0.25, 100.0 / 160.0]);
    }

    #[test]
    fn the_delay_is_the_p99_of_the_last_reuses_only() {
        let mut pool = Pool::new("f", KeepAlive::default());
        for _ in 0..REUSE_KEPT {
            pool.record_reuse(micros(500.0));
        }
        assert_eq!(pool.delay(), micros(500.0));
        // 512 short reuses push every long one out: back to the floor.
        for _ in 0..REUSE_KEPT {
            pool.record_reuse(micros(1.0));
        }
        assert_eq!(pool.delay(), micros(60.0));
        // Six long ones of 512 are above the 99th percentile's rank (507).
        for _ in 0..5 {
            pool.record_reuse(micros(900.0));
        }
        assert_eq!(pool.delay(), micros(60.0));
        pool.record_reuse(micros(900.0));
        assert_eq!(pool.delay(), micros(900.0));
        assert_eq!((pool.reuses.len(), pool.reuses_sorted.len()), (REUSE_KEPT, REUSE_KEPT));
    }
}
