//! Three aggregator replicas as they run in production, on one machine: real `vantage`
//! processes (three agents, three aggregators each started with `--replica`), fake Regions on
//! loopback, and Route 53, CloudWatch and DynamoDB in moto, laid out by
//! `vantage aggregator bootstrap`. moto evaluates no alarms or health checks, so "out by
//! majority" is checked where Route 53 would read it: each replica's vote (the health metric
//! with its `Replica` dimension, in its own Region's CloudWatch), counted as the CALCULATED
//! check counts its children.

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};
use vantage_aggregator::backend::route53::sdk_loader;
use vantage_testkit::moto::{credentials, Moto};
use vantage_testkit::partition::Partition;
use vantage_testkit::process::{free_port, ChildGuard};
use vantage_testkit::{server, TestServer};

const REGIONS: [&str; 3] = ["us-east-1", "eu-west-1", "ap-southeast-1"];
const REPLICAS: [(&str, &str); 3] = [
    ("use1", "us-east-1"),
    ("euw1", "eu-west-1"),
    ("apse1", "ap-southeast-1"),
];
const KEY: &str = "replicas-test-key-0123456789";
const RECORD: &str = "api-origin.example.com.";
const METRIC: &str = "RegionHealthy";
const FAILING: &str = "eu-west-1";

fn unique(tag: &str) -> String {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{tag}-{}-{n}", std::process::id())
}

async fn sdk(moto: &Moto, region: &str) -> aws_config::SdkConfig {
    sdk_loader(Some(&moto.endpoint()), Some(region))
        .credentials_provider(credentials())
        .load()
        .await
}

/// A fleet of real processes: the Regions are fake status servers (dropping one fails it).
struct Fleet {
    moto: &'static Moto,
    dir: tempfile::TempDir,
    config: PathBuf,
    zone: String,
    namespace: String,
    regions: BTreeMap<&'static str, Option<TestServer>>,
    /// Per replica: its API port and its process (None while stopped).
    aggregators: Vec<(u16, Option<ChildGuard>)>,
    _agents: Vec<ChildGuard>,
    /// In front of the last replica when the test partitions it from the agents.
    partition: Option<Partition>,
}

