//! OAuth2 for destinations: client credentials (2-legged) with a token cache, and
//! the authorization code flow with PKCE for a native app (RFC 8252: the system
//! browser, a loopback redirect on an ephemeral port, `state` checked), with the
//! refresh token kept in the keyring. Tokens are `Secret`s: they never reach an
//! error message, a log line or `Debug` output.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD as B64URL};
use serde_json::Value;
use sha2::Digest as _;

use super::blocking;
use super::delivery::{TokenFuture, TokenProvider};
use crate::core::model::{Auth, ClientAuth, Destination};
use crate::core::secret::{Secret, SecretError, Secrets};

#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    #[error("token endpoint {url} answered HTTP {status}: {error}{}", description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Endpoint {
        url: String,
        status: u16,
        error: String,
        description: Option<String>,
    },
    #[error("token endpoint {url}: {message}")]
    Transport { url: String, message: String },
    #[error("token endpoint {url}: the answer has no access_token")]
    NoToken { url: String },
    #[error("{0}")]
    Secret(#[from] SecretError),
    #[error("not authorized yet: run the authorization flow for destination \"{0}\"")]
    NotAuthorized(String),
    #[error(
        "the authorization server redirected back with state that does not match: the flow was not started here"
    )]
    StateMismatch,
    #[error("authorization refused: {0}")]
    Denied(String),
    #[error("no authorization arrived within {0:?}")]
    Timeout(Duration),
    #[error("cannot open the browser: {0}")]
    Browser(String),
    #[error("destination \"{0}\" does not use OAuth2")]
    NotOAuth(String),
    #[error("loopback redirect: {0}")]
    Loopback(String),
    #[error("{0} (not asked again until the credentials change)")]
    Rejected(String),
}

impl OAuthError {
    /// Asking again cannot help: the endpoint rejected the client or the grant, or a
    /// credential is missing. A job stops asking instead of hammering the endpoint.
    pub fn is_final(&self) -> bool {
        match self {
            Self::Endpoint { status, error, .. } => {
                matches!(status, 400 | 401 | 403)
                    && matches!(
                        error.as_str(),
                        "invalid_client"
                            | "invalid_grant"
                            | "unauthorized_client"
                            | "unsupported_grant_type"
                            | "invalid_scope"
                            | "invalid_request"
                    )
            }
            Self::Transport { .. } | Self::Timeout(_) | Self::Loopback(_) => false,
            _ => true,
        }
    }
}

/// The longest lifetime a token's `expires_in` is taken at (a year): larger values,
/// up to `u64::MAX`, would overflow the clock.
const MAX_LIFETIME: Duration = Duration::from_hours(365 * 24);

/// What a token endpoint gave us.
#[derive(Debug, Clone)]
pub struct TokenSet {
    pub access_token: Secret,
    pub token_type: String,
    pub expires_in: Option<Duration>,
    pub refresh_token: Option<Secret>,
    pub scope: Option<String>,
}

/// A PKCE `code_verifier`: 32 random bytes, base64url (43 characters).
pub fn pkce_verifier() -> String {
    B64URL.encode(rand::random::<[u8; 32]>())
}

/// The S256 `code_challenge` for a verifier (RFC 7636 §4.2).
pub fn pkce_challenge(verifier: &str) -> String {
    B64URL.encode(sha2::Sha256::digest(verifier.as_bytes()))
}

fn form_encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// `client_secret_basic` (RFC 6749 §2.3.1): id and secret are form-urlencoded, then Base64.
pub fn client_secret_basic(client_id: &str, client_secret: &str) -> String {
    format!(
        "Basic {}",
        B64.encode(format!(
            "{}:{}",
            form_encode(client_id),
            form_encode(client_secret)
        ))
    )
}

