//! The simulated network: one TCP link per (vantage, Region) that carries the round-trip time
//! between them and the faults, and one global endpoint per vantage that routes each
//! connection to a Region by the aggregator's current weights, as Route 53 weighted records
//! would (with a record TTL of zero: a new weight applies to the next connection).
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

/// Faults in force now.
#[derive(Debug, Default)]
pub struct Faults {
    failed: Mutex<BTreeSet<String>>,
    slow: Mutex<BTreeMap<String, Duration>>,
    flaky: Mutex<BTreeMap<String, f64>>,
}

impl Faults {
    pub fn fail(&self, region: &str) {
        lock(&self.failed).insert(region.to_owned());
    }

    pub fn recover(&self, region: &str) {
        lock(&self.failed).remove(region);
        lock(&self.slow).remove(region);
    }

    pub fn slow(&self, region: &str, extra: Duration) {
        lock(&self.slow).insert(region.to_owned(), extra);
    }

    pub fn flaky(&self, vantage: &str, ratio: f64) {
        lock(&self.flaky).insert(vantage.to_owned(), ratio);
    }

    pub fn is_failed(&self, region: &str) -> bool {
        lock(&self.failed).contains(region)
    }

    fn extra(&self, region: &str) -> Duration {
        lock(&self.slow).get(region).copied().unwrap_or_default()
    }

    fn drop_ratio(&self, vantage: &str) -> f64 {
        lock(&self.flaky).get(vantage).copied().unwrap_or(0.0)
    }
}

/// The weights the global endpoints route by, and where their connections went.
#[derive(Debug, Default)]
pub struct Routing {
    /// Region → weight; Regions absent or at 0 get no traffic unless all are at 0.
    weights: Mutex<BTreeMap<String, u8>>,
    /// Region → (connections routed, time of the last one since the run started, in ms).
    routed: Mutex<BTreeMap<String, (u64, u64)>>,
}

impl Routing {
    pub fn set_weights(&self, weights: BTreeMap<String, u8>) {
        *lock(&self.weights) = weights;
    }

    /// Weighted choice; when every weight is 0, any Region (Route 53 fails open too).
    fn pick(&self, regions: &[String]) -> String {
        let weights = lock(&self.weights).clone();
        let live: Vec<(&String, u32)> = regions
            .iter()
            .map(|r| (r, u32::from(weights.get(r).copied().unwrap_or(0))))
            .filter(|(_, w)| *w > 0)
            .collect();
        let mut rng = rand::rng();
        if live.is_empty() {
            return regions[rng.random_range(0..regions.len())].clone();
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

    fn note(&self, region: &str, at_ms: u64) {
        let mut routed = lock(&self.routed);
        let e = routed.entry(region.to_owned()).or_default();
        e.0 += 1;
        e.1 = at_ms;
    }

    /// Connections routed in all.
    pub fn total(&self) -> u64 {
        lock(&self.routed).values().map(|(n, _)| n).sum()
    }

    /// Connections routed per Region and when the last one went, in ms since the start.
    pub fn routed(&self) -> BTreeMap<String, (u64, u64)> {
        lock(&self.routed).clone()
    }
}

/// Shared by every link.
pub struct Network {
    pub faults: Arc<Faults>,
    pub routing: Arc<Routing>,
    /// Where each Region's status endpoint listens.
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
    Region(String),
    /// The global endpoint: a Region chosen per connection by weight.
    Global,
}

/// Serves one link until `stop`.
pub async fn serve_link(
    net: Arc<Network>,
    listener: TcpListener,
    vantage: String,
    destination: Destination,
    mut stop: watch::Receiver<bool>,
) {
    let names: Vec<String> = net.regions.keys().cloned().collect();
    loop {
        let (client, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(_) => continue,
            },
            _ = stop.changed() => return,
        };
        let region = match &destination {
            Destination::Region(r) => r.clone(),
            Destination::Global => {
                let r = net.routing.pick(&names);
                net.routing.note(&r, net.start.elapsed().as_millis() as u64);
                r
            }
        };
        tokio::spawn(carry(net.clone(), client, vantage.clone(), region));
    }
}

/// Carries one connection from a vantage to a Region, with the round trip and the faults.
async fn carry(net: Arc<Network>, client: TcpStream, vantage: String, region: String) {
    let _ = client.set_nodelay(true);
    let one_way = rtt(&vantage, &region) / 2;
    let drop_ratio = net.faults.drop_ratio(&vantage);
    if drop_ratio > 0.0 && rand::rng().random_bool(drop_ratio.min(1.0)) {
        // The vantage's own network loses the connection.
        let _ = client.set_zero_linger();
        return;
    }
    if net.faults.is_failed(&region) {
        tokio::time::sleep(one_way * 2).await;
        if net.failures.fetch_add(1, Ordering::Relaxed) % 2 == 0 {
            answer_503(client, &region).await;
        } else {
            let _ = client.set_zero_linger();
        }
        return;
    }
    let Some(addr) = net.regions.get(&region).copied() else {
        return;
    };
    let Ok(upstream) = TcpStream::connect(addr).await else {
        return;
    };
    let _ = upstream.set_nodelay(true);
    let extra = net.faults.extra(&region);
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
