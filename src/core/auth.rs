//! Auth headers and query parameters derived from secrets: Basic (RFC 7617), Bearer,
//! a raw header, an API key, and JWT (HS256/384/512 per RFC 7515, RS256, ES256).
//! `OAuth2` tokens are fetched by the runtime; here they are a placeholder the runtime fills.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD as B64URL};
use hmac::{Hmac, Mac};
use serde_json::{Map, Value};

use super::model::{Auth, JwtAlgorithm};
use super::secret::{Secret, SecretError, Secrets};

/// The header value shown in previews before the runtime has fetched an `OAuth2` token.
pub const OAUTH2_PLACEHOLDER: &str = "Bearer <OAuth2 access token, fetched at send time>";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("{field}: {source}")]
    Secret {
        field: &'static str,
        source: SecretError,
    },
    #[error("auth.key_secret: {0}")]
    Key(String),
    /// A secret's value that cannot be a header value. Names the secret, never its value.
    #[error(
        "{field}: the value of secret \"{name}\" contains a control character (CR, LF or another), so it cannot be sent in the \"{header}\" header"
    )]
    NotAHeaderValue {
        field: &'static str,
        name: String,
        header: String,
    },
}

/// A secret going into a header as is: no control characters (an environment variable
/// set from a file often ends in a newline, and CR LF would split the header).
fn header_safe(field: &'static str, name: &str, header: &str, s: &Secret) -> Result<(), AuthError> {
    if s.expose().chars().any(char::is_control) {
        return Err(AuthError::NotAHeaderValue {
            field,
            name: name.to_owned(),
            header: header.to_owned(),
        });
    }
    Ok(())
}

/// What auth adds to a request.
#[derive(Debug, Default)]
pub struct AuthParts {
    pub headers: Vec<(String, String)>,
    pub query: Vec<(String, String)>,
    /// Secrets used, so previews can redact them.
    pub used: Vec<Secret>,
}

/// `Basic base64(user:pass)` per RFC 7617 (UTF-8).
pub fn basic_header(username: &str, password: &str) -> String {
    format!("Basic {}", B64.encode(format!("{username}:{password}")))
}

fn get(secrets: &Secrets, field: &'static str, name: &str) -> Result<Secret, AuthError> {
    secrets
        .get(name)
        .map_err(|source| AuthError::Secret { field, source })
}

/// Auth for one attempt at time `now` (unix seconds). `claims` are the destination's
/// rendered JWT claim templates (`iat` and `exp` are added here, so each attempt gets fresh ones).
pub fn apply(
    auth: &Auth,
    secrets: &Secrets,
    claims: Option<&Map<String, Value>>,
    now: i64,
) -> Result<AuthParts, AuthError> {
    let mut p = AuthParts::default();
    match auth {
        Auth::None => {}
        Auth::Basic {
            username,
            password_secret,
        } => {
            let pw = get(secrets, "auth.password_secret", password_secret)?;
            p.headers
                .push(("Authorization".into(), basic_header(username, pw.expose())));
            p.used.push(pw);
        }
        Auth::Bearer { token_secret } => {
            let t = get(secrets, "auth.token_secret", token_secret)?;
            header_safe("auth.token_secret", token_secret, "Authorization", &t)?;
            p.headers
                .push(("Authorization".into(), format!("Bearer {}", t.expose())));
            p.used.push(t);
        }
        Auth::Header { name, value_secret } => {
            let v = get(secrets, "auth.value_secret", value_secret)?;
            header_safe("auth.value_secret", value_secret, name, &v)?;
            p.headers.push((name.clone(), v.expose().to_owned()));
            p.used.push(v);
        }
        Auth::ApiKey {
            header,
            query,
            value_secret,
        } => {
            let v = get(secrets, "auth.value_secret", value_secret)?;
            if let Some(q) = query {
                p.query.push((q.clone(), v.expose().to_owned()));
            }
            if header.is_some() || query.is_none() {
                let h = header.clone().unwrap_or_else(|| "X-Api-Key".into());
                header_safe("auth.value_secret", value_secret, &h, &v)?;
                p.headers.push((h, v.expose().to_owned()));
            }
            p.used.push(v);
        }
        Auth::Jwt {
            algorithm,
            key_secret,
            ttl_s,
            header,
            prefix,
            ..
        } => {
            let key = get(secrets, "auth.key_secret", key_secret)?;
            let mut c = claims.cloned().unwrap_or_default();
            c.insert("iat".into(), Value::from(now));
            c.insert(
                "exp".into(),
                Value::from(now.saturating_add(i64::try_from(*ttl_s).unwrap_or(i64::MAX))),
            );
            let token = jwt(*algorithm, key.expose().as_bytes(), &Value::Object(c))?;
            p.headers.push((header.clone(), format!("{prefix}{token}")));
            p.used.push(key);
            p.used.push(Secret::new(token));
        }
        Auth::Oauth2ClientCredentials { .. } | Auth::Oauth2AuthorizationCode { .. } => {
            p.headers
                .push(("Authorization".into(), OAUTH2_PLACEHOLDER.into()));
        }
    }
    Ok(p)
}

