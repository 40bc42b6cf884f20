//! The `arc` backend's part of `check-config`, `plan` and `aggregator bootstrap`: the routing
//! controls the fleet file maps each Region to (offline), their On/Off state and the weights as
//! the cluster and Route 53 hold them now (plan), and the control-config API's word that each
//! control exists in the configured control panel (bootstrap, outside failover only). With the
//! arc backend the Route 53 health layout (alarms, CLOUDWATCH_METRIC checks) is not built: the
//! records' health checks are the routing controls' RECOVERY_CONTROL checks.

use super::EXIT_BAD_INPUT;
use std::process::ExitCode;
use vantage_aggregator::backend::arc::{verify, ArcBackend};
use vantage_aggregator::backend::route53::sdk_loader;
use vantage_aggregator::backend::Backend;
use vantage_protocol::config::{ArcSettings, FleetConfig};

/// `aggregator.backend = "arc"` with its section, checked.
pub(super) fn settings(fleet: &FleetConfig) -> Option<ArcSettings> {
    let arc = fleet.aggregator.backend.as_ref()?.get_ref() == "arc";
    // The section was checked when the file loaded.
    fleet.arc.as_ref().filter(|_| arc)?.settings().ok()
}

/// `check-config`'s and `plan`'s offline view of the routing controls.
pub(super) fn print_layout(fleet: &FleetConfig, s: &ArcSettings) {
    println!(
        "\nARC routing controls of fleet {} (control panel {}):",
        fleet.fleet.name.get_ref(),
        s.control_panel_arn
    );
    for (region, arn) in &s.regions {
        println!("  {region:<20} {arn}");
    }
    println!(
        "  {} cluster endpoint(s), tried in a random order per call: {:?} each, {:?} in all",
        s.cluster_endpoints.len(),
        s.timeout_per_endpoint,
        s.budget
    );
    for (url, region) in &s.cluster_endpoints {
        println!("    {url} ({region})");
    }
    println!(
        "  each Region's weighted record needs its routing control's RECOVERY_CONTROL health check \
         (Route 53 CreateHealthCheck, Type=RECOVERY_CONTROL)"
    );
}

/// `plan`: what the cluster and Route 53 hold now.
pub(super) async fn print_now(backend: &ArcBackend) {
    match backend.observe().await {
        Ok(observed) => {
            println!("\nnow (routing controls from the ARC cluster, weights from Route 53):");
            for (region, o) in &observed {
                let control = match o.in_service {
                    Some(true) => "On",
                    Some(false) => "Off",
                    None => "?",
                };
                let weight = o.weight.map_or("?".to_owned(), |w| w.to_string());
                println!("  {region:<20} routing control {control:<3}  weight {weight:>3}");
            }
        }
        Err(e) => eprintln!("vantage: warning: cannot read the routing controls and weights: {e}"),
    }
}

/// `vantage aggregator bootstrap` with the arc backend: one `exists` / `MISSING` line per
/// routing control; exit 1 when one is missing or the API cannot be asked.
pub(super) async fn bootstrap(fleet: &FleetConfig, s: &ArcSettings) -> ExitCode {
    let Some(section) = fleet.arc.as_ref() else {
        eprintln!("vantage: backend \"arc\" needs an [arc] section");
        return ExitCode::from(EXIT_BAD_INPUT);
    };
    let endpoint = section
        .control_config_endpoint_url
        .as_ref()
        .map(|e| e.get_ref().as_str());
    let sdk = sdk_loader(None, None).load().await;
    let client = verify::client(&sdk, endpoint);
    let result = verify::verify_controls(&client, s, &mut |line| println!("{line}")).await;
    match result {
        Ok(lines) => {
            let missing = lines.iter().filter(|l| l.missing.is_some()).count();
            if missing == 0 {
                eprintln!(
                    "vantage: {} routing control(s) exist in {}; nothing is created for the arc \
                     backend (the records' RECOVERY_CONTROL health checks are yours)",
                    lines.len(),
                    s.control_panel_arn
                );
                ExitCode::SUCCESS
            } else {
                eprintln!("vantage: {missing} routing control(s) missing; create them in control panel {} or fix [arc.regions]", s.control_panel_arn);
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("vantage: {e}");
            ExitCode::FAILURE
        }
    }
}
