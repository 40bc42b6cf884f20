//! What a run shows while it runs: the state as JSON (each Region's verdict, weight,
//! per-vantage latency and traffic share, recent events, alerts, and with replicas each
//! replica's own verdicts beside Route 53's combined view) for the status page, and the same
//! state drawn as a terminal table for the live view. With `--services` every Region entry
//! names its service and unit, and the table has a section per service.

use crate::combine::CombinedRegion;
use crate::events::Event;
use crate::replicas::Replicas;
use crate::scenario::DemoOptions;
use std::collections::BTreeMap;
use std::time::SystemTime;
use tokio::time::Instant;

/// The state the status page and the live view show, after one round of decisions: the
/// Regions as Route 53 serves them (service and weight from the combined view; verdict,
/// latency and reason from the first running replica), and each replica's own view.
pub(crate) fn state_json(
    options: &DemoOptions,
    replicas: &Replicas,
    combined: &BTreeMap<String, CombinedRegion>,
    routed: &BTreeMap<String, (u64, u64)>,
    start: Instant,
    events: &[Event],
) -> serde_json::Value {
    let primary = replicas
        .members
        .iter()
        .find(|r| r.is_up() && r.last.is_some())
        .or_else(|| replicas.members.iter().find(|r| r.last.is_some()));
    let snapshot = primary.and_then(|r| r.last.as_ref());
    let view = primary
        .and_then(|r| r.aggregator())
        .map(|a| a.window_view(SystemTime::now(), 0.99, 0.5))
        .unwrap_or_default();
    let total_routed: u64 = routed.values().map(|(n, _)| n).sum();
    let regions: Vec<serde_json::Value> =
        snapshot
            .map(|s| s.decision.regions.as_slice())
            .unwrap_or_default()
            .iter()
            .map(|r| {
                let unit = options.unit_key(&r.service, &r.region);
                let vantages: serde_json::Map<String, serde_json::Value> =
                    view.iter()
                        .find(|o| o.region == unit)
                        .map(|o| {
                            o.vantages
                        .iter()
                        .map(|v| {
                            (v.vantage.clone(), serde_json::json!({
                                "verdict": r.vantages.get(&v.vantage),
                                "p50_ms": v.weight_latency.map(|d| d.as_secs_f64() * 1e3),
                                "p99_ms": v.limit_latency.map(|d| d.as_secs_f64() * 1e3),
                                "attempts": v.attempts,
                                "failures": v.failures,
                            }))
                        })
                        .collect()
                        })
                        .unwrap_or_default();
                // The service's own global endpoint's answers (by unit with services).
                let share = snapshot
                    .and_then(|s| s.traffic.regions.get(&unit))
                    .and_then(|t| t.http_share)
                    .unwrap_or(0.0);
                let route53 = combined.get(&unit);
                serde_json::json!({
                    "service": options.event_service(&r.service), "unit": unit,
                    "region": r.region, "verdict": r.verdict,
                    "in_service": route53.map_or(r.in_service, |c| c.in_service),
                    "weight": route53.map_or(r.weight, |c| c.weight),
                    "reason": r.reason, "vantages": vantages, "traffic_share": share,
                })
            })
            .collect();
    let holder = replicas
        .members
        .iter()
        .filter_map(|r| Some((r.id.as_str(), r.holds_lease()?)))
        .max_by_key(|(_, token)| *token)
        .map(|(id, _)| id.to_owned());
    let replica_views: Vec<serde_json::Value> =
        replicas
            .members
            .iter()
            .map(|rep| {
                let own: serde_json::Map<String, serde_json::Value> = rep
                .last
                .iter()
                .flat_map(|s| s.decision.regions.iter())
                .map(|d| {
                    let unit = options.unit_key(&d.service, &d.region);
                    let vote = rep.votes.health.get(&unit).copied().unwrap_or(true);
                    (unit, serde_json::json!({
                        "verdict": d.verdict, "in_service": d.in_service, "weight": d.weight,
                        "vote": vote,
                    }))
                })
                .collect();
                serde_json::json!({
                    "id": rep.id, "up": rep.is_up(), "lease": rep.lease,
                    "holder": holder.as_deref() == Some(rep.id.as_str()),
                    "decided_ms": rep.last.as_ref().map(|s| s.at_ms), "regions": own,
                })
            })
            .collect();
    let recent: Vec<&Event> = events
        .iter()
        .rev()
        .take(40)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    serde_json::json!({
        "t": start.elapsed().as_secs_f64(),
        "services": if options.named() { options.services.clone() } else { Vec::new() },
        "regions": regions,
        "routed": total_routed,
        "events": recent,
        "alerts": snapshot.map(|s| s.decision.alerts.clone()).unwrap_or_default(),
        "maintenance": snapshot.map(|s| s.maintenance.clone()),
        "aggregators": replicas.members.len(),
        "lease_holder": holder,
        "replicas": replica_views,
        "route53": combined,
    })
}

