//! Step rows, keyed `(session_id, step_index)`. Decide and act each write once: a second writer's
//! insert or update does nothing, and everyone reads back the stored value.

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use uuid::Uuid;

use super::lease::{Lease, LeaseLost};
use super::{Store, WriteError};
use crate::schemas::ToolCall;

/// What the model decided at a step.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub thought: Option<String>,
    /// The model's content blocks as returned, replayed into later prompts.
    pub llm_content: serde_json::Value,
    pub action: Option<ToolCall>,
    /// Provider id of the tool call (`tool_use.id`), kept inside `llm_content`.
    pub is_final: bool,
    pub final_answer: Option<String>,
    pub started_at: DateTime<Utc>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StepRow {
    pub step_index: i32,
    pub thought: Option<String>,
    pub llm_content: Json<serde_json::Value>,
    pub action: Option<Json<ToolCall>>,
    pub is_final: bool,
    pub final_answer: Option<String>,
    pub observation: Option<Json<serde_json::Value>>,
    pub tool_started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// `approved` or `rejected`, once a human decided.
    pub approval: Option<String>,
    pub approval_reason: Option<String>,
}

macro_rules! step_columns {
    () => {
        "step_index, thought, llm_content, action, is_final, final_answer, observation, \
         tool_started_at, finished_at, approval, approval_reason"
    };
}

impl Store {
    /// Stores the decision unless one is already stored, then returns the stored one.
    #[tracing::instrument(skip_all, fields(session_id = %lease.session_id, step))]
    pub async fn insert_decision(
        &self,
        lease: &Lease,
        step: u32,
        decision: &Decision,
    ) -> Result<StepRow, WriteError> {
        let session_id = lease.session_id;
        sqlx::query(
            "INSERT INTO steps (session_id, step_index, thought, llm_content, action, is_final,
                                final_answer, started_at, finished_at)
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, CASE WHEN $5::jsonb IS NULL THEN now() END
             WHERE EXISTS (SELECT 1 FROM sessions WHERE id = $1 AND fence = $9)
             ON CONFLICT (session_id, step_index) DO NOTHING",
        )
        .bind(session_id)
        .bind(step as i32)
        .bind(&decision.thought)
        .bind(Json(&decision.llm_content))
        .bind(decision.action.as_ref().map(Json))
        .bind(decision.is_final)
        .bind(&decision.final_answer)
        .bind(decision.started_at)
        .bind(lease.fence)
        .execute(&self.pg)
        .await?;
        match self.step(session_id, step).await? {
            Some(stored) => Ok(stored),
            None => Err(LeaseLost(session_id).into()),
        }
    }

    pub async fn step(&self, session_id: Uuid, step: u32) -> sqlx::Result<Option<StepRow>> {
        sqlx::query_as(concat!(
            "SELECT ",
            step_columns!(),
            " FROM steps WHERE session_id = $1 AND step_index = $2"
        ))
        .bind(session_id)
        .bind(step as i32)
        .fetch_optional(&self.pg)
        .await
    }

    /// Every step before `before`, in order: the history a prompt is built from.
    pub async fn steps_before(&self, session_id: Uuid, before: u32) -> sqlx::Result<Vec<StepRow>> {
        sqlx::query_as(concat!(
            "SELECT ",
            step_columns!(),
            " FROM steps WHERE session_id = $1 AND step_index < $2
             ORDER BY step_index"
        ))
        .bind(session_id)
        .bind(before as i32)
        .fetch_all(&self.pg)
        .await
    }

    /// Marks the tool as started; false if an earlier attempt already had (its outcome unknown).
    pub async fn mark_tool_started(&self, lease: &Lease, step: u32) -> Result<bool, WriteError> {
        let updated = sqlx::query(
            "UPDATE steps SET tool_started_at = now()
             WHERE session_id = $1 AND step_index = $2 AND tool_started_at IS NULL
               AND EXISTS (SELECT 1 FROM sessions WHERE id = $1 AND fence = $3)",
        )
        .bind(lease.session_id)
        .bind(step as i32)
        .bind(lease.fence)
        .execute(&self.pg)
        .await?;
        if updated.rows_affected() == 1 {
            return Ok(true);
        }
        if !self.holds_lease(lease).await? {
            return Err(LeaseLost(lease.session_id).into());
        }
        Ok(false)
    }

    /// Stores the observation unless one is already stored, then returns the stored one.
    #[tracing::instrument(skip_all, fields(session_id = %lease.session_id, step))]
    pub async fn record_observation(
        &self,
        lease: &Lease,
        step: u32,
        observation: &serde_json::Value,
    ) -> Result<serde_json::Value, WriteError> {
        let session_id = lease.session_id;
        let stored: Option<Json<serde_json::Value>> = sqlx::query_scalar(
            "WITH written AS (
                 UPDATE steps SET observation = $3, finished_at = now()
                 WHERE session_id = $1 AND step_index = $2 AND observation IS NULL
                   AND EXISTS (SELECT 1 FROM sessions WHERE id = $1 AND fence = $4)
                 RETURNING observation)
             SELECT observation FROM written
             UNION ALL
             SELECT observation FROM steps
             WHERE session_id = $1 AND step_index = $2 AND observation IS NOT NULL
             LIMIT 1",
        )
        .bind(session_id)
        .bind(step as i32)
        .bind(Json(observation))
        .bind(lease.fence)
        .fetch_optional(&self.pg)
        .await?;
        stored
            .map(|s| s.0)
            .ok_or_else(|| LeaseLost(session_id).into())
    }
}
