//! OpenMeter's v1 API, as its SDKs call it: CloudEvents ingestion and meter queries.
//!
//! Mapping: an OpenMeter namespace is a Tally organization; the subject is a Tally user; each
//! meter records into the Tally usage type named by its slug. A CloudEvent becomes one Tally
//! event per meter of its type, whose id is derived from the meter, `source` and `id` (so a
//! resent CloudEvent counts once) and whose properties are the CloudEvent's `data`, verbatim.
//! Unlike OpenMeter, a batch is checked whole before anything is stored, acknowledged only after
//! it commits, and an event no meter counts is refused rather than kept unmetered.

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;
use std::collections::BTreeMap;
use tally_domain::RawEvent;
use tally_domain::meter::CompiledMeter;
use tally_domain::meter::query::{MeterQuery, Row, WindowSize};

/// At most this many CloudEvents per request (the body limit applies too).
pub const MAX_BATCH: usize = 10_000;

/// A CloudEvent 1.0 in JSON. Extension attributes are accepted and ignored.
#[derive(Debug, Deserialize)]
pub struct CloudEvent {
    pub id: String,
    pub source: String,
    pub specversion: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub subject: String,
    #[serde(default)]
    pub time: Option<String>,
    #[serde(default)]
    pub datacontenttype: Option<String>,
    #[serde(default)]
    pub data: Option<Box<RawValue>>,
}

/// One refused CloudEvent of a request.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Invalid {
    pub index: usize,
    pub reason: String,
}

/// Parses one CloudEvent and maps it to the Tally events of the meters of its type.
pub fn map_event(raw: &RawValue, meters: &[CompiledMeter], organization_id: &str, now: Timestamp) -> Result<Vec<RawEvent>, String> {
    let event: CloudEvent = serde_json::from_str(raw.get()).map_err(|e| format!("not a CloudEvent: {e}"))?;
    if event.specversion != "1.0" {
        return Err(format!("`specversion` must be \"1.0\", got {:?}", event.specversion));
    }
    for (field, value) in [("id", &event.id), ("source", &event.source), ("type", &event.event_type), ("subject", &event.subject)] {
        if value.is_empty() {
            return Err(format!("`{field}` must not be empty"));
        }
    }
    if event.datacontenttype.as_deref().is_some_and(|t| t != "application/json") {
        return Err("`datacontenttype` must be application/json".to_owned());
    }
    let time = match event.time.as_deref() {
        None => now,
        Some(t) => t.parse::<Timestamp>().map_err(|_| format!("`time` {t:?} is not an RFC 3339 date-time"))?,
    };
    let data: Value = match &event.data {
        None => Value::Object(Default::default()),
        Some(raw) => match serde_json::from_str(raw.get()) {
            Ok(Value::Null) => Value::Object(Default::default()),
            Ok(object @ Value::Object(_)) => object,
            _ => return Err("`data` must be a JSON object".to_owned()),
        },
    };
    let counting: Vec<&CompiledMeter> = meters.iter().filter(|m| m.meter.event_type == event.event_type).collect();
    if counting.is_empty() {
        let mut types: Vec<&str> = meters.iter().map(|m| m.meter.event_type.as_str()).collect();
        types.sort_unstable();
        types.dedup();
        return Err(format!(
            "no meter counts events of type {:?}; create one first (meters count: {})",
            event.event_type,
            if types.is_empty() { "none yet".to_owned() } else { types.join(", ") }
        ));
    }
    let properties = event.data.filter(|d| d.get() != "null");
    counting
        .into_iter()
        .map(|meter| {
            let reading = meter.read(&data)?;
            Ok(RawEvent {
                id: Some(meter.meter.event_id(&event.source, &event.id)),
                timestamp: Some(time.to_string()),
                organization_id: Some(organization_id.to_owned()),
                user_id: Some(event.subject.clone()),
                usage_type: Some(meter.meter.slug.to_string()),
                quantity: Some(CompiledMeter::quantity(&reading)),
                properties: properties.clone(),
                ..RawEvent::default()
            })
        })
        .collect()
}

