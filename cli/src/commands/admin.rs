use agentq_shared::config::{Env, WebFetchSettings};
use agentq_shared::ssrf::Policy;
use agentq_shared::store::{ActiveCap, KeyInfo, NewKey, RateLimit, Store, StoreError};
use anyhow::Context;

use crate::args::{Admin, KeysCommand};

fn database_url() -> anyhow::Result<String> {
    std::env::var("DATABASE_URL")
        .ok()
        .filter(|url| !url.is_empty())
        .context("DATABASE_URL is not set; expected a Postgres URL such as postgres://postgres@127.0.0.1:5432/agentq")
}

pub async fn run(command: Admin) -> anyhow::Result<()> {
    let store = Store::connect_durable(&database_url()?).await?;
    store.migrate().await?;
    match command {
        Admin::Migrate => println!("migrations applied"),
        Admin::CreateKey {
            org,
            name,
            expires_in_days,
        } => {
            anyhow::ensure!(!org.trim().is_empty(), "--org must not be empty");
            let expires_at = expires_in_days
                .map(|days| chrono::Utc::now() + chrono::Duration::days(i64::from(days)));
            let new = NewKey {
                org: org.clone(),
                name,
                expires_at,
            };
            let (principal, key) = store.create_key(&new).await?;
            println!(
                "created key {} for org {org} ({})",
                principal.key_id, principal.org_id
            );
            println!("{key}");
        }
        Admin::Keys(KeysCommand::List { org, json }) => {
            let keys = match store.list_keys(&org).await {
                Err(StoreError::NotFound(_)) => anyhow::bail!("no org is named {org:?}"),
                listed => listed?,
            };
            if json {
                for key in &keys {
                    println!("{}", serde_json::to_string(key)?);
                }
            } else {
                print_keys(&keys);
            }
        }
        Admin::Keys(KeysCommand::Revoke { key_id }) => match store.revoke_key(key_id).await {
            Ok(()) => println!(
                "revoked key {key_id}; API processes refuse it within AGENTQ_AUTH_CACHE_SECS"
            ),
            Err(StoreError::NotFound(_)) => anyhow::bail!("no key has the id {key_id}"),
            Err(e) => return Err(e.into()),
        },
        Admin::RateLimit {
            org,
            per_sec,
            burst,
            default: _,
        } => {
            let limit = per_sec.map(|per_sec| RateLimit {
                per_sec,
                burst: burst.unwrap_or(per_sec),
            });
            match store.set_org_rate_limit(&org, limit).await {
                Ok(()) => match limit {
                    Some(l) => {
                        println!("org {org}: {} requests/s, bursts of {}", l.per_sec, l.burst)
                    }
                    None => println!("org {org}: the deployment's default rate limit"),
                },
                Err(StoreError::NotFound(_)) => anyhow::bail!("no org is named {org:?}"),
                Err(e) => return Err(e.into()),
            }
        }
        Admin::Concurrency {
            org,
            max_active,
            unlimited,
            default: _,
        } => {
            let cap = match (max_active, unlimited) {
                (Some(n), _) => Some(ActiveCap::AtMost(n)),
                (None, true) => Some(ActiveCap::Unlimited),
                (None, false) => None,
            };
            match store.set_org_active_cap(&org, cap).await {
                Ok(()) => match cap {
                    Some(ActiveCap::AtMost(n)) => {
                        println!("org {org}: at most {n} active sessions; more wait queued")
                    }
                    Some(ActiveCap::Unlimited) => println!("org {org}: no cap on active sessions"),
                    None => println!("org {org}: the deployment's default cap on active sessions"),
                },
                Err(StoreError::NotFound(_)) => anyhow::bail!("no org is named {org:?}"),
                Err(e) => return Err(e.into()),
            }
        }
        Admin::Webhook {
            org,
            url,
            clear,
            rotate_secret,
        } => webhook(&store, &org, url, clear, rotate_secret).await?,
    }
    Ok(())
}

/// `agentq admin webhook`: the URL is checked by the SSRF policy of this environment's
/// `AGENTQ_WEB_FETCH_ALLOW`/`_DENY`, as the API checks a run's.
async fn webhook(
    store: &Store,
    org: &str,
    url: Option<String>,
    clear: bool,
    rotate: bool,
) -> anyhow::Result<()> {
    let change = match (url, clear) {
        (Some(url), _) => {
            let lists = WebFetchSettings::from_env(&Env::process())?;
            let policy = Policy::new(&lists.allow, &lists.deny)?;
            let checked = agentq_shared::webhooks::check_url(&policy, &url)
                .map_err(|message| anyhow::anyhow!("{message}"))?;
            Some(Some(checked.to_string()))
        }
        (None, true) => Some(None),
        (None, false) => None,
    };
    let settings = match store.configure_org_webhook(org, change, rotate).await {
        Err(StoreError::NotFound(_)) => anyhow::bail!("no org is named {org:?}"),
        configured => configured?,
    };
    match &settings.url {
        Some(url) => println!("org {org}: webhook events go to {url} unless a run names its own"),
        None => println!("org {org}: no default webhook URL; only runs that name one get events"),
    }
    if rotate {
        println!("new signing secret (messages not yet delivered are signed with it):");
    } else {
        println!("signing secret:");
    }
    println!("{}", settings.secret);
    Ok(())
}

/// One line per key: id, name, prefix, created, last used, expiry, state.
fn print_keys(keys: &[KeyInfo]) {
    let when = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map_or_else(
            || "-".to_owned(),
            |t| t.format("%Y-%m-%d %H:%M:%S").to_string(),
        )
    };
    println!(
        "{:<36}  {:<16}  {:<10}  {:<19}  {:<19}  {:<19}  state",
        "id", "name", "prefix", "created", "last used", "expires"
    );
    let now = chrono::Utc::now();
    for key in keys {
        let state = match (key.revoked_at, key.expires_at) {
            (Some(_), _) => "revoked",
            (None, Some(at)) if at <= now => "expired",
            _ => "live",
        };
        println!(
            "{:<36}  {:<16}  {:<10}  {:<19}  {:<19}  {:<19}  {state}",
            key.id,
            key.name.as_deref().unwrap_or("-"),
            key.prefix,
            when(Some(key.created_at)),
            when(key.last_used_at),
            when(key.expires_at),
        );
    }
}
