//! The DynamoDB deep check against moto's DynamoDB: two "Regions" are two moto Regions (one
//! table of the same name in each), each served by a status endpoint of its own that writes its
//! heartbeat there. moto does not replicate global tables, so the test plays replication: a
//! task copies each Region's heartbeat item into the other Region's table. Stopping one
//! endpoint stops its writer; the other then sees that heartbeat go stale: warn, then fail.
//! Table names are unique per test (one moto per test binary).

mod harness;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType,
};
use harness::{assert_schema, eventually, LambdaMoto as _, Moto, Server};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const EU: &str = "eu-west-1";
const US: &str = "us-east-1";
const TOKEN: &str = "test-token-0123456789";

async fn client(region: &str) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(&Moto::shared().sdk_config(region).await)
}

/// Creates `table` (partition key `pk`, a string) in `region`, with the canary item when asked.
async fn create_table(region: &str, table: &str, canary: bool) {
    let c = client(region).await;
    c.create_table()
        .table_name(table)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("pk")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .unwrap();
    if canary {
        c.put_item()
            .table_name(table)
            .item("pk", AttributeValue::S("canary".into()))
            .item("rate", AttributeValue::N("1.08".into()))
            .send()
            .await
            .unwrap();
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn config(region: &str, table: &str, extra: &str) -> String {
    format!(
        r#"
region = "{region}"
token = "{TOKEN}"
cache_ttl = "0s"
[[dynamodb]]
table = "{table}"
canary_key = {{ pk = "canary" }}
{extra}
"#
    )
}

fn output<'a>(a: &'a harness::Answer, key: &str, i: usize) -> &'a str {
    a.body["checks"][key][i]["output"].as_str().unwrap_or("")
}

