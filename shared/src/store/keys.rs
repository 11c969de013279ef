//! Orgs and API keys. A key is shown once, when created; only its SHA-256 is stored.

use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use super::Store;

const KEY_PREFIX: &str = "aq_";

/// Who is calling: the org that owns the key, and the key itself (for audit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Principal {
    pub org_id: Uuid,
    pub key_id: Uuid,
}

fn hash_key(key: &str) -> String {
    sha256_hex(key.as_bytes())
}

/// Lowercase hex SHA-256, for API keys and request fingerprints.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Creates the org if it doesn't exist and a new key for it; returns the key in clear.
#[tracing::instrument(skip_all, fields(org = %org_name))]
pub async fn create_api_key(pg: &PgPool, org_name: &str) -> sqlx::Result<(Principal, String)> {
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    let key = format!("{KEY_PREFIX}{}", hex::encode(bytes));
    let org_name = super::pg_safe::text(org_name);
    let mut tx = pg.begin().await?;
    let org_id = sqlx::query_scalar!(
        "INSERT INTO orgs (id, name) VALUES ($1, $2)
             ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING id",
        Uuid::now_v7(),
        org_name.as_ref(),
    )
    .fetch_one(&mut *tx)
    .await?;
    let key_id = Uuid::now_v7();
    sqlx::query!(
        "INSERT INTO api_keys (id, org_id, key_hash, key_prefix) VALUES ($1, $2, $3, $4)",
        key_id,
        org_id,
        hash_key(&key),
        &key[..KEY_PREFIX.len() + 6],
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok((Principal { org_id, key_id }, key))
}

impl Store {
    /// The owner of a key that exists and is not revoked.
    pub async fn authenticate(&self, key: &str) -> sqlx::Result<Option<Principal>> {
        sqlx::query_as!(
            Principal,
            "SELECT org_id, id AS key_id FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
            hash_key(key),
        )
        .fetch_optional(&self.pg)
        .await
    }
}
