//! The simulated network: one TCP link per (vantage, unit) that carries the round-trip time
//! between the vantage and the unit's Region and the faults, and one global endpoint per
//! (vantage, service) that routes each connection to one of the service's units by the
//! aggregator's current weights, as Route 53 weighted records would (with a record TTL of
//! zero: a new weight applies to the next connection). A unit is one service in one Region
//! ([`crate::layout`]; the bare Region for the single-API demo), so one service can fail in a
//! Region while the others there stay healthy.
//!
//! Latency is injected in user space: every chunk is held for half the round trip in each
//! direction, so a probe's first-byte time carries the round trip as on a real network.

use crate::rtt::rtt;
use rand::Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::{sleep_until, Instant};
use vantage_protocol::config::split_unit;

/// Faults in force now, by unit key (a Region fault for every service is one entry per unit).
#[derive(Debug, Default)]
pub struct Faults {
    failed: Mutex<BTreeSet<String>>,
    slow: Mutex<BTreeMap<String, Duration>>,
    /// Unit → share of requests answered 503 (a gray failure).
    degraded: Mutex<BTreeMap<String, f64>>,
    /// (vantage, unit) → requests seen while degraded, to spread the 503s evenly.
    degraded_seen: Mutex<BTreeMap<(String, String), u64>>,
    /// (vantage, service or `None` for all) → share of connections dropped.
    flaky: Mutex<BTreeMap<(String, Option<String>), f64>>,
}

impl Faults {
    pub fn fail(&self, unit: &str) {
        lock(&self.failed).insert(unit.to_owned());
    }

    pub fn recover(&self, unit: &str) {
        lock(&self.failed).remove(unit);
        lock(&self.slow).remove(unit);
        lock(&self.degraded).remove(unit);
    }

    pub fn degrade(&self, unit: &str, ratio: f64) {
        lock(&self.degraded).insert(unit.to_owned(), ratio);
    }

    /// Whether this request of `vantage` to a degraded `unit` gets a 503. The 503s are spread
    /// evenly over each vantage's requests (the n-th fails when ⌊n·ratio⌋ steps up), not drawn
    /// at random: a window of a few probes then holds the share the fault names, so a gray
    /// failure below `max_failure_ratio` never looks like an outage by a run of bad luck.
    fn answers_503(&self, vantage: &str, unit: &str) -> bool {
        let ratio = lock(&self.degraded).get(unit).copied().unwrap_or(0.0);
        if ratio <= 0.0 {
            return false;
        }
        let mut seen = lock(&self.degraded_seen);
        let n = seen
            .entry((vantage.to_owned(), unit.to_owned()))
            .or_default();
        let fails = ((*n + 1) as f64 * ratio).floor() > (*n as f64 * ratio).floor();
        *n += 1;
        fails
    }

    pub fn slow(&self, unit: &str, extra: Duration) {
        lock(&self.slow).insert(unit.to_owned(), extra);
    }

    /// The vantage's connections drop: to every service (`None`) or to one.
    pub fn flaky(&self, vantage: &str, service: Option<&str>, ratio: f64) {
        lock(&self.flaky).insert((vantage.to_owned(), service.map(str::to_owned)), ratio);
    }

    pub fn is_failed(&self, unit: &str) -> bool {
        lock(&self.failed).contains(unit)
    }

    fn extra(&self, unit: &str) -> Duration {
        lock(&self.slow).get(unit).copied().unwrap_or_default()
    }

    /// The larger of the vantage's drop ratio for every service and for `unit`'s service.
    fn drop_ratio(&self, vantage: &str, unit: &str) -> f64 {
        let flaky = lock(&self.flaky);
        let all = flaky.get(&(vantage.to_owned(), None)).copied();
        let service = split_unit(unit).0.map(str::to_owned);
        let own = service.and_then(|s| flaky.get(&(vantage.to_owned(), Some(s))).copied());
        all.into_iter().chain(own).fold(0.0, f64::max)
    }
}

