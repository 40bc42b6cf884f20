//! X-Ray trace propagation: a deep request's `X-Amzn-Trace-Id` is echoed in the answer and
//! carried by the HTTP checks of the round it starts, so a dependency joins the caller's trace
//! (the agent's sampled probes send the header; see `agent/src/export/xray.rs`).

mod harness;

use harness::Server;
use vantage_testkit::server::server;

const TRACE: &str = "Root=1-6553f100-0123456789abcdef01234567;Parent=53995c3f42cd8ad8;Sampled=1";

#[tokio::test]
async fn a_traced_deep_request_passes_its_trace_to_the_http_checks() {
    let dependency = server().status(200).body("ok").start().await;
    let toml = format!(
        "region = \"eu-west-1\"\ncache_ttl = \"0s\"\n[[http]]\nname = \"payments\"\nurl = \"{}\"\n",
        dependency.url("/health")
    );
    let status = Server::start(&toml, None).await.expect("status endpoint");

    let answer = status
        .get("/status/deep", &[("X-Amzn-Trace-Id", TRACE)])
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.header("x-amzn-trace-id"), Some(TRACE));
    let seen = dependency.seen();
    assert_eq!(seen.path.as_deref(), Some("/health"));
    assert_eq!(
        seen.headers
            .get("x-amzn-trace-id")
            .and_then(|v| v.to_str().ok()),
        Some(TRACE)
    );

    // An untraced request's round sends no trace header.
    let answer = status.get("/status/deep", &[]).await.unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("x-amzn-trace-id"), None);
    assert!(dependency.requests() >= 2);
    assert!(dependency.seen().headers.get("x-amzn-trace-id").is_none());
}
