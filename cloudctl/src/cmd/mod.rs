//! The grammar `cloudctl [GLOBAL] <noun> [<sub-noun>] <verb> [NAME|ID] [FLAGS]`, one file per
//! noun, and what every command shares: settings resolved from flags, environment and the
//! config file ([`Context`]), printing, waiting for operations, and the exit codes.
//!
//! ```text
//!  flags ─┐
//!  CLOUDCTL_* env ─┼─▶ Context { endpoint, token, project, output, … } ─▶ <noun>::run ─▶ Client
//!  config.toml / credentials.toml ─┘
//! ```

mod auth;
mod completion;
mod config;
mod host;
mod image;
mod instance;
mod operation;
mod operator;
mod project;
mod session;
mod snapshot;
mod ssh;
mod ssh_key;
mod token;

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use cloudctl::client::{Client, ClientError, InstanceAccepted, Operation};
use cloudctl::config::{ConfigStore, DEFAULT_PROFILE};
use cloudctl::output::{self, Format, OutputError, Progress, Resource};

/// The default project.
const DEFAULT_PROJECT: &str = "default";
/// How long `--wait` waits when `--timeout` is not given.
const DEFAULT_WAIT: Duration = Duration::from_secs(600);

/// Command line for the cloud: instances, SSH keys, images, operations, hosts, projects.
#[derive(Debug, Parser)]
#[command(name = "cloudctl", version = cloudctl::VERSION, propagate_version = true)]
#[command(
    after_help = "Exit codes: 0 ok, 1 API or usage error, 2 not found, 3 timeout while waiting, 4 authentication."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command accepts.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Control plane URL, e.g. http://127.0.0.1:8080.
    #[arg(long, global = true, env = "CLOUDCTL_ENDPOINT", value_name = "URL")]
    pub endpoint: Option<String>,
    /// PEM file of CA certificates to trust for an https endpoint, besides the system's.
    #[arg(long, global = true, env = "CLOUDCTL_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<std::path::PathBuf>,
    /// API token (beats the stored credentials).
    #[arg(long, global = true, env = "CLOUDCTL_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    pub token: Option<String>,
    /// Project name or id [default: the profile's, else `default`].
    #[arg(long, global = true, env = "CLOUDCTL_PROJECT", value_name = "PROJECT")]
    pub project: Option<String>,
    /// Profile of config.toml to use [default: `default-profile`, else `default`].
    #[arg(long, global = true, env = "CLOUDCTL_PROFILE", value_name = "NAME")]
    pub profile: Option<String>,
    /// Output format [default: table on a terminal, json otherwise].
    #[arg(short = 'o', long, global = true, env = "CLOUDCTL_OUTPUT", value_enum, value_name = "FORMAT")]
    pub output: Option<Format>,
    /// Idempotency-Key of a mutation [default: a new UUID].
    #[arg(long, global = true, value_name = "KEY")]
    pub idempotency_key: Option<String>,
    /// Wait until the mutation's operation ends; an instance created, started or rebooted is
    /// waited for until it is also ready (its SSH answers): `--wait=running` stops at running.
    #[arg(long, global = true, num_args = 0..=1, require_equals = true, default_missing_value = "ready",
          value_enum, value_name = "UNTIL")]
    pub wait: Option<WaitUntil>,
    /// How long to wait: 90s, 5m, 1h [default: 10m].
    #[arg(long, global = true, value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Option<Duration>,
}

/// What `--wait` waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WaitUntil {
    /// The operation ended and a (re)started instance is reachable.
    Ready,
    /// The operation ended (a (re)started instance runs; its guest may still be booting).
    Running,
}

/// The nouns.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Virtual machines.
    #[command(subcommand)]
    Instance(instance::InstanceCommand),
    /// Snapshots of instances (disks, and optionally memory).
    #[command(subcommand)]
    Snapshot(snapshot::SnapshotCommand),
    /// SSH public keys injected into instances.
    #[command(subcommand, name = "ssh-key")]
    SshKey(ssh_key::SshKeyCommand),
    /// Base images.
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// Durable operations (what mutations return).
    #[command(subcommand)]
    Operation(operation::OperationCommand),
    /// Hypervisor hosts of the fleet (operators).
    #[command(subcommand)]
    Host(host::HostCommand),
    /// Projects.
    #[command(subcommand)]
    Project(project::ProjectCommand),
    /// Credentials: log in and out, who am I.
    #[command(subcommand)]
    Auth(auth::AuthCommand),
    /// API tokens of your own, for scripts (optionally limited to a project and role).
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Who manages the fleet (operators).
    #[command(subcommand)]
    Operator(operator::OperatorCommand),
    /// Read and change config.toml.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Print a shell completion script.
    Completion(completion::CompletionArgs),
}

