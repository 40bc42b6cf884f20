//! The status page in a real browser: the demo serves it on loopback, headless Chromium
//! (Debian's `chromium`) loads it, runs its script (which polls `/api/state`) and dumps the
//! DOM. Every Region must have a row with its verdict and weight, and after a Region fails the
//! page must show it out of service with weight 0; with `--services`, a table per service, one
//! service out in a Region while the other stays in there.

use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;
use vantage_demo::scenario::parse_region_at;
use vantage_demo::{DemoOptions, Outputs};
use vantage_testkit::browser::Browser;

const REGIONS: [&str; 3] = ["us-east-1", "eu-west-1", "ap-southeast-1"];
/// When us-east-1 fails, from the start of the run.
const FAULT_AT: Duration = Duration::from_secs(3);
/// From the fault to the page showing us-east-1 out: the scenarios' detection budget (8 s)
/// plus a page refresh and Chromium's own start-up, with room for a loaded machine.
const OUT_DEADLINE: Duration = Duration::from_secs(3 + 14);

/// Loads `url` in a fresh headless Chromium and returns the DOM once the page's script has
/// run for three seconds of virtual time and drawn its tables.
async fn dump_dom(browser: &Browser, url: &str) -> Result<String, String> {
    let dom = browser.dump_dom(url, 3000).await?;
    if dom.contains("<table") {
        Ok(dom)
    } else {
        Err(format!("no page in the dump ({} bytes)", dom.len()))
    }
}

/// One Region's row as the browser rendered it.
#[derive(Debug)]
struct Row {
    verdict: String,
    service: String,
    weight: String,
}

impl Row {
    fn weight(&self) -> Option<u8> {
        self.weight.trim().parse().ok()
    }
}

/// The text of the `<td>` cells of one `<tr data-region="region">` in the dumped DOM (the
/// page builds the rows itself, so their markup is known: no nested cells).
fn row(dom: &str, region: &str) -> Option<Row> {
    let open = format!("<tr data-region=\"{region}\"");
    let start = dom.find(&open)?;
    let body = &dom[start..];
    let body = &body[..body.find("</tr>")?];
    let mut cells = Vec::new();
    let mut rest = body;
    while let Some(i) = rest.find("<td") {
        let after = &rest[i..];
        let content_start = after.find('>')? + 1;
        let end = after.find("</td>")?;
        cells.push((&after[..content_start], &after[content_start..end]));
        rest = &after[end..];
    }
    let weight = cells
        .iter()
        .find(|(tag, _)| tag.contains("class=\"weight\""))?;
    Some(Row {
        // Region, verdict, service, weight, ...
        verdict: cells.get(1)?.1.trim().to_owned(),
        service: cells.get(2)?.1.trim().to_owned(),
        weight: weight.1.trim().to_owned(),
    })
}

/// The part of the dump the page's script rendered (the script's own text comes after).
fn rendered(dom: &str) -> &str {
    &dom[..dom.find("<script").unwrap_or(dom.len())]
}

/// The replica columns' headers as the browser rendered them: id, class (`up`/`down`), text.
fn replica_headers(dom: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let mut rest = rendered(dom);
    while let Some(i) = rest.find("<th data-replica=\"") {
        let after = &rest[i + "<th data-replica=\"".len()..];
        let Some(id_end) = after.find('"') else { break };
        let id = after[..id_end].to_owned();
        let class = after
            .find("class=\"")
            .map(|c| &after[c + 7..])
            .and_then(|c| c.find('"').map(|e| c[..e].to_owned()))
            .unwrap_or_default();
        let text_start = after.find('>').map_or(0, |x| x + 1);
        let text_end = after.find("</th>").unwrap_or(text_start);
        out.push((id, class, after[text_start..text_end].to_owned()));
        rest = &after[text_end..];
    }
    out
}

/// The page's clock, `t = 2.4 s`: the time of the state it shows, from the start of the run.
fn clock(dom: &str) -> Option<f64> {
    let after = &dom[dom.find("id=\"clock\"")?..];
    let text = &after[after.find('>')? + 1..after.find("</span>")?];
    text.trim()
        .strip_prefix("t = ")?
        .strip_suffix(" s")?
        .parse()
        .ok()
}

/// Every Region's row, if all are there.
fn rows(dom: &str) -> Option<Vec<(&'static str, Row)>> {
    REGIONS.iter().map(|r| Some((*r, row(dom, r)?))).collect()
}

