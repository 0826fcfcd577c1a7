//! OAuth2 against a real authorization server on 127.0.0.1 that checks client
//! authentication (RFC 6749 §2.3.1 encoding), PKCE (RFC 7636) and redirect URIs;
//! the test plays the browser. Also: refresh-on-401 during delivery.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use base64::Engine as _;
use hookline::core::model::{Auth, ClientAuth, Destination};
use hookline::core::secret::{MemorySecrets, SecretSource, Secrets};
use hookline::runtime::delivery::OutcomeKind;
use hookline::runtime::oauth2::{TokenCache, authorize, pkce_challenge};
use serde_json::json;

const CLIENT_ID: &str = "my:client/id";
const CLIENT_SECRET: &str = "s3:cr/et +x";

#[derive(Default)]
struct As {
    token_requests: AtomicUsize,
    expires_in: Mutex<Option<u64>>,
    /// code → (challenge, `redirect_uri`)
    codes: Mutex<HashMap<String, (String, String)>>,
    refresh_tokens: Mutex<Vec<String>>,
    last_form: Mutex<HashMap<String, String>>,
}

/// A JSON response (the receiver build of axum has no `json` feature).
#[allow(non_snake_case)]
#[allow(clippy::needless_pass_by_value)] // called with json!(…) temporaries
fn J(v: serde_json::Value) -> Response {
    ([("content-type", "application/json")], v.to_string()).into_response()
}

fn parse(q: &str) -> HashMap<String, String> {
    form_urlencoded::parse(q.as_bytes()).into_owned().collect()
}

fn decode_part(s: &str) -> String {
    form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// The client's credentials, from Basic (form-urldecoding each part) or the form.
fn client_ok(headers: &HeaderMap, form: &HashMap<String, String>) -> bool {
    if let Some(h) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
    {
        let raw = String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(h)
                .unwrap_or_default(),
        )
        .unwrap_or_default();
        let Some((id, secret)) = raw.split_once(':') else {
            return false;
        };
        return decode_part(id) == CLIENT_ID && decode_part(secret) == CLIENT_SECRET;
    }
    form.get("client_id").map(String::as_str) == Some(CLIENT_ID)
        && form.get("client_secret").map(String::as_str) == Some(CLIENT_SECRET)
}

async fn token(State(st): State<Arc<As>>, headers: HeaderMap, body: String) -> Response {
    let form = parse(&body);
    st.last_form.lock().expect("lock").clone_from(&form);
    let n = st.token_requests.fetch_add(1, Ordering::SeqCst) + 1;
    let public = form.get("client_id").map(String::as_str) == Some(CLIENT_ID)
        && !form.contains_key("client_secret")
        && headers.get("authorization").is_none();
    if !public && !client_ok(&headers, &form) {
        return (
            StatusCode::UNAUTHORIZED,
            J(json!({"error": "invalid_client", "error_description": "bad client credentials"})),
        )
            .into_response();
    }
    let expires = *st.expires_in.lock().expect("lock");
    match form.get("grant_type").map(String::as_str) {
        Some("client_credentials") => J(json!({"access_token": format!("tok-{n}"), "token_type": "Bearer", "expires_in": expires})).into_response(),
        Some("authorization_code") => {
            let Some((challenge, redirect)) = form.get("code").and_then(|c| st.codes.lock().expect("lock").remove(c)) else {
                return (StatusCode::BAD_REQUEST, J(json!({"error": "invalid_grant"}))).into_response();
            };
            let verifier = form.get("code_verifier").cloned().unwrap_or_default();
            if pkce_challenge(&verifier) != challenge || form.get("redirect_uri") != Some(&redirect) {
                return (StatusCode::BAD_REQUEST, J(json!({"error": "invalid_grant", "error_description": "PKCE or redirect_uri mismatch"}))).into_response();
            }
            st.refresh_tokens.lock().expect("lock").push("refresh-1".into());
            J(json!({"access_token": format!("code-tok-{n}"), "token_type": "Bearer", "expires_in": 3600, "refresh_token": "refresh-1"})).into_response()
        }
        Some("refresh_token") => {
            if !st.refresh_tokens.lock().expect("lock").contains(form.get("refresh_token").unwrap_or(&String::new())) {
                return (StatusCode::BAD_REQUEST, J(json!({"error": "invalid_grant"}))).into_response();
            }
            J(json!({"access_token": format!("refreshed-tok-{n}"), "token_type": "Bearer", "expires_in": 3600})).into_response()
        }
        _ => (StatusCode::BAD_REQUEST, J(json!({"error": "unsupported_grant_type"}))).into_response(),
    }
}

