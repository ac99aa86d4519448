//! Entry points for the fuzz targets in `fuzz/` (cargo-fuzz, libFuzzer): each takes arbitrary
//! bytes through one parser of untrusted input, exactly as the server does, and checks what must
//! hold whatever the input. `tests/fuzz_corpus.rs` replays the committed corpus through the same
//! functions on every test run, so a crash the fuzzer found stays fixed.

use jiff::Timestamp;
use std::collections::HashSet;
use tally_domain::event::ValidationContext;
use tally_domain::report::{Catalog, Condition, Filter, Value};
use tally_domain::{EventRejection, RawEvent};
use tally_store::Dialect;
use tally_store::report::ReportQuery;

/// One fuzz target: its name (the corpus folder) and its entry point.
pub type Target = (&'static str, fn(&[u8]));

/// Every target, for the corpus replay.
pub const TARGETS: [Target; 7] = [
    ("q_filter", q_filter),
    ("events_json", events_json),
    ("events_ndjson", events_ndjson),
    ("events_csv", events_csv),
    ("otlp_protobuf", otlp_protobuf),
    ("otlp_json", otlp_json),
    ("remote_push", remote_push),
];

/// A fixed instant, so a run is reproducible.
fn now() -> Timestamp {
    "2026-01-15T12:00:00Z".parse().expect("a valid instant")
}

/// The `q` filter language and `ordering`, typed against the report's fields and compiled to SQL
/// for both databases. Whatever the text, the values reach the SQL as parameters only.
pub fn q_filter(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let catalog = Catalog::new(["submission", "storage_bytes", "llm_request", "api_call"].map(String::from).to_vec());
    let filter = tally_domain::report::filter(text, &catalog);
    let ordering = catalog.ordering(text);
    let (Ok(filter), ordering) = (filter, ordering) else { return };
    let query = ReportQuery { filter, ordering: ordering.unwrap_or_default(), limit: 100, offset: 0, count: true, after: None, now: now() };
    // Values reach the SQL as parameters only: the text is the same whatever they are.
    let blanked = ReportQuery { filter: query.filter.as_ref().map(blank), ..query.clone() };
    for (dialect, count) in [Dialect::Sqlite, Dialect::Postgres].into_iter().flat_map(|d| [(d, true), (d, false)]) {
        let (query, blanked) = (ReportQuery { count, ..query.clone() }, ReportQuery { count, ..blanked.clone() });
        let ((sql, _), (blank_sql, _)) = (tally_store::report::compile(dialect, &query), tally_store::report::compile(dialect, &blanked));
        assert_eq!(sql, blank_sql, "a value changed the SQL of {text:?} (count: {count})");
    }
}

/// The same filter with every value replaced by a constant of its type (booleans stay: for
/// `isnull` they choose between `IS NULL` and `IS NOT NULL`).
fn blank(filter: &Filter) -> Filter {
    match filter {
        Filter::Condition(c) => Filter::Condition(Condition {
            values: c
                .values
                .iter()
                .map(|v| match v {
                    Value::Text(_) => Value::Text("x".into()),
                    Value::Integer(_) => Value::Integer(0),
                    Value::Number(_) => Value::Number(0.0),
                    Value::DateTime(_) => Value::DateTime(Timestamp::UNIX_EPOCH),
                    Value::Boolean(b) => Value::Boolean(*b),
                })
                .collect(),
            ..c.clone()
        }),
        Filter::Not(inner) => Filter::Not(Box::new(blank(inner))),
        Filter::And(all) => Filter::And(all.iter().map(blank).collect()),
        Filter::Or(any) => Filter::Or(any.iter().map(blank).collect()),
    }
}

fn validate_all(raws: impl IntoIterator<Item = Result<RawEvent, EventRejection>>) {
    let known: HashSet<String> = tally_domain::UsageType::builtins().into_iter().map(|t| t.key.to_string()).collect();
    let ctx = ValidationContext { now: now(), known_types: &known };
    for raw in raws.into_iter().flatten() {
        if let Ok(event) = raw.validate(&ctx) {
            // What validation lets through is what the store relies on.
            assert!(event.quantity.is_finite(), "{event:?}");
            assert!(!event.id.as_str().is_empty());
        }
    }
}

/// `POST /v1/events` with `application/json`: an array of events or one event.
pub fn events_json(data: &[u8]) {
    if let Ok(raws) = crate::ingest::decode_json(data) {
        validate_all(raws);
    }
}

/// `POST /v1/events` with NDJSON, and `tally import`.
pub fn events_ndjson(data: &[u8]) {
    validate_all(crate::ingest::decode_ndjson(data));
}

/// `tally import --csv`.
pub fn events_csv(data: &[u8]) {
    validate_all(crate::ingest::csv::decode(data));
}

/// `POST /v1/otlp/v1/traces` with `application/x-protobuf`.
pub fn otlp_protobuf(data: &[u8]) {
    use prost::Message;
    if let Ok(request) = opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest::decode(data) {
        otlp_events(&request);
    }
}

/// `POST /v1/otlp/v1/traces` with `application/json`.
pub fn otlp_json(data: &[u8]) {
    if let Ok(request) = serde_json::from_slice(data) {
        otlp_events(&request);
    }
}

fn otlp_events(request: &opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest) {
    let mapped = crate::compat::otlp::map(request, Some("fuzz"));
    validate_all(mapped.events.into_iter().map(Ok));
}

/// `POST /v1/remote/analytics`: a self-hosted server's push.
pub fn remote_push(data: &[u8]) {
    if let Ok(body) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = tally_domain::seats::remote::parse(&body, "5f0c7a2e-0000-4000-8000-000000000000", now());
    }
}
