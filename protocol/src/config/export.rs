//! `[export.cloudwatch]`: the agent's optional export of its interval latency histograms and
//! outcome counts to CloudWatch, as distributions (`PutMetricData` with `Values`/`Counts`) or,
//! when it runs as a Lambda function, as Embedded Metric Format lines on stdout. Off unless
//! `enabled = true`, so a fleet file without the section behaves as before.

use super::{ConfigError, FleetConfig, Located};
use serde::Deserialize;

/// Default CloudWatch namespace of the exported metrics.
pub const DEFAULT_NAMESPACE: &str = "Vantage";

/// The `[export]` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportSection {
    pub cloudwatch: Option<CloudWatchExport>,
}

/// How the CloudWatch data leaves the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloudWatchMode {
    /// `PutMetricData` calls.
    Api,
    /// Embedded Metric Format JSON lines on stdout (Lambda turns them into metrics).
    Emf,
    /// EMF when running as a Lambda function (`AWS_LAMBDA_FUNCTION_NAME` is set), else the API.
    Auto,
}

/// `[export.cloudwatch]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudWatchExport {
    #[serde(default)]
    pub enabled: bool,
    /// Metric namespace (default `Vantage`).
    pub namespace: Option<Located<String>>,
    /// Storage resolution in seconds: 60 (standard, the default) or 1 (high resolution).
    pub resolution: Option<Located<u32>>,
    /// `api`, `emf` or `auto` (the default).
    pub mode: Option<Located<String>>,
    /// The Region of the CloudWatch API (default: the agent's vantage Region).
    pub region: Option<Located<String>>,
    /// Endpoint override (moto, a VPC endpoint).
    pub endpoint_url: Option<Located<String>>,
}

impl CloudWatchExport {
    pub fn namespace(&self) -> &str {
        self.namespace
            .as_ref()
            .map_or(DEFAULT_NAMESPACE, |n| n.get_ref().as_str())
    }

    pub fn resolution(&self) -> u32 {
        self.resolution.as_ref().map_or(60, |r| *r.get_ref())
    }

    pub fn mode(&self) -> CloudWatchMode {
        match self.mode.as_ref().map(|m| m.get_ref().as_str()) {
            Some("api") => CloudWatchMode::Api,
            Some("emf") => CloudWatchMode::Emf,
            _ => CloudWatchMode::Auto,
        }
    }
}

impl FleetConfig {
    /// The enabled CloudWatch export, if any.
    pub fn cloudwatch_export(&self) -> Option<&CloudWatchExport> {
        self.export
            .as_ref()
            .and_then(|e| e.cloudwatch.as_ref())
            .filter(|c| c.enabled)
    }

    pub(super) fn validate_export(&self) -> Result<(), ConfigError> {
        let Some(cw) = self.export.as_ref().and_then(|e| e.cloudwatch.as_ref()) else {
            return Ok(());
        };
        if let Some(ns) = &cw.namespace {
            let n = ns.get_ref();
            // CloudWatch: 1..=255 characters, not starting with "AWS/" (reserved).
            if n.is_empty() || n.len() > 255 || n.starts_with("AWS/") || n.contains(':') {
                return Err(self.invalid(
                    ns,
                    "export.cloudwatch.namespace",
                    "use 1 to 255 characters without ':', not starting with \"AWS/\"",
                ));
            }
        }
        if let Some(r) = &cw.resolution {
            if !matches!(r.get_ref(), 1 | 60) {
                return Err(self.invalid(
                    r,
                    "export.cloudwatch.resolution",
                    "must be 60 (standard) or 1 (high resolution, costs more)",
                ));
            }
        }
        if let Some(m) = &cw.mode {
            if !matches!(m.get_ref().as_str(), "api" | "emf" | "auto") {
                return Err(self.invalid(
                    m,
                    "export.cloudwatch.mode",
                    "must be \"api\", \"emf\" or \"auto\"",
                ));
            }
        }
        if let Some(r) = &cw.region {
            if r.get_ref().is_empty()
                || !r
                    .get_ref()
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            {
                return Err(self.invalid(
                    r,
                    "export.cloudwatch.region",
                    "use a Region code like eu-west-1",
                ));
            }
        }
        if let Some(u) = &cw.endpoint_url {
            let rest = u
                .get_ref()
                .strip_prefix("http://")
                .or_else(|| u.get_ref().strip_prefix("https://"));
            if rest.is_none_or(|r| r.is_empty() || r.contains(char::is_whitespace)) {
                return Err(self.invalid(
                    u,
                    "export.cloudwatch.endpoint_url",
                    "must be an http:// or https:// URL",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::EXAMPLE;
    use super::*;

    fn with(section: &str) -> Result<FleetConfig, ConfigError> {
        FleetConfig::parse(&format!("{EXAMPLE}\n{section}"), "fleet.toml")
    }

    #[test]
    fn off_unless_enabled_and_defaults() {
        assert!(with("").unwrap().cloudwatch_export().is_none());
        assert!(with("[export.cloudwatch]\nnamespace = \"X\"\n")
            .unwrap()
            .cloudwatch_export()
            .is_none());
        let c = with("[export.cloudwatch]\nenabled = true\n").unwrap();
        let cw = c.cloudwatch_export().unwrap();
        assert_eq!(cw.namespace(), DEFAULT_NAMESPACE);
        assert_eq!(cw.resolution(), 60);
        assert_eq!(cw.mode(), CloudWatchMode::Auto);
        let c =
            with("[export.cloudwatch]\nenabled = true\nresolution = 1\nmode = \"emf\"\n").unwrap();
        assert_eq!(c.cloudwatch_export().unwrap().resolution(), 1);
        assert_eq!(c.cloudwatch_export().unwrap().mode(), CloudWatchMode::Emf);
    }

    #[test]
    fn bad_values_name_the_key_and_line() {
        let line = EXAMPLE.lines().count() + 4;
        for (body, key) in [
            ("resolution = 30", "export.cloudwatch.resolution"),
            ("namespace = \"AWS/EC2\"", "export.cloudwatch.namespace"),
            ("mode = \"udp\"", "export.cloudwatch.mode"),
            (
                "endpoint_url = \"ftp://x\"",
                "export.cloudwatch.endpoint_url",
            ),
            ("region = \"eu west\"", "export.cloudwatch.region"),
        ] {
            let e = with(&format!("[export.cloudwatch]\nenabled = true\n{body}\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(key), "{e}");
            assert!(e.contains(&format!("fleet.toml:{line}")), "{line}: {e}");
        }
        let e = with("[export.cloudwatch]\nenabld = true\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("enabld"), "{e}");
    }
}
