//! What driving Route 53 costs, before it runs: the AWS calls per minute the configured periods
//! make (in steady state, and while weights are moving), checked against the account's
//! documented limits, and the monthly bill at list prices. `vantage check-config` prints it.
//! With `[[services]]` every figure scales with the units (one service in one Region): reads
//! are at most one ListResourceRecordSets per service's record name, weights of every service
//! in one hosted zone share ChangeResourceRecordSets batches, health goes 1,000 metrics to a
//! PutMetricData and 500 to a GetMetricData; each service's share is printed beside the totals.
//!
//! The Route 53 API allows 5 requests per second per account, shared with every other tool
//! (Terraform, CI, other controllers); a controller that spends it in steady state leaves
//! nothing for the moment a failover needs it. The figures follow the planes' schedule
//! ([`crate::planes`]): the heartbeat publishes every `heartbeat_every`, each replica re-reads
//! Route 53 every `observe_every`, and weights move at most once per `weights.min_interval`,
//! by the lease holder only.

use crate::config::PlaneTiming;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;
use vantage_protocol::config::{FleetConfig, Route53Health, Route53Section};

/// Route 53's API limit: 5 requests per second per account, every caller together.
pub const ROUTE53_REQUESTS_PER_MINUTE: f64 = 5.0 * 60.0;
/// CloudWatch GetMetricData: 50 transactions per second per account and Region.
pub const GET_METRIC_DATA_PER_MINUTE: f64 = 50.0 * 60.0;
/// CloudWatch PutMetricData: 500 transactions per second per account and Region.
pub const PUT_METRIC_DATA_PER_MINUTE: f64 = 500.0 * 60.0;

/// GetChange polls until a batch is INSYNC: 1, 2, 4, 8 s, then every 10 s; about 9 for the
/// usual 60 s (see `backend::route53::records`).
const GET_CHANGE_POLLS_PER_BATCH: f64 = 9.0;
/// Weighted records ListResourceRecordSets returns per page.
const RECORDS_PER_PAGE: usize = 300;
/// ResourceRecord elements in one ChangeResourceRecordSets request (an UPSERT counts twice).
const RECORD_ELEMENTS_PER_BATCH: usize = 1000;
/// Metrics in one PutMetricData request, queries in one GetMetricData request.
const METRICS_PER_PUT: usize = 1000;
const QUERIES_PER_GET: usize = 500;
/// Minutes in a month of 730 hours, as AWS prices monthly quantities.
const MINUTES_PER_MONTH: f64 = 730.0 * 60.0;

/// List prices in USD (us-east-1, December 2026): what the estimate multiplies by. Check the
/// AWS pricing pages for your Region; first-tier free allowances are not subtracted.
mod price {
    /// A Route 53 health check on an AWS resource (CLOUDWATCH_METRIC and CALCULATED checks
    /// are billed as basic checks), per month.
    pub const HEALTH_CHECK_MONTH: f64 = 0.50;
    /// A CloudWatch custom metric (one per Region and replica), per month.
    pub const METRIC_MONTH: f64 = 0.30;
    /// A standard-resolution CloudWatch alarm, per month.
    pub const ALARM_MONTH: f64 = 0.10;
    /// PutMetricData, per 1,000 requests.
    pub const PUT_METRIC_DATA_PER_1000: f64 = 0.01;
    /// GetMetricData, per 1,000 metrics requested.
    pub const GET_METRIC_DATA_PER_1000_METRICS: f64 = 0.01;
    /// DynamoDB on-demand, per million write request units (a lease write is one).
    pub const DYNAMODB_WRITE_PER_MILLION: f64 = 0.625;
    /// DynamoDB on-demand, per million read request units (an eventually consistent read of
    /// the small lease item is half of one; counted as one).
    pub const DYNAMODB_READ_PER_MILLION: f64 = 0.125;
    /// An ARC cluster, per hour (its data-plane calls are not billed apart).
    pub const ARC_CLUSTER_HOUR: f64 = 2.50;
}

/// Hours in a month, as AWS prices hourly resources.
const HOURS_PER_MONTH: f64 = 730.0;

/// Which AWS service a call goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// The Route 53 control plane (us-east-1), limited per account.
    Route53,
    /// CloudWatch in each replica's own Region.
    CloudWatch,
    /// The lease table's Region.
    DynamoDb,
    /// The ARC cluster's regional endpoints (the `arc` backend).
    Arc,
}

impl Service {
    pub const fn as_str(self) -> &'static str {
        match self {
            Service::Route53 => "route53",
            Service::CloudWatch => "cloudwatch",
            Service::DynamoDb => "dynamodb",
            Service::Arc => "arc",
        }
    }
}

