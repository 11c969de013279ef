//! The hot copies in Redis: the session snapshot `{prefix}:session:{id}` and the cancel flag.
//! Redis failures here are logged and absorbed: Postgres still answers.

use redis::AsyncCommands;
use uuid::Uuid;

use super::Store;
use crate::schemas::AgentSession;

/// Sets the snapshot only if it is not older than the one stored: writers racing after their
/// commits can't put an older version back.
const SET_IF_NEWER: &str = r#"
local current = redis.call('GET', KEYS[1])
if current then
  local ok, decoded = pcall(cjson.decode, current)
  if ok and type(decoded) == 'table' and tonumber(decoded['version']) ~= nil
     and tonumber(decoded['version']) > tonumber(ARGV[2]) then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
return 1
"#;

impl Store {
    /// Writes the snapshot of a session (never replacing a newer one).
    pub async fn write_snapshot(&self, session: &AgentSession) {
        let Ok(json) = serde_json::to_string(session) else {
            return;
        };
        let result: redis::RedisResult<i32> = redis::Script::new(SET_IF_NEWER)
            .key(self.key("session", session.session_id))
            .arg(json)
            .arg(session.version)
            .arg(self.snapshot_ttl.as_secs().max(1))
            .invoke_async(&mut self.redis.clone())
            .await;
        if let Err(e) = result {
            tracing::warn!(session_id = %session.session_id, error = %e, "cannot write session snapshot to Redis");
        }
    }

    /// Reloads the session from Postgres and writes it through to Redis.
    pub async fn refresh_snapshot(&self, id: Uuid) -> sqlx::Result<Option<AgentSession>> {
        let session = self.load_session(id).await?;
        if let Some(session) = &session {
            self.write_snapshot(session).await;
        }
        Ok(session)
    }

    /// The session from Redis, or from Postgres (re-populating Redis) when Redis has none.
    #[tracing::instrument(skip_all, fields(session_id = %id))]
    pub async fn session_view(&self, id: Uuid) -> sqlx::Result<Option<AgentSession>> {
        let cached: redis::RedisResult<Option<String>> =
            self.redis.clone().get(self.key("session", id)).await;
        match cached {
            Ok(Some(json)) => match serde_json::from_str(&json) {
                Ok(session) => return Ok(Some(session)),
                Err(e) => tracing::warn!(error = %e, "ignoring an unreadable session snapshot"),
            },
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "Redis unavailable, reading the session from Postgres")
            }
        }
        self.refresh_snapshot(id).await
    }

    pub async fn set_cancel_flag(&self, id: Uuid) {
        let result: redis::RedisResult<()> = self
            .redis
            .clone()
            .set_ex(self.key("cancel", id), 1, 24 * 3600)
            .await;
        if let Err(e) = result {
            tracing::warn!(session_id = %id, error = %e, "cannot set the cancel flag in Redis; Postgres has it");
        }
    }

    /// The cheap cancel check (Redis). Postgres's `cancel_requested` stays the truth.
    pub async fn cancel_flagged(&self, id: Uuid) -> bool {
        let flagged: redis::RedisResult<bool> =
            self.redis.clone().exists(self.key("cancel", id)).await;
        flagged.unwrap_or(false)
    }
}
