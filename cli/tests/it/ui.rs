//! The session viewer at `/ui`, in Debian's headless Chromium driven by playwright-core
//! (`cli/tests/ui/viewer.mjs`): sign in, start a session and watch it finish live, approve a held
//! sql_query call from the page after the event stream dropped and came back, a web page
//! holding `<script>` shown as text, and a session's webhook messages as they are delivered; on
//! both back ends. Screenshots go to `target/ui-screenshots/{postgres,sqlite}/`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use agentq_cli::stand_in::Turn;
use agentq_shared::schemas::SessionStatus;
use pretty_assertions::assert_eq;
use reqwest::Method;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::hardening::CountingPage;
use crate::harness::{Backend, TestEnv};
use crate::sql::Target;

const SETUP: &str = "run deploy/ensure-services.sh --browser (Debian's chromium, Node.js and \
                     cli/tests/ui's npm packages)";

fn ui_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui")
}

/// Node.js, playwright-core and Chromium, or a failure saying how to get them.
fn require_browser() {
    let node = std::process::Command::new("node").arg("--version").output();
    assert!(
        node.is_ok_and(|o| o.status.success()),
        "Node.js is missing: {SETUP}"
    );
    assert!(
        ui_dir().join("node_modules/playwright-core").exists(),
        "playwright-core is missing in {}: {SETUP}",
        ui_dir().display()
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "{chromium} is missing: {SETUP}"
    );
}