impl Fleet {
    async fn start(partitioned_last: bool) -> Fleet {
        let moto = Moto::shared();
        let dir = tempfile::Builder::new()
            .prefix("vantage-replicas-")
            .tempdir()
            .unwrap();
        let r53 = aws_sdk_route53::Client::new(&sdk(moto, "us-east-1").await);
        // Zones may share a name (each test has its own, by id); the records live under it.
        let name = "example.com.".to_owned();
        let zone = r53
            .create_hosted_zone()
            .name(&name)
            .caller_reference(unique("zone"))
            .send()
            .await
            .unwrap()
            .hosted_zone
            .unwrap()
            .id
            .trim_start_matches("/hostedzone/")
            .to_owned();
        use aws_sdk_route53::types::{
            Change, ChangeAction, ChangeBatch, ResourceRecord, ResourceRecordSet, RrType,
        };
        let changes = REGIONS
            .iter()
            .map(|r| {
                let set = ResourceRecordSet::builder()
                    .name(RECORD)
                    .r#type(RrType::Cname)
                    .set_identifier(*r)
                    .weight(100)
                    .ttl(60)
                    .resource_records(
                        ResourceRecord::builder()
                            .value(format!("{r}.origin.example.net"))
                            .build()
                            .unwrap(),
                    )
                    .build()
                    .unwrap();
                Change::builder()
                    .action(ChangeAction::Create)
                    .resource_record_set(set)
                    .build()
                    .unwrap()
            })
            .collect();
        r53.change_resource_record_sets()
            .hosted_zone_id(&zone)
            .change_batch(
                ChangeBatch::builder()
                    .set_changes(Some(changes))
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();

        let mut regions = BTreeMap::new();
        for r in REGIONS {
            regions.insert(
                r,
                Some(
                    server()
                        .status(200)
                        .body("{\"status\":\"pass\"}")
                        .start()
                        .await,
                ),
            );
        }
        let ports: Vec<u16> = REPLICAS.iter().map(|_| free_port().unwrap()).collect();
        let partition = if partitioned_last {
            let target = format!("127.0.0.1:{}", ports[2]).parse().unwrap();
            Some(Partition::start(target).await.unwrap())
        } else {
            None
        };
        let url_of = |i: usize| match (&partition, i) {
            (Some(p), 2) => p.url(),
            _ => format!("http://127.0.0.1:{}", ports[i]),
        };
        let namespace = unique("Vantage");
        let mut text = format!(
            "[fleet]\nname = \"{}\"\nreport_interval = \"1s\"\n\
             [probe]\ninterval = \"250ms\"\ntimeout = \"1s\"\nconnect_timeout = \"500ms\"\n\
             first_byte_timeout = \"500ms\"\nexpect_status = \"200\"\n\
             [global]\nurl = \"{}\"\n",
            unique("replicas"),
            regions["us-east-1"].as_ref().unwrap().url("/status"),
        );
        for r in REGIONS {
            text += &format!(
                "[[regions]]\nname = \"{r}\"\nstatus_url = \"{}\"\n",
                regions[r].as_ref().unwrap().url("/status")
            );
        }
        for r in REGIONS {
            text += &format!("[[vantages]]\nregion = \"{r}\"\nkey_id = \"k-{r}\"\n");
        }
        text += "[aggregator]\nreplicas = [\n";
        for (i, (id, region)) in REPLICAS.iter().enumerate() {
            text += &format!(
                "  {{ id = \"{id}\", region = \"{region}\", url = \"{}\" }},\n",
                url_of(i)
            );
        }
        text += &format!(
            "]\nbackend = \"route53\"\nwindow = \"3s\"\nevaluate_every = \"1s\"\nheartbeat_every = \"2s\"\n\
             [aggregator.lease]\ntable = \"{}\"\nendpoint_url = \"{}\"\nduration = \"6s\"\nmax_clock_skew = \"1s\"\n\
             [aggregator.keys]\n",
            unique("lease"),
            moto.endpoint()
        );
        for r in REGIONS {
            text += &format!("k-{r} = {{ env = \"REPLICAS_TEST_KEY\", vantages = [\"{r}\"] }}\n");
        }
        text += &format!(
            "[agents.auth]\nkey_id = \"k-us-east-1\"\nkey_env = \"REPLICAS_TEST_KEY\"\n\
             [policy]\nrecover_after = 3\n[weights]\nmin_interval = \"2s\"\n\
             [route53]\nhosted_zone_id = \"{zone}\"\nrecord_name = \"{RECORD}\"\n\
             endpoint_url = \"{}\"\nmetric_namespace = \"{namespace}\"\n",
            moto.endpoint()
        );
        for r in REGIONS {
            text += &format!("[route53.regions.{r}]\nset_identifier = \"{r}\"\n");
        }
        let config = dir.path().join("fleet.toml");
        std::fs::write(&config, &text).unwrap();

        let mut fleet = Fleet {
            moto,
            dir,
            config,
            zone,
            namespace,
            regions,
            aggregators: ports.iter().map(|p| (*p, None)).collect(),
            _agents: Vec::new(),
            partition,
        };
        let out = fleet
            .command(&["aggregator", "bootstrap", "--config"])
            .arg(&fleet.config)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "bootstrap: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for i in 0..REPLICAS.len() {
            fleet.start_replica(i);
        }
        for r in REGIONS {
            let spool = fleet.dir.path().join(format!("spool-{r}"));
            let mut cmd = fleet.command(&["agent", "--vantage", r, "--config"]);
            cmd.arg(&fleet.config).arg("--spool-dir").arg(spool);
            fleet
                ._agents
                .push(ChildGuard::spawn(&format!("agent {r}"), &mut cmd, "TERM").unwrap());
        }
        fleet
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vantage"));
        cmd.args(args)
            .env("REPLICAS_TEST_KEY", KEY)
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1")
            .env_remove("VANTAGE_CONFIG")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        cmd
    }

    fn log_path(&self, i: usize) -> PathBuf {
        self.dir
            .path()
            .join(format!("decisions-{}.jsonl", REPLICAS[i].0))
    }

    fn start_replica(&mut self, i: usize) {
        let (port, _) = self.aggregators[i];
        let state = self
            .dir
            .path()
            .join(format!("state-{}.json", REPLICAS[i].0));
        let mut cmd = self.command(&["aggregator", "--replica", REPLICAS[i].0, "--config"]);
        cmd.arg(&self.config)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--state-file")
            .arg(state)
            .arg("--decision-log")
            .arg(self.log_path(i));
        let name = format!("aggregator {}", REPLICAS[i].0);
        self.aggregators[i].1 = Some(ChildGuard::spawn(&name, &mut cmd, "TERM").unwrap());
    }

