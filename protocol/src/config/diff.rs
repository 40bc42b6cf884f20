//! Which keys differ between two fleet files, compared as TOML values (so spans, comments and
//! layout do not count), for reloads that apply some keys while the process runs and must
//! refuse others until a restart.

use super::FleetConfig;

impl FleetConfig {
    /// The TOML value at a dotted path (`fleet.report_interval`, `route53`), `None` when the
    /// file does not set it.
    pub fn raw_value(&self, path: &str) -> Option<toml::Value> {
        let table: toml::Table = toml::from_str(&self.source).ok()?;
        let mut parts = path.split('.');
        let mut value = table.get(parts.next()?)?.clone();
        for part in parts {
            value = value.as_table()?.get(part)?.clone();
        }
        Some(value)
    }

    /// Those of `keys` (dotted paths) whose value differs between this file and `other`; a
    /// key set in one and not the other differs.
    pub fn changed_keys<'k>(&self, other: &FleetConfig, keys: &[&'k str]) -> Vec<&'k str> {
        keys.iter()
            .copied()
            .filter(|k| self.raw_value(k) != other.raw_value(k))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[fleet]
name = "orders-api"
report_interval = "10s"
[global]
url = "https://api.example.com/status"
[[regions]]
name = "eu-west-1"
status_url = "https://euw1.example.com/status"
[[vantages]]
region = "eu-west-1"
[aggregator]
url = "https://agg.example.com"
[agents.auth]
key_id = "k1"
"#;

    #[test]
    fn layout_does_not_count_values_do() {
        let a = FleetConfig::parse(BASE, "a.toml").unwrap();
        let moved = format!("# a comment\n\n{BASE}");
        let b = FleetConfig::parse(&moved, "b.toml").unwrap();
        let keys = ["fleet.report_interval", "aggregator.url", "route53"];
        assert!(a.changed_keys(&b, &keys).is_empty());
        let c = FleetConfig::parse(&BASE.replace("\"10s\"", "\"5s\""), "c.toml").unwrap();
        assert_eq!(a.changed_keys(&c, &keys), vec!["fleet.report_interval"]);
        assert_eq!(
            a.raw_value("fleet.name"),
            Some(toml::Value::String("orders-api".into()))
        );
        assert_eq!(a.raw_value("fleet.histogram_precision"), None);
    }
}
