//! From a trace to a schedule: the sorted list of invocations to send, each
//! at an offset from the replay's start, to a gateway function.
//!
//! In order, [`Schedule::build`]:
//! 1. skips the trace's first `skip_s` seconds (a later window of a long trace);
//! 2. scales: offsets are divided by `scale`, so `scale = 2` sends twice
//!    the trace's request rate (and its bursts twice as dense);
//! 3. cuts at `duration` (after scaling: the replay lasts `duration`);
//! 4. maps trace functions onto gateway functions ([`FunctionMap`]). By
//!    rank, as FaaSMem maps a trace id to a popularity rank: the trace
//!    functions *of the replayed window* are ranked by their invocations in
//!    it (most first, ties by id), and rank `i` goes to the `i`-th name.
//!    Past the list, functions are dropped by default ([`Beyond::Drop`]:
//!    every replayed function keeps its own arrival pattern, the load is
//!    that of the most popular ones) or wrapped around ([`Beyond::Wrap`]:
//!    all the load is kept, several trace functions merged into one
//!    gateway function). Or explicit `traceid=name` pairs (ids may be
//!    abbreviated to a unique prefix; unlisted functions are dropped).

use std::collections::HashMap;
use std::time::Duration;

use crate::formats::Trace;

/// One request to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Invocation {
    /// When, from the replay's start.
    pub at: Duration,
    /// The gateway function (`POST /invoke/{function}`).
    pub function: String,
    /// The trace's id of the function it stands for.
    pub trace_function: String,
    /// Its execution time in the trace, if the trace has one (not scaled).
    pub trace_duration: Option<Duration>,
}

/// What happens to trace functions ranked past the end of a `--map` list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Beyond {
    /// Not replayed.
    #[default]
    Drop,
    /// Rank `i` goes to name `i mod len`.
    Wrap,
}

impl std::str::FromStr for Beyond {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "drop" => Ok(Beyond::Drop),
            "wrap" => Ok(Beyond::Wrap),
            _ => Err(format!("{s:?} is neither drop nor wrap")),
        }
    }
}

/// How trace functions become gateway functions.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum FunctionMap {
    /// A trace function's id is the gateway function's name (synthetic
    /// traces of suite names, the spike shape).
    #[default]
    Identity,
    /// By popularity rank: the most invoked trace function to `names[0]`, ...
    ByRank { names: Vec<String>, beyond: Beyond },
    /// Explicit (trace id or unique prefix, gateway name) pairs.
    Pairs(Vec<(String, String)>),
}

impl FunctionMap {
    /// Parses `name,name,...` (by rank, dropping the rest) or
    /// `traceid=name,...` (pairs); the two kinds do not mix.
    pub fn parse(s: &str) -> Result<Self, ScheduleError> {
        let items: Vec<&str> = s.split(',').map(str::trim).filter(|i| !i.is_empty()).collect();
        if items.is_empty() {
            return Err(ScheduleError::Map(format!("{s:?} names no function")));
        }
        let pairs = items.iter().filter(|i| i.contains('=')).count();
        if pairs == 0 {
            return Ok(FunctionMap::ByRank { names: items.iter().map(|i| i.to_string()).collect(), beyond: Beyond::Drop });
        }
        if pairs < items.len() {
            return Err(ScheduleError::Map(format!("{s:?} mixes names and traceid=name pairs")));
        }
        let mut out = Vec::new();
        for item in items {
            let (id, name) = item.split_once('=').expect("counted above");
            if id.trim().is_empty() || name.trim().is_empty() {
                return Err(ScheduleError::Map(format!("{item:?} is not traceid=name")));
            }
            out.push((id.trim().to_string(), name.trim().to_string()));
        }
        Ok(FunctionMap::Pairs(out))
    }
}

/// A schedule that cannot be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScheduleError {
    #[error("--map: {0}")]
    Map(String),
    #[error("--scale must be a positive number, not {0}")]
    Scale(f64),
    #[error("--duration must be positive")]
    Duration,
}

/// How to make a schedule (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleOptions {
    pub duration: Duration,
    pub scale: f64,
    /// Trace seconds skipped at its start (before scaling).
    pub skip_s: f64,
    pub map: FunctionMap,
}