/// POST a token request with the configured client authentication.
async fn token_request(
    client: &reqwest::Client,
    url: &str,
    mut form: Vec<(&'static str, String)>,
    client_auth: ClientAuth,
    client_id: &str,
    client_secret: Option<&Secret>,
) -> Result<TokenSet, OAuthError> {
    let mut rb = client
        .post(url)
        .header("Accept", "application/json")
        .timeout(Duration::from_secs(30));
    match (client_auth, client_secret) {
        (ClientAuth::ClientSecretBasic, Some(s)) => {
            rb = rb.header("Authorization", client_secret_basic(client_id, s.expose()));
        }
        (ClientAuth::ClientSecretPost, Some(s)) => {
            form.push(("client_id", client_id.to_owned()));
            form.push(("client_secret", s.expose().to_owned()));
        }
        // A public client (no secret) identifies itself in the form.
        (_, None) => form.push(("client_id", client_id.to_owned())),
    }
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form.iter().map(|(k, v)| (*k, v.as_str())))
        .finish();
    let transport = |e: reqwest::Error| OAuthError::Transport {
        url: url.to_owned(),
        message: e.without_url().to_string(),
    };
    let resp = rb
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .map_err(transport)?;
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.map_err(transport)?;
    let json: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if !(200..300).contains(&status) {
        // An endpoint may echo what it was sent (the client secret, a refresh token, the
        // code): none of it may reach a message.
        let mut sent: Vec<Secret> = client_secret.into_iter().cloned().collect();
        sent.extend(
            form.iter()
                .filter(|(k, _)| matches!(*k, "refresh_token" | "code" | "code_verifier"))
                .map(|(_, v)| Secret::new(v.clone())),
        );
        let clean = |t: &str| crate::core::redact::scrub(t, &sent).into_owned();
        let error = json["error"].as_str().map_or_else(
            || clean(&String::from_utf8_lossy(&bytes[..bytes.len().min(200)])),
            clean,
        );
        return Err(OAuthError::Endpoint {
            url: url.to_owned(),
            status,
            error,
            description: json["error_description"].as_str().map(clean),
        });
    }
    let access = json["access_token"]
        .as_str()
        .ok_or_else(|| OAuthError::NoToken {
            url: url.to_owned(),
        })?;
    Ok(TokenSet {
        access_token: Secret::new(access),
        token_type: json["token_type"].as_str().unwrap_or("Bearer").to_owned(),
        expires_in: json["expires_in"]
            .as_u64()
            .or_else(|| json["expires_in"].as_str().and_then(|s| s.parse().ok()))
            .map(|s| Duration::from_secs(s).min(MAX_LIFETIME)),
        refresh_token: json["refresh_token"].as_str().map(Secret::new),
        scope: json["scope"].as_str().map(str::to_owned),
    })
}

/// One destination's token. The cached value sits behind a plain mutex, so reading
/// and invalidating never wait on (or miss because of) a fetch; `fetching` makes
/// concurrent callers share one fetch.
#[derive(Default)]
struct SlotInner {
    cached: Mutex<Option<Cached>>,
    fetching: tokio::sync::Mutex<()>,
    /// The endpoint rejected these credentials (by fingerprint): do not ask again.
    rejected: Mutex<Option<([u8; 32], String)>>,
}

type Slot = Arc<SlotInner>;

impl SlotInner {
    fn cached(&self) -> std::sync::MutexGuard<'_, Option<Cached>> {
        self.cached
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn rejected(&self) -> std::sync::MutexGuard<'_, Option<([u8; 32], String)>> {
        self.rejected
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn fresh(&self) -> Option<Secret> {
        self.cached()
            .as_ref()
            .filter(|c| Instant::now() < c.stale_at)
            .map(|c| c.token.clone())
    }
}

struct Cached {
    token: Secret,
    /// Refresh at this moment (shortly before expiry).
    stale_at: Instant,
}

/// Access tokens per destination: reused until shortly before they expire; one
/// fetch at a time per destination, so concurrent requests share it.
#[derive(Clone, Default)]
pub struct TokenCache {
    slots: Arc<Mutex<HashMap<String, Slot>>>,
}

/// Without `expires_in`, a token is trusted for this long.
const DEFAULT_LIFETIME: Duration = Duration::from_hours(1);

fn stale_at(lifetime: Option<Duration>) -> Instant {
    let life = lifetime.unwrap_or(DEFAULT_LIFETIME).min(MAX_LIFETIME);
    // Refresh 30 s early, or 10 % of a short lifetime, whichever is smaller.
    let margin = Duration::from_secs(30).min(life / 10);
    Instant::now() + life.saturating_sub(margin)
}

impl TokenCache {
    /// How long the cached token of `key` is used before it is refreshed (`None`
    /// when there is no fresh token).
    pub fn fresh_for(&self, key: &str) -> Option<Duration> {
        let slot = self.slot(key);
        let c = slot.cached();
        c.as_ref()
            .and_then(|c| c.stale_at.checked_duration_since(Instant::now()))
    }