/// The state drawn as a table, clearing the terminal first.
pub(crate) fn live_view(state: &serde_json::Value) -> String {
    let mut out = String::from("\x1b[2J\x1b[H");
    out += &format!(
        "vantage demo  t = {:.1} s   (dry-run; Ctrl-C to stop)\n\n",
        state["t"].as_f64().unwrap_or(0.0)
    );
    let header = format!(
        "{:<16} {:<8} {:<8} {:>6} {:>8}  p50/p99 ms by vantage\n",
        "Region", "verdict", "service", "weight", "traffic"
    );
    let rows: Vec<&serde_json::Value> = state["regions"].as_array().into_iter().flatten().collect();
    let services: Vec<&str> = state["services"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str())
        .collect();
    if services.is_empty() {
        out += &header;
        for r in &rows {
            out += &region_row(r);
        }
    } else {
        // One section per service: its Regions, each in or out on its own.
        for service in services {
            out += &format!("service {service}\n{header}");
            for r in rows
                .iter()
                .filter(|r| r["service"].as_str() == Some(service))
            {
                out += &region_row(r);
            }
            out += "\n";
        }
    }
    if state["aggregators"].as_u64().unwrap_or(1) > 1 {
        out += &replica_table(state);
    }
    out += "\nlast decisions:\n";
    for e in state["events"]
        .as_array()
        .into_iter()
        .flatten()
        .rev()
        .take(8)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
    {
        let mut reason = e["reason"].as_str().unwrap_or("").to_owned();
        reason.truncate(110);
        let place = e["region"].as_str().or(e["vantage"].as_str()).unwrap_or("");
        let subject = match e["service"].as_str() {
            Some(service) => format!("{service}/{place}"),
            None => place.to_owned(),
        };
        out += &format!(
            "  {:>6.1}s {:<13} {:<15} {}\n",
            e["t"].as_f64().unwrap_or(0.0),
            e["event"].as_str().unwrap_or(""),
            subject,
            reason
        );
    }
    out
}

/// One Region's line of the live table.
fn region_row(r: &serde_json::Value) -> String {
    let lat: Vec<String> = r["vantages"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(v, x)| {
            let ms = |k: &str| x[k].as_f64().map_or("-".into(), |m| format!("{m:.0}"));
            format!("{v} {}/{}", ms("p50_ms"), ms("p99_ms"))
        })
        .collect();
    format!(
        "{:<16} {:<8} {:<8} {:>6} {:>7.0}%  {}\n",
        r["region"].as_str().unwrap_or(""),
        r["verdict"].as_str().unwrap_or(""),
        if r["in_service"].as_bool().unwrap_or(false) {
            "in"
        } else {
            "OUT"
        },
        // A JSON value ignores the width; the number as text keeps the column.
        r["weight"]
            .as_u64()
            .map_or("-".to_owned(), |w| w.to_string()),
        r["traffic_share"].as_f64().unwrap_or(0.0) * 100.0,
        lat.join("  ")
    )
}

/// Each replica's vote per Region (per unit with services) beside Route 53's, `*` marking
/// the lease holder; a down replica's vote is its frozen last value.
fn replica_table(state: &serde_json::Value) -> String {
    let replicas = state["replicas"].as_array().cloned().unwrap_or_default();
    let width = state["route53"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(unit, _)| unit.len())
        .max()
        .unwrap_or(0)
        .max(16);
    let mut out = format!("\n{:<width$}", "votes");
    for r in &replicas {
        let mark = if r["holder"].as_bool().unwrap_or(false) {
            "*"
        } else {
            ""
        };
        out += &format!(
            " {:<12}",
            format!("replica {}{mark}", r["id"].as_str().unwrap_or(""))
        );
    }
    out += " Route 53\n";
    for (region, c) in state["route53"].as_object().into_iter().flatten() {
        out += &format!("{region:<width$}");
        for r in &replicas {
            let vote = r["regions"][region.as_str()]["vote"]
                .as_bool()
                .unwrap_or(true);
            let up = r["up"].as_bool().unwrap_or(false);
            let text = match (up, vote) {
                (true, true) => "in".to_owned(),
                (true, false) => "OUT".to_owned(),
                (false, v) => format!("DOWN ({})", if v { "in" } else { "OUT" }),
            };
            out += &format!(" {text:<12}");
        }
        out += &format!(
            " {} ({}/{} healthy)\n",
            if c["in_service"].as_bool().unwrap_or(true) {
                "in"
            } else {
                "OUT"
            },
            c["healthy_votes"],
            c["votes"].as_object().map_or(0, |v| v.len())
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(service: Option<&str>, region: &str, in_service: bool, weight: u8) -> serde_json::Value {
        serde_json::json!({
            "service": service, "region": region, "verdict": if in_service { "up" } else { "down" },
            "in_service": in_service, "weight": weight, "traffic_share": 0.5, "vantages": {},
        })
    }

    #[test]
    fn the_live_table_has_a_section_per_service_and_one_table_without() {
        let state = serde_json::json!({
            "t": 12.0, "services": ["orders", "payments"], "aggregators": 1, "events": [],
            "regions": [
                row(Some("orders"), "eu-west-1", true, 200),
                row(Some("payments"), "eu-west-1", false, 0),
            ],
        });
        let text = live_view(&state);
        let orders = text.find("service orders").expect(&text);
        let payments = text.find("service payments").expect(&text);
        assert!(orders < payments, "{text}");
        let (o, p) = text.split_at(payments);
        assert!(
            o[orders..].contains("eu-west-1        up       in          200"),
            "{text}"
        );
        assert!(
            p.contains("eu-west-1        down     OUT           0"),
            "{text}"
        );

        let single = serde_json::json!({
            "t": 1.0, "services": [], "aggregators": 1, "events": [],
            "regions": [row(None, "us-east-1", true, 255)],
        });
        let text = live_view(&single);
        assert!(!text.lines().any(|l| l.starts_with("service ")), "{text}");
        assert!(
            text.contains("us-east-1        up       in          255"),
            "{text}"
        );
    }
}
