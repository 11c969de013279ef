//! SSRF defence: which URLs `web_fetch` may fetch and which addresses it may connect to. The
//! policy is `agentq_shared::ssrf` (the API and the webhook sender use the same one, with the
//! same `AGENTQ_WEB_FETCH_ALLOW`/`_DENY` lists); `fetch.rs` runs every hop through it and
//! connects only to the addresses it returns.

#[cfg(test)]
pub(crate) use agentq_shared::ssrf::rules;
pub(crate) use agentq_shared::ssrf::{Pinned, Policy, Refused, Resolver, SystemResolver};
