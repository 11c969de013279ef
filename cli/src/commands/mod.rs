mod admin;
mod client;
mod dev;
mod render;
mod tool;

use crate::args::{Cli, Command};

/// Runs a command; the result is the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Admin(admin) => admin::run(admin).await.map(|()| 0),
        Command::StandInLlm { listen } => crate::stand_in::serve(listen).await.map(|()| 0),
        Command::Tool(tool) => tool::run(tool).await,
        Command::Bench(bench) => crate::bench::run(bench).await,
        Command::Dev(dev) => dev::run(dev).await,
        other => client::run(other).await,
    }
}
