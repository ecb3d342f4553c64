//! Trace formats: each turns its source into one [`Trace`], a flat list of
//! invocations of trace functions (named by the trace's own ids) at offsets
//! in seconds from the trace's start.
//!
//! - [`azure2021`]: the Azure Functions Invocation Trace 2021
//!   (`app,func,end_timestamp,duration`), one row per invocation.
//! - [`azure2019`]: the Azure Functions 2019 invocation counts per function
//!   and minute (`HashOwner,HashApp,HashFunction,Trigger,1..1440`).
//! - [`synthetic`]: a generator shaped by the published distributions, and
//!   the spike shape, both from a SPEC string.
//!
//! Traces derived from the Azure files are the Azure Public Dataset
//! (Microsoft, CC-BY 4.0): credit it wherever a figure made from them is
//! shown.

use std::path::{Path, PathBuf};

pub mod azure2019;
pub mod azure2021;
pub mod synthetic;

/// One invocation of a trace function.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceInvocation {
    /// Seconds from the trace's origin (see each format), never negative.
    pub start_s: f64,
    /// The trace's id of the function.
    pub function: String,
    /// Its execution time in the trace, where the trace has one.
    pub duration_s: Option<f64>,
}

/// A trace: invocations in no particular order (a schedule sorts them).
#[derive(Debug, Clone, Default)]
pub struct Trace {
    pub invocations: Vec<TraceInvocation>,
}

/// The file formats [`load`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Azure2021,
    Azure2019,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "azure2021" => Ok(Format::Azure2021),
            "azure2019" => Ok(Format::Azure2019),
            _ => Err(format!("unknown trace format {s:?} (azure2021 or azure2019)")),
        }
    }
}

impl Format {
    /// The format of a file by its header line: `HashOwner,...` is Azure
    /// 2019, anything else is taken for Azure 2021 (whose parser then
    /// checks the header).
    pub fn detect(path: &Path) -> Result<Format, TraceError> {
        use std::io::BufRead;
        let file = std::fs::File::open(path).map_err(|source| TraceError::Read { path: path.to_path_buf(), source })?;
        let mut header = String::new();
        std::io::BufReader::new(file).read_line(&mut header).map_err(|source| TraceError::Read { path: path.to_path_buf(), source })?;
        Ok(if header.starts_with("HashOwner,") { Format::Azure2019 } else { Format::Azure2021 })
    }
}

/// A trace file that cannot be read or is malformed.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("cannot read trace file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}:{line}: {message}", path.display())]
    Malformed { path: PathBuf, line: usize, message: String },
}

impl TraceError {
    /// Whether the file itself is missing (as opposed to malformed or unreadable).
    pub fn is_missing(&self) -> bool {
        matches!(self, TraceError::Read { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

/// Reads a trace file of the given format. `seed` drives the formats that
/// place invocations at random (Azure 2019 spreads each minute's count
/// over the minute); the others ignore it.
pub fn load(path: &Path, format: Format, seed: u64) -> Result<Trace, TraceError> {
    let text = std::fs::read_to_string(path).map_err(|source| TraceError::Read { path: path.to_path_buf(), source })?;
    let malformed = |line, message| TraceError::Malformed { path: path.to_path_buf(), line, message };
    match format {
        Format::Azure2021 => azure2021::parse(&text).map_err(|e| malformed(e.line, e.message)),
        Format::Azure2019 => azure2019::parse(&text, seed).map_err(|e| malformed(e.line, e.message)),
    }
}

/// A malformed row, by its 1-based line number in the file.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct RowError {
    pub line: usize,
    pub message: String,
}

/// The lines of a CSV text after its header, numbered from 1 as in the
/// file, blank ones skipped; the header line is checked to start with
/// `expected` columns.
fn csv_rows<'a>(text: &'a str, expected: &[&str]) -> Result<impl Iterator<Item = (usize, Vec<&'a str>)> + 'a, RowError> {
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l.trim_end_matches('\r')));
    let (_, header) = lines.next().ok_or_else(|| RowError { line: 1, message: "empty file: no header".into() })?;
    let columns: Vec<&str> = header.split(',').map(str::trim).collect();
    if columns.len() < expected.len() || columns[..expected.len()] != *expected {
        return Err(RowError { line: 1, message: format!("header {header:?} does not start with {}", expected.join(",")) });
    }
    Ok(lines.filter(|(_, l)| !l.trim().is_empty()).map(|(n, l)| (n, l.split(',').map(str::trim).collect())))
}

/// A finite, non-negative number in a field.
fn number(line: usize, column: &str, field: &str) -> Result<f64, RowError> {
    match field.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(RowError { line, message: format!("{column} {field:?} is not a non-negative number") }),
    }
}
