//! Rendering behaviour the reference connectors define, one test each, on the
//! connectors' own sample events (tests/fixtures/events, copied from shared/fixtures).

use hookline::core::model::{
    Auth, Batching, Body, Destination, Envelope, HmacAlgorithm, MappingRow, Method, RowsEnvelope,
    SignatureEncoding, Signing, Trigger,
};
use hookline::core::render::{
    CompiledDestination, RenderCtx, RenderReport, RenderedRequest, USER_AGENT, render_request,
};
use hookline::core::secret::Secrets;
use hookline::core::sign;
use serde_json::{Value, json};
use sha2::Digest as _;

fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/tests/fixtures/events/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(&path).expect("fixture exists"))
        .expect("fixture is JSON")
}

fn ctx() -> RenderCtx {
    RenderCtx {
        secrets: Secrets::memory(&[
            ("pw", "open sesame"),
            ("sig", "s3cret"),
            ("key", "k-123"),
            ("wh", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        ]),
        now: Some(1_700_000_000),
    }
}

fn one(dest: &Destination, event: &Value) -> RenderedRequest {
    render_request(dest, event, &ctx())
        .expect("renders")
        .expect("not skipped")
}

fn all(dest: &Destination, events: &[Value]) -> RenderReport {
    CompiledDestination::compile(dest)
        .expect("compiles")
        .render_all(events, &ctx())
}

fn body_json(r: &RenderedRequest) -> Value {
    serde_json::from_slice(r.body.as_deref().expect("has body")).expect("body is JSON")
}

fn row(target: &str, source: &str) -> MappingRow {
    MappingRow {
        target: target.into(),
        source: Some(source.into()),
        ..MappingRow::default()
    }
}

fn query_pairs(url: &str) -> Vec<(String, String)> {
    url::Url::parse(url)
        .expect("url")
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

#[test]
fn post_sends_the_whole_event_as_json_with_default_headers() {
    let ev = fixture("track.json");
    let r = one(&Destination::new("d", "https://example.com/hook"), &ev);
    assert_eq!(r.method, Method::Post);
    assert_eq!(r.url, "https://example.com/hook");
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    assert_eq!(r.header("User-Agent"), Some(USER_AGENT));
    assert!(USER_AGENT.starts_with("hookline/"));
    assert_eq!(body_json(&r), ev);
}

#[test]
fn put_also_sends_the_whole_event() {
    let mut d = Destination::new("d", "https://example.com/hook");
    d.method = Method::Put;
    let ev = fixture("page.json");
    assert_eq!(body_json(&one(&d, &ev)), ev);
}

#[test]
fn get_flattens_nested_properties_into_dotted_query_keys() {
    let mut d = Destination::new("d", "https://example.com/hook");
    d.method = Method::Get;
    let r = one(&d, &fixture("page.json"));
    assert_eq!(r.body, None);
    assert_eq!(r.header("Content-Type"), None);
    let q = query_pairs(&r.url);
    assert!(
        q.contains(&("experiment.variant".into(), "old".into())),
        "{q:?}"
    );
    assert!(
        q.contains(&("path".into(), "/tests/html/script-test.html".into())),
        "{q:?}"
    );
}

#[test]
fn get_identify_flattens_traits_falling_back_to_context_traits() {
    let mut d = Destination::new("d", "https://example.com/hook");
    d.method = Method::Get;
    let r = one(&d, &fixture("identify.json"));
    let q = query_pairs(&r.url);
    assert!(
        q.contains(&("company.id".into(), "company-A".into())),
        "{q:?}"
    );
    assert!(
        q.contains(&("email".into(), "user@domain.com".into())),
        "{q:?}"
    );
    // Top-level traits win over context.traits when present.
    let mut ev = fixture("identify.json");
    ev["traits"] = json!({"plan": "top"});
    let q = query_pairs(&one(&d, &ev).url);
    assert_eq!(q, vec![("plan".to_owned(), "top".to_owned())]);
}

#[test]
fn delete_in_event_mode_sends_no_body() {
    let mut d = Destination::new("d", "https://example.com/hook");
    d.method = Method::Delete;
    let r = one(&d, &fixture("track.json"));
    assert_eq!(r.body, None);
    assert!(query_pairs(&r.url).contains(&("price".into(), "60".into())));
}

#[test]
fn dynamic_header_merges_and_append_path_is_appended_and_both_leave_the_body() {
    let ev = fixture("track-dynamic-header.json");
    let r = one(&Destination::new("d", "https://www.google.com/"), &ev);
    assert_eq!(r.url, "https://www.google.com/search?q=cats");
    assert_eq!(r.header("Authorization"), Some("Bearer 3841718412jhcdskc"));
    let body = body_json(&r);
    assert!(
        body.get("header").is_none() && body.get("appendPath").is_none(),
        "{body}"
    );
    assert_eq!(body["properties"]["color"], "blue");
}

#[test]
fn dynamic_overrides_switched_off_leave_the_event_alone() {
    let mut d = Destination::new("d", "https://www.google.com/");
    d.dynamic_overrides = false;
    let ev = fixture("track-dynamic-header.json");
    let r = one(&d, &ev);
    assert_eq!(r.url, "https://www.google.com/");
    assert_eq!(r.header("Authorization"), None);
    assert_eq!(body_json(&r), ev);
}

#[test]
fn full_path_replaces_the_path() {
    let ev = json!({"type": "track", "fullPath": "/v2/other?x=1"});
    let r = one(&Destination::new("d", "https://h.example/v1/hook"), &ev);
    assert_eq!(r.url, "https://h.example/v2/other?x=1");
    assert!(body_json(&r).get("fullPath").is_none());
}

#[test]
fn url_template_renders_from_the_event_and_query_is_appended_encoded() {
    let mut d = Destination::new("d", "https://example.com/hooks/{{ event.type }}");
    d.query.insert("v".into(), "2".into());
    d.query
        .insert("who".into(), "{{ event.userId }} & co".into());
    let r = one(&d, &fixture("track.json"));
    assert_eq!(
        r.url,
        "https://example.com/hooks/track?v=2&who=my-user-id+%26+co"
    );
}

#[test]
fn url_without_a_scheme_is_an_error_naming_the_destination() {
    let errs = CompiledDestination::compile(&Destination::new("orders", "example.com/hook"))
        .expect_err("no scheme");
    assert_eq!(errs[0].field, "url");
    assert!(
        errs[0].to_string().contains("destination \"orders\"")
            && errs[0].to_string().contains("http://"),
        "{}",
        errs[0]
    );
    // Rendered from a template: caught per event.
    let d = Destination::new("orders", "{{ \"example.com\" }}/x");
    let e = render_request(&d, &fixture("track.json"), &ctx()).expect_err("no scheme after render");
    assert!(
        e.to_string().contains("orders")
            && e.to_string()
                .contains("must start with http:// or https://"),
        "{e}"
    );
}

#[test]
fn header_with_cr_or_lf_is_an_error_and_never_sent() {
    let mut d = Destination::new("d", "https://example.com/");
    d.headers
        .insert("X-Bad".into(), "a\r\nInjected: yes".into());
    let errs = CompiledDestination::compile(&d).expect_err("CRLF");
    assert!(errs[0].to_string().contains("headers.X-Bad"), "{}", errs[0]);
    // From a template value.
    let mut d = Destination::new("d", "https://example.com/");
    d.headers.insert("X-Name".into(), "{{ event.name }}".into());
    let e = render_request(&d, &json!({"name": "a\nb"}), &ctx()).expect_err("LF from event");
    assert!(e.to_string().contains("control character"), "{e}");
    // From the event's dynamic header.
    let e = render_request(
        &Destination::new("d", "https://example.com/"),
        &json!({"header": {"X-A": "1\r\n2"}}),
        &ctx(),
    )
    .expect_err("CRLF");
    assert!(e.to_string().contains("X-A"), "{e}");
}

#[test]
fn template_syntax_error_names_field_and_position() {
    let mut d = Destination::new("d", "https://example.com/");
    d.headers.insert("X-T".into(), "{{ event.userId ".into());
    let errs = CompiledDestination::compile(&d).expect_err("syntax");
    let msg = errs[0].to_string();
    assert!(
        msg.contains("headers.X-T") && msg.contains("line 1") && msg.contains("syntax error"),
        "{msg}"
    );
}

#[test]
fn compile_reports_every_problem_not_just_the_first() {
    let mut d = Destination::new("d", "ftp://x");
    d.body = Body::Mapped;
    d.mapping = vec![
        row("a", "$["),
        MappingRow {
            target: "b".into(),
            source: Some("$.b".into()),
            transforms: vec!["nope".into()],
            ..MappingRow::default()
        },
    ];
    d.trigger.types = vec!["purchase".into()];
    let errs = CompiledDestination::compile(&d).expect_err("bad");
    let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
    assert!(
        fields.contains(&"url")
            && fields.contains(&"trigger.types")
            && fields.iter().filter(|f| f.starts_with("mapping")).count() == 2,
        "{errs:?}"
    );
}

fn example_destination() -> Destination {
    let ws = json!({
        "name": "orders",
        "url": "https://example.com/hooks/{{ event.type }}",
        "method": "POST",
        "headers": {"X-Source": "hookline"},
        "query": {"v": "2"},
        "trigger": {"types": ["track"], "events": ["Order Completed"]},
        "dynamic_overrides": true,
        "body": {"mode": "mapped"},
        "mapping": [
            {"target": "user.id", "source": "$.userId"},
            {"target": "email", "source": "$.context.traits.email", "transforms": ["lowercase", "sha256"]},
            {"target": "plan", "source": "$.properties.plan", "default": "free"},
            {"target": "channel", "literal": "web"},
            {"target": "label", "template": "{{ event.event }} by {{ event.userId }}"}
        ],
        "auth": {"kind": "basic", "username": "svc", "password_secret": "pw"},
        "signing": {"kind": "hmac", "algorithm": "sha1", "encoding": "hex", "header": "X-Signature", "secret": "sig"},
        "delivery": {"timeout_ms": 30000, "concurrency": 8, "max_attempts": 5}
    });
    serde_json::from_value(ws).expect("the issue's example destination parses")
}

#[test]
fn mapped_body_from_the_workspace_example() {
    let mut ev = fixture("track.json");
    ev["event"] = json!("Order Completed");
    let r = one(&example_destination(), &ev);
    assert_eq!(r.url, "https://example.com/hooks/track?v=2");
    assert_eq!(r.header("X-Source"), Some("hookline"));
    let body = body_json(&r);
    let email = hex::encode(sha2::Sha256::digest(b"user@doamin.com"));
    assert_eq!(
        body,
        json!({"user": {"id": "my-user-id"}, "email": email, "plan": "free", "channel": "web", "label": "Order Completed by my-user-id"})
    );
    // Basic auth (RFC 7617) and an HMAC over the exact body bytes.
    assert_eq!(
        r.header("Authorization"),
        Some("Basic c3ZjOm9wZW4gc2VzYW1l")
    );
    let sig = r.header("X-Signature").expect("signed");
    assert!(sign::verify_hmac(
        HmacAlgorithm::Sha1,
        b"s3cret",
        r.body.as_deref().expect("body"),
        sig
    ));
    assert_eq!(sig.len(), 40, "hex SHA-1");
}

#[test]
fn trigger_skips_other_types_and_event_names_and_counts_them() {
    let mut ev = fixture("track.json");
    ev["event"] = json!("Order Completed");
    let events = vec![fixture("identify.json"), fixture("track.json"), ev];
    let rep = all(&example_destination(), &events);
    assert_eq!(rep.requests.len(), 1);
    assert_eq!(rep.requests[0].events, vec![2]);
    assert_eq!(rep.skipped.len(), 2);
    assert!(rep.skipped[0].1.contains("identify"), "{:?}", rep.skipped);
    assert!(
        rep.skipped[1].1.contains("Product Purchased"),
        "{:?}",
        rep.skipped
    );
    assert!(rep.errors.is_empty());
}

#[test]
fn trigger_expression_filters_events() {
    let mut d = Destination::new("d", "https://example.com/");
    d.trigger = Trigger {
        expression: Some("event.properties.price > 50".into()),
        ..Trigger::default()
    };
    let mut cheap = fixture("track.json");
    cheap["properties"]["price"] = json!(10);
    let rep = all(&d, &[fixture("track.json"), cheap]);
    assert_eq!(rep.requests.len(), 1);
    assert_eq!(
        rep.skipped,
        vec![(1, "trigger.expression is false".to_owned())]
    );
}

#[test]
fn a_failing_event_is_reported_and_the_others_still_render() {
    let mut d = Destination::new("d", "https://example.com/");
    d.body = Body::Mapped;
    d.mapping = vec![MappingRow {
        target: "n".into(),
        source: Some("$.n".into()),
        transforms: vec!["number".into()],
        ..MappingRow::default()
    }];
    let rep = all(&d, &[json!({"n": "1"}), json!({"n": "x"}), json!({"n": 3})]);
    assert_eq!(rep.requests.len(), 2);
    assert_eq!(rep.errors.len(), 1);
    assert_eq!(rep.errors[0].0, 1);
    assert!(
        rep.errors[0].1.to_string().contains("mapping[0] (n)"),
        "{}",
        rep.errors[0].1
    );
}

#[test]
fn event_urlencoded_puts_the_json_in_a_form_field_or_a_query_parameter() {
    let mut d = Destination::new("d", "https://example.com/");
    d.body = Body::EventUrlencoded {
        field: "data".into(),
    };
    let ev = json!({"type": "track", "event": "A b&c"});
    let r = one(&d, &ev);
    assert_eq!(
        r.header("Content-Type"),
        Some("application/x-www-form-urlencoded")
    );
    let pairs: Vec<(String, String)> = form_urlencoded::parse(r.body.as_deref().expect("body"))
        .into_owned()
        .collect();
    assert_eq!(pairs.len(), 1);
    assert_eq!(
        serde_json::from_str::<Value>(&pairs[0].1).expect("json"),
        ev
    );
    d.method = Method::Get;
    let r = one(&d, &ev);
    assert_eq!(r.body, None);
    let q = query_pairs(&r.url);
    assert_eq!(serde_json::from_str::<Value>(&q[0].1).expect("json"), ev);
}

#[test]
fn form_mode_sends_the_mapping_urlencoded() {
    let mut d = Destination::new("d", "https://example.com/");
    d.body = Body::Form;
    d.mapping = vec![
        row("user.id", "$.userId"),
        row("price", "$.properties.price"),
    ];
    let r = one(&d, &fixture("track.json"));
    assert_eq!(
        String::from_utf8(r.body.clone().expect("body")).expect("utf8"),
        "user.id=my-user-id&price=60"
    );
}

#[test]
fn template_mode_sends_raw_text_with_the_chosen_content_type() {
    let mut d = Destination::new("d", "https://example.com/");
    d.body = Body::Template {
        template: "<e name=\"{{ event.event }}\" price=\"{{ event.properties.price }}\"/>".into(),
        content_type: "application/xml".into(),
    };
    let r = one(&d, &fixture("track.json"));
    assert_eq!(r.header("Content-Type"), Some("application/xml"));
    assert_eq!(
        r.body.as_deref(),
        Some(&b"<e name=\"Product Purchased\" price=\"60\"/>"[..])
    );
}

#[test]
fn configured_headers_override_defaults_case_insensitively() {
    let mut d = Destination::new("d", "https://example.com/");
    d.headers
        .insert("content-type".into(), "application/vnd.x+json".into());
    d.headers.insert("User-Agent".into(), "mine/1".into());
    let r = one(&d, &fixture("track.json"));
    assert_eq!(r.header("Content-Type"), Some("application/vnd.x+json"));
    assert_eq!(r.header("User-Agent"), Some("mine/1"));
    assert_eq!(
        r.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("content-type"))
            .count(),
        1
    );
}

#[test]
fn customerio_batch_body_is_an_array_of_mapped_events() {
    let mut d = Destination::new("d", "https://example.com/");
    d.body = Body::Mapped;
    d.mapping = vec![
        row("type", "$.type"),
        row("userId", "$.userId"),
        row("event", "$.event"),
        row("properties", "$.properties"),
    ];
    d.batching = Some(Batching::default());
    let expected = fixture("customerio-batch-body.json");
    let events: Vec<Value> = expected
        .as_array()
        .expect("array")
        .iter()
        .map(|e| {
            let mut e = e.clone();
            e["context"] = json!({"library": {"name": "x"}});
            e
        })
        .collect();
    let rep = all(&d, &events);
    assert_eq!(rep.requests.len(), 1);
    assert_eq!(body_json(&rep.requests[0]), expected);
    assert_eq!(rep.requests[0].events, vec![0, 1]);
}

#[test]
fn zeotap_rows_envelope_matches_the_documented_body() {
    let mut d = Destination::new("d", "https://example.com/");
    d.body = Body::Mapped;
    d.mapping = vec![
        row("email", "$.traits.email"),
        row("name", "$.traits.name"),
        row("score", "$.traits.score"),
    ];
    d.batching = Some(Batching {
        envelope: Envelope::Rows(RowsEnvelope {
            sync_mode: "insert".into(),
            operation: "added".into(),
            primary_key: Some("$.userId".into()),
        }),
        ..Batching::default()
    });
    let ev = json!({"type": "identify", "userId": "user-123", "traits": {"email": "user@example.com", "name": "Jane Doe", "score": 85}});
    let rep = all(&d, &[ev]);
    let r = &rep.requests[0];
    assert_eq!(body_json(r), fixture("zeotap-envelope-body.json"));
    // Key order as documented: sync_mode, rows; data, operation, primary_key.
    let text = String::from_utf8(r.body.clone().expect("body")).expect("utf8");
    assert!(
        text.starts_with(r#"{"sync_mode":"insert","rows":[{"data":{"#),
        "{text}"
    );
}

#[test]
fn template_envelope_wraps_bodies() {
    let mut d = Destination::new("d", "https://example.com/");
    d.batching = Some(Batching {
        envelope: Envelope::Template(
            r#"{"count": {{ count }}, "items": {{ bodies | tojson }}}"#.into(),
        ),
        ..Batching::default()
    });
    let rep = all(&d, &[json!({"a": 1}), json!({"a": 2})]);
    assert_eq!(
        body_json(&rep.requests[0]),
        json!({"count": 2, "items": [{"a": 1}, {"a": 2}]})
    );
}

#[test]
fn batching_splits_2500_events_into_1000_1000_500_in_order() {
    let mut d = Destination::new("d", "https://example.com/");
    d.batching = Some(Batching::default());
    let events: Vec<Value> = (0..2500)
        .map(|i| json!({"type": "track", "i": i}))
        .collect();
    let rep = all(&d, &events);
    let sizes: Vec<usize> = rep.requests.iter().map(|r| r.events.len()).collect();
    assert_eq!(sizes, vec![1000, 1000, 500]);
    assert_eq!(rep.requests[1].events[0], 1000);
    assert_eq!(body_json(&rep.requests[2])[499]["i"], 2499);
    assert!(
        rep.requests[0].batch_note.contains("max_events"),
        "{}",
        rep.requests[0].batch_note
    );
}

#[test]
fn events_with_different_urls_go_to_different_batches() {
    let mut d = Destination::new("d", "https://example.com/{{ event.type }}");
    d.batching = Some(Batching::default());
    let events = vec![
        json!({"type": "track"}),
        json!({"type": "page"}),
        json!({"type": "track"}),
    ];
    let rep = all(&d, &events);
    assert_eq!(rep.requests.len(), 2);
    assert_eq!(rep.requests[0].url, "https://example.com/track");
    assert_eq!(rep.requests[0].events, vec![0, 2]);
    assert_eq!(rep.requests[1].events, vec![1]);
}

#[test]
fn events_with_different_dynamic_headers_go_to_different_batches() {
    let mut d = Destination::new("d", "https://example.com/");
    d.batching = Some(Batching::default());
    let events = vec![
        json!({"header": {"X-T": "a"}}),
        json!({"header": {"X-T": "b"}}),
        json!({"header": {"X-T": "a"}}),
    ];
    let rep = all(&d, &events);
    assert_eq!(
        rep.requests
            .iter()
            .map(|r| r.events.clone())
            .collect::<Vec<_>>(),
        vec![vec![0, 2], vec![1]]
    );
}

#[test]
fn max_bytes_splits_batches_and_an_oversized_event_is_an_error_not_a_drop() {
    let mut d = Destination::new("d", "https://example.com/");
    d.batching = Some(Batching {
        max_events: 1000,
        max_bytes: 60,
        envelope: Envelope::Array,
    });
    let small = json!({"s": "x".repeat(10)}); // 18 bytes
    let big = json!({"s": "x".repeat(100)});
    let rep = all(
        &d,
        &[small.clone(), small.clone(), small.clone(), big, small],
    );
    for r in &rep.requests {
        assert!(
            r.body.as_ref().expect("body").len() <= 60,
            "{}",
            r.body.as_ref().map_or(0, Vec::len)
        );
    }
    let carried: Vec<usize> = rep.requests.iter().flat_map(|r| r.events.clone()).collect();
    assert_eq!(carried, vec![0, 1, 2, 4]);
    assert_eq!(rep.errors.len(), 1);
    assert_eq!(rep.errors[0].0, 3);
    assert!(
        rep.errors[0].1.to_string().contains("max_bytes"),
        "{}",
        rep.errors[0].1
    );
}

#[test]
fn batching_with_get_is_a_config_error() {
    let mut d = Destination::new("d", "https://example.com/");
    d.method = Method::Get;
    d.batching = Some(Batching::default());
    assert!(
        CompiledDestination::compile(&d).expect_err("GET batch")[0]
            .field
            .starts_with("batching")
    );
}

#[test]
fn hmac_signs_the_exact_body_bytes_of_a_batch() {
    let mut d = Destination::new("d", "https://example.com/");
    d.batching = Some(Batching::default());
    d.signing = Signing::Hmac {
        algorithm: HmacAlgorithm::Sha256,
        encoding: SignatureEncoding::Base64,
        header: "X-Hub-Signature".into(),
        prefix: "sha256=".into(),
        secret: "sig".into(),
    };
    let rep = all(&d, &[fixture("track.json"), fixture("page.json")]);
    let r = &rep.requests[0];
    let sig = r.header("X-Hub-Signature").expect("signed");
    assert!(sig.starts_with("sha256="));
    assert_eq!(
        sig,
        sign::hmac_signature(
            HmacAlgorithm::Sha256,
            SignatureEncoding::Base64,
            "sha256=",
            b"s3cret",
            r.body.as_deref().expect("body")
        )
    );
}

#[test]
fn standard_webhooks_headers_change_per_attempt_but_the_id_stays() {
    let mut d = Destination::new("d", "https://example.com/");
    d.signing = Signing::StandardWebhooks {
        secret: "wh".into(),
    };
    let compiled = CompiledDestination::compile(&d).expect("compiles");
    let ev = fixture("track.json");
    let mut c = ctx();
    let mut r = compiled
        .render_all(std::slice::from_ref(&ev), &c)
        .requests
        .remove(0);
    assert_eq!(
        r.header("webhook-id"),
        Some("04a303b1-a466-4e66-9022-2a24edaca4fc")
    );
    assert_eq!(r.header("webhook-timestamp"), Some("1700000000"));
    let body = r.body.clone().expect("body");
    let s1 = r.header("webhook-signature").expect("sig").to_owned();
    assert!(sign::verify_standard_webhooks(
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "04a303b1-a466-4e66-9022-2a24edaca4fc",
        1_700_000_000,
        &body,
        &s1
    ));
    c.now = Some(1_700_000_042);
    compiled.sign(&mut r, &c).expect("re-sign");
    assert_eq!(
        r.header("webhook-id"),
        Some("04a303b1-a466-4e66-9022-2a24edaca4fc")
    );
    assert_eq!(r.header("webhook-timestamp"), Some("1700000042"));
    assert_ne!(r.header("webhook-signature"), Some(s1.as_str()));
    assert_eq!(
        r.headers
            .iter()
            .filter(|(n, _)| n == "webhook-signature")
            .count(),
        1
    );
}

#[test]
fn previews_redact_secrets_and_derived_values_unless_revealed() {
    let mut d = example_destination();
    d.trigger = Trigger::default();
    d.headers
        .insert("X-Api-Key".into(), "{{ secret('key') }}".into());
    let r = one(&d, &fixture("track.json"));
    assert_eq!(r.header("X-Api-Key"), Some("k-123"));
    let red = r.redacted();
    assert_eq!(red.header("X-Api-Key"), Some("***"));
    assert_eq!(red.header("Authorization"), Some("Basic ***"));
    assert_eq!(red.header("X-Signature"), Some("***"));
    assert_eq!(red.header("X-Source"), Some("hookline"));
    let dbg = format!("{red:?}");
    assert!(
        !dbg.contains("k-123")
            && !dbg.contains("c3ZjOm9wZW4gc2VzYW1l")
            && !dbg.contains("open sesame"),
        "{dbg}"
    );
}

#[test]
fn api_key_in_the_query_is_redacted_in_the_url() {
    let mut d = Destination::new("d", "https://example.com/");
    d.auth = Auth::ApiKey {
        header: None,
        query: Some("api_key".into()),
        value_secret: "key".into(),
    };
    let r = one(&d, &fixture("track.json"));
    assert_eq!(r.url, "https://example.com/?api_key=k-123");
    assert_eq!(r.redacted().url, "https://example.com/?api_key=***");
}

#[test]
fn a_destination_can_send_both_an_authorization_header_and_an_api_key() {
    let mut d = Destination::new("d", "https://example.com/");
    d.auth = Auth::Bearer {
        token_secret: "pw".into(),
    };
    d.headers
        .insert("X-Api-Key".into(), "{{ secret(\"key\") }}".into());
    let r = one(&d, &fixture("track.json"));
    assert_eq!(r.header("Authorization"), Some("Bearer open sesame"));
    assert_eq!(r.header("X-Api-Key"), Some("k-123"));
}

#[test]
fn a_missing_secret_is_an_error_naming_it() {
    let mut d = Destination::new("d", "https://example.com/");
    d.signing = Signing::Hmac {
        algorithm: HmacAlgorithm::Sha1,
        encoding: SignatureEncoding::Hex,
        header: "X-Signature".into(),
        prefix: String::new(),
        secret: "absent".into(),
    };
    let e = render_request(&d, &fixture("track.json"), &ctx()).expect_err("missing");
    assert!(
        e.to_string().contains("signing.secret") && e.to_string().contains("`absent`"),
        "{e}"
    );
}

#[test]
fn batched_whole_events_held_as_text_pass_through_unchanged() {
    let mut d = Destination::new("d", "https://example.com/");
    d.batching = Some(Batching::default());
    let c = CompiledDestination::compile(&d).expect("compiles");
    let text = serde_json::to_string(&fixture("track.json")).expect("json");
    let fast = c.prepare_text(0, &text).expect("fast path applies");
    let hookline::core::render::Prepared::Ready(slow) = c
        .prepare(0, &fixture("track.json"), &ctx())
        .expect("renders")
    else {
        panic!("skipped")
    };
    assert_eq!(fast.route, slow.route);
    let body = |p: &hookline::core::render::PreparedEvent| match &p.body {
        hookline::core::render::PreparedBody::Json(b) => {
            serde_json::from_slice::<Value>(b).expect("json")
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(body(&fast), body(&slow));
    // An event with override keys, a trigger, or no batching takes the full path.
    assert!(
        c.prepare_text(
            0,
            &serde_json::to_string(&fixture("track-dynamic-header.json")).expect("json")
        )
        .is_none()
    );
    d.trigger.types = vec!["track".into()];
    assert!(
        CompiledDestination::compile(&d)
            .expect("compiles")
            .prepare_text(0, &text)
            .is_none()
    );
    // Unbatched, the fast path also reads the event's `messageId` (its idempotency
    // key) and gives what the full path gives.
    let unbatched = CompiledDestination::compile(&Destination::new("d", "https://example.com/"))
        .expect("compiles");
    let fast = unbatched
        .prepare_text(0, &text)
        .expect("fast path applies unbatched");
    let hookline::core::render::Prepared::Ready(slow) = unbatched
        .prepare(0, &fixture("track.json"), &ctx())
        .expect("renders")
    else {
        panic!("skipped")
    };
    assert_eq!(fast.route, slow.route);
    assert_eq!(body(&fast), body(&slow));
    assert!(slow.message_id.is_some(), "the fixture has a messageId");
    assert_eq!(fast.message_id, slow.message_id);
    // Keys the full path treats as overrides, however written (escaped, null), and
    // duplicate keys, take the full path.
    for t in [
        r#"{"messageId":"m","h\u0065ader":{"X-A":"1"}}"#,
        r#"{"messageId":"m","fullPath":null}"#,
        r#"{"messageId":"m","messageId":"n"}"#,
    ] {
        assert!(unbatched.prepare_text(0, t).is_none(), "{t}");
    }
    let no_id = unbatched
        .prepare_text(0, r#"{"messageId":7,"a":"\u006dessageId"}"#)
        .expect("fast path");
    assert_eq!(no_id.message_id, None);
    // Only the top level counts; what the fast path reads is what a parse reads.
    for t in [
        r#"{"a":{"messageId":"x","header":1},"b":[1,{"c":"]}"}],"messageId":"y"}"#,
        r#" { "messageId" : "y" , "n" : -1.5e3 , "t" : true } "#,
        r#"{"messageId":"\u0079"}"#,
        "{}",
    ] {
        let v: Value = serde_json::from_str(t).expect("json");
        let hookline::core::render::Prepared::Ready(slow) =
            unbatched.prepare(0, &v, &ctx()).expect("renders")
        else {
            panic!("skipped")
        };
        if let Some(fast) = unbatched.prepare_text(0, t) {
            assert_eq!(fast.message_id, slow.message_id, "{t}");
        }
    }
    assert_eq!(
        unbatched
            .prepare_text(0, r#"{"a":{"messageId":"x"},"messageId":"y"}"#)
            .expect("fast path")
            .message_id
            .as_deref(),
        Some("y")
    );
}

#[test]
fn a_url_with_a_line_break_is_a_config_error_not_silently_cleaned() {
    use hookline::core::render::CompiledDestination;
    for url in ["http://127.0.0.1/x\r\nX-Evil: 1", "http://127.0.0.1/a\tb"] {
        let d = hookline::core::model::Destination::new("d", url);
        let Err(errs) = CompiledDestination::compile(&d) else {
            panic!("{url:?} was accepted");
        };
        assert!(
            errs.iter()
                .any(|e| e.path.section == "url" && e.message.contains("line break")),
            "{errs:?}"
        );
    }
}
