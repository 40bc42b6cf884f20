//! The wire histograms against an independent HdrHistogram implementation: the Python port
//! (PyPI `hdrhistogram`, module `hdrh`) decodes what the agent encodes — plain V2 for small
//! histograms, V2-deflate for large ones, and V2-deflate for every set as older agents sent it —
//! and the agent decodes what Python encodes, and both sides agree on every count and
//! percentile.
//!
//! Percentiles, precisely: both ports walk the counts to a target rank and return the highest
//! value equivalent to the bucket that reaches it, but they pick the rank differently. Python's
//! `get_value_at_percentile(p)` uses `max(1, int(p·N/100 + 0.5))` (round half up, like Java
//! HdrHistogram before 2.1.10); Rust's `value_at_quantile(q)` uses `max(1, ceil(q·N))`, in
//! floating point (so `0.999 · 5000` is `4995.000000000001` and becomes 4996). The test
//! therefore checks (1) the recorded buckets are identical, value by value; (2) each port's
//! percentile is the highest equivalent value at the rank its own rule gives, read from the
//! *other* port's buckets; (3) where the two rules give the same rank, the two percentiles are
//! equal outright.

use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;
use vantage_agent::recorder::{SampleSet, SPARSE_LIMIT};
use vantage_protocol::histogram::{
    decode_base64, encode_base64, encode_base64_deflate, HIGHEST_MICROS,
};

/// Percentiles as Python takes them and quantiles as Rust callers write them.
const PERCENTILES: [(f64, f64); 4] = [(50.0, 0.5), (90.0, 0.9), (99.0, 0.99), (99.9, 0.999)];

/// Decodes each `{"name", "histogram"}` of the input file and prints what the `hdrh` port sees;
/// then encodes histograms of known values for the other direction.
const PYTHON: &str = r#"
import json, sys
from hdrh.histogram import HdrHistogram

def describe(h):
    return {
        "total": h.get_total_count(),
        "min": h.get_min_value(),
        "max": h.get_max_value(),
        "recorded": [[it.value_iterated_to, it.count_at_value_iterated_to]
                     for it in h.get_recorded_iterator()],
        "percentiles": [[p, h.get_target_count_at_percentile(p), h.get_value_at_percentile(p)]
                        for p in percentiles],
    }

import base64, struct, zlib

def readable(text):
    # hdrh's wire decoder takes the compressed form only: a plain V2 payload (cookie
    # 0x1c849313) is handed to it zlib-wrapped, byte for byte, so hdrh still parses every
    # header field and varint the agent wrote.
    raw = base64.b64decode(text)
    if struct.unpack(">i", raw[:4])[0] == 0x1c849313:
        packed = zlib.compress(raw)
        return base64.b64encode(struct.pack(">ii", 0x1c849314, len(packed)) + packed)
    return text

request = json.load(open(sys.argv[1]))
percentiles = request["percentiles"]
decoded = {item["name"]: describe(HdrHistogram.decode(readable(item["histogram"])))
           for item in request["histograms"]}

encoded = []
for spec in request["encode"]:
    h = HdrHistogram(spec["lowest"], spec["highest"], spec["digits"])
    for value, count in spec["values"]:
        h.record_value(value, count)
    blob = h.encode()
    encoded.append({"name": spec["name"],
                    "histogram": blob.decode("ascii") if isinstance(blob, bytes) else blob,
                    "described": describe(h)})
print(json.dumps({"decoded": decoded, "encoded": encoded}))
"#;

fn python() -> PathBuf {
    let venv = std::env::var_os("VANTAGE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join(".venv")
        });
    let python = venv.join("bin").join("python");
    let usable = python.is_file()
        && Command::new(&python)
            .args(["-c", "import hdrh.histogram"])
            .output()
            .is_ok_and(|o| o.status.success());
    assert!(
        usable,
        "python venv with hdrhistogram not found: run ./scripts/test.sh (it creates .venv) \
         (looked for {})",
        python.display()
    );
    python
}

/// Deterministic pseudo-random numbers (SplitMix64): the same samples on every run.
struct SplitMix(u64);

