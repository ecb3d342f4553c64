//! A line chart: one polyline per series, a linear or log10 x axis and a
//! linear y axis from 0.

use std::fmt::Write;

use super::{close_svg, esc, open_svg, short, COLOURS, LEFT, LEGEND_ROW, TOP};

/// One line.
#[derive(Debug, Clone)]
pub struct Series {
    pub label: String,
    /// (x, y) points in x order; points a log axis cannot show (x <= 0) are left out.
    pub points: Vec<(f64, f64)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    Linear,
    /// Whole decades around the data.
    Log,
}

#[derive(Debug, Clone)]
pub struct LineChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub x_scale: Scale,
    /// The y axis' top, or None for a round number above the data.
    pub y_max: Option<f64>,
    pub series: Vec<Series>,
    /// A line of small print under the chart (e.g. the data's credit).
    pub note: Option<String>,
}

const RIGHT: f64 = 30.0;
const WIDTH: f64 = 760.0;
const PLOT_HEIGHT: f64 = 360.0;
const BOTTOM: f64 = 70.0;

/// Up to about six round ticks from 0 to at least `hi`.
fn linear_ticks(hi: f64) -> (f64, Vec<f64>) {
    let hi = if hi > 0.0 && hi.is_finite() { hi } else { 1.0 };
    let raw = hi / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * mag).find(|s| *s >= raw).unwrap_or(10.0 * mag);
    let n = (hi / step).ceil().max(1.0) as usize;
    let top = step * n as f64;
    (top, (0..=n).map(|i| step * i as f64).collect())
}

/// A tick's label: whole numbers as such, others without trailing zeros.
fn label(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        let s = short(v);
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    }
}

/// The chart as an SVG document.
pub fn line_chart(c: &LineChart) -> String {
    let visible = |&(x, y): &(f64, f64)| x.is_finite() && y.is_finite() && (c.x_scale == Scale::Linear || x > 0.0);
    let xs: Vec<f64> = c.series.iter().flat_map(|s| s.points.iter().filter(|p| visible(p)).map(|p| p.0)).collect();
    let ys_max = c.series.iter().flat_map(|s| s.points.iter().filter(|p| visible(p)).map(|p| p.1)).fold(0.0, f64::max);
    let x_lo = xs.iter().copied().fold(f64::INFINITY, f64::min);
    let x_hi = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);

    let top = TOP + LEGEND_ROW * c.series.len() as f64;
    let base = top + PLOT_HEIGHT;
    let height = base + BOTTOM;
    let plot_w = WIDTH - LEFT - RIGHT;
    let (y_top, y_ticks) = match c.y_max {
        Some(m) if m > 0.0 => (m, (0..=5).map(|i| m * i as f64 / 5.0).collect()),
        _ => linear_ticks(ys_max),
    };
    // The x axis: a mapping to [0, 1] and its labelled ticks.
    let (x_of, x_ticks): (Box<dyn Fn(f64) -> f64>, Vec<f64>) = match c.x_scale {
        Scale::Log => {
            let (lo, hi) = if xs.is_empty() { (0, 1) } else { (x_lo.log10().floor() as i32, (x_hi.log10().ceil() as i32).max(x_lo.log10().floor() as i32 + 1)) };
            (Box::new(move |x: f64| (x.log10() - lo as f64) / (hi - lo) as f64), (lo..=hi).map(|d| 10f64.powi(d)).collect())
        }
        Scale::Linear => {
            let lo = if xs.is_empty() { 0.0 } else { x_lo.min(0.0) };
            let (top, ticks) = linear_ticks(if xs.is_empty() { 1.0 } else { x_hi - lo });
            (Box::new(move |x: f64| (x - lo) / top), ticks.into_iter().map(|t| t + lo).collect())
        }
    };
    let px = |x: f64| LEFT + plot_w * x_of(x);
    let py = |y: f64| top + PLOT_HEIGHT * (1.0 - y / y_top);

    let mut s = open_svg(WIDTH, height, &c.title);
    for (i, series) in c.series.iter().enumerate() {
        let y = 38.0 + LEGEND_ROW * i as f64;
        let _ = writeln!(s, r#"<rect x="{LEFT}" y="{:.0}" width="18" height="3" fill="{}"/>"#, y + 5.0, COLOURS[i % COLOURS.len()]);
        let _ = writeln!(s, r#"<text x="{:.0}" y="{:.0}" font-size="12">{}</text>"#, LEFT + 24.0, y + 11.0, esc(&series.label));
    }
    for &t in &y_ticks {
        let y = py(t);
        let _ = writeln!(s, r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.0}" y2="{y:.1}" stroke="#ddd" stroke-width="1"/>"##, WIDTH - RIGHT);
        let _ = writeln!(s, r#"<text x="{:.0}" y="{:.1}" font-size="12" text-anchor="end">{}</text>"#, LEFT - 6.0, y + 4.0, label(t));
    }
    for &t in &x_ticks {
        let x = px(t);
        let _ = writeln!(s, r##"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{base}" stroke="#ddd" stroke-width="1"/>"##);
        let _ = writeln!(s, r#"<text x="{x:.1}" y="{:.0}" font-size="12" text-anchor="middle">{}</text>"#, base + 16.0, label(t));
    }
    let _ = writeln!(s, r#"<text x="{:.0}" y="{:.0}" font-size="13" text-anchor="middle">{}</text>"#, LEFT + plot_w / 2.0, base + 38.0, esc(&c.x_label));
    let mid = top + PLOT_HEIGHT / 2.0;
    let _ = writeln!(s, r#"<text x="18" y="{mid:.0}" font-size="13" text-anchor="middle" transform="rotate(-90 18 {mid:.0})">{}</text>"#, esc(&c.y_label));
    for (i, series) in c.series.iter().enumerate() {
        let points: Vec<String> = series.points.iter().filter(|p| visible(p)).map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y))).collect();
        if points.is_empty() {
            continue;
        }
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{}" stroke-width="2" points="{}"><title>{}</title></polyline>"#,
            COLOURS[i % COLOURS.len()],
            points.join(" "),
            esc(&series.label)
        );
    }
    if let Some(note) = &c.note {
        let _ = writeln!(s, r##"<text x="{LEFT}" y="{:.0}" font-size="10" fill="#555">{}</text>"##, height - 8.0, esc(note));
    }
    close_svg(&mut s, LEFT, WIDTH - RIGHT, top, base);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_on_a_log_axis() {
        let svg = line_chart(&LineChart {
            title: "latency <CDF>".into(),
            x_label: "ms".into(),
            y_label: "fraction".into(),
            x_scale: Scale::Log,
            y_max: Some(1.0),
            series: vec![
                Series { label: "a".into(), points: vec![(0.0, 0.0), (2.0, 0.5), (300.0, 1.0)] },
                Series { label: "empty".into(), points: vec![] },
            ],
            note: Some("data: Azure Public Dataset".into()),
        });
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert!(svg.contains("latency &lt;CDF&gt;"));
        assert_eq!(svg.matches("<polyline").count(), 1);
        for tick in [">1<", ">10<", ">100<", ">1000<"] {
            assert!(svg.contains(tick), "{tick} missing");
        }
    }

    #[test]
    fn round_linear_ticks() {
        assert_eq!(linear_ticks(9.0), (10.0, vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]));
        assert_eq!(linear_ticks(0.0).0, 1.0);
        assert_eq!(linear_ticks(130.0).0, 150.0);
        assert_eq!([0.0, 0.2, 2.5, 0.001, 40.0].map(label), ["0", "0.2", "2.5", "0.001", "40"]);
    }
}
