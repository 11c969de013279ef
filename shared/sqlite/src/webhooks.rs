//! The webhook statements: an org's settings, claiming due deliveries, fixing a body,
//! recording attempts, and a session's deliveries. The deliveries are written by the
//! `session_events` trigger (`migrations/sqlite/20261203000005_webhooks.up.sql`).

use sqlx::SqliteExecutor;
use uuid::Uuid;

/// An org's webhook columns after a change.
pub struct OrgWebhook {
    pub url: Option<String>,
    pub secret: String,
}

/// Sets the org's URL when `set_url` (to `url`, `None` clearing it), and its secret to `secret`
/// when it has none or on `rotate`; `None` when no org is named `name`.
pub async fn configure_org(
    db: impl SqliteExecutor<'_>,
    name: &str,
    set_url: bool,
    url: Option<&str>,
    secret: &str,
    rotate: bool,
) -> sqlx::Result<Option<OrgWebhook>> {
    sqlx::query_as!(
        OrgWebhook,
        r#"UPDATE orgs SET
               webhook_url = CASE WHEN ?2 THEN ?3 ELSE webhook_url END,
               webhook_secret = CASE WHEN ?5 OR webhook_secret IS NULL THEN ?4
                                     ELSE webhook_secret END
           WHERE name = ?1
           RETURNING webhook_url AS "url?: String", webhook_secret AS "secret!: String""#,
        name,
        set_url,
        url,
        secret,
        rotate,
    )
    .fetch_optional(db)
    .await
}

/// The org's secret, set to `candidate` first if it has none.
pub async fn ensure_secret(
    db: impl SqliteExecutor<'_>,
    org_id: Uuid,
    candidate: &str,
) -> sqlx::Result<String> {
    sqlx::query_scalar!(
        r#"UPDATE orgs SET webhook_secret = coalesce(webhook_secret, ?2) WHERE id = ?1
           RETURNING webhook_secret AS "secret!: String""#,
        org_id,
        candidate,
    )
    .fetch_one(db)
    .await
}

/// A delivery claimed for an attempt, with its org's secret.
pub struct Claimed {
    pub session_id: Uuid,
    pub event_seq: i64,
    pub event_type: String,
    pub org_id: Uuid,
    pub url: String,
    pub attempts: i64,
    pub payload: Option<String>,
    pub secret: Option<String>,
}

/// Claims up to `limit` pending deliveries due at `now`: each takes its next attempt number and
/// is not due again before `lease_until`.
pub async fn claim(
    db: impl SqliteExecutor<'_>,
    now: i64,
    lease_until: i64,
    limit: i64,
) -> sqlx::Result<Vec<Claimed>> {
    sqlx::query_as!(
        Claimed,
        r#"UPDATE webhook_deliveries SET attempts = attempts + 1, next_attempt_at = ?2
           WHERE (session_id, event_seq) IN (
               SELECT session_id, event_seq FROM webhook_deliveries
               WHERE state = 'pending' AND next_attempt_at <= ?1
               ORDER BY next_attempt_at LIMIT ?3)
           RETURNING session_id AS "session_id!: Uuid", event_seq AS "event_seq!: i64",
               event_type AS "event_type!: String", org_id AS "org_id!: Uuid",
               url AS "url!: String", attempts AS "attempts!: i64",
               payload AS "payload?: String",
               (SELECT webhook_secret FROM orgs WHERE orgs.id = webhook_deliveries.org_id)
                   AS "secret?: String""#,
        now,
        lease_until,
        limit,
    )
    .fetch_all(db)
    .await
}

/// Sets the delivery's body unless it has one; returns the one kept.
pub async fn fix_payload(
    db: impl SqliteExecutor<'_>,
    session_id: Uuid,
    event_seq: i64,
    payload: &str,
) -> sqlx::Result<String> {
    sqlx::query_scalar!(
        r#"UPDATE webhook_deliveries SET payload = coalesce(payload, ?3)
           WHERE session_id = ?1 AND event_seq = ?2
           RETURNING payload AS "payload!: String""#,
        session_id,
        event_seq,
        payload,
    )
    .fetch_one(db)
    .await
}

/// One attempt, as recorded.
#[derive(Debug)]
pub struct Attempt<'a> {
    pub session_id: Uuid,
    pub event_seq: i64,
    pub attempt: i64,
    pub at: i64,
    pub status_code: Option<i64>,
    pub error: Option<&'a str>,
    pub duration_ms: i64,
}

/// Records an attempt (a second record of the same attempt is ignored).
pub async fn insert_attempt(db: impl SqliteExecutor<'_>, a: &Attempt<'_>) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO webhook_attempts (session_id, event_seq, attempt, at, status_code, error,
                                       duration_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT DO NOTHING",
        a.session_id,
        a.event_seq,
        a.attempt,
        a.at,
        a.status_code,
        a.error,
        a.duration_ms,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Puts the pending delivery in `state` (due again at `next_at` when still pending, finished
/// at `now` otherwise), if attempt `attempt` is still its latest claim.
pub async fn settle(
    db: impl SqliteExecutor<'_>,
    session_id: Uuid,
    event_seq: i64,
    attempt: i64,
    state: &str,
    next_at: Option<i64>,
    now: i64,
) -> sqlx::Result<u64> {
    let done = sqlx::query!(
        "UPDATE webhook_deliveries SET state = ?4,
             next_attempt_at = coalesce(?5, next_attempt_at),
             finished_at = CASE WHEN ?4 = 'pending' THEN NULL ELSE ?6 END
         WHERE session_id = ?1 AND event_seq = ?2 AND attempts = ?3 AND state = 'pending'",
        session_id,
        event_seq,
        attempt,
        state,
        next_at,
        now,
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// A delivery as stored.
#[derive(Debug)]
pub struct Delivery {
    pub event_seq: i64,
    pub event_type: String,
    pub url: String,
    pub state: String,
    pub next_attempt_at: i64,
    pub created_at: i64,
    pub finished_at: Option<i64>,
}

/// The session's deliveries, oldest first.
pub async fn deliveries(
    db: impl SqliteExecutor<'_>,
    session_id: Uuid,
) -> sqlx::Result<Vec<Delivery>> {
    sqlx::query_as!(
        Delivery,
        r#"SELECT event_seq AS "event_seq!: i64", event_type AS "event_type!: String",
               url AS "url!: String", state AS "state!: String",
               next_attempt_at AS "next_attempt_at!: i64", created_at AS "created_at!: i64",
               finished_at AS "finished_at?: i64"
           FROM webhook_deliveries WHERE session_id = ?1 ORDER BY event_seq"#,
        session_id,
    )
    .fetch_all(db)
    .await
}

/// An attempt as stored.
#[derive(Debug)]
pub struct AttemptRow {
    pub event_seq: i64,
    pub attempt: i64,
    pub at: i64,
    pub status_code: Option<i64>,
    pub error: Option<String>,
    pub duration_ms: i64,
}

/// The attempts of the session's deliveries, in order.
pub async fn attempts(
    db: impl SqliteExecutor<'_>,
    session_id: Uuid,
) -> sqlx::Result<Vec<AttemptRow>> {
    sqlx::query_as!(
        AttemptRow,
        r#"SELECT event_seq AS "event_seq!: i64", attempt AS "attempt!: i64", at AS "at!: i64",
               status_code AS "status_code?: i64", error AS "error?: String",
               duration_ms AS "duration_ms!: i64"
           FROM webhook_attempts WHERE session_id = ?1 ORDER BY event_seq, attempt"#,
        session_id,
    )
    .fetch_all(db)
    .await
}
