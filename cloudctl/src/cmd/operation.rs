//! `cloudctl operation get|list|wait`.

use clap::Subcommand;
use cloudctl::client::list_all;
use uuid::Uuid;

use super::{Context, Failure};

/// Operation verbs.
#[derive(Debug, Subcommand)]
pub enum OperationCommand {
    /// Show one operation.
    Get { id: String },
    /// List the project's operations, newest first.
    List,
    /// Wait until an operation ends and show it (exit 1 if it failed, 3 on timeout).
    Wait { id: String },
}

/// Runs an operation command.
pub async fn run(ctx: &Context, cmd: OperationCommand) -> anyhow::Result<()> {
    let client = ctx.client()?;
    match cmd {
        OperationCommand::Get { id } => ctx.print_one(&client.operation_get(parse_id(&id)?).await?),
        OperationCommand::List => ctx.print_list(&list_all(|c| client.operation_list(&ctx.project, c)).await?),
        OperationCommand::Wait { id } => {
            let op = client.operation_get(parse_id(&id)?).await?;
            match ctx.wait_operation(&client, &op).await {
                Ok(done) => ctx.print_one(&done),
                Err(err) => {
                    // A failed operation is still shown; the error follows on stderr.
                    if let Some(Failure::OperationFailed { .. }) = err.downcast_ref::<Failure>()
                        && let Ok(done) = client.operation_get(op.id).await
                    {
                        ctx.print_one(&done)?;
                    }
                    Err(err)
                }
            }
        }
    }
}

fn parse_id(id: &str) -> Result<Uuid, Failure> {
    Uuid::parse_str(id).map_err(|_| Failure::Usage(format!("{id:?} is not an operation id (a UUID)")))
}
