//! The churn report end to end, on both backends: a small world with known behaviour (a user who
//! stopped logging in and comes back, a failed payment that gets fixed, a trial about to end, a
//! frustrated user, a healthy one), reported for four consecutive days; scores, levels, alerts
//! opened exactly once and resolved when their condition clears; queries and their errors.

mod support;

use jiff::civil::Date;
use jiff::{SignedDuration, Timestamp, ToSpan};
use serde_json::{Value, json};
use support::TestApp;
use tally::daily::churn::ChurnReport;
use tally::daily::{self, Generate};

http_tests!(churn_report_over_consecutive_days);

fn today() -> Date {
    Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC).date()
}

/// 10:00 UTC on the day `offset` days from today.
fn at(offset: i64) -> String {
    let day = today().checked_add(offset.days()).unwrap();
    (tally_domain::time::date_start(day) + SignedDuration::from_hours(10)).to_string()
}

fn event(id: String, org: &str, user: &str, kind: &str, day: i64, properties: Option<Value>) -> Value {
    let mut e = json!({"id": id, "timestamp": at(day), "organization_id": org, "user_id": user, "type": kind});
    if let Some(p) = properties {
        e["properties"] = p;
    }
    e
}

async fn setup(app: &TestApp) {
    let now = Timestamp::now();
    let around = |days: i64| (now + SignedDuration::from_hours(24 * days)).to_string();
    assert_eq!(
        app.post(
            "/v1/usage-types",
            json!({"key": "assignment_completed", "name": "Assignments", "unit": "assignments", "aggregation": "count"})
        )
        .await
        .0,
        201
    );
    assert_eq!(app.post("/v1/plans", json!({"id": "pro"})).await.0, 201);
    for (org, status) in [("healthy-co", "active"), ("late-pay", "payment_issue"), ("trial-co", "trialing")] {
        let mut sub = json!({"id": format!("sub-{org}"), "organization_id": org, "plan_id": "pro", "status": status,
            "current_period_start": around(-20), "current_period_end": around(10)});
        if status == "trialing" {
            sub["trial_end"] = json!(around(2));
        }
        assert_eq!(app.post("/v1/organizations", json!({"id": org})).await.0, 201);
        assert_eq!(app.post("/v1/subscriptions", sub).await.0, 201);
    }
    for (id, org, role) in [
        ("hal", "healthy-co", 100),
        ("sam", "healthy-co", 400),
        ("fay", "healthy-co", 400),
        ("pat", "late-pay", 100),
        ("tia", "trial-co", 100),
    ] {
        let user = json!({"id": id, "organization_id": org, "role": role, "date_joined": at(-60)});
        assert_eq!(app.post("/v1/users", user).await.0, 201);
    }
    let mut events = Vec::new();
    for day in -30..=-1 {
        for (user, org) in [("hal", "healthy-co"), ("pat", "late-pay"), ("tia", "trial-co"), ("fay", "healthy-co")] {
            events.push(event(format!("{user}-login{day}"), org, user, "login", day, None));
            let mood = (user == "fay").then(|| json!({"frustration_score": 80}));
            events.push(event(format!("{user}-call{day}"), org, user, "api_call", day, mood));
        }
        events.push(event(format!("hal-done{day}"), "healthy-co", "hal", "assignment_completed", day, None));
        // Sam stops after day -14 and comes back on the last day.
        if day <= -14 || day == -1 {
            events.push(event(format!("sam-login{day}"), "healthy-co", "sam", "login", day, None));
            events.push(event(format!("sam-call{day}"), "healthy-co", "sam", "api_call", day, None));
        }
    }
    let (status, body) = app.post("/v1/events", Value::Array(events)).await;
    assert_eq!((status, body["rejected"].as_array().map(Vec::len)), (200, Some(0)), "{body}");
}

fn options(force: bool) -> Generate {
    Generate { organization: None, dry_run: false, force }
}

fn report() -> ChurnReport {
    ChurnReport { settings: Default::default() }
}

fn day(offset: i64) -> Date {
    today().checked_add(offset.days()).unwrap()
}

async fn scores(app: &TestApp, date: Date) -> Vec<(String, f64, String)> {
    let (status, body) = app.get(&format!("/v1/reports/churn?date={date}&ordering=user_id")).await;
    assert_eq!(status, 200, "{body}");
    body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["user_id"].as_str().unwrap().to_owned(), r["score"].as_f64().unwrap(), r["risk_level"].as_str().unwrap().to_owned()))
        .collect()
}

async fn open_alerts(app: &TestApp) -> Vec<(String, String)> {
    let (_, body) = app.get("/v1/alerts?status=open").await;
    let mut open: Vec<(String, String)> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["user_id"].as_str().unwrap().to_owned(), a["alert_type"].as_str().unwrap().to_owned()))
        .collect();
    open.sort();
    open
}

