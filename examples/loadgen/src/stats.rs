//! Percentiles of measured durations, from a sorted vector (exact, and
//! small enough at the counts a run produces: a few million at most).

/// A summary of durations measured in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Summary {
    /// How many durations.
    pub count: usize,
    /// Median, µs.
    pub p50: f64,
    /// 99th percentile, µs.
    pub p99: f64,
    /// Largest, µs.
    pub max: f64,
}

impl Summary {
    /// Summarizes `micros` (sorted here).
    pub fn of(mut micros: Vec<u32>) -> Self {
        micros.sort_unstable();
        Self {
            count: micros.len(),
            p50: percentile(&micros, 50.0),
            p99: percentile(&micros, 99.0),
            max: micros.last().copied().unwrap_or(0).into(),
        }
    }
}

/// The nearest-rank percentile `p` (0 to 100) of sorted `values`; 0 when
/// empty.
pub fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    f64::from(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// The median of `values` (the mean of the middle two for an even count).
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Microseconds of `d`, saturated to `u32` (71 minutes).
pub fn micros(d: std::time::Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let s = Summary::of((1..=100).rev().collect());
        assert_eq!((s.count, s.p50, s.p99, s.max), (100, 50.0, 99.0, 100.0));
        assert_eq!(Summary::of(vec![]).p99, 0.0);
        assert_eq!(percentile(&[7], 99.0), 7.0);
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }
}
