//! `vantage aggregator bootstrap` as an operator runs it: the real binary against moto's
//! server (Route 53, CloudWatch and DynamoDB on loopback), a fleet of 3 Regions × 3 replicas.
//! The layout itself is verified object by object in `aggregator/tests/bootstrap_moto.rs`;
//! this checks the command's contract: one line per object, `--dry-run` writes nothing, a
//! second run prints only `exists`, the exit codes, and that `vantage aggregator --config`
//! still means "serve". The zone and its records are made through moto's Route 53 REST API
//! directly, as an operator's own stack would have made them.

use std::process::{Command, Output};
use vantage_testkit::dirs::temp_dir;
use vantage_testkit::http::exchange_blocking;
use vantage_testkit::moto::Moto;

const REGIONS: [&str; 3] = ["ap-southeast-2", "eu-west-1", "us-east-1"];
const REPLICAS: [(&str, &str); 3] = [
    ("apse2", "ap-southeast-2"),
    ("euw1", "eu-west-1"),
    ("use1", "us-east-1"),
];
const RECORD: &str = "api-origin.example.com.";
const AUTH: &str = "AWS4-HMAC-SHA256 Credential=test/20240101/us-east-1/route53/aws4_request, SignedHeaders=host, Signature=0";

/// The binary with moto's static credentials and nothing else from the environment's AWS set
/// (no profile, no instance metadata lookups).
fn vantage(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vantage"))
        .args(args)
        .env_remove("VANTAGE_CONFIG")
        .env_remove("AWS_PROFILE")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        // `plan` loads the aggregator's agent key ([agents.auth], default variable).
        .env("VANTAGE_AGENT_KEY", "bootstrap-test-agent-key-0123456789")
        .output()
        .expect("run vantage")
}

fn route53(moto: &Moto, path: &str, body: &str) -> String {
    let r = exchange_blocking(
        moto.port,
        "POST",
        path,
        &[("Content-Type", "application/xml"), ("Authorization", AUTH)],
        body.as_bytes(),
    )
    .expect("moto Route 53");
    assert!(r.status < 300, "{path}: {} {}", r.status, r.body);
    r.body
}

/// A hosted zone with a weighted CNAME per Region (`<fleet>-<region>`); returns its bare id.
fn seed(moto: &Moto, fleet: &str) -> String {
    let ns = "https://route53.amazonaws.com/doc/2013-04-01/";
    let body = route53(
        moto,
        "/2013-04-01/hostedzone",
        &format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><CreateHostedZoneRequest xmlns=\"{ns}\"><Name>example.com.</Name><CallerReference>{fleet}-zone</CallerReference></CreateHostedZoneRequest>"
        ),
    );
    let id = body
        .split("<Id>/hostedzone/")
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .expect("zone id")
        .to_owned();
    let changes: String = REGIONS
        .iter()
        .map(|r| {
            format!(
                "<Change><Action>CREATE</Action><ResourceRecordSet><Name>{RECORD}</Name><Type>CNAME</Type><SetIdentifier>{fleet}-{r}</SetIdentifier><Weight>50</Weight><TTL>60</TTL><ResourceRecords><ResourceRecord><Value>{r}.origin.example.com</Value></ResourceRecord></ResourceRecords></ResourceRecordSet></Change>"
            )
        })
        .collect();
    route53(
        moto,
        &format!("/2013-04-01/hostedzone/{id}/rrset/"),
        &format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ChangeResourceRecordSetsRequest xmlns=\"{ns}\"><ChangeBatch><Changes>{changes}</Changes></ChangeBatch></ChangeResourceRecordSetsRequest>"
        ),
    );
    id
}

/// The fleet file on `moto`, written to a directory of the test's own (removed when the guard
/// drops).
fn fleet_file(moto: &Moto, fleet: &str, zone: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    fleet_file_at(&moto.endpoint(), fleet, zone)
}

