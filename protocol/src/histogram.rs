//! HDR latency histograms on the wire: values are microseconds, the encoding is one of
//! HdrHistogram's two standard formats, then base64, so any HdrHistogram port (Java, Go,
//! Python, JS) can read what an agent sends. Each histogram is self-describing (its cookie says
//! which format), so the choice is made per histogram, by size ([`encode_base64`]): plain V2
//! for the small histograms an interval of a few probes gives — DEFLATE costs more to write
//! and to read than it saves there (its header and tables outweigh a few dozen bytes of
//! varints) — and "V2 compressed" (DEFLATE of V2) when the plain encoding is over
//! [`DEFLATE_ABOVE_BYTES`] and deflating it is smaller. Every reader since the first version
//! (the aggregator's sparse decoder, `hdrhistogram`'s `Deserializer`) reads both, so old agents
//! and old aggregators keep working: the report's version does not change.

use base64::Engine as _;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer, V2Serializer};
use hdrhistogram::Histogram;

/// Lowest value a latency histogram tracks: one microsecond.
pub const LOWEST_MICROS: u64 = 1;
/// Highest value a latency histogram tracks: sixty seconds, in microseconds.
pub const HIGHEST_MICROS: u64 = 60_000_000;
/// Default precision: three significant decimal digits (0.1% relative error).
pub const DEFAULT_SIGNIFICANT_DIGITS: u8 = 3;

/// Errors of the histogram codec.
#[derive(Debug, thiserror::Error)]
pub enum HistogramError {
    #[error("significant digits must be 1..=5, got {0}")]
    Precision(u8),
    #[error("encoding histogram failed: {0}")]
    Encode(String),
    #[error("histogram is not valid base64: {0}")]
    Base64(#[from] base64::DecodeError),
    #[error("histogram is not a valid V2 or V2-deflate HdrHistogram: {0}")]
    Decode(String),
}

/// An empty latency histogram over 1 µs .. 60 s at the given precision.
pub fn new_latency_histogram(significant_digits: u8) -> Result<Histogram<u64>, HistogramError> {
    if !(1..=5).contains(&significant_digits) {
        return Err(HistogramError::Precision(significant_digits));
    }
    Histogram::new_with_bounds(LOWEST_MICROS, HIGHEST_MICROS, significant_digits)
        .map_err(|e| HistogramError::Encode(format!("{e:?}")))
}

/// Clamp a microsecond value into the tracked range, so out-of-range samples are kept (at the
/// edge) rather than dropped.
pub fn clamp_micros(micros: u64) -> u64 {
    micros.clamp(LOWEST_MICROS, HIGHEST_MICROS)
}

/// Plain V2 encodings longer than this are also deflated, and the shorter one is sent.
pub const DEFLATE_ABOVE_BYTES: usize = 256;

/// Encode as V2, or as V2-deflate when the V2 bytes are over [`DEFLATE_ABOVE_BYTES`] and
/// deflating them is smaller; base64 (standard alphabet, padded).
pub fn encode_base64(histogram: &Histogram<u64>) -> Result<String, HistogramError> {
    let mut plain = Vec::with_capacity(128);
    V2Serializer::new()
        .serialize(histogram, &mut plain)
        .map_err(|e| HistogramError::Encode(format!("{e:?}")))?;
    if plain.len() > DEFLATE_ABOVE_BYTES {
        let mut deflated = Vec::with_capacity(plain.len());
        V2DeflateSerializer::new()
            .serialize(histogram, &mut deflated)
            .map_err(|e| HistogramError::Encode(format!("{e:?}")))?;
        if deflated.len() < plain.len() {
            plain = deflated;
        }
    }
    Ok(base64::engine::general_purpose::STANDARD.encode(plain))
}

/// Encode as V2-deflate always, as agents did before [`encode_base64`] chose by size: for
/// compatibility tests and the benches' before-and-after figures.
pub fn encode_base64_deflate(histogram: &Histogram<u64>) -> Result<String, HistogramError> {
    let mut bytes = Vec::with_capacity(64);
    V2DeflateSerializer::new()
        .serialize(histogram, &mut bytes)
        .map_err(|e| HistogramError::Encode(format!("{e:?}")))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// Decode what [`encode_base64`] (or any HdrHistogram V2 / V2-deflate writer) produced.
pub fn decode_base64(text: &str) -> Result<Histogram<u64>, HistogramError> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(text.trim())?;
    Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| HistogramError::Decode(format!("{e:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rejects_bad_precision_and_garbage() {
        assert!(new_latency_histogram(0).is_err());
        assert!(new_latency_histogram(6).is_err());
        assert!(matches!(
            decode_base64("not base64!"),
            Err(HistogramError::Base64(_))
        ));
        assert!(matches!(
            decode_base64("AAAA"),
            Err(HistogramError::Decode(_))
        ));
    }

    /// The cookie's last byte: 0x13 plain V2, 0x14 V2-deflate.
    fn format_of(text: &str) -> u8 {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .unwrap()[3]
    }

    #[test]
    fn small_histograms_go_plain_and_large_ones_deflated_when_smaller() {
        let mut few = new_latency_histogram(3).unwrap();
        for v in [20_000, 21_000, 25_000, 40_000] {
            few.record(v).unwrap();
        }
        let plain = encode_base64(&few).unwrap();
        assert_eq!(format_of(&plain), 0x13);
        assert!(plain.len() < encode_base64_deflate(&few).unwrap().len());

        let mut many = new_latency_histogram(3).unwrap();
        for v in (1_000..400_000).step_by(97) {
            many.record(v).unwrap();
        }
        let chosen = encode_base64(&many).unwrap();
        assert_eq!(format_of(&chosen), 0x14);
        assert_eq!(chosen, encode_base64_deflate(&many).unwrap());
    }

    proptest! {
        #[test]
        fn round_trip_keeps_counts_and_quantiles(values in proptest::collection::vec(1u64..=HIGHEST_MICROS, 0..200)) {
            let mut h = new_latency_histogram(3).unwrap();
            for v in &values { h.record(*v).unwrap(); }
            for text in [encode_base64(&h).unwrap(), encode_base64_deflate(&h).unwrap()] {
                let decoded = decode_base64(&text).unwrap();
                prop_assert_eq!(decoded.len(), h.len());
                for q in [0.5, 0.9, 0.99, 1.0] {
                    prop_assert_eq!(decoded.value_at_quantile(q), h.value_at_quantile(q));
                }
            }
        }
    }
}
