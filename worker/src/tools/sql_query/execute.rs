//! Running one checked statement on the target database.
//!
//! Each call opens a connection of its own and runs, in its own transaction:
//! `BEGIN READ ONLY` (or `READ WRITE` when writes are allowed), `SET LOCAL statement_timeout`,
//! `lock_timeout` and `idle_in_transaction_session_timeout`, a refusal of superuser
//! connections (unless allowed), then the statement through the extended protocol (which
//! refuses more than one command) with its parameters bound, wrapped so the server checks each
//! row's size and stops after the row cap: the worker reads rows one at a time and never holds
//! more than the caps. A read-only transaction is always rolled back, a write one committed.
//!
//! A connection serves one call and is closed after it, advisory locks released first: nothing
//! a statement left in its session (locks or settings taken inside a user-defined function)
//! outlives the call. If the caller drops the call (cancel, deadline), the connection is closed
//! too: Postgres then rolls the transaction back, and the session settings (timeouts,
//! `client_connection_check_interval` where available) stop a running statement.

use std::time::Duration;

use agentq_shared::config::SqlQuerySettings;
use futures::TryStreamExt;
use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{AssertSqlSafe, Column, Connection, Either, Executor, Row, Statement, ValueRef};
use tokio::sync::{Semaphore, SemaphorePermit};

use super::policy::{Access, Classification};
use super::{params, types};

/// Connection options every sql_query connection starts with.
pub fn connect_options(settings: &SqlQuerySettings) -> anyhow::Result<PgConnectOptions> {
    let url = settings
        .url
        .as_deref()
        .ok_or_else(|| anyhow::anyhow!("AGENTQ_SQL_TOOL_URL is not set"))?;
    let options: PgConnectOptions = url
        .parse()
        .map_err(|e| anyhow::anyhow!("AGENTQ_SQL_TOOL_URL is not a usable Postgres URL: {e}"))?;
    let ms = |d: Duration| d.as_millis().to_string();
    let read_only = if settings.allow_writes { "off" } else { "on" };
    Ok(options
        .application_name("agentq sql_query")
        .statement_cache_capacity(32)
        .options([
            ("statement_timeout", ms(settings.statement_timeout)),
            ("lock_timeout", ms(settings.lock_timeout)),
            (
                "idle_in_transaction_session_timeout",
                ms(settings.statement_timeout * 2),
            ),
            ("default_transaction_read_only", read_only.into()),
            ("standard_conforming_strings", "on".into()),
        ]))
}

/// Connections to the target database: one per call, opened when the call runs and closed
/// after it, at most `AGENTQ_SQL_MAX_CONNECTIONS` at a time. Nothing a statement leaves in its
/// database session (a session-level advisory lock or a `set_config(..., false)` taken inside a
/// user-defined function, temporary tables, prepared statements) can reach the next call.
pub struct Connector {
    options: PgConnectOptions,
    permits: Semaphore,
}

impl Connector {
    pub fn new(settings: &SqlQuerySettings) -> anyhow::Result<Self> {
        Ok(Self {
            options: connect_options(settings)?,
            permits: Semaphore::new(settings.max_connections.max(1) as usize),
        })
    }

    async fn connect(&self) -> Result<(Guard, SemaphorePermit<'_>), String> {
        let waited = tokio::time::timeout(CONNECT_TIMEOUT, async {
            let permit = self.permits.acquire().await.map_err(|e| e.to_string())?;
            let conn = PgConnection::connect_with(&self.options)
                .await
                .map_err(|e| describe(&e))?;
            Ok::<_, String>((Guard(Some(conn)), permit))
        })
        .await;
        waited.unwrap_or_else(|_| {
            Err("could not get a connection to the SQL database in time".into())
        })
    }
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A call's connection, closed when the call is done. Dropped half-way (the call was
/// cancelled), the socket is closed: Postgres rolls the transaction back.
struct Guard(Option<PgConnection>);

impl Guard {
    fn conn(&mut self) -> &mut PgConnection {
        match &mut self.0 {
            Some(conn) => conn,
            None => unreachable!("the connection is only taken by discard()"),
        }
    }

