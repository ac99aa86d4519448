//! Meters in OpenMeter's sense: an event type, a JSONPath to the value in the event's data, an
//! aggregation and named group-by paths. Each meter records into a Tally usage type of the same
//! key, so its events also feed the live aggregates, series and reports; the meter's own query
//! (see [`query`]) re-reads the stored event data, so it can aggregate exactly and group by any
//! of its paths, including paths added later.

pub mod query;

use crate::usage_type::{Aggregation, UsageTypeKey};
use jiff::Timestamp;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json_path::JsonPath;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MeterAggregation {
    Sum,
    Count,
    UniqueCount,
    Avg,
    Min,
    Max,
    Latest,
}

impl MeterAggregation {
    /// How Tally's own aggregates combine this meter's quantities: every event records its value
    /// (1 for counts), and the closest Tally aggregation sums, counts, maxes or keeps the latest.
    pub fn usage_aggregation(self) -> Aggregation {
        match self {
            MeterAggregation::Sum | MeterAggregation::Avg | MeterAggregation::Min => Aggregation::Sum,
            MeterAggregation::Count | MeterAggregation::UniqueCount => Aggregation::Count,
            MeterAggregation::Max => Aggregation::Max,
            MeterAggregation::Latest => Aggregation::Latest,
        }
    }

    /// Whether each event needs a value at `valueProperty`.
    pub fn needs_value(self) -> bool {
        self != MeterAggregation::Count
    }
}

/// A meter as stored and as the OpenMeter API shows it (camelCase).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Meter {
    pub id: String,
    pub slug: UsageTypeKey,
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    pub aggregation: MeterAggregation,
    pub event_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_from: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_property: Option<String>,
    #[serde(default)]
    pub group_by: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// `POST /meters`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeterCreate {
    pub slug: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    pub aggregation: MeterAggregation,
    pub event_type: String,
    #[serde(default)]
    pub event_from: Option<Timestamp>,
    #[serde(default)]
    pub value_property: Option<String>,
    #[serde(default)]
    pub group_by: BTreeMap<String, String>,
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
}

/// `PUT /meters/{idOrSlug}`: slug, event type and aggregation cannot change.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeterUpdate {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub group_by: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
}

/// A field of a meter definition that is wrong, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}`: {message}")]
pub struct MeterError {
    pub field: String,
    pub message: String,
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> MeterError {
    MeterError { field: field.into(), message: message.into() }
}

/// The group-by key that always exists: the event's subject.
pub const SUBJECT: &str = "subject";

fn check_group_by(group_by: &BTreeMap<String, String>) -> Result<(), MeterError> {
    for (key, path) in group_by {
        let field = format!("groupBy.{key}");
        if key.is_empty() || key.len() > 64 || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(invalid(field, "keys are 1 to 64 letters, digits and underscores"));
        }
        if key == SUBJECT {
            return Err(invalid(field, "`subject` is reserved: every meter can group by subject"));
        }
        parse_path(path).map_err(|m| invalid(field, m))?;
    }
    Ok(())
}

fn parse_path(path: &str) -> Result<JsonPath, String> {
    JsonPath::parse(path).map_err(|e| format!("{path:?} is not a JSONPath such as $.tokens: {e}"))
}

impl MeterCreate {
    /// Validates the definition; `id` is the new meter's identifier.
    pub fn into_meter(self, id: String, now: Timestamp) -> Result<Meter, MeterError> {
        let slug = UsageTypeKey::parse(self.slug.clone())
            .map_err(|_| invalid("slug", "1 to 64 characters of a-z, 0-9 and _, starting with a letter (it names a Tally usage type)"))?;
        if self.event_type.trim().is_empty() {
            return Err(invalid("eventType", "must not be empty"));
        }
        let value_property = match (self.aggregation.needs_value(), self.value_property) {
            (true, None) => {
                return Err(invalid("valueProperty", format!("{:?} meters need the JSONPath of their value", self.aggregation)));
            }
            // A COUNT meter counts events; OpenMeter ignores a value path there too.
            (false, _) => None,
            (true, Some(path)) => {
                parse_path(&path).map_err(|m| invalid("valueProperty", m))?;
                Some(path)
            }
        };
        check_group_by(&self.group_by)?;
        let name = self.name.filter(|n| !n.trim().is_empty()).unwrap_or_else(|| self.slug.clone());
        if name.len() > 256 {
            return Err(invalid("name", "at most 256 characters"));
        }
        Ok(Meter {
            id,
            slug,
            name,
            description: self.description.unwrap_or_default(),
            aggregation: self.aggregation,
            event_type: self.event_type,
            event_from: self.event_from,
            value_property,
            group_by: self.group_by,
            metadata: self.metadata,
            created_at: now,
            updated_at: now,
        })
    }
}