async fn the_viewer_runs_watches_and_approves_in_a_browser(backend: Backend) {
    require_browser();
    let target = Target::new().await;
    let page = CountingPage::serve(
        "text/html",
        "<html><body><h1>Notes</h1><p>Read <b>this</b>: \
         &lt;script&gt;window.agentqPwned = 1&lt;/script&gt;</p>\
         <script>window.agentqPwned = 1</script></body></html>",
    )
    .await;
    let mut env = TestEnv::on(backend).await;
    env.set("AGENTQ_WEB_FETCH_ALLOW", "127.0.0.1/32");
    env.set("AGENTQ_SQL_TOOL_URL", &target.reader_url());
    let mut api = env.start_api().await;
    env.start_worker();
    let key = env.key("acme").await;
    env.llm.script(
        "marker-ui-run",
        vec![
            Turn::tool("echo", json!({"text": "hello"})).with_text("I will echo it."),
            Turn::answer("The echo said hello."),
        ],
    );
    env.llm.script(
        "marker-ui-sql",
        vec![
            Turn::tool(
                "sql_query",
                json!({"query": "SELECT name, price FROM items WHERE price > $1 ORDER BY price DESC",
                       "params": [1]}),
            ),
            Turn::answer("pear is the priciest"),
        ],
    );
    env.llm.script(
        "marker-ui-web",
        vec![
            Turn::tool("web_fetch", json!({"url": page.url})),
            Turn::answer("read it"),
        ],
    );
    env.llm
        .script("marker-ui-many", vec![Turn::answer("one of many")]);
    env.llm.script(
        "marker-ui-held",
        vec![Turn::tool("echo_approved", json!({"text": "held"}))],
    );

    // The held session's webhook receiver (127.0.0.1 is open to the SSRF policy here).
    let hook = {
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(|| async { axum::http::StatusCode::NO_CONTENT }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{address}/hook")
    };
    let shots = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/ui-screenshots")
        .join(format!("{backend:?}").to_lowercase());
    let mut node = tokio::process::Command::new("node")
        .arg(ui_dir().join("viewer.mjs"))
        .current_dir(ui_dir())
        .env("AGENTQ_UI_URL", &env.api_url)
        .env("AGENTQ_UI_KEY", &key)
        .env("AGENTQ_UI_SHOTS", &shots)
        .env("AGENTQ_UI_HOOK", &hook)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node starts");
    let mut stdin = node.stdin.take().expect("stdin");
    let mut lines = BufReader::new(node.stdout.take().expect("stdout")).lines();
    let mut stdout = String::new();
    while let Some(line) = tokio::time::timeout(Duration::from_secs(180), lines.next_line())
        .await
        .expect("the browser run went quiet for 3 minutes")
        .expect("node's output")
    {
        stdout.push_str(&line);
        stdout.push('\n');
        if line == "drop-the-stream" {
            // The page follows a session waiting for approval: restart the API under it.
            env.kill(api).await;
            api = env.start_api().await;
            stdin.write_all(b"restarted\n").await.expect("node reads");
        }
    }
    let mut stderr = String::new();
    if let Some(mut err) = node.stderr.take() {
        let _ = err.read_to_string(&mut stderr).await;
    }
    let status = node.wait().await.expect("node exits");
    assert!(
        status.success(),
        "the browser run failed:\n{stdout}\n{stderr}"
    );

    // What the page did is what the API holds.
    let (status, listed) = env
        .request(Method::GET, "/v1/agents?limit=100", Some(&key), None)
        .await;
    assert_eq!(status, 200);
    let mut outcomes: Vec<(String, String)> = Vec::new();
    let sessions = listed["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 24, "four from the page, twenty for paging");
    for s in sessions {
        let id = s["session_id"].as_str().unwrap().parse().unwrap();
        let session = env.wait_finished(&key, id).await;
        if session.final_answer.as_deref() == Some("one of many") {
            continue;
        }
        let approval = session.steps.first().and_then(|s| s.approval.clone());
        outcomes.push((
            session.status.as_str().to_owned(),
            approval.map_or(String::new(), |a| {
                format!("{}: {}", a.approved, a.reason.unwrap_or_default())
            }),
        ));
        if session.status == SessionStatus::Completed {
            assert!(session.final_answer.is_some());
        }
    }
    outcomes.sort();
    assert_eq!(
        outcomes,
        [
            ("cancelled".to_owned(), String::new()),
            ("completed".to_owned(), String::new()),
            ("completed".to_owned(), String::new()),
            ("completed".to_owned(), "true: read-only, fine".to_owned()),
        ]
    );
    assert_eq!(page.hits(), 1, "the page was fetched once");
    for shot in ["list", "timeline", "approval", "timeline-phone"] {
        let file = shots.join(format!("{shot}.png"));
        assert!(file.exists(), "{} was not written", file.display());
    }
}

#[tokio::test]
async fn the_viewer_is_served_with_a_strict_policy() {
    let mut env = TestEnv::new().await;
    env.start_api().await;
    for (path, content_type) in [
        ("/ui", "text/html; charset=utf-8"),
        ("/ui/app.js", "text/javascript; charset=utf-8"),
        ("/ui/app.css", "text/css; charset=utf-8"),
    ] {
        let response = env
            .http
            .get(format!("{}{path}", env.api_url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        assert_eq!(header("content-type"), content_type, "{path}");
        assert_eq!(
            header("content-security-policy"),
            agentq_api::routes::ui::CONTENT_SECURITY_POLICY
        );
        assert_eq!(header("x-content-type-options"), "nosniff");
    }
    // No inline script or style the policy would have to allow; nothing from elsewhere.
    let text = |path: &str| {
        let request = env.http.get(format!("{}{path}", env.api_url));
        async move { request.send().await.unwrap().text().await.unwrap() }
    };
    let html = text("/ui").await;
    assert!(!html.contains("<script>") && !html.contains("<style"));
    let handlers = html
        .split_whitespace()
        .any(|word| word.starts_with("on") && word.contains('='));
    assert!(!handlers, "an inline event handler in {html}");
    assert!(!html.contains("http://") && !html.contains("https://"));
    let script = text("/ui/app.js").await;
    assert!(!script.contains("innerHTML") && !script.contains("insertAdjacentHTML"));
    assert!(!script.contains("eval("));
    let slash = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("{}/ui/", env.api_url))
        .send()
        .await
        .unwrap();
    assert_eq!(slash.status(), 308);
}

on_both_backends!(the_viewer_runs_watches_and_approves_in_a_browser);
