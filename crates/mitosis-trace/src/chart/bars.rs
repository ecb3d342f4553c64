//! A grouped bar chart with a logarithmic value axis.

use std::fmt::Write;

use super::{close_svg, esc, open_svg, short, COLOURS, LEFT, LEGEND_ROW, TOP};

/// One group of bars (one per series), e.g. one function.
#[derive(Debug, Clone)]
pub struct Group {
    pub label: String,
    /// One value per series; values <= 0 are drawn as missing.
    pub values: Vec<f64>,
}

#[derive(Debug, Clone)]
pub struct Chart {
    pub title: String,
    pub y_label: String,
    /// Names of the series, in the order of each group's values.
    pub series: Vec<String>,
    pub groups: Vec<Group>,
}

const RIGHT: f64 = 20.0;
/// Narrowest chart, so that the title and legend fit beside few groups.
const MIN_WIDTH: f64 = 720.0;
const BOTTOM: f64 = 90.0;
const PLOT_HEIGHT: f64 = 360.0;
const GROUP_WIDTH: f64 = 78.0;

/// The chart as an SVG document: for each group, one bar per series, heights
/// on a log10 axis spanning whole decades around the data, each bar labelled
/// with its value.
pub fn grouped_bars_log(c: &Chart) -> String {
    let values: Vec<f64> = c.groups.iter().flat_map(|g| g.values.iter().copied()).filter(|v| *v > 0.0 && v.is_finite()).collect();
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let (lo_dec, hi_dec) = if values.is_empty() { (0, 1) } else { (lo.log10().floor() as i32, (hi.log10().ceil() as i32).max(lo.log10().floor() as i32 + 1)) };
    let width = (LEFT + RIGHT + GROUP_WIDTH * c.groups.len().max(1) as f64).max(MIN_WIDTH);
    let top = TOP + LEGEND_ROW * c.series.len() as f64;
    let height = top + PLOT_HEIGHT + BOTTOM;
    let y_of = |v: f64| top + PLOT_HEIGHT * (1.0 - (v.log10() - lo_dec as f64) / (hi_dec - lo_dec) as f64);
    let mut s = open_svg(width, height, &c.title);

    // Legend, one series a row under the title.
    for (i, name) in c.series.iter().enumerate() {
        let y = 38.0 + LEGEND_ROW * i as f64;
        let _ = writeln!(s, r#"<rect x="{LEFT}" y="{y:.0}" width="12" height="12" fill="{}"/>"#, COLOURS[i % COLOURS.len()]);
        let _ = writeln!(s, r#"<text x="{:.0}" y="{:.0}" font-size="12">{}</text>"#, LEFT + 18.0, y + 11.0, esc(name));
    }

    // Decade grid lines and labels.
    for d in lo_dec..=hi_dec {
        let y = y_of(10f64.powi(d));
        let _ = writeln!(s, r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.0}" y2="{y:.1}" stroke="#bbb" stroke-width="1"/>"##, width - RIGHT);
        let label = format!("{}", 10f64.powi(d));
        let _ = writeln!(s, r#"<text x="{:.0}" y="{:.1}" font-size="12" text-anchor="end">{label}</text>"#, LEFT - 6.0, y + 4.0);
        if d < hi_dec {
            for m in 2..10 {
                let y = y_of(m as f64 * 10f64.powi(d));
                let _ = writeln!(s, r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.0}" y2="{y:.1}" stroke="#eee" stroke-width="1"/>"##, width - RIGHT);
            }
        }
    }
    let _ = writeln!(
        s,
        r#"<text x="18" y="{:.0}" font-size="13" text-anchor="middle" transform="rotate(-90 18 {:.0})">{}</text>"#,
        top + PLOT_HEIGHT / 2.0,
        top + PLOT_HEIGHT / 2.0,
        esc(&c.y_label)
    );

    // Bars.
    let n = c.series.len().max(1) as f64;
    let bar = (GROUP_WIDTH - 14.0) / n;
    let base = top + PLOT_HEIGHT;
    for (gi, g) in c.groups.iter().enumerate() {
        let gx = LEFT + GROUP_WIDTH * gi as f64 + 7.0;
        for (si, &v) in g.values.iter().enumerate() {
            if !(v > 0.0 && v.is_finite()) {
                continue;
            }
            let x = gx + bar * si as f64;
            let y = y_of(v);
            let _ = writeln!(
                s,
                r#"<rect x="{x:.1}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{}: {} ms</title></rect>"#,
                bar - 1.0,
                (base - y).max(0.5),
                COLOURS[si % COLOURS.len()],
                esc(&c.series.get(si).cloned().unwrap_or_default()),
                short(v)
            );
            let (lx, ly) = (x + bar / 2.0, y - 3.0);
            let _ = writeln!(
                s,
                r#"<text x="{lx:.1}" y="{ly:.1}" font-size="9" text-anchor="start" transform="rotate(-90 {lx:.1} {ly:.1})">{}</text>"#,
                short(v)
            );
        }
        let lx = gx + (GROUP_WIDTH - 14.0) / 2.0;
        let _ = writeln!(s, r#"<text x="{lx:.1}" y="{:.0}" font-size="12" text-anchor="end" transform="rotate(-35 {lx:.1} {:.0})">{}</text>"#, base + 16.0, base + 16.0, esc(&g.label));
    }
    close_svg(&mut s, LEFT, width - RIGHT, top, base);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_are_drawn_on_whole_decades() {
        let svg = grouped_bars_log(&Chart {
            title: "t <&>".into(),
            y_label: "ms".into(),
            series: vec!["a".into(), "b".into()],
            groups: vec![Group { label: "f".into(), values: vec![0.5, 250.0] }, Group { label: "g".into(), values: vec![3.0, 0.0] }],
        });
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert!(svg.contains("t &lt;&amp;&gt;"));
        // Decades 0.1 .. 1000 are labelled; three bars (the 0 is missing).
        for label in [">0.1<", ">1<", ">10<", ">100<", ">1000<"] {
            assert!(svg.contains(label), "{label} missing");
        }
        assert_eq!(svg.matches("<title>").count(), 3);
    }
}