    /// Ends the transaction (`end`: ROLLBACK or COMMIT), releases every advisory lock the
    /// session took, then closes the connection. The release is explicit so it is done before
    /// the call answers, not whenever the server notices the closed connection.
    async fn discard(mut self, end: &'static str) -> Result<(), sqlx::Error> {
        let Some(mut conn) = self.0.take() else {
            return Ok(());
        };
        let ended = conn.execute(end).await;
        if ended.is_ok() {
            let _ = conn.execute("SELECT pg_advisory_unlock_all()").await;
        }
        let _ = conn.close().await;
        ended.map(|_| ())
    }
}

/// Why the call failed at the database: a message the agent can act on.
pub fn describe(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            let hint = match code.as_str() {
                "57014" => " (the statement timeout cancelled it: narrow or LIMIT the query)",
                "55P03" => " (lock_timeout: the rows are locked by another transaction)",
                "25006" => " (the transaction is read-only)",
                "42501" => " (the database role lacks this privilege)",
                _ => "",
            };
            format!("database error {code}: {}{hint}", db.message())
        }
        other => format!("the SQL database could not be reached: {other}"),
    }
}

/// Runs the checked statement; `Err` carries the message the agent sees.
pub async fn run(
    connector: &Connector,
    settings: &SqlQuerySettings,
    checked: &Classification,
    params: &[Value],
) -> Result<Value, String> {
    let (mut guard, _permit) = connector.connect().await?;
    let conn = guard.conn();
    let superuser: String = sqlx::query_scalar("SELECT current_setting('is_superuser')")
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| describe(&e))?;
    if superuser == "on" && !settings.allow_superuser {
        return Err(SUPERUSER_REFUSED.into());
    }
    let mode = match checked.access {
        Access::ReadOnly => "READ ONLY",
        Access::Write => "READ WRITE",
    };
    let ms = |d: Duration| d.as_millis();
    let begin = format!(
        "BEGIN {mode}; SET LOCAL statement_timeout = {}; SET LOCAL lock_timeout = {}; \
         SET LOCAL idle_in_transaction_session_timeout = {}",
        ms(settings.statement_timeout),
        ms(settings.lock_timeout),
        ms(settings.statement_timeout * 2),
    );
    conn.execute(sqlx::raw_sql(AssertSqlSafe(begin)))
        .await
        .map_err(|e| describe(&e))?;
    // Stops a running statement soon after the client went away (Postgres 14+).
    sqlx::query(
        "SELECT set_config(name, '1000', true) FROM pg_settings \
         WHERE name = 'client_connection_check_interval'",
    )
    .execute(&mut *conn)
    .await
    .map_err(|e| describe(&e))?;

    let outcome = rows(conn, settings, &checked.normalized, params).await;
    let end = match (&outcome, checked.access) {
        (Ok(_), Access::Write) => "COMMIT",
        _ => "ROLLBACK",
    };
    let ended = guard.discard(end).await;
    let mut result = outcome?;
    // A write that could not commit did not happen.
    ended.map_err(|e| describe(&e))?;
    if let Some(object) = result.as_object_mut() {
        object.insert("statement".into(), json!(checked.statement));
    }
    Ok(result)
}

pub const SUPERUSER_REFUSED: &str = "sql_query refuses to run on a superuser connection: give \
    AGENTQ_SQL_TOOL_URL a role without superuser, write or file privileges (README, \
    \"sql_query's database role\"), or set AGENTQ_SQL_ALLOW_SUPERUSER=true";

