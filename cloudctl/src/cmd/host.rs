//! `cloudctl host list|get`, `cloudctl host join-token create` (operators).

use clap::Subcommand;
use uuid::Uuid;

use super::{Context, Failure, parse_duration};

/// Host verbs.
#[derive(Debug, Subcommand)]
pub enum HostCommand {
    /// List the hosts of the fleet.
    List,
    /// Show one host, by hostname or id.
    Get { host: String },
    /// Join tokens for new hosts.
    #[command(subcommand, name = "join-token")]
    JoinToken(JoinTokenCommand),
}

/// Join token verbs.
#[derive(Debug, Subcommand)]
pub enum JoinTokenCommand {
    /// Create a single-use token and print the `host-agent join` command to run on the new host.
    Create {
        /// Lifetime, e.g. 1h [default: the control plane's setting].
        #[arg(long, value_parser = parse_duration)]
        ttl: Option<std::time::Duration>,
    },
}

/// Runs a host command.
pub async fn run(ctx: &Context, cmd: HostCommand) -> anyhow::Result<()> {
    let client = ctx.client()?;
    match cmd {
        HostCommand::List => ctx.print_list(&client.host_list().await?),
        HostCommand::Get { host } => {
            let found = match Uuid::parse_str(&host) {
                Ok(id) => client.host_get(id).await?,
                Err(_) => client
                    .host_list()
                    .await?
                    .into_iter()
                    .find(|h| h.hostname == host)
                    .ok_or_else(|| Failure::NotFound(format!("no host {host:?}")))?,
            };
            ctx.print_one(&found)
        }
        HostCommand::JoinToken(JoinTokenCommand::Create { ttl }) => {
            ctx.print_one(&client.join_token_create(ttl.map(|t| t.as_secs())).await?)
        }
    }
}
