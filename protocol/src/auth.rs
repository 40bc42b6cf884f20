//! Report authentication, shared by the agent (signing) and the aggregator (verifying) so both
//! ends run one implementation.
//!
//! The agent sends its key id, a Unix timestamp and `hex(HMAC-SHA256(key, "v1\n" + timestamp +
//! "\n" + body))` in three headers. The aggregator looks the key up by id, rejects timestamps
//! outside a skew window (replays of old requests), and compares signatures in constant time.

use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const HEADER_KEY_ID: &str = "x-vantage-key-id";
pub const HEADER_TIMESTAMP: &str = "x-vantage-timestamp";
pub const HEADER_SIGNATURE: &str = "x-vantage-signature";
/// Default accepted clock difference between agent and aggregator.
pub const DEFAULT_MAX_SKEW_SECS: u64 = 300;
/// Shortest key accepted: HMAC-SHA256 keys below 128 bits are guessable.
pub const MIN_KEY_BYTES: usize = 16;

type HmacSha256 = Hmac<Sha256>;

/// Why a request was not accepted. Messages never include key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("unknown key id {0:?}")]
    UnknownKey(String),
    #[error("timestamp is not a Unix time in seconds")]
    BadTimestamp,
    #[error("timestamp is {skew} s away from the aggregator's clock (limit {limit} s)")]
    Skew { skew: u64, limit: u64 },
    #[error("signature does not match")]
    BadSignature,
    #[error("key is {0} bytes; use at least {MIN_KEY_BYTES}")]
    WeakKey(usize),
}

fn mac(key: &[u8], timestamp: u64, body: &[u8]) -> HmacSha256 {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    m.update(b"v1\n");
    m.update(timestamp.to_string().as_bytes());
    m.update(b"\n");
    m.update(body);
    m
}

/// The signature header value for `body` sent at `timestamp`.
pub fn sign(key: &[u8], timestamp: u64, body: &[u8]) -> String {
    hex::encode(mac(key, timestamp, body).finalize().into_bytes())
}

/// Checks a key before use.
pub fn check_key(key: &[u8]) -> Result<(), AuthError> {
    if key.len() < MIN_KEY_BYTES {
        return Err(AuthError::WeakKey(key.len()));
    }
    Ok(())
}

/// Verifies one request. `header` looks a header up by (lower-case) name; `lookup` finds a
/// key by id; `now` is the verifier's Unix time in seconds.
pub fn verify<'k>(
    header: impl Fn(&str) -> Option<&'k str>,
    lookup: impl Fn(&str) -> Option<&'k [u8]>,
    body: &[u8],
    now: u64,
    max_skew: u64,
) -> Result<&'k str, AuthError> {
    let checked = precheck(header, lookup, now, max_skew)?;
    mac(checked.key, checked.timestamp, body)
        .verify_slice(&checked.signature)
        .map_err(|_| AuthError::BadSignature)?;
    Ok(checked.key_id)
}

/// What [`precheck`] found in the headers: enough to verify the body once it is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prechecked<'k> {
    pub key_id: &'k str,
    key: &'k [u8],
    timestamp: u64,
    signature: Vec<u8>,
}

/// Everything [`verify`] checks that needs no body: the three headers are there, the key id is
/// known, the timestamp is within `max_skew` of `now` and the signature is hex of the right
/// length. A server runs it before reading a body, so a request that can never verify costs
/// no buffering.
pub fn precheck<'k>(
    header: impl Fn(&str) -> Option<&'k str>,
    lookup: impl Fn(&str) -> Option<&'k [u8]>,
    now: u64,
    max_skew: u64,
) -> Result<Prechecked<'k>, AuthError> {
    let key_id = header(HEADER_KEY_ID).ok_or(AuthError::MissingHeader(HEADER_KEY_ID))?;
    let ts = header(HEADER_TIMESTAMP).ok_or(AuthError::MissingHeader(HEADER_TIMESTAMP))?;
    let sig = header(HEADER_SIGNATURE).ok_or(AuthError::MissingHeader(HEADER_SIGNATURE))?;
    let key = lookup(key_id).ok_or_else(|| AuthError::UnknownKey(key_id.to_owned()))?;
    let timestamp: u64 = ts.trim().parse().map_err(|_| AuthError::BadTimestamp)?;
    let skew = now.abs_diff(timestamp);
    if skew > max_skew {
        return Err(AuthError::Skew {
            skew,
            limit: max_skew,
        });
    }
    let signature = hex::decode(sig.trim()).map_err(|_| AuthError::BadSignature)?;
    if signature.len() != 32 {
        return Err(AuthError::BadSignature);
    }
    Ok(Prechecked {
        key_id,
        key,
        timestamp,
        signature,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn headers(id: &str, ts: u64, sig: &str) -> HashMap<&'static str, String> {
        HashMap::from([
            (HEADER_KEY_ID, id.to_owned()),
            (HEADER_TIMESTAMP, ts.to_string()),
            (HEADER_SIGNATURE, sig.to_owned()),
        ])
    }

    fn check(
        h: &HashMap<&'static str, String>,
        body: &[u8],
        now: u64,
    ) -> Result<String, AuthError> {
        let keys: HashMap<&str, &[u8]> = HashMap::from([("k1", KEY)]);
        verify(
            |n| h.get(n).map(String::as_str),
            |id| keys.get(id).copied(),
            body,
            now,
            DEFAULT_MAX_SKEW_SECS,
        )
        .map(str::to_owned)
    }

    #[test]
    fn accepts_good_and_rejects_each_kind_of_bad() {
        let body = br#"{"seq":1}"#;
        let sig = sign(KEY, 1_000, body);
        assert_eq!(
            check(&headers("k1", 1_000, &sig), body, 1_100),
            Ok("k1".into())
        );
        assert_eq!(
            check(&headers("k1", 1_000, &sig), b"{}", 1_000),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            check(&headers("k2", 1_000, &sig), body, 1_000),
            Err(AuthError::UnknownKey("k2".into()))
        );
        assert!(matches!(
            check(&headers("k1", 1_000, &sig), body, 2_000),
            Err(AuthError::Skew { .. })
        ));
        assert_eq!(
            check(&headers("k1", 1_001, &sig), body, 1_000),
            Err(AuthError::BadSignature)
        );
        let mut h = headers("k1", 1_000, &sig);
        h.remove(HEADER_SIGNATURE);
        assert_eq!(
            check(&h, body, 1_000),
            Err(AuthError::MissingHeader(HEADER_SIGNATURE))
        );
        assert_eq!(
            check(&headers("k1", 1_000, "zz"), body, 1_000),
            Err(AuthError::BadSignature)
        );
        assert!(check_key(b"short").is_err());
        assert!(check_key(KEY).is_ok());
    }

    proptest! {
        #[test]
        fn any_flipped_body_byte_is_caught(body in proptest::collection::vec(any::<u8>(), 1..512), i in any::<usize>(), bit in 0u8..8) {
            let sig = sign(KEY, 5, &body);
            let mut tampered = body.clone();
            let i = i % tampered.len();
            tampered[i] ^= 1 << bit;
            prop_assert_eq!(check(&headers("k1", 5, &sig), &tampered, 5), Err(AuthError::BadSignature));
            prop_assert!(check(&headers("k1", 5, &sig), &body, 5).is_ok());
        }
    }
}
