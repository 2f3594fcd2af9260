//! `cloudctl auth login|logout|status|token`: API tokens in `credentials.toml` (0600).
//!
//! `login` takes the token from `--token` (or `CLOUDCTL_TOKEN`), else reads one line from
//! standard input (without echo on a terminal), checks it against the API (`whoami`), and
//! stores it for the profile, with the endpoint when one was given by flag or environment.
//! `login --device-code` signs in at the cloud's identity provider instead (device
//! authorization grant) and stores the API token the control plane gives for that sign-in.

use std::io::{IsTerminal, Write};

use anyhow::Context as _;
use clap::Subcommand;
use cloudctl::client::Client;
use nix::sys::termios::{self, LocalFlags, SetArg};

use super::{Context, Failure};

/// Auth verbs.
#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// Store an API token for the profile (from --token, or one line on stdin), or sign in at
    /// the cloud's identity provider with `--device-code`.
    Login {
        /// Sign in at the identity provider: open the URL shown in any browser and approve;
        /// the API token cloudctl gets lasts as long as a console session.
        #[arg(long)]
        device_code: bool,
    },
    /// Forget the profile's token.
    Logout {
        /// Forget the tokens of every profile.
        #[arg(long)]
        all: bool,
    },
    /// Who the token belongs to (its user, operator flag and projects).
    Status,
    /// Print the token in use, for scripts: `curl -H "Authorization: Bearer $(cloudctl auth token)"`.
    Token,
}

/// Runs an auth command.
pub async fn run(ctx: &Context, cmd: AuthCommand) -> anyhow::Result<()> {
    match cmd {
        AuthCommand::Login { device_code } => login(ctx, device_code).await,
        AuthCommand::Logout { all } => {
            let mut creds = ctx.store.load_credentials()?;
            let gone: Vec<_> = if all {
                std::mem::take(&mut creds.profile).into_values().collect()
            } else {
                creds.profile.remove(&ctx.profile_name).into_iter().collect()
            };
            ctx.store.save_credentials(&creds)?;
            // Signing out ends what signing in started: the token the sign-in got is revoked.
            if let Ok(endpoint) = ctx.endpoint() {
                for token in gone.iter().filter(|p| p.signed_in).filter_map(|p| p.token.as_deref()) {
                    if let Err(e) = revoke_own(endpoint, token, ctx.ca_cert.as_deref()).await {
                        let _ = writeln!(
                            std::io::stderr(),
                            "cloudctl: warning: the token was forgotten but not revoked: {e}"
                        );
                    }
                }
            }
            Ok(())
        }
        AuthCommand::Status => ctx.print_one(&ctx.client()?.whoami().await?),
        AuthCommand::Token => {
            let client_check = ctx
                .token
                .as_deref()
                .ok_or_else(|| Failure::NotAuthenticated(format!("not logged in (profile {:?})", ctx.profile_name)))?;
            cloudctl::output::write_stdout(&format!("{client_check}\n"))?;
            Ok(())
        }
    }
}

async fn login(ctx: &Context, device_code: bool) -> anyhow::Result<()> {
    let endpoint = ctx.endpoint()?.to_owned();
    let token = match ctx.global.token.clone() {
        _ if device_code => device_login(ctx, &endpoint).await?,
        Some(token) => token,
        None => read_token()?,
    };
    let token = token.trim().to_owned();
    if token.is_empty() {
        return Err(Failure::Usage("no token given (pass --token, or type it on standard input)".into()).into());
    }
    let whoami = Client::with_ca(&endpoint, &token, ctx.ca_cert.as_deref())?.whoami().await?;
    let mut creds = ctx.store.load_credentials()?;
    let profile = creds.profile.entry(ctx.profile_name.clone()).or_default();
    profile.token = Some(token);
    profile.signed_in = device_code;
    ctx.store.save_credentials(&creds)?;
    if ctx.global.endpoint.is_some() || ctx.global.project.is_some() {
        let mut config = ctx.store.load_config()?;
        let profile = config.profile.entry(ctx.profile_name.clone()).or_default();
        if ctx.global.endpoint.is_some() {
            profile.endpoint = Some(endpoint);
        }
        if let Some(project) = &ctx.global.project {
            profile.project = Some(project.clone());
        }
        ctx.store.save_config(&config)?;
    }
    ctx.print_one(&whoami)
}

/// Signs in at the identity provider with the device code grant and returns the API token the
/// control plane gives for it.
async fn device_login(ctx: &Context, endpoint: &str) -> anyhow::Result<String> {
    let anonymous = Client::with_ca(endpoint, "", ctx.ca_cert.as_deref())?;
    let info = anonymous.oidc_info().await.map_err(|e| match e {
        cloudctl::client::ClientError::NotFound(_) => {
            Failure::Usage(format!("{endpoint} has no identity provider to sign in with: use an API token")).into()
        }
        other => anyhow::Error::from(other),
    })?;
    let tokens = cloudctl::client::oidc::device_sign_in(&info, ctx.ca_cert.as_deref(), |code| {
        let url = code.verification_uri_complete.as_deref().unwrap_or(&code.verification_uri);
        let _ = writeln!(
            std::io::stderr(),
            "To sign in, open {url} in a browser and approve the code {} (valid {} minutes).",
            code.user_code,
            code.expires_in / 60
        );
    })
    .await?;
    let params = cloudctl::client::OidcTokenParams { id_token: tokens.id_token, access_token: tokens.access_token };
    Ok(anonymous.oidc_token(&params).await?.secret)
}

/// Revokes `token` with itself (an already invalid token is fine).
async fn revoke_own(endpoint: &str, token: &str, ca: Option<&std::path::Path>) -> anyhow::Result<()> {
    let client = Client::with_ca(endpoint, token, ca)?;
    match client.whoami().await {
        Ok(who) => match who.token_id {
            Some(id) => Ok(client.token_revoke(id).await?),
            None => Ok(()),
        },
        Err(cloudctl::client::ClientError::Unauthenticated(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// One line of standard input; on a terminal, prompted and not echoed.
fn read_token() -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    let mut line = String::new();
    if !stdin.is_terminal() {
        stdin.read_line(&mut line).context("cannot read the token from standard input")?;
        return Ok(line);
    }
    let _ = std::io::stderr().write_all(b"API token: ");
    let original = termios::tcgetattr(&stdin).context("cannot read the terminal's settings")?;
    let mut silent = original.clone();
    silent.local_flags.remove(LocalFlags::ECHO);
    termios::tcsetattr(&stdin, SetArg::TCSANOW, &silent).context("cannot turn off echo")?;
    let read = stdin.read_line(&mut line);
    let _ = termios::tcsetattr(&stdin, SetArg::TCSANOW, &original);
    let _ = std::io::stderr().write_all(b"\n");
    read.context("cannot read the token")?;
    Ok(line)
}
