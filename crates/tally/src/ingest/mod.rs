//! Ingestion shared by the HTTP API and `tally import`: decode a body into raw events, validate
//! each one on its own, store the valid ones through the group committer, and report per event.

pub mod bulk;
pub mod csv;

use crate::app::App;
use serde::Serialize;
use serde_json::value::RawValue;
use tally_domain::event::{EventRejection, ValidationContext};
use tally_domain::{RawEvent, UsageEvent};
use tally_store::CommitError;

#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Rejected {
    pub index: usize,
    pub code: &'static str,
    pub reason: String,
}

#[derive(Debug, Default, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct IngestReport {
    pub accepted: usize,
    pub duplicates: usize,
    pub rejected: Vec<Rejected>,
}

impl IngestReport {
    pub fn merge(&mut self, other: IngestReport, index_offset: usize) {
        self.accepted += other.accepted;
        self.duplicates += other.duplicates;
        self.rejected.extend(other.rejected.into_iter().map(|r| Rejected { index: r.index + index_offset, ..r }));
    }
}

/// A body that is not JSON at all: the whole request is refused, with where it broke.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SyntaxError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// A JSON array of events (or a single event object).
pub fn decode_json(body: &[u8]) -> Result<Vec<Result<RawEvent, EventRejection>>, SyntaxError> {
    let syntax = |e: serde_json::Error| SyntaxError { line: e.line(), column: e.column(), message: e.to_string() };
    let trimmed = body.iter().position(|b| !b.is_ascii_whitespace()).map(|i| &body[i..]).unwrap_or(&[]);
    if trimmed.first() == Some(&b'{') {
        let one: &RawValue = serde_json::from_slice(body).map_err(syntax)?;
        return Ok(vec![RawEvent::from_json(one.get())]);
    }
    let items: Vec<&RawValue> = serde_json::from_slice(body).map_err(syntax)?;
    Ok(items.into_iter().map(|raw| RawEvent::from_json(raw.get())).collect())
}

/// Newline-delimited JSON: one event per non-blank line; a bad line rejects that event only.
pub fn decode_ndjson(body: &[u8]) -> Vec<Result<RawEvent, EventRejection>> {
    body.split(|b| *b == b'\n')
        .enumerate()
        .filter(|(_, line)| line.iter().any(|b| !b.is_ascii_whitespace()))
        .map(|(n, line)| decode_line(n + 1, line))
        .collect()
}

pub fn decode_line(line_number: usize, line: &[u8]) -> Result<RawEvent, EventRejection> {
    let text =
        std::str::from_utf8(line).map_err(|_| EventRejection::new("invalid_json", format!("line {line_number}: not valid UTF-8")))?;
    RawEvent::from_json(text).map_err(|e| EventRejection::new(e.code, format!("line {line_number}: {}", e.message)))
}

/// Validates every raw event; returns the valid events and the rejections, by index.
pub fn validate(raws: Vec<Result<RawEvent, EventRejection>>, ctx: &ValidationContext<'_>) -> (Vec<UsageEvent>, Vec<Rejected>) {
    let mut events = Vec::with_capacity(raws.len());
    let mut rejected = Vec::new();
    for (index, raw) in raws.into_iter().enumerate() {
        match raw.and_then(|r| r.validate(ctx)) {
            Ok(event) => events.push(event),
            Err(e) => rejected.push(Rejected { index, code: e.code, reason: e.message }),
        }
    }
    (events, rejected)
}

/// Validates and stores a batch; the report is final only once the events are committed.
pub async fn ingest(app: &App, raws: Vec<Result<RawEvent, EventRejection>>) -> Result<IngestReport, CommitError> {
    let (events, rejected) = validated(app, raws).await?;
    commit(app, events, rejected).await
}

/// Validates raw events against the usage types the store knows (reloaded once if an event names
/// a type this process has not seen yet), and prices LLM requests that carry no cost.
pub async fn validated(app: &App, raws: Vec<Result<RawEvent, EventRejection>>) -> Result<(Vec<UsageEvent>, Vec<Rejected>), CommitError> {
    let mut known = app.usage_types.known();
    let names_unknown_type = raws.iter().any(|r| matches!(r, Ok(e) if e.usage_type.as_ref().is_some_and(|t| !known.contains(t))));
    if names_unknown_type {
        app.usage_types.reload_if_stale(app.store.as_ref()).await?;
        known = app.usage_types.known();
    }
    let ctx = ValidationContext { now: jiff::Timestamp::now(), known_types: &known };
    let (mut events, rejected) = validate(raws, &ctx);
    // LLM requests without a cost of their own are priced from the price table.
    if events.iter().any(|e| e.llm.as_ref().is_some_and(|l| l.cost.is_none())) {
        app.prices.current(app.store.as_ref()).await?.price(&mut events);
    }
    Ok((events, rejected))
}

/// Stores validated events (group-committed) and counts the outcome in the metrics.
pub async fn commit(app: &App, events: Vec<UsageEvent>, rejected: Vec<Rejected>) -> Result<IngestReport, CommitError> {
    let marks = app.alerting.marks(&events);
    let stored = app.committer.commit(events).await?;
    if let Some(marks) = marks {
        app.alerting.touched(marks, &stored);
    }
    let accepted = stored.iter().filter(|s| **s).count();
    let report = IngestReport { accepted, duplicates: stored.len() - accepted, rejected };
    app.metrics.count("accepted", report.accepted);
    app.metrics.count("duplicate", report.duplicates);
    app.metrics.count("rejected", report.rejected.len());
    for r in &report.rejected {
        app.metrics.rejected.get_or_create(&crate::metrics::ReasonLabel { reason: r.code }).inc();
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_syntax_errors_name_line_and_column() {
        let err = decode_json(b"[\n {\"id\": 1},\n {\"id\" 2}\n]").unwrap_err();
        assert_eq!((err.line, err.column), (3, 8));
    }

    #[test]
    fn one_object_or_an_array() {
        assert_eq!(decode_json(br#"{"id":"a"}"#).unwrap().len(), 1);
        assert_eq!(decode_json(br#"[{"id":"a"},{"id":"b"}]"#).unwrap().len(), 2);
        assert!(decode_json(b"").is_err());
    }

    #[test]
    fn ndjson_rejects_bad_lines_alone() {
        let decoded = decode_ndjson(b"{\"id\":\"a\"}\n\nnot json\n{\"id\":\"c\"}\n");
        assert_eq!(decoded.len(), 3);
        assert!(decoded[0].is_ok() && decoded[2].is_ok());
        let err = decoded[1].as_ref().unwrap_err();
        assert!(err.message.starts_with("line 3:"), "{}", err.message);
    }
}
