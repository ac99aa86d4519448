//! Lago's event API (`POST /api/v1/events`, `POST /api/v1/events/batch`), as its clients send it.
//!
//! Mapping: `external_subscription_id` names a Tally subscription, whose organization the event
//! belongs to; `code` is the usage type; `transaction_id` is the event id (deduplicated within
//! the organization); the user is `properties.user_id`, else `external_customer_id`, else the
//! subscription itself; the quantity is `properties.quantity` (a number or numeric string),
//! default 1. Unlike Lago, replaying an event already stored succeeds: retries are safe.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tally_domain::RawEvent;

/// At most this many events per batch, as in Lago.
pub const MAX_BATCH: usize = 100;

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct LagoEvent {
    pub transaction_id: String,
    #[serde(default)]
    pub external_subscription_id: Option<String>,
    #[serde(default)]
    pub external_customer_id: Option<String>,
    pub code: String,
    /// Unix seconds (integer or fractional), a numeric string, or RFC 3339; absent means now.
    #[serde(default)]
    pub timestamp: Option<Value>,
    #[serde(default)]
    pub properties: Option<Map<String, Value>>,
}

#[derive(Debug, Deserialize)]
pub struct SingleBody {
    pub event: LagoEvent,
}

#[derive(Debug, Deserialize)]
pub struct BatchBody {
    pub events: Vec<LagoEvent>,
}

/// Field → error codes, as Lago's `error_details`.
pub type Details = Map<String, Value>;

fn detail(field: &str, code: &str) -> Details {
    let mut d = Map::new();
    d.insert(field.to_owned(), json!([code]));
    d
}

fn timestamp(value: Option<&Value>, now: Timestamp) -> Result<Timestamp, Details> {
    let seconds = |s: f64| Timestamp::from_microsecond((s * 1e6).round() as i64).ok();
    let parsed = match value {
        None | Some(Value::Null) => Some(now),
        Some(Value::Number(n)) => n.as_f64().and_then(seconds),
        Some(Value::String(s)) => s.parse::<f64>().ok().and_then(seconds).or_else(|| s.parse::<Timestamp>().ok()),
        Some(_) => None,
    };
    parsed.ok_or_else(|| detail("timestamp", "invalid_format"))
}

fn quantity(properties: Option<&Map<String, Value>>) -> Result<Option<f64>, Details> {
    match properties.and_then(|p| p.get("quantity")) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(Value::String(s)) => s.trim().parse().map(Some).map_err(|_| detail("properties.quantity", "invalid_value")),
        Some(_) => Err(detail("properties.quantity", "invalid_value")),
    }
}

impl LagoEvent {
    /// The Tally event for this Lago event of a subscription of `organization_id`.
    pub fn to_raw(&self, subscription_id: &str, organization_id: &str, now: Timestamp) -> Result<RawEvent, Details> {
        let props = self.properties.as_ref();
        let user = props
            .and_then(|p| p.get("user_id"))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| self.external_customer_id.clone())
            .unwrap_or_else(|| format!("subscription:{subscription_id}"));
        let properties = match props {
            Some(p) => Some(serde_json::value::to_raw_value(p).map_err(|_| detail("properties", "invalid_value"))?),
            None => None,
        };
        Ok(RawEvent {
            id: Some(self.transaction_id.clone()),
            timestamp: Some(timestamp(self.timestamp.as_ref(), now)?.to_string()),
            organization_id: Some(organization_id.to_owned()),
            user_id: Some(user),
            team_id: None,
            usage_type: Some(self.code.clone()),
            quantity: quantity(props)?,
            properties,
            model: None,
            provider: None,
            status: None,
            input_tokens: None,
            cached_input_tokens: None,
            output_tokens: None,
            cost: None,
            latency_ms: None,
        })
    }

    /// The event object Lago answers with.
    pub fn answer(&self, organization_id: &str, at: &RawEvent, received: Timestamp) -> Value {
        json!({
            "lago_id": format!("{organization_id}/{}", self.transaction_id),
            "transaction_id": self.transaction_id,
            "lago_customer_id": null,
            "external_customer_id": self.external_customer_id,
            "lago_subscription_id": self.external_subscription_id,
            "external_subscription_id": self.external_subscription_id,
            "code": self.code,
            "timestamp": at.timestamp,
            "properties": self.properties.clone().unwrap_or_default(),
            "created_at": received.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(extra: Value) -> LagoEvent {
        let mut base = json!({"transaction_id": "t1", "external_subscription_id": "sub", "code": "api_call"});
        base.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        serde_json::from_value(base).unwrap()
    }

    fn now() -> Timestamp {
        "2025-01-02T03:04:05Z".parse().unwrap()
    }

    #[test]
    fn maps_every_field() {
        let e = event(json!({"timestamp": 1735732800, "properties": {"quantity": "2.5", "user_id": "u9"}}));
        let raw = e.to_raw("sub", "acme", now()).unwrap();
        assert_eq!(raw.id.as_deref(), Some("t1"));
        assert_eq!(raw.organization_id.as_deref(), Some("acme"));
        assert_eq!(raw.user_id.as_deref(), Some("u9"));
        assert_eq!(raw.usage_type.as_deref(), Some("api_call"));
        assert_eq!(raw.quantity, Some(2.5));
        assert_eq!(raw.timestamp.as_deref(), Some("2025-01-01T12:00:00Z"));
    }

    #[test]
    fn users_and_times_have_fallbacks() {
        let raw = event(json!({"external_customer_id": "cust"})).to_raw("sub", "acme", now()).unwrap();
        assert_eq!((raw.user_id.as_deref(), raw.timestamp.as_deref()), (Some("cust"), Some("2025-01-02T03:04:05Z")));
        let raw = event(json!({"timestamp": "1735732800.5"})).to_raw("sub", "acme", now()).unwrap();
        assert_eq!(raw.user_id.as_deref(), Some("subscription:sub"));
        assert_eq!(raw.timestamp.as_deref(), Some("2025-01-01T12:00:00.5Z"));
        let raw = event(json!({"timestamp": "2025-01-01T00:00:00Z"})).to_raw("sub", "acme", now()).unwrap();
        assert_eq!(raw.timestamp.as_deref(), Some("2025-01-01T00:00:00Z"));
    }

    #[test]
    fn bad_values_name_their_field() {
        let err = event(json!({"timestamp": "yesterday"})).to_raw("sub", "acme", now()).unwrap_err();
        assert!(err.contains_key("timestamp"));
        let err = event(json!({"properties": {"quantity": "lots"}})).to_raw("sub", "acme", now()).unwrap_err();
        assert!(err.contains_key("properties.quantity"));
    }
}
