//! A fast decoder for the aggregator: it decodes a base64 HdrHistogram V2 or V2-deflate straight to sorted
//! `(highest equivalent value, count)` pairs — what the aggregator's window keeps — with one
//! inflate state reused across calls and no dense counts array. `hdrhistogram`'s `Deserializer`
//! allocates and zeroes the whole array (~17,400 `u64` counters, 136 KiB, for 1 µs .. 60 s at 3
//! digits) and a fresh inflate state (~40 KiB) for every histogram, then the window walks the
//! array back to pairs: per histogram of ten samples, almost all of the cost.
//!
//! It accepts and refuses what `hdrhistogram` does (cookie, normalising offset 0, integer-to-
//! double ratio 1.0, the same bounds checks as `Histogram::new_with_bounds`, counts past the end
//! of the array), and also refuses a payload longer than any array of that shape could encode,
//! before reading it: `hdrhistogram` allocates whatever length the header claims.
//! [`SparseDecoder::decode_shaped`] also refuses any bounds or precision but the expected
//! [`Shape`] before inflating past the header, so a sender cannot pick a shape whose payload
//! inflates to megabytes: the decompressed size is capped by the expected shape's array.

use base64::Engine as _;
use flate2::{Decompress, FlushDecompress, Status};

const V2_COOKIE: u32 = 0x1c84_9303 | 0x10;
const V2_COMPRESSED_COOKIE: u32 = 0x1c84_9304 | 0x10;
/// Cookie, payload length, normalising offset, digits, low, high, ratio.
const HEADER: usize = 40;
/// Longest LEB128-64b9B varint.
const MAX_VARINT: usize = 9;

/// Why a histogram was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SparseError {
    Base64,
    Cookie,
    Truncated,
    Inflate,
    Unsupported,
    Parameters,
    TooLong,
    Shape,
}

/// The bounds and precision every histogram of a fleet has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub low: u64,
    pub high: u64,
    pub digits: u8,
}

impl Shape {
    /// The fleet's latency histograms: 1 µs .. 60 s at `digits` significant digits.
    pub fn latency(digits: u8) -> Shape {
        Shape {
            low: crate::histogram::LOWEST_MICROS,
            high: crate::histogram::HIGHEST_MICROS,
            digits,
        }
    }

    /// The most bytes a V2 encoding of this shape decompresses to: the header and one
    /// longest varint per counter.
    pub fn max_decoded_bytes(&self) -> Result<usize, SparseError> {
        let layout = Layout::new(self.low, self.high, self.digits)?;
        Ok(HEADER + layout.len.saturating_mul(MAX_VARINT))
    }
}

impl std::error::Error for SparseError {}

impl std::fmt::Display for SparseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SparseError::Base64 => "not valid base64",
            SparseError::Cookie => "not an HdrHistogram V2 or V2-deflate encoding",
            SparseError::Truncated => "cut short",
            SparseError::Inflate => "not a valid deflate stream",
            SparseError::Unsupported => "uses a normalising offset or a non-integer ratio",
            SparseError::Parameters => "invalid bounds or precision",
            SparseError::TooLong => "encodes more counts than its bounds allow",
            SparseError::Shape => "bounds or precision differ from the fleet's histograms",
        })
    }
}

/// The counts array's shape, as `Histogram::new_with_bounds` lays it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout {
    unit_magnitude: u32,
    half_count_magnitude: u32,
    half_count: u64,
    len: usize,
}

impl Layout {
    fn new(low: u64, high: u64, digits: u8) -> Result<Self, SparseError> {
        if !(1..=u64::MAX / 2).contains(&low) || high < 2 * low || digits > 5 {
            return Err(SparseError::Parameters);
        }
        let largest = 2 * 10_u32.pow(u32::from(digits));
        let unit_magnitude = (low as f64).log2().floor() as u32;
        let count_magnitude = f64::from(largest).log2().ceil() as u32;
        if unit_magnitude + count_magnitude > 63 {
            return Err(SparseError::Parameters);
        }
        let count = 1_u64 << count_magnitude;
        let mut untrackable = count << unit_magnitude;
        let mut buckets: usize = 1;
        while untrackable <= high {
            if untrackable > u64::MAX / 2 {
                buckets += 1;
                break;
            }
            untrackable <<= 1;
            buckets += 1;
        }
        Ok(Layout {
            unit_magnitude,
            half_count_magnitude: count_magnitude - 1,
            half_count: count / 2,
            len: (buckets + 1) * (count / 2) as usize,
        })
    }

