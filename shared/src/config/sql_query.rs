//! Settings of `sql_query`: which database the agents may query and the limits of one query.
//! The tool is offered only when `AGENTQ_SQL_TOOL_URL` is set.

use std::fmt;
use std::time::Duration;

use super::{ConfigError, Env};

#[derive(Clone, PartialEq)]
pub struct SqlQuerySettings {
    /// `AGENTQ_SQL_TOOL_URL`: the target database (not agentq's own). Recommended: a role without
    /// superuser, write or file privileges (README, "sql_query's database role").
    pub url: Option<String>,
    /// `AGENTQ_SQL_ALLOW_WRITES`: INSERT, and UPDATE/DELETE with a real WHERE; read-only otherwise.
    pub allow_writes: bool,
    /// `AGENTQ_SQL_ALLOW_SUPERUSER`: run on a superuser connection anyway (refused by default).
    pub allow_superuser: bool,
    /// `AGENTQ_SQL_STATEMENT_TIMEOUT_MS`: `SET LOCAL statement_timeout` of every query.
    pub statement_timeout: Duration,
    /// `AGENTQ_SQL_LOCK_TIMEOUT_MS`: `SET LOCAL lock_timeout` of every query.
    pub lock_timeout: Duration,
    /// `AGENTQ_SQL_MAX_ROWS`: rows returned at most; more set `truncated`.
    pub max_rows: usize,
    /// `AGENTQ_SQL_MAX_BYTES`: bytes of JSON rows returned at most; more set `truncated`.
    pub max_bytes: usize,
    /// `AGENTQ_SQL_MAX_CONNECTIONS`: connections one worker process opens to the target.
    pub max_connections: u32,
}

impl Default for SqlQuerySettings {
    fn default() -> Self {
        Self {
            url: None,
            allow_writes: false,
            allow_superuser: false,
            statement_timeout: Duration::from_secs(5),
            lock_timeout: Duration::from_secs(1),
            max_rows: 100,
            max_bytes: 50 * 1024,
            max_connections: 4,
        }
    }
}

/// Never prints the URL's password.
impl fmt::Debug for SqlQuerySettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let url = self.url.as_deref().map(|url| match url::Url::parse(url) {
            Ok(mut parsed) if parsed.password().is_some() => {
                let _ = parsed.set_password(Some("***"));
                parsed.to_string()
            }
            Ok(_) => url.to_owned(),
            Err(_) => "<malformed>".to_owned(),
        });
        f.debug_struct("SqlQuerySettings")
            .field("url", &url)
            .field("allow_writes", &self.allow_writes)
            .field("allow_superuser", &self.allow_superuser)
            .field("statement_timeout", &self.statement_timeout)
            .field("lock_timeout", &self.lock_timeout)
            .field("max_rows", &self.max_rows)
            .field("max_bytes", &self.max_bytes)
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

impl SqlQuerySettings {
    pub fn from_env<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        const URL: &str = "a Postgres URL such as postgres://agentq_reader@db.example:5432/sales";
        let defaults = Self::default();
        let url = match env.raw("AGENTQ_SQL_TOOL_URL") {
            None => None,
            Some(url) => {
                Some(env.url("AGENTQ_SQL_TOOL_URL", url, &["postgres", "postgresql"], URL)?)
            }
        };
        let positive = |var: &'static str, value: u64, expected: &'static str| {
            if value == 0 {
                Err(ConfigError::Malformed {
                    var,
                    value: "0".into(),
                    expected,
                })
            } else {
                Ok(value)
            }
        };
        let millis = |var: &'static str, default: Duration| {
            let ms = env.millis(var, default.as_millis() as u64)?.as_millis() as u64;
            positive(var, ms, "a positive whole number of milliseconds").map(Duration::from_millis)
        };
        let count = |var: &'static str, default: usize, expected: &'static str| {
            let value = env.parsed(var, default as u64, expected)?;
            positive(var, value, expected).map(|v| v as usize)
        };
        Ok(Self {
            url,
            allow_writes: env.parsed("AGENTQ_SQL_ALLOW_WRITES", false, "true or false")?,
            allow_superuser: env.parsed("AGENTQ_SQL_ALLOW_SUPERUSER", false, "true or false")?,
            statement_timeout: millis(
                "AGENTQ_SQL_STATEMENT_TIMEOUT_MS",
                defaults.statement_timeout,
            )?,
            lock_timeout: millis("AGENTQ_SQL_LOCK_TIMEOUT_MS", defaults.lock_timeout)?,
            max_rows: count(
                "AGENTQ_SQL_MAX_ROWS",
                defaults.max_rows,
                "a positive number of rows",
            )?,
            max_bytes: count(
                "AGENTQ_SQL_MAX_BYTES",
                defaults.max_bytes,
                "a positive number of bytes",
            )?,
            max_connections: count(
                "AGENTQ_SQL_MAX_CONNECTIONS",
                defaults.max_connections as usize,
                "a positive number of connections",
            )? as u32,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(pairs: &[(&str, &str)]) -> Result<SqlQuerySettings, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        SqlQuerySettings::from_env(&Env::from_fn(move |k| map.get(k).cloned()))
    }

    #[test]
    fn defaults_leave_the_tool_off_and_read_only() {
        assert_eq!(from(&[]).unwrap(), SqlQuerySettings::default());
        let on = from(&[("AGENTQ_SQL_TOOL_URL", "postgres://reader:pw@db/sales")]).unwrap();
        assert_eq!(
            (on.url.as_deref(), on.allow_writes, on.allow_superuser),
            (Some("postgres://reader:pw@db/sales"), false, false)
        );
        assert_eq!(
            (on.statement_timeout, on.max_rows, on.max_bytes),
            (Duration::from_secs(5), 100, 51200)
        );
        let debug = format!("{on:?}");
        assert!(!debug.contains("pw") && debug.contains("***"), "{debug}");
    }

    #[test]
    fn reads_every_knob_and_names_bad_variables() {
        let all = from(&[
            ("AGENTQ_SQL_TOOL_URL", "postgresql://db/x"),
            ("AGENTQ_SQL_ALLOW_WRITES", "true"),
            ("AGENTQ_SQL_ALLOW_SUPERUSER", "true"),
            ("AGENTQ_SQL_STATEMENT_TIMEOUT_MS", "250"),
            ("AGENTQ_SQL_LOCK_TIMEOUT_MS", "50"),
            ("AGENTQ_SQL_MAX_ROWS", "7"),
            ("AGENTQ_SQL_MAX_BYTES", "900"),
            ("AGENTQ_SQL_MAX_CONNECTIONS", "2"),
        ])
        .unwrap();
        assert!(all.allow_writes && all.allow_superuser);
        assert_eq!(
            (
                all.statement_timeout,
                all.lock_timeout,
                all.max_rows,
                all.max_bytes
            ),
            (
                Duration::from_millis(250),
                Duration::from_millis(50),
                7,
                900
            )
        );
        assert_eq!(all.max_connections, 2);
        for (var, value) in [
            ("AGENTQ_SQL_TOOL_URL", "mysql://db/x"),
            ("AGENTQ_SQL_ALLOW_WRITES", "yes"),
            ("AGENTQ_SQL_STATEMENT_TIMEOUT_MS", "0"),
            ("AGENTQ_SQL_MAX_ROWS", "-1"),
        ] {
            let error = from(&[(var, value)]).unwrap_err().to_string();
            assert!(error.starts_with(&format!("{var}=")), "{error}");
        }
    }
}