impl Meter {
    pub fn apply(&mut self, update: MeterUpdate, now: Timestamp) -> Result<(), MeterError> {
        if let Some(group_by) = update.group_by {
            check_group_by(&group_by)?;
            self.group_by = group_by;
        }
        if let Some(name) = update.name.filter(|n| !n.trim().is_empty()) {
            self.name = name;
        }
        if let Some(description) = update.description {
            self.description = description;
        }
        if update.metadata.is_some() {
            self.metadata = update.metadata;
        }
        self.updated_at = now;
        Ok(())
    }

    /// The Tally event id of a CloudEvent this meter counts: CloudEvents are unique by `source`
    /// and `id`, and one CloudEvent yields one Tally event per meter of its type.
    pub fn event_id(&self, source: &str, id: &str) -> String {
        let mut digest = Sha256::new();
        digest.update(source.as_bytes());
        digest.update([0]);
        digest.update(id.as_bytes());
        format!("{}:{}", self.slug, &hex::encode(digest.finalize())[..32])
    }

    /// The meter with its paths parsed, ready to read events.
    pub fn compile(&self) -> Result<CompiledMeter, MeterError> {
        let value = self.value_property.as_deref().map(parse_path).transpose().map_err(|m| invalid("valueProperty", m))?;
        let group_by = self
            .group_by
            .iter()
            .map(|(k, p)| parse_path(p).map(|path| (k.clone(), path)).map_err(|m| invalid(format!("groupBy.{k}"), m)))
            .collect::<Result<_, _>>()?;
        Ok(CompiledMeter { meter: self.clone(), value, group_by })
    }
}

#[derive(Debug, Clone)]
pub struct CompiledMeter {
    pub meter: Meter,
    value: Option<JsonPath>,
    group_by: BTreeMap<String, JsonPath>,
}

/// What one event contributes to a meter.
#[derive(Debug, Clone, PartialEq)]
pub enum Reading {
    /// COUNT: the event itself.
    Event,
    /// SUM, AVG, MIN, MAX, LATEST: an exact decimal.
    Number(Decimal),
    /// UNIQUE_COUNT: the value counted once.
    Distinct(String),
}

impl CompiledMeter {
    /// Reads the meter's value from an event's data; the error says what is wrong, for the sender.
    pub fn read(&self, data: &Value) -> Result<Reading, String> {
        let Some(path) = &self.value else { return Ok(Reading::Event) };
        let shown = self.meter.value_property.as_deref().unwrap_or("$");
        let found = path.query(data).at_most_one().map_err(|_| format!("{shown} matches more than one value in `data`"))?;
        let Some(value) = found else {
            return Err(format!("meter {}: `data` has no value at {shown}", self.meter.slug));
        };
        if self.meter.aggregation == MeterAggregation::UniqueCount {
            return match value {
                Value::String(s) => Ok(Reading::Distinct(s.clone())),
                Value::Number(n) => Ok(Reading::Distinct(n.to_string())),
                other => Err(format!("meter {}: {shown} must be a string, got {other}", self.meter.slug)),
            };
        }
        let number = match value {
            Value::Number(n) => decimal(&n.to_string()),
            Value::String(s) => decimal(s.trim()),
            _ => None,
        };
        number
            .map(Reading::Number)
            .ok_or_else(|| format!("meter {}: {shown} must be a number or a numeric string, got {value}", self.meter.slug))
    }

    /// The quantity Tally's own aggregates record for a reading: the value, or 1 per event.
    pub fn quantity(reading: &Reading) -> f64 {
        match reading {
            Reading::Number(d) => rust_decimal::prelude::ToPrimitive::to_f64(d).unwrap_or(0.0),
            Reading::Event | Reading::Distinct(_) => 1.0,
        }
    }

    /// The value of each group-by key in an event's data (`None`: absent or null).
    pub fn group_value(&self, key: &str, data: &Value) -> Option<String> {
        let found = self.group_by.get(key)?.query(data).at_most_one().ok().flatten()?;
        match found {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        }
    }

    pub fn has_group(&self, key: &str) -> bool {
        self.group_by.contains_key(key)
    }
}

