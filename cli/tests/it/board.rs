//! The apalis board on the admin listener: true views of the step queue (a session's running,
//! waiting, done and dead step jobs; live workers only), and nothing without the credential.

use std::time::{Duration, Instant};

use agentq_cli::stand_in::Turn;
use agentq_shared::schemas::SessionStatus;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::harness::{TestEnv, free_port};

const TOKEN: &str = "board-test-token-0123456789";

/// An environment whose API serves the board; returns it and the board's URL.
async fn with_board(vars: &[(&str, &str)]) -> (TestEnv, String) {
    let mut env = TestEnv::new().await;
    let admin = format!("127.0.0.1:{}", free_port());
    env.set("AGENTQ_ADMIN_LISTEN", &admin);
    env.set("AGENTQ_ADMIN_TOKEN", TOKEN);
    for (var, value) in vars {
        env.set(var, value);
    }
    env.start_api().await;
    (env, format!("http://{admin}"))
}

async fn board(env: &TestEnv, url: &str) -> Value {
    let response = env.http.get(url).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(response.status(), 200, "{url}");
    response.json().await.unwrap()
}

/// The board's tasks of one session, as (task id, status).
fn of_session(tasks: &Value, id: Uuid) -> Vec<(String, String)> {
    let mut found: Vec<(String, String)> = tasks
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["args"]["session_id"] == json!(id))
        .map(|t| {
            (
                t["ctx"]["task_id"].as_str().unwrap().to_owned(),
                t["ctx"]["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    found.sort();
    found
}

/// Polls `url` until `done` holds for what it answers.
async fn board_until(env: &TestEnv, url: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let value = board(env, url).await;
        if done(&value) {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "{what} within 30 s; last: {value:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn worker_names(workers: &Value) -> Vec<String> {
    workers
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn the_board_shows_a_sessions_step_jobs_and_live_workers_only() {
    // Workers count as dead one second after their last heartbeat.
    let (mut env, admin) = with_board(&[
        ("AGENTQ_HEARTBEAT_MS", "500"),
        ("AGENTQ_MISSED_HEARTBEATS", "2"),
    ])
    .await;
    let key = env.key("acme").await;
    let queue = format!("{}:steps", env.redis_prefix);
    let tasks = format!("{admin}/api/v1/queues/{queue}/tasks");

    let live = env.start_worker();
    let live_pid = env.pid(live).unwrap();

    env.llm.script(
        "marker-board",
        vec![
            Turn::tool("echo", json!({"text": "slow", "delay_ms": 3000})),
            Turn::answer("done"),
        ],
    );
    let id = env
        .run(&key, "marker-board: go", json!({"tools": ["echo"]}))
        .await;

    // While the tool runs, its step job is Running, held by the live worker.
    let running = board_until(
        &env,
        &format!("{tasks}?status=Running"),
        "a running job",
        |t| !of_session(t, id).is_empty(),
    )
    .await;
    assert_eq!(
        of_session(&running, id),
        vec![(format!("{id}:0"), "Running".into())]
    );
    let job = running
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["args"]["session_id"] == json!(id))
        .unwrap();
    let holder = job["ctx"]["lock_by"].as_str().unwrap().to_owned();
    assert!(
        holder.starts_with(&format!("agentq-worker-{live_pid}-")),
        "{holder}"
    );
    let workers = board_until(
        &env,
        &format!("{admin}/api/v1/workers"),
        "live workers only",
        |w| worker_names(w).len() == 1,
    )
    .await;
    assert_eq!(worker_names(&workers), vec![holder.clone()]);
    assert!(workers[0]["last_heartbeat"].as_u64().unwrap() > 0);
    assert!(workers[0]["started_at"].as_u64().unwrap() > 0);
    let per_queue = board(&env, &format!("{admin}/api/v1/queues/{queue}/workers")).await;
    assert_eq!(worker_names(&per_queue), vec![holder.clone()]);
    let queues = board(&env, &format!("{admin}/api/v1/queues")).await;
    assert_eq!(queues.as_array().unwrap().len(), 1, "{queues:#}");
    assert_eq!(queues[0]["name"], json!(queue));
    assert_eq!(queues[0]["workers"], json!([holder]));
    let stat = |stats: &Value, title: &str| -> u64 {
        stats
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["title"] == json!(title))
            .and_then(|s| s["value"].as_str())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {title} in {stats:#}"))
    };
    assert!(stat(&queues[0]["stats"], "RUNNING_JOBS") >= 1, "{queues:#}");

    // The board's page keeps its log stream open (it calls the board unhealthy otherwise).
    let events = env
        .http
        .get(format!("{admin}/api/v1/events"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);
    assert_eq!(events.headers()["content-type"], "text/event-stream");
    drop(events);

    // Once the session is over, each of its steps' jobs is Done, and a job's detail says so.
    let session = env.wait_status(&key, id, SessionStatus::Completed).await;
    let steps = session.steps.len();
    let done = board_until(&env, &format!("{tasks}?status=Done"), "done jobs", |t| {
        of_session(t, id).len() == steps
    })
    .await;
    let expected: Vec<(String, String)> = (0..steps)
        .map(|n| (format!("{id}:{n}"), "Done".to_owned()))
        .collect();
    assert_eq!(of_session(&done, id), expected);
    let detail = board(&env, &format!("{tasks}/{id}:0")).await;
    assert_eq!(
        (&detail["ctx"]["status"], &detail["args"]["step"]),
        (&json!("Done"), &json!(0))
    );
    assert!(detail["ctx"]["done_at"].as_u64().is_some(), "{detail:#}");
    let all = board(&env, &format!("{admin}/api/v1/tasks?page=1&page_size=50")).await;
    assert_eq!(of_session(&all, id), expected);
    let missing = env
        .http
        .get(format!("{tasks}/{id}:99"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);

    // With no live worker, a new session's first job waits (Queued) and no worker is listed.
    env.kill(live).await;
    let waiting_id = env.run(&key, "nobody runs this", json!({})).await;
    let queued = board(&env, &format!("{tasks}?status=Queued")).await;
    assert_eq!(
        of_session(&queued, waiting_id),
        vec![(format!("{waiting_id}:0"), "Queued".into())]
    );
    let overview = board(&env, &format!("{admin}/api/v1/overview")).await;
    assert!(stat(&overview, "PENDING_JOBS") >= 1, "{overview:#}");
    assert_eq!(stat(&overview, "DONE_JOBS"), steps as u64, "{overview:#}");
    board_until(
        &env,
        &format!("{admin}/api/v1/workers"),
        "no live worker",
        |w| worker_names(w).is_empty(),
    )
    .await;
    // The dead worker's entry stays in Redis (only a live worker's sweep removes it), so the
    // empty list above is the board's doing.
    let mut redis = env.redis().await;
    let registered: Vec<String> = redis::cmd("ZRANGE")
        .arg(format!("{queue}:workers"))
        .arg(0)
        .arg(-1)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(registered, vec![holder.clone()]);

    // A job apalis gave up on sits in the dead set (agentq's steps end their sessions instead
    // of dying, so the test moves one there as apalis does): the board calls it Killed.
    let moved: i64 = redis::cmd("SMOVE")
        .arg(format!("{queue}:done"))
        .arg(format!("{queue}:dead"))
        .arg(format!("{id}:0"))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(moved, 1);
    let dead = board(&env, &format!("{tasks}?status=Killed")).await;
    assert_eq!(
        of_session(&dead, id),
        vec![(format!("{id}:0"), "Killed".into())]
    );
    let detail = board(&env, &format!("{tasks}/{id}:0")).await;
    assert_eq!(detail["ctx"]["status"], json!("Killed"));
    let overview = board(&env, &format!("{admin}/api/v1/overview")).await;
    assert_eq!(stat(&overview, "KILLED_JOBS"), 1, "{overview:#}");

    // With the credential, the board's push enqueues (the 401 test's control).
    let pushed = env
        .http
        .put(&tasks)
        .bearer_auth(TOKEN)
        .header("x-task-id", "pushed-from-the-board")
        .json(&json!({"session_id": waiting_id, "step": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(pushed.status(), 200, "{}", pushed.text().await.unwrap());
    let detail = board(&env, &format!("{tasks}/pushed-from-the-board")).await;
    assert_eq!(
        (&detail["ctx"]["status"], &detail["args"]["session_id"]),
        (&json!("Queued"), &json!(waiting_id))
    );
}

#[tokio::test]
async fn without_the_admin_credential_every_board_route_is_401_and_nothing_is_enqueued() {
    let (env, admin) = with_board(&[]).await;
    let key = env.key("acme").await;
    let id = env.run(&key, "queued, no worker", json!({})).await;
    let queue = format!("{}:steps", env.redis_prefix);
    let mut redis = env.redis().await;
    let footprint = |mut redis: redis::aio::MultiplexedConnection| {
        let queue = queue.clone();
        async move {
            let (active, data, scheduled): (u64, u64, u64) = redis::pipe()
                .cmd("LLEN")
                .arg(format!("{queue}:active"))
                .cmd("HLEN")
                .arg(format!("{queue}:data"))
                .cmd("ZCARD")
                .arg(format!("{queue}:scheduled"))
                .query_async(&mut redis)
                .await
                .unwrap();
            (active, data, scheduled)
        }
    };
    let before = footprint(redis.clone()).await;
    assert_eq!(before.0 + before.2, 1, "the session's first job waits");

    let push_body = json!({"session_id": id, "step": 1});
    let routes: Vec<(Method, String)> = [
        "/",
        "/index.html",
        "/queues",
        "/api/v1/overview",
        "/api/v1/queues",
        "/api/v1/tasks",
        "/api/v1/workers",
        "/api/v1/events",
        "/api/v1/nothing-here",
    ]
    .into_iter()
    .map(|p| (Method::GET, p.to_owned()))
    .chain(
        ["tasks", "stats", "workers", &format!("tasks/{id}:0")]
            .into_iter()
            .map(|p| (Method::GET, format!("/api/v1/queues/{queue}/{p}"))),
    )
    .chain([
        (Method::PUT, format!("/api/v1/queues/{queue}/tasks")),
        (Method::POST, "/signout".to_owned()),
        (Method::DELETE, "/api/v1/overview".to_owned()),
    ])
    .collect();
    // No credential, a wrong token, an API key of the public API, a forged cookie.
    let attempts: [(&str, Option<(&str, String)>); 4] = [
        ("none", None),
        (
            "wrong token",
            Some(("authorization", "Bearer not-the-token".into())),
        ),
        ("api key", Some(("authorization", format!("Bearer {key}")))),
        (
            "forged cookie",
            Some(("cookie", "agentq_admin=00ff".into())),
        ),
    ];
    for (what, header) in &attempts {
        for (method, path) in &routes {
            let mut request = env
                .http
                .request(method.clone(), format!("{admin}{path}"))
                .header("x-task-id", format!("unauthorized-{what}"))
                .json(&push_body);
            if let Some((name, value)) = header {
                request = request.header(*name, value);
            }
            let response = request.send().await.unwrap();
            assert_eq!(
                response.status(),
                StatusCode::UNAUTHORIZED,
                "{what}: {method} {path}"
            );
            assert!(response.headers().contains_key("www-authenticate"));
        }
    }
    assert_eq!(
        footprint(redis.clone()).await,
        before,
        "nothing was enqueued"
    );
    for (what, _) in &attempts {
        let exists: bool = redis::cmd("HEXISTS")
            .arg(format!("{queue}:data"))
            .arg(format!("unauthorized-{what}"))
            .query_async(&mut redis)
            .await
            .unwrap();
        assert!(!exists, "{what}");
    }

    // A browser gets the sign-in form with its 401; signing in with the token sets a cookie
    // that opens the page and the API, and the push.
    let page = env
        .http
        .get(format!("{admin}/"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 401);
    assert!(page.text().await.unwrap().contains("action=\"/signin\""));
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let wrong = no_redirects
        .post(format!("{admin}/signin"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("token=guess")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert!(!wrong.headers().contains_key("set-cookie"));
    let signed_in = no_redirects
        .post(format!("{admin}/signin"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), 303);
    let cookie = signed_in.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(!cookie.contains(TOKEN), "the cookie is not the token");
    let cookie = cookie.split(';').next().unwrap().to_owned();
    let page = env
        .http
        .get(format!("{admin}/"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("apalis-board"));
    let overview = env
        .http
        .get(format!("{admin}/api/v1/overview"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(overview.status(), 200);
    let pushed = env
        .http
        .put(format!("{admin}/api/v1/queues/{queue}/tasks"))
        .header("cookie", &cookie)
        .header("x-task-id", "signed-in-push")
        .json(&push_body)
        .send()
        .await
        .unwrap();
    assert_eq!(pushed.status(), 200);
    let exists: bool = redis::cmd("HEXISTS")
        .arg(format!("{queue}:data"))
        .arg("signed-in-push")
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(exists);

    // The board is only on the admin listener.
    let (status, _) = env
        .request(Method::GET, "/api/v1/overview", Some(&key), None)
        .await;
    assert_eq!(status, 404);
}
