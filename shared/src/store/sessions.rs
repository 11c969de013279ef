//! Session rows: creation (with `Idempotency-Key`), the worker's view and the client's view.
//! Status changes are in `transitions.rs`.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::types::Json;
use uuid::Uuid;

use super::{Store, pg_safe};
use crate::schemas::{
    AgentSession, AgentStep, CallReview, PendingApproval, PendingCall, SessionError, SessionStatus,
    StepApproval, ToolCall, Totals, Usage, ValidatedRun,
};

/// What a worker needs to run a step.
#[derive(Debug, Clone)]
pub struct SessionRow {
    pub id: Uuid,
    pub org_id: Uuid,
    pub status: SessionStatus,
    pub run: ValidatedRun,
    pub next_step: u32,
    pub cancel_requested: bool,
    pub deadline_at: DateTime<Utc>,
}

/// How `insert_session` went when the client sent an `Idempotency-Key`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    New,
    /// The key was used before with the same request: that session.
    Existing(Uuid),
    /// The key was used before with a different request.
    KeyReused,
}

#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    pub key: String,
    /// SHA-256 of the request as received (parsed and re-serialized, keys sorted).
    pub request_hash: String,
}

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
    deadline_at: DateTime<Utc>,
    approval_expires_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl SessionRecord {
    fn status(&self) -> SessionStatus {
        SessionStatus::parse(&self.status).unwrap_or(SessionStatus::Failed)
    }
}

struct StepView {
    step_index: i32,
    thought: Option<String>,
    action: Option<Json<ToolCall>>,
    observation: Option<Json<serde_json::Value>>,
    is_final: bool,
    final_answer: Option<String>,
    actions: Json<Vec<ToolCall>>,
    observations: Json<Vec<serde_json::Value>>,
    invalid_output: Option<String>,
    approval_details: Option<Json<serde_json::Value>>,
    approval: Option<String>,
    approval_reason: Option<String>,
    approved_by: Option<Uuid>,
    approved_at: Option<DateTime<Utc>>,
    started_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
}

struct CallSums {
    step_index: i32,
    calls: i64,
    input_tokens: i64,
    output_tokens: i64,
    cache_read_tokens: i64,
    cache_write_tokens: i64,
    cache_write_1h_tokens: i64,
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
            cache_write_1h_tokens: self.cache_write_1h_tokens as u64,
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
    /// Writes a new session; with an idempotency key, the key's first use wins and a repeat
    /// returns the first session (or `KeyReused` for a different request).
    #[tracing::instrument(skip_all, fields(session_id = %id))]
    pub async fn insert_session(
        &self,
        id: Uuid,
        org_id: Uuid,
        run: &ValidatedRun,
        deadline_at: DateTime<Utc>,
        idempotency: Option<&IdempotencyKey>,
    ) -> sqlx::Result<Created> {
        let request = pg_safe::to_json(run).map_err(|e| sqlx::Error::Encode(e.into()))?;
        let model = pg_safe::text(&run.model);
        let mut tx = self.pg.begin().await?;
        sqlx::query!(
            "INSERT INTO sessions (id, org_id, model, request, max_steps, deadline_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
            id,
            org_id,
            model.as_ref(),
            Json(request) as _,
            run.max_steps as i32,
            deadline_at,
        )
        .execute(&mut *tx)
        .await?;
        if let Some(idempotency) = idempotency {
            let claimed = sqlx::query!(
                "INSERT INTO idempotency_keys (org_id, key, request_hash, session_id)
                 VALUES ($1, $2, $3, $4) ON CONFLICT (org_id, key) DO NOTHING",
                org_id,
                idempotency.key,
                idempotency.request_hash,
                id,
            )
            .execute(&mut *tx)
            .await?;
            if claimed.rows_affected() == 0 {
                tx.rollback().await?;
                let first = sqlx::query!(
                    "SELECT request_hash, session_id FROM idempotency_keys WHERE org_id = $1 AND key = $2",
                    org_id,
                    idempotency.key,
                )
                .fetch_one(&self.pg)
                .await?;
                return Ok(if first.request_hash == idempotency.request_hash {
                    Created::Existing(first.session_id)
                } else {
                    Created::KeyReused
                });
            }
        }
        tx.commit().await?;
        Ok(Created::New)
    }

