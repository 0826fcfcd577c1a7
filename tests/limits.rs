//! No panic, no hang, no runaway memory on any template or transform: each class is
//! refused when compiling (so `validate` says so) or stopped at render with a message
//! naming the field.

use hookline::core::model::{Body, Destination, MappingRow};
use hookline::core::render::{CompiledDestination, RenderCtx, render_request};
use hookline::core::secret::Secrets;
use serde_json::json;

fn template_dest(t: &str) -> Destination {
    let mut d = Destination::new("d", "https://api.example.com/hook");
    d.body = Body::Template {
        template: t.into(),
        content_type: "text/plain".into(),
    };
    d
}

fn ctx() -> RenderCtx {
    RenderCtx::new(Secrets::memory(&[]))
}

fn compile_error(d: &Destination) -> String {
    match CompiledDestination::compile(d) {
        Err(errs) => errs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n"),
        Ok(_) => panic!("expected a configuration error"),
    }
}

fn render_error(d: &Destination, ev: &serde_json::Value) -> String {
    match render_request(d, ev, &ctx()) {
        Err(e) => e.to_string(),
        Ok(r) => panic!(
            "expected a render error, got {} body bytes",
            r.and_then(|r| r.body).map_or(0, |b| b.len())
        ),
    }
}

#[test]
fn nested_loops_of_ten_billion_iterations_run_out_of_fuel_naming_the_field() {
    let d = template_dest(
        "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
    );
    let e = render_error(&d, &json!({}));
    assert!(e.contains("body.template") && e.contains("fuel"), "{e}");
}

#[test]
fn a_string_doubled_34_times_is_refused_when_compiling() {
    let mut t = String::from("{% set s = \"ab\" %}");
    for _ in 0..34 {
        t.push_str("{% set s = s ~ s %}");
    }
    t.push_str("{{ s|length }}");
    let e = compile_error(&template_dest(&t));
    assert!(e.contains("body.template") && e.contains("multiply"), "{e}");
    // A few concatenations are fine.
    let ok = template_dest("{% set a = event.x ~ \"-\" ~ event.y %}{{ a ~ a }}");
    let r = render_request(&ok, &json!({"x": "1", "y": "2"}), &ctx())
        .expect("renders")
        .expect("not skipped");
    assert_eq!(r.body.as_deref(), Some(&b"1-21-2"[..]));
}

#[test]
fn loop_carried_state_and_loops_captured_into_variables_are_refused() {
    let e = render_error(
        &template_dest(
            "{% set ns = namespace(s='a') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}",
        ),
        &json!({}),
    );
    assert!(
        e.contains("body.template") && e.contains("namespace"),
        "{e}"
    );
    let e = compile_error(&template_dest(
        "{% set x %}{% for i in range(100000) %}{{ event.big }}{% endfor %}{% endset %}{{ x ~ x }}",
    ));
    assert!(e.contains("multiply"), "{e}");
    // Macros (recursion) are not part of the template language here.
    let e = compile_error(&template_dest(
        "{% macro d(s, n) %}{{ d(s ~ s, n - 1) }}{% endmacro %}{{ d('a', 40) }}",
    ));
    assert!(e.contains("body.template"), "{e}");
}

#[test]
fn output_larger_than_the_cap_is_an_error_not_an_allocation() {
    let big = "x".repeat(2048);
    let d = template_dest("{% for i in range(100000) %}{{ event.big }}{% endfor %}");
    let e = render_error(&d, &json!({ "big": big }));
    assert!(e.contains("body.template") && e.contains("MiB"), "{e}");
}

#[test]
fn filters_with_absurd_sizes_are_errors_not_panics() {
    for t in [
        "{{ range(10) | batch(18446744073709551615) | list }}",
        "{{ event | tojson(indent=1000000000) }}",
        "{{ 'x' * 10000000000 }}",
    ] {
        let e = render_error(&template_dest(t), &json!({"a": 1}));
        assert!(e.contains("body.template"), "{t}: {e}");
    }
}

#[test]
fn a_date_format_chrono_cannot_display_is_refused_everywhere() {
    // As a transform: a configuration error, so `validate` rejects it.
    let mut d = Destination::new("d", "https://api.example.com/hook");
    d.body = Body::Mapped;
    d.mapping = vec![MappingRow {
        target: "when".into(),
        source: Some("$.timestamp".into()),
        transforms: vec!["date:%#z".into()],
        ..MappingRow::default()
    }];
    let e = compile_error(&d);
    assert!(e.contains("mapping[0]") && e.contains("%#z"), "{e}");
    // Through the template filter: an error for that event.
    let e = render_error(
        &template_dest("{{ event.timestamp | date('%#z') }}"),
        &json!({"timestamp": "2024-01-02T03:04:05Z"}),
    );
    assert!(e.contains("body.template") && e.contains("%#z"), "{e}");
}
