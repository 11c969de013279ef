//! The HTTP contract: authentication, org isolation, validation and error shapes.

use std::time::Duration;

use pretty_assertions::assert_eq;
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::harness::{Backend, TestEnv};

fn error(status: u16, body: &Value) -> (u16, String) {
    (
        status,
        body["error"]["code"]
            .as_str()
            .unwrap_or("<no error code>")
            .to_owned(),
    )
}

async fn keys_are_required_and_sessions_are_private_to_their_org(backend: Backend) {
    let mut env = TestEnv::on(backend).await;
    env.start_api().await;
    let alice = env.key("alice-corp").await;
    let bob = env.key("bob-corp").await;
    env.llm.script("marker-private", vec![]);
    let id = env.run(&alice, "marker-private: secret", json!({})).await;

    for (method, path) in [
        (Method::GET, format!("/v1/agents/{id}")),
        (Method::POST, format!("/v1/agents/{id}/cancel")),
        (Method::GET, "/v1/tools".to_owned()),
    ] {
        let (status, body) = env.request(method.clone(), &path, None, None).await;
        assert_eq!(
            error(status, &body),
            (401, "unauthorized".into()),
            "{method} {path}"
        );
        let (status, body) = env
            .request(method.clone(), &path, Some("aq_not_a_key"), None)
            .await;
        assert_eq!(
            error(status, &body),
            (401, "unauthorized".into()),
            "{method} {path}"
        );
    }
    let (status, body) = env
        .request(
            Method::POST,
            "/v1/agents/run",
            None,
            Some(json!({"messages": [{"role": "user", "content": "x"}]})),
        )
        .await;
    assert_eq!(error(status, &body), (401, "unauthorized".into()));

    // Another org's session looks exactly like a missing one.
    let missing = Uuid::now_v7();
    for path in [
        format!("/v1/agents/{id}"),
        format!("/v1/agents/{missing}"),
        "/v1/agents/not-a-uuid".into(),
    ] {
        let (status, body) = env.request(Method::GET, &path, Some(&bob), None).await;
        assert_eq!(
            (status, body.clone()),
            (
                404,
                json!({"error": {"code": "not_found", "message": "session not found"}})
            )
        );
    }
    let (status, body) = env
        .request(
            Method::POST,
            &format!("/v1/agents/{id}/cancel"),
            Some(&bob),
            None,
        )
        .await;
    assert_eq!(error(status, &body), (404, "not_found".into()));

    let (status, body) = env
        .request(Method::GET, &format!("/v1/agents/{id}"), Some(&alice), None)
        .await;
    assert_eq!((status, body["status"].clone()), (200, json!("pending")));

    let (status, body) = env
        .request(Method::GET, "/v1/tools", Some(&bob), None)
        .await;
    assert_eq!(status, 200);
    let tools: Vec<(&str, bool, bool)> = body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let flag = |name: &str| t[name].as_bool().unwrap();
            (
                t["name"].as_str().unwrap(),
                flag("requires_approval"),
                flag("idempotent"),
            )
        })
        .collect();
    assert_eq!(
        tools,
        vec![
            ("web_fetch", false, true),
            ("code_run", false, true),
            ("echo", false, true),
            ("echo_approved", true, false)
        ]
    );
}