    /// `highest_equivalent(value_for(index))`: what `iter_recorded` reports for the index.
    fn value_at(&self, index: usize) -> u64 {
        let mut bucket = (index >> self.half_count_magnitude) as i64 - 1;
        let mut sub = (index as u64 & (self.half_count - 1)) + self.half_count;
        if bucket < 0 {
            sub -= self.half_count;
            bucket = 0;
        }
        let shift = bucket as u32 + self.unit_magnitude;
        (sub << shift).saturating_add(1 << shift) - 1
    }
}

fn be_u32(b: &[u8], at: usize) -> Result<u32, SparseError> {
    let bytes = b.get(at..at + 4).ok_or(SparseError::Truncated)?;
    Ok(u32::from_be_bytes(bytes.try_into().expect("4 bytes")))
}

fn be_u64(b: &[u8], at: usize) -> Result<u64, SparseError> {
    let bytes = b.get(at..at + 8).ok_or(SparseError::Truncated)?;
    Ok(u64::from_be_bytes(bytes.try_into().expect("8 bytes")))
}

/// The header's payload length and layout; checks every field, and the shape if one is expected.
fn header(b: &[u8], expected: Option<Shape>) -> Result<(usize, Layout), SparseError> {
    if be_u32(b, 0)? != V2_COOKIE {
        return Err(SparseError::Cookie);
    }
    let payload_len = be_u32(b, 4)? as usize;
    if be_u32(b, 8)? != 0 {
        return Err(SparseError::Unsupported);
    }
    let digits = u8::try_from(be_u32(b, 12)?).map_err(|_| SparseError::Parameters)?;
    let (low, high) = (be_u64(b, 16)?, be_u64(b, 24)?);
    if f64::from_bits(be_u64(b, 32)?) != 1.0 {
        return Err(SparseError::Unsupported);
    }
    if expected.is_some_and(|e| e != Shape { low, high, digits }) {
        return Err(SparseError::Shape);
    }
    let layout = Layout::new(low, high, digits)?;
    if payload_len > layout.len.saturating_mul(MAX_VARINT) {
        return Err(SparseError::TooLong);
    }
    Ok((payload_len, layout))
}

/// LEB128-64b9B, as HdrHistogram writes it: the ninth byte is taken whole.
fn varint(b: &[u8]) -> Result<(u64, usize), SparseError> {
    let mut value = 0_u64;
    for i in 0..MAX_VARINT {
        let byte = *b.get(i).ok_or(SparseError::Truncated)?;
        if i == MAX_VARINT - 1 {
            return Ok((value | u64::from(byte) << 56, MAX_VARINT));
        }
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok((value, i + 1));
        }
    }
    unreachable!("the ninth byte returns")
}

/// Decodes many histograms, reusing its buffers and inflate state.
pub struct SparseDecoder {
    inflate: Decompress,
    raw: Vec<u8>,
    inflated: Vec<u8>,
}

impl std::fmt::Debug for SparseDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SparseDecoder").finish_non_exhaustive()
    }
}

impl Default for SparseDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl SparseDecoder {
    pub fn new() -> Self {
        SparseDecoder {
            inflate: Decompress::new(true),
            raw: Vec::new(),
            inflated: Vec::new(),
        }
    }

    /// Replaces `out` with the histogram's non-zero `(value, count)` pairs, ascending.
    pub fn decode(&mut self, text: &str, out: &mut Vec<(u64, u64)>) -> Result<(), SparseError> {
        self.decode_inner(text, None, out)
    }

