//! Serverless traces and their open-loop replay against a gateway.
//!
//! This crate owns the trace formats ([`formats`]: Azure Functions 2021
//! and 2019, the synthetic generator and the spike shape), schedules made
//! from them ([`schedule`]: window, scale, mapping of trace functions onto
//! the suite's functions by popularity rank), the open-loop replayer
//! ([`replay`]), reports and SVG charts of one or several runs
//! ([`report`], [`chart`]), and keep-alive and semi-warm simulated over a
//! whole trace ([`keepalive`]); [`command`] is `mitosis replay`.
//!
//! It knows the gateway only by HTTP: `POST /invoke/{function}` (the
//! `x-mitosis-start: cold|fork|warm` header of the answer), and `GET
//! /metrics` (the gauges `mitosis_instance_memory_bytes` and
//! `mitosis_seed_memory_bytes`, see [`metrics`]). It must not link the
//! gateway, the daemon or anything that starts functions: benchmarks run a
//! gateway themselves and point the replayer at it.
//!
//! # Driving it in-process
//!
//! A benchmark that compares policies replays the same schedule against
//! each policy's gateway and reports the runs together:
//!
//! ```no_run
//! use std::time::Duration;
//! use mitosis_trace::{formats::synthetic::Spec, report, schedule, ReplayConfig};
//!
//! # async fn f() -> Result<(), mitosis_trace::Error> {
//! let spec: Spec = "spike:function=json,base=1,peak=50,at=10,for=10,seed=1".parse()?;
//! let trace = spec.generate(30.0)?;
//! let schedule = schedule::Schedule::build(&trace, &schedule::ScheduleOptions::new(Duration::from_secs(30)))?;
//! let mut runs = Vec::new();
//! for (policy, url) in [("fork", "http://127.0.0.1:8001"), ("cold", "http://127.0.0.1:8002")] {
//!     let cfg = ReplayConfig { label: policy.into(), ..ReplayConfig::new(url) };
//!     runs.push(mitosis_trace::replay(&cfg, &schedule).await?);
//! }
//! let report = report::Report::new(&runs);
//! print!("{}", report.table());
//! report::write_dir("target/spike".as_ref(), &runs, &report, None)?;
//! # Ok(()) }
//! ```
//!
//! [`replay`] is async (tokio, multi-thread runtime wanted: the scheduler
//! must not wait behind request tasks); [`replay_blocking`] makes its own
//! runtime.

#![forbid(unsafe_code)]

use std::path::PathBuf;

pub mod chart;
pub mod command;
pub mod formats;
pub mod keepalive;
pub mod metrics;
pub mod replay;
pub mod report;
pub mod schedule;

pub use replay::{replay, replay_blocking, MemorySample, Record, ReplayConfig, ReplayError, ReplayRun, StartKind};
pub use report::Report;
pub use schedule::{Invocation, Schedule, ScheduleOptions};

/// Credit line for figures made from the Azure traces (CC-BY 4.0).
pub const AZURE_CREDIT: &str = "Trace: Azure Public Dataset (Microsoft), CC-BY 4.0";

/// Where a trace comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum TraceSource {
    /// A trace file; its format detected from its header when None
    /// ([`formats::Format::detect`]).
    File { path: PathBuf, format: Option<formats::Format>, seed: u64 },
    Synthetic(formats::synthetic::Spec),
}

impl TraceSource {
    /// The trace, generated (if synthetic) over `horizon_s` trace seconds.
    pub fn load(&self, horizon_s: f64) -> Result<formats::Trace, Error> {
        Ok(match self {
            TraceSource::File { path, format, seed } => {
                let format = match format {
                    Some(f) => *f,
                    None => formats::Format::detect(path)?,
                };
                formats::load(path, format, *seed)?
            }
            TraceSource::Synthetic(spec) => spec.generate(horizon_s)?,
        })
    }

    /// The credit line its figures need, if any.
    pub fn credit(&self) -> Option<&'static str> {
        matches!(self, TraceSource::File { .. }).then_some(AZURE_CREDIT)
    }
}

/// Any failure of this crate, with the exit status `mitosis replay` gives it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Trace(#[from] formats::TraceError),
    #[error(transparent)]
    Spec(#[from] formats::synthetic::SpecError),
    #[error(transparent)]
    Schedule(#[from] schedule::ScheduleError),
    #[error(transparent)]
    Replay(#[from] ReplayError),
    #[error(transparent)]
    Write(#[from] report::WriteError),
}

impl Error {
    /// sysexits: 64 usage (bad spec, map, scale, URL), 65 malformed trace,
    /// 66 trace file missing or unreadable, 69 gateway unreachable, 73
    /// output not writable, 70 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Spec(_) | Error::Schedule(_) | Error::Replay(ReplayError::BadGateway(_)) => 64,
            Error::Trace(formats::TraceError::Malformed { .. }) => 65,
            Error::Trace(formats::TraceError::Read { .. }) => 66,
            Error::Replay(ReplayError::Unreachable { .. } | ReplayError::NoAnswer(_)) => 69,
            Error::Write(_) => 73,
            Error::Replay(ReplayError::Runtime(_)) => 70,
        }
    }
}
