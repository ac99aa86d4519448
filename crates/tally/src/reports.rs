//! User reports: the record each user gets (details, organization, subscriptions, usage, LLM
//! figures, balances), as JSON and as a flat CSV row. Selection, filtering and ordering happen in
//! the store (`tally_store::report`); this shapes what it loaded.

use serde_json::{Map, Value, json};
use std::collections::HashMap;
use tally_domain::entities::Plan;
use tally_domain::report::balance::{Balance, billing_subscription};
use tally_domain::rollup::Aggregate;
use tally_domain::{Money, UsageType};
use tally_store::ReportRow;

fn llm(aggregate: Option<&Aggregate>) -> Value {
    let pick = |f: fn(&Aggregate) -> i64| aggregate.map_or(0, f);
    json!({
        "requests": pick(|a| a.count),
        "failed": pick(|a| a.llm_failures),
        "input_tokens": pick(|a| a.input_tokens),
        "output_tokens": pick(|a| a.output_tokens),
        "cost": Money::from_nanos(pick(|a| a.cost_nanos)),
    })
}

/// The JSON record of one user; `plans` by id, `types` every known usage type.
pub fn record(row: &ReportRow, types: &[UsageType], plans: &HashMap<String, Plan>) -> Value {
    let user = &row.user;
    let find = |figures: &[(String, Aggregate)], t: &str| figures.iter().find(|(k, _)| k == t).map(|(_, a)| *a);
    let mut usage = Map::new();
    for t in types {
        let key = t.key.as_str();
        if key == "llm_request" {
            continue;
        }
        let all_time = find(&row.all_time, key).map_or(0.0, |a| a.sum);
        let current = find(&row.current, key).map_or(0.0, |a| a.sum);
        usage.insert(key.to_owned(), json!({ "all_time": all_time, "current_period": current }));
    }
    usage.insert("total_storage_bytes".into(), json!(find(&row.all_time, "storage_bytes").map_or(0.0, |a| a.last_value)));
    usage.insert(
        "llm".into(),
        json!({
            "all_time": llm(find(&row.all_time, "llm_request").as_ref()),
            "current_period": llm(find(&row.current, "llm_request").as_ref()),
        }),
    );
    usage.insert("current_period_start".into(), json!(row.period.0));
    usage.insert("current_period_end".into(), json!(row.period.1));
    let subscription = billing_subscription(&row.subscriptions);
    let plan = subscription.and_then(|s| plans.get(&s.plan_id));
    let mut balances = Map::new();
    if let Some(plan) = plan {
        for key in plan.usage.keys() {
            let Some(limit) = Balance::limit(Some(plan), subscription, key) else { continue };
            let aggregation = types.iter().find(|t| t.key.as_str() == key).map_or(tally_domain::Aggregation::Sum, |t| t.aggregation);
            let current = find(&row.current, key);
            let latest = find(&row.all_time, key).map_or(0.0, |a| a.last_value);
            let used = Balance::used(aggregation, current.as_ref().map_or(0.0, |a| a.sum), current.as_ref().map_or(0.0, |a| a.max), latest);
            balances.insert(key.clone(), json!(Balance::of(Some(limit), used)));
        }
    }
    usage.insert("balances".into(), Value::Object(balances));
    json!({
        "id": user.id,
        "username": user.username,
        "email": user.email,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "full_name": format!("{} {}", user.first_name, user.last_name).trim(),
        "is_active": user.is_active,
        "is_superuser": user.is_superuser,
        "is_bot": user.is_bot,
        "role": user.role,
        "date_joined": user.date_joined,
        "last_login": user.last_login,
        "last_activity": user.last_activity,
        "metadata": user.metadata,
        "organization": {"id": user.organization_id, "name": row.organization_name, "role": user.role},
        "subscriptions": row.subscriptions.iter().map(|s| json!({
            "id": s.id,
            "plan": s.plan_id,
            "status": s.status.as_str(),
            "current_period_start": s.current_period_start,
            "current_period_end": s.current_period_end,
            "trial_end": s.trial_end,
        })).collect::<Vec<_>>(),
        "service_usage": usage,
    })
}

