//! A real OpenID Connect provider for the tests (npm `oidc-provider`, pinned in `tests/oidc`,
//! installed by `deploy/test.sh`), and a browser driven by hand through its pages.
//!
//! The provider knows two clients, `console` (confidential: authorization code with PKCE) and
//! `cloudctl` (public: device code), and two users, `alice` and `bob` (verified e-mail addresses
//! `alice@example.com`, `bob@example.com`; any password).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use reqwest::Method;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};

/// The console client's secret at the provider.
pub const CONSOLE_SECRET: &str = "console-secret";

/// A running provider, stopped on drop.
#[derive(Debug)]
pub struct Provider {
    child: Child,
    pub issuer: String,
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free port on 127.0.0.1 for a provider (its issuer URL must name it before it starts).
pub fn provider_port() -> u16 {
    crate::process::free_port(std::net::Ipv4Addr::LOCALHOST)
}

/// The control plane's flags for signing in at a provider on `port` (the console's client,
/// its secret written to a file in `dir`).
pub fn control_plane_flags(dir: &std::path::Path, port: u16) -> Vec<String> {
    let secret = dir.join("oidc-secret");
    std::fs::write(&secret, format!("{CONSOLE_SECRET}\n")).expect("the client secret file");
    let secret = secret.to_str().expect("UTF-8 path").to_owned();
    let issuer = format!("http://127.0.0.1:{port}");
    ["--oidc-issuer", &issuer, "--oidc-client-id", "console", "--oidc-client-secret-file", &secret]
        .map(str::to_owned)
        .to_vec()
}

/// Starts the provider on `port`, accepting the console's `redirect_uri`.
pub fn start_provider(port: u16, redirect_uri: &str) -> Provider {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("oidc");
    assert!(
        dir.join("node_modules/oidc-provider").is_dir(),
        "the test identity provider is not installed: run `npm ci --prefix tests/oidc` (Node 18+ and npm; deploy/test.sh does)"
    );
    let mut child = Command::new("node")
        .arg("provider.mjs")
        .current_dir(&dir)
        .env("PORT", port.to_string())
        .env("CONSOLE_REDIRECT_URIS", redirect_uri)
        .env("CONSOLE_SECRET", CONSOLE_SECRET)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run node (apt-get install nodejs): {e}"));
    let mut stdout = std::io::BufReader::new(child.stdout.take().expect("provider stdout"));
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).expect("provider output");
    assert!(line.starts_with("listening "), "the identity provider did not start: {line:?}");
    // It logs notices later: a closed pipe would kill it.
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    Provider { child, issuer: format!("http://127.0.0.1:{port}") }
}

/// A browser: redirects followed by hand, one cookie jar (cookies ignore ports).
#[derive(Debug)]
pub struct Browser {
    pub http: reqwest::Client,
    pub cookies: HashMap<String, String>,
}

impl Default for Browser {
    fn default() -> Self {
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
        Self { http, cookies: HashMap::new() }
    }
}

impl Browser {
    /// The `Cookie` header it sends.
    pub fn cookie_header(&self) -> String {
        self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
    }

    /// One request with the jar's cookies; keeps the cookies the answer sets.
    pub async fn send(&mut self, method: Method, url: &str, form: Option<&[(String, String)]>) -> reqwest::Response {
        let mut req = self.http.request(method, url);
        if !self.cookies.is_empty() {
            req = req.header(COOKIE, self.cookie_header());
        }
        if let Some(form) = form {
            req = req.form(form);
        }
        let resp = req.send().await.expect("browser request");
        for set in resp.headers().get_all(SET_COOKIE) {
            let text = set.to_str().unwrap_or_default();
            let Some((name, value)) = text.split(';').next().and_then(|p| p.split_once('=')) else { continue };
            if value.is_empty() || text.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
        resp
    }

    /// Opens `url` and goes through the provider's pages as `user` would: following redirects,
    /// confirming the device code, signing in, consenting, until a redirect to a URL starting
    /// with `stop_at` (returned) or a page without a form (`None`).
    pub async fn walk(&mut self, url: &str, user: &str, stop_at: &str) -> Option<String> {
        let mut url = url.to_owned();
        let mut method = Method::GET;
        let mut form: Option<Vec<(String, String)>> = None;
        for _ in 0..30 {
            let resp = self.send(method.clone(), &url, form.as_deref()).await;
            if resp.status().is_redirection() {
                let location = resp.headers()[LOCATION].to_str().expect("location").to_owned();
                let next = absolute(&url, &location);
                if !stop_at.is_empty() && next.starts_with(stop_at) {
                    return Some(next);
                }
                (url, method, form) = (next, Method::GET, None);
                continue;
            }
            let page = resp.text().await.unwrap_or_default();
            let action = between(&page, "action=\"", "\"")?;
            let mut fields: Vec<(String, String)> = inputs(&page);
            if fields.iter().any(|(k, _)| k == "login") {
                fields.retain(|(k, _)| k != "login" && k != "password");
                fields.push(("login".to_owned(), user.to_owned()));
                fields.push(("password".to_owned(), "any".to_owned()));
            }
            (url, method, form) = (absolute(&url, &action), Method::POST, Some(fields));
        }
        panic!("the provider's pages did not end");
    }
}

/// The named inputs of a page's form with their values (empty for a text field).
fn inputs(page: &str) -> Vec<(String, String)> {
    page.split("<input")
        .skip(1)
        .filter_map(|tag| {
            let tag = &tag[..tag.find('>').unwrap_or(tag.len())];
            let name = between(tag, "name=\"", "\"")?;
            Some((name, between(tag, "value=\"", "\"").unwrap_or_default()))
        })
        .collect()
}

fn absolute(from: &str, location: &str) -> String {
    reqwest::Url::parse(from).and_then(|u| u.join(location)).map(|u| u.to_string()).expect("a URL")
}

fn between(text: &str, start: &str, end: &str) -> Option<String> {
    let from = text.find(start)? + start.len();
    let len = text[from..].find(end)?;
    Some(text[from..from + len].to_owned())
}
