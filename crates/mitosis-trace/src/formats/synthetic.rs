//! Synthetic traces from a SPEC string: a generator shaped by the published
//! fits of the Azure Functions traces, and the spike shape.
//!
//! # Grammar
//!
//! ```text
//! SPEC  = PAIRS | "spike:" PAIRS
//! PAIRS = KEY "=" VALUE { "," KEY "=" VALUE }     (each key at most once)
//! ```
//!
//! **Synthetic** (`functions=20,rate=5,seed=1,cv=1.5`), every key optional:
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `functions` | 10 | number of functions, named `f0` (most popular) .. `f{N-1}` |
//! | `rate` | 1 | total invocations per second over all functions |
//! | `skew` | 1 | popularity: function `i` gets a share of `rate` proportional to `1/(i+1)^skew` (Zipf; 0 = all equal). Real popularity is heavy-tailed over eight orders of magnitude |
//! | `cv` | 1 | coefficient of variation of each function's inter-arrival times: 1 = Poisson, > 1 bursty (as many Azure apps), < 1 regular, 0 = fixed interval (timers) with a random phase. Gamma-distributed with shape `1/cv²` |
//! | `mu`, `sigma` | -0.38, 2.36 | log-normal execution times in seconds (the published fit: median 0.68 s, P90 14 s, P99 166 s) |
//! | `seed` | 0 | the random generator's seed; function `i` draws from its own stream, so adding functions leaves the others' arrivals unchanged |
//!
//! **Spike** (`spike:function=F,base=1,peak=50,at=10,for=10,seed=1`): one
//! function `F` (required) invoked at `base` per second (default 1), then at
//! `peak` per second (required) from second `at` (required) for `for`
//! seconds (required), then at `base` again; arrivals Poisson within each
//! phase (or `cv` as above); `seed` as above. Spike invocations carry no
//! execution time.
//!
//! Numbers are decimal (`rate=0.5`); `functions` and `seed` are whole.
//! The same SPEC and seed give the same trace with the same build (the
//! generator is `rand`'s `StdRng`, whose algorithm may change between
//! `rand` versions).

use std::collections::HashMap;

use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Gamma, LogNormal};

use super::{Trace, TraceInvocation};

/// Most invocations a spec may generate (a guard against typos such as `rate=5000000`).
pub const MAX_INVOCATIONS: u64 = 20_000_000;

/// A SPEC that cannot be parsed or makes no sense.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("synthetic trace spec {spec:?}: {message}")]
pub struct SpecError {
    pub spec: String,
    pub message: String,
}

/// The generator's parameters (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticSpec {
    pub functions: usize,
    pub rate: f64,
    pub skew: f64,
    pub cv: f64,
    pub mu: f64,
    pub sigma: f64,
    pub seed: u64,
}

impl Default for SyntheticSpec {
    fn default() -> Self {
        SyntheticSpec { functions: 10, rate: 1.0, skew: 1.0, cv: 1.0, mu: -0.38, sigma: 2.36, seed: 0 }
    }
}

/// The spike shape's parameters (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct SpikeSpec {
    pub function: String,
    pub base: f64,
    pub peak: f64,
    pub at_s: f64,
    pub for_s: f64,
    pub cv: f64,
    pub seed: u64,
}

/// A parsed SPEC.
#[derive(Debug, Clone, PartialEq)]
pub enum Spec {
    Synthetic(SyntheticSpec),
    Spike(SpikeSpec),
}

/// Key-value pairs of a spec, each key taken at most once.
struct Pairs<'a> {
    spec: &'a str,
    map: HashMap<&'a str, &'a str>,
}

impl<'a> Pairs<'a> {
    fn parse(spec: &'a str, body: &'a str, known: &[&str]) -> Result<Self, SpecError> {
        let err = |message: String| SpecError { spec: spec.to_string(), message };
        let mut map = HashMap::new();
        for pair in body.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').ok_or_else(|| err(format!("{pair:?} is not KEY=VALUE")))?;
            let (key, value) = (key.trim(), value.trim());
            if !known.contains(&key) {
                return Err(err(format!("unknown key {key:?} (known: {})", known.join(", "))));
            }
            if map.insert(key, value).is_some() {
                return Err(err(format!("key {key:?} given twice")));
            }
        }
        Ok(Pairs { spec, map })
    }

    fn err(&self, message: String) -> SpecError {
        SpecError { spec: self.spec.to_string(), message }
    }

    /// A number at least `min`, or `default` when absent (None: required).
    fn number(&self, key: &str, default: Option<f64>, min: f64) -> Result<f64, SpecError> {
        match self.map.get(key) {
            None => default.ok_or_else(|| self.err(format!("{key}= is required"))),
            Some(v) => match v.parse::<f64>() {
                Ok(n) if n.is_finite() && n >= min => Ok(n),
                _ => Err(self.err(format!("{key}={v:?} is not a number of at least {min}"))),
            },
        }
    }

    fn whole(&self, key: &str, default: u64) -> Result<u64, SpecError> {
        match self.map.get(key) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| self.err(format!("{key}={v:?} is not a whole number"))),
        }
    }
}

