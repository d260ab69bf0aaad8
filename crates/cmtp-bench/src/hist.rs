//! A fixed-size log-linear latency histogram (HDR-like, 64 sub-buckets per power of
//! two, so quantiles are within 1.6 %). Fixed size keeps a long `--seconds` run in
//! constant memory, unlike a vector of samples.

/// Sub-buckets per power of two (6 bits of precision).
const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS;
/// Values below 2*SUB are stored exactly; above, (63 - SUB_BITS) octaves of SUB buckets.
const BUCKETS: usize = (2 * SUB + (63 - SUB_BITS as u64) * SUB) as usize;

/// Latency histogram in arbitrary integer units (the callers use nanoseconds).
#[derive(Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    count: u64,
    sum: u128,
    min: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

fn index(v: u64) -> usize {
    if v < 2 * SUB {
        return v as usize;
    }
    let exp = 63 - v.leading_zeros(); // >= SUB_BITS + 1
    let shift = exp - SUB_BITS;
    let top = v >> shift; // in [SUB, 2*SUB)
    (2 * SUB + (shift as u64 - 1) * SUB + (top - SUB)) as usize
}

/// Lowest value that lands in bucket `i` (the inverse of [`index`]).
fn lower_bound(i: usize) -> u64 {
    let i = i as u64;
    if i < 2 * SUB {
        return i;
    }
    let j = i - 2 * SUB;
    let shift = j / SUB + 1;
    let top = j % SUB + SUB;
    top << shift
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            count: 0,
            sum: 0,
            min: u64::MAX,
            max: 0,
        }
    }

    /// Adds one observation.
    pub fn record(&mut self, v: u64) {
        self.counts[index(v)] += 1;
        self.count += 1;
        self.sum += v as u128;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }

    /// Adds every observation of `other`.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.count += other.count;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Largest observation (0 when empty).
    pub fn max(&self) -> u64 {
        self.max
    }

    /// Mean (0 when empty).
    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum as f64 / self.count as f64
        }
    }

    /// The value below which a fraction `q` (0..=1) of observations fall, as the
    /// bucket's lower bound clamped to [min, max]; 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return lower_bound(i).clamp(self.min, self.max);
            }
        }
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_and_bound_agree() {
        for v in (0..100_000u64).chain([u64::MAX / 3, u64::MAX]) {
            let i = index(v);
            assert!(i < BUCKETS, "{v} -> {i}");
            let lo = lower_bound(i);
            assert!(lo <= v, "{v}: lower bound {lo}");
            assert!(v - lo <= v / SUB, "{v}: bucket too wide ({lo})");
        }
    }

    #[test]
    fn quantiles_within_precision() {
        let mut h = Histogram::new();
        for v in 1..=10_000u64 {
            h.record(v * 1000);
        }
        let p50 = h.quantile(0.5) as f64;
        let p99 = h.quantile(0.99) as f64;
        assert!((p50 / 5_000_000.0 - 1.0).abs() < 0.02, "p50 {p50}");
        assert!((p99 / 9_900_000.0 - 1.0).abs() < 0.02, "p99 {p99}");
        assert_eq!(h.max(), 10_000_000);
        let mut g = Histogram::new();
        g.merge(&h);
        assert_eq!(g.count(), 10_000);
        assert_eq!(g.quantile(0.5), h.quantile(0.5));
    }
}
