//! The policy on its own: dangerous statements refused by the right rule, ordinary ones
//! classified. `db_tests.rs` runs the same table against a real database.

use std::time::Duration;

use pretty_assertions::assert_eq;

use super::policy::{Access, Limits, Rule, check};

pub const READ_ONLY: Limits = Limits {
    allow_writes: false,
    max_sleep: Duration::from_secs(5),
};
pub const WRITES: Limits = Limits {
    allow_writes: true,
    ..READ_ONLY
};

/// Statements that must never run, with the rule that refuses them whether or not writes are
/// allowed. They target the seeded `items` table of `test_db.rs`.
pub const DANGEROUS: &[(&str, Rule)] = &[
    ("DROP TABLE items", Rule::Ddl),
    ("drop table items", Rule::Ddl),
    ("DrOp TaBlE \"items\"", Rule::Ddl),
    ("/* hi */ DROP /* there */ TABLE items -- bye", Rule::Ddl),
    ("TRUNCATE items", Rule::Ddl),
    ("ALTER TABLE items ADD COLUMN evil int", Rule::Ddl),
    ("CREATE TABLE evil AS SELECT * FROM items", Rule::Ddl),
    ("CREATE ROLE agentq_evil SUPERUSER LOGIN", Rule::Ddl),
    ("DROP SCHEMA public CASCADE", Rule::Ddl),
    ("GRANT ALL ON items TO PUBLIC", Rule::Privileges),
    ("REVOKE SELECT ON items FROM PUBLIC", Rule::Privileges),
    ("COPY items TO '/tmp/agentq_items.csv'", Rule::Copy),
    (
        "COPY (SELECT 1) TO PROGRAM 'touch /tmp/agentq_pwned'",
        Rule::Copy,
    ),
    ("copy items from program 'id'", Rule::Copy),
    ("DO $$ BEGIN DROP TABLE items; END $$", Rule::Unparseable),
    ("CALL evil()", Rule::ServerCode),
    ("PREPARE p AS DELETE FROM items", Rule::ServerCode),
    ("LOAD 'auto_explain'", Rule::ServerCode),
    ("SET ROLE postgres", Rule::SessionSettings),
    ("RESET ROLE", Rule::SessionSettings),
    ("SET SESSION AUTHORIZATION postgres", Rule::SessionSettings),
    ("SET TRANSACTION READ WRITE", Rule::SessionSettings),
    (
        "set default_transaction_read_only = off",
        Rule::SessionSettings,
    ),
    ("SET LOCAL statement_timeout = 0", Rule::SessionSettings),
    ("COMMIT; DROP TABLE items", Rule::SingleStatement),
    ("END; DELETE FROM items", Rule::SingleStatement),
    (
        "ROLLBACK; SET TRANSACTION READ WRITE; DELETE FROM items",
        Rule::SingleStatement,
    ),
    ("SELECT 1; DROP TABLE items", Rule::SingleStatement),
    (
        "SELECT 1 /* */; /* */ DROP TABLE items",
        Rule::SingleStatement,
    ),
    (" ; ", Rule::SingleStatement),
    ("COMMIT", Rule::TransactionControl),
    ("START TRANSACTION READ WRITE", Rule::TransactionControl),
    ("LISTEN agentq", Rule::ListenNotify),
    ("NOTIFY agentq, 'x'", Rule::ListenNotify),
    ("VACUUM items", Rule::Maintenance),
    ("LOCK TABLE items IN ACCESS EXCLUSIVE MODE", Rule::Lock),
    ("SELECT * FROM items FOR UPDATE", Rule::Lock),
    (
        "WITH gone AS (DELETE FROM items RETURNING *) SELECT * FROM gone",
        Rule::WritableCte,
    ),
    (
        "with x as (update items set price = 0 where id > 0 returning id) select count(*) from x",
        Rule::WritableCte,
    ),
    (
        "WITH x AS (SELECT 1) DELETE FROM items WHERE id = 1",
        Rule::WritableCte,
    ),
    ("SELECT * INTO evil FROM items", Rule::SelectInto),
    ("DELETE FROM items", Rule::UnboundedWrite),
    ("UPDATE items SET price = 0", Rule::UnboundedWrite),
    ("DELETE FROM items WHERE true", Rule::UnboundedWrite),
    ("DELETE FROM items WHERE 1 = 1", Rule::UnboundedWrite),
    (
        "UPDATE items SET price = 0 WHERE id = id",
        Rule::UnboundedWrite,
    ),
    (
        "DELETE FROM items WHERE id = 3 OR 'a' = 'a'",
        Rule::UnboundedWrite,
    ),
    ("DELETE FROM items WHERE NOT (false)", Rule::UnboundedWrite),
    ("DELETE FROM items WHERE $1", Rule::UnboundedWrite),
    (
        "UPDATE items SET price = 0 WHERE name IS NULL OR name IS NOT NULL",
        Rule::UnboundedWrite,
    ),
    (
        "SELECT pg_read_file('/etc/passwd')",
        Rule::DangerousFunction,
    ),
    (
        "SELECT * FROM pg_read_file('/etc/passwd')",
        Rule::DangerousFunction,
    ),
    ("SELECT * FROM pg_ls_dir('.') AS f", Rule::DangerousFunction),
    (
        "select PG_CATALOG.\"pg_read_binary_file\"('/etc/passwd')",
        Rule::DangerousFunction,
    ),
    (
        "SELECT ('/etc/passwd'::text).pg_read_file",
        Rule::DangerousFunction,
    ),
    (
        "SELECT 'a\\', pg_read_file('/etc/passwd') --'",
        Rule::DangerousFunction,
    ),
    (
        "SELECT $$ $$, pg_stat_file('/etc/passwd')",
        Rule::DangerousFunction,
    ),
    (
        "SELECT U&\"pg\\005fread_file\"('/etc/passwd')",
        Rule::UnicodeEscape,
    ),
    ("SELECT lo_import('/etc/passwd')", Rule::DangerousFunction),
    (
        "SELECT lo_export(1234, '/tmp/agentq_lo')",
        Rule::DangerousFunction,
    ),
    (
        "SELECT * FROM dblink('host=evil', 'select 1') AS t(x int)",
        Rule::DangerousFunction,
    ),
    (
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity",
        Rule::DangerousFunction,
    ),
    (
        "SELECT count(*) FROM items HAVING pg_cancel_backend(1)",
        Rule::DangerousFunction,
    ),
    (
        "SELECT * FROM items WHERE id IN (SELECT pg_reload_conf()::int)",
        Rule::DangerousFunction,
    ),
    (
        "SELECT set_config('role', 'postgres', false)",
        Rule::DangerousFunction,
    ),
    (
        "SELECT set_config('transaction_read_only', 'off', true)",
        Rule::DangerousFunction,
    ),
    (
        "SELECT query_to_xml('DELETE FROM items', true, true, '')",
        Rule::DangerousFunction,
    ),
    ("SELECT pg_advisory_lock(1)", Rule::DangerousFunction),
    ("SELECT pg_notify('agentq', 'x')", Rule::DangerousFunction),
    ("SELECT pg_sleep_for('1 hour')", Rule::DangerousFunction),
    ("SELECT pg_sleep(60)", Rule::SleepBeyondTimeout),
    ("SELECT pg_sleep(1e3)", Rule::SleepBeyondTimeout),
    ("SELECT pg_sleep(id) FROM items", Rule::SleepBeyondTimeout),
    ("SEL/**/ECT 1", Rule::Unparseable),
    ("DR/**/OP TABLE items", Rule::Unparseable),
    (
        "MERGE INTO items USING items s ON items.id = s.id WHEN MATCHED THEN DELETE",
        Rule::StatementNotAllowed,
    ),
    (
        "EXPLAIN ANALYZE DELETE FROM items",
        Rule::StatementNotAllowed,
    ),
];