impl std::str::FromStr for Spec {
    type Err = SpecError;

    fn from_str(spec: &str) -> Result<Self, SpecError> {
        if let Some(body) = spec.trim().strip_prefix("spike:") {
            let p = Pairs::parse(spec, body, &["function", "base", "peak", "at", "for", "cv", "seed"])?;
            let function = p.map.get("function").filter(|f| !f.is_empty()).ok_or_else(|| p.err("function= is required".into()))?;
            let s = SpikeSpec {
                function: function.to_string(),
                base: p.number("base", Some(1.0), 0.0)?,
                peak: p.number("peak", None, 0.0)?,
                at_s: p.number("at", None, 0.0)?,
                for_s: p.number("for", None, 0.0)?,
                cv: p.number("cv", Some(1.0), 0.0)?,
                seed: p.whole("seed", 0)?,
            };
            return Ok(Spec::Spike(s));
        }
        let p = Pairs::parse(spec, spec, &["functions", "rate", "skew", "cv", "mu", "sigma", "seed"])?;
        let d = SyntheticSpec::default();
        let s = SyntheticSpec {
            functions: p.whole("functions", d.functions as u64)? as usize,
            rate: p.number("rate", Some(d.rate), 0.0)?,
            skew: p.number("skew", Some(d.skew), 0.0)?,
            cv: p.number("cv", Some(d.cv), 0.0)?,
            mu: p.number("mu", Some(d.mu), f64::MIN)?,
            sigma: p.number("sigma", Some(d.sigma), 0.0)?,
            seed: p.whole("seed", d.seed)?,
        };
        if s.functions == 0 {
            return Err(p.err("functions= must be at least 1".into()));
        }
        if s.rate <= 0.0 {
            return Err(p.err("rate= must be more than 0".into()));
        }
        Ok(Spec::Synthetic(s))
    }
}

impl Spec {
    /// The trace over `[0, horizon_s)` seconds.
    pub fn generate(&self, horizon_s: f64) -> Result<Trace, SpecError> {
        let expected = match self {
            Spec::Synthetic(s) => s.rate * horizon_s,
            Spec::Spike(s) => s.base * horizon_s + s.peak * s.for_s,
        };
        if expected > MAX_INVOCATIONS as f64 {
            return Err(SpecError {
                spec: format!("{self:?}"),
                message: format!("about {expected:.0} invocations over {horizon_s} s: more than {MAX_INVOCATIONS}"),
            });
        }
        let mut invocations = Vec::new();
        match self {
            Spec::Synthetic(s) => {
                let weights: Vec<f64> = (0..s.functions).map(|i| 1.0 / ((i + 1) as f64).powf(s.skew)).collect();
                let total: f64 = weights.iter().sum();
                let exec = LogNormal::new(s.mu, s.sigma).expect("sigma is checked to be non-negative");
                for (i, w) in weights.iter().enumerate() {
                    let mut rng = stream(s.seed, i as u64);
                    let function = format!("f{i}");
                    let mut push = |t: f64, rng: &mut rand::rngs::StdRng| {
                        invocations.push(TraceInvocation { start_s: t, function: function.clone(), duration_s: Some(exec.sample(rng)) })
                    };
                    arrivals(&mut rng, s.rate * w / total, s.cv, 0.0, horizon_s, &mut push);
                }
            }
            Spec::Spike(s) => {
                let mut rng = stream(s.seed, 0);
                let spike_end = s.at_s + s.for_s;
                let phases = [(0.0, s.at_s.min(horizon_s), s.base), (s.at_s, spike_end.min(horizon_s), s.peak), (spike_end, horizon_s, s.base)];
                for (from, to, rate) in phases {
                    let mut push = |t: f64, _: &mut rand::rngs::StdRng| {
                        invocations.push(TraceInvocation { start_s: t, function: s.function.clone(), duration_s: None })
                    };
                    arrivals(&mut rng, rate, s.cv, from, to, &mut push);
                }
            }
        }
        Ok(Trace { invocations })
    }
}

