//! `cloudctl instance create|list|get|start|stop|reboot|suspend|delete|wait|console|ssh|dr`.

use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use cloudctl::client::{DrPolicyParams, InstanceAction, InstanceCreateParams, list_all};

use super::{Context, Failure, parse_size, session, value_or_file};

/// Instance verbs.
#[derive(Debug, Subcommand)]
pub enum InstanceCommand {
    /// Create an instance: `instance create web-1 --image minimal --vcpus 1 --memory 256MiB`.
    Create(CreateArgs),
    /// List the project's instances.
    List {
        /// Only instances in this state (running, stopped, …).
        #[arg(long)]
        state: Option<String>,
    },
    /// Show one instance.
    Get { instance: String },
    /// Start a stopped instance.
    Start { instance: String },
    /// Stop a running instance (ACPI shutdown, forced after a while).
    Stop { instance: String },
    /// Reboot a running instance.
    Reboot { instance: String },
    /// Suspend a running instance: its memory and disks are saved on its host and its vCPUs and
    /// memory freed; `instance start` resumes it where it was.
    Suspend { instance: String },
    /// Delete an instance and free its resources.
    Delete { instance: String },
    /// Wait until an instance reaches a state (exit 3 on timeout).
    Wait {
        instance: String,
        /// The state to wait for.
        #[arg(long = "for", default_value = "running", value_name = "STATE")]
        state: String,
    },
    /// Attach the terminal to the serial console (detach: Ctrl-] then `.`, or `~.` after a newline).
    Console { instance: String },
    /// SSH into an instance through the control plane (no route to its subnet needed), checking
    /// its identity against the host keys it published; waits for a booting instance.
    Ssh(super::ssh::SshArgs),
    /// Disaster recovery: `dr set NAME --priority N` restores the instance on a healthy host
    /// from its latest snapshot when its host dies; `dr clear NAME` stops that.
    #[command(subcommand)]
    Dr(DrCommand),
    /// Pipe stdin/stdout through the instance's TCP tunnel (ssh's ProxyCommand).
    #[command(hide = true)]
    TunnelProxy {
        instance: String,
        #[arg(long, default_value_t = 22)]
        port: u16,
    },
}

/// `instance dr`.
#[derive(Debug, Subcommand)]
pub enum DrCommand {
    /// Give an instance a DR policy (prints the instance).
    Set {
        instance: String,
        /// 0 to 1000: the highest priorities are recovered first.
        #[arg(long, default_value_t = 100)]
        priority: i64,
    },
    /// Remove an instance's DR policy (it stays `lost` if its host dies).
    Clear { instance: String },
}

/// How long `instance ssh` waits for a booting instance when `--timeout` is not given.
const SSH_READY_WAIT: Duration = Duration::from_secs(300);

/// `instance create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// DNS label, unique in the project; also the guest's hostname.
    pub name: String,
    /// Image name or id.
    #[arg(long)]
    pub image: String,
    /// Virtual CPUs.
    #[arg(long, default_value_t = 1)]
    pub vcpus: u32,
    /// Memory, e.g. 256MiB, 2GiB (a bare number is MiB).
    #[arg(long, default_value = "512MiB")]
    pub memory: String,
    /// Disk size, e.g. 20GiB (a bare number is GiB) [default: the image's size].
    #[arg(long)]
    pub disk: Option<String>,
    /// SSH key (name or id) to inject; repeatable.
    #[arg(long = "ssh-key", value_name = "KEY")]
    pub ssh_keys: Vec<String>,
    /// cloud-init user-data, inline or @FILE.
    #[arg(long, value_name = "DATA|@FILE")]
    pub user_data: Option<String>,
    /// Anti-affinity group: instances of a group land on different hosts.
    #[arg(long, value_name = "GROUP")]
    pub anti_affinity_group: Option<String>,
}