async fn authorize_endpoint(State(st): State<Arc<As>>, RawQuery(q): RawQuery) -> Response {
    let p = parse(&q.unwrap_or_default());
    let redirect = p.get("redirect_uri").cloned().unwrap_or_default();
    let ok = p.get("response_type").map(String::as_str) == Some("code")
        && p.get("client_id").map(String::as_str) == Some(CLIENT_ID)
        && redirect.starts_with("http://127.0.0.1:")
        && redirect.ends_with("/callback")
        && p.get("code_challenge_method").map(String::as_str) == Some("S256");
    if !ok {
        return (StatusCode::BAD_REQUEST, "bad authorization request").into_response();
    }
    let state = p.get("state").cloned().unwrap_or_default();
    if p.get("scope").map(String::as_str) == Some("deny") {
        return (
            StatusCode::FOUND,
            [(
                "Location",
                format!("{redirect}?error=access_denied&state={state}"),
            )],
        )
            .into_response();
    }
    st.codes.lock().expect("lock").insert(
        "XYZ".into(),
        (
            p.get("code_challenge").cloned().unwrap_or_default(),
            redirect.clone(),
        ),
    );
    let state = if p.get("scope").map(String::as_str) == Some("forge") {
        "forged".into()
    } else {
        state
    };
    (
        StatusCode::FOUND,
        [("Location", format!("{redirect}?code=XYZ&state={state}"))],
    )
        .into_response()
}

fn auth_server() -> (common::Server, Arc<As>) {
    let st = Arc::new(As::default());
    let srv = common::serve(
        Router::new()
            .route("/token", post(token))
            .route("/authorize", get(authorize_endpoint))
            .with_state(st.clone()),
    );
    (srv, st)
}

fn cc(srv: &common::Server, client_auth: ClientAuth) -> Auth {
    Auth::Oauth2ClientCredentials {
        token_url: srv.url("/token"),
        client_id: CLIENT_ID.into(),
        client_secret: "cs".into(),
        scopes: vec!["events:write".into(), "read".into()],
        audience: Some("https://api.example".into()),
        client_auth,
    }
}

fn secrets() -> Secrets {
    Secrets::memory(&[("cs", CLIENT_SECRET)])
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

#[tokio::test]
async fn client_credentials_with_basic_auth_are_form_encoded_and_cached() {
    let (srv, st) = auth_server();
    let cache = TokenCache::default();
    let auth = cc(&srv, ClientAuth::ClientSecretBasic);
    let t1 = cache
        .access_token("d", &auth, &client(), &secrets())
        .await
        .expect("token");
    let t2 = cache
        .access_token("d", &auth, &client(), &secrets())
        .await
        .expect("token");
    assert_eq!((t1.expose(), t2.expose()), ("tok-1", "tok-1"));
    assert_eq!(
        st.token_requests.load(Ordering::SeqCst),
        1,
        "the second call used the cache"
    );
    let form = st.last_form.lock().expect("lock").clone();
    assert_eq!(
        form.get("scope").map(String::as_str),
        Some("events:write read")
    );
    assert_eq!(
        form.get("audience").map(String::as_str),
        Some("https://api.example")
    );
    cache.invalidate("d");
    assert_eq!(
        cache
            .access_token("d", &auth, &client(), &secrets())
            .await
            .expect("token")
            .expose(),
        "tok-2"
    );
}

#[tokio::test]
async fn a_token_about_to_expire_is_fetched_again() {
    let (srv, st) = auth_server();
    *st.expires_in.lock().expect("lock") = Some(1);
    let cache = TokenCache::default();
    let auth = cc(&srv, ClientAuth::ClientSecretBasic);
    cache
        .access_token("d", &auth, &client(), &secrets())
        .await
        .expect("token");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        cache
            .access_token("d", &auth, &client(), &secrets())
            .await
            .expect("token")
            .expose(),
        "tok-2"
    );
}

