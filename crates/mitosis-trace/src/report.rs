//! Reports of one or more labelled runs (e.g. one per gateway policy):
//! latency percentiles per function and overall, start kinds, memory;
//! as a text table, JSON, and SVG charts with one line per run.
//!
//! Percentiles (hdrhistogram, 3 significant digits) are of the *successful*
//! (2xx) requests; `errors` counts the others (non-2xx, timed out, no
//! connection, not sent), so read the two together: a policy that fails
//! requests fast does not look faster for it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hdrhistogram::Histogram;

use crate::chart::{line_chart, LineChart, Scale, Series};
use crate::replay::{Record, ReplayRun, StartKind};

const MIB: f64 = 1048576.0;
const GIB: f64 = 1073741824.0;
/// Points of a CDF line at most (a chart, not the data: the records have it all).
const CDF_POINTS: usize = 400;

/// Latency of the successful requests of one function (or all).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LatencyStats {
    /// Successful requests (the percentiles' sample).
    pub count: u64,
    pub errors: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// How the serving instances started, by the gateway's header.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct StartCounts {
    pub cold: u64,
    pub fork: u64,
    pub warm: u64,
    /// Answers without the header (failures, queued requests).
    pub unknown: u64,
}

/// One run, summed up.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RunSummary {
    pub label: String,
    pub requests: u64,
    pub overall: LatencyStats,
    pub functions: BTreeMap<String, LatencyStats>,
    pub starts: StartCounts,
    /// Integral of instance + seed memory over the window.
    pub memory_mib_s: f64,
    pub memory_gib_s: f64,
    pub peak_memory_mib: f64,
    pub memory_samples: usize,
    pub memory_failures: usize,
    pub window_s: f64,
    /// How late requests left, P99 (ms): near 0 when the replayer kept up.
    pub send_lag_p99_ms: f64,
}

/// Several runs side by side.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Report {
    pub runs: Vec<RunSummary>,
}

fn histogram() -> Histogram<u64> {
    // 1 µs .. 1 h, 3 significant digits.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("the bounds are valid")
}

/// The latency of the successful ones of `records`, and how many failed.
pub fn stats<'a>(records: impl Iterator<Item = &'a Record>) -> LatencyStats {
    let mut h = histogram();
    let mut errors = 0;
    for r in records {
        if r.ok() {
            h.saturating_record((r.latency_ms * 1000.0).round().max(1.0) as u64);
        } else {
            errors += 1;
        }
    }
    let q = |q: f64| if h.is_empty() { 0.0 } else { h.value_at_quantile(q) as f64 / 1000.0 };
    LatencyStats { count: h.len(), errors, p50_ms: q(0.50), p90_ms: q(0.90), p95_ms: q(0.95), p99_ms: q(0.99), max_ms: if h.is_empty() { 0.0 } else { h.max() as f64 / 1000.0 } }
}

impl RunSummary {
    pub fn new(run: &ReplayRun) -> Self {
        let mut by_function: BTreeMap<&str, Vec<&Record>> = BTreeMap::new();
        let mut starts = StartCounts::default();
        let mut lag = histogram();
        for r in &run.records {
            by_function.entry(r.function.as_str()).or_default().push(r);
            match r.start {
                Some(StartKind::Cold) => starts.cold += 1,
                Some(StartKind::Fork) => starts.fork += 1,
                Some(StartKind::Warm) => starts.warm += 1,
                None => starts.unknown += 1,
            }
            if let Some(sent) = r.sent_ms {
                lag.saturating_record(((sent - r.at_ms).max(0.0) * 1000.0).round().max(1.0) as u64);
            }
        }
        let byte_s = run.memory_byte_seconds();
        RunSummary {
            label: run.label.clone(),
            requests: run.records.len() as u64,
            overall: stats(run.records.iter()),
            functions: by_function.into_iter().map(|(f, rs)| (f.to_string(), stats(rs.into_iter()))).collect(),
            starts,
            memory_mib_s: byte_s / MIB,
            memory_gib_s: byte_s / GIB,
            peak_memory_mib: run.peak_memory_bytes() as f64 / MIB,
            memory_samples: run.memory.len(),
            memory_failures: run.memory_failures,
            window_s: run.window_s,
            send_lag_p99_ms: if lag.is_empty() { 0.0 } else { lag.value_at_quantile(0.99) as f64 / 1000.0 },
        }
    }
}