#[test]
fn every_dangerous_statement_is_refused_by_its_rule() {
    assert!(DANGEROUS.len() >= 40);
    for limits in [READ_ONLY, WRITES] {
        let refused: Vec<(&str, Option<Rule>)> = DANGEROUS
            .iter()
            .map(|(sql, _)| (*sql, check(sql, limits).err().map(|r| r.rule)))
            .collect();
        let expected: Vec<(&str, Option<Rule>)> = DANGEROUS
            .iter()
            .map(|(sql, rule)| (*sql, Some(*rule)))
            .collect();
        assert_eq!(refused, expected, "writes allowed: {}", limits.allow_writes);
    }
}

#[test]
fn a_refusal_names_its_rule() {
    let refusal = check("DROP TABLE items", READ_ONLY).unwrap_err();
    assert_eq!(
        refusal.to_string(),
        "sql_query refused the statement (rule ddl): DROP TABLE changes the schema"
    );
    let function = check("SELECT lo_import('/etc/passwd')", READ_ONLY).unwrap_err();
    assert_eq!(
        function.to_string(),
        "sql_query refused the statement (rule dangerous_function): lo_import() uses large objects"
    );
}

#[test]
fn ordinary_reads_pass_and_are_classified() {
    for sql in [
        "SELECT * FROM items WHERE id = $1",
        "select category, count(*), sum(price) from items group by category order by 1 limit 10",
        "WITH cheap AS (SELECT * FROM items WHERE price < 10) SELECT name FROM cheap",
        "VALUES (1), (2)",
        "SELECT pg_sleep(1)",
        "SELECT now(), current_user",
        "SELECT x FROM generate_series(1, 3) AS g(x)",
        "SELECT 'DROP TABLE items; pg_read_file' AS harmless_text",
        "SELECT 1 /* /* nested */ ; DROP TABLE items; */",
        "SELECT * FROM items;",
    ] {
        let classified = check(sql, READ_ONLY).unwrap_or_else(|e| panic!("{sql}: {e}"));
        assert_eq!(
            (classified.statement, classified.access),
            ("SELECT", Access::ReadOnly),
            "{sql}"
        );
    }
    let classified = check(
        "select  i.name, lower(i.category)  from  items i join orders o on o.item_id = i.id where o.qty > $1",
        READ_ONLY,
    )
    .unwrap();
    assert_eq!(
        classified.tables,
        vec!["items".to_string(), "orders".to_string()]
    );
    assert_eq!(classified.functions, vec!["lower".to_string()]);
    assert_eq!(
        classified.normalized,
        "SELECT i.name, lower(i.category) FROM items i JOIN orders o ON o.item_id = i.id WHERE o.qty > $1"
    );
}

