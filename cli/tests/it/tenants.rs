//! Many orgs on one deployment: each org's cap on active sessions, enforced in the database
//! (new sessions wait `queued` and start in order as slots free up, or are refused on request),
//! across API processes and workers.

use std::time::{Duration, Instant};

use agentq_cli::stand_in::Turn;
use agentq_shared::schemas::SessionStatus;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::harness::{Backend, TestEnv};

const CAP: i64 = 4;
const BURST: usize = 100;

/// The must-show: with two API processes and three workers, a burst of 100 creates from one
/// org never has more than the cap active at once (checked twice: by sampling the table while
/// it runs, and afterwards from every session's own events, which a sample could miss), the
/// queued ones start in the order they were created, and another org's session meanwhile
/// completes while most of the burst still waits.
#[tokio::test]
async fn the_cap_holds_across_two_apis_and_three_workers_under_a_burst() {
    let mut env = TestEnv::new().await;
    env.set("AGENTQ_ORG_MAX_ACTIVE_SESSIONS", &CAP.to_string());
    env.set("AGENTQ_RATE_LIMIT_PER_SEC", "0");
    // Each burst session holds its slot for a while: a slow model turn, then the answer.
    env.llm.script(
        "burst-marker",
        vec![
            Turn::tool("echo", json!({"text": "burst"})).delay(Duration::from_millis(150)),
            Turn::answer("burst done"),
        ],
    );
    env.start_api().await;
    let (_, second_api) = env.start_another_api(&[]).await;
    for _ in 0..3 {
        env.start_worker();
    }
    let busy = env.key("burst-org").await;
    let other = env.key("other-org").await;
    let pg = env.pg().clone();
    let org: Uuid = sqlx::query_scalar("SELECT id FROM orgs WHERE name = 'burst-org'")
        .fetch_one(&pg)
        .await
        .unwrap();

    // Sample the org's active sessions while the burst runs.
    let sampler = {
        let pg = pg.clone();
        tokio::spawn(async move {
            let mut most = 0i64;
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                let (active, left): (i64, i64) = sqlx::query_as(
                    "SELECT count(*) FILTER (WHERE status IN ('pending', 'running',
                                                              'awaiting_approval')),
                            count(*) FILTER (WHERE status NOT IN ('completed', 'failed',
                                                                  'cancelled'))
                     FROM sessions WHERE org_id = $1",
                )
                .bind(org)
                .fetch_one(&pg)
                .await
                .unwrap();
                most = most.max(active);
                if (left == 0 && most > 0) || Instant::now() > deadline {
                    return most;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };

    let apis = [env.api_url.clone(), second_api.clone()];
    let creates = (0..BURST).map(|i| {
        let request = env
            .http
            .post(format!("{}/v1/agents/run", apis[i % 2]))
            .bearer_auth(&busy)
            .json(&json!({"messages": [{"role": "user", "content": format!("burst-marker {i}")}]}));
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap();
            (status, body)
        }
    });
    let created = futures::future::join_all(creates).await;
    let mut queued = 0;
    for (status, body) in &created {
        assert_eq!(*status, 202, "{body}");
        match body["status"].as_str() {
            Some("queued") => queued += 1,
            Some("pending") => {}
            other => panic!("a new session is pending or queued, not {other:?}"),
        }
    }
    assert!(queued >= BURST - CAP as usize, "{queued} of {BURST} queued");

    // Another org is not held up by the burst: its session completes while most of the burst
    // still waits (it queues behind at most the cap's worth of the burst's steps).
    let id = env.run(&other, "another org's question", json!({})).await;
    let done = env.wait_status(&other, id, SessionStatus::Completed).await;
    assert_eq!(done.steps.len(), 2);
    let (finished,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM sessions WHERE org_id = $1 AND status = 'completed'")
            .bind(org)
            .fetch_one(&pg)
            .await
            .unwrap();
    println!("the other org's session completed after {finished} of the burst's {BURST}");
    assert!(
        finished < BURST as i64 / 2,
        "the other org waited for {finished} of the burst's sessions"
    );

    let most = sampler.await.unwrap();
    println!("at most {most} active at once (cap {CAP})");
    assert_eq!(most, CAP, "the cap is reached and never passed");
    let (completed,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM sessions WHERE org_id = $1 AND status = 'completed'")
            .bind(org)
            .fetch_one(&pg)
            .await
            .unwrap();
    assert_eq!(completed, BURST as i64, "every burst session completes");

    // From the events: when each session became active (its `pending` status) and when it
    // ended; at no moment more than the cap, and slots went out in creation order.
    let rows: Vec<(bool, f64, f64)> = sqlx::query_as(
        "SELECT (SELECT e.data->>'status' = 'queued' FROM session_events e
                 WHERE e.session_id = s.id AND e.seq = 1),
                extract(epoch FROM (SELECT min(e.created_at) FROM session_events e
                                    WHERE e.session_id = s.id AND e.kind = 'status'
                                      AND e.data->>'status' = 'pending'))::float8,
                extract(epoch FROM (SELECT min(e.created_at) FROM session_events e
                                    WHERE e.session_id = s.id AND e.kind = 'done'))::float8
         FROM sessions s WHERE s.org_id = $1 ORDER BY s.created_at, s.id",
    )
    .bind(org)
    .fetch_all(&pg)
    .await
    .unwrap();
    let mut moments: Vec<(f64, i64)> = rows
        .iter()
        .flat_map(|(_, start, end)| [(*start, 1), (*end, -1)])
        .collect();
    // At the same instant an end counts before a start.
    moments.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let mut active = 0;
    let mut most = 0;
    for (_, change) in moments {
        active += change;
        most = most.max(active);
    }
    assert_eq!(most, CAP, "the events show at most {CAP} active at once");
    // The queued ones, in the order they were created: each started no earlier than the one
    // before it.
    let starts: Vec<f64> = rows
        .iter()
        .filter(|(queued, _, _)| *queued)
        .map(|(_, start, _)| *start)
        .collect();
    assert_eq!(starts.len(), queued, "the sessions created queued");
    let in_order = starts.windows(2).all(|w| w[0] <= w[1]);
    assert!(
        in_order,
        "queued sessions start in creation order: {starts:?}"
    );
}

/// The most steps of a backlogged org that may run while another org's two-step session
/// runs: per step of it, one turn of the round-robin plus the worker's room (2) and what its
/// steps in flight hold (2), with slack for the poll tick. First in, first out, it would be
/// the whole backlog (200).
const FAIR_BOUND: i64 = 20;

/// Fair share: with one org holding 200 waiting sessions, another org's new session does not
/// wait behind them: while it runs, the backlogged org gets at most `FAIR_BOUND` steps.
async fn another_orgs_session_does_not_wait_behind_one_orgs_backlog(backend: Backend) {
    let mut env = TestEnv::on(backend).await;
    env.set("AGENTQ_ORG_MAX_ACTIVE_SESSIONS", "0");
    env.set("AGENTQ_RATE_LIMIT_PER_SEC", "0");
    env.set("AGENTQ_WORKER_CONCURRENCY", "2");
    env.start_api().await;
    let crowd = env.key("crowd-org").await;
    let single = env.key("single-org").await;
    // The backlog: 200 two-step sessions, all their first steps waiting before a worker runs.
    for batch in 0..4 {
        let questions: Vec<String> = (0..50).map(|i| format!("crowd {batch}-{i}")).collect();
        let creates = questions.iter().map(|q| env.run(&crowd, q, json!({})));
        futures::future::join_all(creates).await;
    }
    env.start_worker();
    // Once the worker is well into the backlog, the other org's session arrives.
    let deadline = Instant::now() + Duration::from_secs(60);
    while backlog(&env, None).await.0 < 10 {
        assert!(Instant::now() < deadline, "the worker never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let id = env.run(&single, "a single question", json!({})).await;
    let done = env.wait_status(&single, id, SessionStatus::Completed).await;
    assert_eq!(done.steps.len(), 2);
    let (during, waiting) = backlog(&env, Some(id)).await;
    println!(
        "the backlogged org ran {during} steps while the other's session ran; \
         {waiting} of its sessions still unfinished"
    );
    assert!(
        during <= FAIR_BOUND,
        "the backlogged org ran {during} steps (bound {FAIR_BOUND}) while the other's ran"
    );
    assert!(waiting >= 100, "the backlog was still there ({waiting})");
}

/// The crowd org's steps decided while session `during` ran (all of them without one), and
/// how many of its sessions are unfinished.
async fn backlog(env: &TestEnv, during: Option<Uuid>) -> (i64, i64) {
    let steps = "SELECT count(*) FROM steps st JOIN sessions c ON c.id = st.session_id
                 JOIN orgs o ON o.id = c.org_id AND o.name = 'crowd-org'";
    let window = " WHERE st.decided_at > (SELECT created_at FROM sessions WHERE id = $1)
                     AND st.decided_at < (SELECT updated_at FROM sessions WHERE id = $1)";
    let unfinished = "SELECT count(*) FROM sessions c JOIN orgs o ON o.id = c.org_id
                      WHERE o.name = 'crowd-org'
                        AND c.status NOT IN ('completed', 'failed', 'cancelled')";
    let steps = match during {
        Some(_) => format!("{steps}{window}"),
        None => steps.to_owned(),
    };
    match env.backend {
        Backend::Postgres => {
            let count = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(steps));
            let count = match during {
                Some(id) => count.bind(id),
                None => count,
            };
            let steps = count.fetch_one(env.pg()).await.unwrap();
            let open = sqlx::query_scalar(unfinished)
                .fetch_one(env.pg())
                .await
                .unwrap();
            (steps, open)
        }
        Backend::Sqlite => {
            let pool = env.sqlite().await;
            let steps = steps.replace("$1", "?1");
            let count = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(steps));
            let count = match during {
                Some(id) => count.bind(id),
                None => count,
            };
            let steps = count.fetch_one(&pool).await.unwrap();
            let open = sqlx::query_scalar(unfinished)
                .fetch_one(&pool)
                .await
                .unwrap();
            pool.close().await;
            (steps, open)
        }
    }
}

/// Past the cap a session waits `queued` (visible to polls and events), `if_busy: reject`
/// refuses instead with 429 `concurrency_limited`, a queued session can be cancelled, and the
/// rest start in order as slots free; an org's own cap (`agentq admin concurrency`) replaces
/// the default once the API re-verifies its key.
async fn past_the_cap_sessions_queue_or_are_refused(backend: Backend) {
    let mut env = TestEnv::on(backend).await;
    env.set("AGENTQ_ORG_MAX_ACTIVE_SESSIONS", "1");
    env.set("AGENTQ_AUTH_CACHE_SECS", "1");
    env.llm.script(
        "slow-marker",
        vec![
            Turn::tool("echo", json!({"text": "slow"})).delay(Duration::from_millis(1500)),
            Turn::answer("slow done"),
        ],
    );
    env.start_api().await;
    env.start_worker();
    let key = env.key("capped-org").await;

    let first = env.run(&key, "slow-marker first", json!({})).await;
    let second = env.run(&key, "second", json!({})).await;
    let third = env.run(&key, "third", json!({})).await;
    for id in [second, third] {
        assert_eq!(env.session(&key, id).await.status, SessionStatus::Queued);
    }
    let (status, body) = env
        .request(
            reqwest::Method::POST,
            "/v1/agents/run",
            Some(&key),
            Some(json!({"messages": [{"role": "user", "content": "no wait"}],
                        "if_busy": "reject"})),
        )
        .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (429, &json!("concurrency_limited")),
        "{body}"
    );
    let (status, body) = env
        .request(
            reqwest::Method::POST,
            "/v1/agents/run",
            Some(&key),
            Some(json!({"messages": [{"role": "user", "content": "x"}], "if_busy": "later"})),
        )
        .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (422, &json!("invalid_request"))
    );
    let listed = env
        .request(
            reqwest::Method::GET,
            "/v1/agents?status=queued",
            Some(&key),
            None,
        )
        .await;
    let ids: Vec<&str> = listed.1["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["session_id"].as_str())
        .collect();
    assert_eq!(ids.len(), 2, "the listing filters on queued: {}", listed.1);

    // A queued session is cancelled at once; the other starts when the first ends.
    let (status, cancelled) = env.cancel(&key, third).await;
    assert_eq!((status, &cancelled["status"]), (202, &json!("cancelled")));
    env.wait_status(&key, first, SessionStatus::Completed).await;
    env.wait_status(&key, second, SessionStatus::Completed)
        .await;
    let statuses = status_events(&env, &key, second).await;
    assert_eq!(
        statuses,
        ["queued", "pending", "running", "completed"],
        "the second session's statuses"
    );
    assert_eq!(
        status_events(&env, &key, third).await,
        ["queued", "cancelled"]
    );

    // An org's own cap: no cap, then the default again.
    let admin = |args: &[&str]| {
        let mut command = env.command("agentq");
        command.arg("admin").arg("concurrency").args(args);
        async move { command.output().await.unwrap() }
    };
    let set = admin(&["--org", "capped-org", "--unlimited"]).await;
    assert!(
        set.status.success(),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    let unknown = admin(&["--org", "nobody", "--max-active", "2"]).await;
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no org is named \"nobody\""));
    let neither = admin(&["--org", "capped-org"]).await;
    assert!(!neither.status.success(), "a cap, --unlimited or --default");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let slow = env.run(&key, "slow-marker again", json!({})).await;
    let beside = env.run(&key, "beside it", json!({})).await;
    assert_ne!(
        env.session(&key, beside).await.status,
        SessionStatus::Queued
    );
    env.wait_status(&key, slow, SessionStatus::Completed).await;
    env.wait_status(&key, beside, SessionStatus::Completed)
        .await;
    let back = admin(&["--org", "capped-org", "--max-active", "1"]).await;
    assert!(
        back.status.success(),
        "{}",
        String::from_utf8_lossy(&back.stderr)
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let slow = env.run(&key, "slow-marker once more", json!({})).await;
    let behind = env.run(&key, "behind it", json!({})).await;
    assert_eq!(
        env.session(&key, behind).await.status,
        SessionStatus::Queued
    );
    env.wait_status(&key, slow, SessionStatus::Completed).await;
    env.wait_status(&key, behind, SessionStatus::Completed)
        .await;
}

