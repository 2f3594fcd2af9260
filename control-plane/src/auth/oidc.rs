//! Sign-in through an OpenID Connect provider, for the web console: authorization code with
//! PKCE, the code exchanged by the control plane (a confidential client), and a server-side
//! session in an HttpOnly cookie.
//!
//! ```text
//!  GET /auth/login?next=/x ─▶ oidc_logins(state, PKCE verifier, nonce, next) ─▶ 303 provider
//!  provider ─▶ GET /auth/callback?code&state ─▶ take the login (once, ≤ 10 min old)
//!        ─▶ code + verifier exchanged ─▶ ID token checked (signature, issuer, audience, nonce)
//!        ─▶ the user: by (issuer, subject); else the one added by that verified e-mail
//!           address before signing in; else a new user ─▶ session ─▶ Set-Cookie, 303 next
//!  requests: cookie ─▶ Caller (changes also need X-CSRF-Token, see `GET /v1/auth/session`)
//!  POST /auth/logout ─▶ session revoked, cookie cleared
//! ```
//! The provider's metadata is discovered on the first sign-in and kept; a provider that is away
//! then makes that sign-in a 503, not the control plane's start fail.

use chrono::{Duration, Utc};
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointMaybeSet, EndpointNotSet, EndpointSet, IssuerUrl,
    Nonce, OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope, TokenResponse,
};
use sqlx::PgPool;
use tokio::sync::OnceCell;
use uuid::Uuid;

use crate::db::identity::{self, IdentityError, User};
use crate::db::sessions::{self, PendingLogin};
use crate::ids::UserId;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "cloud_session";
/// The header a change made with a session carries its CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// `[oidc]`: sign-in through an OpenID Connect provider (off without `issuer`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OidcConfig {
    /// The provider's issuer URL (its `/.well-known/openid-configuration` is read from it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// The console's client id at the provider.
    pub client_id: String,
    /// A file holding the console's client secret (one line; keep it 0600).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret_file: Option<std::path::PathBuf>,
    /// How long a console session (and a token `cloudctl auth login` gets) lasts, hours.
    pub session_hours: u32,
    /// cloudctl's client id at the provider (a public client: device code).
    pub cli_client_id: String,
}

impl OidcConfig {
    /// How long a console session (however it was signed in), and a token cloudctl gets by
    /// signing in, last.
    pub fn session_lifetime(&self) -> std::time::Duration {
        std::time::Duration::from_secs(u64::from(self.session_hours.max(1)) * 3600)
    }
}

impl Default for OidcConfig {
    fn default() -> Self {
        Self {
            issuer: None,
            client_id: "cloud-console".to_owned(),
            client_secret_file: None,
            session_hours: 12,
            cli_client_id: "cloudctl".to_owned(),
        }
    }
}

