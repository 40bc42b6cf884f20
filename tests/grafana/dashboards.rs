//! The dashboards as Grafana would run them against Prometheus: each variable's
//! `label_values(...)` query through the label-values API, each panel target and annotation
//! query through `query_range` over the last minutes, with `$service`, `$region`, `$vantage`
//! replaced by values their variable queries returned and Grafana's `$__rate_interval` by a
//! window that fits a 1 s scrape.

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// What `$__rate_interval` becomes: four 1 s scrapes would do; a minute also covers counters
/// that moved once, a few seconds before the query.
const RATE_INTERVAL: &str = "1m";
/// How far back panel queries look.
const RANGE_SECS: u64 = 300;

/// One dashboard file.
pub struct Dashboard {
    pub file: String,
    pub json: Value,
}

/// A query a dashboard runs: where it is, and its PromQL with variables still in it.
#[derive(Debug, Clone)]
pub struct Query {
    pub dashboard: String,
    /// The panel title, or `annotation: <name>`.
    pub what: String,
    pub expr: String,
}

pub fn load(dir: &Path) -> Vec<Dashboard> {
    let mut out: Vec<Dashboard> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| Dashboard {
            file: p.file_name().unwrap().to_string_lossy().into_owned(),
            json: serde_json::from_str(&std::fs::read_to_string(&p).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", p.display())),
        })
        .collect();
    out.sort_by(|a, b| a.file.cmp(&b.file));
    out
}

impl Dashboard {
    /// Every panel, rows' panels included, rows themselves excluded.
    pub fn panels(&self) -> Vec<&Value> {
        let mut out = Vec::new();
        for p in self.json["panels"].as_array().into_iter().flatten() {
            if p["type"] == "row" {
                out.extend(p["panels"].as_array().into_iter().flatten());
            } else {
                out.push(p);
            }
        }
        out
    }

    /// Every panel target's and annotation's PromQL.
    pub fn queries(&self) -> Vec<Query> {
        let mut out = Vec::new();
        for p in self.panels() {
            for t in p["targets"].as_array().into_iter().flatten() {
                out.push(Query {
                    dashboard: self.file.clone(),
                    what: p["title"].as_str().unwrap_or_default().to_owned(),
                    expr: t["expr"].as_str().unwrap_or_default().to_owned(),
                });
            }
        }
        for a in self.json["annotations"]["list"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if let Some(expr) = a["target"]["expr"].as_str() {
                out.push(Query {
                    dashboard: self.file.clone(),
                    what: format!("annotation: {}", a["name"].as_str().unwrap_or_default()),
                    expr: expr.to_owned(),
                });
            }
        }
        out
    }

    /// The query variables in order: name and `label_values(...)` text.
    pub fn variables(&self) -> Vec<(String, String)> {
        self.json["templating"]["list"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|v| v["type"] == "query")
            .map(|v| {
                let q = &v["query"];
                let text = q["query"].as_str().or(q.as_str()).unwrap_or_default();
                (v["name"].as_str().unwrap().to_owned(), text.to_owned())
            })
            .collect()
    }

    /// The `datasource` variable is of type `datasource` for Prometheus, and every panel,
    /// target and query variable uses it.
    pub fn datasource_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let vars = self.json["templating"]["list"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let ds = vars.iter().find(|v| v["name"] == "datasource");
        if !ds.is_some_and(|v| v["type"] == "datasource" && v["query"] == "prometheus") {
            problems.push(format!(
                "{}: no datasource variable of type datasource, query prometheus",
                self.file
            ));
        }
        let uses = |v: &Value| v["type"] == "prometheus" && v["uid"] == "${datasource}";
        for p in self.panels() {
            if !uses(&p["datasource"]) {
                problems.push(format!(
                    "{}: panel {:?} does not use ${{datasource}}",
                    self.file, p["title"]
                ));
            }
            for t in p["targets"].as_array().into_iter().flatten() {
                if !uses(&t["datasource"]) {
                    problems.push(format!(
                        "{}: a target of {:?} does not use ${{datasource}}",
                        self.file, p["title"]
                    ));
                }
            }
        }
        for v in vars.iter().filter(|v| v["type"] == "query") {
            if !uses(&v["datasource"]) {
                problems.push(format!(
                    "{}: variable {:?} does not use ${{datasource}}",
                    self.file, v["name"]
                ));
            }
        }
        problems
    }
}

