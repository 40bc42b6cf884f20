//! What a run shows while it runs: the state as JSON (each Region's verdict, weight,
//! per-vantage latency and traffic share, recent events, alerts) for the status page, and the
//! same state drawn as a terminal table for the live view.

use crate::events::Event;
use std::collections::BTreeMap;
use std::time::SystemTime;
use tokio::time::Instant;
use vantage_aggregator::backend::DryRun;
use vantage_aggregator::service::{Aggregator, Snapshot};

/// The state the status page and the live view show, after one evaluation.
pub(crate) fn state_json(
    aggregator: &Aggregator<DryRun>,
    snapshot: &Snapshot,
    routed: &BTreeMap<String, (u64, u64)>,
    start: Instant,
    events: &[Event],
) -> serde_json::Value {
    let view = aggregator.window_view(SystemTime::now(), 0.99, 0.5);
    let total_routed: u64 = routed.values().map(|(n, _)| n).sum();
    let traffic = &snapshot.global_traffic;
    let answered: u64 = traffic.values().sum();
    let regions: Vec<serde_json::Value> = snapshot
        .decision
        .regions
        .iter()
        .map(|r| {
            let vantages: serde_json::Map<String, serde_json::Value> = view
                .iter()
                .find(|o| o.region == r.region)
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
            let share = if answered > 0 {
                traffic.get(&r.region).copied().unwrap_or(0) as f64 / answered as f64
            } else {
                0.0
            };
            serde_json::json!({
                "region": r.region, "verdict": r.verdict, "in_service": r.in_service, "weight": r.weight,
                "reason": r.reason, "vantages": vantages, "traffic_share": share,
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
        "regions": regions,
        "routed": total_routed,
        "events": recent,
        "alerts": snapshot.decision.alerts,
    })
}

/// The state drawn as a table, clearing the terminal first.
pub(crate) fn live_view(state: &serde_json::Value) -> String {
    let mut out = String::from("\x1b[2J\x1b[H");
    out += &format!(
        "vantage demo  t = {:.1} s   (dry-run; Ctrl-C to stop)\n\n",
        state["t"].as_f64().unwrap_or(0.0)
    );
    out += &format!(
        "{:<16} {:<8} {:<8} {:>6} {:>8}  p50/p99 ms by vantage\n",
        "Region", "verdict", "service", "weight", "traffic"
    );
    for r in state["regions"].as_array().into_iter().flatten() {
        let lat: Vec<String> = r["vantages"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(v, x)| {
                let ms = |k: &str| x[k].as_f64().map_or("-".into(), |m| format!("{m:.0}"));
                format!("{v} {}/{}", ms("p50_ms"), ms("p99_ms"))
            })
            .collect();
        out += &format!(
            "{:<16} {:<8} {:<8} {:>6} {:>7.0}%  {}\n",
            r["region"].as_str().unwrap_or(""),
            r["verdict"].as_str().unwrap_or(""),
            if r["in_service"].as_bool().unwrap_or(false) {
                "in"
            } else {
                "OUT"
            },
            r["weight"],
            r["traffic_share"].as_f64().unwrap_or(0.0) * 100.0,
            lat.join("  ")
        );
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
        out += &format!(
            "  {:>6.1}s {:<13} {:<15} {}\n",
            e["t"].as_f64().unwrap_or(0.0),
            e["event"].as_str().unwrap_or(""),
            e["region"].as_str().or(e["vantage"].as_str()).unwrap_or(""),
            reason
        );
    }
    out
}
