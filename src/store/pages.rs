//! Delivery attempts as pages: the attempts of one job that one commit records, in
//! the order they were made, as one compact blob (one `attempt_pages` row) instead of
//! a row each. A row per attempt cost a job at tens of thousands of requests a second
//! more CPU than sending them; a page costs one insert per few dozen attempts, and the
//! texts attempts repeat (URL, request and response headers) are stored once a page.
//!
//! Layout (little-endian): `u32` text count, each text as `u32` length + UTF-8 bytes;
//! `u32` attempt count, each attempt as `u64` request number, `u32` attempt, `u32`
//! method, URL and request-headers text indices, `u32` status (`u32::MAX`: none),
//! `u32` response-headers text index, `u32` body length + bytes, `f64` latency (ms),
//! `u32` error text index (`u32::MAX`: none). Decoding checks every length: a
//! damaged blob is an error, never a panic or a wild allocation.

use std::collections::HashMap;

use super::history::AttemptRow;
use crate::core::job::AttemptLog;

/// A page is closed at this many attempts or bytes, so reading a range decodes little.
pub const PAGE_ATTEMPTS: usize = 256;
pub const PAGE_BYTES: usize = 1 << 20;

const NONE: u32 = u32::MAX;

/// The fixed part of an attempt in a page: request number, attempt, four text
/// indices and the status, the body's length, the latency, the error's index.
const ROW_BYTES: usize = 8 + 4 * 6 + 4 + 8 + 4;

/// Builds one page.
#[derive(Default)]
pub struct PageBuilder {
    texts: Vec<String>,
    index: HashMap<String, u32>,
    text_bytes: usize,
    rows: Vec<u8>,
    count: usize,
    /// Reused to serialize header lists.
    scratch: String,
    /// The last request and response header lists and their text indices: attempts
    /// mostly repeat them, and comparing is cheaper than serializing.
    last_request: Option<(Vec<(String, String)>, u32)>,
    last_response: Option<(Vec<(String, String)>, u32)>,
}

impl PageBuilder {
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Whether the page should be closed before another attempt.
    pub fn is_full(&self) -> bool {
        self.count >= PAGE_ATTEMPTS || self.rows.len() + self.text_bytes >= PAGE_BYTES
    }

    fn intern(&mut self, s: &str) -> u32 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = u32::try_from(self.texts.len()).unwrap_or(NONE - 1);
        self.texts.push(s.to_owned());
        self.index.insert(s.to_owned(), i);
        self.text_bytes += s.len() + 4;
        i
    }

    /// The text index of a header list, serialized only when it differs from the
    /// last one of its kind.
    fn headers_cached(&mut self, h: &[(String, String)], response: bool) -> u32 {
        let last = if response {
            &self.last_response
        } else {
            &self.last_request
        };
        if let Some((list, i)) = last
            && list.as_slice() == h
        {
            return *i;
        }
        let i = self.headers(h);
        let slot = if response {
            &mut self.last_response
        } else {
            &mut self.last_request
        };
        *slot = Some((h.to_vec(), i));
        i
    }

    fn headers(&mut self, h: &[(String, String)]) -> u32 {
        let mut json = std::mem::take(&mut self.scratch);
        json.clear();
        // Serializing pairs of strings cannot fail.
        if let Ok(text) = serde_json::to_string(h) {
            json = text;
        }
        let i = self.intern(&json);
        self.scratch = json;
        i
    }

    pub fn push(&mut self, a: &AttemptLog) {
        let method = self.intern(&a.method);
        let url = self.intern(&a.url);
        let request_headers = self.headers_cached(&a.request_headers, false);
        let response_headers = self.headers_cached(&a.response_headers, true);
        let error = a.error.as_deref().map_or(NONE, |e| self.intern(e));
        let r = &mut self.rows;
        r.extend_from_slice(&a.request_no.to_le_bytes());
        r.extend_from_slice(&a.attempt.to_le_bytes());
        r.extend_from_slice(&method.to_le_bytes());
        r.extend_from_slice(&url.to_le_bytes());
        r.extend_from_slice(&request_headers.to_le_bytes());
        r.extend_from_slice(&a.status.map_or(NONE, u32::from).to_le_bytes());
        r.extend_from_slice(&response_headers.to_le_bytes());
        let body = &a.response_body[..a.response_body.len().min(u32::MAX as usize - 1)];
        r.extend_from_slice(&(body.len() as u32).to_le_bytes());
        r.extend_from_slice(body);
        r.extend_from_slice(&a.latency_ms.to_le_bytes());
        r.extend_from_slice(&error.to_le_bytes());
        self.count += 1;
    }

    /// The page's blob and its attempt count; the builder is empty again.
    pub fn finish(&mut self) -> (Vec<u8>, usize) {
        let mut out = Vec::with_capacity(8 + self.text_bytes + self.rows.len());
        out.extend_from_slice(&(self.texts.len() as u32).to_le_bytes());
        for t in &self.texts {
            out.extend_from_slice(&(t.len() as u32).to_le_bytes());
            out.extend_from_slice(t.as_bytes());
        }
        out.extend_from_slice(&(self.count as u32).to_le_bytes());
        out.extend_from_slice(&self.rows);
        let n = self.count;
        self.texts.clear();
        self.index.clear();
        self.text_bytes = 0;
        self.rows.clear();
        self.count = 0;
        // Text indices belong to the page just finished.
        self.last_request = None;
        self.last_response = None;
        (out, n)
    }
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err(format!(
                "an attempt page ends early ({n} bytes wanted, {} left)",
                self.0.len()
            ));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, String> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    /// A length or count of items of at least `each` bytes: no more than what is left
    /// can hold, checked before anything is allocated by it.
    fn count(&mut self, each: usize) -> Result<usize, String> {
        let n = self.u32()? as usize;
        if n > self.0.len() / each.max(1) {
            return Err(format!(
                "an attempt page claims {n} items of {each} bytes or more with {} bytes left",
                self.0.len()
            ));
        }
        Ok(n)
    }

    fn len(&mut self) -> Result<usize, String> {
        self.count(1)
    }
}

