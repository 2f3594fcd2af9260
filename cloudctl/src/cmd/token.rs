//! `cloudctl token create|list|revoke`: API tokens of your own user, for scripts. A token made
//! with a token never outlives it, and can be limited to one project and a role there.

use clap::Subcommand;
use cloudctl::client::TokenCreateParams;

use super::{Context, Failure, parse_duration};

/// Token verbs.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a token; its secret is shown once (`-o name` prints only the secret).
    Create {
        /// DNS label, unique among your unrevoked tokens.
        name: String,
        /// Lifetime, e.g. 30d or 12h [default: none, or the lifetime of the token in use].
        #[arg(long, value_parser = parse_duration)]
        expires_in: Option<std::time::Duration>,
        /// Limit it to one project (name or id).
        #[arg(long, value_name = "PROJECT")]
        limit_to: Option<String>,
        /// The most it may do in that project [default: your role there].
        #[arg(long, requires = "limit_to", value_parser = ["viewer", "member", "admin"])]
        role: Option<String>,
    },
    /// List your tokens (secrets are never shown again).
    List,
    /// Revoke one of your tokens, by name or id; it stops working at once.
    Revoke {
        // Not `token`: that is the global `--token`'s id.
        #[arg(value_name = "TOKEN")]
        which: String,
    },
}

/// Runs a token command.
pub async fn run(ctx: &Context, cmd: TokenCommand) -> anyhow::Result<()> {
    let client = ctx.client()?;
    match cmd {
        TokenCommand::Create { name, expires_in, limit_to, role } => {
            let params =
                TokenCreateParams { name, expires_in_secs: expires_in.map(|d| d.as_secs()), project: limit_to, role };
            ctx.print_one(&client.token_create(&params).await?)
        }
        TokenCommand::List => ctx.print_list(&client.token_list().await?),
        TokenCommand::Revoke { which: token } => {
            let tokens = client.token_list().await?;
            let found = tokens
                .iter()
                .find(|t| t.id.to_string() == token)
                .or_else(|| tokens.iter().find(|t| t.name == token && t.status == "active"))
                .ok_or_else(|| Failure::NotFound(format!("you have no token {token:?}")))?;
            client.token_revoke(found.id).await?;
            ctx.print_one(found)
        }
    }
}
