//! Usage events: the raw shape emitters send, and the validated event the store records.

use crate::ids::{EventId, OrganizationId, TeamId, UserId};
use crate::money::Money;
use crate::usage_type::UsageTypeKey;
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::collections::HashSet;

/// How far ahead of the server's clock an event may be stamped (clock skew, not time travel).
pub const MAX_FUTURE: SignedDuration = SignedDuration::from_hours(24);
/// The usage type of LLM requests: events of it carry model, tokens, cost and status.
pub const LLM_USAGE_TYPE: &str = "llm_request";
/// Nothing before this is a plausible usage event; it catches zero and seconds-vs-millis mistakes.
pub const EARLIEST: Timestamp = Timestamp::constant(946_684_800, 0); // 2000-01-01T00:00:00Z

/// The span every stored event lies in, for queries that mean "all time": from [`EARLIEST`] to
/// past the latest stamp ingestion would accept now (exclusive).
pub fn all_time(now: Timestamp) -> (Timestamp, Timestamp) {
    (EARLIEST, now + MAX_FUTURE + SignedDuration::from_secs(1))
}

/// An event as an emitter sends it. Field types are loose on purpose: every problem becomes a
/// per-event rejection with a reason instead of failing the whole batch.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct RawEvent {
    pub id: Option<String>,
    pub timestamp: Option<String>,
    pub organization_id: Option<String>,
    pub user_id: Option<String>,
    pub team_id: Option<String>,
    #[serde(rename = "type")]
    pub usage_type: Option<String>,
    pub quantity: Option<f64>,
    #[schema(value_type = Option<Object>)]
    pub properties: Option<Box<RawValue>>,
    pub model: Option<String>,
    pub provider: Option<String>,
    pub status: Option<String>,
    pub input_tokens: Option<i64>,
    /// The part of `input_tokens` read from the provider's prompt cache (priced lower).
    pub cached_input_tokens: Option<i64>,
    pub output_tokens: Option<i64>,
    #[schema(value_type = Option<crate::Money>)]
    pub cost: Option<serde_json::Value>,
    pub latency_ms: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LlmStatus {
    Success,
    Error,
}

impl LlmStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            LlmStatus::Success => "success",
            LlmStatus::Error => "error",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "success" => Some(LlmStatus::Success),
            "error" => Some(LlmStatus::Error),
            _ => None,
        }
    }
}

/// The typed LLM facts of an event, stored as columns.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LlmFields {
    pub model: Option<String>,
    pub provider: Option<String>,
    pub status: Option<LlmStatus>,
    pub input_tokens: i64,
    /// Of `input_tokens`, those read from a prompt cache (stored for pricing, not read back).
    pub cached_input_tokens: i64,
    pub output_tokens: i64,
    pub cost: Option<Money>,
    pub latency_ms: Option<i64>,
    /// The price-table version that priced `cost`, when Tally computed it at ingest (stored with
    /// the event; not read back).
    pub price_version: Option<i64>,
}

/// The LLM columns of a stored event, as the store reads them back.
#[derive(Debug, Default)]
pub struct LlmColumns {
    pub model: Option<String>,
    pub provider: Option<String>,
    pub status: Option<String>,
    pub input_tokens: Option<i64>,
    pub output_tokens: Option<i64>,
    pub cost_nanos: Option<i64>,
    pub latency_ms: Option<i64>,
}

impl LlmFields {
    /// Rebuilds the LLM facts from stored columns; `None` when the event had none.
    pub fn from_columns(c: LlmColumns) -> Option<LlmFields> {
        let any = c.model.is_some()
            || c.provider.is_some()
            || c.status.is_some()
            || c.input_tokens.is_some()
            || c.output_tokens.is_some()
            || c.cost_nanos.is_some()
            || c.latency_ms.is_some();
        any.then(|| LlmFields {
            model: c.model,
            provider: c.provider,
            status: c.status.as_deref().and_then(LlmStatus::parse),
            input_tokens: c.input_tokens.unwrap_or(0),
            cached_input_tokens: 0,
            output_tokens: c.output_tokens.unwrap_or(0),
            cost: c.cost_nanos.map(Money::from_nanos),
            latency_ms: c.latency_ms,
            price_version: None,
        })
    }
}