    fn slot(&self, key: &str) -> Slot {
        self.slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(key.to_owned())
            .or_default()
            .clone()
    }

    fn existing(&self, key: &str) -> Option<Slot> {
        self.slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(key)
            .cloned()
    }

    /// Forget the token for `key` only if it is still `rejected` (a 401 answered it).
    /// Requests rejected with an old token that was already replaced change nothing.
    pub fn invalidate_token(&self, key: &str, rejected: &Secret) {
        if let Some(slot) = self.existing(key) {
            let mut c = slot.cached();
            if c.as_ref().is_some_and(|c| c.token == *rejected) {
                *c = None;
            }
        }
    }

    /// Forget the token for `key` so the next call fetches a new one.
    pub fn invalidate(&self, key: &str) {
        if let Some(slot) = self.existing(key) {
            *slot.cached() = None;
        }
    }

    /// A valid access token for the destination's OAuth2 settings.
    pub async fn access_token(
        &self,
        key: &str,
        auth: &Auth,
        client: &reqwest::Client,
        secrets: &Secrets,
    ) -> Result<Secret, OAuthError> {
        let slot = self.slot(key);
        if let Some(t) = slot.fresh() {
            return Ok(t);
        }
        let _one_fetch = slot.fetching.lock().await;
        // Another caller may have fetched while we waited.
        if let Some(t) = slot.fresh() {
            return Ok(t);
        }
        let fp = fingerprint(auth, secrets).await?;
        if let Some((f, msg)) = &*slot.rejected()
            && *f == fp
        {
            return Err(OAuthError::Rejected(msg.clone()));
        }
        let set = match fetch(key, auth, client, secrets).await {
            Ok(set) => set,
            Err(e) if e.is_final() => {
                *slot.rejected() = Some((fp, e.to_string()));
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        let token = set.access_token.clone();
        *slot.cached() = Some(Cached {
            token: token.clone(),
            stale_at: stale_at(set.expires_in),
        });
        Ok(token)
    }

    fn store(&self, key: &str, set: &TokenSet) {
        *self.slot(key).rejected() = None;
        *self.slot(key).cached() = Some(Cached {
            token: set.access_token.clone(),
            stale_at: stale_at(set.expires_in),
        });
    }
}

/// What identifies a set of credentials: the settings and the client secret.
async fn fingerprint(auth: &Auth, secrets: &Secrets) -> Result<[u8; 32], OAuthError> {
    let name = match auth {
        Auth::Oauth2ClientCredentials { client_secret, .. } => Some(client_secret.clone()),
        Auth::Oauth2AuthorizationCode { client_secret, .. } => client_secret.clone(),
        _ => None,
    };
    let value = match name {
        Some(n) => {
            let s = secrets.clone();
            blocking(move || s.get(&n).map(Some)).await?
        }
        None => None,
    };
    let mut h = sha2::Sha256::new();
    h.update(serde_json::to_vec(auth).unwrap_or_default());
    h.update(value.as_ref().map_or("", Secret::expose).as_bytes());
    Ok(h.finalize().into())
}

/// Fetch a new token: client credentials, or the refresh-token grant for the
/// authorization code flow (the refresh token lives in the keyring).
async fn fetch(
    key: &str,
    auth: &Auth,
    client: &reqwest::Client,
    secrets: &Secrets,
) -> Result<TokenSet, OAuthError> {
    match auth {
        Auth::Oauth2ClientCredentials {
            token_url,
            client_id,
            client_secret,
            scopes,
            audience,
            client_auth,
        } => {
            let secret = {
                let (s, n) = (secrets.clone(), client_secret.clone());
                blocking(move || s.get(&n)).await?
            };
            let mut form = vec![("grant_type", "client_credentials".to_owned())];
            if !scopes.is_empty() {
                form.push(("scope", scopes.join(" ")));
            }
            if let Some(a) = audience {
                form.push(("audience", a.clone()));
            }
            token_request(
                client,
                token_url,
                form,
                *client_auth,
                client_id,
                Some(&secret),
            )
            .await
        }
        Auth::Oauth2AuthorizationCode {
            token_url,
            client_id,
            client_secret,
            scopes,
            client_auth,
            refresh_token_secret,
            ..
        } => {
            let refresh = {
                let (s, n) = (secrets.clone(), refresh_token_secret.clone());
                blocking(move || s.source().get(&n)).await?
            };
            let Some(refresh) = refresh else {
                return Err(OAuthError::NotAuthorized(key.to_owned()));
            };
            let secret = match client_secret.clone() {
                Some(n) => {
                    let s = secrets.clone();
                    Some(blocking(move || s.get(&n)).await?)
                }
                None => None,
            };
            let mut form = vec![
                ("grant_type", "refresh_token".to_owned()),
                ("refresh_token", refresh.expose().to_owned()),
            ];
            if !scopes.is_empty() {
                form.push(("scope", scopes.join(" ")));
            }
            let set = token_request(
                client,
                token_url,
                form,
                *client_auth,
                client_id,
                secret.as_ref(),
            )
            .await?;
            if let Some(rotated) = set.refresh_token.clone() {
                let (s, n) = (secrets.clone(), refresh_token_secret.clone());
                blocking(move || s.store(&n, &rotated)).await?;
            }
            Ok(set)
        }
        _ => Err(OAuthError::NotOAuth(key.to_owned())),
    }
}

/// The system browser, for the real app.
pub fn default_open_browser(url: &str) -> Result<(), String> {
    webbrowser::open(url).map_err(|e| e.to_string())
}

type CallbackTx = Arc<Mutex<Option<tokio::sync::oneshot::Sender<HashMap<String, String>>>>>;

/// Run the authorization code flow with PKCE: listen on the loopback, open the
/// authorization URL, wait for the redirect, check `state`, exchange the code, and
/// keep the refresh token in the keyring.
pub async fn authorize(
    key: &str,
    auth: &Auth,
    client: &reqwest::Client,
    secrets: &Secrets,
    cache: &TokenCache,
    open_browser: impl FnOnce(&str) -> Result<(), String>,
    timeout: Duration,
) -> Result<TokenSet, OAuthError> {
    let Auth::Oauth2AuthorizationCode {
        authorize_url,
        token_url,
        client_id,
        client_secret,
        scopes,
        client_auth,
        refresh_token_secret,
        redirect_port,
    } = auth
    else {
        return Err(OAuthError::NotOAuth(key.to_owned()));
    };
    // The refresh token must be kept: without a keyring, say so before the browser
    // step spends the user's consent and the code.
    {
        let s = secrets.clone();
        blocking(move || s.source().writable()).await?;
    }
    let client_secret = match client_secret.clone() {
        Some(n) => {
            let s = secrets.clone();
            Some(blocking(move || s.get(&n)).await?)
        }
        None => None,
    };
    // Bind first, so the redirect URI names a port that is really ours.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", *redirect_port))
        .await
        .map_err(|e| {
            OAuthError::Loopback(format!("cannot listen on 127.0.0.1:{redirect_port}: {e}"))
        })?;
    let port = listener
        .local_addr()
        .map_err(|e| OAuthError::Loopback(e.to_string()))?
        .port();
    let redirect_uri = format!("http://127.0.0.1:{port}/callback");
    let verifier = pkce_verifier();
    let state = B64URL.encode(rand::random::<[u8; 16]>());
    let mut params = vec![
        ("response_type", "code".to_owned()),
        ("client_id", client_id.clone()),
        ("redirect_uri", redirect_uri.clone()),
        ("state", state.clone()),
        ("code_challenge", pkce_challenge(&verifier)),
        ("code_challenge_method", "S256".to_owned()),
    ];
    if !scopes.is_empty() {
        params.push(("scope", scopes.join(" ")));
    }
    let query = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params.iter().map(|(k, v)| (*k, v.as_str())))
        .finish();
    let url = format!(
        "{authorize_url}{}{query}",
        if authorize_url.contains('?') {
            '&'
        } else {
            '?'
        }
    );

    let (tx, rx) = tokio::sync::oneshot::channel::<HashMap<String, String>>();
    let tx: CallbackTx = Arc::new(Mutex::new(Some(tx)));
    let expected_state = state.clone();
    let app = axum::Router::new().route(
        "/callback",
        axum::routing::get(move |axum::extract::RawQuery(q): axum::extract::RawQuery| {
            let tx = tx.clone();
            let expected_state = expected_state.clone();
            async move {
                let params: HashMap<String, String> = form_urlencoded::parse(q.unwrap_or_default().as_bytes()).into_owned().collect();
                let page = if params.get("state") != Some(&expected_state) {
                    "Hookline: this sign-in did not come from Hookline (state mismatch). You can close this window."
                } else if params.contains_key("error") {
                    "Hookline: authorization was refused. You can close this window."
                } else {
                    "Hookline is authorized. You can close this window."
                };
                if let Some(tx) = tx.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() {
                    let _ = tx.send(params);
                }
                axum::response::Html(format!("<!doctype html><title>Hookline</title><p>{page}</p>"))
            }
        }),
    );
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stop_rx.await;
            })
            .await;
    });
    let result = async {
        open_browser(&url).map_err(OAuthError::Browser)?;
        let params = tokio::time::timeout(timeout, rx)
            .await
            .map_err(|_| OAuthError::Timeout(timeout))?
            .map_err(|_| OAuthError::Loopback("the callback server stopped".into()))?;
        if params.get("state") != Some(&state) {
            return Err(OAuthError::StateMismatch);
        }
        if let Some(e) = params.get("error") {
            return Err(OAuthError::Denied(
                params
                    .get("error_description")
                    .map_or_else(|| e.clone(), |d| format!("{e}: {d}")),
            ));
        }
        let code = params
            .get("code")
            .ok_or_else(|| OAuthError::Denied("the redirect carried no code".into()))?;
        let form = vec![
            ("grant_type", "authorization_code".to_owned()),
            ("code", code.clone()),
            ("redirect_uri", redirect_uri.clone()),
            ("code_verifier", verifier.clone()),
        ];
        let set = token_request(
            client,
            token_url,
            form,
            *client_auth,
            client_id,
            client_secret.as_ref(),
        )
        .await?;
        if let Some(r) = set.refresh_token.clone() {
            let (s, n) = (secrets.clone(), refresh_token_secret.clone());
            blocking(move || s.store(&n, &r)).await?;
        }
        cache.store(key, &set);
        Ok(set)
    }
    .await;
    let _ = stop_tx.send(());
    let _ = server.await;
    result
}

