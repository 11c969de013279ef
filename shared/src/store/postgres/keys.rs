//! Orgs and API keys (only a key's SHA-256 is stored, and only digests are ever compared: the
//! lookup by digest says nothing about the key).

use sqlx::PgPool;
use uuid::Uuid;

use super::super::error::StoreResult;
use super::super::model::{ActiveCap, KeyInfo, NewKey, Principal, RateLimit};
use super::super::storable;

/// The owner of a live key (not revoked, not expired), marking it used.
pub(super) async fn principal(pool: &PgPool, key_hash: &str) -> StoreResult<Option<Principal>> {
    let row = sqlx::query!(
        "UPDATE api_keys k SET last_used_at = now()
         FROM orgs o
         WHERE o.id = k.org_id AND k.key_hash = $1 AND k.revoked_at IS NULL
           AND (k.expires_at IS NULL OR k.expires_at > now())
         RETURNING k.org_id, k.id AS key_id, k.expires_at, o.rate_limit_per_sec, o.rate_limit_burst,
                   o.max_active_sessions",
        key_hash,
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| Principal {
        org_id: r.org_id,
        key_id: r.key_id,
        rate_limit: RateLimit::from_columns(
            r.rate_limit_per_sec.map(i64::from),
            r.rate_limit_burst.map(i64::from),
        ),
        active_cap: ActiveCap::from_column(r.max_active_sessions.map(i64::from)),
        expires_at: r.expires_at,
    }))
}

/// Sets (or with `None` clears) the org's own rate limit; false when there is no such org.
pub(super) async fn set_rate_limit(
    pool: &PgPool,
    org: &str,
    limit: Option<RateLimit>,
) -> StoreResult<bool> {
    let (per_sec, burst) = match limit {
        Some(l) => (Some(l.per_sec as i32), Some(l.burst as i32)),
        None => (None, None),
    };
    let updated = sqlx::query!(
        "UPDATE orgs SET rate_limit_per_sec = $2, rate_limit_burst = $3 WHERE name = $1",
        org,
        per_sec,
        burst,
    )
    .execute(pool)
    .await?
    .rows_affected();
    Ok(updated > 0)
}

/// Sets (or with `None` clears) the org's own cap on active sessions; false when there is no
/// such org.
pub(super) async fn set_active_cap(
    pool: &PgPool,
    org: &str,
    cap: Option<ActiveCap>,
) -> StoreResult<bool> {
    let column = cap.map(|c| c.to_column().min(i64::from(i32::MAX)) as i32);
    let updated = sqlx::query!(
        "UPDATE orgs SET max_active_sessions = $2 WHERE name = $1",
        org,
        column,
    )
    .execute(pool)
    .await?
    .rows_affected();
    Ok(updated > 0)
}

/// Creates the org if it doesn't exist and a key for it.
pub(super) async fn create(
    pool: &PgPool,
    key: &NewKey,
    key_hash: &str,
    key_prefix: &str,
) -> StoreResult<Principal> {
    let org = storable::text(&key.org);
    let name = storable::opt_text(key.name.as_deref());
    let mut tx = pool.begin().await?;
    let org_id = sqlx::query_scalar!(
        "INSERT INTO orgs (id, name) VALUES ($1, $2)
             ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING id",
        Uuid::now_v7(),
        org.as_ref(),
    )
    .fetch_one(&mut *tx)
    .await?;
    let key_id = Uuid::now_v7();
    sqlx::query!(
        "INSERT INTO api_keys (id, org_id, key_hash, key_prefix, name, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
        key_id,
        org_id,
        key_hash,
        key_prefix,
        name.as_deref(),
        key.expires_at,
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Principal {
        org_id,
        key_id,
        rate_limit: None,
        active_cap: None,
        expires_at: key.expires_at,
    })
}

/// The org's keys, oldest first; `None` when there is no such org.
pub(super) async fn list(pool: &PgPool, org: &str) -> StoreResult<Option<Vec<KeyInfo>>> {
    let Some(org_id) = sqlx::query_scalar!("SELECT id FROM orgs WHERE name = $1", org)
        .fetch_optional(pool)
        .await?
    else {
        return Ok(None);
    };
    let keys = sqlx::query_as!(
        KeyInfo,
        r#"SELECT id, name, key_prefix AS prefix, created_at, last_used_at, expires_at, revoked_at
           FROM api_keys WHERE org_id = $1 ORDER BY created_at, id"#,
        org_id,
    )
    .fetch_all(pool)
    .await?;
    Ok(Some(keys))
}

/// Revokes the key, keeping the first revocation's time; false when there is no such key.
pub(super) async fn revoke(pool: &PgPool, id: Uuid) -> StoreResult<bool> {
    let updated = sqlx::query!(
        "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1",
        id,
    )
    .execute(pool)
    .await?
    .rows_affected();
    Ok(updated > 0)
}