async fn invalid_requests_are_refused_naming_the_field(backend: Backend) {
    let mut env = TestEnv::on(backend).await;
    env.start_api().await;
    let key = env.key("acme").await;
    let user = json!([{"role": "user", "content": "hi"}]);
    let cases = [
        (
            json!({"messages": []}),
            "messages: must contain at least one message",
        ),
        (
            json!({"messages": [{"role": "wizard", "content": "hi"}]}),
            "messages[0].role: unknown role \"wizard\"",
        ),
        (
            json!({"messages": [{"role": "user", "content": ""}]}),
            "messages[0].content: must not be empty",
        ),
        (
            json!({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}),
            "messages[1].role: expected \"assistant\"",
        ),
        (
            json!({"messages": user, "max_steps": 0}),
            "max_steps: must be between 1 and 50, got 0",
        ),
        (
            json!({"messages": user, "max_steps": 51}),
            "max_steps: must be between 1 and 50, got 51",
        ),
        (
            json!({"messages": user, "tools": ["echo", "rm_rf"]}),
            "tools[1]: unknown tool \"rm_rf\"",
        ),
        (
            json!({"messages": user, "model": ""}),
            "model: must be a non-empty model name",
        ),
        (
            json!({"messages": user, "max_steps": "ten"}),
            "max_steps: invalid type",
        ),
        (
            json!({"messages": user, "max_step": 3}),
            "unknown field `max_step`",
        ),
        (
            json!({"messages": [{"role": "user"}]}),
            "missing field `content`",
        ),
        (json!({}), "missing field `messages`"),
    ];
    for (body, expected) in cases {
        let (status, answer) = env
            .request(
                Method::POST,
                "/v1/agents/run",
                Some(&key),
                Some(body.clone()),
            )
            .await;
        assert_eq!(
            error(status, &answer),
            (422, "invalid_request".into()),
            "{body}"
        );
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(expected),
            "{body}: {message:?} lacks {expected:?}"
        );
    }

    let url = format!("{}/v1/agents/run", env.api_url);
    let send = |body: String, content_type: Option<&str>| {
        let mut request = env.http.post(&url).bearer_auth(&key).body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let (status, body) = send("{\"messages\": [".into(), Some("application/json")).await;
    assert_eq!(error(status, &body), (400, "malformed_json".into()));
    let (status, body) = send("{}".into(), None).await;
    assert_eq!(error(status, &body), (415, "unsupported_media_type".into()));
    let huge = format!(
        "{{\"messages\": [{{\"role\": \"user\", \"content\": \"{}\"}}]}}",
        "x".repeat(40_000)
    );
    let (status, body) = send(huge, Some("application/json")).await;
    assert_eq!(error(status, &body), (413, "payload_too_large".into()));

    let (status, body) = env
        .request(Method::GET, "/v1/nothing-here", Some(&key), None)
        .await;
    assert_eq!(error(status, &body), (404, "not_found".into()));
    let (status, body) = env
        .request(Method::DELETE, "/v1/agents/run", Some(&key), None)
        .await;
    assert_eq!(error(status, &body), (405, "method_not_allowed".into()));

    // Nothing invalid was stored.
    let (status, listed) = env
        .request(Method::GET, "/v1/agents", Some(&key), None)
        .await;
    assert_eq!((status, listed["sessions"].clone()), (200, json!([])));
}

async fn run_answers_202_with_a_poll_url(backend: Backend) {
    let mut env = TestEnv::on(backend).await;
    env.start_api().await;
    let key = env.key("acme").await;
    let (status, body) = env
        .request(
            Method::POST,
            "/v1/agents/run",
            Some(&key),
            Some(json!({"messages": [{"role": "user", "content": "hi"}], "model": "claude-haiku-4-5"})),
        )
        .await;
    assert_eq!(status, 202);
    let id = body["session_id"].as_str().unwrap();
    assert_eq!(
        body,
        json!({"session_id": id, "status": "pending", "poll_url": format!("/v1/agents/{id}")})
    );
    let session = env.session(&key, id.parse().unwrap()).await;
    assert_eq!(session.model, "claude-haiku-4-5");
}

async fn migrations_apply_down_and_up_again(backend: Backend) {
    let env = TestEnv::on(backend).await;
    let count = "SELECT count(*) FROM {catalog}
         WHERE {kind} AND {name} IN ('orgs', 'api_keys', 'sessions', 'steps', 'llm_calls')";
    match backend {
        Backend::Postgres => {
            let migrator = &agentq_shared::store::MIGRATOR;
            let tables = || {
                let query = count
                    .replace("{catalog}", "information_schema.tables")
                    .replace("{kind}", "table_schema = 'public'")
                    .replace("{name}", "table_name");
                sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(query)).fetch_one(env.pg())
            };
            assert_eq!(tables().await.unwrap(), 5);
            migrator
                .undo(env.pg(), 0)
                .await
                .expect("every migration reverts");
            assert_eq!(tables().await.unwrap(), 0);
            migrator
                .run(env.pg())
                .await
                .expect("migrations apply again");
        }
        Backend::Sqlite => {
            let migrator = &agentq_shared::store::SQLITE_MIGRATOR;
            let pool = sqlx::SqlitePool::connect(env.database_url()).await.unwrap();
            let tables = || {
                let query = count
                    .replace("{catalog}", "sqlite_master")
                    .replace("{kind}", "type = 'table'")
                    .replace("{name}", "name");
                sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(query)).fetch_one(&pool)
            };
            assert_eq!(tables().await.unwrap(), 5);
            migrator
                .undo(&pool, 0)
                .await
                .expect("every migration reverts");
            assert_eq!(tables().await.unwrap(), 0);
            migrator.run(&pool).await.expect("migrations apply again");
            pool.close().await;
        }
    }
    assert!(env.key("after-roundtrip").await.starts_with("aq_"));
}

