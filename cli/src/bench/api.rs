//! `agentq bench api`: `POST /v1/agents/run` and `GET /v1/agents/{id}` against the API with two
//! workers running the sessions it creates (two steps each: the stand-in model calls `echo`,
//! then answers). Closed loop at 50 clients, then open loop at fixed rates.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};
use uuid::Uuid;

use super::load::{self, Measured, Request};
use super::stack::Stack;
use super::{Options, Table};

const CLIENTS: usize = 50;

pub fn create_request(stack: &Stack, ids: Option<Arc<std::sync::Mutex<Vec<Uuid>>>>) -> Request {
    let (http, url, key) = (
        stack.http.clone(),
        format!("{}/v1/agents/run", stack.api_url),
        stack.key.clone(),
    );
    let body = json!({"messages": [{"role": "user", "content": "bench: say hello"}],
                      "tools": ["echo"]});
    Arc::new(move || {
        let (http, url, key, body, ids) = (
            http.clone(),
            url.clone(),
            key.clone(),
            body.clone(),
            ids.clone(),
        );
        Box::pin(async move {
            let Ok(response) = http.post(&url).bearer_auth(&key).json(&body).send().await else {
                return false;
            };
            if response.status() != 202 {
                return false;
            }
            let created: Value = response.json().await.unwrap_or_default();
            if let (Some(ids), Some(id)) = (
                ids,
                created["session_id"].as_str().and_then(|s| s.parse().ok()),
            ) && let Ok(mut ids) = ids.lock()
            {
                ids.push(id);
            }
            true
        })
    })
}

fn poll_request(stack: &Stack, ids: Arc<Vec<Uuid>>) -> Request {
    let (http, base, key) = (stack.http.clone(), stack.api_url.clone(), stack.key.clone());
    let next = Arc::new(AtomicUsize::new(0));
    Arc::new(move || {
        let i = next.fetch_add(1, Ordering::Relaxed) % ids.len().max(1);
        let url = format!(
            "{base}/v1/agents/{}",
            ids.get(i).copied().unwrap_or_default()
        );
        let (http, key) = (http.clone(), key.clone());
        Box::pin(async move {
            match http.get(&url).bearer_auth(&key).send().await {
                Ok(response) if response.status() == 200 => response.bytes().await.is_ok(),
                _ => false,
            }
        })
    })
}

pub async fn run(options: Options) -> anyhow::Result<Vec<Table>> {
    let mut stack = Stack::new("api").await?;
    stack.start_api().await?;
    stack.start_workers(2).await?;
    let seconds = options.seconds;
    let ids = Arc::new(std::sync::Mutex::new(Vec::new()));

    // Warm up connections and caches.
    load::closed_loop(8, seconds / 4, create_request(&stack, Some(ids.clone()))).await;

    let mut closed = Table::new(
        format!(
            "closed loop, {CLIENTS} clients, {:.0} s each, 2 workers running",
            seconds.as_secs_f64()
        ),
        &Measured::COLUMNS,
    );
    let create =
        load::closed_loop(CLIENTS, seconds, create_request(&stack, Some(ids.clone()))).await;
    closed.rows.push(create.row("create (POST /v1/agents/run)"));
    let known: Arc<Vec<Uuid>> = Arc::new(ids.lock().map(|ids| ids.clone()).unwrap_or_default());
    let poll = load::closed_loop(CLIENTS, seconds, poll_request(&stack, known.clone())).await;
    closed.rows.push(poll.row("poll (GET /v1/agents/{id})"));

    let mut open = Table::new(
        format!(
            "open loop at fixed rates, {:.0} s each, latency from when each request was due",
            seconds.as_secs_f64()
        ),
        &Measured::COLUMNS,
    );
    let (create_rates, poll_rates): (&[f64], &[f64]) = if options.quick {
        (&[250.0], &[1000.0])
    } else {
        (
            &[500.0, 1000.0, 2000.0, 2500.0],
            &[2500.0, 5000.0, 10000.0, 11000.0],
        )
    };
    for &rate in create_rates {
        let measured = load::open_loop(rate, seconds, 2000, create_request(&stack, None)).await;
        open.rows
            .push(measured.row(format!("create at {rate:.0}/s")));
    }
    for &rate in poll_rates {
        let measured =
            load::open_loop(rate, seconds, 2000, poll_request(&stack, known.clone())).await;
        open.rows.push(measured.row(format!("poll at {rate:.0}/s")));
    }
    let summary = stack.summary().await?;
    open.notes.push(format!(
        "{} sessions created, {} finished by the workers meanwhile",
        summary
            .sessions_by_status
            .iter()
            .map(|(_, n)| n)
            .sum::<u64>(),
        summary.finished()
    ));
    Ok(vec![closed, open])
}
