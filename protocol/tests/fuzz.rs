//! Fuzzing without nightly: property tests that feed arbitrary and mutated bytes to every
//! decoder the aggregator runs on network or file input — the report JSON (parse and
//! validate), the HdrHistogram V2 / V2-deflate decoders (`histogram` and `sparse`) and the
//! fleet TOML loader. Each must return a clean error or a value, never panic, and the sparse
//! decoder must keep its decompressed size within the expected shape's bound.
//!
//! Cases per property: `VANTAGE_FUZZ_CASES` (default 2,000). The long run:
//! `VANTAGE_FUZZ_CASES=100000 cargo nextest run -p vantage-protocol --test fuzz --release`.

use base64::Engine as _;
use flate2::write::ZlibEncoder;
use flate2::Compression;
use proptest::prelude::*;
use std::io::Write as _;
use vantage_protocol::config::FleetConfig;
use vantage_protocol::histogram::{decode_base64, encode_base64, new_latency_histogram};
use vantage_protocol::report::IntervalReport;
use vantage_protocol::sparse::{Shape, SparseDecoder};

fn cases() -> u32 {
    std::env::var("VANTAGE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000)
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: cases(),
        // Shrinking a panic is useful; hunting for one through thousands of shrinks is not.
        max_shrink_iters: 2_000,
        ..ProptestConfig::default()
    }
}

const REPORT: &str = r#"{"version":1,"fleet":"orders-api","agent_id":"vantage-eu-west-1","vantage":"eu-west-1","seq":7,"interval_start_ms":1700000000000,"interval_ms":10000,"targets":[{"target":"status:us-east-1","kind":"status","region":"us-east-1","attempts":3,"missed_slots":0,"outcomes":{"ok":2,"timeout":1},"answered_by":{"us-east-1":2},"cert_not_after":1800000000,"histograms":{"total":"@HIST@"}}]}"#;

/// The seed report, with a real histogram of its two ok probes.
fn report_seed() -> String {
    let mut h = new_latency_histogram(3).unwrap();
    h.record_n(1_234, 2).unwrap();
    REPORT.replace("@HIST@", &encode_base64(&h).unwrap())
}

const FLEET: &str = r#"
[fleet]
name = "orders-api"
report_interval = "10s"
[probe]
interval = "5s"
expect_status = "200"
[global]
url = "https://api.example.com/status"
[[regions]]
name = "us-east-1"
status_url = "https://use1.example.com/status"
probe = { interval = "2s" }
[[vantages]]
region = "us-east-1"
key_id = "k1"
[aggregator]
url = "https://aggregator.example.com"
[aggregator.keys]
k1 = { env = "K1", vantages = ["us-east-1"] }
[agents.auth]
key_id = "k1"
"#;

/// Replaces, inserts or deletes bytes of `text` at the given positions.
fn mutate(text: &[u8], edits: &[(usize, u8, u8)]) -> Vec<u8> {
    let mut out = text.to_vec();
    for (at, op, byte) in edits {
        if out.is_empty() {
            out.push(*byte);
            continue;
        }
        let at = at % out.len();
        match op % 3 {
            0 => out[at] = *byte,
            1 => out.insert(at, *byte),
            _ => {
                out.remove(at);
            }
        }
    }
    out
}

fn edits() -> impl Strategy<Value = Vec<(usize, u8, u8)>> {
    proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..8)
}

/// A V2 header (40 bytes) with the given fields, then `payload`.
fn v2(digits: u32, low: u64, high: u64, len: u32, payload: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&(0x1c84_9303u32 | 0x10).to_be_bytes());
    b.extend_from_slice(&len.to_be_bytes());
    b.extend_from_slice(&0u32.to_be_bytes());
    b.extend_from_slice(&digits.to_be_bytes());
    b.extend_from_slice(&low.to_be_bytes());
    b.extend_from_slice(&high.to_be_bytes());
    b.extend_from_slice(&1.0f64.to_bits().to_be_bytes());
    b.extend_from_slice(payload);
    b
}

