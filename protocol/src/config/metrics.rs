//! The `[metrics]` section: what the agent's Prometheus `/metrics` exports, so its size stays
//! proportionate at fleet scale. A classic histogram costs one series per bucket for every
//! target, so only the phases named in `phase_histograms` get one (default: `total`, the
//! latency the recording rules and alerts read); every other phase is exported as a pair of
//! counters (seconds spent and observations) from which a dashboard takes the mean. Checked when
//! the fleet file loads: an unknown phase name is an error at its line, never ignored.

use super::{Located, Problem};
use crate::Phase;
use serde::Deserialize;

/// The phases exported as histograms when `[metrics]` does not say.
pub const DEFAULT_PHASE_HISTOGRAMS: [Phase; 1] = [Phase::Total];

/// The `[metrics]` section as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    /// Probe phases exported as per-target histograms (`dns`, `connect`, `tls`, `ttfb`,
    /// `transfer`, `total`); default `["total"]`. An empty list exports none.
    pub phase_histograms: Option<Vec<Located<String>>>,
}

/// A checked `[metrics]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsSettings {
    /// Phases with a histogram, each once, in [`Phase::ALL`] order.
    pub phase_histograms: Vec<Phase>,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        MetricsSettings {
            phase_histograms: DEFAULT_PHASE_HISTOGRAMS.to_vec(),
        }
    }
}

impl MetricsSection {
    /// Checks every value; the first unknown or repeated phase name is returned keyed
    /// `metrics.phase_histograms[i]` and located by its span.
    pub fn settings(&self) -> Result<MetricsSettings, Problem> {
        let Some(names) = &self.phase_histograms else {
            return Ok(MetricsSettings::default());
        };
        let mut chosen = [false; Phase::COUNT];
        for (i, name) in names.iter().enumerate() {
            let key = format!("metrics.phase_histograms[{i}]");
            let Some(phase) = Phase::ALL.iter().find(|p| p.as_str() == name.get_ref()) else {
                let known: Vec<&str> = Phase::ALL.iter().map(|p| p.as_str()).collect();
                return Err(Problem::at(
                    name,
                    key,
                    format!(
                        "unknown phase {:?}; use one of {}",
                        name.get_ref(),
                        known.join(", ")
                    ),
                ));
            };
            if std::mem::replace(&mut chosen[phase.index()], true) {
                return Err(Problem::at(
                    name,
                    key,
                    format!("phase {:?} is listed twice", name.get_ref()),
                ));
            }
        }
        Ok(MetricsSettings {
            phase_histograms: Phase::ALL
                .into_iter()
                .filter(|p| chosen[p.index()])
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::FleetConfig;
    use super::*;

    const BASE: &str = r#"
[fleet]
name = "orders-api"
[global]
url = "https://api.example.com/status"
[[regions]]
name = "eu-west-1"
status_url = "https://euw1.example.com/status"
[[vantages]]
region = "eu-west-1"
[aggregator]
url = "https://agg.example.com"
[agents.auth]
key_id = "k1"
"#;

    #[test]
    fn default_is_total_only() {
        let fleet = FleetConfig::parse(BASE, "fleet.toml").unwrap();
        assert_eq!(
            fleet.metrics_settings().phase_histograms,
            vec![Phase::Total]
        );
    }

    #[test]
    fn listed_phases_come_back_in_phase_order() {
        let text = format!("{BASE}[metrics]\nphase_histograms = [\"total\", \"ttfb\"]\n");
        let fleet = FleetConfig::parse(&text, "fleet.toml").unwrap();
        assert_eq!(
            fleet.metrics_settings().phase_histograms,
            vec![Phase::Ttfb, Phase::Total]
        );
        let none = format!("{BASE}[metrics]\nphase_histograms = []\n");
        let fleet = FleetConfig::parse(&none, "fleet.toml").unwrap();
        assert!(fleet.metrics_settings().phase_histograms.is_empty());
    }

    #[test]
    fn unknown_phase_is_an_error_at_its_line() {
        let text = format!("{BASE}[metrics]\nphase_histograms = [\"total\",\n  \"ttbf\"]\n");
        let err = FleetConfig::parse(&text, "fleet.toml")
            .unwrap_err()
            .to_string();
        let line = text.lines().position(|l| l.contains("ttbf")).unwrap() + 1;
        assert!(
            err.starts_with(&format!(
                "fleet.toml:{line}: metrics.phase_histograms[1]: unknown phase \"ttbf\""
            )),
            "{err}"
        );
        assert!(err.contains("ttfb"), "{err}");
    }

    #[test]
    fn repeated_phase_and_unknown_key_are_errors() {
        let twice = format!("{BASE}[metrics]\nphase_histograms = [\"tls\", \"tls\"]\n");
        let err = FleetConfig::parse(&twice, "fleet.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("metrics.phase_histograms[1]: phase \"tls\" is listed twice"),
            "{err}"
        );
        let typo = format!("{BASE}[metrics]\nphase_histogram = [\"tls\"]\n");
        let err = FleetConfig::parse(&typo, "fleet.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("phase_histogram"), "{err}");
    }

    #[test]
    fn a_changed_section_is_seen_by_reloads() {
        // The agent refuses to apply a changed [metrics] without a restart: it compares the key.
        let before = FleetConfig::parse(BASE, "a.toml").unwrap();
        let text = format!("{BASE}[metrics]\nphase_histograms = [\"total\", \"tls\"]\n");
        let after = FleetConfig::parse(&text, "b.toml").unwrap();
        assert_eq!(before.changed_keys(&after, &["metrics"]), vec!["metrics"]);
        assert!(after.changed_keys(&after, &["metrics"]).is_empty());
    }
}
