//! MySQL-compatible Aurora, played by a real MariaDB server: role detection both ways.

mod harness;

use harness::{assert_schema, Mariadb, Server};

const TOKEN: &str = "test-token-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_writer_and_reader_roles() {
    let db = Mariadb::start().unwrap();
    let config = format!(
        r#"
region = "us-east-1"
token = "{TOKEN}"
cache_ttl = "0s"
[aurora.writer]
url = "{url}"
[aurora.reader]
url = "{}"
"#,
        db.url().replace("mysql://", "mariadb://"),
        url = db.url()
    );
    let server = Server::start(&config, None).await.unwrap();

    // A writable server behind both endpoints: the writer passes, the reader warns that the
    // reader endpoint fell back to the writer. Not a binlog replica: no lag measurement.
    let a = server.deep("?verbose", Some(TOKEN)).await.unwrap();
    assert_eq!(a.status, 200, "{:#}", a.body);
    assert_eq!(a.body["status"], "warn");
    assert_eq!(a.check("aurora-writer:responseTime"), "pass");
    assert_eq!(a.check("aurora-reader:responseTime"), "warn");
    assert_eq!(a.check("aurora-reader:replicationLag"), "absent");
    let output = a.body["checks"]["aurora-reader:responseTime"][0]["output"]
        .as_str()
        .unwrap();
    assert!(output.contains("reader endpoint is the writer"), "{output}");
    assert_schema(&a.body);

    // Read-only: now the reader is right and the writer is wrong.
    set_read_only(&db, true).await;
    let a = server.deep("", Some(TOKEN)).await.unwrap();
    assert_eq!(a.status, 503, "{:#}", a.body);
    assert_eq!(a.check("aurora-writer:responseTime"), "fail");
    assert_eq!(a.check("aurora-reader:responseTime"), "pass");
    let output = a.body["checks"]["aurora-writer:responseTime"][0]["output"]
        .as_str()
        .unwrap();
    assert!(output.contains("read-only"), "{output}");
    set_read_only(&db, false).await;
}

async fn set_read_only(db: &Mariadb, on: bool) {
    use mysql_async::prelude::Queryable;
    let mut conn = mysql_async::Conn::from_url(db.url()).await.unwrap();
    conn.query_drop(format!("SET GLOBAL read_only = {}", u8::from(on)))
        .await
        .unwrap();
    conn.disconnect().await.unwrap();
}

/// Runs one check directly, under a timeout: a TLS failure must come back as an error, never a
/// hang.
async fn run_check(url: &str) -> Result<vantage_status_endpoint::checks::Probe, String> {
    use vantage_status_endpoint::checks::{mysql::MysqlCheck, Role};
    let check = MysqlCheck::new(Role::Writer, url, None).map_err(|e| e.to_string())?;
    let started = tokio::time::Instant::now();
    let outcome = tokio::time::timeout(std::time::Duration::from_secs(5), check.run())
        .await
        .map_err(|_| format!("{url}: no answer within 5 s"))?;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "{url}: took {:?}",
        started.elapsed()
    );
    outcome.map_err(|e| e.to_string())
}

