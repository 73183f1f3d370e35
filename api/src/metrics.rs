//! Prometheus metrics through `prometheus-client` (the Prometheus project's Rust client),
//! served in the OpenMetrics text format: requests by endpoint and status, a latency
//! histogram per endpoint, predictions by grade, fallbacks, review queue, decisions, model
//! reloads.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Histogram bucket upper bounds, in seconds.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The content type of [`Metrics::render`].
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Request {
    endpoint: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Endpoint {
    endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Grade {
    grade: String,
}

fn latency_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// The service's counters.
pub struct Metrics {
    registry: Registry,
    requests: Family<Request, Counter>,
    latency: Family<Endpoint, Histogram, fn() -> Histogram>,
    predictions: Family<Grade, Counter>,
    fallbacks: Counter,
    review_queued: Counter,
    decisions: Counter,
    reloads: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut m = Metrics {
            registry: Registry::default(),
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            predictions: Family::default(),
            fallbacks: Counter::default(),
            review_queued: Counter::default(),
            decisions: Counter::default(),
            reloads: Counter::default(),
        };
        let r = &mut m.registry;
        r.register(
            "isco_requests",
            "HTTP requests by endpoint and status",
            m.requests.clone(),
        );
        r.register(
            "isco_request_duration_seconds",
            "Request latency by endpoint",
            m.latency.clone(),
        );
        r.register(
            "isco_predictions",
            "Predictions by confidence grade",
            m.predictions.clone(),
        );
        r.register(
            "isco_fallbacks",
            "Predictions coded at a coarser level",
            m.fallbacks.clone(),
        );
        r.register(
            "isco_review_queued",
            "Predictions that need human review",
            m.review_queued.clone(),
        );
        r.register(
            "isco_review_decisions",
            "Reviewer decisions recorded as corrections",
            m.decisions.clone(),
        );
        r.register(
            "isco_model_reloads",
            "Models loaded (start-up and promotions)",
            m.reloads.clone(),
        );
        m
    }
}

impl Metrics {
    /// Records one finished request.
    pub fn request(&self, endpoint: &str, status: u16, seconds: f64) {
        self.requests
            .get_or_create(&Request {
                endpoint: endpoint.to_string(),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&Endpoint {
                endpoint: endpoint.to_string(),
            })
            .observe(seconds);
    }

    /// Records predictions.
    pub fn predictions<'a>(&self, grades: impl Iterator<Item = (&'a str, bool, bool)>) {
        for (g, fallback, review) in grades {
            self.predictions
                .get_or_create(&Grade {
                    grade: g.to_string(),
                })
                .inc();
            if fallback {
                self.fallbacks.inc();
            }
            if review {
                self.review_queued.inc();
            }
        }
    }

    /// Records a model (re)load.
    pub fn reload(&self) {
        self.reloads.inc();
    }

    /// Records a reviewer's decision.
    pub fn decision(&self) {
        self.decisions.inc();
    }

    /// The exposition text ([`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, &self.registry)
            .expect("writing to a String cannot fail");
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
        let bucket = |le: &str| format!("{{le=\"{le}\",endpoint=\"/predict/job\"}}");
        assert!(t.contains(&format!("{} 1", bucket("0.001"))), "{t}");
        assert!(t.contains(&format!("{} 2", bucket("0.005"))), "{t}");
        assert!(t.contains(&format!("{} 3", bucket("+Inf"))), "{t}");
        assert!(t.trim_end().ends_with("# EOF"), "{t}");
    }
}
