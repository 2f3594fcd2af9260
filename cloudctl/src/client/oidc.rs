//! Signing in at the cloud's OpenID Connect provider, for `cloudctl auth login`:
//! - `--device-code` (RFC 8628): cloudctl shows a URL and a code, the user approves in any
//!   browser, cloudctl polls the provider's token endpoint;
//! - `--browser` (RFC 8252, a loopback redirect with PKCE): cloudctl listens on a port of
//!   127.0.0.1, the user opens the URL it shows, and the provider sends the browser back there
//!   with a code that only this cloudctl (holding the PKCE verifier) can trade;
//! - refresh: the provider's refresh token (scope `offline_access`) gets a fresh ID token when
//!   the API token ends.
//!
//! Either way the fresh ID token goes to the control plane for an API token
//! (`POST /v1/auth/oidc/token`).

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use sha2::Digest as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::{ClientError, OidcInfo, reason, tls};

/// What the user is asked to do.
#[derive(Debug, Clone, Deserialize)]
pub struct DeviceCode {
    pub user_code: String,
    pub verification_uri: String,
    #[serde(default)]
    pub verification_uri_complete: Option<String>,
    pub expires_in: u64,
    #[serde(default)]
    interval: Option<u64>,
    device_code: String,
}

/// The provider's tokens once the user approved.
#[derive(Debug, Clone, Deserialize)]
pub struct ProviderTokens {
    pub id_token: String,
    pub access_token: String,
    #[serde(default)]
    pub refresh_token: Option<String>,
}

/// How long the user has to finish a sign-in in the browser.
const BROWSER_SIGN_IN_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, Deserialize)]
struct Metadata {
    authorization_endpoint: String,
    device_authorization_endpoint: Option<String>,
    token_endpoint: String,
}

#[derive(Debug, Deserialize)]
struct TokenError {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

impl TokenError {
    fn describe(&self) -> String {
        let detail = self.error_description.as_deref().map(|d| format!(": {d}")).unwrap_or_default();
        format!("{}{detail}", self.error)
    }
}

fn failed(issuer: &str, why: impl Into<String>) -> ClientError {
    ClientError::Transport { endpoint: issuer.to_owned(), reason: why.into() }
}

/// The provider, discovered.
struct Provider {
    issuer: String,
    http: reqwest::Client,
    metadata: Metadata,
    client_id: String,
    /// The scopes the control plane asks for, and `offline_access` (a refresh token).
    scope: String,
}

impl Provider {
    async fn discover(info: &OidcInfo, ca_file: Option<&Path>) -> Result<Self, ClientError> {
        let issuer = info.issuer.trim_end_matches('/').to_owned();
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("cloudctl/", env!("CARGO_PKG_VERSION")));
        if issuer.starts_with("https://") {
            let config =
                tls::client_config(ca_file).map_err(|r| ClientError::Tls { endpoint: issuer.clone(), reason: r })?;
            builder = builder.use_preconfigured_tls(rustls::ClientConfig::clone(&config));
        }
        let http = builder.build().map_err(|e| failed(&issuer, reason(&e)))?;
        let metadata: Metadata = http
            .get(format!("{issuer}/.well-known/openid-configuration"))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| failed(&issuer, format!("discovery: {}", reason(&e))))?
            .json()
            .await
            .map_err(|e| failed(&issuer, format!("discovery: {}", reason(&e))))?;
        let mut scopes = info.scopes.clone();
        if !scopes.iter().any(|s| s == "offline_access") {
            scopes.push("offline_access".to_owned());
        }
        Ok(Self { issuer, http, metadata, client_id: info.client_id.clone(), scope: scopes.join(" ") })
    }

    /// A request to the token endpoint: the tokens, or the provider's error code and text.
    async fn token(&self, form: &[(&str, &str)]) -> Result<Result<ProviderTokens, TokenError>, ClientError> {
        let resp = self
            .http
            .post(&self.metadata.token_endpoint)
            .form(form)
            .send()
            .await
            .map_err(|e| failed(&self.issuer, reason(&e)))?;
        if resp.status().is_success() {
            let tokens =
                resp.json().await.map_err(|e| failed(&self.issuer, format!("token response: {}", reason(&e))))?;
            return Ok(Ok(tokens));
        }
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        Ok(Err(serde_json::from_str(&text).unwrap_or(TokenError {
            error: format!("HTTP {status}"),
            error_description: Some(text.chars().take(200).collect()),
        })))
    }
}

/// Runs the device grant at `info`'s provider: `show` is called with the code to show the user,
/// then this waits (polling as the provider asks) until they approve, refuse, or the code ends.
pub async fn device_sign_in(
    info: &OidcInfo,
    ca_file: Option<&Path>,
    show: impl FnOnce(&DeviceCode),
) -> Result<ProviderTokens, ClientError> {
    let provider = Provider::discover(info, ca_file).await?;
    let issuer = provider.issuer.as_str();
    let device_endpoint = provider
        .metadata
        .device_authorization_endpoint
        .as_deref()
        .ok_or_else(|| failed(issuer, "the provider offers no device authorization grant"))?;
    let resp = provider
        .http
        .post(device_endpoint)
        .form(&[("client_id", provider.client_id.as_str()), ("scope", provider.scope.as_str())])
        .send()
        .await
        .map_err(|e| failed(issuer, reason(&e)))?;
    if !resp.status().is_success() {
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        return Err(failed(issuer, format!("device authorization refused (HTTP {status}): {body}")));
    }
    let code: DeviceCode = resp.json().await.map_err(|e| failed(issuer, reason(&e)))?;
    show(&code);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(code.expires_in.clamp(30, 1800));
    let mut interval = Duration::from_secs(code.interval.unwrap_or(5).clamp(1, 60));
    loop {
        tokio::time::sleep(interval).await;
        if tokio::time::Instant::now() >= deadline {
            return Err(failed(issuer, "the code expired before the sign-in was approved: run the login again"));
        }
        let form = [
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("device_code", code.device_code.as_str()),
            ("client_id", provider.client_id.as_str()),
        ];
        match provider.token(&form).await? {
            Ok(tokens) => return Ok(tokens),
            Err(error) => match error.error.as_str() {
                "authorization_pending" => {}
                "slow_down" => interval += Duration::from_secs(5),
                _ => return Err(failed(issuer, format!("the sign-in was not approved ({})", error.describe()))),
            },
        }
    }
}

