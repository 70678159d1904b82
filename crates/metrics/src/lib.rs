//! Lock-free counters and histograms, rendered in the Prometheus text format.
//!
//! Every crate that measures something keeps its own counters (atomics) and renders
//! them with these helpers, so all series follow one shape: a `# TYPE` line per
//! family, label values escaped, histogram buckets cumulative and ending in `+Inf`.
//! Recording never blocks and never allocates.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Latency bucket bounds in seconds, 0.5 ms to 10 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// Size bucket bounds in bytes, 1 KiB to 64 MiB by powers of four.
pub const SIZE_BUCKETS: &[f64] = &[
    1024.0,
    4096.0,
    16384.0,
    65536.0,
    262_144.0,
    1_048_576.0,
    4_194_304.0,
    16_777_216.0,
    67_108_864.0,
];

/// A histogram with fixed bucket bounds.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative); the last slot is above every bound.
    counts: Box<[AtomicU64]>,
    /// Sum of observations, as f64 bits.
    sum: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0f64.to_bits()),
        }
    }

    /// A latency histogram ([`LATENCY_BUCKETS`]).
    pub fn latency() -> Self {
        Self::new(LATENCY_BUCKETS)
    }

    /// A size histogram ([`SIZE_BUCKETS`]).
    pub fn size() -> Self {
        Self::new(SIZE_BUCKETS)
    }

    pub fn observe(&self, value: f64) {
        let slot = self.bounds.partition_point(|b| *b < value);
        self.counts[slot].fetch_add(1, Relaxed);
        let _ = self.sum.fetch_update(Relaxed, Relaxed, |bits| {
            Some((f64::from_bits(bits) + value).to_bits())
        });
    }

    /// Records the time since `started`, in seconds.
    pub fn observe_since(&self, started: std::time::Instant) {
        self.observe(started.elapsed().as_secs_f64());
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Relaxed)).sum()
    }

    pub fn sum(&self) -> f64 {
        f64::from_bits(self.sum.load(Relaxed))
    }

    /// Appends this histogram's series (`_bucket`, `_sum`, `_count`) with `labels`
    /// (already rendered, e.g. `kind="get"`, or empty). The `# TYPE` line is the
    /// caller's, once per family: see [`family`].
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (bound, count) in self.bounds.iter().zip(self.counts.iter()) {
            cumulative += count.load(Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
            );
        }
        let count = cumulative + self.counts[self.bounds.len()].load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let braces = |s: &str| {
            if s.is_empty() {
                String::new()
            } else {
                format!("{{{s}}}")
            }
        };
        let _ = writeln!(out, "{name}_sum{} {}", braces(labels), self.sum());
        let _ = writeln!(out, "{name}_count{} {count}", braces(labels));
    }
}

/// A histogram type with fixed bounds that is `Default`, for metric structs.
macro_rules! bounded_histogram {
    ($(#[$doc:meta])* $name:ident, $bounds:ident) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name(pub Histogram);

        impl Default for $name {
            fn default() -> Self {
                Self(Histogram::new($bounds))
            }
        }

        impl std::ops::Deref for $name {
            type Target = Histogram;
            fn deref(&self) -> &Histogram {
                &self.0
            }
        }
    };
}

bounded_histogram!(
    /// A latency histogram ([`LATENCY_BUCKETS`]).
    Latency,
    LATENCY_BUCKETS
);
bounded_histogram!(
    /// A size histogram ([`SIZE_BUCKETS`]).
    Sizes,
    SIZE_BUCKETS
);

/// Starts a metric family: its `# HELP` and `# TYPE` lines.
pub fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// One counter family: a series per `(label value, counter)`, or one unlabelled
/// series when `label` is empty.
pub fn counters(
    out: &mut String,
    name: &str,
    help: &str,
    label: &str,
    series: &[(&str, &AtomicU64)],
) {
    family(out, name, "counter", help);
    for (value, counter) in series {
        let n = counter.load(Relaxed);
        let _ = if label.is_empty() {
            writeln!(out, "{name} {n}")
        } else {
            writeln!(out, "{name}{{{label}=\"{}\"}} {n}", escape(value))
        };
    }
}

/// One counter family of `ok` and `error` outcomes: per `(label value, ok, error)`,
/// the series `{label="value",outcome="ok"}` and `{…,outcome="error"}`.
pub fn outcomes(
    out: &mut String,
    name: &str,
    help: &str,
    label: &str,
    series: &[(&str, &AtomicU64, &AtomicU64)],
) {
    family(out, name, "counter", help);
    for (value, ok, error) in series {
        for (outcome, n) in [("ok", ok), ("error", error)] {
            let _ = writeln!(
                out,
                "{name}{{{label}=\"{}\",outcome=\"{outcome}\"}} {}",
                escape(value),
                n.load(Relaxed)
            );
        }
    }
}

/// One histogram family: a histogram per label value.
pub fn histograms(
    out: &mut String,
    name: &str,
    help: &str,
    label: &str,
    series: &[(&str, &Histogram)],
) {
    family(out, name, "histogram", help);
    for (value, h) in series {
        h.render(out, name, &format!("{label}=\"{}\"", escape(value)));
    }
}

/// One gauge series.
pub fn gauge(out: &mut String, name: &str, help: &str, value: impl std::fmt::Display) {
    family(out, name, "gauge", help);
    let _ = writeln!(out, "{name} {value}");
}

/// A label value escaped for the text format (backslash, quote, newline).
pub fn escape(value: &str) -> std::borrow::Cow<'_, str> {
    if !value.contains(['\\', '"', '\n']) {
        return value.into();
    }
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_end_in_inf() {
        let h = Histogram::new(&[1.0, 2.0]);
        for v in [0.5, 1.0, 1.5, 3.0] {
            h.observe(v);
        }
        let mut out = String::new();
        h.render(&mut out, "x", "k=\"a\"");
        assert_eq!(
            out,
            "x_bucket{k=\"a\",le=\"1\"} 2\nx_bucket{k=\"a\",le=\"2\"} 3\n\
             x_bucket{k=\"a\",le=\"+Inf\"} 4\nx_sum{k=\"a\"} 6\nx_count{k=\"a\"} 4\n"
        );
        let mut out = String::new();
        h.render(&mut out, "y", "");
        assert!(out.contains("y_bucket{le=\"+Inf\"} 4\ny_sum 6\ny_count 4\n"));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(escape("plain"), "plain");
    }
}
