//! Webhooks end to end, on both back ends: a receiver on 127.0.0.2 (opened by
//! `AGENTQ_WEB_FETCH_ALLOW`, as a private target must be) verifies the Standard Webhooks
//! signature of every message with the org's secret, computed here independently of agentq's
//! signing code. A receiver that fails twice gets the message once, after three recorded
//! attempts; a held receiver holds up no step; private URLs are refused without a connection.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agentq_cli::stand_in::Turn;
use agentq_shared::schemas::{
    SessionStatus, WebhookDelivery, WebhookDeliveryList, WebhookDeliveryState, WebhookEvent,
    WebhookEventType,
};
use agentq_shared::store::{WebhookAttemptRecord, WebhookDue, WebhookNext};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use pretty_assertions::assert_eq;
use reqwest::Method;
use serde_json::json;
use sha2::Sha256;
use uuid::Uuid;

use crate::harness::{Backend, TestEnv, WAIT};

/// What the receiver was sent, and what it answered.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    id: String,
    timestamp: String,
    signature: String,
    body: Vec<u8>,
    answered: u16,
}

#[derive(Default)]
struct Inner {
    received: Mutex<Vec<Received>>,
    /// Requests per path so far (for `/flaky`: the first two fail).
    hits: Mutex<HashMap<String, usize>>,
    /// Requests to `/held/...` that arrived (they are never answered).
    held: AtomicUsize,
}

/// An HTTP receiver on 127.0.0.2: `/flaky/...` answers 500 to its first two requests, then
/// 200; `/held/...` never answers; anything else answers 200.
struct Receiver {
    base: String,
    inner: Arc<Inner>,
}

