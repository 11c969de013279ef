//! What the step protocol asks of the store. Each transition updates the worker's [`StepRun`]
//! from what the durable store returned and writes the hot copy from it: one round trip and at
//! most one hot-copy command per transition, none to read anything back.

use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use serde_json::json;

use super::durable::Announced;
use super::error::{StoreError, StoreResult};
use super::model::{Begin, Decision, Ending, Lease, LlmCallRecord, Spend, StepRun};
use super::{Store, view};
use crate::schemas::CallReview;

/// Whether a cancel is known after a transition (the durable flag it returned, or the hot
/// copy's).
pub type CancelSeen = bool;

impl Store {
    /// Takes the session's lease for `step` and reads the whole session, in one round trip. A
    /// pending session becomes running (and its snapshot says so).
    #[tracing::instrument(skip_all, fields(session_id = %id, step))]
    pub async fn begin_step(
        &self,
        id: Uuid,
        step: u32,
        owner: &str,
        ttl: Duration,
    ) -> StoreResult<Begin> {
        let begun = self.durable.begin_step(id, step, owner, ttl).await?;
        if let Begin::Leased(run) = &begun
            && run.became_running
        {
            self.publish(&run.state).await;
        }
        Ok(begun)
    }

    /// An LLM call that did not lead to a decision (failed, or its answer unusable): into the
    /// ledger at once. The step's spend in `run` grows by it.
    pub async fn record_llm_call(
        &self,
        run: &mut StepRun,
        call: &LlmCallRecord,
    ) -> StoreResult<()> {
        let spend = self.durable.record_llm_call(call).await?;
        let mut total = run.state.spend_of(call.step_index);
        total.add(&spend);
        run.state.set_spend(call.step_index, total);
        Ok(())
    }

    /// Stores the decision of the current step, with the ledger record of the call that made it
    /// (`call`), unless one is stored (then `run` gets that one). With `ending`, the session ends
    /// in the same write (a final answer completes it, unless a cancel came first).
    pub async fn record_decision(
        &self,
        run: &mut StepRun,
        call: Option<&LlmCallRecord>,
        decision: &Decision,
        ending: Option<&Ending>,
    ) -> StoreResult<CancelSeen> {
        let events = Announced {
            step: json!({"step": run.step, "phase": "decided", "thought": decision.thought,
                "actions": decision.actions, "is_final": decision.is_final,
                "final_answer": decision.final_answer, "invalid_output": decision.invalid_output}),
            totals: ending.map(|_| {
                let mut spend = run.state.total_spend();
                if let Some(call) = call {
                    spend.add(&Spend::of(call));
                }
                let steps = run.state.steps.len() + usize::from(run.current().is_none());
                json!(view::totals(steps, &spend))
            }),
        };
        let stored = self
            .durable
            .record_decision(&run.lease, run.step, call, decision, ending, &events)
            .await?;
        if let Some(spend) = stored.spend {
            let mut total = run.state.spend_of(run.step);
            total.add(&spend);
            run.state.set_spend(run.step, total);
        }
        match run.state.step_mut(run.step) {
            Some(existing) => *existing = stored.step,
            None => run.state.steps.push(stored.step),
        }
        run.state.record.apply(&stored.head);
        if ending.is_some() {
            Self::ended(&stored.head);
        }
        let flagged = self.publish(&run.state).await;
        Ok(flagged || run.state.record.cancel_requested)
    }

    /// Marks call `call` of the current step as started; false if an earlier delivery already
    /// had (its outcome is unknown).
    pub async fn mark_call_started(&self, run: &StepRun, call: usize) -> StoreResult<bool> {
        self.durable
            .mark_call_started(&run.lease, run.step, call)
            .await
    }

    /// Stores the result of call `call` of the current step. With `may_advance`, the last
    /// call's result also moves the session to the next step and releases the lease, in the
    /// same write (without: a call stopped by a cancel or a deadline, after which the session
    /// ends instead).
    pub async fn record_observation(
        &self,
        run: &mut StepRun,
        call: usize,
        observation: serde_json::Value,
        may_advance: bool,
    ) -> StoreResult<CancelSeen> {
        let step = run.step;
        let calls = run.current().map_or(0, |s| s.actions.len());
        let last = may_advance && call + 1 >= calls;
        let event = json!({"step": step, "phase": "observed", "call": call,
            "observation": observation});
        let head = self
            .durable
            .record_observation(&run.lease, step, call, &observation, last, &event)
            .await?;
        if let Some(current) = run.state.step_mut(step)
            && current.observations.len() == call
        {
            current.observations.push(observation);
            if call + 1 >= calls {
                current.finished_at = Some(head.updated_at);
            }
        }
        run.state.record.apply(&head);
        let flagged = self.publish(&run.state).await;
        Ok(flagged || run.state.record.cancel_requested)
    }

    /// Moves the session to the next step and releases the lease (when the last result was
    /// stored by an earlier delivery that stopped before advancing).
    pub async fn advance(&self, run: &mut StepRun) -> StoreResult<()> {
        if run.advanced() {
            return Ok(());
        }
        let head = self.durable.advance(&run.lease, run.step).await?;
        run.state.record.apply(&head);
        self.publish(&run.state).await;
        Ok(())
    }

    /// The current step's calls wait for a human until `expires_at`; what the approver must see
    /// of each call is kept with the step. The lease is released.
    pub async fn await_approval(
        &self,
        run: &mut StepRun,
        expires_at: DateTime<Utc>,
        reviews: &[CallReview],
    ) -> StoreResult<()> {
        let reviews = serde_json::to_value(reviews)
            .map_err(|e| StoreError::Backend(format!("cannot encode reviews: {e}")))?;
        // The database keeps microseconds: the event says what a poll will say.
        let expires_at =
            DateTime::from_timestamp_micros(expires_at.timestamp_micros()).unwrap_or(expires_at);
        let calls = run.current().map(|s| s.actions.clone()).unwrap_or_default();
        let pending = view::pending_calls(run.step, &calls, Some(&reviews), expires_at);
        let event = json!({"state": "pending", "step": run.step,
            "calls": pending.map(|p| p.calls).unwrap_or_default(), "expires_at": expires_at});
        let head = self
            .durable
            .await_approval(&run.lease, run.step, expires_at, &reviews, &event)
            .await?;
        if let Some(current) = run.state.step_mut(run.step) {
            current.reviews = Some(reviews);
        }
        run.state.record.apply(&head);
        self.publish(&run.state).await;
        Ok(())
    }

    /// Ends the session while holding its lease; false when it had already ended.
    pub async fn end(&self, run: &mut StepRun, ending: &Ending) -> StoreResult<bool> {
        let totals = json!(view::totals(
            run.state.steps.len(),
            &run.state.total_spend()
        ));
        let Some(head) = self
            .durable
            .end_session(run.session_id(), Some(&run.lease), ending, Some(&totals))
            .await?
        else {
            return Ok(false);
        };
        Self::ended(&head);
        run.state.record.apply(&head);
        self.publish(&run.state).await;
        Ok(true)
    }

    /// Extends the lease; false when it was lost.
    pub async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> StoreResult<bool> {
        self.durable.renew_lease(lease, ttl).await
    }

    /// Gives the lease back without other changes (so a retry can take over at once).
    pub async fn release_lease(&self, lease: &Lease) -> StoreResult<()> {
        self.durable.release_lease(lease).await
    }
}