/// A compact JWS: `b64url(header).b64url(claims).b64url(signature)`.
pub fn jwt(alg: JwtAlgorithm, key: &[u8], claims: &Value) -> Result<String, AuthError> {
    let name = match alg {
        JwtAlgorithm::HS256 => "HS256",
        JwtAlgorithm::HS384 => "HS384",
        JwtAlgorithm::HS512 => "HS512",
        JwtAlgorithm::RS256 => "RS256",
        JwtAlgorithm::ES256 => "ES256",
    };
    let header = format!(r#"{{"alg":"{name}","typ":"JWT"}}"#);
    let input = format!(
        "{}.{}",
        B64URL.encode(header),
        B64URL.encode(claims.to_string())
    );
    let sig = jws_sign(alg, key, input.as_bytes())?;
    Ok(format!("{input}.{sig}"))
}

/// The base64url signature over a JWS signing input.
pub fn jws_sign(alg: JwtAlgorithm, key: &[u8], input: &[u8]) -> Result<String, AuthError> {
    fn mac<M: Mac + hmac::digest::KeyInit>(key: &[u8], input: &[u8]) -> Vec<u8> {
        // HMAC takes keys of any length; the error arm cannot occur.
        let mut m =
            <M as hmac::digest::KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
        m.update(input);
        m.finalize().into_bytes().to_vec()
    }
    let bytes = match alg {
        JwtAlgorithm::HS256 => mac::<Hmac<sha2::Sha256>>(key, input),
        JwtAlgorithm::HS384 => mac::<Hmac<sha2::Sha384>>(key, input),
        JwtAlgorithm::HS512 => mac::<Hmac<sha2::Sha512>>(key, input),
        JwtAlgorithm::RS256 | JwtAlgorithm::ES256 => {
            let (k, a) = if alg == JwtAlgorithm::RS256 {
                (
                    jsonwebtoken::EncodingKey::from_rsa_pem(key),
                    jsonwebtoken::Algorithm::RS256,
                )
            } else {
                (
                    jsonwebtoken::EncodingKey::from_ec_pem(key),
                    jsonwebtoken::Algorithm::ES256,
                )
            };
            let k = k.map_err(|e| {
                AuthError::Key(format!("not a valid PEM private key for {a:?}: {e}"))
            })?;
            return jsonwebtoken::crypto::sign(input, &k, a)
                .map_err(|e| AuthError::Key(format!("{a:?} signing failed: {e}")));
        }
    };
    Ok(B64URL.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth_matches_rfc7617_example() {
        // RFC 7617 §2: Aladdin / open sesame.
        assert_eq!(
            basic_header("Aladdin", "open sesame"),
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
        // RFC 7617 §2.1: UTF-8 for "test" / "123£".
        assert_eq!(basic_header("test", "123\u{a3}"), "Basic dGVzdDoxMjPCow==");
    }

    #[test]
    fn jws_hs256_matches_rfc7515_appendix_a1() {
        let key = B64URL.decode("AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow").expect("key");
        let input = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ";
        assert_eq!(
            jws_sign(JwtAlgorithm::HS256, &key, input.as_bytes()).expect("signs"),
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
        );
    }

    #[test]
    fn jwt_adds_iat_and_exp_and_verifies_with_jsonwebtoken() {
        let secrets = Secrets::memory(&[("k", "a-very-secret-key-of-32-bytes!!!")]);
        let auth = Auth::Jwt {
            algorithm: JwtAlgorithm::HS512,
            key_secret: "k".into(),
            claims: indexmap::IndexMap::new(),
            ttl_s: 60,
            header: "Authorization".into(),
            prefix: "Bearer ".into(),
        };
        let mut claims = Map::new();
        claims.insert("sub".into(), Value::from("u1"));
        let p = apply(&auth, &secrets, Some(&claims), 1_700_000_000).expect("jwt");
        let token = p.headers[0].1.strip_prefix("Bearer ").expect("prefix");
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS512);
        v.validate_exp = false;
        let data = jsonwebtoken::decode::<Value>(
            token,
            &jsonwebtoken::DecodingKey::from_secret(b"a-very-secret-key-of-32-bytes!!!"),
            &v,
        )
        .expect("valid");
        assert_eq!(data.claims["sub"], "u1");
        assert_eq!(data.claims["iat"], 1_700_000_000);
        assert_eq!(data.claims["exp"], 1_700_000_060);
    }

    #[test]
    fn jwt_with_a_bad_pem_says_so() {
        let e = jws_sign(JwtAlgorithm::RS256, b"not a pem", b"x").expect_err("bad key");
        assert!(e.to_string().contains("PEM"), "{e}");
    }

    #[test]
    fn api_key_defaults_to_x_api_key_header_or_goes_to_query() {
        let s = Secrets::memory(&[("k", "abc")]);
        let h = apply(
            &Auth::ApiKey {
                header: None,
                query: None,
                value_secret: "k".into(),
            },
            &s,
            None,
            0,
        )
        .expect("ok");
        assert_eq!(h.headers, vec![("X-Api-Key".to_owned(), "abc".to_owned())]);
        let q = apply(
            &Auth::ApiKey {
                header: None,
                query: Some("api_key".into()),
                value_secret: "k".into(),
            },
            &s,
            None,
            0,
        )
        .expect("ok");
        assert!(q.headers.is_empty());
        assert_eq!(q.query, vec![("api_key".to_owned(), "abc".to_owned())]);
    }

    #[test]
    fn missing_auth_secret_names_the_field() {
        let e = apply(
            &Auth::Bearer {
                token_secret: "t".into(),
            },
            &Secrets::memory(&[]),
            None,
            0,
        )
        .expect_err("missing");
        assert!(
            e.to_string()
                .starts_with("auth.token_secret: secret `t` is not set"),
            "{e}"
        );
    }
}
