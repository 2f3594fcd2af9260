//! Console sign-in through a real OpenID Connect provider (npm `oidc-provider`, pinned in
//! `tests/oidc`, started on loopback): a browser's round trip by hand (redirects, the
//! provider's login and consent forms, cookies), users made at first sign-in or matched to the
//! member an admin added by e-mail, CSRF on changes, signing out.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use control_plane::auth::Role;
use control_plane::db::identity;
use control_plane::ids::{ProjectId, UserId};
use control_plane::testing::TestDatabase;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// The provider, killed on drop.
struct Provider {
    child: Child,
    issuer: String,
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Starts `tests/oidc/provider.mjs` with the console's redirect URI.
fn start_provider(redirect_uri: &str) -> Provider {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/oidc");
    assert!(
        dir.join("node_modules/oidc-provider").is_dir(),
        "the test identity provider is not installed: run `npm ci --prefix tests/oidc` (Node 20 and npm; deploy/test.sh does)"
    );
    let port = free_port();
    let mut child = Command::new("node")
        .arg("provider.mjs")
        .current_dir(&dir)
        .env("PORT", port.to_string())
        .env("CONSOLE_REDIRECT_URIS", redirect_uri)
        .env("CONSOLE_SECRET", "console-secret")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run node (install Node 20: apt-get install nodejs npm): {e}"));
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).unwrap();
    assert!(line.starts_with("listening "), "the provider did not start: {line:?}");
    Provider { child, issuer: format!("http://127.0.0.1:{port}") }
}

/// A browser: no automatic redirects, one cookie jar for 127.0.0.1 (cookies ignore ports).
struct Browser {
    http: reqwest::Client,
    cookies: HashMap<String, String>,
}

impl Browser {
    fn new() -> Self {
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Self { http, cookies: HashMap::new() }
    }

    async fn send(&mut self, method: Method, url: &str, form: Option<&[(&str, &str)]>) -> reqwest::Response {
        let mut req = self.http.request(method, url);
        if !self.cookies.is_empty() {
            let jar: Vec<String> = self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
            req = req.header(COOKIE, jar.join("; "));
        }
        if let Some(form) = form {
            req = req.form(form);
        }
        let resp = req.send().await.unwrap();
        for set in resp.headers().get_all(SET_COOKIE) {
            let pair = set.to_str().unwrap().split(';').next().unwrap();
            if let Some((name, value)) = pair.split_once('=') {
                if value.is_empty() || set.to_str().unwrap().contains("Max-Age=0") {
                    self.cookies.remove(name);
                } else {
                    self.cookies.insert(name.to_owned(), value.to_owned());
                }
            }
        }
        resp
    }

    /// Signs in as `user` from `base`'s `/auth/login?next=…`; returns where the console sent
    /// the browser at the end.
    async fn sign_in(&mut self, base: &str, user: &str, next: &str) -> String {
        let mut url = format!("{base}/auth/login?next={next}");
        for _ in 0..20 {
            let resp = self.send(Method::GET, &url, None).await;
            if resp.status().is_redirection() {
                let location = resp.headers()[LOCATION].to_str().unwrap().to_owned();
                if url.starts_with(&format!("{base}/auth/callback")) {
                    return location;
                }
                url = absolute(&url, &location);
                continue;
            }
            let page = resp.text().await.unwrap();
            let action = between(&page, "action=\"", "\"").unwrap_or_else(|| panic!("no form at {url}: {page}"));
            let prompt = between(&page, "name=\"prompt\" value=\"", "\"").unwrap();
            let form: Vec<(&str, &str)> = match prompt.as_str() {
                "login" => vec![("prompt", "login"), ("login", user), ("password", "any")],
                _ => vec![("prompt", "consent")],
            };
            let resp = self.send(Method::POST, &absolute(&url, &action), Some(&form)).await;
            assert!(resp.status().is_redirection(), "{prompt} form: {}", resp.status());
            url = absolute(&url, resp.headers()[LOCATION].to_str().unwrap());
        }
        panic!("the sign-in did not come back to {base}");
    }
}

fn jar(browser: &Browser) -> String {
    browser.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
}

fn absolute(from: &str, location: &str) -> String {
    reqwest::Url::parse(from).unwrap().join(location).unwrap().to_string()
}

