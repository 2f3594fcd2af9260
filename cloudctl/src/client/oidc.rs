//! Signing in at the cloud's OpenID Connect provider with the device authorization grant
//! (RFC 8628), for `cloudctl auth login --device-code`: cloudctl shows a URL and a code, the
//! user approves in any browser, cloudctl polls the provider's token endpoint and hands the
//! fresh ID token to the control plane for an API token (`POST /v1/auth/oidc/token`).

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

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

#[derive(Debug, Deserialize)]
struct Metadata {
    device_authorization_endpoint: Option<String>,
    token_endpoint: String,
}

#[derive(Debug, Deserialize)]
struct TokenError {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

fn failed(issuer: &str, why: impl Into<String>) -> ClientError {
    ClientError::Transport { endpoint: issuer.to_owned(), reason: why.into() }
}

/// Runs the device grant at `info`'s provider: `show` is called with the code to show the user,
/// then this waits (polling as the provider asks) until they approve, refuse, or the code ends.
pub async fn device_sign_in(
    info: &OidcInfo,
    ca_file: Option<&Path>,
    show: impl FnOnce(&DeviceCode),
) -> Result<ProviderTokens, ClientError> {
    let issuer = info.issuer.trim_end_matches('/');
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .user_agent(concat!("cloudctl/", env!("CARGO_PKG_VERSION")));
    if issuer.starts_with("https://") {
        let config =
            tls::client_config(ca_file).map_err(|r| ClientError::Tls { endpoint: issuer.to_owned(), reason: r })?;
        builder = builder.use_preconfigured_tls(rustls::ClientConfig::clone(&config));
    }
    let http = builder.build().map_err(|e| failed(issuer, reason(&e)))?;
    let metadata: Metadata = http
        .get(format!("{issuer}/.well-known/openid-configuration"))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| failed(issuer, format!("discovery: {}", reason(&e))))?
        .json()
        .await
        .map_err(|e| failed(issuer, format!("discovery: {}", reason(&e))))?;
    let device_endpoint = metadata
        .device_authorization_endpoint
        .ok_or_else(|| failed(issuer, "the provider offers no device authorization grant"))?;
    let scope = info.scopes.join(" ");
    let resp = http
        .post(&device_endpoint)
        .form(&[("client_id", info.client_id.as_str()), ("scope", scope.as_str())])
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
        let resp = http
            .post(&metadata.token_endpoint)
            .form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                ("device_code", code.device_code.as_str()),
                ("client_id", info.client_id.as_str()),
            ])
            .send()
            .await
            .map_err(|e| failed(issuer, reason(&e)))?;
        if resp.status().is_success() {
            return resp.json().await.map_err(|e| failed(issuer, format!("token response: {}", reason(&e))));
        }
        let error: TokenError = resp.json().await.map_err(|e| failed(issuer, reason(&e)))?;
        match error.error.as_str() {
            "authorization_pending" => {}
            "slow_down" => interval += Duration::from_secs(5),
            other => {
                let detail = error.error_description.map(|d| format!(": {d}")).unwrap_or_default();
                return Err(failed(issuer, format!("the sign-in was not approved ({other}{detail})")));
            }
        }
    }
}
