//! Sign-in through a real OpenID Connect provider (npm `oidc-provider`), against the real
//! control plane binary: the console's authorization code flow with a session and CSRF, users
//! made at first sign-in or matched to the member an admin added by e-mail, signing out, and
//! `cloudctl auth login --device-code`.

use std::io::BufRead;

use cloud_tests::cloudctl::Cloudctl;
use cloud_tests::net::TestNetwork;
use cloud_tests::oidc::{Browser, CONSOLE_SECRET, provider_port, start_provider};
use cloud_tests::process::spawn_control_plane_with;
use reqwest::header::COOKIE;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread")]
async fn users_sign_in_through_the_provider_in_the_console_and_with_cloudctl() {
    let net = TestNetwork::create();
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("oidc-secret");
    std::fs::write(&secret, format!("{CONSOLE_SECRET}\n")).unwrap();
    // The provider's discovery happens at the first sign-in: it can start after the control
    // plane, once the console's callback URL is known.
    let port = provider_port();
    let issuer = format!("http://127.0.0.1:{port}");
    let flags = ["--oidc-issuer", &issuer, "--oidc-client-id", "console", "--oidc-client-secret-file"];
    let mut flags: Vec<&str> = flags.to_vec();
    flags.push(secret.to_str().unwrap());
    let cp = spawn_control_plane_with(&net, dir.path(), &flags).await;
    let base = cp.api.clone();
    let _provider = start_provider(port, &format!("{base}/auth/callback"));
    let admin = Cloudctl::new(&cp, &dir.path().join("admin"));

    // An admin adds bob by e-mail before he ever signs in.
    admin.line("project create team").await.ok("project create");
    admin.line("--project team project member add bob@example.com --role viewer").await.ok("member add");

    // Alice signs in from the console: she is a new user and lands where she started.
    let mut alice = Browser::default();
    let landed =
        alice.walk(&format!("{base}/auth/login?next=/instances"), "alice", &format!("{base}/auth/callback")).await;
    let callback = landed.expect("back at the console's callback");
    let resp = alice.send(Method::GET, &callback, None).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(resp.headers()["location"], "/instances");
    let cookie = resp.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"), "{cookie}");
    let who: Value = alice.send(Method::GET, &format!("{base}/v1/auth/whoami"), None).await.json().await.unwrap();
    assert_eq!(
        (who["user"]["name"].clone(), who["user"]["email"].clone()),
        (json!("alice"), json!("alice@example.com"))
    );
    assert_eq!(who["token_id"], Value::Null, "a session, not a token: {who}");

    // A change needs the session's CSRF token, not just the cookie.
    let create = |csrf: Option<String>, jar: String| {
        let mut req = reqwest::Client::new().post(format!("{base}/v1/projects")).json(&json!({"name": "alices"}));
        req = req.header(COOKIE, jar);
        if let Some(csrf) = csrf {
            req = req.header("x-csrf-token", csrf);
        }
        req.send()
    };
    assert_eq!(create(None, alice.cookie_header()).await.unwrap().status(), StatusCode::FORBIDDEN);
    assert_eq!(create(Some("wrong".into()), alice.cookie_header()).await.unwrap().status(), StatusCode::FORBIDDEN);
    let session: Value = alice.send(Method::GET, &format!("{base}/v1/auth/session"), None).await.json().await.unwrap();
    let csrf = session["csrf_token"].as_str().unwrap().to_owned();
    assert_eq!(create(Some(csrf.clone()), alice.cookie_header()).await.unwrap().status(), StatusCode::CREATED);

    // Bob signs in: he is the member added by his verified e-mail address; a destination off
    // this site is never followed.
    let mut bob = Browser::default();
    let callback = bob
        .walk(&format!("{base}/auth/login?next=https://evil.example/"), "bob", &format!("{base}/auth/callback"))
        .await;
    let resp = bob.send(Method::GET, &callback.unwrap(), None).await;
    assert_eq!(resp.headers()["location"], "/");
    let who: Value = bob.send(Method::GET, &format!("{base}/v1/auth/whoami"), None).await.json().await.unwrap();
    assert_eq!(who["user"]["email"], "bob@example.com");
    assert_eq!(
        (who["projects"][0]["name"].clone(), who["projects"][0]["role"].clone()),
        (json!("team"), json!("viewer"))
    );
    let members = admin.line("--project team project member list").await.ok("member list");
    assert_eq!(members.out.as_array().unwrap().len(), 2, "bob is the invited member, not a new user: {}", members.out);

    // A callback this control plane did not start is refused.
    let forged = bob.send(Method::GET, &format!("{base}/auth/callback?code=x&state=forged"), None).await;
    assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);

    // Signing out (a change: with the CSRF token) ends the session.
    let old = alice.cookie_header();
    let out = reqwest::Client::new()
        .delete(format!("{base}/v1/auth/session"))
        .header(COOKIE, &old)
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::NO_CONTENT);
    let after = reqwest::Client::new().get(format!("{base}/v1/auth/whoami")).header(COOKIE, &old).send().await.unwrap();
    assert_eq!(after.status(), StatusCode::UNAUTHORIZED);

    // cloudctl signs in with the device code: it shows a URL and a code, the user approves in
    // a browser, and cloudctl gets an API token of that user (the same alice).
    let home = dir.path().join("alice-cli");
    let mut login = admin.with_token("", &home).command();
    login
        .args(["-o", "json", "auth", "login", "--device-code"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = login.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut stderr = std::io::BufReader::new(stderr);
    let mut shown = String::new();
    stderr.read_line(&mut shown).unwrap();
    let url =
        shown.split_whitespace().find(|w| w.starts_with("http")).unwrap_or_else(|| panic!("no URL shown: {shown}"));
    let mut browser = Browser::default();
    browser.walk(url, "alice", "").await;
    let (out, rest) = tokio::task::spawn_blocking(move || {
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut rest);
        (child.wait_with_output().unwrap(), rest)
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{out:?}: {shown}{rest}");
    let who: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(who["user"]["name"], "alice", "{who}");
    let creds = std::fs::read_to_string(home.join("cloudctl/credentials.toml")).unwrap();
    let secret = creds.split('"').find(|part| part.starts_with("cloud_")).expect("the token is kept for the profile");
    let signed_in = admin.with_token(secret, &dir.path().join("check"));
    signed_in.line("auth status").await.ok("the token works");
    // Signing out revokes what signing in got (a token given by hand would only be forgotten).
    admin.with_token("", &home).line("auth logout").await.ok("auth logout");
    assert_eq!(signed_in.line("auth status").await.code, 4, "the signed-in token is revoked");
    assert!(!std::fs::read_to_string(home.join("cloudctl/credentials.toml")).unwrap_or_default().contains("cloud_"));
}