impl SplitMix {
    fn next_unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// `n` samples spread log-uniformly over 1 µs .. 60 s.
fn log_uniform(n: usize, seed: u64) -> Vec<u64> {
    let mut rng = SplitMix(seed);
    let span = (HIGHEST_MICROS as f64).ln();
    (0..n)
        .map(|_| (rng.next_unit() * span).exp().round() as u64)
        .collect()
}

/// The sample sets the agent would encode, by name.
fn agent_sets() -> Vec<(&'static str, SampleSet)> {
    let mut sets = Vec::new();

    sets.push(("empty", SampleSet::new(3)));

    let mut single = SampleSet::new(3);
    single.record(Duration::from_millis(42));
    sets.push(("single", single));

    // Fewer than SPARSE_LIMIT samples: kept raw, turned into a histogram when encoded.
    let mut sparse = SampleSet::new(3);
    for v in log_uniform(300, 1) {
        sparse.record_micros(v);
    }
    sparse.record(Duration::from_micros(1));
    sparse.record(Duration::from_secs(60));
    sets.push(("sparse", sparse));

    // Past SPARSE_LIMIT: a dense histogram, recorded into sample by sample.
    let mut dense = SampleSet::new(3);
    for v in log_uniform(5 * SPARSE_LIMIT - 120, 2) {
        dense.record_micros(v);
    }
    for edge in [
        0,
        1,
        2,
        999,
        1_000,
        1_001,
        59_999_999,
        HIGHEST_MICROS,
        u64::MAX,
    ] {
        dense.record_micros(edge);
    }
    sets.push(("dense", dense));

    // A realistic API: most answers in 20..80 ms, a slow tail, a few timeouts at the 10 s cap.
    let mut api = SampleSet::new(3);
    let mut rng = SplitMix(3);
    for i in 0..3_000u64 {
        let v = match i % 100 {
            0 => 10_000_000,
            1..=4 => 200_000 + (rng.next_unit() * 1_800_000.0) as u64,
            _ => 20_000 + (rng.next_unit() * 60_000.0) as u64,
        };
        api.record_micros(v);
    }
    sets.push(("api", api));

    // Two precisions other than the default.
    let mut coarse = SampleSet::new(2);
    let mut fine = SampleSet::new(5);
    for v in log_uniform(2_000, 4) {
        coarse.record_micros(v);
        fine.record_micros(v);
    }
    sets.push(("coarse", coarse));
    sets.push(("fine", fine));
    sets
}

/// Histograms Python encodes from known values: (value, count) pairs.
fn python_specs() -> Value {
    json!([
        {"name": "latency", "lowest": 1, "highest": HIGHEST_MICROS, "digits": 3,
         "values": [[1, 1], [250, 3], [1_000, 10], [1_001, 1], [45_000, 500], [45_100, 250],
                    [120_000, 30], [2_000_000, 5], [HIGHEST_MICROS, 2]]},
        {"name": "hour", "lowest": 1, "highest": 3_600_000_000u64, "digits": 2,
         "values": [[7, 2], [1_234_567, 9], [3_600_000_000u64, 1]]},
        {"name": "empty", "lowest": 1, "highest": HIGHEST_MICROS, "digits": 3, "values": []},
    ])
}

fn u(v: &Value) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("{v} is not an unsigned integer"))
}

/// (value_iterated_to, count) of every non-empty bucket.
fn recorded(h: &hdrhistogram::Histogram<u64>) -> Vec<(u64, u64)> {
    h.iter_recorded()
        .map(|it| (it.value_iterated_to(), it.count_at_value()))
        .collect()
}

fn recorded_from_json(v: &Value) -> Vec<(u64, u64)> {
    v.as_array()
        .expect("recorded list")
        .iter()
        .map(|pair| (u(&pair[0]), u(&pair[1])))
        .collect()
}

/// Highest equivalent value of the bucket where the cumulative count reaches `rank`, from a
/// recorded-bucket list (0 when empty, as both ports answer).
fn value_at_rank(buckets: &[(u64, u64)], rank: u64) -> u64 {
    let mut seen = 0;
    for (value, count) in buckets {
        seen += count;
        if seen >= rank {
            return *value;
        }
    }
    0
}

/// The rank Rust's `value_at_quantile` targets.
fn rust_rank(q: f64, total: u64) -> u64 {
    ((q * total as f64).ceil() as u64).max(1)
}

/// Checks that Rust's view of `h` and the Python description of the same histogram agree.
/// Returns how many percentiles were equal outright (same rank under both rules).
fn assert_agree(name: &str, h: &hdrhistogram::Histogram<u64>, py: &Value) -> usize {
    assert_eq!(h.len(), u(&py["total"]), "{name}: total count");
    assert_eq!(h.min(), u(&py["min"]), "{name}: min");
    assert_eq!(h.max(), u(&py["max"]), "{name}: max");
    let rust_buckets = recorded(h);
    let py_buckets = recorded_from_json(&py["recorded"]);
    assert_eq!(rust_buckets, py_buckets, "{name}: recorded buckets");

    let mut direct = 0;
    for (i, (p, q)) in PERCENTILES.into_iter().enumerate() {
        let row = &py["percentiles"][i];
        assert_eq!(row[0].as_f64(), Some(p), "{name}: percentile order");
        let (py_rank, py_value) = (u(&row[1]), u(&row[2]));
        let rust_value = h.value_at_quantile(q);
        let rank = rust_rank(q, h.len());
        if h.is_empty() {
            assert_eq!((rust_value, py_value), (0, 0), "{name}: p{p} of nothing");
            direct += 1;
            continue;
        }
        assert_eq!(
            rust_value,
            value_at_rank(&py_buckets, rank),
            "{name}: Rust p{p} (rank {rank}) against Python's buckets"
        );
        assert_eq!(
            py_value,
            value_at_rank(&rust_buckets, py_rank),
            "{name}: Python p{p} (rank {py_rank}) against Rust's buckets"
        );
        if rank == py_rank {
            assert_eq!(rust_value, py_value, "{name}: p{p}");
            direct += 1;
        } else {
            println!(
                "{name}: p{p}: Rust rank {rank} of {} → {rust_value}, Python rank {py_rank} → \
                 {py_value}",
                h.len()
            );
        }
    }
    direct
}

