//! Session rows. Every status change is a compare-and-set that never leaves a terminal state, and
//! bumps `version` so the Redis snapshot can tell newer from older.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::types::Json;
use uuid::Uuid;

use super::Store;
use crate::schemas::{
    AgentSession, AgentStep, SessionError, SessionStatus, ToolCall, Totals, Usage, ValidatedRun,
};

macro_rules! unfinished {
    () => {
        "status IN ('pending', 'running', 'awaiting_approval')"
    };
}

/// What a worker needs to run a step.
#[derive(Debug, Clone)]
pub struct SessionRow {
    pub id: Uuid,
    pub org_id: Uuid,
    pub status: SessionStatus,
    pub run: ValidatedRun,
    pub next_step: u32,
    pub cancel_requested: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The flag is set; the worker stops the session at its next check.
    Requested,
    AlreadyFinished(SessionStatus),
    NotFound,
}

#[derive(sqlx::FromRow)]
struct SessionRecord {
    id: Uuid,
    org_id: Uuid,
    status: String,
    model: String,
    request: Json<ValidatedRun>,
    next_step: i32,
    final_answer: Option<String>,
    error_code: Option<String>,
    error_message: Option<String>,
    cancel_requested: bool,
    version: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl SessionRecord {
    fn status(&self) -> SessionStatus {
        SessionStatus::parse(&self.status).unwrap_or(SessionStatus::Failed)
    }
}

#[derive(sqlx::FromRow)]
struct StepView {
    step_index: i32,
    thought: Option<String>,
    action: Option<Json<ToolCall>>,
    observation: Option<Json<serde_json::Value>>,
    is_final: bool,
    final_answer: Option<String>,
    started_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct CallSums {
    step_index: i32,
    calls: i64,
    input_tokens: i64,
    output_tokens: i64,
    cache_read_tokens: i64,
    cache_write_tokens: i64,
    unpriced: bool,
    cost_usd: Option<Decimal>,
}

impl CallSums {
    fn usage(&self) -> Usage {
        Usage {
            input_tokens: self.input_tokens as u64,
            output_tokens: self.output_tokens as u64,
            cache_read_tokens: self.cache_read_tokens as u64,
            cache_write_tokens: self.cache_write_tokens as u64,
        }
    }

