//! The `regional` stack, one per Region any service serves from: the status endpoint as a
//! Lambda function (the packaged `bootstrap`, handler `status-endpoint`) behind an API Gateway
//! REST API whose `prod` stage answers `/status` and `/status/deep`. The dependencies it
//! checks are parameters, because the fleet file does not name them: the Aurora DSNs come from
//! a Secrets Manager secret (dynamic references, resolved by CloudFormation at deploy time),
//! the subnets and security groups that reach Aurora are the function's VPC settings, and the
//! role may read exactly the Lambda function and DynamoDB tables named, nothing else.

use crate::cfn::{self, get_att, if_else, no_value, r#ref, sub, Template};
use crate::{dns_safe, iam, stack_name, Stack, StackKind};
use serde_json::{json, Value};
use vantage_protocol::config::FleetConfig;

/// The packaged artifact's parameters, shared by every Lambda stack.
pub(crate) fn code_parameters(t: &mut Template) {
    t.parameter(
        "CodeBucket",
        "String",
        "S3 bucket in this Region holding the Lambda zip from scripts/package.sh",
        None,
    );
    t.parameter(
        "CodeKey",
        "String",
        "S3 key of the Lambda zip (bootstrap for provided.al2023, x86_64)",
        Some("vantage-lambda-x86_64.zip"),
    );
}

/// A Lambda function running the packaged binary with `handler` as its subcommand (the binary
/// reads `_HANDLER` when Lambda starts it without arguments).
pub(crate) fn lambda_function(
    name: &str,
    handler: &str,
    timeout_secs: u32,
    environment: Value,
    fleet: &str,
    part: &str,
) -> Value {
    json!({
        "FunctionName": name,
        "Runtime": "provided.al2023",
        "Architectures": ["x86_64"],
        "Handler": handler,
        "MemorySize": 256,
        "Timeout": timeout_secs,
        "Code": {"S3Bucket": r#ref("CodeBucket"), "S3Key": r#ref("CodeKey")},
        "Role": get_att("Role", "Arn"),
        "Environment": {"Variables": environment},
        "TracingConfig": {"Mode": "Active"},
        "Tags": cfn::tags(fleet, part),
    })
}

/// The function's log group, created here so its retention is set and the role's log
/// permission can name it.
pub(crate) fn log_group(t: &mut Template, function_name: &str) {
    t.resource(
        "LogGroup",
        "AWS::Logs::LogGroup",
        json!({"LogGroupName": format!("/aws/lambda/{function_name}"), "RetentionInDays": 30}),
    );
}

pub fn stacks(fleet: &FleetConfig) -> Vec<Stack> {
    fleet
        .all_regions()
        .into_iter()
        .map(|region| Stack {
            name: stack_name(fleet, StackKind::Regional, Some(&region)),
            kind: StackKind::Regional,
            template: template(fleet, &region),
            aws_region: region,
        })
        .collect()
}

/// The ARNs of the `CheckedTables` names in `region`. CloudFormation has no map over a list and
/// a `Fn::Join` delimiter must be a literal, so the account is `*`: the names and the Region
/// are exact, and another account's table of the same name is reachable only if that account's
/// resource policy grants it.
fn table_arns(region: &str) -> Value {
    let partition = if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    };
    let prefix = format!("arn:{partition}:dynamodb:{region}:*:table/");
    json!({"Fn::Split": [",", {"Fn::Join": ["", [
        prefix.clone(),
        {"Fn::Join": [format!(",{prefix}"), r#ref("CheckedTables")]},
    ]]}]})
}

fn template(fleet: &FleetConfig, region: &str) -> Value {
    let fleet_name = fleet.fleet.name.get_ref();
    let function = format!("vantage-{}-status", dns_safe(fleet_name));
    let services: Vec<&str> = fleet
        .services()
        .iter()
        .filter(|s| s.fleet.regions.iter().any(|r| r.name.get_ref() == region))
        .map(|s| s.name.as_str())
        .collect();
    let mut t = Template::new(format!(
        "vantage fleet {fleet_name}: the status endpoint in {region} (/status, /status/deep) for {}",
        services.join(", ")
    ));
    code_parameters(&mut t);
    t.parameter(
        "SubnetIds",
        "CommaDelimitedList",
        "Subnets that reach Aurora (empty: the function runs outside a VPC)",
        Some(""),
    );
    t.parameter(
        "SecurityGroupIds",
        "CommaDelimitedList",
        "Security groups allowed into Aurora (with SubnetIds)",
        Some(""),
    );
    t.parameter(
        "DatabaseSecretArn",
        "String",
        "Secrets Manager secret whose JSON keys writer and reader hold the Aurora DSNs (empty: no Aurora check)",
        Some(""),
    );
    t.parameter(
        "CheckedFunction",
        "String",
        "Name of the Lambda function /status/deep checks (empty: none)",
        Some(""),
    );
    t.parameter(
        "CheckedTables",
        "CommaDelimitedList",
        "Names of the DynamoDB tables in this Region /status/deep reads (empty: none)",
        Some(""),
    );
    t.non_empty_list_condition("HasVpc", "SubnetIds");
    t.non_empty_condition("HasDatabase", "DatabaseSecretArn");
    t.non_empty_condition("HasFunction", "CheckedFunction");
    t.non_empty_list_condition("HasTables", "CheckedTables");

    let mut statements = vec![iam::lambda_logs(&function), iam::xray()];
    // lambda:InvokeFunction cannot be limited to DryRun invocations by IAM; it is limited to
    // the one function instead, and the check only ever sends DryRun.
    statements.push(if_else(
        "HasFunction",
        iam::allow(
            &["lambda:GetFunction", "lambda:InvokeFunction"],
            json!([sub("arn:${AWS::Partition}:lambda:${AWS::Region}:${AWS::AccountId}:function:${CheckedFunction}")]),
        ),
        no_value(),
    ));
    statements.push(if_else(
        "HasTables",
        iam::allow(
            &["dynamodb:DescribeTable", "dynamodb:GetItem"],
            table_arns(region),
        ),
        no_value(),
    ));
    t.resource(
        "Role",
        "AWS::IAM::Role",
        json!({
            "AssumeRolePolicyDocument": iam::assume_role("lambda.amazonaws.com"),
            // Only with a VPC: the ENI permissions Lambda needs to attach to the subnets.
            "ManagedPolicyArns": if_else("HasVpc",
                json!([sub("arn:${AWS::Partition}:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole")]),
                no_value()),
            "Policies": [{"PolicyName": "status-endpoint", "PolicyDocument": iam::document(statements)}],
            "Tags": cfn::tags(fleet_name, "regional"),
        }),
    );
    log_group(&mut t, &function);
    let secret = |key: &str| {
        sub(&format!(
            "{{{{resolve:secretsmanager:${{DatabaseSecretArn}}:SecretString:{key}}}}}"
        ))
    };
    let environment = json!({
        "VANTAGE_REGION": region,
        "VANTAGE_SERVICE_ID": fleet_name,
        "VANTAGE_AURORA_WRITER": if_else("HasDatabase", secret("writer"), no_value()),
        "VANTAGE_AURORA_READER": if_else("HasDatabase", secret("reader"), no_value()),
        "VANTAGE_LAMBDA_FUNCTION": if_else("HasFunction", r#ref("CheckedFunction"), no_value()),
        "VANTAGE_DYNAMODB_TABLES": if_else("HasTables", json!({"Fn::Join": [",", r#ref("CheckedTables")]}), no_value()),
        // The role may read the tables, not write the heartbeat item.
        "VANTAGE_DYNAMODB_READ_ONLY": "true",
    });
    let mut function_props = lambda_function(
        &function,
        "status-endpoint",
        30,
        environment,
        fleet_name,
        "regional",
    );
    function_props["VpcConfig"] = if_else(
        "HasVpc",
        json!({"SubnetIds": r#ref("SubnetIds"), "SecurityGroupIds": r#ref("SecurityGroupIds")}),
        no_value(),
    );
    t.resource("Function", "AWS::Lambda::Function", function_props)
        .insert("DependsOn".into(), json!(["LogGroup"]));

    t.resource(
        "Api",
        "AWS::ApiGateway::RestApi",
        json!({
            "Name": format!("vantage-{}-status", dns_safe(fleet_name)),
            "EndpointConfiguration": {"Types": ["REGIONAL"]},
            "Tags": cfn::tags(fleet_name, "regional"),
        }),
    );
    t.resource(
        "StatusResource",
        "AWS::ApiGateway::Resource",
        json!({"RestApiId": r#ref("Api"), "ParentId": get_att("Api", "RootResourceId"), "PathPart": "status"}),
    );
    t.resource(
        "DeepResource",
        "AWS::ApiGateway::Resource",
        json!({"RestApiId": r#ref("Api"), "ParentId": r#ref("StatusResource"), "PathPart": "deep"}),
    );
    let integration = json!({
        "Type": "AWS_PROXY",
        "IntegrationHttpMethod": "POST",
        "Uri": sub("arn:${AWS::Partition}:apigateway:${AWS::Region}:lambda:path/2015-03-31/functions/${Function.Arn}/invocations"),
    });
    for (id, resource) in [("StatusGet", "StatusResource"), ("DeepGet", "DeepResource")] {
        t.resource(
            id,
            "AWS::ApiGateway::Method",
            json!({
                "RestApiId": r#ref("Api"),
                "ResourceId": r#ref(resource),
                "HttpMethod": "GET",
                "AuthorizationType": "NONE",
                "Integration": integration,
            }),
        );
    }
    t.resource(
        "Deployment",
        "AWS::ApiGateway::Deployment",
        json!({"RestApiId": r#ref("Api"), "StageName": "prod"}),
    )
    .insert("DependsOn".into(), json!(["StatusGet", "DeepGet"]));
    t.resource(
        "ApiInvoke",
        "AWS::Lambda::Permission",
        json!({
            "FunctionName": r#ref("Function"),
            "Action": "lambda:InvokeFunction",
            "Principal": "apigateway.amazonaws.com",
            "SourceArn": sub("arn:${AWS::Partition}:execute-api:${AWS::Region}:${AWS::AccountId}:${Api}/*/GET/status*"),
        }),
    );
    t.output(
        "StatusUrl",
        "the Region's status_url in the fleet file",
        sub("https://${Api}.execute-api.${AWS::Region}.${AWS::URLSuffix}/prod/status"),
    );
    t.output(
        "DeepUrl",
        "the Region's deep_url in the fleet file",
        sub("https://${Api}.execute-api.${AWS::Region}.${AWS::URLSuffix}/prod/status/deep"),
    );
    t.finish()
}