/// Each org has its own bucket: past its burst it gets 429 `rate_limited` with `Retry-After`,
/// while another org is not slowed; an org's own limit (`agentq admin rate-limit`) replaces the
/// default once the API re-verifies its key.
async fn an_org_over_its_rate_gets_429_and_other_orgs_do_not(backend: Backend) {
    let mut env = TestEnv::on(backend).await;
    env.set("AGENTQ_RATE_LIMIT_PER_SEC", "2");
    env.set("AGENTQ_RATE_LIMIT_BURST", "5");
    env.set("AGENTQ_AUTH_CACHE_SECS", "1");
    env.start_api().await;
    let busy = env.key("busy-org").await;
    let calm = env.key("calm-org").await;
    let get = |key: String| {
        let request = env
            .http
            .get(format!("{}/v1/tools", env.api_url))
            .bearer_auth(key);
        async move {
            let response = request.send().await.unwrap();
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            (status, retry_after, body)
        }
    };
    let mut answers = Vec::new();
    for _ in 0..12 {
        answers.push(get(busy.clone()).await);
    }
    let passed = answers.iter().take_while(|(s, _, _)| *s == 200).count();
    assert!((5..12).contains(&passed), "{passed} passed before a 429");
    let (status, retry_after, body) = &answers[passed];
    assert_eq!(
        (*status, &body["error"]["code"]),
        (429, &json!("rate_limited"))
    );
    let retry_after = retry_after.expect("Retry-After on a 429");
    assert!((1..=2).contains(&retry_after), "Retry-After: {retry_after}");
    assert_eq!(get(calm.clone()).await.0, 200, "another org is not slowed");
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    assert_eq!(get(busy.clone()).await.0, 200, "back after Retry-After");

    // An org's own limit, set from the command line.
    let admin = |args: &[&str]| {
        let mut command = env.command("agentq");
        command.arg("admin").arg("rate-limit").args(args);
        async move { command.output().await.unwrap() }
    };
    let set = admin(&["--org", "calm-org", "--per-sec", "1", "--burst", "2"]).await;
    assert!(
        set.status.success(),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    let unknown = admin(&["--org", "nobody", "--per-sec", "1"]).await;
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no org is named \"nobody\""));
    // The API sees the new limit when it next verifies the key (AGENTQ_AUTH_CACHE_SECS=1).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let statuses: Vec<u16> = futures::future::join_all((0..4).map(|_| get(calm.clone())))
        .await
        .into_iter()
        .map(|(s, _, _)| s)
        .collect();
    // A burst of 2 (one more if the four straddle a refill, a second apart); the default's
    // burst of 5 would let all four through.
    let passed = statuses.iter().filter(|s| **s == 200).count();
    assert!((2..=3).contains(&passed), "a burst of 2: {statuses:?}");
    let back = admin(&["--org", "calm-org", "--default"]).await;
    assert!(
        back.status.success(),
        "{}",
        String::from_utf8_lossy(&back.stderr)
    );
}

