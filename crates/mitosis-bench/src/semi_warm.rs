//! `mitosis bench faasmem --experiment semi-warm`: the applicability of
//! semi-warm (FaaSMem's, issue 11's experiment 4). Over whole traces, how
//! much of the time instances sit idle under keep-alive would be
//! semi-warm, by the daemon's rule: idle for the P99 of the function's
//! reuse intervals, and at least the floor (`--offload-idle`, FaaSMem's 60
//! s). A simulation ([`mitosis_trace::keepalive`]), as FaaSMem's was: a
//! day of a trace takes seconds, where a replay takes the day.
//!
//! Traces are files (Azure 2021 or 2019, by header) or synthetic SPECs.
//! An Azure 2019 invocations file is weighted by the functions' memory when
//! a file named like it with `memory` for `invocations` lies beside it (the
//! samples' `azure2019-sample-memory.csv`); the others count every
//! instance-second alike. A trace file that is absent is said to be so
//! and left out; at least one trace must be there.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use mitosis_trace::chart::{line_chart, LineChart, Scale, Series};
use mitosis_trace::formats::{self, synthetic::Spec, Format, Trace};
use mitosis_trace::keepalive::{simulate, sorted_shares, FunctionIdle, KeepAlive, Summary};

/// A day: the Azure 2019 files' span, and the synthetic traces' here.
const DAY_S: f64 = 86_400.0;

/// The samples in `../shared/traces`, and a synthetic day shaped like
/// FaaSMem's selection of the 2021 trace: 424 functions, its 1.64
/// invocations a second, heavy-tailed popularity, bursty arrivals.
pub const DEFAULT_TRACES: [&str; 3] = [
    "../shared/traces/azure2019-sample-invocations.csv",
    "../shared/traces/azure2021-first200.csv",
    "functions=424,rate=1.64,skew=1.2,cv=2,seed=7",
];

#[derive(Debug, Clone)]
pub struct Options {
    pub traces: Vec<String>,
    pub rule: KeepAlive,
    pub out: PathBuf,
    pub json: bool,
}

/// One trace's simulation.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TraceFigures {
    pub trace: String,
    /// Seconds simulated.
    pub span_s: f64,
    /// Where the memory weights came from, if any.
    pub memory: Option<String>,
    pub summary: Summary,
    pub functions: Vec<FunctionIdle>,
}

/// A trace loaded: its invocations, span, memory weights and their source.
struct Loaded {
    trace: Trace,
    span_s: f64,
    weights: HashMap<String, f64>,
    memory: Option<String>,
}