/// A validated usage event. Built only by [`RawEvent::validate`] (or the store, reading back).
#[derive(Debug, Clone, PartialEq)]
pub struct UsageEvent {
    pub id: EventId,
    pub timestamp: Timestamp,
    pub organization_id: OrganizationId,
    pub user_id: UserId,
    pub team_id: Option<TeamId>,
    pub usage_type: UsageTypeKey,
    pub quantity: f64,
    /// The properties object, as JSON text (kept verbatim: no re-serialization on the hot path).
    pub properties: Option<String>,
    pub llm: Option<LlmFields>,
}

/// Why one event was refused. `code` is stable (metrics label, clients); `message` is for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventRejection {
    pub code: &'static str,
    pub message: String,
}

impl EventRejection {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

/// What validation needs from the world: the clock and the usage types the store knows.
pub struct ValidationContext<'a> {
    pub now: Timestamp,
    pub known_types: &'a HashSet<String>,
}

fn required<T>(value: Option<T>, field: &str) -> Result<T, EventRejection> {
    value.ok_or_else(|| EventRejection::new("missing_field", format!("`{field}` is required")))
}

fn parse_id<T, E: std::fmt::Display>(
    value: Option<String>,
    field: &str,
    parse: impl FnOnce(String) -> Result<T, E>,
) -> Result<T, EventRejection> {
    parse(required(value, field)?).map_err(|e| EventRejection::new("invalid_id", format!("`{field}` {e}")))
}

impl RawEvent {
    /// Parses one event from JSON text; a type error becomes a rejection naming the field.
    pub fn from_json(text: &str) -> Result<RawEvent, EventRejection> {
        serde_json::from_str(text).map_err(|e| Self::explain(text, e))
    }

    /// The slow path, taken only for a bad event: find the field serde choked on and name it.
    fn explain(text: &str, error: serde_json::Error) -> EventRejection {
        let invalid = |msg: String| EventRejection::new("invalid_json", msg);
        let Ok(serde_json::Value::Object(fields)) = serde_json::from_str::<serde_json::Value>(text) else {
            return invalid(format!("an event must be a JSON object: {error}"));
        };
        for (name, value) in fields {
            let single = serde_json::Value::Object([(name.clone(), value)].into_iter().collect());
            if let Err(e) = serde_json::from_value::<RawEvent>(single) {
                return invalid(format!("`{name}`: {e}"));
            }
        }
        invalid(error.to_string())
    }

