//! Load: closed loop (N clients, each sending its next request when the last answered) and open
//! loop (requests sent on a fixed schedule whatever the answers; each latency is counted from
//! the moment the request was due, not sent, so a stall shows in full: corrected for
//! coordinated omission). Both are bounded in time and in requests in flight.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

/// One request of a load; `Ok` when it got the answer it should.
pub type Request = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = bool> + Send>> + Send + Sync>;

/// What a load measured.
pub struct Measured {
    /// Latencies in microseconds.
    pub latency: Histogram<u64>,
    pub ok: u64,
    pub failed: u64,
    pub elapsed: Duration,
    /// Open loop: requests that were due but could not be sent (in-flight cap reached).
    pub dropped: u64,
}

impl Measured {
    pub fn throughput(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    fn ms(&self, quantile: f64) -> f64 {
        self.latency.value_at_quantile(quantile) as f64 / 1000.0
    }

    /// A row: throughput, p50, p95, p99, max (ms), errors.
    pub fn row(&self, label: impl Into<String>) -> Vec<Value> {
        vec![
            json!(label.into()),
            json!(round(self.throughput(), 0)),
            json!(round(self.ms(0.50), 2)),
            json!(round(self.ms(0.95), 2)),
            json!(round(self.ms(0.99), 2)),
            json!(round(self.latency.max() as f64 / 1000.0, 2)),
            json!(self.failed + self.dropped),
        ]
    }

    pub const COLUMNS: [&str; 7] = [
        "load", "req/s", "p50 ms", "p95 ms", "p99 ms", "max ms", "errors",
    ];
}

pub fn round(x: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (x * f).round() / f
}

fn histogram() -> Histogram<u64> {
    // 1 µs to 60 s, 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000, 3).unwrap_or_else(|_| unreachable!("valid bounds"))
}

/// `clients` loops, each sending requests one after the other, for `duration`.
pub async fn closed_loop(clients: usize, duration: Duration, request: Request) -> Measured {
    let started = Instant::now();
    let until = started + duration;
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let request = request.clone();
            tokio::spawn(async move {
                let mut latency = histogram();
                let (mut ok, mut failed) = (0, 0);
                while Instant::now() < until {
                    let sent = Instant::now();
                    let good = request().await;
                    let _ = latency.record(sent.elapsed().as_micros().max(1) as u64);
                    if good {
                        ok += 1;
                    } else {
                        failed += 1;
                    }
                }
                (latency, ok, failed)
            })
        })
        .collect();
    let mut measured = Measured {
        latency: histogram(),
        ok: 0,
        failed: 0,
        elapsed: Duration::ZERO,
        dropped: 0,
    };
    for task in tasks {
        if let Ok((latency, ok, failed)) = task.await {
            let _ = measured.latency.add(&latency);
            measured.ok += ok;
            measured.failed += failed;
        }
    }
    measured.elapsed = started.elapsed();
    measured
}

/// Requests due every `1/rate` seconds for `duration`, at most `max_in_flight` at once.
pub async fn open_loop(
    rate: f64,
    duration: Duration,
    max_in_flight: usize,
    request: Request,
) -> Measured {
    let started = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / rate);
    let total = (duration.as_secs_f64() * rate) as u64;
    let permits = Arc::new(Semaphore::new(max_in_flight));
    let latencies = Arc::new(std::sync::Mutex::new(histogram()));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut dropped = 0;
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let due = started + interval.mul_f64(i as f64);
        tokio::time::sleep_until(due.into()).await;
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            dropped += 1;
            continue;
        };
        let (request, latencies, ok, failed) = (
            request.clone(),
            latencies.clone(),
            ok.clone(),
            failed.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let good = request().await;
            // From when it was due: time spent waiting to be sent counts.
            let took = due.elapsed().as_micros().max(1) as u64;
            drop(permit);
            if let Ok(mut latencies) = latencies.lock() {
                let _ = latencies.record(took);
            }
            if good { &ok } else { &failed }.fetch_add(1, Ordering::Relaxed);
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let latency = latencies
        .lock()
        .map(|l| l.clone())
        .unwrap_or_else(|_| histogram());
    Measured {
        latency,
        ok: ok.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
        dropped,
    }
}
