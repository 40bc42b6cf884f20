//! `vantage override`: builds an override request (pins, freeze, force, reason and a fresh
//! nonce), signs it with an admin key by the same scheme agents sign reports with
//! (`vantage_protocol::auth::sign`), posts it to `<aggregator>/v1/overrides` and prints the
//! answer, so operators never assemble HMAC headers by hand. Everything that can be checked
//! here is (the key id is one of `aggregator.admin_keys`, every Region is in the fleet), so a
//! typo costs no round trip. With `aggregator.replicas` the same override goes to every replica
//! at once, each copy with a nonce (and so a signature) of its own, and one line per replica
//! says how it went: each replica applies overrides to its own state, so one that missed it
//! would keep voting without it. Exit: 0 when every aggregator applied it (2xx), 1 when any
//! refused or was unreachable (named on stderr), 2 on bad input. Its flags and help text live
//! here too, beside the code that reads them.

use super::EXIT_BAD_INPUT;
use bytes::Bytes;
use clap::Args;
use http::header::CONTENT_TYPE;
use http::{Request, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::task::JoinSet;
use vantage_aggregator::model::Pin;
use vantage_aggregator::overrides::OverrideRequest;
use vantage_probe::spec::{HttpVersionPref, TlsOptions};
use vantage_probe::tls::build_client_config;
use vantage_protocol::auth;
use vantage_protocol::config::FleetConfig;

/// The environment variable holding the admin key when `--key-file` is not given.
pub const ADMIN_KEY_ENV: &str = "VANTAGE_ADMIN_KEY";
/// The whole exchange, connect to last byte.
const TIMEOUT: Duration = Duration::from_secs(15);
/// The largest answer read.
const MAX_ANSWER_BYTES: usize = 256 * 1024;

pub(super) const OVERRIDE_HELP: &str = "\
Example: take eu-west-1 out by hand and hold automation while you investigate:
  VANTAGE_ADMIN_KEY=$(cat ops-alice.key) vantage override --config fleet.toml \\
      --key-id ops-alice --pin eu-west-1=down --freeze --reason 'INC-1234: bad deploy'
and give it back to automation afterwards:
  vantage override --config fleet.toml --key-id ops-alice --pin eu-west-1=clear --unfreeze
or hold it out for a maintenance window that ends on its own (then it earns its way back):
  vantage override --config fleet.toml --key-id ops-alice --pin eu-west-1=down \\
      --until 2026-12-03T02:00:00Z --reason 'CHG-42: database upgrade'
The key id must be one of [aggregator.admin_keys] in the fleet file (agent keys are refused);
the request carries a fresh nonce and is signed like agents' reports, so it cannot be replayed.
Pins that leave fewer than policy.min_healthy Regions able to serve need --force, and raise an
alert. Prints the aggregator's answer (the overrides now in force, or why it refused).
With aggregator.replicas in the fleet file the override goes to every replica (a fresh nonce
for each) and one line per replica says `<id>: applied|refused|unreachable ...`; --aggregator-url
is then refused (change the replicas' URLs in the fleet file).
Exit status: 0 applied (by every replica), 1 refused or unreachable (by any replica, named on
stderr), 2 bad input.";

#[derive(Args, Debug)]
pub(super) struct OverrideArgs {
    /// Fleet file (TOML): the aggregator's URL, its Regions and admin key ids.
    #[arg(long, value_name = "FILE", env = "VANTAGE_CONFIG")]
    config: PathBuf,
    /// Aggregator base URL (default: aggregator.url from the fleet file); refused when the fleet
    /// file lists aggregator.replicas, which all get the override.
    #[arg(long, value_name = "URL", env = "VANTAGE_AGGREGATOR_URL")]
    aggregator_url: Option<String>,
    /// Extra CA certificates (PEM) for the aggregator's TLS.
    #[arg(long, value_name = "FILE", env = "VANTAGE_AGGREGATOR_CA_FILE")]
    aggregator_ca_file: Option<PathBuf>,
    /// Admin key id: one of [aggregator.admin_keys].
    #[arg(long, value_name = "ID")]
    key_id: String,
    /// File holding the admin key (default: the VANTAGE_ADMIN_KEY variable).
    #[arg(long, value_name = "FILE")]
    key_file: Option<PathBuf>,
    /// Pin a Region in (up) or out (down) of service, or remove its pin (clear). Repeatable.
    /// With [[services]], REGION pins that Region for every service (or for --service), and
    /// SERVICE/REGION one service there.
    #[arg(long, value_name = "REGION=up|down|clear", value_parser = pin_arg)]
    pin: Vec<(String, Option<Pin>)>,
    /// With [[services]]: the service bare --pin Regions belong to.
    #[arg(long, value_name = "NAME")]
    service: Option<String>,
    /// Freeze automation: only pins change anything.
    #[arg(long, conflicts_with = "unfreeze")]
    freeze: bool,
    /// Lift the freeze.
    #[arg(long)]
    unfreeze: bool,
    /// Accept pins that leave fewer than policy.min_healthy Regions able to serve.
    #[arg(long)]
    force: bool,
    /// Why: recorded in the decision log and shown by GET /v1/state.
    #[arg(long, value_name = "TEXT")]
    reason: Option<String>,
    /// The pins expire at this instant (RFC 3339, e.g. 2026-12-03T02:00:00Z): a maintenance
    /// window the aggregator ends on its own. Without it a pin holds until cleared.
    #[arg(long, value_name = "TIME", value_parser = until_arg)]
    until: Option<String>,
}

/// `--until`: checked here so a typo fails before anything is signed.
fn until_arg(s: &str) -> Result<String, String> {
    vantage_protocol::config::parse_rfc3339_ms(s)
        .map(|_| s.to_owned())
        .ok_or_else(|| format!("--until {s:?}: use RFC 3339, e.g. 2026-12-03T02:00:00Z"))
}

/// Bad input: what to print, exit 2.
struct BadInput(String);

/// One `--pin REGION=up|down|clear`.
pub fn pin_arg(s: &str) -> Result<(String, Option<Pin>), String> {
    let (region, state) = s
        .split_once('=')
        .ok_or_else(|| format!("--pin {s:?}: use REGION=up, REGION=down or REGION=clear"))?;
    let pin = match state {
        "up" => Some(Pin::Up),
        "down" => Some(Pin::Down),
        "clear" => None,
        other => return Err(format!("--pin {s:?}: {other:?} is not up, down or clear")),
    };
    Ok((region.to_owned(), pin))
}

pub async fn run(args: OverrideArgs) -> ExitCode {
    let prepared = match prepare(&args) {
        Ok(p) => p,
        Err(BadInput(message)) => {
            eprintln!("vantage: {message}");
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    let client = match client(&args) {
        Ok(c) => c,
        Err(message) => {
            eprintln!("vantage: {message}");
            return ExitCode::FAILURE;
        }
    };
    if let [single] = prepared.as_slice() {
        if single.replica.is_none() {
            return report_single(&client, single).await;
        }
    }
    report_replicas(&client, prepared).await
}

/// One aggregator: its answer as it came, pretty-printed when JSON.
async fn report_single(client: &HttpClient, p: &Prepared) -> ExitCode {
    match send(client, p).await {
        Err(message) => {
            eprintln!("vantage: {message}");
            ExitCode::FAILURE
        }
        Ok((status, answer)) => {
            println!("{}", pretty(&answer));
            if status.is_success() {
                ExitCode::SUCCESS
            } else {
                eprintln!("vantage: the aggregator refused the override ({status})");
                ExitCode::FAILURE
            }
        }
    }
}

/// Every replica at once, one line each in the fleet file's order; the ones that did not apply
/// it are named on stderr.
async fn report_replicas(client: &HttpClient, prepared: Vec<Prepared>) -> ExitCode {
    let mut sends = JoinSet::new();
    for (i, p) in prepared.iter().enumerate() {
        let (client, p) = (client.clone(), p.clone());
        sends.spawn(async move { (i, send(&client, &p).await) });
    }
    let mut results: Vec<Option<Result<(http::StatusCode, Bytes), String>>> =
        vec![None; prepared.len()];
    while let Some(joined) = sends.join_next().await {
        if let Ok((i, result)) = joined {
            results[i] = Some(result);
        }
    }
    let mut failed = Vec::new();
    for (p, result) in prepared.iter().zip(results) {
        let id = p.replica.as_deref().unwrap_or("aggregator");
        match result {
            Some(Ok((status, answer))) if status.is_success() => {
                println!("{id}: applied ({status}) {}", compact(&answer));
            }
            Some(Ok((status, answer))) => {
                println!("{id}: refused ({status}) {}", compact(&answer));
                failed.push(format!("{id} refused it ({status})"));
            }
            Some(Err(why)) => {
                println!("{id}: unreachable: {why}");
                failed.push(format!("{id} was unreachable"));
            }
            None => {
                println!("{id}: unreachable: the request task failed");
                failed.push(format!("{id} was unreachable"));
            }
        }
    }
    if failed.is_empty() {
        return ExitCode::SUCCESS;
    }
    eprintln!(
        "vantage: the override did not reach every replica ({} of {}): {}; send it again once \
         they answer (replicas that applied it already keep it)",
        prepared.len() - failed.len(),
        prepared.len(),
        failed.join(", ")
    );
    ExitCode::FAILURE
}

/// One signed request, ready to send: the URL, the body and its signature headers.
#[derive(Clone)]
struct Prepared {
    /// The replica's id; `None` for the single `aggregator.url`.
    replica: Option<String>,
    url: Uri,
    body: Bytes,
    key_id: String,
    timestamp: u64,
    signature: String,
}

/// One signed request per aggregator (every replica, or the one aggregator).
fn prepare(args: &OverrideArgs) -> Result<Vec<Prepared>, BadInput> {
    let fleet = FleetConfig::load(&args.config).map_err(|e| BadInput(e.to_string()))?;
    if !fleet.aggregator.admin_keys.contains_key(&args.key_id) {
        let known: Vec<&String> = fleet.aggregator.admin_keys.keys().collect();
        return Err(BadInput(format!(
            "--key-id {:?} is not in [aggregator.admin_keys] of {} (it has {known:?})",
            args.key_id,
            args.config.display()
        )));
    }
    let key = load_key(args)?;
    if let Some(name) = &args.service {
        if !fleet.has_named_services() || fleet.service(name).is_none() {
            let names: Vec<&str> = fleet.services().iter().map(|s| s.name.as_str()).collect();
            return Err(BadInput(format!(
                "--service {name:?}: not a service of the fleet ({names:?})"
            )));
        }
    }
    // Bare Regions, and units (SERVICE/REGION) of a fleet with [[services]].
    let mut regions: Vec<String> = fleet.all_regions();
    if fleet.has_named_services() {
        for s in fleet.services() {
            regions.extend(s.region_names().iter().map(|r| s.unit(r)));
        }
    }
    let mut pin = BTreeMap::new();
    for (region, state) in &args.pin {
        if !regions.contains(region) {
            return Err(BadInput(format!(
                "--pin {region}: not a Region of the fleet ({regions:?})"
            )));
        }
        if pin.insert(region.clone(), *state).is_some() {
            return Err(BadInput(format!("--pin {region} is given twice")));
        }
    }
    let freeze = match (args.freeze, args.unfreeze) {
        (true, _) => Some(true),
        (_, true) => Some(false),
        _ => None,
    };
    if pin.is_empty() && freeze.is_none() {
        return Err(BadInput(
            "nothing to change: give --pin REGION=up|down|clear, --freeze or --unfreeze".into(),
        ));
    }
    let endpoints = fleet.aggregator.replica_endpoints();
    let destinations: Vec<(Option<String>, String)> = match &args.aggregator_url {
        Some(_) if endpoints.iter().any(|e| e.id.is_some()) => {
            let ids: Vec<&str> = endpoints.iter().filter_map(|e| e.id.as_deref()).collect();
            return Err(BadInput(format!(
                "--aggregator-url (or VANTAGE_AGGREGATOR_URL) replaces the one aggregator's URL, \
                 but the fleet file lists {} aggregator replicas ({}) and the override goes to \
                 each: remove it and change aggregator.replicas[].url in the fleet file instead",
                ids.len(),
                ids.join(", ")
            )));
        }
        Some(url) => vec![(None, url.clone())],
        None => endpoints.into_iter().map(|e| (e.id, e.url)).collect(),
    };
    if destinations.is_empty() {
        return Err(BadInput("the fleet file names no aggregator".into()));
    }
    let mut prepared = Vec::with_capacity(destinations.len());
    for (replica, base) in destinations {
        let url: Uri = format!("{}/v1/overrides", base.trim_end_matches('/'))
            .parse()
            .map_err(|e| BadInput(format!("aggregator URL {base:?}: {e}")))?;
        if !matches!(url.scheme_str(), Some("https" | "http")) {
            return Err(BadInput(format!(
                "aggregator URL {base:?}: use https:// (or http://)"
            )));
        }
        // A nonce of its own for each replica: a replica that saw one copy must not take the
        // next for a replay, and a copy captured on its way to one cannot be replayed to another.
        let request = OverrideRequest {
            nonce: format!("{:032x}", rand::random::<u128>()),
            pin: pin.clone(),
            freeze,
            force: args.force,
            reason: args.reason.clone(),
            service: args.service.clone(),
            until: args.until.clone(),
        };
        let body = serde_json::to_vec(&request).map_err(|e| BadInput(e.to_string()))?;
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let signature = auth::sign(&key, timestamp, &body);
        prepared.push(Prepared {
            replica,
            url,
            body: Bytes::from(body),
            key_id: args.key_id.clone(),
            timestamp,
            signature,
        });
    }
    Ok(prepared)
}

/// The admin key: `--key-file` (trailing newline ignored), else `VANTAGE_ADMIN_KEY`.
fn load_key(args: &OverrideArgs) -> Result<Vec<u8>, BadInput> {
    let key = match &args.key_file {
        Some(path) => {
            let mut k = std::fs::read(path)
                .map_err(|e| BadInput(format!("--key-file {}: {e}", path.display())))?;
            while k.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                k.pop();
            }
            k
        }
        None => std::env::var(ADMIN_KEY_ENV)
            .map_err(|_| {
                BadInput(format!(
                    "no admin key: set {ADMIN_KEY_ENV} or give --key-file FILE"
                ))
            })?
            .into_bytes(),
    };
    auth::check_key(&key).map_err(|e| BadInput(format!("admin key: {e}")))?;
    Ok(key)
}

type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The client every request goes through: webpki roots plus `--aggregator-ca-file`.
fn client(args: &OverrideArgs) -> Result<HttpClient, String> {
    let options = TlsOptions {
        insecure: false,
        ca_file: args.aggregator_ca_file.clone(),
    };
    let mut tls = build_client_config(&options, HttpVersionPref::Auto)
        .map_err(|e| format!("TLS set-up: {e}"))?;
    // The connector builder sets ALPN itself and refuses a config that already has it.
    tls.alpn_protocols.clear();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new()).build(https))
}

/// Posts one signed request within [`TIMEOUT`]; the status and the (bounded) answer.
async fn send(client: &HttpClient, p: &Prepared) -> Result<(http::StatusCode, Bytes), String> {
    let request = Request::post(p.url.clone())
        .header(CONTENT_TYPE, "application/json")
        .header(auth::HEADER_KEY_ID, &p.key_id)
        .header(auth::HEADER_TIMESTAMP, p.timestamp.to_string())
        .header(auth::HEADER_SIGNATURE, &p.signature)
        .body(Full::new(p.body.clone()))
        .map_err(|e| format!("building the request: {e}"))?;
    let exchange = async {
        let response = client
            .request(request)
            .await
            .map_err(|e| format!("{}: {}", p.url, vantage_runtime::errors::chain(&e)))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes();
        Ok((status, body))
    };
    tokio::time::timeout(TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| Err(format!("no answer from {} within {TIMEOUT:?}", p.url)))
}

/// The answer pretty-printed when it is JSON, else as text.
fn pretty(answer: &[u8]) -> String {
    match serde_json::from_slice::<serde_json::Value>(answer) {
        Ok(v) => serde_json::to_string_pretty(&v).unwrap_or_default(),
        Err(_) => String::from_utf8_lossy(answer).into_owned(),
    }
}

/// The answer on one line: compact JSON, or the text with its line breaks folded.
fn compact(answer: &[u8]) -> String {
    match serde_json::from_slice::<serde_json::Value>(answer) {
        Ok(v) => v.to_string(),
        Err(_) => String::from_utf8_lossy(answer)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" "),
    }
}
