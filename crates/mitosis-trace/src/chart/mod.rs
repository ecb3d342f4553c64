//! Charts written as SVG text: grouped bars on a log axis ([`bars`], the
//! function benchmark's) and lines ([`lines`]: latency CDFs, memory over
//! time), one series per run so that policies compare in one figure.
//!
//! Written by hand rather than with a plotting library so that they need no
//! font files or system libraries: the text is SVG `<text>`, laid out by
//! whatever displays the chart.

pub mod bars;
pub mod lines;

pub use bars::{grouped_bars_log, Chart, Group};
pub use lines::{line_chart, LineChart, Scale, Series};

/// Colours of the series (colour-blind safe).
const COLOURS: [&str; 6] = ["#d55e00", "#0072b2", "#009e73", "#cc79a7", "#e69f00", "#56b4e9"];

/// Escapes text for SVG.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A value as a short label (3 significant figures at most).
fn short(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else if v >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}