impl Receiver {
    async fn start() -> Self {
        let inner = Arc::new(Inner::default());
        let app = axum::Router::new()
            .fallback(receive)
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            base: format!("http://{address}"),
            inner,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn received(&self, path: &str) -> Vec<Received> {
        let received = self.inner.received.lock().unwrap();
        received
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// Waits until `path` got `n` requests; returns them.
    async fn wait_for(&self, path: &str, n: usize) -> Vec<Received> {
        let deadline = Instant::now() + WAIT;
        loop {
            let received = self.received(path);
            if received.len() >= n {
                return received;
            }
            assert!(
                Instant::now() < deadline,
                "{path} got {} of {n} messages: {received:#?}",
                received.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn receive(
    State(inner): State<Arc<Inner>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let path = uri.path().to_owned();
    let hit = {
        let mut hits = inner.hits.lock().unwrap();
        let hit = hits.entry(path.clone()).or_default();
        *hit += 1;
        *hit
    };
    if path.starts_with("/held") {
        inner.held.fetch_add(1, Ordering::SeqCst);
        std::future::pending::<()>().await;
    }
    let status = if path.starts_with("/flaky") && hit <= 2 {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    };
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    inner.received.lock().unwrap().push(Received {
        path,
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
        body: body.to_vec(),
        answered: status.as_u16(),
    });
    status
}

/// The Standard Webhooks check a receiver makes: the timestamp is recent, and one of the `v1`
/// signatures is the base64 HMAC-SHA256, keyed by the secret's decoded bytes, of
/// `{id}.{timestamp}.{body}`.
fn verify(secret: &str, id: &str, timestamp: &str, body: &[u8], signatures: &str) -> bool {
    let Ok(sent_at) = timestamp.parse::<i64>() else {
        return false;
    };
    if (chrono::Utc::now().timestamp() - sent_at).abs() > 5 * 60 {
        return false;
    }
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").expect("a whsec_ secret"))
        .expect("base64");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    let expected = STANDARD.encode(mac.finalize().into_bytes());
    signatures
        .split(' ')
        .filter_map(|s| s.strip_prefix("v1,"))
        .any(|s| s == expected)
}

/// Every message verifies with `secret`, and would not had its body been changed.
fn assert_signed(secret: &str, messages: &[Received]) {
    for m in messages {
        assert!(
            verify(secret, &m.id, &m.timestamp, &m.body, &m.signature),
            "{m:#?} does not verify"
        );
        let mut tampered = m.body.clone();
        tampered[0] = b' ';
        assert!(
            !verify(secret, &m.id, &m.timestamp, &tampered, &m.signature),
            "a changed body still verifies"
        );
        assert!(
            !verify(secret, &m.id, "1", &m.body, &m.signature),
            "a stale timestamp"
        );
    }
}

fn event(message: &Received) -> WebhookEvent {
    serde_json::from_slice(&message.body).expect("a WebhookEvent")
}

/// `agentq admin webhook ARGS`: its output's lines (the secret last), or its error.
async fn admin_webhook(env: &TestEnv, args: &[&str]) -> Result<Vec<String>, String> {
    let output = env
        .command("agentq")
        .args(["admin", "webhook"])
        .args(args)
        .output()
        .await
        .unwrap();
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(str::to_owned)
            .collect())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

async fn secret(env: &TestEnv, org: &str) -> String {
    let lines = admin_webhook(env, &["--org", org]).await.unwrap();
    let secret = lines.last().cloned().unwrap_or_default();
    assert!(secret.starts_with("whsec_"), "{lines:?}");
    secret
}

async fn deliveries(env: &TestEnv, key: &str, id: Uuid) -> Vec<WebhookDelivery> {
    let (status, body) = env
        .request(
            Method::GET,
            &format!("/v1/agents/{id}/webhooks"),
            Some(key),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_value::<WebhookDeliveryList>(body)
        .unwrap()
        .deliveries
}

/// Polls the session's webhook messages until `done` holds for them.
async fn wait_deliveries(
    env: &TestEnv,
    key: &str,
    id: Uuid,
    what: &str,
    done: impl Fn(&[WebhookDelivery]) -> bool,
) -> Vec<WebhookDelivery> {
    let deadline = Instant::now() + WAIT;
    loop {
        let deliveries = deliveries(env, key, id).await;
        if done(&deliveries) {
            return deliveries;
        }
        assert!(
            Instant::now() < deadline,
            "the webhook messages never became {what}: {deliveries:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const OPEN_RECEIVER: [(&str, &str); 2] = [
    ("AGENTQ_WEB_FETCH_ALLOW", "127.0.0.2/32"),
    ("AGENTQ_WEBHOOK_POLL_MS", "100"),
];

async fn approve(env: &TestEnv, key: &str, id: Uuid) {
    let (status, body) = env
        .request(
            Method::POST,
            &format!("/v1/agents/{id}/approve"),
            Some(key),
            Some(json!({"step": 0, "approved": true})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
}

/// A session that waits for approval and completes, one that fails, one cancelled while it
/// waits, and one that names no URL (its org's default applies): each event arrives once,
/// signed, announcing the session as the listing shows it.
async fn each_event_arrives_signed(backend: Backend) {
    let (env, key) = TestEnv::running_on(backend, &OPEN_RECEIVER).await;
    let receiver = Receiver::start().await;
    let secret = secret(&env, "acme").await;
    let approval = vec![
        Turn::tool("echo_approved", json!({"text": "guarded"})),
        Turn::answer("all done"),
    ];
    env.llm.script("marker-approved", approval.clone());
    env.llm.script("marker-cancelled", approval);
    env.llm.script(
        "marker-fails",
        vec![Turn::tool("echo", json!({"text": "again"}))],
    );
    let hooked = |path: &str, extra: serde_json::Value| {
        let mut body = json!({"webhook_url": receiver.url(path)});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };

    let approved = env
        .run(
            &key,
            "marker-approved: go",
            hooked("/approved", json!({"tools": ["echo_approved"]})),
        )
        .await;
    env.wait_awaiting_approval(&key, approved).await;
    approve(&env, &key, approved).await;
    env.wait_status(&key, approved, SessionStatus::Completed)
        .await;

    let fails = env
        .run(
            &key,
            "marker-fails: go",
            hooked("/fails", json!({"tools": ["echo"], "max_steps": 1})),
        )
        .await;
    env.wait_status(&key, fails, SessionStatus::Failed).await;

    let cancelled = env
        .run(
            &key,
            "marker-cancelled: go",
            hooked("/cancelled", json!({"tools": ["echo_approved"]})),
        )
        .await;
    env.wait_awaiting_approval(&key, cancelled).await;
    assert_eq!(env.cancel(&key, cancelled).await.0, 202);

    let org_url = receiver.url("/org-default");
    let lines = admin_webhook(&env, &["--org", "acme", "--url", &org_url])
        .await
        .unwrap();
    assert_eq!(
        lines.last(),
        Some(&secret),
        "setting the URL keeps the secret"
    );
    let by_default = env.run(&key, "plain question", json!({})).await;
    env.wait_status(&key, by_default, SessionStatus::Completed)
        .await;

    // What each receiver path got, ordered by the event each message announces.
    let by_event = |mut messages: Vec<Received>| {
        messages.sort_by_key(|m| event(m).timestamp);
        messages
    };
    let cases = [
        (
            approved,
            "/approved",
            vec![
                WebhookEventType::AwaitingApproval,
                WebhookEventType::Completed,
            ],
        ),
        (fails, "/fails", vec![WebhookEventType::Failed]),
        (
            cancelled,
            "/cancelled",
            vec![
                WebhookEventType::AwaitingApproval,
                WebhookEventType::Cancelled,
            ],
        ),
        (
            by_default,
            "/org-default",
            vec![WebhookEventType::Completed],
        ),
    ];
    for (id, path, types) in cases {
        let messages = by_event(receiver.wait_for(path, types.len()).await);
        assert_signed(&secret, &messages);
        let events: Vec<WebhookEvent> = messages.iter().map(event).collect();
        assert_eq!(
            events.iter().map(|e| e.event_type).collect::<Vec<_>>(),
            types,
            "{path}"
        );
        let session = env.session(&key, id).await;
        let statuses: Vec<SessionStatus> = events.iter().map(|e| e.data.status).collect();
        let expected: Vec<SessionStatus> = types
            .iter()
            .map(|t| match t {
                WebhookEventType::AwaitingApproval => SessionStatus::AwaitingApproval,
                _ => session.status,
            })
            .collect();
        assert_eq!(statuses, expected, "{path}");
        for e in &events {
            assert_eq!(
                (e.data.session_id, e.data.model.as_str()),
                (id, session.model.as_str())
            );
        }
        let last = events.last().unwrap();
        assert_eq!(
            (last.data.steps, last.data.error.clone()),
            (session.totals.steps, session.error.clone()),
            "{path}: the ending's summary"
        );

        // The same messages, as the session lists them: one attempt each, answered 200.
        let listed = wait_deliveries(&env, &key, id, "delivered", |d| {
            d.len() == types.len() && d.iter().all(|d| d.state == WebhookDeliveryState::Delivered)
        })
        .await;
        let ids: Vec<&str> = messages.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(
            listed
                .iter()
                .map(|d| d.webhook_id.as_str())
                .collect::<Vec<_>>(),
            ids
        );
        for delivery in &listed {
            assert_eq!(delivery.url, receiver.url(path));
            assert_eq!(
                delivery
                    .attempts
                    .iter()
                    .map(|a| (a.attempt, a.status_code, a.error.clone()))
                    .collect::<Vec<_>>(),
                vec![(1, Some(200), None)]
            );
            assert!(delivery.finished_at.is_some() && delivery.next_attempt_at.is_none());
        }
    }
    let failed = event(&receiver.received("/fails")[0]);
    assert_eq!(
        failed.data.error.map(|e| e.code.as_str().to_owned()),
        Some("max_steps_exceeded".to_owned())
    );

    // Another org sees nothing of them.
    let other = env.key("other-org").await;
    let (status, _) = env
        .request(
            Method::GET,
            &format!("/v1/agents/{approved}/webhooks"),
            Some(&other),
            None,
        )
        .await;
    assert_eq!(status, 404);
}

/// A receiver that answers 500 twice and then 200 gets the message exactly once as a success:
/// three attempts, recorded, the same webhook-id and body each time.
async fn a_failing_receiver_gets_the_message_once_after_three_attempts(backend: Backend) {
    let mut vars = OPEN_RECEIVER.to_vec();
    vars.push(("AGENTQ_WEBHOOK_RETRY_SCHEDULE", "1,1,1"));
    let (env, key) = TestEnv::running_on(backend, &vars).await;
    let receiver = Receiver::start().await;
    let id = env
        .run(
            &key,
            "a question",
            json!({"webhook_url": receiver.url("/flaky")}),
        )
        .await;
    env.wait_status(&key, id, SessionStatus::Completed).await;
    let listed = wait_deliveries(&env, &key, id, "settled", |d| {
        d.len() == 1 && d[0].state != WebhookDeliveryState::Pending
    })
    .await;
    let delivery = &listed[0];
    assert_eq!(
        (delivery.state, delivery.event_type),
        (WebhookDeliveryState::Delivered, WebhookEventType::Completed)
    );
    assert_eq!(
        delivery
            .attempts
            .iter()
            .map(|a| (a.attempt, a.status_code))
            .collect::<Vec<_>>(),
        vec![(1, Some(500)), (2, Some(500)), (3, Some(200))]
    );

    let messages = receiver.received("/flaky");
    assert_eq!(
        messages.iter().map(|m| m.answered).collect::<Vec<_>>(),
        vec![500, 500, 200],
        "exactly one success"
    );
    assert!(
        messages
            .iter()
            .all(|m| m.id == delivery.webhook_id && m.body == messages[0].body)
    );
    assert_signed(&secret(&env, "acme").await, &messages);
}

/// A receiver that never answers holds up no step: the session waits for approval, is approved
/// and completes while the first attempt at its awaiting_approval message is still waiting for
/// an answer (nothing recorded yet: a step that waited on it would have seen it end first);
/// each attempt then ends at the timeout and is recorded so.
async fn a_receiver_that_never_answers_holds_up_no_step(backend: Backend) {
    let mut vars = OPEN_RECEIVER.to_vec();
    vars.extend([
        // Far longer than the rest of the session takes once approved.
        ("AGENTQ_WEBHOOK_TIMEOUT_SECS", "8"),
        ("AGENTQ_WEBHOOK_RETRY_SCHEDULE", "1"),
    ]);
    let (env, key) = TestEnv::running_on(backend, &vars).await;
    let receiver = Receiver::start().await;
    env.llm.script(
        "marker-held",
        vec![
            Turn::tool("echo_approved", json!({"text": "guarded"})),
            Turn::answer("done anyway"),
        ],
    );
    let id = env
        .run(
            &key,
            "marker-held: go",
            json!({"tools": ["echo_approved"], "webhook_url": receiver.url("/held")}),
        )
        .await;
    env.wait_awaiting_approval(&key, id).await;
    // The awaiting_approval message reached the receiver, which holds it.
    let deadline = Instant::now() + WAIT;
    while receiver.inner.held.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "no message reached the receiver");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    approve(&env, &key, id).await;
    let session = env.wait_status(&key, id, SessionStatus::Completed).await;
    assert_eq!(session.final_answer.as_deref(), Some("done anyway"));
    let waiting = deliveries(&env, &key, id).await;
    assert_eq!(
        waiting
            .iter()
            .map(|d| (d.event_type, d.state, d.attempts.len()))
            .collect::<Vec<_>>(),
        vec![
            (
                WebhookEventType::AwaitingApproval,
                WebhookDeliveryState::Pending,
                0
            ),
            (
                WebhookEventType::Completed,
                WebhookDeliveryState::Pending,
                0
            ),
        ],
        "the session ended while its first message was still unanswered"
    );
    assert!(
        receiver.received("/held").is_empty(),
        "the receiver never answered"
    );

    let listed = wait_deliveries(&env, &key, id, "tried once each", |d| {
        d.len() == 2 && d.iter().all(|d| !d.attempts.is_empty())
    })
    .await;
    for delivery in &listed {
        let first = &delivery.attempts[0];
        assert_eq!(
            (first.status_code, first.error.as_deref()),
            (
                None,
                Some("timed out after 8s (AGENTQ_WEBHOOK_TIMEOUT_SECS)")
            )
        );
    }
}

/// A TCP listener on 127.0.0.2 that counts the connections it accepts.
async fn counting_listener() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    (address, accepted)
}

/// A webhook URL must pass web_fetch's SSRF policy: loopback, private, link-local and
/// internal-name URLs are refused with 400 `invalid_webhook_url` (no session made, no
/// connection tried), and so are URLs that are not http(s) or too long; the allowlist opens a
/// private target, and the sender checks again at each attempt with its own lists.
async fn private_webhook_urls_are_refused_unless_allowed(backend: Backend) {
    let (mut env, key) = TestEnv::running_on(backend, &[("AGENTQ_WEBHOOK_POLL_MS", "100")]).await;
    let (address, accepted) = counting_listener().await;
    let port = address.port();
    let huge = format!("https://example.com/{}", "a".repeat(3000));
    let refused = [
        (
            format!("http://{address}/hook"),
            "127.0.0.2 is loopback (127.0.0.0/8)",
        ),
        (
            format!("http://0x7f000002:{port}/"),
            "127.0.0.2 is loopback",
        ),
        (
            format!("http://localhost:{port}/"),
            "localhost is a loopback name",
        ),
        (format!("http://[::1]:{port}/"), "::1 is loopback"),
        (
            format!("http://[::ffff:127.0.0.2]:{port}/"),
            "(IPv4-mapped 127.0.0.2) is loopback",
        ),
        ("http://10.0.0.1/hook".to_owned(), "10.0.0.1 is private"),
        (
            "http://192.168.1.20/hook".to_owned(),
            "192.168.1.20 is private",
        ),
        (
            "http://169.254.169.254/latest/meta-data/".to_owned(),
            "link-local (cloud metadata)",
        ),
        (
            "http://metadata.google.internal/".to_owned(),
            "a private-use name",
        ),
        (
            "file:///etc/passwd".to_owned(),
            "must be an http or https URL, not \"file\"",
        ),
        (
            "gopher://example.com/".to_owned(),
            "must be an http or https URL, not \"gopher\"",
        ),
        ("not a url".to_owned(), "webhook_url is not a URL"),
        ("http://".to_owned(), "webhook_url is not a URL"),
        (
            "https://user:secret@example.com/".to_owned(),
            "the URL carries credentials",
        ),
        (huge, "at most 2048 are accepted"),
    ];
    for (url, why) in &refused {
        let (status, body) = env
            .request(
                Method::POST,
                "/v1/agents/run",
                Some(&key),
                Some(json!({"messages": [{"role": "user", "content": "hi"}], "webhook_url": url})),
            )
            .await;
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("invalid_webhook_url")),
            "{url}: {body}"
        );
        assert!(
            message.contains(why),
            "{url}: {message:?} does not say {why:?}"
        );
    }
    let (_, listed) = env
        .request(Method::GET, "/v1/agents", Some(&key), None)
        .await;
    assert_eq!(
        listed["sessions"],
        json!([]),
        "no refused run made a session"
    );

    // An org's default URL is checked the same way.
    let error = admin_webhook(
        &env,
        &["--org", "acme", "--url", &format!("http://{address}/")],
    )
    .await
    .expect_err("a loopback default is refused");
    assert!(error.contains("127.0.0.2 is loopback"), "{error}");

    // An API whose allowlist opens 127.0.0.2 accepts the URL; the worker's lists don't open
    // it, so its sender refuses the message at the attempt, still without connecting.
    let (_, open_api) = env
        .start_another_api(&[("AGENTQ_WEB_FETCH_ALLOW", "127.0.0.2/32")])
        .await;
    let created = env
        .http
        .post(format!("{open_api}/v1/agents/run"))
        .bearer_auth(&key)
        .json(&json!({"messages": [{"role": "user", "content": "hi"}],
                      "webhook_url": format!("http://{address}/hook")}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 202);
    let id: Uuid = created.json::<serde_json::Value>().await.unwrap()["session_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    env.wait_status(&key, id, SessionStatus::Completed).await;
    let listed = wait_deliveries(&env, &key, id, "failed", |d| {
        d.len() == 1 && d[0].state == WebhookDeliveryState::Failed
    })
    .await;
    let errors: Vec<Option<String>> = listed[0].attempts.iter().map(|a| a.error.clone()).collect();
    assert_eq!(
        errors,
        vec![Some(
            "refused: 127.0.0.2 is loopback (127.0.0.0/8); set AGENTQ_WEB_FETCH_ALLOW to open \
             private targets on purpose"
                .to_owned()
        )],
        "refused at once, not retried"
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 0, "nothing connected");
    env.set("AGENTQ_WEB_FETCH_ALLOW", "127.0.0.2/32");
    let lines = admin_webhook(
        &env,
        &["--org", "acme", "--url", &format!("http://{address}/")],
    )
    .await
    .unwrap();
    assert_eq!(
        lines[0],
        format!("org acme: webhook events go to http://{address}/ unless a run names its own")
    );
}

/// Claiming is exclusive: of two claims at once only one gets a due message, and a claimed
/// message is not due again within its lease; only the attempt holding the latest claim
/// settles it. (No worker runs here: the test is the sender.) A session cancelled while no
/// worker holds it gets its `session.cancelled` message from the same transaction.
async fn claims_are_exclusive_and_only_the_latest_attempt_settles(backend: Backend) {
    let mut env = TestEnv::on(backend).await;
    env.set("AGENTQ_WEB_FETCH_ALLOW", "127.0.0.2/32");
    env.start_api().await;
    let key = env.key("acme").await;
    let id = env
        .run(
            &key,
            "never runs",
            json!({"webhook_url": "http://127.0.0.2:9/hook"}),
        )
        .await;
    assert_eq!(env.cancel(&key, id).await.0, 202);

    let lease = Duration::from_secs(60);
    let (first, second) = tokio::join!(
        env.store.claim_webhooks(10, lease),
        env.store.claim_webhooks(10, lease)
    );
    let mut claimed: Vec<WebhookDue> = first.unwrap();
    claimed.extend(second.unwrap());
    assert_eq!(claimed.len(), 1, "{claimed:#?}");
    let due = claimed.remove(0);
    assert_eq!(
        (
            due.session_id,
            due.event_type,
            due.attempt,
            due.url.as_str()
        ),
        (
            id,
            WebhookEventType::Cancelled,
            1,
            "http://127.0.0.2:9/hook"
        )
    );
    assert_eq!(env.store.claim_webhooks(10, lease).await.unwrap(), vec![]);

    // The body is built once and kept: it announces the cancellation.
    let body = env.store.webhook_body(&due).await.unwrap();
    let event: WebhookEvent = serde_json::from_value(body.clone()).unwrap();
    assert_eq!(
        (event.event_type, event.data.session_id, event.data.status),
        (WebhookEventType::Cancelled, id, SessionStatus::Cancelled)
    );

    // An attempt that is no longer the latest claim is recorded but settles nothing.
    let attempt = |n: u32, next: WebhookNext| WebhookAttemptRecord {
        session_id: id,
        event_seq: due.event_seq,
        attempt: n,
        at: chrono::Utc::now(),
        status_code: Some(200),
        error: None,
        duration_ms: 1,
        next,
    };
    env.store
        .record_webhook_attempt(&attempt(2, WebhookNext::Delivered))
        .await
        .unwrap();
    let listed = deliveries(&env, &key, id).await;
    assert_eq!(
        (listed[0].state, listed[0].attempts.len()),
        (WebhookDeliveryState::Pending, 1)
    );
    env.store
        .record_webhook_attempt(&attempt(1, WebhookNext::Delivered))
        .await
        .unwrap();
    let listed = deliveries(&env, &key, id).await;
    assert_eq!(listed[0].state, WebhookDeliveryState::Delivered);
    assert_eq!(
        listed[0].webhook_id,
        format!("msg_{}_{}", id.simple(), due.event_seq)
    );
    // A delivered message is never claimed again, and its body stays the one first built.
    let again = WebhookDue {
        payload: None,
        ..due.clone()
    };
    assert_eq!(env.store.webhook_body(&again).await.unwrap(), body);
    assert_eq!(
        env.store.claim_webhooks(10, Duration::ZERO).await.unwrap(),
        vec![]
    );
}

on_both_backends!(
    each_event_arrives_signed,
    a_failing_receiver_gets_the_message_once_after_three_attempts,
    a_receiver_that_never_answers_holds_up_no_step,
    private_webhook_urls_are_refused_unless_allowed,
    claims_are_exclusive_and_only_the_latest_attempt_settles,
);