#[test]
fn writes_need_the_switch_and_a_real_where() {
    let writes = [
        ("INSERT INTO items (name, price) VALUES ($1, $2)", "INSERT"),
        ("UPDATE items SET price = $1 WHERE id = $2", "UPDATE"),
        ("DELETE FROM items WHERE id = $1 RETURNING *", "DELETE"),
        ("DELETE FROM items WHERE name IS NULL", "DELETE"),
    ];
    for (sql, kind) in writes {
        let refusal = check(sql, READ_ONLY).unwrap_err();
        assert_eq!(refusal.rule, Rule::ReadOnly, "{sql}");
        let allowed = check(sql, WRITES).unwrap_or_else(|e| panic!("{sql}: {e}"));
        assert_eq!((allowed.statement, allowed.access), (kind, Access::Write));
    }
}

#[test]
fn the_approver_sees_the_sql_the_params_and_the_classification() {
    let tool = super::test_db::tool_at("postgres://reader@127.0.0.1:1/none", |_| {});
    let view = tool.approval_view(&serde_json::json!({
        "query": "select name from items where id = $1",
        "params": [7]
    }));
    assert_eq!(
        view,
        serde_json::json!({
            "query": "select name from items where id = $1",
            "params": [7],
            "policy": {"allowed": true, "classification": {
                "statement": "SELECT", "access": "read_only", "tables": ["items"],
                "functions": [], "normalized": "SELECT name FROM items WHERE id = $1"
            }}
        })
    );
    let refused = tool.approval_view(&serde_json::json!({"query": "DELETE FROM items"}));
    assert_eq!(
        refused["policy"],
        serde_json::json!({"allowed": false, "rule": "unbounded_write",
            "detail": "DELETE without WHERE would touch every row; add a WHERE that selects rows"})
    );
}
