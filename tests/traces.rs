//! Errors and traces as data: the app puts an error beside its field and shows why a
//! batch was cut, so these are values, not prose to parse.

use hookline::core::batch::ClosedBy;
use hookline::core::events::EventList;
use hookline::core::mapping::RowOutcome;
use hookline::core::model::{Batching, Body, Destination, Envelope, MappingRow};
use hookline::core::render::{CompiledDestination, RenderCtx, RenderErrorKind, render_request};
use hookline::core::secret::Secrets;
use serde_json::{Value, json};

fn ctx() -> RenderCtx {
    RenderCtx {
        secrets: Secrets::memory(&[("k", "s3cr3t-value")]),
        now: Some(1_700_000_000),
    }
}

fn fixture(name: &str) -> Value {
    let p = format!(
        "{}/tests/fixtures/events/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(p).expect("fixture")).expect("json")
}

#[test]
fn a_batch_of_2500_at_cap_1000_reports_event_cap_event_cap_end() {
    let mut d = Destination::new("d", "https://api.example.com/hook");
    d.batching = Some(Batching {
        max_events: 1000,
        ..Batching::default()
    });
    let track = fixture("track.json");
    let events: Vec<Value> = (0..2500).map(|_| track.clone()).collect();
    let rep = CompiledDestination::compile(&d)
        .expect("compiles")
        .render_list(&EventList::compact(events), &ctx());
    let traces: Vec<_> = rep
        .requests
        .iter()
        .map(|r| r.batch.clone().expect("batched"))
        .collect();
    assert_eq!(
        traces.iter().map(|t| t.closed_by).collect::<Vec<_>>(),
        [ClosedBy::EventCap, ClosedBy::EventCap, ClosedBy::EndOfInput]
    );
    assert_eq!(
        traces.iter().map(|t| t.events).collect::<Vec<_>>(),
        [1000, 1000, 500]
    );
    assert_eq!(traces.iter().map(|t| t.seq).collect::<Vec<_>>(), [1, 2, 3]);
    assert!(
        traces
            .iter()
            .all(|t| t.group == 1 && t.group_key == traces[0].group_key)
    );
    for (r, t) in rep.requests.iter().zip(&traces) {
        assert_eq!(t.bytes, r.body.as_ref().expect("body").len());
    }
    assert_eq!(rep.requests[2].events.first(), Some(&2000));
}

#[test]
fn a_template_envelope_is_measured_and_split_to_fit_max_bytes() {
    let mut d = Destination::new("d", "https://api.example.com/hook");
    d.batching = Some(Batching {
        max_events: 100,
        max_bytes: 600,
        // Each body costs ~60 bytes more in the envelope than the batcher estimates.
        envelope: Envelope::Template(
            "[{% for b in bodies %}{\"padding\": \"..........................................\", \"item\": {{ b | tojson }}}{% if not loop.last %},{% endif %}{% endfor %}]".into(),
        ),
    });
    let events: Vec<Value> = (0..20).map(|i| json!({"type": "track", "i": i})).collect();
    let rep = CompiledDestination::compile(&d)
        .expect("compiles")
        .render_list(&EventList::compact(events), &ctx());
    assert!(rep.errors.is_empty(), "{:?}", rep.errors);
    assert!(rep.requests.len() > 1);
    let mut seen: Vec<usize> = Vec::new();
    for r in &rep.requests {
        let len = r.body.as_ref().expect("body").len();
        assert!(len <= 600, "a request of {len} bytes");
        seen.extend(&r.events);
    }
    assert_eq!(
        seen,
        (0..20).collect::<Vec<_>>(),
        "every event once, in order"
    );
    assert!(rep.requests.iter().any(|r| {
        r.batch
            .as_ref()
            .is_some_and(|t| t.closed_by == ClosedBy::MeasuredBytes)
    }));
}

#[test]
fn the_mapping_trace_reports_every_row_not_only_up_to_the_first_error() {
    let mut d = Destination::new("d", "https://api.example.com/hook");
    d.body = Body::Mapped;
    let row = |target: &str, source: &str| MappingRow {
        target: target.into(),
        source: Some(source.into()),
        ..MappingRow::default()
    };
    d.mapping = vec![
        row("user", "$.userId"),
        MappingRow {
            transforms: vec!["number".into()],
            ..row("bad", "$.userId")
        },
        MappingRow {
            default: Some(json!("none")),
            ..row("email", "$.traits.email")
        },
        row("phone", "$.traits.phone"),
        row("nothing", "$.nothing"),
        MappingRow {
            template: Some("key={{ secret(\"k\") }}".into()),
            source: None,
            ..row("token", "")
        },
    ];
    let c = CompiledDestination::compile(&d).expect("compiles");
    let ev = json!({"userId": "u1", "nothing": null, "traits": {}});
    let t = c.trace_mapping(&ev, &ctx());
    assert_eq!(t.len(), 6);
    assert_eq!(t[0].outcome, RowOutcome::Value(json!("u1")));
    assert!(
        matches!(&t[1].outcome, RowOutcome::Error(m) if m.contains("number")),
        "{:?}",
        t[1]
    );
    assert_eq!(t[2].outcome, RowOutcome::Defaulted(json!("none")));
    assert_eq!(t[3].outcome, RowOutcome::Missing);
    assert_eq!(t[4].outcome, RowOutcome::Null);
    assert_eq!(t[5].outcome, RowOutcome::Value(json!("key=***")));
    assert_eq!((t[1].index, t[1].target.as_str()), (1, "bad"));
}

#[test]
fn config_errors_carry_their_field_as_data() {
    let mut d = Destination::new("d", "https://api.example.com/hook");
    d.headers.insert("Bad Name".into(), "x".into());
    d.body = Body::Mapped;
    d.mapping = vec![
        MappingRow {
            target: "ok".into(),
            source: Some("$.a".into()),
            ..MappingRow::default()
        },
        MappingRow {
            target: "email".into(),
            source: Some("$[".into()),
            ..MappingRow::default()
        },
    ];
    let errs = CompiledDestination::compile(&d).expect_err("bad");
    let header = errs
        .iter()
        .find(|e| e.path.section == "headers")
        .expect("header error");
    assert_eq!(header.path.key.as_deref(), Some("Bad Name"));
    let row = errs
        .iter()
        .find(|e| e.path.section == "mapping")
        .expect("row error");
    assert_eq!(row.path.row, Some(1));
    assert!(row.field.starts_with("mapping[1]"), "{}", row.field);
}

#[test]
fn render_errors_have_kinds() {
    let base = || Destination::new("d", "https://api.example.com/hook");
    let kind = |d: &Destination, ev: &Value| render_request(d, ev, &ctx()).expect_err("fails").kind;
    let mut d = base();
    d.headers
        .insert("X-K".into(), "{{ secret(\"absent\") }}".into());
    assert_eq!(
        kind(&d, &json!({})),
        RenderErrorKind::MissingSecret {
            name: "absent".into()
        }
    );
    let mut d = base();
    d.body = Body::Template {
        template: "line one\n{{ event.x | no_such_filter }}".into(),
        content_type: "text/plain".into(),
    };
    assert!(
        matches!(kind(&d, &json!({})), RenderErrorKind::Template { field, .. } if field == "body.template")
    );
    assert_eq!(
        kind(&base(), &json!({"fullPath": "https://other.example/x"})),
        RenderErrorKind::Url
    );
    assert_eq!(
        kind(&base(), &json!({"header": {"Host": "x"}})),
        RenderErrorKind::Header {
            name: "Host".into()
        }
    );
    let mut d = base();
    d.body = Body::Mapped;
    d.mapping = vec![MappingRow {
        target: "n".into(),
        source: Some("$.s".into()),
        transforms: vec!["number".into()],
        ..MappingRow::default()
    }];
    assert_eq!(
        kind(&d, &json!({"s": "abc"})),
        RenderErrorKind::Mapping {
            index: 0,
            target: "n".into()
        }
    );
}
