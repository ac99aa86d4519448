//! What self-hosted servers push: format 1 (`realm_counts`, `installation_counts`) and format 2
//! (those plus `audit_log_rows` and `realms`). Parsing checks every row before anything is stored
//! and names the table, row and field of the first problem. Each remote realm becomes an
//! organization of its own, named after the server and the realm's id on it.

use super::RoleCounts;
use super::audit::{AuditEvent, AuditEventType};
use crate::ids::OrganizationId;
use crate::role::Role;
use jiff::{SignedDuration, Timestamp};
use serde_json::{Map, Value};
use std::collections::HashSet;

#[derive(Debug, Clone, PartialEq)]
pub struct RemoteRealm {
    pub id: i64,
    pub uuid: String,
    pub name: String,
    pub deactivated: bool,
}

/// A row of `realm_counts` (with `realm_id`) or `installation_counts` (without).
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteCount {
    pub id: i64,
    pub realm_id: Option<i64>,
    pub property: String,
    pub subgroup: Option<String>,
    pub end_time: Timestamp,
    pub value: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RemotePush {
    /// 1 or 2.
    pub format: u8,
    pub realms: Vec<RemoteRealm>,
    pub realm_counts: Vec<RemoteCount>,
    pub installation_counts: Vec<RemoteCount>,
    /// Already in Tally's form, one organization per realm.
    pub audit_events: Vec<AuditEvent>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{table}[{row}].{field}: {reason}")]
pub struct PushError {
    pub table: &'static str,
    pub row: usize,
    pub field: String,
    pub reason: String,
}

impl RemotePush {
    /// Every realm the push names, as the organization it becomes. Realms only seen in
    /// `realm_counts` (format 1 has no `realms` table) come without a description (`false`):
    /// they are created if new, and never overwrite what a format-2 push said.
    pub fn realm_organizations(&self, server_id: &str) -> Vec<(OrganizationId, RemoteRealm, bool)> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for realm in &self.realms {
            if seen.insert(realm.id) {
                out.push((realm_organization(server_id, realm.id), realm.clone(), true));
            }
        }
        for id in self.realm_counts.iter().filter_map(|c| c.realm_id) {
            if seen.insert(id) {
                let placeholder = RemoteRealm { id, uuid: String::new(), name: format!("realm {id}"), deactivated: false };
                out.push((realm_organization(server_id, id), placeholder, false));
            }
        }
        out
    }
}

/// The organization a server's realm becomes.
pub fn realm_organization(server_id: &str, realm_id: i64) -> OrganizationId {
    OrganizationId::parse(format!("{server_id}.realm-{realm_id}")).expect("a server id and a number make a valid organization id")
}

/// A row being read: errors name its table and index.
struct Row<'a> {
    table: &'static str,
    index: usize,
    fields: &'a Map<String, Value>,
}

impl<'a> Row<'a> {
    fn error(&self, field: &str, reason: impl Into<String>) -> PushError {
        PushError { table: self.table, row: self.index, field: field.to_owned(), reason: reason.into() }
    }

    fn get(&self, field: &str) -> Result<&'a Value, PushError> {
        self.fields.get(field).filter(|v| !v.is_null()).ok_or_else(|| self.error(field, "is missing"))
    }

    fn int(&self, field: &str) -> Result<i64, PushError> {
        self.get(field)?.as_i64().ok_or_else(|| self.error(field, "must be an integer"))
    }

    fn text(&self, field: &str) -> Result<String, PushError> {
        let text = self.get(field)?.as_str().ok_or_else(|| self.error(field, "must be a string"))?;
        // PostgreSQL cannot store NUL in text; refuse it on every backend alike.
        if text.contains('\0') {
            return Err(self.error(field, "must not contain the NUL character (\\u0000)"));
        }
        Ok(text.to_owned())
    }

    fn flag(&self, field: &str) -> Result<bool, PushError> {
        match self.fields.get(field) {
            None | Some(Value::Null) => Ok(false),
            Some(v) => v.as_bool().ok_or_else(|| self.error(field, "must be true or false")),
        }
    }

    /// RFC 3339 text, or Unix seconds as servers in the field send them.
    fn time(&self, field: &str) -> Result<Timestamp, PushError> {
        let bad = || self.error(field, "must be an RFC 3339 date-time or Unix seconds");
        match self.get(field)? {
            Value::String(s) => s.parse().map_err(|_| bad()),
            Value::Number(n) => {
                let micros = n.as_f64().filter(|f| f.is_finite()).ok_or_else(bad)? * 1e6;
                Timestamp::from_microsecond(micros.round() as i64).map_err(|_| bad())
            }
            _ => Err(bad()),
        }
    }
}

