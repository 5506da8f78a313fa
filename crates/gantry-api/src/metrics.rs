//! Prometheus metrics at `/metrics`: runs by status and queue depth (read from the state store at
//! scrape time, so they are right after a restart), run and step durations and webhook deliveries
//! by result (counted by this process).

use gantry_engine::ports::{QueuedJobState, StateStore};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    pub status: String,
}

pub struct Metrics {
    registry: Registry,
    pub webhook_deliveries: Family<ResultLabel, Counter>,
    pub run_seconds: Family<StatusLabel, Histogram>,
    pub step_seconds: Histogram,
    runs: Family<StatusLabel, Gauge>,
    queue_depth: Gauge,
    runner_jobs: Family<StateLabel, Gauge>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct StateLabel {
    pub state: String,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("gantry");
        let webhook_deliveries = Family::<ResultLabel, Counter>::default();
        registry.register(
            "webhook_deliveries",
            "Webhook deliveries by result",
            webhook_deliveries.clone(),
        );
        let run_seconds = Family::<StatusLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.1, 2.0, 16))
        });
        registry.register(
            "run_duration_seconds",
            "Duration of finished runs by status",
            run_seconds.clone(),
        );
        let step_seconds = Histogram::new(exponential_buckets(0.01, 2.0, 18));
        registry.register(
            "step_duration_seconds",
            "Duration of finished steps",
            step_seconds.clone(),
        );
        let runs = Family::<StatusLabel, Gauge>::default();
        registry.register("runs", "Runs in the state store by status", runs.clone());
        let queue_depth = Gauge::default();
        registry.register(
            "queue_depth",
            "Runs waiting in the queue",
            queue_depth.clone(),
        );
        let runner_jobs = Family::<StateLabel, Gauge>::default();
        registry.register(
            "runner_jobs",
            "Job attempts handed to runners, by state (queued, claimed, finished, lost, cancelled)",
            runner_jobs.clone(),
        );
        Self {
            registry,
            webhook_deliveries,
            run_seconds,
            step_seconds,
            runs,
            queue_depth,
            runner_jobs,
        }
    }

    pub fn webhook(&self, result: &str) {
        self.webhook_deliveries
            .get_or_create(&ResultLabel {
                result: result.to_string(),
            })
            .inc();
    }

    /// The text exposition, with the store-backed gauges refreshed.
    pub async fn render(&self, store: &dyn StateStore) -> anyhow::Result<String> {
        let counts = store.count_runs_by_status().await?;
        let mut queued = 0;
        for status in gantry_model::RunStatus::ALL {
            let n = counts
                .iter()
                .find(|(s, _)| s == status)
                .map_or(0, |(_, n)| *n);
            if *status == gantry_model::RunStatus::Queued {
                queued = n;
            }
            self.runs
                .get_or_create(&StatusLabel {
                    status: status.as_str().to_string(),
                })
                .set(n);
        }
        self.queue_depth.set(queued);
        let jobs = store.count_jobs_by_state().await?;
        for state in [
            QueuedJobState::Queued,
            QueuedJobState::Claimed,
            QueuedJobState::Finished,
            QueuedJobState::Lost,
            QueuedJobState::Cancelled,
        ] {
            let n = jobs
                .iter()
                .find(|(s, _)| *s == state)
                .map_or(0, |(_, n)| *n);
            self.runner_jobs
                .get_or_create(&StateLabel {
                    state: state.as_str().to_string(),
                })
                .set(n);
        }
        let mut out = String::new();
        encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Environments' router measurements as OpenMetrics lines (per release: requests, errors,
/// latency quantiles over the last minute).
pub fn render_router(samples: &[crate::state::RouterSample]) -> String {
    fn esc(s: &str) -> String {
        s.replace('\\', "\\\\").replace('"', "\\\"")
    }
    let labels = |s: &crate::state::RouterSample| {
        format!(
            "project=\"{}\",environment=\"{}\",release=\"{}\",role=\"{}\"",
            esc(&s.project),
            esc(&s.environment),
            s.release,
            esc(&s.role)
        )
    };
    let mut out = String::new();
    out.push_str("# TYPE gantry_router_requests counter\n# HELP gantry_router_requests Requests the router sent to a release.\n");
    for s in samples {
        out.push_str(&format!(
            "gantry_router_requests_total{{{}}} {}\n",
            labels(s),
            s.requests
        ));
    }
    out.push_str("# TYPE gantry_router_errors counter\n# HELP gantry_router_errors Answers with a 5xx status, and requests a release did not answer.\n");
    for s in samples {
        out.push_str(&format!(
            "gantry_router_errors_total{{{}}} {}\n",
            labels(s),
            s.errors
        ));
    }
    out.push_str("# TYPE gantry_router_latency_seconds gauge\n# HELP gantry_router_latency_seconds Time to the response head over the last minute, by quantile.\n");
    for s in samples {
        for (q, v) in ["0.5", "0.9", "0.99"].iter().zip(s.latency.iter()) {
            if let Some(v) = v {
                out.push_str(&format!(
                    "gantry_router_latency_seconds{{{},quantile=\"{q}\"}} {v}\n",
                    labels(s)
                ));
            }
        }
    }
    out
}
