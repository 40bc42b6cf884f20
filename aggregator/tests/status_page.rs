//! The aggregator's status page (`GET /`) served by the real API on loopback: after a Region
//! fails, the page (as headless Chromium renders it) shows it out with weight 0 and the
//! transition in the decision log, with latency and timeline charts per Region; it is behind
//! the state token when one is set, takes GET only, escapes what it echoes, and stays small and
//! navigable at 200 services. A screenshot is written for docs/ when
//! `VANTAGE_STATUS_PAGE_SCREENSHOT` names a file.

mod reports;

use reports::{ingest, stats, Sender};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use vantage_agent::report::TargetInterval;
use vantage_aggregator::backend::DryRun;
use vantage_aggregator::ingest::Ingested;
use vantage_aggregator::reload;
use vantage_aggregator::service::{self, Aggregator};
use vantage_protocol::config::TargetKind;
use vantage_testkit::browser::Browser;
use vantage_testkit::http::exchange;

const KEY: &str = "aggregator-page-key-0123456789ab";
const TOKEN: &str = "page-reader-token-0123456789";
const VANTAGES: [&str; 3] = ["ap-southeast-1", "eu-west-1", "us-east-1"];

fn fleet_text(services: usize, token: bool, state_file: &std::path::Path) -> String {
    let mut t = format!(
        r#"[fleet]
name = "shop"
report_interval = "1s"
[aggregator]
url = "http://127.0.0.1:1"
window = "3s"
evaluate_every = "1s"
state_file = {state:?}
{token}[aggregator.keys.k1]
env = "VANTAGE_TEST_PAGE_KEY"
vantages = ["ap-southeast-1", "eu-west-1", "us-east-1"]
allow_shared = true
[agents.auth]
key_id = "k1"
"#,
        state = state_file.display().to_string(),
        token = if token {
            "state_token_env = \"VANTAGE_TEST_PAGE_TOKEN\"\n"
        } else {
            ""
        }
    );
    for v in VANTAGES {
        t.push_str(&format!("[[vantages]]\nregion = \"{v}\"\n"));
    }
    for i in 0..services {
        let name = format!("svc-{i:03}");
        t.push_str(&format!(
            "[[services]]\nname = \"{name}\"\nglobal = {{ url = \"https://{name}.example.com/\" }}\n"
        ));
        for r in VANTAGES {
            t.push_str(&format!(
                "[[services.regions]]\nname = \"{r}\"\nstatus_url = \"https://{name}-{r}.example.com/status\"\n"
            ));
        }
    }
    t
}

struct Fleet {
    agg: Arc<Aggregator<DryRun>>,
    addr: SocketAddr,
    next_ms: u64,
    seq: u64,
    _stop: watch::Sender<bool>,
    _dir: vantage_testkit::dirs::TempDir,
}

impl Fleet {
    async fn start(services: usize, token: bool) -> Fleet {
        let dir = vantage_testkit::dirs::temp_dir("agg-page");
        let path = dir.path().join("fleet.toml");
        std::env::set_var("VANTAGE_TEST_PAGE_KEY", KEY);
        std::env::set_var("VANTAGE_TEST_PAGE_TOKEN", TOKEN);
        std::fs::write(
            &path,
            fleet_text(services, token, &dir.path().join("state.json")),
        )
        .unwrap();
        let config = reload::load(&path, None).unwrap();
        let agg = Arc::new(Aggregator::new(config, DryRun::new(), None).unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, rx) = watch::channel(false);
        tokio::spawn(service::serve(agg.clone(), listener, rx));
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        Fleet {
            agg,
            addr,
            next_ms: now.as_millis() as u64 / 1000 * 1000 - 120_000,
            seq: 1,
            _stop: stop,
            _dir: dir,
        }
    }

