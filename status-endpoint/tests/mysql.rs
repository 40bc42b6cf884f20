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