    fn cost(&self) -> Option<Decimal> {
        if self.unpriced {
            None
        } else {
            Some(self.cost_usd.unwrap_or_default())
        }
    }
}

impl Store {
    #[tracing::instrument(skip_all, fields(session_id = %id))]
    pub async fn insert_session(
        &self,
        id: Uuid,
        org_id: Uuid,
        run: &ValidatedRun,
    ) -> sqlx::Result<()> {
        sqlx::query(
            "INSERT INTO sessions (id, org_id, model, request, max_steps) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(org_id)
        .bind(&run.model)
        .bind(Json(run))
        .bind(run.max_steps as i32)
        .execute(&self.pg)
        .await?;
        Ok(())
    }

    async fn session_record(&self, id: Uuid) -> sqlx::Result<Option<SessionRecord>> {
        sqlx::query_as("SELECT * FROM sessions WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pg)
            .await
    }

    pub async fn session_row(&self, id: Uuid) -> sqlx::Result<Option<SessionRow>> {
        Ok(self.session_record(id).await?.map(|r| SessionRow {
            id: r.id,
            org_id: r.org_id,
            status: r.status(),
            next_step: r.next_step as u32,
            cancel_requested: r.cancel_requested,
            run: r.request.0,
        }))
    }

    /// The whole session as clients see it, read from Postgres.
    #[tracing::instrument(skip_all, fields(session_id = %id))]
    pub async fn load_session(&self, id: Uuid) -> sqlx::Result<Option<AgentSession>> {
        let Some(record) = self.session_record(id).await? else {
            return Ok(None);
        };
        let steps: Vec<StepView> = sqlx::query_as(
            "SELECT step_index, thought, action, observation, is_final, final_answer, started_at,
                    finished_at
             FROM steps WHERE session_id = $1 ORDER BY step_index",
        )
        .bind(id)
        .fetch_all(&self.pg)
        .await?;
        let sums: Vec<CallSums> = sqlx::query_as(
            "SELECT step_index, count(*) AS calls,
                    sum(input_tokens)::bigint AS input_tokens,
                    sum(output_tokens)::bigint AS output_tokens,
                    sum(cache_read_tokens)::bigint AS cache_read_tokens,
                    sum(cache_write_tokens)::bigint AS cache_write_tokens,
                    bool_or(cost_usd IS NULL) AS unpriced,
                    sum(cost_usd) AS cost_usd
             FROM llm_calls WHERE session_id = $1 GROUP BY step_index ORDER BY step_index",
        )
        .bind(id)
        .fetch_all(&self.pg)
        .await?;

        let mut usage = Usage::default();
        let mut cost = Some(Decimal::ZERO);
        let mut llm_calls = 0;
        for sum in &sums {
            usage.add(sum.usage());
            cost = cost.zip(sum.cost()).map(|(a, b)| a + b);
            llm_calls += sum.calls as u32;
        }
        let steps: Vec<AgentStep> = steps
            .into_iter()
            .map(|s| {
                let sum = sums.iter().find(|c| c.step_index == s.step_index);
                AgentStep {
                    index: s.step_index as u32,
                    thought: s.thought,
                    action: s.action.map(|a| a.0),
                    observation: s.observation.map(|o| o.0),
                    is_final: s.is_final,
                    final_answer: s.final_answer,
                    usage: sum.map(CallSums::usage).unwrap_or_default(),
                    cost_usd: sum.map_or(Some(Decimal::ZERO), CallSums::cost),
                    started_at: s.started_at,
                    finished_at: s.finished_at,
                }
            })
            .collect();
        let status = record.status();
        Ok(Some(AgentSession {
            session_id: record.id,
            org_id: record.org_id,
            status,
            model: record.model,
            cancel_requested: record.cancel_requested,
            totals: Totals {
                steps: steps.len() as u32,
                input_tokens: usage.input_tokens,
                output_tokens: usage.output_tokens,
                cache_read_tokens: usage.cache_read_tokens,
                cache_write_tokens: usage.cache_write_tokens,
                cost_usd: cost.map(|c| c.normalize()),
                llm_calls,
            },
            steps,
            final_answer: record.final_answer,
            error: record.error_code.map(|code| SessionError {
                code,
                message: record.error_message.unwrap_or_default(),
            }),
            created_at: record.created_at,
            updated_at: record.updated_at,
            version: record.version,
        }))
    }

    /// Sets the cancel flag of an unfinished session of this org (Postgres, then Redis).
    #[tracing::instrument(skip_all, fields(session_id = %id))]
    pub async fn request_cancel(&self, id: Uuid, org_id: Uuid) -> anyhow::Result<CancelOutcome> {
        let updated = sqlx::query(concat!(
            "UPDATE sessions SET cancel_requested = true, version = version + 1, updated_at = now()
             WHERE id = $1 AND org_id = $2 AND ",
            unfinished!()
        ))
        .bind(id)
        .bind(org_id)
        .execute(&self.pg)
        .await?
        .rows_affected();
        if updated == 1 {
            self.set_cancel_flag(id).await;
            return Ok(CancelOutcome::Requested);
        }
        Ok(match self.session_record(id).await? {
            Some(record) if record.org_id == org_id => {
                CancelOutcome::AlreadyFinished(record.status())
            }
            _ => CancelOutcome::NotFound,
        })
    }

    /// `pending` becomes `running`; any other state is left alone.
    pub async fn mark_running(&self, id: Uuid) -> sqlx::Result<bool> {
        let updated = sqlx::query(
            "UPDATE sessions SET status = 'running', version = version + 1, updated_at = now()
             WHERE id = $1 AND status = 'pending'",
        )
        .bind(id)
        .execute(&self.pg)
        .await?;
        Ok(updated.rows_affected() == 1)
    }

    /// Moves an unfinished session to a terminal state; false if it had already finished.
    #[tracing::instrument(skip_all, fields(session_id = %id, status = %status))]
    pub async fn finish_session(
        &self,
        id: Uuid,
        status: SessionStatus,
        final_answer: Option<&str>,
        error: Option<&SessionError>,
    ) -> sqlx::Result<bool> {
        debug_assert!(status.is_terminal());
        let updated = sqlx::query(concat!(
            "UPDATE sessions SET status = $2, final_answer = $3, error_code = $4, error_message = $5,
                 lease_owner = NULL, lease_until = NULL, version = version + 1, updated_at = now()
             WHERE id = $1 AND ",
            unfinished!()
        ))
        .bind(id)
        .bind(status.as_str())
        .bind(final_answer)
        .bind(error.map(|e| e.code.as_str()))
        .bind(error.map(|e| e.message.as_str()))
        .execute(&self.pg)
        .await?;
        Ok(updated.rows_affected() == 1)
    }

    /// Compare-and-set of `next_step` from `step` to `step + 1`; false if someone else advanced it
    /// or the session finished.
    #[tracing::instrument(skip_all, fields(session_id = %id, step))]
    pub async fn advance(&self, id: Uuid, step: u32) -> sqlx::Result<bool> {
        let updated = sqlx::query(concat!(
            "UPDATE sessions SET next_step = $2 + 1, version = version + 1, updated_at = now()
             WHERE id = $1 AND next_step = $2 AND ",
            unfinished!()
        ))
        .bind(id)
        .bind(step as i32)
        .execute(&self.pg)
        .await?;
        Ok(updated.rows_affected() == 1)
    }
}

impl Store {
    /// The cancel check before an LLM or tool call: the Redis flag, then Postgres (the truth,
    /// which still holds the flag if Redis lost it).
    pub async fn cancel_requested(&self, id: Uuid) -> sqlx::Result<bool> {
        if self.cancel_flagged(id).await {
            return Ok(true);
        }
        let flagged: Option<bool> =
            sqlx::query_scalar("SELECT cancel_requested FROM sessions WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pg)
                .await?;
        Ok(flagged.unwrap_or(false))
    }
}