/// The flat CSV columns of a record: its scalar fields as `__` paths (as `q` names them), each
/// path split once, not once per row.
pub struct CsvColumns {
    header: Vec<String>,
    paths: Vec<Vec<String>>,
}

impl CsvColumns {
    pub fn new(types: &[UsageType]) -> Self {
        let mut header: Vec<String> = [
            "id",
            "username",
            "email",
            "first_name",
            "last_name",
            "is_active",
            "is_superuser",
            "is_bot",
            "role",
            "date_joined",
            "last_login",
            "last_activity",
            "organization__id",
            "organization__name",
            "subscriptions",
            "service_usage__current_period_start",
            "service_usage__current_period_end",
            "service_usage__total_storage_bytes",
        ]
        .map(String::from)
        .to_vec();
        for t in types.iter().filter(|t| t.key.as_str() != "llm_request") {
            header.push(format!("service_usage__{}__all_time", t.key));
            header.push(format!("service_usage__{}__current_period", t.key));
        }
        for period in ["all_time", "current_period"] {
            for m in ["requests", "failed", "input_tokens", "output_tokens", "cost"] {
                header.push(format!("service_usage__llm__{period}__{m}"));
            }
        }
        let paths = header.iter().map(|h| h.split("__").map(String::from).collect()).collect();
        CsvColumns { header, paths }
    }

    pub fn header(&self) -> &[String] {
        &self.header
    }

    /// A record as CSV cells, in header order. Neighbouring columns share most of their path
    /// (`service_usage__submission__…`), so each looks up only where it parts from the one before.
    pub fn row(&self, record: &Value) -> Vec<String> {
        let mut previous: &[String] = &[];
        // `resolved[i]`: the value at the first `i` parts of the previous path.
        let mut resolved: Vec<&Value> = vec![record];
        let mut cells = Vec::with_capacity(self.paths.len());
        for path in &self.paths {
            if path.len() == 1 && path[0] == "subscriptions" {
                let subs = record["subscriptions"].as_array().map(Vec::as_slice).unwrap_or_default();
                let plans: Vec<String> =
                    subs.iter().map(|s| format!("{}:{}", s["plan"].as_str().unwrap_or(""), s["status"].as_str().unwrap_or(""))).collect();
                cells.push(plans.join(";"));
                continue;
            }
            let shared = previous.iter().zip(path).take_while(|(a, b)| a == b).count().min(path.len() - 1);
            resolved.truncate(shared + 1);
            for part in &path[shared..] {
                let next = &resolved[resolved.len() - 1][part.as_str()];
                resolved.push(next);
            }
            previous = path;
            cells.push(match resolved[resolved.len() - 1] {
                Value::Null => String::new(),
                Value::String(s) => s.clone(),
                other => other.to_string(),
            });
        }
        cells
    }
}

/// Rows per store round trip while exporting.
pub const EXPORT_PAGE: u32 = 1000;

type UserKey = (tally_domain::OrganizationId, tally_domain::UserId);

/// Every row a report query selects, a page at a time. Without an ordering the pages follow the
/// key order (keyset paging: memory stays flat however many users match), and the next page's
/// keys are read while this page's rows load; with one, the ordered keys are read once (not the
/// rows) and their rows loaded a page at a time.
pub struct Export {
    store: std::sync::Arc<dyn tally_store::Store>,
    query: tally_store::report::ReportQuery,
    /// Keys read ahead: the next page's in key order, or every remaining one with an ordering.
    pending: Option<std::collections::VecDeque<UserKey>>,
    done: bool,
}

impl Export {
    pub fn new(store: std::sync::Arc<dyn tally_store::Store>, mut query: tally_store::report::ReportQuery) -> Self {
        query.count = false;
        query.offset = 0;
        query.after = None;
        query.limit = if query.ordering.is_empty() { EXPORT_PAGE } else { u32::MAX };
        Export { store, query, pending: None, done: false }
    }

