//! Figures as the tables print them: spans summarised (p50, p99, max), verdicts against the
//! goals, milliseconds, MiB and thousands separators.

use crate::clock::Span;
use std::time::Duration;

/// Nearest-rank quantile of the spans' wall times.
pub fn wall_quantile(spans: &[Span], q: f64) -> Duration {
    let mut w: Vec<Duration> = spans.iter().map(|s| s.wall).collect();
    w.sort();
    quantile(&w, q)
}

/// Nearest-rank quantile of the spans' CPU times (this thread's).
pub fn cpu_quantile(spans: &[Span], q: f64) -> Duration {
    let mut c: Vec<Duration> = spans.iter().map(|s| s.cpu).collect();
    c.sort();
    quantile(&c, q)
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// `p50 …, p99 …, max … [CPU p50 …]`.
pub fn p50_p99(spans: &[Span]) -> String {
    format!(
        "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms [CPU p50 {:.1} ms]",
        ms(wall_quantile(spans, 0.5)),
        ms(wall_quantile(spans, 0.99)),
        ms(wall_quantile(spans, 1.0)),
        ms(cpu_quantile(spans, 0.5))
    )
}

/// `goal: PASS` or `goal: MISS`.
pub fn verdict(met: bool, goal: &str) -> String {
    format!("{goal}: {}", if met { "PASS" } else { "MISS" })
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub fn mib(bytes: Option<u64>) -> String {
    bytes.map_or("n/a".into(), |b| {
        format!("{:.0} MiB", b as f64 / (1 << 20) as f64)
    })
}

/// `1234567.8` → `1,234,568`.
pub fn thousands(v: f64) -> String {
    let digits = format!("{:.0}", v.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spans(ms: &[u64]) -> Vec<Span> {
        ms.iter()
            .map(|m| Span {
                wall: Duration::from_millis(*m),
                ..Span::default()
            })
            .collect()
    }

    #[test]
    fn nearest_rank_quantiles() {
        let s = spans(&[5, 1, 4, 2, 3]);
        assert_eq!(wall_quantile(&s, 0.5), Duration::from_millis(3));
        assert_eq!(wall_quantile(&s, 0.99), Duration::from_millis(5));
        assert_eq!(wall_quantile(&s, 0.0), Duration::from_millis(1));
        let hundred: Vec<u64> = (1..=100).collect();
        assert_eq!(
            wall_quantile(&spans(&hundred), 0.99),
            Duration::from_millis(99)
        );
    }

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0.4), "0");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1_234_567.8), "1,234,568");
    }
}
