use agentq_shared::store::Store;
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
    }
    Ok(())
}
