//! The API's own description: `/openapi.json` covers every route, `/docs` renders it without the
//! network, and schemathesis (from PyPI) finds no server error and no answer that breaks the
//! documented schema, status codes or content types.

use std::path::PathBuf;
use std::time::Duration;

use agentq_cli::stand_in::Turn;
use agentq_shared::schemas::SessionStatus;
use pretty_assertions::assert_eq;
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::harness::TestEnv;

/// schemathesis from `$AGENTQ_VENV` (where deploy/ensure-services.sh installs it), else from PATH.
fn schemathesis() -> PathBuf {
    let venv = std::env::var_os("AGENTQ_VENV")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/agentq-venv"))
        });
    if let Some(path) = venv.map(|venv| venv.join("bin/schemathesis"))
        && path.exists()
    {
        return path;
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("schemathesis"))
        .find(|path| path.exists());
    on_path.unwrap_or_else(|| {
        panic!(
            "schemathesis is not installed. Install it with deploy/ensure-services.sh (a \
             virtualenv at ~/.cache/agentq-venv, or $AGENTQ_VENV), or put `schemathesis` on PATH"
        )
    })
}

#[tokio::test]
async fn the_description_covers_every_route_and_docs_need_no_network() {
    let mut env = TestEnv::new().await;
    env.start_api().await;
    let spec: Value = env
        .http
        .get(format!("{}/openapi.json", env.api_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(spec["openapi"], json!("3.1.0"));

    let mut documented: Vec<(String, String)> = Vec::new();
    // Client generators name a method after each operationId: one per operation, none twice.
    let mut operation_ids = std::collections::BTreeMap::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            documented.push((method.clone(), path.clone()));
            let id = operation["operationId"].as_str().unwrap_or_default();
            assert!(!id.is_empty(), "{method} {path} has no operationId");
            if let Some(other) = operation_ids.insert(id.to_owned(), format!("{method} {path}")) {
                panic!("operationId {id:?} names both {other} and {method} {path}");
            }
            let responses = operation["responses"].as_object().unwrap();
            let secured = operation.get("security").is_some_and(|s| s != &json!([]))
                || spec.get("security").is_some();
            assert!(
                !operation["summary"].as_str().unwrap_or("").is_empty()
                    || !operation["description"].as_str().unwrap_or("").is_empty(),
                "{method} {path} has no description"
            );
            if secured {
                assert!(responses.contains_key("401"), "{method} {path}: no 401");
            }
            if path.contains("{id}") {
                // Also what an id that is not a UUID gets (checked below).
                assert!(responses.contains_key("404"), "{method} {path}: no 404");
            }
            if method == "post" && operation.get("requestBody").is_some() {
                for code in ["400", "413", "415", "422"] {
                    assert!(responses.contains_key(code), "{method} {path}: no {code}");
                }
            }
        }
    }
    documented.sort();
    // Every route the API serves, except the description and its page themselves.
    let served = [
        ("get", "/healthz"),
        ("get", "/metrics"),
        ("get", "/readyz"),
        ("get", "/v1/agents"),
        ("get", "/v1/agents/{id}"),
        ("get", "/v1/agents/{id}/events"),
        ("get", "/v1/agents/{id}/webhooks"),
        ("get", "/v1/tools"),
        ("post", "/v1/agents/run"),
        ("post", "/v1/agents/{id}/approve"),
        ("post", "/v1/agents/{id}/cancel"),
    ];
    let mut served: Vec<(String, String)> = served
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    served.sort();
    assert_eq!(documented, served);
    assert!(
        spec["components"]["securitySchemes"]["bearer"]["scheme"] == json!("bearer"),
        "{:#}",
        spec["components"]
    );

    let key = env.key("acme").await;
    for path in [
        "/v1/agents/not-a-uuid",
        "/v1/agents/not-a-uuid/events",
        "/v1/agents/not-a-uuid/webhooks",
    ] {
        let (status, body) = env.request(Method::GET, path, Some(&key), None).await;
        assert_eq!((status, &body["error"]["code"]), (404, &json!("not_found")));
    }

    // The docs page is self-contained: no script, style or font from another host.
    let docs = env
        .http
        .get(format!("{}/docs", env.api_url))
        .send()
        .await
        .unwrap();
    assert_eq!(docs.status(), 200);
    assert!(
        docs.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let page = docs.text().await.unwrap();
    assert!(page.contains("/openapi.json"), "the page loads the spec");
    for needle in ["src=\"http", "href=\"http", "@import", "url(http", "//cdn"] {
        assert!(!page.contains(needle), "the docs page fetches {needle}…");
    }
}

#[tokio::test]
async fn schemathesis_finds_no_server_error_and_no_undocumented_answer() {
    let schemathesis = schemathesis();
    let (mut env, key) = TestEnv::running(&[]).await;
    // A finished session for the operations on one session, so they answer with a body too,
    // not only 404; then no worker, so sessions schemathesis starts stay put.
    env.llm.script(
        "marker-openapi",
        vec![
            Turn::tool("echo", json!({"text": "one"})).with_text("thinking"),
            Turn::answer("done"),
        ],
    );
    let id = env
        .run(&key, "marker-openapi: go", json!({"tools": ["echo"]}))
        .await;
    env.wait_status(&key, id, SessionStatus::Completed).await;
    env.terminate(1).await;
    let (status, _) = env
        .request(Method::GET, &format!("/v1/agents/{id}"), Some(&key), None)
        .await;
    assert_eq!(status, 200);

    let dir = std::env::temp_dir().join(format!("agentq-schemathesis-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("schemathesis.toml");
    std::fs::write(
        &config,
        format!(
            "headers = {{ Authorization = \"Bearer {key}\" }}\n\n\
             [[operations]]\n\
             include-path-regex = \"\\\\{{id\\\\}}\"\n\
             parameters = {{ id = \"{id}\" }}\n"
        ),
    )
    .unwrap();
    let output = tokio::time::timeout(
        Duration::from_secs(600),
        tokio::process::Command::new(&schemathesis)
            .current_dir(&dir)
            .arg("--config-file")
            .arg(&config)
            .arg("run")
            .arg(format!("{}/openapi.json", env.api_url))
            .args([
                "--checks",
                "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance",
                // No --max-time: it makes fuzzing repeat until the time is spent, and an
                // operation the coverage phase skips may then never be tested.
                "--max-examples",
                "25",
                "--generation-database",
                "none",
                "--request-timeout",
                "65",
            ])
            .env("NO_COLOR", "1")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("schemathesis finishes within 600 s")
    .expect("schemathesis runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        output.status.success(),
        "schemathesis found problems ({}):\n{stdout}\n{stderr}",
        output.status
    );
    // It really exercised the API: every operation, and many cases.
    assert!(
        stdout.contains("Selected: 11/11") && stdout.contains("Tested: 11\n"),
        "schemathesis did not test all 11 operations:\n{stdout}"
    );
}