    /// The next page of rows; `None` once every row was given.
    async fn next_page(&mut self) -> Result<Option<Vec<ReportRow>>, tally_store::StoreError> {
        if self.done {
            return Ok(None);
        }
        let mut pending = match self.pending.take() {
            Some(pending) => pending,
            None => self.store.report_users(&self.query).await?.users.into(),
        };
        let keys: Vec<UserKey> = pending.drain(..pending.len().min(EXPORT_PAGE as usize)).collect();
        if keys.is_empty() {
            self.done = true;
            return Ok(None);
        }
        let rows = self.store.report_rows(&keys, self.query.now);
        if !self.query.ordering.is_empty() {
            self.done = pending.is_empty();
            self.pending = Some(pending);
            return Ok(Some(rows.await?));
        }
        if keys.len() < EXPORT_PAGE as usize {
            self.done = true;
            return Ok(Some(rows.await?));
        }
        // The next page's keys are read beside this page's rows, on a second store connection.
        let mut next = self.query.clone();
        next.after = keys.last().cloned();
        let (rows, ahead) = tokio::try_join!(rows, self.store.report_users(&next))?;
        self.query = next;
        self.pending = Some(ahead.users.into());
        Ok(Some(rows))
    }

    /// The pages as a stream, read one page ahead by a task of their own: the next page loads
    /// while the caller writes this one out, so the store and the formatting overlap, and at
    /// most three pages are held. The task stops at the first error (the stream's last item) or
    /// once the stream is dropped.
    pub fn prefetched(mut self) -> impl futures_util::Stream<Item = Result<Vec<ReportRow>, tally_store::StoreError>> + Send {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            loop {
                let page = self.next_page().await.transpose();
                let last = !matches!(page, Some(Ok(_)));
                if let Some(page) = page
                    && tx.send(page).await.is_err()
                {
                    return;
                }
                if last {
                    return;
                }
            }
        });
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|page| (page, rx)) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_follow_the_header_whatever_paths_they_share() {
        let types = UsageType::builtins();
        let columns = CsvColumns::new(&types);
        let record = json!({
            "id": "ann", "role": 100, "is_bot": false, "last_login": null,
            "organization": {"id": "acme", "name": "Acme"},
            "subscriptions": [{"plan": "basic", "status": "active"}, {"plan": "old", "status": "canceled"}],
            "service_usage": {
                "current_period_start": "2025-01-01T00:00:00Z",
                "submission": {"all_time": 37.0, "current_period": 30.0},
                "api_call": {"current_period": 2},
                "llm": {"all_time": {"requests": 3, "cost": "0.25"}, "current_period": {"requests": 1}}
            }
        });
        let cells = columns.row(&record);
        assert_eq!(cells.len(), columns.header().len());
        // Every cell is what looking its whole path up from the top gives.
        for (path, cell) in columns.header().iter().zip(&cells) {
            let expected = match path.as_str() {
                "subscriptions" => "basic:active;old:canceled".to_owned(),
                _ => match path.split("__").fold(&record, |v, part| &v[part]) {
                    Value::Null => String::new(),
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                },
            };
            assert_eq!(cell, &expected, "{path}");
        }
        let cell = |path: &str| cells[columns.header().iter().position(|h| h == path).unwrap()].as_str();
        assert_eq!([cell("id"), cell("role"), cell("last_login"), cell("organization__name")], ["ann", "100", "", "Acme"]);
        assert_eq!([cell("service_usage__submission__all_time"), cell("service_usage__submission__current_period")], ["37.0", "30.0"]);
        assert_eq!([cell("service_usage__api_call__all_time"), cell("service_usage__api_call__current_period")], ["", "2"]);
        assert_eq!([cell("service_usage__llm__all_time__cost"), cell("service_usage__llm__current_period__requests")], ["0.25", "1"]);
    }
}