/// Errors of the CLI itself, each with its exit code.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// Bad input or configuration (exit 1).
    #[error("{0}")]
    Usage(String),
    /// No usable credentials (exit 4).
    #[error("{0}")]
    NotAuthenticated(String),
    /// No such thing, found out without the API (exit 2).
    #[error("{0}")]
    NotFound(String),
    /// An operation ended without success (exit 1).
    #[error("operation {id} ({kind}) {state}: {message}")]
    OperationFailed { id: uuid::Uuid, kind: String, state: String, message: String },
    /// A wait ran out of time (exit 3).
    #[error("{0}")]
    Timeout(String),
}

/// The exit code for an error: 0 for a closed stdout (quiet), else see [`Failure`] and
/// [`ClientError`].
pub fn exit_code(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if let Some(OutputError::Closed) = cause.downcast_ref::<OutputError>() {
            return 0;
        }
        if let Some(f) = cause.downcast_ref::<Failure>() {
            return match f {
                Failure::Usage(_) | Failure::OperationFailed { .. } => 1,
                Failure::NotFound(_) => 2,
                Failure::Timeout(_) => 3,
                Failure::NotAuthenticated(_) => 4,
            };
        }
        if let Some(e) = cause.downcast_ref::<ClientError>() {
            return match e {
                ClientError::Unauthenticated(_) => 4,
                ClientError::NotFound(_) => 2,
                ClientError::Timeout { .. } => 3,
                ClientError::WebSocket(ws) => match ws.status() {
                    Some(401) => 4,
                    Some(404) => 2,
                    _ => 1,
                },
                _ => 1,
            };
        }
    }
    1
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut ctx = Context::resolve(cli.global)?;
    let renews = !matches!(
        cli.command,
        Command::Auth(auth::AuthCommand::Login { .. } | auth::AuthCommand::Logout { .. })
            | Command::Config(_)
            | Command::Completion(_)
    );
    if renews {
        auth::refresh_if_due(&mut ctx).await;
    }
    let ctx = ctx;
    match cli.command {
        Command::Instance(cmd) => instance::run(&ctx, cmd).await,
        Command::Snapshot(cmd) => snapshot::run(&ctx, cmd).await,
        Command::SshKey(cmd) => ssh_key::run(&ctx, cmd).await,
        Command::Image(cmd) => image::run(&ctx, cmd).await,
        Command::Operation(cmd) => operation::run(&ctx, cmd).await,
        Command::Host(cmd) => host::run(&ctx, cmd).await,
        Command::Project(cmd) => project::run(&ctx, cmd).await,
        Command::Auth(cmd) => auth::run(&ctx, cmd).await,
        Command::Token(cmd) => token::run(&ctx, cmd).await,
        Command::Operator(cmd) => operator::run(&ctx, cmd).await,
        Command::Config(cmd) => config::run(&ctx, cmd),
        Command::Completion(args) => completion::run(&args),
    }
}

/// Settings of one run, resolved flag > environment > profile > default.
#[derive(Debug)]
pub struct Context {
    pub global: GlobalArgs,
    pub store: ConfigStore,
    /// The profile in use.
    pub profile_name: String,
    pub endpoint: Option<String>,
    /// A private CA for an https endpoint.
    pub ca_cert: Option<std::path::PathBuf>,
    pub token: Option<String>,
    pub project: String,
    pub format: Format,
}