/// Copies `from`'s heartbeat item from its Region's table into `to`'s, as a global table's
/// replication would; returns whether there was an item to copy.
async fn replicate(table: &str, from: &str, to: &str) -> bool {
    let key = format!("vantage#heartbeat#{from}");
    let got = client(from)
        .await
        .get_item()
        .table_name(table)
        .key("pk", AttributeValue::S(key))
        .send()
        .await
        .unwrap();
    let Some(item) = got.item().cloned() else {
        return false;
    };
    client(to)
        .await
        .put_item()
        .table_name(table)
        .set_item(Some(item))
        .send()
        .await
        .unwrap();
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_regions_see_each_other_until_one_stops_writing() {
    let table = "rates-two-regions";
    create_table(EU, table, true).await;
    create_table(US, table, true).await;
    let limits = "heartbeat_every = \"200ms\"\nlag_warn = \"1s\"\nlag_fail = \"2500ms\"";
    let eu = Server::start(
        &config(EU, table, &format!("peers = [\"{US}\"]\n{limits}")),
        Some(Moto::shared().sdk_config(EU).await),
    )
    .await
    .unwrap();
    let us = Server::start(
        &config(US, table, &format!("peers = [\"{EU}\"]\n{limits}")),
        Some(Moto::shared().sdk_config(US).await),
    )
    .await
    .unwrap();
    let replication = tokio::spawn(async move {
        loop {
            replicate(table, EU, US).await;
            replicate(table, US, EU).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let key = "dynamodb-rates-two-regions:replicationLag";
    for server in [&eu, &us] {
        let a = eventually(
            "both heartbeats replicated",
            Duration::from_secs(20),
            || async {
                let a = server.deep("?verbose", Some(TOKEN)).await.unwrap();
                (a.body["status"] == "pass").then_some(a)
            },
        )
        .await;
        assert_eq!(a.status, 200);
        assert_schema(&a.body);
        let lag = &a.body["checks"][key][0];
        assert_eq!(lag["componentType"], "datastore", "{lag}");
        assert_eq!(lag["observedUnit"], "ms", "{lag}");
        assert!(lag["observedValue"].as_u64().unwrap() < 1000, "{lag}");
        assert_eq!(
            a.body["checks"]["dynamodb-rates-two-regions:tableStatus"][0]["observedValue"],
            "ACTIVE"
        );
        assert_eq!(
            a.body["checks"]["dynamodb-rates-two-regions:responseTime"][0]["componentId"],
            table
        );
    }
    let metrics = eu.metrics().await.unwrap();
    assert!(
        metrics.contains(&format!(
            "vantage_status_dynamodb_replication_lag_seconds{{check=\"dynamodb-rates-two-regions\",table=\"{table}\",peer=\"{US}\"}} "
        )),
        "{metrics}"
    );

    // us-east-1's endpoint goes away, and with it its writer: eu-west-1 sees its heartbeat age.
    drop(us);
    let warned = eventually(
        "a stale heartbeat warns",
        Duration::from_secs(20),
        || async {
            let a = eu.deep("", Some(TOKEN)).await.unwrap();
            (a.check(key) != "pass").then_some(a)
        },
    )
    .await;
    assert_eq!(warned.check(key), "warn", "{:#}", warned.body);
    assert_eq!(
        (warned.status, warned.body["status"].as_str()),
        (200, Some("warn"))
    );
    assert!(
        output(&warned, key, 0).contains("us-east-1's heartbeat is over the warn limit"),
        "{:#}",
        warned.body
    );
    let failed = eventually(
        "a staler heartbeat fails",
        Duration::from_secs(20),
        || async {
            let a = eu.deep("", Some(TOKEN)).await.unwrap();
            (a.check(key) == "fail").then_some(a)
        },
    )
    .await;
    assert_eq!(failed.status, 503, "{:#}", failed.body);
    assert!(
        output(&failed, key, 0).contains("over the fail limit 2.5s"),
        "{:#}",
        failed.body
    );
    replication.abort();
}

/// A heartbeat item written by the test with a chosen age: warn past `lag_warn`, fail past
/// `lag_fail`, measured as now − at_ms − period_ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_age_picks_warn_then_fail() {
    let table = "rates-stale";
    create_table(EU, table, true).await;
    let server = Server::start(
        &config(
            EU,
            table,
            "peers = [\"ap-south-1\"]\nheartbeat = false\nlag_warn = \"5s\"\nlag_fail = \"30s\"",
        ),
        Some(Moto::shared().sdk_config(EU).await),
    )
    .await
    .unwrap();
    let key = "dynamodb-rates-stale:replicationLag";
    let a = server.deep("?verbose", Some(TOKEN)).await.unwrap();
    assert_eq!(a.check(key), "warn", "{:#}", a.body);
    assert!(
        output(&a, key, 0).contains("no heartbeat item from ap-south-1 yet"),
        "{:#}",
        a.body
    );
    let c = client(EU).await;
    for (age_ms, status) in [(6_000, "pass"), (15_000, "warn"), (40_000, "fail")] {
        c.put_item()
            .table_name(table)
            .item(
                "pk",
                AttributeValue::S("vantage#heartbeat#ap-south-1".into()),
            )
            .item("at_ms", AttributeValue::N((now_ms() - age_ms).to_string()))
            .item("period_ms", AttributeValue::N("5000".into()))
            .send()
            .await
            .unwrap();
        let a = server.deep("?verbose", Some(TOKEN)).await.unwrap();
        assert_eq!(a.check(key), status, "age {age_ms} ms: {:#}", a.body);
        let lag = a.body["checks"][key][0]["observedValue"].as_u64().unwrap();
        let expected = age_ms - 5_000;
        assert!(
            (expected..expected + 3_000).contains(&lag),
            "age {age_ms} ms: lag {lag}"
        );
        assert_schema(&a.body);
    }
    // Read-only mode: nothing of this Region's was written.
    let own = c
        .get_item()
        .table_name(table)
        .key("pk", AttributeValue::S(format!("vantage#heartbeat#{EU}")))
        .send()
        .await
        .unwrap();
    assert!(
        own.item().is_none(),
        "read-only mode wrote {:?}",
        own.item()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_table_fails() {
    let server = Server::start(
        &config(EU, "no-such-table", "heartbeat = false"),
        Some(Moto::shared().sdk_config(EU).await),
    )
    .await
    .unwrap();
    let a = server.deep("?verbose", Some(TOKEN)).await.unwrap();
    assert_eq!(a.status, 503, "{:#}", a.body);
    let key = "dynamodb-no-such-table:responseTime";
    assert_eq!(a.check(key), "fail");
    assert_eq!(
        output(&a, key, 0),
        "table no-such-table not found in eu-west-1"
    );
    assert_eq!(a.body["checks"][key][0]["componentType"], "datastore");
    assert_schema(&a.body);
    // Without the token: the status, never the detail.
    let a = server.deep("?verbose", None).await.unwrap();
    assert_eq!(a.check(key), "fail");
    assert!(a.body["checks"][key][0].get("output").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_canary_item_fails_and_the_writer_writes() {
    let table = "rates-no-canary";
    create_table(EU, table, false).await;
    let server = Server::start(
        &config(EU, table, "peers = []\nheartbeat_every = \"100ms\""),
        Some(Moto::shared().sdk_config(EU).await),
    )
    .await
    .unwrap();
    let a = server.deep("", Some(TOKEN)).await.unwrap();
    assert_eq!(a.status, 503, "{:#}", a.body);
    let key = "dynamodb-rates-no-canary:responseTime";
    assert_eq!(a.check(key), "fail");
    assert_eq!(
        output(&a, key, 0),
        "canary item pk=\"canary\" not found in table rates-no-canary"
    );
    // The writer put this Region's heartbeat item, and keeps it fresh.
    let c = client(EU).await;
    let at = || async {
        let got = c
            .get_item()
            .table_name(table)
            .key("pk", AttributeValue::S(format!("vantage#heartbeat#{EU}")))
            .send()
            .await
            .unwrap();
        let item = got.item()?;
        assert_eq!(item["period_ms"].as_n().unwrap(), "100");
        item["at_ms"].as_n().ok()?.parse::<u64>().ok()
    };
    let first = eventually("a heartbeat item", Duration::from_secs(10), at).await;
    eventually("a newer heartbeat", Duration::from_secs(10), || async {
        at().await.filter(|t| *t > first)
    })
    .await;
    // The canary appears: the check passes.
    c.put_item()
        .table_name(table)
        .item("pk", AttributeValue::S("canary".into()))
        .send()
        .await
        .unwrap();
    let a = server.deep("", Some(TOKEN)).await.unwrap();
    assert_eq!((a.status, a.check(key)), (200, "pass"), "{:#}", a.body);
}

/// DynamoDB that accepts connections and never answers (a black hole in place of moto): the
/// deep answer still comes within the deadline with the reason, and the heartbeat writer,
/// stuck in its own PutItem, never delays `/status`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_dynamodb_costs_the_check_timeout_and_never_delays_liveness() {
    let hole = vantage_testkit::black_hole().await;
    let sdk = vantage_status_endpoint::checks::lambda::sdk_loader(
        EU,
        Some(&format!("http://127.0.0.1:{}", hole.port())),
        Duration::from_secs(5),
    )
    .credentials_provider(vantage_testkit::moto::credentials())
    .load()
    .await;
    let server = Server::start(
        &config(
            EU,
            "rates-hung",
            "peers = [\"us-east-1\"]\nheartbeat_every = \"300ms\"\ntimeout = \"600ms\"",
        ),
        Some(sdk),
    )
    .await
    .unwrap();
    for _ in 0..5 {
        let live = server.get("/status", &[]).await.unwrap();
        assert_eq!(live.status, 200);
        assert!(
            live.elapsed < Duration::from_millis(200),
            "{:?}",
            live.elapsed
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let a = server.deep("", Some(TOKEN)).await.unwrap();
    assert_eq!(a.status, 503, "{:#}", a.body);
    assert!(a.elapsed < Duration::from_millis(1200), "{:?}", a.elapsed);
    let out = output(&a, "dynamodb-rates-hung:responseTime", 0);
    // The client's own operation timeout (90 % of the check's) ends the calls first.
    assert!(
        out.contains("DescribeTable failed: timed out")
            && out.contains("canary GetItem failed: timed out"),
        "{out}"
    );
    let lag = output(&a, "dynamodb-rates-hung:replicationLag", 0);
    assert_eq!(lag, "reading us-east-1's heartbeat failed: timed out");
    assert_schema(&a.body);
}
