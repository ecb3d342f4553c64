//! Charts written as SVG text: grouped bars on a log axis ([`bars`], the
//! function benchmark's) and lines ([`lines`]: latency CDFs, memory over
//! time), one series per run so that policies compare in one figure.
//!
//! Written by hand rather than with a plotting library so that they need no
//! font files or system libraries: the text is SVG `<text>`, laid out by
//! whatever displays the chart.

use std::fmt::Write;

pub mod bars;
pub mod lines;

pub use bars::{grouped_bars_log, Chart, Group};
pub use lines::{line_chart, LineChart, Scale, Series};

/// Room left of the plot (y labels), above it (title) and per legend row.
const LEFT: f64 = 80.0;
const TOP: f64 = 50.0;
const LEGEND_ROW: f64 = 18.0;

/// Colours of the series (colour-blind safe).
const COLOURS: [&str; 6] = ["#d55e00", "#0072b2", "#009e73", "#cc79a7", "#e69f00", "#56b4e9"];

/// The SVG element, a white background and the title centred on top.
fn open_svg(width: f64, height: f64, title: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(s, r#"<text x="{:.0}" y="24" font-size="16" text-anchor="middle" font-weight="bold">{}</text>"#, width / 2.0, esc(title));
    s
}

/// The x and y axis lines of a plot area, and the end of the document.
fn close_svg(s: &mut String, left: f64, right: f64, top: f64, base: f64) {
    let _ = writeln!(s, r##"<line x1="{left}" y1="{base}" x2="{right:.0}" y2="{base}" stroke="#333" stroke-width="1"/>"##);
    let _ = writeln!(s, r##"<line x1="{left}" y1="{top}" x2="{left}" y2="{base}" stroke="#333" stroke-width="1"/>"##);
    s.push_str("</svg>\n");
}

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
