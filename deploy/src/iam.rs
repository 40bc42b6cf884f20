//! IAM for the synthesised stacks: statement builders, and the check every template passes
//! before it is written (the same check the tests run): no wildcard action, and no action that
//! changes anything on `"Resource": "*"` unless AWS offers no resource for it and it is scoped
//! another way. The allowed exceptions are listed in [`STAR_RESOURCE_EXCEPTIONS`], each with
//! its reason; everything else names its resources.

use serde_json::{json, Value};

/// Actions AWS defines without any resource type, so their only possible resource is `*`;
/// each is allowed there only when scoped by the condition key named beside it (or by none
/// when AWS offers none: X-Ray's trace upload has neither resources nor condition keys).
pub const STAR_RESOURCE_EXCEPTIONS: &[(&str, Option<&str>)] = &[
    ("cloudwatch:PutMetricData", Some("cloudwatch:namespace")),
    ("xray:PutTraceSegments", None),
    ("xray:PutTelemetryRecords", None),
];

/// One `Allow` statement.
pub fn allow(actions: &[&str], resources: Value) -> Value {
    json!({"Effect": "Allow", "Action": actions, "Resource": resources})
}

/// `cloudwatch:PutMetricData` on `*`, limited to one namespace by the `cloudwatch:namespace`
/// condition key (PutMetricData has no resource type).
pub fn put_metric_data(namespace: &str) -> Value {
    json!({
        "Effect": "Allow",
        "Action": ["cloudwatch:PutMetricData"],
        "Resource": "*",
        "Condition": {"StringEquals": {"cloudwatch:namespace": namespace}},
    })
}

/// X-Ray's trace upload (no resource type, no condition key: `*` is the only form).
pub fn xray() -> Value {
    allow(
        &["xray:PutTraceSegments", "xray:PutTelemetryRecords"],
        json!("*"),
    )
}

/// Logs for one Lambda function's log group.
pub fn lambda_logs(function_name: &str) -> Value {
    allow(
        &["logs:CreateLogStream", "logs:PutLogEvents"],
        json!([{ "Fn::Sub": format!(
            "arn:${{AWS::Partition}}:logs:${{AWS::Region}}:${{AWS::AccountId}}:log-group:/aws/lambda/{function_name}:*"
        ) }]),
    )
}

/// A policy document from statements.
pub fn document(statements: Vec<Value>) -> Value {
    json!({"Version": "2012-10-17", "Statement": statements})
}

/// The role Lambda or ECS tasks assume.
pub fn assume_role(service: &str) -> Value {
    document(vec![json!({
        "Effect": "Allow",
        "Principal": {"Service": service},
        "Action": "sts:AssumeRole",
    })])
}

/// One thing the check found, naming the resource and the action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub resource: String,
    pub message: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.resource, self.message)
    }
}

/// Every policy statement in `template` that grants a wildcard action, or an action that is
/// not read-only on `*` outside [`STAR_RESOURCE_EXCEPTIONS`].
pub fn check(template: &Value) -> Vec<Finding> {
    let mut findings = Vec::new();
    let Some(resources) = template["Resources"].as_object() else {
        return findings;
    };
    for (id, resource) in resources {
        let props = &resource["Properties"];
        let mut documents: Vec<&Value> = Vec::new();
        match resource["Type"].as_str() {
            Some("AWS::IAM::Role") => {
                if let Some(policies) = props["Policies"].as_array() {
                    documents.extend(policies.iter().map(|p| &p["PolicyDocument"]));
                }
            }
            Some("AWS::IAM::Policy" | "AWS::IAM::ManagedPolicy") => {
                documents.push(&props["PolicyDocument"]);
            }
            _ => {}
        }
        for doc in documents {
            for statement in statements(doc) {
                check_statement(id, statement, &mut findings);
            }
        }
    }
    findings
}

/// A document's statements, looking through `Fn::If` branches (both may apply).
fn statements(doc: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    let mut stack: Vec<&Value> = match &doc["Statement"] {
        Value::Array(items) => items.iter().collect(),
        other => vec![other],
    };
    while let Some(s) = stack.pop() {
        match s.get("Fn::If").and_then(Value::as_array) {
            Some(branches) => stack.extend(branches.iter().skip(1)),
            None if s.is_object() && s.get("Ref").is_none() => out.push(s),
            None => {}
        }
    }
    out
}

fn strings(v: &Value) -> Vec<&str> {
    match v {
        Value::String(s) => vec![s.as_str()],
        Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

fn check_statement(id: &str, statement: &Value, findings: &mut Vec<Finding>) {
    if statement["Effect"] != "Allow" {
        return;
    }
    let mut found = |message: String| {
        findings.push(Finding {
            resource: id.to_owned(),
            message,
        })
    };
    if statement.get("NotAction").is_some() || statement.get("NotResource").is_some() {
        found("NotAction/NotResource grants everything not listed".into());
    }
    let actions = strings(&statement["Action"]);
    for action in &actions {
        if *action == "*" || action.ends_with(":*") {
            found(format!("wildcard action {action}"));
        }
    }
    let on_star = strings(&statement["Resource"]).contains(&"*");
    if !on_star {
        return;
    }
    for action in actions {
        let verb = action.split_once(':').map_or(action, |(_, v)| v);
        let read_only = ["Get", "List", "Describe"]
            .iter()
            .any(|p| verb.starts_with(p));
        if read_only {
            continue;
        }
        match STAR_RESOURCE_EXCEPTIONS.iter().find(|(a, _)| *a == action) {
            Some((_, None)) => {}
            Some((_, Some(key))) if has_condition_key(statement, key) => {}
            Some((_, Some(key))) => found(format!("{action} on * without the {key} condition")),
            None => found(format!("{action} changes things on Resource *")),
        }
    }
}

fn has_condition_key(statement: &Value, key: &str) -> bool {
    statement["Condition"]
        .as_object()
        .is_some_and(|ops| ops.values().any(|keys| keys.get(key).is_some()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(statement: Value) -> Value {
        json!({"Resources": {"R": {"Type": "AWS::IAM::Policy",
            "Properties": {"PolicyDocument": document(vec![statement])}}}})
    }

    #[test]
    fn wildcards_and_writes_on_star_are_found() {
        for bad in [
            allow(&["*"], json!("arn:aws:s3:::b")),
            allow(&["route53:*"], json!("arn:aws:route53:::hostedzone/Z1")),
            allow(&["route53:ChangeResourceRecordSets"], json!("*")),
            json!({"Effect": "Allow", "Action": ["cloudwatch:PutMetricData"], "Resource": "*"}),
            json!({"Effect": "Allow", "NotAction": ["iam:*"], "Resource": "arn:aws:s3:::b"}),
        ] {
            assert_eq!(check(&template(bad.clone())).len(), 1, "{bad}");
        }
        // Inside an Fn::If branch too.
        let hidden =
            json!({"Fn::If": ["C", allow(&["s3:PutObject"], json!("*")), {"Ref": "AWS::NoValue"}]});
        assert_eq!(check(&template(hidden)).len(), 1);
    }

    #[test]
    fn reads_on_star_and_scoped_exceptions_pass() {
        for good in [
            allow(
                &["route53:ListHealthChecks", "cloudwatch:GetMetricData"],
                json!("*"),
            ),
            put_metric_data("Vantage"),
            xray(),
            allow(
                &["dynamodb:PutItem"],
                json!(["arn:aws:dynamodb:us-east-1:1:table/t"]),
            ),
        ] {
            assert!(check(&template(good.clone())).is_empty(), "{good}");
        }
    }
}