    pub fn validate(self, ctx: &ValidationContext<'_>) -> Result<UsageEvent, EventRejection> {
        let id = parse_id(self.id, "id", EventId::parse)?;
        let organization_id = parse_id(self.organization_id, "organization_id", OrganizationId::parse)?;
        let user_id = parse_id(self.user_id, "user_id", UserId::parse)?;
        let team_id = match self.team_id {
            Some(t) if !t.is_empty() => Some(parse_id(Some(t), "team_id", TeamId::parse)?),
            _ => None,
        };

        let raw_ts = required(self.timestamp, "timestamp")?;
        let timestamp: Timestamp = raw_ts.parse().map_err(|_| {
            EventRejection::new(
                "invalid_timestamp",
                format!("`timestamp` {raw_ts:?} is not an RFC 3339 date-time such as 2025-01-31T12:00:00Z"),
            )
        })?;
        if timestamp < EARLIEST {
            return Err(EventRejection::new("timestamp_out_of_range", format!("`timestamp` {timestamp} is before 2000-01-01")));
        }
        if timestamp > ctx.now + MAX_FUTURE {
            return Err(EventRejection::new("timestamp_out_of_range", format!("`timestamp` {timestamp} is more than 1 day in the future")));
        }

        let type_text = required(self.usage_type, "type")?;
        if !ctx.known_types.contains(&type_text) {
            let mut known: Vec<&str> = ctx.known_types.iter().map(String::as_str).collect();
            known.sort_unstable();
            return Err(EventRejection::new(
                "unknown_usage_type",
                format!("unknown usage type {type_text:?}; known: {}", known.join(", ")),
            ));
        }
        let usage_type = UsageTypeKey::parse(type_text).map_err(|e| EventRejection::new("unknown_usage_type", format!("`type` {e}")))?;

        let quantity = self.quantity.unwrap_or(1.0);
        if !quantity.is_finite() || quantity < 0.0 {
            return Err(EventRejection::new("invalid_quantity", format!("`quantity` must be a non-negative number, got {quantity}")));
        }

        let properties = match self.properties {
            None => None,
            Some(raw) if json_has_nul(raw.get()) => {
                return Err(EventRejection::new("invalid_properties", "`properties` must not contain the NUL character (\\u0000)"));
            }
            Some(raw) if raw.get().trim_start().starts_with('{') => Some(raw),
            Some(raw) if raw.get().trim() == "null" => None,
            Some(_) => return Err(EventRejection::new("invalid_properties", "`properties` must be a JSON object")),
        };

        let llm = LlmInput {
            model: self.model,
            provider: self.provider,
            status: self.status,
            input_tokens: self.input_tokens,
            cached_input_tokens: self.cached_input_tokens,
            output_tokens: self.output_tokens,
            cost: self.cost,
            latency_ms: self.latency_ms,
        };
        let is_llm = usage_type.as_str() == LLM_USAGE_TYPE;
        let llm = if is_llm || llm.any() {
            let llm = match &properties {
                Some(props) if is_llm && !llm.complete() => llm.fill_from_properties(props.get())?,
                _ => llm,
            };
            Some(llm.validate()?)
        } else {
            None
        };

        Ok(UsageEvent {
            id,
            timestamp,
            organization_id,
            user_id,
            team_id,
            usage_type,
            quantity,
            properties: properties.map(|p| p.get().to_owned()),
            llm,
        })
    }
}

/// Whether JSON text holds an escaped NUL character (`\u0000`) in a string or key. PostgreSQL
/// can store it neither in `text` nor in `jsonb`, so it is refused for every backend alike.
fn json_has_nul(text: &str) -> bool {
    text.match_indices("\\u0000").any(|(at, _)| {
        // An escape only if the backslash is not itself escaped: an odd run of backslashes.
        let run = text.as_bytes()[..=at].iter().rev().take_while(|&&b| b == b'\\').count();
        run % 2 == 1
    })
}

/// LLM fields before validation, from the top level or from `properties`.
#[derive(Debug, Default, Deserialize)]
struct LlmInput {
    model: Option<String>,
    provider: Option<String>,
    status: Option<String>,
    input_tokens: Option<i64>,
    cached_input_tokens: Option<i64>,
    output_tokens: Option<i64>,
    cost: Option<serde_json::Value>,
    latency_ms: Option<i64>,
}

impl LlmInput {
    fn any(&self) -> bool {
        self.model.is_some()
            || self.provider.is_some()
            || self.status.is_some()
            || self.input_tokens.is_some()
            || self.cached_input_tokens.is_some()
            || self.output_tokens.is_some()
            || self.cost.is_some()
            || self.latency_ms.is_some()
    }

    fn complete(&self) -> bool {
        self.model.is_some()
            && self.provider.is_some()
            && self.status.is_some()
            && self.input_tokens.is_some()
            && self.output_tokens.is_some()
            && self.cost.is_some()
            && self.latency_ms.is_some()
    }

    /// Top-level fields win; `properties` fills the gaps.
    fn fill_from_properties(self, properties: &str) -> Result<LlmInput, EventRejection> {
        let from: LlmInput = serde_json::from_str(properties)
            .map_err(|e| EventRejection::new("invalid_llm_field", format!("LLM field in `properties`: {e}")))?;
        Ok(LlmInput {
            model: self.model.or(from.model),
            provider: self.provider.or(from.provider),
            status: self.status.or(from.status),
            input_tokens: self.input_tokens.or(from.input_tokens),
            cached_input_tokens: self.cached_input_tokens.or(from.cached_input_tokens),
            output_tokens: self.output_tokens.or(from.output_tokens),
            cost: self.cost.or(from.cost),
            latency_ms: self.latency_ms.or(from.latency_ms),
        })
    }

