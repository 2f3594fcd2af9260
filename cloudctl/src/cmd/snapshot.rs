//! `cloudctl snapshot create|list|get|delete|restore`.

use clap::Subcommand;
use cloudctl::client::{
    Client, ClientError, InstanceRestoreParams, SnapshotAccepted, SnapshotCreateParams, SnapshotPolicyParams, list_all,
};

use super::Context;

/// Snapshot verbs.
#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Snapshot an instance's disks, and with --memory its memory and device state too:
    /// `snapshot create --instance web-1 --memory --wait`.
    Create {
        /// The instance (name or id).
        #[arg(long)]
        instance: String,
        /// DNS label, unique in the project (default: the instance's name and the time).
        #[arg(long)]
        name: Option<String>,
        /// Also save memory and device state (the instance must be running).
        #[arg(long)]
        memory: bool,
    },
    /// List the project's snapshots.
    List {
        /// Only the snapshots of this instance.
        #[arg(long)]
        instance: Option<String>,
    },
    /// Show one snapshot.
    Get { snapshot: String },
    /// Delete a snapshot and its files.
    Delete { snapshot: String },
    /// Scheduled snapshots of an instance.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Restore a snapshot into a new instance (on the host that holds it; it boots from the
    /// snapshot's disks with a new address): `snapshot restore disk-1 --to-instance web-2 --wait`.
    Restore {
        snapshot: String,
        /// The new instance's name.
        #[arg(long, value_name = "NAME")]
        to_instance: String,
        /// An SSH key of the project to inject as well (repeatable).
        #[arg(long = "ssh-key", value_name = "KEY")]
        ssh_keys: Vec<String>,
    },
}

/// Snapshot policy verbs.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Snapshot an instance every DURATION while it runs and keep the newest N of those:
    /// `snapshot policy set --instance web-1 --every 1h --keep 24`.
    Set {
        #[arg(long)]
        instance: String,
        /// Time between two snapshots (at least 10s): 90s, 15m, 1h.
        #[arg(long, value_parser = super::parse_duration, value_name = "DURATION")]
        every: std::time::Duration,
        /// How many scheduled snapshots to keep (1 to 100).
        #[arg(long)]
        keep: u32,
        /// Save memory state too.
        #[arg(long)]
        memory: bool,
    },
    /// Show an instance's policy.
    Get {
        #[arg(long)]
        instance: String,
    },
    /// Remove an instance's policy (its snapshots stay).
    Clear {
        #[arg(long)]
        instance: String,
    },
}

/// Runs a snapshot command.
pub async fn run(ctx: &Context, cmd: SnapshotCommand) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let project = ctx.project.as_str();
    match cmd {
        SnapshotCommand::Create { instance, name, memory } => {
            let accepted = client.snapshot_create(project, &SnapshotCreateParams { instance, name, memory }).await?;
            finish(ctx, &client, accepted).await
        }
        SnapshotCommand::List { instance } => {
            ctx.print_list(&list_all(|c| client.snapshot_list(project, instance.as_deref(), c)).await?)
        }
        SnapshotCommand::Get { snapshot } => ctx.print_one(&client.snapshot_get(project, &snapshot).await?),
        SnapshotCommand::Delete { snapshot } => {
            let accepted = client.snapshot_delete(project, &snapshot).await?;
            finish(ctx, &client, accepted).await
        }
        SnapshotCommand::Policy(PolicyCommand::Set { instance, every, keep, memory }) => {
            let params = SnapshotPolicyParams { every_secs: every.as_secs(), keep, memory };
            ctx.print_one(&client.snapshot_policy_set(project, &instance, &params).await?)
        }
        SnapshotCommand::Policy(PolicyCommand::Get { instance }) => {
            ctx.print_one(&client.snapshot_policy_get(project, &instance).await?)
        }
        SnapshotCommand::Policy(PolicyCommand::Clear { instance }) => {
            let policy = client.snapshot_policy_get(project, &instance).await?;
            client.snapshot_policy_clear(project, &instance).await?;
            ctx.print_one(&policy)
        }
        SnapshotCommand::Restore { snapshot, to_instance, ssh_keys } => {
            let params = InstanceRestoreParams { name: to_instance, ssh_keys };
            let key = ctx.idempotency_key();
            let accepted = client.snapshot_restore(project, &snapshot, &params, Some(&key)).await?;
            ctx.finish_instance_change(&client, accepted).await
        }
    }
}

/// Prints an accepted snapshot change, or with `--wait` waits for its operation and prints it
/// with the snapshot as it is then.
async fn finish(ctx: &Context, client: &Client, accepted: SnapshotAccepted) -> anyhow::Result<()> {
    if ctx.global.wait.is_none() {
        return ctx.print_one(&accepted);
    }
    let operation = ctx.wait_operation(client, &accepted.operation).await?;
    let snapshot = match client.snapshot_get(&ctx.project, &accepted.snapshot.id.to_string()).await {
        Ok(snapshot) => snapshot,
        Err(ClientError::NotFound(_)) => {
            let mut gone = accepted.snapshot.clone();
            gone.state = "deleted".into();
            gone
        }
        Err(err) => return Err(err.into()),
    };
    ctx.print_one(&SnapshotAccepted { operation, snapshot, extra: accepted.extra })
}
