//! The demo's status page: one HTML file (no build step), the JSON it polls, and every
//! component's `/metrics`, served by the shared server loop. The page shows the Regions as
//! traffic sees them, each aggregator replica's verdicts side by side with Route 53's
//! combined view (lease holder marked, down replicas with their frozen votes), and the
//! timeline. With `--services` the Regions come as one table per service (each service in
//! each Region in or out on its own), and `/metrics/status/<service>/<region>` serves each
//! unit's status endpoint metrics. `/aggregator` is the production status page
//! (`vantage aggregator` serves it at `/`) of the first running replica.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use vantage_runtime::http_server::{self, Limits};

/// What the page shows, replaced after every evaluation.
#[derive(Default)]
pub struct PageState {
    pub state: serde_json::Value,
    /// Unit key (the Region, or `<service>/<region>`) → its status endpoint, for
    /// `/metrics/status/<unit>`.
    pub status_endpoints: BTreeMap<String, SocketAddr>,
    /// The process's Prometheus rendering (agents and aggregator), if a recorder is installed.
    pub render: Option<Arc<dyn Fn() -> String + Send + Sync>>,
    /// The first running replica: `/aggregator` serves its status page, the page
    /// `vantage aggregator` serves at `/` in production.
    pub aggregator:
        Option<Arc<vantage_aggregator::service::Aggregator<vantage_aggregator::backend::DryRun>>>,
}

/// Serves the page until `stop` changes, through the shared server loop
/// ([`vantage_runtime::http_server`], default limits): the page is on loopback, but a browser
/// tab left open must not hold connections forever either.
pub async fn serve(
    listener: TcpListener,
    page: Arc<Mutex<PageState>>,
    mut stop: watch::Receiver<bool>,
) {
    let make_service = move |_peer| {
        let page = page.clone();
        hyper::service::service_fn(move |req: Request<Incoming>| {
            let page = page.clone();
            async move { Ok::<_, std::convert::Infallible>(handle(&page, req).await) }
        })
    };
    let shutdown = async move {
        let _ = stop.changed().await;
    };
    if let Err(e) = http_server::serve(listener, make_service, Limits::API, None, shutdown).await {
        tracing::warn!(error = %e, "the status page stopped");
    }
}

fn respond(
    status: StatusCode,
    content_type: &str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("cache-control", "no-store")
        .body(Full::new(body.into()))
        .expect("static parts")
}