    /// Stops replica `i` the hard way (a lost Region), or with SIGTERM.
    fn stop_replica(&mut self, i: usize, signal: &str) {
        if let Some(mut child) = self.aggregators[i].1.take() {
            child.signal(signal);
            child.stop();
        }
    }

    fn state(&self, i: usize) -> Option<Value> {
        let port = self.aggregators[i].0;
        let r =
            vantage_testkit::http::exchange_blocking(port, "GET", "/v1/state", &[], b"").ok()?;
        (r.status == 200).then(|| serde_json::from_str(&r.body).ok())?
    }

    /// `region`'s decision in replica `i`'s state: (verdict, in_service).
    fn verdict(&self, i: usize, region: &str) -> Option<(String, bool)> {
        let state = self.state(i)?;
        let r = state["decision"]["regions"]
            .as_array()?
            .iter()
            .find(|r| r["region"] == region)?
            .clone();
        Some((
            r["verdict"].as_str()?.to_owned(),
            r["in_service"].as_bool()?,
        ))
    }

    fn lease_held(&self, i: usize) -> bool {
        self.state(i)
            .is_some_and(|s| s["lease"]["held"].as_bool() == Some(true))
    }

    /// The decision-log events of replica `i` of kind `event` for `region`.
    fn events(&self, i: usize, event: &str, region: &str) -> usize {
        std::fs::read_to_string(self.log_path(i))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| e["event"] == event && e["region"] == region)
            .count()
    }

    /// Replica `i`'s latest published vote for `region` in its own Region's CloudWatch.
    async fn vote(&self, i: usize, region: &str) -> Option<f64> {
        use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricStat};
        let (id, home) = REPLICAS[i];
        let cw = aws_sdk_cloudwatch::Client::new(&sdk(self.moto, home).await);
        let now = SystemTime::now();
        let metric = Metric::builder()
            .namespace(&self.namespace)
            .metric_name(METRIC)
            .dimensions(Dimension::builder().name("Region").value(region).build())
            .dimensions(Dimension::builder().name("Replica").value(id).build())
            .build();
        let out = cw
            .get_metric_data()
            .metric_data_queries(
                MetricDataQuery::builder()
                    .id("v")
                    .metric_stat(
                        MetricStat::builder()
                            .metric(metric)
                            .period(60)
                            .stat("Minimum")
                            .build(),
                    )
                    .build(),
            )
            .start_time((now - Duration::from_secs(300)).into())
            .end_time((now + Duration::from_secs(60)).into())
            .send()
            .await
            .ok()?;
        let result = out.metric_data_results().first()?.clone();
        result.values().first().copied()
    }

    /// The weighted record's weight for `region` in Route 53.
    async fn weight(&self, region: &str) -> Option<i64> {
        let r53 = aws_sdk_route53::Client::new(&sdk(self.moto, "us-east-1").await);
        let out = r53
            .list_resource_record_sets()
            .hosted_zone_id(&self.zone)
            .send()
            .await
            .ok()?;
        out.resource_record_sets()
            .iter()
            .find(|r| r.set_identifier() == Some(region))
            .and_then(|r| r.weight())
    }

    /// Fails a Region: its status server stops answering.
    fn fail_region(&mut self, region: &str) {
        self.regions
            .insert(REGIONS.iter().find(|r| **r == region).unwrap(), None);
    }

    fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// Polls `check` every 250 ms for at most `limit`.