    fn validate(self) -> Result<LlmFields, EventRejection> {
        let invalid = |msg: String| EventRejection::new("invalid_llm_field", msg);
        let status = match self.status.as_deref() {
            None => None,
            Some(s) => Some(LlmStatus::parse(s).ok_or_else(|| invalid(format!("`status` must be success or error, got {s:?}")))?),
        };
        let non_negative = |value: Option<i64>, field: &str| match value {
            Some(v) if v < 0 => Err(invalid(format!("`{field}` must not be negative, got {v}"))),
            other => Ok(other),
        };
        let input_tokens = non_negative(self.input_tokens, "input_tokens")?.unwrap_or(0);
        let cached_input_tokens = non_negative(self.cached_input_tokens, "cached_input_tokens")?.unwrap_or(0);
        if cached_input_tokens > input_tokens {
            return Err(invalid(format!(
                "`cached_input_tokens` ({cached_input_tokens}) is the cached part of `input_tokens` ({input_tokens}) and cannot exceed it"
            )));
        }
        let output_tokens = non_negative(self.output_tokens, "output_tokens")?.unwrap_or(0);
        let latency_ms = non_negative(self.latency_ms, "latency_ms")?;
        let cost = match self.cost {
            None | Some(serde_json::Value::Null) => None,
            Some(value) => {
                let text = match &value {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Number(n) => n.to_string(),
                    other => return Err(invalid(format!("`cost` must be a decimal number, got {other}"))),
                };
                Some(Money::parse_non_negative(&text).map_err(|e| invalid(format!("`cost` {text:?} {e}")))?)
            }
        };
        for (field, value) in [("model", &self.model), ("provider", &self.provider)] {
            if value.as_deref().is_some_and(|v| v.contains('\0')) {
                return Err(invalid(format!("`{field}` must not contain the NUL character (\\u0000)")));
            }
        }
        let text = |v: Option<String>| v.filter(|s| !s.is_empty());
        Ok(LlmFields {
            model: text(self.model),
            provider: text(self.provider),
            status,
            input_tokens,
            cached_input_tokens,
            output_tokens,
            cost,
            latency_ms,
            price_version: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known() -> HashSet<String> {
        ["api_call", "llm_request", "storage_bytes"].into_iter().map(String::from).collect()
    }

    fn check(json: &str) -> Result<UsageEvent, EventRejection> {
        let types = known();
        let ctx = ValidationContext { now: "2025-06-01T00:00:00Z".parse().unwrap(), known_types: &types };
        RawEvent::from_json(json)?.validate(&ctx)
    }

    const BASE: &str = r#""id":"e1","timestamp":"2025-05-31T10:00:00Z","organization_id":"o1","user_id":"u1""#;

    fn event(extra: &str) -> String {
        format!("{{{BASE},{extra}}}")
    }

    #[test]
    fn nul_characters_are_refused_but_escaped_backslashes_are_not() {
        let e = check(&event(r#""type":"api_call","properties":{"k":"a\u0000b"}"#)).unwrap_err();
        assert_eq!(e.code, "invalid_properties");
        let e = check(&event(r#""type":"api_call","properties":{"a\u0000":1}"#)).unwrap_err();
        assert_eq!(e.code, "invalid_properties");
        let e = check(&event(r#""type":"llm_request","model":"gpt\u0000""#)).unwrap_err();
        assert_eq!(e.code, "invalid_llm_field");
        let e = check(&event(r#""type":"llm_request","properties":{"provider":"x\u0000"}"#)).unwrap_err();
        assert_eq!(e.code, "invalid_properties");
        // A literal backslash followed by "u0000" is ordinary text.
        let ok = check(&event(r#""type":"api_call","properties":{"path":"C:\\u0000"}"#)).unwrap();
        assert_eq!(ok.properties.as_deref(), Some(r#"{"path":"C:\\u0000"}"#));
        assert!(check(&event(r#""type":"api_call","properties":{"k":"\\\u0000"}"#)).is_err());
    }

    #[test]
    fn minimal_event_defaults_quantity_to_one() {
        let e = check(&event(r#""type":"api_call""#)).unwrap();
        assert_eq!(e.quantity, 1.0);
        assert_eq!(e.team_id, None);
        assert!(e.llm.is_none());
    }

    #[test]
    fn llm_fields_from_top_level_and_properties() {
        let e = check(&event(
            r#""type":"llm_request","model":"gpt-4o","input_tokens":10,"properties":{"provider":"openai","output_tokens":5,"cost":0.0042,"status":"success","latency_ms":120}"#,
        ))
        .unwrap();
        let llm = e.llm.unwrap();
        assert_eq!(llm.model.as_deref(), Some("gpt-4o"));
        assert_eq!(llm.provider.as_deref(), Some("openai"));
        assert_eq!((llm.input_tokens, llm.output_tokens), (10, 5));
        assert_eq!(llm.cost.unwrap().to_string(), "0.0042");
        assert_eq!(llm.status, Some(LlmStatus::Success));
        assert_eq!(llm.latency_ms, Some(120));
    }

    #[test]
    fn top_level_llm_field_wins_over_properties() {
        let e = check(&event(r#""type":"llm_request","model":"a","properties":{"model":"b"}"#)).unwrap();
        assert_eq!(e.llm.unwrap().model.as_deref(), Some("a"));
    }

    #[test]
    fn rejections_name_the_problem() {
        let cases = [
            (r#"{"timestamp":"2025-05-31T10:00:00Z","organization_id":"o","user_id":"u","type":"api_call"}"#, "missing_field", "`id`"),
            (&event(r#""type":"nope""#) as &str, "unknown_usage_type", "known: api_call, llm_request, storage_bytes"),
            (&event(r#""type":"api_call","quantity":-1"#), "invalid_quantity", "non-negative"),
            (&event(r#""type":"api_call","quantity":"7""#), "invalid_json", "quantity"),
            (&event(r#""type":"api_call","properties":[1]"#), "invalid_properties", "object"),
            (&event(r#""type":"llm_request","input_tokens":-5"#), "invalid_llm_field", "input_tokens"),
            (&event(r#""type":"llm_request","input_tokens":5,"cached_input_tokens":6"#), "invalid_llm_field", "cannot exceed"),
            (&event(r#""type":"llm_request","status":"ok""#), "invalid_llm_field", "success or error"),
            (&event(r#""type":"llm_request","cost":"0.0000000001""#), "invalid_llm_field", "decimal places"),
            (&event(r#""type":"llm_request","cost":-1"#), "invalid_llm_field", "negative"),
        ];
        for (json, code, needle) in cases {
            let err = check(json).unwrap_err();
            assert_eq!(err.code, code, "{json}: {err:?}");
            assert!(err.message.contains(needle), "{json}: {}", err.message);
        }
    }

    #[test]
    fn timestamps_are_bounded() {
        let at = |ts: &str| check(&format!(r#"{{"id":"e","timestamp":"{ts}","organization_id":"o","user_id":"u","type":"api_call"}}"#));
        assert_eq!(at("1999-12-31T23:59:59Z").unwrap_err().code, "timestamp_out_of_range");
        assert!(at("2000-01-01T00:00:00Z").is_ok());
        assert!(at("2025-06-02T00:00:00Z").is_ok());
        assert_eq!(at("2025-06-02T00:00:01Z").unwrap_err().code, "timestamp_out_of_range");
        assert_eq!(at("yesterday").unwrap_err().code, "invalid_timestamp");
        assert_eq!(at("2025-05-31T12:00:00+02:00").unwrap().timestamp.to_string(), "2025-05-31T10:00:00Z");
    }
}
