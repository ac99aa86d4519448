//! One behavioural suite for the store, run against every backend: SQLite always, PostgreSQL
//! when `TALLY_TEST_DATABASE_URL` is set (CI always sets it).

use jiff::Timestamp;
use std::collections::HashSet;
use std::sync::Arc;
use tally_domain::entities::{Organization, Plan, Subscription, Team, User};
use tally_domain::event::ValidationContext;
use tally_domain::meter::{Meter, MeterCreate};
use tally_domain::seats::audit::{AuditEvent, AuditEventType};
use tally_domain::seats::ledger::LedgerEntry;
use tally_domain::{OrganizationId, RawEvent, Role, Scope, TeamId, UsageEvent, UserId};
use tally_store::{ApiKey, MonthCells, Page, Store, StoreError, Subject, TimeRange, UsageFilter, Write};

macro_rules! store_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let t = tally_store::testing::sqlite().await;
                    super::$name(t.store.clone()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    let Some(t) = tally_store::testing::postgres().await else {
                        eprintln!("skipped: {} is not set", tally_store::testing::TEST_DATABASE_ENV);
                        return;
                    };
                    super::$name(t.store.clone()).await;
                }
            )*
        }
    };
}

store_tests!(
    fresh_store_knows_builtin_usage_types,
    organizations_create_replace_list,
    users_teams_subscriptions_plans_round_trip,
    api_keys_lookup_and_revoke,
    events_are_deduplicated_within_and_across_batches,
    events_register_unknown_organizations_users_and_teams,
    totals_are_exact_for_any_range,
    rebuild_reproduces_live_aggregates,
    an_import_rolls_up_exactly_what_ingestion_would,
    latest_values_and_llm_figures_roll_up,
    llm_latencies_roll_up_into_daily_histograms,
    monthly_cells_sum_the_hours_of_each_utc_month,
    daily_cells_sum_the_hours_of_each_utc_day,
    weekly_cells_sum_the_days_of_each_utc_week,
    monthly_latest_sums_move_by_each_users_change,
    meters_are_per_organization_and_events_keep_their_properties,
    audit_events_apply_once_even_when_written_concurrently,
    ledger_commits_need_the_lease_and_never_repeat_a_cause,
    window_totals_and_daily_llm_cells_come_from_the_aggregates,
    racing_evaluations_open_one_alert_and_queue_one_delivery,
    a_claimed_delivery_is_nobody_elses_until_its_lease_ends,
    current_period_figures_follow_the_billing_period,
    period_figures_stay_exact_while_periods_change_under_ingestion,
    daily_activity_splits_at_utc_midnight_and_reads_numeric_frustration_only,
);

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn org(id: &str) -> OrganizationId {
    OrganizationId::parse(id).unwrap()
}

fn event(json: &str) -> UsageEvent {
    let types: HashSet<String> =
        ["api_call", "submission", "storage_bytes", "llm_request", "login"].into_iter().map(String::from).collect();
    let ctx = ValidationContext { now: ts("2030-01-01T00:00:00Z"), known_types: &types };
    RawEvent::from_json(json).unwrap().validate(&ctx).unwrap()
}

