//! A local fleet of real `vantage` processes for the dashboard test, scraped by a real
//! Prometheus (Debian's) every second with the rules from `grafana/prometheus/`: three Regions'
//! status endpoints (`vantage status-endpoint`, each with a TCP dependency check), one
//! aggregator (dry-run backend), two agents (us-east-1, eu-west-1), each with `/metrics`.
//!
//! The fault: [`Fleet::fail`] stops ap-southeast-1's status endpoint, both vantages see it
//! refuse connections and the aggregator takes the Region out; [`Fleet::recover`] starts it
//! again, and the Region comes back. Both transitions happen before the panels are queried.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use vantage_testkit::http::exchange_blocking;
use vantage_testkit::process::{free_port, require, ChildGuard};

pub const SERVICE: &str = "orders-api";
pub const REGIONS: [&str; 3] = ["us-east-1", "eu-west-1", "ap-southeast-1"];
pub const FAILING: &str = "ap-southeast-1";
const VANTAGES: [(&str, &str, &str); 2] = [
    ("us-east-1", "k-use1", "grafana-test-key-use1-0123456789"),
    ("eu-west-1", "k-euw1", "grafana-test-key-euw1-0123456789"),
];
const START_WITHIN: Duration = Duration::from_secs(30);

pub struct Fleet {
    dir: PathBuf,
    /// The status endpoints' ports, in [`REGIONS`] order.
    status_ports: Vec<u16>,
    aggregator_port: u16,
    pub prometheus_port: u16,
    children: Vec<ChildGuard>,
    /// The failing Region's status endpoint while it runs.
    failing: Option<ChildGuard>,
}

/// `vantage ARGS` with stderr into `DIR/<log>`, no VANTAGE_* settings from the environment.
fn vantage(dir: &Path, log: &str, args: &[&str], env: &[(&str, &str)]) -> ChildGuard {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vantage"));
    cmd.args(args)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join(log)).expect("log file"));
    for (k, _) in std::env::vars() {
        if k.starts_with("VANTAGE_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("VANTAGE_LOG", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    ChildGuard::spawn(log, &mut cmd, "TERM").expect("start vantage")
}

/// GET `path` on 127.0.0.1:`port`; the JSON body of a 200, else `None`.
pub fn get_json(port: u16, path: &str) -> Option<Value> {
    let answer = exchange_blocking(port, "GET", path, &[], b"").ok()?;
    (answer.status == 200).then(|| answer.json())
}

fn wait_listening(child: &mut ChildGuard, port: u16, dir: &Path, log: &str) {
    child
        .wait_until(START_WITHIN, || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        })
        .unwrap_or_else(|e| {
            let text = std::fs::read_to_string(dir.join(log)).unwrap_or_default();
            panic!("{log}: {e}\n{text}")
        });
}

