//! `agentq bench <what>`: benchmarks that start what they need on loopback (a database of their
//! own on the Postgres at `DATABASE_URL`, a key prefix on the Redis at `REDIS_URL`, the API, N
//! workers, the stand-in model with no delay), print a table and write the figures as JSON.
//! They assert nothing: figures, not pass or fail. `deploy/bench.sh` runs them all;
//! `docs/benchmarks.md` has the method and the latest figures.
//!
//! - `api`: create and poll, closed loop at 50 clients and open loop at fixed rates;
//! - `steps`: durable steps per second and the latency each step adds, 1, 2 and 4 workers, 20
//!   and 200 sessions in flight;
//! - `sandbox`: `print(1)` through code_run on each backend;
//! - `recovery`: how long a session stands still after its worker is SIGKILLed;
//! - `memory`: resident size of API and worker, idle, under load, after 10,000 sessions.

mod api;
mod cpu;
mod load;
mod memory;
mod recovery;
mod sandbox;
mod stack;
mod steps;

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use crate::args::{Bench, BenchWhat};

/// A table of figures: printed, and written as JSON.
pub struct Table {
    pub title: String,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Value>>,
    pub notes: Vec<String>,
}

impl Table {
    pub fn new(title: impl Into<String>, columns: &[&str]) -> Self {
        Self {
            title: title.into(),
            columns: columns.iter().map(|c| c.to_string()).collect(),
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn print(&self) {
        println!("\n{}", self.title);
        let cell = |v: &Value| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let widths: Vec<usize> = (0..self.columns.len())
            .map(|i| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(i))
                    .map(|v| cell(v).len())
                    .chain([self.columns[i].len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: Vec<String>| {
            let padded: Vec<String> = cells
                .iter()
                .zip(&widths)
                .enumerate()
                .map(|(i, (c, w))| {
                    if i == 0 {
                        format!("{c:<w$}")
                    } else {
                        format!("{c:>w$}")
                    }
                })
                .collect();
            println!("  {}", padded.join("  "));
        };
        line(self.columns.clone());
        for row in &self.rows {
            line(row.iter().map(cell).collect());
        }
        for note in &self.notes {
            println!("  note: {note}");
        }
    }

    fn json(&self) -> Value {
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|row| {
                Value::Object(
                    self.columns
                        .iter()
                        .cloned()
                        .zip(row.iter().cloned())
                        .collect(),
                )
            })
            .collect();
        json!({"title": self.title, "rows": rows, "notes": self.notes})
    }
}

/// How long each measurement runs, and the sizes a quick run scales down.
#[derive(Debug, Clone)]
pub struct Options {
    pub seconds: Duration,
    pub quick: bool,
    /// `steps`: the worker counts and sessions in flight to measure (empty: the defaults).
    pub workers: Vec<usize>,
    pub sessions: Vec<usize>,
    pub backend: crate::args::BenchBackend,
}

pub async fn run(bench: Bench) -> anyhow::Result<i32> {
    let options = Options {
        seconds: Duration::from_secs_f64(bench.seconds.max(0.5)),
        quick: bench.quick,
        workers: bench.workers.into_iter().filter(|&n| n > 0).collect(),
        sessions: bench.sessions.into_iter().filter(|&n| n > 0).collect(),
        backend: bench.backend,
    };
    let whats = match bench.what {
        BenchWhat::All => vec![
            BenchWhat::Api,
            BenchWhat::Steps,
            BenchWhat::Sandbox,
            BenchWhat::Recovery,
            BenchWhat::Memory,
        ],
        one => vec![one],
    };
    let out = bench.out.unwrap_or_else(|| PathBuf::from("bench-results"));
    std::fs::create_dir_all(&out)?;
    for what in whats {
        let name = format!("{what:?}").to_lowercase();
        println!("== agentq bench {name} ({})", machine());
        let tables = match what {
            BenchWhat::Api => api::run(options.clone()).await?,
            BenchWhat::Steps => steps::run(options.clone()).await?,
            BenchWhat::Sandbox => sandbox::run(options.clone()).await?,
            BenchWhat::Recovery => recovery::run(options.clone()).await?,
            BenchWhat::Memory => memory::run(options.clone()).await?,
            BenchWhat::All => unreachable!("expanded above"),
        };
        for table in &tables {
            table.print();
        }
        let path = out.join(format!("{name}.json"));
        let report = json!({
            "bench": name,
            "machine": machine(),
            "at": chrono::Utc::now().to_rfc3339(),
            "seconds_per_measurement": options.seconds.as_secs_f64(),
            "tables": tables.iter().map(Table::json).collect::<Vec<_>>(),
        });
        std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
        println!("\n  figures written to {}", path.display());
    }
    Ok(0)
}

/// The machine, in a line: cores, memory, kernel.
fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory_gb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cores} cores, {memory_gb:.0} GB, Linux {}", kernel.trim())
}