fn api_call(id: &str, org: &str, user: &str, at: &str, qty: f64) -> UsageEvent {
    event(&format!(r#"{{"id":"{id}","timestamp":"{at}","organization_id":"{org}","user_id":"{user}","type":"api_call","quantity":{qty}}}"#))
}

async fn fresh_store_knows_builtin_usage_types(store: Arc<dyn Store>) {
    let keys: Vec<String> = store.usage_types().await.unwrap().into_iter().map(|t| t.key.to_string()).collect();
    for k in ["api_call", "submission", "storage_bytes", "asr_seconds", "mt_characters", "llm_request", "login"] {
        assert!(keys.contains(&k.to_string()), "{k} missing from {keys:?}");
    }
}

async fn organizations_create_replace_list(store: Arc<dyn Store>) {
    let mut acme = Organization::registered(org("acme"), ts("2025-01-01T00:00:00Z"));
    acme.name = "Acme".into();
    acme.metadata = serde_json::json!({"tier": "gold"});
    store.save_organization(&acme, Write::Create).await.unwrap();
    let again = store.save_organization(&acme, Write::Create).await;
    assert!(matches!(again, Err(StoreError::AlreadyExists(_))), "{again:?}");
    acme.name = "Acme Inc".into();
    acme.is_active = false;
    store.save_organization(&acme, Write::Replace).await.unwrap();
    assert_eq!(store.organization(&org("acme")).await.unwrap(), Some(acme.clone()));
    assert_eq!(store.organization(&org("nope")).await.unwrap(), None);
    for i in 0..5 {
        store.save_organization(&Organization::registered(org(&format!("o{i}")), acme.created_at), Write::Create).await.unwrap();
    }
    let page = store.organizations(Page { limit: 2, offset: 1 }).await.unwrap();
    assert_eq!(page.count, 6);
    let ids: Vec<&str> = page.results.iter().map(|o| o.id.as_str()).collect();
    assert_eq!(ids, ["o0", "o1"]);
}

async fn users_teams_subscriptions_plans_round_trip(store: Arc<dyn Store>) {
    let at = ts("2025-01-01T00:00:00Z");
    let mut user = User::registered(UserId::parse("u1").unwrap(), org("acme"), at);
    user.role = Role::Guest;
    user.email = "u1@example.com".into();
    user.last_login = Some(ts("2025-01-02T03:04:05.123456Z"));
    store.save_user(&user, Write::Create).await.unwrap();
    assert_eq!(store.user(&user.id).await.unwrap(), Some(user.clone()));
    let listed = store.users(Some(&org("acme")), Page::all()).await.unwrap();
    assert_eq!(listed.count, 1);
    assert_eq!(store.users(Some(&org("other")), Page::all()).await.unwrap().count, 0);
    assert_eq!(store.users(None, Page::all()).await.unwrap().count, 1);

    let team = Team {
        id: TeamId::parse("t1").unwrap(),
        organization_id: org("acme"),
        name: "Core".into(),
        metadata: serde_json::json!({}),
        created_at: at,
    };
    store.save_team(&team, Write::Create).await.unwrap();
    assert_eq!(store.team(&team.id).await.unwrap(), Some(team.clone()));
    assert_eq!(store.teams(Some(&org("acme")), Page::all()).await.unwrap().results, vec![team]);

    let plan: Plan = serde_json::from_value(serde_json::json!({
        "id": "pro", "name": "Pro", "usage": {"submission": {"limit": 5000, "unit_price": "0.002"}},
        "seats": {"free_seats": 10, "price_per_seat_monthly": "8", "minimum_licenses": 6, "guest_seat_ratio": 5},
        "created_at": "2025-01-01T00:00:00Z"
    }))
    .unwrap();
    store.save_plan(&plan, Write::Create).await.unwrap();
    assert_eq!(store.plan("pro").await.unwrap(), Some(plan.clone()));
    assert_eq!(store.plans(Page::all()).await.unwrap().count, 1);

    let sub: Subscription = serde_json::from_value(serde_json::json!({
        "id": "s1", "organization_id": "acme", "plan_id": "pro", "status": "payment_issue",
        "current_period_start": "2025-01-01T00:00:00Z", "current_period_end": "2025-02-01T00:00:00Z",
        "trial_end": null, "add_ons": {"submission": 1000.0}, "created_at": "2025-01-01T00:00:00Z"
    }))
    .unwrap();
    store.save_subscription(&sub, Write::Create).await.unwrap();
    assert_eq!(store.subscription("s1").await.unwrap(), Some(sub.clone()));
    assert_eq!(store.subscriptions(Some(&org("acme")), Page::all()).await.unwrap().results, vec![sub]);
}

async fn api_keys_lookup_and_revoke(store: Arc<dyn Store>) {
    let key = ApiKey {
        id: "k1".into(),
        name: "ci".into(),
        scope: Scope::parse("org:acme").unwrap(),
        digest: "d1".into(),
        created_at: ts("2025-01-01T00:00:00Z"),
        revoked_at: None,
    };
    store.create_api_key(&key).await.unwrap();
    assert_eq!(store.api_key_by_digest("d1").await.unwrap(), Some(key.clone()));
    assert_eq!(store.api_key_by_digest("d2").await.unwrap(), None);
    assert!(store.revoke_api_key("k1", ts("2025-01-02T00:00:00Z")).await.unwrap());
    assert!(!store.revoke_api_key("k1", ts("2025-01-02T00:00:00Z")).await.unwrap());
    assert_eq!(store.api_key_by_digest("d1").await.unwrap(), None);
    assert_eq!(store.api_keys().await.unwrap().len(), 1);
}

async fn events_are_deduplicated_within_and_across_batches(store: Arc<dyn Store>) {
    let a = api_call("e1", "acme", "u1", "2025-01-01T10:00:00Z", 2.0);
    let b = api_call("e2", "acme", "u1", "2025-01-01T10:30:00Z", 3.0);
    // Same id in another organization is a different event.
    let c = api_call("e1", "other", "u9", "2025-01-01T10:30:00Z", 5.0);
    let stored = store.record_events(vec![a.clone(), b.clone(), a.clone(), c]).await.unwrap();
    assert_eq!(stored, [true, true, false, true]);
    let stored = store.record_events(vec![b, api_call("e3", "acme", "u1", "2025-01-01T11:00:00Z", 1.0)]).await.unwrap();
    assert_eq!(stored, [false, true]);
    assert_eq!(store.event_count().await.unwrap(), 4);
    let totals = store.usage_totals(&Subject::Organization(org("acme")), TimeRange::default()).await.unwrap();
    assert_eq!(totals.len(), 1);
    assert_eq!((totals[0].count, totals[0].sum), (3, 6.0));
}

async fn events_register_unknown_organizations_users_and_teams(store: Arc<dyn Store>) {
    let mut user = User::registered(UserId::parse("u1").unwrap(), org("acme"), ts("2024-01-01T00:00:00Z"));
    user.username = "ada".into();
    store.save_user(&user, Write::Create).await.unwrap();
    let e =
        event(r#"{"id":"e1","timestamp":"2025-03-01T10:00:00Z","organization_id":"acme","user_id":"u1","team_id":"t1","type":"login"}"#);
    let f = event(r#"{"id":"e2","timestamp":"2025-02-01T10:00:00Z","organization_id":"acme","user_id":"u2","type":"login"}"#);
    store.record_events(vec![e, f]).await.unwrap();
    assert_eq!(store.organization(&org("acme")).await.unwrap().unwrap().name, "acme");
    assert!(store.team(&TeamId::parse("t1").unwrap()).await.unwrap().is_some());
    let u1 = store.user(&UserId::parse("u1").unwrap()).await.unwrap().unwrap();
    assert_eq!(u1.username, "ada", "registration must not overwrite synced metadata");
    assert_eq!(u1.last_activity, Some(ts("2025-03-01T10:00:00Z")));
    // An older event does not move last activity backwards; saving the user does not erase it.
    store
        .record_events(vec![event(
            r#"{"id":"e3","timestamp":"2025-01-01T10:00:00Z","organization_id":"acme","user_id":"u1","type":"login"}"#,
        )])
        .await
        .unwrap();
    store.save_user(&user, Write::Replace).await.unwrap();
    let u1 = store.user(&UserId::parse("u1").unwrap()).await.unwrap().unwrap();
    assert_eq!(u1.last_activity, Some(ts("2025-03-01T10:00:00Z")));
    // A newer one does.
    store
        .record_events(vec![event(
            r#"{"id":"e4","timestamp":"2025-03-02T08:00:00Z","organization_id":"acme","user_id":"u1","type":"login"}"#,
        )])
        .await
        .unwrap();
    assert_eq!(store.user(&UserId::parse("u1").unwrap()).await.unwrap().unwrap().last_activity, Some(ts("2025-03-02T08:00:00Z")));
    assert_eq!(store.user(&UserId::parse("u2").unwrap()).await.unwrap().unwrap().organization_id, org("acme"));
}

async fn totals_are_exact_for_any_range(store: Arc<dyn Store>) {
    let events: Vec<UsageEvent> = [
        ("a", "u1", "2025-01-01T09:59:59.999999Z", 1.0),
        ("b", "u1", "2025-01-01T10:00:00Z", 10.0),
        ("c", "u2", "2025-01-01T10:15:00Z", 100.0),
        ("d", "u1", "2025-01-01T12:45:00Z", 1000.0),
        ("e", "u2", "2025-01-01T13:00:00Z", 10000.0),
    ]
    .iter()
    .map(|(id, u, at, q)| api_call(id, "acme", u, at, *q))
    .collect();
    store.record_events(events).await.unwrap();
    let acme = Subject::Organization(org("acme"));
    let u1 = Subject::User { organization_id: org("acme"), user_id: UserId::parse("u1").unwrap() };
    let sum = |subject: Subject, from: Option<&str>, to: Option<&str>| {
        let store = store.clone();
        let range = TimeRange { from: from.map(ts), to: to.map(ts) };
        async move { store.usage_totals(&subject, range).await.unwrap().first().map_or(0.0, |t| t.sum) }
    };
    assert_eq!(sum(acme.clone(), None, None).await, 11111.0);
    assert_eq!(sum(u1.clone(), None, None).await, 1011.0);
    assert_eq!(sum(acme.clone(), Some("2025-01-01T10:00:00Z"), Some("2025-01-01T13:00:00Z")).await, 1110.0);
    assert_eq!(sum(acme.clone(), Some("2025-01-01T10:10:00Z"), Some("2025-01-01T12:50:00Z")).await, 1100.0);
    assert_eq!(sum(acme.clone(), Some("2025-01-01T10:10:00Z"), Some("2025-01-01T10:20:00Z")).await, 100.0);
    assert_eq!(sum(acme.clone(), Some("2025-01-01T09:59:59.999999Z"), Some("2025-01-01T10:00:00.000001Z")).await, 11.0);
    assert_eq!(sum(acme.clone(), None, Some("2025-01-01T10:00:00Z")).await, 1.0);
    assert_eq!(sum(acme, Some("2025-01-01T12:45:00Z"), None).await, 11000.0);
    assert_eq!(sum(u1, Some("2025-01-01T10:00:00Z"), None).await, 1010.0);
    // Whether any event falls in a range, for the filter.
    let filter = |user: Option<&str>| UsageFilter {
        organization_id: Some(org("acme")),
        user_id: user.map(|u| UserId::parse(u).unwrap()),
        ..UsageFilter::default()
    };
    let any = |f: UsageFilter, from: &str, to: &str| {
        let (store, from, to) = (store.clone(), ts(from), ts(to));
        async move { store.any_usage_events(&f, from, to).await.unwrap() }
    };
    assert!(any(filter(None), "2025-01-01T10:10:00Z", "2025-01-01T10:20:00Z").await);
    assert!(!any(filter(None), "2025-01-01T10:20:00Z", "2025-01-01T11:00:00Z").await);
    assert!(!any(filter(Some("u1")), "2025-01-01T10:10:00Z", "2025-01-01T10:20:00Z").await);
    assert!(!any(filter(None), "2025-01-01T10:00:00Z", "2025-01-01T10:00:00Z").await, "an empty range holds nothing");
}

async fn latest_values_and_llm_figures_roll_up(store: Arc<dyn Store>) {
    let events = vec![
        event(
            r#"{"id":"s1","timestamp":"2025-01-01T10:00:00Z","organization_id":"o","user_id":"u","type":"storage_bytes","quantity":500}"#,
        ),
        event(
            r#"{"id":"s2","timestamp":"2025-01-02T10:00:00Z","organization_id":"o","user_id":"u","type":"storage_bytes","quantity":300}"#,
        ),
        event(
            r#"{"id":"l1","timestamp":"2025-01-02T10:00:00Z","organization_id":"o","user_id":"u","type":"llm_request","model":"gpt-4o","provider":"openai","status":"error","input_tokens":7,"output_tokens":0,"cost":"0.000001","latency_ms":900}"#,
        ),
    ];
    store.record_events(events).await.unwrap();
    let fp = store.aggregates_fingerprint().await.unwrap();
    assert_eq!(fp.latest_values_sum, 300.0 + 1.0);
    assert_eq!(fp.hourly_cost_nanos, 1000);
    assert_eq!(fp.hourly_tokens, 7);
    assert_eq!(fp.month_rows, 2);
}

fn timed_call(id: &str, user: &str, at: &str, latency: Option<i64>) -> UsageEvent {
    let latency = latency.map_or(String::new(), |ms| format!(r#","latency_ms":{ms}"#));
    event(&format!(
        r#"{{"id":"{id}","timestamp":"{at}","organization_id":"acme","user_id":"{user}","type":"llm_request","model":"m","status":"success"{latency}}}"#
    ))
}

async fn llm_latencies_roll_up_into_daily_histograms(store: Arc<dyn Store>) {
    let acme = org("acme");
    let ann = tally_domain::UserId::parse("ann").unwrap();
    // Two batches: the second merges into the rows the first wrote.
    store
        .record_events(vec![
            timed_call("a", "ann", "2025-01-01T09:00:00Z", None),
            timed_call("b", "ann", "2025-01-01T10:00:00Z", Some(100)),
            timed_call("c", "bob", "2025-01-01T11:00:00Z", Some(4000)),
        ])
        .await
        .unwrap();
    store
        .record_events(vec![
            timed_call("d", "ann", "2025-01-01T12:00:00Z", Some(120)),
            timed_call("e", "ann", "2025-01-03T08:00:00Z", Some(30)),
            timed_call("a", "ann", "2025-01-01T09:00:00Z", None),
        ])
        .await
        .unwrap();
    let (from, to) = (ts("2025-01-01T00:00:00Z"), ts("2025-01-04T00:00:00Z"));
    let user = store.llm_latency_days(&acme, Some(&ann), from, to).await.unwrap();
    assert_eq!((user.histogram.count(), user.histogram.sum_ms), (3, 250));
    let slowest = user.histogram.quantile(1.0).unwrap();
    assert!((119..=121).contains(&slowest), "{slowest} is 120 within 1%");
    assert_eq!(user.first_day, Some(from));
    let whole = store.llm_latency_days(&acme, None, from, to).await.unwrap();
    assert_eq!((whole.histogram.count(), whole.histogram.sum_ms), (4, 4250));
    let later = store.llm_latency_days(&acme, None, ts("2025-01-02T00:00:00Z"), to).await.unwrap();
    assert_eq!((later.histogram.count(), later.first_day), (1, Some(ts("2025-01-03T00:00:00Z"))));
    // The first request of a day, with or without a latency.
    assert_eq!(store.llm_first_request(&acme, Some(&ann), from, to).await.unwrap(), Some(ts("2025-01-01T09:00:00Z")));
    assert_eq!(store.llm_first_request(&acme, None, ts("2025-01-01T10:30:00Z"), to).await.unwrap(), Some(ts("2025-01-01T11:00:00Z")));
    assert_eq!(store.llm_first_request(&acme, None, ts("2025-01-04T00:00:00Z"), ts("2025-01-05T00:00:00Z")).await.unwrap(), None);
    let fp = store.aggregates_fingerprint().await.unwrap();
    assert_eq!((fp.latency_day_rows, fp.latency_day_requests, fp.org_latency_day_rows, fp.org_latency_day_requests), (3, 5, 2, 5));
    store.rebuild_aggregates().await.unwrap();
    assert_eq!(store.aggregates_fingerprint().await.unwrap(), fp);
    assert_eq!(store.llm_latency_days(&acme, Some(&ann), from, to).await.unwrap(), user);
}

/// Ann's API call in an organization and team.
fn teamed(id: &str, org: &str, at: &str, team: &str, qty: f64) -> UsageEvent {
    event(&format!(
        r#"{{"id":"{id}","timestamp":"{at}","organization_id":"{org}","user_id":"ann","team_id":"{team}","type":"api_call","quantity":{qty}}}"#
    ))
}

/// Organization-wide cells as (organization, time, team, count, sum, latest value), sorted.
fn org_cell_rows(cells: Vec<tally_domain::series::Cell>) -> Vec<(String, Timestamp, String, i64, f64, f64)> {
    let mut got: Vec<(String, Timestamp, String, i64, f64, f64)> = cells
        .iter()
        .map(|c| (c.organization_id.clone(), c.at, c.team_id.clone(), c.aggregate.count, c.aggregate.sum, c.aggregate.last_value))
        .collect();
    got.sort_by(|a, b| (&a.0, a.1, &a.2).cmp(&(&b.0, b.1, &b.2)));
    got
}

async fn weekly_cells_sum_the_days_of_each_utc_week(store: Arc<dyn Store>) {
    // 2025-01-06 and 2025-01-13 are Mondays.
    store
        .record_events(vec![
            teamed("w1", "acme", "2025-01-06T00:00:00Z", "red", 2.0),
            teamed("w2", "acme", "2025-01-12T23:59:59Z", "red", 3.0),
            teamed("w3", "acme", "2025-01-13T00:00:00Z", "red", 5.0),
            teamed("w4", "acme", "2025-01-08T12:00:00Z", "blue", 7.0),
            teamed("w5", "globex", "2025-01-07T06:00:00Z", "red", 11.0),
        ])
        .await
        .unwrap();
    let (s, week1, week2, week3) = (String::from, ts("2025-01-06T00:00:00Z"), ts("2025-01-13T00:00:00Z"), ts("2025-01-20T00:00:00Z"));
    let all = UsageFilter::default();
    assert_eq!(
        org_cell_rows(store.usage_week_cells(&all, week1, week3, false).await.unwrap()),
        [
            (s("acme"), week1, s("blue"), 1, 7.0, 7.0),
            (s("acme"), week1, s("red"), 2, 5.0, 3.0),
            (s("acme"), week2, s("red"), 1, 5.0, 5.0),
            (s("globex"), week1, s("red"), 1, 11.0, 11.0),
        ],
        "a week holds its first and last microsecond; its latest value is its latest event's"
    );
    assert_eq!(
        org_cell_rows(store.usage_week_cells(&all, week1, week2, true).await.unwrap()),
        [(s(""), week1, s("blue"), 1, 7.0, 7.0), (s(""), week1, s("red"), 3, 16.0, 11.0)],
        "summed over organizations, a week's latest value is its largest"
    );
    let acme = UsageFilter { organization_id: Some(org("acme")), team_id: Some(TeamId::parse("red").unwrap()), ..UsageFilter::default() };
    assert_eq!(
        org_cell_rows(store.usage_week_cells(&acme, week2, week3, false).await.unwrap()),
        [(s("acme"), week2, s("red"), 1, 5.0, 5.0)]
    );
    let fp = store.aggregates_fingerprint().await.unwrap();
    assert_eq!((fp.org_weekly_rows, fp.org_weekly_count, fp.org_weekly_sum), (4, 5, 28.0));
    store.rebuild_aggregates().await.unwrap();
    assert_eq!(store.aggregates_fingerprint().await.unwrap(), fp);
}

async fn daily_cells_sum_the_hours_of_each_utc_day(store: Arc<dyn Store>) {
    store
        .record_events(vec![
            teamed("d1", "acme", "2025-01-01T00:00:00Z", "red", 2.0),
            teamed("d2", "acme", "2025-01-01T23:59:59Z", "red", 3.0),
            teamed("d3", "acme", "2025-01-02T00:00:00Z", "red", 5.0),
            teamed("d4", "acme", "2025-01-01T12:00:00Z", "blue", 7.0),
            teamed("d5", "globex", "2025-01-01T06:00:00Z", "red", 11.0),
        ])
        .await
        .unwrap();
    let (from, to) = (ts("2025-01-01T00:00:00Z"), ts("2025-01-03T00:00:00Z"));
    let (s, jan1, jan2) = (String::from, ts("2025-01-01T00:00:00Z"), ts("2025-01-02T00:00:00Z"));
    let all = UsageFilter::default();
    let days = [(from, jan2), (jan2, to)];
    assert_eq!(
        org_cell_rows(store.usage_day_cells(&all, &days, false).await.unwrap()),
        [
            (s("acme"), jan1, s("blue"), 1, 7.0, 7.0),
            (s("acme"), jan1, s("red"), 2, 5.0, 3.0),
            (s("acme"), jan2, s("red"), 1, 5.0, 5.0),
            (s("globex"), jan1, s("red"), 1, 11.0, 11.0),
        ],
        "a day holds its first and last microsecond; its latest value is its latest event's"
    );
    assert_eq!(
        org_cell_rows(store.usage_day_cells(&all, &days, true).await.unwrap()),
        [(s(""), jan1, s("blue"), 1, 7.0, 7.0), (s(""), jan1, s("red"), 3, 16.0, 11.0), (s(""), jan2, s("red"), 1, 5.0, 5.0)]
    );
    assert_eq!(
        org_cell_rows(store.usage_day_cells(&all, &[(from, to)], false).await.unwrap()),
        [
            (s("acme"), jan1, s("blue"), 1, 7.0, 7.0),
            (s("acme"), jan1, s("red"), 3, 10.0, 5.0),
            (s("globex"), jan1, s("red"), 1, 11.0, 11.0)
        ],
        "a bucket of two days sums them into one cell at its start"
    );
    assert_eq!(
        org_cell_rows(store.usage_day_cells(&all, &[(from, to)], true).await.unwrap()),
        [(s(""), jan1, s("blue"), 1, 7.0, 7.0), (s(""), jan1, s("red"), 4, 21.0, 11.0)],
        "summed over organizations too, the bucket's latest value is its largest"
    );
    let acme = UsageFilter { organization_id: Some(org("acme")), team_id: Some(TeamId::parse("red").unwrap()), ..UsageFilter::default() };
    assert_eq!(
        org_cell_rows(store.usage_day_cells(&acme, &[(jan2, to)], false).await.unwrap()),
        [(s("acme"), jan2, s("red"), 1, 5.0, 5.0)]
    );
    assert!(store.usage_day_cells(&acme, &[], false).await.unwrap().is_empty());
    let fp = store.aggregates_fingerprint().await.unwrap();
    assert_eq!((fp.org_daily_rows, fp.org_daily_count, fp.org_daily_sum), (4, 5, 28.0));
    store.rebuild_aggregates().await.unwrap();
    assert_eq!(store.aggregates_fingerprint().await.unwrap(), fp);
}

async fn monthly_cells_sum_the_hours_of_each_utc_month(store: Arc<dyn Store>) {
    store
        .record_events(vec![
            api_call("m1", "acme", "ann", "2025-01-31T23:59:59Z", 2.0),
            api_call("m2", "acme", "bob", "2025-01-01T00:00:00Z", 3.0),
            api_call("m3", "acme", "ann", "2025-02-01T00:00:00Z", 5.0),
            api_call("m4", "globex", "cy", "2025-01-15T00:00:00Z", 7.0),
        ])
        .await
        .unwrap();
    let all = UsageFilter::default();
    let cells =
        store.usage_month_cells(&all, ts("2025-01-01T00:00:00Z"), ts("2025-03-01T00:00:00Z"), MonthCells::Split, false).await.unwrap();
    let mut got: Vec<(String, Timestamp, i64, f64)> =
        cells.iter().map(|c| (c.organization_id.clone(), c.at, c.aggregate.count, c.aggregate.sum)).collect();
    got.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    assert_eq!(
        got,
        [
            ("acme".to_owned(), ts("2025-01-01T00:00:00Z"), 2, 5.0),
            ("acme".to_owned(), ts("2025-02-01T00:00:00Z"), 1, 5.0),
            ("globex".to_owned(), ts("2025-01-01T00:00:00Z"), 1, 7.0)
        ]
    );
    let acme = UsageFilter { organization_id: Some(org("acme")), ..UsageFilter::default() };
    let february =
        store.usage_month_cells(&acme, ts("2025-02-01T00:00:00Z"), ts("2025-03-01T00:00:00Z"), MonthCells::Split, false).await.unwrap();
    assert_eq!((february.len(), february[0].aggregate.last_value, february[0].user_id.as_str()), (1, 5.0, ""));
    // Unsplit: one cell per organization, month and type, summed over teams.
    let teamed = |id: &str, team: &str, qty: f64| {
        event(&format!(
            r#"{{"id":"{id}","timestamp":"2025-02-10T00:00:00Z","organization_id":"acme","user_id":"ann","team_id":"{team}","type":"api_call","quantity":{qty}}}"#
        ))
    };
    store.record_events(vec![teamed("t1", "red", 10.0), teamed("t2", "blue", 20.0)]).await.unwrap();
    let split =
        store.usage_month_cells(&acme, ts("2025-02-01T00:00:00Z"), ts("2025-03-01T00:00:00Z"), MonthCells::Split, false).await.unwrap();
    assert_eq!(split.len(), 3, "no team, red, blue");
    let whole =
        store.usage_month_cells(&acme, ts("2025-02-01T00:00:00Z"), ts("2025-03-01T00:00:00Z"), MonthCells::PerType, false).await.unwrap();
    let got: Vec<(&str, i64, f64, f64, &str)> =
        whole.iter().map(|c| (c.usage_type.as_str(), c.aggregate.count, c.aggregate.sum, c.aggregate.max, c.team_id.as_str())).collect();
    assert_eq!(got, [("api_call", 3, 35.0, 20.0, "")]);
    // Summed over organizations: one cell per month and type (per team too when split), with
    // the organizations' counts, sums and peaks; hourly cells likewise per hour.
    let (january, march) = (ts("2025-01-01T00:00:00Z"), ts("2025-03-01T00:00:00Z"));
    let summed = |cells: Vec<tally_domain::series::Cell>| {
        let mut got: Vec<(Timestamp, String, String, i64, f64, f64)> = cells
            .iter()
            .map(|c| (c.at, c.organization_id.clone(), c.team_id.clone(), c.aggregate.count, c.aggregate.sum, c.aggregate.max))
            .collect();
        got.sort_by(|a, b| (a.0, &a.2).partial_cmp(&(b.0, &b.2)).unwrap());
        got
    };
    let (jan, feb) = (january, ts("2025-02-01T00:00:00Z"));
    let e = String::new;
    assert_eq!(
        summed(store.usage_month_cells(&all, january, march, MonthCells::PerType, true).await.unwrap()),
        [(jan, e(), e(), 3, 12.0, 7.0), (feb, e(), e(), 3, 35.0, 20.0)]
    );
    assert_eq!(
        summed(store.usage_month_cells(&all, january, march, MonthCells::Split, true).await.unwrap()),
        [
            (jan, e(), e(), 3, 12.0, 7.0),
            (feb, e(), e(), 1, 5.0, 5.0),
            (feb, e(), "blue".into(), 1, 20.0, 20.0),
            (feb, e(), "red".into(), 1, 10.0, 10.0)
        ]
    );
    let hours = store.usage_cells(&all, january, march, tally_store::CellScope::Summed).await.unwrap();
    let first_hour = ts("2025-01-01T00:00:00Z");
    assert_eq!(
        hours.iter().filter(|c| c.at == first_hour).map(|c| (c.organization_id.as_str(), c.aggregate.count)).collect::<Vec<_>>(),
        [("", 1)]
    );
    assert_eq!(hours.iter().map(|c| c.aggregate.count).sum::<i64>(), 6);
}

fn gauge(id: &str, org: &str, user: &str, at: &str, bytes: f64) -> UsageEvent {
    event(&format!(
        r#"{{"id":"{id}","timestamp":"{at}","organization_id":"{org}","user_id":"{user}","type":"storage_bytes","quantity":{bytes}}}"#
    ))
}

async fn monthly_latest_sums_move_by_each_users_change(store: Arc<dyn Store>) {
    let january = ts("2025-01-01T00:00:00Z");
    let sums = async || {
        let cells = store
            .usage_month_cells(&UsageFilter::default(), january, ts("2025-03-01T00:00:00Z"), MonthCells::LatestSums, false)
            .await
            .unwrap();
        let mut got: Vec<(String, Timestamp, i64, f64)> =
            cells.iter().map(|c| (c.organization_id.clone(), c.at, c.aggregate.count, c.aggregate.last_value)).collect();
        got.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        got
    };
    store
        .record_events(vec![
            gauge("g1", "acme", "ann", "2025-01-05T00:00:00Z", 100.0),
            gauge("g2", "acme", "bob", "2025-01-06T00:00:00Z", 300.0),
            gauge("g3", "globex", "cy", "2025-02-01T00:00:00Z", 7.0),
        ])
        .await
        .unwrap();
    // Ann reports less later in January, an older report arrives late (no change), and a
    // February report starts a month of its own.
    store
        .record_events(vec![
            gauge("g4", "acme", "ann", "2025-01-20T00:00:00Z", 40.0),
            gauge("g5", "acme", "bob", "2025-01-02T00:00:00Z", 999.0),
            gauge("g6", "acme", "ann", "2025-02-03T00:00:00Z", 60.0),
        ])
        .await
        .unwrap();
    let february = ts("2025-02-01T00:00:00Z");
    let expected =
        [("acme".to_owned(), january, 4, 340.0), ("acme".to_owned(), february, 1, 60.0), ("globex".to_owned(), february, 1, 7.0)];
    assert_eq!(sums().await, expected);
    // Within one batch too: two reports of one user count once, with the later value.
    store
        .record_events(vec![
            gauge("g7", "globex", "cy", "2025-02-10T00:00:00Z", 9.0),
            gauge("g8", "globex", "cy", "2025-02-11T00:00:00Z", 5.0),
        ])
        .await
        .unwrap();
    assert_eq!(sums().await[2], ("globex".to_owned(), february, 3, 5.0));
    // Concurrent batches new to the same users' month (PostgreSQL commits them in parallel): the
    // sum is each user's latest value, whichever batch inserted the users' rows.
    let batch = |n: usize| {
        let users: Vec<UsageEvent> = (0..20)
            .map(|u| gauge(&format!("c{n}-{u}"), "initech", &format!("u{u}"), &format!("2025-03-0{}T00:00:00Z", n + 1), 10.0 * n as f64))
            .collect();
        let store = store.clone();
        tokio::spawn(async move { store.record_events(users).await.unwrap() })
    };
    let racing: Vec<_> = (1..=4).map(batch).collect();
    for task in racing {
        task.await.unwrap();
    }
    let march = store
        .usage_month_cells(&UsageFilter::default(), ts("2025-03-01T00:00:00Z"), ts("2025-04-01T00:00:00Z"), MonthCells::LatestSums, false)
        .await
        .unwrap();
    assert_eq!(march.iter().map(|c| (c.aggregate.count, c.aggregate.last_value)).collect::<Vec<_>>(), [(80, 20.0 * 40.0)]);
    let live = store.aggregates_fingerprint().await.unwrap();
    store.rebuild_aggregates().await.unwrap();
    assert_eq!(store.aggregates_fingerprint().await.unwrap(), live);
}

async fn rebuild_reproduces_live_aggregates(store: Arc<dyn Store>) {
    let events = mixed_events(500);
    for chunk in events.chunks(64) {
        store.record_events(chunk.to_vec()).await.unwrap();
    }
    let live = store.aggregates_fingerprint().await.unwrap();
    assert_eq!(store.rebuild_aggregates().await.unwrap(), 500);
    let rebuilt = store.aggregates_fingerprint().await.unwrap();
    assert_eq!(live, rebuilt);
    assert_eq!(live.hourly_count, 500);
    assert_eq!(live.user_count, 500);
}

/// Events of every kind over three organizations, 40 days, two teams and LLM figures.
fn mixed_events(n: usize) -> Vec<UsageEvent> {
    (0..n)
        .map(|i| {
            let ty = ["api_call", "submission", "storage_bytes", "llm_request"][i % 4];
            let at = Timestamp::from_second(1_735_689_600 + (i as i64 * 7919) % (40 * 86_400)).unwrap();
            event(&format!(
                r#"{{"id":"e{i}","timestamp":"{at}","organization_id":"o{}","user_id":"u{}","team_id":"t{}","type":"{ty}","quantity":{},"model":"m{}","provider":"p","status":"{}","input_tokens":{},"output_tokens":3,"cost":"0.0{}","latency_ms":{},"properties":{{"n":{i}}}}}"#,
                i % 3,
                i % 17,
                i % 2,
                (i % 50) as f64 * 0.5,
                i % 3,
                if i % 7 == 0 { "error" } else { "success" },
                i,
                i % 9,
                i * 3
            ))
        })
        .collect()
}

async fn an_import_rolls_up_exactly_what_ingestion_would(store: Arc<dyn Store>) {
    let events = mixed_events(600);
    store.record_events(events[..200].to_vec()).await.unwrap();
    let mut importer = store.importer().await.unwrap();
    // Staged in two parts, with 100 events already stored and one staged twice.
    importer.stage(events[100..350].to_vec()).await.unwrap();
    importer.stage([&events[350..450], &events[300..301]].concat()).await.unwrap();
    assert_eq!(importer.staged(), 351);
    assert_eq!(store.event_count().await.unwrap(), 200, "nothing is stored before the commit");
    let imported = importer.commit().await.unwrap();
    assert_eq!((imported.accepted, imported.duplicates), (250, 101));
    assert_eq!(importer.staged(), 0);
    assert_eq!(importer.commit().await.unwrap(), tally_store::Imported::default(), "an empty commit stores nothing");
    // The same importer goes on after a commit.
    importer.stage(events[440..].to_vec()).await.unwrap();
    assert_eq!(importer.commit().await.unwrap(), tally_store::Imported { accepted: 150, duplicates: 10 });
    assert_eq!(store.event_count().await.unwrap(), 600);

    let imported = store.aggregates_fingerprint().await.unwrap();
    assert_eq!(imported.hourly_count, 600);
    store.rebuild_aggregates().await.unwrap();
    assert_eq!(store.aggregates_fingerprint().await.unwrap(), imported, "the import's roll-ups are what the events give");
    let stored = store
        .usage_events(
            &UsageFilter { organization_id: Some(org("o1")), ..UsageFilter::default() },
            ts("2025-01-01T00:00:00Z"),
            ts("2025-03-01T00:00:00Z"),
            true,
        )
        .await
        .unwrap();
    let e301 = stored.iter().find(|e| e.id.as_str() == "e301").expect("an imported event is stored");
    let properties: serde_json::Value = serde_json::from_str(e301.properties.as_deref().expect("with its properties")).unwrap();
    assert_eq!(properties, serde_json::json!({"n": 301}));
    assert_eq!(e301.llm, events[301].llm);
}

fn meter(slug: &str, id: &str) -> Meter {
    let create: MeterCreate = serde_json::from_value(serde_json::json!({
        "slug": slug, "aggregation": "SUM", "eventType": "prompt", "valueProperty": "$.tokens", "groupBy": {"model": "$.model"}
    }))
    .unwrap();
    create.into_meter(id.to_owned(), ts("2025-01-01T00:00:00Z")).unwrap()
}

async fn meters_are_per_organization_and_events_keep_their_properties(store: Arc<dyn Store>) {
    let (acme, globex) = (org("acme"), org("globex"));
    let tokens = meter("tokens", "01TOKENS");
    store.save_meter(&acme, &tokens, Write::Create).await.unwrap();
    assert!(matches!(store.save_meter(&acme, &meter("tokens", "01OTHER"), Write::Create).await, Err(StoreError::AlreadyExists(_))));
    // Another organization has its own namespace.
    store.save_meter(&globex, &meter("tokens", "01GLOBEX"), Write::Create).await.unwrap();
    store.save_meter(&acme, &meter("calls", "01CALLS"), Write::Create).await.unwrap();

    assert_eq!(store.meter(&acme, "tokens").await.unwrap(), Some(tokens.clone()));
    assert_eq!(store.meter(&acme, "01TOKENS").await.unwrap(), Some(tokens.clone()));
    assert_eq!(store.meter(&globex, "01TOKENS").await.unwrap(), None);
    let slugs: Vec<String> = store.meters(&acme).await.unwrap().into_iter().map(|m| m.slug.to_string()).collect();
    assert_eq!(slugs, ["calls", "tokens"]);

    let mut renamed = tokens.clone();
    renamed.name = "Tokens".into();
    store.save_meter(&acme, &renamed, Write::Replace).await.unwrap();
    assert_eq!(store.meter(&acme, "tokens").await.unwrap().unwrap().name, "Tokens");
    assert!(store.delete_meter(&acme, "tokens").await.unwrap());
    assert!(!store.delete_meter(&acme, "tokens").await.unwrap());
    assert_eq!(store.meter(&acme, "tokens").await.unwrap(), None);
    assert!(store.meter(&globex, "tokens").await.unwrap().is_some());

    let e = event(
        r#"{"id":"p1","timestamp":"2025-02-01T10:00:00Z","organization_id":"acme","user_id":"ann","type":"api_call","properties":{"model":"gpt-4o","tokens":"0.1"}}"#,
    );
    store.record_events(vec![e]).await.unwrap();
    let filter = UsageFilter { organization_id: Some(acme), ..Default::default() };
    let (from, to) = (ts("2025-02-01T00:00:00Z"), ts("2025-02-02T00:00:00Z"));
    let with = store.usage_events(&filter, from, to, true).await.unwrap();
    let properties: serde_json::Value = serde_json::from_str(with[0].properties.as_deref().unwrap()).unwrap();
    assert_eq!(properties, serde_json::json!({"model": "gpt-4o", "tokens": "0.1"}));
    assert_eq!(store.usage_events(&filter, from, to, false).await.unwrap()[0].properties, None);
}

fn audit(id: &str, at: &str, event_type: AuditEventType, user: &str, role: Role) -> AuditEvent {
    AuditEvent {
        organization_id: org("acme"),
        id: id.into(),
        event_time: ts(at),
        event_type,
        user_id: Some(UserId::parse(user).unwrap()),
        role: Some(role),
        old_role: None,
        new_role: None,
        is_bot: false,
        plan_id: None,
        role_counts: None,
        backfilled: false,
        server_id: None,
    }
}

async fn audit_events_apply_once_even_when_written_concurrently(store: Arc<dyn Store>) {
    let now = ts("2026-01-10T00:00:00Z");
    let batch: Vec<AuditEvent> = (0..40)
        .map(|i| audit(&format!("a{i}"), &format!("2026-01-01T00:{i:02}:00Z"), AuditEventType::UserCreated, &format!("u{i}"), Role::Member))
        .collect();
    // Two writers racing with the same events: each event is stored and applied once.
    let (a, b) = tokio::join!(store.record_audit_events(batch.clone(), now), store.record_audit_events(batch.clone(), now));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(a.iter().zip(&b).all(|(x, y)| x ^ y), "every event stored by exactly one writer");
    let leave = audit("leave", "2026-01-02T00:00:00Z", AuditEventType::UserDeactivated, "u3", Role::Member);
    assert_eq!(store.record_audit_events(vec![leave.clone(), leave], now).await.unwrap(), [true, false]);
    let snap =
        store.seat_snapshots(vec![(org("acme"), ts("2026-01-03T00:00:00Z")), (org("acme"), ts("2026-01-01T00:09:30Z"))]).await.unwrap();
    // The counts after each event follow the user table: 40 members, then one deactivated.
    assert_eq!(snap[0].role_counts.unwrap().humans(Role::Member), 39);
    assert_eq!(snap[0].source.as_ref().unwrap().id, "leave");
    assert_eq!(snap[1].role_counts.unwrap().humans(Role::Member), 10);
    assert!(snap[0].is_active);
    assert_eq!(store.audit_events(&org("acme"), Page::all()).await.unwrap().count, 41);
    let user = store.user(&UserId::parse("u3").unwrap()).await.unwrap().unwrap();
    assert!(!user.is_active);
}

async fn ledger_commits_need_the_lease_and_never_repeat_a_cause(store: Arc<dyn Store>) {
    let now = ts("2026-01-10T00:00:00Z");
    store
        .record_audit_events(vec![audit("a1", "2026-01-01T00:00:00Z", AuditEventType::UserCreated, "u1", Role::Owner)], now)
        .await
        .unwrap();
    let entry = |seq: i64, id: &str| LedgerEntry {
        organization_id: "acme".into(),
        seq,
        event_time: ts("2026-01-05T00:00:00Z"),
        licenses: 5,
        licenses_at_next_renewal: 5,
        is_renewal: false,
        audit_organization_id: "acme".into(),
        audit_id: id.into(),
    };
    let later = now + jiff::SignedDuration::from_secs(60);
    let run = store.claim_job("ledger", "me", later, now).await.unwrap();
    assert!(matches!(store.claim_job("ledger", "someone else", later, now).await, Err(StoreError::Conflict(_))));
    let unprocessed = store.unprocessed_audit_events(None, 10).await.unwrap();
    assert_eq!(unprocessed.len(), 1);
    let done = vec![(org("acme"), "a1".to_owned())];
    store.commit_ledger(&run.id, "me", vec![entry(1, "a1")], done.clone(), later, now, false).await.unwrap();
    assert!(store.unprocessed_audit_events(None, 10).await.unwrap().is_empty());
    // The same cause again is skipped; another row at a taken position is a conflict.
    store.commit_ledger(&run.id, "me", vec![entry(2, "a1")], vec![], later, now, false).await.unwrap();
    assert!(matches!(
        store.commit_ledger(&run.id, "me", vec![entry(1, "other")], vec![], later, now, false).await,
        Err(StoreError::Conflict(_))
    ));
    // Someone who does not hold the lease cannot write.
    assert!(matches!(
        store.commit_ledger(&run.id, "intruder", vec![entry(3, "x")], vec![], later, now, false).await,
        Err(StoreError::Conflict(_))
    ));
    let finished = store.commit_ledger(&run.id, "me", vec![], vec![], later, now, true).await.unwrap();
    assert_eq!((finished.status.as_str(), finished.processed), ("completed", 1));
    let ledger = store.ledger(&org("acme"), Page::all()).await.unwrap();
    assert_eq!((ledger.count, ledger.results[0].audit_id.as_str()), (1, "a1"));
}

fn llm_call(id: &str, user: &str, at: &str, status: &str, tokens: i64, cost: &str) -> UsageEvent {
    event(&format!(
        r#"{{"id":"{id}","timestamp":"{at}","organization_id":"acme","user_id":"{user}","team_id":"blue","type":"llm_request","model":"m","status":"{status}","input_tokens":{tokens},"output_tokens":0,"cost":"{cost}"}}"#
    ))
}

async fn window_totals_and_daily_llm_cells_come_from_the_aggregates(store: Arc<dyn Store>) {
    use tally_domain::alerts::evaluate::Subject as Watched;
    store
        .record_events(vec![
            llm_call("l1", "ann", "2025-01-01T09:10:00Z", "success", 10, "0.10"),
            llm_call("l2", "ann", "2025-01-01T10:20:00Z", "error", 20, "0.20"),
            llm_call("l3", "bob", "2025-01-01T10:40:00Z", "success", 40, "0.40"),
            llm_call("l4", "ann", "2025-01-01T12:00:00Z", "success", 80, "0.80"),
            api_call("a1", "acme", "ann", "2025-01-01T12:30:00Z", 5.0),
        ])
        .await
        .unwrap();
    let ann = Watched::User { organization_id: org("acme"), user_id: UserId::parse("ann").unwrap() };
    let acme = Watched::Organization { organization_id: org("acme") };
    let blue = Watched::Team { organization_id: org("acme"), team_id: TeamId::parse("blue").unwrap() };
    let q = |subject: &Watched, from: Option<&str>, last: Option<u32>| tally_store::WindowQuery {
        subject: subject.clone(),
        from: from.map(ts),
        last_requests: last,
    };
    let totals = store
        .window_totals(vec![
            q(&ann, None, None),
            q(&ann, Some("2025-01-01T10:30:00Z"), None),
            q(&acme, Some("2025-01-01T10:00:00Z"), None),
            q(&blue, Some("2025-01-01T10:30:00Z"), None),
            q(&acme, None, Some(3)),
            q(&Watched::All, None, Some(2)),
            q(&acme, None, None),
        ])
        .await
        .unwrap();
    let llm = |i: usize| totals[i].iter().find(|t| t.usage_type == "llm_request").cloned().unwrap_or_default();
    // All time: ann's three requests; from 10:30 only her 12:00 one (the 10:00 hour is cut).
    assert_eq!((llm(0).llm_successes, llm(0).llm_failures, llm(0).cost_nanos), (2, 1, 1_100_000_000));
    assert_eq!((llm(1).llm_successes + llm(1).llm_failures, llm(1).input_tokens), (1, 80));
    assert_eq!(totals[1].iter().find(|t| t.usage_type == "api_call").map(|t| t.sum), Some(5.0));
    assert_eq!((llm(2).llm_successes + llm(2).llm_failures, llm(2).cost_nanos), (3, 1_400_000_000));
    assert_eq!((llm(3).llm_successes + llm(3).llm_failures, llm(3).input_tokens), (2, 120), "bob at 10:40 and ann at 12:00");
    // The latest three of the organization: l4, l3, l2 (one failed); the latest two of all: l4, l3.
    assert_eq!((llm(4).llm_successes, llm(4).llm_failures), (2, 1));
    assert_eq!((llm(5).llm_successes, llm(5).llm_failures), (2, 0));
    // All time of an organization (PostgreSQL's timestamps end where Rust's do not).
    assert_eq!((llm(6).llm_successes + llm(6).llm_failures, llm(6).cost_nanos), (4, 1_500_000_000));

    // Daily LLM cells: one per user, day, model and provider, with the hourly cells' totals.
    let filter = UsageFilter { organization_id: Some(org("acme")), user_id: Some(UserId::parse("ann").unwrap()), ..Default::default() };
    let (from, to) = (ts("2025-01-01T00:00:00Z"), ts("2025-01-02T00:00:00Z"));
    let hourly = store.usage_cells(&filter, from, to, tally_store::CellScope::Users).await.unwrap();
    let llm_hours: Vec<_> = hourly.iter().filter(|c| c.usage_type == "llm_request").collect();
    assert_eq!(llm_hours.len(), 3, "ann's requests fall in three hours");
    let ann_days = store.llm_day_cells(&org("acme"), filter.user_id.as_ref(), from, to).await.unwrap();
    assert_eq!(ann_days.len(), 1);
    let day = &ann_days[0];
    assert_eq!((day.at, day.usage_type.as_str(), day.model.as_str(), day.user_id.as_str()), (from, "llm_request", "m", "ann"));
    assert_eq!(day.aggregate.count, llm_hours.iter().map(|c| c.aggregate.count).sum::<i64>());
    assert_eq!((day.aggregate.llm_successes, day.aggregate.llm_failures, day.aggregate.cost_nanos), (2, 1, 1_100_000_000));
    assert_eq!(day.aggregate.last_ts, llm_hours.iter().map(|c| c.aggregate.last_ts).max().unwrap());
    let organization = store.llm_day_cells(&org("acme"), None, from, to).await.unwrap();
    let mut users: Vec<(&str, i64)> = organization.iter().map(|c| (c.user_id.as_str(), c.aggregate.count)).collect();
    users.sort();
    assert_eq!(users, [("ann", 3), ("bob", 1)], "every user of the organization, one row each");
    let next_day = store.llm_day_cells(&org("acme"), None, to, ts("2025-01-03T00:00:00Z")).await.unwrap();
    assert!(next_day.is_empty());
}

fn cost_rule(channels: &[&str]) -> tally_domain::alerts::AlertRule {
    use tally_domain::alerts::{AlertRule, Metric, RuleScope, Window};
    AlertRule {
        id: "spend".into(),
        scope: RuleScope::Organization { organization_id: org("acme") },
        metric: Metric::LlmCost,
        window: Window::AllTime,
        threshold: rust_decimal::Decimal::ONE,
        channels: channels.iter().map(|c| c.to_string()).collect(),
        builtin: false,
        ..AlertRule::system(ts("2026-01-01T00:00:00Z"))
    }
}

async fn racing_evaluations_open_one_alert_and_queue_one_delivery(store: Arc<dyn Store>) {
    use tally_domain::alerts::evaluate::{Observation, Subject as Watched};
    let rule = cost_rule(&["log"]);
    let obs = |value: i64, level: Option<u32>| Observation {
        rule: rule.clone(),
        subject: Watched::Organization { organization_id: org("acme") },
        window_start: None,
        value: rust_decimal::Decimal::from(value),
        level,
        at: ts("2026-01-02T00:00:00Z"),
    };
    let now = ts("2026-01-02T00:00:00Z");
    let (a, b) = tokio::join!(store.apply_observations(vec![obs(2, Some(0))], now), store.apply_observations(vec![obs(2, Some(0))], now));
    assert_eq!(a.unwrap().len() + b.unwrap().len(), 1, "one of two racing evaluators opens the alert");
    assert!(store.apply_observations(vec![obs(3, Some(0))], now).await.unwrap().is_empty(), "staying above opens nothing");
    let state = store.rule_states(vec![(Some(org("acme")), "spend".into(), "organization".into())]).await.unwrap();
    assert_eq!(state[0].map(|s| s.level), Some(Some(0)));
    let queued = store.deliveries(&tally_store::DeliveryQuery::default()).await.unwrap();
    assert_eq!((queued.count, queued.results[0].event_type.as_str()), (1, "alert.opened"));
    // Falling below resolves it and queues the news.
    let resolved = store.apply_observations(vec![obs(0, None)], now).await.unwrap();
    assert_eq!((resolved.len(), resolved[0].status.as_str(), resolved[0].resolution.as_deref()), (1, "resolved", Some("auto")));
    assert_eq!(store.deliveries(&tally_store::DeliveryQuery::default()).await.unwrap().count, 2);
}

async fn a_claimed_delivery_is_nobody_elses_until_its_lease_ends(store: Arc<dyn Store>) {
    use tally_domain::alerts::evaluate::{Observation, Subject as Watched};
    let rule = cost_rule(&["log", "hook"]);
    let now = ts("2026-01-02T00:00:00Z");
    let obs = Observation {
        rule,
        subject: Watched::Organization { organization_id: org("acme") },
        window_start: None,
        value: rust_decimal::Decimal::from(5),
        level: Some(0),
        at: now,
    };
    store.apply_observations(vec![obs], now).await.unwrap();
    let lease = ts("2026-01-02T00:02:00Z");
    let (a, b) = tokio::join!(store.claim_deliveries(now, lease, 10), store.claim_deliveries(now, lease, 10));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.len() + b.len(), 2, "each row claimed once");
    assert!(store.claim_deliveries(now, lease, 10).await.unwrap().is_empty(), "claimed rows wait for their lease");
    let mut claimed: Vec<_> = a.into_iter().chain(b).collect();
    claimed.sort_by(|x, y| x.channel_id.cmp(&y.channel_id));
    let attempt = |code| tally_store::DeliveryAttempt { at: now, status_code: Some(code), error: None, duration_ms: 3 };
    // The hook fails and is due again later; the log succeeds; a stale second report is ignored.
    store.record_delivery_attempt(&claimed[0], attempt(500), false, Some(ts("2026-01-02T00:00:05Z"))).await.unwrap();
    store.record_delivery_attempt(&claimed[1], attempt(200), true, None).await.unwrap();
    store.record_delivery_attempt(&claimed[1], attempt(200), true, None).await.unwrap();
    let listed = store.deliveries(&tally_store::DeliveryQuery::default()).await.unwrap().results;
    let hook = listed.iter().find(|d| d.channel_id == "hook").unwrap();
    let log = listed.iter().find(|d| d.channel_id == "log").unwrap();
    assert_eq!((hook.status.as_str(), hook.attempts, hook.next_attempt_at), ("pending", 1, Some(ts("2026-01-02T00:00:05Z"))));
    assert_eq!((log.status.as_str(), log.attempts, log.attempt_log.len()), ("delivered", 1, 1));
    let due = store.claim_deliveries(ts("2026-01-02T00:00:06Z"), ts("2026-01-02T00:03:00Z"), 10).await.unwrap();
    assert_eq!((due.len(), due[0].channel_id.as_str(), due[0].attempts), (1, "hook", 1));
}

/// A report page of the users whose api_call use in the current period is `at_least`, as of
/// `now`, with their current figures.
async fn current_api_calls(store: &Arc<dyn Store>, at_least: f64, now: Timestamp) -> Vec<(String, f64)> {
    use tally_domain::report::{Catalog, filter};
    let catalog = Catalog::new(vec!["api_call".into()]);
    let q = format!("service_usage__api_call__current_period__gte:{at_least}");
    let query = tally_store::report::ReportQuery {
        filter: filter(&q, &catalog).unwrap(),
        ordering: catalog.ordering("username").unwrap(),
        limit: 100,
        offset: 0,
        count: true,
        after: None,
        now,
    };
    let keys = store.report_users(&query).await.unwrap();
    assert_eq!(keys.count, Some(keys.users.len() as u64));
    let rows = store.report_rows(&keys.users, now).await.unwrap();
    rows.iter()
        .map(|r| {
            let current = r.current.iter().find(|(t, _)| t == "api_call").map_or(0.0, |(_, a)| a.sum);
            (r.user.id.as_str().to_owned(), current)
        })
        .collect()
}

fn subscription(org: &str, status: &str, start: Timestamp, end: Timestamp) -> Subscription {
    serde_json::from_value(serde_json::json!({
        "id": format!("sub-{org}"), "organization_id": org, "plan_id": "pro", "status": status,
        "current_period_start": start, "current_period_end": end,
        "trial_end": null, "add_ons": {}, "created_at": start
    }))
    .unwrap()
}

async fn current_period_figures_follow_the_billing_period(store: Arc<dyn Store>) {
    let now = Timestamp::now();
    let (month, next_month) = tally_domain::report::balance::billing_period(None, now);
    let at = |base: Timestamp, hours: i64| base + jiff::SignedDuration::from_hours(hours);
    store
        .record_events(vec![
            api_call("a1", "acme", "ann", &at(month, -24).to_string(), 10.0),
            api_call("a2", "acme", "ann", &at(month, 1).to_string(), 1.0),
        ])
        .await
        .unwrap();
    // A batch that registers one organization and adds to another.
    store
        .record_events(vec![
            api_call("a3", "acme", "ann", &at(month, 48).to_string(), 100.0),
            api_call("g1", "globex", "gus", &at(month, 2).to_string(), 7.0),
        ])
        .await
        .unwrap();
    // Registered by ingestion: their periods (the calendar month) are recorded from the start.
    assert_eq!(store.refresh_billing_periods(None, now).await.unwrap(), 0);
    assert_eq!(current_api_calls(&store, 101.0, now).await, [("ann".to_owned(), 101.0)]);
    assert_eq!(current_api_calls(&store, 7.0, now).await, [("ann".to_owned(), 101.0), ("gus".to_owned(), 7.0)]);
    assert!(current_api_calls(&store, 101.5, now).await.is_empty());

    // A subscription moves the period (and its figures) at once.
    store.save_subscription(&subscription("acme", "active", at(month, -48), at(month, 24)), Write::Create).await.unwrap();
    assert_eq!(current_api_calls(&store, 8.0, now).await, [("ann".to_owned(), 11.0)]);
    store.record_events(vec![api_call("a4", "acme", "ann", &at(month, 3).to_string(), 1000.0)]).await.unwrap();
    assert_eq!(current_api_calls(&store, 1011.0, now).await, [("ann".to_owned(), 1011.0)]);
    store.save_subscription(&subscription("acme", "canceled", at(month, -48), at(month, 24)), Write::Replace).await.unwrap();
    assert_eq!(current_api_calls(&store, 8.0, now).await, [("ann".to_owned(), 1101.0)]);

    // A month later nothing was refreshed yet: the figures are summed from the hours instead,
    // and an event of the new month counts at once.
    let later = at(next_month, 24);
    store.record_events(vec![api_call("a5", "acme", "ann", &at(next_month, 1).to_string(), 5.0)]).await.unwrap();
    assert_eq!(current_api_calls(&store, 5.0, later).await, [("ann".to_owned(), 5.0)]);
    assert_eq!(store.refresh_billing_periods(None, later).await.unwrap(), 2, "both organizations move to the new month");
    assert_eq!(store.refresh_billing_periods(None, later).await.unwrap(), 0);
    assert_eq!(current_api_calls(&store, 5.0, later).await, [("ann".to_owned(), 5.0)]);
    assert!(current_api_calls(&store, 5.5, later).await.is_empty());
    assert_eq!(current_api_calls(&store, 8.0, now).await, [("ann".to_owned(), 1101.0)], "the month before, from the hours");

    let live = store.aggregates_fingerprint().await.unwrap();
    assert_eq!((live.period_rows, live.period_count, live.period_sum), (1, 1, 5.0));
    store.rebuild_aggregates().await.unwrap();
    assert_eq!(store.aggregates_fingerprint().await.unwrap(), live);
}

async fn period_figures_stay_exact_while_periods_change_under_ingestion(store: Arc<dyn Store>) {
    let now = Timestamp::now();
    let (month, _) = tally_domain::report::balance::billing_period(None, now);
    let hour = move |h: i64| month + jiff::SignedDuration::from_hours(h);
    // Four writers send an event per user and hour while the subscription's period flips
    // between two that overlap, so every batch races a refill under PostgreSQL.
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for b in 0..10 {
                    let batch = (0..5)
                        .map(|u| api_call(&format!("w{w}-{b}-{u}"), "initech", &format!("u{u}"), &hour(w * 10 + b).to_string(), 1.0))
                        .collect();
                    store.record_events(batch).await.unwrap();
                }
            })
        })
        .collect();
    for flip in 0..10 {
        let (start, end) = if flip % 2 == 0 { (hour(5), hour(25)) } else { (hour(15), hour(35)) };
        store.save_subscription(&subscription("initech", "active", start, end), Write::Replace).await.unwrap();
    }
    for w in writers {
        w.await.unwrap();
    }
    // The last period is hours 15 to 35: 20 events per user, one per hour.
    let expected: Vec<(String, f64)> = (0..5).map(|u| (format!("u{u}"), 20.0)).collect();
    assert_eq!(current_api_calls(&store, 0.0, now).await, expected);
    let live = store.aggregates_fingerprint().await.unwrap();
    assert_eq!((live.period_rows, live.period_sum), (5, 100.0));
}

/// Two stores on one database (two processes, say) write LLM requests of the same users and days
/// at the same time, into day rows that exist already and rows that do not yet: every latency is
/// counted once in the users' and the organization's histograms, and no writer fails (no
/// deadlock between the rows each locks).
async fn racing_writers_merge_latency_histograms_exactly(t: tally_store::testing::TestStore) {
    let other = tally_store::open(&t.url).await.unwrap();
    let writers = [t.store.clone(), other];
    for round in 0..12 {
        // Even rounds write days already stored, odd rounds a day of their own (new rows).
        let day = if round % 2 == 0 { 1 } else { 2 + round };
        let batch = |w: usize| -> Vec<UsageEvent> {
            (0..30)
                .map(|i| {
                    let at = format!("2025-01-{day:02}T{:02}:00:00Z", i % 24);
                    timed_call(&format!("w{w}-r{round}-{i}"), &format!("u{}", i % 3), &at, Some(10 + i as i64))
                })
                .collect()
        };
        let (a, b) = tokio::join!(writers[0].record_events(batch(0)), writers[1].record_events(batch(1)));
        assert!(a.unwrap().iter().chain(&b.unwrap()).all(|stored| *stored));
    }
    let (from, to) = (ts("2025-01-01T00:00:00Z"), ts("2025-02-01T00:00:00Z"));
    let acme = org("acme");
    let whole = t.store.llm_latency_days(&acme, None, from, to).await.unwrap();
    assert_eq!(whole.histogram.count(), 12 * 2 * 30);
    let mut per_user = 0;
    for u in 0..3 {
        let user = UserId::parse(format!("u{u}")).unwrap();
        per_user += t.store.llm_latency_days(&acme, Some(&user), from, to).await.unwrap().histogram.count();
    }
    assert_eq!(per_user, 12 * 2 * 30);
}

#[tokio::test]
async fn sqlite_racing_writers_merge_latency_histograms_exactly() {
    racing_writers_merge_latency_histograms_exactly(tally_store::testing::sqlite().await).await;
}

#[tokio::test]
async fn postgres_racing_writers_merge_latency_histograms_exactly() {
    let Some(t) = tally_store::testing::postgres().await else {
        eprintln!("skipped: {} is not set", tally_store::testing::TEST_DATABASE_ENV);
        return;
    };
    racing_writers_merge_latency_histograms_exactly(t).await;
}

async fn daily_activity_splits_at_utc_midnight_and_reads_numeric_frustration_only(store: Arc<dyn Store>) {
    let line = |id: &str, at: &str, kind: &str, props: &str| {
        event(&format!(
            r#"{{"id":"{id}","timestamp":"{at}","organization_id":"acme","user_id":"ann","type":"{kind}","properties":{props}}}"#
        ))
    };
    store
        .record_events(vec![
            line("a", "2026-03-01T23:59:59.999Z", "login", r#"{"mood":80}"#),
            line("b", "2026-03-02T00:00:00Z", "api_call", r#"{"mood":"90"}"#),
            line("c", "2026-03-02T12:00:00Z", "submission", r#"{"mood":40}"#),
            line("d", "2026-03-03T00:00:00Z", "login", "{}"),
            line("e", "2026-02-28T23:00:00Z", "login", "{}"),
        ])
        .await
        .unwrap();
    let date = |d: &str| d.parse::<jiff::civil::Date>().unwrap();
    let days = tally_store::ActivityDays {
        from: date("2026-03-01"),
        to: date("2026-03-03"),
        login_type: "login".into(),
        progress_type: "submission".into(),
        frustration_property: "mood".into(),
    };
    let mut read = store.daily_activity(&org("acme"), &days).await.unwrap();
    read.sort_by_key(|u| u.activity.day);
    let figures: Vec<_> = read
        .iter()
        .map(|u| {
            let a = &u.activity;
            (u.user_id.as_str(), a.day.to_string(), a.events, a.logins, a.progress, a.frustration_sum, a.frustration_count, a.last_active)
        })
        .collect();
    assert_eq!(
        figures,
        [
            ("ann", "2026-03-01".into(), 1, 1, 0, 80.0, 1, ts("2026-03-01T23:59:59.999Z")),
            // A frustration given as a string is not a number and is not counted.
            ("ann", "2026-03-02".into(), 2, 0, 1, 40.0, 1, ts("2026-03-02T12:00:00Z")),
        ]
    );
    assert!(store.daily_activity(&org("nobody"), &days).await.unwrap().is_empty());
}
