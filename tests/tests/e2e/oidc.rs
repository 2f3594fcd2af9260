//! Sign-in through a real OpenID Connect provider (npm `oidc-provider`), against the real
//! control plane binary: the console's authorization code flow with a session and CSRF, users
//! made at first sign-in or matched to the member an admin added by e-mail, signing out,
//! `cloudctl auth login --device-code` and `--browser`, renewal; and bad sign-ins refused.

use std::io::BufRead;

use cloud_tests::cloudctl::Cloudctl;
use cloud_tests::net::TestNetwork;
use cloud_tests::oidc::{Browser, CONSOLE_SECRET, Provider, control_plane_flags, provider_port, start_provider};
use cloud_tests::process::{ControlPlane, spawn_control_plane_with};
use reqwest::header::COOKIE;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread")]
async fn users_sign_in_through_the_provider_in_the_console_and_with_cloudctl() {
    let net = TestNetwork::create();
    let dir = tempfile::tempdir().unwrap();
    let (cp, _provider) = with_provider(&net, dir.path()).await;
    let base = cp.api.clone();
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
    let login = Login::start(&admin.with_token("", &home), "--device-code");
    Browser::default().walk(&login.url, "alice", "").await;
    let who = login.finish().await;
    assert_eq!(who["user"]["name"], "alice", "{who}");
    let creds = std::fs::read_to_string(home.join("cloudctl/credentials.toml")).unwrap();
    let secret = creds.split('"').find(|part| part.starts_with("cloud_")).expect("the token is kept for the profile");
    let signed_in = admin.with_token(secret, &dir.path().join("check"));
    signed_in.line("auth status").await.ok("the token works");
    assert!(creds.contains("refresh_token = ") && creds.contains("expires_at = "), "{creds}");

    // When the token is about to end, any command renews it with the provider's refresh token
    // first: a new API token replaces it in the file and the old one is revoked.
    let creds_file = home.join("cloudctl/credentials.toml");
    let due: String = creds
        .lines()
        .map(|l| {
            if l.starts_with("expires_at = ") {
                "expires_at = \"2000-01-01T00:00:00Z\"".to_owned()
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&creds_file, due).unwrap();
    let renewed = admin.with_token("", &home).line("auth status").await.ok("auth status with a renewal");
    assert_eq!(renewed.out["user"]["name"], "alice");
    let listed = admin.with_token("", &home).line("--project alices instance list").await.ok("instance list");
    assert_eq!(listed.out.as_array().map(Vec::len), Some(0), "{}", listed.out);
    assert!(!renewed.err.contains("warning"), "{}", renewed.err);
    let creds = std::fs::read_to_string(&creds_file).unwrap();
    let fresh = creds.split('"').find(|part| part.starts_with("cloud_")).expect("a renewed token").to_owned();
    assert_ne!(fresh, secret, "the token was renewed");
    assert!(!creds.contains("2000-01-01"), "{creds}");
    assert_eq!(signed_in.line("auth status").await.code, 4, "the replaced token is revoked");
    let signed_in = admin.with_token(&fresh, &dir.path().join("check"));
    // Signing out revokes what signing in got (a token given by hand would only be forgotten).
    admin.with_token("", &home).line("auth logout").await.ok("auth logout");
    assert_eq!(signed_in.line("auth status").await.code, 4, "the signed-in token is revoked");
    assert!(!std::fs::read_to_string(home.join("cloudctl/credentials.toml")).unwrap_or_default().contains("cloud_"));

    // cloudctl signs in through a browser on this machine: the provider sends the browser back
    // to cloudctl's loopback port with a code only it can trade (PKCE).
    let home = dir.path().join("bob-cli");
    let login = Login::start(&admin.with_token("", &home), "--browser");
    let redirect = login.redirect_uri();
    assert!(redirect.starts_with("http://127.0.0.1:"), "{redirect}");
    let back = Browser::default().walk(&login.url, "bob", &redirect).await.expect("sent back to cloudctl");
    let page = reqwest::get(&back).await.unwrap().text().await.unwrap();
    assert!(page.contains("Signed in to cloudctl"), "{page}");
    let who = login.finish().await;
    assert_eq!(who["user"]["email"], "bob@example.com", "{who}");
    let bob = admin.with_token("", &home);
    let projects = bob.line("project list").await.ok("project list as bob");
    assert!(projects.out.to_string().contains("team"), "{}", projects.out);
    // Alice's project does not exist for bob, in cloudctl and in the API; in his own project,
    // where he is a viewer, he lists but cannot create.
    assert_eq!(bob.line("--project alices instance list").await.code, 2, "alice's project is not found");
    let creds = std::fs::read_to_string(home.join("cloudctl/credentials.toml")).unwrap();
    let bobs = creds.split('"').find(|part| part.starts_with("cloud_")).unwrap().to_owned();
    let resp = reqwest::Client::new()
        .get(format!("{base}/v1/projects/alices/instances"))
        .bearer_auth(&bobs)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    bob.line("--project team instance list").await.ok("a viewer lists");
    let (_, key) = cloud_tests::guest::ssh_keygen(dir.path(), "bob-key");
    let refused = bob.run(&["--project", "team", "ssh-key", "create", "k", "--public-key", &key]).await;
    assert_ne!(refused.code, 0, "{refused:?}");
    assert!(refused.err.contains("your role in this project is viewer"), "{}", refused.err);

    // A code sent to cloudctl's port by anyone but the provider's redirect (a wrong state) is
    // refused, and nothing is stored.
    let home = dir.path().join("mallory-cli");
    let login = Login::start(&admin.with_token("", &home), "--browser");
    let forged = format!("{}?code=stolen&state=forged", login.redirect_uri());
    let page = reqwest::get(forged).await.unwrap().text().await.unwrap();
    assert!(page.contains("could not sign in"), "{page}");
    let (out, rest) = login.wait().await;
    assert!(!out.status.success() && rest.contains("another sign-in's state"), "{rest}");
    assert!(!home.join("cloudctl/credentials.toml").exists());
}

/// A control plane whose console signs in at a provider, and that provider. (The provider's
/// discovery happens at the first sign-in: it can start after the control plane, once the
/// console's callback URL is known.)
async fn with_provider(net: &TestNetwork, dir: &std::path::Path) -> (ControlPlane, Provider) {
    let port = provider_port();
    let flags = control_plane_flags(dir, port);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let cp = spawn_control_plane_with(net, dir, &flags).await;
    let provider = start_provider(port, &format!("{}/auth/callback", cp.api));
    (cp, provider)
}

/// Bad sign-ins are refused with a clear message and open nothing: a tampered session cookie,
/// a code injected into another sign-in's callback (its PKCE verifier does not match), an ID
/// token of another provider, and one of the right provider for another client.
#[tokio::test(flavor = "multi_thread")]
async fn bad_sign_ins_are_refused_and_open_nothing() {
    let net = TestNetwork::create();
    let dir = tempfile::tempdir().unwrap();
    let (cp, provider) = with_provider(&net, dir.path()).await;
    let base = cp.api.clone();
    let callback = format!("{base}/auth/callback");
    let whoami =
        |cookie: String| reqwest::Client::new().get(format!("{base}/v1/auth/whoami")).header(COOKIE, cookie).send();

    // A signed-in browser whose cookie is changed by one character.
    let mut alice = Browser::default();
    let back = alice.walk(&format!("{base}/auth/login"), "alice", &callback).await.unwrap();
    assert_eq!(alice.send(Method::GET, &back, None).await.status(), StatusCode::SEE_OTHER);
    let cookie = alice.cookie_header();
    assert_eq!(whoami(cookie.clone()).await.unwrap().status(), StatusCode::OK);
    let value = cookie.split("cloud_session=").nth(1).unwrap().split(';').next().unwrap();
    let last = value.chars().last().unwrap();
    let tampered = format!("cloud_session={}{}", &value[..value.len() - 1], if last == 'A' { 'B' } else { 'A' });
    let resp = whoami(tampered).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let body: Value = resp.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("sign in again"), "{body}");

    // Two sign-ins under way in two browsers; the code of the second, sent back with the first's
    // state (a code injected into a victim's callback): the control plane trades it with the
    // first's PKCE verifier, the provider refuses, no session.
    let mut first = Browser::default();
    let first_back = first.walk(&format!("{base}/auth/login"), "alice", &callback).await.unwrap();
    let mut second = Browser::default();
    let second_back = second.walk(&format!("{base}/auth/login"), "bob", &callback).await.unwrap();
    let param = |url: &str, name: &str| {
        reqwest::Url::parse(url).unwrap().query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned()).unwrap()
    };
    let injected = format!("{callback}?code={}&state={}", param(&second_back, "code"), param(&first_back, "state"));
    let resp = first.send(Method::GET, &injected, None).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(resp.headers().get("set-cookie").is_none());
    let body: Value = resp.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("refused"), "{body}");
    // The state was used up: the real callback of that sign-in cannot be replayed either.
    let resp = first.send(Method::GET, &first_back, None).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    // An ID token of another provider (same client ids, same users) for an API token: refused.
    let port = provider_port();
    let other = start_provider(port, &callback);
    let foreign = id_token_from(&other.issuer, "cloudctl", "alice", "http://127.0.0.1/callback").await;
    let resp = reqwest::Client::new()
        .post(format!("{base}/v1/auth/oidc/token"))
        .json(&json!({"id_token": foreign.0, "access_token": foreign.1}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let body: Value = resp.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().to_lowercase().contains("issuer"), "{body}");
    // The right provider, but a token issued to the console's client, not cloudctl's.
    let console_token = id_token_from(&provider.issuer, "console", "alice", &callback).await;
    let resp = reqwest::Client::new()
        .post(format!("{base}/v1/auth/oidc/token"))
        .json(&json!({"id_token": console_token.0, "access_token": console_token.1}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let admin = Cloudctl::new(&cp, &dir.path().join("admin"));
    let tokens = admin.line("token list").await.ok("token list");
    assert_eq!(tokens.out.as_array().map(Vec::len), Some(1), "only the bootstrap token: {}", tokens.out);
}

/// An ID token and access token of `user` from the provider at `issuer`, issued to `client`
/// (authorization code with PKCE, by hand, to the client's registered redirect URI).
async fn id_token_from(issuer: &str, client: &str, user: &str, redirect: &str) -> (String, String) {
    let secret = (client == "console").then_some(CONSOLE_SECRET);
    let discovery: Value =
        reqwest::get(format!("{issuer}/.well-known/openid-configuration")).await.unwrap().json().await.unwrap();
    let verifier = "a".repeat(43);
    let challenge = {
        use base64::Engine as _;
        use sha2::Digest as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()))
    };
    let mut url = reqwest::Url::parse(discovery["authorization_endpoint"].as_str().unwrap()).unwrap();
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", client)
        .append_pair("redirect_uri", redirect)
        .append_pair("scope", "openid email profile")
        .append_pair("state", "s")
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");
    let back = Browser::default().walk(url.as_str(), user, redirect).await.expect("sent back with a code");
    let code = reqwest::Url::parse(&back).unwrap().query_pairs().find(|(k, _)| k == "code").unwrap().1.into_owned();
    let mut form = vec![
        ("grant_type", "authorization_code".to_owned()),
        ("code", code),
        ("redirect_uri", redirect.to_owned()),
        ("client_id", client.to_owned()),
        ("code_verifier", verifier),
    ];
    if let Some(secret) = secret {
        form.push(("client_secret", secret.to_owned()));
    }
    let tokens: Value = reqwest::Client::new()
        .post(discovery["token_endpoint"].as_str().unwrap())
        .form(&form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let get = |k: &str| tokens[k].as_str().unwrap_or_else(|| panic!("no {k}: {tokens}")).to_owned();
    (get("id_token"), get("access_token"))
}

/// `cloudctl -o json auth login <how>` under way: the URL it showed the user.
struct Login {
    child: std::process::Child,
    stderr: std::io::BufReader<std::process::ChildStderr>,
    url: String,
}

impl Login {
    fn start(cli: &Cloudctl, how: &str) -> Self {
        let mut cmd = cli.command();
        cmd.args(["-o", "json", "auth", "login", how]);
        cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        let mut shown = String::new();
        stderr.read_line(&mut shown).unwrap();
        let url = shown.split_whitespace().find(|w| w.starts_with("http")).unwrap_or_else(|| panic!("no URL: {shown}"));
        Self { url: url.to_owned(), child, stderr }
    }

    /// The loopback address the provider is to send the browser back to (`--browser`).
    fn redirect_uri(&self) -> String {
        let url = reqwest::Url::parse(&self.url).unwrap();
        url.query_pairs().find(|(k, _)| k == "redirect_uri").map(|(_, v)| v.into_owned()).expect("a redirect URI")
    }

    /// Its exit and the rest of its standard error.
    async fn wait(self) -> (std::process::Output, String) {
        let Self { child, mut stderr, .. } = self;
        tokio::task::spawn_blocking(move || {
            let mut rest = String::new();
            let _ = std::io::Read::read_to_string(&mut stderr, &mut rest);
            (child.wait_with_output().unwrap(), rest)
        })
        .await
        .unwrap()
    }

    /// It succeeds: the `whoami` it prints.
    async fn finish(self) -> Value {
        let (out, rest) = self.wait().await;
        assert!(out.status.success(), "{out:?}: {rest}");
        serde_json::from_slice(&out.stdout).unwrap()
    }
}