/// The delivery runtime's view of OAuth2: a cache plus what fetching needs.
#[derive(Clone)]
pub struct OAuthTokens {
    pub cache: TokenCache,
    pub client: reqwest::Client,
    pub secrets: Secrets,
}

impl TokenProvider for OAuthTokens {
    fn token<'a>(&'a self, destination: &'a Destination) -> TokenFuture<'a> {
        Box::pin(async move {
            self.cache
                .access_token(
                    destination.key(),
                    &destination.auth,
                    &self.client,
                    &self.secrets,
                )
                .await
                .map_err(|e| {
                    // Keyed by id; the message names the destination as the user knows it.
                    let e = match e {
                        OAuthError::NotAuthorized(_) => {
                            OAuthError::NotAuthorized(destination.name.clone())
                        }
                        OAuthError::NotOAuth(_) => OAuthError::NotOAuth(destination.name.clone()),
                        e => e,
                    };
                    super::delivery::TokenError {
                        fatal: e.is_final(),
                        message: e.to_string(),
                    }
                })
        })
    }
    fn invalidate(&self, destination: &Destination, rejected: &Secret) {
        self.cache.invalidate_token(destination.key(), rejected);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256_matches_rfc7636_appendix_b() {
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        let v = pkce_verifier();
        assert_eq!(v.len(), 43);
        assert!(
            v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
    }

    #[test]
    fn client_secret_basic_form_encodes_before_base64() {
        // "my:client/id" → "my%3Aclient%2Fid"; "s3 cr:t" → "s3+cr%3At".
        let h = client_secret_basic("my:client/id", "s3 cr:t");
        let decoded =
            String::from_utf8(B64.decode(h.trim_start_matches("Basic ")).expect("base64"))
                .expect("utf8");
        assert_eq!(decoded, "my%3Aclient%2Fid:s3+cr%3At");
    }

    #[test]
    fn tokens_go_stale_before_they_expire() {
        let now = Instant::now();
        assert!(
            stale_at(Some(Duration::from_hours(1)))
                <= now + Duration::from_secs(3570) + Duration::from_millis(50)
        );
        assert!(
            stale_at(Some(Duration::from_secs(10)))
                <= now + Duration::from_secs(9) + Duration::from_millis(50)
        );
    }
}