fn temp_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("vantage-hdr-interop-{}-{name}", std::process::id()))
}

#[test]
fn python_hdrh_and_the_agent_read_each_others_histograms() {
    let python = python();
    let sets = agent_sets();
    let dense_len = sets
        .iter()
        .find(|(n, _)| *n == "dense")
        .map(|(_, s)| s.len());
    assert!(dense_len.is_some_and(|n| n > SPARSE_LIMIT as u64));

    // Each set as the agent sends it (plain V2 or V2-deflate, by size) and as V2-deflate.
    let encoded: Vec<(String, String, hdrhistogram::Histogram<u64>)> = sets
        .iter()
        .flat_map(|(name, set)| {
            let h = set.to_histogram();
            [
                (
                    name.to_string(),
                    encode_base64(&h).expect("encode"),
                    h.clone(),
                ),
                (
                    format!("{name}-deflate"),
                    encode_base64_deflate(&h).expect("encode"),
                    h,
                ),
            ]
        })
        .collect();
    assert!(
        encoded.iter().any(|(_, b64, _)| b64.starts_with("HISTE")),
        "some set goes as plain V2"
    );
    let request = json!({
        "percentiles": PERCENTILES.map(|(p, _)| p),
        "histograms": encoded.iter()
            .map(|(name, b64, _)| json!({"name": name, "histogram": b64}))
            .collect::<Vec<_>>(),
        "encode": python_specs(),
    });
    let input = temp_path("request.json");
    std::fs::write(&input, serde_json::to_vec_pretty(&request).expect("JSON")).expect("write");
    let out = Command::new(&python)
        .arg("-c")
        .arg(PYTHON)
        .arg(&input)
        .output()
        .expect("run python");
    let _ = std::fs::remove_file(&input);
    assert!(
        out.status.success(),
        "python failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: Value = serde_json::from_slice(&out.stdout).expect("python's JSON");

    // Agent → Python.
    let mut direct = 0;
    for (name, b64, original) in &encoded {
        let py = &answer["decoded"][name.as_str()];
        assert!(py.is_object(), "python did not decode {name}");
        let decoded = decode_base64(b64).expect("decode our own encoding");
        direct += assert_agree(name, &decoded, py);
        // In memory the minimum is the exact sample; on the wire it is its bucket's lowest
        // equivalent value, in both ports.
        assert_eq!(decoded.len(), original.len(), "{name}");
        assert_eq!(decoded.max(), original.max(), "{name}");
        if !original.is_empty() {
            assert_eq!(
                decoded.min(),
                original.lowest_equivalent(original.min()),
                "{name}"
            );
        }
        println!(
            "agent → python: {name:>6}: {} samples, {} buckets, min {} max {} µs, p50 {} p99.9 {}",
            original.len(),
            recorded(&decoded).len(),
            decoded.min(),
            decoded.max(),
            decoded.value_at_quantile(0.5),
            decoded.value_at_quantile(0.999),
        );
    }

    // Python → agent.
    for item in answer["encoded"].as_array().expect("encoded list") {
        let name = item["name"].as_str().expect("name");
        let h = decode_base64(item["histogram"].as_str().expect("base64"))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        direct += assert_agree(name, &h, &item["described"]);
        let spec = python_specs();
        let spec = spec
            .as_array()
            .and_then(|s| s.iter().find(|s| s["name"] == name))
            .expect("spec");
        for pair in spec["values"].as_array().expect("values") {
            let (value, count) = (u(&pair[0]), u(&pair[1]));
            assert_eq!(h.count_at(value), count, "{name}: count at {value}");
        }
        println!(
            "python → agent: {name:>7}: {} samples, {} significant digits, highest {}",
            h.len(),
            h.sigfig(),
            h.high()
        );
    }
    println!("percentiles equal outright (same rank under both rules): {direct}");
}
