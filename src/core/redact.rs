//! Redaction that follows a secret wherever it lands, however it was transformed.
//!
//! Templates can do anything to a secret (`| upper`, `| base64`, `| sha256`, slices,
//! percent- or JSON-escaping on the way into a URL or body), so looking for the secret's
//! text in the output cannot work, and a short secret (`"1"`) would blank every `1`.
//! Instead the request is rendered twice more with *sentinel* secrets — digits `0-4`
//! only, then `5-9` only — and every character of the real output that is not matched
//! in both sentinel renders is derived from a secret: it is shown as `***`. Positions,
//! not substrings: text that merely looks like the secret stays visible.
//!
//! For text that does not come from our own templates (a response body that echoes a
//! secret, an OAuth2 `error_description`), [`scrub`] replaces the secret's usual
//! encodings by substring.

use std::borrow::Cow;
use std::time::{Duration, Instant};

use base64::Engine as _;
use sha2::Digest as _;
use similar::{Algorithm, DiffOp};

use super::secret::{Secret, SecretError, SecretSource};

/// What a redacted span shows.
pub const REDACTED: &str = "***";

/// A stand-in for secret `name` in family 0 (digits 0–4) or 1 (digits 5–9). The two
/// families share no character, so a real character matched in both renders cannot be
/// part of a (raw) secret.
pub fn sentinel(name: &str, family: u8) -> String {
    let digest = sha2::Sha256::digest(format!("hookline-sentinel:{name}").as_bytes());
    let base = if family == 0 { b'0' } else { b'5' };
    // 24 digits: long enough that transforms of it rarely coincide with the real output.
    digest
        .iter()
        .take(24)
        .map(|b| char::from(base + b % 5))
        .collect()
}

/// A secret source that answers every name with its sentinel.
#[derive(Debug, Clone, Copy)]
pub struct SentinelSecrets(pub u8);

impl SecretSource for SentinelSecrets {
    fn get(&self, name: &str) -> Result<Option<Secret>, SecretError> {
        Ok(Some(Secret::new(sentinel(name, self.0))))
    }
    fn set(&self, name: &str, _: &Secret) -> Result<(), SecretError> {
        Err(SecretError::Store {
            name: name.to_owned(),
            message: "sentinel secrets are read-only".into(),
        })
    }
    fn delete(&self, name: &str) -> Result<(), SecretError> {
        self.set(name, &Secret::new(String::new()))
    }
    fn describe(&self) -> String {
        "sentinels".into()
    }
}

/// Unmatched runs closer than this are merged, so a character that a transform of a
/// sentinel happens to share with the real output does not peek through.
const GAP: usize = 4;
/// Diffing gives up on minimality after this long (the result is then coarser: more
/// is hidden, never less).
const DIFF_BUDGET: Duration = Duration::from_millis(40);

/// `real` with every character that differs from the sentinel renders shown as `***`.
/// `None` for an alternative means its render failed: nothing of `real` is trusted.
pub fn by_position(real: &str, alts: &[Option<&str>]) -> String {
    if alts.iter().all(|a| *a == Some(real)) {
        return real.to_owned();
    }
    if alts.iter().any(Option::is_none) {
        return REDACTED.to_owned();
    }
    let chars: Vec<char> = real.chars().collect();
    let mut hidden = vec![false; chars.len()];
    let deadline = Instant::now() + DIFF_BUDGET;
    for alt in alts.iter().flatten() {
        let other: Vec<char> = alt.chars().collect();
        let ops = similar::capture_diff_deadline(
            Algorithm::Myers,
            &chars,
            0..chars.len(),
            &other,
            0..other.len(),
            Some(deadline),
        );
        for op in ops {
            match op {
                DiffOp::Equal { .. } | DiffOp::Insert { .. } => {}
                DiffOp::Delete {
                    old_index, old_len, ..
                }
                | DiffOp::Replace {
                    old_index, old_len, ..
                } => hidden[old_index..old_index + old_len].fill(true),
            }
        }
    }
    // Close small gaps between hidden runs.
    let mut last_hidden: Option<usize> = None;
    for i in 0..hidden.len() {
        if hidden[i] {
            if let Some(j) = last_hidden
                && i - j > 1
                && i - j <= GAP
            {
                hidden[j + 1..i].fill(true);
            }
            last_hidden = Some(i);
        }
    }
    let mut out = String::with_capacity(real.len());
    let mut in_run = false;
    for (c, h) in chars.iter().zip(&hidden) {
        if *h {
            if !in_run {
                out.push_str(REDACTED);
            }
            in_run = true;
        } else {
            out.push(*c);
            in_run = false;
        }
    }
    out
}

/// `text` with the content of every `"…"` span shown as `***`: for messages about a
/// value derived from a secret, where positions are not known.
pub fn hide_quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut parts = text.split('"');
    if let Some(first) = parts.next() {
        out.push_str(first);
    }
    for (i, part) in parts.enumerate() {
        out.push('"');
        out.push_str(if i % 2 == 0 { REDACTED } else { part });
    }
    out
}