impl Report {
    pub fn new(runs: &[ReplayRun]) -> Self {
        Report { runs: runs.iter().map(RunSummary::new).collect() }
    }

    /// The report as text tables, one per run.
    pub fn table(&self) -> String {
        let mut s = String::new();
        for run in &self.runs {
            s.push_str(&format!(
                "run {}: {} requests over {:.0} s, {} failed\n",
                run.label, run.requests, run.window_s, run.overall.errors
            ));
            s.push_str(&format!("{:<24} {:>8} {:>7} {:>10} {:>10} {:>10} {:>10}\n", "FUNCTION", "OK", "ERRORS", "P50 ms", "P90 ms", "P95 ms", "P99 ms"));
            let row = |name: &str, l: &LatencyStats| {
                format!("{:<24} {:>8} {:>7} {:>10.2} {:>10.2} {:>10.2} {:>10.2}\n", name, l.count, l.errors, l.p50_ms, l.p90_ms, l.p95_ms, l.p99_ms)
            };
            for (f, l) in &run.functions {
                s.push_str(&row(f, l));
            }
            s.push_str(&row("(all)", &run.overall));
            let st = &run.starts;
            s.push_str(&format!("starts: {} cold, {} fork, {} warm, {} unknown\n", st.cold, st.fork, st.warm, st.unknown));
            s.push_str(&format!(
                "memory: {:.1} MiB·s ({:.3} GiB·s), peak {:.1} MiB ({} samples, {} missing); send lag P99 {:.2} ms\n\n",
                run.memory_mib_s, run.memory_gib_s, run.peak_memory_mib, run.memory_samples, run.memory_failures, run.send_lag_p99_ms
            ));
        }
        s
    }
}

/// The latency CDF of the successful requests, one line per run.
pub fn latency_cdf_svg(runs: &[ReplayRun], note: Option<&str>) -> String {
    let series = runs
        .iter()
        .map(|run| {
            let mut l: Vec<f64> = run.records.iter().filter(|r| r.ok()).map(|r| r.latency_ms.max(0.001)).collect();
            l.sort_by(f64::total_cmp);
            let n = l.len();
            let step = n.div_ceil(CDF_POINTS).max(1);
            let mut points: Vec<(f64, f64)> = (0..n).step_by(step).map(|i| (l[i], (i + 1) as f64 / n as f64)).collect();
            if let Some(&last) = l.last() {
                points.push((last, 1.0));
            }
            Series { label: format!("{} ({} ok, {} failed)", run.label, n, run.records.len() - n), points }
        })
        .collect();
    line_chart(&LineChart {
        title: "Latency CDF (from scheduled time)".into(),
        x_label: "latency (ms, log)".into(),
        y_label: "fraction of successful requests".into(),
        x_scale: Scale::Log,
        y_max: Some(1.0),
        series,
        note: note.map(str::to_string),
    })
}

/// Instance + seed memory over time, one line per run.
pub fn memory_svg(runs: &[ReplayRun], note: Option<&str>) -> String {
    let series = runs
        .iter()
        .map(|run| Series {
            label: format!("{} ({:.0} MiB·s)", run.label, run.memory_byte_seconds() / MIB),
            points: run.memory.iter().map(|m| (m.t_s, m.total_bytes() as f64 / MIB)).collect(),
        })
        .collect();
    line_chart(&LineChart {
        title: "Local memory: instances + seeds".into(),
        x_label: "time (s)".into(),
        y_label: "memory (MiB)".into(),
        x_scale: Scale::Linear,
        y_max: None,
        series,
        note: note.map(str::to_string),
    })
}

