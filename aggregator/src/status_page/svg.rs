//! The status page's charts, drawn on the server as inline SVG: nothing to download at run
//! time, no script, readable in any browser and in a screenshot. Two kinds: a unit's latency
//! over the last hour, one line per vantage; and its verdict and weight over the last hour,
//! out-of-service spans shaded and every transition marked.

use super::escape;
use crate::history::{LatencyPoint, Mark, TimelinePoint};
use std::collections::VecDeque;
use std::fmt::Write as _;

const WIDTH: f64 = 360.0;
const PLOT_LEFT: f64 = 44.0;
const PLOT_RIGHT: f64 = 352.0;
/// One colour per vantage, in name order, repeating after eight.
const PALETTE: [&str; 8] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f",
];

fn x_of(at_ms: u64, from_ms: u64, to_ms: u64) -> f64 {
    let span = to_ms.saturating_sub(from_ms).max(1) as f64;
    let t = at_ms.saturating_sub(from_ms) as f64 / span;
    PLOT_LEFT + t.clamp(0.0, 1.0) * (PLOT_RIGHT - PLOT_LEFT)
}

/// A "nice" ceiling for the y axis: 1, 2 or 5 × 10^k at or above `max`.
fn nice_ceiling(max: f64) -> f64 {
    if max <= 0.0 || !max.is_finite() {
        return 1.0;
    }
    let magnitude = 10f64.powf(max.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|c| *c >= max)
        .unwrap_or(10.0 * magnitude)
}

