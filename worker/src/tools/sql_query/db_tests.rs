//! sql_query against real databases (one per test, see `test_db.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use agentq_shared::tools::{Tool, ToolContext};
use pretty_assertions::assert_eq;
use serde_json::{Value, json};

use super::policy_tests::DANGEROUS;
use super::test_db::{TargetDb, tool_at};
use super::{SqlQuery, check};

fn ctx() -> ToolContext {
    ToolContext {
        session_id: uuid::Uuid::nil(),
        step: 0,
    }
}

pub async fn call(tool: &SqlQuery, query: &str, params: Value) -> Result<Value, String> {
    tool.call(json!({"query": query, "params": params}), &ctx())
        .await
        .map_err(|e| e.0)
}

#[tokio::test]
async fn dangerous_statements_are_refused_before_running_and_change_nothing() {
    let db = TargetDb::new().await;
    let before = db.fingerprint().await;
    // Nothing listens on port 1: a refusal there was decided before any connection.
    let unreachable = tool_at("postgres://nobody@127.0.0.1:1/none", |_| {});
    // The worst case: a superuser connection with writes allowed, so only the policy stands
    // between these statements and the data. And the recommended read-only role.
    let superuser = db.tool("", |s| {
        s.allow_superuser = true;
        s.allow_writes = true;
    });
    let reader = db.tool(&db.reader, |_| {});
    for tool in [&unreachable, &superuser, &reader] {
        for (sql, rule) in DANGEROUS {
            let error = call(tool, sql, json!([])).await.unwrap_err();
            let expected = format!("sql_query refused the statement (rule {}): ", rule.name());
            assert!(error.starts_with(&expected), "{sql}: {error}");
        }
    }
    assert_eq!(db.fingerprint().await, before);
}

