//! The step protocol's statements. Each carries the lease's fence, so a worker that lost the
//! lease changes nothing; each returns the session's fields after it, so the worker's copy of
//! the session (and the hot copy written from it) stays exact.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use sqlx::types::Json;
use uuid::Uuid;

use super::super::durable::{Announced, DecisionStored};
use super::super::error::{StoreError, StoreResult};
use super::super::model::{
    Begin, Decision, Ending, Head, Lease, LlmCallRecord, StepRecord, StepRun,
};
use super::super::storable;
use super::rows::{self, HeadRow, SessionRow, SpendRow, state, status};
use super::{encode, ledger};
use crate::schemas::{SessionStatus, ValidatedRun};

/// Takes the lease on the session for step `step` (if it is the current step, unfinished, and
/// no one holds a live lease), marks a pending session running, and reads the whole session.
pub(super) async fn take_lease(
    pool: &PgPool,
    id: Uuid,
    step: u32,
    owner: &str,
    ttl: Duration,
) -> StoreResult<Option<StepRun>> {
    let row = sqlx::query!(
        r#"WITH taken AS (
               UPDATE sessions
               SET lease_owner = $2, lease_until = now() + make_interval(secs => $3),
                   fence = fence + 1, step_attempts = step_attempts + 1,
                   version = version + (status = 'pending')::int,
                   event_seq = event_seq + (status = 'pending')::int,
                   updated_at = CASE WHEN status = 'pending' THEN now() ELSE updated_at END,
                   status = 'running'
               WHERE id = $1 AND next_step = $4 AND status IN ('pending', 'running')
                 AND (lease_until IS NULL OR lease_until < now())
               RETURNING id, org_id, status, request, next_step, final_answer, error_code,
                         error_message, cancel_requested, version, deadline_at,
                         approval_expires_at, created_at, updated_at, fence, step_attempts,
                         event_seq
           ), started AS (
               INSERT INTO session_events (session_id, seq, kind, data)
               SELECT id, event_seq, 'status', '{"status": "running", "error": null}'::jsonb
               FROM taken WHERE updated_at = now()
           )
           SELECT id AS "id!", org_id AS "org_id!", status AS "status!",
                  request AS "request!: Json<ValidatedRun>", next_step AS "next_step!",
                  final_answer, error_code, error_message,
                  cancel_requested AS "cancel_requested!", version AS "version!",
                  deadline_at AS "deadline_at!", approval_expires_at,
                  created_at AS "created_at!", updated_at AS "updated_at!",
                  fence AS "fence!", step_attempts AS "step_attempts!",
                  (updated_at = now()) AS "became_running!",
                  agentq_steps_json(id) AS "steps!: Json<Vec<StepRecord>>",
                  agentq_spend_json(id) AS "spend!: Json<Vec<SpendRow>>"
           FROM taken"#,
        id,
        owner,
        ttl.as_secs_f64(),
        step as i32,
    )
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let lease = Lease {
        session_id: id,
        owner: owner.to_owned(),
        fence: row.fence,
        attempt: row.step_attempts.max(0) as u32,
    };
    let session = SessionRow {
        id: row.id,
        org_id: row.org_id,
        status: row.status,
        request: row.request,
        next_step: row.next_step,
        final_answer: row.final_answer,
        error_code: row.error_code,
        error_message: row.error_message,
        cancel_requested: row.cancel_requested,
        version: row.version,
        deadline_at: row.deadline_at,
        approval_expires_at: row.approval_expires_at,
        created_at: row.created_at,
        updated_at: row.updated_at,
    };
    Ok(Some(StepRun {
        lease,
        step,
        state: state(session, row.steps.0, row.spend.0)?,
        became_running: row.became_running,
        traceparent: None,
    }))
}

/// Why the lease was not taken.
pub(super) async fn why_not(pool: &PgPool, id: Uuid, step: u32) -> StoreResult<Begin> {
    let row = sqlx::query!(
        r#"SELECT status, next_step,
                  (lease_until IS NOT NULL AND lease_until >= now()) AS "held!"
           FROM sessions WHERE id = $1"#,
        id,
    )
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else {
        return Ok(Begin::Missing);
    };
    let status = status(&row.status)?;
    Ok(
        if status.is_terminal() || status == SessionStatus::AwaitingApproval {
            Begin::Idle(status)
        } else if row.next_step != step as i32 {
            Begin::NotCurrent {
                next_step: row.next_step.max(0) as u32,
            }
        } else {
            // Held, or its lease ran out between the two statements: try again.
            Begin::Held
        },
    )
}

