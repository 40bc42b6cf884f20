//! `vantage deploy synth` end to end: the templates of the example fleets pass `cfn-lint` and
//! the IAM check, and the example replicas fleet's stacks deploy into moto's CloudFormation
//! (each stack in its own Region, on the network, code bucket and certificate a fixture makes
//! there), reach CREATE_COMPLETE, and `vantage deploy outputs` turns the routing stack into
//! the `[route53.regions.*]` tables whose ids are moto's health checks. moto's CloudFormation
//! skips resource types it does not model (AWS::CloudWatch::Alarm here) with a warning. Then a
//! real aggregator and three agents run from a fleet file plus those outputs: no Route 53
//! write on their first passes, and a failed Region changes only its own health and weight.
//! The ARC example's routing stack deploys with RECOVERY_CONTROL checks.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use vantage_aggregator::backend::route53::sdk_loader;
use vantage_testkit::moto::{credentials, Moto};

const EXAMPLES: [&str; 4] = ["fleet", "fleet-services", "fleet-replicas", "fleet-arc"];
const EXAMPLE_ZONE: &str = "Z0123456789ABCDEFGHIJ";

fn vantage() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vantage"));
    cmd.env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env_remove("VANTAGE_CONFIG");
    cmd
}

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("examples/{name}.toml"))
}

/// Synthesises `config` into `out` and returns stacks.json's entries.
fn synth(config: &Path, out: &Path) -> Vec<Value> {
    synth_with(config, out, "lambda")
}

fn synth_with(config: &Path, out: &Path, agents: &str) -> Vec<Value> {
    let o = vantage()
        .args(["deploy", "synth", "--agents", agents, "--config"])
        .arg(config)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "synth: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("stacks.json")).unwrap()).unwrap();
    manifest["stacks"].as_array().unwrap().clone()
}