/// The fleet file with every AWS endpoint at `endpoint`.
fn fleet_file_at(
    endpoint: &str,
    fleet: &str,
    zone: &str,
) -> (tempfile::TempDir, std::path::PathBuf) {
    let mut text = format!(
        "[fleet]\nname = \"{fleet}\"\n[global]\nurl = \"https://api.example.com/status\"\n"
    );
    for r in REGIONS {
        text += &format!(
            "[[regions]]\nname = \"{r}\"\nstatus_url = \"https://{r}.example.com/status\"\n"
        );
    }
    text +=
        "[[vantages]]\nregion = \"eu-west-1\"\n[aggregator]\nbackend = \"route53\"\nreplicas = [\n";
    for (id, region) in REPLICAS {
        text += &format!(
            "  {{ id = \"{id}\", region = \"{region}\", url = \"https://agg-{id}.example.com\" }},\n"
        );
    }
    text += &format!(
        "]\n[aggregator.lease]\ntable = \"{fleet}-lease\"\nendpoint_url = \"{endpoint}\"\n[agents.auth]\nkey_id = \"k1\"\n[route53]\nhosted_zone_id = \"{zone}\"\nrecord_name = \"{RECORD}\"\nendpoint_url = \"{endpoint}\"\n"
    );
    for r in REGIONS {
        text += &format!("[route53.regions.{r}]\nset_identifier = \"{fleet}-{r}\"\n");
    }
    let dir = temp_dir(fleet);
    let path = dir.path().join("fleet.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

fn stdout_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

fn count(lines: &[String], verb: &str) -> usize {
    lines.iter().filter(|l| l.starts_with(verb)).count()
}

#[test]
fn bootstrap_creates_once_dry_run_writes_nothing_and_a_second_run_finds_everything() {
    let moto = Moto::shared();
    let zone = seed(moto, "cli-bootstrap");
    let (_dir, path) = fleet_file(moto, "cli-bootstrap", &zone);
    let config = path.to_str().unwrap();

    // 3 Regions × (3 alarms + 3 checks + 1 CALCULATED + 1 record) + the lease table.
    let dry = vantage(&["aggregator", "bootstrap", "--config", config, "--dry-run"]);
    let lines = stdout_lines(&dry);
    assert_eq!(dry.status.code(), Some(0), "{dry:?}");
    assert_eq!(lines.len(), 25, "{lines:#?}");
    assert_eq!(count(&lines, "would create"), 22, "{lines:#?}");
    assert_eq!(count(&lines, "would update"), 3, "{lines:#?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("alarm vantage-cli-bootstrap-eu-west-1-apse2 in ap-southeast-2")),
        "{lines:#?}"
    );
    // Twice: a dry run leaves nothing behind that a second dry run could find.
    let again = vantage(&["aggregator", "bootstrap", "--config", config, "--dry-run"]);
    assert_eq!(stdout_lines(&again), lines);

    // `plan` (route53 backend) compares the layout with AWS: everything missing so far.
    let plan = vantage(&["plan", "--config", config]);
    let text = String::from_utf8_lossy(&plan.stdout);
    assert_eq!(plan.status.code(), Some(0), "{plan:?}");
    assert_eq!(text.matches("  MISSING ").count(), 22, "{text}");
    assert_eq!(text.matches("  DIFFERS ").count(), 3, "{text}");
    assert!(text.contains("25 object(s) missing or different"), "{text}");

    let first = vantage(&["aggregator", "bootstrap", "--config", config]);
    let lines = stdout_lines(&first);
    assert_eq!(first.status.code(), Some(0), "{first:?}");
    assert_eq!(count(&lines, "created"), 22, "{lines:#?}");
    assert_eq!(count(&lines, "updated"), 3, "{lines:#?}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("created") && l.contains("vantage:cli-bootstrap:us-east-1:majority (CALCULATED, healthy while 2 of 3 are, id ")),
        "{lines:#?}"
    );

    let second = vantage(&["aggregator", "bootstrap", "--config", config]);
    let lines = stdout_lines(&second);
    assert_eq!(second.status.code(), Some(0), "{second:?}");
    assert_eq!(lines.len(), 25, "{lines:#?}");
    assert_eq!(count(&lines, "exists"), 25, "only `exists`: {lines:#?}");

    let plan = vantage(&["plan", "--config", config]);
    let text = String::from_utf8_lossy(&plan.stdout);
    assert_eq!(plan.status.code(), Some(0), "{plan:?}");
    assert_eq!(text.matches("  exists   ").count(), 25, "{text}");
    assert!(
        !text.contains("MISSING") && !text.contains("DIFFERS"),
        "{text}"
    );
}

#[test]
fn bad_fleet_files_exit_2_and_aws_failures_exit_1_naming_the_object() {
    let moto = Moto::shared();
    let missing = vantage(&[
        "aggregator",
        "bootstrap",
        "--config",
        "/nonexistent/fleet.toml",
    ]);
    assert_eq!(missing.status.code(), Some(2), "{missing:?}");
    assert!(missing.stdout.is_empty());

    // A zone without the records: the first missing record is named, nothing is created.
    let ns = "https://route53.amazonaws.com/doc/2013-04-01/";
    let body = route53(
        moto,
        "/2013-04-01/hostedzone",
        &format!("<CreateHostedZoneRequest xmlns=\"{ns}\"><Name>example.org.</Name><CallerReference>cli-norecord-zone</CallerReference></CreateHostedZoneRequest>"),
    );
    let zone = body
        .split("<Id>/hostedzone/")
        .nth(1)
        .and_then(|r| r.split('<').next())
        .unwrap()
        .to_owned();
    let (_dir, path) = fleet_file(moto, "cli-norecord", &zone);
    let out = vantage(&[
        "aggregator",
        "bootstrap",
        "--config",
        path.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("\"cli-norecord-ap-southeast-2\"") && stderr.contains("no such record"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "nothing was created");

    // An unreachable endpoint is an AWS failure too: exit 1 with the operation.
    let text = std::fs::read_to_string(&path).unwrap().replace(
        &moto.endpoint(),
        &format!("http://127.0.0.1:{}", vantage_testkit::closed_port()),
    );
    std::fs::write(&path, text).unwrap();
    let out = vantage(&[
        "aggregator",
        "bootstrap",
        "--config",
        path.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("DescribeAlarms"),
        "{out:?}"
    );
}

#[test]
fn aggregator_without_a_subcommand_still_needs_config_and_bootstrap_help_teaches() {
    // `--config` with a subcommand is refused rather than silently ignored.
    let out = vantage(&["aggregator", "--config", "fleet.toml", "bootstrap"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    // No subcommand: --config is still required, as before.
    let out = vantage(&["aggregator"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--config"),
        "{out:?}"
    );
    let help = vantage(&["aggregator", "bootstrap", "--help"]);
    assert_eq!(help.status.code(), Some(0));
    let text = String::from_utf8_lossy(&help.stdout);
    for needle in [
        "--dry-run",
        "CALCULATED",
        "last known status",
        "Exit status",
    ] {
        assert!(text.contains(needle), "{needle}: {text}");
    }
}

#[test]
fn check_config_and_a_dry_run_plan_print_the_layout_without_aws() {
    // An endpoint nobody listens on: any AWS call would fail, and none is made.
    let closed = format!("http://127.0.0.1:{}", vantage_testkit::closed_port());
    let (_dir, path) = fleet_file_at(&closed, "offline", "Z0123456789");
    let config = path.to_str().unwrap();
    let out = vantage(&["check-config", config]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "AWS layout of fleet offline (3 replicas, each voting from its own Region; a Region is healthy while 2 of 3 votes say so)",
        "alarm vantage-offline-us-east-1-euw1 in eu-west-1: Vantage/RegionHealthy{Region=us-east-1,Replica=euw1} Minimum < 1 over 60 s",
        "CLOUDWATCH_METRIC health check \"vantage:offline:us-east-1:vote:euw1\" on it, insufficient data: last known status",
        "record \"offline-us-east-1\" uses health check \"vantage:offline:us-east-1:majority\"",
        "lease table offline-lease in ap-southeast-2",
    ] {
        assert!(text.contains(needle), "{needle:?} not in:\n{text}");
    }
    let plan = vantage(&["plan", "--config", config, "--backend", "dry-run"]);
    assert_eq!(plan.status.code(), Some(0), "{plan:?}");
    let text = String::from_utf8_lossy(&plan.stdout);
    assert!(text.contains("AWS layout of fleet offline"), "{text}");
    assert!(
        !text.contains("MISSING"),
        "a dry-run plan reads no AWS: {text}"
    );
}
