//! `vantage aggregator bootstrap`'s check of the `[arc]` section, outside any failover: each
//! configured routing control exists and belongs to the configured control panel, asked of the
//! ARC control-config API (DescribeRoutingControl, in us-west-2). The failover path never
//! calls this API: AWS runs it without the cluster's availability promise.

use aws_sdk_route53recoverycontrolconfig as controlconfig;
use controlconfig::error::ProvideErrorMetadata;
use std::fmt;
use vantage_protocol::config::ArcSettings;

/// The AWS Region of the control-config API.
pub const CONTROL_CONFIG_REGION: &str = "us-west-2";

/// One routing control as found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlLine {
    pub region: String,
    pub arn: String,
    /// `None` when it exists in the configured panel; else why it does not count.
    pub missing: Option<String>,
}

impl fmt::Display for ControlLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.missing {
            None => write!(
                f,
                "exists   ARC routing control {} ({})",
                self.arn, self.region
            ),
            Some(why) => write!(
                f,
                "MISSING  ARC routing control {} ({}): {why}",
                self.arn, self.region
            ),
        }
    }
}

/// A check that could not be made (not a missing control: that is a [`ControlLine`]).
#[derive(Debug, thiserror::Error)]
#[error("DescribeRoutingControl {arn}: {code}: {message}")]
pub struct VerifyError {
    pub arn: String,
    pub code: String,
    pub message: String,
}

/// The control-config client: credentials and HTTP client from `sdk`, in us-west-2, through
/// `endpoint_url` when set.
pub fn client(sdk: &aws_config::SdkConfig, endpoint_url: Option<&str>) -> controlconfig::Client {
    let mut builder = controlconfig::config::Builder::from(sdk)
        .region(controlconfig::config::Region::new(CONTROL_CONFIG_REGION));
    if let Some(url) = endpoint_url {
        builder = builder.endpoint_url(url);
    }
    controlconfig::Client::from_conf(builder.build())
}

/// Describes every routing control of `settings`, reporting each line to `out` as it is known.
pub async fn verify_controls(
    client: &controlconfig::Client,
    settings: &ArcSettings,
    out: &mut dyn FnMut(&ControlLine),
) -> Result<Vec<ControlLine>, VerifyError> {
    let mut lines = Vec::new();
    for (region, arn) in &settings.regions {
        let missing = match client
            .describe_routing_control()
            .routing_control_arn(arn)
            .send()
            .await
        {
            Ok(output) => {
                let panel = output
                    .routing_control()
                    .and_then(|c| c.control_panel_arn())
                    .unwrap_or("(none)");
                (panel != settings.control_panel_arn).then(|| {
                    format!(
                        "it is in control panel {panel}, not {} (arc.control_panel_arn)",
                        settings.control_panel_arn
                    )
                })
            }
            Err(e) if e.code() == Some("ResourceNotFoundException") => {
                Some("no such routing control".to_owned())
            }
            Err(e) => {
                return Err(VerifyError {
                    arn: arn.clone(),
                    code: e.code().unwrap_or("request failed").to_owned(),
                    message: e
                        .message()
                        .map_or_else(|| vantage_runtime::errors::chain(&e), str::to_owned),
                })
            }
        };
        let line = ControlLine {
            region: region.clone(),
            arn: arn.clone(),
            missing,
        };
        out(&line);
        lines.push(line);
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_smithy_mocks::{mock, mock_client, RuleMode};
    use controlconfig::operation::describe_routing_control::{
        DescribeRoutingControlError, DescribeRoutingControlOutput,
    };
    use controlconfig::types::error::{AccessDeniedException, ResourceNotFoundException};
    use controlconfig::types::RoutingControl;
    use std::collections::BTreeMap;
    use std::time::Duration;

    const PANEL: &str = "arn:aws:route53-recovery-control::123456789012:controlpanel/p1";

    fn settings(regions: &[(&str, &str)]) -> ArcSettings {
        ArcSettings {
            cluster_endpoints: vec![("https://a.example".into(), "us-west-2".into())],
            control_panel_arn: PANEL.into(),
            timeout_per_endpoint: Duration::from_secs(2),
            budget: Duration::from_secs(10),
            regions: regions
                .iter()
                .map(|(r, id)| (r.to_string(), format!("{PANEL}/routingcontrol/{id}")))
                .collect::<BTreeMap<_, _>>(),
        }
    }

    fn meta(code: &str) -> controlconfig::error::ErrorMetadata {
        controlconfig::error::ErrorMetadata::builder()
            .code(code)
            .message("from the mock")
            .build()
    }

    #[tokio::test]
    async fn each_control_is_exists_or_missing_and_a_refused_read_is_an_error() {
        let found = |id: &'static str, panel: &'static str| {
            mock!(controlconfig::Client::describe_routing_control)
                .match_requests(move |r| r.routing_control_arn().is_some_and(|a| a.ends_with(id)))
                .then_output(move || {
                    DescribeRoutingControlOutput::builder()
                        .routing_control(RoutingControl::builder().control_panel_arn(panel).build())
                        .build()
                })
        };
        let ok = found("/rc-ok", PANEL);
        let elsewhere = found(
            "/rc-elsewhere",
            "arn:aws:route53-recovery-control::123456789012:controlpanel/other",
        );
        let gone = mock!(controlconfig::Client::describe_routing_control)
            .match_requests(|r| {
                r.routing_control_arn()
                    .is_some_and(|a| a.ends_with("/rc-gone"))
            })
            .then_error(|| {
                DescribeRoutingControlError::ResourceNotFoundException(
                    ResourceNotFoundException::builder()
                        .message("not found")
                        .meta(meta("ResourceNotFoundException"))
                        .build(),
                )
            });
        let denied = mock!(controlconfig::Client::describe_routing_control)
            .match_requests(|r| {
                r.routing_control_arn()
                    .is_some_and(|a| a.ends_with("/rc-denied"))
            })
            .then_error(|| {
                DescribeRoutingControlError::AccessDeniedException(
                    AccessDeniedException::builder()
                        .message("no")
                        .meta(meta("AccessDeniedException"))
                        .build(),
                )
            });
        let client = mock_client!(
            aws_sdk_route53recoverycontrolconfig,
            RuleMode::MatchAny,
            &[&ok, &elsewhere, &gone, &denied]
        );
        let s = settings(&[("a", "rc-ok"), ("b", "rc-elsewhere"), ("c", "rc-gone")]);
        let mut printed = Vec::new();
        let lines = verify_controls(&client, &s, &mut |l| printed.push(l.to_string()))
            .await
            .unwrap();
        assert_eq!(lines.len(), 3);
        assert!(
            printed[0].starts_with("exists   ARC routing control"),
            "{printed:?}"
        );
        assert!(printed[1].starts_with("MISSING") && printed[1].contains("controlpanel/other"));
        assert!(
            printed[2].starts_with("MISSING") && printed[2].contains("no such routing control")
        );
        let err = verify_controls(&client, &settings(&[("d", "rc-denied")]), &mut |_| {})
            .await
            .unwrap_err();
        assert_eq!(err.code, "AccessDeniedException");
    }
}
