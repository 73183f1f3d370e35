//! Prometheus metrics in the text exposition format: requests by endpoint and status, a
//! latency histogram per endpoint, predictions by grade, fallbacks, model reloads.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

/// Histogram bucket upper bounds, in seconds.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

#[derive(Default)]
struct Inner {
    requests: BTreeMap<(String, u16), u64>,
    latency: BTreeMap<String, Histogram>,
    grades: BTreeMap<String, u64>,
    fallbacks: u64,
    review_queued: u64,
    reloads: u64,
    decisions: u64,
}

/// The service's counters.
#[derive(Default)]
pub struct Metrics(Mutex<Inner>);

impl Metrics {
    /// Records one finished request.
    pub fn request(&self, endpoint: &str, status: u16, seconds: f64) {
        let mut m = self.0.lock().expect("metrics");
        *m.requests
            .entry((endpoint.to_string(), status))
            .or_default() += 1;
        let h = m.latency.entry(endpoint.to_string()).or_default();
        for (i, b) in BUCKETS.iter().enumerate() {
            if seconds <= *b {
                h.counts[i] += 1;
            }
        }
        h.sum += seconds;
        h.count += 1;
    }

    /// Records predictions.
    pub fn predictions<'a>(&self, grades: impl Iterator<Item = (&'a str, bool, bool)>) {
        let mut m = self.0.lock().expect("metrics");
        for (g, fallback, review) in grades {
            *m.grades.entry(g.to_string()).or_default() += 1;
            m.fallbacks += fallback as u64;
            m.review_queued += review as u64;
        }
    }

    /// Records a model (re)load.
    pub fn reload(&self) {
        self.0.lock().expect("metrics").reloads += 1;
    }

    /// Records a reviewer's decision.
    pub fn decision(&self) {
        self.0.lock().expect("metrics").decisions += 1;
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let m = self.0.lock().expect("metrics");
        let mut s = String::new();
        s.push_str("# HELP isco_requests_total HTTP requests by endpoint and status.\n# TYPE isco_requests_total counter\n");
        for ((e, st), n) in &m.requests {
            let _ = writeln!(
                s,
                "isco_requests_total{{endpoint=\"{e}\",status=\"{st}\"}} {n}"
            );
        }
        s.push_str("# HELP isco_request_duration_seconds Request latency by endpoint.\n# TYPE isco_request_duration_seconds histogram\n");
        for (e, h) in &m.latency {
            for (b, c) in BUCKETS.iter().zip(h.counts) {
                let _ = writeln!(
                    s,
                    "isco_request_duration_seconds_bucket{{endpoint=\"{e}\",le=\"{b}\"}} {c}"
                );
            }
            let _ = writeln!(
                s,
                "isco_request_duration_seconds_bucket{{endpoint=\"{e}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                s,
                "isco_request_duration_seconds_sum{{endpoint=\"{e}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                s,
                "isco_request_duration_seconds_count{{endpoint=\"{e}\"}} {}",
                h.count
            );
        }
        s.push_str("# HELP isco_predictions_total Predictions by confidence grade.\n# TYPE isco_predictions_total counter\n");
        for (g, n) in &m.grades {
            let _ = writeln!(s, "isco_predictions_total{{grade=\"{g}\"}} {n}");
        }
        let _ = write!(
            s,
            "# HELP isco_fallbacks_total Predictions coded at a coarser level.\n# TYPE isco_fallbacks_total counter\nisco_fallbacks_total {}\n\
             # HELP isco_review_queued_total Predictions queued for human review.\n# TYPE isco_review_queued_total counter\nisco_review_queued_total {}\n\
             # HELP isco_review_decisions_total Reviewer decisions recorded as corrections.\n# TYPE isco_review_decisions_total counter\nisco_review_decisions_total {}\n\
             # HELP isco_model_reloads_total Models loaded (start-up and promotions).\n# TYPE isco_model_reloads_total counter\nisco_model_reloads_total {}\n",
            m.fallbacks, m.review_queued, m.decisions, m.reloads
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative() {
        let m = Metrics::default();
        m.request("/predict/job", 200, 0.0007);
        m.request("/predict/job", 200, 0.003);
        m.request("/predict/job", 422, 0.2);
        let t = m.render();
        assert!(
            t.contains("isco_requests_total{endpoint=\"/predict/job\",status=\"200\"} 2"),
            "{t}"
        );
        assert!(t.contains("le=\"0.001\"} 1"), "{t}");
        assert!(t.contains("le=\"0.005\"} 2"), "{t}");
        assert!(t.contains("le=\"+Inf\"} 3"), "{t}");
    }
}