impl Context {
    fn resolve(mut global: GlobalArgs) -> anyhow::Result<Self> {
        // An empty environment variable counts as unset.
        for value in [&mut global.endpoint, &mut global.token, &mut global.project, &mut global.profile] {
            if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
                *value = None;
            }
        }
        let store = ConfigStore::locate()?;
        let config = store.load_config()?;
        let profile_name = global
            .profile
            .clone()
            .or_else(|| config.default_profile.clone())
            .unwrap_or_else(|| DEFAULT_PROFILE.to_owned());
        let profile = config.profile.get(&profile_name).cloned().unwrap_or_default();
        let token = match global.token.clone() {
            Some(token) => Some(token),
            None => store.load_credentials()?.profile.get(&profile_name).and_then(|c| c.token.clone()),
        };
        let format = match (global.output, profile.output.as_deref()) {
            (Some(format), _) => format,
            (None, Some(name)) => Format::parse(name)
                .ok_or_else(|| Failure::Usage(format!("profile {profile_name:?}: unknown output format {name:?}")))?,
            (None, None) => Format::default_for_stdout(),
        };
        Ok(Self {
            endpoint: global.endpoint.clone().or_else(|| profile.endpoint.clone()),
            ca_cert: global
                .ca_cert
                .clone()
                .filter(|p| !p.as_os_str().is_empty())
                .or_else(|| profile.ca_cert.clone().map(Into::into)),
            project: global
                .project
                .clone()
                .or_else(|| profile.project.clone())
                .unwrap_or_else(|| DEFAULT_PROJECT.into()),
            token,
            format,
            profile_name,
            global,
            store,
        })
    }

    /// The endpoint, or a usage error (exit 1) saying how to set one.
    pub fn endpoint(&self) -> Result<&str, Failure> {
        self.endpoint.as_deref().ok_or_else(|| {
            Failure::Usage(format!(
                "no endpoint: pass --endpoint URL, set CLOUDCTL_ENDPOINT, or run `cloudctl config set endpoint URL` (profile {:?})",
                self.profile_name
            ))
        })
    }

    /// A client for the endpoint and token; no token is exit 4, no endpoint exit 1.
    pub fn client(&self) -> anyhow::Result<Client> {
        let endpoint = self.endpoint()?;
        let token = self.token.as_deref().ok_or_else(|| {
            Failure::NotAuthenticated(format!(
                "not logged in: pass --token, set CLOUDCTL_TOKEN, or run `cloudctl auth login` (profile {:?})",
                self.profile_name
            ))
        })?;
        Ok(Client::with_ca(endpoint, token, self.ca_cert.as_deref())?)
    }

    /// Prints one object in the chosen format.
    pub fn print_one<T: Resource>(&self, item: &T) -> anyhow::Result<()> {
        output::write_stdout(&output::render_one(item, self.format)?)?;
        Ok(())
    }

    /// Prints a list in the chosen format.
    pub fn print_list<T: Resource>(&self, items: &[T]) -> anyhow::Result<()> {
        output::write_stdout(&output::render_list(items, self.format)?)?;
        Ok(())
    }

    /// The Idempotency-Key of this run's mutation: `--idempotency-key` or a new UUID.
    pub fn idempotency_key(&self) -> String {
        self.global.idempotency_key.clone().unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
    }

    /// How long waits may take.
    pub fn timeout(&self) -> Duration {
        self.global.timeout.unwrap_or(DEFAULT_WAIT)
    }

    /// Waits for an operation with a spinner on a terminal; a timeout is exit 3 and an
    /// operation that did not succeed exit 1 with its error message.
    pub async fn wait_operation(&self, client: &Client, op: &Operation) -> anyhow::Result<Operation> {
        let interactive = std::io::stderr().is_terminal();
        let progress = Progress::start(interactive, &format!("{} {}", op.kind, op.state));
        let poll = if interactive { 2 } else { cloudctl::client::MAX_WAIT_SECS };
        let result = client
            .wait_operation_with(op.id, self.timeout(), poll, |op| {
                let step = op.current_step.as_deref().unwrap_or(&op.state);
                progress.set(format!("{}: {step}", op.kind));
            })
            .await;
        progress.finish();
        let op = result?;
        if !op.succeeded() {
            return Err(Failure::OperationFailed {
                id: op.id,
                kind: op.kind.clone(),
                state: op.state.clone(),
                message: op.error_message.clone().unwrap_or_else(|| "no error message".into()),
            }
            .into());
        }
        Ok(op)
    }

    /// Prints an accepted instance change, or with `--wait` waits for it (and, for a create,
    /// start or reboot, for the guest to be ready unless `--wait=running`) and prints the
    /// finished operation with the instance as it is then.
    pub async fn finish_instance_change(&self, client: &Client, accepted: InstanceAccepted) -> anyhow::Result<()> {
        let Some(until) = self.global.wait else {
            return self.print_one(&accepted);
        };
        let started = Instant::now();
        let operation = self.wait_operation(client, &accepted.operation).await?;
        let id = accepted.instance.id.to_string();
        let boots = matches!(
            operation.kind.as_str(),
            "instance_create" | "instance_start" | "instance_reboot" | "instance_restore" | "instance_resume"
        );
        let instance = if boots && until == WaitUntil::Ready {
            let left = self.timeout().saturating_sub(started.elapsed());
            self.wait_instance_ready(client, &id, left).await?
        } else {
            match client.instance_get(&self.project, &id).await {
                Ok(instance) => instance,
                Err(ClientError::NotFound(_)) => {
                    let mut gone = accepted.instance.clone();
                    gone.state = "deleted".into();
                    gone
                }
                Err(err) => return Err(err.into()),
            }
        };
        self.print_one(&InstanceAccepted { operation, instance, extra: accepted.extra })
    }

    /// Waits (a spinner on a terminal, silent otherwise) until instance `instance` runs and its
    /// guest is ready, for at most `timeout`. An instance that is not on its way to running
    /// (stopped, failed, deleting) ends the wait at once with what to do.
    pub async fn wait_instance_ready(
        &self,
        client: &Client,
        instance: &str,
        timeout: Duration,
    ) -> anyhow::Result<cloudctl::client::Instance> {
        let deadline = Instant::now() + timeout;
        let mut progress: Option<Progress> = None;
        let result = loop {
            // The server answers as soon as the instance is ready (or will not be), or after a
            // second, so that the progress line follows its state.
            let found = client.instance_wait_ready_once(&self.project, instance, 1).await?;
            if found.is_ready() {
                break Ok(found);
            }
            let name = found.name.clone();
            match found.state.as_str() {
                "creating" | "starting" | "rebooting" | "running" | "restoring" | "snapshotting" => {}
                "failed" => {
                    let reason = found.state_reason.as_deref().unwrap_or("no reason given");
                    break Err(Failure::Usage(format!("instance {name} failed: {reason}")).into());
                }
                "stopped" => {
                    break Err(Failure::Usage(format!(
                        "instance {name} is stopped; start it with `cloudctl instance start {name} --wait`"
                    ))
                    .into());
                }
                other => {
                    break Err(Failure::Usage(format!("instance {name} is {other}, it will not become ready")).into());
                }
            }
            let label = match found.state.as_str() {
                "running" => format!("waiting for {name} to answer SSH"),
                state => format!("waiting for {name} ({state})"),
            };
            match &progress {
                Some(p) => p.set(label),
                None => progress = Some(Progress::start(std::io::stderr().is_terminal(), &label)),
            }
            let now = Instant::now();
            if now >= deadline {
                let what = if found.state == "running" {
                    "its guest to answer SSH (the image may run no SSH server: use --wait=running)".to_owned()
                } else {
                    format!("it to be ready (it is {})", found.state)
                };
                break Err(Failure::Timeout(format!(
                    "timed out after {}s waiting for instance {name}: waiting for {what}",
                    timeout.as_secs()
                ))
                .into());
            }
        };
        if let Some(p) = progress {
            p.finish();
        }
        result
    }
}