/// One operation's calls per minute, all replicas together.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiRate {
    pub service: Service,
    pub operation: &'static str,
    /// Nothing failing, latency noise only.
    pub steady_per_minute: f64,
    /// While weights move as fast as `weights.min_interval` lets them.
    pub moving_per_minute: f64,
    /// Who makes the calls.
    pub by: &'static str,
}

/// One line of the monthly bill.
#[derive(Debug, Clone, PartialEq)]
pub struct CostLine {
    pub item: String,
    pub usd_per_month: f64,
}

/// One service's share of the estimate (a single-API fleet has one, unnamed).
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceShare {
    /// `None` for a single-API fleet.
    pub name: Option<String>,
    /// Its Regions with weighted records.
    pub regions: usize,
    /// Its health checks, CloudWatch alarms and custom metrics (0 with the arc backend).
    pub health_checks: usize,
    pub alarms: usize,
    pub metrics: usize,
    /// Its Route 53 reads per minute (ListResourceRecordSets of its record name, GetHealthCheck
    /// of its checks), all replicas together: at most, as record names that share a page are
    /// read together.
    pub route53_reads_per_minute: f64,
    /// Its objects' monthly cost (health checks, metrics, alarms; the requests are shared).
    pub usd_per_month: f64,
}

/// The estimate for one fleet file.
#[derive(Debug, Clone, PartialEq)]
pub struct Budget {
    pub replicas: usize,
    /// Units: Regions of a single-API fleet, (service, Region) pairs with `[[services]]`.
    pub regions: usize,
    /// Each service's share; named services only when the fleet has `[[services]]`.
    pub services: Vec<ServiceShare>,
    pub rates: Vec<ApiRate>,
    pub costs: Vec<CostLine>,
    /// Limits the configured periods would exceed.
    pub warnings: Vec<String>,
}

impl Budget {
    /// Calls per minute to one service, steady or moving.
    pub fn per_minute(&self, service: Service, moving: bool) -> f64 {
        self.rates
            .iter()
            .filter(|r| r.service == service)
            .map(|r| {
                if moving {
                    r.moving_per_minute
                } else {
                    r.steady_per_minute
                }
            })
            .sum()
    }

    pub fn monthly_usd(&self) -> f64 {
        self.costs.iter().map(|c| c.usd_per_month).sum()
    }
}

fn per_minute(every: Duration) -> f64 {
    60.0 / every.as_secs_f64().max(f64::MIN_POSITIVE)
}

/// One service's records as the estimate counts them.
struct Part {
    name: Option<String>,
    zone: String,
    regions: usize,
}

/// The services with Route 53 records (the single-API fleet as one unnamed part), and the
/// first one's section, which holds the shared health settings.
fn parts(fleet: &FleetConfig) -> Option<(Vec<Part>, &Route53Section)> {
    let named = fleet.has_named_services();
    let sections: Vec<(Option<String>, &Route53Section)> = if named {
        fleet
            .services()
            .iter()
            .filter_map(|s| Some((Some(s.name.clone()), s.fleet.route53.as_ref()?)))
            .collect()
    } else {
        vec![(None, fleet.route53.as_ref()?)]
    };
    let first = sections.first()?.1;
    let parts = sections
        .iter()
        .map(|(name, section)| Part {
            name: name.clone(),
            zone: section
                .hosted_zone_id
                .get_ref()
                .trim()
                .trim_start_matches("/hostedzone/")
                .to_owned(),
            // A single-API fleet counts its Regions as it always did; a service the Regions
            // its records map.
            regions: if named {
                section.regions.len()
            } else {
                fleet.regions.len()
            },
        })
        .collect();
    Some((parts, first))
}