/// `text` with `$name` / `${name}` replaced by `values[name]` and Grafana's interval variables
/// by [`RATE_INTERVAL`].
pub fn substitute(text: &str, values: &BTreeMap<String, String>) -> String {
    let mut out = text
        .replace("$__rate_interval", RATE_INTERVAL)
        .replace("${__rate_interval}", RATE_INTERVAL)
        .replace("$__interval", RATE_INTERVAL);
    // Longer names first, so `$region` never eats part of a longer one.
    let mut names: Vec<&String> = values.keys().collect();
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    for name in names {
        // Fleet names are letters, digits and '-': nothing a regex matcher would read
        // differently, so no escaping (Grafana's escaping would double the backslashes).
        let value = &values[name];
        out = out
            .replace(&format!("${{{name}}}"), value)
            .replace(&format!("${name}"), value);
    }
    out
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Prometheus' JSON answer to `path`, which must be a success. Asked in HTTP/1.0, so a large
/// answer comes whole rather than chunked, and read to the end (bounded).
fn api(port: u16, path: &str) -> Result<Value, String> {
    use std::io::{Read, Write};
    let mut stream =
        std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    stream
        .take(16 << 20)
        .read_to_end(&mut raw)
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no end of headers")?;
    let json: Value = serde_json::from_str(body).map_err(|e| format!("{e}: {body}"))?;
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200")
        || json["status"] != "success"
    {
        return Err(format!(
            "{} {json}",
            head.lines().next().unwrap_or_default()
        ));
    }
    Ok(json["data"].clone())
}

/// The series `expr` returns over the last [`RANGE_SECS`], as Grafana's range query would.
pub fn range_query(port: u16, expr: &str) -> Result<usize, String> {
    let end = now_secs();
    let path = format!(
        "/api/v1/query_range?query={}&start={}&end={end}&step=1",
        encode(expr),
        end - RANGE_SECS
    );
    let data = api(port, &path)?;
    Ok(data["result"].as_array().map_or(0, Vec::len))
}

/// The series `expr` returns now.
pub fn instant_query(port: u16, expr: &str) -> Result<usize, String> {
    let data = api(port, &format!("/api/v1/query?query={}", encode(expr)))?;
    Ok(data["result"].as_array().map_or(0, Vec::len))
}

/// The values `label_values(SELECTOR, LABEL)` (or `label_values(LABEL)`) gives.
pub fn label_values(port: u16, query: &str) -> Result<Vec<String>, String> {
    let inner = query
        .trim()
        .strip_prefix("label_values(")
        .and_then(|q| q.strip_suffix(')'))
        .ok_or_else(|| format!("not a label_values query: {query}"))?;
    let (selector, label) = match inner.rfind(',') {
        Some(i) => (Some(inner[..i].trim()), inner[i + 1..].trim()),
        None => (None, inner.trim()),
    };
    let end = now_secs();
    let mut path = format!(
        "/api/v1/label/{label}/values?start={}&end={end}",
        end - RANGE_SECS
    );
    if let Some(selector) = selector {
        path.push_str(&format!("&match[]={}", encode(selector)));
    }
    let data = api(port, &path)?;
    Ok(data
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect())
}

/// Every selection of the dashboard's variables Grafana would offer: each variable's values
/// from its query, later variables' queries run with the earlier ones chosen. Errors name the
/// variables whose query returned nothing.
pub fn selections(
    port: u16,
    dashboard: &Dashboard,
) -> Result<Vec<BTreeMap<String, String>>, Vec<String>> {
    let mut selections = vec![BTreeMap::new()];
    let mut empty = Vec::new();
    for (name, query) in dashboard.variables() {
        let mut next = Vec::new();
        for chosen in &selections {
            match label_values(port, &substitute(&query, chosen)) {
                Ok(values) if !values.is_empty() => {
                    for v in values {
                        let mut s = chosen.clone();
                        s.insert(name.clone(), v);
                        next.push(s);
                    }
                }
                Ok(_) => empty.push(format!(
                    "{}: ${name} = {query} with {chosen:?}: no values",
                    dashboard.file
                )),
                Err(e) => empty.push(format!("{}: ${name} = {query}: {e}", dashboard.file)),
            }
        }
        if next.is_empty() {
            return Err(empty);
        }
        selections = next;
    }
    if empty.is_empty() {
        Ok(selections)
    } else {
        Err(empty)
    }
}
