//! Upgrading a store made by an earlier release keeps its figures: the schema-2 migration
//! re-keys the per-user hourly cells and derives the organization-wide ones from them; the
//! schema-13 to -17 migrations derive the daily latency histograms, the unpriced counts, the
//! organizations' monthly cells, the users' daily LLM cells and the organizations' monthly sums
//! of latest values from what was stored before; later ones the organizations' daily cells
//! from the hours and their weekly cells from the days.

use jiff::Timestamp;
use tally_domain::OrganizationId;
use tally_store::{Store, UsageFilter};

const V1_SQLITE: &str = include_str!("../migrations/sqlite/0001_core.sql");
const V1_POSTGRES: &str = include_str!("../migrations/postgres/0001_core.sql");

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// Two users' cells in the same organization hour, as release 1 stored them.
const CELLS: [(&str, f64, &str); 2] = [("a", 2.0, "2025-01-01T10:20:00Z"), ("b", 5.0, "2025-01-01T10:40:00Z")];

async fn check(store: &dyn Store) {
    let filter = UsageFilter { organization_id: Some(OrganizationId::parse("acme").unwrap()), ..Default::default() };
    let (from, to) = (ts("2025-01-01T00:00:00Z"), ts("2025-01-02T00:00:00Z"));
    let org = store.usage_cells(&filter, from, to, tally_store::CellScope::Organizations).await.unwrap();
    assert_eq!(org.len(), 1, "{org:?}");
    let a = org[0].aggregate;
    assert_eq!((a.count, a.sum, a.min, a.max, a.last_value), (2, 7.0, 2.0, 5.0, 5.0));
    assert_eq!(a.last_ts, ts("2025-01-01T10:40:00Z"));
    let users = store.usage_cells(&filter, from, to, tally_store::CellScope::Users).await.unwrap();
    let mut by_user: Vec<(String, f64)> = users.iter().map(|c| (c.user_id.clone(), c.aggregate.sum)).collect();
    by_user.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(by_user, [("a".to_owned(), 2.0), ("b".to_owned(), 5.0)]);
    // The daily cells derived from the hours, then the weekly ones from the days (2025-01-01
    // is a Wednesday of the week from Monday 2024-12-30).
    let weeks = store.usage_week_cells(&filter, ts("2024-12-30T00:00:00Z"), ts("2025-01-06T00:00:00Z"), false).await.unwrap();
    let w: Vec<_> = weeks.iter().map(|c| (c.at, c.aggregate.count, c.aggregate.sum, c.aggregate.last_value)).collect();
    assert_eq!(w, [(ts("2024-12-30T00:00:00Z"), 2, 7.0, 5.0)]);
}

#[tokio::test]
async fn sqlite_release_1_upgrades() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tally.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(V1_SQLITE).unwrap();
        conn.execute_batch("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL); INSERT INTO schema_migrations VALUES (1, 0);")
            .unwrap();
        for (user, qty, at) in CELLS {
            let at = ts(at).as_microsecond();
            conn.execute(
                "INSERT INTO usage_hourly (organization_id, hour, usage_type, team_id, user_id, model, provider, count, sum, min, max, \
                 last_ts, last_value, llm_successes, llm_failures, input_tokens, output_tokens, cost_nanos, latency_ms_sum) \
                 VALUES ('acme', ?1, 'api_call', '', ?2, '', '', 1, ?3, ?3, ?3, ?4, ?3, 0, 0, 0, 0, 0, 0)",
                rusqlite::params![ts("2025-01-01T10:00:00Z").as_microsecond(), user, qty, at],
            )
            .unwrap();
        }
    }
    let store = tally_store::open(&format!("sqlite://{}", path.display())).await.unwrap();
    check(store.as_ref()).await;
}