/// Stores the decision unless one is stored, with the ledger row of the call that made it, and
/// ends the session when `ending` is given (a final answer completes it, unless a cancel came
/// first). One statement.
pub(super) async fn record_decision(
    pool: &PgPool,
    lease: &Lease,
    step: u32,
    call: Option<&LlmCallRecord>,
    decision: &Decision,
    ending: Option<&Ending>,
    events: &Announced,
) -> StoreResult<DecisionStored> {
    let session_id = lease.session_id;
    let actions = storable::to_json(&decision.actions).map_err(encode)?;
    let thought = storable::opt_text(decision.thought.as_deref());
    let final_answer = storable::opt_text(decision.final_answer.as_deref());
    let invalid_output = storable::opt_text(decision.invalid_output.as_deref());
    let llm_content = storable::json(&decision.llm_content);
    let billed = call.map(ledger::Bound::new);
    let billed = billed.as_ref();
    let (end_status, end_answer, end_code, end_message) = ending_columns(ending);
    let row = sqlx::query!(
        r#"WITH fenced AS (
               SELECT id FROM sessions
               WHERE id = $1 AND fence = $2 AND status IN ('pending', 'running')
           ), call AS (
               INSERT INTO llm_calls (session_id, step_index, model, outcome, http_status,
                   input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, cost_usd,
                   duration_ms, error, cache_write_1h_tokens)
               SELECT $1, $3, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21
               WHERE $11::text IS NOT NULL
               RETURNING id
           ), stored AS (
               INSERT INTO steps (session_id, step_index, thought, llm_content, action, actions,
                                  is_final, final_answer, invalid_output, started_at, finished_at)
               SELECT $1, $3, $4, $5, $6::jsonb -> 0, $6, $7, $8, $9, $10,
                      CASE WHEN jsonb_array_length($6::jsonb) = 0 THEN now() END
               FROM fenced
               ON CONFLICT (session_id, step_index) DO NOTHING
               RETURNING agentq_step_object(steps) AS step
           ), head AS (
               UPDATE sessions SET version = version + 1, updated_at = now(),
                   event_seq = event_seq + CASE WHEN $22::text IS NULL THEN 1 ELSE 3 END,
                   status = CASE WHEN $22::text IS NULL THEN status
                                 WHEN $22 = 'completed' AND cancel_requested THEN 'cancelled'
                                 ELSE $22 END,
                   final_answer = CASE WHEN $22::text IS NULL THEN final_answer
                                       WHEN $22 = 'completed' AND cancel_requested THEN NULL
                                       ELSE $23 END,
                   error_code = CASE WHEN $22::text IS NULL THEN error_code ELSE $24 END,
                   error_message = CASE WHEN $22::text IS NULL THEN error_message ELSE $25 END,
                   lease_owner = CASE WHEN $22::text IS NULL THEN lease_owner END,
                   lease_until = CASE WHEN $22::text IS NULL THEN lease_until END
               WHERE id = $1 AND fence = $2 AND status IN ('pending', 'running')
               RETURNING id, status, next_step, final_answer, error_code, error_message,
                         cancel_requested, version, approval_expires_at, updated_at, event_seq
           ), events AS (
               INSERT INTO session_events (session_id, seq, kind, data)
               SELECT id, event_seq - CASE WHEN $22::text IS NULL THEN 0 ELSE 2 END, 'step', $26::jsonb
               FROM head
               UNION ALL
               SELECT id, event_seq - 1, 'status', jsonb_build_object('status', status,
                   'error', CASE WHEN error_code IS NULL THEN NULL ELSE jsonb_build_object('code', error_code, 'message', error_message) END)
               FROM head WHERE $22::text IS NOT NULL
               UNION ALL
               SELECT id, event_seq, 'done', jsonb_build_object('status', status,
                   'final_answer', final_answer, 'error', CASE WHEN error_code IS NULL THEN NULL ELSE jsonb_build_object('code', error_code, 'message', error_message) END, 'totals', $27::jsonb)
               FROM head WHERE $22::text IS NOT NULL
           )
           SELECT head.id AS "id!", head.status AS "status!", head.next_step AS "next_step!",
                  head.final_answer, head.error_code, head.error_message,
                  head.cancel_requested AS "cancel_requested!", head.version AS "version!",
                  head.approval_expires_at, head.updated_at AS "updated_at!",
                  coalesce((SELECT step FROM stored),
                           (SELECT agentq_step_object(st) FROM steps st
                            WHERE st.session_id = $1 AND st.step_index = $3)) AS "step: serde_json::Value"
           FROM head"#,
        session_id,
        lease.fence,
        step as i32,
        thought.as_deref(),
        Json(&llm_content) as _,
        Json(&actions) as _,
        decision.is_final,
        final_answer.as_deref(),
        invalid_output.as_deref(),
        decision.started_at,
        billed.map(|b| b.model.as_ref()),
        billed.map(|b| b.outcome),
        billed.and_then(|b| b.http_status),
        billed.map(|b| b.input_tokens),
        billed.map(|b| b.output_tokens),
        billed.map(|b| b.cache_read_tokens),
        billed.map(|b| b.cache_write_tokens),
        billed.and_then(|b| b.cost_usd),
        billed.map(|b| b.duration_ms),
        billed.and_then(|b| b.error.as_deref()),
        billed.map(|b| b.cache_write_1h_tokens),
        end_status,
        end_answer.as_deref(),
        end_code,
        end_message.as_deref(),
        Json(storable::json(&events.step)) as _,
        events.totals.as_ref().map(Json) as _,
    )
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else {
        return Err(StoreError::LeaseLost(session_id));
    };
    let head = HeadRow {
        id: row.id,
        status: row.status,
        next_step: row.next_step,
        final_answer: row.final_answer,
        error_code: row.error_code,
        error_message: row.error_message,
        cancel_requested: row.cancel_requested,
        version: row.version,
        approval_expires_at: row.approval_expires_at,
        updated_at: row.updated_at,
    }
    .head()?;
    let step = row
        .step
        .ok_or(StoreError::LeaseLost(session_id))
        .and_then(rows::step)?;
    Ok(DecisionStored {
        step,
        head,
        spend: call.map(ledger::spend_of),
    })
}

