//! OpenTelemetry traces (OTLP/HTTP) as LLM request events. Spans with GenAI semantic-convention
//! attributes become `llm_request` events: model from `gen_ai.response.model` or
//! `gen_ai.request.model`, provider from `gen_ai.provider.name` or the older `gen_ai.system`,
//! tokens from `gen_ai.usage.input_tokens`/`output_tokens` or the older `prompt_tokens`/
//! `completion_tokens` (of the input, those served from a prompt cache from
//! `gen_ai.usage.cache_read.input_tokens`), failure from `error.type` or an error status, latency from the span's
//! duration. The user is `user.id` and the organization `tally.organization_id` (span attributes
//! first, then the resource's; the organization may also come from the key). The span id is the
//! event id, so a re-exported span counts once. Spans without GenAI attributes are ignored.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use std::collections::HashMap;
use tally_domain::RawEvent;

/// What a request's spans became.
#[derive(Debug, Default)]
pub struct Mapped {
    pub events: Vec<RawEvent>,
    /// Spans without GenAI attributes.
    pub ignored: usize,
    /// GenAI spans that cannot be events, and why.
    pub rejected: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
enum Attr {
    Text(String),
    Int(i64),
    Other,
}

fn attributes<'a>(list: &'a [KeyValue], into: &mut HashMap<&'a str, Attr>) {
    for kv in list {
        let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
            Some(any_value::Value::StringValue(s)) => Attr::Text(s.clone()),
            Some(any_value::Value::IntValue(i)) => Attr::Int(*i),
            Some(any_value::Value::DoubleValue(d)) if d.fract() == 0.0 => Attr::Int(*d as i64),
            _ => Attr::Other,
        };
        into.insert(kv.key.as_str(), value);
    }
}

fn text(attrs: &HashMap<&str, Attr>, keys: &[&str]) -> Option<String> {
    keys.iter().find_map(|k| match attrs.get(k) {
        Some(Attr::Text(s)) if !s.is_empty() => Some(s.clone()),
        Some(Attr::Int(i)) => Some(i.to_string()),
        _ => None,
    })
}

fn int(attrs: &HashMap<&str, Attr>, keys: &[&str]) -> Result<Option<i64>, String> {
    for k in keys {
        match attrs.get(k) {
            Some(Attr::Int(i)) => return Ok(Some(*i)),
            Some(Attr::Text(s)) => return s.parse().map(Some).map_err(|_| format!("{k} is not a whole number: {s:?}")),
            _ => {}
        }
    }
    Ok(None)
}

const GEN_AI: [&str; 8] = [
    "gen_ai.request.model",
    "gen_ai.response.model",
    "gen_ai.provider.name",
    "gen_ai.system",
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.prompt_tokens",
    "gen_ai.usage.completion_tokens",
];