/// A file of the report that could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {}", path.display())]
pub struct WriteError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// A label as a file name part.
fn file_part(label: &str) -> String {
    label.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect()
}

/// Writes into `dir` (made if missing): per run `LABEL-records.jsonl` and
/// `LABEL-memory.csv`; `summary.json` (the report), `latency-cdf.svg` and
/// `memory.svg`. Returns the files written.
pub fn write_dir(dir: &Path, runs: &[ReplayRun], report: &Report, note: Option<&str>) -> Result<Vec<PathBuf>, WriteError> {
    let at = |name: String| dir.join(name);
    let wrap = |path: &Path| {
        let path = path.to_path_buf();
        move |source| WriteError { path, source }
    };
    std::fs::create_dir_all(dir).map_err(wrap(dir))?;
    let mut written = Vec::new();
    for run in runs {
        let records = at(format!("{}-records.jsonl", file_part(&run.label)));
        run.write_records(&records).map_err(wrap(&records))?;
        let memory = at(format!("{}-memory.csv", file_part(&run.label)));
        run.write_memory(&memory).map_err(wrap(&memory))?;
        written.extend([records, memory]);
    }
    let summary = at("summary.json".into());
    let json = serde_json::to_string_pretty(report).map_err(|e| WriteError { path: summary.clone(), source: e.into() })?;
    std::fs::write(&summary, json + "\n").map_err(wrap(&summary))?;
    let cdf = at("latency-cdf.svg".into());
    std::fs::write(&cdf, latency_cdf_svg(runs, note)).map_err(wrap(&cdf))?;
    let mem = at("memory.svg".into());
    std::fs::write(&mem, memory_svg(runs, note)).map_err(wrap(&mem))?;
    written.extend([summary, cdf, mem]);
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::MemorySample;

    fn record(function: &str, latency_ms: f64, status: u16, start: Option<StartKind>) -> Record {
        Record {
            at_ms: 0.0,
            sent_ms: Some(1.0),
            function: function.into(),
            trace_function: function.into(),
            status: Some(status),
            latency_ms,
            start,
            error: (status >= 300).then(|| "HTTP 500: x".into()),
        }
    }

    #[test]
    fn percentiles_of_successes_errors_counted() {
        let mut records: Vec<Record> = (1..=100).map(|i| record("a", i as f64, 200, Some(StartKind::Warm))).collect();
        records.push(record("b", 5.0, 500, None));
        records.push(record("b", 7.0, 200, Some(StartKind::Cold)));
        let run = ReplayRun {
            label: "p".into(),
            records,
            memory: vec![MemorySample { t_s: 0.0, instance_bytes: 1 << 20, seed_bytes: 0, live_instances: 1, per_function: Default::default() }, MemorySample { t_s: 2.0, instance_bytes: 1 << 20, seed_bytes: 1 << 20, live_instances: 1, per_function: Default::default() }],
            memory_failures: 0,
            window_s: 2.0,
        };
        let r = Report::new(std::slice::from_ref(&run));
        let s = &r.runs[0];
        assert_eq!((s.requests, s.overall.count, s.overall.errors), (102, 101, 1));
        let a = &s.functions["a"];
        assert!((a.p50_ms - 50.0).abs() < 0.1 && (a.p99_ms - 99.0).abs() < 0.1, "{a:?}");
        assert_eq!(s.starts, StartCounts { cold: 1, fork: 0, warm: 100, unknown: 1 });
        assert_eq!(s.memory_mib_s, 3.0);
        assert_eq!(s.peak_memory_mib, 2.0);
        assert!(r.table().contains("(all)"));
        let cdf = latency_cdf_svg(&[run.clone(), ReplayRun { label: "q".into(), ..run.clone() }], None);
        assert_eq!(cdf.matches("<polyline").count(), 2);
        assert_eq!(memory_svg(&[run], Some("credit")).matches("<polyline").count(), 1);
    }
}