#[tokio::test]
async fn postgres_release_1_upgrades() {
    let Ok(base) = std::env::var(tally_store::testing::TEST_DATABASE_ENV) else {
        eprintln!("skipped: no test database");
        return;
    };
    let url = tally_store::testing::fresh_schema(&base).await.unwrap();
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client.batch_execute(V1_POSTGRES).await.unwrap();
    client
        .batch_execute(
            "CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL); \
             INSERT INTO schema_migrations VALUES (1, now());",
        )
        .await
        .unwrap();
    for (user, qty, at) in CELLS {
        client
            .execute(
                "INSERT INTO usage_hourly (organization_id, hour, usage_type, team_id, user_id, model, provider, count, sum, min, max, \
                 last_ts, last_value, llm_successes, llm_failures, input_tokens, output_tokens, cost_nanos, latency_ms_sum) \
                 VALUES ('acme', $1, 'api_call', '', $2, '', '', 1, $3, $3, $3, $4, $3, 0, 0, 0, 0, 0, 0)",
                &[&ts("2025-01-01T10:00:00Z"), &user, &qty, &ts(at)],
            )
            .await
            .unwrap();
    }
    let store = tally_store::open(&url).await.unwrap();
    check(store.as_ref()).await;
}

/// LLM requests over three days and two users, some without a latency.
fn llm_events() -> Vec<tally_domain::UsageEvent> {
    let types: std::collections::HashSet<String> = ["llm_request".to_owned()].into();
    let ctx = tally_domain::event::ValidationContext { now: ts("2026-01-01T00:00:00Z"), known_types: &types };
    (0..60)
        .map(|i| {
            let latency = if i % 7 == 0 { String::new() } else { format!(r#","latency_ms":{}"#, 37 * i * i % 5000) };
            let json = format!(
                r#"{{"id":"l{i}","timestamp":"2025-01-0{}T{:02}:00:00Z","organization_id":"acme","user_id":"u{}","type":"llm_request","model":"m{}"{latency}}}"#,
                1 + i % 3,
                i % 24,
                i % 2,
                i % 5
            );
            tally_domain::RawEvent::from_json(&json).unwrap().validate(&ctx).unwrap()
        })
        .collect()
}

/// Storage gauges of two users over two months: the monthly cell keeps the latest value.
fn storage_events() -> Vec<tally_domain::UsageEvent> {
    let types: std::collections::HashSet<String> = ["storage_bytes".to_owned()].into();
    let ctx = tally_domain::event::ValidationContext { now: ts("2026-01-01T00:00:00Z"), known_types: &types };
    [("s1", "u0", "2025-01-01T10:00:00Z", 500), ("s2", "u1", "2025-01-02T10:00:00Z", 700), ("s3", "u0", "2025-02-01T00:00:00Z", 900)]
        .into_iter()
        .map(|(id, user, at, bytes)| {
            let json = format!(
                r#"{{"id":"{id}","timestamp":"{at}","organization_id":"acme","user_id":"{user}","type":"storage_bytes","quantity":{bytes}}}"#
            );
            tally_domain::RawEvent::from_json(&json).unwrap().validate(&ctx).unwrap()
        })
        .collect()
}

/// Ingests LLM requests and gauges, forgets what a release before migrations 12 to 17 (and the
/// weekly cells' migration) would not have, reopens, and expects the backfills to equal what
/// ingestion wrote.
async fn backfill_equals_ingestion(url: &str, forget: impl AsyncFnOnce()) {
    let store = tally_store::open(url).await.unwrap();
    let mut events = llm_events();
    events.extend(storage_events());
    store.record_events(events).await.unwrap();
    let live = store.aggregates_fingerprint().await.unwrap();
    let org = OrganizationId::parse("acme").unwrap();
    let (from, to) = (ts("2025-01-01T00:00:00Z"), ts("2025-01-04T00:00:00Z"));
    let live_days = store.llm_latency_days(&org, None, from, to).await.unwrap();
    let u0 = tally_domain::UserId::parse("u0").unwrap();
    let live_user_days = store.llm_latency_days(&org, Some(&u0), from, to).await.unwrap();
    assert!(live_user_days.histogram.count() > 0);
    let mut live_cells = store.llm_day_cells(&org, None, from, to).await.unwrap();
    assert!(!live_cells.is_empty());
    assert_eq!((live.latency_day_requests, live.unpriced_requests, live.org_monthly_count), (60, 60, 63));
    // One monthly cell per month, type and model: the requests' of five models (quantity 1 each),
    // January's and February's gauges.
    assert_eq!(live.org_monthly_latest_values_sum, 5.0 + 700.0 + 900.0);
    // Weekly likewise: every request and January's gauges fall in the week of Monday 2024-12-30.
    assert_eq!((live.org_weekly_count, live.org_weekly_latest_values_sum), (63, 5.0 + 700.0 + 900.0));
    // Users' latest values summed per organization and month: January's gauges 500 and 700,
    // February's 900, and every user's latest request (quantity 1) in January.
    assert_eq!(live.org_type_month_latest_sum, 500.0 + 700.0 + 900.0 + 2.0);
    assert_eq!((live.org_type_month_count, live.org_type_month_sum), (63, 60.0 + 500.0 + 700.0 + 900.0));
    drop(store);
    forget().await;
    let store = tally_store::open(url).await.unwrap();
    assert_eq!(store.aggregates_fingerprint().await.unwrap(), live);
    assert_eq!(store.llm_latency_days(&org, None, from, to).await.unwrap(), live_days);
    assert_eq!(store.llm_latency_days(&org, Some(&u0), from, to).await.unwrap(), live_user_days);
    let mut cells = store.llm_day_cells(&org, None, from, to).await.unwrap();
    let key = |c: &tally_domain::series::Cell| (c.user_id.clone(), c.at, c.model.clone(), c.provider.clone());
    cells.sort_by_key(key);
    live_cells.sort_by_key(key);
    assert_eq!(cells, live_cells);
}

const FORGET_DERIVED: &str = "DROP TABLE llm_latency_daily_org; DROP TABLE llm_unpriced; DROP TABLE usage_monthly_org; \
     DROP TABLE llm_daily; DROP TABLE usage_monthly_org_type; ALTER TABLE user_usage_monthly DROP COLUMN replaced_value; \
     DELETE FROM schema_migrations WHERE version BETWEEN 12 AND 17;";
/// The weekly cells, derived from the daily ones (SQLite's migration 23, PostgreSQL's 27).
const FORGET_WEEKS_SQLITE: &str = "DROP TABLE usage_weekly_org; DELETE FROM schema_migrations WHERE version = 23;";
const FORGET_WEEKS_POSTGRES: &str = "DROP TABLE usage_weekly_org; DELETE FROM schema_migrations WHERE version = 27;";
/// PostgreSQL's migration 12 also created the histogram functions, and 21 turned the histograms
/// of the tables dropped above into text (with a merge function for text).
const FORGET_FUNCTIONS: &str = "DROP FUNCTION tally_merge_buckets(JSONB, JSONB); DROP FUNCTION tally_latency_bucket(BIGINT); \
     DROP FUNCTION tally_merge_buckets(TEXT, TEXT); DELETE FROM schema_migrations WHERE version = 21;";

#[tokio::test]
async fn sqlite_derived_roll_ups_are_backfilled() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tally.db");
    backfill_equals_ingestion(&format!("sqlite://{}", path.display()), async || {
        rusqlite::Connection::open(&path).unwrap().execute_batch(&format!("{FORGET_DERIVED} {FORGET_WEEKS_SQLITE}")).unwrap();
    })
    .await;
}

#[tokio::test]
async fn postgres_derived_roll_ups_are_backfilled() {
    let Ok(base) = std::env::var(tally_store::testing::TEST_DATABASE_ENV) else {
        eprintln!("skipped: no test database");
        return;
    };
    let url = tally_store::testing::fresh_schema(&base).await.unwrap();
    backfill_equals_ingestion(&url, async || {
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        client.batch_execute(&format!("{FORGET_DERIVED} {FORGET_FUNCTIONS} {FORGET_WEEKS_POSTGRES}")).await.unwrap();
    })
    .await;
}