async fn eventually<T>(
    limit: Duration,
    what: &str,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {limit:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn all_up(fleet: &Fleet, replicas: &[usize]) {
    for &i in replicas {
        eventually(
            Duration::from_secs(40),
            "every Region up at every replica",
            async || {
                REGIONS
                    .iter()
                    .all(|r| fleet.verdict(i, r) == Some(("up".into(), true)))
                    .then_some(())
            },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_goes_out_by_majority_and_survives_losing_the_lease_holder() {
    let mut fleet = Fleet::start(false).await;
    all_up(&fleet, &[0, 1, 2]).await;
    let holder = eventually(
        Duration::from_secs(20),
        "one replica holds the lease",
        async || {
            let holders: Vec<usize> = (0..3).filter(|i| fleet.lease_held(*i)).collect();
            (holders.len() == 1).then(|| holders[0])
        },
    )
    .await;
    let survivors: Vec<usize> = (0..3).filter(|i| *i != holder).collect();

    // eu-west-1 fails, and the lease holder's Region is lost with it.
    fleet.fail_region(FAILING);
    fleet.stop_replica(holder, "KILL");
    for &i in &survivors {
        eventually(
            Duration::from_secs(20),
            "the survivors take eu-west-1 out",
            async || (fleet.verdict(i, FAILING).map(|v| v.1) == Some(false)).then_some(()),
        )
        .await;
        eventually(
            Duration::from_secs(20),
            "the survivors vote it out",
            async || (fleet.vote(i, FAILING).await == Some(0.0)).then_some(()),
        )
        .await;
    }
    // Two of three votes: the CALCULATED check (threshold 2) turns unhealthy, whatever the dead
    // replica's frozen vote says.
    let out_votes = {
        let mut n = 0;
        for &i in &survivors {
            if fleet.vote(i, FAILING).await == Some(0.0) {
                n += 1;
            }
        }
        n
    };
    assert!(out_votes >= 2, "{out_votes} votes out of 3");

    // Weights resume at a new holder once the dead holder's lease expires (6 s + 1 s skew).
    eventually(
        Duration::from_secs(30),
        "a survivor takes the lease",
        async || survivors.iter().any(|i| fleet.lease_held(*i)).then_some(()),
    )
    .await;
    eventually(
        Duration::from_secs(30),
        "eu-west-1's weight goes to 0",
        async || (fleet.weight(FAILING).await == Some(0)).then_some(()),
    )
    .await;

    // A survivor restarted mid-incident keeps the Region out from its state file.
    let restarted = survivors[0];
    fleet.stop_replica(restarted, "TERM");
    fleet.start_replica(restarted);
    let kept = eventually(
        Duration::from_secs(20),
        "the restarted replica answers",
        async || fleet.verdict(restarted, FAILING),
    )
    .await;
    assert!(!kept.1, "restarted replica put eu-west-1 back: {kept:?}");

    // Nothing flapped: one take-out per survivor, no put-back while it fails.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for &i in &survivors {
        assert_eq!(
            fleet.events(i, "region_out", FAILING),
            1,
            "replica {}",
            REPLICAS[i].0
        );
        assert_eq!(
            fleet.events(i, "region_in", FAILING),
            0,
            "replica {}",
            REPLICAS[i].0
        );
        for r in REGIONS.iter().filter(|r| **r != FAILING) {
            assert_eq!(
                fleet.events(i, "region_out", r),
                0,
                "{r} at {}",
                REPLICAS[i].0
            );
        }
    }
    let _ = fleet.dir();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_cut_off_from_the_agents_never_moves_a_region() {
    let mut fleet = Fleet::start(true).await;
    all_up(&fleet, &[0, 1, 2]).await;
    fleet.partition.as_ref().unwrap().cut();
    fleet.fail_region(FAILING);
    for i in [0, 1] {
        eventually(
            Duration::from_secs(20),
            "the connected replicas take eu-west-1 out",
            async || (fleet.verdict(i, FAILING).map(|v| v.1) == Some(false)).then_some(()),
        )
        .await;
    }
    // The cut-off replica has no evidence: unknown, and no data never moves a Region.
    eventually(
        Duration::from_secs(20),
        "the cut-off replica sees nothing",
        async || (fleet.verdict(2, FAILING) == Some(("unknown".into(), true))).then_some(()),
    )
    .await;
    let mut out = 0;
    for i in 0..3 {
        if fleet.vote(i, FAILING).await == Some(0.0) {
            out += 1;
        }
    }
    assert_eq!(out, 2, "two of three votes out: the majority decides");
    for r in REGIONS {
        assert_eq!(
            fleet.events(2, "region_out", r),
            0,
            "false transition of {r}"
        );
        assert_eq!(
            fleet.events(2, "region_in", r),
            0,
            "false transition of {r}"
        );
    }
    // Healed, it catches up from the agents' spools and agrees.
    fleet.partition.as_ref().unwrap().heal();
    eventually(
        Duration::from_secs(30),
        "the healed replica agrees",
        async || (fleet.verdict(2, FAILING).map(|v| v.1) == Some(false)).then_some(()),
    )
    .await;
}
