//! Per-release measurements the router takes: requests, 5xx answers (and requests the release
//! did not answer), and a latency histogram, in one-second buckets over the last ten minutes.
//! Canary analysis reads a window of them (since a step began); `gantry status` and `/metrics`
//! read the last minute and the totals.

use gantry_engine::canary::Window;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Seconds of history kept.
const SECONDS: usize = 600;
/// Latency bucket bounds grow by 25% from 100 µs: bucket `i` holds latencies below
/// `100 µs × 1.25^(i+1)`; the last bucket holds everything slower (over ~1 hour is not measured
/// apart).
const BUCKETS: usize = 64;

fn bucket_of(micros: u64) -> usize {
    let mut bound = 100.0f64;
    for i in 0..BUCKETS - 1 {
        bound *= 1.25;
        if (micros as f64) < bound {
            return i;
        }
    }
    BUCKETS - 1
}

/// The upper bound of bucket `i`, in milliseconds.
fn bucket_bound_ms(i: usize) -> f64 {
    0.1 * 1.25f64.powi(i as i32 + 1)
}

#[derive(Clone)]
struct Second {
    at: u64,
    requests: u64,
    errors: u64,
    latency: [u32; BUCKETS],
}

impl Second {
    const EMPTY: Second = Second {
        at: u64::MAX,
        requests: 0,
        errors: 0,
        latency: [0; BUCKETS],
    };
}

/// Router threads record into shards of their own (no lock shared between threads on the
/// request path); reading a window merges them.
const SHARDS: usize = 4;

struct Shard {
    seconds: Mutex<Vec<Second>>,
    total_requests: AtomicU64,
    total_errors: AtomicU64,
}

pub struct Stats {
    shards: Vec<Shard>,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS)
                .map(|_| Shard {
                    seconds: Mutex::new(Vec::new()),
                    total_requests: AtomicU64::new(0),
                    total_errors: AtomicU64::new(0),
                })
                .collect(),
        }
    }
}

/// This thread's shard (threads take shards in turn).
fn shard_index() -> usize {
    use std::sync::atomic::AtomicUsize;
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    INDEX.with(|i| *i)
}

/// The wall clock at `at`, in milliseconds since the epoch, from a reading of the wall clock
/// this thread took at most a second before (one monotonic reading per request, not two
/// clocks).
fn wall_ms(at: std::time::Instant) -> i64 {
    use std::cell::Cell;
    use std::time::Instant;
    thread_local! {
        static BASE: Cell<Option<(Instant, i64)>> = const { Cell::new(None) };
    }
    BASE.with(|base| {
        if let Some((mono, wall)) = base.get()
            && let Some(since) = at.checked_duration_since(mono)
            && since.as_millis() < 1_000
        {
            return wall + since.as_millis() as i64;
        }
        let (mono, wall) = (Instant::now(), gantry_engine::ports::now_millis());
        base.set(Some((mono, wall)));
        wall - mono.saturating_duration_since(at).as_millis() as i64
    })
}

impl Stats {
    /// A request sent at `started` and answered (or not) at `answered`.
    pub fn record_at(
        &self,
        started: std::time::Instant,
        answered: std::time::Instant,
        error: bool,
    ) {
        let latency = answered.saturating_duration_since(started).as_micros() as u64;
        self.record(wall_ms(answered), latency, error);
    }

    /// One request answered (or not) at `now_ms` after `latency_us`.
    pub fn record(&self, now_ms: i64, latency_us: u64, error: bool) {
        let shard = &self.shards[shard_index()];
        shard.total_requests.fetch_add(1, Ordering::Relaxed);
        if error {
            shard.total_errors.fetch_add(1, Ordering::Relaxed);
        }
        let sec = (now_ms.max(0) / 1000) as u64;
        let mut seconds = shard.seconds.lock().expect("stats");
        if seconds.is_empty() {
            // Made on first use: a shard no thread records into costs nothing.
            seconds.resize(SECONDS, Second::EMPTY);
        }
        let slot = &mut seconds[(sec as usize) % SECONDS];
        if slot.at != sec {
            *slot = Second::EMPTY;
            slot.at = sec;
        }
        slot.requests += 1;
        if error {
            slot.errors += 1;
        }
        slot.latency[bucket_of(latency_us)] += 1;
    }

    pub fn totals(&self) -> (u64, u64) {
        self.shards.iter().fold((0, 0), |(r, e), s| {
            (
                r + s.total_requests.load(Ordering::Relaxed),
                e + s.total_errors.load(Ordering::Relaxed),
            )
        })
    }

    /// What happened from `since_ms` to `now_ms` (whole seconds; at most the last ten minutes).
    pub fn window(&self, since_ms: i64, now_ms: i64) -> Window {
        let (from, to) = (
            (since_ms.max(0) / 1000) as u64,
            (now_ms.max(0) / 1000) as u64,
        );
        let mut w = Window::default();
        let mut hist = [0u64; BUCKETS];
        for shard in &self.shards {
            let seconds = shard.seconds.lock().expect("stats");
            for s in seconds
                .iter()
                .filter(|s| s.at != u64::MAX && s.at >= from && s.at <= to)
            {
                w.requests += s.requests;
                w.errors += s.errors;
                for (h, n) in hist.iter_mut().zip(s.latency.iter()) {
                    *h += u64::from(*n);
                }
            }
        }
        let quantile = |q: f64| -> Option<f64> {
            let total: u64 = hist.iter().sum();
            if total == 0 {
                return None;
            }
            let want = ((total as f64) * q).ceil() as u64;
            let mut seen = 0;
            for (i, n) in hist.iter().enumerate() {
                seen += n;
                if seen >= want {
                    return Some(bucket_bound_ms(i));
                }
            }
            Some(bucket_bound_ms(BUCKETS - 1))
        };
        w.p50_ms = quantile(0.50);
        w.p90_ms = quantile(0.90);
        w.p99_ms = quantile(0.99);
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_count_and_rank_latencies() {
        let s = Stats::default();
        for i in 0..98 {
            s.record(10_000 + i, 5_000, false); // 5 ms
        }
        s.record(10_500, 500_000, true); // 500 ms, an error
        s.record(10_600, 500_000, false);
        let w = s.window(10_000, 10_999);
        assert_eq!((w.requests, w.errors), (100, 1));
        let p50 = w.p50_ms.unwrap();
        assert!((5.0..=6.25).contains(&p50), "{p50}");
        let p99 = w.p99_ms.unwrap();
        assert!((500.0..=625.0).contains(&p99), "{p99}");
        // Outside the window: nothing.
        assert_eq!(s.window(12_000, 13_000).requests, 0);
        assert_eq!(s.totals(), (100, 1));
    }

    #[test]
    fn old_seconds_are_reused_not_added() {
        let s = Stats::default();
        s.record(1_000, 1_000, false);
        s.record(1_000 + SECONDS as i64 * 1000, 1_000, false);
        assert_eq!(
            s.window(0, 2_000).requests,
            0,
            "the old second was overwritten"
        );
        assert_eq!(
            s.window(SECONDS as i64 * 1000, SECONDS as i64 * 1000 + 1_000)
                .requests,
            1
        );
    }
}
