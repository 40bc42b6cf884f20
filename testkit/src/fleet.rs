//! Fleet files for tests, built rather than pasted: the daemon, command-line, ingest and API
//! tests each need a small fleet (a global URL, a few Regions and vantages, an aggregator, the
//! agents' key id) that differs only in a few values. The builder writes the TOML the operator
//! would; parsing and validating it stays with the code under test.

use std::fmt::Write as _;

/// A fleet file under construction; [`FleetToml::build`] renders it.
#[derive(Debug, Clone)]
pub struct FleetToml {
    name: String,
    report_interval: String,
    probe: Vec<(String, String)>,
    global: String,
    /// Name, status URL, and further keys as TOML lines.
    regions: Vec<(String, String, String)>,
    vantages: Vec<String>,
    aggregator: Vec<(String, String)>,
    aggregator_keys: Vec<(String, String)>,
    key_id: String,
    extra: String,
}

/// A TOML string literal.
pub fn quoted(text: &str) -> String {
    format!("{text:?}")
}

impl FleetToml {
    /// Fleet `name`, reports every second, global URL `https://api.example.com/status`, the
    /// aggregator at a closed port, key id `k1`, no Regions yet.
    pub fn new(name: &str) -> Self {
        FleetToml {
            name: name.to_owned(),
            report_interval: "1s".to_owned(),
            probe: Vec::new(),
            global: "https://api.example.com/status".to_owned(),
            regions: Vec::new(),
            vantages: Vec::new(),
            aggregator: vec![("url".to_owned(), quoted("http://127.0.0.1:1"))],
            aggregator_keys: Vec::new(),
            key_id: "k1".to_owned(),
            extra: String::new(),
        }
    }

    pub fn report_interval(mut self, interval: &str) -> Self {
        self.report_interval = interval.to_owned();
        self
    }

    /// A `[probe]` setting; `value` is TOML (quote strings with [`quoted`]).
    pub fn probe(mut self, key: &str, value: &str) -> Self {
        self.probe.push((key.to_owned(), value.to_owned()));
        self
    }

    pub fn global(mut self, url: &str) -> Self {
        self.global = url.to_owned();
        self
    }

    /// A Region and its status URL.
    pub fn region(mut self, name: &str, status_url: &str) -> Self {
        self.regions
            .push((name.to_owned(), status_url.to_owned(), String::new()));
        self
    }

    /// A key of the Region added last (e.g. `dns_answers`); `value` is TOML.
    pub fn region_key(mut self, key: &str, value: &str) -> Self {
        let (_, _, keys) = self.regions.last_mut().expect("a Region to add the key to");
        keys.push_str(&format!("{key} = {value}\n"));
        self
    }

    /// A Region at `https://<name>.example.com/status` with a vantage in it.
    pub fn region_with_vantage(self, name: &str) -> Self {
        self.region(name, &format!("https://{name}.example.com/status"))
            .vantage(name)
    }

    pub fn vantage(mut self, region: &str) -> Self {
        self.vantages.push(region.to_owned());
        self
    }

    /// An `[aggregator]` setting (`url` replaces the default); `value` is TOML.
    pub fn aggregator(mut self, key: &str, value: &str) -> Self {
        self.aggregator.retain(|(k, _)| k != key);
        self.aggregator.push((key.to_owned(), value.to_owned()));
        self
    }

    /// An aggregator key `key_id` read from environment variable `env`, which may report for
    /// `vantages` (several only with `allow_shared`, which the fleet file demands for them).
    pub fn aggregator_key_from_env(mut self, key_id: &str, env: &str, vantages: &[&str]) -> Self {
        let list = vantages
            .iter()
            .map(|v| quoted(v))
            .collect::<Vec<_>>()
            .join(", ");
        let shared = if vantages.len() > 1 {
            ", allow_shared = true"
        } else {
            ""
        };
        self.aggregator_keys.push((
            key_id.to_owned(),
            format!("{{ env = {}, vantages = [{list}]{shared} }}", quoted(env)),
        ));
        self
    }

    /// More TOML appended as written (a `[policy]` or `[route53]` section).
    pub fn extra(mut self, toml: &str) -> Self {
        self.extra.push_str(toml);
        self
    }

    pub fn build(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(t, "[fleet]\nname = {}", quoted(&self.name));
        let _ = writeln!(t, "report_interval = {}", quoted(&self.report_interval));
        if !self.probe.is_empty() {
            t.push_str("[probe]\n");
            for (k, v) in &self.probe {
                let _ = writeln!(t, "{k} = {v}");
            }
        }
        let _ = writeln!(t, "[global]\nurl = {}", quoted(&self.global));
        t.push_str("[aggregator]\n");
        for (k, v) in &self.aggregator {
            let _ = writeln!(t, "{k} = {v}");
        }
        if !self.aggregator_keys.is_empty() {
            t.push_str("[aggregator.keys]\n");
            for (k, v) in &self.aggregator_keys {
                let _ = writeln!(t, "{k} = {v}");
            }
        }
        let _ = writeln!(t, "[agents.auth]\nkey_id = {}", quoted(&self.key_id));
        for (name, url, keys) in &self.regions {
            let _ = write!(
                t,
                "[[regions]]\nname = {}\nstatus_url = {}\n{keys}",
                quoted(name),
                quoted(url)
            );
        }
        for region in &self.vantages {
            let _ = writeln!(t, "[[vantages]]\nregion = {}", quoted(region));
        }
        t.push_str(&self.extra);
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fleet_file_parses_with_what_was_asked_for() {
        let text = FleetToml::new("orders-api")
            .probe("interval", &quoted("100ms"))
            .region("us-east-1", "http://127.0.0.1:9/status")
            .region_with_vantage("eu-west-1")
            .aggregator("url", &quoted("http://127.0.0.1:8"))
            .aggregator_key_from_env("k1", "SOME_VAR", &["eu-west-1"])
            .extra("[policy]\nfail_after = 2\n")
            .build();
        let fleet = vantage_protocol::config::FleetConfig::parse(&text, "test").unwrap();
        assert_eq!(fleet.regions.len(), 2, "{text}");
        assert_eq!(fleet.vantages.len(), 1, "{text}");
        assert_eq!(
            fleet.aggregator.url.as_ref().unwrap().get_ref(),
            "http://127.0.0.1:8",
            "{text}"
        );
    }
}