/// Maps every span; `default_organization` is the key's organization, if it has one.
pub fn map(request: &ExportTraceServiceRequest, default_organization: Option<&str>) -> Mapped {
    let mut out = Mapped::default();
    for rs in &request.resource_spans {
        let mut resource = HashMap::new();
        if let Some(r) = &rs.resource {
            attributes(&r.attributes, &mut resource);
        }
        for span in rs.scope_spans.iter().flat_map(|s| &s.spans) {
            let mut attrs = resource.clone();
            attributes(&span.attributes, &mut attrs);
            if !GEN_AI.iter().any(|k| attrs.contains_key(k)) {
                out.ignored += 1;
                continue;
            }
            let span_id = hex(&span.span_id);
            match event(span_id.clone(), span, &attrs, default_organization) {
                Ok(e) => out.events.push(e),
                Err(reason) => out.rejected.push(format!("span {span_id}: {reason}")),
            }
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn event(
    span_id: String,
    span: &opentelemetry_proto::tonic::trace::v1::Span,
    attrs: &HashMap<&str, Attr>,
    default_organization: Option<&str>,
) -> Result<RawEvent, String> {
    if span.span_id.len() != 8 {
        return Err("the span id must be 8 bytes".into());
    }
    let user = text(attrs, &["user.id"]).ok_or("no user.id attribute (span or resource)")?;
    let organization = text(attrs, &["tally.organization_id"])
        .or_else(|| default_organization.map(str::to_owned))
        .ok_or("no tally.organization_id attribute, and the key names no organization")?;
    let input = int(attrs, &["gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens"])?;
    let output = int(attrs, &["gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens"])?;
    let cached = int(attrs, &["gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.cache_read_input_tokens"])?;
    let failed = attrs.contains_key("error.type") || span.status.as_ref().is_some_and(|s| s.code == StatusCode::Error as i32);
    let start = i128::from(span.start_time_unix_nano);
    let timestamp = jiff::Timestamp::from_nanosecond(start).map_err(|_| "the start time is out of range".to_owned())?;
    let latency_ms = (span.end_time_unix_nano >= span.start_time_unix_nano)
        .then(|| ((span.end_time_unix_nano - span.start_time_unix_nano) / 1_000_000) as i64);
    // Built directly (not through JSON text): validation checks it like any other event.
    Ok(RawEvent {
        id: Some(span_id),
        timestamp: Some(timestamp.to_string()),
        organization_id: Some(organization),
        user_id: Some(user),
        team_id: None,
        usage_type: Some(tally_domain::event::LLM_USAGE_TYPE.to_owned()),
        quantity: None,
        properties: None,
        model: text(attrs, &["gen_ai.response.model", "gen_ai.request.model"]),
        provider: text(attrs, &["gen_ai.provider.name", "gen_ai.system"]),
        status: Some(if failed { "error" } else { "success" }.to_owned()),
        input_tokens: Some(input.unwrap_or(0)),
        cached_input_tokens: Some(cached.unwrap_or(0)),
        output_tokens: Some(output.unwrap_or(0)),
        cost: None,
        latency_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::AnyValue;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

    fn kv(key: &str, value: any_value::Value) -> KeyValue {
        KeyValue { key: key.into(), value: Some(AnyValue { value: Some(value) }), ..Default::default() }
    }

    fn s(v: &str) -> any_value::Value {
        any_value::Value::StringValue(v.into())
    }

    fn span(id: u8, attributes: Vec<KeyValue>, status: i32) -> Span {
        Span {
            span_id: vec![0, 0, 0, 0, 0, 0, 0, id],
            start_time_unix_nano: 1_740_823_200_000_000_000,
            end_time_unix_nano: 1_740_823_200_750_000_000,
            attributes,
            status: Some(Status { code: status, ..Default::default() }),
            ..Default::default()
        }
    }

    fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource { attributes: vec![kv("tally.organization_id", s("acme"))], ..Default::default() }),
                scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn gen_ai_spans_become_llm_requests() {
        let new = vec![
            kv("gen_ai.request.model", s("gpt-4o")),
            kv("gen_ai.response.model", s("gpt-4o-2024-08-06")),
            kv("gen_ai.provider.name", s("openai")),
            kv("gen_ai.usage.input_tokens", any_value::Value::IntValue(120)),
            kv("gen_ai.usage.cache_read.input_tokens", any_value::Value::IntValue(100)),
            kv("gen_ai.usage.output_tokens", any_value::Value::IntValue(30)),
            kv("user.id", s("ann")),
        ];
        let old = vec![
            kv("gen_ai.system", s("anthropic")),
            kv("gen_ai.usage.prompt_tokens", any_value::Value::IntValue(5)),
            kv("gen_ai.usage.completion_tokens", any_value::Value::IntValue(7)),
            kv("error.type", s("timeout")),
            kv("user.id", s("bob")),
        ];
        let plain = vec![kv("http.method", s("GET"))];
        let mapped = map(&request(vec![span(1, new, 1), span(2, old, 0), span(3, plain, 0)]), None);
        assert_eq!((mapped.events.len(), mapped.ignored, mapped.rejected.len()), (2, 1, 0));
        let a = &mapped.events[0];
        assert_eq!(
            (a.id.as_deref(), a.model.as_deref(), a.provider.as_deref()),
            (Some("0000000000000001"), Some("gpt-4o-2024-08-06"), Some("openai"))
        );
        assert_eq!((a.input_tokens, a.output_tokens, a.latency_ms, a.status.as_deref()), (Some(120), Some(30), Some(750), Some("success")));
        assert_eq!((a.cached_input_tokens, mapped.events[1].cached_input_tokens), (Some(100), Some(0)));
        assert_eq!((a.organization_id.as_deref(), a.user_id.as_deref()), (Some("acme"), Some("ann")));
        assert_eq!(a.timestamp.as_deref(), Some("2025-03-01T10:00:00Z"));
        let b = &mapped.events[1];
        assert_eq!(
            (b.provider.as_deref(), b.input_tokens, b.output_tokens, b.status.as_deref()),
            (Some("anthropic"), Some(5), Some(7), Some("error"))
        );
    }

    #[test]
    fn spans_without_a_user_or_organization_are_refused() {
        let no_user = vec![kv("gen_ai.request.model", s("gpt-4o"))];
        let mapped = map(&request(vec![span(1, no_user, 0)]), None);
        assert!(mapped.rejected[0].contains("user.id"), "{:?}", mapped.rejected);
        let mut req = request(vec![span(2, vec![kv("gen_ai.request.model", s("m")), kv("user.id", s("ann"))], 0)]);
        req.resource_spans[0].resource = None;
        assert!(map(&req, None).rejected[0].contains("tally.organization_id"));
        assert_eq!(map(&req, Some("acme")).events[0].organization_id.as_deref(), Some("acme"));
    }
}
