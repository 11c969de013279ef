//! Step rows, keyed `(session_id, step_index)`. Decide and act each write once: a second writer's
//! insert or update does nothing, and everyone reads back the stored value.

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use uuid::Uuid;

use super::Store;
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
}

macro_rules! step_columns {
    () => {
        "step_index, thought, llm_content, action, is_final, final_answer, observation, \
         tool_started_at, finished_at"
    };
}

impl Store {
    /// Stores the decision unless one is already stored, then returns the stored one.
    #[tracing::instrument(skip_all, fields(session_id = %session_id, step))]
    pub async fn insert_decision(
        &self,
        session_id: Uuid,
        step: u32,
        decision: &Decision,
    ) -> sqlx::Result<StepRow> {
        sqlx::query(
            "INSERT INTO steps (session_id, step_index, thought, llm_content, action, is_final,
                                final_answer, started_at, finished_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, CASE WHEN $5::jsonb IS NULL THEN now() END)
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
        .execute(&self.pg)
        .await?;
        let stored = self.step(session_id, step).await?;
        stored.ok_or(sqlx::Error::RowNotFound)
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
    pub async fn mark_tool_started(&self, session_id: Uuid, step: u32) -> sqlx::Result<bool> {
        let updated = sqlx::query(
            "UPDATE steps SET tool_started_at = now()
             WHERE session_id = $1 AND step_index = $2 AND tool_started_at IS NULL",
        )
        .bind(session_id)
        .bind(step as i32)
        .execute(&self.pg)
        .await?;
        Ok(updated.rows_affected() == 1)
    }

    /// Stores the observation unless one is already stored, then returns the stored one.
    #[tracing::instrument(skip_all, fields(session_id = %session_id, step))]
    pub async fn record_observation(
        &self,
        session_id: Uuid,
        step: u32,
        observation: &serde_json::Value,
    ) -> sqlx::Result<serde_json::Value> {
        let stored: Json<serde_json::Value> = sqlx::query_scalar(
            "WITH written AS (
                 UPDATE steps SET observation = $3, finished_at = now()
                 WHERE session_id = $1 AND step_index = $2 AND observation IS NULL
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
        .fetch_one(&self.pg)
        .await?;
        Ok(stored.0)
    }
}
