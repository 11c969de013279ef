//! The `sql_query` tool's definition as the API and the model see it. The implementation, with
//! its SQL policy, is in `worker/src/tools/sql_query/`.

use serde_json::json;

use super::{ToolCategory, ToolDefinition};
use crate::config::ToolSettings;

pub const NAME: &str = "sql_query";

/// The definition when this deployment offers the tool (`AGENTQ_SQL_TOOL_URL` is set), `None`
/// otherwise. Every call needs a human's approval. Read-only deployments mark it idempotent
/// (re-running a read after a crash is harmless); with writes allowed, it is not.
pub fn definition(settings: &ToolSettings) -> Option<ToolDefinition> {
    let sql = &settings.sql_query;
    sql.url.as_ref()?;
    let mode = if sql.allow_writes {
        "SELECT, INSERT, and UPDATE or DELETE with a WHERE clause that selects rows"
    } else {
        "read-only: SELECT only"
    };
    Some(ToolDefinition {
        name: NAME.into(),
        description: format!(
            "Run one SQL statement on the operator's PostgreSQL database ({mode}) and return \
             {{columns, rows, row_count, truncated}}. Pass values as parameters: write $1, $2, \
             ... in the query and give \"params\" in order, never values pasted into the SQL. \
             A human approves every call. One statement only; DDL, COPY, SET, transaction \
             control, locking, writable CTEs, SELECT INTO and server-side functions such as \
             file access, dblink or pg_sleep are refused with the rule that refused them. At most \
             {} rows and {} bytes come back and a statement may run {} ms: aggregate, filter \
             and LIMIT in SQL. numeric values come back as strings (exact), timestamps as \
             RFC 3339, json as JSON.",
            sql.max_rows,
            sql.max_bytes,
            sql.statement_timeout.as_millis()
        ),
        parameters: json!({
            "type": "object",
            "properties": {
                "query": {"type": "string", "minLength": 1, "maxLength": 100_000,
                          "description": "One PostgreSQL statement, with $1, $2, ... for values."},
                "params": {"type": "array", "maxItems": 100,
                           "items": {"type": ["string", "number", "boolean", "null", "array", "object"]},
                           "description": "Values bound to $1, $2, ... in order."}
            },
            "required": ["query"],
            "additionalProperties": false
        }),
        category: ToolCategory::Data,
        requires_approval: true,
        idempotent: !sql.allow_writes,
    })
}
