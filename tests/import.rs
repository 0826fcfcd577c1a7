//! Import: JSON, JSON arrays, NDJSON and HAR into events, with errors that say where.

use std::io::Write as _;
use std::path::PathBuf;

use hookline::core::import::{Format, Location, import, import_as, import_file};
use serde_json::{Value, json};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/events")
        .join(name)
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).expect("fixture")
}

#[test]
fn mixed_ndjson_fixture_gives_three_events() {
    let out = import(&read("mixed.ndjson"));
    assert_eq!(out.format, Format::Ndjson);
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    let types: Vec<_> = out.events.iter().map(|e| e["type"].clone()).collect();
    assert_eq!(types, [json!("identify"), json!("page"), json!("track")]);
}

#[test]
fn pretty_printed_object_is_one_event_not_ndjson() {
    let out = import(&read("track.json"));
    assert_eq!(out.format, Format::Object);
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    assert_eq!(out.events.len(), 1);
    assert_eq!(out.events[0]["event"], "Product Purchased");
}

#[test]
fn json_array_gives_one_event_per_item() {
    let out = import(br#"[{"a":1},{"a":2},{"a":3}]"#);
    assert_eq!(out.format, Format::Array);
    assert_eq!(out.events.len(), 3);
    assert_eq!(out.events[2]["a"], 3);
}

#[test]
fn non_object_array_items_are_errors_naming_the_index() {
    let out = import(br#"[{"a":1}, 2, {"a":3}, "x", {"a":5}]"#);
    assert_eq!(out.events.len(), 3, "good items are kept");
    let msgs: Vec<_> = out.errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        msgs,
        [
            "item 1: not an object (found a number)",
            "item 3: not an object (found a string)"
        ]
    );
}

#[test]
fn ndjson_bad_lines_are_reported_by_line_number_and_good_lines_kept() {
    let input = b"{\"n\":1}\n\n{\"n\":2\n{\"n\":3}\r\n[1]\nnot json\n{\"n\":4}\n";
    let out = import(input);
    assert_eq!(out.format, Format::Ndjson);
    let ns: Vec<_> = out.events.iter().map(|e| e["n"].clone()).collect();
    assert_eq!(ns, [json!(1), json!(3), json!(4)]);
    let lines: Vec<_> = out.errors.iter().map(|e| e.location.clone()).collect();
    assert_eq!(
        lines,
        [Location::Line(3), Location::Line(5), Location::Line(6)]
    );
    assert_eq!(
        out.errors[1].to_string(),
        "line 5: not an object (found an array)"
    );
    assert_eq!(
        out.errors[2].to_string(),
        "line 6: expected ident at column 2"
    );
}

#[test]
fn ndjson_with_a_broken_first_line_still_keeps_the_rest() {
    let out = import(b"{\"n\":\n{\"n\":2}\n{\"n\":3}\n");
    assert_eq!(out.format, Format::Ndjson);
    assert_eq!(out.events.len(), 2);
    assert_eq!(out.errors.len(), 1);
    assert_eq!(out.errors[0].location, Location::Line(1));
}

#[test]
fn blank_ndjson_line_message_matches_the_documented_shape() {
    let out = import_as(b"{\"a\":1}\n{\"b\":2}\n,\n", Format::Ndjson);
    assert_eq!(out.events.len(), 2);
    assert_eq!(
        out.errors[0].to_string(),
        "line 3: expected value at column 1"
    );
}

#[test]
fn broken_json_document_names_line_and_column() {
    let input = b"{\n  \"type\": \"track\",\n  \"event\": \"x\"\n  \"userId\": 1\n}\n";
    let out = import(input);
    assert!(out.events.is_empty());
    assert_eq!(out.errors.len(), 1);
    assert_eq!(
        out.errors[0].location,
        Location::Position { line: 4, column: 3 }
    );
    assert_eq!(
        out.errors[0].to_string(),
        "line 4, column 3: expected `,` or `}`"
    );
}

#[test]
fn broken_json_array_is_a_syntax_error_not_ndjson() {
    let out = import(b"[\n{\"a\":1},\n{\"a\":2}\n{\"a\":3}\n]\n");
    assert_eq!(out.format, Format::Array);
    assert!(out.events.is_empty());
    assert!(
        matches!(out.errors[0].location, Location::Position { line: 4, .. }),
        "{:?}",
        out.errors
    );
}

#[test]
fn top_level_scalar_is_an_error() {
    let out = import(b"42");
    assert!(out.events.is_empty());
    assert_eq!(out.errors[0].location, Location::Input);
    assert!(out.errors[0].to_string().contains("found a number"));
}

#[test]
fn empty_input_gives_no_events_and_no_errors() {
    let out = import(b"  \n\n");
    assert!(out.events.is_empty() && out.errors.is_empty());
}

#[test]
fn utf8_bom_is_ignored() {
    let out = import(b"\xEF\xBB\xBF{\"a\":1}");
    assert_eq!(out.events, [json!({"a": 1})]);
}

fn har(entries: &Value) -> Vec<u8> {
    serde_json::to_vec(&json!({"log": {"version": "1.2", "entries": entries}})).expect("json")
}

fn har_entry(method: &str, url: &str, body: Option<&str>) -> Value {
    let mut request = json!({"method": method, "url": url, "headers": []});
    if let Some(body) = body {
        request["postData"] = json!({"mimeType": "application/json", "text": body});
    }
    json!({"startedDateTime": "2024-01-01T00:00:00Z", "request": request, "response": {"status": 200}})
}

#[test]
fn har_with_two_entries_gives_two_events() {
    let bytes = har(&json!([
        har_entry(
            "POST",
            "http://127.0.0.1:8787/a",
            Some(r#"{"type":"track","n":1}"#)
        ),
        har_entry(
            "PUT",
            "http://127.0.0.1:8787/b",
            Some(r#"{"type":"identify","n":2}"#)
        ),
    ]));
    let out = import(&bytes);
    assert_eq!(out.format, Format::Har);
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    assert_eq!(
        out.events,
        [
            json!({"type":"track","n":1}),
            json!({"type":"identify","n":2})
        ]
    );
}

#[test]
fn har_entries_without_a_json_object_body_are_errors_naming_index_and_url() {
    let bytes = har(&json!([
        har_entry("POST", "http://h/ok", Some(r#"{"n":1}"#)),
        har_entry("GET", "http://h/get", None),
        har_entry("POST", "http://h/list?api_key=topsecret", Some("[1,2]")),
        har_entry("POST", "http://h/broken", Some("{oops")),
    ]));
    let out = import(&bytes);
    assert_eq!(out.events, [json!({"n": 1})]);
    let msgs: Vec<_> = out.errors.iter().map(ToString::to_string).collect();
    assert_eq!(msgs[0], "entry 1 (GET http://h/get): request has no body");
    assert_eq!(
        msgs[1],
        "entry 2 (POST http://h/list): request body is not a JSON object (found an array)"
    );
    assert!(
        msgs[2].starts_with("entry 3 (POST http://h/broken): request body is not a JSON object"),
        "{}",
        msgs[2]
    );
    assert!(
        !msgs.concat().contains("topsecret"),
        "query strings are not shown"
    );
}

#[test]
fn forced_format_reads_input_that_way() {
    let out = import_as(b"{\"a\":1}", Format::Ndjson);
    assert_eq!((out.format, out.events.len()), (Format::Ndjson, 1));
    let out = import_as(b"{\"a\":1}", Format::Array);
    assert_eq!(out.events.len(), 0);
    assert_eq!(
        out.errors[0].to_string(),
        "expected a JSON array, found an object"
    );
    let out = import_as(b"{\"a\":1}", Format::Har);
    assert!(out.errors[0].to_string().starts_with("not a HAR file"));
}

#[test]
fn import_file_errors_name_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("events.ndjson");
    std::fs::write(&path, b"{\"a\":1}\nnope\n").expect("write");
    let out = import_file(&path, None).expect("readable");
    assert_eq!(out.events.len(), 1);
    let msg = out.errors[0].to_string();
    assert!(
        msg.starts_with(&format!("{}: line 2:", path.display())),
        "{msg}"
    );

    let missing = dir.path().join("missing.json");
    let err = import_file(&missing, None).expect_err("missing file");
    assert!(err.to_string().contains("missing.json"), "{err}");
}

#[test]
fn fifty_megabyte_event_file_imports() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("big.ndjson");
    let big = "x".repeat(50 * 1024 * 1024);
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path).expect("create"));
        writeln!(f, r#"{{"type":"track","n":1}}"#).expect("write");
        writeln!(
            f,
            r#"{{"type":"track","n":2,"properties":{{"blob":"{big}"}}}}"#
        )
        .expect("write");
        writeln!(f, r#"{{"type":"track","n":3}}"#).expect("write");
        f.flush().expect("flush");
    }
    assert!(std::fs::metadata(&path).expect("meta").len() > 50_000_000);
    let out = import_file(&path, None).expect("readable");
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    assert_eq!(out.format, Format::Ndjson);
    assert_eq!(out.events.len(), 3);
    assert_eq!(
        out.events[1]["properties"]["blob"].as_str().map(str::len),
        Some(big.len())
    );
}

#[test]
fn many_ndjson_lines_all_import_in_order() {
    let line = serde_json::to_string(
        &json!({"type": "track", "event": "Order Completed", "properties": {"price": 60}}),
    )
    .expect("json");
    let mut input = String::new();
    for i in 0..20_000 {
        input.push_str(&line.replace("60", &i.to_string()));
        input.push('\n');
    }
    let out = import(input.as_bytes());
    assert_eq!(out.events.len(), 20_000);
    assert_eq!(out.events[19_999]["properties"]["price"], 19_999);
}
