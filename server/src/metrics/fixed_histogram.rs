//! A histogram with fixed buckets in plain atomics, for the one sample taken per
//! recipient: each frame's delivery latency.
//!
//! The exporter's own histograms keep every sample until the next upkeep (a shared
//! atomic bump and, every few dozen samples, a new block), which is fine per event but
//! not per recipient of a room's fan-out. Here a sample is two relaxed atomic adds into
//! storage sized once, and the buckets are rendered in Prometheus text with the rest.

use std::{
    fmt::Write,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

/// Cumulative-at-render buckets (`le` upper bounds, in seconds) plus a sum.
pub struct FixedHistogram {
    bounds: &'static [f64],
    /// One slot per bound, then one for samples above the last bound.
    counts: Box<[AtomicU64]>,
    sum_nanos: AtomicU64,
}

impl FixedHistogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        debug_assert!(bounds.windows(2).all(|pair| pair[0] < pair[1]), "bounds ascend");
        FixedHistogram { bounds, counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(), sum_nanos: AtomicU64::new(0) }
    }

    /// Counts one sample: no lock, no allocation.
    pub fn record(&self, value: Duration) {
        let seconds = value.as_secs_f64();
        // Prometheus buckets are inclusive: a sample equal to a bound belongs to it.
        let slot = self.bounds.partition_point(|bound| *bound < seconds);
        self.counts[slot].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(u64::try_from(value.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Appends the histogram in Prometheus text format. The count is the `+Inf`
    /// bucket, so the two always agree even while samples arrive.
    pub fn render(&self, name: &str, help: &str, out: &mut String) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut cumulative = 0u64;
        for (bound, count) in self.bounds.iter().zip(self.counts.iter()) {
            cumulative += count.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        cumulative += self.counts[self.bounds.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {cumulative}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_land_in_inclusive_cumulative_buckets() {
        static BOUNDS: [f64; 3] = [0.001, 0.01, 0.1];
        let histogram = FixedHistogram::new(&BOUNDS);
        for micros in [500, 1_000, 5_000, 50_000, 2_000_000] {
            histogram.record(Duration::from_micros(micros));
        }
        let mut text = String::new();
        histogram.render("latency_seconds", "How long.", &mut text);
        let expected = "# HELP latency_seconds How long.\n# TYPE latency_seconds histogram\n\
            latency_seconds_bucket{le=\"0.001\"} 2\nlatency_seconds_bucket{le=\"0.01\"} 3\n\
            latency_seconds_bucket{le=\"0.1\"} 4\nlatency_seconds_bucket{le=\"+Inf\"} 5\n\
            latency_seconds_sum 2.0565\nlatency_seconds_count 5\n";
        assert_eq!(text, expected);
    }
}