/// The weights the global endpoints route by, and where their connections went.
#[derive(Debug, Default)]
pub struct Routing {
    /// Unit → weight; units absent or at 0 get no traffic unless all of the service's are at 0.
    weights: Mutex<BTreeMap<String, u8>>,
    /// Unit → (connections routed, time of the last one since the run started, in ms).
    routed: Mutex<BTreeMap<String, (u64, u64)>>,
}

impl Routing {
    pub fn set_weights(&self, weights: BTreeMap<String, u8>) {
        *lock(&self.weights) = weights;
    }

    /// Weighted choice among one service's units; when every weight is 0, any of them
    /// (Route 53 fails open too).
    fn pick(&self, units: &[String]) -> String {
        let weights = lock(&self.weights).clone();
        let live: Vec<(&String, u32)> = units
            .iter()
            .map(|r| (r, u32::from(weights.get(r).copied().unwrap_or(0))))
            .filter(|(_, w)| *w > 0)
            .collect();
        let mut rng = rand::rng();
        if live.is_empty() {
            return units[rng.random_range(0..units.len())].clone();
        }
        let total: u32 = live.iter().map(|(_, w)| w).sum();
        let mut x = rng.random_range(0..total);
        for (r, w) in &live {
            if x < *w {
                return (*r).clone();
            }
            x -= w;
        }
        live[0].0.clone()
    }

    fn note(&self, unit: &str, at_ms: u64) {
        let mut routed = lock(&self.routed);
        let e = routed.entry(unit.to_owned()).or_default();
        e.0 += 1;
        e.1 = at_ms;
    }

    /// Connections routed in all.
    pub fn total(&self) -> u64 {
        lock(&self.routed).values().map(|(n, _)| n).sum()
    }

    /// Connections routed to any of `units` (one service's global endpoint).
    pub fn total_of(&self, units: &[String]) -> u64 {
        let routed = lock(&self.routed);
        units
            .iter()
            .filter_map(|u| routed.get(u))
            .map(|(n, _)| n)
            .sum()
    }

    /// Connections routed per unit and when the last one went, in ms since the start.
    pub fn routed(&self) -> BTreeMap<String, (u64, u64)> {
        lock(&self.routed).clone()
    }
}

/// Shared by every link.
pub struct Network {
    pub faults: Arc<Faults>,
    pub routing: Arc<Routing>,
    /// Where each unit's status endpoint listens, by unit key.
    pub regions: BTreeMap<String, SocketAddr>,
    pub start: Instant,
    /// Alternates a failed Region's answers between a 503 and a reset.
    failures: AtomicU64,
}

impl Network {
    pub fn new(regions: BTreeMap<String, SocketAddr>, start: Instant) -> Arc<Self> {
        Arc::new(Network {
            faults: Arc::new(Faults::default()),
            routing: Arc::new(Routing::default()),
            regions,
            start,
            failures: AtomicU64::new(0),
        })
    }
}

/// Where a link leads.
#[derive(Debug, Clone)]
pub enum Destination {
    /// One unit (by key).
    Region(String),
    /// A service's global endpoint: one of these units chosen per connection by weight.
    Global(Vec<String>),
}

/// Serves one link until `stop`.
pub async fn serve_link(
    net: Arc<Network>,
    listener: TcpListener,
    vantage: String,
    destination: Destination,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let (client, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(_) => continue,
            },
            _ = stop.changed() => return,
        };
        let unit = match &destination {
            Destination::Region(r) => r.clone(),
            Destination::Global(units) => {
                let r = net.routing.pick(units);
                net.routing.note(&r, net.start.elapsed().as_millis() as u64);
                r
            }
        };
        tokio::spawn(carry(net.clone(), client, vantage.clone(), unit));
    }
}

