//! `mitosis replay`: load a trace, make its schedule, replay it, report.

use std::path::PathBuf;

use crate::report::{write_dir, Report};
use crate::schedule::{Schedule, ScheduleOptions};
use crate::{replay_blocking, Error, ReplayConfig, TraceSource};

/// Everything `mitosis replay` was asked.
#[derive(Debug, Clone)]
pub struct ReplayCommand {
    pub source: TraceSource,
    pub schedule: ScheduleOptions,
    pub replay: ReplayConfig,
    /// Where records, memory timeline, summary and charts go.
    pub out: Option<PathBuf>,
    /// The summary as JSON on stdout instead of the table.
    pub json: bool,
}

/// Runs the command: the table (or JSON) on stdout, what was written and
/// where on stderr.
pub fn run(cmd: &ReplayCommand) -> Result<Report, Error> {
    crate::replay::check_gateway(&cmd.replay.gateway)?;
    let horizon = cmd.schedule.skip_s + cmd.schedule.duration.as_secs_f64() * cmd.schedule.scale;
    let trace = cmd.source.load(horizon)?;
    let schedule = Schedule::build(&trace, &cmd.schedule)?;
    let mapped: Vec<String> =
        schedule.ranking.iter().filter_map(|r| r.function.as_ref().map(|f| format!("#{} {} ({}) -> {f}", r.rank, short_id(&r.trace_function), r.invocations))).collect();
    let dropped = schedule.ranking.iter().filter(|r| r.function.is_none()).count();
    eprintln!(
        "mitosis replay: {} requests over {} s to {} functions ({} trace functions dropped by --map)",
        schedule.invocations.len(),
        schedule.duration.as_secs_f64(),
        schedule.functions().len(),
        dropped
    );
    for line in mapped.iter().take(20) {
        eprintln!("  {line}");
    }
    if mapped.len() > 20 {
        eprintln!("  ... and {} more", mapped.len() - 20);
    }
    let run = replay_blocking(&cmd.replay, &schedule)?;
    let runs = [run];
    let report = Report::new(&runs);
    if cmd.json {
        println!("{}", serde_json::to_string_pretty(&report).expect("a report serializes"));
    } else {
        print!("{}", report.table());
    }
    if let Some(dir) = &cmd.out {
        for path in write_dir(dir, &runs, &report, cmd.source.credit())? {
            eprintln!("wrote {}", path.display());
        }
    }
    Ok(report)
}

/// A trace hash, shortened for reading.
fn short_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}
