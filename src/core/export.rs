//! Rendered requests as text: a runnable cURL command (the exact body bytes), a raw
//! HTTP/1.1 message, and the JSON shape `hookline render --format json` prints.

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::render::RenderedRequest;

/// Quote for POSIX `sh`: everything inside single quotes is literal.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// One runnable command. The body goes through `printf %s … | curl --data-binary @-`
/// so that a body starting with `@` is never read as a file name and bytes stay exact.
pub fn to_curl(r: &RenderedRequest) -> String {
    let mut parts = vec![
        "curl".to_owned(),
        "-sS".into(),
        "-g".into(),
        "-X".into(),
        r.method.as_str().into(),
        shell_quote(&r.url),
    ];
    for (n, v) in &r.headers {
        parts.push("-H".into());
        // `-H 'Name:'` would make curl drop the header; `Name;` is its syntax for
        // sending it with an empty value.
        if v.is_empty() {
            parts.push(shell_quote(&format!("{n};")));
        } else {
            parts.push(shell_quote(&format!("{n}: {v}")));
        }
    }
    match &r.body {
        Some(b) => {
            // Suppress curl's `Expect: 100-continue` so large bodies are sent as is.
            parts.push("-H".into());
            parts.push(shell_quote("Expect:"));
            parts.push("--data-binary".into());
            parts.push("@-".into());
            format!(
                "printf '%s' {} | {}",
                shell_quote(&String::from_utf8_lossy(b)),
                parts.join(" ")
            )
        }
        None => parts.join(" "),
    }
}

/// The request as raw HTTP/1.1 text: CRLF after the request line and every header,
/// a CRLF blank line, then the body.
pub fn to_http(r: &RenderedRequest) -> String {
    let (host, target) = match url::Url::parse(&r.url) {
        Ok(u) => {
            let host = match u.port() {
                Some(p) => format!("{}:{p}", u.host_str().unwrap_or("")),
                None => u.host_str().unwrap_or("").to_owned(),
            };
            let target = match u.query() {
                Some(q) => format!("{}?{q}", u.path()),
                None => u.path().to_owned(),
            };
            (host, target)
        }
        Err(_) => (String::new(), r.url.clone()),
    };
    let mut s = format!(
        "{} {target} HTTP/1.1\r\nHost: {host}\r\n",
        r.method.as_str()
    );
    for (n, v) in &r.headers {
        if v.is_empty() {
            let _ = write!(s, "{n}:\r\n");
        } else {
            let _ = write!(s, "{n}: {v}\r\n");
        }
    }
    if let Some(b) = &r.body {
        let _ = write!(
            s,
            "Content-Length: {}\r\n\r\n{}",
            b.len(),
            String::from_utf8_lossy(b)
        );
    } else {
        s.push_str("\r\n");
    }
    s
}

pub fn to_json(r: &RenderedRequest) -> Value {
    json!({
        "method": r.method.as_str(),
        "url": r.url,
        "headers": r.headers.iter().map(|(n, v)| json!([n, v])).collect::<Vec<_>>(),
        "body": r.body.as_ref().map(|b| String::from_utf8_lossy(b).into_owned()),
        "events": r.events,
    })
}
