//! `cloudctl project list|create|get` and `cloudctl project member list|add|set|remove`.

use clap::Subcommand;
use cloudctl::client::{MemberAddParams, MemberSetParams, ProjectCreateParams, list_all};

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