/// Latency of one unit by vantage (the typical quantile), milliseconds, over `[from, to]`.
pub fn latency_chart(
    title: &str,
    from_ms: u64,
    to_ms: u64,
    series: &[(&str, &VecDeque<LatencyPoint>)],
) -> String {
    const TOP: f64 = 8.0;
    // Two legend entries a line, under the axis.
    let height = 100.0 + series.len().div_ceil(2) as f64 * 11.0;
    const BOTTOM: f64 = 84.0;
    let max = series
        .iter()
        .flat_map(|(_, points)| points.iter().filter_map(|p| p.typical_ms))
        .fold(0.0f64, |m, v| m.max(f64::from(v)));
    let ceiling = nice_ceiling(max);
    let y_of = |ms: f64| BOTTOM - (ms / ceiling).clamp(0.0, 1.0) * (BOTTOM - TOP);
    let mut svg = format!(
        r##"<svg class="chart" role="img" aria-label="{label}" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" xmlns="http://www.w3.org/2000/svg"><title>{label}</title><rect x="{PLOT_LEFT}" y="{TOP}" width="{w}" height="{h}" fill="#fafafa" stroke="#ccc"/><text x="{lx}" y="{ty}" font-size="9" text-anchor="end">{ceiling} ms</text><text x="{lx}" y="{BOTTOM}" font-size="9" text-anchor="end">0</text><text x="{PLOT_LEFT}" y="{axis}" font-size="9">−1 h</text><text x="{PLOT_RIGHT}" y="{axis}" font-size="9" text-anchor="end">now</text>"##,
        label = escape(title),
        w = PLOT_RIGHT - PLOT_LEFT,
        h = BOTTOM - TOP,
        lx = PLOT_LEFT - 3.0,
        ty = TOP + 8.0,
        axis = BOTTOM + 10.0,
    );
    for (i, (vantage, points)) in series.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        let coords: Vec<String> = points
            .iter()
            .filter_map(|p| {
                let ms = f64::from(p.typical_ms?);
                Some(format!(
                    "{:.1},{:.1}",
                    x_of(p.at_ms, from_ms, to_ms),
                    y_of(ms)
                ))
            })
            .collect();
        if coords.len() == 1 {
            let (x, y) = coords[0].split_once(',').unwrap_or(("0", "0"));
            let _ = write!(
                svg,
                r#"<circle class="latency" data-vantage="{v}" cx="{x}" cy="{y}" r="2" fill="{colour}"/>"#,
                v = escape(vantage)
            );
        } else if !coords.is_empty() {
            let _ = write!(
                svg,
                r#"<polyline class="latency" data-vantage="{v}" fill="none" stroke="{colour}" stroke-width="1.5" points="{}"/>"#,
                coords.join(" "),
                v = escape(vantage)
            );
        }
        let last = points
            .iter()
            .rev()
            .find_map(|p| p.typical_ms)
            .map_or("–".to_owned(), |ms| format!("{ms:.1} ms"));
        let _ = write!(
            svg,
            r#"<text x="{x}" y="{y}" font-size="9" fill="{colour}">{v} {last}</text>"#,
            x = PLOT_LEFT + (i % 2) as f64 * 154.0,
            y = BOTTOM + 23.0 + (i / 2) as f64 * 11.0,
            v = escape(vantage)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// A unit's weight (line, 0 to 255) and service (out-of-service spans shaded red) over
/// `[from, to]`, each transition a vertical mark titled with its cause.
pub fn timeline_chart(
    title: &str,
    from_ms: u64,
    to_ms: u64,
    points: &VecDeque<TimelinePoint>,
    marks: Option<&VecDeque<Mark>>,
) -> String {
    const HEIGHT: f64 = 56.0;
    const TOP: f64 = 6.0;
    const BOTTOM: f64 = 44.0;
    let y_of = |w: u8| BOTTOM - f64::from(w) / 255.0 * (BOTTOM - TOP);
    let mut svg = format!(
        r##"<svg class="chart" role="img" aria-label="{label}" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" xmlns="http://www.w3.org/2000/svg"><title>{label}</title><rect x="{PLOT_LEFT}" y="{TOP}" width="{w}" height="{h}" fill="#f3fbf3" stroke="#ccc"/><text x="{lx}" y="{ty}" font-size="9" text-anchor="end">255</text><text x="{lx}" y="{BOTTOM}" font-size="9" text-anchor="end">0</text>"##,
        label = escape(title),
        w = PLOT_RIGHT - PLOT_LEFT,
        h = BOTTOM - TOP,
        lx = PLOT_LEFT - 3.0,
        ty = TOP + 8.0,
    );
    // Out-of-service spans: from a point out of service to the next point in service.
    let mut out_since: Option<u64> = None;
    let mut spans = Vec::new();
    for p in points {
        match (p.in_service, out_since) {
            (false, None) => out_since = Some(p.at_ms),
            (true, Some(start)) => {
                spans.push((start, p.at_ms));
                out_since = None;
            }
            _ => {}
        }
    }
    if let Some(start) = out_since {
        spans.push((start, to_ms));
    }
    for (start, end) in spans {
        let (x0, x1) = (x_of(start, from_ms, to_ms), x_of(end, from_ms, to_ms));
        let _ = write!(
            svg,
            r##"<rect class="out" x="{x0:.1}" y="{TOP}" width="{:.1}" height="{}" fill="#f4c7c3"/>"##,
            (x1 - x0).max(1.0),
            BOTTOM - TOP
        );
    }
    // The weight as a step line: it holds until the next point.
    let mut coords = Vec::new();
    let mut previous: Option<f64> = None;
    for p in points {
        let x = x_of(p.at_ms, from_ms, to_ms);
        let y = y_of(p.weight);
        if let Some(py) = previous {
            coords.push(format!("{x:.1},{py:.1}"));
        }
        coords.push(format!("{x:.1},{y:.1}"));
        previous = Some(y);
    }
    if let (Some(py), Some(last)) = (previous, points.back()) {
        if last.at_ms < to_ms {
            coords.push(format!("{PLOT_RIGHT:.1},{py:.1}"));
        }
    }
    if !coords.is_empty() {
        let _ = write!(
            svg,
            r##"<polyline class="weight" fill="none" stroke="#2a7a2a" stroke-width="1.5" points="{}"/>"##,
            coords.join(" ")
        );
    }
    for m in marks.into_iter().flatten() {
        let x = x_of(m.at_ms, from_ms, to_ms);
        let colour = if m.in_service { "#2a7a2a" } else { "#c0392b" };
        let _ = write!(
            svg,
            r#"<line class="transition" x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{BOTTOM}" stroke="{colour}" stroke-width="2"><title>{} ({})</title></line>"#,
            if m.in_service { "in" } else { "out" },
            escape(&m.cause)
        );
    }
    let current = points
        .back()
        .map_or("no data".to_owned(), |p| format!("weight {}", p.weight));
    let _ = write!(
        svg,
        r#"<text x="{PLOT_LEFT}" y="{}" font-size="9">{current}</text>"#,
        HEIGHT - 2.0
    );
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Verdict;

    #[test]
    fn nice_ceilings() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(43.0), 50.0);
        assert_eq!(nice_ceiling(101.0), 200.0);
        assert_eq!(nice_ceiling(0.7), 1.0);
    }

    #[test]
    fn latency_lines_per_vantage_and_escaped_names() {
        let a: VecDeque<LatencyPoint> = (0..5)
            .map(|i| LatencyPoint {
                at_ms: i * 60_000,
                typical_ms: Some(40.0 + i as f32),
                high_ms: None,
            })
            .collect();
        let svg = latency_chart(
            "eu-west-1 <latency>",
            0,
            3_600_000,
            &[("us-east-1", &a), ("x&y", &a)],
        );
        assert_eq!(svg.matches("<polyline class=\"latency\"").count(), 2);
        assert!(svg.contains("x&amp;y 44.0 ms"));
        assert!(svg.contains("eu-west-1 &lt;latency&gt;"));
        assert!(svg.contains(">50 ms<"));
    }

    #[test]
    fn out_of_service_spans_and_transitions_are_drawn() {
        let p = |at_ms, in_service: bool| TimelinePoint {
            at_ms,
            in_service,
            weight: if in_service { 200 } else { 0 },
            verdict: if in_service {
                Verdict::Up
            } else {
                Verdict::Down
            },
        };
        let points: VecDeque<_> = [p(0, true), p(600_000, false), p(900_000, true)].into();
        let marks: VecDeque<_> = [Mark {
            at_ms: 600_000,
            in_service: false,
            cause: "quorum_down".into(),
        }]
        .into();
        let svg = timeline_chart("t", 0, 3_600_000, &points, Some(&marks));
        assert_eq!(svg.matches("class=\"out\"").count(), 1);
        assert!(svg.contains("<title>out (quorum_down)</title>"));
        assert!(svg.contains("weight 200"));
    }
}