/// Runs an instance command.
pub async fn run(ctx: &Context, cmd: InstanceCommand) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let project = ctx.project.as_str();
    match cmd {
        InstanceCommand::Create(args) => {
            let params = create_params(args)?;
            let key = ctx.idempotency_key();
            let accepted = client.instance_create(project, &params, Some(&key)).await?;
            ctx.finish_instance_change(&client, accepted).await
        }
        InstanceCommand::List { state } => {
            let items = list_all(|cursor| client.instance_list(project, state.as_deref(), cursor)).await?;
            ctx.print_list(&items)
        }
        InstanceCommand::Get { instance } => ctx.print_one(&client.instance_get(project, &instance).await?),
        InstanceCommand::Start { instance } => action(ctx, &instance, InstanceAction::Start).await,
        InstanceCommand::Stop { instance } => action(ctx, &instance, InstanceAction::Stop).await,
        InstanceCommand::Reboot { instance } => action(ctx, &instance, InstanceAction::Reboot).await,
        InstanceCommand::Suspend { instance } => action(ctx, &instance, InstanceAction::Suspend).await,
        InstanceCommand::Dr(DrCommand::Set { instance, priority }) => {
            ctx.print_one(&client.dr_policy_set(project, &instance, &DrPolicyParams { priority }).await?)
        }
        InstanceCommand::Dr(DrCommand::Clear { instance }) => {
            client.dr_policy_clear(project, &instance).await?;
            ctx.print_one(&client.instance_get(project, &instance).await?)
        }
        InstanceCommand::Delete { instance } => {
            let key = ctx.idempotency_key();
            let accepted = client.instance_delete(project, &instance, Some(&key)).await?;
            ctx.finish_instance_change(&client, accepted).await
        }
        InstanceCommand::Wait { instance, state } => {
            let found = wait_for_state(ctx, &instance, &state).await?;
            ctx.print_one(&found)
        }
        InstanceCommand::Console { instance } => {
            let found = client.instance_get(project, &instance).await?;
            let socket = client.instance_console(project, &found.id.to_string()).await?;
            session::console(socket, &found.name).await
        }
        InstanceCommand::Ssh(args) => {
            // A booting instance is waited for (a spinner on a terminal), up to --timeout.
            let bound = ctx.global.timeout.unwrap_or(SSH_READY_WAIT);
            let found = ctx.wait_instance_ready(&client, &args.instance, bound).await?;
            super::ssh::ssh(ctx, &found, &args).await
        }
        InstanceCommand::TunnelProxy { instance, port } => {
            let socket = client.instance_tunnel(project, &instance, port).await?;
            session::pipe_stdio(socket).await
        }
    }
}

fn create_params(args: CreateArgs) -> anyhow::Result<InstanceCreateParams> {
    let usage = |e: String| Failure::Usage(e);
    let memory_mib = parse_size(&args.memory, 1 << 20, 1 << 20, "MiB").map_err(|e| usage(format!("--memory: {e}")))?;
    let disk_gib = match &args.disk {
        Some(disk) => parse_size(disk, 1 << 30, 1 << 30, "GiB").map_err(|e| usage(format!("--disk: {e}")))?,
        None => 0,
    };
    let user_data = args.user_data.as_deref().map(value_or_file).transpose()?;
    Ok(InstanceCreateParams {
        name: args.name,
        image: args.image,
        vcpus: args.vcpus,
        memory_mib,
        disk_gib,
        ssh_keys: args.ssh_keys,
        user_data,
        anti_affinity_group: args.anti_affinity_group,
    })
}

async fn action(ctx: &Context, instance: &str, action: InstanceAction) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let key = ctx.idempotency_key();
    let accepted = client.instance_action(&ctx.project, instance, action, Some(&key)).await?;
    ctx.finish_instance_change(&client, accepted).await
}

/// Polls the instance (backing off from 0.5 s to 3 s) until it is in `state`; `failed`
/// (unless waited for) ends the wait with its reason.
async fn wait_for_state(ctx: &Context, instance: &str, state: &str) -> anyhow::Result<cloudctl::client::Instance> {
    let client = ctx.client()?;
    let started = Instant::now();
    let deadline = started + ctx.timeout();
    let mut delay = Duration::from_millis(500);
    loop {
        let found = client.instance_get(&ctx.project, instance).await?;
        if found.state == state {
            return Ok(found);
        }
        if found.state == "failed" {
            let reason = found.state_reason.as_deref().unwrap_or("no reason given");
            return Err(Failure::Usage(format!("instance {} failed: {reason}", found.name)).into());
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(Failure::Timeout(format!(
                "timed out after {}s waiting for instance {} to be {state} (it is {})",
                started.elapsed().as_secs(),
                found.name,
                found.state
            ))
            .into());
        }
        tokio::time::sleep(delay.min(deadline - now)).await;
        delay = (delay * 2).min(Duration::from_secs(3));
    }
}