/// `source` as a file if it is a path that exists or looks like one (ends
/// in `.csv`), else as a synthetic SPEC; `Ok(None)`: a file that is absent.
fn load(source: &str) -> anyhow::Result<Option<Loaded>> {
    let path = Path::new(source);
    if !path.exists() && !source.ends_with(".csv") {
        let spec: Spec = source.parse()?;
        let trace = spec.generate(DAY_S)?;
        return Ok(Some(Loaded { trace, span_s: DAY_S, weights: HashMap::new(), memory: None }));
    }
    let format = match Format::detect(path) {
        Ok(f) => f,
        Err(e) if e.is_missing() => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let trace = formats::load(path, format, 7)?;
    let (span_s, weights, memory) = match format {
        Format::Azure2019 => {
            let memory_path = memory_file_of(path);
            match std::fs::read_to_string(&memory_path) {
                Ok(text) => {
                    let weights = formats::azure2019::parse_function_memory(&text)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", memory_path.display()))?;
                    (DAY_S, weights, Some(memory_path.display().to_string()))
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => (DAY_S, HashMap::new(), None),
                Err(e) => return Err(e).with_context(|| format!("reading {}", memory_path.display())),
            }
        }
        Format::Azure2021 => {
            let end = trace.invocations.iter().map(|i| i.start_s + i.duration_s.unwrap_or(0.0)).fold(0.0, f64::max);
            (end, HashMap::new(), None)
        }
    };
    Ok(Some(Loaded { trace, span_s, weights, memory }))
}

/// `x-invocations.csv` → `x-memory.csv` beside it.
fn memory_file_of(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().replace("invocations", "memory")).unwrap_or_default();
    path.with_file_name(name)
}

/// Simulates every trace of `opts`; the absent files' names come back apart.
pub fn figures(opts: &Options) -> anyhow::Result<(Vec<TraceFigures>, Vec<String>)> {
    let bar = crate::progress(opts.json, opts.traces.len() as u64);
    let (mut done, mut absent) = (Vec::new(), Vec::new());
    for source in &opts.traces {
        bar.set_message(source.clone());
        match load(source).with_context(|| format!("trace {source}"))? {
            None => absent.push(source.clone()),
            Some(l) => {
                let functions = simulate(&l.trace, opts.rule, l.span_s);
                let summary = Summary::of(&functions, &l.weights);
                done.push(TraceFigures { trace: source.clone(), span_s: l.span_s, memory: l.memory, summary, functions });
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    anyhow::ensure!(!done.is_empty(), "none of the traces is there: {}", absent.join(", "));
    Ok((done, absent))
}

fn short_name(trace: &str) -> String {
    Path::new(trace).file_name().map_or_else(|| trace.to_string(), |n| n.to_string_lossy().into_owned())
}

pub fn table(figures: &[TraceFigures]) -> String {
    let mut s = format!(
        "{:<46} {:>9} {:>11} {:>9} {:>8} {:>10} {:>13} {:>22}\n",
        "TRACE", "FUNCTIONS", "INVOCATIONS", "INSTANCES", "IDLE h", "SEMI-WARM", "OF MEMORY-TIME", "PER FUNCTION P10/50/90"
    );
    for f in figures {
        let m = &f.summary;
        let memory = m.share_of_memory_time.map_or_else(|| "-".to_string(), |v| format!("{:.1}%", v * 100.0));
        s.push_str(&format!(
            "{:<46} {:>9} {:>11} {:>9} {:>8.1} {:>9.1}% {:>13} {:>6.1}/{:.1}/{:.1}%\n",
            short_name(&f.trace),
            m.functions,
            m.invocations,
            m.instances,
            m.idle_hours,
            m.share_of_time * 100.0,
            memory,
            m.function_share_p10 * 100.0,
            m.function_share_p50 * 100.0,
            m.function_share_p90 * 100.0
        ));
    }
    s
}

/// FaaSMem's figure: the CDF over functions of their idle time's semi-warm share.
pub fn cdf_svg(figures: &[TraceFigures], note: &str) -> String {
    let series = figures
        .iter()
        .map(|f| {
            let shares = sorted_shares(&f.functions);
            let n = shares.len() as f64;
            let points = shares.iter().enumerate().map(|(i, s)| (s * 100.0, (i + 1) as f64 / n)).collect();
            Series { label: format!("{} ({} functions)", short_name(&f.trace), shares.len()), points }
        })
        .collect();
    line_chart(&LineChart {
        title: "Semi-warm share of each function's idle time".into(),
        x_label: "share of idle time spent semi-warm (%)".into(),
        y_label: "fraction of functions".into(),
        x_scale: Scale::Linear,
        y_max: Some(1.0),
        series,
        note: Some(note.to_string()),
    })
}

pub fn run(opts: &Options) -> anyhow::Result<()> {
    let (figures, absent) = figures(opts)?;
    let note = format!(
        "keep-alive {} s, LIFO; semi-warm after the P99 of the function's last 512 reuse intervals, at least {} s. Azure Public Dataset (CC-BY 4.0) where a trace is Azure's",
        opts.rule.keep_alive_s, opts.rule.min_delay_s
    );
    std::fs::create_dir_all(&opts.out).with_context(|| format!("creating {}", opts.out.display()))?;
    let json = serde_json::json!({ "bench": "faasmem", "experiment": "semi-warm", "note": note, "absent": absent, "traces": figures });
    let json_path = opts.out.join("semi-warm.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&json)?).with_context(|| format!("writing {}", json_path.display()))?;
    let svg_path = opts.out.join("semi-warm-cdf.svg");
    std::fs::write(&svg_path, cdf_svg(&figures, &note)).with_context(|| format!("writing {}", svg_path.display()))?;
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(());
    }
    println!("semi-warm applicability (simulated over each trace): {note}");
    print!("{}", table(&figures));
    for f in figures.iter().filter(|f| f.memory.is_some()) {
        println!("{}: memory weights from {}", short_name(&f.trace), f.memory.as_deref().unwrap_or_default());
    }
    for a in &absent {
        println!("absent, left out: {a}");
    }
    println!("wrote {}\nwrote {}", json_path.display(), svg_path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_synthetic_day_and_an_absent_file() {
        // Nothing is written: figures() only reads.
        let gone = "/nonexistent-mitosis-bench/gone.csv".to_string();
        let opts = Options {
            traces: vec!["functions=5,rate=0.05,cv=2,seed=3".into(), gone.clone()],
            rule: KeepAlive::default(),
            out: PathBuf::from("/nonexistent-mitosis-bench"),
            json: true,
        };
        let (done, absent) = figures(&opts).unwrap();
        assert_eq!(absent.len(), 1);
        let s = &done[0].summary;
        assert_eq!((s.functions, done[0].span_s), (5, DAY_S));
        assert!(s.share_of_time > 0.0 && s.share_of_time < 1.0, "{s:?}");
        assert!(s.share_of_memory_time.is_none());
        assert!(table(&done).contains("functions=5"));
        assert!(cdf_svg(&done, "n").starts_with("<svg"));
        let only_absent = Options { traces: vec![gone], ..opts };
        assert!(figures(&only_absent).unwrap_err().to_string().contains("none of the traces"));
    }

    #[test]
    fn an_azure_2019_file_takes_the_memory_file_beside_it() {
        assert_eq!(memory_file_of(Path::new("/t/azure2019-sample-invocations.csv")), PathBuf::from("/t/azure2019-sample-memory.csv"));
    }
}