/// `VALUE`, or the contents of `FILE` for `@FILE` (`@-`: standard input; `@~/…`: home).
pub fn value_or_file(value: &str) -> anyhow::Result<String> {
    let Some(path) = value.strip_prefix('@') else { return Ok(value.to_owned()) };
    if path == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).context("cannot read standard input")?;
        return Ok(text);
    }
    let path = match path.strip_prefix("~/") {
        Some(rest) => std::env::var_os("HOME").map_or_else(|| PathBuf::from(path), |h| PathBuf::from(h).join(rest)),
        None => PathBuf::from(path),
    };
    std::fs::read_to_string(&path)
        .map_err(|e| Failure::Usage(format!("cannot read {value}: {}", e.to_string().to_lowercase())).into())
}

/// A duration: `90` (seconds), `90s`, `5m`, `1h`, `1h30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration like 90s, 5m or 1h");
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = 0u64;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            _ => return Err(bad()),
        };
        let n: u64 = number.parse().map_err(|_| bad())?;
        total = total.saturating_add(n.saturating_mul(unit));
        number.clear();
    }
    if !number.is_empty() || text.is_empty() {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

/// A size such as `256MiB`, `2GiB`, `1.5G` or `512` (in `default_unit`), in units of `unit`
/// bytes; it must be a whole number of them.
pub fn parse_size(text: &str, default_unit: u64, unit: u64, unit_name: &str) -> Result<u64, String> {
    let bad = || format!("{text:?} is not a size like 256MiB or 2GiB");
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let number: f64 = number.parse().map_err(|_| bad())?;
    let multiplier: u64 = match suffix.trim() {
        "" => default_unit,
        "B" => 1,
        "K" | "KiB" | "k" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        "T" | "TiB" => 1 << 40,
        _ => return Err(bad()),
    };
    let total = number * multiplier as f64;
    if !total.is_finite() || total < 0.0 || total > u64::MAX as f64 {
        return Err(bad());
    }
    let total = total.round() as u64;
    if !total.is_multiple_of(unit) {
        return Err(format!("{text:?} is not a whole number of {unit_name}"));
    }
    Ok(total / unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn sizes() {
        let mib = |t| parse_size(t, 1 << 20, 1 << 20, "MiB");
        assert_eq!(mib("256MiB"), Ok(256));
        assert_eq!(mib("2GiB"), Ok(2048));
        assert_eq!(mib("1.5G"), Ok(1536));
        assert_eq!(mib("512"), Ok(512));
        assert!(mib("1000KiB").is_err());
        assert!(mib("lots").is_err());
        let gib = |t| parse_size(t, 1 << 30, 1 << 30, "GiB");
        assert_eq!(gib("20GiB"), Ok(20));
        assert_eq!(gib("20"), Ok(20));
        assert!(gib("512MiB").is_err());
    }

    #[test]
    fn the_grammar_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
