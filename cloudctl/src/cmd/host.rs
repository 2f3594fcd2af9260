//! `cloudctl host list|get|drain|undrain|declare-dead|liveness`, `cloudctl host join-token
//! create` (operators).

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
    /// Stop placing new instances on a host (instances already there keep running).
    Drain { host: String },
    /// Let the scheduler place instances on a drained host again.
    Undrain { host: String },
    /// Declare a silent host dead (when the fleet is degraded nobody is declared dead
    /// automatically); its instances become lost. It is taken back if it reports again.
    DeclareDead { host: String },
    /// The fleet's liveness: healthy, or degraded while many hosts are silent together.
    Liveness,
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
        HostCommand::Get { host } => ctx.print_one(&find(&client, &host).await?),
        HostCommand::Drain { host } => {
            let id = find(&client, &host).await?.id;
            ctx.print_one(&client.host_set_draining(id, true).await?)
        }
        HostCommand::Undrain { host } => {
            let id = find(&client, &host).await?.id;
            ctx.print_one(&client.host_set_draining(id, false).await?)
        }
        HostCommand::DeclareDead { host } => {
            let id = find(&client, &host).await?.id;
            ctx.print_one(&client.host_declare_dead(id).await?)
        }
        HostCommand::Liveness => ctx.print_one(&client.fleet_liveness().await?),
        HostCommand::JoinToken(JoinTokenCommand::Create { ttl }) => {
            ctx.print_one(&client.join_token_create(ttl.map(|t| t.as_secs())).await?)
        }
    }
}

/// A host by id or by hostname (hostnames are not unique: more than one match is an error).
async fn find(client: &cloudctl::client::Client, host: &str) -> anyhow::Result<cloudctl::client::Host> {
    if let Ok(id) = Uuid::parse_str(host) {
        return Ok(client.host_get(id).await?);
    }
    let mut matches: Vec<_> = client.host_list().await?.into_iter().filter(|h| h.hostname == host).collect();
    match matches.len() {
        0 => Err(Failure::NotFound(format!("no host {host:?}")).into()),
        1 => Ok(matches.remove(0)),
        n => Err(Failure::Usage(format!("{n} hosts are named {host:?}; name one by its id")).into()),
    }
}
