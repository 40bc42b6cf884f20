//! Templates as YAML (`vantage deploy synth --format yaml`): the same template as the JSON
//! output, written as block-style YAML that CloudFormation, cfn-lint and people read. Every
//! string is double-quoted with JSON's escapes, which YAML's double-quoted style shares, so no
//! value can change meaning (`"on"`, `"1.0"`, `"null"` and ARNs with `: ` stay strings);
//! intrinsic functions keep their full names (`"Fn::GetAtt":`), which CloudFormation accepts in
//! YAML as in JSON. Keys that are plain identifiers are written plain.

use serde_json::Value;
use std::fmt::Write as _;

/// `value` as a YAML document.
pub fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(map) if !map.is_empty() => mapping(&mut out, map, 0),
        Value::Array(items) if !items.is_empty() => sequence(&mut out, items, 0),
        scalar => {
            out.push_str(&inline(scalar));
            out.push('\n');
        }
    }
    out
}

fn mapping(out: &mut String, map: &serde_json::Map<String, Value>, indent: usize) {
    for (key, value) in map {
        let _ = write!(out, "{:indent$}{}:", "", key_text(key));
        nested(out, value, indent);
    }
}

fn sequence(out: &mut String, items: &[Value], indent: usize) {
    for item in items {
        let _ = write!(out, "{:indent$}-", "");
        match item {
            // A mapping in a sequence starts on the dash's line, its other keys under the first.
            Value::Object(map) if !map.is_empty() => {
                let mut first = true;
                for (key, value) in map {
                    if first {
                        let _ = write!(out, " {}:", key_text(key));
                        first = false;
                    } else {
                        let _ = write!(out, "{:width$}{}:", "", key_text(key), width = indent + 2);
                    }
                    nested(out, value, indent + 2);
                }
            }
            other => nested(out, other, indent),
        }
    }
}

/// The value after `key:` or `-`: inline when it is a scalar or empty, else on the next lines.
fn nested(out: &mut String, value: &Value, indent: usize) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            out.push('\n');
            mapping(out, map, indent + 2);
        }
        Value::Array(items) if !items.is_empty() => {
            out.push('\n');
            sequence(out, items, indent + 2);
        }
        scalar => {
            let _ = writeln!(out, " {}", inline(scalar));
        }
    }
}

fn inline(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        // JSON's string escapes are valid in YAML's double-quoted style.
        Value::String(s) => Value::String(s.clone()).to_string(),
        Value::Array(_) => "[]".to_owned(),
        Value::Object(_) => "{}".to_owned(),
    }
}

/// Plain when it is an identifier YAML cannot read as anything else, quoted otherwise.
fn key_text(key: &str) -> String {
    let plain = !key.is_empty()
        && key.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
        && !matches!(
            key.to_ascii_lowercase().as_str(),
            "y" | "n" | "yes" | "no" | "on" | "off" | "true" | "false" | "null"
        );
    if plain {
        key.to_owned()
    } else {
        Value::String(key.to_owned()).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nested_mappings_sequences_and_scalars_are_block_yaml() {
        let v = json!({
            "AWSTemplateFormatVersion": "2010-09-09",
            "Resources": {
                "Role": {
                    "Properties": {
                        "Policies": [
                            {"PolicyName": "p", "Statement": [{"Effect": "Allow", "Action": ["a:B"]}]}
                        ],
                        "Arn": {"Fn::GetAtt": ["Fn", "Arn"]},
                        "Empty": {},
                        "None": [],
                        "Count": 3,
                        "On": true,
                        "Text": "line one\nline \"two\""
                    }
                }
            }
        });
        let yaml = to_yaml(&v);
        let expected = r#"AWSTemplateFormatVersion: "2010-09-09"
Resources:
  Role:
    Properties:
      Policies:
        - PolicyName: "p"
          Statement:
            - Effect: "Allow"
              Action:
                - "a:B"
      Arn:
        "Fn::GetAtt":
          - "Fn"
          - "Arn"
      Empty: {}
      None: []
      Count: 3
      "On": true
      Text: "line one\nline \"two\""
"#;
        assert_eq!(yaml, expected);
    }
}
