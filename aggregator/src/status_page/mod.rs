//! The aggregator's status page, `GET /` (read-only, behind `aggregator.state_token_env` like
//! `/v1/state`): per service and Region the verdict, service, weight, traffic share and
//! reason; charts of the last hour (latency per vantage, verdict and weight with transitions
//! marked, [`svg`]); active alerts, suspect vantages and the recent decision log. One HTML
//! document rendered on the server from the last evaluation and [`crate::history::History`]:
//! no script, no asset fetched at run time (a `Content-Security-Policy` forbids both), a
//! refresh every 10 s. With more than [`OVERVIEW_ABOVE`] services the page opens on a one-line
//! summary per service, each linking to its own page (`/?service=NAME`), so 200 services stay
//! readable and the page stays small.

pub mod svg;

use crate::config::{AggregatorConfig, ServiceConfig};
use crate::evaluate::Snapshot;
use crate::history::{History, HISTORY_SPAN_MS};
use crate::model::{RegionDecision, Verdict};
use std::fmt::Write as _;

/// Above this many services, `/` is the summary and each service has its own page.
pub const OVERVIEW_ABOVE: usize = 12;

/// The page's `Content-Security-Policy`: inline styles only; no script, no fetch, no frame.
pub const CSP: &str =
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'";

/// HTML-escapes text from the fleet file, the decisions and the log.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// What the page shows: everything, or one service (`?service=`); `base` is the page's own
/// path, for its links (`/` in `vantage aggregator`, `/aggregator` in the demo).
#[derive(Debug, Clone, Copy)]
pub struct PageScope<'a> {
    pub base: &'a str,
    pub service: Option<&'a str>,
}

/// The page, from the last evaluation (`None` before the first) and the history, at `now_ms`.
pub fn render(
    config: &AggregatorConfig,
    snapshot: Option<&Snapshot>,
    history: &History,
    scope: PageScope<'_>,
    now_ms: u64,
) -> String {
    let fleet = escape(config.fleet.fleet.name.get_ref());
    let mut html = format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="10"><title>vantage — {fleet}</title><style>{STYLE}</style></head><body><h1>vantage — {fleet}</h1>"#
    );
    let Some(snapshot) = snapshot else {
        html.push_str(
            r#"<p class="note">No evaluation yet: the aggregator is starting.</p></body></html>"#,
        );
        return html;
    };
    let _ = write!(
        html,
        r#"<p class="note" id="decided" data-at-ms="{at}">Decided {ago} s ago · backend {backend}{lease} · the last hour, refreshed every 10 s</p>"#,
        at = snapshot.at_ms,
        ago = now_ms.saturating_sub(snapshot.at_ms) / 1000,
        backend = escape(snapshot.backend),
        lease = snapshot
            .lease
            .as_ref()
            .and_then(|l| l.holder.as_deref())
            .map(|h| format!(" · weights lease held by {}", escape(h)))
            .unwrap_or_default(),
    );
    alerts(&mut html, snapshot);
    let base = escape(scope.base);
    let services: Vec<&ServiceConfig> = match scope.service {
        Some(name) => config.services.iter().filter(|s| s.name == name).collect(),
        None => config.services.iter().collect(),
    };
    if let Some(name) = scope.service {
        if services.is_empty() {
            let _ = write!(
                html,
                r#"<p class="note">No service {} in this fleet. <a href="{base}">All services</a></p>"#,
                escape(name)
            );
        } else {
            let _ = write!(html, r#"<p><a href="{base}">All services</a></p>"#);
        }
    }
    if scope.service.is_none() && services.len() > OVERVIEW_ABOVE {
        overview(&mut html, snapshot, &services, &base);
    } else {
        for service in services {
            service_section(&mut html, snapshot, history, service, now_ms);
        }
    }
    decision_log(&mut html, history);
    html.push_str("</body></html>");
    html
}

const STYLE: &str = "body{font:13px system-ui,sans-serif;margin:16px;color:#222}\
table{border-collapse:collapse;margin:6px 0 12px}td,th{border:1px solid #ddd;padding:3px 6px;text-align:left;vertical-align:top}\
th{background:#f4f4f4}.up{color:#2a7a2a}.down{color:#c0392b;font-weight:600}.unknown{color:#888}\
.out{background:#fdecea}.note{color:#555}.charts{display:flex;flex-wrap:wrap;gap:10px}\
.unit{border:1px solid #e3e3e3;padding:4px}.alert{background:#fff4e5;border-left:4px solid #e67e22;padding:4px 8px;margin:4px 0}\
pre{background:#f7f7f7;padding:6px;font-size:11px;white-space:pre-wrap}";

fn verdict_class(v: Verdict) -> &'static str {
    match v {
        Verdict::Up => "up",
        Verdict::Down => "down",
        Verdict::Unknown => "unknown",
    }
}