/// A queued session's deadline runs while it waits: past it the session fails
/// `deadline_exceeded` without ever starting.
async fn a_queued_session_past_its_deadline_fails(backend: Backend) {
    let mut env = TestEnv::on(backend).await;
    env.set("AGENTQ_ORG_MAX_ACTIVE_SESSIONS", "1");
    env.set("AGENTQ_RECONCILE_EVERY_MS", "200");
    // The first session holds the org's one slot in a slow model turn, past the second's
    // deadline (it was created through an API with a longer one).
    env.llm.script(
        "hold-marker",
        vec![
            Turn::tool("echo", json!({"text": "held"})).delay(Duration::from_secs(5)),
            Turn::answer("held long enough"),
        ],
    );
    let (_, patient_api) = env
        .start_another_api(&[("AGENTQ_SESSION_DEADLINE_SECS", "60")])
        .await;
    env.set("AGENTQ_SESSION_DEADLINE_SECS", "2");
    env.start_api().await;
    env.start_worker();
    let key = env.key("late-org").await;
    let response = env
        .http
        .post(format!("{patient_api}/v1/agents/run"))
        .bearer_auth(&key)
        .json(&json!({"messages": [{"role": "user", "content": "hold-marker"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let holder: Uuid = response.json::<Value>().await.unwrap()["session_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let waiting = env.run(&key, "waits in line", json!({})).await;
    assert_eq!(
        env.session(&key, waiting).await.status,
        SessionStatus::Queued
    );
    let failed = env.wait_status(&key, waiting, SessionStatus::Failed).await;
    assert_eq!(
        failed.error.map(|e| e.code.as_str().to_owned()),
        Some("deadline_exceeded".to_owned())
    );
    assert!(failed.steps.is_empty(), "it never started");
    env.wait_status(&key, holder, SessionStatus::Completed)
        .await;
}

/// The `status` values of a session's events, in order.
async fn status_events(env: &TestEnv, key: &str, id: Uuid) -> Vec<String> {
    let response = env
        .http
        .get(format!("{}/v1/agents/{id}/events", env.api_url))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    let text = response.text().await.unwrap();
    text.lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .filter_map(|data| serde_json::from_str::<Value>(data.trim()).ok())
        .filter(|event| event["kind"] == "status")
        .filter_map(|event| event["data"]["status"].as_str().map(str::to_owned))
        .collect()
}

on_both_backends!(
    another_orgs_session_does_not_wait_behind_one_orgs_backlog,
    past_the_cap_sessions_queue_or_are_refused,
    a_queued_session_past_its_deadline_fails,
);
