//! The `agentq` command line and the processes' configuration errors.

use std::process::Stdio;

use agentq_cli::stand_in::Turn;
use pretty_assertions::assert_eq;
use serde_json::{Value, json};

use crate::harness::{Backend, TestEnv};

async fn create_key_then_run_and_follow_a_session(backend: Backend) {
    let mut env = TestEnv::on(backend).await;
    env.start_api().await;
    env.start_worker();

    let output = env
        .command("agentq")
        .args(["admin", "create-key", "--org", "cli-org"])
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    let key = stdout.lines().last().unwrap().to_owned();
    assert!(key.starts_with("aq_") && key.len() > 40, "{stdout}");

    // No script for this question: the stand-in behaviour calls echo, then answers.
    let output = env
        .command("agentq")
        .env("AGENTQ_API_KEY", &key)
        .args([
            "run",
            "What does echo say?",
            "--tools",
            "echo",
            "--follow",
            "--json",
        ])
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let session: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(session["status"], "completed");
    assert_eq!(session["steps"][0]["action"]["tool"], "echo");
    let answer = session["final_answer"].as_str().unwrap();
    assert!(
        answer.starts_with("[agentq stand-in model, not Claude]"),
        "{answer}"
    );

    let output = env
        .command("agentq")
        .env("AGENTQ_API_KEY", &key)
        .args(["get", session["session_id"].as_str().unwrap()])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(
        text.contains("final answer: [agentq stand-in model"),
        "{text}"
    );
    assert!(text.contains("completed: 2 steps, 2 LLM calls"), "{text}");

    let output = env
        .command("agentq")
        .args(["tools"])
        .env_remove("AGENTQ_API_KEY")
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("AGENTQ_API_KEY is not set"));
}

#[tokio::test]
async fn missing_or_malformed_configuration_names_the_variable() {
    let env = TestEnv::new().await;
    let cases = [
        (
            "agentq-api",
            "DATABASE_URL",
            None,
            "DATABASE_URL is not set",
        ),
        (
            "agentq-api",
            "REDIS_URL",
            Some("localhost:6379"),
            "REDIS_URL=\"localhost:6379\" is malformed",
        ),
        (
            "agentq-api",
            "AGENTQ_LISTEN",
            Some("8080"),
            "AGENTQ_LISTEN=\"8080\" is malformed",
        ),
        // The admin listener never runs without its credential.
        (
            "agentq-api",
            "AGENTQ_ADMIN_LISTEN",
            Some("127.0.0.1:1"),
            "AGENTQ_ADMIN_TOKEN is not set",
        ),
        (
            "agentq-worker",
            "ANTHROPIC_API_KEY",
            None,
            "ANTHROPIC_API_KEY is not set",
        ),
        (
            "agentq-worker",
            "ANTHROPIC_BASE_URL",
            Some("ftp://x"),
            "ANTHROPIC_BASE_URL=\"ftp://x\" is malformed",
        ),
    ];
    for (binary, var, value, expected) in cases {
        let mut command = env.command(binary);
        match value {
            Some(value) => command.env(var, value),
            None => command.env_remove(var),
        };
        let output = command.stdout(Stdio::null()).output().await.unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{binary} {var}: {stderr}");
        assert!(stderr.contains(expected), "{binary} {var}: {stderr}");
    }
}

/// `agentq bench api` and `agentq bench steps` run end to end (a smoke run: quick, one second
/// per measurement) and write their figures; the figures themselves are not judged here.
#[tokio::test]
async fn the_api_and_steps_benchmarks_run_and_write_their_figures() {
    let env = TestEnv::new().await;
    let out = std::env::temp_dir().join(format!("agentq-bench-{}", uuid::Uuid::new_v4().simple()));
    for what in ["api", "steps"] {
        let output = env
            .command("agentq")
            .env("DATABASE_URL", crate::harness::admin_database_url())
            .args(["bench", what, "--quick", "--seconds", "1", "--out"])
            .arg(&out)
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{what}: {stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let report: Value =
            serde_json::from_slice(&std::fs::read(out.join(format!("{what}.json"))).unwrap())
                .unwrap();
        let rows = report["tables"][0]["rows"].as_array().unwrap();
        assert!(!rows.is_empty(), "{report}");
        assert!(stdout.contains("figures written to"), "{stdout}");
        if what == "steps" && cfg!(target_os = "linux") {
            // The machine's CPU per step, read from /proc/stat over each window.
            for row in rows {
                let ms = row["cpu ms/step"].as_f64().unwrap_or_default();
                assert!(ms > 0.0, "cpu ms/step missing or not positive in {row}");
            }
        }
    }
    let _ = std::fs::remove_dir_all(&out);
}

/// `agentq run --approval-timeout --on-approval-timeout`: the held call is rejected when no one
/// decides in time and the session goes on; a choice that doesn't exist is refused up front.
async fn run_sets_the_approval_window_and_what_happens_after(backend: Backend) {
    let (env, key) = TestEnv::running_on(backend, &[("AGENTQ_RECONCILE_EVERY_MS", "200")]).await;
    env.llm.script(
        "marker-cli-window",
        vec![
            Turn::tool("echo_approved", json!({"text": "held"})),
            Turn::answer("went on without it"),
        ],
    );
    let run = |extra: &[&str]| {
        let mut command = env.command("agentq");
        command
            .env("AGENTQ_API_KEY", &key)
            .args(["run", "marker-cli-window: go", "--tools", "echo_approved"])
            .args(extra);
        async move { command.output().await.unwrap() }
    };
    let refused = run(&["--on-approval-timeout", "shrug"]).await;
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("shrug"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let output = run(&[
        "--approval-timeout",
        "1",
        "--on-approval-timeout",
        "reject",
        "--follow",
        "--json",
    ])
    .await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let session: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(session["status"], "completed", "{session}");
    assert_eq!(session["final_answer"], "went on without it");
    let approval = &session["steps"][0]["approval"];
    assert_eq!(
        (&approval["approved"], &approval["decided_by"]),
        (&json!(false), &Value::Null)
    );
    assert!(
        approval["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("on_approval_timeout=reject"),
        "{approval}"
    );
}

on_both_backends!(
    create_key_then_run_and_follow_a_session,
    run_sets_the_approval_window_and_what_happens_after,
);
