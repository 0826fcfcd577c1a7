//! Import of events from JSON, JSON arrays, NDJSON and HAR, with bad input.

use hookline::core::events::EventList;
use hookline::core::import::{Format, Location, import_bytes, import_text};
use hookline::store::import::import_file;
use serde_json::{Value, json};

fn fixture(p: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(format!("{}/tests/fixtures/{p}", env!("CARGO_MANIFEST_DIR")))
}

fn values(list: &EventList) -> Vec<Value> {
    (0..list.len())
        .map(|i| list.get(i).expect("in range").expect("parses").into_owned())
        .collect()
}

#[test]
fn mixed_ndjson_fixture_gives_three_events_in_order() {
    let imp = import_file(&fixture("events/mixed.ndjson"), false).expect("imports");
    assert_eq!(imp.format, Some(Format::Ndjson));
    assert!(imp.errors.is_empty());
    let evs = values(&imp.events);
    assert_eq!(
        evs.iter()
            .map(|e| e["type"].as_str().unwrap_or(""))
            .collect::<Vec<_>>(),
        vec!["identify", "page", "track"]
    );
}

#[test]
fn ndjson_bad_lines_are_reported_by_line_and_good_lines_kept() {
    let text = "{\"a\":1}\n\n{\"a\":2\n[1,2]\n{\"a\":3}\r\n";
    let imp = import_bytes(text.as_bytes(), "x.ndjson").expect("imports");
    assert_eq!(values(&imp.events), vec![json!({"a": 1}), json!({"a": 3})]);
    assert_eq!(imp.errors.len(), 2);
    assert_eq!(imp.errors[0].location, Location::Line(3));
    assert_eq!(imp.errors[1].location, Location::Line(4));
    assert!(
        imp.errors[1]
            .to_string()
            .contains("line 4: not a JSON object (an array)"),
        "{}",
        imp.errors[1]
    );
}

#[test]
fn a_pretty_printed_object_is_one_event_not_ndjson() {
    let imp = import_file(&fixture("events/track.json"), false).expect("imports");
    assert_eq!(imp.format, Some(Format::Object));
    assert_eq!(imp.events.len(), 1);
}