/// The V2-deflate wrapping of `inner` (cookie, compressed length, zlib stream).
fn deflate(inner: &[u8]) -> Vec<u8> {
    let mut z = ZlibEncoder::new(Vec::new(), Compression::default());
    z.write_all(inner).unwrap();
    let compressed = z.finish().unwrap();
    let mut b = Vec::new();
    b.extend_from_slice(&(0x1c84_9304u32 | 0x10).to_be_bytes());
    b.extend_from_slice(&(compressed.len() as u32).to_be_bytes());
    b.extend_from_slice(&compressed);
    b
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Runs both sparse entry points; the shaped one also checks its output is sorted.
fn sparse_decode(text: &str) {
    let mut d = SparseDecoder::new();
    let mut out = Vec::new();
    let _ = d.decode(text, &mut out);
    if d.decode_shaped(text, Shape::latency(3), &mut out).is_ok() {
        assert!(out.windows(2).all(|w| w[0].0 < w[1].0), "{out:?}");
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn report_json_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(r) = serde_json::from_slice::<IntervalReport>(&bytes) {
            let _ = r.validate();
        }
    }

    #[test]
    fn mutated_reports_are_parsed_or_refused_cleanly(e in edits()) {
        let bytes = mutate(report_seed().as_bytes(), &e);
        if let Ok(r) = serde_json::from_slice::<IntervalReport>(&bytes) {
            if r.validate().is_ok() {
                for t in &r.targets {
                    for text in t.histograms.values() {
                        sparse_decode(text);
                    }
                }
            }
        }
    }

    #[test]
    fn sparse_decoder_never_panics_on_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        sparse_decode(&b64(&bytes));
        // Also as text that is not base64 at all.
        sparse_decode(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn sparse_decoder_never_panics_on_any_header_or_payload(
        digits in 0u32..8,
        low in prop_oneof![Just(1u64), any::<u64>()],
        high in prop_oneof![Just(60_000_000u64), any::<u64>()],
        len in prop_oneof![0u32..64, any::<u32>()],
        payload in proptest::collection::vec(any::<u8>(), 0..128),
        compressed in any::<bool>(),
    ) {
        let raw = v2(digits, low, high, len, &payload);
        let raw = if compressed { deflate(&raw) } else { raw };
        sparse_decode(&b64(&raw));
    }

    #[test]
    fn mutated_histograms_are_decoded_or_refused_cleanly(
        values in proptest::collection::vec(1u64..=60_000_000, 0..50),
        e in edits(),
    ) {
        let mut h = new_latency_histogram(3).unwrap();
        for v in &values {
            h.record(*v).unwrap();
        }
        let raw = base64::engine::general_purpose::STANDARD
            .decode(encode_base64(&h).unwrap())
            .unwrap();
        let text = b64(&mutate(&raw, &e));
        sparse_decode(&text);
        // The reference decoder, on encodings of the fleet's shape only: it allocates whatever
        // length a header claims, which is why ingest uses `sparse`.
        let mut out = Vec::new();
        if SparseDecoder::new().decode_shaped(&text, Shape::latency(3), &mut out).is_ok() {
            let _ = decode_base64(&text);
        }
    }

    #[test]
    fn fleet_loader_never_panics_on_any_text(text in "\\PC{0,300}") {
        let _ = FleetConfig::parse(&text, "fuzz.toml");
    }

    #[test]
    fn mutated_fleets_load_or_fail_with_a_located_error(e in edits()) {
        let text = String::from_utf8_lossy(&mutate(FLEET.as_bytes(), &e)).into_owned();
        if let Err(err) = FleetConfig::parse(&text, "fuzz.toml") {
            let message = err.to_string();
            prop_assert!(!message.is_empty());
            prop_assert!(message.contains("fuzz.toml") || message.contains(':'), "{}", message);
        }
    }
}

#[test]
fn the_seeds_are_valid() {
    let r: IntervalReport = serde_json::from_str(&report_seed()).unwrap();
    r.validate().unwrap();
    let mut out = Vec::new();
    SparseDecoder::new()
        .decode_shaped(
            &r.targets[0].histograms.values().next().unwrap().clone(),
            Shape::latency(3),
            &mut out,
        )
        .unwrap();
    assert_eq!(out.iter().map(|p| p.1).sum::<u64>(), 2);
    FleetConfig::parse(FLEET, "fuzz.toml").unwrap();
}
