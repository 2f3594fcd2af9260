//! `cloudctl ssh-key create|list|get|delete`.

use clap::Subcommand;
use cloudctl::client::{SshKeyCreateParams, list_all};

use super::{Context, value_or_file};

/// SSH key verbs.
#[derive(Debug, Subcommand)]
pub enum SshKeyCommand {
    /// Add a public key: `ssh-key create alice --public-key @~/.ssh/id_ed25519.pub`.
    Create {
        /// DNS label, unique in the project.
        name: String,
        /// One OpenSSH public key line, inline or @FILE.
        #[arg(long, value_name = "KEY|@FILE")]
        public_key: String,
    },
    /// List the project's keys.
    List,
    /// Show one key.
    Get { key: String },
    /// Remove a key (refused while an instance uses it).
    Delete { key: String },
}

/// Runs an ssh-key command.
pub async fn run(ctx: &Context, cmd: SshKeyCommand) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let project = ctx.project.as_str();
    match cmd {
        SshKeyCommand::Create { name, public_key } => {
            let public_key = value_or_file(&public_key)?.trim().to_owned();
            let key = client.ssh_key_create(project, &SshKeyCreateParams { name, public_key }).await?;
            ctx.print_one(&key)
        }
        SshKeyCommand::List => ctx.print_list(&list_all(|c| client.ssh_key_list(project, c)).await?),
        SshKeyCommand::Get { key } => ctx.print_one(&client.ssh_key_get(project, &key).await?),
        SshKeyCommand::Delete { key } => {
            // Fetch first, so the deleted key can be printed (and a missing one is exit 2).
            let found = client.ssh_key_get(project, &key).await?;
            client.ssh_key_delete(project, &found.id.to_string()).await?;
            ctx.print_one(&found)
        }
    }
}