#[test]
fn a_json_array_keeps_objects_and_reports_other_items_by_index() {
    let imp = import_bytes(br#"[{"a":1}, 5, {"a":2}, null]"#, "arr.json").expect("imports");
    assert_eq!(imp.format, Some(Format::Array));
    assert_eq!(imp.events.len(), 2);
    assert_eq!(
        imp.errors
            .iter()
            .map(|e| e.location.clone())
            .collect::<Vec<_>>(),
        vec![Location::Item(1), Location::Item(3)]
    );
    let customerio =
        import_file(&fixture("events/customerio-batch-body.json"), false).expect("imports");
    assert_eq!(customerio.events.len(), 2);
}

#[test]
fn broken_json_names_the_file_line_and_column() {
    let e = import_bytes(b"{\n  \"a\": 1,\n  \"b\": \n}", "broken.json").expect_err("broken");
    let msg = e.to_string();
    assert!(
        msg.starts_with("broken.json: not valid JSON")
            && msg.contains("line 4")
            && msg.contains("column 1"),
        "{msg}"
    );
    let e = import_bytes(b"[{\"a\":1},", "arr.json").expect_err("broken array");
    assert!(e.to_string().contains("arr.json"), "{e}");
}

#[test]
fn empty_or_binary_input_is_an_error() {
    assert!(
        import_bytes(b"  \n ", "e.json")
            .expect_err("empty")
            .to_string()
            .contains("empty")
    );
    assert!(
        import_bytes(&[0xff, 0xfe, 0x00], "b.bin")
            .expect_err("binary")
            .to_string()
            .contains("UTF-8")
    );
    let e = import_file(std::path::Path::new("/nonexistent/x.ndjson"), false).expect_err("missing");
    assert!(e.to_string().contains("/nonexistent/x.ndjson"), "{e}");
}

#[test]
fn har_entries_request_bodies_become_events() {
    let har = json!({"log": {"version": "1.2", "entries": [
        {"request": {"method": "POST", "url": "https://api.example/track", "postData": {"mimeType": "application/json", "text": "{\"type\":\"track\",\"event\":\"A\"}"}}},
        {"request": {"method": "GET", "url": "https://api.example/ping"}},
        {"request": {"method": "POST", "url": "https://api.example/form", "postData": {"text": "a=1&b=2"}}},
        {"request": {"method": "POST", "url": "https://api.example/page", "postData": {"text": "{\"type\":\"page\"}"}}}
    ]}});
    let imp = import_bytes(har.to_string().as_bytes(), "cap.har").expect("imports");
    assert_eq!(imp.format, Some(Format::Har));
    assert_eq!(
        values(&imp.events),
        vec![
            json!({"type": "track", "event": "A"}),
            json!({"type": "page"})
        ]
    );
    assert_eq!(imp.errors.len(), 2);
    assert_eq!(
        imp.errors[0].to_string(),
        "entry 1 (GET https://api.example/ping): has no request body"
    );
    assert!(
        imp.errors[1]
            .to_string()
            .starts_with("entry 2 (POST https://api.example/form)"),
        "{}",
        imp.errors[1]
    );
}

#[test]
fn text_mode_and_value_mode_give_the_same_events() {
    let text = std::fs::read(fixture("events/mixed.ndjson")).expect("read");
    let a = import_bytes(&text, "m").expect("values");
    let b = import_text(&text, "m").expect("text");
    assert!(matches!(b.events, EventList::Text(_)));
    assert_eq!(values(&a.events), values(&b.events));
    let pretty = std::fs::read(fixture("events/customerio-batch-body.json")).expect("read");
    assert_eq!(
        values(&import_bytes(&pretty, "p").expect("v").events),
        values(&import_text(&pretty, "p").expect("t").events)
    );
}

#[test]
fn a_50_mb_event_file_imports_whole() {
    let dir = tempfile::tempdir().expect("tmp");
    // One event with a 50 MB string, and an array of ~50 MB of events.
    let big = dir.path().join("big-event.json");
    let payload = "x".repeat(50 * 1024 * 1024);
    std::fs::write(
        &big,
        format!("{{\"type\":\"track\",\"properties\":{{\"blob\":\"{payload}\"}}}}"),
    )
    .expect("write");
    let imp = import_file(&big, false).expect("imports");
    assert_eq!(imp.events.len(), 1);
    assert_eq!(
        values(&imp.events)[0]["properties"]["blob"]
            .as_str()
            .map(str::len),
        Some(payload.len())
    );

    let many = dir.path().join("many.json");
    let one =
        json!({"type": "track", "event": "E", "properties": {"note": "y".repeat(600)}}).to_string();
    let n = 50 * 1024 * 1024 / (one.len() + 1);
    let mut text = String::with_capacity(50 * 1024 * 1024 + 1024);
    text.push('[');
    for i in 0..n {
        if i > 0 {
            text.push(',');
        }
        text.push_str(&one);
    }
    text.push(']');
    std::fs::write(&many, &text).expect("write");
    let imp = import_file(&many, true).expect("imports");
    assert_eq!(imp.events.len(), n);
    assert!(imp.errors.is_empty());
}

#[test]
fn ndjson_with_a_broken_first_line_keeps_the_good_lines() {
    let imp = import_bytes(b"{\"a\":\n{\"a\":2}\n{\"a\":3}\n", "x.ndjson").expect("imports");
    assert_eq!(imp.format, Some(Format::Ndjson));
    assert_eq!(values(&imp.events), vec![json!({"a": 2}), json!({"a": 3})]);
    assert_eq!(imp.errors.len(), 1);
    assert_eq!(imp.errors[0].location, Location::Line(1));
}

#[test]
fn ndjson_line_errors_give_the_column_within_the_line() {
    let imp = import_bytes(b"{\"a\":1}\n{\"b\":2}\n,\n", "x.ndjson").expect("imports");
    assert_eq!(imp.events.len(), 2);
    assert_eq!(
        imp.errors[0].to_string(),
        "line 3: expected value at column 1"
    );
}

#[test]
fn a_broken_pretty_printed_object_is_one_syntax_error_not_ndjson() {
    let e = import_bytes(
        b"{\n  \"type\": \"track\",\n  \"event\": \"x\"\n  \"userId\": 1\n}\n",
        "p.json",
    )
    .expect_err("broken");
    assert!(e.to_string().contains("line 4 column 3"), "{e}");
}

#[test]
fn a_broken_array_of_one_object_per_line_is_one_syntax_error() {
    let e = import_bytes(b"[\n{\"a\":1},\n{\"a\":2}\n{\"a\":3}\n]\n", "a.json")
        .expect_err("missing comma");
    assert!(e.to_string().contains("line 4"), "{e}");
}

#[test]
fn har_errors_name_the_url_without_its_query_string() {
    let har = json!({"log": {"entries": [
        {"request": {"method": "POST", "url": "https://u:pw@h.example/hook?api_key=topsecret", "postData": {"text": "[1]"}}}
    ]}});
    let imp = import_bytes(har.to_string().as_bytes(), "x.har").expect("imports");
    let msg = imp.errors[0].to_string();
    assert!(
        msg.starts_with("entry 0 (POST https://h.example/hook)"),
        "{msg}"
    );
    assert!(!msg.contains("topsecret") && !msg.contains("pw@"), "{msg}");
}

#[test]
fn a_line_that_is_not_json_is_a_syntax_error_not_a_number() {
    let imp = import_bytes(b"{\"a\":1}\nnope\n", "x.ndjson").expect("imports");
    assert_eq!(
        imp.errors[0].to_string(),
        "line 2: expected ident at column 2"
    );
}

#[test]
fn ndjson_with_an_invalid_utf8_byte_on_one_line_keeps_the_other_lines() {
    let imp =
        import_bytes(b"{\"a\":1}\n{\"b\":\"x\xffy\"}\n{\"a\":3}\n", "x.ndjson").expect("imports");
    assert_eq!(imp.format, Some(Format::Ndjson));
    assert_eq!(values(&imp.events), vec![json!({"a": 1}), json!({"a": 3})]);
    assert_eq!(imp.errors.len(), 1);
    assert_eq!(imp.errors[0].location, Location::Line(2));
    assert_eq!(
        imp.errors[0].to_string(),
        "line 2: not UTF-8 text (invalid byte at column 8)"
    );
    // Text mode (send) keeps the same lines.
    let text =
        import_text(b"{\"a\":1}\n{\"b\":\"x\xffy\"}\n{\"a\":3}\n", "x.ndjson").expect("imports");
    assert_eq!(text.events.len(), 2);
}

#[test]
fn invalid_utf8_on_the_first_line_keeps_the_rest_in_line_order() {
    let imp = import_bytes(b"\xfe{\"a\":0}\n{\"a\":1}\nnope\n", "x.ndjson").expect("imports");
    assert_eq!(values(&imp.events), vec![json!({"a": 1})]);
    let at: Vec<_> = imp.errors.iter().map(|e| e.location.clone()).collect();
    assert_eq!(at, vec![Location::Line(1), Location::Line(3)]);
}

#[test]
fn a_document_with_an_invalid_utf8_byte_is_one_error_naming_line_and_column() {
    let e = import_bytes(b"{\n  \"type\": \"tr\xffck\"\n}\n", "p.json").expect_err("not UTF-8");
    assert_eq!(
        e.to_string(),
        "p.json: not UTF-8 text (invalid byte at line 2, column 14)"
    );
}

#[test]
fn a_non_object_first_line_is_a_line_error_and_the_rest_is_kept() {
    for (first, what) in [
        ("[1,2]", "an array"),
        ("42", "a number"),
        ("\"s\"", "a string"),
        ("null", "null"),
    ] {
        let text = format!("{first}\n{{\"a\":1}}\n{{\"a\":2}}\n");
        let imp = import_bytes(text.as_bytes(), "x.ndjson").expect("imports");
        assert_eq!(imp.format, Some(Format::Ndjson), "{first}");
        assert_eq!(
            values(&imp.events),
            vec![json!({"a": 1}), json!({"a": 2})],
            "{first}"
        );
        assert_eq!(imp.errors.len(), 1, "{first}");
        assert_eq!(
            imp.errors[0].to_string(),
            format!("line 1: not a JSON object ({what})")
        );
    }
}

#[test]
fn an_endless_events_file_stops_at_the_cap_while_reading() {
    // /dev/zero has no size: the cap must apply to what is read, not to metadata.
    let e = hookline::store::import::import_file_capped(
        std::path::Path::new("/dev/zero"),
        false,
        1024 * 1024,
    )
    .expect_err("endless");
    assert_eq!(
        e.to_string(),
        "/dev/zero: larger than 1 MB (the import limit)"
    );
    let r = hookline::core::import::read_capped(std::io::repeat(b'x'), 10);
    assert!(r.is_err());
    let r = hookline::core::import::read_capped(&b"0123456789"[..], 10).expect("exactly the cap");
    assert_eq!(r.len(), 10);
}

#[test]
fn deeply_nested_events_are_an_error_not_a_stack_overflow() {
    let deep = "[".repeat(100_000);
    let e = import_bytes(deep.as_bytes(), "deep.json").expect_err("unclosed");
    assert!(
        e.to_string().starts_with("deep.json: not valid JSON"),
        "{e}"
    );
    // Closed: an array whose one item is an array, reported as such.
    let closed = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let imp = import_bytes(closed.as_bytes(), "deep.json").expect("imports");
    assert_eq!(
        imp.errors[0].to_string(),
        "item 0: not a JSON object (an array)"
    );
    // An object that deep: serde_json's recursion limit answers.
    let obj = format!(
        "{{\"a\":{}1{}}}",
        "{\"a\":".repeat(100_000),
        "}".repeat(100_000)
    );
    let e = import_bytes(obj.as_bytes(), "deep.json").expect_err("too deep");
    assert!(e.to_string().contains("recursion limit"), "{e}");
    let line = format!(
        "{{\"a\":1}}\n{{\"x\":{}\n{{\"a\":2}}\n",
        "[".repeat(100_000)
    );
    let imp = import_bytes(line.as_bytes(), "deep.ndjson").expect("imports");
    assert_eq!(imp.events.len(), 2);
    assert_eq!(imp.errors[0].location, Location::Line(2));
}
