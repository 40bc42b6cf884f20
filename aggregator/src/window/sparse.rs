//! Latency as the window keeps it: the sparse `(value, count)` pairs of a decoded HDR
//! histogram, a handful per interval instead of a dense array, with the merge, the subtraction
//! (a tally sliding past an interval takes its samples back out) and the quantile rule of
//! HdrHistogram, also over two lists at once without building their union.

/// Latency samples as sorted `(value µs, count)` pairs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SparseLatency(Vec<(u64, u64)>);

impl SparseLatency {
    pub fn from_histogram(h: &hdrhistogram::Histogram<u64>) -> Self {
        SparseLatency(
            h.iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .collect(),
        )
    }

    /// Samples from pairs already sorted by value, each value once (what the decoder gives).
    pub(crate) fn from_sorted(pairs: Vec<(u64, u64)>) -> Self {
        debug_assert!(pairs.windows(2).all(|w| w[0].0 < w[1].0));
        SparseLatency(pairs)
    }

    /// Samples from `(value, count)` pairs in any order, a value possibly repeated.
    pub(super) fn from_pairs(mut pairs: Vec<(u64, u64)>) -> Self {
        pairs.sort_unstable_by_key(|p| p.0);
        pairs.dedup_by(|next, kept| {
            let same = next.0 == kept.0;
            if same {
                kept.1 = kept.1.saturating_add(next.1);
            }
            same
        });
        SparseLatency(pairs)
    }

    pub fn len(&self) -> u64 {
        self.0
            .iter()
            .fold(0u64, |sum, (_, c)| sum.saturating_add(*c))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The sorted pairs.
    pub fn pairs(&self) -> &[(u64, u64)] {
        &self.0
    }

    /// Adds `other`'s samples (both sorted; the result stays sorted and merged).
    pub fn merge(&mut self, other: &SparseLatency) {
        if other.0.is_empty() {
            return;
        }
        if self.0.is_empty() {
            self.0.extend_from_slice(&other.0);
            return;
        }
        let mut out = Vec::with_capacity(self.0.len() + other.0.len());
        let (mut a, mut b) = (self.0.iter().peekable(), other.0.iter().peekable());
        loop {
            match (a.peek(), b.peek()) {
                (Some(x), Some(y)) if x.0 == y.0 => {
                    out.push((x.0, x.1.saturating_add(y.1)));
                    a.next();
                    b.next();
                }
                (Some(x), Some(y)) if x.0 < y.0 => {
                    out.push(**x);
                    a.next();
                }
                (Some(_), Some(y)) => {
                    out.push(**y);
                    b.next();
                }
                (Some(x), None) => {
                    out.push(**x);
                    a.next();
                }
                (None, Some(y)) => {
                    out.push(**y);
                    b.next();
                }
                (None, None) => break,
            }
        }
        self.0 = out;
    }

    /// The value at quantile `q` (HdrHistogram's rule: the smallest recorded value with at
    /// least `ceil(q × count)` samples at or below it).
    pub fn quantile(&self, q: f64) -> Option<u64> {
        self.quantile_of(self.len(), q)
    }

    /// [`Self::quantile`] when the caller already knows [`Self::len`] (`total`): one pass
    /// fewer over the pairs.
    pub(super) fn quantile_of(&self, total: u64, q: f64) -> Option<u64> {
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (v, c) in &self.0 {
            seen = c.saturating_add(seen);
            if seen >= rank {
                return Some(*v);
            }
        }
        self.0.last().map(|(v, _)| *v)
    }

    /// Takes `other`'s samples back out (`other` was merged in before): counts go down,
    /// values left with none are dropped, so the result equals never having merged `other`.
    pub fn subtract(&mut self, other: &SparseLatency) {
        let mut theirs = other.0.iter().peekable();
        self.0.retain_mut(|(v, c)| {
            while theirs.next_if(|(w, _)| w < v).is_some() {}
            if let Some((_, n)) = theirs.next_if(|(w, _)| w == v) {
                *c = c.saturating_sub(*n);
            }
            *c > 0
        });
    }

    /// [`Self::quantile`] of `a` and `b` together, without building their union.
    pub fn quantile_of_both(a: &SparseLatency, b: &SparseLatency, q: f64) -> Option<u64> {
        Self::quantile_of_both_given(a, a.len(), b, b.len(), q)
    }

    /// [`Self::quantile_of_both`] when the caller already knows both lengths.
    pub(super) fn quantile_of_both_given(
        a: &SparseLatency,
        a_len: u64,
        b: &SparseLatency,
        b_len: u64,
        q: f64,
    ) -> Option<u64> {
        if b.0.is_empty() {
            return a.quantile_of(a_len, q);
        }
        if a.0.is_empty() {
            return b.quantile_of(b_len, q);
        }
        let total = a_len.saturating_add(b_len);
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let (mut x, mut y) = (a.0.iter().peekable(), b.0.iter().peekable());
        let mut seen = 0u64;
        loop {
            let (v, c) = match (x.peek().copied(), y.peek().copied()) {
                (Some(p), Some(r)) if p.0 == r.0 => {
                    x.next();
                    y.next();
                    (p.0, p.1.saturating_add(r.1))
                }
                (Some(p), Some(r)) if p.0 < r.0 => {
                    x.next();
                    *p
                }
                (_, Some(r)) => {
                    y.next();
                    *r
                }
                (Some(p), None) => {
                    x.next();
                    *p
                }
                (None, None) => break,
            };
            seen = seen.saturating_add(c);
            if seen >= rank {
                return Some(v);
            }
        }
        let last = |s: &SparseLatency| s.0.last().map(|(v, _)| *v);
        last(a).max(last(b))
    }
}