/// The query parameters of `GET …/query` and the body of `POST …/query`, before checking.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QueryInput {
    /// OpenMeter's progress-tracking id: accepted so its clients work, with nothing to track here.
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub to: Option<String>,
    #[serde(default)]
    pub window_size: Option<String>,
    #[serde(default)]
    pub window_time_zone: Option<String>,
    #[serde(default)]
    pub subject: Vec<String>,
    #[serde(default)]
    pub group_by: Vec<String>,
    #[serde(default)]
    pub filter_group_by: BTreeMap<String, Vec<String>>,
}

/// A query parameter that is wrong, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamError {
    pub parameter: String,
    pub detail: String,
}

fn param(parameter: &str, detail: impl Into<String>) -> ParamError {
    ParamError { parameter: parameter.to_owned(), detail: detail.into() }
}

impl QueryInput {
    /// From a query string's pairs: `subject` and `groupBy` repeat, filters are
    /// `filterGroupBy[key]=value` (repeatable).
    pub fn from_pairs(pairs: Vec<(String, String)>) -> Result<QueryInput, ParamError> {
        let mut input = QueryInput::default();
        for (key, value) in pairs {
            match key.as_str() {
                "clientId" => input.client_id = Some(value),
                "from" => input.from = Some(value),
                "to" => input.to = Some(value),
                "windowSize" => input.window_size = Some(value),
                "windowTimeZone" => input.window_time_zone = Some(value),
                "subject" => input.subject.push(value),
                "groupBy" => input.group_by.push(value),
                _ => match key.strip_prefix("filterGroupBy[").and_then(|k| k.strip_suffix(']')) {
                    Some(group) => input.filter_group_by.entry(group.to_owned()).or_default().push(value),
                    None => {
                        return Err(param(
                            &key,
                            "unknown parameter; known: from, to, windowSize, windowTimeZone, subject, groupBy, filterGroupBy[key], clientId",
                        ));
                    }
                },
            }
        }
        Ok(input)
    }

    pub fn parse(self) -> Result<MeterQuery, ParamError> {
        let instant = |name: &str, value: Option<String>| {
            value
                .map(|v| {
                    v.parse::<Timestamp>()
                        .map_err(|_| param(name, format!("{v:?} is not an RFC 3339 date-time such as 2025-01-31T00:00:00Z")))
                })
                .transpose()
        };
        let window_size = self
            .window_size
            .map(|w| {
                WindowSize::parse(&w).ok_or_else(|| param("windowSize", format!("{w:?} is not one of {}", WindowSize::ALL.join(", "))))
            })
            .transpose()?;
        let time_zone = match self.window_time_zone {
            None => TimeZone::UTC,
            Some(name) => TimeZone::get(&name)
                .map_err(|_| param("windowTimeZone", format!("{name:?} is not an IANA time zone such as Europe/Berlin")))?,
        };
        Ok(MeterQuery {
            from: instant("from", self.from)?,
            to: instant("to", self.to)?,
            window_size,
            time_zone,
            subjects: self.subject,
            group_by: self.group_by,
            filter_group_by: self.filter_group_by,
        })
    }
}

