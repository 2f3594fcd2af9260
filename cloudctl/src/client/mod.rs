//! The typed API client: one method per endpoint of `/v1`, returning the types of [`types`].
//!
//! Used by the CLI and by the end-to-end tests, so tests exercise the code users run.
//!
//! ```text
//!  Client::new(endpoint, token)
//!    ├── instance_create(project, params, idempotency_key) → InstanceAccepted (202)
//!    ├── wait_operation(id, timeout)   loops GET /v1/operations/{id}/wait?timeout_secs=N
//!    └── list_all(|cursor| …)          follows next_cursor until the last page
//! ```
//! Errors are typed ([`ClientError`]): the endpoint cannot be reached, 401, 404, another API
//! error (with the API's code, message and request id), or a wait that ran out of time.
//! Idempotent requests (reads, and mutations carrying an `Idempotency-Key`) are retried a
//! few times on 502/503/504 and on transport errors after the connection was made; the same
//! key is sent on every retry, so the server maps them to one operation.

pub mod oidc;
pub mod tls;
pub mod types;
mod ws;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::{AUTHORIZATION, HeaderValue};
use reqwest::{Method, RequestBuilder, StatusCode, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

pub use types::*;
pub use ws::{WebSocket, WsError};

/// How long one ordinary request may take (a long poll adds its own timeout to this).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest long poll the server accepts, in seconds.
pub const MAX_WAIT_SECS: u64 = 60;
/// Retries of an idempotent request after a transient failure.
const RETRIES: u32 = 2;

/// An error the API returned: its HTTP status and its error body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (request id {request_id})")]
pub struct ApiError {
    pub status: u16,
    /// Stable machine-readable code, e.g. `not_found`, `conflict`.
    pub code: String,
    pub message: String,
    /// Quote it when reporting a problem: the server's logs carry it.
    pub request_id: String,
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The endpoint is not a usable http(s) URL.
    #[error("invalid endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint { endpoint: String, reason: String },
    /// The TLS settings cannot be used (an unreadable `--ca-cert`, no trusted roots).
    #[error("TLS for {endpoint}: {reason}")]
    Tls { endpoint: String, reason: String },
    /// No connection could be made (refused, DNS, connect timeout).
    #[error("cannot reach {endpoint}: {reason}")]
    Unreachable { endpoint: String, reason: String },
    /// The connection was made but the exchange failed (reset, timeout, bad HTTP).
    #[error("request to {endpoint} failed: {reason}")]
    Transport { endpoint: String, reason: String },
    /// 401: no token, or one that is invalid, expired or revoked.
    #[error("not authenticated: {0}")]
    Unauthenticated(ApiError),
    /// 404: no such resource (or one outside the caller's projects).
    #[error(transparent)]
    NotFound(ApiError),
    /// Any other error response.
    #[error(transparent)]
    Api(ApiError),
    /// A response that is not what the API documents.
    #[error("unexpected response from {endpoint} (HTTP {status}): {reason}")]
    Decode { endpoint: String, status: u16, reason: String },
    /// A wait ended before the operation did.
    #[error("timed out after {waited:?} waiting for {what}")]
    Timeout { what: String, waited: Duration },
    /// A console or tunnel WebSocket failed.
    #[error(transparent)]
    WebSocket(#[from] WsError),
}

impl ClientError {
    /// The API error behind this one, if the API answered.
    pub fn api(&self) -> Option<&ApiError> {
        match self {
            Self::Unauthenticated(e) | Self::NotFound(e) | Self::Api(e) => Some(e),
            _ => None,
        }
    }
}

/// A connection to the API of one control plane, as one caller.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    /// For `https` endpoints: the TLS settings the WebSockets use too.
    tls: Option<Arc<rustls::ClientConfig>>,
    base: Url,
    token: String,
    page_limit: Option<u32>,
}

/// The text of an error and its sources, for errors whose chain is the only explanation.
fn reason(err: &(dyn std::error::Error + 'static)) -> String {
    let mut deepest = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        deepest = e.to_string();
        source = e.source();
    }
    deepest
}

impl Client {
    /// A client of the API at `endpoint` (`http(s)://host[:port][/prefix]`) using `token`;
    /// `https` endpoints are verified against the system's trusted roots.
    pub fn new(endpoint: &str, token: &str) -> Result<Self, ClientError> {
        Self::with_ca(endpoint, token, None)
    }

    /// [`Client::new`], also trusting the CA certificates in `ca_file` (PEM) for `https`.
    pub fn with_ca(endpoint: &str, token: &str, ca_file: Option<&Path>) -> Result<Self, ClientError> {
        let invalid =
            |reason: &str| ClientError::InvalidEndpoint { endpoint: endpoint.to_owned(), reason: reason.into() };
        let base = Url::parse(endpoint).map_err(|e| invalid(&e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() || base.host().is_none() {
            return Err(invalid("expected http(s)://HOST[:PORT]"));
        }
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("cloudctl/", env!("CARGO_PKG_VERSION")));
        let tls = if base.scheme() == "https" {
            let config = tls::client_config(ca_file)
                .map_err(|reason| ClientError::Tls { endpoint: endpoint.to_owned(), reason })?;
            builder = builder.use_preconfigured_tls(rustls::ClientConfig::clone(&config));
            Some(config)
        } else {
            None
        };
        let http = builder.build().map_err(|e| invalid(&reason(&e)))?;
        Ok(Self { http, tls, base, token: token.to_owned(), page_limit: None })
    }

    /// The same client asking for pages of `limit` items (1 to 1000; the server's default is 100).
    pub fn with_page_limit(mut self, limit: u32) -> Self {
        self.page_limit = Some(limit);
        self
    }

    /// The endpoint this client talks to.
    pub fn endpoint(&self) -> &Url {
        &self.base
    }

    /// The URL of `segments` under the endpoint (each segment percent-encoded).
    pub fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    fn endpoint_text(&self) -> String {
        self.base.as_str().trim_end_matches('/').to_owned()
    }

    fn request(&self, method: Method, url: Url) -> RequestBuilder {
        let mut req = self.http.request(method, url).timeout(REQUEST_TIMEOUT);
        if let Ok(value) = HeaderValue::from_str(&format!("Bearer {}", self.token)) {
            req = req.header(AUTHORIZATION, value);
        }
        req
    }

    /// Sends a request (retrying transient failures when `idempotent`) and returns the response
    /// of a 2xx, or the typed error of anything else.
    async fn send(
        &self,
        build: impl Fn() -> RequestBuilder,
        idempotent: bool,
    ) -> Result<reqwest::Response, ClientError> {
        let mut attempt = 0;
        loop {
            let retry = idempotent && attempt < RETRIES;
            attempt += 1;
            let backoff = Duration::from_millis(250 * u64::from(attempt));
            match build().send().await {
                Ok(resp) if resp.status().is_success() => return Ok(resp),
                Ok(resp)
                    if retry
                        && matches!(
                            resp.status(),
                            StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
                        ) =>
                {
                    tokio::time::sleep(backoff).await;
                }
                Ok(resp) => return Err(self.error_of(resp).await),
                Err(err) if err.is_connect() => {
                    return Err(ClientError::Unreachable { endpoint: self.endpoint_text(), reason: reason(&err) });
                }
                Err(_) if retry => tokio::time::sleep(backoff).await,
                Err(err) => {
                    return Err(ClientError::Transport { endpoint: self.endpoint_text(), reason: reason(&err) });
                }
            }
        }
    }

    async fn error_of(&self, resp: reqwest::Response) -> ClientError {
        let status = resp.status();
        let header_id = resp.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("-").to_owned();
        let body = resp.bytes().await.unwrap_or_default();
        let err = match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(ErrorBody { error }) => ApiError {
                status: status.as_u16(),
                code: error.code,
                message: error.message,
                request_id: if error.request_id.is_empty() { header_id } else { error.request_id },
            },
            Err(_) => ApiError {
                status: status.as_u16(),
                code: status.canonical_reason().unwrap_or("error").to_lowercase().replace(' ', "_"),
                message: format!("HTTP {status} from {}", self.endpoint_text()),
                request_id: header_id,
            },
        };
        match status {
            StatusCode::UNAUTHORIZED => ClientError::Unauthenticated(err),
            StatusCode::NOT_FOUND => ClientError::NotFound(err),
            _ => ClientError::Api(err),
        }
    }

    async fn decode<T: DeserializeOwned>(&self, resp: reqwest::Response) -> Result<T, ClientError> {
        let status = resp.status().as_u16();
        let decode_err = |reason: String| ClientError::Decode { endpoint: self.endpoint_text(), status, reason };
        let body = resp.bytes().await.map_err(|e| decode_err(reason(&e)))?;
        serde_json::from_slice(&body).map_err(|e| decode_err(e.to_string()))
    }

    async fn get<T: DeserializeOwned>(&self, url: Url) -> Result<T, ClientError> {
        let resp = self.send(|| self.request(Method::GET, url.clone()), true).await?;
        self.decode(resp).await
    }

    async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        url: Url,
        body: Option<&B>,
        idempotency_key: Option<&str>,
    ) -> Result<T, ClientError> {
        let build = || {
            let mut req = self.request(Method::POST, url.clone());
            if let Some(body) = body {
                req = req.json(body);
            }
            if let Some(key) = idempotency_key {
                req = req.header("idempotency-key", key);
            }
            req
        };
        let resp = self.send(build, idempotency_key.is_some()).await?;
        self.decode(resp).await
    }

    /// PUT of a whole resource: safe to retry (the same body sets the same state).
    async fn put<B: Serialize, T: DeserializeOwned>(&self, url: Url, body: &B) -> Result<T, ClientError> {
        let resp = self.send(|| self.request(Method::PUT, url.clone()).json(body), true).await?;
        self.decode(resp).await
    }

    async fn delete_no_content(&self, url: Url) -> Result<(), ClientError> {
        self.send(|| self.request(Method::DELETE, url.clone()), false).await.map(drop)
    }

    async fn delete_accepted<T: serde::de::DeserializeOwned>(
        &self,
        url: Url,
        idempotency_key: Option<&str>,
    ) -> Result<T, ClientError> {
        let build = || {
            let req = self.request(Method::DELETE, url.clone());
            match idempotency_key {
                Some(key) => req.header("idempotency-key", key),
                None => req,
            }
        };
        let resp = self.send(build, idempotency_key.is_some()).await?;
        self.decode(resp).await
    }

    fn paged(&self, segments: &[&str], cursor: Option<&str>, extra: &[(&str, &str)]) -> Url {
        let mut url = self.url(segments);
        {
            let mut query = url.query_pairs_mut();
            for (k, v) in extra {
                query.append_pair(k, v);
            }
            if let Some(limit) = self.page_limit {
                query.append_pair("limit", &limit.to_string());
            }
            if let Some(cursor) = cursor {
                query.append_pair("cursor", cursor);
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        url
    }
}

/// Every item of a listing: calls `fetch` with each page's cursor until `next_cursor` is null.
pub async fn list_all<T, F, Fut>(mut fetch: F) -> Result<Vec<T>, ClientError>
where
    F: FnMut(Option<String>) -> Fut,
    Fut: Future<Output = Result<Page<T>, ClientError>>,
{
    let mut items = Vec::new();
    let mut cursor = None;
    loop {
        let page = fetch(cursor.take()).await?;
        items.extend(page.items);
        match page.next_cursor {
            Some(next) if !next.is_empty() => cursor = Some(next),
            _ => return Ok(items),
        }
    }
}

/// Identity and projects.
impl Client {
    /// Who the caller is.
    pub async fn whoami(&self) -> Result<WhoAmI, ClientError> {
        self.get(self.url(&["v1", "auth", "whoami"])).await
    }

    /// Creates an API token for the caller.
    pub async fn token_create(&self, params: &TokenCreateParams) -> Result<TokenCreated, ClientError> {
        self.post(self.url(&["v1", "auth", "tokens"]), Some(params), None).await
    }

    /// The caller's tokens.
    pub async fn token_list(&self) -> Result<Vec<Token>, ClientError> {
        Ok(self.get::<Page<Token>>(self.url(&["v1", "auth", "tokens"])).await?.items)
    }

    /// Revokes one of the caller's tokens.
    pub async fn token_revoke(&self, id: Uuid) -> Result<(), ClientError> {
        self.delete_no_content(self.url(&["v1", "auth", "tokens", &id.to_string()])).await
    }

    /// One page of the caller's projects.
    pub async fn project_list(&self, cursor: Option<String>) -> Result<Page<Project>, ClientError> {
        self.get(self.paged(&["v1", "projects"], cursor.as_deref(), &[])).await
    }

    /// One of the caller's projects, by name or id.
    pub async fn project_get(&self, project: &str) -> Result<Project, ClientError> {
        self.get(self.url(&["v1", "projects", project])).await
    }

    /// Creates a project (the caller becomes its admin).
    pub async fn project_create(&self, params: &ProjectCreateParams) -> Result<Project, ClientError> {
        self.post(self.url(&["v1", "projects"]), Some(params), None).await
    }

    /// A project's quotas and usage.
    pub async fn project_quotas(&self, project: &str) -> Result<ProjectQuotas, ClientError> {
        self.get(self.url(&["v1", "projects", project, "quotas"])).await
    }

    /// Sets a project's own quotas (operators).
    pub async fn project_quotas_set(
        &self,
        project: &str,
        params: &QuotaSetParams,
    ) -> Result<ProjectQuotas, ClientError> {
        self.put(self.url(&["v1", "projects", project, "quotas"]), params).await
    }

    /// The identity provider to sign in with, and cloudctl's client id there (public).
    pub async fn oidc_info(&self) -> Result<OidcInfo, ClientError> {
        self.get(self.url(&["v1", "auth", "oidc"])).await
    }

    /// Trades the provider's fresh ID token for an API token of its user.
    pub async fn oidc_token(&self, params: &OidcTokenParams) -> Result<TokenCreated, ClientError> {
        self.post(self.url(&["v1", "auth", "oidc", "token"]), Some(params), None).await
    }

    /// A project's members.
    pub async fn member_list(&self, project: &str) -> Result<Vec<Member>, ClientError> {
        #[derive(serde::Deserialize)]
        struct List {
            items: Vec<Member>,
        }
        Ok(self.get::<List>(self.url(&["v1", "projects", project, "members"])).await?.items)
    }

    /// Adds a member (the same member and role again changes nothing).
    pub async fn member_add(&self, project: &str, params: &MemberAddParams) -> Result<Member, ClientError> {
        self.post(self.url(&["v1", "projects", project, "members"]), Some(params), None).await
    }

    /// Changes a member's role.
    pub async fn member_set(&self, project: &str, user: &str, params: &MemberSetParams) -> Result<Member, ClientError> {
        // The same role again sets the same state: safe to retry.
        let url = self.url(&["v1", "projects", project, "members", user]);
        let resp = self.send(|| self.request(Method::PATCH, url.clone()).json(params), true).await?;
        self.decode(resp).await
    }

    /// Removes a member (or leaves, for oneself).
    pub async fn member_remove(&self, project: &str, user: &str) -> Result<(), ClientError> {
        self.delete_no_content(self.url(&["v1", "projects", project, "members", user])).await
    }

    /// Grants (`true`) or revokes a user's operator role.
    pub async fn operator_set(&self, user: &str, operator: bool) -> Result<UserAccount, ClientError> {
        let url = self.url(&["v1", "users", user, "operator"]);
        let method = if operator { Method::PUT } else { Method::DELETE };
        // Both set a state: safe to retry.
        let resp = self.send(|| self.request(method.clone(), url.clone()), true).await?;
        self.decode(resp).await
    }
}

/// SSH keys and images of a project.
impl Client {
    /// One page of the project's SSH keys.
    pub async fn ssh_key_list(&self, project: &str, cursor: Option<String>) -> Result<Page<SshKey>, ClientError> {
        self.get(self.paged(&["v1", "projects", project, "ssh-keys"], cursor.as_deref(), &[])).await
    }

    /// One SSH key, by name or id.
    pub async fn ssh_key_get(&self, project: &str, key: &str) -> Result<SshKey, ClientError> {
        self.get(self.url(&["v1", "projects", project, "ssh-keys", key])).await
    }

    /// Adds an SSH key to the project.
    pub async fn ssh_key_create(&self, project: &str, params: &SshKeyCreateParams) -> Result<SshKey, ClientError> {
        self.post(self.url(&["v1", "projects", project, "ssh-keys"]), Some(params), None).await
    }

    /// Removes an SSH key from the project.
    pub async fn ssh_key_delete(&self, project: &str, key: &str) -> Result<(), ClientError> {
        self.delete_no_content(self.url(&["v1", "projects", project, "ssh-keys", key])).await
    }

    /// One page of the project's snapshots (of one instance if given).
    pub async fn snapshot_list(
        &self,
        project: &str,
        instance: Option<&str>,
        cursor: Option<String>,
    ) -> Result<Page<Snapshot>, ClientError> {
        let filter: Vec<(&str, &str)> = instance.map(|i| ("instance", i)).into_iter().collect();
        self.get(self.paged(&["v1", "projects", project, "snapshots"], cursor.as_deref(), &filter)).await
    }

    /// One snapshot, by name or id.
    pub async fn snapshot_get(&self, project: &str, snapshot: &str) -> Result<Snapshot, ClientError> {
        self.get(self.url(&["v1", "projects", project, "snapshots", snapshot])).await
    }

    /// Takes a snapshot of an instance (202 with its operation).
    pub async fn snapshot_create(
        &self,
        project: &str,
        params: &SnapshotCreateParams,
    ) -> Result<SnapshotAccepted, ClientError> {
        self.post(self.url(&["v1", "projects", project, "snapshots"]), Some(params), None).await
    }

    /// Restores a snapshot into a new instance (202 with the `instance_restore` operation).
    pub async fn snapshot_restore(
        &self,
        project: &str,
        snapshot: &str,
        params: &InstanceRestoreParams,
        idempotency_key: Option<&str>,
    ) -> Result<InstanceAccepted, ClientError> {
        let url = self.url(&["v1", "projects", project, "snapshots", snapshot, "restore"]);
        self.post(url, Some(params), idempotency_key).await
    }

    /// Gives an instance a disaster-recovery policy; the instance.
    pub async fn dr_policy_set(
        &self,
        project: &str,
        instance: &str,
        params: &DrPolicyParams,
    ) -> Result<Instance, ClientError> {
        self.put(self.url(&["v1", "projects", project, "instances", instance, "dr-policy"]), params).await
    }

    /// Removes an instance's disaster-recovery policy.
    pub async fn dr_policy_clear(&self, project: &str, instance: &str) -> Result<(), ClientError> {
        self.delete_no_content(self.url(&["v1", "projects", project, "instances", instance, "dr-policy"])).await
    }

    /// Sets an instance's snapshot policy.
    pub async fn snapshot_policy_set(
        &self,
        project: &str,
        instance: &str,
        params: &SnapshotPolicyParams,
    ) -> Result<SnapshotPolicy, ClientError> {
        self.put(self.url(&["v1", "projects", project, "instances", instance, "snapshot-policy"]), params).await
    }

    /// An instance's snapshot policy.
    pub async fn snapshot_policy_get(&self, project: &str, instance: &str) -> Result<SnapshotPolicy, ClientError> {
        self.get(self.url(&["v1", "projects", project, "instances", instance, "snapshot-policy"])).await
    }

    /// Removes an instance's snapshot policy.
    pub async fn snapshot_policy_clear(&self, project: &str, instance: &str) -> Result<(), ClientError> {
        self.delete_no_content(self.url(&["v1", "projects", project, "instances", instance, "snapshot-policy"])).await
    }

    /// Deletes a snapshot (202 with its operation).
    pub async fn snapshot_delete(&self, project: &str, snapshot: &str) -> Result<SnapshotAccepted, ClientError> {
        self.delete_accepted(self.url(&["v1", "projects", project, "snapshots", snapshot]), None).await
    }

    /// One page of the images the project sees (its own and the public ones).
    pub async fn image_list(&self, project: &str, cursor: Option<String>) -> Result<Page<Image>, ClientError> {
        self.get(self.paged(&["v1", "projects", project, "images"], cursor.as_deref(), &[])).await
    }

    /// One image, by name or id.
    pub async fn image_get(&self, project: &str, image: &str) -> Result<Image, ClientError> {
        self.get(self.url(&["v1", "projects", project, "images", image])).await
    }

    /// Registers an image from files on the control plane host (operators).
    /// An image of a snapshot's root disk.
    pub async fn image_from_snapshot(
        &self,
        project: &str,
        snapshot: &str,
        params: &ImageFromSnapshotParams,
    ) -> Result<Image, ClientError> {
        self.post(self.url(&["v1", "projects", project, "snapshots", snapshot, "image"]), Some(params), None).await
    }

    pub async fn image_register(&self, project: &str, params: &ImageRegisterParams) -> Result<Image, ClientError> {
        self.post(self.url(&["v1", "projects", project, "images"]), Some(params), None).await
    }

    /// Deletes an image.
    pub async fn image_delete(&self, project: &str, image: &str) -> Result<(), ClientError> {
        self.delete_no_content(self.url(&["v1", "projects", project, "images", image])).await
    }
}

/// Instances.
impl Client {
    /// Creates an instance; the operation creating it comes back with it.
    pub async fn instance_create(
        &self,
        project: &str,
        params: &InstanceCreateParams,
        idempotency_key: Option<&str>,
    ) -> Result<InstanceAccepted, ClientError> {
        self.post(self.url(&["v1", "projects", project, "instances"]), Some(params), idempotency_key).await
    }

    /// One page of the project's instances, optionally only those in `state`.
    pub async fn instance_list(
        &self,
        project: &str,
        state: Option<&str>,
        cursor: Option<String>,
    ) -> Result<Page<Instance>, ClientError> {
        let filter: Vec<(&str, &str)> = state.map(|s| ("state", s)).into_iter().collect();
        self.get(self.paged(&["v1", "projects", project, "instances"], cursor.as_deref(), &filter)).await
    }

    /// One instance, by name or id.
    pub async fn instance_get(&self, project: &str, instance: &str) -> Result<Instance, ClientError> {
        self.get(self.url(&["v1", "projects", project, "instances", instance])).await
    }

    /// Waits up to `timeout_secs` (1 to 60) for instance `instance` to run and its guest to be
    /// ready, or to be in a state it will not get there from; returns it as it is then.
    pub async fn instance_wait_ready_once(
        &self,
        project: &str,
        instance: &str,
        timeout_secs: u64,
    ) -> Result<Instance, ClientError> {
        let secs = timeout_secs.clamp(1, MAX_WAIT_SECS);
        let mut url = self.url(&["v1", "projects", project, "instances", instance, "wait"]);
        url.query_pairs_mut().append_pair("until", "ready").append_pair("timeout_secs", &secs.to_string());
        let long = Duration::from_secs(secs) + REQUEST_TIMEOUT;
        let resp = self.send(|| self.request(Method::GET, url.clone()).timeout(long), true).await?;
        self.decode(resp).await
    }

    /// Starts, stops or reboots an instance (`action` is `start`, `stop` or `reboot`).
    pub async fn instance_action(
        &self,
        project: &str,
        instance: &str,
        action: InstanceAction,
        idempotency_key: Option<&str>,
    ) -> Result<InstanceAccepted, ClientError> {
        let url = self.url(&["v1", "projects", project, "instances", instance, action.as_str()]);
        self.post::<(), _>(url, None, idempotency_key).await
    }

    /// Deletes an instance.
    pub async fn instance_delete(
        &self,
        project: &str,
        instance: &str,
        idempotency_key: Option<&str>,
    ) -> Result<InstanceAccepted, ClientError> {
        self.delete_accepted(self.url(&["v1", "projects", project, "instances", instance]), idempotency_key).await
    }

    /// The instance's serial console as a WebSocket of raw bytes.
    pub async fn instance_console(&self, project: &str, instance: &str) -> Result<WebSocket, ClientError> {
        let url = self.url(&["v1", "projects", project, "instances", instance, "console"]);
        Ok(ws::connect(url, &self.token, self.tls.clone()).await?)
    }

    /// A TCP stream to `port` of the instance, as a WebSocket of raw bytes.
    pub async fn instance_tunnel(&self, project: &str, instance: &str, port: u16) -> Result<WebSocket, ClientError> {
        let mut url = self.url(&["v1", "projects", project, "instances", instance, "tunnel"]);
        url.query_pairs_mut().append_pair("port", &port.to_string());
        Ok(ws::connect(url, &self.token, self.tls.clone()).await?)
    }
}

/// A lifecycle change of an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceAction {
    Start,
    Stop,
    Reboot,
    Suspend,
}

impl InstanceAction {
    /// The last segment of its path.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Stop => "stop",
            Self::Reboot => "reboot",
            Self::Suspend => "suspend",
        }
    }
}