fn rows<'a>(body: &'a Map<String, Value>, table: &'static str, required: bool) -> Result<Vec<Row<'a>>, PushError> {
    let whole = |reason: &str| PushError { table, row: 0, field: String::new(), reason: reason.to_owned() };
    let list = match body.get(table) {
        None | Some(Value::Null) if !required => return Ok(Vec::new()),
        None | Some(Value::Null) => return Err(whole("the table is missing")),
        Some(Value::Array(list)) => list,
        Some(_) => return Err(whole("must be an array of rows")),
    };
    list.iter()
        .enumerate()
        .map(|(index, v)| match v {
            Value::Object(fields) => Ok(Row { table, index, fields }),
            _ => Err(PushError { table, row: index, field: String::new(), reason: "a row must be an object".into() }),
        })
        .collect()
}

fn count(row: &Row<'_>, realm: bool) -> Result<RemoteCount, PushError> {
    let subgroup = match row.fields.get("subgroup") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => Some(other.to_string()),
    };
    Ok(RemoteCount {
        id: row.int("id")?,
        realm_id: if realm { Some(row.int("realm")?) } else { None },
        property: row.text("property")?,
        subgroup,
        end_time: row.time("end_time")?,
        value: row.int("value")?,
    })
}

/// How far ahead of the clock a pushed time may be.
const MAX_AHEAD: SignedDuration = SignedDuration::from_hours(24);

/// Reads a push; `server_id` names the pushing server, `now` bounds event times.
pub fn parse(body: &Value, server_id: &str, now: Timestamp) -> Result<RemotePush, PushError> {
    let body = body.as_object().ok_or(PushError {
        table: "body",
        row: 0,
        field: String::new(),
        reason: "the body must be a JSON object with realm_counts and installation_counts".into(),
    })?;
    let format = if body.contains_key("audit_log_rows") || body.contains_key("realms") { 2 } else { 1 };
    let realm_counts = rows(body, "realm_counts", true)?.iter().map(|r| count(r, true)).collect::<Result<Vec<_>, _>>()?;
    let installation_counts = rows(body, "installation_counts", true)?.iter().map(|r| count(r, false)).collect::<Result<Vec<_>, _>>()?;
    let mut realms = Vec::new();
    for row in rows(body, "realms", format == 2)? {
        realms.push(RemoteRealm {
            id: row.int("id")?,
            uuid: row.text("uuid")?,
            name: row.text("name")?,
            deactivated: row.flag("deactivated")?,
        });
    }
    let known: HashSet<i64> = realms.iter().map(|r| r.id).collect();
    if format == 2 {
        for (index, c) in realm_counts.iter().enumerate() {
            if let Some(realm) = c.realm_id.filter(|id| !known.contains(id)) {
                return Err(PushError { table: "realm_counts", row: index, field: "realm".into(), reason: unknown_realm(realm) });
            }
        }
    }
    let mut audit_events = Vec::new();
    for row in rows(body, "audit_log_rows", format == 2)? {
        let realm_id = row.int("realm_id")?;
        if !known.contains(&realm_id) {
            return Err(row.error("realm_id", unknown_realm(realm_id)));
        }
        audit_events.push(audit_event(&row, server_id, realm_id, now)?);
    }
    Ok(RemotePush { format, realms, realm_counts, installation_counts, audit_events })
}