/// Decode a page; `skip` attempts are stepped over and at most `take` returned.
pub fn decode(blob: &[u8], skip: usize, take: usize) -> Result<Vec<AttemptRow>, String> {
    let mut c = Cursor(blob);
    let n_texts = c.count(4)?;
    let mut texts: Vec<&str> = Vec::with_capacity(n_texts);
    for _ in 0..n_texts {
        let len = c.len()?;
        let t = std::str::from_utf8(c.take(len)?)
            .map_err(|_| "an attempt page holds text that is not UTF-8".to_owned())?;
        texts.push(t);
    }
    let text = |i: u32| -> Result<&str, String> {
        texts
            .get(i as usize)
            .copied()
            .ok_or_else(|| format!("an attempt page refers to text {i} of {}", texts.len()))
    };
    let n = c.count(ROW_BYTES)?;
    let mut out = Vec::with_capacity(n.saturating_sub(skip).min(take));
    for k in 0..n {
        if out.len() >= take {
            break;
        }
        let request_no = c.u64()?;
        let attempt = c.u32()?;
        let method = c.u32()?;
        let url = c.u32()?;
        let request_headers = c.u32()?;
        let status = c.u32()?;
        let response_headers = c.u32()?;
        let body_len = c.len()?;
        let body = c.take(body_len)?;
        let latency = f64::from_bits(c.u64()?);
        let error = c.u32()?;
        if k < skip {
            continue;
        }
        out.push(AttemptRow {
            request_no,
            attempt,
            method: text(method)?.to_owned(),
            url: text(url)?.to_owned(),
            request_headers: text(request_headers)?.to_owned(),
            status: if status == NONE {
                None
            } else {
                Some(
                    u16::try_from(status)
                        .map_err(|_| format!("status {status} in an attempt page"))?,
                )
            },
            response_headers: text(response_headers)?.to_owned(),
            response_body: body.to_vec(),
            latency_ms: latency,
            error: if error == NONE {
                None
            } else {
                Some(text(error)?.to_owned())
            },
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(n: u64, status: Option<u16>, error: Option<&str>) -> AttemptLog {
        AttemptLog {
            job: "j".into(),
            request_no: n,
            attempt: 1 + u32::try_from(n % 3).unwrap_or(0),
            method: "POST".into(),
            url: format!("http://127.0.0.1/{}", n % 2),
            request_headers: vec![("Content-Type".into(), "application/json".into())],
            status,
            response_headers: vec![("date".into(), format!("d{n}"))],
            response_body: format!("body {n} \u{e9}").into_bytes(),
            latency_ms: n as f64 / 4.0,
            error: error.map(str::to_owned),
        }
    }

    #[test]
    fn a_page_gives_back_every_attempt_as_pushed() {
        let mut b = PageBuilder::default();
        let logs: Vec<AttemptLog> = (0..10)
            .map(|n| {
                log(
                    n,
                    (n % 4 != 0).then_some(200),
                    (n % 4 == 0).then_some("timed out"),
                )
            })
            .collect();
        for l in &logs {
            b.push(l);
        }
        let (blob, n) = b.finish();
        assert_eq!(n, 10);
        assert!(b.is_empty());
        let back = decode(&blob, 0, usize::MAX).expect("decodes");
        assert_eq!(back.len(), 10);
        for (l, a) in logs.iter().zip(&back) {
            assert_eq!(
                (
                    a.request_no,
                    a.attempt,
                    &a.method,
                    &a.url,
                    a.status,
                    &a.response_body,
                    a.latency_ms,
                    &a.error
                ),
                (
                    l.request_no,
                    l.attempt,
                    &l.method,
                    &l.url,
                    l.status,
                    &l.response_body,
                    l.latency_ms,
                    &l.error
                )
            );
            assert_eq!(
                a.request_headers,
                serde_json::to_string(&l.request_headers).expect("json")
            );
            assert_eq!(
                a.response_headers,
                serde_json::to_string(&l.response_headers).expect("json")
            );
        }
        assert_eq!(decode(&blob, 3, 2).expect("decodes"), back[3..5].to_vec());
        assert!(decode(&blob, 10, 5).expect("decodes").is_empty());

        // The next page made by the same builder stores its own texts: the header
        // lists it repeats from the last page are written again, not referred to.
        b.push(&logs[1]);
        b.push(&logs[2]);
        let (next, _) = b.finish();
        let again = decode(&next, 0, usize::MAX).expect("the next page decodes alone");
        assert_eq!(again, back[1..3].to_vec());
    }

    #[test]
    fn repeated_texts_are_stored_once() {
        let mut b = PageBuilder::default();
        for n in 0..100 {
            let mut l = log(n, Some(200), None);
            l.response_headers.clear();
            b.push(&l);
        }
        let (blob, _) = b.finish();
        let url = b"http://127.0.0.1/";
        let copies = blob.windows(url.len()).filter(|w| w == url).count();
        assert_eq!(copies, 2, "two distinct URLs, each stored once");
    }

    #[test]
    fn a_damaged_page_is_an_error_not_a_panic() {
        let mut b = PageBuilder::default();
        b.push(&log(1, Some(200), None));
        let (blob, _) = b.finish();
        for cut in 0..blob.len() {
            assert!(decode(&blob[..cut], 0, usize::MAX).is_err(), "cut at {cut}");
        }
        let mut huge = blob.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&huge, 0, usize::MAX).is_err());
        // A page of no texts claiming as many attempts as it has bytes: refused before
        // anything is sized by the claim.
        let mut many = vec![0u8; 4];
        many.extend_from_slice(&1000u32.to_le_bytes());
        many.extend_from_slice(&[0u8; 1000]);
        let e = decode(&many, 0, usize::MAX).expect_err("1 000 attempts cannot fit in 1 000 bytes");
        assert!(e.contains("claims 1000 items"), "{e}");
        // An attempt whose method is text 0 of a page without texts.
        let mut bad_ref = Vec::new();
        bad_ref.extend_from_slice(&0u32.to_le_bytes());
        bad_ref.extend_from_slice(&1u32.to_le_bytes());
        bad_ref.extend_from_slice(&1u64.to_le_bytes());
        for v in [1u32, 0, 0, 0, 200, 0, 0] {
            bad_ref.extend_from_slice(&v.to_le_bytes());
        }
        bad_ref.extend_from_slice(&1.0f64.to_le_bytes());
        bad_ref.extend_from_slice(&NONE.to_le_bytes());
        let e = decode(&bad_ref, 0, 1).expect_err("refers to a missing text");
        assert!(e.contains("text 0 of 0"), "{e}");
        assert!(
            decode(&[0, 0, 0, 0, 1, 0, 0, 0], 0, 1).is_err(),
            "an attempt with no bytes"
        );
    }
}
