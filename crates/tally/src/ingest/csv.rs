//! CSV import: one event per row, with a header naming the event fields (`id`, `timestamp`,
//! `organization_id`, `user_id`, `team_id`, `type`, `quantity`, `properties` as JSON text, and the
//! LLM fields). Empty cells are absent values.

use serde::Deserialize;
use serde_json::value::RawValue;
use tally_domain::RawEvent;
use tally_domain::event::EventRejection;

#[derive(Debug, Deserialize)]
struct Row {
    id: Option<String>,
    timestamp: Option<String>,
    organization_id: Option<String>,
    user_id: Option<String>,
    team_id: Option<String>,
    #[serde(rename = "type")]
    usage_type: Option<String>,
    quantity: Option<String>,
    properties: Option<String>,
    model: Option<String>,
    provider: Option<String>,
    status: Option<String>,
    input_tokens: Option<String>,
    #[serde(default)]
    cached_input_tokens: Option<String>,
    output_tokens: Option<String>,
    cost: Option<String>,
    latency_ms: Option<String>,
}

fn number<T: std::str::FromStr>(field: &str, value: Option<String>) -> Result<Option<T>, EventRejection> {
    match value.filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => v.trim().parse().map(Some).map_err(|_| EventRejection::new("invalid_field", format!("`{field}` {v:?} is not a number"))),
    }
}

fn text(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.is_empty())
}

/// Reads every row of a CSV document into raw events (a malformed row rejects that row only).
pub fn decode<R: std::io::Read>(reader: R) -> impl Iterator<Item = Result<RawEvent, EventRejection>> {
    let mut csv = ::csv::ReaderBuilder::new().trim(::csv::Trim::Headers).from_reader(reader);
    let headers = csv.headers().cloned();
    csv.into_deserialize::<Row>().map(move |row| {
        if let Err(e) = &headers {
            return Err(EventRejection::new("invalid_csv", format!("header: {e}")));
        }
        let row = row.map_err(|e| EventRejection::new("invalid_csv", e.to_string()))?;
        let properties = match text(row.properties) {
            None => None,
            Some(json) => Some(
                RawValue::from_string(json)
                    .map_err(|e| EventRejection::new("invalid_properties", format!("`properties` is not JSON: {e}")))?,
            ),
        };
        Ok(RawEvent {
            id: text(row.id),
            timestamp: text(row.timestamp),
            organization_id: text(row.organization_id),
            user_id: text(row.user_id),
            team_id: text(row.team_id),
            usage_type: text(row.usage_type),
            quantity: number("quantity", row.quantity)?,
            properties,
            model: text(row.model),
            provider: text(row.provider),
            status: text(row.status),
            input_tokens: number("input_tokens", row.input_tokens)?,
            cached_input_tokens: number("cached_input_tokens", row.cached_input_tokens)?,
            output_tokens: number("output_tokens", row.output_tokens)?,
            cost: text(row.cost).map(serde_json::Value::String),
            latency_ms: number("latency_ms", row.latency_ms)?,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_become_raw_events() {
        let doc = "id,timestamp,organization_id,user_id,type,quantity,properties,cost\n\
                   e1,2025-01-01T00:00:00Z,o,u,api_call,3,\"{\"\"k\"\":1}\",\n\
                   e2,2025-01-01T00:00:00Z,o,u,llm_request,,,0.25\n\
                   e3,2025-01-01T00:00:00Z,o,u,api_call,three,,\n";
        let rows: Vec<_> = decode(doc.as_bytes()).collect();
        assert_eq!(rows.len(), 3);
        let first = rows[0].as_ref().unwrap();
        assert_eq!(first.quantity, Some(3.0));
        assert_eq!(first.properties.as_ref().unwrap().get(), "{\"k\":1}");
        assert_eq!(rows[1].as_ref().unwrap().cost, Some(serde_json::Value::String("0.25".into())));
        assert!(rows[2].as_ref().unwrap_err().message.contains("quantity"));
    }
}
