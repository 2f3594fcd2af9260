//! Bad input gives one line on stderr and the documented exit code, never a panic.

use std::os::fd::OwnedFd;
use std::process::Stdio;

use super::common::Cli;

/// A port nothing listens on.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test]
async fn an_unknown_flag_is_a_one_line_usage_error() {
    let cli = Cli::unconfigured();
    cli.run(&["instance", "list", "--bogus"]).await.expect_code(1).expect_error_line("'--bogus'");
    cli.run(&["instance", "frobnicate"]).await.expect_code(1).expect_error_line("frobnicate");
    cli.run(&["-o", "xml", "instance", "list"]).await.expect_code(1).expect_error_line("xml");
}

#[tokio::test]
async fn help_and_version_go_to_stdout() {
    let cli = Cli::unconfigured();
    let help = cli.run(&["instance", "--help"]).await.expect_code(0);
    assert!(help.stdout.contains("console"), "{}", help.stdout);
    let version = cli.run(&["--version"]).await.expect_code(0);
    assert!(version.stdout.starts_with("cloudctl "), "{}", version.stdout);
}

#[tokio::test]
async fn a_missing_endpoint_is_exit_1_and_a_missing_token_exit_4() {
    let mut cli = Cli::unconfigured();
    cli.run(&["instance", "list"]).await.expect_code(1).expect_error_line("no endpoint");
    cli.endpoint = Some(format!("http://127.0.0.1:{}", closed_port()));
    cli.run(&["instance", "list"]).await.expect_code(4).expect_error_line("not logged in");
}

#[tokio::test]
async fn a_missing_at_file_is_exit_1() {
    let mut cli = Cli::unconfigured();
    cli.endpoint = Some(format!("http://127.0.0.1:{}", closed_port()));
    cli.token = Some("cloud_whatever".into());
    cli.run(&["ssh-key", "create", "k", "--public-key", "@/nonexistent/key.pub"])
        .await
        .expect_code(1)
        .expect_error_line("cannot read @/nonexistent/key.pub");
    cli.run(&["instance", "create", "web-1", "--image", "x", "--user-data", "@/nonexistent/init.yaml"])
        .await
        .expect_code(1)
        .expect_error_line("cannot read @/nonexistent/init.yaml");
    cli.run(&["instance", "create", "web-1", "--image", "x", "--memory", "lots"])
        .await
        .expect_code(1)
        .expect_error_line("--memory");
}

#[tokio::test]
async fn an_unreachable_endpoint_is_exit_1_cannot_reach() {
    let mut cli = Cli::unconfigured();
    cli.endpoint = Some(format!("http://127.0.0.1:{}", closed_port()));
    cli.token = Some("cloud_whatever".into());
    cli.run(&["instance", "list"]).await.expect_code(1).expect_error_line("cannot reach http://127.0.0.1:");
    cli.endpoint = Some("not a url".into());
    cli.run(&["instance", "list"]).await.expect_code(1).expect_error_line("invalid endpoint");
}

#[tokio::test]
async fn a_closed_stdout_exits_quietly() {
    let cli = Cli::unconfigured();
    for args in [&["completion", "bash"][..], &["--help"][..]] {
        let (read, write): (OwnedFd, OwnedFd) = nix::unistd::pipe().unwrap();
        drop(read);
        let out = cli.command(args).stdout(Stdio::from(write)).output().await.unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(stderr.is_empty(), "{args:?}: {stderr}");
    }
}

#[tokio::test]
async fn config_set_and_get_round_trip_and_profiles_apply() {
    let cli = Cli::unconfigured();
    cli.run(&["config", "set", "endpoint", "http://127.0.0.1:9"]).await.expect_code(0);
    cli.run(&["config", "set", "output", "yaml"]).await.expect_code(0);
    cli.run(&["--profile", "lab", "config", "set", "project", "lab-project"]).await.expect_code(0);
    let got = cli.run(&["config", "get", "endpoint"]).await.expect_code(0);
    assert_eq!(got.stdout, "http://127.0.0.1:9\n");
    let got = cli.run(&["--profile", "lab", "config", "get", "project"]).await.expect_code(0);
    assert_eq!(got.stdout, "lab-project\n");
    cli.run(&["config", "set", "output", "xml"]).await.expect_code(1).expect_error_line("xml");
    cli.run(&["config", "set", "colour", "red"]).await.expect_code(1).expect_error_line("unknown setting");
    // The profile's endpoint is used (and is unreachable); the token is still missing: exit 4.
    cli.run(&["instance", "list"]).await.expect_code(4).expect_error_line("not logged in");
    let text = std::fs::read_to_string(cli.config_dir().join("config.toml")).unwrap();
    assert!(text.contains("[profile.lab]") && text.contains("[profile.default]"), "{text}");
}

#[tokio::test]
async fn completion_scripts_are_printed() {
    let cli = Cli::unconfigured();
    for shell in ["bash", "zsh", "fish"] {
        let run = cli.run(&["completion", shell]).await.expect_code(0);
        assert!(run.stdout.contains("ssh-key"), "{shell}");
    }
}
