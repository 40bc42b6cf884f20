//! The few CloudFormation shapes every stack uses: a template under construction (parameters,
//! conditions, resources, outputs in insertion order), intrinsic functions as JSON values, and
//! logical ids made from fleet names. Templates are plain `serde_json::Value`s, so what is
//! written is exactly what the tests lint and deploy.

use serde_json::{json, Map, Value};

/// A template being built; [`Template::finish`] gives the JSON document.
#[derive(Debug, Default)]
pub struct Template {
    description: String,
    parameters: Map<String, Value>,
    conditions: Map<String, Value>,
    resources: Map<String, Value>,
    outputs: Map<String, Value>,
}

impl Template {
    pub fn new(description: impl Into<String>) -> Template {
        Template {
            description: description.into(),
            ..Template::default()
        }
    }

    /// A parameter: `{"Type": .., "Description": .., "Default"?: ..}`.
    pub fn parameter(&mut self, name: &str, kind: &str, description: &str, default: Option<&str>) {
        let mut p = json!({"Type": kind, "Description": description});
        if let Some(d) = default {
            p["Default"] = d.into();
        }
        self.parameters.insert(name.to_owned(), p);
    }

    /// A condition true when the string parameter `param` is not empty.
    pub fn non_empty_condition(&mut self, name: &str, param: &str) {
        self.conditions.insert(
            name.to_owned(),
            json!({"Fn::Not": [{"Fn::Equals": [r#ref(param), ""]}]}),
        );
    }

    /// A condition true when the list parameter `param` has a non-empty element.
    pub fn non_empty_list_condition(&mut self, name: &str, param: &str) {
        self.conditions.insert(
            name.to_owned(),
            json!({"Fn::Not": [{"Fn::Equals": [{"Fn::Join": ["", r#ref(param)]}, ""]}]}),
        );
    }

    pub fn resource(&mut self, id: &str, kind: &str, properties: Value) -> &mut Map<String, Value> {
        self.resources.insert(
            id.to_owned(),
            json!({"Type": kind, "Properties": properties}),
        );
        self.resources
            .get_mut(id)
            .and_then(Value::as_object_mut)
            .expect("just inserted")
    }

    pub fn output(&mut self, id: &str, description: &str, value: Value) {
        self.outputs.insert(
            id.to_owned(),
            json!({"Description": description, "Value": value}),
        );
    }

    pub fn has_resource(&self, id: &str) -> bool {
        self.resources.contains_key(id)
    }

    pub fn finish(self) -> Value {
        let mut t = json!({
            "AWSTemplateFormatVersion": "2010-09-09",
            "Description": self.description,
        });
        for (key, map) in [
            ("Parameters", self.parameters),
            ("Conditions", self.conditions),
            ("Resources", self.resources),
            ("Outputs", self.outputs),
        ] {
            if !map.is_empty() {
                t[key] = Value::Object(map);
            }
        }
        t
    }
}

pub fn r#ref(name: &str) -> Value {
    json!({ "Ref": name })
}

pub fn sub(text: &str) -> Value {
    json!({ "Fn::Sub": text })
}

pub fn get_att(resource: &str, attribute: &str) -> Value {
    json!({ "Fn::GetAtt": [resource, attribute] })
}

pub fn if_else(condition: &str, then: Value, otherwise: Value) -> Value {
    json!({ "Fn::If": [condition, then, otherwise] })
}

pub fn no_value() -> Value {
    r#ref("AWS::NoValue")
}

/// A logical id from any name: letters and digits only (CloudFormation's rule), each part
/// capitalised, so `eu-west-1` + `use1` becomes `EuWest1Use1`.
pub fn logical_id(parts: &[&str]) -> String {
    let mut id = String::new();
    for part in parts {
        let mut upper = true;
        for c in part.chars() {
            if c.is_ascii_alphanumeric() {
                if upper {
                    id.extend(c.to_uppercase());
                } else {
                    id.push(c);
                }
                upper = false;
            } else {
                upper = true;
            }
        }
    }
    id
}

/// Tags every taggable resource carries, so a bill or a console search finds the fleet.
pub fn tags(fleet: &str, part: &str) -> Value {
    json!([
        {"Key": "vantage:fleet", "Value": fleet},
        {"Key": "vantage:stack", "Value": part},
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logical_ids_keep_letters_and_digits_only() {
        assert_eq!(logical_id(&["eu-west-1", "use1"]), "EuWest1Use1");
        assert_eq!(
            logical_id(&["Alarm", "payments.v2", "ap_southeast_1"]),
            "AlarmPaymentsV2ApSoutheast1"
        );
    }

    #[test]
    fn empty_sections_are_left_out() {
        let mut t = Template::new("d");
        t.resource("A", "AWS::S3::Bucket", json!({}));
        let v = t.finish();
        assert!(v.get("Parameters").is_none() && v.get("Outputs").is_none());
        assert_eq!(v["Resources"]["A"]["Type"], "AWS::S3::Bucket");
    }
}
