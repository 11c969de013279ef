//! Budgets (`max_tokens`, `max_cost_usd` on the request), checked against what the session has
//! spent by the ledger, as the worker holds it: no round trip.

use agentq_shared::store::StepRun;

/// A message when the session has spent its token or cost budget.
pub fn over_budget(run: &StepRun) -> Option<String> {
    let request = &run.state.record.run;
    if request.max_tokens.is_none() && request.max_cost_usd.is_none() {
        return None;
    }
    let spent = run.state.total_spend();
    if let Some(max) = request.max_tokens
        && spent.usage.total() >= max
    {
        return Some(format!(
            "the session used {} tokens; its budget is {max}",
            spent.usage.total()
        ));
    }
    match (request.max_cost_usd, spent.cost_usd) {
        (Some(max), Some(cost)) if cost >= max => Some(format!(
            "the session cost ${}; its budget is ${max}",
            cost.normalize()
        )),
        (Some(_), None) => {
            tracing::warn!(model = %request.model, "max_cost_usd can't be enforced: the model has no price");
            None
        }
        _ => None,
    }
}
