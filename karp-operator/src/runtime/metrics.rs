//! Prometheus metrics (text exposition format 0.0.4), with Karpenter's metric names where they
//! exist: `karpenter_nodeclaims_created_total`, `karpenter_nodeclaims_terminated_total`,
//! `karpenter_nodes_created_total`, `karpenter_nodes_terminated_total`,
//! `karpenter_pods_state`-style gauges are left out; `karpenter_provisioner_scheduling_duration_seconds`,
//! `karpenter_cloudprovider_errors_total`, `karpenter_nodepools_usage`, `karpenter_nodepools_limit`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

type Labels = Vec<(String, String)>;

/// Histogram buckets (seconds) for durations.
const BUCKETS: [f64; 14] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// The scheduling-duration histogram, always rendered (also before the first pass).
const SCHEDULING: &str = "karpenter_provisioner_scheduling_duration_seconds";

/// Buckets of `karpenter_consolidation_score` (Karpenter 1.14's).
pub const SCORE_BUCKETS: &[f64] = &[0.1, 0.25, 0.33, 0.5, 1.0, 2.0, 5.0, 10.0];

#[derive(Debug, Clone)]
struct Histogram {
    buckets: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    n: u64,
}

impl Histogram {
    fn new(buckets: &'static [f64]) -> Self {
        Histogram {
            buckets,
            counts: vec![0; buckets.len()],
            sum: 0.0,
            n: 0,
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    counters: BTreeMap<String, BTreeMap<Labels, f64>>,
    gauges: BTreeMap<String, BTreeMap<Labels, f64>>,
    histograms: BTreeMap<String, BTreeMap<Labels, Histogram>>,
}

/// The operator's metrics registry.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

fn labels(l: &[(&str, &str)]) -> Labels {
    let mut v: Labels = l
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect();
    v.sort();
    v
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A sample value as the exposition format writes it (`+Inf`, `-Inf`, `NaN`).
fn value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else {
        v.to_string()
    }
}

fn render_labels(l: &Labels) -> String {
    if l.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = l
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    format!("{{{}}}", parts.join(","))
}

impl Metrics {
    /// An empty registry.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds 1 to a counter.
    pub fn inc(&self, name: &str, l: &[(&str, &str)]) {
        *self
            .lock()
            .counters
            .entry(name.to_string())
            .or_default()
            .entry(labels(l))
            .or_default() += 1.0;
    }

    /// Sets a gauge.
    pub fn set(&self, name: &str, l: &[(&str, &str)], v: f64) {
        self.lock()
            .gauges
            .entry(name.to_string())
            .or_default()
            .insert(labels(l), v);
    }

    /// Records one observation (seconds) in a duration histogram.
    pub fn observe(&self, name: &str, l: &[(&str, &str)], seconds: f64) {
        self.observe_in(name, l, &BUCKETS, seconds);
    }

    /// Records one observation in a histogram with `buckets` (fixed by its first observation).
    pub fn observe_in(&self, name: &str, l: &[(&str, &str)], buckets: &'static [f64], v: f64) {
        let mut g = self.lock();
        let h = g
            .histograms
            .entry(name.to_string())
            .or_default()
            .entry(labels(l))
            .or_insert_with(|| Histogram::new(buckets));
        for (i, b) in h.buckets.iter().enumerate() {
            if v <= *b {
                h.counts[i] += 1;
            }
        }
        h.sum += v;
        h.n += 1;
    }

    /// Records one scheduling simulation's duration.
    pub fn observe_scheduling(&self, seconds: f64) {
        self.observe(SCHEDULING, &[], seconds);
    }

    /// A gauge's value, if set.
    #[must_use]
    pub fn gauge(&self, name: &str, l: &[(&str, &str)]) -> Option<f64> {
        self.lock()
            .gauges
            .get(name)
            .and_then(|m| m.get(&labels(l)))
            .copied()
    }

    /// A counter's value (0 when never incremented).
    #[must_use]
    pub fn counter(&self, name: &str, l: &[(&str, &str)]) -> f64 {
        self.lock()
            .counters
            .get(name)
            .and_then(|m| m.get(&labels(l)))
            .copied()
            .unwrap_or(0.0)
    }

    /// The exposition text.
    #[must_use]
    pub fn render(&self) -> String {
        let g = self.lock();
        let mut s = String::new();
        for (name, series) in &g.counters {
            let _ = writeln!(s, "# TYPE {name} counter");
            for (l, v) in series {
                let _ = writeln!(s, "{name}{} {}", render_labels(l), value(*v));
            }
        }
        for (name, series) in &g.gauges {
            let _ = writeln!(s, "# TYPE {name} gauge");
            for (l, v) in series {
                let _ = writeln!(s, "{name}{} {}", render_labels(l), value(*v));
            }
        }
        let mut histograms = g.histograms.clone();
        histograms
            .entry(SCHEDULING.to_string())
            .or_default()
            .entry(Vec::new())
            .or_insert_with(|| Histogram::new(&BUCKETS));
        for (name, series) in &histograms {
            let _ = writeln!(s, "# TYPE {name} histogram");
            for (l, h) in series {
                let with_le = |le: &str| {
                    let mut l = l.clone();
                    l.push(("le".to_string(), le.to_string()));
                    render_labels(&l)
                };
                for (i, b) in h.buckets.iter().enumerate() {
                    let _ = writeln!(
                        s,
                        "{name}_bucket{} {}",
                        with_le(&b.to_string()),
                        h.counts[i]
                    );
                }
                let _ = writeln!(s, "{name}_bucket{} {}", with_le("+Inf"), h.n);
                let _ = writeln!(s, "{name}_sum{} {}", render_labels(l), value(h.sum));
                let _ = writeln!(s, "{name}_count{} {}", render_labels(l), h.n);
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::new();
        m.inc(
            "karpenter_nodeclaims_created_total",
            &[("nodepool", "default"), ("reason", "provisioning")],
        );
        m.inc(
            "karpenter_nodeclaims_created_total",
            &[("reason", "provisioning"), ("nodepool", "default")],
        );
        m.set(
            "karpenter_nodepools_usage",
            &[("nodepool", "a\"b"), ("resource_type", "cpu")],
            4.0,
        );
        m.observe_scheduling(0.02);
        let t = m.render();
        assert!(t.contains(
            "karpenter_nodeclaims_created_total{nodepool=\"default\",reason=\"provisioning\"} 2"
        ));
        assert!(
            t.contains("karpenter_nodepools_usage{nodepool=\"a\\\"b\",resource_type=\"cpu\"} 4")
        );
        assert!(
            t.contains("karpenter_provisioner_scheduling_duration_seconds_bucket{le=\"0.025\"} 1")
        );
        assert!(t.contains("karpenter_provisioner_scheduling_duration_seconds_count 1"));
        assert_eq!(
            m.counter(
                "karpenter_nodeclaims_created_total",
                &[("nodepool", "default"), ("reason", "provisioning")]
            ),
            2.0
        );
    }

    #[test]
    fn histograms_keep_their_own_buckets_and_infinite_values_render_as_inf() {
        let m = Metrics::new();
        let l = [
            ("decision", "approved"),
            ("nodepool", "od"),
            ("policy", "Balanced"),
        ];
        m.observe_in("karpenter_consolidation_score", &l, SCORE_BUCKETS, 0.4);
        m.observe_in(
            "karpenter_consolidation_score",
            &l,
            SCORE_BUCKETS,
            f64::INFINITY,
        );
        let t = m.render();
        let b = "karpenter_consolidation_score_bucket{decision=\"approved\",nodepool=\"od\",policy=\"Balanced\"";
        assert!(t.contains(&format!("{b},le=\"0.33\"}} 0")), "{t}");
        assert!(t.contains(&format!("{b},le=\"0.5\"}} 1")), "{t}");
        assert!(t.contains(&format!("{b},le=\"+Inf\"}} 2")), "{t}");
        assert!(t.contains("karpenter_consolidation_score_sum{decision=\"approved\",nodepool=\"od\",policy=\"Balanced\"} +Inf"), "{t}");
        // Duration histograms keep the default buckets.
        assert!(
            t.contains("karpenter_provisioner_scheduling_duration_seconds_bucket{le=\"60\"} 0"),
            "{t}"
        );
    }
}