/// Operations and the fleet.
impl Client {
    /// One operation.
    pub async fn operation_get(&self, id: Uuid) -> Result<Operation, ClientError> {
        self.get(self.url(&["v1", "operations", &id.to_string()])).await
    }

    /// One long poll: the operation when it finishes or after `timeout_secs` (1 to 60).
    pub async fn operation_wait_once(&self, id: Uuid, timeout_secs: u64) -> Result<Operation, ClientError> {
        let secs = timeout_secs.clamp(1, MAX_WAIT_SECS);
        let mut url = self.url(&["v1", "operations", &id.to_string(), "wait"]);
        url.query_pairs_mut().append_pair("timeout_secs", &secs.to_string());
        let long = Duration::from_secs(secs) + REQUEST_TIMEOUT;
        let resp = self.send(|| self.request(Method::GET, url.clone()).timeout(long), true).await?;
        self.decode(resp).await
    }

    /// Waits until the operation finishes (whatever its outcome) or `timeout` passes
    /// ([`ClientError::Timeout`]).
    pub async fn wait_operation(&self, id: Uuid, timeout: Duration) -> Result<Operation, ClientError> {
        self.wait_operation_with(id, timeout, MAX_WAIT_SECS, |_| {}).await
    }

    /// [`Client::wait_operation`], long-polling at most `poll_secs` at a time and calling
    /// `progress` with the operation after each poll (for progress displays).
    pub async fn wait_operation_with(
        &self,
        id: Uuid,
        timeout: Duration,
        poll_secs: u64,
        mut progress: impl FnMut(&Operation),
    ) -> Result<Operation, ClientError> {
        let started = Instant::now();
        let deadline = started + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let op = if left.is_zero() {
                self.operation_get(id).await?
            } else {
                // Round up, so a wait never ends a fraction of a second early.
                let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
                self.operation_wait_once(id, secs.min(poll_secs.max(1))).await?
            };
            progress(&op);
            if op.is_finished() {
                return Ok(op);
            }
            if Instant::now() >= deadline {
                return Err(ClientError::Timeout {
                    what: format!("operation {id} ({}, {})", op.kind, op.state),
                    waited: started.elapsed(),
                });
            }
        }
    }

    /// One page of the project's operations, newest first.
    pub async fn operation_list(&self, project: &str, cursor: Option<String>) -> Result<Page<Operation>, ClientError> {
        self.get(self.paged(&["v1", "projects", project, "operations"], cursor.as_deref(), &[])).await
    }

    /// Every host of the fleet (operators).
    pub async fn host_list(&self) -> Result<Vec<Host>, ClientError> {
        self.get(self.url(&["v1", "hosts"])).await
    }

    /// One host by id (operators).
    pub async fn host_get(&self, id: Uuid) -> Result<Host, ClientError> {
        self.get(self.url(&["v1", "hosts", &id.to_string()])).await
    }

    /// Stops (`true`) or resumes (`false`) placing new instances on a host (operators;
    /// idempotent). Returns the host as it now is.
    pub async fn host_set_draining(&self, id: Uuid, draining: bool) -> Result<Host, ClientError> {
        let verb = if draining { "drain" } else { "undrain" };
        self.post::<(), _>(self.url(&["v1", "hosts", &id.to_string(), verb]), None, None).await
    }

    /// Declares a silent host dead (operators; idempotent); its instances become `lost`.
    pub async fn host_declare_dead(&self, id: Uuid) -> Result<Host, ClientError> {
        self.post::<(), _>(self.url(&["v1", "hosts", &id.to_string(), "declare-dead"]), None, None).await
    }

    /// The fleet's liveness (operators).
    pub async fn fleet_liveness(&self) -> Result<FleetLiveness, ClientError> {
        self.get(self.url(&["v1", "fleet", "liveness"])).await
    }

    /// Creates a single-use join token for a new host (operators); `ttl_secs` defaults to the
    /// server's setting.
    pub async fn join_token_create(&self, ttl_secs: Option<u64>) -> Result<JoinToken, ClientError> {
        let body = serde_json::json!({ "ttl_secs": ttl_secs });
        self.post(self.url(&["v1", "hosts", "join-tokens"]), Some(&body), None).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn urls_encode_segments_and_keep_a_path_prefix() {
        let client = Client::new("http://cloud.example:8080/api/", "t").unwrap();
        let url = client.url(&["v1", "projects", "a b/c", "instances"]);
        assert_eq!(url.as_str(), "http://cloud.example:8080/api/v1/projects/a%20b%2Fc/instances");
        let url = client.paged(&["v1", "projects"], None, &[]);
        assert_eq!(url.as_str(), "http://cloud.example:8080/api/v1/projects");
        let url = client.paged(&["v1", "x"], Some("abc"), &[("state", "running")]);
        assert_eq!(url.query(), Some("state=running&cursor=abc"));
    }

    #[test]
    fn endpoints_must_be_http_urls() {
        for bad in ["", "cloud.example", "ftp://cloud.example", "http://"] {
            assert!(matches!(Client::new(bad, "t"), Err(ClientError::InvalidEndpoint { .. })), "{bad}");
        }
        assert!(Client::new("https://cloud.example", "t").is_ok());
    }

    #[test]
    fn a_ca_file_that_holds_no_certificate_is_a_tls_error() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("ca.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        for ca in [empty, dir.path().join("missing.pem")] {
            let err = Client::with_ca("https://cloud.example", "t", Some(&ca)).unwrap_err();
            assert!(matches!(&err, ClientError::Tls { .. }), "{err}");
            assert!(err.to_string().contains(&ca.display().to_string()), "{err}");
        }
    }

    #[tokio::test]
    async fn list_all_follows_cursors_to_the_last_page() {
        let pages = |cursor: Option<String>| async move {
            Ok(match cursor.as_deref() {
                None => Page { items: vec![1, 2], next_cursor: Some("a".into()) },
                Some("a") => Page { items: vec![3], next_cursor: Some("b".into()) },
                _ => Page { items: vec![4], next_cursor: None },
            })
        };
        assert_eq!(list_all(pages).await.unwrap(), vec![1, 2, 3, 4]);
    }

    #[tokio::test]
    async fn a_closed_port_is_unreachable() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let client = Client::new(&format!("http://127.0.0.1:{port}"), "t").unwrap();
        let err = client.whoami().await.unwrap_err();
        assert!(matches!(err, ClientError::Unreachable { .. }), "{err:?}");
    }
}