async fn handle(page: &Mutex<PageState>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    match path.as_str() {
        "/" | "/index.html" => respond(StatusCode::OK, "text/html; charset=utf-8", INDEX_HTML),
        "/aggregator" => {
            let aggregator = lock(page).aggregator.clone();
            match aggregator {
                Some(a) => {
                    let service = req
                        .uri()
                        .query()
                        .and_then(|q| q.split('&').find_map(|p| p.strip_prefix("service=")))
                        .map(str::to_owned);
                    let html = a.status_page(
                        "/aggregator",
                        service.as_deref(),
                        std::time::SystemTime::now(),
                    );
                    let mut r = respond(StatusCode::OK, "text/html; charset=utf-8", html);
                    r.headers_mut().insert(
                        "content-security-policy",
                        http::HeaderValue::from_static(vantage_aggregator::status_page::CSP),
                    );
                    r
                }
                None => respond(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "no aggregator replica is running\n",
                ),
            }
        }
        "/api/state" => {
            let state = lock(page).state.to_string();
            respond(StatusCode::OK, "application/json", state)
        }
        "/metrics" => match lock(page).render.clone() {
            Some(render) => respond(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                render(),
            ),
            None => respond(
                StatusCode::NOT_FOUND,
                "text/plain",
                "no metrics recorder in this process\n",
            ),
        },
        p if p.starts_with("/metrics/status/") => {
            let region = &p["/metrics/status/".len()..];
            let addr = lock(page).status_endpoints.get(region).copied();
            match addr {
                Some(addr) => match fetch_metrics(addr).await {
                    Some(text) => respond(
                        StatusCode::OK,
                        "text/plain; version=0.0.4; charset=utf-8",
                        text,
                    ),
                    None => respond(
                        StatusCode::BAD_GATEWAY,
                        "text/plain",
                        "status endpoint did not answer\n",
                    ),
                },
                None => respond(
                    StatusCode::NOT_FOUND,
                    "text/plain",
                    "no such Region (with services: /metrics/status/<service>/<region>)\n",
                ),
            }
        }
        _ => respond(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    }
}

/// A plain HTTP/1.0 GET of a status endpoint's `/metrics`.
async fn fetch_metrics(addr: SocketAddr) -> Option<String> {
    let work = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(b"GET /metrics HTTP/1.0\r\nhost: status\r\n\r\n")
            .await
            .ok()?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.ok()?;
        let text = String::from_utf8_lossy(&out).to_string();
        text.split_once("\r\n\r\n").map(|(_, body)| body.to_owned())
    };
    tokio::time::timeout(std::time::Duration::from_secs(2), work)
        .await
        .ok()
        .flatten()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

const INDEX_HTML: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>vantage demo</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; }
 h1 { font-size: 1.3em; } table { border-collapse: collapse; margin: 1em 0; }
 th, td { border: 1px solid #ccc; padding: .3em .7em; text-align: left; vertical-align: top; }
 .in { color: #070; font-weight: bold; } .out { color: #b00; font-weight: bold; }
 .reason { color: #555; font-size: .9em; max-width: 40em; }
 #events li { margin: .2em 0; } .t { color: #888; font-family: monospace; }
 .down { color: #888; background: #eee; } .frozen { font-style: italic; }
</style></head>
<body>
<h1>vantage demo <span id="clock" class="t"></span></h1>
<p>Simulated Regions probed by agents in several vantage Regions; the aggregator decides (dry-run).
Metrics: <a href="/metrics">agents and aggregator</a> <span id="statuslinks"></span></p>
<table id="regions"><thead><tr><th>Region</th><th>verdict</th><th>service</th><th>weight</th>
<th>traffic</th><th>latency p50 / p99 by vantage</th><th>reason</th></tr></thead><tbody></tbody></table>
<div id="services"></div>
<h2>Replicas and Route 53</h2>
<p class="reason" id="replicanote">Each aggregator replica's own verdict per Region (its vote: the CLOUDWATCH_METRIC
health check it publishes), beside the CALCULATED health check Route 53 combines them into (healthy when a
majority of votes are). A down replica's vote is frozen at its last value. &#9733; marks the lease holder,
the only replica whose weights are written.</p>
<table id="replicas"><thead><tr></tr></thead><tbody></tbody></table>
<h2>Maintenance</h2><ul id="maintenance"></ul>
<h2>Timeline</h2><ul id="events"></ul>
<script>
function esc(s) { return String(s).replace(/[&<>"]/g, c => ({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c])); }
async function refresh() {
  try {
    const s = await (await fetch('/api/state', {cache: 'no-store'})).json();
    document.getElementById('clock').textContent = 't = ' + (s.t || 0).toFixed(1) + ' s';
    const row = r => {
      const lat = Object.entries(r.vantages || {}).map(([v, x]) =>
        esc(v) + ': ' + (x.p50_ms == null ? '–' : x.p50_ms.toFixed(1)) + ' / ' + (x.p99_ms == null ? '–' : x.p99_ms.toFixed(1)) + ' ms (' + esc(x.verdict) + ')').join('<br>');
      return '<tr data-region="' + esc(r.region) + '"' + (r.service ? ' data-service="' + esc(r.service) + '"' : '') + '><td>' + esc(r.region) + '</td><td>' + esc(r.verdict) +
        '</td><td class="' + (r.in_service ? 'in">in service' : 'out">OUT') + '</td><td class="weight">' + r.weight +
        '</td><td>' + (r.traffic_share * 100).toFixed(0) + '%</td><td>' + lat + '</td><td class="reason">' + esc(r.reason) + '</td></tr>';
    };
    const services = s.services || [];
    const regionsTable = document.getElementById('regions');
    if (services.length === 0) {
      regionsTable.style.display = '';
      regionsTable.querySelector('tbody').innerHTML = (s.regions || []).map(row).join('');
      document.getElementById('services').innerHTML = '';
    } else {
      // One table per service: each service's Regions go out and come back on their own.
      regionsTable.style.display = 'none';
      const head = regionsTable.querySelector('thead').innerHTML;
      document.getElementById('services').innerHTML = services.map(svc =>
        '<h2>service ' + esc(svc) + '</h2><table class="service" data-service="' + esc(svc) + '"><thead>' + head +
        '</thead><tbody>' + (s.regions || []).filter(r => r.service === svc).map(row).join('') + '</tbody></table>').join('');
    }
    const reps = s.replicas || [];
    document.querySelector('#replicas thead tr').innerHTML = '<th>Region</th>' + reps.map(r =>
      '<th data-replica="' + esc(r.id) + '" class="' + (r.up ? 'up' : 'down') + '">replica ' + esc(r.id) +
      (r.holder ? ' &#9733;' : '') + (r.up ? '' : ' (down)') + '</th>').join('') + '<th>Route 53</th>';
    document.querySelector('#replicas tbody').innerHTML = Object.entries(s.route53 || {}).map(([region, c]) =>
      '<tr data-replica-region="' + esc(region) + '"><td>' + esc(region) + '</td>' + reps.map(r => {
        const own = (r.regions || {})[region] || {};
        const vote = own.vote === false ? 'OUT' : 'in';
        const text = r.up ? esc(own.verdict || 'unknown') + ' · ' + vote : 'down · frozen ' + vote;
        return '<td data-replica="' + esc(r.id) + '" class="' + (r.up ? (own.vote === false ? 'out' : 'in') : 'down frozen') +
          '">' + text + '</td>';
      }).join('') + '<td data-route53="1" class="' + (c.in_service ? 'in">in service' : 'out">OUT') + ' (' + c.healthy_votes +
      '/' + Object.keys(c.votes || {}).length + ' healthy, need ' + c.threshold + ')</td></tr>').join('');
    document.getElementById('statuslinks').innerHTML = (s.regions || []).map(r =>
      ' · <a href="/metrics/status/' + esc(r.unit || r.region) + '">status ' + esc(r.unit || r.region) + '</a>').join('');
    const m = s.maintenance || {};
    document.getElementById('maintenance').innerHTML =
      (m.active || []).map(w => '<li><b>active</b> ' + esc(w.start) + ' to ' + esc(w.end) + ': held out ' +
        esc((w.held || []).join(', ') || 'nothing') + ((w.not_held || []).length ? ' (kept in for min_healthy: ' +
        esc(w.not_held.join(', ')) + ')' : '') + ' <span class="reason">' + esc(w.reason || '') + '</span></li>').join('') +
      (m.upcoming || []).map(w => '<li>upcoming ' + esc(w.start) + ' to ' + esc(w.end) + ': ' +
        esc((w.units || []).join(', ')) + ' <span class="reason">' + esc(w.reason || '') + '</span></li>').join('') +
      Object.entries(m.pins_until || {}).map(([u, t]) => '<li>pin on ' + esc(u) + ' until ' + esc(t) + '</li>').join('') ||
      '<li class="reason">none scheduled</li>';
    document.getElementById('events').innerHTML = (s.events || []).slice().reverse().map(e =>
      '<li><span class="t">' + e.t.toFixed(1) + ' s</span> <b>' + esc(e.event) + '</b> ' + (e.service ? esc(e.service) + ' ' : '') + esc(e.region || e.vantage || '') +
      ' <span class="reason">' + esc(e.reason || '') + '</span></li>').join('');
  } catch (e) { /* the demo may have ended */ }
}
refresh(); setInterval(refresh, 1000);
</script></body></html>
"#;
