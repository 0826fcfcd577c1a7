//! Core throughput on one core, over a ~600-byte track event: a mapped JSON body with
//! an HMAC-SHA1 signature and the full header build; a template body; and import of
//! 100 000 NDJSON events. `cargo bench --bench core` prints events/s (divan's item rate).

use divan::counter::ItemsCount;
use divan::{Bencher, black_box};
use hookline::core::batch::Batch;
use hookline::core::model::{
    Body, Destination, HmacAlgorithm, MappingRow, SignatureEncoding, Signing,
};
use hookline::core::render::{CompiledDestination, Prepared, RenderCtx};
use hookline::core::secret::Secrets;
use serde_json::{Value, json};
use std::sync::Arc;

fn main() {
    divan::main();
}

/// A track event of about 600 bytes serialized.
pub fn track_event(i: usize) -> Value {
    json!({
        "type": "track",
        "event": "Order Completed",
        "userId": format!("user-{i}"),
        "anonymousId": "21b43de4-3b9b-423f-b51f-794eae31fc03",
        "messageId": format!("04a303b1-a466-4e66-9022-{i:012}"),
        "timestamp": "2020-04-22T08:06:20.338Z",
        "properties": {"order_id": format!("o-{i}"), "category": "boots", "product_name": "new_boots", "price": 60, "currency": "USD", "plan": "Enterprise"},
        "context": {
            "ip": "203.0.113.7",
            "locale": "en-US",
            "library": {"name": "RudderLabs JavaScript SDK", "version": "1.1.1-rc.2"},
            "traits": {"email": "User@Domain.com", "name": "User name", "company": {"id": "company-A"}},
            "page": {"path": "/checkout", "url": "https://shop.example/checkout"}
        }
    })
}

fn ctx() -> RenderCtx {
    RenderCtx {
        secrets: Secrets::memory(&[("sig", "s3cret-signing-key"), ("pw", "pw")]),
        now: Some(1_700_000_000),
    }
}

fn row(t: &str, s: &str) -> MappingRow {
    MappingRow {
        target: t.into(),
        source: Some(s.into()),
        ..MappingRow::default()
    }
}

fn mapped_destination() -> CompiledDestination {
    let mut d = Destination::new("bench", "https://example.com/hooks/orders");
    d.headers.insert("X-Source".into(), "hookline".into());
    d.body = Body::Mapped;
    d.mapping = vec![
        row("user.id", "$.userId"),
        row("event", "$.event"),
        row("order.id", "$.properties.order_id"),
        row("order.price", "$.properties.price"),
        row("order.currency", "$.properties.currency"),
        MappingRow {
            transforms: vec!["lowercase".into(), "sha256".into()],
            ..row("email", "$.context.traits.email")
        },
        row("company", "$.context.traits.company.id"),
        row("ts", "$.timestamp"),
    ];
    d.signing = Signing::Hmac {
        algorithm: HmacAlgorithm::Sha1,
        encoding: SignatureEncoding::Hex,
        header: "X-Signature".into(),
        prefix: String::new(),
        secret: "sig".into(),
    };
    CompiledDestination::compile(&d).expect("compiles")
}

fn template_destination() -> CompiledDestination {
    let mut d = Destination::new("bench", "https://example.com/hooks/{{ event.type }}");
    d.body = Body::Template {
        template: r#"{"user":"{{ event.userId }}","event":"{{ event.event }}","order":{"id":"{{ event.properties.order_id }}","price":{{ event.properties.price }},"currency":"{{ event.properties.currency }}"},"email":"{{ event.context.traits.email | lower | sha256 }}","company":"{{ event.context.traits.company.id }}","ts":"{{ event.timestamp }}"}"#.into(),
        content_type: "application/json".into(),
    };
    d.signing = Signing::Hmac {
        algorithm: HmacAlgorithm::Sha1,
        encoding: SignatureEncoding::Hex,
        header: "X-Signature".into(),
        prefix: String::new(),
        secret: "sig".into(),
    };
    CompiledDestination::compile(&d).expect("compiles")
}

/// As the runtime does: the event was just parsed, so it is shared, not copied.
fn render_one(c: &CompiledDestination, ev: &Arc<Value>, ctx: &RenderCtx) -> usize {
    match c.prepare_shared(0, ev, ctx).expect("renders") {
        Prepared::Ready(p) => c
            .finish(
                Batch {
                    events: vec![*p],
                    note: String::new(),
                    trace: None,
                },
                ctx,
            )
            .expect("finishes")
            .body
            .map_or(0, |b| b.len()),
        Prepared::Skipped(_) => 0,
    }
}

#[divan::bench(sample_count = 200, sample_size = 200)]
fn mapped_json_hmac_sha1_headers(b: Bencher) {
    let c = mapped_destination();
    let ev = Arc::new(track_event(1));
    let ctx = ctx();
    assert!((550..700).contains(&serde_json::to_vec(&*ev).map_or(0, |v| v.len())));
    b.counter(ItemsCount::new(1usize))
        .bench(|| render_one(&c, black_box(&ev), &ctx));
}

#[divan::bench(sample_count = 200, sample_size = 200)]
fn template_body_hmac_sha1(b: Bencher) {
    let c = template_destination();
    let ev = Arc::new(track_event(1));
    let ctx = ctx();
    b.counter(ItemsCount::new(1usize))
        .bench(|| render_one(&c, black_box(&ev), &ctx));
}

#[divan::bench(sample_count = 200, sample_size = 200)]
fn whole_event_body(b: Bencher) {
    let c = CompiledDestination::compile(&Destination::new("bench", "https://example.com/hook"))
        .expect("compiles");
    let ev = Arc::new(track_event(1));
    let ctx = ctx();
    b.counter(ItemsCount::new(1usize))
        .bench(|| render_one(&c, black_box(&ev), &ctx));
}

/// 100 000 ~600-byte track events, one per line.
fn ndjson_100k() -> String {
    let mut text = String::new();
    for i in 0..100_000 {
        text.push_str(&track_event(i).to_string());
        text.push('\n');
    }
    text
}

/// Import of 100 000 ~600-byte NDJSON events (as the CLI does for a replay: compact text).
#[divan::bench(sample_count = 10, sample_size = 1)]
fn import_100k_ndjson(b: Bencher) {
    let text = ndjson_100k();
    b.counter(ItemsCount::new(100_000usize)).bench(|| {
        let imp = hookline::core::import::import_text(black_box(text.as_bytes()), "bench")
            .expect("imports");
        assert_eq!(imp.events.len(), 100_000);
    });
}

/// The same import, parsed into values (what the UI holds for an event set).
#[divan::bench(sample_count = 5, sample_size = 1)]
fn import_100k_ndjson_parsed(b: Bencher) {
    let text = ndjson_100k();
    b.counter(ItemsCount::new(100_000usize)).bench(|| {
        let imp = hookline::core::import::import_bytes(black_box(text.as_bytes()), "bench")
            .expect("imports");
        assert_eq!(imp.events.len(), 100_000);
    });
}