/// The estimate, or `None` when the fleet file names no Route 53 records (the dry-run
/// backend makes no AWS calls).
pub fn estimate(fleet: &FleetConfig) -> Option<Budget> {
    let (parts, route53) = parts(fleet)?;
    // With the arc backend, health is ARC's: no CloudWatch metric, alarm or forced check.
    let arc = fleet.arc.is_some()
        && fleet
            .aggregator
            .backend
            .as_ref()
            .map(|b| b.get_ref().as_str())
            == Some("arc");
    let health = match route53.settings() {
        _ if arc => None,
        Ok(s) => Some(s.health),
        Err(_) => Some(Route53Health::DataPlane),
    };
    let timing = PlaneTiming::from_fleet(fleet);
    let replicas = fleet.aggregator.replicas.len().max(1);
    let regions: usize = parts.iter().map(|p| p.regions).sum();
    let n = replicas as f64;
    let r = regions as f64;
    let observes = n * per_minute(timing.observe_every);
    // Every service moving at once: each hosted zone's records in as few batches as fit.
    let mut per_zone: BTreeMap<&str, usize> = BTreeMap::new();
    for p in &parts {
        *per_zone.entry(&p.zone).or_default() += p.regions;
    }
    let zone_batches: usize = per_zone
        .values()
        .map(|records| (2 * records).div_ceil(RECORD_ELEMENTS_PER_BATCH).max(1))
        .sum();
    let weight_batches = per_minute(timing.weight_min_interval) * zone_batches as f64;
    let pages_of = |regions: usize| regions.div_ceil(RECORDS_PER_PAGE).max(1) as f64;
    let pages: f64 = parts.iter().map(|p| pages_of(p.regions)).sum();
    let puts = regions.div_ceil(METRICS_PER_PUT).max(1) as f64;
    let gets = regions.div_ceil(QUERIES_PER_GET).max(1) as f64;
    let mut rates = vec![ApiRate {
        service: Service::Route53,
        operation: "ListResourceRecordSets",
        steady_per_minute: observes * pages,
        moving_per_minute: observes * pages,
        by: "every replica, every observe_every",
    }];
    if health == Some(Route53Health::ControlPlane) {
        rates.push(ApiRate {
            service: Service::Route53,
            operation: "GetHealthCheck",
            steady_per_minute: observes * r,
            moving_per_minute: observes * r,
            by: "the aggregator, per Region, every observe_every",
        });
    }
    rates.extend([
        ApiRate {
            service: Service::Route53,
            operation: "ChangeResourceRecordSets",
            steady_per_minute: 0.0,
            moving_per_minute: weight_batches,
            by: "the weight writer, at most once per weights.min_interval (per hosted zone)",
        },
        ApiRate {
            service: Service::Route53,
            operation: "GetChange",
            steady_per_minute: 0.0,
            moving_per_minute: weight_batches * GET_CHANGE_POLLS_PER_BATCH,
            by: "the weight writer, until INSYNC",
        },
    ]);
    if health.is_some() {
        rates.push(ApiRate {
            service: Service::CloudWatch,
            operation: "PutMetricData",
            steady_per_minute: n * per_minute(timing.heartbeat_every) * puts,
            moving_per_minute: n * per_minute(timing.heartbeat_every) * puts,
            by: "every replica, every heartbeat_every (1,000 metrics a request)",
        });
    } else {
        rates.extend([
            ApiRate {
                service: Service::Arc,
                operation: "GetRoutingControlState",
                steady_per_minute: observes * r,
                moving_per_minute: observes * r,
                by: "every replica, per Region, every observe_every",
            },
            ApiRate {
                service: Service::Arc,
                operation: "UpdateRoutingControlStates",
                steady_per_minute: 0.0,
                // A batch only when a Region goes out or in: at most one per evaluation.
                moving_per_minute: n * per_minute(evaluate_every(fleet)),
                by: "a batch when a Region goes out or in, at most once per evaluate_every",
            },
        ]);
    }
    if health == Some(Route53Health::DataPlane) {
        rates.push(ApiRate {
            service: Service::CloudWatch,
            operation: "GetMetricData",
            steady_per_minute: observes * gets,
            moving_per_minute: observes * gets,
            by: "every replica, every observe_every (500 metrics a request)",
        });
    }
    let lease = fleet
        .aggregator
        .lease
        .as_ref()
        .filter(|_| replicas > 1)
        .map(|l| l.duration());
    if let Some(duration) = lease {
        // The holder renews every third of the lease (a conditional UpdateItem); the others
        // read the item as often, and write only to take an expired lease.
        let period = per_minute(duration / 3);
        rates.push(ApiRate {
            service: Service::DynamoDb,
            operation: "UpdateItem (lease)",
            steady_per_minute: period,
            moving_per_minute: period + weight_batches,
            by: "the holder, every third of the lease; a fence per weight batch",
        });
        rates.push(ApiRate {
            service: Service::DynamoDb,
            operation: "GetItem (lease)",
            steady_per_minute: (n - 1.0) * period,
            moving_per_minute: (n - 1.0) * period,
            by: "every other replica, every third of the lease",
        });
    }

    let mut warnings = Vec::new();
    let route53_moving: f64 = rates
        .iter()
        .filter(|r| r.service == Service::Route53)
        .map(|r| r.moving_per_minute)
        .sum();
    if route53_moving > ROUTE53_REQUESTS_PER_MINUTE {
        warnings.push(format!(
            "Route 53: {route53_moving:.0} calls/min while weights move, above the account's \
             5 requests/s ({ROUTE53_REQUESTS_PER_MINUTE:.0}/min) shared with every other tool; \
             raise aggregator.observe_every or weights.min_interval"
        ));
    }
    let route53_steady: f64 = rates
        .iter()
        .filter(|r| r.service == Service::Route53)
        .map(|r| r.steady_per_minute)
        .sum();
    if route53_steady > ROUTE53_REQUESTS_PER_MINUTE {
        warnings.push(format!(
            "Route 53: {route53_steady:.0} calls/min in steady state, above the account's 5 \
             requests/s ({ROUTE53_REQUESTS_PER_MINUTE:.0}/min): raise aggregator.observe_every"
        ));
    }
    let per_replica_get = per_minute(timing.observe_every) * gets;
    if health == Some(Route53Health::DataPlane) && per_replica_get > GET_METRIC_DATA_PER_MINUTE {
        warnings.push(format!(
            "CloudWatch GetMetricData: {per_replica_get:.0} calls/min per replica Region, above \
             its 50/s quota; raise aggregator.observe_every"
        ));
    }
    let per_replica_put = per_minute(timing.heartbeat_every) * puts;
    if health.is_some() && per_replica_put > PUT_METRIC_DATA_PER_MINUTE {
        warnings.push(format!(
            "CloudWatch PutMetricData: {per_replica_put:.0} calls/min per replica Region, above \
             its 500/s quota; raise aggregator.heartbeat_every"
        ));
    }

    let checks = if replicas > 1 { r * (n + 1.0) } else { r };
    // A named service's Region is a unit of its own: its own check, metric and alarm.
    let unit = if parts.iter().any(|p| p.name.is_some()) {
        "service Region"
    } else {
        "Region"
    };
    let puts_month = n * per_minute(timing.heartbeat_every) * puts * MINUTES_PER_MONTH;
    let mut costs = if health.is_none() {
        arc_costs(r)
    } else {
        vec![
            CostLine {
                item: format!(
                    "{checks:.0} Route 53 health checks ({})",
                    if replicas > 1 {
                        format!("per {unit}: one CLOUDWATCH_METRIC per replica and one CALCULATED")
                    } else {
                        format!("one CLOUDWATCH_METRIC per {unit}")
                    }
                ),
                usd_per_month: checks * price::HEALTH_CHECK_MONTH,
            },
            CostLine {
                item: format!("{:.0} CloudWatch custom metrics ({unit} × replica)", r * n),
                usd_per_month: r * n * price::METRIC_MONTH,
            },
            CostLine {
                item: format!("{:.0} CloudWatch alarms (standard resolution)", r * n),
                usd_per_month: r * n * price::ALARM_MONTH,
            },
            CostLine {
                item: format!("{puts_month:.0} PutMetricData requests"),
                usd_per_month: puts_month / 1000.0 * price::PUT_METRIC_DATA_PER_1000,
            },
        ]
    };
    if health == Some(Route53Health::DataPlane) {
        let metrics_month = observes * r * MINUTES_PER_MONTH;
        costs.push(CostLine {
            item: format!("{metrics_month:.0} metrics read by GetMetricData"),
            usd_per_month: metrics_month / 1000.0 * price::GET_METRIC_DATA_PER_1000_METRICS,
        });
    }
    if let Some(duration) = lease {
        let period = per_minute(duration / 3) * MINUTES_PER_MONTH;
        let reads = (n - 1.0) * period;
        costs.push(CostLine {
            item: format!("{period:.0} DynamoDB lease writes and {reads:.0} reads (on-demand)"),
            usd_per_month: period / 1e6 * price::DYNAMODB_WRITE_PER_MILLION
                + reads / 1e6 * price::DYNAMODB_READ_PER_MILLION,
        });
    }
    costs.push(CostLine {
        item: "Route 53 API calls".into(),
        usd_per_month: 0.0,
    });
    let services = parts
        .iter()
        .map(|p| {
            let r = p.regions as f64;
            let (checks, alarms, metrics) = match health {
                None => (r, 0.0, 0.0),
                Some(_) if replicas > 1 => (r * (n + 1.0), r * n, r * n),
                Some(_) => (r, r, r),
            };
            let reads = observes * pages_of(p.regions)
                + if health == Some(Route53Health::ControlPlane) {
                    observes * r
                } else {
                    0.0
                };
            ServiceShare {
                name: p.name.clone(),
                regions: p.regions,
                health_checks: checks as usize,
                alarms: alarms as usize,
                metrics: metrics as usize,
                route53_reads_per_minute: reads,
                usd_per_month: checks * price::HEALTH_CHECK_MONTH
                    + metrics * price::METRIC_MONTH
                    + alarms * price::ALARM_MONTH,
            }
        })
        .collect();
    Some(Budget {
        replicas,
        regions,
        services,
        rates,
        costs,
        warnings,
    })
}