/// Keys have a name and an expiry and are listed with their last use; a revoked key gets 401
/// within the key cache's time (`AGENTQ_AUTH_CACHE_SECS`, 1 s here), an expired one at once,
/// even in a process that still remembers it.
async fn keys_are_named_listed_revoked_and_expire(backend: Backend) {
    let mut env = TestEnv::on(backend).await;
    env.set("AGENTQ_AUTH_CACHE_SECS", "1");
    env.start_api().await;
    let (_, remembering) = env
        .start_another_api(&[("AGENTQ_AUTH_CACHE_SECS", "60")])
        .await;
    let admin = |args: &[&str]| {
        let mut command = env.command("agentq");
        command.arg("admin").args(args);
        async move {
            let output = command.output().await.unwrap();
            (
                output.status.success(),
                String::from_utf8_lossy(&output.stdout).into_owned(),
                String::from_utf8_lossy(&output.stderr).into_owned(),
            )
        }
    };
    let (ok, out, err) = admin(&[
        "create-key",
        "--org",
        "keyed",
        "--name",
        "ci-bot",
        "--expires-in-days",
        "30",
    ])
    .await;
    assert!(ok, "{err}");
    let key = out.lines().last().unwrap().to_owned();
    let key_id: Uuid = out.split_whitespace().nth(2).unwrap().parse().unwrap();
    let tools = |key: String, url: String| {
        let request = env.http.get(format!("{url}/v1/tools")).bearer_auth(key);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(tools(key.clone(), env.api_url.clone()).await, 200);

    let (ok, out, err) = admin(&["keys", "list", "--org", "keyed", "--json"]).await;
    assert!(ok, "{err}");
    let listed: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(listed.len(), 1, "{out}");
    let entry = &listed[0];
    assert_eq!(
        (
            &entry["id"],
            &entry["name"],
            &entry["prefix"],
            &entry["revoked_at"]
        ),
        (
            &json!(key_id),
            &json!("ci-bot"),
            &json!(&key[..9]),
            &Value::Null
        )
    );
    assert!(entry["last_used_at"].is_string(), "used: {entry}");
    let expires: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(entry["expires_at"].clone()).unwrap();
    let days = (expires - chrono::Utc::now()).num_hours();
    assert!((29 * 24..=30 * 24).contains(&days), "expires in {days} h");
    let (ok, table, _) = admin(&["keys", "list", "--org", "keyed"]).await;
    assert!(
        ok && table.contains("ci-bot") && table.contains("live"),
        "{table}"
    );

    // Revoked: refused within the cache's time.
    let (ok, _, err) = admin(&["keys", "revoke", &key_id.to_string()]).await;
    assert!(ok, "{err}");
    let revoked = std::time::Instant::now();
    while tools(key.clone(), env.api_url.clone()).await != 401 {
        assert!(
            revoked.elapsed() < Duration::from_secs(5),
            "still accepted {:?} after the revoke",
            revoked.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        revoked.elapsed() < Duration::from_millis(2500),
        "refused only after {:?} (bound: AGENTQ_AUTH_CACHE_SECS=1)",
        revoked.elapsed()
    );
    let (_, table, _) = admin(&["keys", "list", "--org", "keyed"]).await;
    assert!(table.contains("revoked"), "{table}");
    let (ok, _, err) = admin(&["keys", "revoke", &Uuid::now_v7().to_string()]).await;
    assert!(!ok && err.contains("no key has the id"), "{err}");
    let (ok, _, err) = admin(&["keys", "list", "--org", "nobody"]).await;
    assert!(!ok && err.contains("no org is named"), "{err}");

    // Expired: refused at once by the process that remembers keys for a minute.
    let (_, brief) = env
        .store
        .create_key(&agentq_shared::store::NewKey {
            org: "keyed".into(),
            name: Some("brief".into()),
            expires_at: Some(chrono::Utc::now() + chrono::Duration::milliseconds(1500)),
        })
        .await
        .unwrap();
    assert_eq!(tools(brief.clone(), remembering.clone()).await, 200);
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(tools(brief, remembering).await, 401, "expired");
}

on_both_backends!(
    keys_are_named_listed_revoked_and_expire,
    an_org_over_its_rate_gets_429_and_other_orgs_do_not,
    keys_are_required_and_sessions_are_private_to_their_org,
    invalid_requests_are_refused_naming_the_field,
    run_answers_202_with_a_poll_url,
    migrations_apply_down_and_up_again,
);
