//! code_run through the whole system: an agent's program runs in the sandbox the worker chose
//! (Docker when an engine answers, else the process backend) and never sees the worker's
//! secrets; `agentq tool run code_run` prints the same result for operators.

use agentq_cli::stand_in::Turn;
use agentq_shared::schemas::SessionStatus;
use pretty_assertions::assert_eq;
use serde_json::{Value, json};

use crate::harness::TestEnv;

/// The offline images deploy/sandbox/build-images.sh builds (no registry here).
fn use_local_images(env: &mut TestEnv) {
    env.set("AGENTQ_SANDBOX_PYTHON_IMAGE", "agentq-sandbox-python:3.11");
    env.set("AGENTQ_SANDBOX_NODE_IMAGE", "agentq-sandbox-node:20");
}

const PROGRAM: &str =
    "import os\nprint(6 * 7, [k for k in os.environ if 'KEY' in k or 'URL' in k])";

#[tokio::test]
async fn an_agent_runs_code_without_seeing_the_workers_secrets() {
    let mut env = TestEnv::new().await;
    use_local_images(&mut env);
    env.start_api().await;
    env.start_worker();
    let key = env.key("acme").await;
    env.llm.script(
        "marker-code",
        vec![
            Turn::tool("code_run", json!({"language": "python", "code": PROGRAM})),
            Turn::answer("42"),
        ],
    );
    let id = env
        .run(&key, "marker-code: compute", json!({"tools": ["code_run"]}))
        .await;
    let session = env.wait_status(&key, id, SessionStatus::Completed).await;
    let observation = session.steps[0].observation.clone().expect("observation");
    assert_eq!(observation["success"], json!(true), "{observation}");
    let result = &observation["result"];
    // The worker holds ANTHROPIC_API_KEY, DATABASE_URL and REDIS_URL; the program sees none.
    assert_eq!(
        (
            &result["stdout"],
            &result["exit_code"],
            &result["timed_out"]
        ),
        (&json!("42 []\n"), &json!(0), &json!(false))
    );
}

#[tokio::test]
async fn tool_run_prints_the_code_run_result() {
    let mut env = TestEnv::new().await;
    use_local_images(&mut env);
    for sandbox in ["process", "auto"] {
        let output = env
            .command("agentq")
            .env("AGENTQ_SANDBOX", sandbox)
            .args(["tool", "run", "code_run", "--args"])
            .arg(json!({"language": "javascript", "code": "console.log(1 + 1)"}).to_string())
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(0), "{sandbox}: {stderr}");
        let printed: Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(
            (
                &printed["tool_name"],
                &printed["success"],
                &printed["result"]["stdout"]
            ),
            (&json!("code_run"), &json!(true), &json!("2\n")),
            "{sandbox}"
        );
    }
    let refused = env
        .command("agentq")
        .args([
            "tool",
            "run",
            "code_run",
            "--args",
            r#"{"language": "ruby", "code": "p 1"}"#,
        ])
        .output()
        .await
        .unwrap();
    assert_eq!(
        refused.status.code(),
        Some(1),
        "arguments are checked against the schema"
    );
}

/// `agentq tool run code_run` on Docker waits for its container's removal before exiting. The
/// run uses an image tag of its own, so the check sees this run's containers only.
#[tokio::test]
async fn tool_run_on_docker_leaves_no_container() {
    let docker = |args: &[&str]| std::process::Command::new("docker").args(args).output();
    let engine = docker(&["info", "--format", "{{.ServerVersion}}"]);
    if !engine.as_ref().is_ok_and(|o| o.status.success()) {
        assert!(
            std::env::var_os("AGENTQ_REQUIRE_DOCKER").is_none(),
            "AGENTQ_REQUIRE_DOCKER is set but no Docker engine answers; \
             `deploy/ensure-services.sh --docker` starts one"
        );
        eprintln!("skipped: no Docker engine (deploy/ensure-services.sh --docker starts one)");
        return;
    }
    let tag = format!(
        "agentq-sandbox-python:leftover-{}",
        uuid::Uuid::new_v4().simple()
    );
    let tagged = docker(&["tag", "agentq-sandbox-python:3.11", &tag]).unwrap();
    assert!(tagged.status.success(), "{tagged:?}");
    let mut env = TestEnv::new().await;
    use_local_images(&mut env);
    env.set("AGENTQ_SANDBOX_PYTHON_IMAGE", &tag);
    for _ in 0..2 {
        let output = env
            .command("agentq")
            .env("AGENTQ_SANDBOX", "docker")
            .args(["tool", "run", "code_run", "--args"])
            .arg(json!({"language": "python", "code": "print(7)"}).to_string())
            .output()
            .await
            .unwrap();
        assert_eq!(
            output.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let printed: Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(printed["result"]["stdout"], json!("7\n"));
    }
    // By the image name each container was created with (an `ancestor` filter would match the
    // other tests' containers of the same image too).
    let listed = docker(&["ps", "-a", "--format", "{{.ID}} {{.Image}}"]).unwrap();
    let left: Vec<String> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .filter(|line| line.ends_with(&tag))
        .map(str::to_owned)
        .collect();
    let _ = docker(&["rmi", &tag]);
    assert_eq!(left, Vec::<String>::new(), "containers left behind");
}
