//! Request counters and latency histograms in Prometheus's text format.
//!
//! Labels are bounded: an operation Moat does not implement is counted as
//! `unknown`, so hostile requests cannot grow the label set.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

type Key = (&'static str, &'static str);

#[derive(Default)]
struct Inner {
    requests: BTreeMap<(&'static str, &'static str, &'static str), u64>,
    latency: BTreeMap<Key, Histogram>,
}

/// How many parts the metrics are kept in. A thread updates its own part
/// (threads take parts in turn, as they first count), so that the workers
/// seldom wait for each other or pass a lock's cache line between cores;
/// rendering adds the parts up.
const SHARDS: usize = 8;

/// One part, alone on its cache lines.
#[derive(Default)]
#[repr(align(128))]
struct Shard(Mutex<Inner>);

/// The edge's metrics. Cheap to update from every request.
#[derive(Default)]
pub struct Metrics {
    shards: [Shard; SHARDS],
}

/// The part of the metrics this thread updates.
fn shard() -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    SHARD.with(|s| *s)
}

impl Metrics {
    pub fn observe(
        &self,
        service: &'static str,
        operation: &'static str,
        outcome: &'static str,
        elapsed: Duration,
    ) {
        let secs = elapsed.as_secs_f64();
        let mut inner = self.shards[shard()]
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *inner
            .requests
            .entry((service, operation, outcome))
            .or_default() += 1;
        let h = inner.latency.entry((service, operation)).or_default();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += secs;
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut inner = Inner::default();
        for shard in &self.shards {
            let shard = shard.0.lock().unwrap_or_else(|p| p.into_inner());
            for (key, n) in &shard.requests {
                *inner.requests.entry(*key).or_default() += n;
            }
            for (key, h) in &shard.latency {
                let total = inner.latency.entry(*key).or_default();
                for (sum, n) in total.counts.iter_mut().zip(h.counts) {
                    *sum += n;
                }
                total.count += h.count;
                total.sum += h.sum;
            }
        }
        let mut out = String::new();
        out.push_str(
            "# HELP moat_requests_total API requests by service, operation and outcome.\n",
        );
        out.push_str("# TYPE moat_requests_total counter\n");
        for ((service, operation, outcome), n) in &inner.requests {
            let _ = writeln!(
                out,
                "moat_requests_total{{service=\"{service}\",operation=\"{operation}\",outcome=\"{outcome}\"}} {n}"
            );
        }
        out.push_str("# HELP moat_request_duration_seconds Time from request head to response.\n");
        out.push_str("# TYPE moat_request_duration_seconds histogram\n");
        for ((service, operation), h) in &inner.latency {
            let labels = format!("service=\"{service}\",operation=\"{operation}\"");
            for (bound, n) in BUCKETS.iter().zip(h.counts.iter()) {
                let _ = writeln!(
                    out,
                    "moat_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {n}"
                );
            }
            let _ = writeln!(
                out,
                "moat_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "moat_request_duration_seconds_sum{{{labels}}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "moat_request_duration_seconds_count{{{labels}}} {}",
                h.count
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_cumulative_buckets() {
        let m = Metrics::default();
        m.observe(
            "sts",
            "GetCallerIdentity",
            "allowed",
            Duration::from_micros(700),
        );
        m.observe(
            "sts",
            "GetCallerIdentity",
            "allowed",
            Duration::from_millis(30),
        );
        m.observe("sts", "unknown", "malformed", Duration::from_millis(1));
        // Another thread's observations land in another part, and count too.
        std::thread::scope(|scope| {
            for _ in 0..SHARDS {
                scope.spawn(|| {
                    m.observe("sts", "unknown", "malformed", Duration::from_millis(1));
                });
            }
        });
        let text = m.render();
        assert!(text.contains(
            "moat_requests_total{service=\"sts\",operation=\"GetCallerIdentity\",outcome=\"allowed\"} 2"
        ));
        assert!(text.contains(
            "moat_request_duration_seconds_bucket{service=\"sts\",operation=\"GetCallerIdentity\",le=\"0.001\"} 1"
        ));
        assert!(text.contains(
            "moat_request_duration_seconds_bucket{service=\"sts\",operation=\"GetCallerIdentity\",le=\"0.05\"} 2"
        ));
        assert!(text.contains(
            "moat_request_duration_seconds_count{service=\"sts\",operation=\"unknown\"} 9"
        ));
        assert!(text.contains(
            "moat_requests_total{service=\"sts\",operation=\"unknown\",outcome=\"malformed\"} 9"
        ));
    }
}
