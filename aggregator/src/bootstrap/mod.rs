//! `vantage aggregator bootstrap`: makes AWS hold the [`Layout`] the fleet file implies. It
//! first reads what exists (DescribeAlarms in each voter's Region, ListHealthChecks matched by
//! CallerReference, the weighted records, DescribeTable), so a missing record or a refused read
//! stops it before anything is written; then it creates what is missing, in dependency order
//! (alarms, the CLOUDWATCH_METRIC checks on them, the CALCULATED majority over those, the
//! records' HealthCheckId in one UPSERT batch, the lease table), and adopts what exists. Run
//! twice, the second run finds everything and writes nothing. [`Mode::Inspect`] reads only:
//! `--dry-run` and `vantage plan` use it. Every AWS call goes through the backend's bounded,
//! counted retries.

mod aws;

use crate::backend::route53::layout::Layout;
use aws_sdk_cloudwatch as cloudwatch;
use aws_sdk_dynamodb as dynamodb;
use aws_sdk_route53 as route53;
use std::collections::BTreeMap;
use std::fmt;

/// Whether missing objects are created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Create what is missing, correct what differs.
    Apply,
    /// Read only and say what is missing (`--dry-run`, `vantage plan`).
    Inspect,
}

/// What was found (and done) for one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    /// Already as the layout wants it: adopted.
    Exists,
    Created,
    /// Existed but differed (a record without the check, a majority over other children):
    /// corrected.
    Updated,
    /// Not there ([`Mode::Inspect`]).
    Missing,
    /// There but different ([`Mode::Inspect`]).
    Differs,
}

impl Status {
    /// How `bootstrap` prints it: with `--dry-run` nothing is written, so what would be.
    pub fn bootstrap_verb(self) -> &'static str {
        match self {
            Status::Exists => "exists",
            Status::Created => "created",
            Status::Updated => "updated",
            Status::Missing => "would create",
            Status::Differs => "would update",
        }
    }

    /// How `plan` prints it: a statement about AWS now.
    pub fn plan_verb(self) -> &'static str {
        match self {
            Status::Exists | Status::Created | Status::Updated => "exists",
            Status::Missing => "MISSING",
            Status::Differs => "DIFFERS",
        }
    }

    /// Nothing left to do for this object.
    pub fn is_done(self) -> bool {
        !matches!(self, Status::Missing | Status::Differs)
    }
}

/// One object of the layout and its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub status: Status,
    /// What it is and where, e.g. `alarm vantage-orders-eu-west-1-use1 in us-east-1`.
    pub object: String,
}

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:<12} {}", self.status.bootstrap_verb(), self.object)
    }
}

/// Why bootstrap stopped. Messages name the object and the AWS error code, never credentials.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// The fleet file asks for something bootstrap does not build (exit 2).
    #[error("{0}")]
    Unsupported(String),
    /// An AWS call failed.
    #[error("{object}: {operation}: {message}")]
    Aws {
        object: String,
        operation: &'static str,
        message: String,
    },
    /// AWS lacks something bootstrap does not create (the weighted records themselves).
    #[error("{object}: {problem}")]
    Shape { object: String, problem: String },
}

/// The clients bootstrap talks through: Route 53 (us-east-1), CloudWatch in every Region that
/// holds alarms, DynamoDB in the lease table's Region.
#[derive(Debug, Clone)]
pub struct Clients {
    pub route53: route53::Client,
    pub cloudwatch: BTreeMap<String, cloudwatch::Client>,
    pub dynamodb: Option<dynamodb::Client>,
}

impl Clients {
    /// Clients for `layout`: Route 53 from `aws` as it is, CloudWatch from `aws` in each alarm
    /// Region (same endpoint override), DynamoDB from `lease` in the table's Region.
    pub fn new(
        layout: &Layout,
        aws: &aws_config::SdkConfig,
        lease: &aws_config::SdkConfig,
    ) -> Self {
        let cloudwatch = layout
            .alarm_regions()
            .into_iter()
            .map(|region| {
                let config = cloudwatch::config::Builder::from(aws)
                    .region(cloudwatch::config::Region::new(region.clone()))
                    .build();
                (region, cloudwatch::Client::from_conf(config))
            })
            .collect();
        let dynamodb = layout.lease.as_ref().map(|l| {
            let config = dynamodb::config::Builder::from(lease)
                .region(dynamodb::config::Region::new(l.aws_region.clone()))
                .build();
            dynamodb::Client::from_conf(config)
        });
        Clients {
            route53: route53::Client::new(aws),
            cloudwatch,
            dynamodb,
        }
    }
}

/// Brings AWS to `layout` (or, with [`Mode::Inspect`], says how far it is), calling `report`
/// with each object's line as soon as it is known; returns every line.
pub async fn bootstrap(
    layout: &Layout,
    clients: &Clients,
    mode: Mode,
    report: &mut dyn FnMut(&Line),
) -> Result<Vec<Line>, BootstrapError> {
    if !layout.data_plane {
        return Err(BootstrapError::Unsupported(
            "route53.health is \"control-plane\": its CALCULATED health checks are named by id in \
             the fleet file, so there is nothing to create; bootstrap builds the data-plane \
             layout (health = \"data-plane\", the default)"
                .into(),
        ));
    }
    if layout.regions.iter().all(|r| r.records.is_none()) {
        return Err(BootstrapError::Unsupported(
            "the fleet file has no [route53] section: bootstrap needs the hosted zone and each \
             Region's set_identifier to guard the records with the votes' health checks"
                .into(),
        ));
    }
    let mut run = aws::Run::new(layout, clients, mode, report);
    run.read().await?;
    run.apply().await?;
    Ok(run.into_lines())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_say_what_was_done_or_would_be() {
        let line = Line {
            status: Status::Missing,
            object: "alarm a in us-east-1".into(),
        };
        assert_eq!(line.to_string(), "would create alarm a in us-east-1");
        assert_eq!(Status::Differs.bootstrap_verb(), "would update");
        assert_eq!(Status::Missing.plan_verb(), "MISSING");
        assert_eq!(Status::Created.plan_verb(), "exists");
        assert!(Status::Updated.is_done() && !Status::Differs.is_done());
    }
}