    async fn session_record(&self, id: Uuid) -> sqlx::Result<Option<SessionRecord>> {
        sqlx::query_as!(
            SessionRecord,
            r#"SELECT id, org_id, status, model, request AS "request: Json<ValidatedRun>", next_step,
                      final_answer, error_code, error_message, cancel_requested, version,
                      deadline_at, approval_expires_at, created_at, updated_at
               FROM sessions WHERE id = $1"#,
            id,
        )
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
            deadline_at: r.deadline_at,
            run: r.request.0,
        }))
    }

    /// The whole session as clients see it, read from Postgres.
    #[tracing::instrument(skip_all, fields(session_id = %id))]
    pub async fn load_session(&self, id: Uuid) -> sqlx::Result<Option<AgentSession>> {
        let Some(record) = self.session_record(id).await? else {
            return Ok(None);
        };
        let steps = sqlx::query_as!(
            StepView,
            r#"SELECT step_index, thought, action AS "action: Json<ToolCall>",
                      observation AS "observation: Json<serde_json::Value>",
                      actions AS "actions: Json<Vec<ToolCall>>",
                      observations AS "observations: Json<Vec<serde_json::Value>>",
                      invalid_output, approval_details AS "approval_details: Json<serde_json::Value>",
                      is_final, final_answer, approval, approval_reason, approved_by, approved_at,
                      started_at, finished_at
               FROM steps WHERE session_id = $1 ORDER BY step_index"#,
            id,
        )
        .fetch_all(&self.pg)
        .await?;
        let sums = sqlx::query_as!(
            CallSums,
            r#"SELECT step_index, count(*) AS "calls!",
                      sum(input_tokens)::bigint AS "input_tokens!",
                      sum(output_tokens)::bigint AS "output_tokens!",
                      sum(cache_read_tokens)::bigint AS "cache_read_tokens!",
                      sum(cache_write_tokens)::bigint AS "cache_write_tokens!",
                      sum(cache_write_1h_tokens)::bigint AS "cache_write_1h_tokens!",
                      bool_or(cost_usd IS NULL) AS "unpriced!",
                      sum(cost_usd) AS cost_usd
               FROM llm_calls WHERE session_id = $1 GROUP BY step_index ORDER BY step_index"#,
            id,
        )
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
        let status = record.status();
        let pending_approval = match (status, record.approval_expires_at) {
            (SessionStatus::AwaitingApproval, Some(expires_at)) => steps
                .iter()
                .find(|s| s.step_index == record.next_step)
                .and_then(|s| {
                    pending_approval(
                        record.next_step as u32,
                        &s.actions.0,
                        s.approval_details.as_ref().map(|d| &d.0),
                        expires_at,
                    )
                }),
            _ => None,
        };
        let steps: Vec<AgentStep> = steps
            .into_iter()
            .map(|s| {
                let sum = sums.iter().find(|c| c.step_index == s.step_index);
                AgentStep {
                    index: s.step_index as u32,
                    thought: s.thought,
                    action: s.action.map(|a| a.0),
                    observation: s.observation.map(|o| o.0),
                    // Listed only when the model made several calls in one turn.
                    actions: if s.actions.0.len() > 1 {
                        s.actions.0
                    } else {
                        Vec::new()
                    },
                    observations: if s.observations.0.len() > 1 {
                        s.observations.0
                    } else {
                        Vec::new()
                    },
                    invalid_output: s.invalid_output,
                    is_final: s.is_final,
                    final_answer: s.final_answer,
                    usage: sum.map(CallSums::usage).unwrap_or_default(),
                    cost_usd: sum.map_or(Some(Decimal::ZERO), CallSums::cost),
                    approval: s.approved_at.map(|decided_at| StepApproval {
                        approved: s.approval.as_deref() == Some("approved"),
                        reason: s.approval_reason,
                        decided_by: s.approved_by,
                        decided_at,
                    }),
                    started_at: s.started_at,
                    finished_at: s.finished_at,
                }
            })
            .collect();
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
            pending_approval,
            deadline_at: record.deadline_at,
            created_at: record.created_at,
            updated_at: record.updated_at,
            version: record.version,
        }))
    }
}

/// The turn a session waits on: every call, with what the worker stored about each when it held
/// the turn for approval (`approval_details`: one `CallReview` per call; a single object in rows
/// written before calls were listed, which then describes the first call).
fn pending_approval(
    step: u32,
    actions: &[ToolCall],
    reviews: Option<&serde_json::Value>,
    expires_at: DateTime<Utc>,
) -> Option<PendingApproval> {
    let reviews: Vec<CallReview> = match reviews {
        Some(serde_json::Value::Array(_)) => reviews
            .and_then(|r| serde_json::from_value(r.clone()).ok())
            .unwrap_or_default(),
        legacy => vec![CallReview {
            id: None,
            requires_approval: true,
            details: legacy.cloned(),
        }],
    };
    let calls: Vec<PendingCall> = actions
        .iter()
        .enumerate()
        .map(|(i, call)| {
            let review = reviews.get(i);
            PendingCall {
                call: i as u32,
                id: review.and_then(|r| r.id.clone()),
                tool: call.tool.clone(),
                args: call.args.clone(),
                requires_approval: review.is_none_or(|r| r.requires_approval),
                details: review.and_then(|r| r.details.clone()),
            }
        })
        .collect();
    let first = calls
        .iter()
        .find(|c| c.requires_approval)
        .or(calls.first())?;
    Some(PendingApproval {
        step,
        tool: first.tool.clone(),
        args: first.args.clone(),
        details: first.details.clone(),
        calls: calls.clone(),
        expires_at,
    })
}