async fn churn_report_over_consecutive_days(app: TestApp) {
    setup(&app).await;
    let store = app.store.clone();

    // A dry run computes and writes nothing.
    let dry = Generate { dry_run: true, ..options(false) };
    let preview = daily::generate(&report(), store.as_ref(), &[day(-4)], &dry, |_| {}).await.unwrap();
    assert_eq!((preview[0].rows, preview[0].alerts_opened), (5, 4), "{preview:?}");
    assert_eq!(app.get("/v1/reports/churn").await.1["count"], 0);

    // Three days of the world as it is.
    let days: Vec<Date> = (-4..=-2).map(day).collect();
    let done = daily::generate(&report(), store.as_ref(), &days, &options(false), |_| {}).await.unwrap();
    assert_eq!(done.iter().map(|d| d.alerts_opened).collect::<Vec<_>>(), [4, 0, 1], "{done:?}");

    // Sam: inactive since day -14 (10, 11, 12 whole days: 25 × d / 14 points), no activity or
    // logins in the recent window against some in the earlier one (20 + 15 points).
    let first = scores(&app, day(-4)).await;
    let expected = [
        ("fay", 12.0, "LOW"), // frustration 80 of 100: 15 × 0.8
        ("hal", 0.0, "LOW"),
        ("pat", 10.0, "LOW"), // payment issue
        ("sam", 52.86, "HIGH"),
        ("tia", 0.0, "LOW"),
    ];
    assert_eq!(first, expected.map(|(u, s, l)| (u.to_owned(), s, l.to_owned())), "{first:?}");
    assert_eq!(scores(&app, day(-3)).await[3].1, 54.64);
    assert_eq!(scores(&app, day(-2)).await[3].1, 56.43);
    let (_, high) = app.get(&format!("/v1/reports/churn?date={}&risk_level=high", day(-4))).await;
    assert_eq!((high["count"].as_u64(), high["results"][0]["user_id"].as_str()), (Some(1), Some("sam")), "{high}");
    let details = &high["results"][0]["details"];
    assert_eq!(details["schema_version"], 1);
    let progress = details["signals"].as_array().unwrap().iter().find(|s| s["name"] == "progress_stall").unwrap();
    assert_eq!(progress["missing"], "no completions in the earlier window");
    assert_eq!(high["results"][0]["login_trend"], "down");
    assert_eq!(high["results"][0]["days_until_renewal"], 13);

    // Each condition opened one alert, however many days it persisted; the trial alert opened
    // when the trial came within three days.
    let expected_open = [
        ("fay", "HIGH_FRUSTRATION"),
        ("pat", "PAYMENT_RISK"),
        ("sam", "ENGAGEMENT_DROP"),
        ("sam", "INACTIVITY"),
        ("tia", "TRIAL_EXPIRING"),
    ]
    .map(|(u, t)| (u.to_owned(), t.to_owned()));
    assert_eq!(open_alerts(&app).await, expected_open);
    let (_, sam_alert) = app.get("/v1/alerts?type=inactivity").await;
    assert_eq!((sam_alert["count"].as_u64(), sam_alert["results"][0]["severity"].as_str()), (Some(1), Some("high")));

    // A day that succeeded is skipped; forced, its rows are replaced and no alert doubles.
    let again = daily::generate(&report(), store.as_ref(), &[day(-3)], &options(false), |_| {}).await.unwrap();
    assert!(again[0].skipped);
    // The backfill reused the days it had read for the earlier dates; a day run alone reads its
    // windows afresh and gets the same rows.
    let backfilled = scores(&app, day(-3)).await;
    let forced = daily::generate(&report(), store.as_ref(), &[day(-3)], &options(true), |_| {}).await.unwrap();
    assert_eq!((forced[0].rows, forced[0].alerts_opened), (5, 0));
    assert_eq!(scores(&app, day(-3)).await, backfilled);
    assert_eq!(app.get(&format!("/v1/reports/churn?date={}", day(-3))).await.1["count"], 5);

    // The payment is fixed and Sam comes back: their alerts resolve on the next run.
    let fixed = json!({"id": "sub-late-pay", "organization_id": "late-pay", "plan_id": "pro", "status": "active",
        "current_period_start": (Timestamp::now() - SignedDuration::from_hours(480)).to_string(),
        "current_period_end": (Timestamp::now() + SignedDuration::from_hours(240)).to_string()});
    let (status, body) = app.request("PUT", "/v1/subscriptions/sub-late-pay", Some(&app.admin.clone()), Some(fixed)).await;
    assert!(status == 200 || status == 201, "{status} {body}");
    let last = daily::generate(&report(), store.as_ref(), &[day(-1)], &options(false), |_| {}).await.unwrap();
    assert_eq!((last[0].alerts_opened, last[0].alerts_resolved), (0, 3), "{last:?} {}", app.get("/v1/alerts").await.1);
    assert_eq!(
        open_alerts(&app).await,
        [("fay".to_owned(), "HIGH_FRUSTRATION".to_owned()), ("tia".to_owned(), "TRIAL_EXPIRING".to_owned())]
    );
    let latest = scores(&app, day(-1)).await;
    assert_eq!((latest[2].1, latest[3].1), (0.0, 0.0), "{latest:?}");
    let (_, resolved) = app.get("/v1/alerts?status=resolved").await;
    assert_eq!(resolved["count"], 3);
    assert_eq!(resolved["results"][0]["resolution"], "auto");

    // By hand: resolved with what was done, once.
    let (_, fay) = app.get("/v1/alerts?type=HIGH_FRUSTRATION").await;
    let id = fay["results"][0]["id"].as_str().unwrap().to_owned();
    let (status, closed) = app.post(&format!("/v1/alerts/{id}/resolve"), json!({"action_taken": "called Fay, fixed her import"})).await;
    assert_eq!(
        (status, closed["resolution"].as_str(), closed["action_taken"].as_str()),
        (200, Some("manual"), Some("called Fay, fixed her import"))
    );
    assert_eq!(app.post(&format!("/v1/alerts/{id}/resolve"), json!({"action_taken": "again"})).await.0, 409);
    assert_eq!(app.post(&format!("/v1/alerts/{id}/resolve"), json!({})).await.0, 400);
    assert_eq!(app.post("/v1/alerts/alt_nope/resolve", json!({"action_taken": "x"})).await.0, 404);

    // History, risers, runs.
    let (_, history) = app.get("/v1/users/sam/churn").await;
    let dates: Vec<&str> = history["results"].as_array().unwrap().iter().map(|r| r["report_date"].as_str().unwrap()).collect();
    assert_eq!(dates, [day(-1), day(-2), day(-3), day(-4)].map(|d| d.to_string()));
    let (_, risers) = app.get(&format!("/v1/reports/churn/risers?date={}&days=2&min_increase=3", day(-2))).await;
    assert_eq!(risers["results"].as_array().unwrap().len(), 1, "{risers}");
    assert_eq!((risers["results"][0]["user_id"].as_str(), risers["results"][0]["increase"].as_f64()), (Some("sam"), Some(3.57)));
    let (_, runs) = app.get("/v1/reports/runs?report=churn").await;
    assert_eq!(runs["count"], 5, "{runs}");
    assert_eq!(runs["results"][0]["status"], "succeeded");

    // Scopes: an org key sees its organization, a user key its own rows.
    let org_key = app.key("org:late-pay").await;
    let (_, theirs) = app.request("GET", &format!("/v1/reports/churn?date={}", day(-4)), Some(&org_key), None).await;
    assert_eq!((theirs["count"].as_u64(), theirs["results"][0]["user_id"].as_str()), (Some(1), Some("pat")));
    assert_eq!(app.request("GET", "/v1/reports/churn?organization_id=healthy-co", Some(&org_key), None).await.0, 404);
    let sam_key = app.key("user:sam").await;
    let (_, own) = app.request("GET", &format!("/v1/reports/churn?date={}", day(-4)), Some(&sam_key), None).await;
    assert_eq!(own["count"], 1);
    assert_eq!(app.request("GET", "/v1/users/hal/churn", Some(&sam_key), None).await.0, 404);
    assert_eq!(app.request("GET", "/v1/reports/runs", Some(&org_key), None).await.0, 403);

    // Bad input names what is allowed.
    for (path, parameter) in [
        ("/v1/reports/churn?date=yesterday", "date"),
        ("/v1/reports/churn?risk_level=SEVERE", "risk_level"),
        ("/v1/reports/churn?ordering=name", "ordering"),
        ("/v1/reports/churn?min_score=120", "min_score"),
        ("/v1/alerts?type=SLEEPY", "type"),
        ("/v1/alerts?status=maybe", "status"),
        ("/v1/reports/runs?report=weather", "report"),
    ] {
        let (status, problem) = app.get(path).await;
        assert_eq!((status, problem["parameter"].as_str()), (400, Some(parameter)), "{path}: {problem}");
    }
    // An organization with no subscribers: an empty report, not an error.
    let lonely = Generate { organization: Some(tally_domain::OrganizationId::parse("nobody").unwrap()), ..options(false) };
    let empty = daily::generate(&report(), store.as_ref(), &[day(-1)], &lonely, |_| {}).await.unwrap();
    assert_eq!(empty[0].rows, 0);
}