/// `(status, final answer, error code, error message)` of an ending, each NUL-safe.
fn ending_columns(
    ending: Option<&Ending>,
) -> (
    Option<&'static str>,
    Option<String>,
    Option<&'static str>,
    Option<String>,
) {
    match ending {
        None => (None, None, None, None),
        Some(Ending::Completed { final_answer }) => (
            Some("completed"),
            Some(storable::text(final_answer).into_owned()),
            None,
            None,
        ),
        Some(Ending::Failed { code, message }) => (
            Some("failed"),
            None,
            Some(code.as_str()),
            Some(storable::text(message).into_owned()),
        ),
        Some(Ending::Cancelled) => (Some("cancelled"), None, None, None),
    }
}

pub(super) async fn mark_call_started(
    pool: &PgPool,
    lease: &Lease,
    step: u32,
    call: usize,
) -> StoreResult<bool> {
    let updated = sqlx::query!(
        "UPDATE steps SET calls_started = $3 + 1, tool_started_at = coalesce(tool_started_at, now())
         WHERE session_id = $1 AND step_index = $2 AND calls_started <= $3
           AND EXISTS (SELECT 1 FROM sessions WHERE id = $1 AND fence = $4)",
        lease.session_id,
        step as i32,
        call as i32,
        lease.fence,
    )
    .execute(pool)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// Stores the result of call `call` unless one is stored and, with `advance`, moves the session
/// to the next step and releases the lease, in one statement. `None`: the lease was lost.
pub(super) async fn record_observation(
    pool: &PgPool,
    lease: &Lease,
    step: u32,
    call: usize,
    observation: &serde_json::Value,
    advance: bool,
    event: &serde_json::Value,
) -> StoreResult<Option<Head>> {
    let observation = storable::json(observation);
    let event = storable::json(event);
    let row = sqlx::query_as!(
        HeadRow,
        r#"WITH observed AS (
               UPDATE steps SET observations = observations || jsonb_build_array($4::jsonb),
                   observation = coalesce(observation, $4),
                   finished_at = CASE WHEN jsonb_array_length(observations) + 1
                                           >= jsonb_array_length(actions) THEN now() END
               WHERE session_id = $1 AND step_index = $2 AND jsonb_array_length(observations) = $3
                 AND EXISTS (SELECT 1 FROM sessions WHERE id = $1 AND fence = $5)
               RETURNING step_index
           ), head AS (
           UPDATE sessions SET version = version + 1, updated_at = now(),
               event_seq = event_seq + 1,
               next_step = CASE WHEN $6 THEN next_step + 1 ELSE next_step END,
               step_attempts = CASE WHEN $6 THEN 0 ELSE step_attempts END,
               lease_owner = CASE WHEN $6 THEN NULL ELSE lease_owner END,
               lease_until = CASE WHEN $6 THEN NULL ELSE lease_until END
           WHERE id = $1 AND fence = $5 AND next_step = $2
             AND status IN ('pending', 'running')
           RETURNING id, status, next_step, final_answer, error_code, error_message,
                     cancel_requested, version, approval_expires_at, updated_at, event_seq
           ), events AS (
               INSERT INTO session_events (session_id, seq, kind, data)
               SELECT id, event_seq, 'step', $7::jsonb FROM head
           )
           SELECT id AS "id!", status AS "status!", next_step AS "next_step!", final_answer,
                  error_code, error_message, cancel_requested AS "cancel_requested!",
                  version AS "version!", approval_expires_at, updated_at AS "updated_at!"
           FROM head"#,
        lease.session_id,
        step as i32,
        call as i32,
        Json(&observation) as _,
        lease.fence,
        advance,
        Json(&event) as _,
    )
    .fetch_optional(pool)
    .await?;
    row.map(HeadRow::head).transpose()
}