/// Errors of a sign-in.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// No provider is configured.
    #[error("sign-in through an identity provider is not configured (set [oidc] issuer)")]
    NotConfigured,
    /// The configuration cannot be used (a URL, the secret file).
    #[error("the [oidc] configuration is invalid: {0}")]
    Config(String),
    /// The provider could not be reached or answered wrongly.
    #[error("the identity provider failed: {0}")]
    Provider(String),
    /// The browser came back with something this control plane did not send (or too late).
    #[error("unknown or expired sign-in (start again)")]
    UnknownLogin,
    /// The provider refused the sign-in.
    #[error("the identity provider refused the sign-in: {0}")]
    Refused(String),
    /// The ID token is not acceptable.
    #[error("the identity provider's ID token is not acceptable: {0}")]
    BadToken(String),
    #[error("identity store failed")]
    Identity(#[from] IdentityError),
    #[error("database error")]
    Db(#[from] sqlx::Error),
}

type Client =
    CoreClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointMaybeSet, EndpointMaybeSet>;

/// The relying party: the provider's client, discovered once.
#[derive(Debug)]
pub struct Oidc {
    config: OidcConfig,
    redirect: String,
    http: reqwest::Client,
    client: OnceCell<Clients>,
}

/// The console's client and cloudctl's, from the same discovered metadata.
#[derive(Debug)]
struct Clients {
    console: Client,
    cli: Client,
}

/// A session just opened: the cookie's value and where the browser goes next.
#[derive(Debug)]
pub struct SignedIn {
    pub user: User,
    pub session: crate::auth::OpenedSession,
    pub next_path: String,
}

impl Oidc {
    /// The relying party of `config`, its callback under `public_url`; `None` when off.
    pub fn new(config: &OidcConfig, public_url: &str) -> Result<Option<Self>, OidcError> {
        if config.issuer.is_none() {
            return Ok(None);
        }
        let mut roots = rustls::RootCertStore::empty();
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        let tls = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
        let http = reqwest::Client::builder()
            // The provider's answers are followed by hand, never a redirect (SSRF).
            .redirect(reqwest::redirect::Policy::none())
            .use_preconfigured_tls(tls)
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| OidcError::Config(format!("HTTP client: {e}")))?;
        let base = public_url.trim_end_matches('/');
        Ok(Some(Self {
            config: config.clone(),
            redirect: format!("{base}/auth/callback"),
            http,
            client: OnceCell::new(),
        }))
    }

    async fn client(&self) -> Result<&Client, OidcError> {
        Ok(&self.clients().await?.console)
    }

    async fn clients(&self) -> Result<&Clients, OidcError> {
        self.client
            .get_or_try_init(|| async {
                let issuer = self.config.issuer.clone().ok_or(OidcError::NotConfigured)?;
                let issuer = IssuerUrl::new(issuer).map_err(|e| OidcError::Config(format!("issuer: {e}")))?;
                let metadata = CoreProviderMetadata::discover_async(issuer, &self.http)
                    .await
                    .map_err(|e| OidcError::Provider(format!("discovery: {}", crate::error_chain::ErrorChain(&e))))?;
                let secret = match &self.config.client_secret_file {
                    Some(path) => Some(ClientSecret::new(
                        std::fs::read_to_string(path)
                            .map_err(|e| OidcError::Config(format!("{}: {e}", path.display())))?
                            .trim()
                            .to_owned(),
                    )),
                    None => None,
                };
                let redirect = RedirectUrl::new(self.redirect.clone())
                    .map_err(|e| OidcError::Config(format!("callback URL: {e}")))?;
                let cli = CoreClient::from_provider_metadata(
                    metadata.clone(),
                    ClientId::new(self.config.cli_client_id.clone()),
                    None,
                )
                .set_redirect_uri(redirect.clone());
                let console =
                    CoreClient::from_provider_metadata(metadata, ClientId::new(self.config.client_id.clone()), secret)
                        .set_redirect_uri(redirect);
                Ok(Clients { console, cli })
            })
            .await
    }

    /// Starts a sign-in: records it and returns the provider's URL to send the browser to.
    pub async fn begin(&self, pool: &PgPool, next_path: &str) -> Result<String, OidcError> {
        let client = self.client().await?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, state, nonce) = client
            .authorize_url(CoreAuthenticationFlow::AuthorizationCode, CsrfToken::new_random, Nonce::new_random)
            .add_scope(Scope::new("email".to_owned()))
            .add_scope(Scope::new("profile".to_owned()))
            .set_pkce_challenge(challenge)
            .url();
        let login = PendingLogin {
            pkce_verifier: verifier.secret().clone(),
            nonce: nonce.secret().clone(),
            next_path: safe_next(next_path),
        };
        sessions::login_begin(pool, state.secret(), &login).await?;
        Ok(url.to_string())
    }

    /// Finishes a sign-in: checks what the provider sent, finds or creates the user, and opens
    /// a session.
    pub async fn finish(&self, pool: &PgPool, code: &str, state: &str) -> Result<SignedIn, OidcError> {
        let login = sessions::login_take(pool, state).await?.ok_or(OidcError::UnknownLogin)?;
        let client = self.client().await?;
        let exchange = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| OidcError::Provider(format!("no token endpoint: {e}")))?
            .set_pkce_verifier(PkceCodeVerifier::new(login.pkce_verifier));
        let tokens = exchange
            .request_async(&self.http)
            .await
            .map_err(|e| OidcError::Refused(crate::error_chain::ErrorChain(&e).to_string()))?;
        let id_token = tokens.id_token().ok_or_else(|| OidcError::BadToken("no ID token".to_owned()))?;
        let claims = id_token
            .claims(&client.id_token_verifier(), &Nonce::new(login.nonce))
            .map_err(|e| OidcError::BadToken(e.to_string()))?;
        let who = self.identity_of(client, claims, tokens.access_token()).await;
        let user = user_for(pool, &who).await?;
        let lifetime = self.config.session_lifetime();
        let expires_at = Utc::now() + Duration::seconds(lifetime.as_secs() as i64);
        let session = crate::auth::session_open(pool, user.id, expires_at, None)
            .await
            .map_err(|e| OidcError::Config(format!("cannot open a session: {}", crate::error_chain::ErrorChain(&e))))?;
        tracing::info!(user = %user.id, issuer = %who.issuer, "signed in through the identity provider");
        Ok(SignedIn { user, session, next_path: login.next_path })
    }
}

