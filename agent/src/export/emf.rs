//! CloudWatch Embedded Metric Format: in Lambda the agent writes its metric data as JSON lines
//! on stdout and CloudWatch Logs extracts the metrics, so no API call (and no extra latency or
//! IAM permission) is needed. A distribution is an EMF histogram value object
//! (`Values`, `Counts`, `Max`, `Min`, `Count`, `Sum`); the EMF specification allows at most
//! [`MAX_EMF_VALUES`] values in one, so larger distributions take several lines, which
//! CloudWatch aggregates like several datums.

use super::datum::Datum;
use serde_json::{json, Map, Value};
use std::io::Write;

/// Values one EMF metric may carry.
pub const MAX_EMF_VALUES: usize = 100;

/// The EMF lines (without newlines) of `data`.
pub fn lines(namespace: &str, storage_resolution: i32, data: &[Datum]) -> Vec<String> {
    let mut out = Vec::new();
    for d in data {
        for start in (0..d.values.len()).step_by(MAX_EMF_VALUES) {
            let end = (start + MAX_EMF_VALUES).min(d.values.len());
            out.push(line(namespace, storage_resolution, d, start..end).to_string());
        }
    }
    out
}

fn line(
    namespace: &str,
    storage_resolution: i32,
    d: &Datum,
    range: std::ops::Range<usize>,
) -> Value {
    let values = &d.values[range.clone()];
    let counts = &d.counts[range];
    let names: Vec<&str> = d.dimensions.iter().map(|(n, _)| *n).collect();
    let mut root = Map::new();
    root.insert(
        "_aws".into(),
        json!({
            "Timestamp": d.timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": namespace,
                "Dimensions": [names],
                "Metrics": [{
                    "Name": d.metric,
                    "Unit": d.unit.as_str(),
                    "StorageResolution": storage_resolution,
                }],
            }],
        }),
    );
    for (n, v) in &d.dimensions {
        root.insert((*n).to_owned(), Value::String(v.clone()));
    }
    let count: f64 = counts.iter().sum();
    let sum: f64 = values.iter().zip(counts).map(|(v, c)| v * c).sum();
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    root.insert(
        d.metric.to_owned(),
        json!({"Values": values, "Counts": counts, "Max": max, "Min": min, "Count": count, "Sum": sum}),
    );
    Value::Object(root)
}

/// Writes the lines to stdout, where the Lambda runtime ships them to CloudWatch Logs. Returns
/// how many data went out; a write error (a closed stdout) drops the rest, counted.
pub fn emit(namespace: &str, storage_resolution: i32, data: &[Datum]) -> u64 {
    let text: String = lines(namespace, storage_resolution, data)
        .into_iter()
        .map(|mut l| {
            l.push('\n');
            l
        })
        .collect();
    let n = data.len() as u64;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => {
            metrics::counter!(super::cloudwatch::SENT_TOTAL, "exporter" => "emf").increment(n);
            n
        }
        Err(e) => {
            metrics::counter!(super::cloudwatch::FAILED_TOTAL, "exporter" => "emf").increment(n);
            tracing::error!(error = %e, "cannot write EMF lines to stdout");
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::datum::Unit;

    #[test]
    fn a_distribution_becomes_emf_histogram_lines_of_at_most_100_values() {
        let d = Datum {
            metric: "Latency",
            dimensions: vec![("Service", "api".into()), ("Phase", "total".into())],
            timestamp_ms: 1_700_000_000_000,
            unit: Unit::Milliseconds,
            values: (1..=150).map(f64::from).collect(),
            counts: vec![2.0; 150],
        };
        let lines = lines("Vantage", 60, &[d]);
        assert_eq!(lines.len(), 2);
        let first: Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(
            first["_aws"]["CloudWatchMetrics"][0]["Namespace"],
            "Vantage"
        );
        assert_eq!(
            first["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0],
            json!(["Service", "Phase"])
        );
        assert_eq!(
            first["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Unit"],
            "Milliseconds"
        );
        assert_eq!(first["Service"], "api");
        assert_eq!(first["Latency"]["Values"].as_array().unwrap().len(), 100);
        assert_eq!(first["Latency"]["Count"], 200.0);
        assert_eq!(first["Latency"]["Min"], 1.0);
        assert_eq!(first["Latency"]["Max"], 100.0);
        let second: Value = serde_json::from_str(&lines[1]).unwrap();
        assert_eq!(second["Latency"]["Values"].as_array().unwrap().len(), 50);
        assert_eq!(
            second["Latency"]["Sum"],
            (101..=150).map(|v| 2.0 * f64::from(v)).sum::<f64>()
        );
    }
}