/// Compare-and-set of `next_step` from `step` to `step + 1`, releasing the lease.
pub(super) async fn advance(pool: &PgPool, lease: &Lease, step: u32) -> StoreResult<Option<Head>> {
    let row = sqlx::query_as!(
        HeadRow,
        "UPDATE sessions SET next_step = $2 + 1, lease_owner = NULL, lease_until = NULL,
             step_attempts = 0, version = version + 1, updated_at = now()
         WHERE id = $1 AND next_step = $2 AND fence = $3
           AND status IN ('pending', 'running')
         RETURNING id, status, next_step, final_answer, error_code, error_message,
                   cancel_requested, version, approval_expires_at, updated_at",
        lease.session_id,
        step as i32,
        lease.fence,
    )
    .fetch_optional(pool)
    .await?;
    row.map(HeadRow::head).transpose()
}

/// The step waits for a human: what the approver sees of each call is kept with it, and the
/// session gives up its lease until `expires_at`.
pub(super) async fn await_approval(
    pool: &PgPool,
    lease: &Lease,
    step: u32,
    expires_at: DateTime<Utc>,
    reviews: &serde_json::Value,
    event: &serde_json::Value,
) -> StoreResult<Option<Head>> {
    let reviews = storable::json(reviews);
    let event = storable::json(event);
    let row = sqlx::query_as!(
        HeadRow,
        r#"WITH reviewed AS (
               UPDATE steps SET approval_details = $3
               WHERE session_id = $1 AND step_index = $2
                 AND EXISTS (SELECT 1 FROM sessions WHERE id = $1 AND fence = $4)
               RETURNING step_index)
           , head AS (
           UPDATE sessions SET status = 'awaiting_approval', approval_expires_at = $5,
               lease_owner = NULL, lease_until = NULL, step_attempts = 0,
               event_seq = event_seq + 2, version = version + 1, updated_at = now()
           WHERE id = $1 AND fence = $4 AND status IN ('pending', 'running')
             AND EXISTS (SELECT 1 FROM reviewed)
           RETURNING id, status, next_step, final_answer, error_code, error_message,
                     cancel_requested, version, approval_expires_at, updated_at, event_seq
           ), events AS (
               INSERT INTO session_events (session_id, seq, kind, data)
               SELECT id, event_seq - 1, 'status', '{"status": "awaiting_approval", "error": null}'::jsonb
               FROM head
               UNION ALL
               SELECT id, event_seq, 'approval', $6::jsonb FROM head
           )
           SELECT id AS "id!", status AS "status!", next_step AS "next_step!", final_answer,
                  error_code, error_message, cancel_requested AS "cancel_requested!",
                  version AS "version!", approval_expires_at, updated_at AS "updated_at!"
           FROM head"#,
        lease.session_id,
        step as i32,
        Json(&reviews) as _,
        lease.fence,
        expires_at,
        Json(&event) as _,
    )
    .fetch_optional(pool)
    .await?;
    row.map(HeadRow::head).transpose()
}

