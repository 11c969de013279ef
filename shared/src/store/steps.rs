//! Step rows, keyed `(session_id, step_index)`. Decide and act each write once: a second writer's
//! insert or update does nothing, and everyone reads back the stored value. A step's tool calls
//! run in order; each call's start and result are recorded with a compare-and-set on its index,
//! so a call whose start is recorded but whose result is not had its outcome lost to a crash.

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use uuid::Uuid;

use super::lease::{Lease, LeaseLost};
use super::{Store, WriteError, pg_safe};
use crate::schemas::ToolCall;

/// What the model decided at a step.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub thought: Option<String>,
    /// The model's turn as replayed into later prompts (content blocks).
    pub llm_content: serde_json::Value,
    /// The tool calls, in order; empty for a final answer.
    pub actions: Vec<ToolCall>,
    pub is_final: bool,
    pub final_answer: Option<String>,
    /// What the model said when it was not what we asked for (repaired or not).
    pub invalid_output: Option<String>,
    pub started_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct StepRow {
    pub step_index: i32,
    pub thought: Option<String>,
    pub llm_content: Json<serde_json::Value>,
    pub actions: Json<Vec<ToolCall>>,
    pub is_final: bool,
    pub final_answer: Option<String>,
    /// Results of the calls that finished, in call order.
    pub observations: Json<Vec<serde_json::Value>>,
    /// How many calls have started (a started call without a result had its outcome lost).
    pub calls_started: i32,
    pub finished_at: Option<DateTime<Utc>>,
    /// `approved` or `rejected`, once a human decided.
    pub approval: Option<String>,
    pub approval_reason: Option<String>,
}

impl StepRow {
    /// Every call has its result.
    pub fn acted(&self) -> bool {
        self.observations.0.len() >= self.actions.0.len()
    }
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
        let actions =
            pg_safe::to_json(&decision.actions).map_err(|e| sqlx::Error::Encode(e.into()))?;
        let thought = pg_safe::opt_text(decision.thought.as_deref());
        let final_answer = pg_safe::opt_text(decision.final_answer.as_deref());
        let invalid_output = pg_safe::opt_text(decision.invalid_output.as_deref());
        let llm_content = pg_safe::json(&decision.llm_content);
        sqlx::query!(
            "INSERT INTO steps (session_id, step_index, thought, llm_content, action, actions,
                                is_final, final_answer, invalid_output, started_at, finished_at)
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, CASE WHEN $5::jsonb IS NULL THEN now() END
             WHERE EXISTS (SELECT 1 FROM sessions WHERE id = $1 AND fence = $11)
             ON CONFLICT (session_id, step_index) DO NOTHING",
            session_id,
            step as i32,
            thought.as_deref(),
            Json(&llm_content) as _,
            actions.get(0).map(Json) as _,
            Json(&actions) as _,
            decision.is_final,
            final_answer.as_deref(),
            invalid_output.as_deref(),
            decision.started_at,
            lease.fence,
        )
        .execute(&self.pg)
        .await?;
        match self.step(session_id, step).await? {
            Some(stored) => Ok(stored),
            None => Err(LeaseLost(session_id).into()),
        }
    }

    pub async fn step(&self, session_id: Uuid, step: u32) -> sqlx::Result<Option<StepRow>> {
        let mut rows = self.steps_between(session_id, step, step + 1).await?;
        Ok(rows.pop())
    }

    /// Every step before `before`, in order: the history a prompt is built from.
    pub async fn steps_before(&self, session_id: Uuid, before: u32) -> sqlx::Result<Vec<StepRow>> {
        self.steps_between(session_id, 0, before).await
    }

    /// Steps `from..to`, in order.
    async fn steps_between(
        &self,
        session_id: Uuid,
        from: u32,
        to: u32,
    ) -> sqlx::Result<Vec<StepRow>> {
        sqlx::query_as!(
            StepRow,
            r#"SELECT step_index, thought, llm_content AS "llm_content: Json<serde_json::Value>",
                      actions AS "actions: Json<Vec<ToolCall>>", is_final, final_answer,
                      observations AS "observations: Json<Vec<serde_json::Value>>",
                      calls_started, finished_at, approval, approval_reason
               FROM steps WHERE session_id = $1 AND step_index >= $2 AND step_index < $3
               ORDER BY step_index"#,
            session_id,
            from as i32,
            to as i32,
        )
        .fetch_all(&self.pg)
        .await
    }

    /// Marks call `call` of the step as started; false if an earlier attempt already had (its
    /// outcome unknown).
    pub async fn mark_call_started(
        &self,
        lease: &Lease,
        step: u32,
        call: usize,
    ) -> Result<bool, WriteError> {
        let updated = sqlx::query!(
            "UPDATE steps SET calls_started = $3 + 1, tool_started_at = coalesce(tool_started_at, now())
             WHERE session_id = $1 AND step_index = $2 AND calls_started = $3
               AND EXISTS (SELECT 1 FROM sessions WHERE id = $1 AND fence = $4)",
            lease.session_id,
            step as i32,
            call as i32,
            lease.fence,
        )
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

    /// Stores the result of call `call` unless one is stored; returns every stored result.
    #[tracing::instrument(skip_all, fields(session_id = %lease.session_id, step, call))]
    pub async fn record_call_observation(
        &self,
        lease: &Lease,
        step: u32,
        call: usize,
        observation: &serde_json::Value,
    ) -> Result<Vec<serde_json::Value>, WriteError> {
        let session_id = lease.session_id;
        let observation = pg_safe::json(observation);
        let updated = sqlx::query!(
            "UPDATE steps SET observations = observations || jsonb_build_array($4::jsonb),
                 observation = coalesce(observation, $4),
                 finished_at = CASE WHEN jsonb_array_length(observations) + 1 >= jsonb_array_length(actions)
                                    THEN now() END
             WHERE session_id = $1 AND step_index = $2 AND jsonb_array_length(observations) = $3
               AND EXISTS (SELECT 1 FROM sessions WHERE id = $1 AND fence = $5)",
            session_id,
            step as i32,
            call as i32,
            Json(&observation) as _,
            lease.fence,
        )
        .execute(&self.pg)
        .await?;
        if updated.rows_affected() == 0 && !self.holds_lease(lease).await? {
            return Err(LeaseLost(session_id).into());
        }
        let stored = self.step(session_id, step).await?;
        Ok(stored.map(|s| s.observations.0).unwrap_or_default())
    }
}
