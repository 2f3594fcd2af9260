//! `cloudctl auth login|logout|status|token`: API tokens in `credentials.toml` (0600).
//!
//! `login` takes the token from `--token` (or `CLOUDCTL_TOKEN`), else reads one line from
//! standard input (without echo on a terminal), checks it against the API (`whoami`), and
//! stores it for the profile, with the endpoint when one was given by flag or environment.
//! `login --device-code` (device authorization grant) and `login --browser` (a loopback
//! redirect with PKCE) sign in at the cloud's identity provider instead, and store the API token
//! the control plane gives for that sign-in, with the provider's refresh token: when the API
//! token is about to end, any command gets a new one with it first ([`refresh_if_due`]).

use std::io::{IsTerminal, Write};

use anyhow::Context as _;
use clap::Subcommand;
use cloudctl::client::{Client, oidc};
use cloudctl::config::ProfileCredentials;
use nix::sys::termios::{self, LocalFlags, SetArg};

use super::{Context, Failure};

/// Auth verbs.
#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// Store an API token for the profile (from --token, or one line on stdin), or sign in at
    /// the cloud's identity provider with `--device-code`.
    Login {
        /// Sign in at the identity provider: open the URL shown in any browser and approve;
        /// the API token cloudctl gets lasts as long as a console session, and is renewed with
        /// the provider's refresh token.
        #[arg(long, conflicts_with = "browser")]
        device_code: bool,
        /// Sign in at the identity provider in a browser on this machine: open the URL shown;
        /// the provider sends the browser back to cloudctl on 127.0.0.1 (PKCE).
        #[arg(long)]
        browser: bool,
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
        AuthCommand::Login { device_code, browser } => {
            let how = match (device_code, browser) {
                (true, _) => Some(SignIn::DeviceCode),
                (_, true) => Some(SignIn::Browser),
                _ => None,
            };
            login(ctx, how).await
        }
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

/// How `auth login` signs in at the identity provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SignIn {
    DeviceCode,
    Browser,
}

async fn login(ctx: &Context, how: Option<SignIn>) -> anyhow::Result<()> {
    let endpoint = ctx.endpoint()?.to_owned();
    let stored = match (how, ctx.global.token.clone()) {
        (Some(how), _) => provider_login(ctx, &endpoint, how).await?,
        (None, Some(token)) => ProfileCredentials { token: Some(token), ..Default::default() },
        (None, None) => ProfileCredentials { token: Some(read_token()?), ..Default::default() },
    };
    let token = stored.token.as_deref().unwrap_or_default().trim().to_owned();
    if token.is_empty() {
        return Err(Failure::Usage("no token given (pass --token, or type it on standard input)".into()).into());
    }
    let whoami = Client::with_ca(&endpoint, &token, ctx.ca_cert.as_deref())?.whoami().await?;
    let mut creds = ctx.store.load_credentials()?;
    creds.profile.insert(ctx.profile_name.clone(), ProfileCredentials { token: Some(token), ..stored });
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

/// Signs in at the identity provider and returns what to keep: the API token the control
/// plane gives for it, when it ends, and the provider's refresh token.
async fn provider_login(ctx: &Context, endpoint: &str, how: SignIn) -> anyhow::Result<ProfileCredentials> {
    let anonymous = Client::with_ca(endpoint, "", ctx.ca_cert.as_deref())?;
    let info = anonymous.oidc_info().await.map_err(|e| match e {
        cloudctl::client::ClientError::NotFound(_) => {
            Failure::Usage(format!("{endpoint} has no identity provider to sign in with: use an API token")).into()
        }
        other => anyhow::Error::from(other),
    })?;
    let ca = ctx.ca_cert.as_deref();
    let tokens = match how {
        SignIn::DeviceCode => {
            oidc::device_sign_in(&info, ca, |code| {
                let url = code.verification_uri_complete.as_deref().unwrap_or(&code.verification_uri);
                let _ = writeln!(
                    std::io::stderr(),
                    "To sign in, open {url} in a browser and approve the code {} (valid {} minutes).",
                    code.user_code,
                    code.expires_in / 60
                );
            })
            .await?
        }
        SignIn::Browser => {
            oidc::browser_sign_in(&info, ca, |url| {
                let _ = writeln!(
                    std::io::stderr(),
                    "To sign in, open {url} in a browser on this machine (waiting 5 minutes)."
                );
            })
            .await?
        }
    };
    trade(&anonymous, tokens).await
}

/// Trades the provider's fresh tokens for an API token at the control plane.
async fn trade(anonymous: &Client, tokens: oidc::ProviderTokens) -> anyhow::Result<ProfileCredentials> {
    let params = cloudctl::client::OidcTokenParams { id_token: tokens.id_token, access_token: tokens.access_token };
    let created = anonymous.oidc_token(&params).await?;
    Ok(ProfileCredentials {
        token: Some(created.secret),
        signed_in: true,
        expires_at: created.token.expires_at,
        refresh_token: tokens.refresh_token,
    })
}

/// How long before its end a signed-in token is renewed.
const RENEW_BEFORE: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

/// Renews the profile's signed-in API token with the provider's refresh token when it ends
/// within five minutes (or has ended): a new API token replaces it in the credentials file and
/// the old one is revoked. A token given by flag or environment is never touched. When renewal
/// fails, the old token is used as it is (the API then says whether it still works) and a
/// warning says to sign in again.
pub async fn refresh_if_due(ctx: &mut Context) {
    if ctx.global.token.is_some() {
        return;
    }
    let Ok(mut creds) = ctx.store.load_credentials() else { return };
    let Some(current) = creds.profile.get(&ctx.profile_name).cloned() else { return };
    let (Some(refresh_token), Some(expires_at)) = (current.refresh_token.as_deref(), current.expires_at) else {
        return;
    };
    if expires_at - chrono::Utc::now() > RENEW_BEFORE {
        return;
    }
    let Ok(endpoint) = ctx.endpoint().map(str::to_owned) else { return };
    let renewed = async {
        let anonymous = Client::with_ca(&endpoint, "", ctx.ca_cert.as_deref())?;
        let info = anonymous.oidc_info().await?;
        let tokens = oidc::refresh(&info, ctx.ca_cert.as_deref(), refresh_token).await?;
        let mut fresh = trade(&anonymous, tokens).await?;
        // A provider that does not rotate refresh tokens keeps the old one valid.
        fresh.refresh_token = fresh.refresh_token.or_else(|| current.refresh_token.clone());
        anyhow::Ok(fresh)
    }
    .await;
    match renewed {
        Ok(fresh) => {
            let old = current.token.clone();
            ctx.token = fresh.token.clone();
            creds.profile.insert(ctx.profile_name.clone(), fresh);
            if let Err(e) = ctx.store.save_credentials(&creds) {
                let _ = writeln!(std::io::stderr(), "cloudctl: warning: the renewed token could not be saved: {e}");
            }
            if let Some(old) = old {
                let _ = revoke_own(&endpoint, &old, ctx.ca_cert.as_deref()).await;
            }
        }
        Err(e) => {
            let _ = writeln!(
                std::io::stderr(),
                "cloudctl: warning: cannot renew the signed-in token ({e:#}): run `cloudctl auth login` again"
            );
        }
    }
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