fn check_row(region: &str, row: &Row, dom: &str) {
    assert!(
        ["up", "down", "unknown"].contains(&row.verdict.as_str()),
        "{region}: verdict {:?}\n{dom}",
        row.verdict
    );
    assert!(
        ["in service", "OUT"].contains(&row.service.as_str()),
        "{region}: service {:?}\n{dom}",
        row.service
    );
    assert!(
        row.weight().is_some(),
        "{region}: weight {:?} is not an integer in 0..=255\n{dom}",
        row.weight
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_in_headless_chromium_shows_every_region_and_follows_a_failover() {
    let browser = Browser::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind page");
    let url = format!("http://{}/", listener.local_addr().expect("page addr"));

    let mut options = DemoOptions::embedded_default();
    options.faults = vec![parse_region_at("--fail", "us-east-1@3", false).expect("fault")];
    options.duration = Some(Duration::from_secs(20));
    assert_eq!(options.faults[0].at, FAULT_AT);
    let (stop, stopped) = watch::channel(false);
    let outputs = Outputs {
        page: Some(listener),
        events_file: None,
        live: false,
        print_events: true,
        metrics: None,
    };
    let start = Instant::now();
    let demo = tokio::spawn(vantage_demo::run(options, outputs, stopped));

    // Before the fault: every Region has a row, with a verdict and a weight; us-east-1 is in
    // service. The page's clock (the state's time) says whether a dump shows the state from
    // before the fault, however long Chromium took.
    tokio::time::sleep_until(start + Duration::from_secs(1)).await;
    let mut last = String::new();
    loop {
        assert!(
            Instant::now() < start + OUT_DEADLINE,
            "no dump showed every Region; last:\n{last}"
        );
        let dom = dump_dom(&browser, &url)
            .await
            .unwrap_or_else(|e| panic!("headless chromium on {url}: {e}"));
        if let (Some(rows), Some(t)) = (rows(&dom), clock(&dom)) {
            assert!(
                t < FAULT_AT.as_secs_f64(),
                "chromium too slow: its first complete page is from t = {t:.1} s, after the fault\n{dom}"
            );
            for (region, row) in &rows {
                check_row(region, row, &dom);
            }
            let us = &rows[0].1;
            assert_eq!(us.service, "in service", "before the fault:\n{dom}");
            // One aggregator: one replica column beside Route 53's, holding no lease.
            let headers = replica_headers(&dom);
            assert_eq!(headers.len(), 1, "{headers:?}\n{dom}");
            assert_eq!((headers[0].0.as_str(), headers[0].1.as_str()), ("1", "up"));
            assert!(rendered(&dom).contains("<th>Route 53</th>"), "{dom}");
            println!("page at t = {t:.1} s, before the fault: {rows:?}");
            break;
        }
        last = dom;
    }

    // After the fault: the page follows, us-east-1 shows OUT with weight 0.
    let mut last = String::new();
    loop {
        let began = Instant::now();
        assert!(
            began < start + OUT_DEADLINE,
            "the page never showed us-east-1 OUT with weight 0 by t = {OUT_DEADLINE:?}; last:\n{last}"
        );
        if began < start + FAULT_AT {
            tokio::time::sleep_until(start + FAULT_AT).await;
            continue;
        }
        let dom = dump_dom(&browser, &url)
            .await
            .unwrap_or_else(|e| panic!("headless chromium on {url}: {e}"));
        if let Some(rows) = rows(&dom) {
            for (region, row) in &rows {
                check_row(region, row, &dom);
            }
            let us = &rows[0].1;
            if us.service == "OUT" {
                assert_eq!(us.weight(), Some(0), "us-east-1 OUT:\n{dom}");
                for (region, row) in &rows[1..] {
                    assert_eq!(row.service, "in service", "{region}:\n{dom}");
                    assert!(row.weight() > Some(0), "{region}:\n{dom}");
                }
                let t = clock(&dom).unwrap_or(f64::NAN);
                println!("page at t = {t:.1} s, after the fault: {rows:?}");
                break;
            }
        }
        last = dom;
        tokio::time::sleep_until(began + Duration::from_secs(1)).await;
    }
    // The production page, as `vantage aggregator` serves it at `/`, from the demo's replica.
    let production = browser
        .dump_dom(&format!("{url}aggregator"), 500)
        .await
        .unwrap_or_else(|e| panic!("headless chromium on {url}aggregator: {e}"));
    assert!(
        production.contains(r#"<tr data-unit="us-east-1" data-verdict="down" data-in-service="false" data-weight="0""#),
        "{production}"
    );

    let _ = stop.send(true);
    let summary = tokio::time::timeout(Duration::from_secs(15), demo)
        .await
        .expect("the demo stops")
        .expect("the demo task")
        .expect("the demo runs");
    print!("{}", summary.render());
}

/// Three replicas: the page shows a column per replica beside Route 53's, marks the lease
/// holder, and once replica 2 is killed shows it down with its frozen votes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_each_replica_side_by_side_with_route53() {
    let browser = Browser::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind page");
    let url = format!("http://{}/", listener.local_addr().expect("page addr"));
    let mut options = DemoOptions::embedded_default();
    options.aggregators = 3;
    options.faults =
        vec![
            vantage_demo::scenario::parse_aggregator_at("--kill-aggregator", "2@3", false)
                .expect("fault"),
        ];
    options.duration = Some(Duration::from_secs(20));
    let (stop, stopped) = watch::channel(false);
    let outputs = Outputs {
        page: Some(listener),
        events_file: None,
        live: false,
        print_events: true,
        metrics: None,
    };
    let start = Instant::now();
    let demo = tokio::spawn(vantage_demo::run(options, outputs, stopped));
    tokio::time::sleep_until(start + Duration::from_secs(4)).await;
    let mut last = String::new();
    loop {
        assert!(
            Instant::now() < start + Duration::from_secs(17),
            "the page never showed replica 2 down beside the others; last:\n{last}"
        );
        let dom = dump_dom(&browser, &url)
            .await
            .unwrap_or_else(|e| panic!("headless chromium on {url}: {e}"));
        let headers = replica_headers(&dom);
        let ids: Vec<&str> = headers.iter().map(|h| h.0.as_str()).collect();
        let two_down = headers.iter().any(|h| h.0 == "2" && h.1 == "down");
        if ids == ["1", "2", "3"] && two_down {
            assert!(rendered(&dom).contains("<th>Route 53</th>"), "{dom}");
            let holders: Vec<_> = headers
                .iter()
                .filter(|h| h.2.contains('\u{2605}'))
                .collect();
            assert_eq!(holders.len(), 1, "one lease holder marked: {headers:?}");
            assert_ne!(holders[0].0, "2", "a down replica holds nothing it can use");
            for region in REGIONS {
                let row = format!("<tr data-replica-region=\"{region}\"");
                assert!(rendered(&dom).contains(&row), "{region}:\n{dom}");
            }
            assert!(
                rendered(&dom).contains("down frozen") && rendered(&dom).contains("frozen in"),
                "replica 2's votes shown frozen:\n{dom}"
            );
            println!("replica columns: {headers:?}");
            break;
        }
        last = dom;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let _ = stop.send(true);
    let summary = tokio::time::timeout(Duration::from_secs(15), demo)
        .await
        .expect("the demo stops")
        .expect("the demo task")
        .expect("the demo runs");
    print!("{}", summary.render());
}

/// The rendered table of one service (`--services`), up to its end.
fn service_table<'a>(dom: &'a str, service: &str) -> Option<&'a str> {
    let open = format!("<table class=\"service\" data-service=\"{service}\"");
    let body = &rendered(dom)[rendered(dom).find(&open)?..];
    Some(&body[..body.find("</table>")?])
}

/// `--services orders,payments`: a table per service; payments failing in eu-west-1 shows OUT
/// with weight 0 in payments' table while orders' eu-west-1 row stays in service with weight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_a_table_per_service_and_one_service_out_in_a_region() {
    let browser = Browser::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind page");
    let url = format!("http://{}/", listener.local_addr().expect("page addr"));
    let mut options = DemoOptions::embedded_default();
    options.services = vec!["orders".into(), "payments".into()];
    options.faults = vec![parse_region_at("--fail", "payments:eu-west-1@3", false).expect("fault")];
    options.duration = Some(Duration::from_secs(25));
    let (stop, stopped) = watch::channel(false);
    let outputs = Outputs {
        page: Some(listener),
        events_file: None,
        live: false,
        print_events: true,
        metrics: None,
    };
    let start = Instant::now();
    let demo = tokio::spawn(vantage_demo::run(options, outputs, stopped));
    tokio::time::sleep_until(start + FAULT_AT).await;
    let mut last = String::new();
    loop {
        let began = Instant::now();
        assert!(
            began < start + OUT_DEADLINE + Duration::from_secs(5),
            "the page never showed payments OUT in eu-west-1; last:\n{last}"
        );
        let dom = dump_dom(&browser, &url)
            .await
            .unwrap_or_else(|e| panic!("headless chromium on {url}: {e}"));
        let tables = service_table(&dom, "orders").zip(service_table(&dom, "payments"));
        if let Some((orders, payments)) = tables {
            let payments_eu = row(payments, "eu-west-1");
            if payments_eu.as_ref().is_some_and(|r| r.service == "OUT") {
                assert_eq!(payments_eu.unwrap().weight(), Some(0), "{dom}");
                for region in REGIONS {
                    let o =
                        row(orders, region).unwrap_or_else(|| panic!("orders {region}:\n{dom}"));
                    check_row(region, &o, &dom);
                    assert_eq!(o.service, "in service", "orders {region}:\n{dom}");
                    assert!(o.weight() > Some(0), "orders {region}:\n{dom}");
                    assert!(row(payments, region).is_some(), "payments {region}:\n{dom}");
                }
                assert!(rendered(&dom).contains("<h2>service orders</h2>"), "{dom}");
                assert!(
                    rendered(&dom).contains("<h2>service payments</h2>"),
                    "{dom}"
                );
                break;
            }
        }
        last = dom;
        tokio::time::sleep_until(began + Duration::from_secs(1)).await;
    }
    let _ = stop.send(true);
    let summary = tokio::time::timeout(Duration::from_secs(15), demo)
        .await
        .expect("the demo stops")
        .expect("the demo task")
        .expect("the demo runs");
    print!("{}", summary.render());
}