/// Runs the authorization code grant with PKCE through a loopback redirect: listens on
/// `127.0.0.1:<any port>`, calls `show` with the URL the user opens in a browser on this
/// machine, and waits (up to 5 minutes) for the provider to send the browser back.
pub async fn browser_sign_in(
    info: &OidcInfo,
    ca_file: Option<&Path>,
    show: impl FnOnce(&str),
) -> Result<ProviderTokens, ClientError> {
    let provider = Provider::discover(info, ca_file).await?;
    let issuer = provider.issuer.as_str();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| failed(issuer, format!("cannot listen on 127.0.0.1 for the browser: {e}")))?;
    let port = listener.local_addr().map_err(|e| failed(issuer, e.to_string()))?.port();
    let redirect = format!("http://127.0.0.1:{port}/callback");
    let verifier = random_text().map_err(|e| failed(issuer, e))?;
    let state = random_text().map_err(|e| failed(issuer, e))?;
    let challenge = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()));
    let mut url = reqwest::Url::parse(&provider.metadata.authorization_endpoint)
        .map_err(|e| failed(issuer, format!("authorization endpoint: {e}")))?;
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &provider.client_id)
        .append_pair("redirect_uri", &redirect)
        .append_pair("scope", &provider.scope)
        .append_pair("state", &state)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256")
        // A refresh token (offline_access) is only given after an explicit consent.
        .append_pair("prompt", "consent");
    show(url.as_str());
    let code = tokio::time::timeout(BROWSER_SIGN_IN_TIMEOUT, callback(&listener, &state))
        .await
        .map_err(|_| failed(issuer, "nobody finished the sign-in in the browser within 5 minutes"))?
        .map_err(|why| failed(issuer, why))?;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", redirect.as_str()),
        ("client_id", provider.client_id.as_str()),
        ("code_verifier", verifier.as_str()),
    ];
    provider
        .token(&form)
        .await?
        .map_err(|e| failed(issuer, format!("the provider refused the code ({})", e.describe())))
}

/// A fresh ID token for a refresh token the provider gave at sign-in (it may rotate it).
pub async fn refresh(
    info: &OidcInfo,
    ca_file: Option<&Path>,
    refresh_token: &str,
) -> Result<ProviderTokens, ClientError> {
    let provider = Provider::discover(info, ca_file).await?;
    let form =
        [("grant_type", "refresh_token"), ("refresh_token", refresh_token), ("client_id", provider.client_id.as_str())];
    provider
        .token(&form)
        .await?
        .map_err(|e| failed(&provider.issuer, format!("the provider refused the refresh ({})", e.describe())))
}

/// Waits for the browser's request to `/callback` with the right `state`; answers it with a
/// short page and returns the code (other requests, e.g. a favicon, get a 404).
async fn callback(listener: &tokio::net::TcpListener, state: &str) -> Result<String, String> {
    loop {
        let (mut conn, _) = listener.accept().await.map_err(|e| format!("the loopback listener failed: {e}"))?;
        let mut buf = vec![0u8; 8192];
        let mut len = 0;
        while len < buf.len() && !buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
            match tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf[len..])).await {
                Ok(Ok(0)) | Err(_) => break,
                Ok(Ok(n)) => len += n,
                Ok(Err(_)) => break,
            }
        }
        let head = String::from_utf8_lossy(&buf[..len]).into_owned();
        let target = head.split_whitespace().nth(1).unwrap_or_default();
        let Ok(url) = reqwest::Url::parse(&format!("http://127.0.0.1{target}")) else { continue };
        if url.path() != "/callback" {
            let _ = conn.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
            continue;
        }
        let param = |name: &str| url.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned());
        let outcome = match (param("error"), param("code"), param("state")) {
            (Some(error), _, _) => {
                let detail = param("error_description").map(|d| format!(": {d}")).unwrap_or_default();
                Err(format!("the provider refused the sign-in ({error}{detail})"))
            }
            (None, Some(code), Some(got)) if got == state => Ok(code),
            (None, Some(_), _) => {
                Err("the browser came back with another sign-in's state: run the login again".to_owned())
            }
            (None, None, _) => Err("the browser came back without a code".to_owned()),
        };
        let page = match &outcome {
            Ok(_) => "Signed in to cloudctl. You can close this window.".to_owned(),
            Err(why) => format!("cloudctl could not sign in: {why}"),
        };
        let body = format!("<!doctype html><title>cloudctl</title><p>{}</p>\n", html_escape(&page));
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = conn.write_all(response.as_bytes()).await;
        return outcome;
    }
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// 32 random bytes as base64url (43 characters): a PKCE verifier, a state.
fn random_text() -> Result<String, String> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).map_err(|e| format!("cannot draw random bytes: {e}"))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}