impl Fleet {
    pub fn start(dir: &Path) -> Fleet {
        let prometheus = require(Path::new("/usr/bin/prometheus"), "prometheus").unwrap();
        let status_ports: Vec<u16> = REGIONS.iter().map(|_| free_port().unwrap()).collect();
        let aggregator_port = free_port().unwrap();
        let aggregator_metrics = free_port().unwrap();
        let agent_metrics: Vec<u16> = VANTAGES.iter().map(|_| free_port().unwrap()).collect();
        let prometheus_port = free_port().unwrap();
        let mut fleet = Fleet {
            dir: dir.to_owned(),
            status_ports,
            aggregator_port,
            prometheus_port,
            children: Vec::new(),
            failing: None,
        };

        // Prometheus first, so it sees every series from its first value (the failing
        // Region's in-service gauge going from 1 to 0 included).
        let targets = |ports: &[u16]| {
            ports
                .iter()
                .map(|p| format!("\"127.0.0.1:{p}\""))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("grafana/prometheus");
        let mut config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {}\n  - {}\n\
             scrape_configs:\n\
             \x20 - job_name: vantage-agent\n    static_configs:\n      - targets: [{}]\n\
             \x20 - job_name: vantage-aggregator\n    static_configs:\n      - targets: [{}]\n\
             \x20 - job_name: vantage-status-endpoint\n    static_configs:\n",
            rules.join("recording.yml").display(),
            rules.join("alerts.yml").display(),
            targets(&agent_metrics),
            targets(&[aggregator_metrics]),
        );
        for (region, port) in REGIONS.iter().zip(&fleet.status_ports) {
            config.push_str(&format!(
                "      - targets: [\"127.0.0.1:{port}\"]\n        labels: {{ service: {SERVICE}, region: {region} }}\n"
            ));
        }
        let config_file = dir.join("prometheus.yml");
        std::fs::write(&config_file, config).unwrap();
        let mut cmd = Command::new(prometheus);
        cmd.arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prometheus_port}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap());
        let mut prometheus = ChildGuard::spawn("prometheus", &mut cmd, "TERM").unwrap();
        prometheus
            .wait_until(START_WITHIN, || {
                exchange_blocking(prometheus_port, "GET", "/-/ready", &[], b"")
                    .is_ok_and(|a| a.status == 200)
            })
            .unwrap_or_else(|e| panic!("prometheus: {e}\n{}", fleet.log("prometheus.log")));
        fleet.children.push(prometheus);
        for i in 0..REGIONS.len() {
            fleet.start_status_endpoint(i);
        }

        let fleet_file = dir.join("fleet.toml");
        std::fs::write(&fleet_file, fleet.fleet_toml()).unwrap();
        let config = fleet_file.to_str().unwrap().to_owned();
        let listen = format!("127.0.0.1:{aggregator_port}");
        let metrics = format!("127.0.0.1:{aggregator_metrics}");
        let keys: Vec<(String, String)> = VANTAGES
            .iter()
            .map(|(_, id, key)| (key_env(id), (*key).to_owned()))
            .collect();
        let key_env: Vec<(&str, &str)> =
            keys.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut aggregator = vantage(
            dir,
            "aggregator.log",
            &[
                "aggregator",
                "--config",
                &config,
                "--listen",
                &listen,
                "--metrics-listen",
                &metrics,
                "--backend",
                "dry-run",
            ],
            &key_env,
        );
        wait_listening(&mut aggregator, aggregator_port, dir, "aggregator.log");
        fleet.children.push(aggregator);

        for ((region, _, key), port) in VANTAGES.iter().zip(&agent_metrics) {
            let log = format!("agent-{region}.log");
            let spool = dir.join(format!("spool-{region}"));
            let metrics = format!("127.0.0.1:{port}");
            let mut agent = vantage(
                dir,
                &log,
                &[
                    "agent",
                    "--config",
                    &config,
                    "--vantage",
                    region,
                    "--metrics-listen",
                    &metrics,
                    "--spool-dir",
                    spool.to_str().unwrap(),
                ],
                &[("VANTAGE_AGENT_KEY", key)],
            );
            wait_listening(&mut agent, *port, dir, &log);
            fleet.children.push(agent);
        }

        fleet
    }

    fn fleet_toml(&self) -> String {
        let status =
            |i: usize, path: &str| format!("http://127.0.0.1:{}{path}", self.status_ports[i]);
        let mut t = format!(
            "[fleet]\nname = \"{SERVICE}\"\nreport_interval = \"1s\"\n\
             [probe]\ninterval = \"250ms\"\n\
             [global]\nurl = \"{}\"\n\
             [aggregator]\nurl = \"http://127.0.0.1:{}\"\nwindow = \"3s\"\nevaluate_every = \"1s\"\n\
             [aggregator.keys]\n",
            status(0, "/status"),
            self.aggregator_port
        );
        for (region, id, _) in VANTAGES {
            t.push_str(&format!(
                "{id} = {{ env = \"{}\", vantages = [\"{region}\"] }}\n",
                key_env(id)
            ));
        }
        t.push_str(
            "[agents.auth]\nkey_id = \"k-use1\"\n[policy]\nfail_after = 2\nrecover_after = 2\n",
        );
        for (i, region) in REGIONS.iter().enumerate() {
            t.push_str(&format!(
                "[[regions]]\nname = \"{region}\"\nstatus_url = \"{}\"\ndeep_url = \"{}\"\n",
                status(i, "/status"),
                status(i, "/status/deep")
            ));
        }
        for (region, id, _) in VANTAGES {
            t.push_str(&format!(
                "[[vantages]]\nregion = \"{region}\"\nkey_id = \"{id}\"\n"
            ));
        }
        t
    }

    /// Starts Region `i`'s status endpoint, with one TCP dependency check (the aggregator's
    /// port, which is always open).
    fn start_status_endpoint(&mut self, i: usize) {
        let region = REGIONS[i];
        let port = self.status_ports[i];
        let config = self.dir.join(format!("status-{region}.toml"));
        std::fs::write(
            &config,
            format!(
                "region = \"{region}\"\nservice_id = \"{SERVICE}\"\nlisten = \"127.0.0.1:{port}\"\n\
                 cache_ttl = \"1s\"\n[[tcp]]\nname = \"aggregator\"\naddress = \"127.0.0.1:{}\"\n",
                self.aggregator_port
            ),
        )
        .unwrap();
        let log = format!("status-{region}.log");
        let mut child = vantage(
            &self.dir,
            &log,
            &["status-endpoint", "--config", config.to_str().unwrap()],
            &[],
        );
        wait_listening(&mut child, port, &self.dir, &log);
        if region == FAILING {
            self.failing = Some(child);
        } else {
            self.children.push(child);
        }
    }

    /// Stops the failing Region's status endpoint: its probes are refused from now on.
    pub fn fail(&mut self) {
        if let Some(mut child) = self.failing.take() {
            child.stop();
        }
    }

    /// Starts the failing Region's status endpoint again: its probes succeed from now on.
    pub fn recover(&mut self) {
        let i = REGIONS.iter().position(|r| *r == FAILING).unwrap();
        self.start_status_endpoint(i);
    }

    /// The aggregator's decision for `region`: in service or not, once it has one.
    pub fn in_service(&self, region: &str) -> Option<bool> {
        let state = get_json(self.aggregator_port, "/v1/state")?;
        state["decision"]["regions"]
            .as_array()?
            .iter()
            .find(|r| r["region"] == region)?["in_service"]
            .as_bool()
    }

    /// Two reports the aggregator must refuse (no signature): the rejection counter's series
    /// appears with the first and grows with the second, so `increase()` sees it.
    pub fn send_rejected_reports(&self) {
        for _ in 0..2 {
            let answer = exchange_blocking(self.aggregator_port, "POST", "/v1/reports", &[], b"{}")
                .expect("POST /v1/reports");
            assert!(answer.status >= 400, "an unsigned report was accepted");
            std::thread::sleep(Duration::from_millis(1500));
        }
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }

    /// Every process' log, for a failure message.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for entry in std::fs::read_dir(&self.dir).unwrap().flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "log") {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                out.push_str(&format!("--- {}\n", path.display()));
                for line in tail.into_iter().rev() {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        out
    }
}

fn key_env(id: &str) -> String {
    format!(
        "GRAFANA_TEST_KEY_{}",
        id.trim_start_matches("k-").to_uppercase()
    )
}
