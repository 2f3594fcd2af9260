//! `cloudctl project list|create|get`.

use clap::Subcommand;
use cloudctl::client::{ProjectCreateParams, list_all};

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
    }
}
