//! `[[services]]`: the example file's views, ids and overlays, the single-API form as one
//! service, and each mistake reported with its `services[i].` key and line.

use super::*;

const EXAMPLE: &str = include_str!("../../../examples/fleet-services.toml");

fn load(text: &str) -> Result<FleetConfig, ConfigError> {
    FleetConfig::parse(text, "fleet.toml")
}

#[test]
fn the_example_has_two_services_with_their_own_targets_and_overlays() {
    let c = load(EXAMPLE).unwrap();
    assert!(c.has_named_services());
    let names: Vec<&str> = c.services().iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["orders", "payments"]);
    assert_eq!(
        c.all_regions(),
        ["ap-southeast-1", "eu-west-1", "us-east-1"]
    );
    let ids: Vec<(String, String)> = c.targets().into_iter().map(|t| (t.id, t.service)).collect();
    let want = [
        ("orders/global", "orders"),
        ("orders/status:us-east-1", "orders"),
        ("orders/deep:us-east-1", "orders"),
        ("orders/status:eu-west-1", "orders"),
        ("payments/global", "payments"),
        ("payments/status:us-east-1", "payments"),
        ("payments/status:eu-west-1", "payments"),
        ("payments/status:ap-southeast-1", "payments"),
    ];
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(ids, want);
    let payments = c.service("payments").unwrap();
    assert_eq!(payments.unit("eu-west-1"), "payments/eu-west-1");
    assert_eq!(
        split_unit("payments/eu-west-1"),
        (Some("payments"), "eu-west-1")
    );
    // The service's policy keys over the fleet's, the others inherited.
    assert_eq!(payments.fleet.policy.fail_after, Some(1));
    assert_eq!(payments.fleet.policy.min_healthy, Some(2));
    assert_eq!(payments.fleet.policy.recover_after, Some(6));
    let orders = c.service("orders").unwrap();
    assert_eq!(orders.fleet.policy.fail_after, Some(2));
    // Route 53: the fleet's zone and health mode, the service's records.
    let r = orders.fleet.route53.as_ref().unwrap().settings().unwrap();
    assert_eq!(r.hosted_zone_id, "Z0123456789ABCDEFGHIJ");
    assert_eq!(r.record_name, "orders-origin.example.com.");
    assert_eq!(r.regions.len(), 2);
    // The URL keys name the service's entry, for error messages.
    let t = c
        .targets()
        .into_iter()
        .find(|t| t.id == "payments/status:ap-southeast-1")
        .unwrap();
    assert_eq!(t.url_key, "services[1].regions[2].status_url");
    assert_eq!(t.settings.interval.unwrap().0.as_secs(), 5);
}

#[test]
fn a_single_api_file_is_one_service_named_after_the_fleet_with_bare_ids() {
    let c = load(super::super::tests::EXAMPLE).unwrap();
    assert!(!c.has_named_services());
    let [s] = c.services() else {
        panic!("one service expected")
    };
    assert_eq!(s.name, "orders-api");
    assert!(!s.named);
    assert_eq!(s.unit("eu-west-1"), "eu-west-1");
    assert_eq!(s.target_id("status:eu-west-1"), "status:eu-west-1");
    let ids: Vec<String> = c.targets().into_iter().map(|t| t.id).collect();
    assert!(ids.contains(&"global".to_owned()), "{ids:?}");
    assert!(c.targets().iter().all(|t| t.service == "orders-api"));
    assert!(s.fleet.services().is_empty());
}

fn error_of(text: &str) -> String {
    load(text).unwrap_err().to_string()
}

#[test]
fn mistakes_inside_a_service_name_its_entry_and_line() {
    let bad_url = EXAMPLE.replace(
        "https://p-euw1.execute-api.eu-west-1.amazonaws.com/prod/status",
        "ftp://p-euw1/status",
    );
    let e = error_of(&bad_url);
    assert!(e.contains("services[1].regions[1].status_url"), "{e}");
    let line = EXAMPLE
        .lines()
        .position(|l| l.contains("p-euw1.execute-api"))
        .unwrap()
        + 1;
    assert!(e.starts_with(&format!("fleet.toml:{line}:")), "{e}");

    let twice = EXAMPLE.replace("name = \"payments\"", "name = \"orders\"");
    let e = error_of(&twice);
    assert!(
        e.contains("services[1].name") && e.contains("listed twice"),
        "{e}"
    );

    let floor = EXAMPLE.replace("min_healthy = 2", "min_healthy = 0");
    let e = error_of(&floor);
    assert!(e.contains("services[1].policy.min_healthy"), "{e}");

    let bad_record = EXAMPLE.replace(
        "set_identifier = \"payments-eu-west-1\"",
        "set_identifier = \"payments-us-east-1\"",
    );
    let e = error_of(&bad_record);
    assert!(e.contains("services[1].route53.regions"), "{e}");

    let per_service_interval = EXAMPLE.replace(
        "policy = { fail_after = 1, min_healthy = 2 }",
        "policy = { fail_after = 1, min_healthy = 2 }\nweights = { min_interval = \"5s\" }",
    );
    let e = error_of(&per_service_interval);
    assert!(e.contains("services[1].weights.min_interval"), "{e}");
}

#[test]
fn single_api_sections_beside_services_say_where_they_go() {
    let with_global = EXAMPLE.replace(
        "[[vantages]]\nregion = \"us-east-1\"",
        "[global]\nurl = \"https://x.example.com/\"\n\n[[vantages]]\nregion = \"us-east-1\"",
    );
    let e = error_of(&with_global);
    assert!(
        e.contains("global: cannot be used with [[services]]"),
        "{e}"
    );
    let with_record = EXAMPLE.replace(
        "record_type = \"CNAME\"\nhealth",
        "record_type = \"CNAME\"\nrecord_name = \"api.example.com\"\nhealth",
    );
    let e = error_of(&with_record);
    assert!(
        e.contains("route53.record_name: cannot be used with [[services]]"),
        "{e}"
    );
    let unknown = EXAMPLE.replace("name = \"orders\"\n", "name = \"orders\"\nweight = 3\n");
    let e = error_of(&unknown);
    assert!(e.contains("weight"), "{e}");
    // Neither [global] nor [[services]]: the file has no API to watch.
    let (head, _) = EXAMPLE.split_once("\n[[services]]\n").unwrap();
    let (_, tail) = EXAMPLE.split_once("\n[[vantages]]").unwrap();
    let neither = format!("{head}\n[[vantages]]{tail}");
    let e = error_of(&neither);
    assert!(e.contains("global") && e.contains("[[services]]"), "{e}");
}