#[tokio::test]
async fn client_secret_post_sends_the_credentials_in_the_form() {
    let (srv, st) = auth_server();
    let t = TokenCache::default()
        .access_token(
            "d",
            &cc(&srv, ClientAuth::ClientSecretPost),
            &client(),
            &secrets(),
        )
        .await
        .expect("token");
    assert_eq!(t.expose(), "tok-1");
    assert_eq!(
        st.last_form
            .lock()
            .expect("lock")
            .get("client_secret")
            .map(String::as_str),
        Some(CLIENT_SECRET)
    );
}

#[tokio::test]
async fn a_token_endpoint_error_names_status_and_code_but_no_secret() {
    let (srv, _) = auth_server();
    let wrong = Secrets::memory(&[("cs", "wrong-secret-value")]);
    let e = TokenCache::default()
        .access_token(
            "d",
            &cc(&srv, ClientAuth::ClientSecretBasic),
            &client(),
            &wrong,
        )
        .await
        .expect_err("rejected")
        .to_string();
    assert!(
        e.contains("401") && e.contains("invalid_client") && e.contains("bad client credentials"),
        "{e}"
    );
    assert!(!e.contains("wrong-secret-value"), "{e}");
}

fn code_auth(srv: &common::Server, scope: &str) -> Auth {
    Auth::Oauth2AuthorizationCode {
        authorize_url: srv.url("/authorize"),
        token_url: srv.url("/token"),
        client_id: CLIENT_ID.into(),
        client_secret: Some("cs".into()),
        scopes: vec![scope.into()],
        client_auth: ClientAuth::ClientSecretBasic,
        refresh_token_secret: "d-refresh".into(),
        redirect_port: 0,
    }
}

