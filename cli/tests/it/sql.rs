//! sql_query end to end: a session held for approval with the SQL visible, its rows reaching
//! the model after approval, a rejection the agent sees, and `agentq tool run sql_query`.

use agentq_cli::stand_in::Turn;
use agentq_shared::schemas::SessionStatus;
use pretty_assertions::assert_eq;
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::harness::{TestEnv, admin_database_url};

/// A target database with a small `items` table and a read-only role, dropped at the end.
pub(crate) struct Target {
    database: String,
    role: String,
}

impl Target {
    pub(crate) async fn new() -> Self {
        let id = Uuid::new_v4().simple().to_string();
        let target = Self {
            database: format!("agentq_sqltarget_{id}"),
            role: format!("agentq_sqlreader_{id}"),
        };
        exec(
            &admin_database_url(),
            &format!("CREATE DATABASE {}", target.database),
        )
        .await;
        let role = &target.role;
        let seed = format!(
            "CREATE TABLE items (id int PRIMARY KEY, name text, price numeric(10, 2));
             INSERT INTO items VALUES (1, 'apple', 1.50), (2, 'pear', 2.25), (3, 'fig', 0.75);
             CREATE ROLE {role} LOGIN;
             GRANT USAGE ON SCHEMA public TO {role};
             GRANT SELECT ON items TO {role};"
        );
        exec(&target.url(""), &seed).await;
        target
    }

    fn url(&self, user: &str) -> String {
        let mut url = url::Url::parse(&admin_database_url()).unwrap();
        url.set_path(&self.database);
        if !user.is_empty() {
            url.set_username(user).unwrap();
            url.set_password(None).unwrap();
        }
        url.to_string()
    }

    pub(crate) fn reader_url(&self) -> String {
        self.url(&self.role)
    }
}

async fn exec(url: &str, sql: &str) {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
}

impl Drop for Target {
    fn drop(&mut self) {
        // Two statements sent apart: in one query string they would form a transaction block,
        // which DROP DATABASE refuses (and the database was left behind).
        let statements = [
            format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.database),
            format!("DROP ROLE IF EXISTS {}", self.role),
        ];
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                if let Ok(pool) = sqlx::PgPool::connect(&admin_database_url()).await {
                    for sql in statements {
                        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&pool).await;
                    }
                }
            });
        })
        .join();
    }
}

#[tokio::test]
async fn a_query_waits_for_approval_then_its_rows_reach_the_model() {
    let target = Target::new().await;
    let mut env = TestEnv::new().await;
    env.set("AGENTQ_SQL_TOOL_URL", &target.reader_url());
    env.start_api().await;
    env.start_worker();
    let key = env.key("acme").await;

    let (status, tools) = env
        .request(Method::GET, "/v1/tools", Some(&key), None)
        .await;
    let listed = tools["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "sql_query")
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        (status, &listed["requires_approval"], &listed["idempotent"]),
        (200, &json!(true), &json!(true))
    );

    let args = json!({
        "query": "SELECT name, price FROM items WHERE price > $1 ORDER BY price DESC",
        "params": [1]
    });
    for (marker, approved) in [("marker-sql-approve", true), ("marker-sql-reject", false)] {
        env.llm.script(
            marker,
            vec![
                Turn::tool("sql_query", args.clone()),
                Turn::answer("pear is the priciest at 2.25"),
            ],
        );
        let question = format!("{marker}: which item costs most?");
        let id = env
            .run(&key, &question, json!({"tools": ["sql_query"]}))
            .await;
        let waiting = env.wait_awaiting_approval(&key, id).await;
        let pending = waiting
            .pending_approval
            .clone()
            .expect("the pending call is shown");
        assert_eq!(
            (pending.step, pending.tool.as_str(), &pending.args),
            (0, "sql_query", &args),
            "the approver sees the SQL and its parameters"
        );
        let details = pending
            .details
            .clone()
            .expect("the classification is shown");
        assert_eq!(
            (
                details["allowed"].clone(),
                details["classification"]["access"].clone()
            ),
            (serde_json::json!(true), serde_json::json!("read_only")),
            "the approver sees the classification: {details}"
        );
        assert_eq!(
            waiting.steps[0].observation, None,
            "nothing ran before approval"
        );

        let decision = json!({"step": 0, "approved": approved, "reason": "looked at the SQL"});
        let path = format!("/v1/agents/{id}/approve");
        let (status, body) = env
            .request(Method::POST, &path, Some(&key), Some(decision))
            .await;
        assert_eq!(status, 202, "{body}");

        let session = env.wait_status(&key, id, SessionStatus::Completed).await;
        assert_eq!(
            session.final_answer.as_deref(),
            Some("pear is the priciest at 2.25")
        );
        let observation = session.steps[0].observation.clone().expect("observation");
        let tool_result = &env.llm.calls_for(marker)[1].request["messages"][2]["content"][0];
        let seen_by_model = tool_result["content"].to_string();
        if approved {
            assert_eq!(
                observation["result"]["rows"],
                json!([["pear", "2.25"], ["apple", "1.50"]])
            );
            assert_eq!(tool_result["is_error"], json!(false));
            assert!(
                seen_by_model.contains("pear") && seen_by_model.contains("2.25"),
                "{seen_by_model}"
            );
        } else {
            assert_eq!(
                observation["error"],
                json!("a human reviewer rejected this tool call: looked at the SQL")
            );
            assert_eq!(
                tool_result["is_error"],
                json!(true),
                "the agent sees the rejection"
            );
            assert!(!seen_by_model.contains("2.25"), "{seen_by_model}");
        }
    }
}