fn unknown_realm(id: i64) -> String {
    format!("realm {id} is not in this payload's `realms`")
}

fn audit_event(row: &Row<'_>, server_id: &str, realm_id: i64, now: Timestamp) -> Result<AuditEvent, PushError> {
    let id = row.int("id")?;
    let event_time = row.time("event_time")?;
    if event_time > now + MAX_AHEAD {
        return Err(row.error("event_time", "is more than a day in the future"));
    }
    let event_type = AuditEventType::from_code(row.int("event_type")?).map_err(|e| row.error("event_type", e))?;
    let extra = extra_data(row)?;
    let role = |keys: &[&str]| -> Result<Option<Role>, PushError> {
        match keys.iter().find_map(|k| extra.get(*k).filter(|v| !v.is_null())) {
            None => Ok(None),
            Some(v) => {
                v.as_i64().and_then(Role::from_code).map(Some).ok_or_else(|| row.error("extra_data", format!("{v} is not a role code")))
            }
        }
    };
    Ok(AuditEvent {
        organization_id: realm_organization(server_id, realm_id),
        id: id.to_string(),
        event_time,
        event_type,
        user_id: None,
        role: role(&["role"])?,
        old_role: role(&["old_role", "old_value"])?,
        new_role: role(&["new_role", "new_value"])?,
        is_bot: extra.get("is_bot").and_then(Value::as_bool).unwrap_or(false),
        plan_id: match extra.get("plan_id").and_then(Value::as_str) {
            Some(plan) if plan.contains('\0') => {
                return Err(row.error("extra_data", "`plan_id` must not contain the NUL character (\\u0000)"));
            }
            plan => plan.map(str::to_owned),
        },
        role_counts: role_counts(&extra).map_err(|e| row.error("extra_data", e))?,
        backfilled: row.flag("backfilled")?,
        server_id: Some(server_id.to_owned()),
    })
}

/// `extra_data` comes as an object or as a JSON string holding one (older servers).
fn extra_data(row: &Row<'_>) -> Result<Map<String, Value>, PushError> {
    let value = match row.fields.get("extra_data") {
        None | Some(Value::Null) => return Ok(Map::new()),
        Some(Value::String(s)) if s.trim().is_empty() => return Ok(Map::new()),
        Some(Value::String(s)) => serde_json::from_str(s).map_err(|e| row.error("extra_data", format!("is not valid JSON: {e}")))?,
        Some(v) => v.clone(),
    };
    match value {
        Value::Object(map) => Ok(map),
        _ => Err(row.error("extra_data", "must be a JSON object")),
    }
}