/// Function `i`'s own random stream.
fn stream(seed: u64, i: u64) -> rand::rngs::StdRng {
    rand::rngs::StdRng::seed_from_u64(seed ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// A renewal process of `rate` per second with inter-arrival times of
/// coefficient of variation `cv`, from `from` to `to` seconds.
fn arrivals(rng: &mut rand::rngs::StdRng, rate: f64, cv: f64, from: f64, to: f64, push: &mut impl FnMut(f64, &mut rand::rngs::StdRng)) {
    if rate <= 0.0 || to <= from {
        return;
    }
    let mean = 1.0 / rate;
    if cv == 0.0 {
        let mut t = from + rng.random_range(0.0..mean);
        while t < to {
            push(t, rng);
            t += mean;
        }
        return;
    }
    let shape = 1.0 / (cv * cv);
    let gap = Gamma::new(shape, mean / shape).expect("shape and scale are positive");
    let mut t = from + gap.sample(rng);
    while t < to {
        push(t, rng);
        t += gap.sample(rng);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(s: &str) -> Spec {
        s.parse().unwrap()
    }

    #[test]
    fn specs_parse_with_defaults() {
        let Spec::Synthetic(s) = spec("functions=20,rate=5,seed=1,cv=1.5") else { panic!() };
        assert_eq!((s.functions, s.rate, s.seed, s.cv, s.skew), (20, 5.0, 1, 1.5, 1.0));
        assert_eq!(spec(""), Spec::Synthetic(SyntheticSpec::default()));
        let Spec::Spike(s) = spec("spike:function=json,base=1,peak=50,at=10,for=10,seed=1") else { panic!() };
        assert_eq!((s.function.as_str(), s.base, s.peak, s.at_s, s.for_s, s.seed), ("json", 1.0, 50.0, 10.0, 10.0, 1));
    }

    #[test]
    fn bad_specs_say_why() {
        for (bad, why) in [
            ("functions=0", "at least 1"),
            ("rate=-1", "rate="),
            ("rate=0", "more than 0"),
            ("rate=fast", "rate="),
            ("functions=2.5", "whole"),
            ("speed=3", "unknown key \"speed\""),
            ("rate=1,rate=2", "twice"),
            ("rate", "KEY=VALUE"),
            ("spike:base=1,peak=5,at=1,for=1", "function= is required"),
            ("spike:function=f,at=1,for=1", "peak= is required"),
        ] {
            let e = bad.parse::<Spec>().unwrap_err();
            assert!(e.to_string().contains(why), "{bad}: {e}");
        }
        assert!(spec("rate=1000000").generate(1000.0).unwrap_err().message.contains("more than"));
    }

    #[test]
    fn synthetic_is_reproducible_and_heavy_tailed() {
        let s = spec("functions=5,rate=50,seed=3");
        let t = s.generate(100.0).unwrap();
        assert_eq!(t.invocations, s.generate(100.0).unwrap().invocations);
        let count = |f: &str| t.invocations.iter().filter(|i| i.function == f).count();
        // Zipf with skew 1 over 5: f0 gets 44%, f4 9% of 5000.
        assert!(count("f0") > 2 * count("f4"), "{} vs {}", count("f0"), count("f4"));
        assert!(t.invocations.iter().all(|i| (0.0..100.0).contains(&i.start_s) && i.duration_s.unwrap() > 0.0));
        let n = t.invocations.len() as f64;
        assert!((4000.0..6000.0).contains(&n), "{n} invocations for an expected 5000");
    }

    #[test]
    fn fixed_intervals_with_cv_zero() {
        let t = spec("functions=1,rate=2,cv=0").generate(10.0).unwrap();
        assert_eq!(t.invocations.len(), 20);
        let gaps: Vec<f64> = t.invocations.windows(2).map(|w| w[1].start_s - w[0].start_s).collect();
        assert!(gaps.iter().all(|g| (g - 0.5).abs() < 1e-9));
    }

    #[test]
    fn spike_rises_in_its_window() {
        let t = spec("spike:function=f,base=1,peak=100,at=10,for=10,seed=1").generate(30.0).unwrap();
        let during = t.invocations.iter().filter(|i| (10.0..20.0).contains(&i.start_s)).count();
        let outside = t.invocations.len() - during;
        assert!(during > 500 && outside < 100, "{during} in the spike, {outside} outside");
        assert!(t.invocations.iter().all(|i| i.function == "f" && i.start_s < 30.0));
    }
}