    /// As [`SparseDecoder::decode`], and refuses any shape but `shape` before inflating the
    /// payload, so the decompressed size is at most [`Shape::max_decoded_bytes`].
    pub fn decode_shaped(
        &mut self,
        text: &str,
        shape: Shape,
        out: &mut Vec<(u64, u64)>,
    ) -> Result<(), SparseError> {
        self.decode_inner(text, Some(shape), out)
    }

    fn decode_inner(
        &mut self,
        text: &str,
        shape: Option<Shape>,
        out: &mut Vec<(u64, u64)>,
    ) -> Result<(), SparseError> {
        out.clear();
        self.raw.clear();
        // `trim` walks chars for Unicode whitespace at both ends (a measurable share of
        // decoding a short histogram); a text that starts and ends with visible ASCII, as
        // every encoder writes it, has none to trim.
        let bytes = text.as_bytes();
        let text = match (bytes.first(), bytes.last()) {
            (Some(f), Some(l)) if f.is_ascii_graphic() && l.is_ascii_graphic() => text,
            _ => text.trim(),
        };
        base64::engine::general_purpose::STANDARD
            .decode_vec(text, &mut self.raw)
            .map_err(|_| SparseError::Base64)?;
        match be_u32(&self.raw, 0)? {
            V2_COOKIE => counts(&self.raw, shape, out),
            V2_COMPRESSED_COOKIE => {
                let len = be_u32(&self.raw, 4)? as usize;
                let end = self.raw.len().min(8usize.saturating_add(len));
                inflate(
                    &mut self.inflate,
                    &self.raw[8..end],
                    shape,
                    &mut self.inflated,
                )?;
                counts(&self.inflated, shape, out)
            }
            _ => Err(SparseError::Cookie),
        }
    }
}

/// Inflates until the header and the payload it announces are in `out` (or the stream ends),
/// and never past them: the header is checked (bounds, and `shape` if given) before any of the
/// payload is inflated, and `out` never grows beyond what it announced.
fn inflate(
    z: &mut Decompress,
    input: &[u8],
    shape: Option<Shape>,
    out: &mut Vec<u8>,
) -> Result<(), SparseError> {
    z.reset(true);
    out.clear();
    let mut want = HEADER;
    let mut checked = false;
    loop {
        if !checked && out.len() >= HEADER {
            want = HEADER + header(out, shape)?.0;
            checked = true;
        }
        if checked && out.len() >= want {
            return Ok(());
        }
        // Exact: `reserve` may double, and `decompress_vec` fills whatever capacity there is.
        out.reserve_exact(want.saturating_sub(out.len()).max(64));
        let (before_in, before_out) = (z.total_in(), z.total_out());
        let consumed = before_in as usize;
        let status = z
            .decompress_vec(&input[consumed..], out, FlushDecompress::None)
            .map_err(|_| SparseError::Inflate)?;
        let stalled = z.total_in() == before_in && z.total_out() == before_out;
        if status == Status::StreamEnd || stalled {
            if !checked && out.len() >= HEADER {
                continue;
            }
            return if out.len() >= want && checked {
                Ok(())
            } else {
                Err(SparseError::Truncated)
            };
        }
    }
}

