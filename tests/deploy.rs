//! `vantage deploy synth` end to end: the templates of the example fleets pass `cfn-lint` and
//! the IAM check, and the example replicas fleet's stacks deploy into moto's CloudFormation
//! (each stack in its own Region, on the network, code bucket and certificate a fixture makes
//! there), reach CREATE_COMPLETE, and `vantage deploy outputs` turns the routing stack into
//! the `[route53.regions.*]` tables whose ids are moto's health checks. moto's CloudFormation
//! skips resource types it does not model (AWS::CloudWatch::Alarm here) with a warning.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use vantage_aggregator::backend::route53::sdk_loader;
use vantage_testkit::moto::{credentials, Moto};

const EXAMPLES: [&str; 3] = ["fleet", "fleet-replicas", "fleet-arc"];
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
    let o = vantage()
        .args(["deploy", "synth", "--config"])
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
    for name in EXAMPLES {
        let out = dir.path().join(name);
        let stacks = synth(&example(name), &out);
        assert!(
            stacks.iter().any(|s| s["kind"] == "routing"),
            "{name}: no routing stack"
        );
        for stack in &stacks {
            let file = out.join(stack["file"].as_str().unwrap());
            let template: Value =
                serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
            let findings = vantage_deploy::iam::check(&template);
            assert!(findings.is_empty(), "{}: {findings:?}", file.display());
            // No rule is suppressed: cfn-lint runs with its defaults.
            let o = Command::new(&lint).arg(&file).output().unwrap();
            assert!(
                o.status.success(),
                "cfn-lint {}:\n{}{}",
                file.display(),
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
        }
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
