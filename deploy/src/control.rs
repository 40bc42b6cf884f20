//! The `control` stack, one per AWS Region an aggregator runs in (each replica's, or the one
//! aggregator's): the aggregator as an ECS Fargate service behind an Application Load Balancer
//! whose HTTPS listener holds the certificate (agents and operators reach it by TLS; the task
//! serves plain HTTP inside the VPC), its state file on an EFS volume when one is given, the
//! CloudWatch alarms on the health votes this Region's voter publishes (alarms live where
//! their metric is), and in the lease's Region the DynamoDB lease table. The task role may
//! publish to the fleet's metric namespace and use the lease item's table; the Route 53 part
//! of its policy is in the routing stack, which knows the records and health checks.

use crate::cfn::{self, get_att, if_else, no_value, r#ref, sub, Template};
use crate::{dns_safe, iam, stack_name, Stack, StackKind};
use serde_json::{json, Value};
use vantage_aggregator::backend::route53::layout::{
    Layout, ALARM_EVALUATION_PERIODS, ALARM_PERIOD_SECS, ALARM_THRESHOLD, ALARM_TREAT_MISSING_DATA,
};
use vantage_protocol::config::FleetConfig;

/// Where the aggregator image expects the fleet file (see deploy/README.md).
pub const FLEET_FILE_IN_IMAGE: &str = "/etc/vantage/fleet.toml";
/// The aggregator's port inside the task (the listener terminates TLS on 443).
pub const AGGREGATOR_PORT: u16 = 8080;
const STATE_DIR: &str = "/var/lib/vantage";

/// One Fargate task and its service.
pub(crate) struct Task<'a> {
    pub fleet: &'a str,
    pub part: &'a str,
    /// Names the cluster, the log group and the container.
    pub name: &'a str,
    pub command: Vec<String>,
    pub environment: Vec<Value>,
    /// `{"Name", "ValueFrom"}` entries for the container.
    pub secrets: Vec<Value>,
    /// The secrets the execution role may read.
    pub secret_arns: Vec<Value>,
    /// The container port a load balancer forwards to.
    pub port: Option<u16>,
    /// A state volume at [`STATE_DIR`] (EFS when `StateFileSystemId` is set).
    pub volume: bool,
}

/// The role name the routing stack attaches the aggregator's Route 53 policy to.
pub fn aggregator_role_name(fleet: &FleetConfig, aws_region: &str) -> String {
    let name = format!(
        "vantage-{}-aggregator-{aws_region}",
        dns_safe(fleet.fleet.name.get_ref())
    );
    // IAM role names hold 64 characters.
    name.chars().take(64).collect()
}

/// A cluster, a Fargate task definition, its roles and log group, and a service of one task,
/// with the network parameters `SubnetIds`, `SecurityGroupIds` and the `Image` parameter.
pub(crate) fn fargate_service(t: &mut Template, task: &Task<'_>, task_statements: Vec<Value>) {
    fargate_service_with_role(t, task, task_statements, None);
}

