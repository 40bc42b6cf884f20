//! `[export.cloudwatch]`: the agent's optional export of its interval latency histograms and
//! outcome counts to CloudWatch, as distributions (`PutMetricData` with `Values`/`Counts`) or,
//! when it runs as a Lambda function, as Embedded Metric Format lines on stdout.
//! `[export.xray]`: one X-Ray segment per sampled probe, its request carrying the trace header.
//! Both are off unless `enabled = true`, so a fleet file without them behaves as before.

use super::{ConfigError, FleetConfig, Located};
use serde::Deserialize;

/// Default CloudWatch namespace of the exported metrics.
/// The namespace the deployed agent role may write (`deploy/src/agent.rs`).
pub const DEFAULT_NAMESPACE: &str = "Vantage/Agent";

/// The `[export]` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportSection {
    pub cloudwatch: Option<CloudWatchExport>,
    pub xray: Option<XRayExport>,
}

/// Default share of probes traced.
pub const DEFAULT_SAMPLE_RATE: f64 = 0.05;

/// `[export.xray]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XRayExport {
    #[serde(default)]
    pub enabled: bool,
    /// Share of probes traced, 0.0..=1.0 (default 0.05).
    pub sample_rate: Option<Located<f64>>,
    /// A local X-Ray daemon, `host:port` (UDP); without it segments go to `PutTraceSegments`.
    pub daemon: Option<Located<String>>,
    /// The Region of the X-Ray API (default: the agent's vantage Region).
    pub region: Option<Located<String>>,
    /// Endpoint override for the X-Ray API (moto, a VPC endpoint).
    pub endpoint_url: Option<Located<String>>,
}

impl XRayExport {
    pub fn sample_rate(&self) -> f64 {
        self.sample_rate
            .as_ref()
            .map_or(DEFAULT_SAMPLE_RATE, |r| *r.get_ref())
    }
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
    /// Metric namespace (default `Vantage/Agent`, the one `vantage deploy` grants).
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

    /// The enabled X-Ray export, if any.
    pub fn xray_export(&self) -> Option<&XRayExport> {
        self.export
            .as_ref()
            .and_then(|e| e.xray.as_ref())
            .filter(|x| x.enabled)
    }

    pub(super) fn validate_export(&self) -> Result<(), ConfigError> {
        if let Some(x) = self.export.as_ref().and_then(|e| e.xray.as_ref()) {
            self.validate_xray(x)?;
        }
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
        self.check_region_and_endpoint("export.cloudwatch", &cw.region, &cw.endpoint_url)
    }

    fn validate_xray(&self, x: &XRayExport) -> Result<(), ConfigError> {
        if let Some(r) = &x.sample_rate {
            if !(0.0..=1.0).contains(r.get_ref()) {
                return Err(self.invalid(
                    r,
                    "export.xray.sample_rate",
                    "must be between 0.0 and 1.0 (0.05 traces one probe in twenty)",
                ));
            }
        }
        if let Some(d) = &x.daemon {
            let ok = d.get_ref().rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
            });
            if !ok {
                return Err(self.invalid(
                    d,
                    "export.xray.daemon",
                    "use host:port of the X-Ray daemon, like 127.0.0.1:2000",
                ));
            }
        }
        self.check_region_and_endpoint("export.xray", &x.region, &x.endpoint_url)
    }

    fn check_region_and_endpoint(
        &self,
        section: &str,
        region: &Option<Located<String>>,
        endpoint_url: &Option<Located<String>>,
    ) -> Result<(), ConfigError> {
        if let Some(r) = region {
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
        if let Some(u) = endpoint_url {
            let rest = u
                .get_ref()
                .strip_prefix("http://")
                .or_else(|| u.get_ref().strip_prefix("https://"));
            if rest.is_none_or(|r| r.is_empty() || r.contains(char::is_whitespace)) {
                return Err(self.invalid(
                    u,
                    &format!("{section}.endpoint_url"),
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
        for (body, key) in [
            ("sample_rate = 1.5", "export.xray.sample_rate"),
            ("daemon = \"localhost\"", "export.xray.daemon"),
            ("endpoint_url = \"x\"", "export.xray.endpoint_url"),
        ] {
            let e = with(&format!("[export.xray]\nenabled = true\n{body}\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(key), "{e}");
            assert!(e.contains(&format!("fleet.toml:{line}")), "{line}: {e}");
        }
        let x = with("[export.xray]\nenabled = true\ndaemon = \"127.0.0.1:2000\"\n").unwrap();
        assert_eq!(x.xray_export().unwrap().sample_rate(), DEFAULT_SAMPLE_RATE);
        let e = with("[export.cloudwatch]\nenabld = true\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("enabld"), "{e}");
    }
}
