//! Request signatures over the exact body bytes: HMAC (SHA-1/SHA-256, hex/base64) and
//! Standard Webhooks (`v1,<base64 HMAC-SHA256 of "id.timestamp.body">`). The capture
//! receiver verifies with the same functions, so both sides agree by construction.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};

use super::model::{HmacAlgorithm, SignatureEncoding};

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SignError {
    #[error("Standard Webhooks secret must be base64, optionally prefixed with \"whsec_\"")]
    BadWebhookSecret,
}

/// Raw HMAC bytes of `body` under `key`.
pub fn hmac_bytes(algorithm: HmacAlgorithm, key: &[u8], body: &[u8]) -> Vec<u8> {
    // `new_from_slice` accepts keys of any length for HMAC; the error arm cannot occur.
    match algorithm {
        HmacAlgorithm::Sha1 => {
            let mut m =
                <Hmac<sha1::Sha1> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
            m.update(body);
            m.finalize().into_bytes().to_vec()
        }
        HmacAlgorithm::Sha256 => {
            let mut m =
                <Hmac<sha2::Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
            m.update(body);
            m.finalize().into_bytes().to_vec()
        }
    }
}

/// The signature header value for `body`: `prefix` + encoded HMAC.
pub fn hmac_signature(
    algorithm: HmacAlgorithm,
    encoding: SignatureEncoding,
    prefix: &str,
    key: &[u8],
    body: &[u8],
) -> String {
    let mac = hmac_bytes(algorithm, key, body);
    let enc = match encoding {
        SignatureEncoding::Hex => hex::encode(mac),
        SignatureEncoding::Base64 => B64.encode(mac),
    };
    format!("{prefix}{enc}")
}

/// Constant-time check of a received HMAC signature header (hex is compared case-insensitively).
pub fn verify_hmac(algorithm: HmacAlgorithm, key: &[u8], body: &[u8], header_value: &str) -> bool {
    let expected = hmac_bytes(algorithm, key, body);
    let v = header_value.trim();
    let v = v
        .split_once('=')
        .map_or(v, |(p, rest)| if p.starts_with("sha") { rest } else { v });
    let got = hex::decode(v).ok().or_else(|| B64.decode(v).ok());
    got.is_some_and(|g| constant_time_eq(&g, &expected))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Decode a Standard Webhooks secret (`whsec_` + base64).
pub fn webhook_secret_bytes(secret: &str) -> Result<Vec<u8>, SignError> {
    let s = secret.strip_prefix("whsec_").unwrap_or(secret);
    B64.decode(s).map_err(|_| SignError::BadWebhookSecret)
}

/// `v1,<base64>` over `"{id}.{timestamp}.{body}"`.
pub fn standard_webhooks_signature(
    secret: &str,
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, SignError> {
    let key = webhook_secret_bytes(secret)?;
    let mut content = Vec::with_capacity(id.len() + 24 + body.len());
    content.extend_from_slice(id.as_bytes());
    content.push(b'.');
    content.extend_from_slice(timestamp.to_string().as_bytes());
    content.push(b'.');
    content.extend_from_slice(body);
    Ok(format!(
        "v1,{}",
        B64.encode(hmac_bytes(HmacAlgorithm::Sha256, &key, &content))
    ))
}

/// Check a `webhook-signature` header (space-separated list of `v1,<sig>`) against the content.
pub fn verify_standard_webhooks(
    secret: &str,
    id: &str,
    timestamp: i64,
    body: &[u8],
    header_value: &str,
) -> bool {
    let Ok(expected) = standard_webhooks_signature(secret, id, timestamp, body) else {
        return false;
    };
    header_value
        .split(' ')
        .any(|s| constant_time_eq(s.as_bytes(), expected.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig(alg: HmacAlgorithm, key: &[u8], data: &[u8]) -> String {
        hmac_signature(alg, SignatureEncoding::Hex, "", key, data)
    }

    #[test]
    fn hmac_sha1_matches_rfc2202_vectors() {
        assert_eq!(
            sig(HmacAlgorithm::Sha1, &[0x0b; 20], b"Hi There"),
            "b617318655057264e28bc0b6fb378c8ef146be00"
        );
        assert_eq!(
            sig(
                HmacAlgorithm::Sha1,
                b"Jefe",
                b"what do ya want for nothing?"
            ),
            "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
        );
        assert_eq!(
            sig(
                HmacAlgorithm::Sha1,
                &[0xaa; 80],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            ),
            "aa4ae5e15272d00e95705637ce8a3b55ed402112"
        );
    }

    #[test]
    fn hmac_sha256_matches_rfc4231_vectors() {
        assert_eq!(
            sig(HmacAlgorithm::Sha256, &[0x0b; 20], b"Hi There"),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
        assert_eq!(
            sig(
                HmacAlgorithm::Sha256,
                b"Jefe",
                b"what do ya want for nothing?"
            ),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn hmac_base64_encoding_and_prefix() {
        let s = hmac_signature(
            HmacAlgorithm::Sha256,
            SignatureEncoding::Base64,
            "sha256=",
            b"Jefe",
            b"what do ya want for nothing?",
        );
        assert_eq!(s, "sha256=W9zBRr9gdU5qBCQmCJV1x1oAPwidJzmDnexYuWTsOEM=");
        assert!(verify_hmac(
            HmacAlgorithm::Sha256,
            b"Jefe",
            b"what do ya want for nothing?",
            &s
        ));
        assert!(!verify_hmac(
            HmacAlgorithm::Sha256,
            b"Jefe",
            b"tampered",
            &s
        ));
    }

    #[test]
    fn standard_webhooks_matches_the_specs_example() {
        // From the Standard Webhooks reference libraries' test suite.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
        let ts = 1_614_265_330;
        let body = br#"{"test": 2432232314}"#;
        let s = standard_webhooks_signature(secret, id, ts, body).expect("valid secret");
        assert_eq!(s, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert!(verify_standard_webhooks(
            secret,
            id,
            ts,
            body,
            &format!("v1,bogus {s}")
        ));
        assert!(!verify_standard_webhooks(secret, id, ts + 1, body, &s));
    }

    #[test]
    fn standard_webhooks_rejects_a_secret_that_is_not_base64() {
        assert_eq!(
            standard_webhooks_signature("whsec_%%%", "id", 1, b""),
            Err(SignError::BadWebhookSecret)
        );
    }
}