/// The statement with every row's size checked by the server: at most `max_rows + 1` rows come
/// back, and a row whose values would take more than `max_bytes` as text comes back with all
/// its values NULL and the last column false. So no row bigger than the cap ever reaches the
/// worker's memory, whatever a value's size (`SELECT repeat('x', 1e9)`).
///
/// The statement's columns are renamed `c1..cn` positionally (duplicate or missing names don't
/// matter) in a CTE, which also takes INSERT/UPDATE/DELETE ... RETURNING; the outer query keeps
/// each column's type, so values decode as they would unwrapped.
fn size_checked(sql: &str, columns: usize, max_rows: usize, max_bytes: usize) -> String {
    let names: Vec<String> = (1..=columns).map(|i| format!("c{i}")).collect();
    // Per column: a text value's length is known without reading it; other types are measured
    // as the text Postgres would send.
    let sizes: Vec<String> = names
        .iter()
        .map(|c| format!("coalesce(octet_length(agentq_row.{c}::text), 0)::bigint"))
        .collect();
    let fits = format!("{} <= {max_bytes}", sizes.join(" + "));
    let values: Vec<String> = names
        .iter()
        .map(|c| format!("CASE WHEN agentq_sized.agentq_fits THEN agentq_sized.{c} END"))
        .collect();
    format!(
        "WITH agentq_row({names}) AS (\n{sql}\n)\n\
         SELECT {values}, agentq_sized.agentq_fits FROM (\n\
         SELECT agentq_row.*, {fits} AS agentq_fits FROM agentq_row) AS agentq_sized\n\
         LIMIT {limit}",
        names = names.join(", "),
        values = values.join(", "),
        limit = max_rows + 1,
    )
}

/// Prepares, binds and reads the statement, keeping at most `max_rows` rows and `max_bytes` of
/// them.
async fn rows(
    conn: &mut sqlx::PgConnection,
    settings: &SqlQuerySettings,
    sql: &str,
    params: &[Value],
) -> Result<Value, String> {
    let statement = conn
        .prepare(sqlx::SqlSafeStr::into_sql_str(AssertSqlSafe(
            sql.to_owned(),
        )))
        .await
        .map_err(|e| describe(&e))?;
    let types = match statement.parameters() {
        Some(Either::Left(types)) => types.to_vec(),
        _ => Vec::new(),
    };
    let args = params::bind(&types, params)?;
    let columns: Vec<Value> = statement
        .columns()
        .iter()
        .map(|c| json!({"name": c.name(), "type": c.type_info().to_string().to_lowercase()}))
        .collect();
    if columns.is_empty() {
        let query = sqlx::query_with(AssertSqlSafe(sql.to_owned()), args);
        let done = query.execute(&mut *conn).await.map_err(|e| describe(&e))?;
        return Ok(
            json!({"columns": [], "rows": [], "row_count": 0, "truncated": false,
                   "rows_affected": done.rows_affected()}),
        );
    }
    let checked = size_checked(sql, columns.len(), settings.max_rows, settings.max_bytes);
    let query = sqlx::query_with(AssertSqlSafe(checked), args);
    let mut stream = query.fetch(&mut *conn);
    let (mut rows, mut bytes, mut truncated) = (Vec::new(), 2usize, None);
    while let Some(row) = stream.try_next().await.map_err(|e| describe(&e))? {
        if rows.len() == settings.max_rows {
            truncated = Some(format!("more than {} rows", settings.max_rows));
            break;
        }
        let fits: bool = row.try_get(columns.len()).unwrap_or(false);
        if !fits {
            truncated = Some(format!("a row of more than {} bytes", settings.max_bytes));
            break;
        }
        let values: Vec<Value> = (0..columns.len())
            .map(|i| match row.try_get_raw(i) {
                Ok(raw) if raw.is_null() => Value::Null,
                Ok(raw) => types::to_json(&raw.type_info(), raw.as_bytes().ok()),
                Err(_) => Value::Null,
            })
            .collect();
        let size = serde_json::to_string(&values)
            .map(|s| s.len() + 1)
            .unwrap_or(0);
        if bytes + size > settings.max_bytes {
            truncated = Some(format!("more than {} bytes of rows", settings.max_bytes));
            break;
        }
        bytes += size;
        rows.push(Value::Array(values));
    }
    drop(stream);
    let mut result = json!({
        "columns": columns,
        "row_count": rows.len(),
        "rows": rows,
        "truncated": truncated.is_some(),
    });
    if let (Some(why), Some(object)) = (&truncated, result.as_object_mut()) {
        object.insert(
            "note".into(),
            json!(format!(
                "stopped at {why}: aggregate, filter, select fewer columns or add LIMIT/OFFSET"
            )),
        );
    }
    Ok(result)
}
