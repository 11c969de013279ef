//! The SQL policy: which statements `sql_query` lets through, decided on the parsed statement
//! before anything reaches the database. Every refusal names its [`Rule`].
//!
//! - The input is parsed with sqlparser's PostgreSQL dialect; unparseable input is refused.
//! - Exactly one statement. Only SELECT/VALUES/TABLE queries pass, plus INSERT, and UPDATE or
//!   DELETE with a real WHERE when writes are allowed. Everything else (DDL, GRANT, COPY, CALL,
//!   SET, transaction control, LISTEN/NOTIFY, VACUUM, LOCK, ...) is refused by its first keyword
//!   (`statements.rs`).
//! - Inside the statement (`walk.rs`): writable CTEs, `SELECT ... INTO`, `FOR UPDATE/SHARE`,
//!   and calls of dangerous functions (`functions.rs`), including table functions in FROM and
//!   the functional notation `(value).function`.
//! - What runs is the parser's own rendering of the checked statement, re-parsed to the same
//!   tree: a lexing trick the parser reads differently from Postgres (comments, quoting,
//!   escapes) cannot hide code, because that code is not in the text that runs. `U&"..."`
//!   identifiers, whose escapes the parser leaves undecoded, are refused outright.
//!
//! The database enforces the rest: one statement per extended-protocol query, a `READ ONLY`
//! transaction, the timeouts, and the privileges of the role (README, "sql_query's database role").

use std::fmt;
use std::time::Duration;

use agentq_shared::config::SqlQuerySettings;
use serde::Serialize;
use sqlparser::ast::Statement;
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, Tokenizer};

use super::statements::statement_kind;
use super::{walk, where_clause};

/// The rules a statement can be refused by; `name()` is what the agent and the approver see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    Unparseable,
    SingleStatement,
    Ddl,
    Privileges,
    Copy,
    ServerCode,
    SessionSettings,
    TransactionControl,
    ListenNotify,
    Maintenance,
    Lock,
    WritableCte,
    SelectInto,
    UnboundedWrite,
    DangerousFunction,
    SleepBeyondTimeout,
    ReadOnly,
    StatementNotAllowed,
    UnstableRendering,
    UnicodeEscape,
}

impl Rule {
    pub fn name(self) -> &'static str {
        match self {
            Rule::Unparseable => "unparseable",
            Rule::SingleStatement => "single_statement",
            Rule::Ddl => "ddl",
            Rule::Privileges => "privileges",
            Rule::Copy => "copy",
            Rule::ServerCode => "server_code",
            Rule::SessionSettings => "session_settings",
            Rule::TransactionControl => "transaction_control",
            Rule::ListenNotify => "listen_notify",
            Rule::Maintenance => "maintenance",
            Rule::Lock => "lock",
            Rule::WritableCte => "writable_cte",
            Rule::SelectInto => "select_into",
            Rule::UnboundedWrite => "unbounded_write",
            Rule::DangerousFunction => "dangerous_function",
            Rule::SleepBeyondTimeout => "sleep_beyond_timeout",
            Rule::ReadOnly => "read_only",
            Rule::StatementNotAllowed => "statement_not_allowed",
            Rule::UnstableRendering => "unstable_rendering",
            Rule::UnicodeEscape => "unicode_escape",
        }
    }
}

/// Why a statement was refused, before anything ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refusal {
    pub rule: Rule,
    pub detail: String,
}

impl Refusal {
    pub(crate) fn new(rule: Rule, detail: impl Into<String>) -> Self {
        Self {
            rule,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sql_query refused the statement (rule {}): {}",
            self.rule.name(),
            self.detail
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    ReadOnly,
    Write,
}

/// What an allowed statement is, for the approver and the executor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Classification {
    /// SELECT, INSERT, UPDATE or DELETE.
    pub statement: &'static str,
    pub access: Access,
    /// Relations the statement names, as written.
    pub tables: Vec<String>,
    /// Functions it calls, lower-cased.
    pub functions: Vec<String>,
    /// The exact text that runs: the parser's rendering of the checked statement.
    pub normalized: String,
}

/// What the policy depends on in the settings.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub allow_writes: bool,
    /// `pg_sleep(n)` passes only with a literal `n` up to this.
    pub max_sleep: Duration,
}

impl From<&SqlQuerySettings> for Limits {
    fn from(settings: &SqlQuerySettings) -> Self {
        Self {
            allow_writes: settings.allow_writes,
            max_sleep: settings.statement_timeout,
        }
    }
}

/// Checks `query` against the policy for these settings: the classification when it may run
/// (after a human's approval), or the rule that refuses it.
pub fn classify(query: &str, settings: &SqlQuerySettings) -> Result<Classification, Refusal> {
    check(query, Limits::from(settings))
}

pub(crate) fn check(query: &str, limits: Limits) -> Result<Classification, Refusal> {
    let statement = parse_one(query)?;
    refuse_escaped_identifiers(query)?;
    let normalized = statement.to_string();
    // The rendering must parse back to itself, or what runs is not what was checked.
    match parse_one(&normalized) {
        Ok(again) if again == statement => {}
        _ => {
            return Err(Refusal::new(
                Rule::UnstableRendering,
                "the statement does not survive a parse/render round trip; write it more plainly",
            ));
        }
    }
    let (kind, access) = statement_kind(&statement)?;
    let found = walk::walk(&statement, limits)?;
    if let Statement::Update(update) = &statement {
        where_clause::check(update.selection.as_ref(), "UPDATE")?;
    }
    if let Statement::Delete(delete) = &statement {
        where_clause::check(delete.selection.as_ref(), "DELETE")?;
    }
    if access == Access::Write && !limits.allow_writes {
        return Err(Refusal::new(
            Rule::ReadOnly,
            format!(
                "{kind} writes, and this deployment is read-only (AGENTQ_SQL_ALLOW_WRITES is off)"
            ),
        ));
    }
    Ok(Classification {
        statement: kind,
        access,
        tables: found.tables,
        functions: found.functions,
        normalized,
    })
}

fn parse_one(query: &str) -> Result<Statement, Refusal> {
    let statements = Parser::parse_sql(&PostgreSqlDialect {}, query).map_err(|e| {
        Refusal::new(
            Rule::Unparseable,
            format!("not valid PostgreSQL as far as the parser can tell ({e})"),
        )
    })?;
    let count = statements.len();
    let mut statements = statements.into_iter();
    match (statements.next(), count) {
        (Some(statement), 1) => Ok(statement),
        _ => Err(Refusal::new(
            Rule::SingleStatement,
            format!("exactly one statement is allowed, found {count}"),
        )),
    }
}

/// `U&"..."` identifiers: Postgres decodes their escapes, the parser does not (it reads
/// `U & "pg\005fread_file"(...)`), so a name could hide from the function rules.
fn refuse_escaped_identifiers(query: &str) -> Result<(), Refusal> {
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, query)
        .tokenize()
        .map_err(|e| Refusal::new(Rule::Unparseable, e.to_string()))?;
    let escaped = tokens.windows(3).any(|w| match w {
        [Token::Word(u), Token::Ampersand, Token::Word(name)] => {
            u.quote_style.is_none()
                && u.value.eq_ignore_ascii_case("u")
                && name.quote_style == Some('"')
        }
        _ => false,
    });
    if escaped {
        return Err(Refusal::new(
            Rule::UnicodeEscape,
            "U&\"...\" identifiers with Unicode escapes are not allowed; write the name plainly",
        ));
    }
    Ok(())
}