/// Who the provider says signed in.
#[derive(Debug, Clone)]
struct ProviderIdentity {
    issuer: String,
    subject: String,
    /// Only a verified address.
    email: Option<String>,
    name: String,
}

impl Oidc {
    /// The identity in checked ID token `claims`, completed from the provider's userinfo
    /// (providers that follow the spec strictly put scope claims there only).
    async fn identity_of(
        &self,
        client: &Client,
        claims: &openidconnect::core::CoreIdTokenClaims,
        access_token: &openidconnect::AccessToken,
    ) -> ProviderIdentity {
        let issuer = claims.issuer().as_str().to_owned();
        let subject = claims.subject().as_str().to_owned();
        let mut email = claims.email().filter(|_| claims.email_verified() == Some(true)).map(|e| e.as_str().to_owned());
        let mut username = claims.preferred_username().map(|n| n.as_str().to_owned());
        if email.is_none() || username.is_none() {
            match client.user_info(access_token.clone(), Some(claims.subject().clone())) {
                Ok(request) => match request
                    .request_async::<openidconnect::EmptyAdditionalClaims, _, openidconnect::core::CoreGenderClaim>(
                        &self.http,
                    )
                    .await
                {
                    Ok(info) => {
                        if email.is_none() && info.email_verified() == Some(true) {
                            email = info.email().map(|e| e.as_str().to_owned());
                        }
                        if username.is_none() {
                            username = info.preferred_username().map(|n| n.as_str().to_owned());
                        }
                    }
                    Err(e) => tracing::warn!(error = %crate::error_chain::ErrorChain(&e), "cannot read userinfo"),
                },
                Err(e) => tracing::debug!(error = %e, "the provider has no userinfo endpoint"),
            }
        }
        let name = username.or_else(|| email.clone()).unwrap_or_else(|| subject.clone());
        ProviderIdentity { issuer, subject, email, name }
    }

    /// What cloudctl needs to sign in: the provider and its client id there.
    pub fn cli_info(&self) -> (String, String) {
        (self.config.issuer.clone().unwrap_or_default(), self.config.cli_client_id.clone())
    }