/// Bytes version of [`by_position`]; a body that is not UTF-8 is hidden whole.
pub fn bytes_by_position(real: &[u8], alts: &[Option<&[u8]>]) -> Vec<u8> {
    if alts.iter().all(|a| *a == Some(real)) {
        return real.to_vec();
    }
    let Ok(text) = std::str::from_utf8(real) else {
        return REDACTED.as_bytes().to_vec();
    };
    let alts: Vec<Option<&str>> = alts
        .iter()
        .map(|a| a.and_then(|b| std::str::from_utf8(b).ok()))
        .collect();
    by_position(text, &alts).into_bytes()
}

/// The forms a secret usually takes on its way out: as is, case-changed, Base64,
/// percent- and JSON-escaped, hex.
fn forms(value: &str) -> Vec<String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let b64url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut v = vec![
        value.to_owned(),
        value.to_uppercase(),
        value.to_lowercase(),
        b64.encode(value),
        b64.encode(value).trim_end_matches('=').to_owned(),
        b64url.encode(value),
        percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC)
            .to_string(),
        form_urlencoded::byte_serialize(value.as_bytes()).collect(),
        hex::encode(value),
        hex::encode_upper(value),
    ];
    if let Ok(json) = serde_json::to_string(value) {
        v.push(json[1..json.len() - 1].to_owned());
    }
    v.sort();
    v.dedup();
    // Longest first, so a form that contains another is replaced whole.
    v.sort_by_key(|s| std::cmp::Reverse(s.len()));
    v
}

/// Secrets shorter than this are not searched for in foreign text: a 1-character
/// "secret" would blank every occurrence of that character.
pub const SCRUB_MIN_LEN: usize = 4;

/// `text` (a response body, an error a server sent back) with every usual encoding of
/// each secret replaced by `***`.
pub fn scrub<'a>(text: &'a str, secrets: &[Secret]) -> Cow<'a, str> {
    let mut out = Cow::Borrowed(text);
    for s in secrets {
        let v = s.expose();
        if v.chars().count() < SCRUB_MIN_LEN {
            continue;
        }
        for f in forms(v) {
            if f.len() >= SCRUB_MIN_LEN && out.contains(f.as_str()) {
                out = Cow::Owned(out.replace(f.as_str(), REDACTED));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alts(real: &str, f: impl Fn(&str) -> String) -> String {
        let a = f(&sentinel("s", 0));
        let b = f(&sentinel("s", 1));
        let _ = real;
        by_position(&f("1"), &[Some(&a), Some(&b)])
    }

    #[test]
    fn sentinel_families_share_no_character() {
        let (a, b) = (sentinel("x", 0), sentinel("x", 1));
        assert!(a.chars().all(|c| ('0'..='4').contains(&c)), "{a}");
        assert!(b.chars().all(|c| ('5'..='9').contains(&c)), "{b}");
        assert_eq!(a.len(), 24);
    }

    #[test]
    fn a_short_secret_hides_only_its_own_position() {
        let shown = alts("1", |s| format!(r#"{{"a":"1","k":"{s}","b":11}}"#));
        assert_eq!(shown, r#"{"a":"1","k":"***","b":11}"#);
    }

    #[test]
    fn transformed_secrets_are_hidden_whole() {
        let real = "hunter2-long-secret";
        for f in [
            |s: &str| format!("x={}&y=1", s.to_uppercase()),
            |s: &str| {
                format!(
                    "x={}&y=1",
                    base64::engine::general_purpose::STANDARD.encode(s)
                )
            },
            |s: &str| format!("x={}&y=1", hex::encode(sha2::Sha256::digest(s))),
            |s: &str| format!("x={}&y=1", &s[2..9]),
        ] {
            let a = f(&sentinel("s", 0));
            let b = f(&sentinel("s", 1));
            let shown = by_position(&f(real), &[Some(&a), Some(&b)]);
            assert!(shown.starts_with("x=***"), "{shown}");
            assert!(shown.ends_with("&y=1"), "{shown}");
        }
    }

    #[test]
    fn a_failed_alternative_hides_everything() {
        assert_eq!(by_position("abc", &[Some("abd"), None]), REDACTED);
        assert_eq!(by_position("same", &[Some("same"), Some("same")]), "same");
    }

    #[test]
    fn hide_quoted_hides_every_quoted_value() {
        assert_eq!(
            hide_quoted(r#"mapping row 1 (n): number: "abc" is not a number, "x""#),
            r#"mapping row 1 (n): number: "***" is not a number, "***""#
        );
        assert_eq!(hide_quoted("no quotes"), "no quotes");
    }

    #[test]
    fn scrub_replaces_the_usual_encodings() {
        let s = Secret::new("p@ss word/1");
        let b64 = base64::engine::general_purpose::STANDARD.encode("p@ss word/1");
        let text = format!("echo p@ss word/1 {b64} p%40ss%20word%2F1 p%40ss+word%2F1 P@SS WORD/1");
        let out = scrub(&text, std::slice::from_ref(&s));
        assert_eq!(out, "echo *** *** *** *** ***");
        assert_eq!(scrub("a 1 b", &[Secret::new("1")]), "a 1 b");
    }
}
