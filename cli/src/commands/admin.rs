use agentq_shared::store::{RateLimit, Store, StoreError};
use anyhow::Context;

use crate::args::Admin;

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
        Admin::CreateKey { org } => {
            anyhow::ensure!(!org.trim().is_empty(), "--org must not be empty");
            let (principal, key) = store.create_api_key(&org).await?;
            println!(
                "created key {} for org {org} ({})",
                principal.key_id, principal.org_id
            );
            println!("{key}");
        }
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
    }
    Ok(())
}