/// A decimal from JSON number text or a numeric string, scientific notation included.
fn decimal(text: &str) -> Option<Decimal> {
    Decimal::from_str(text).ok().or_else(|| Decimal::from_scientific(text).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn create(body: Value) -> Result<Meter, MeterError> {
        let create: MeterCreate = serde_json::from_value(body).unwrap();
        create.into_meter("m1".into(), "2025-01-01T00:00:00Z".parse().unwrap())
    }

    fn tokens() -> CompiledMeter {
        create(json!({"slug": "tokens_total", "aggregation": "SUM", "eventType": "prompt", "valueProperty": "$.tokens",
                      "groupBy": {"model": "$.model", "tier": "$.plan.tier"}}))
        .unwrap()
        .compile()
        .unwrap()
    }

    #[test]
    fn a_meter_defaults_its_name_and_maps_to_a_usage_type() {
        let m = tokens().meter;
        assert_eq!((m.slug.as_str(), m.name.as_str()), ("tokens_total", "tokens_total"));
        assert_eq!(m.aggregation.usage_aggregation(), Aggregation::Sum);
        assert_eq!(MeterAggregation::UniqueCount.usage_aggregation(), Aggregation::Count);
    }

    #[test]
    fn bad_definitions_name_their_field() {
        let field = |body: Value| create(body).unwrap_err().field;
        assert_eq!(field(json!({"slug": "Tokens-Total", "aggregation": "SUM", "eventType": "p", "valueProperty": "$.t"})), "slug");
        assert_eq!(field(json!({"slug": "t", "aggregation": "SUM", "eventType": "p"})), "valueProperty");
        assert_eq!(field(json!({"slug": "t", "aggregation": "SUM", "eventType": "p", "valueProperty": "tokens["})), "valueProperty");
        assert_eq!(field(json!({"slug": "t", "aggregation": "COUNT", "eventType": " "})), "eventType");
        assert_eq!(field(json!({"slug": "t", "aggregation": "COUNT", "eventType": "p", "groupBy": {"subject": "$.s"}})), "groupBy.subject");
        assert_eq!(field(json!({"slug": "t", "aggregation": "COUNT", "eventType": "p", "groupBy": {"a-b": "$.s"}})), "groupBy.a-b");
    }

    #[test]
    fn count_meters_ignore_a_value_path() {
        let m = create(json!({"slug": "calls", "aggregation": "COUNT", "eventType": "api", "valueProperty": "$.x"})).unwrap();
        assert_eq!(m.value_property, None);
        assert_eq!(m.compile().unwrap().read(&json!({})).unwrap(), Reading::Event);
    }

    #[test]
    fn values_are_read_exactly() {
        let m = tokens();
        assert_eq!(m.read(&json!({"tokens": 0.1})).unwrap(), Reading::Number(Decimal::from_str("0.1").unwrap()));
        assert_eq!(m.read(&json!({"tokens": "12.50"})).unwrap(), Reading::Number(Decimal::from_str("12.50").unwrap()));
        assert_eq!(m.read(&json!({"tokens": 1e3})).unwrap(), Reading::Number(Decimal::from(1000)));
        assert!(m.read(&json!({"tokens": "many"})).unwrap_err().contains("numeric string"));
        assert!(m.read(&json!({"other": 1})).unwrap_err().contains("no value at $.tokens"));
        assert_eq!(CompiledMeter::quantity(&Reading::Number(Decimal::from_str("2.5").unwrap())), 2.5);
    }

    #[test]
    fn group_values_follow_their_paths() {
        let m = tokens();
        let data = json!({"model": "gpt-4o", "plan": {"tier": 2}, "tokens": 1});
        assert_eq!(m.group_value("model", &data).as_deref(), Some("gpt-4o"));
        assert_eq!(m.group_value("tier", &data).as_deref(), Some("2"));
        assert_eq!(m.group_value("model", &json!({"model": null})), None);
        assert_eq!(m.group_value("unknown", &data), None);
    }

    #[test]
    fn unique_counts_read_strings() {
        let m = create(json!({"slug": "users", "aggregation": "UNIQUE_COUNT", "eventType": "login", "valueProperty": "$.user"}))
            .unwrap()
            .compile()
            .unwrap();
        assert_eq!(m.read(&json!({"user": "ann"})).unwrap(), Reading::Distinct("ann".into()));
        assert!(m.read(&json!({"user": {"a": 1}})).is_err());
    }

    #[test]
    fn event_ids_are_unique_by_source_and_id() {
        let m = tokens().meter;
        assert_eq!(m.event_id("svc", "e1"), m.event_id("svc", "e1"));
        assert_ne!(m.event_id("svc", "e1"), m.event_id("svc2", "e1"));
        // The separator keeps ("a", "bc") and ("ab", "c") apart.
        assert_ne!(m.event_id("a", "bc"), m.event_id("ab", "c"));
        assert!(m.event_id(&"s".repeat(500), "e").len() <= crate::ids::MAX_ID_LEN);
    }

    #[test]
    fn updates_keep_the_identity() {
        let mut m = tokens().meter;
        let update: MeterUpdate = serde_json::from_value(json!({"name": "Tokens", "groupBy": {"model": "$.model"}})).unwrap();
        m.apply(update, "2025-02-01T00:00:00Z".parse().unwrap()).unwrap();
        assert_eq!((m.slug.as_str(), m.name.as_str(), m.group_by.len()), ("tokens_total", "Tokens", 1));
        let bad: MeterUpdate = serde_json::from_value(json!({"groupBy": {"model": "model["}})).unwrap();
        assert_eq!(m.apply(bad, Timestamp::now()).unwrap_err().field, "groupBy.model");
    }
}