fn fargate_service_with_role(
    t: &mut Template,
    task: &Task<'_>,
    task_statements: Vec<Value>,
    role_name: Option<String>,
) {
    t.parameter(
        "Image",
        "String",
        "The vantage container image (deploy/Dockerfile)",
        None,
    );
    t.parameter(
        "SubnetIds",
        "List<AWS::EC2::Subnet::Id>",
        "Private subnets for the tasks (with a NAT gateway or VPC endpoints to reach AWS)",
        None,
    );
    t.parameter(
        "SecurityGroupIds",
        "List<AWS::EC2::SecurityGroup::Id>",
        "Security groups of the tasks",
        None,
    );
    let log_group = format!("/ecs/{}", task.name);
    t.resource(
        "Cluster",
        "AWS::ECS::Cluster",
        json!({"ClusterName": task.name, "Tags": cfn::tags(task.fleet, task.part)}),
    );
    t.resource(
        "LogGroup",
        "AWS::Logs::LogGroup",
        json!({"LogGroupName": log_group, "RetentionInDays": 30}),
    );
    let mut execution = vec![iam::allow(
        &["logs:CreateLogStream", "logs:PutLogEvents"],
        json!([sub(&format!("arn:${{AWS::Partition}}:logs:${{AWS::Region}}:${{AWS::AccountId}}:log-group:{log_group}:*"))]),
    )];
    if !task.secret_arns.is_empty() {
        execution.push(iam::allow(
            &["secretsmanager:GetSecretValue"],
            json!(task.secret_arns),
        ));
    }
    t.resource(
        "ExecutionRole",
        "AWS::IAM::Role",
        json!({
            "AssumeRolePolicyDocument": iam::assume_role("ecs-tasks.amazonaws.com"),
            // Image pulls from ECR (AWS's managed policy: its GetAuthorizationToken has no resource).
            "ManagedPolicyArns": [sub("arn:${AWS::Partition}:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy")],
            "Policies": [{"PolicyName": "execution", "PolicyDocument": iam::document(execution)}],
            "Tags": cfn::tags(task.fleet, task.part),
        }),
    );
    let mut role = json!({
        "AssumeRolePolicyDocument": iam::assume_role("ecs-tasks.amazonaws.com"),
        "Policies": [{"PolicyName": task.part, "PolicyDocument": iam::document(task_statements)}],
        "Tags": cfn::tags(task.fleet, task.part),
    });
    if let Some(name) = role_name {
        role["RoleName"] = name.into();
    }
    t.resource("TaskRole", "AWS::IAM::Role", role);
    let mut container = json!({
        "Name": task.part,
        "Image": r#ref("Image"),
        "Essential": true,
        "Command": task.command,
        "Environment": task.environment,
        "LogConfiguration": {"LogDriver": "awslogs", "Options": {
            "awslogs-group": log_group, "awslogs-region": r#ref("AWS::Region"), "awslogs-stream-prefix": task.part}},
    });
    if !task.secrets.is_empty() {
        container["Secrets"] = json!(task.secrets);
    }
    if let Some(port) = task.port {
        container["PortMappings"] = json!([{"ContainerPort": port, "Protocol": "tcp"}]);
    }
    let mut definition = json!({
        "Family": task.name,
        "RequiresCompatibilities": ["FARGATE"],
        "NetworkMode": "awsvpc",
        "Cpu": "256",
        "Memory": "512",
        "ExecutionRoleArn": get_att("ExecutionRole", "Arn"),
        "TaskRoleArn": get_att("TaskRole", "Arn"),
        "ContainerDefinitions": [container],
        "Tags": cfn::tags(task.fleet, task.part),
    });
    if task.volume {
        definition["Volumes"] = json!([{
            "Name": "state",
            "EFSVolumeConfiguration": if_else("HasStateFileSystem",
                json!({"FilesystemId": r#ref("StateFileSystemId"), "TransitEncryption": "ENABLED"}),
                no_value()),
        }]);
        definition["ContainerDefinitions"][0]["MountPoints"] =
            json!([{"SourceVolume": "state", "ContainerPath": STATE_DIR}]);
    }
    t.resource("TaskDefinition", "AWS::ECS::TaskDefinition", definition);
    let mut service = json!({
        "Cluster": r#ref("Cluster"),
        "LaunchType": "FARGATE",
        "DesiredCount": 1,
        "TaskDefinition": r#ref("TaskDefinition"),
        "NetworkConfiguration": {"AwsvpcConfiguration": {
            "Subnets": r#ref("SubnetIds"), "SecurityGroups": r#ref("SecurityGroupIds"), "AssignPublicIp": "DISABLED"}},
        "Tags": cfn::tags(task.fleet, task.part),
    });
    if let Some(port) = task.port {
        service["LoadBalancers"] = json!([{
            "ContainerName": task.part, "ContainerPort": port, "TargetGroupArn": r#ref("TargetGroup")}]);
    }
    let s = t.resource("Service", "AWS::ECS::Service", service);
    if task.port.is_some() {
        s.insert("DependsOn".into(), json!(["Listener"]));
    }
}

/// The AWS Regions aggregators run in: each replica's, or the one aggregator's CloudWatch
/// Region from the layout (us-east-1 without one).
pub fn aggregator_regions(
    fleet: &FleetConfig,
    layout: Option<&Layout>,
) -> Vec<(Option<String>, String)> {
    let replicas = &fleet.aggregator.replicas;
    if !replicas.is_empty() {
        return replicas
            .iter()
            .map(|r| (Some(r.id.get_ref().clone()), r.region.get_ref().clone()))
            .collect();
    }
    let region = layout
        .and_then(|l| l.alarm_regions().into_iter().next())
        .unwrap_or_else(|| "us-east-1".to_owned());
    vec![(None, region)]
}

pub fn stacks(fleet: &FleetConfig, layout: Option<&Layout>) -> Vec<Stack> {
    aggregator_regions(fleet, layout)
        .into_iter()
        .map(|(replica, region)| Stack {
            name: stack_name(fleet, StackKind::Control, Some(&region)),
            kind: StackKind::Control,
            template: template(fleet, layout, replica.as_deref(), &region),
            aws_region: region,
        })
        .collect()
}

fn template(
    fleet: &FleetConfig,
    layout: Option<&Layout>,
    replica: Option<&str>,
    region: &str,
) -> Value {
    let fleet_name = fleet.fleet.name.get_ref();
    let name = format!("vantage-{}-aggregator", dns_safe(fleet_name));
    let who = replica.map_or("the aggregator".to_owned(), |r| format!("replica {r}"));
    let mut t = Template::new(format!(
        "vantage fleet {fleet_name}: {who} in {region}, its health alarms and lease"
    ));
    t.parameter(
        "VpcId",
        "AWS::EC2::VPC::Id",
        "The VPC of the tasks and the load balancer",
        None,
    );
    t.parameter(
        "LoadBalancerSubnetIds",
        "List<AWS::EC2::Subnet::Id>",
        "Public subnets of the load balancer agents reach",
        None,
    );
    t.parameter(
        "LoadBalancerSecurityGroupIds",
        "List<AWS::EC2::SecurityGroup::Id>",
        "Security groups of the load balancer (443 in from the agents)",
        None,
    );
    t.parameter(
        "CertificateArn",
        "String",
        "ACM certificate for the aggregator's name (the url in the fleet file)",
        None,
    );
    t.parameter(
        "StateFileSystemId",
        "String",
        "EFS file system for the state file (empty: task storage, lost when the task is replaced)",
        Some(""),
    );
    t.parameter(
        "AggregatorKeysSecretArn",
        "String",
        "Secrets Manager secret whose JSON keys are the key variables [aggregator.keys] names",
        None,
    );
    t.non_empty_condition("HasStateFileSystem", "StateFileSystemId");

    let namespace = layout
        .and_then(|l| l.regions.iter().flat_map(|r| &r.votes).next())
        .map(|v| v.alarm.namespace.clone())
        .unwrap_or_else(|| {
            vantage_aggregator::backend::route53::DEFAULT_METRIC_NAMESPACE.to_owned()
        });
    let mut statements = vec![
        iam::put_metric_data(&namespace),
        // Reading its own votes back (observe); reads have no resource type in CloudWatch.
        iam::allow(&["cloudwatch:GetMetricData"], json!("*")),
    ];
    if let Some(lease) = layout.and_then(|l| l.lease.as_ref()) {
        statements.push(iam::allow(
            &[
                "dynamodb:GetItem",
                "dynamodb:PutItem",
                "dynamodb:UpdateItem",
                "dynamodb:DescribeTable",
            ],
            json!([sub(&format!(
                "arn:${{AWS::Partition}}:dynamodb:{}:${{AWS::AccountId}}:table/{}",
                lease.aws_region, lease.table
            ))]),
        ));
        if lease.aws_region == region {
            t.resource(
                "LeaseTable",
                "AWS::DynamoDB::Table",
                json!({
                    "TableName": lease.table,
                    "BillingMode": "PAY_PER_REQUEST",
                    "AttributeDefinitions": [{"AttributeName": "lease_id", "AttributeType": "S"}],
                    "KeySchema": [{"AttributeName": "lease_id", "KeyType": "HASH"}],
                    "Tags": cfn::tags(fleet_name, "control"),
                }),
            );
        }
    }
    // Each key variable from its JSON key in one secret.
    let mut key_envs: Vec<&str> = fleet
        .aggregator
        .keys
        .values()
        .chain(fleet.aggregator.admin_keys.values())
        .filter_map(|k| k.env.as_deref())
        .collect();
    key_envs.sort_unstable();
    key_envs.dedup();
    let secrets = key_envs
        .iter()
        .map(|env| json!({"Name": env, "ValueFrom": sub(&format!("${{AggregatorKeysSecretArn}}:{env}::"))}))
        .collect();
    let mut command = vec![
        "aggregator".to_owned(),
        "--config".to_owned(),
        FLEET_FILE_IN_IMAGE.to_owned(),
        "--listen".to_owned(),
        format!("0.0.0.0:{AGGREGATOR_PORT}"),
        "--state-file".to_owned(),
        format!("{STATE_DIR}/state.json"),
    ];
    if let Some(r) = replica {
        command.extend(["--replica".to_owned(), r.to_owned()]);
    }
    fargate_service_with_role(
        &mut t,
        &Task {
            fleet: fleet_name,
            part: "aggregator",
            name: &name,
            command,
            environment: vec![json!({"Name": "AWS_REGION", "Value": region})],
            secrets,
            secret_arns: vec![r#ref("AggregatorKeysSecretArn")],
            port: Some(AGGREGATOR_PORT),
            volume: true,
        },
        statements,
        Some(aggregator_role_name(fleet, region)),
    );
    load_balancer(&mut t, fleet_name);
    alarms(&mut t, layout, region);
    t.output(
        "ApiUrl",
        "point the aggregator's name (its url in the fleet file) here",
        sub("https://${LoadBalancer.DNSName}"),
    );
    t.output(
        "TaskRoleName",
        "the role the routing stack's Route 53 policy attaches to",
        r#ref("TaskRole"),
    );
    t.finish()
}

fn load_balancer(t: &mut Template, fleet: &str) {
    t.resource(
        "LoadBalancer",
        "AWS::ElasticLoadBalancingV2::LoadBalancer",
        json!({
            "Type": "application",
            "Scheme": "internet-facing",
            "Subnets": r#ref("LoadBalancerSubnetIds"),
            "SecurityGroups": r#ref("LoadBalancerSecurityGroupIds"),
            "Tags": cfn::tags(fleet, "control"),
        }),
    );
    t.resource(
        "TargetGroup",
        "AWS::ElasticLoadBalancingV2::TargetGroup",
        json!({
            "TargetType": "ip",
            "Protocol": "HTTP",
            "Port": AGGREGATOR_PORT,
            "VpcId": r#ref("VpcId"),
            // /v1/state answers 401 when state_token_env is set: alive either way.
            "HealthCheckPath": "/v1/state",
            "Matcher": {"HttpCode": "200,401"},
            "Tags": cfn::tags(fleet, "control"),
        }),
    );
    t.resource(
        "Listener",
        "AWS::ElasticLoadBalancingV2::Listener",
        json!({
            "LoadBalancerArn": r#ref("LoadBalancer"),
            "Protocol": "HTTPS",
            "Port": 443,
            "SslPolicy": "ELBSecurityPolicy-TLS13-1-2-2021-06",
            "Certificates": [{"CertificateArn": r#ref("CertificateArn")}],
            "DefaultActions": [{"Type": "forward", "TargetGroupArn": r#ref("TargetGroup")}],
        }),
    );
}

/// The alarms on the votes published from `region`, exactly as the layout (and so bootstrap)
/// defines them.
fn alarms(t: &mut Template, layout: Option<&Layout>, region: &str) {
    let Some(layout) = layout else { return };
    for unit in &layout.regions {
        for vote in unit.votes.iter().filter(|v| v.alarm.aws_region == region) {
            let a = &vote.alarm;
            let dimensions: Vec<Value> = a
                .dimensions
                .iter()
                .map(|(k, v)| json!({"Name": k, "Value": v}))
                .collect();
            t.resource(
                &cfn::logical_id(&["Alarm", &a.name]),
                "AWS::CloudWatch::Alarm",
                json!({
                    "AlarmName": a.name,
                    "AlarmDescription": "vantage: this voter's health verdict for the Region (1 in service, 0 out); a Route 53 CLOUDWATCH_METRIC health check follows it",
                    "Namespace": a.namespace,
                    "MetricName": a.metric_name,
                    "Dimensions": dimensions,
                    "Statistic": "Minimum",
                    "Period": ALARM_PERIOD_SECS,
                    "EvaluationPeriods": ALARM_EVALUATION_PERIODS,
                    "Threshold": ALARM_THRESHOLD,
                    "ComparisonOperator": "LessThanThreshold",
                    "TreatMissingData": ALARM_TREAT_MISSING_DATA,
                    "Unit": "Count",
                }),
            );
        }
    }
}
