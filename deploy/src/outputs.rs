//! From the routing stack's outputs back to the fleet file: each unit's output
//! (`service|region|set_identifier|health_check_id`) becomes its `[route53.regions.<r>]` table,
//! or `[services.route53.regions.<r>]` under a comment naming the service, so ids are never
//! copied by hand.

use crate::routing::{OUTPUT_SEPARATOR, UNIT_OUTPUT_PREFIX};
use std::collections::BTreeMap;

/// One unit's ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitIds {
    pub service: Option<String>,
    pub region: String,
    pub set_identifier: String,
    pub health_check_id: Option<String>,
}

/// The units in a stack's outputs (key, value); other outputs are ignored.
pub fn units(outputs: &[(String, String)]) -> Vec<UnitIds> {
    let mut units: Vec<UnitIds> = outputs
        .iter()
        .filter(|(k, _)| k.starts_with(UNIT_OUTPUT_PREFIX))
        .filter_map(|(_, v)| {
            let mut f = v.split(OUTPUT_SEPARATOR);
            let (service, region, set, check) =
                (f.next()?, f.next()?, f.next()?, f.next().unwrap_or(""));
            Some(UnitIds {
                service: (!service.is_empty()).then(|| service.to_owned()),
                region: region.to_owned(),
                set_identifier: set.to_owned(),
                health_check_id: (!check.is_empty()).then(|| check.to_owned()),
            })
        })
        .collect();
    units.sort_by(|a, b| (&a.service, &a.region).cmp(&(&b.service, &b.region)));
    units
}

/// The TOML the aggregator needs, ready to paste into the fleet file.
pub fn render(units: &[UnitIds]) -> String {
    let mut by_service: BTreeMap<Option<&str>, Vec<&UnitIds>> = BTreeMap::new();
    for u in units {
        by_service.entry(u.service.as_deref()).or_default().push(u);
    }
    let mut out = String::new();
    for (service, units) in by_service {
        let table = match service {
            Some(name) => {
                out += &format!("# in the [[services]] entry name = {}\n", quote(name));
                "services.route53.regions"
            }
            None => "route53.regions",
        };
        for u in units {
            out += &format!(
                "[{table}.{}]\nset_identifier = {}\n",
                u.region,
                quote(&u.set_identifier)
            );
            if let Some(id) = &u.health_check_id {
                out += &format!("health_check_id = {}\n", quote(id));
            }
        }
        out.push('\n');
    }
    out
}

fn quote(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_outputs_become_the_fleet_files_tables() {
        let outputs = vec![
            (
                "UnitEuWest1".to_owned(),
                "|eu-west-1|eu-west-1|hc-2".to_owned(),
            ),
            ("UnitUsEast1".to_owned(), "|us-east-1|use1|hc-1".to_owned()),
            (
                "UnitPaymentsUsEast1".to_owned(),
                "payments|us-east-1|p-use1|hc-3".to_owned(),
            ),
            ("ApiUrl".to_owned(), "https://x".to_owned()),
        ];
        let text = render(&units(&outputs));
        assert_eq!(
            text,
            "[route53.regions.eu-west-1]\nset_identifier = \"eu-west-1\"\nhealth_check_id = \"hc-2\"\n\
             [route53.regions.us-east-1]\nset_identifier = \"use1\"\nhealth_check_id = \"hc-1\"\n\n\
             # in the [[services]] entry name = \"payments\"\n\
             [services.route53.regions.us-east-1]\nset_identifier = \"p-use1\"\nhealth_check_id = \"hc-3\"\n\n"
        );
    }
}