/// Carries one connection from a vantage to a unit, with the round trip to the unit's Region
/// and the faults.
async fn carry(net: Arc<Network>, client: TcpStream, vantage: String, unit: String) {
    let _ = client.set_nodelay(true);
    let region = split_unit(&unit).1.to_owned();
    let one_way = rtt(&vantage, &region) / 2;
    let drop_ratio = net.faults.drop_ratio(&vantage, &unit);
    if drop_ratio > 0.0 && rand::rng().random_bool(drop_ratio.min(1.0)) {
        // The vantage's own network loses the connection.
        let _ = client.set_zero_linger();
        return;
    }
    if net.faults.answers_503(&vantage, &unit) {
        // A gray failure: this request gets a 503, the next may not.
        tokio::time::sleep(one_way * 2).await;
        answer_503(client, &region).await;
        return;
    }
    if net.faults.is_failed(&unit) {
        tokio::time::sleep(one_way * 2).await;
        if net.failures.fetch_add(1, Ordering::Relaxed) % 2 == 0 {
            answer_503(client, &region).await;
        } else {
            let _ = client.set_zero_linger();
        }
        return;
    }
    let Some(addr) = net.regions.get(&unit).copied() else {
        return;
    };
    let Ok(upstream) = TcpStream::connect(addr).await else {
        return;
    };
    let _ = upstream.set_nodelay(true);
    let extra = net.faults.extra(&unit);
    let (cr, cw) = client.into_split();
    let (ur, uw) = upstream.into_split();
    let outbound = tokio::spawn(delayed_copy(cr, uw, one_way));
    delayed_copy(ur, cw, one_way + extra).await;
    outbound.abort();
}

/// Copies `from` to `to`, each chunk held back `delay` after it arrived.
async fn delayed_copy(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, delay: Duration) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        sleep_until(Instant::now() + delay).await;
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

async fn answer_503(mut client: TcpStream, region: &str) {
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(1), client.read(&mut buf)).await;
    let body = r#"{"message":"Service Unavailable"}"#;
    let _ = client
        .write_all(
            format!(
                "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nx-vantage-region: {region}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .await;
    let _ = client.shutdown().await;
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_are_per_unit_and_a_flaky_vantage_per_service_or_all() {
        let f = Faults::default();
        f.fail("payments/eu-west-1");
        assert!(f.is_failed("payments/eu-west-1"));
        assert!(!f.is_failed("orders/eu-west-1"));
        f.slow("orders/eu-west-1", Duration::from_millis(300));
        assert_eq!(f.extra("orders/eu-west-1"), Duration::from_millis(300));
        assert_eq!(f.extra("payments/eu-west-1"), Duration::ZERO);
        f.recover("orders/eu-west-1");
        assert_eq!(f.extra("orders/eu-west-1"), Duration::ZERO);
        assert!(
            f.is_failed("payments/eu-west-1"),
            "recovering one unit leaves the others"
        );

        f.flaky("us-east-1", Some("payments"), 0.5);
        assert_eq!(f.drop_ratio("us-east-1", "payments/eu-west-1"), 0.5);
        assert_eq!(f.drop_ratio("us-east-1", "orders/eu-west-1"), 0.0);
        assert_eq!(f.drop_ratio("eu-west-1", "payments/eu-west-1"), 0.0);
        f.flaky("us-east-1", None, 0.25);
        assert_eq!(f.drop_ratio("us-east-1", "orders/eu-west-1"), 0.25);
        assert_eq!(f.drop_ratio("us-east-1", "payments/eu-west-1"), 0.5);
        // The single-API demo's units are bare Regions.
        assert_eq!(f.drop_ratio("us-east-1", "eu-west-1"), 0.25);
    }

    #[test]
    fn the_global_endpoint_picks_only_among_its_services_units() {
        let r = Routing::default();
        r.set_weights(BTreeMap::from([
            ("orders/eu-west-1".to_owned(), 0),
            ("orders/us-east-1".to_owned(), 100),
            ("payments/eu-west-1".to_owned(), 200),
        ]));
        let orders = ["orders/eu-west-1".to_owned(), "orders/us-east-1".to_owned()];
        for _ in 0..50 {
            assert_eq!(r.pick(&orders), "orders/us-east-1");
        }
        r.note("orders/us-east-1", 1);
        r.note("payments/eu-west-1", 2);
        assert_eq!(r.total_of(&orders), 1);
        assert_eq!(r.total(), 2);
    }
}
