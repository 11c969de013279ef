//! Webhooks: which URLs may receive a session's events, and how each message is signed.
//!
//! agentq POSTs a [`WebhookEvent`](crate::schemas::WebhookEvent) when a session starts waiting
//! for approval and when it ends, to the run's `webhook_url` or else its org's default. Messages
//! follow Standard Webhooks (<https://www.standardwebhooks.com>): a `webhook-id` that stays the
//! same on every retry of one message, a `webhook-timestamp` in Unix seconds, and
//! `webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, keyed by the org's
//! secret (`whsec_` and base64 of 32 random bytes; the key is the decoded bytes).
//!
//! Where the pieces live: a trigger on `session_events` writes the delivery in the same
//! transaction as the transition (the outbox; `migrations/*_webhooks.up.sql`); the worker's
//! sender (`worker/src/webhooks.rs`) claims due deliveries, signs and sends them and records
//! each attempt; `GET /v1/agents/{id}/webhooks` shows them.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use rand::RngCore;
use sha2::Sha256;
use url::Url;
use uuid::Uuid;

use crate::ssrf::Policy;

/// What every signing secret starts with.
pub const SECRET_PREFIX: &str = "whsec_";
/// The longest webhook URL accepted.
pub const MAX_URL_LEN: usize = 2048;

/// A new signing secret: `whsec_` and base64 of 32 random bytes.
pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{SECRET_PREFIX}{}", STANDARD.encode(bytes))
}

/// The `webhook-id` of the message about event `seq` of a session: the same on every attempt,
/// so a receiver can drop a message it has already handled.
pub fn message_id(session_id: Uuid, seq: i64) -> String {
    format!("msg_{}_{seq}", session_id.simple())
}

/// A secret that is not `whsec_` followed by base64.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a webhook secret is {SECRET_PREFIX} followed by base64")]
pub struct BadSecret;

/// The `webhook-signature` header of a message: `v1,` and the base64 HMAC-SHA256, keyed by the
/// secret's bytes, of `{id}.{timestamp}.{body}`.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Result<String, BadSecret> {
    let encoded = secret.strip_prefix(SECRET_PREFIX).ok_or(BadSecret)?;
    let key = STANDARD.decode(encoded).map_err(|_| BadSecret)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).map_err(|_| BadSecret)?;
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    Ok(format!(
        "v1,{}",
        STANDARD.encode(mac.finalize().into_bytes())
    ))
}

/// Checks a webhook URL before it is accepted (on a run, or as an org's default): an http(s)
/// URL of at most [`MAX_URL_LEN`] characters that the SSRF policy lets through as far as it can
/// tell without a DNS lookup (the sender checks again, resolving, before every attempt). The
/// error is a sentence for the client.
pub fn check_url(policy: &Policy, raw: &str) -> Result<Url, String> {
    if raw.len() > MAX_URL_LEN {
        return Err(format!(
            "webhook_url is {} bytes long; at most {MAX_URL_LEN} are accepted",
            raw.len()
        ));
    }
    let url = Url::parse(raw.trim()).map_err(|e| format!("webhook_url is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "webhook_url must be an http or https URL, not {:?}",
            url.scheme()
        ));
    }
    policy
        .check_before_lookup(&url)
        .map_err(|refused| format!("webhook_url is refused: {refused}"))?;
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks reference libraries.
    #[test]
    fn signatures_match_the_reference_example() {
        let signature = sign(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(
            signature.as_deref(),
            Ok("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
        );
        assert_eq!(sign("MfKQ9r8G", "msg", 1, b"{}"), Err(BadSecret));
        assert_eq!(sign("whsec_not base64!", "msg", 1, b"{}"), Err(BadSecret));
    }

    #[test]
    fn new_secrets_sign_and_differ() {
        let (a, b) = (new_secret(), new_secret());
        assert_ne!(a, b);
        assert_eq!(
            STANDARD.decode(&a[SECRET_PREFIX.len()..]).map(|k| k.len()),
            Ok(32)
        );
        assert!(sign(&a, "msg_1", 1, b"{}").is_ok());
    }

    #[test]
    fn debug_output_leaves_secrets_out() {
        use crate::schemas::WebhookEventType;
        use crate::store::{OrgWebhook, OrgWebhookChange, WebhookDue};
        let secret = new_secret();
        let due = WebhookDue {
            session_id: Uuid::nil(),
            event_seq: 3,
            event_type: WebhookEventType::Completed,
            org_id: Uuid::nil(),
            url: "https://hooks.example.com/".into(),
            attempt: 1,
            payload: None,
            secret: Some(secret.clone()),
        };
        let org = OrgWebhook {
            url: None,
            secret: secret.clone(),
        };
        let change = OrgWebhookChange {
            url: None,
            new_secret: secret.clone(),
            rotate: true,
        };
        for shown in [
            format!("{due:?}"),
            format!("{org:?}"),
            format!("{change:?}"),
        ] {
            assert!(!shown.contains(SECRET_PREFIX), "{shown}");
            assert!(shown.contains("<redacted>"), "{shown}");
        }
    }

    #[test]
    fn urls_are_checked_without_a_lookup() {
        let closed = Policy::new(&[], &[]).expect("no lists");
        let open = Policy::new(&["127.0.0.2/32".to_owned()], &[]).expect("a list");
        assert!(check_url(&closed, "https://hooks.example.com/agentq?k=1").is_ok());
        for (url, expected) in [
            ("http://127.0.0.2:9/", "127.0.0.2 is loopback"),
            ("http://localhost/", "localhost is a loopback name"),
            ("http://[::1]/", "::1 is loopback"),
            ("http://10.1.2.3/", "10.1.2.3 is private"),
            ("http://0xa9fea9fe/", "169.254.169.254 is link-local"),
            ("http://svc.internal/", "svc.internal is a private-use name"),
            (
                "ftp://example.com/",
                "must be an http or https URL, not \"ftp\"",
            ),
            ("javascript:alert(1)", "must be an http or https URL"),
            ("not a url", "webhook_url is not a URL"),
            ("http://user:pw@example.com/", "the URL carries credentials"),
        ] {
            let refused = check_url(&closed, url).expect_err(url);
            assert!(refused.contains(expected), "{url}: {refused}");
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN));
        assert!(
            check_url(&closed, &long)
                .unwrap_err()
                .contains("at most 2048")
        );
        assert!(check_url(&open, "http://127.0.0.2:9/hook").is_ok());
        assert!(check_url(&open, "http://127.0.0.1:9/hook").is_err());
    }
}