/// `aggregator.evaluate_every` with its default, as [`crate::config::AggregatorConfig`] applies it.
fn evaluate_every(fleet: &FleetConfig) -> Duration {
    fleet.aggregator.evaluate_every.map_or(
        crate::config::DEFAULT_EVALUATE_EVERY.min(fleet.report_interval()),
        |d| d.0,
    )
}

/// The `arc` backend's bill: the cluster by the hour (what the CloudWatch-metric health mode
/// does for cents), and a RECOVERY_CONTROL health check per Region on the weighted records.
fn arc_costs(regions: f64) -> Vec<CostLine> {
    vec![
        CostLine {
            item: format!(
                "1 ARC cluster (${:.2}/hour; the CloudWatch-metric health mode costs cents instead)",
                price::ARC_CLUSTER_HOUR
            ),
            usd_per_month: price::ARC_CLUSTER_HOUR * HOURS_PER_MONTH,
        },
        CostLine {
            item: format!("{regions:.0} Route 53 health checks (RECOVERY_CONTROL, one per Region)"),
            usd_per_month: regions * price::HEALTH_CHECK_MONTH,
        },
    ]
}

/// The estimate as `check-config` prints it.
pub fn render(budget: &Budget) -> String {
    let mut out = String::new();
    let named = budget.services.iter().any(|s| s.name.is_some());
    if named {
        let _ = writeln!(
            out,
            "AWS calls per minute ({} service(s), {} service Region(s), {} aggregator replica(s)): steady state / while every service's weights move",
            budget.services.len(),
            budget.regions,
            budget.replicas
        );
    } else {
        let _ = writeln!(
            out,
            "AWS calls per minute ({} Region(s), {} aggregator replica(s)): steady state / while weights move",
            budget.regions, budget.replicas
        );
    }
    for rate in &budget.rates {
        let _ = writeln!(
            out,
            "  {:<10} {:<27} {:>7.1} / {:>7.1}   {}",
            rate.service.as_str(),
            rate.operation,
            rate.steady_per_minute,
            rate.moving_per_minute,
            rate.by
        );
    }
    let route53 = budget.per_minute(Service::Route53, true);
    let _ = writeln!(
        out,
        "  Route 53 total: {:.1} / {:.1} calls/min, {:.1} % of the account's 5 requests/s at most",
        budget.per_minute(Service::Route53, false),
        route53,
        route53 / ROUTE53_REQUESTS_PER_MINUTE * 100.0
    );
    let _ = writeln!(
        out,
        "Monthly cost at list prices (USD, us-east-1; free tiers not subtracted):"
    );
    for cost in &budget.costs {
        let _ = writeln!(out, "  {:>8.2}  {}", cost.usd_per_month, cost.item);
    }
    let _ = writeln!(out, "  {:>8.2}  total", budget.monthly_usd());
    if named {
        let _ = writeln!(
            out,
            "Per service (objects, Route 53 reads/min at most, monthly cost of its objects):"
        );
        for s in &budget.services {
            let _ = writeln!(
                out,
                "  {:<20} {:>3} Region(s) {:>4} health checks {:>4} alarms {:>4} metrics {:>7.1} reads/min {:>8.2} USD",
                s.name.as_deref().unwrap_or_default(),
                s.regions,
                s.health_checks,
                s.alarms,
                s.metrics,
                s.route53_reads_per_minute,
                s.usd_per_month
            );
        }
        let sum = |f: fn(&ServiceShare) -> usize| budget.services.iter().map(f).sum::<usize>();
        let _ = writeln!(
            out,
            "  {:<20} {:>3} Region(s) {:>4} health checks {:>4} alarms {:>4} metrics {:>7.1} reads/min {:>8.2} USD",
            "total",
            sum(|s| s.regions),
            sum(|s| s.health_checks),
            sum(|s| s.alarms),
            sum(|s| s.metrics),
            budget
                .services
                .iter()
                .map(|s| s.route53_reads_per_minute)
                .sum::<f64>(),
            budget.services.iter().map(|s| s.usd_per_month).sum::<f64>()
        );
    }
    out
}

#[cfg(test)]
#[path = "budget_tests.rs"]
mod tests;
