//! Which kinds of statement may run: SELECT/VALUES/TABLE queries, and INSERT, UPDATE and DELETE
//! (the policy then applies the write switch). Any other statement is refused by its leading
//! keyword as the parser renders it, so every DDL, privilege, COPY, procedural, session,
//! transaction, LISTEN/NOTIFY, maintenance and LOCK statement is named in the refusal.

use sqlparser::ast::{SetExpr, Statement};

use super::policy::{Access, Refusal, Rule};

/// The statement's kind and access, or the rule refusing its kind.
pub fn statement_kind(statement: &Statement) -> Result<(&'static str, Access), Refusal> {
    let dml = |body: &SetExpr| match body {
        SetExpr::Insert(_) => Some("INSERT"),
        SetExpr::Update(_) => Some("UPDATE"),
        SetExpr::Delete(_) => Some("DELETE"),
        SetExpr::Merge(_) => Some("MERGE"),
        _ => None,
    };
    match statement {
        Statement::Query(query) => match dml(&query.body) {
            None => Ok(("SELECT", Access::ReadOnly)),
            Some("MERGE") => Err(not_allowed("MERGE")),
            Some(_) => Err(Refusal::new(
                Rule::WritableCte,
                "WITH before INSERT/UPDATE/DELETE is not allowed; write the statement without \
                 a WITH clause",
            )),
        },
        Statement::Insert(_) => Ok(("INSERT", Access::Write)),
        Statement::Update(_) => Ok(("UPDATE", Access::Write)),
        Statement::Delete(_) => Ok(("DELETE", Access::Write)),
        other => Err(refuse_kind(other)),
    }
}

fn not_allowed(keyword: &str) -> Refusal {
    Refusal::new(
        Rule::StatementNotAllowed,
        format!(
            "{keyword} statements are not allowed; only SELECT (and INSERT, UPDATE, DELETE when \
             writes are enabled)"
        ),
    )
}

/// Refuses any other statement by its leading keyword(s), as the parser renders them.
fn refuse_kind(statement: &Statement) -> Refusal {
    let text = statement.to_string();
    let mut words = text.split_whitespace().map(str::to_ascii_uppercase);
    let first = words.next().unwrap_or_default();
    let second = words.next().unwrap_or_default();
    let (rule, why) = match first.as_str() {
        "CREATE" | "ALTER" | "DROP" | "TRUNCATE" | "COMMENT" | "RENAME" | "REFRESH" => {
            (Rule::Ddl, "changes the schema")
        }
        "GRANT" | "REVOKE" | "DENY" => (Rule::Privileges, "changes privileges"),
        "COPY" | "UNLOAD" => (
            Rule::Copy,
            "reads or writes files or programs on the server",
        ),
        "CALL" | "DO" | "EXECUTE" | "PREPARE" | "DEALLOCATE" | "DECLARE" | "FETCH" | "CLOSE"
        | "LOAD" => (
            Rule::ServerCode,
            "runs code or statements outside the checked one",
        ),
        "SET" | "RESET" | "DISCARD" => (
            Rule::SessionSettings,
            "changes the role, the transaction mode or a setting",
        ),
        "BEGIN" | "START" | "COMMIT" | "END" | "ROLLBACK" | "ABORT" | "SAVEPOINT" | "RELEASE" => (
            Rule::TransactionControl,
            "controls the transaction sql_query runs in",
        ),
        "LISTEN" | "UNLISTEN" | "NOTIFY" => (Rule::ListenNotify, "uses LISTEN/NOTIFY"),
        "VACUUM" | "ANALYZE" | "CHECKPOINT" => (Rule::Maintenance, "is database maintenance"),
        "LOCK" | "UNLOCK" => (Rule::Lock, "takes explicit locks"),
        _ => return not_allowed(&first),
    };
    let keyword = match (first.as_str(), second.as_str()) {
        ("CREATE" | "ALTER" | "DROP", second) if !second.is_empty() => {
            format!("{first} {second}")
        }
        _ => first.clone(),
    };
    Refusal::new(rule, format!("{keyword} {why}"))
}