/// ssl-mode against a MariaDB that has a certificate from the test's own CA and refuses
/// plaintext (`require_secure_transport = ON`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_tls_modes_with_secure_transport_required() {
    let ca = harness::TestCa::new();
    let db = Mariadb::start_with(Some(&ca)).unwrap();
    let ssl_ca = ca.ca_file().display().to_string();
    let url = |query: &str| format!("{}?{query}", db.url());

    // REQUIRED: TLS without verification; the server's own view of the session is reported.
    let probe = run_check(&url("ssl-mode=REQUIRED")).await.unwrap();
    let output = probe.output.unwrap();
    assert!(
        output.starts_with("TLSv1.") && output.ends_with("ssl-mode=REQUIRED"),
        "{output}"
    );

    // VERIFY_IDENTITY / VERIFY_CA with the CA (127.0.0.1 is in the certificate).
    for mode in ["VERIFY_IDENTITY", "verify_ca"] {
        let probe = run_check(&url(&format!("ssl-mode={mode}&ssl-ca={ssl_ca}")))
            .await
            .unwrap();
        assert!(probe.output.unwrap().starts_with("TLSv1."), "{mode}");
    }

    // VERIFY_IDENTITY without the CA: the built-in roots do not know it.
    let e = run_check(&url("ssl-mode=VERIFY_IDENTITY"))
        .await
        .unwrap_err();
    assert!(
        e.starts_with("TLS handshake with 127.0.0.1 failed: certificate not trusted")
            && e.contains("ssl-ca=<path>")
            && e.ends_with("(ssl-mode=VERIFY_IDENTITY)"),
        "{e}"
    );

    // PREFERRED (the default) takes the TLS the server offers.
    let probe = run_check(&db.url()).await.unwrap();
    let output = probe.output.unwrap();
    assert!(
        output.starts_with("TLSv1.") && output.ends_with("ssl-mode=PREFERRED"),
        "{output}"
    );

    // mysql_async's own parameters work too, but not mixed with ssl-mode.
    run_check(&url(&format!(
        "require_ssl=true&verify_identity=true&ssl-ca={ssl_ca}"
    )))
    .await
    .unwrap();
    let e = run_check(&url("ssl-mode=REQUIRED&require_ssl=true"))
        .await
        .unwrap_err();
    assert!(e.contains("either ssl-mode or"), "{e}");

    // DISABLED: the server refuses plaintext (MariaDB 10.11 says "Access denied" to the very
    // user it just let in over TLS).
    let e = run_check(&url("ssl-mode=DISABLED")).await.unwrap_err();
    assert!(
        e.starts_with("connecting: Server error: ")
            && e.contains("Access denied for user 'root'")
            && e.ends_with("(ssl-mode=DISABLED)"),
        "{e}"
    );

    // Through the endpoint: authorised callers see how each database is reached.
    let config = format!(
        r#"
region = "us-east-1"
token = "{TOKEN}"
[aurora.writer]
url = "{}"
[aurora.reader]
url = "{}"
"#,
        url(&format!("ssl-mode=VERIFY_IDENTITY&ssl-ca={ssl_ca}")),
        url("ssl-mode=DISABLED"),
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
        writer.starts_with("TLSv1.") && writer.contains("VERIFY_IDENTITY"),
        "{writer}"
    );
    let text = server
        .deep("?verbose", None)
        .await
        .unwrap()
        .body
        .to_string();
    assert!(
        !text.contains("TLS") && !text.contains("ssl-mode"),
        "{text}"
    );
}

/// A MariaDB without TLS: PREFERRED (the default) falls back to plaintext and says so;
/// REQUIRED fails clearly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_without_tls_preferred_falls_back_required_fails() {
    let db = Mariadb::start().unwrap();
    let probe = run_check(&db.url()).await.unwrap();
    assert_eq!(
        probe.output.as_deref(),
        Some("no TLS, ssl-mode=PREFERRED: the server does not offer TLS")
    );
    let e = run_check(&format!("{}?ssl-mode=REQUIRED", db.url()))
        .await
        .unwrap_err();
    assert_eq!(
        e,
        "TLS with 127.0.0.1 failed: the server does not offer TLS (ssl-mode=REQUIRED)"
    );
    let e = run_check(&format!("{}?ssl-mode=ON", db.url()))
        .await
        .unwrap_err();
    assert!(e.contains("ssl-mode=\"ON\""), "{e}");
    let e = run_check(&format!(
        "{}?ssl-mode=VERIFY_CA&ssl-ca=/nonexistent/ca.pem",
        db.url()
    ))
    .await
    .unwrap_err();
    assert!(
        e.contains("ssl-ca") && e.contains("/nonexistent/ca.pem"),
        "{e}"
    );
}
