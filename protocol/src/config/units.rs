//! The value types the fleet file writes as text: durations (`"10s"`, or a number of seconds)
//! and byte sizes (`"64MiB"`). Both parse through serde, so a bad value is a parse error that
//! names its line; durations use [`crate::duration`], the one duration syntax of every vantage
//! flag and file.

use crate::duration::parse_duration;
use serde::{Deserialize, Deserializer};
use std::time::Duration;

/// A duration written as text (`"10s"`, `"250ms"`) or a number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationText(pub Duration);

impl<'de> Deserialize<'de> for DurationText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Seconds(f64),
        }
        match Raw::deserialize(d)? {
            Raw::Text(t) => parse_duration(&t)
                .map(DurationText)
                .map_err(serde::de::Error::custom),
            Raw::Seconds(s) if s.is_finite() && s >= 0.0 => {
                Ok(DurationText(Duration::from_secs_f64(s)))
            }
            Raw::Seconds(s) => Err(serde::de::Error::custom(format!(
                "bad duration {s}: must be a non-negative number of seconds"
            ))),
        }
    }
}

/// A byte size written as a number or with a unit (`"64MiB"`, `"512KiB"`, `"1GB"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (n, unit) = t.split_at(split);
        let n: u64 = n
            .parse()
            .map_err(|_| format!("bad size {text:?}: use e.g. 65536, 512KiB, 64MiB, 1GiB"))?;
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "KB" | "kB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            _ => {
                return Err(format!(
                    "bad size {text:?}: units are B, KiB, MiB, GiB, KB, MB, GB"
                ))
            }
        };
        n.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| format!("size {text:?} is too large"))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Bytes(u64),
        }
        match Raw::deserialize(d)? {
            Raw::Text(t) => ByteSize::parse(&t).map_err(serde::de::Error::custom),
            Raw::Bytes(b) => Ok(ByteSize(b)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(ByteSize::parse("64MiB"), Ok(ByteSize(64 << 20)));
        assert_eq!(ByteSize::parse("1000"), Ok(ByteSize(1000)));
        assert!(ByteSize::parse("12 parsecs").is_err());
        assert!(ByteSize::parse("").is_err());
    }
}