#[test]
fn every_example_template_passes_cfn_lint_and_the_iam_check() {
    let venv_bin = Moto::moto_server_path()
        .unwrap()
        .parent()
        .unwrap()
        .to_owned();
    let lint = venv_bin.join("cfn-lint");
    assert!(
        lint.exists(),
        "{} is missing: install it with `{}/pip install cfn-lint` (scripts/test.sh does)",
        lint.display(),
        venv_bin.display()
    );
    let dir = tempfile::tempdir().unwrap();
    // The ECS agents of the first example too.
    let runs = EXAMPLES
        .iter()
        .map(|n| (*n, "lambda"))
        .chain([("fleet", "ecs")]);
    for (name, agents) in runs {
        let out = dir.path().join(format!("{name}-{agents}"));
        let stacks = synth_with(&example(name), &out, agents);
        assert!(
            stacks.iter().any(|s| s["kind"] == "routing"),
            "{name}: no routing stack"
        );
        let mut files = Vec::new();
        for stack in &stacks {
            let file = out.join(stack["file"].as_str().unwrap());
            let template: Value =
                serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
            let findings = vantage_deploy::iam::check(&template);
            assert!(findings.is_empty(), "{}: {findings:?}", file.display());
            files.push(file);
        }
        // No rule is suppressed: cfn-lint runs with its defaults, once over every template
        // (its findings name the file).
        let o = Command::new(&lint).args(&files).output().unwrap();
        assert!(
            o.status.success(),
            "cfn-lint {name}-{agents}:\n{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

/// checkov's IAM checks (its own reading of each policy, independent of `iam::check`) pass on
/// every template of every example: no `*` action, no admin policy, no role assumable by all,
/// no unconstrained write, permissions management, privilege escalation, credentials exposure
/// or data exfiltration. checkov lives in a venv of its own (`.venv-checkov`, made by
/// scripts/test.sh) because it pins an older boto3 than moto needs.
#[test]
fn checkovs_iam_checks_pass_on_every_example_template() {
    const IAM_CHECKS: &str = "CKV_AWS_60,CKV_AWS_61,CKV_AWS_62,CKV_AWS_63,CKV_AWS_107,\
                              CKV_AWS_108,CKV_AWS_109,CKV_AWS_110,CKV_AWS_111";
    let venv = std::env::var_os("VANTAGE_CHECKOV_VENV").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-checkov"),
        PathBuf::from,
    );
    let checkov = venv.join("bin/checkov");
    assert!(
        checkov.exists(),
        "{} is missing: python3 -m venv {} && {}/bin/pip install 'checkov==3.*' \
         (scripts/test.sh does)",
        checkov.display(),
        venv.display(),
        venv.display()
    );
    let dir = tempfile::tempdir().unwrap();
    for name in EXAMPLES {
        let out = dir.path().join(name);
        synth(&example(name), &out);
        let o = Command::new(&checkov)
            .args([
                "--framework",
                "cloudformation",
                "--compact",
                "--quiet",
                "--check",
            ])
            .arg(IAM_CHECKS.replace(' ', ""))
            .arg("-d")
            .arg(&out)
            .env("BC_SKIP_MAPPING", "TRUE")
            .output()
            .unwrap();
        let report = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "checkov {name}:\n{report}{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let passed = report
            .lines()
            .find_map(|l| l.strip_prefix("Passed checks: "))
            .and_then(|rest| rest.split(',').next()?.parse::<u32>().ok());
        assert!(
            passed.is_some_and(|n| n > 0) && report.contains("Failed checks: 0,"),
            "checkov {name}: the IAM checks must run and pass:\n{report}"
        );
    }
    // And they can fail: a role allowed every action on every resource is caught.
    let bad = dir.path().join("wildcard");
    std::fs::create_dir_all(&bad).unwrap();
    let role = serde_json::json!({
        "AWSTemplateFormatVersion": "2010-09-09",
        "Resources": {"Role": {"Type": "AWS::IAM::Role", "Properties": {
            "AssumeRolePolicyDocument": {"Version": "2012-10-17", "Statement": [{
                "Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"},
                "Action": "sts:AssumeRole"}]},
            "Policies": [{"PolicyName": "all", "PolicyDocument": {"Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}}]}}}
    });
    std::fs::write(bad.join("wildcard.json"), role.to_string()).unwrap();
    let o = Command::new(&checkov)
        .args([
            "--framework",
            "cloudformation",
            "--compact",
            "--quiet",
            "--check",
        ])
        .arg(IAM_CHECKS.replace(' ', ""))
        .arg("-d")
        .arg(&bad)
        .env("BC_SKIP_MAPPING", "TRUE")
        .output()
        .unwrap();
    assert!(!o.status.success(), "checkov passed a wildcard role");
    assert!(String::from_utf8_lossy(&o.stdout).contains("CKV_AWS_63"));
}

/// `--format yaml` writes the same templates: PyYAML (cfn-lint's own parser) reads each back
/// to exactly the JSON template, and cfn-lint passes on the YAML file too.
#[test]
fn yaml_templates_are_the_json_templates_and_pass_cfn_lint() {
    let venv_bin = Moto::moto_server_path()
        .unwrap()
        .parent()
        .unwrap()
        .to_owned();
    let dir = tempfile::tempdir().unwrap();
    for name in EXAMPLES {
        let json_dir = dir.path().join(format!("{name}-json"));
        let yaml_dir = dir.path().join(format!("{name}-yaml"));
        let stacks = synth(&example(name), &json_dir);
        let o = vantage()
            .args(["deploy", "synth", "--format", "yaml", "--config"])
            .arg(example(name))
            .arg("--out")
            .arg(&yaml_dir)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let mut yaml_files = Vec::new();
        for stack in &stacks {
            let json_file = json_dir.join(stack["file"].as_str().unwrap());
            let yaml_file = yaml_dir.join(format!("{}.yaml", stack["name"].as_str().unwrap()));
            yaml_files.push(yaml_file.clone());
            let template: Value =
                serde_json::from_str(&std::fs::read_to_string(&json_file).unwrap()).unwrap();
            let read = Command::new(venv_bin.join("python"))
                .args([
                    "-c",
                    "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
                ])
                .arg(&yaml_file)
                .output()
                .unwrap();
            assert!(
                read.status.success(),
                "{}",
                String::from_utf8_lossy(&read.stderr)
            );
            let from_yaml: Value = serde_json::from_slice(&read.stdout).unwrap();
            assert_eq!(from_yaml, template, "{}", yaml_file.display());
        }
        let o = Command::new(venv_bin.join("cfn-lint"))
            .args(&yaml_files)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "cfn-lint {name} (YAML):\n{}",
            String::from_utf8_lossy(&o.stdout)
        );
    }
}

/// A request moto answers without checking the signature; the credential scope names the
/// Region, as a signed request's would.
fn moto_json(moto: &Moto, region: &str, service: &str, target: &str, body: &str) -> Value {
    let auth = format!(
        "AWS4-HMAC-SHA256 Credential=test/20260101/{region}/{service}/aws4_request, SignedHeaders=host, Signature=0"
    );
    let r = vantage_testkit::http::exchange_blocking(
        moto.port,
        "POST",
        "/",
        &[
            ("x-amz-target", target),
            ("content-type", "application/x-amz-json-1.1"),
            ("authorization", &auth),
        ],
        body.as_bytes(),
    )
    .unwrap();
    assert_eq!(r.status, 200, "{target}: {}", r.body);
    serde_json::from_str(&r.body).unwrap()
}

/// The VPC, subnets, security group, code bucket (with a zip in it) and certificate a real
/// account would already have in `region`, by their ids.
async fn fixture(moto: &Moto, cf: &aws_sdk_cloudformation::Client, region: &str) -> Value {
    let template = serde_json::json!({
        "Resources": {
            "Vpc": {"Type": "AWS::EC2::VPC", "Properties": {"CidrBlock": "10.0.0.0/16"}},
            "A": {"Type": "AWS::EC2::Subnet", "Properties": {"VpcId": {"Ref": "Vpc"}, "CidrBlock": "10.0.1.0/24"}},
            "B": {"Type": "AWS::EC2::Subnet", "Properties": {"VpcId": {"Ref": "Vpc"}, "CidrBlock": "10.0.2.0/24"}},
            "Sg": {"Type": "AWS::EC2::SecurityGroup", "Properties": {"GroupDescription": "tasks", "VpcId": {"Ref": "Vpc"}}},
            "Code": {"Type": "AWS::S3::Bucket", "Properties": {}},
        },
        "Outputs": {
            "Vpc": {"Value": {"Ref": "Vpc"}}, "A": {"Value": {"Ref": "A"}}, "B": {"Value": {"Ref": "B"}},
            "Sg": {"Value": {"Ref": "Sg"}}, "Code": {"Value": {"Ref": "Code"}},
        },
    });
    let name = format!("fixture-{}", std::process::id());
    let outputs = create(cf, &name, &template.to_string(), Vec::new()).await;
    let mut ids = serde_json::Map::new();
    for (k, v) in outputs {
        ids.insert(k, v.into());
    }
    // Lambda reads the zip from the bucket when the function is created.
    let path = format!(
        "/{}/vantage-lambda-x86_64.zip",
        ids["Code"].as_str().unwrap()
    );
    let r = vantage_testkit::http::exchange_blocking(
        moto.port,
        "PUT",
        &path,
        &[],
        b"PK\x05\x06\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0",
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let cert = moto_json(
        moto,
        region,
        "acm",
        "CertificateManager.RequestCertificate",
        r#"{"DomainName": "aggregator.example.com"}"#,
    );
    ids.insert("Cert".into(), cert["CertificateArn"].clone());
    Value::Object(ids)
}

/// Creates a stack and returns its outputs once it is CREATE_COMPLETE (moto creates stacks
/// synchronously; any other status fails the test with its reason).
async fn create(
    cf: &aws_sdk_cloudformation::Client,
    name: &str,
    body: &str,
    parameters: Vec<(String, String)>,
) -> Vec<(String, String)> {
    use aws_sdk_cloudformation::types::{Capability, Parameter, StackStatus};
    cf.create_stack()
        .stack_name(name)
        .template_body(body)
        .set_parameters(Some(
            parameters
                .into_iter()
                .map(|(k, v)| {
                    Parameter::builder()
                        .parameter_key(k)
                        .parameter_value(v)
                        .build()
                })
                .collect(),
        ))
        .capabilities(Capability::CapabilityNamedIam)
        .send()
        .await
        .unwrap_or_else(|e| panic!("CreateStack {name}: {e:?}"));
    let stack = cf
        .describe_stacks()
        .stack_name(name)
        .send()
        .await
        .unwrap()
        .stacks()[0]
        .clone();
    assert_eq!(
        stack.stack_status(),
        Some(&StackStatus::CreateComplete),
        "{name}: {:?}",
        stack.stack_status_reason()
    );
    stack
        .outputs()
        .iter()
        .map(|o| {
            (
                o.output_key().unwrap().to_owned(),
                o.output_value().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replicas_example_deploys_into_moto_and_its_outputs_are_the_fleet_files_ids() {
    let moto = Moto::shared();
    let sdk = |region: &'static str| async move {
        sdk_loader(Some(&moto.endpoint()), Some(region))
            .credentials_provider(credentials())
            .load()
            .await
    };
    let r53 = aws_sdk_route53::Client::new(&sdk("us-east-1").await);
    let zone = r53
        .create_hosted_zone()
        .name("example.com.")
        .caller_reference(format!("deploy-{}", std::process::id()))
        .send()
        .await
        .unwrap()
        .hosted_zone
        .unwrap()
        .id
        .trim_start_matches("/hostedzone/")
        .to_owned();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("fleet.toml");
    let text = std::fs::read_to_string(example("fleet-replicas")).unwrap();
    std::fs::write(&config, text.replace(EXAMPLE_ZONE, &zone)).unwrap();
    let out = dir.path().join("stacks");
    let stacks = synth(&config, &out);

    let mut fixtures = std::collections::BTreeMap::new();
    for stack in &stacks {
        let region = stack["region"].as_str().unwrap().to_owned();
        let cf = aws_sdk_cloudformation::Client::new(
            &sdk(Box::leak(region.clone().into_boxed_str())).await,
        );
        if !fixtures.contains_key(&region) {
            let f = fixture(moto, &cf, &region).await;
            fixtures.insert(region.clone(), f);
        }
        let f = &fixtures[&region];
        let id = |k: &str| f[k].as_str().unwrap().to_owned();
        let secret = format!("arn:aws:secretsmanager:{region}:123456789012:secret:vantage-keys");
        let values = [
            ("CodeBucket", id("Code")),
            ("AgentKeySecretArn", secret.clone()),
            ("AggregatorKeysSecretArn", secret),
            ("Image", "vantage:test".to_owned()),
            ("SubnetIds", id("A")),
            ("SecurityGroupIds", id("Sg")),
            ("VpcId", id("Vpc")),
            ("LoadBalancerSubnetIds", format!("{},{}", id("A"), id("B"))),
            ("LoadBalancerSecurityGroupIds", id("Sg")),
            ("CertificateArn", id("Cert")),
            // The status endpoint's checked dependencies: the conditional policy statements.
            ("CheckedFunction", "orders-api".to_owned()),
            ("CheckedTables", "rates,orders".to_owned()),
        ];
        let body = std::fs::read_to_string(out.join(stack["file"].as_str().unwrap())).unwrap();
        let template: Value = serde_json::from_str(&body).unwrap();
        let parameters = values
            .iter()
            .filter(|(k, _)| template["Parameters"].get(*k).is_some())
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        create(&cf, stack["name"].as_str().unwrap(), &body, parameters).await;
    }

    let routing = stacks.iter().find(|s| s["kind"] == "routing").unwrap();
    let o = vantage()
        .args([
            "deploy",
            "outputs",
            "--stack",
            routing["name"].as_str().unwrap(),
        ])
        .args(["--endpoint-url", &moto.endpoint()])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "outputs: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let tables: toml::Table = toml::from_str(&String::from_utf8(o.stdout).unwrap()).unwrap();
    let regions = tables["route53"]["regions"].as_table().unwrap();
    assert_eq!(regions.len(), 3);
    let records = r53
        .list_resource_record_sets()
        .hosted_zone_id(&zone)
        .send()
        .await
        .unwrap();
    for (region, ids) in regions {
        let check = ids["health_check_id"].as_str().unwrap();
        // The id is moto's, and the Region's weighted record is guarded by it.
        r53.get_health_check()
            .health_check_id(check)
            .send()
            .await
            .unwrap();
        let record = records
            .resource_record_sets()
            .iter()
            .find(|r| r.set_identifier() == ids["set_identifier"].as_str())
            .unwrap_or_else(|| panic!("no record for {region}"));
        assert_eq!(record.health_check_id(), Some(check));
        assert_eq!(record.weight(), Some(255));
    }
}

/// A Region's latest published health (1 in service, 0 out) in moto's CloudWatch.
async fn health(sdk: &aws_config::SdkConfig, namespace: &str, region: &str) -> Option<f64> {
    use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricStat};
    let cw = aws_sdk_cloudwatch::Client::new(sdk);
    let now = std::time::SystemTime::now();
    let metric = Metric::builder()
        .namespace(namespace)
        .metric_name("RegionHealthy")
        .dimensions(Dimension::builder().name("Region").value(region).build())
        .build();
    let out = cw
        .get_metric_data()
        .metric_data_queries(
            MetricDataQuery::builder()
                .id("h")
                .metric_stat(
                    MetricStat::builder()
                        .metric(metric)
                        .period(60)
                        .stat("Minimum")
                        .build(),
                )
                .build(),
        )
        .start_time((now - std::time::Duration::from_secs(300)).into())
        .end_time((now + std::time::Duration::from_secs(60)).into())
        .send()
        .await
        .ok()?;
    out.metric_data_results().first()?.values().first().copied()
}

async fn weights(
    r53: &aws_sdk_route53::Client,
    zone: &str,
) -> std::collections::BTreeMap<String, i64> {
    r53.list_resource_record_sets()
        .hosted_zone_id(zone)
        .send()
        .await
        .unwrap()
        .resource_record_sets()
        .iter()
        .filter_map(|r| Some((r.set_identifier()?.to_owned(), r.weight()?)))
        .collect()
}

async fn poll<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within 60 s: {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

/// The routing stack made from a fleet file, and a real aggregator run from that fleet file
/// with the ids `vantage deploy outputs` printed: its first pass writes nothing, and a failed
/// Region changes that Region's health and weight, and no other's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aggregator_on_the_routing_stacks_outputs_writes_nothing_until_a_region_fails() {
    use vantage_testkit::process::{free_port, ChildGuard};
    const REGIONS: [&str; 3] = ["us-east-1", "eu-west-1", "ap-southeast-1"];
    const FAILING: &str = "eu-west-1";
    let moto = Moto::shared();
    let sdk = sdk_loader(Some(&moto.endpoint()), Some("us-east-1"))
        .credentials_provider(credentials())
        .load()
        .await;
    let r53 = aws_sdk_route53::Client::new(&sdk);
    let zone = r53
        .create_hosted_zone()
        .name("example.com.")
        .caller_reference(format!("deploy-agg-{}", std::process::id()))
        .send()
        .await
        .unwrap()
        .hosted_zone
        .unwrap()
        .id
        .trim_start_matches("/hostedzone/")
        .to_owned();
    let mut servers = std::collections::BTreeMap::new();
    for r in REGIONS {
        let s = vantage_testkit::server()
            .status(200)
            .body("{\"status\":\"pass\"}")
            .start()
            .await;
        servers.insert(r, Some(s));
    }
    let port = free_port().unwrap();
    let fleet_name = format!("deploy{}", std::process::id());
    let namespace = format!("VantageDeploy{}", std::process::id());
    let mut text = format!(
        "[fleet]\nname = \"{fleet_name}\"\nreport_interval = \"1s\"\n\
         [probe]\ninterval = \"250ms\"\ntimeout = \"1s\"\nconnect_timeout = \"500ms\"\n\
         first_byte_timeout = \"500ms\"\nexpect_status = \"200\"\n\
         [global]\nurl = \"{}\"\n",
        servers["us-east-1"].as_ref().unwrap().url("/status")
    );
    for r in REGIONS {
        text += &format!(
            "[[regions]]\nname = \"{r}\"\nstatus_url = \"{}\"\n[[vantages]]\nregion = \"{r}\"\nkey_id = \"k-{r}\"\n",
            servers[r].as_ref().unwrap().url("/status")
        );
    }
    text += &format!(
        "[aggregator]\nurl = \"http://127.0.0.1:{port}\"\nbackend = \"route53\"\nwindow = \"3s\"\n\
         evaluate_every = \"1s\"\nheartbeat_every = \"2s\"\n[aggregator.keys]\n"
    );
    for r in REGIONS {
        text += &format!("k-{r} = {{ env = \"DEPLOY_TEST_KEY\", vantages = [\"{r}\"] }}\n");
    }
    text += &format!(
        "[agents.auth]\nkey_id = \"k-us-east-1\"\nkey_env = \"DEPLOY_TEST_KEY\"\n\
         [policy]\nrecover_after = 3\n[weights]\nmin_interval = \"2s\"\n\
         [route53]\nhosted_zone_id = \"{zone}\"\nrecord_name = \"api-origin.example.com\"\n\
         endpoint_url = \"{}\"\nmetric_namespace = \"{namespace}\"\n",
        moto.endpoint()
    );
    let dir = tempfile::tempdir().unwrap();
    // What synth reads: the Regions' set identifiers.
    let mut synth_text = text.clone();
    for r in REGIONS {
        synth_text += &format!("[route53.regions.{r}]\nset_identifier = \"{r}\"\n");
    }
    let synth_config = dir.path().join("synth.toml");
    std::fs::write(&synth_config, &synth_text).unwrap();
    let stacks = synth(&synth_config, &dir.path().join("stacks"));
    let routing = stacks.iter().find(|s| s["kind"] == "routing").unwrap();
    let body = std::fs::read_to_string(
        dir.path()
            .join("stacks")
            .join(routing["file"].as_str().unwrap()),
    )
    .unwrap();
    let cf = aws_sdk_cloudformation::Client::new(&sdk);
    // The routing stack names the control stack's role; in moto the role must exist.
    create_aggregator_role(moto, &fleet_name);
    create(&cf, routing["name"].as_str().unwrap(), &body, Vec::new()).await;

    // What the aggregator reads: the same file with the ids the stack's outputs give.
    let o = vantage()
        .args([
            "deploy",
            "outputs",
            "--stack",
            routing["name"].as_str().unwrap(),
        ])
        .args(["--endpoint-url", &moto.endpoint()])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "outputs: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let config = dir.path().join("fleet.toml");
    std::fs::write(&config, text + &String::from_utf8(o.stdout).unwrap()).unwrap();
    let before = weights(&r53, &zone).await;
    assert_eq!(
        before.values().collect::<Vec<_>>(),
        [&255, &255, &255],
        "{before:?}"
    );

    let log = dir.path().join("decisions.jsonl");
    let command = |args: &[&str]| {
        let mut cmd = vantage();
        cmd.args(args)
            .arg("--config")
            .arg(&config)
            .env("DEPLOY_TEST_KEY", "deploy-test-key-0123456789")
            .env("AWS_REGION", "us-east-1")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        cmd
    };
    let mut aggregator = command(&["aggregator"]);
    aggregator
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--decision-log")
        .arg(&log);
    let _aggregator = ChildGuard::spawn("aggregator", &mut aggregator, "TERM").unwrap();
    let mut agents = Vec::new();
    for r in REGIONS {
        let mut cmd = command(&["agent", "--vantage", r]);
        cmd.arg("--spool-dir")
            .arg(dir.path().join(format!("spool-{r}")));
        agents.push(ChildGuard::spawn(&format!("agent {r}"), &mut cmd, "TERM").unwrap());
    }
    let plan_lines = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"plan_applied\"") || l.contains("\"plan_failed\""))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let state = |region: &'static str| {
        let r =
            vantage_testkit::http::exchange_blocking(port, "GET", "/v1/state", &[], b"").ok()?;
        let v: Value = serde_json::from_str(&r.body).ok()?;
        let entry = v["decision"]["regions"]
            .as_array()?
            .iter()
            .find(|e| e["region"] == region)?
            .clone();
        Some((
            entry["verdict"].as_str()?.to_owned(),
            entry["in_service"].as_bool()?,
        ))
    };
    poll("every Region up, health published", async || {
        for r in REGIONS {
            if state(r) != Some(("up".into(), true))
                || health(&sdk, &namespace, r).await != Some(1.0)
            {
                return None;
            }
        }
        Some(())
    })
    .await;
    // Several passes of both planes (evaluate_every 1 s, weights.min_interval 2 s).
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    // No Route 53 write: the records' weights and checks are what the aggregator wants. The
    // health plane's first publication is the metric itself (CloudWatch holds no data point
    // until someone puts one, and CloudFormation cannot), and it says every Region is in.
    for line in plan_lines() {
        let plan: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(plan["event"], "plan_applied", "{line}");
        assert_eq!(
            plan["plane"], "health",
            "a weight write on the first pass: {line}"
        );
        for change in plan["changes"].as_array().unwrap() {
            assert_eq!(change["in_service"], true, "{line}");
        }
    }
    assert_eq!(weights(&r53, &zone).await, before);

    servers.insert(FAILING, None);
    poll("eu-west-1 out, its health 0 and weight 0", async || {
        (health(&sdk, &namespace, FAILING).await == Some(0.0)
            && weights(&r53, &zone).await.get(FAILING) == Some(&0))
        .then_some(())
    })
    .await;
    let after = weights(&r53, &zone).await;
    for r in REGIONS.iter().filter(|r| **r != FAILING) {
        assert_eq!(after[*r], before[*r], "{r}'s weight moved: {after:?}");
        assert_eq!(health(&sdk, &namespace, r).await, Some(1.0), "{r}'s health");
    }
}

/// The control stack's aggregator role, which the routing stack's policy attaches to.
fn create_aggregator_role(moto: &Moto, fleet: &str) {
    let name = format!("vantage-{fleet}-aggregator-us-east-1");
    let body = format!(
        "Action=CreateRole&Version=2010-05-08&RoleName={name}&AssumeRolePolicyDocument=%7B%7D"
    );
    let r = vantage_testkit::http::exchange_blocking(
        moto.port,
        "POST",
        "/",
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            (
                "authorization",
                "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=0",
            ),
        ],
        body.as_bytes(),
    )
    .unwrap();
    assert_eq!(r.status, 200, "CreateRole: {}", r.body);
}

/// The ARC example's routing stack: RECOVERY_CONTROL checks on the fleet's routing controls
/// guard its records, and their ids come back through `vantage deploy outputs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_arc_examples_routing_stack_deploys_with_recovery_control_checks() {
    let moto = Moto::shared();
    let sdk = sdk_loader(Some(&moto.endpoint()), Some("us-east-1"))
        .credentials_provider(credentials())
        .load()
        .await;
    let r53 = aws_sdk_route53::Client::new(&sdk);
    let zone = r53
        .create_hosted_zone()
        .name("example.com.")
        .caller_reference(format!("deploy-arc-{}", std::process::id()))
        .send()
        .await
        .unwrap()
        .hosted_zone
        .unwrap()
        .id
        .trim_start_matches("/hostedzone/")
        .to_owned();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("fleet.toml");
    let text = std::fs::read_to_string(example("fleet-arc")).unwrap();
    std::fs::write(&config, text.replace(EXAMPLE_ZONE, &zone)).unwrap();
    let out = dir.path().join("stacks");
    let stacks = synth(&config, &out);
    let routing = stacks.iter().find(|s| s["kind"] == "routing").unwrap();
    let body = std::fs::read_to_string(out.join(routing["file"].as_str().unwrap())).unwrap();
    let template: Value = serde_json::from_str(&body).unwrap();
    let controls: Vec<&str> = template["Resources"]
        .as_object()
        .unwrap()
        .values()
        .filter(|r| r["Properties"]["HealthCheckConfig"]["Type"] == "RECOVERY_CONTROL")
        .map(|r| {
            r["Properties"]["HealthCheckConfig"]["RoutingControlArn"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(controls.len(), 3, "one per Region");
    assert!(
        controls.iter().all(|arn| text.contains(arn)),
        "{controls:?}"
    );

    create_aggregator_role(moto, "orders-api");
    let cf = aws_sdk_cloudformation::Client::new(&sdk);
    create(&cf, routing["name"].as_str().unwrap(), &body, Vec::new()).await;
    let o = vantage()
        .args([
            "deploy",
            "outputs",
            "--stack",
            routing["name"].as_str().unwrap(),
        ])
        .args(["--endpoint-url", &moto.endpoint()])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "outputs: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let tables: toml::Table = toml::from_str(&String::from_utf8(o.stdout).unwrap()).unwrap();
    let regions = tables["route53"]["regions"].as_table().unwrap();
    assert_eq!(regions.len(), 3);
    for ids in regions.values() {
        let check = ids["health_check_id"].as_str().unwrap();
        let found = r53
            .get_health_check()
            .health_check_id(check)
            .send()
            .await
            .unwrap();
        let kind = found
            .health_check()
            .unwrap()
            .health_check_config()
            .unwrap()
            .r#type();
        assert_eq!(kind.as_str(), "RECOVERY_CONTROL");
    }
}