fn between(text: &str, start: &str, end: &str) -> Option<String> {
    let from = text.find(start)? + start.len();
    let len = text[from..].find(end)?;
    Some(text[from..from + len].to_owned())
}

#[tokio::test]
async fn the_console_signs_in_through_the_provider_with_a_session_and_csrf() {
    let db = TestDatabase::create().await.unwrap();
    let pool = db.migrated_pool().await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let provider = start_provider(&format!("{base}/auth/callback"));
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("oidc-secret");
    std::fs::write(&secret, "console-secret\n").unwrap();
    let mut config = control_plane::config::Config { data_dir: dir.path().to_owned(), ..Default::default() };
    config.public_url = Some(base.clone());
    config.oidc.issuer = Some(provider.issuer.clone());
    config.oidc.client_id = "console".to_owned();
    config.oidc.client_secret_file = Some(secret);
    let app = Arc::new(control_plane::testing::app_with(pool.clone(), config));
    let router = control_plane::http::router(app);
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });

    // An admin adds bob by e-mail before he ever signs in.
    let team = identity::project_create(&pool, ProjectId::new(), "team", "").await.unwrap().id;
    let invited = identity::user_create_invited(&pool, UserId::new(), "bob@example.com").await.unwrap();
    identity::project_member_add(&pool, team, invited.id, Role::Viewer).await.unwrap();

    // Alice signs in: she is a new user, named by the provider, and lands where she started.
    let mut alice = Browser::new();
    assert_eq!(alice.sign_in(&base, "alice", "/instances?state=running").await, "/instances?state=running");
    let who: Value = alice.send(Method::GET, &format!("{base}/v1/auth/whoami"), None).await.json().await.unwrap();
    assert_eq!(who["user"]["name"], "alice", "{who}");
    assert_eq!(who["user"]["email"], "alice@example.com");
    assert_eq!(who["token_id"], Value::Null, "a session, not a token");
    let alice_id = who["user"]["id"].clone();

    // A change needs the session's CSRF token, not just the cookie.
    let create = |csrf: Option<&str>| {
        let mut req = alice.http.post(format!("{base}/v1/projects")).json(&json!({"name": "alices"}));
        req = req.header(COOKIE, jar(&alice));
        if let Some(csrf) = csrf {
            req = req.header("x-csrf-token", csrf);
        }
        req.send()
    };
    assert_eq!(create(None).await.unwrap().status(), StatusCode::FORBIDDEN);
    assert_eq!(create(Some("wrong")).await.unwrap().status(), StatusCode::FORBIDDEN);
    let session: Value = alice
        .http
        .get(format!("{base}/v1/auth/session"))
        .header(COOKIE, jar(&alice))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let csrf = session["csrf_token"].as_str().unwrap().to_owned();
    assert_eq!(create(Some(&csrf)).await.unwrap().status(), StatusCode::CREATED);

    // Bob signs in: the member added by his (verified) e-mail address is him.
    let mut bob = Browser::new();
    bob.sign_in(&base, "bob", "https://evil.example/").await;
    let who: Value = bob.send(Method::GET, &format!("{base}/v1/auth/whoami"), None).await.json().await.unwrap();
    assert_eq!(who["user"]["id"], json!(invited.id), "{who}");
    assert_eq!(who["projects"][0]["name"], "team");
    assert_eq!(who["projects"][0]["role"], "viewer");

    // Signing in again is the same user; another site's page was never a destination.
    let mut again = Browser::new();
    assert_eq!(again.sign_in(&base, "alice", "//evil.example").await, "/");
    let who: Value = again.send(Method::GET, &format!("{base}/v1/auth/whoami"), None).await.json().await.unwrap();
    assert_eq!(who["user"]["id"], alice_id);
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users").fetch_one(&pool).await.unwrap();
    assert_eq!(users, 2, "alice once, bob once");

    // A callback this control plane did not start is refused.
    let forged = again.send(Method::GET, &format!("{base}/auth/callback?code=x&state=forged"), None).await;
    assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);

    // Signing out (a change: with the CSRF token) ends the session.
    let old = alice.cookies.clone();
    let out = alice
        .http
        .post(format!("{base}/auth/logout"))
        .header(COOKIE, jar(&alice))
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::NO_CONTENT);
    alice.cookies = old;
    let after = alice.send(Method::GET, &format!("{base}/v1/auth/whoami"), None).await;
    assert_eq!(after.status(), StatusCode::UNAUTHORIZED);
}