/// Plays the browser: follow the authorization URL's redirect to the loopback callback.
#[allow(clippy::unnecessary_wraps)] // the open_browser signature
fn browser(url: &str) -> Result<(), String> {
    let url = url.to_owned();
    tokio::spawn(async move {
        let c = client();
        let r = c.get(&url).send().await.expect("authorize");
        let loc = r
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .expect("redirect")
            .to_owned();
        c.get(&loc).send().await.expect("callback");
    });
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_code_with_pkce_end_to_end_then_refresh() {
    let (srv, _) = auth_server();
    let store = Arc::new(MemorySecrets::with(&[("cs", CLIENT_SECRET)]));
    let secrets = Secrets::new(store.clone());
    let cache = TokenCache::default();
    let auth = code_auth(&srv, "events");
    // Not authorized yet.
    let e = cache
        .access_token("d", &auth, &client(), &secrets)
        .await
        .expect_err("no refresh token");
    assert!(e.to_string().contains("not authorized yet"), "{e}");
    let set = authorize(
        "d",
        &auth,
        &client(),
        &secrets,
        &cache,
        browser,
        Duration::from_secs(10),
    )
    .await
    .expect("authorized");
    assert!(set.access_token.expose().starts_with("code-tok-"));
    assert_eq!(
        store
            .get("d-refresh")
            .expect("store")
            .map(|s| s.expose().to_owned()),
        Some("refresh-1".into()),
        "refresh token kept"
    );
    // The cache holds the new access token.
    assert_eq!(
        cache
            .access_token("d", &auth, &client(), &secrets)
            .await
            .expect("cached")
            .expose(),
        set.access_token.expose()
    );
    // A fresh cache renews with the refresh token.
    let renewed = TokenCache::default()
        .access_token("d", &auth, &client(), &secrets)
        .await
        .expect("refreshed");
    assert!(
        renewed.expose().starts_with("refreshed-tok-"),
        "{renewed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_state_is_rejected() {
    let (srv, _) = auth_server();
    let e = authorize(
        "d",
        &code_auth(&srv, "forge"),
        &client(),
        &secrets(),
        &TokenCache::default(),
        browser,
        Duration::from_secs(10),
    )
    .await
    .expect_err("state");
    assert!(e.to_string().contains("state"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_authorization_is_reported() {
    let (srv, _) = auth_server();
    let e = authorize(
        "d",
        &code_auth(&srv, "deny"),
        &client(),
        &secrets(),
        &TokenCache::default(),
        browser,
        Duration::from_secs(10),
    )
    .await
    .expect_err("denied");
    assert!(e.to_string().contains("access_denied"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_callback_times_out() {
    let (srv, _) = auth_server();
    let e = authorize(
        "d",
        &code_auth(&srv, "x"),
        &client(),
        &secrets(),
        &TokenCache::default(),
        |_| Ok(()),
        Duration::from_millis(300),
    )
    .await
    .expect_err("timeout");
    assert!(e.to_string().contains("no authorization arrived"), "{e}");
}

#[test]
fn delivery_refreshes_the_token_once_on_401_and_retries() {
    let (auth_srv, st) = auth_server();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let api = common::serve(Router::new().route(
        "/hook",
        any(move |headers: HeaderMap| async move {
            let a = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            s2.lock().expect("lock").push(a.clone());
            if a == "Bearer tok-1" {
                StatusCode::UNAUTHORIZED
            } else {
                StatusCode::OK
            }
        }),
    ));
    let mut d = common::fast(Destination::new("api", api.url("/hook")));
    d.auth = cc(&auth_srv, ClientAuth::ClientSecretBasic);
    let run = common::run_job(
        d,
        vec![json!({"type": "track"})],
        secrets(),
        Duration::from_secs(20),
    );
    let o = &run.outcomes[0];
    assert_eq!(o.outcome, OutcomeKind::Delivered, "{o:?}");
    assert_eq!(
        *seen.lock().expect("lock"),
        vec!["Bearer tok-1".to_owned(), "Bearer tok-2".to_owned()]
    );
    assert_eq!(st.token_requests.load(Ordering::SeqCst), 2);
}

#[test]
fn concurrent_401s_share_one_new_token() {
    let (auth_srv, st) = auth_server();
    let rejected = Arc::new(AtomicUsize::new(0));
    let api = common::serve(Router::new().route(
        "/hook",
        any(move |headers: HeaderMap| {
            let rejected = rejected.clone();
            async move {
                if headers.get("authorization").and_then(|v| v.to_str().ok())
                    == Some("Bearer tok-1")
                {
                    // Stagger the rejections: later ones arrive after the token was already renewed.
                    let n = rejected.fetch_add(1, Ordering::SeqCst) as u64;
                    tokio::time::sleep(Duration::from_millis(40 * n)).await;
                    StatusCode::UNAUTHORIZED
                } else {
                    StatusCode::OK
                }
            }
        }),
    ));
    let mut d = common::fast(Destination::new("api", api.url("/hook")));
    d.auth = cc(&auth_srv, ClientAuth::ClientSecretBasic);
    d.delivery.concurrency = 8;
    let events = (0..8).map(|i| json!({"type": "track", "i": i})).collect();
    let run = common::run_job(d, events, secrets(), Duration::from_secs(20));
    assert_eq!(run.stats.expect("finished").delivered, 8);
    assert_eq!(
        st.token_requests.load(Ordering::SeqCst),
        2,
        "one token, then one refresh shared by all eight"
    );
}

#[test]
fn a_rejected_client_is_final_the_job_stops_asking_and_names_the_endpoint() {
    let (srv, st) = auth_server();
    let api = common::serve(Router::new().route("/hook", any(|| async { "ok" })));
    let mut d = common::fast(Destination::new("api", api.url("/hook")));
    d.auth = cc(&srv, ClientAuth::ClientSecretBasic);
    d.delivery.max_attempts = 3;
    let events: Vec<_> = (0..200).map(|i| json!({"type": "track", "i": i})).collect();
    let run = common::run_job(
        d,
        events,
        Secrets::memory(&[("cs", "wrong-secret-value")]),
        Duration::from_secs(30),
    );
    assert_eq!(run.outcomes.len(), 200);
    assert!(
        run.outcomes
            .iter()
            .all(|o| o.outcome == OutcomeKind::Failed && o.attempts == 1),
        "{:?}",
        run.outcomes.first()
    );
    let e = run.outcomes[0].error.clone().unwrap_or_default();
    assert!(
        e.contains(&srv.url("/token")) && e.contains("invalid_client"),
        "{e}"
    );
    assert!(!e.contains("wrong-secret-value"), "{e}");
    assert_eq!(st.token_requests.load(Ordering::SeqCst), 1, "asked once");
}

#[tokio::test]
async fn an_endpoint_that_echoes_the_credentials_never_puts_them_in_a_message() {
    let srv = common::serve(Router::new().route(
        "/token",
        post(|body: String| async move {
            let form = parse(&body);
            (
                StatusCode::BAD_REQUEST,
                J(json!({
                    "error": format!("invalid_request {body}"),
                    "error_description": format!("you sent {} and {}", form.get("client_secret").cloned().unwrap_or_default(), body),
                })),
            )
        }),
    ));
    let e = TokenCache::default()
        .access_token(
            "d",
            &cc(&srv, ClientAuth::ClientSecretPost),
            &client(),
            &secrets(),
        )
        .await
        .expect_err("rejected")
        .to_string();
    let encoded: String = form_urlencoded::byte_serialize(CLIENT_SECRET.as_bytes()).collect();
    assert!(!e.contains(CLIENT_SECRET) && !e.contains(&encoded), "{e}");
    assert!(e.contains("***"), "{e}");
}

#[tokio::test]
async fn an_absurd_expires_in_is_capped_not_a_panic() {
    let (srv, st) = auth_server();
    *st.expires_in.lock().expect("lock") = Some(u64::MAX);
    let cache = TokenCache::default();
    let auth = cc(&srv, ClientAuth::ClientSecretBasic);
    for _ in 0..2 {
        cache
            .access_token("d", &auth, &client(), &secrets())
            .await
            .expect("token");
    }
    assert_eq!(st.token_requests.load(Ordering::SeqCst), 1, "cached");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorize_without_a_keyring_says_so_before_opening_the_browser() {
    let (srv, st) = auth_server();
    // Only the environment: nowhere to keep a refresh token.
    let env_only = Secrets::new(Arc::new(hookline::core::secret::EnvSecrets));
    let opened = Arc::new(AtomicUsize::new(0));
    let o = opened.clone();
    let e = authorize(
        "d",
        &code_auth(&srv, "x"),
        &client(),
        &env_only,
        &TokenCache::default(),
        move |_| {
            o.fetch_add(1, Ordering::SeqCst);
            Ok(())
        },
        Duration::from_secs(5),
    )
    .await
    .expect_err("no keyring");
    let msg = e.to_string();
    assert!(msg.starts_with("no keyring available"), "{msg}");
    assert_eq!(msg.matches("no keyring available").count(), 1, "{msg}");
    assert_eq!(
        opened.load(Ordering::SeqCst),
        0,
        "the browser was not opened"
    );
    assert_eq!(st.token_requests.load(Ordering::SeqCst), 0);
}
