//! `sql_query`: one parameterized SQL statement on the operator's Postgres database, checked
//! before it runs and approved by a human (the step protocol holds every call for approval).
//!
//! - `policy.rs` decides what may run and names the rule that refuses the rest; it uses
//!   `statements.rs` (which kinds of statement), `walk.rs` (rules inside the statement),
//!   `functions.rs` (the dangerous functions) and `where_clause.rs` (UPDATE/DELETE must select
//!   rows);
//! - `execute.rs` runs the statement in its own read-only (or write) transaction with timeouts
//!   and caps; `params.rs` binds the parameters and `types.rs` maps values to JSON.
//!
//! Result: `{columns: [{name, type}], rows: [[...]], row_count, truncated, statement}` (plus
//! `note` when truncated and `rows_affected` for writes without RETURNING).

mod execute;
mod functions;
mod params;
pub mod policy;
mod statements;
mod types;
mod walk;
mod where_clause;

#[cfg(test)]
mod db_tests;
#[cfg(test)]
mod policy_tests;
#[cfg(test)]
mod test_db;
#[cfg(test)]
mod types_tests;

use agentq_shared::config::{SqlQuerySettings, ToolSettings};
use agentq_shared::tools::{Tool, ToolContext, ToolDefinition, ToolError};
use serde::Deserialize;
use serde_json::{Value, json};

pub use policy::{Access, Classification, Refusal, Rule, classify};

/// The `sql_query` tool; build it once per process. It connects on first use.
pub struct SqlQuery {
    definition: ToolDefinition,
    settings: SqlQuerySettings,
    connector: execute::Connector,
}

impl SqlQuery {
    /// Fails when the tool is not configured (`AGENTQ_SQL_TOOL_URL`) or its URL is unusable.
    pub fn new(settings: &ToolSettings) -> anyhow::Result<Self> {
        let definition = agentq_shared::tools::sql_query::definition(settings)
            .ok_or_else(|| anyhow::anyhow!("sql_query needs AGENTQ_SQL_TOOL_URL"))?;
        Ok(Self {
            definition,
            connector: execute::Connector::new(&settings.sql_query)?,
            settings: settings.sql_query.clone(),
        })
    }

    /// What the approver should see for these arguments: the SQL, the parameters, and the
    /// policy's classification (or the rule that will refuse the call).
    pub fn approval_view(&self, args: &Value) -> Value {
        let query = args
            .get("query")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let verdict = match classify(query, &self.settings) {
            Ok(classification) => json!({"allowed": true, "classification": classification}),
            Err(refusal) => {
                json!({"allowed": false, "rule": refusal.rule, "detail": refusal.detail})
            }
        };
        json!({"query": query, "params": args.get("params").cloned().unwrap_or(json!([])),
               "policy": verdict})
    }
}

/// Refuses a superuser connection at start-up unless `AGENTQ_SQL_ALLOW_SUPERUSER=true`. An
/// unreachable target is only logged: every call checks again before it runs.
pub async fn check(settings: &SqlQuerySettings) -> anyhow::Result<()> {
    if settings.url.is_none() {
        return Ok(());
    }
    let options = execute::connect_options(settings)?;
    let mut conn = match <sqlx::PgConnection as sqlx::Connection>::connect_with(&options).await {
        Ok(conn) => conn,
        Err(e) => {
            tracing::warn!(error = %execute::describe(&e), "sql_query: target not reachable at start");
            return Ok(());
        }
    };
    let superuser: String = sqlx::query_scalar("SELECT current_setting('is_superuser')")
        .fetch_one(&mut conn)
        .await?;
    let _ = sqlx::Connection::close(conn).await;
    anyhow::ensure!(
        superuser != "on" || settings.allow_superuser,
        "{}",
        execute::SUPERUSER_REFUSED
    );
    Ok(())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Args {
    query: String,
    #[serde(default)]
    params: Vec<Value>,
}

#[async_trait::async_trait]
impl Tool for SqlQuery {
    fn definition(&self) -> ToolDefinition {
        self.definition.clone()
    }

    async fn call(&self, args: Value, ctx: &ToolContext) -> Result<Value, ToolError> {
        let args: Args = serde_json::from_value(args)
            .map_err(|e| ToolError(format!("invalid arguments for sql_query: {e}")))?;
        let checked =
            classify(&args.query, &self.settings).map_err(|r| ToolError(r.to_string()))?;
        tracing::info!(
            session_id = %ctx.session_id, step = ctx.step, statement = checked.statement,
            "sql_query runs an approved statement"
        );
        execute::run(&self.connector, &self.settings, &checked, &args.params)
            .await
            .map_err(ToolError)
    }

    /// The approver sees the policy's classification of the query (or the rule that will
    /// refuse it) next to the SQL and parameters of the pending call.
    fn approval_details(&self, args: &Value) -> Option<Value> {
        Some(self.approval_view(args)["policy"].clone())
    }

    /// Reads may run again after a crash; a write may not.
    fn is_idempotent(&self, args: &Value) -> bool {
        let query = args
            .get("query")
            .and_then(Value::as_str)
            .unwrap_or_default();
        classify(query, &self.settings).is_ok_and(|c| c.access == Access::ReadOnly)
    }
}
