//! What the API asks of the store: keys, creating a session, reading one, cancelling, deciding
//! an approval. Each transition writes the hot copy itself.

use std::time::Duration;

use futures::StreamExt as _;
use rand::RngCore;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::durable::{Approved, Cancelled};
use super::error::{StoreError, StoreResult};
use super::hot::ChangeFeed;
use super::model::{
    ActiveCap, ApprovalDecision, ApprovalOutcome, CancelOutcome, Created, KeyInfo, ListQuery,
    NewKey, NewSession, Principal, Promoted, RateLimit, SessionRecord, SessionState,
};
use super::{Store, view};
use crate::schemas::{AgentSession, SessionEvent, SessionStatus, SessionSummary};

const KEY_PREFIX: &str = "aq_";

/// How long after a session's end its snapshot is checked: the ending process writes it right
/// after its commit, well within this.
const HEAL_AFTER: Duration = Duration::from_millis(50);

/// Lowercase hex SHA-256, for API keys and request fingerprints.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl Store {
    /// The owner of a key that exists and is not revoked; verified keys are remembered for
    /// `AGENTQ_AUTH_CACHE_SECS`.
    pub async fn authenticate(&self, key: &str) -> StoreResult<Option<Principal>> {
        let hash = sha256_hex(key.as_bytes());
        if let Some(principal) = self.keys.get(&hash) {
            // An expiry holds to the moment, cached or not.
            if principal
                .expires_at
                .is_some_and(|at| at <= chrono::Utc::now())
            {
                self.keys.forget(&hash);
                return Ok(None);
            }
            return Ok(Some(principal));
        }
        let principal = self.durable.principal(&hash).await?;
        if let Some(principal) = principal {
            self.keys.insert(hash, principal);
        }
        Ok(principal)
    }

    /// Creates the org if it doesn't exist and a new key for it; returns the key in clear (the
    /// only time it is shown: only its hash is stored).
    #[tracing::instrument(skip_all, fields(org = %org))]
    pub async fn create_api_key(&self, org: &str) -> StoreResult<(Principal, String)> {
        self.create_key(&NewKey {
            org: org.to_owned(),
            ..NewKey::default()
        })
        .await
    }

    /// [`Store::create_api_key`] with a name and an expiry.
    #[tracing::instrument(skip_all, fields(org = %new.org))]
    pub async fn create_key(&self, new: &NewKey) -> StoreResult<(Principal, String)> {
        let mut bytes = [0u8; 24];
        rand::rng().fill_bytes(&mut bytes);
        let key = format!("{KEY_PREFIX}{}", hex::encode(bytes));
        let principal = self
            .durable
            .create_api_key(
                new,
                &sha256_hex(key.as_bytes()),
                &key[..KEY_PREFIX.len() + 6],
            )
            .await?;
        Ok((principal, key))
    }

    /// The org's keys, oldest first (`NotFound` when no org has that name).
    pub async fn list_keys(&self, org: &str) -> StoreResult<Vec<KeyInfo>> {
        self.durable
            .list_api_keys(org)
            .await?
            .ok_or(StoreError::NotFound("org"))
    }

    /// Revokes a key (`NotFound` when there is none with that id). This process forgets it at
    /// once; other API processes stop accepting it within `AGENTQ_AUTH_CACHE_SECS`.
    pub async fn revoke_key(&self, id: Uuid) -> StoreResult<()> {
        if !self.durable.revoke_api_key(id).await? {
            return Err(StoreError::NotFound("key"));
        }
        self.keys.forget_key(id);
        Ok(())
    }

    /// Sets (or with `None` clears) an org's own API rate limit; `NotFound` when no org has that
    /// name. API processes see it when they next verify the org's keys (within
    /// `AGENTQ_AUTH_CACHE_SECS`).
    pub async fn set_org_rate_limit(&self, org: &str, limit: Option<RateLimit>) -> StoreResult<()> {
        if self.durable.set_org_rate_limit(org, limit).await? {
            Ok(())
        } else {
            Err(StoreError::NotFound("org"))
        }
    }

    /// Sets (or with `None` clears) an org's own cap on active sessions; `NotFound` when no org
    /// has that name. API processes apply it when they next verify the org's keys (within
    /// `AGENTQ_AUTH_CACHE_SECS`).
    pub async fn set_org_active_cap(&self, org: &str, cap: Option<ActiveCap>) -> StoreResult<()> {
        if self.durable.set_org_active_cap(org, cap).await? {
            Ok(())
        } else {
            Err(StoreError::NotFound("org"))
        }
    }

    /// Writes a new session and its snapshot (`pending`, or `queued` when its org has no free
    /// slot; no steps). With an idempotency key, the key's first use wins and a repeat returns
    /// the first session (or `KeyReused`).
    #[tracing::instrument(skip_all, fields(session_id = %new.id))]
    pub async fn create_session(&self, new: NewSession) -> StoreResult<Created> {
        let created = self.durable.create_session(&new).await?;
        let status = match created {
            Created::New => SessionStatus::Pending,
            Created::Queued => SessionStatus::Queued,
            Created::Busy | Created::Existing(_) | Created::KeyReused => return Ok(created),
        };
        {
            let state = SessionState {
                record: SessionRecord {
                    id: new.id,
                    org_id: new.org_id,
                    status,
                    run: new.run,
                    next_step: 0,
                    final_answer: None,
                    error: None,
                    cancel_requested: false,
                    version: 0,
                    deadline_at: new.deadline_at,
                    approval_expires_at: None,
                    created_at: new.created_at,
                    updated_at: new.created_at,
                },
                steps: Vec::new(),
                spend: Vec::new(),
            };
            self.publish(&state).await;
        }
        Ok(created)
    }

    /// The session as clients see it: the hot copy, or the durable store (which then refills
    /// the hot copy).
    #[tracing::instrument(skip_all, fields(session_id = %id))]
    pub async fn session(&self, id: Uuid) -> StoreResult<Option<AgentSession>> {
        if let Some(session) = self.hot.snapshot(id).await {
            return Ok(Some(session));
        }
        self.reload(id).await
    }

    /// The session as JSON, for answering a poll without decoding and encoding it again:
    /// `(org_id, json)` from the hot copy when it holds a readable snapshot, else from the
    /// durable store (which then refills the hot copy).
    pub async fn session_json(&self, id: Uuid) -> StoreResult<Option<(Uuid, String)>> {
        #[derive(serde::Deserialize)]
        struct Owner {
            org_id: Uuid,
        }
        if let Some(json) = self.hot.snapshot_json(id).await
            && let Ok(owner) = serde_json::from_str::<Owner>(&json)
        {
            return Ok(Some((owner.org_id, json)));
        }
        let Some(session) = self.reload(id).await? else {
            return Ok(None);
        };
        let json = serde_json::to_string(&session)
            .map_err(|e| StoreError::Backend(format!("cannot encode a session: {e}")))?;
        Ok(Some((session.org_id, json)))
    }

    /// Keeps the hot copy true to how sessions end, whichever process ended them. A process
    /// that died between committing a session's end and writing its snapshot left a snapshot
    /// that no later change will replace (the session never changes again): every end is
    /// announced by the durable store at its commit, and one whose snapshot is still older a
    /// moment later is read again. Returns once it listens (the API starts it before serving),
    /// then runs as long as the process and listens again after a lost connection.
    pub async fn follow_endings(&self) {
        if !self.hot.enabled() {
            return;
        }
        let first = self.durable.endings().await;
        let store = self.clone();
        tokio::spawn(async move {
            let mut listening = first;
            loop {
                match listening {
                    Ok(Some(mut ended)) => {
                        while let Some((id, version)) = ended.next().await {
                            let store = store.clone();
                            tokio::spawn(async move { store.heal(id, version).await });
                        }
                    }
                    Ok(None) => return,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot follow session endings; retrying")
                    }
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                listening = store.durable.endings().await;
            }
        });
    }

    /// After the ending process has had its moment to write the snapshot: a held snapshot
    /// older than the end is replaced from the durable store (none held: the next poll reads
    /// the durable store anyway).
    async fn heal(&self, id: Uuid, version: i64) {
        tokio::time::sleep(HEAL_AFTER).await;
        if self
            .hot
            .version(id)
            .await
            .is_some_and(|held| held < version)
        {
            tracing::info!(session_id = %id, version,
                "the snapshot missed the session's end (its process died?); reading it again");
            if let Err(e) = self.reload(id).await {
                tracing::warn!(session_id = %id, error = %e, "cannot refresh an ended session's snapshot");
            }
        }
    }

    /// The session read whole from the durable store, written through to the hot copy.
    async fn reload(&self, id: Uuid) -> StoreResult<Option<AgentSession>> {
        let Some(state) = self.durable.load(id).await? else {
            return Ok(None);
        };
        let session = view::session(&state);
        self.hot.put(&session).await;
        Ok(Some(session))
    }

    /// Starts queued sessions whose org has a free slot, oldest first: of `org`, or of every
    /// org; at most `limit`. Each is `pending` after, with its snapshot; the caller queues
    /// their first steps (a lost push is repaired by the reconciler, like any other).
    pub async fn promote_queued(
        &self,
        org: Option<Uuid>,
        limit: i64,
    ) -> StoreResult<Vec<Promoted>> {
        let promoted = self.durable.promote_queued(org, limit).await?;
        for p in &promoted {
            self.catch_up(&p.head, |_| {}).await;
        }
        Ok(promoted)
    }

    /// Cancels an unfinished session of this org. Returns the session as it is after.
    #[tracing::instrument(skip_all, fields(session_id = %id))]
    pub async fn request_cancel(
        &self,
        id: Uuid,
        org_id: Uuid,
    ) -> StoreResult<(CancelOutcome, Option<AgentSession>)> {
        let outcome = match self.durable.request_cancel(id, org_id).await? {
            Cancelled::Changed(head) => {
                if head.status == SessionStatus::Cancelled {
                    Self::ended(&head);
                }
                self.hot.set_cancel_flag(id).await;
                self.catch_up(&head, |_| {}).await;
                if head.status == SessionStatus::Cancelled {
                    CancelOutcome::Cancelled
                } else {
                    CancelOutcome::Requested
                }
            }
            Cancelled::AlreadyFinished(status) => CancelOutcome::AlreadyFinished(status),
            Cancelled::NotFound => return Ok((CancelOutcome::NotFound, None)),
        };
        Ok((outcome, self.session(id).await?))
    }

    /// Records a human's decision on the calls of a step awaiting approval and puts the session
    /// back to `running` (the caller enqueues the step again). Returns the session as it is after.
    #[tracing::instrument(skip_all, fields(session_id = %decision.session_id, step = decision.step))]
    pub async fn decide_approval(
        &self,
        decision: &ApprovalDecision,
    ) -> StoreResult<(ApprovalOutcome, Option<AgentSession>)> {
        let id = decision.session_id;
        let outcome = match self.durable.decide_approval(decision).await? {
            Approved::Recorded {
                head,
                approval,
                traceparent,
            } => {
                let step = decision.step;
                self.catch_up(&head, |session| {
                    if let Some(s) = session.steps.iter_mut().find(|s| s.index == step) {
                        s.approval = Some(approval);
                    }
                })
                .await;
                ApprovalOutcome::Recorded { traceparent }
            }
            Approved::Expired(head) => {
                Self::ended(&head);
                self.catch_up(&head, |_| {}).await;
                ApprovalOutcome::Expired
            }
            Approved::Outcome(outcome) => return Ok((outcome, None)),
        };
        Ok((outcome, self.session(id).await?))
    }
}

impl Store {
    /// A session's events after `after`, in order (at most 500 at a time).
    pub async fn events(&self, id: Uuid, after: i64) -> StoreResult<Vec<SessionEvent>> {
        self.durable.events(id, after, 500).await
    }

    /// Notifications of a session's changes, when the hot copy (or else the durable store) can
    /// give them.
    pub fn changes(&self, id: Uuid) -> Option<ChangeFeed> {
        self.hot.changes(id).or_else(|| self.durable.changes(id))
    }

    /// An org's sessions, newest first.
    pub async fn list_sessions(&self, query: &ListQuery) -> StoreResult<Vec<SessionSummary>> {
        self.durable.list(query).await
    }
}
