//! Round-trip times between AWS Regions, for the simulated network.
//!
//! Approximate medians of public inter-Region latency measurements (the figures published by
//! inter-Region ping dashboards such as cloudping.co, rounded to 5 ms); within one Region a
//! vantage sees about 2 ms. They are not a promise about any given day: they make the
//! simulated weights differ the way real ones do (a vantage in Europe is closer to eu-west-1).

use std::time::Duration;

/// Known pairs, in milliseconds; symmetric.
const PAIRS: &[(&str, &str, u64)] = &[
    ("us-east-1", "us-east-2", 15),
    ("us-east-1", "us-west-1", 65),
    ("us-east-1", "us-west-2", 70),
    ("us-east-1", "eu-west-1", 70),
    ("us-east-1", "eu-central-1", 90),
    ("us-east-1", "ap-southeast-1", 215),
    ("us-east-1", "ap-northeast-1", 150),
    ("us-east-1", "sa-east-1", 115),
    ("us-west-2", "eu-west-1", 125),
    ("us-west-2", "eu-central-1", 145),
    ("us-west-2", "ap-southeast-1", 165),
    ("us-west-2", "ap-northeast-1", 100),
    ("eu-west-1", "eu-central-1", 25),
    ("eu-west-1", "ap-southeast-1", 165),
    ("eu-west-1", "ap-northeast-1", 205),
    ("eu-central-1", "ap-southeast-1", 155),
    ("eu-central-1", "ap-northeast-1", 225),
    ("ap-southeast-1", "ap-northeast-1", 70),
];

/// Round trip within one Region.
pub const SAME_REGION: Duration = Duration::from_millis(2);
/// Round trip for a pair not in the table.
pub const UNKNOWN_PAIR: Duration = Duration::from_millis(150);

/// Round-trip time from a vantage in Region `a` to Region `b`.
pub fn rtt(a: &str, b: &str) -> Duration {
    if a == b {
        return SAME_REGION;
    }
    PAIRS
        .iter()
        .find(|(x, y, _)| (*x == a && *y == b) || (*x == b && *y == a))
        .map_or(UNKNOWN_PAIR, |(_, _, ms)| Duration::from_millis(*ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symmetric_with_sensible_fallbacks() {
        assert_eq!(rtt("eu-west-1", "us-east-1"), rtt("us-east-1", "eu-west-1"));
        assert_eq!(rtt("eu-west-1", "eu-west-1"), SAME_REGION);
        assert_eq!(rtt("mars-1", "eu-west-1"), UNKNOWN_PAIR);
        assert!(rtt("eu-west-1", "eu-central-1") < rtt("eu-west-1", "ap-southeast-1"));
    }
}
