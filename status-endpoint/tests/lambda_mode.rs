//! Lambda mode: the same router behind a fake Lambda Runtime API that hands out one API
//! Gateway REST (v1) event and one HTTP API (v2) event, and collects the answers.
//! (The only test in this binary: it sets the process's Lambda environment variables.)

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use vantage_status_endpoint::config::Config;
use vantage_status_endpoint::{lambda_adapter, router};

const TRACE: &str = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1";

fn rest_event() -> serde_json::Value {
    serde_json::json!({
        "resource": "/{proxy+}",
        "path": "/status/deep",
        "httpMethod": "GET",
        "headers": {"X-Amzn-Trace-Id": TRACE, "Host": "api.example.com"},
        "multiValueHeaders": {"X-Amzn-Trace-Id": [TRACE], "Host": ["api.example.com"]},
        "queryStringParameters": {"verbose": "1"},
        "multiValueQueryStringParameters": {"verbose": ["1"]},
        "pathParameters": {"proxy": "status/deep"},
        "stageVariables": null,
        "requestContext": {
            "accountId": "123456789012",
            "resourceId": "abc123",
            "stage": "prod",
            "requestId": "req-1",
            "identity": {"sourceIp": "192.0.2.1"},
            "resourcePath": "/{proxy+}",
            "httpMethod": "GET",
            "apiId": "api1",
            "path": "/prod/status/deep"
        },
        "body": null,
        "isBase64Encoded": false
    })
}

fn http_api_event() -> serde_json::Value {
    serde_json::json!({
        "version": "2.0",
        "routeKey": "GET /status",
        "rawPath": "/status",
        "rawQueryString": "",
        "headers": {"host": "api.example.com", "x-amzn-trace-id": TRACE},
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "api2",
            "domainName": "api.example.com",
            "domainPrefix": "api",
            "http": {"method": "GET", "path": "/status", "protocol": "HTTP/1.1",
                     "sourceIp": "192.0.2.1", "userAgent": "test"},
            "requestId": "req-2",
            "routeKey": "GET /status",
            "stage": "$default",
            "time": "01/May/2024:12:00:00 +0000",
            "timeEpoch": 1714564800000u64
        },
        "isBase64Encoded": false
    })
}

struct Fake {
    served: AtomicUsize,
    answers: mpsc::UnboundedSender<(String, serde_json::Value)>,
}

async fn next(State(fake): State<Arc<Fake>>) -> axum::response::Response {
    let n = fake.served.fetch_add(1, Ordering::SeqCst);
    let event = match n {
        0 => rest_event(),
        1 => http_api_event(),
        // No more work: the runtime waits, as on a real idle execution environment.
        _ => std::future::pending().await,
    };
    let mut headers = HeaderMap::new();
    headers.insert(
        "lambda-runtime-aws-request-id",
        format!("req-{}", n + 1).parse().unwrap(),
    );
    headers.insert(
        "lambda-runtime-deadline-ms",
        "9999999999999".parse().unwrap(),
    );
    headers.insert(
        "lambda-runtime-invoked-function-arn",
        "arn:aws:lambda:eu-west-1:123456789012:function:status"
            .parse()
            .unwrap(),
    );
    headers.insert("lambda-runtime-trace-id", TRACE.parse().unwrap());
    (headers, axum::Json(event)).into_response()
}

use axum::response::IntoResponse as _;

async fn response(
    State(fake): State<Arc<Fake>>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> &'static str {
    let value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    let _ = fake.answers.send((id, value));
    "{}"
}

async fn error(Path(id): Path<String>, body: axum::body::Bytes) -> &'static str {
    panic!("invocation {id} failed: {}", String::from_utf8_lossy(&body));
}

async fn recv(
    rx: &mut mpsc::UnboundedReceiver<(String, serde_json::Value)>,
) -> (String, serde_json::Value) {
    tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("an answer within 20s")
        .expect("channel open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_serves_api_gateway_events() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let fake = Arc::new(Fake {
        served: AtomicUsize::new(0),
        answers: tx,
    });
    let api = axum::Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route(
            "/2018-06-01/runtime/invocation/{id}/response",
            post(response),
        )
        .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
        .with_state(Arc::clone(&fake));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api_addr = listener.local_addr().unwrap();
    let api_task = tokio::spawn(async move { axum::serve(listener, api).await });

    // What the Lambda service sets in every execution environment.
    std::env::set_var(lambda_adapter::RUNTIME_API_VAR, api_addr.to_string());
    std::env::set_var("AWS_LAMBDA_FUNCTION_NAME", "status");
    std::env::set_var("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128");
    std::env::set_var("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST");
    assert!(lambda_adapter::in_lambda());

    let settings = Config::from_toml(
        "region = \"eu-west-1\"\n[[tcp]]\nname = \"api\"\naddress = \"API\"\n"
            .replace("API", &api_addr.to_string())
            .as_str(),
        "test",
    )
    .unwrap()
    .validate()
    .unwrap();
    let checks = router::build_checks(&settings, None).await.unwrap();
    let app = router::router(&settings, checks);
    // lambda_http's runtime future is not Send: it runs on this thread, as in a Lambda main.
    let local = tokio::task::LocalSet::new();
    let runtime = local.spawn_local(lambda_adapter::run(app));

    let (id, deep) = local.run_until(recv(&mut rx)).await;
    assert_eq!(id, "req-1");
    assert_eq!(deep["statusCode"], 200, "{deep:#}");
    let body: serde_json::Value = serde_json::from_str(deep["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["status"], "pass", "{body:#}");
    assert_eq!(body["checks"]["api:responseTime"][0]["observedUnit"], "ms");
    let headers = deep["headers"].to_string() + &deep["multiValueHeaders"].to_string();
    assert!(headers.contains("x-vantage-region"), "{deep:#}");
    assert!(headers.contains("application/health+json"), "{deep:#}");
    assert!(headers.contains(TRACE), "{deep:#}");

    let (id, live) = local.run_until(recv(&mut rx)).await;
    assert_eq!(id, "req-2");
    assert_eq!(live["statusCode"], 200, "{live:#}");
    let body: serde_json::Value = serde_json::from_str(live["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["status"], "pass");
    assert_eq!(body["region"], "eu-west-1");

    runtime.abort();
    api_task.abort();
}
