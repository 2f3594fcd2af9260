//! `cloudctl project list|create|get`, `cloudctl project quota [set]` and `cloudctl project member
//! list|add|set|remove`.

use clap::Subcommand;
use cloudctl::client::{MemberAddParams, MemberSetParams, ProjectCreateParams, QuotaSetParams, list_all};

use super::Context;

/// Project verbs.
#[derive(Debug, Subcommand)]
pub enum ProjectCommand {
    /// List the projects you belong to.
    List,
    /// Show one project.
    Get { project: String },
    /// Create a project (you become its admin).
    Create {
        /// DNS label, unique in the cloud.
        name: String,
        /// One line of free text.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// The members of the project (`--project`) and their roles (admins manage them).
    #[command(subcommand)]
    Member(MemberCommand),
    /// The quotas of the project (`--project`; 0: no limit) and what it holds.
    Quota {
        #[command(subcommand)]
        set: Option<QuotaCommand>,
    },
}

/// Quota verbs (operators), on the project `--project` names.
#[derive(Debug, Subcommand)]
pub enum QuotaCommand {
    /// Set the project's own quotas; each one left out takes the default (`[quotas]`) again.
    Set {
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(0..))]
        instances: Option<i32>,
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(0..))]
        vcpus: Option<i32>,
        #[arg(long, value_name = "GIB", value_parser = clap::value_parser!(i64).range(0..=(i64::MAX >> 30)))]
        memory_gib: Option<i64>,
        #[arg(long, value_name = "GIB", value_parser = clap::value_parser!(i64).range(0..=(i64::MAX >> 30)))]
        disk_gib: Option<i64>,
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(0..))]
        snapshots: Option<i32>,
    },
}

/// Member verbs, on the project `--project` names.
#[derive(Debug, Subcommand)]
pub enum MemberCommand {
    /// List the members and their roles.
    List,
    /// Add a member: by user name, id, e-mail address or subject (an e-mail address nobody has
    /// yet adds whoever signs in with it later).
    Add {
        user: String,
        #[arg(long, value_parser = ["viewer", "member", "admin"])]
        role: String,
    },
    /// Change a member's role (the project's last admin stays one).
    Set {
        user: String,
        #[arg(long, value_parser = ["viewer", "member", "admin"])]
        role: String,
    },
    /// Remove a member (yourself: leave the project); the last admin stays.
    Remove { user: String },
}

/// Runs a project command.
pub async fn run(ctx: &Context, cmd: ProjectCommand) -> anyhow::Result<()> {
    let client = ctx.client()?;
    match cmd {
        ProjectCommand::List => ctx.print_list(&list_all(|c| client.project_list(c)).await?),
        ProjectCommand::Get { project } => ctx.print_one(&client.project_get(&project).await?),
        ProjectCommand::Create { name, description } => {
            ctx.print_one(&client.project_create(&ProjectCreateParams { name, description }).await?)
        }
        ProjectCommand::Quota { set: None } => ctx.print_one(&client.project_quotas(ctx.project.as_str()).await?),
        ProjectCommand::Quota {
            set: Some(QuotaCommand::Set { instances, vcpus, memory_gib, disk_gib, snapshots }),
        } => {
            let bytes = |gib: Option<i64>| gib.map(|g| g.saturating_mul(1 << 30));
            let params = QuotaSetParams {
                instances,
                vcpus,
                memory_bytes: bytes(memory_gib),
                disk_bytes: bytes(disk_gib),
                snapshots,
            };
            ctx.print_one(&client.project_quotas_set(ctx.project.as_str(), &params).await?)
        }
        ProjectCommand::Member(cmd) => {
            let project = ctx.project.as_str();
            match cmd {
                MemberCommand::List => ctx.print_list(&client.member_list(project).await?),
                MemberCommand::Add { user, role } => {
                    ctx.print_one(&client.member_add(project, &MemberAddParams { user, role }).await?)
                }
                MemberCommand::Set { user, role } => {
                    ctx.print_one(&client.member_set(project, &user, &MemberSetParams { role }).await?)
                }
                MemberCommand::Remove { user } => client.member_remove(project, &user).await.map_err(Into::into),
            }
        }
    }
}