impl ScheduleOptions {
    pub fn new(duration: Duration) -> Self {
        ScheduleOptions { duration, scale: 1.0, skip_s: 0.0, map: FunctionMap::Identity }
    }
}

/// A trace function of the replayed window and where it went.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RankedFunction {
    /// 0 = the most invoked in the window.
    pub rank: usize,
    pub trace_function: String,
    pub invocations: usize,
    /// The gateway function, or None when dropped.
    pub function: Option<String>,
}

/// The requests of one replay, sorted by time.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Schedule {
    pub invocations: Vec<Invocation>,
    /// The replay window (the requests are all before its end).
    pub duration: Duration,
    /// The window's trace functions by rank, with their gateway functions.
    pub ranking: Vec<RankedFunction>,
}

impl Schedule {
    pub fn build(trace: &Trace, opts: &ScheduleOptions) -> Result<Schedule, ScheduleError> {
        if !(opts.scale.is_finite() && opts.scale > 0.0) {
            return Err(ScheduleError::Scale(opts.scale));
        }
        if opts.duration.is_zero() {
            return Err(ScheduleError::Duration);
        }
        let window = opts.duration.as_secs_f64();
        let kept: Vec<(f64, &crate::formats::TraceInvocation)> = trace
            .invocations
            .iter()
            .filter(|i| i.start_s >= opts.skip_s)
            .map(|i| ((i.start_s - opts.skip_s) / opts.scale, i))
            .filter(|(at, _)| *at < window)
            .collect();

        let mut counts: HashMap<&str, usize> = HashMap::new();
        for (_, i) in &kept {
            *counts.entry(i.function.as_str()).or_default() += 1;
        }
        let mut ranked: Vec<(&str, usize)> = counts.into_iter().collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let target = targets(trace, &ranked, &opts.map)?;
        let ranking: Vec<RankedFunction> = ranked
            .iter()
            .enumerate()
            .map(|(rank, (id, n))| RankedFunction {
                rank,
                trace_function: id.to_string(),
                invocations: *n,
                function: target.get(id).cloned(),
            })
            .collect();

        let mut invocations: Vec<Invocation> = kept
            .into_iter()
            .filter_map(|(at, i)| {
                let function = target.get(i.function.as_str())?.clone();
                Some(Invocation {
                    at: Duration::from_secs_f64(at),
                    function,
                    trace_function: i.function.clone(),
                    trace_duration: i.duration_s.map(Duration::from_secs_f64),
                })
            })
            .collect();
        invocations.sort_by(|a, b| a.at.cmp(&b.at).then_with(|| a.function.cmp(&b.function)));
        Ok(Schedule { invocations, duration: opts.duration, ranking })
    }

    /// The gateway functions it invokes, sorted.
    pub fn functions(&self) -> Vec<String> {
        let mut f: Vec<String> = self.invocations.iter().map(|i| i.function.clone()).collect();
        f.sort();
        f.dedup();
        f
    }
}

