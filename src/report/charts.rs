//! Charts for the HTML reports as inline SVG: no script, no image to
//! fetch, so they show in mail clients that block both. Each chart scales
//! to the width it is given (`viewBox`, `width="100%"`), so it fits a
//! phone, and carries a `<title>` that screen readers and the text part
//! can use.

use std::fmt::Write as _;

/// Green, red and grey of the reports.
pub const GOOD: &str = "#2a2";
pub const BAD: &str = "#c22";
pub const NEUTRAL: &str = "#58a";

/// One bar: its label, its value, its colour, and the text shown at its
/// end.
pub struct Bar {
    pub label: String,
    pub value: f64,
    pub color: &'static str,
    pub text: String,
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const WIDTH: f64 = 600.0;
const LABEL: f64 = 170.0;
const ROW: f64 = 26.0;

/// Horizontal bars, one per item, from a zero line (negative values to
/// its left: an RPO margin that is overdue).
pub fn bars(title: &str, bars: &[Bar]) -> String {
    let height = 30.0 + ROW * bars.len().max(1) as f64;
    let mut svg = open(title, height);
    let min = bars.iter().map(|b| b.value).fold(0.0f64, f64::min);
    let max = bars.iter().map(|b| b.value).fold(0.0f64, f64::max);
    let span = (max - min).max(f64::EPSILON);
    let plot = WIDTH - LABEL - 110.0;
    let x = |v: f64| LABEL + (v - min) / span * plot;
    let zero = x(0.0);
    for (i, b) in bars.iter().enumerate() {
        let y = 24.0 + ROW * i as f64;
        let (from, to) = if b.value < 0.0 {
            (x(b.value), zero)
        } else {
            (zero, x(b.value))
        };
        let _ = write!(
            svg,
            r##"<text x="{}" y="{}" font-size="12" text-anchor="end">{}</text><rect x="{from:.1}" y="{}" width="{:.1}" height="16" fill="{}"><title>{}: {}</title></rect><text x="{:.1}" y="{}" font-size="11" fill="#444">{}</text>"##,
            LABEL - 6.0,
            y + 12.0,
            escape(&shorten(&b.label, 26)),
            y,
            (to - from).max(1.0),
            b.color,
            escape(&b.label),
            escape(&b.text),
            to.max(zero) + 4.0,
            y + 12.0,
            escape(&b.text)
        );
    }
    if min < 0.0 {
        let _ = write!(
            svg,
            r##"<line x1="{zero:.1}" y1="18" x2="{zero:.1}" y2="{:.1}" stroke="#333" stroke-width="1"/>"##,
            height - 4.0
        );
    }
    svg.push_str("</svg>");
    svg
}

/// One line of a line chart.
pub struct Series {
    pub name: String,
    pub color: &'static str,
    /// One value per x label (`None`: no value then).
    pub values: Vec<Option<f64>>,
}

/// Lines over time: `labels` along the x axis, values formatted by
/// `fmt` on the y axis (zero to the largest value).
pub fn lines(
    title: &str,
    labels: &[String],
    series: &[Series],
    fmt: &dyn Fn(f64) -> String,
) -> String {
    let height = 200.0;
    let mut svg = open(title, height + 20.0 * series.len() as f64);
    let max = series
        .iter()
        .flat_map(|s| s.values.iter().flatten())
        .fold(0.0f64, |a, b| a.max(*b))
        .max(f64::EPSILON);
    let (left, right, top, bottom) = (70.0, WIDTH - 20.0, 24.0, height - 30.0);
    let n = labels.len().max(2) - 1;
    let x = |i: usize| left + (right - left) * i as f64 / n as f64;
    let y = |v: f64| bottom - (bottom - top) * v / max;
    let _ = write!(
        svg,
        r##"<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="#999"/><line x1="{left}" y1="{top}" x2="{left}" y2="{bottom}" stroke="#999"/><text x="{}" y="{}" font-size="11" text-anchor="end">{}</text><text x="{}" y="{}" font-size="11" text-anchor="end">{}</text>"##,
        left - 4.0,
        top + 4.0,
        escape(&fmt(max)),
        left - 4.0,
        bottom,
        escape(&fmt(0.0))
    );
    if let (Some(first), Some(last)) = (labels.first(), labels.last()) {
        let _ = write!(
            svg,
            r#"<text x="{left}" y="{}" font-size="11">{}</text><text x="{right}" y="{}" font-size="11" text-anchor="end">{}</text>"#,
            bottom + 16.0,
            escape(first),
            bottom + 16.0,
            escape(last)
        );
    }
    for (k, s) in series.iter().enumerate() {
        let points: Vec<String> = s
            .values
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.map(|v| format!("{:.1},{:.1}", x(i), y(v))))
            .collect();
        if points.len() > 1 {
            let _ = write!(
                svg,
                r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2"/>"#,
                points.join(" "),
                s.color
            );
        }
        for p in &points {
            let (px, py) = p.split_once(',').unwrap_or(("0", "0"));
            let _ = write!(
                svg,
                r#"<circle cx="{px}" cy="{py}" r="3" fill="{}"/>"#,
                s.color
            );
        }
        let ly = height + 20.0 * k as f64;
        let _ = write!(
            svg,
            r#"<rect x="{left}" y="{}" width="12" height="12" fill="{}"/><text x="{}" y="{}" font-size="12">{}</text>"#,
            ly - 10.0,
            s.color,
            left + 18.0,
            ly,
            escape(&s.name)
        );
    }
    svg.push_str("</svg>");
    svg
}

fn open(title: &str, height: f64) -> String {
    format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" role="img" viewBox="0 0 {WIDTH} {height}" width="100%" style="max-width:{WIDTH}px;display:block;font-family:sans-serif"><title>{}</title><text x="0" y="13" font-size="13" font-weight="bold">{}</text>"#,
        escape(title),
        escape(title)
    )
}

fn shorten(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        return s.to_string();
    }
    let cut: String = s.chars().take(n - 1).collect();
    format!("{cut}…")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_escape_labels_and_put_negative_values_left_of_zero() {
        let svg = bars(
            "RPO margin",
            &[
                Bar {
                    label: "db <01>".into(),
                    value: -3.0,
                    color: BAD,
                    text: "3 h overdue".into(),
                },
                Bar {
                    label: "web".into(),
                    value: 9.0,
                    color: GOOD,
                    text: "9 h left".into(),
                },
            ],
        );
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains("db &lt;01&gt;") && !svg.contains("db <01>"));
        assert_eq!(svg.matches("<rect").count(), 2);
        assert!(
            svg.contains("<line"),
            "a zero line when a value is negative"
        );
    }

    #[test]
    fn lines_draw_one_polyline_per_series_with_two_values_or_more() {
        let svg = lines(
            "stored",
            &["a".into(), "b".into(), "c".into()],
            &[
                Series {
                    name: "local".into(),
                    color: NEUTRAL,
                    values: vec![Some(1.0), None, Some(3.0)],
                },
                Series {
                    name: "s3".into(),
                    color: GOOD,
                    values: vec![None, None, Some(2.0)],
                },
            ],
            &|v| format!("{v}"),
        );
        assert_eq!(svg.matches("<polyline").count(), 1);
        assert_eq!(svg.matches("<circle").count(), 3);
    }
}