/// The counts of an uncompressed V2 encoding.
fn counts(b: &[u8], shape: Option<Shape>, out: &mut Vec<(u64, u64)>) -> Result<(), SparseError> {
    let (payload_len, layout) = header(b, shape)?;
    let payload = b
        .get(HEADER..HEADER + payload_len)
        .ok_or(SparseError::Truncated)?;
    let (mut at, mut index) = (0, 0_usize);
    while at < payload.len() {
        let (zz, n) = varint(&payload[at..])?;
        at += n;
        let v = ((zz >> 1) as i64) ^ -((zz & 1) as i64);
        if v < 0 {
            index = index
                .checked_add(v.unsigned_abs() as usize)
                .ok_or(SparseError::TooLong)?;
        } else {
            if v > 0 {
                if index >= layout.len {
                    return Err(SparseError::TooLong);
                }
                out.push((layout.value_at(index), v as u64));
            }
            index += 1;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::histogram::{decode_base64, encode_base64, new_latency_histogram};

    fn reference(text: &str) -> Option<Vec<(u64, u64)>> {
        decode_base64(text).ok().map(|h| {
            h.iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .collect()
        })
    }

    fn sparse(text: &str) -> Result<Vec<(u64, u64)>, SparseError> {
        let mut out = Vec::new();
        SparseDecoder::new().decode(text, &mut out).map(|()| out)
    }

    #[test]
    fn layout_matches_hdrhistogram() {
        for digits in 1..=5 {
            let h = new_latency_histogram(digits).unwrap();
            let l = Layout::new(h.low(), h.high(), digits).unwrap();
            assert_eq!(l.len, h.distinct_values(), "digits {digits}");
        }
    }

    #[test]
    fn refuses_what_hdrhistogram_refuses_and_huge_claims() {
        for bad in ["not base64!", "AAAA", "", "HISTFAAAAAA="] {
            assert!(reference(bad).is_none());
            assert!(sparse(bad).is_err(), "{bad:?}");
        }
        // An uncompressed V2 header that claims a 4 GiB payload and carries none.
        let mut b = Vec::new();
        b.extend_from_slice(&V2_COOKIE.to_be_bytes());
        b.extend_from_slice(&u32::MAX.to_be_bytes());
        b.extend_from_slice(&0u32.to_be_bytes());
        b.extend_from_slice(&3u32.to_be_bytes());
        b.extend_from_slice(&1u64.to_be_bytes());
        b.extend_from_slice(&60_000_000u64.to_be_bytes());
        b.extend_from_slice(&1.0f64.to_bits().to_be_bytes());
        let text = base64::engine::general_purpose::STANDARD.encode(&b);
        assert_eq!(sparse(&text), Err(SparseError::TooLong));
    }

    #[test]
    fn shaped_decoding_refuses_other_shapes_before_inflating() {
        let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, u64::MAX / 2, 5).unwrap();
        h.record(u64::MAX / 4).unwrap();
        let wide = encode_base64(&h).unwrap();
        let mut out = Vec::new();
        let mut d = SparseDecoder::new();
        assert_eq!(
            d.decode_shaped(&wide, Shape::latency(3), &mut out),
            Err(SparseError::Shape)
        );
        assert!(
            d.decode(&wide, &mut out).is_ok(),
            "unshaped decoding takes it"
        );
        let mut h = new_latency_histogram(3).unwrap();
        h.record(1_500).unwrap();
        let ok = encode_base64(&h).unwrap();
        d.decode_shaped(&ok, Shape::latency(3), &mut out).unwrap();
        assert_eq!(out, [(1_500, 1)]);
        assert_eq!(
            d.decode_shaped(&ok, Shape::latency(2), &mut out),
            Err(SparseError::Shape)
        );
        // 3 digits over 1 µs .. 60 s: 17,408 counters, at most 9 bytes each.
        assert_eq!(Shape::latency(3).max_decoded_bytes(), Ok(40 + 17_408 * 9));
    }

    proptest::proptest! {
        #[test]
        fn agrees_with_hdrhistogram(
            digits in 1u8..=5,
            values in proptest::collection::vec((1u64..=60_000_000, 1u64..1_000), 0..300),
            cut in proptest::option::of(0usize..200),
        ) {
            let mut h = new_latency_histogram(digits).unwrap();
            for (v, n) in &values {
                h.record_n(*v, *n).unwrap();
            }
            let text = encode_base64(&h).unwrap();
            let text = match cut {
                // Truncations and corruptions must be refused (or agree) exactly as the
                // reference does.
                Some(c) if c < text.len() => {
                    let mut t = text[..text.len() - c].to_owned();
                    while t.len() % 4 != 0 {
                        t.push('=');
                    }
                    t
                }
                _ => text,
            };
            proptest::prop_assert_eq!(sparse(&text).ok(), reference(&text));
        }
    }
}
