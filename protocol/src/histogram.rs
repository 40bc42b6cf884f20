//! HDR latency histograms on the wire: values are microseconds, the encoding is HdrHistogram's
//! standard "V2 compressed" format (DEFLATE of V2), then base64, so any HdrHistogram port
//! (Java, Go, Python, JS) can read what an agent sends.

use base64::Engine as _;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
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
    #[error("histogram is not a valid V2-deflate HdrHistogram: {0}")]
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

/// Encode as V2-deflate, base64 (standard alphabet, padded) — the text form that starts `HISTF`
/// once base64-decoded tooling prints it.
pub fn encode_base64(histogram: &Histogram<u64>) -> Result<String, HistogramError> {
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

    proptest! {
        #[test]
        fn round_trip_keeps_counts_and_quantiles(values in proptest::collection::vec(1u64..=HIGHEST_MICROS, 0..200)) {
            let mut h = new_latency_histogram(3).unwrap();
            for v in &values { h.record(*v).unwrap(); }
            let decoded = decode_base64(&encode_base64(&h).unwrap()).unwrap();
            prop_assert_eq!(decoded.len(), h.len());
            for q in [0.5, 0.9, 0.99, 1.0] {
                prop_assert_eq!(decoded.value_at_quantile(q), h.value_at_quantile(q));
            }
        }
    }
}
