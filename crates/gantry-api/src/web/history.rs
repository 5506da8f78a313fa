//! The last hour of each release's traffic, for the environment page's charts: a sample of the
//! router's numbers every [`EVERY`], kept per release for [`KEEP`].
//!
//! Lifecycle: [`History::spawn`] starts the sampler with the server's HTTP task and it ends
//! with it; a restart of the server starts the hour anew.

use crate::state::Control;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const EVERY: Duration = Duration::from_secs(10);
pub const KEEP: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Milliseconds since the epoch.
    pub at: i64,
    pub requests: u64,
    pub errors: u64,
    /// p99 over the last minute, in seconds.
    pub p99: Option<f64>,
}

/// One chart's worth of a release: per-second request rate, error percentage and p99 (ms)
/// between consecutive samples.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Series {
    pub rate: Vec<(f64, f64)>,
    pub errors: Vec<(f64, f64)>,
    pub p99: Vec<(f64, f64)>,
}

type Key = (String, String, i64);

#[derive(Default)]
pub struct History {
    samples: Mutex<HashMap<Key, VecDeque<Sample>>>,
}

impl History {
    /// Samples `control`'s routers every [`EVERY`] until the returned task is dropped or aborted.
    pub fn spawn(self: &Arc<Self>, control: Arc<dyn Control>) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(EVERY);
            loop {
                tick.tick().await;
                let now = gantry_engine::ports::now_millis();
                for s in control.router_samples().await {
                    me.record(
                        (s.project, s.environment, s.release),
                        Sample {
                            at: now,
                            requests: s.requests,
                            errors: s.errors,
                            p99: s.latency[2],
                        },
                    );
                }
            }
        })
    }

    pub fn record(&self, key: Key, sample: Sample) {
        let mut all = self.samples.lock().expect("history");
        let keep_from = sample.at - KEEP.as_millis() as i64;
        all.retain(|_, q| q.back().is_some_and(|s| s.at >= keep_from));
        let q = all.entry(key).or_default();
        while q.front().is_some_and(|s| s.at < keep_from) {
            q.pop_front();
        }
        q.push_back(sample);
    }

    /// The series of one release, x in minutes before the newest sample (negative).
    pub fn series(&self, project: &str, environment: &str, release: i64) -> Series {
        let all = self.samples.lock().expect("history");
        let Some(q) = all.get(&(project.to_string(), environment.to_string(), release)) else {
            return Series::default();
        };
        series_of(q.iter().copied())
    }
}

/// Rates between consecutive samples; a counter that went down (a restarted data plane) starts
/// again from its new value.
pub fn series_of(samples: impl Iterator<Item = Sample>) -> Series {
    let samples: Vec<Sample> = samples.collect();
    let mut out = Series::default();
    let Some(last) = samples.last() else {
        return out;
    };
    for pair in samples.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        let secs = ((b.at - a.at) as f64 / 1000.0).max(1e-3);
        let x = (b.at - last.at) as f64 / 60_000.0;
        let (requests, errors) = if b.requests >= a.requests {
            (b.requests - a.requests, b.errors.saturating_sub(a.errors))
        } else {
            (b.requests, b.errors)
        };
        out.rate.push((x, requests as f64 / secs));
        let pct = if requests == 0 {
            0.0
        } else {
            errors as f64 * 100.0 / requests as f64
        };
        out.errors.push((x, pct));
        out.p99.push((x, b.p99.unwrap_or(0.0) * 1000.0));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(at: i64, requests: u64, errors: u64) -> Sample {
        Sample {
            at,
            requests,
            errors,
            p99: Some(0.002),
        }
    }

    #[test]
    fn rates_come_from_differences() {
        let got = series_of([s(0, 0, 0), s(10_000, 100, 10), s(20_000, 300, 10)].into_iter());
        assert_eq!(got.rate, vec![(-1.0 / 6.0, 10.0), (0.0, 20.0)]);
        assert_eq!(got.errors, vec![(-1.0 / 6.0, 10.0), (0.0, 0.0)]);
        assert_eq!(got.p99[1], (0.0, 2.0));
        // A counter that restarted from zero.
        let got = series_of([s(0, 500, 5), s(10_000, 50, 0)].into_iter());
        assert_eq!(got.rate, vec![(0.0, 5.0)]);
        assert!(series_of([s(0, 1, 0)].into_iter()).rate.is_empty());
    }

    #[test]
    fn only_the_last_hour_is_kept() {
        let h = History::default();
        let key = ("p".to_string(), "e".to_string(), 1);
        h.record(key.clone(), s(0, 0, 0));
        h.record(key.clone(), s(10_000, 10, 0));
        h.record(key.clone(), s(3_610_000, 20, 0));
        let q = h.samples.lock().unwrap();
        let kept: Vec<i64> = q[&key].iter().map(|s| s.at).collect();
        assert_eq!(kept, vec![10_000, 3_610_000]);
    }
}