/// The gateway function of each ranked trace function (absent: dropped).
fn targets<'a>(trace: &'a Trace, ranked: &[(&'a str, usize)], map: &FunctionMap) -> Result<HashMap<&'a str, String>, ScheduleError> {
    Ok(match map {
        FunctionMap::Identity => ranked.iter().map(|(id, _)| (*id, id.to_string())).collect(),
        FunctionMap::ByRank { names, beyond } => ranked
            .iter()
            .enumerate()
            .filter_map(|(rank, (id, _))| match beyond {
                Beyond::Drop => names.get(rank).map(|n| (*id, n.clone())),
                Beyond::Wrap => Some((*id, names[rank % names.len()].clone())),
            })
            .collect(),
        FunctionMap::Pairs(pairs) => {
            // Prefixes resolve against the whole trace, so that a typo is
            // told apart from a function that is just not in this window.
            let mut all: Vec<&str> = trace.invocations.iter().map(|i| i.function.as_str()).collect();
            all.sort_unstable();
            all.dedup();
            let mut out = HashMap::new();
            for (prefix, name) in pairs {
                let id = match all.binary_search(&prefix.as_str()) {
                    Ok(i) => all[i],
                    Err(_) => {
                        let matching: Vec<&str> = all.iter().copied().filter(|id| id.starts_with(prefix.as_str())).collect();
                        match matching[..] {
                            [one] => one,
                            [] => return Err(ScheduleError::Map(format!("{prefix:?} is no function of the trace"))),
                            _ => return Err(ScheduleError::Map(format!("{prefix:?} is the prefix of {} functions of the trace", matching.len()))),
                        }
                    }
                };
                if out.insert(id, name.clone()).is_some() {
                    return Err(ScheduleError::Map(format!("trace function {id} is mapped twice")));
                }
            }
            out
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::TraceInvocation;

    fn trace(events: &[(f64, &str)]) -> Trace {
        Trace {
            invocations: events.iter().map(|&(t, f)| TraceInvocation { start_s: t, function: f.into(), duration_s: Some(0.5) }).collect(),
        }
    }

    fn opts(secs: u64, map: &str) -> ScheduleOptions {
        ScheduleOptions { map: if map.is_empty() { FunctionMap::Identity } else { FunctionMap::parse(map).unwrap() }, ..ScheduleOptions::new(Duration::from_secs(secs)) }
    }

    #[test]
    fn ranks_by_count_then_id() {
        // b: 3, a: 2, c: 2 -> ranks b, a, c.
        let t = trace(&[(5.0, "c"), (1.0, "b"), (2.0, "a"), (3.0, "b"), (4.0, "c"), (0.5, "a"), (6.0, "b")]);
        let s = Schedule::build(&t, &opts(10, "x,y")).unwrap();
        let ranks: Vec<(&str, Option<&str>)> = s.ranking.iter().map(|r| (r.trace_function.as_str(), r.function.as_deref())).collect();
        assert_eq!(ranks, [("b", Some("x")), ("a", Some("y")), ("c", None)]);
        assert_eq!(s.invocations.len(), 5, "c is dropped");
        assert!(s.invocations.windows(2).all(|w| w[0].at <= w[1].at), "sorted");
        assert_eq!(s.invocations[0], Invocation { at: Duration::from_millis(500), function: "y".into(), trace_function: "a".into(), trace_duration: Some(Duration::from_millis(500)) });

        let mut wrap = opts(10, "x,y");
        wrap.map = FunctionMap::ByRank { names: vec!["x".into(), "y".into()], beyond: Beyond::Wrap };
        let s = Schedule::build(&t, &wrap).unwrap();
        assert_eq!(s.invocations.len(), 7);
        assert_eq!(s.invocations.iter().filter(|i| i.function == "x").count(), 5, "b and c (rank 2 wraps to x)");
        assert_eq!(s.functions(), ["x", "y"]);
    }

    #[test]
    fn scales_skips_and_cuts() {
        let t = trace(&[(0.0, "a"), (10.0, "a"), (20.0, "a"), (30.0, "a"), (40.0, "a")]);
        let mut o = opts(10, "");
        o.scale = 2.0;
        let at: Vec<Duration> = Schedule::build(&t, &o).unwrap().invocations.iter().map(|i| i.at).collect();
        assert_eq!(at, [0, 5].map(Duration::from_secs), "twice the rate: 10 s of schedule is 20 s of trace, 20 s itself cut");
        o.skip_s = 15.0;
        let at: Vec<Duration> = Schedule::build(&t, &o).unwrap().invocations.iter().map(|i| i.at).collect();
        assert_eq!(at, [Duration::from_millis(2500), Duration::from_millis(7500)]);
        o.scale = 0.0;
        assert_eq!(Schedule::build(&t, &o), Err(ScheduleError::Scale(0.0)));
    }

    #[test]
    fn explicit_pairs_with_prefixes() {
        let t = trace(&[(1.0, "abc123"), (2.0, "abd456"), (3.0, "zzz")]);
        let s = Schedule::build(&t, &opts(10, "abc=json, zzz=helloworld")).unwrap();
        let f: Vec<(&str, &str)> = s.invocations.iter().map(|i| (i.trace_function.as_str(), i.function.as_str())).collect();
        assert_eq!(f, [("abc123", "json"), ("zzz", "helloworld")]);
        let err = |m: &str| Schedule::build(&t, &opts(10, m)).unwrap_err().to_string();
        assert!(err("ab=json").contains("prefix of 2"));
        assert!(err("q=json").contains("no function"));
        assert!(FunctionMap::parse("a=json,b").unwrap_err().to_string().contains("mixes"));
        assert!(FunctionMap::parse(" , ").is_err());
    }
}