    /// Every vantage reports one interval of `services` services' status targets, `failing`
    /// units (`svc-000/eu-west-1`) failing; then the aggregator decides.
    fn interval(&mut self, services: usize, failing: &[&str]) {
        let mut targets = Vec::new();
        for i in 0..services {
            for r in VANTAGES {
                let unit = format!("svc-{i:03}/{r}");
                targets.push((
                    format!("svc-{i:03}/status:{r}"),
                    r,
                    stats(failing.contains(&unit.as_str())),
                ));
            }
        }
        let now = UNIX_EPOCH + Duration::from_millis(self.next_ms + 1_200);
        for v in VANTAGES {
            let t: Vec<TargetInterval<'_>> = targets
                .iter()
                .map(|(id, region, s)| TargetInterval {
                    id,
                    kind: TargetKind::Status,
                    region: Some(region),
                    stats: s,
                })
                .collect();
            self.seq += 1;
            let sender = Sender {
                fleet: "shop",
                vantage: v,
                key_id: "k1",
                key: KEY.as_bytes(),
            };
            let r = ingest(&self.agg, &sender, self.seq, self.next_ms, &t, now);
            assert!(matches!(r, Ok(Ingested::Accepted { .. })), "{r:?}");
        }
        self.agg.decide(now);
        self.next_ms += 1_000;
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// The attribute `name` of the table row for `unit`.
fn row_attr(dom: &str, unit: &str, name: &str) -> Option<String> {
    let start = dom.find(&format!("<tr data-unit=\"{unit}\""))?;
    let row = &dom[start..start + dom[start..].find('>')?];
    let at = row.find(&format!("{name}=\""))? + name.len() + 2;
    Some(row[at..at + row[at..].find('"')?].to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_failure_the_page_shows_the_region_out_with_charts_and_the_log() {
    let mut fleet = Fleet::start(2, false).await;
    // For the screenshot in docs/, a quarter of an hour of history first (fake time).
    let screenshot = std::env::var_os("VANTAGE_STATUS_PAGE_SCREENSHOT");
    if screenshot.is_some() {
        fleet.next_ms -= 900_000;
        for _ in 0..900 {
            fleet.interval(2, &[]);
        }
    }
    for _ in 0..4 {
        fleet.interval(2, &[]);
    }
    for _ in 0..4 {
        fleet.interval(2, &["svc-000/eu-west-1"]);
    }
    let browser = Browser::new();
    let dom = browser
        .dump_dom(&fleet.url("/"), 500)
        .await
        .unwrap_or_else(|e| panic!("headless chromium: {e}"));
    assert_eq!(
        row_attr(&dom, "svc-000/eu-west-1", "data-in-service").as_deref(),
        Some("false"),
        "{dom}"
    );
    assert_eq!(
        row_attr(&dom, "svc-000/eu-west-1", "data-weight").as_deref(),
        Some("0")
    );
    assert_eq!(
        row_attr(&dom, "svc-000/eu-west-1", "data-verdict").as_deref(),
        Some("down")
    );
    assert_eq!(
        row_attr(&dom, "svc-001/eu-west-1", "data-in-service").as_deref(),
        Some("true")
    );
    assert_eq!(
        row_attr(&dom, "svc-000/us-east-1", "data-in-service").as_deref(),
        Some("true")
    );
    // Charts for every Region of both services: latency per vantage and the timeline.
    assert_eq!(dom.matches("<div class=\"unit\"").count(), 6, "{dom}");
    // One line (or, before a minute has passed, one point) per vantage in each of the six.
    assert_eq!(dom.matches("class=\"latency\"").count(), 6 * 3, "{dom}");
    assert!(
        dom.contains("<title>out (quorum_down)</title>"),
        "the transition is marked"
    );
    assert!(
        dom.contains("class=\"out\""),
        "the span out of service is shaded"
    );
    // The decision log, newest first, has the take-out.
    let log = &dom[dom.find("id=\"log\"").expect("the log")..];
    assert!(log.contains("region_out"), "{log}");

    if let Some(png) = screenshot {
        browser
            .screenshot(&fleet.url("/"), std::path::Path::new(&png), 1200, 900)
            .await
            .unwrap_or_else(|e| panic!("screenshot: {e}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_read_only_behind_the_state_token_and_escapes_what_it_echoes() {
    let mut fleet = Fleet::start(1, true).await;
    fleet.interval(1, &[]);
    let addr = fleet.addr;
    let refused = exchange(addr, "GET", "/", &[], b"").await.unwrap();
    assert_eq!(refused.status, 401);
    assert_eq!(refused.header("www-authenticate"), Some("Bearer"));
    assert!(!refused.body.contains(TOKEN));
    let wrong = exchange(addr, "GET", "/", &[("authorization", "Bearer nope")], b"")
        .await
        .unwrap();
    assert_eq!(wrong.status, 401);
    let bearer = format!("Bearer {TOKEN}");
    let page = exchange(addr, "GET", "/", &[("authorization", &bearer)], b"")
        .await
        .unwrap();
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let csp = page.header("content-security-policy").unwrap();
    assert!(
        csp.contains("default-src 'none'") && !csp.contains("script-src"),
        "{csp}"
    );
    assert!(page.body.contains("data-unit=\"svc-000/eu-west-1\""));
    assert!(!page.body.contains("<script"));
    let post = exchange(addr, "POST", "/", &[("authorization", &bearer)], b"x")
        .await
        .unwrap();
    assert_eq!(post.status, 405);
    let probe = exchange(
        addr,
        "GET",
        "/?service=%3Cscript%3Ealert(1)%3C/script%3E",
        &[("authorization", &bearer)],
        b"",
    )
    .await
    .unwrap();
    assert_eq!(probe.status, 200);
    assert!(!probe.body.contains("<script>"), "{}", probe.body);
    assert!(probe
        .body
        .contains("No service &lt;script&gt;alert(1)&lt;/script&gt;"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_services_open_on_a_summary_linking_to_each_service() {
    let mut fleet = Fleet::start(200, false).await;
    for _ in 0..3 {
        fleet.interval(200, &["svc-123/us-east-1"]);
    }
    let page = exchange(fleet.addr, "GET", "/", &[], b"").await.unwrap();
    assert_eq!(page.status, 200);
    println!("summary of 200 services: {} bytes", page.body.len());
    assert_eq!(page.body.matches("<tr data-service=").count(), 200);
    assert!(page
        .body
        .contains("<a href=\"/?service=svc-123\">svc-123</a>"));
    assert!(
        page.body.len() < 256 * 1024,
        "the summary of 200 services is {} bytes",
        page.body.len()
    );
    let one = exchange(fleet.addr, "GET", "/?service=svc-123", &[], b"")
        .await
        .unwrap();
    assert_eq!(one.body.matches("<section class=\"service\"").count(), 1);
    assert_eq!(
        row_attr(&one.body, "svc-123/us-east-1", "data-verdict").as_deref(),
        Some("down")
    );
    assert!(one.body.len() < 256 * 1024, "{} bytes", one.body.len());
    println!("one service's page: {} bytes", one.body.len());
}
