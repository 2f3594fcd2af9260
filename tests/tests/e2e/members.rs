//! Who may do what, through cloudctl against a real control plane: project members added by
//! e-mail address before they ever signed in, roles changed and enforced, tokens limited to a
//! project and a role, revoked, and operators granted and revoked, with the last admin and the
//! last operator kept.

use cloud_tests::cloudctl::Cloudctl;
use cloud_tests::net::TestNetwork;
use cloud_tests::process::spawn_control_plane;
use serde_json::Value;

fn names(run: &Value) -> Vec<(String, String)> {
    let items = run.as_array().unwrap_or_else(|| panic!("a list: {run}"));
    items.iter().map(|m| (m["name"].as_str().unwrap().to_owned(), m["role"].as_str().unwrap().to_owned())).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn admins_manage_members_tokens_and_operators_with_cloudctl() {
    let net = TestNetwork::create();
    let dir = tempfile::tempdir().unwrap();
    let cp = spawn_control_plane(&net, dir.path()).await;
    let cli = Cloudctl::new(&cp, &dir.path().join("admin"));
    let me = cli.line("auth status").await.ok("auth status").out["user"]["name"].as_str().unwrap().to_owned();
    cli.line("project create team").await.ok("project create");
    let team = |line: &str| format!("--project team {line}");

    // Quotas: the defaults until an operator (the admin is one) sets the project's own.
    let quotas = cli.line(&team("project quota")).await.ok("project quota");
    assert_eq!(
        (quotas.out["limits"]["instances"].as_i64(), quotas.out["usage"]["instances"].as_i64()),
        (Some(1000), Some(0))
    );
    let set = cli.line(&team("project quota set --instances 5 --memory-gib 8")).await.ok("project quota set");
    assert_eq!(set.out["limits"]["instances"], 5);
    assert_eq!(set.out["limits"]["memory_bytes"], 8_i64 << 30);
    let negative = cli.line(&team("project quota set --vcpus=-1")).await;
    assert!(negative.code != 0 && negative.err.contains("--vcpus"), "{negative:?}");

    // Carol has never signed in: her e-mail address makes her a member to come.
    cli.line(&team("project member add carol@example.com --role member")).await.ok("member add");
    cli.line(&team("project member add carol@example.com --role member")).await.ok("the same add again");
    let other_role = cli.line(&team("project member add carol@example.com --role admin")).await;
    assert_eq!(other_role.code, 1, "{other_role:?}");
    assert!(other_role.err.contains("already a member, as member"), "{}", other_role.err);
    let unknown = cli.line(&team("project member add dave --role viewer")).await;
    assert_eq!(unknown.code, 2, "{unknown:?}");
    let set = cli.line(&team("project member set carol@example.com --role admin")).await.ok("member set");
    assert_eq!(set.out["role"], "admin");
    let list = cli.line(&team("project member list")).await.ok("member list");
    let mut expected = [("carol@example.com".to_owned(), "admin".to_owned()), (me.clone(), "admin".to_owned())];
    expected.sort();
    assert_eq!(names(&list.out), expected, "members by name");

    // A token limited to the project as a viewer: it reads there and nowhere else, and changes
    // nothing; its secret alone is what `-o name` prints.
    let made = cli
        .command()
        .args(["-o", "name", "token", "create", "ci", "--limit-to", "team", "--role", "viewer", "--expires-in", "1h"])
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let secret = String::from_utf8(made.stdout).unwrap().trim().to_owned();
    assert!(secret.starts_with("cloud_"), "{secret}");
    let ci = cli.with_token(&secret, &dir.path().join("ci"));
    ci.line(&team("project member list")).await.ok("a viewer reads the members");
    let refused = ci.line(&team("project member add dave@example.com --role viewer")).await;
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(refused.err.contains("your role in this project is viewer"), "{}", refused.err);
    assert_eq!(ci.line("--project default instance list").await.code, 2, "another project is not found");
    let tokens = cli.line("token list").await.ok("token list");
    let listed = tokens.out.as_array().unwrap().iter().find(|t| t["name"] == "ci").cloned().unwrap();
    assert_eq!(listed["role"], "viewer");
    assert!(listed["expires_at"].is_string(), "{listed}");
    cli.line("token revoke ci").await.ok("token revoke");
    assert_eq!(ci.line(&team("project member list")).await.code, 4, "a revoked token is refused");
    assert_eq!(cli.line("token revoke ci").await.code, 2, "no such token any more");

    // Operators: granted and revoked by name or e-mail address; the last one stays.
    let granted = cli.line("operator grant carol@example.com").await.ok("operator grant");
    assert_eq!(granted.out["is_operator"], true);
    let revoked = cli.line("operator revoke carol@example.com").await.ok("operator revoke");
    assert_eq!(revoked.out["is_operator"], false);
    let last = cli.line(&format!("operator revoke {me}")).await;
    assert_eq!(last.code, 1, "{last:?}");
    assert!(last.err.contains("only operator"), "{}", last.err);

    // Members leave or are removed; the last admin stays.
    cli.line(&team("project member remove carol@example.com")).await.ok("member remove");
    let alone = cli.line(&team(&format!("project member remove {me}"))).await;
    assert_eq!(alone.code, 1, "{alone:?}");
    assert!(alone.err.contains("only admin"), "{}", alone.err);
    let list = cli.line(&team("project member list")).await.ok("member list");
    assert_eq!(names(&list.out), [(me, "admin".into())]);
}
