//! /status/deep against a real PostgreSQL primary + streaming replica (as the Aurora writer
//! and reader endpoints) and moto for Lambda.

mod harness;

use harness::{assert_schema, eventually, LambdaMoto as _, Moto, Postgres, Server};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const REGION: &str = "eu-west-1";
const TOKEN: &str = "test-token-0123456789";
const DEADLINE: Duration = Duration::from_millis(1500);

fn pg_config(primary: &Postgres, replica: &Postgres, extra: &str) -> String {
    format!(
        r#"
region = "{REGION}"
service_id = "orders-api"
token = "{TOKEN}"
{extra}
[aurora.writer]
url = "{}"
[aurora.reader]
url = "{}"
lag_warn = "1s"
lag_fail = "3s"
"#,
        primary.url(),
        replica.url()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_pass_with_schema_trace_and_token_gating() {
    let primary = Postgres::primary().unwrap();
    let replica = Postgres::replica(&primary).unwrap();
    let moto = Moto::shared();
    moto.create_function(REGION, "orders-api").await.unwrap();
    let config = pg_config(&primary, &replica, "") + "[lambda]\nfunction = \"orders-api\"\n";
    let server = Server::start(&config, Some(moto.sdk_config(REGION).await))
        .await
        .unwrap();

    let a = server.deep("?verbose", Some(TOKEN)).await.unwrap();
    assert_eq!(a.status, 200, "{:#}", a.body);
    assert_eq!(a.body["status"], "pass", "{:#}", a.body);
    assert_eq!(a.body["region"], REGION);
    assert_eq!(a.body["serviceId"], "orders-api");
    assert_eq!(a.header("x-vantage-region"), Some(REGION));
    assert_eq!(a.header("content-type"), Some("application/health+json"));
    for key in [
        "aurora-writer:responseTime",
        "aurora-reader:responseTime",
        "aurora-reader:replicationLag",
        "lambda:responseTime",
        "lambda:state",
    ] {
        assert_eq!(a.check(key), "pass", "{key} in {:#}", a.body);
    }
    assert_eq!(
        a.body["checks"]["lambda:state"][0]["observedValue"],
        "Active"
    );
    assert_schema(&a.body);
    // Authorised callers see where each component is.
    let text = a.body.to_string();
    assert!(
        text.contains(&format!("127.0.0.1:{}/postgres", primary.port)),
        "{text}"
    );
    assert!(text.contains("componentId"), "{text}");

    // Anyone else: names and statuses, measurements on ?verbose, never hosts or error text.
    for token in [None, Some("wrong-token-0123456789")] {
        let anonymous = server.deep("?verbose", token).await.unwrap();
        assert_eq!(anonymous.status, 200);
        assert_schema(&anonymous.body);
        let text = anonymous.body.to_string();
        assert!(
            !text.contains("127.0.0.1") && !text.contains("componentId"),
            "{text}"
        );
        assert_eq!(anonymous.check("aurora-writer:responseTime"), "pass");
        let quiet = server.deep("", token).await.unwrap();
        let entry = &quiet.body["checks"]["aurora-writer:responseTime"][0];
        assert_eq!(entry.as_object().unwrap().len(), 1, "{entry}");
    }

    // ?exclude leaves a check out.
    let a = server.deep("?exclude=lambda", None).await.unwrap();
    assert_eq!(a.check("lambda:responseTime"), "absent");

    // Trace propagation on both endpoints, liveness in the same shape.
    let trace = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1";
    let live = server
        .get("/status", &[("X-Amzn-Trace-Id", trace)])
        .await
        .unwrap();
    assert_eq!(live.status, 200);
    assert_eq!(live.header("x-amzn-trace-id"), Some(trace));
    assert_eq!(live.header("x-vantage-region"), Some(REGION));
    assert_schema(&live.body);
    let deep = server
        .get("/status/deep", &[("X-Amzn-Trace-Id", trace)])
        .await
        .unwrap();
    assert_eq!(deep.header("x-amzn-trace-id"), Some(trace));

    let metrics = server.metrics().await.unwrap();
    for line in [
        "vantage_status_check_status{check=\"aurora-writer\"} 0",
        "vantage_status_check_status{check=\"lambda\"} 0",
        "vantage_status_check_duration_seconds_count{check=\"aurora-reader\"}",
        "vantage_status_answers_total{path=\"status\",status=\"pass\"} 1",
    ] {
        assert!(metrics.contains(line), "missing {line} in\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_down_then_writer_down_fail_within_the_deadline() {
    let mut primary = Postgres::primary().unwrap();
    let mut replica = Postgres::replica(&primary).unwrap();
    let server = Server::start(&pg_config(&primary, &replica, "cache_ttl = \"0s\""), None)
        .await
        .unwrap();
    let a = server.deep("", None).await.unwrap();
    assert_eq!(
        (a.status, a.body["status"].as_str()),
        (200, Some("pass")),
        "{:#}",
        a.body
    );

    replica.kill();
    let a = server.deep("", Some(TOKEN)).await.unwrap();
    assert_eq!(a.status, 503, "{:#}", a.body);
    assert_eq!(a.check("aurora-reader:responseTime"), "fail");
    assert_eq!(a.check("aurora-writer:responseTime"), "pass");
    assert!(
        a.elapsed < DEADLINE + Duration::from_millis(500),
        "{:?}",
        a.elapsed
    );
    assert_schema(&a.body);

    primary.kill();
    let a = server.deep("", Some(TOKEN)).await.unwrap();
    assert_eq!(a.status, 503, "{:#}", a.body);
    assert_eq!(a.body["status"], "fail");
    assert_eq!(a.check("aurora-writer:responseTime"), "fail");
    let output = a.body["checks"]["aurora-writer:responseTime"][0]["output"]
        .as_str()
        .unwrap();
    assert!(output.contains("connect"), "{output}");
    assert!(
        a.elapsed < DEADLINE + Duration::from_millis(500),
        "{:?}",
        a.elapsed
    );
    // Liveness does not care.
    assert_eq!(server.get("/status", &[]).await.unwrap().status, 200);
}

/// Writes on the primary every 100 ms until dropped, so a paused replica falls behind.
struct Writer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(port: u16) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                let _ = harness::psql_port(port, "INSERT INTO ticks VALUES (now())");
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Writer {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_replica_warns_then_fails_then_recovers() {
    let primary = Postgres::primary().unwrap();
    let replica = Postgres::replica(&primary).unwrap();
    primary.psql("CREATE TABLE ticks (at timestamptz)").unwrap();
    let server = Server::start(
        &pg_config(&primary, &replica, "cache_ttl = \"100ms\""),
        None,
    )
    .await
    .unwrap();
    let _writer = Writer::start(primary.port);
    // Replay is current while the writer runs (and the replica has replayed some ticks, so it
    // has a last-replayed commit time to measure lag from).
    eventually(
        "pass with writes flowing",
        Duration::from_secs(15),
        || async {
            let replayed: u32 = replica
                .psql("SELECT count(*) FROM ticks")
                .ok()?
                .parse()
                .ok()?;
            let a = server.deep("", None).await.ok()?;
            let passing = a.check("aurora-reader:replicationLag") == "pass" && a.status == 200;
            (replayed >= 3 && passing).then_some(())
        },
    )
    .await;

    replica.psql("SELECT pg_wal_replay_pause()").unwrap();
    let warned = eventually("lag warning", Duration::from_secs(15), || async {
        let a = server.deep("", Some(TOKEN)).await.ok()?;
        (a.check("aurora-reader:replicationLag") == "warn").then_some(a)
    })
    .await;
    assert_eq!(
        warned.status, 200,
        "warn still answers 200: {:#}",
        warned.body
    );
    assert_eq!(warned.body["status"], "warn");
    let failed = eventually("lag failure", Duration::from_secs(15), || async {
        let a = server.deep("", Some(TOKEN)).await.ok()?;
        (a.check("aurora-reader:replicationLag") == "fail").then_some(a)
    })
    .await;
    assert_eq!(failed.status, 503, "{:#}", failed.body);
    let lag = failed.body["checks"]["aurora-reader:replicationLag"][0]["observedValue"]
        .as_f64()
        .unwrap();
    assert!(lag >= 3000.0, "{lag}");
    assert_schema(&failed.body);
    let metrics = server.metrics().await.unwrap();
    assert!(
        metrics.contains("vantage_status_replication_lag_seconds{check=\"aurora-reader\"} "),
        "{metrics}"
    );

    replica.psql("SELECT pg_wal_replay_resume()").unwrap();
    eventually("recovery", Duration::from_secs(15), || async {
        let a = server.deep("", None).await.ok()?;
        (a.status == 200 && a.body["status"] == "pass").then_some(())
    })
    .await;
}

/// Functions named and shaped like Aurora's `aurora_global_db_status()` take precedence over
/// the standby's replay timestamp.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aurora_global_db_status_is_used_where_it_exists() {
    let primary = Postgres::primary().unwrap();
    let replica = Postgres::replica(&primary).unwrap();
    primary
        .psql(
            "CREATE TABLE aurora_lag (aws_region text, lag bigint);
             INSERT INTO aurora_lag VALUES ('us-east-1', -1), ('eu-west-1', 2500), ('ap-south-1', 9000);
             CREATE FUNCTION aurora_global_db_status()
             RETURNS TABLE (aws_region text, highest_lsn_written bigint,
                            durability_lag_in_msec bigint, rpo_lag_in_msec bigint,
                            last_lag_calculation_time timestamptz, feedback_epoch integer,
                            feedback_xmin bigint)
             LANGUAGE sql AS $$
               SELECT aws_region, 1::bigint, lag, lag, now(), 0, 0::bigint FROM aurora_lag
             $$;",
        )
        .unwrap();
    let server = Server::start(
        &pg_config(&primary, &replica, "cache_ttl = \"100ms\""),
        None,
    )
    .await
    .unwrap();
    // Our Region's row (2.5 s: over the 1 s warn limit, under the 3 s fail limit).
    let a = eventually("aurora lag warning", Duration::from_secs(15), || async {
        let a = server.deep("", Some(TOKEN)).await.ok()?;
        (a.check("aurora-reader:replicationLag") == "warn").then_some(a)
    })
    .await;
    let entry = &a.body["checks"]["aurora-reader:replicationLag"][0];
    assert_eq!(entry["observedValue"], 2500, "{entry}");
    assert!(
        entry["output"]
            .as_str()
            .unwrap()
            .contains("aurora_global_db_status"),
        "{entry}"
    );

    primary
        .psql("UPDATE aurora_lag SET lag = 4000 WHERE aws_region = 'eu-west-1'")
        .unwrap();
    let a = eventually("aurora lag failure", Duration::from_secs(15), || async {
        let a = server.deep("", None).await.ok()?;
        (a.check("aurora-reader:replicationLag") == "fail").then_some(a)
    })
    .await;
    assert_eq!(a.status, 503);

    // In the primary Region the function reports -1: lag does not apply.
    primary
        .psql("UPDATE aurora_lag SET lag = -1 WHERE aws_region = 'eu-west-1'")
        .unwrap();
    let a = eventually("primary Region", Duration::from_secs(15), || async {
        let a = server.deep("", None).await.ok()?;
        (a.check("aurora-reader:replicationLag") == "absent").then_some(a)
    })
    .await;
    assert_eq!(
        (a.status, a.body["status"].as_str()),
        (200, Some("pass")),
        "{:#}",
        a.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_cause_one_round_per_ttl() {
    let primary = Postgres::primary().unwrap();
    let replica = Postgres::replica(&primary).unwrap();
    let server = Arc::new(
        Server::start(&pg_config(&primary, &replica, "cache_ttl = \"30s\""), None)
            .await
            .unwrap(),
    );
    let requests: Vec<_> = (0..500)
        .map(|_| {
            let server = Arc::clone(&server);
            tokio::spawn(async move { server.deep("", None).await })
        })
        .collect();
    let mut statuses = std::collections::BTreeMap::new();
    for r in requests {
        let a = r.await.unwrap().unwrap();
        *statuses.entry(a.status).or_insert(0) += 1;
    }
    assert_eq!(statuses.get(&200), Some(&500), "{statuses:?}");
    // Counted at the servers: each logged the check's statement exactly once.
    let probe = "SHOW transaction_read_only";
    assert_eq!(primary.statements_containing(probe), 1);
    assert_eq!(replica.statements_containing(probe), 1);
    let metrics = server.metrics().await.unwrap();
    assert!(
        metrics.contains("vantage_status_rounds_total 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("vantage_status_answers_total{path=\"deep\",status=\"pass\"} 500"),
        "{metrics}"
    );
}

/// Runs one check directly, under a timeout: a TLS failure must come back as an error, never a
/// hang.
async fn run_check(url: &str) -> Result<vantage_status_endpoint::checks::Probe, String> {
    use vantage_status_endpoint::checks::{postgres::PostgresCheck, Role};
    let check = PostgresCheck::new(Role::Writer, url, REGION, None).map_err(|e| e.to_string())?;
    let started = tokio::time::Instant::now();
    let outcome = tokio::time::timeout(Duration::from_secs(5), check.run())
        .await
        .map_err(|_| format!("{url}: no answer within 5 s"))?;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{url}: took {:?}",
        started.elapsed()
    );
    outcome.map_err(|e| e.to_string())
}

/// libpq's sslmode against a server that takes TLS only (`hostssl` in pg_hba.conf) with a
/// certificate from a CA of the test's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_modes_against_a_hostssl_only_server() {
    let ca = harness::TestCa::new();
    let other_ca = harness::TestCa::new();
    let hba = "hostssl all postgres 127.0.0.1/32 trust\n\
               hostssl all health 127.0.0.1/32 scram-sha-256\n";
    let pg = Postgres::primary_with(Some(harness::PgTls {
        ca: &ca,
        hba: Some(hba),
        conf: "",
    }))
    .unwrap();
    let root = ca.ca_file().display().to_string();
    let base = pg.url();
    let url = |query: &str| format!("{base}?{query}");

    // verify-full with the CA: chain and name (127.0.0.1 is in the certificate) check out.
    let probe = run_check(&url(&format!("sslmode=verify-full&sslrootcert={root}")))
        .await
        .unwrap();
    let output = probe.output.unwrap();
    assert!(
        output.starts_with("TLS 1.") && output.ends_with("sslmode=verify-full"),
        "{output}"
    );

    // verify-full without the CA: the built-in roots do not know it.
    let e = run_check(&url("sslmode=verify-full")).await.unwrap_err();
    assert!(
        e.starts_with("TLS handshake with 127.0.0.1 failed: certificate not trusted")
            && e.contains("sslrootcert=<path>")
            && e.ends_with("(sslmode=verify-full)"),
        "{e}"
    );

    // The wrong name: verify-full refuses, verify-ca does not look.
    let wrong = format!(
        "postgres://postgres@db.wrong.test:{}/postgres?hostaddr=127.0.0.1&sslrootcert={root}",
        pg.port
    );
    let e = run_check(&format!("{wrong}&sslmode=verify-full"))
        .await
        .unwrap_err();
    assert!(
        e.contains("TLS handshake with db.wrong.test failed: certificate not valid for name \"db.wrong.test\""),
        "{e}"
    );
    run_check(&format!("{wrong}&sslmode=verify-ca"))
        .await
        .unwrap();

    // require: encryption without verification...
    let probe = run_check(&url("sslmode=require")).await.unwrap();
    assert!(probe.output.unwrap().starts_with("TLS 1."));
    // ...unless a CA bundle is named, which makes it verify-ca (as libpq).
    let e = run_check(&url(&format!(
        "sslmode=require&sslrootcert={}",
        other_ca.ca_file().display()
    )))
    .await
    .unwrap_err();
    assert!(e.contains("certificate not trusted"), "{e}");

    // prefer (the default) takes the TLS the server offers.
    let probe = run_check(&base).await.unwrap();
    assert!(
        probe.output.as_deref().unwrap().ends_with("sslmode=prefer"),
        "{probe:?}"
    );
    assert!(probe.output.unwrap().starts_with("TLS 1."));

    // disable: the server refuses plaintext.
    let e = run_check(&url("sslmode=disable")).await.unwrap_err();
    assert!(
        e.starts_with("connecting: ")
            && e.contains("no pg_hba.conf entry")
            && e.contains("no encryption")
            && e.ends_with("(sslmode=disable)"),
        "{e}"
    );

    // SCRAM over TLS with channel binding (tls-server-end-point) required.
    pg.psql("CREATE ROLE health LOGIN PASSWORD 'health-secret'")
        .unwrap();
    let scram = format!(
        "postgres://health:health-secret@127.0.0.1:{}/postgres?sslmode=verify-full&sslrootcert={root}&channel_binding=require",
        pg.port
    );
    run_check(&scram).await.unwrap();

    // Through the endpoint: authorised callers see how each database is reached.
    let config = format!(
        r#"
region = "{REGION}"
token = "{TOKEN}"
[aurora.writer]
url = "{}"
[aurora.reader]
url = "{}"
"#,
        url(&format!("sslmode=verify-full&sslrootcert={root}")),
        url("sslmode=disable"),
    );
    let server = Server::start(&config, None).await.unwrap();
    let a = server.deep("?verbose", Some(TOKEN)).await.unwrap();
    assert_eq!(a.status, 503, "{:#}", a.body);
    assert_schema(&a.body);
    assert_eq!(a.check("aurora-writer:responseTime"), "pass");
    assert_eq!(a.check("aurora-reader:responseTime"), "fail");
    let writer = a.body["checks"]["aurora-writer:responseTime"][0]["output"]
        .as_str()
        .unwrap();
    assert!(
        writer.starts_with("TLS 1.") && writer.contains("verify-full"),
        "{writer}"
    );
    let reader = a.body["checks"]["aurora-reader:responseTime"][0]["output"]
        .as_str()
        .unwrap();
    assert!(reader.contains("no encryption"), "{reader}");
    let anonymous = server.deep("?verbose", None).await.unwrap();
    let text = anonymous.body.to_string();
    assert!(!text.contains("TLS") && !text.contains("sslmode"), "{text}");
}

/// A server without TLS: prefer (the default) falls back to plaintext and says so; require
/// fails clearly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_prefer_falls_back_and_require_fails_without_server_tls() {
    let pg = Postgres::primary().unwrap();
    let probe = run_check(&pg.url()).await.unwrap();
    assert_eq!(
        probe.output.as_deref(),
        Some("no TLS, sslmode=prefer: the server does not offer TLS")
    );
    let e = run_check(&format!("{}?sslmode=require", pg.url()))
        .await
        .unwrap_err();
    assert!(
        e.contains("server does not support TLS") && e.contains("sslmode=require"),
        "{e}"
    );
    // Configuration mistakes are caught when the check is built.
    let e = run_check(&format!("{}?sslmode=verify", pg.url()))
        .await
        .unwrap_err();
    assert!(e.contains("sslmode=\"verify\""), "{e}");
    let e = run_check(&format!(
        "{}?sslmode=verify-full&sslrootcert=/nonexistent/rds.pem",
        pg.url()
    ))
    .await
    .unwrap_err();
    assert!(
        e.contains("sslrootcert") && e.contains("/nonexistent/rds.pem"),
        "{e}"
    );
}

/// A handshake that fails (the server speaks at most TLS 1.1; rustls at least 1.2): prefer
/// falls back to plaintext as libpq does and says why; require fails with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_handshake_failure_prefer_falls_back_require_fails() {
    let ca = harness::TestCa::new();
    let pg = Postgres::primary_with(Some(harness::PgTls {
        ca: &ca,
        hba: None,
        conf: "ssl_min_protocol_version = 'TLSv1'\nssl_max_protocol_version = 'TLSv1.1'",
    }))
    .unwrap();
    let probe = run_check(&pg.url()).await.unwrap();
    let output = probe.output.unwrap();
    assert!(
        output.starts_with(
            "no TLS, sslmode=prefer: TLS handshake with 127.0.0.1 failed: no TLS version in common"
        ),
        "{output}"
    );
    let e = run_check(&format!("{}?sslmode=require", pg.url()))
        .await
        .unwrap_err();
    assert!(
        e.starts_with("TLS handshake with 127.0.0.1 failed: ") && e.ends_with("(sslmode=require)"),
        "{e}"
    );
}