/// CSV of query rows: window bounds, subject, one column per group-by key, value.
pub fn rows_csv(rows: &[Row], group_keys: &[String]) -> String {
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut header = vec!["window_start", "window_end", "subject"];
    header.extend(group_keys.iter().map(String::as_str));
    header.push("value");
    let _ = w.write_record(&header);
    for row in rows {
        let mut record = vec![row.window_start.to_string(), row.window_end.to_string(), row.subject.clone().unwrap_or_default()];
        record.extend(group_keys.iter().map(|k| row.group_by.get(k).cloned().flatten().unwrap_or_default()));
        record.push(row.value.to_string());
        let _ = w.write_record(&record);
    }
    String::from_utf8(w.into_inner().unwrap_or_default()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tally_domain::meter::MeterCreate;

    fn meter(body: Value) -> CompiledMeter {
        let create: MeterCreate = serde_json::from_value(body).unwrap();
        create.into_meter("id".into(), Timestamp::UNIX_EPOCH).unwrap().compile().unwrap()
    }

    fn meters() -> Vec<CompiledMeter> {
        vec![
            meter(json!({"slug": "tokens", "aggregation": "SUM", "eventType": "prompt", "valueProperty": "$.tokens"})),
            meter(json!({"slug": "prompts", "aggregation": "COUNT", "eventType": "prompt"})),
            meter(json!({"slug": "calls", "aggregation": "COUNT", "eventType": "api"})),
        ]
    }

    fn raw(v: Value) -> Box<RawValue> {
        serde_json::value::to_raw_value(&v).unwrap()
    }

    fn now() -> Timestamp {
        "2025-01-02T00:00:00Z".parse().unwrap()
    }

    #[test]
    fn one_cloud_event_feeds_every_meter_of_its_type() {
        let e = raw(json!({"specversion": "1.0", "id": "e1", "source": "svc", "type": "prompt", "subject": "ann",
                           "time": "2025-01-01T10:00:00.123Z", "data": {"tokens": "12.5", "model": "gpt-4o"}}));
        let events = map_event(&e, &meters(), "acme", now()).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].usage_type.as_deref(), Some("tokens"));
        assert_eq!(events[0].quantity, Some(12.5));
        assert_eq!(events[1].quantity, Some(1.0));
        assert_eq!(events[0].timestamp.as_deref(), Some("2025-01-01T10:00:00.123Z"));
        assert_eq!((events[0].user_id.as_deref(), events[0].organization_id.as_deref()), (Some("ann"), Some("acme")));
        assert_eq!(events[0].properties.as_ref().unwrap().get(), r#"{"model":"gpt-4o","tokens":"12.5"}"#);
        assert_ne!(events[0].id, events[1].id);
    }

    #[test]
    fn bad_cloud_events_say_why() {
        let reason = |v: Value| map_event(&raw(v), &meters(), "acme", now()).unwrap_err();
        let base = json!({"specversion": "1.0", "id": "e1", "source": "svc", "type": "api", "subject": "ann"});
        let with = |k: &str, v: Value| {
            let mut e = base.clone();
            e[k] = v;
            e
        };
        assert!(reason(json!({"id": "e1"})).contains("missing field"));
        assert!(reason(with("specversion", json!("0.3"))).contains("specversion"));
        assert!(reason(with("subject", json!(""))).contains("subject"));
        assert!(reason(with("time", json!("yesterday"))).contains("time"));
        assert!(reason(with("data", json!([1]))).contains("JSON object"));
        assert!(reason(with("type", json!("unknown"))).contains("api, prompt"));
        assert!(reason(with("type", json!("prompt"))).contains("no value at $.tokens"));
        // Events without time happen now; null data is no data.
        let ok = map_event(&raw(with("data", Value::Null)), &meters(), "acme", now()).unwrap();
        assert_eq!((ok[0].timestamp.as_deref(), ok[0].properties.is_none()), (Some("2025-01-02T00:00:00Z"), true));
    }

    #[test]
    fn query_parameters_repeat_and_filter() {
        let pairs = [
            ("from", "2025-01-01T00:00:00Z"),
            ("windowSize", "DAY"),
            ("windowTimeZone", "Europe/Berlin"),
            ("subject", "ann"),
            ("subject", "bob"),
            ("groupBy", "model"),
            ("filterGroupBy[model]", "gpt-4o"),
        ];
        let input = QueryInput::from_pairs(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()).unwrap();
        let q = input.parse().unwrap();
        assert_eq!(q.subjects, ["ann", "bob"]);
        assert_eq!(q.filter_group_by["model"], ["gpt-4o"]);
        assert_eq!(q.window_size, Some(WindowSize::Day));
        let bad = |k: &str, v: &str| QueryInput::from_pairs(vec![(k.into(), v.into())]).and_then(QueryInput::parse).unwrap_err().parameter;
        assert_eq!(bad("windowSize", "WEEK"), "windowSize");
        assert_eq!(bad("windowTimeZone", "Mars/Olympus"), "windowTimeZone");
        assert_eq!(bad("from", "today"), "from");
        assert_eq!(bad("colour", "red"), "colour");
    }
}