    /// cloudctl signed in at the provider (device code): checks its fresh ID token, issued to
    /// cloudctl's client, and returns the user it names (made or matched as for the console)
    /// and how long the API token it gets may last.
    pub async fn cli_sign_in(
        &self,
        pool: &PgPool,
        id_token: &str,
        access_token: &str,
    ) -> Result<(User, std::time::Duration), OidcError> {
        let clients = self.clients().await?;
        let token: openidconnect::core::CoreIdToken =
            id_token.parse().map_err(|e| OidcError::BadToken(format!("not an ID token: {e}")))?;
        // Device code has no nonce; a token made more than 10 minutes ago is not taken instead.
        let claims = token
            .claims(&clients.cli.id_token_verifier(), |_: Option<&Nonce>| Ok::<(), String>(()))
            .map_err(|e| OidcError::BadToken(e.to_string()))?;
        if Utc::now() - claims.issue_time() > Duration::minutes(10) {
            return Err(OidcError::BadToken("issued more than 10 minutes ago: sign in again".to_owned()));
        }
        let access = openidconnect::AccessToken::new(access_token.to_owned());
        let who = self.identity_of(&clients.cli, claims, &access).await;
        let user = user_for(pool, &who).await?;
        tracing::info!(user = %user.id, issuer = %who.issuer, "cloudctl signed in through the identity provider");
        Ok((user, self.config.session_lifetime()))
    }
}

/// The user behind a provider identity: the one that has it, else the oldest user added by
/// that verified e-mail address before signing in (who takes the identity), else a new user
/// (named by the provider's username, made unique).
async fn user_for(pool: &PgPool, who: &ProviderIdentity) -> Result<User, OidcError> {
    let user = find_or_create(pool, &who.issuer, &who.subject, who.email.as_deref(), &who.name).await?;
    if user.disabled_at.is_some() {
        return Err(OidcError::Refused(format!("user {} is disabled", user.name)));
    }
    Ok(user)
}

async fn find_or_create(
    pool: &PgPool,
    issuer: &str,
    subject: &str,
    email: Option<&str>,
    name: &str,
) -> Result<User, OidcError> {
    if let Some(user) = identity::user_find_oidc(pool, issuer, subject).await? {
        return Ok(user);
    }
    if let Some(email) = email
        && let Some(user) = identity::user_claim_by_email(pool, issuer, subject, email).await?
    {
        tracing::info!(user = %user.id, "a member added by e-mail signed in for the first time");
        return Ok(user);
    }
    let id = UserId(Uuid::new_v4());
    for candidate in [name.to_owned(), format!("{name}-{}", &id.0.simple().to_string()[..6])] {
        match identity::user_create_oidc(pool, id, &candidate, email, issuer, subject).await {
            Ok(user) => {
                tracing::info!(user = %user.id, name = %user.name, "user created at first sign-in");
                return Ok(user);
            }
            Err(IdentityError::AlreadyExists { .. }) => {
                // The same identity signing in twice at once: the other one created it.
                if let Some(user) = identity::user_find_oidc(pool, issuer, subject).await? {
                    return Ok(user);
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(OidcError::Identity(IdentityError::AlreadyExists { what: "user", name: name.to_owned() }))
}

/// The `Set-Cookie` value carrying session secret `value` for `max_age_secs` (an empty value
/// and 0 clear it): `HttpOnly`, `SameSite=Lax`, and `Secure` when the API is served over HTTPS.
pub fn set_session_cookie(value: &str, max_age_secs: i64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age_secs}{secure}")
}

/// Only a path of this site: anything else (another origin, `//host`, a scheme) is `/`.
pub fn safe_next(next: &str) -> String {
    let ok = next.starts_with('/')
        && !next.starts_with("//")
        && !next.starts_with("/\\")
        && next.len() <= 2048
        && !next.chars().any(|c| c.is_control());
    if ok { next.to_owned() } else { "/".to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed_after_sign_in() {
        assert_eq!(safe_next("/instances?state=running"), "/instances?state=running");
        for bad in ["https://evil.example", "//evil.example/x", "/\\evil.example", "javascript:alert(1)", "", "/a\nb"] {
            assert_eq!(safe_next(bad), "/", "{bad:?}");
        }
    }
}