/// Ends an unfinished session (with a fence: only while that lease is current). A completion
/// becomes a cancellation when a cancel came first. `None`: it had already ended, or the fence
/// moved on.
pub(super) async fn end(
    pool: &PgPool,
    id: Uuid,
    fence: Option<i64>,
    ending: &Ending,
    totals: Option<&serde_json::Value>,
) -> StoreResult<Option<Head>> {
    let (status, answer, code, message) = ending_columns(Some(ending));
    let row = sqlx::query_as!(
        HeadRow,
        r#"WITH head AS (
               UPDATE sessions SET
                   status = CASE WHEN $2 = 'completed' AND cancel_requested THEN 'cancelled'
                                 ELSE $2 END,
                   final_answer = CASE WHEN $2 = 'completed' AND cancel_requested THEN NULL
                                       ELSE $3 END,
                   error_code = $4, error_message = $5,
                   lease_owner = NULL, lease_until = NULL, approval_expires_at = NULL,
                   event_seq = event_seq + 2, version = version + 1, updated_at = now()
               WHERE id = $1 AND ($6::bigint IS NULL OR fence = $6)
                 AND status IN ('queued', 'pending', 'running', 'awaiting_approval')
               RETURNING id, status, next_step, final_answer, error_code, error_message,
                         cancel_requested, version, approval_expires_at, updated_at, event_seq
           ), events AS (
               INSERT INTO session_events (session_id, seq, kind, data)
               SELECT id, event_seq - 1, 'status', jsonb_build_object('status', status,
                   'error', CASE WHEN error_code IS NULL THEN NULL ELSE jsonb_build_object('code', error_code, 'message', error_message) END)
               FROM head
               UNION ALL
               SELECT id, event_seq, 'done', jsonb_build_object('status', status,
                   'final_answer', final_answer, 'error', CASE WHEN error_code IS NULL THEN NULL ELSE jsonb_build_object('code', error_code, 'message', error_message) END,
                   'totals', coalesce($7::jsonb, agentq_totals_json(id)))
               FROM head
           )
           SELECT id AS "id!", status AS "status!", next_step AS "next_step!", final_answer,
                  error_code, error_message, cancel_requested AS "cancel_requested!",
                  version AS "version!", approval_expires_at, updated_at AS "updated_at!"
           FROM head"#,
        id,
        status,
        answer.as_deref(),
        code,
        message.as_deref(),
        fence,
        totals.map(Json) as _,
    )
    .fetch_optional(pool)
    .await?;
    row.map(HeadRow::head).transpose()
}

/// Extends the lease; false when it was lost (fence moved on or session finished).
pub(super) async fn renew_lease(pool: &PgPool, lease: &Lease, ttl: Duration) -> StoreResult<bool> {
    let renewed = sqlx::query!(
        "UPDATE sessions SET lease_until = now() + make_interval(secs => $3)
         WHERE id = $1 AND fence = $2 AND lease_owner = $4",
        lease.session_id,
        lease.fence,
        ttl.as_secs_f64(),
        lease.owner,
    )
    .execute(pool)
    .await?;
    Ok(renewed.rows_affected() == 1)
}

/// Gives the lease back without other changes.
pub(super) async fn release_lease(pool: &PgPool, lease: &Lease) -> StoreResult<()> {
    sqlx::query!(
        "UPDATE sessions SET lease_owner = NULL, lease_until = NULL
         WHERE id = $1 AND fence = $2",
        lease.session_id,
        lease.fence,
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Whether `lease` is still the current one.
pub(super) async fn holds_lease(pool: &PgPool, lease: &Lease) -> StoreResult<bool> {
    let fence = sqlx::query_scalar!("SELECT fence FROM sessions WHERE id = $1", lease.session_id)
        .fetch_optional(pool)
        .await?;
    Ok(fence == Some(lease.fence))
}

/// The cancel flag as Postgres has it (the truth; Redis may have lost its copy).
pub(super) async fn cancel_requested(pool: &PgPool, id: Uuid) -> StoreResult<bool> {
    let flagged = sqlx::query_scalar!("SELECT cancel_requested FROM sessions WHERE id = $1", id)
        .fetch_optional(pool)
        .await?;
    Ok(flagged.unwrap_or(false))
}