fn alerts(html: &mut String, snapshot: &Snapshot) {
    if snapshot.active_alerts.is_empty() && snapshot.vantages.suspect.is_empty() {
        return;
    }
    html.push_str(r#"<section id="alerts"><h2>Alerts</h2>"#);
    for a in &snapshot.active_alerts {
        let _ = write!(
            html,
            r#"<div class="alert" data-kind="{kind}"><b>{kind}</b>{about}: {message}</div>"#,
            kind = a.kind.as_str(),
            about = match (a.service.is_empty(), a.region.as_deref()) {
                (true, None) => String::new(),
                (true, Some(r)) => format!(" ({})", escape(r)),
                (false, r) => format!(
                    " ({}{})",
                    escape(&a.service),
                    r.map(|r| format!(" {}", escape(r))).unwrap_or_default()
                ),
            },
            message = escape(&a.message),
        );
    }
    html.push_str("</section>");
}

/// One line per service: its Regions in and out, and a link to its page.
fn overview(html: &mut String, snapshot: &Snapshot, services: &[&ServiceConfig], base: &str) {
    let _ = write!(
        html,
        r#"<h2>{} services</h2><table id="overview"><tr><th>service</th><th>Regions</th><th>out of service</th></tr>"#,
        services.len()
    );
    for service in services {
        let regions: Vec<&RegionDecision> = snapshot
            .decision
            .regions
            .iter()
            .filter(|r| r.service == service.name)
            .collect();
        let out: Vec<String> = regions
            .iter()
            .filter(|r| !r.in_service)
            .map(|r| escape(&r.region))
            .collect();
        let cells: Vec<String> = regions
            .iter()
            .map(|r| {
                format!(
                    r#"<span class="{}">{} {}</span>"#,
                    verdict_class(r.verdict),
                    escape(&r.region),
                    r.weight
                )
            })
            .collect();
        let _ = write!(
            html,
            r#"<tr data-service="{name}"{class}><td><a href="{base}?service={link}">{name}</a></td><td>{cells}</td><td>{out}</td></tr>"#,
            name = escape(&service.name),
            link = percent_encode(&service.name),
            class = if out.is_empty() {
                ""
            } else {
                r#" class="out""#
            },
            cells = cells.join(" · "),
            out = if out.is_empty() {
                "–".to_owned()
            } else {
                out.join(", ")
            },
        );
    }
    html.push_str("</table>");
}

fn service_section(
    html: &mut String,
    snapshot: &Snapshot,
    history: &History,
    service: &ServiceConfig,
    now_ms: u64,
) {
    let from_ms = now_ms.saturating_sub(HISTORY_SPAN_MS);
    let _ = write!(
        html,
        r#"<section class="service" data-service="{name}"><h2>{name}</h2><table><tr><th>Region</th><th>verdict</th><th>in service</th><th>weight</th><th>traffic share</th><th>vantages</th><th>reason</th></tr>"#,
        name = escape(&service.name)
    );
    let regions: Vec<&RegionDecision> = snapshot
        .decision
        .regions
        .iter()
        .filter(|r| r.service == service.name)
        .collect();
    for r in &regions {
        let unit = service.unit(&r.region);
        let share = snapshot
            .traffic
            .regions
            .get(&unit)
            .and_then(|t| t.http_share)
            .map_or("–".to_owned(), |s| format!("{:.0} %", s * 100.0));
        let vantages: Vec<String> = r
            .vantages
            .iter()
            .map(|(v, verdict)| {
                let suspect = if snapshot.vantages.is_suspect(v) {
                    " (suspect)"
                } else {
                    ""
                };
                format!(
                    r#"<span class="{}">{}{suspect}</span>"#,
                    verdict_class(*verdict),
                    escape(v)
                )
            })
            .collect();
        let _ = write!(
            html,
            r#"<tr data-unit="{unit}" data-verdict="{verdict}" data-in-service="{in_service}" data-weight="{weight}"{class}><td>{region}</td><td class="{verdict}">{verdict}</td><td>{in_text}</td><td>{weight}</td><td>{share}</td><td>{vantages}</td><td>{reason}</td></tr>"#,
            unit = escape(&unit),
            verdict = verdict_class(r.verdict),
            in_service = r.in_service,
            weight = r.weight,
            class = if r.in_service { "" } else { r#" class="out""# },
            region = escape(&r.region),
            in_text = if r.in_service { "in" } else { "out" },
            vantages = vantages.join(", "),
            reason = escape(&r.reason),
        );
    }
    html.push_str(r#"</table><div class="charts">"#);
    for r in &regions {
        let unit = service.unit(&r.region);
        let empty = Default::default();
        let latency = history.latency.get(&unit).unwrap_or(&empty);
        let series: Vec<(&str, &_)> = latency.iter().map(|(v, p)| (v.as_str(), p)).collect();
        let empty_points = Default::default();
        let timeline = history.timeline.get(&unit).unwrap_or(&empty_points);
        let _ = write!(
            html,
            r#"<div class="unit" data-unit="{u}"><b>{region}</b><br>{lat}<br>{tl}</div>"#,
            u = escape(&unit),
            region = escape(&r.region),
            lat = svg::latency_chart(
                &format!(
                    "{} {} latency by vantage, last hour",
                    service.name, r.region
                ),
                from_ms,
                now_ms,
                &series
            ),
            tl = svg::timeline_chart(
                &format!(
                    "{} {} weight and service, last hour",
                    service.name, r.region
                ),
                from_ms,
                now_ms,
                timeline,
                history.marks.get(&unit)
            ),
        );
    }
    html.push_str("</div></section>");
}

fn decision_log(html: &mut String, history: &History) {
    html.push_str(r#"<section id="log"><h2>Decision log (newest first)</h2><pre>"#);
    for event in history.events.iter().rev() {
        let _ = writeln!(html, "{}", escape(&event.to_string()));
    }
    html.push_str("</pre></section>");
}

/// Service names are `[a-z0-9-]` by the fleet file's rules; anything else is encoded anyway.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}
