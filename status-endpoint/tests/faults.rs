//! Dependencies that hang or are missing, and extra HTTP / TCP dependencies.

mod harness;

use harness::{assert_schema, LambdaMoto as _, Moto, Server};
use std::time::Duration;

const REGION: &str = "eu-west-1";
const TOKEN: &str = "test-token-0123456789";

/// A database that accepts TCP and never answers costs the deadline, not a stuck request; and
/// concurrent callers during that round all get the same bounded answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn black_hole_database_costs_the_deadline() {
    let pg_hole = vantage_testkit::black_hole().await;
    let my_hole = vantage_testkit::black_hole().await;
    let deadline = Duration::from_millis(800);
    let server = Server::start(
        &format!(
            r#"
region = "{REGION}"
token = "{TOKEN}"
deadline = "800ms"
cache_ttl = "0s"
[aurora.writer]
url = "postgres://postgres@127.0.0.1:{}/postgres"
[aurora.reader]
url = "mysql://root@127.0.0.1:{}/mysql"
timeout = "300ms"
"#,
            pg_hole.port(),
            my_hole.port()
        ),
        None,
    )
    .await
    .unwrap();
    let (a, b) = tokio::join!(server.deep("", Some(TOKEN)), server.deep("", None));
    for answer in [a.unwrap(), b.unwrap()] {
        assert_eq!(answer.status, 503, "{:#}", answer.body);
        assert!(
            answer.elapsed >= Duration::from_millis(700)
                && answer.elapsed < deadline + Duration::from_millis(400),
            "answered after {:?}",
            answer.elapsed
        );
        assert_schema(&answer.body);
    }
    let a = server.deep("", Some(TOKEN)).await.unwrap();
    let writer = &a.body["checks"]["aurora-writer:responseTime"][0];
    assert_eq!(writer["output"], "timed out after 800ms", "{writer}");
    let reader = &a.body["checks"]["aurora-reader:responseTime"][0];
    assert_eq!(reader["output"], "timed out after 300ms", "{reader}");
    // Liveness stays instant while the deep check hangs.
    let (deep, live) = tokio::join!(server.deep("", None), server.get("/status", &[]));
    let live = live.unwrap();
    assert_eq!(live.status, 200);
    assert!(
        live.elapsed < Duration::from_millis(200),
        "{:?}",
        live.elapsed
    );
    assert_eq!(deep.unwrap().status, 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_lambda_function_fails() {
    let moto = Moto::shared();
    moto.create_function(REGION, "orders-api").await.unwrap();
    let server = Server::start(
        &format!(
            "region = \"{REGION}\"\ntoken = \"{TOKEN}\"\n[lambda]\nfunction = \"no-such-function\"\n"
        ),
        Some(moto.sdk_config(REGION).await),
    )
    .await
    .unwrap();
    let a = server.deep("?verbose", Some(TOKEN)).await.unwrap();
    assert_eq!(a.status, 503, "{:#}", a.body);
    assert_eq!(a.check("lambda:responseTime"), "fail");
    let output = a.body["checks"]["lambda:responseTime"][0]["output"]
        .as_str()
        .unwrap();
    assert!(output.contains("no-such-function not found"), "{output}");
    assert_schema(&a.body);

    // The same check as non-critical only warns.
    let server = Server::start(
        &format!(
            "region = \"{REGION}\"\n[lambda]\nfunction = \"no-such-function\"\ncritical = false\n"
        ),
        Some(moto.sdk_config(REGION).await),
    )
    .await
    .unwrap();
    let a = server.deep("", None).await.unwrap();
    assert_eq!((a.status, a.body["status"].as_str()), (200, Some("warn")));
    assert_eq!(a.check("lambda:responseTime"), "fail");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extra_http_and_tcp_dependencies() {
    // A live HTTP dependency: another status endpoint's liveness.
    let upstream = Server::start(&format!("region = \"{REGION}\""), None)
        .await
        .unwrap();
    let open = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = harness::free_port().unwrap();
    let server = Server::start(
        &format!(
            r#"
region = "{REGION}"
token = "{TOKEN}"
[[http]]
name = "upstream"
url = "http://{}/status"
critical = true
[[http]]
name = "payments"
url = "http://127.0.0.1:{closed_port}/status"
[[tcp]]
name = "cache"
address = "{}"
critical = true
"#,
            upstream.addr,
            open.local_addr().unwrap()
        ),
        None,
    )
    .await
    .unwrap();
    let a = server.deep("?verbose", Some(TOKEN)).await.unwrap();
    assert_eq!(a.check("upstream:responseTime"), "pass", "{:#}", a.body);
    assert_eq!(a.check("cache:responseTime"), "pass");
    assert_eq!(a.check("payments:responseTime"), "fail");
    // payments is not critical: warn, 200.
    assert_eq!((a.status, a.body["status"].as_str()), (200, Some("warn")));
    assert!(a.body["output"].as_str().unwrap().contains("payments"));
    assert_eq!(
        a.body["checks"]["upstream:responseTime"][0]["componentType"],
        "component"
    );
    assert_schema(&a.body);
    let a = server.deep("?exclude=payments", None).await.unwrap();
    assert_eq!(a.body["status"], "pass");
}