#[tokio::test]
async fn row_and_byte_caps_and_the_timeout_hold() {
    let db = TargetDb::new().await;
    let tool = db.tool(&db.reader, |_| {});
    let all = call(&tool, "SELECT id, name FROM items ORDER BY id", json!([]))
        .await
        .unwrap();
    assert_eq!(
        (&all["row_count"], &all["truncated"]),
        (&json!(100), &json!(true))
    );
    assert_eq!(all["rows"][99], json!([100, "bulk 97"]));

    let small = db.tool(&db.reader, |s| s.max_bytes = 1000);
    let capped = call(&small, "SELECT id, name FROM items ORDER BY id", json!([]))
        .await
        .unwrap();
    let rows_bytes = serde_json::to_string(&capped["rows"]).unwrap().len();
    assert!(
        capped["truncated"] == json!(true) && rows_bytes <= 1000,
        "{capped}"
    );
    assert!(capped["row_count"].as_u64().unwrap() > 10, "{capped}");

    let quick = db.tool(&db.reader, |s| {
        s.statement_timeout = Duration::from_millis(300)
    });
    let started = Instant::now();
    let error = call(
        &quick,
        "SELECT pg_sleep(0.2) FROM generate_series(1, 50)",
        json!([]),
    )
    .await
    .unwrap_err();
    assert!(error.starts_with("database error 57014"), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // The pool's connection is usable again after a failure.
    let after = call(&quick, "SELECT 1", json!([])).await.unwrap();
    assert_eq!(after["rows"], json!([[1]]));
}

#[tokio::test]
async fn reads_run_in_a_read_only_transaction_and_writes_need_the_switch() {
    let db = TargetDb::new().await;
    // nextval() passes the policy as a SELECT but writes: the READ ONLY transaction stops it,
    // even on a superuser connection.
    let superuser = db.tool("", |s| s.allow_superuser = true);
    let error = call(&superuser, "SELECT nextval('items_id_seq')", json!([]))
        .await
        .unwrap_err();
    assert!(error.starts_with("database error 25006"), "{error}");

    let writer = db.tool(&db.writer, |s| s.allow_writes = true);
    let updated = call(
        &writer,
        "UPDATE items SET price = $1 WHERE id = $2",
        json!(["9.99", 1]),
    )
    .await
    .unwrap();
    assert_eq!(updated["rows_affected"], json!(1));
    let inserted = call(
        &writer,
        "INSERT INTO items (name) VALUES ($1) RETURNING name",
        json!(["kiwi"]),
    )
    .await
    .unwrap();
    assert_eq!(inserted["rows"], json!([["kiwi"]]));
    let pool = db.pool().await;
    let price: String = sqlx::query_scalar("SELECT price::text FROM items WHERE id = 1")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(price, "9.99", "the write was committed");
    assert!(writer.is_idempotent(&json!({"query": "SELECT 1"})));
    assert!(!writer.is_idempotent(&json!({"query": "DELETE FROM items WHERE id = 1"})));

    // A row lock held elsewhere: lock_timeout ends the wait.
    let mut holder = pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM items WHERE id = 2 FOR UPDATE")
        .execute(&mut *holder)
        .await
        .unwrap();
    let locked = db.tool(&db.writer, |s| {
        s.allow_writes = true;
        s.lock_timeout = Duration::from_millis(200);
    });
    let error = call(&locked, "DELETE FROM items WHERE id = $1", json!([2]))
        .await
        .unwrap_err();
    assert!(error.starts_with("database error 55P03"), "{error}");
}

#[tokio::test]
async fn superuser_connections_are_refused_unless_allowed() {
    let db = TargetDb::new().await;
    let refused = db.tool("", |_| {});
    let error = call(&refused, "SELECT 1", json!([])).await.unwrap_err();
    assert!(
        error.starts_with("sql_query refuses to run on a superuser connection"),
        "{error}"
    );
    let settings = |user: &str, allow: bool| agentq_shared::config::SqlQuerySettings {
        url: Some(db.url(user)),
        allow_superuser: allow,
        ..Default::default()
    };
    assert!(check(&settings("", false)).await.is_err());
    assert!(check(&settings("", true)).await.is_ok());
    assert!(check(&settings(&db.reader, false)).await.is_ok());
}

#[tokio::test]
async fn a_dropped_call_leaves_no_session_behind() {
    let db = TargetDb::new().await;
    let tool = db.tool(&db.reader, |_| {});
    let slow = call(&tool, "SELECT pg_sleep(4)", json!([]));
    assert!(
        tokio::time::timeout(Duration::from_millis(300), slow)
            .await
            .is_err()
    );
    let pool = db.pool().await;
    let started = Instant::now();
    loop {
        let left: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
              WHERE datname = current_database() AND application_name = 'agentq sql_query'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        if left == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "the query kept running"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The largest resident size this process has had (VmHWM), in MB.
fn peak_resident_mb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb / 1024
}

/// A value far past the byte cap is measured by the server and never sent: the worker's memory
/// stays flat (this test runs in a process of its own, so the peak is this test's).
#[tokio::test]
async fn a_huge_value_never_reaches_the_worker() {
    let db = TargetDb::new().await;
    // Building a 300 MB value takes the server seconds on a loaded machine; what is under test
    // is the byte cap, not the statement timeout.
    let tool = db.tool(&db.reader, |s| {
        s.statement_timeout = Duration::from_secs(120)
    });
    let before = peak_resident_mb();
    for sql in [
        "SELECT repeat('x', 300000000) AS big",
        "SELECT 1 AS n, repeat('y', 200000000) AS big UNION ALL SELECT 2, 'small'",
        "SELECT name, repeat(name, 20000) AS wide FROM items ORDER BY id",
    ] {
        let result = call(&tool, sql, json!([])).await.unwrap();
        assert_eq!(result["truncated"], json!(true), "{sql}: {result}");
        assert!(
            result["note"].as_str().unwrap().contains("bytes"),
            "{sql}: {result}"
        );
        assert!(result.to_string().len() < 60_000, "{sql}");
    }
    let grown = peak_resident_mb().saturating_sub(before);
    assert!(grown < 150, "the worker's peak grew by {grown} MB");
    // Small rows come back whole, typed as before.
    let small = call(
        &tool,
        "SELECT id, name FROM items WHERE id <= 2 ORDER BY id",
        json!([]),
    )
    .await
    .unwrap();
    assert_eq!(small["rows"], json!([[1, "apple"], [2, "pear"]]));
}

/// Whatever a statement leaves in its database session (here a session-level advisory lock and
/// a setting, both taken inside a user-defined function the parser cannot see into) is gone
/// when the call returns.
#[tokio::test]
async fn a_call_leaves_no_lock_or_setting_behind() {
    let db = TargetDb::new().await;
    let admin = db.pool().await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE FUNCTION grab() RETURNS text LANGUAGE sql AS $$
             SELECT pg_advisory_lock(4242)::text || set_config('search_path', 'pg_temp', false)
         $$;
         GRANT EXECUTE ON FUNCTION grab() TO {};",
        db.reader
    )))
    .execute(&admin)
    .await
    .unwrap();
    let tool = db.tool(&db.reader, |s| s.max_connections = 1);
    call(&tool, "SELECT grab()", json!([])).await.unwrap();
    let held: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242",
    )
    .fetch_one(&admin)
    .await
    .unwrap();
    assert_eq!(held, 0, "the advisory lock outlived the call");
    // The next call (the pool holds one connection at most) sees the default search_path.
    let next = call(
        &tool,
        "SELECT current_setting('search_path') AS p",
        json!([]),
    )
    .await
    .unwrap();
    assert_eq!(next["rows"], json!([["\"$user\", public"]]));
    admin.close().await;
}