#[tokio::test]
async fn tool_run_runs_sql_query_without_approval() {
    let target = Target::new().await;
    let mut env = TestEnv::new().await;
    env.set("AGENTQ_SQL_TOOL_URL", &target.reader_url());
    let run = |args: Value, url: Option<String>| {
        let mut command = env.command("agentq");
        command.args(["tool", "run", "sql_query", "--args", &args.to_string()]);
        if let Some(url) = url {
            command.env("AGENTQ_SQL_TOOL_URL", url);
        }
        command.output()
    };

    let output = run(
        json!({"query": "SELECT count(*) AS n FROM items WHERE price < $1", "params": ["2"]}),
        None,
    )
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    let result: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        (
            &result["tool_name"],
            &result["success"],
            &result["result"]["rows"]
        ),
        (&json!("sql_query"), &json!(true), &json!([[2]]))
    );
    assert_eq!(
        result["result"]["columns"],
        json!([{"name": "n", "type": "int8"}])
    );

    let refused = run(json!({"query": "DROP TABLE items"}), None)
        .await
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    let result: Value = serde_json::from_slice(&refused.stdout).unwrap();
    assert_eq!(
        result["error"],
        json!("sql_query refused the statement (rule ddl): DROP TABLE changes the schema")
    );

    let superuser = run(json!({"query": "SELECT 1"}), Some(target.url("")))
        .await
        .unwrap();
    let result: Value = serde_json::from_slice(&superuser.stdout).unwrap();
    let error = result["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("sql_query refuses to run on a superuser connection"),
        "{result}"
    );
}

/// A SQL result holding U+0000 (inside a `json` value, which Postgres keeps as text) is stored
/// as U+FFFD: the session completes and the query ran once.
#[tokio::test]
async fn a_nul_in_a_sql_result_does_not_wedge_the_session() {
    let target = Target::new().await;
    let mut env = TestEnv::new().await;
    env.set("AGENTQ_SQL_TOOL_URL", &target.reader_url());
    env.start_api().await;
    env.start_worker();
    let key = env.key("acme").await;
    let query = r#"SELECT '{"note": "a\u0000b"}'::json AS j"#;
    env.llm.script(
        "marker-sql-nul",
        vec![
            Turn::tool("sql_query", json!({"query": query})),
            Turn::answer("read it"),
        ],
    );
    let id = env
        .run(
            &key,
            "marker-sql-nul: read",
            json!({"tools": ["sql_query"]}),
        )
        .await;
    env.wait_awaiting_approval(&key, id).await;
    let (status, body) = env
        .request(
            Method::POST,
            &format!("/v1/agents/{id}/approve"),
            Some(&key),
            Some(json!({"step": 0, "approved": true})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let session = env.wait_status(&key, id, SessionStatus::Completed).await;
    let observation = session.steps[0].observation.clone().expect("observation");
    assert_eq!(
        observation["result"]["rows"],
        json!([[{"note": "a\u{FFFD}b"}]]),
        "{observation}"
    );
    assert_eq!(env.llm.calls_for("marker-sql-nul").len(), 2);
}
