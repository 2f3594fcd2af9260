//! `cloudctl operator grant|revoke USER`: who manages the fleet (operators only).

use clap::Subcommand;

use super::Context;

/// Operator verbs.
#[derive(Debug, Subcommand)]
pub enum OperatorCommand {
    /// Make a user an operator (by name, id, e-mail address or subject).
    Grant { user: String },
    /// Revoke a user's operator role (the last operator stays one).
    Revoke { user: String },
}

/// Runs an operator command.
pub async fn run(ctx: &Context, cmd: OperatorCommand) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let (user, operator) = match cmd {
        OperatorCommand::Grant { user } => (user, true),
        OperatorCommand::Revoke { user } => (user, false),
    };
    ctx.print_one(&client.operator_set(&user, operator).await?)
}
