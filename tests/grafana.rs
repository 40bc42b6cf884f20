//! `grafana/`, tested for real: the Prometheus rules pass `promtool check rules` and their
//! unit tests (`promtool test rules`); the dashboards type-check against Grafana's published
//! schema (npm `@grafana/schema`, compiled with `tsc`), and a misspelt field fails that check;
//! and against a running local fleet of real processes scraped by a real Prometheus (Debian's),
//! every variable's query returns values and every panel's query returns data for some
//! selection of those values. No Grafana server is involved: there is none to install here,
//! and Prometheus' HTTP API is what Grafana's Prometheus datasource calls.
//!
//! One fleet and one Prometheus for the whole binary: the live checks are one test.

#[path = "grafana/dashboards.rs"]
mod dashboards;
#[path = "grafana/fleet.rs"]
mod fleet;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use vantage_testkit::eventually::wait_for_blocking;
use vantage_testkit::process::require;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(cmd: &mut Command, what: &str) -> (bool, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn prometheus_rules_pass_promtool_check_and_their_unit_tests() {
    let promtool = require(Path::new("/usr/bin/promtool"), "promtool").unwrap();
    let dir = repo().join("grafana/prometheus");
    let (ok, text) = run(
        Command::new(&promtool).current_dir(&dir).args([
            "check",
            "rules",
            "recording.yml",
            "alerts.yml",
        ]),
        "promtool check rules",
    );
    assert!(ok, "promtool check rules:\n{text}");
    assert!(
        text.contains("SUCCESS: 4 rules found") && text.contains("SUCCESS: 7 rules found"),
        "{text}"
    );
    let (ok, text) = run(
        Command::new(&promtool).current_dir(&dir).args([
            "test",
            "rules",
            "recording_test.yml",
            "alerts_test.yml",
        ]),
        "promtool test rules",
    );
    assert!(ok, "promtool test rules:\n{text}");
    assert_eq!(text.matches("SUCCESS").count(), 2, "{text}");
    let (ok, text) = run(
        Command::new(&promtool)
            .current_dir(&dir)
            .args(["check", "config", "prometheus.yml"]),
        "promtool check config",
    );
    assert!(
        ok,
        "promtool check config grafana/prometheus/prometheus.yml:\n{text}"
    );
}

#[test]
fn a_broken_rule_unit_test_fails() {
    // The unit tests can fail: the same alerts with one expected label changed do not pass.
    let promtool = require(Path::new("/usr/bin/promtool"), "promtool").unwrap();
    let src = repo().join("grafana/prometheus");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(src.join("alerts.yml"), dir.path().join("alerts.yml")).unwrap();
    let test = std::fs::read_to_string(src.join("alerts_test.yml")).unwrap();
    let broken = test.replacen("severity: critical", "severity: warning", 1);
    assert_ne!(test, broken);
    std::fs::write(dir.path().join("alerts_test.yml"), broken).unwrap();
    let (ok, text) = run(
        Command::new(promtool)
            .current_dir(dir.path())
            .args(["test", "rules", "alerts_test.yml"]),
        "promtool test rules",
    );
    assert!(!ok, "a wrong expectation passed:\n{text}");
    assert!(text.contains("FAILED"), "{text}");
}

#[test]
fn dashboards_are_what_build_py_writes() {
    let out = tempfile::tempdir().unwrap();
    let script = repo().join("grafana/dashboards/build.py");
    let (ok, text) = run(
        Command::new("python3").arg(&script).arg(out.path()),
        "python3 grafana/dashboards/build.py",
    );
    assert!(ok, "{text}");
    let committed = dashboards::load(&repo().join("grafana/dashboards"));
    let built = dashboards::load(out.path());
    assert_eq!(committed.len(), built.len());
    for (c, b) in committed.iter().zip(&built) {
        assert_eq!(c.file, b.file);
        assert!(
            c.json == b.json,
            "grafana/dashboards/{} differs from what build.py writes: run it and commit",
            c.file
        );
    }
}

/// Where `npm ci` installs `grafana/schema-check`'s pinned packages, once per target dir.
fn schema_checker() -> PathBuf {
    let npm = require(
        Path::new("/usr/bin/npm"),
        "npm (apt-get install -y nodejs npm)",
    )
    .unwrap();
    require(
        Path::new("/usr/bin/node"),
        "node (apt-get install -y nodejs npm)",
    )
    .unwrap();
    let work = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("grafana-schema-check");
    std::fs::create_dir_all(&work).unwrap();
    let src = repo().join("grafana/schema-check");
    let mut changed = false;
    for file in [
        "package.json",
        "package-lock.json",
        "tsconfig.json",
        "dashboard.ts",
    ] {
        let text = std::fs::read(src.join(file)).unwrap();
        if std::fs::read(work.join(file)).ok().as_ref() != Some(&text) {
            std::fs::write(work.join(file), text).unwrap();
            changed = true;
        }
    }
    if changed || !work.join("node_modules/.bin/tsc").is_file() {
        let (ok, text) = run(
            Command::new(npm).current_dir(&work).args([
                "ci",
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
            ]),
            "npm ci",
        );
        assert!(
            ok,
            "npm ci in {} (needs the npm registry):\n{text}",
            work.display()
        );
    }
    work
}

/// Writes one `<name>.check.ts` per dashboard in `work` (removing older ones) and runs `tsc`.
fn type_check(work: &Path, dashboards: &[(String, String)]) -> (bool, String) {
    for entry in std::fs::read_dir(work).unwrap().flatten() {
        if entry.file_name().to_string_lossy().ends_with(".check.ts") {
            std::fs::remove_file(entry.path()).unwrap();
        }
    }
    for (name, json) in dashboards {
        let ts = format!(
            "import type {{ CheckedDashboard }} from './dashboard.js';\n\
             export const d: CheckedDashboard = {json};\n"
        );
        std::fs::write(work.join(format!("{name}.check.ts")), ts).unwrap();
    }
    run(
        Command::new(work.join("node_modules/.bin/tsc"))
            .current_dir(work)
            .args(["-p", "."]),
        "tsc",
    )
}

#[test]
fn dashboards_type_check_against_grafanas_schema_and_a_typo_fails() {
    let work = schema_checker();
    let files: Vec<(String, String)> = dashboards::load(&repo().join("grafana/dashboards"))
        .into_iter()
        .map(|d| {
            let text =
                std::fs::read_to_string(repo().join("grafana/dashboards").join(&d.file)).unwrap();
            (d.file.trim_end_matches(".json").to_owned(), text)
        })
        .collect();
    assert_eq!(files.len(), 5, "five dashboards expected");
    let (ok, text) = type_check(&work, &files);
    assert!(ok, "the dashboards do not match @grafana/schema:\n{text}");

    // A misspelt panel field, a misspelt dashboard field, and a value outside an enum: each
    // alone must fail the same check.
    let (name, json) = &files[0];
    for (from, to) in [
        ("\"gridPos\"", "\"gridPosition\""),
        ("\"schemaVersion\"", "\"schemaVerison\""),
        ("\"drawStyle\": \"line\"", "\"drawStyle\": \"lines\""),
    ] {
        assert!(json.contains(from), "{name} has no {from}");
        let broken = json.replacen(from, to, 1);
        let (ok, text) = type_check(&work, &[(name.clone(), broken)]);
        assert!(!ok, "{name} with {from} -> {to} passed the schema check");
        assert!(text.contains("error TS"), "{text}");
    }
}

/// Panels whose series exist only in set-ups this fleet does not have, and where they are
/// tested instead.
const NEEDS_OTHER_SETUP: [(&str, &str); 3] = [
    (
        "Aurora replication lag",
        "needs an Aurora/PostgreSQL reader check: status-endpoint/tests/postgres.rs",
    ),
    (
        "DynamoDB replication lag",
        "needs DynamoDB heartbeat replicas: status-endpoint/tests/dynamodb_moto.rs",
    ),
    (
        "Lease holder",
        "needs aggregator.replicas and the DynamoDB lease: tests/replicas.rs, aggregator/src/lease/tests.rs",
    ),
];

#[test]
fn every_panel_and_variable_returns_data_from_a_live_fleet() {
    let boards = dashboards::load(&repo().join("grafana/dashboards"));
    let problems: Vec<String> = boards
        .iter()
        .flat_map(|d| d.datasource_problems())
        .collect();
    assert!(problems.is_empty(), "{problems:#?}");
    let titles: Vec<String> = boards
        .iter()
        .flat_map(|d| {
            d.panels()
                .into_iter()
                .map(|p| p["title"].as_str().unwrap_or_default().to_owned())
        })
        .collect();
    for (title, _) in NEEDS_OTHER_SETUP {
        assert!(
            titles.iter().any(|t| t == title),
            "no panel {title:?} any more: update the list"
        );
    }

    let dir = tempfile::tempdir().unwrap();
    let mut fleet = fleet::Fleet::start(dir.path());
    let limit = Duration::from_secs(60);
    let port = fleet.prometheus_port;
    // Prometheus sees every Region in service first ...
    let all_in = format!(
        "count(vantage_region_in_service == 1) == {}",
        fleet::REGIONS.len()
    );
    wait_for_blocking("Prometheus to see every Region in service", limit, || {
        dashboards::instant_query(port, &all_in).is_ok_and(|n| n > 0)
    });
    std::thread::sleep(Duration::from_secs(2));
    // ... then the fault: ap-southeast-1 refuses connections until it is taken out ...
    fleet.fail();
    wait_for_blocking("ap-southeast-1 taken out", limit, || {
        fleet.in_service(fleet::FAILING) == Some(false)
    });
    // ... and comes back once its status endpoint runs. A few scrapes on each side.
    std::thread::sleep(Duration::from_secs(4));
    fleet.recover();
    wait_for_blocking("ap-southeast-1 back in service", limit, || {
        fleet.in_service(fleet::FAILING) == Some(true)
    });
    fleet.send_rejected_reports();
    std::thread::sleep(Duration::from_secs(3));

    // Rates need a few scrapes and the rules a few evaluations: try again for a while, then
    // report every query still without data.
    let mut missing = Vec::new();
    for _ in 0..15 {
        missing = live_problems(port, &boards);
        if missing.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    assert!(missing.is_empty(), "{missing:#?}\n{}", fleet.logs());
}

/// Every variable without values and every query without data, over every dashboard.
fn live_problems(port: u16, boards: &[dashboards::Dashboard]) -> Vec<String> {
    let mut problems = Vec::new();
    for board in boards {
        let selections = match dashboards::selections(port, board) {
            Ok(s) => s,
            Err(e) => {
                problems.extend(e);
                continue;
            }
        };
        for q in board.queries() {
            if NEEDS_OTHER_SETUP.iter().any(|(title, _)| *title == q.what) {
                continue;
            }
            let mut answered = false;
            let mut last = String::new();
            for chosen in &selections {
                let expr = dashboards::substitute(&q.expr, chosen);
                match dashboards::range_query(port, &expr) {
                    Ok(n) if n > 0 => {
                        answered = true;
                        break;
                    }
                    Ok(_) => last = format!("no data for {expr}"),
                    Err(e) => last = format!("{expr}: {e}"),
                }
            }
            if !answered {
                problems.push(format!("{} / {}: {last}", q.dashboard, q.what));
            }
        }
    }
    problems
}