/// Role counts as Tally writes them (`role_counts`), or in the numbered form servers in the field
/// use: `{"10": {"11": {role: n}, "12": bots}}`.
fn role_counts(extra: &Map<String, Value>) -> Result<Option<RoleCounts>, String> {
    if let Some(v) = extra.get("role_counts") {
        return RoleCounts::from_json(v).map(Some);
    }
    match extra.get("10") {
        None => Ok(None),
        Some(Value::Object(numbered)) => {
            let mut tally_form = Map::new();
            if let Some(humans) = numbered.get("11") {
                tally_form.insert("humans".into(), humans.clone());
            }
            if let Some(bots) = numbered.get("12") {
                tally_form.insert("bots".into(), bots.clone());
            }
            RoleCounts::from_json(&Value::Object(tally_form)).map(Some)
        }
        Some(_) => Err("role counts (\"10\") must be an object".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SERVER: &str = "6cde5f7a-1f7e-4a3e-9b55-5d6f0c1e2a3b";

    fn now() -> Timestamp {
        "2026-03-01T00:00:00Z".parse().unwrap()
    }

    fn format2() -> Value {
        json!({
            "realm_counts": [{"id": 1, "realm": 7, "property": "active_users:is_bot:day", "subgroup": "false", "end_time": 1767225600.0, "value": 12}],
            "installation_counts": [{"id": 1, "property": "active_users:is_bot:day", "subgroup": null, "end_time": "2026-01-01T00:00:00Z", "value": 30}],
            "realms": [{"id": 7, "uuid": "a8f1", "name": "Acme", "deactivated": false}],
            "audit_log_rows": [
                {"id": 40, "realm_id": 7, "event_time": "2026-01-02T00:00:00Z", "event_type": 101, "backfilled": false,
                 "extra_data": "{\"10\": {\"11\": {\"100\": 1, \"400\": 4, \"600\": 2}, \"12\": 1}}"},
                {"id": 41, "realm_id": 7, "event_time": 1767398400, "event_type": 105, "extra_data": {"role_counts": {"humans": {"400": 5}, "bots": 0}, "old_value": 600, "new_value": 400}},
                {"id": 42, "realm_id": 7, "event_time": "2026-01-04T00:00:00Z", "event_type": 201, "extra_data": null}
            ]
        })
    }

    #[test]
    fn reads_both_formats() {
        let push = parse(&format2(), SERVER, now()).unwrap();
        assert_eq!(push.format, 2);
        assert_eq!(push.realm_counts[0].realm_id, Some(7));
        assert_eq!(push.realm_counts[0].end_time, "2026-01-01T00:00:00Z".parse::<Timestamp>().unwrap());
        let first = &push.audit_events[0];
        assert_eq!(first.organization_id.as_str(), format!("{SERVER}.realm-7"));
        assert_eq!(first.id, "40");
        let counts = first.role_counts.unwrap();
        assert_eq!((counts.humans(Role::Member), counts.guests(), counts.bots), (4, 2, 1));
        assert_eq!(push.audit_events[1].old_role, Some(Role::Guest));
        assert_eq!(push.audit_events[2].role_counts, None);

        let mut format1 = format2();
        let body = format1.as_object_mut().unwrap();
        body.remove("realms");
        body.remove("audit_log_rows");
        let push = parse(&format1, SERVER, now()).unwrap();
        assert_eq!((push.format, push.audit_events.len(), push.installation_counts.len()), (1, 0, 1));
    }

    #[test]
    fn errors_name_table_row_and_field() {
        let broken = |edit: &dyn Fn(&mut Value)| {
            let mut body = format2();
            edit(&mut body);
            parse(&body, SERVER, now()).unwrap_err()
        };
        let e = broken(&|b| b["audit_log_rows"][1]["event_type"] = json!(999));
        assert_eq!((e.table, e.row, e.field.as_str()), ("audit_log_rows", 1, "event_type"));
        let e = broken(&|b| b["audit_log_rows"][0]["extra_data"] = json!("{not json"));
        assert_eq!((e.table, e.row, e.field.as_str()), ("audit_log_rows", 0, "extra_data"));
        let e = broken(&|b| b["realms"][0]["name"] = json!("a\u{0}b"));
        assert_eq!((e.table, e.row, e.field.as_str()), ("realms", 0, "name"));
        assert!(e.reason.contains("NUL"), "{e}");
        let e = broken(&|b| b["audit_log_rows"][2]["realm_id"] = json!(8));
        assert!(e.reason.contains("realm 8"), "{e}");
        let e = broken(&|b| {
            b["realm_counts"][0].as_object_mut().unwrap().remove("value");
        });
        assert_eq!((e.table, e.row, e.field.as_str(), e.reason.as_str()), ("realm_counts", 0, "value", "is missing"));
        let e = broken(&|b| {
            b.as_object_mut().unwrap().remove("installation_counts");
        });
        assert_eq!(e.table, "installation_counts");
        let e = broken(&|b| b["audit_log_rows"][0]["extra_data"] = json!({"role_counts": {"humans": {"401": 1}}}));
        assert!(e.reason.contains("401"));
        assert_eq!(e.to_string(), "audit_log_rows[0].extra_data: role counts: unknown role \"401\"; known: 100, 200, 300, 400, 600");
    }
}
