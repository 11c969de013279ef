//! Orgs and API keys (only a key's SHA-256 is stored).

use sqlx::PgPool;
use uuid::Uuid;

use super::super::error::StoreResult;
use super::super::model::{Principal, RateLimit};
use super::super::storable;

/// The owner of a key that exists and is not revoked.
pub(super) async fn principal(pool: &PgPool, key_hash: &str) -> StoreResult<Option<Principal>> {
    let row = sqlx::query!(
        "SELECT k.org_id, k.id AS key_id, o.rate_limit_per_sec, o.rate_limit_burst
         FROM api_keys k JOIN orgs o ON o.id = k.org_id
         WHERE k.key_hash = $1 AND k.revoked_at IS NULL",
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

/// Creates the org if it doesn't exist and a key for it.
pub(super) async fn create(
    pool: &PgPool,
    org: &str,
    key_hash: &str,
    key_prefix: &str,
) -> StoreResult<Principal> {
    let org = storable::text(org);
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
        "INSERT INTO api_keys (id, org_id, key_hash, key_prefix) VALUES ($1, $2, $3, $4)",
        key_id,
        org_id,
        key_hash,
        key_prefix,
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Principal {
        org_id,
        key_id,
        rate_limit: None,
    })
}
