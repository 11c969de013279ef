//! Orgs and API keys (only a key's SHA-256 is stored).

use sqlx::PgPool;
use uuid::Uuid;

use super::super::error::StoreResult;
use super::super::model::Principal;
use super::super::storable;

/// The owner of a key that exists and is not revoked.
pub(super) async fn principal(pool: &PgPool, key_hash: &str) -> StoreResult<Option<Principal>> {
    Ok(sqlx::query_as!(
        Principal,
        "SELECT org_id, id AS key_id FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
        key_hash,
    )
    .fetch_optional(pool)
    .await?)
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
    Ok(Principal { org_id, key_id })
}
