//! `GET /v1/usage` through HTTP, on SQLite and PostgreSQL.

mod support;

use serde_json::{Value, json};
use support::TestApp;

http_tests!(
    days_have_every_bucket_and_exact_ragged_ends,
    buckets_follow_the_zone_across_dst_and_half_hours,
    breakdowns_limit_and_other,
    weeks_read_whole_weeks_then_days_then_cut_hours,
    compare_with_the_previous_period,
    llm_breakdowns_by_model_and_status,
    gauges_sum_each_users_latest_value,
    keys_narrow_what_a_series_reads,
    bad_parameters_name_themselves,
    csv_has_a_row_per_bucket,
    spend_prices_every_charge_model,
    a_range_to_the_present_counts_the_current_hour,
    utc_months_read_from_monthly_cells_agree_with_days,
);

fn ev(id: &str, user: &str, team: &str, ty: &str, qty: f64, at: &str) -> Value {
    json!({"id": id, "timestamp": at, "organization_id": "acme", "user_id": user, "team_id": team, "type": ty, "quantity": qty})
}

async fn send(app: &TestApp, events: Value) {
    let (status, body) = app.post("/v1/events", events).await;
    assert_eq!(status, 200, "{body}");
}

async fn usage(app: &TestApp, query: &str) -> Value {
    let (status, body) = app.get(&format!("/v1/usage?{query}")).await;
    assert_eq!(status, 200, "{query}: {body}");
    body
}

fn data(series: &Value) -> Vec<f64> {
    series["data"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect()
}

async fn days_have_every_bucket_and_exact_ragged_ends(app: TestApp) {
    send(
        &app,
        json!([
            ev("1", "u1", "t1", "api_call", 2.0, "2025-01-01T10:15:00Z"),
            ev("2", "u2", "t1", "api_call", 3.0, "2025-01-01T23:59:59Z"),
            ev("3", "u1", "t1", "api_call", 5.0, "2025-01-03T08:10:00Z"),
            ev("4", "u1", "t1", "api_call", 7.0, "2025-01-03T08:50:00Z"),
            ev("5", "u1", "t1", "submission", 1.0, "2025-01-02T00:00:00Z"),
        ]),
    )
    .await;
    let body = usage(&app, "organization_id=acme&usage_type=api_call&date_from=2025-01-01&date_to=2025-01-03").await;
    assert_eq!(body["interval"], "day");
    assert_eq!(body["timezone"], "UTC");
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 1);
    let s = &results[0];
    assert_eq!(s["dates"], json!(["2025-01-01T00:00:00+00:00", "2025-01-02T00:00:00+00:00", "2025-01-03T00:00:00+00:00"]));
    assert_eq!(data(s), [5.0, 0.0, 12.0]);
    assert_eq!(s["count"], 12.0 + 5.0);
    assert_eq!(s["label"], "api_call");
    assert_eq!(s["breakdown_value"], Value::Null);
    // Ending mid-hour: 08:10 is in, 08:50 is not.
    let body = usage(&app, "organization_id=acme&usage_type=api_call&date_from=2025-01-03&date_to=2025-01-03T08:30:00Z").await;
    assert_eq!(data(&body["results"][0]), [5.0]);
    // Cut hours whose cut-off parts hold nothing are read as whole hours: the same figures.
    let body = usage(&app, "organization_id=acme&usage_type=api_call&date_from=2025-01-03&date_to=2025-01-03T08:55:00Z").await;
    assert_eq!(data(&body["results"][0]), [12.0]);
    let body = usage(&app, "organization_id=acme&usage_type=api_call&date_from=2025-01-01&date_to=2025-01-03T08:20:00Z").await;
    assert_eq!(data(&body["results"][0]), [5.0, 0.0, 5.0]);
    // A team and a user filter read the same figures here.
    let team = usage(&app, "organization_id=acme&team_id=t1&usage_type=api_call&date_from=2025-01-01&date_to=2025-01-03").await;
    assert_eq!(data(&team["results"][0]), [5.0, 0.0, 12.0]);
    let user = usage(&app, "organization_id=acme&user_id=u2&usage_type=api_call&date_from=2025-01-01&date_to=2025-01-03").await;
    assert_eq!(data(&user["results"][0]), [3.0, 0.0, 0.0]);
    // No data at all still answers every bucket.
    let empty = usage(&app, "organization_id=acme&usage_type=login&date_from=2025-01-01&date_to=2025-01-03").await;
    assert_eq!(empty["results"], json!([]));
}

async fn buckets_follow_the_zone_across_dst_and_half_hours(app: TestApp) {
    send(
        &app,
        json!([
            // 2025-10-26 00:30 CEST and 23:30 CET: both on the 25-hour 26th in Berlin.
            ev("1", "u1", "", "api_call", 1.0, "2025-10-25T22:30:00Z"),
            ev("2", "u1", "", "api_call", 10.0, "2025-10-26T22:30:00Z"),
            ev("3", "u1", "", "api_call", 100.0, "2025-10-26T23:30:00Z"),
            // Kolkata is +05:30: 18:15 UTC is 23:45 on the 1st, 18:45 UTC 00:15 on the 2nd.
            ev("4", "u1", "", "submission", 1.0, "2025-01-01T18:15:00Z"),
            ev("5", "u1", "", "submission", 2.0, "2025-01-01T18:45:00Z"),
        ]),
    )
    .await;
    let body = usage(&app, "organization_id=acme&usage_type=api_call&date_from=2025-10-26&date_to=2025-10-27&timezone=Europe/Berlin").await;
    let s = &body["results"][0];
    assert_eq!(s["dates"], json!(["2025-10-26T00:00:00+02:00", "2025-10-27T00:00:00+01:00"]));
    assert_eq!(data(s), [11.0, 100.0]);
    assert_eq!(body["timezone"], "Europe/Berlin");
    let body =
        usage(&app, "organization_id=acme&usage_type=submission&date_from=2025-01-01&date_to=2025-01-02&timezone=Asia/Kolkata").await;
    assert_eq!(data(&body["results"][0]), [1.0, 2.0]);
    let hours = usage(
        &app,
        "organization_id=acme&usage_type=submission&interval=hour&date_from=2025-01-01T23:00:00%2B05:30&date_to=2025-01-02T01:00:00%2B05:30&timezone=Asia/Kolkata",
    )
    .await;
    assert_eq!(data(&hours["results"][0]), [1.0, 2.0]);
}

async fn breakdowns_limit_and_other(app: TestApp) {
    let mut events = vec![];
    for (i, (team, qty)) in [("t1", 1.0), ("t2", 10.0), ("t3", 5.0), ("t4", 2.0)].into_iter().enumerate() {
        events.push(ev(&format!("a{i}"), "u1", team, "api_call", qty, "2025-02-03T10:00:00Z"));
        events.push(ev(&format!("s{i}"), "u1", team, "submission", qty * 2.0, "2025-02-04T10:00:00Z"));
    }
    send(&app, Value::Array(events)).await;
    let q = "organization_id=acme&usage_type=api_call&breakdowns=%5B%22team%22%5D&date_from=2025-02-03&date_to=2025-02-04&limit=2";
    let body = usage(&app, q).await;
    let results = body["results"].as_array().unwrap();
    let labels: Vec<&str> = results.iter().map(|r| r["label"].as_str().unwrap()).collect();
    assert_eq!(labels, ["t2", "t3", "other"]);
    assert_eq!(results[0]["breakdown_type"], json!(["team"]));
    assert_eq!(results[0]["breakdown_value"], json!(["t2"]));
    assert_eq!(data(&results[2]), [3.0, 0.0]);
    assert_eq!(results[2]["id"], "$other");
    // Every type, broken down by type and week.
    let body = usage(&app, "organization_id=acme&breakdowns=type&interval=week&date_from=2025-02-03&date_to=2025-02-09").await;
    let by_type: Vec<(String, f64)> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["label"].as_str().unwrap().to_owned(), r["count"].as_f64().unwrap()))
        .collect();
    assert_eq!(by_type, [("submission".to_owned(), 36.0), ("api_call".to_owned(), 18.0)]);
    // Two types without a type breakdown are two series, never one sum.
    let body = usage(&app, "organization_id=acme&usage_type=api_call,submission&date_from=2025-02-03&date_to=2025-02-04").await;
    assert_eq!(body["results"].as_array().unwrap().len(), 2);
    assert_eq!(body["results"][0]["breakdown_type"], json!(["type"]));
}

async fn weeks_read_whole_weeks_then_days_then_cut_hours(app: TestApp) {
    // 2025-02-03 and 2025-02-10 are Mondays; the range ends inside an hour of the second week.
    send(
        &app,
        json!([
            ev("1", "u1", "red", "api_call", 1.0, "2025-02-03T00:00:00Z"),
            ev("2", "u2", "blue", "api_call", 2.0, "2025-02-09T23:59:59Z"),
            ev("3", "u1", "red", "api_call", 4.0, "2025-02-10T00:00:00Z"),
            ev("4", "u1", "blue", "api_call", 8.0, "2025-02-11T08:00:00Z"),
            ev("5", "u2", "red", "api_call", 16.0, "2025-02-12T09:10:00Z"),
            ev("6", "u2", "red", "api_call", 32.0, "2025-02-12T09:40:00Z"),
            ev("7", "u1", "red", "api_call", 64.0, "2025-02-02T23:59:59Z"),
        ]),
    )
    .await;
    let q = "organization_id=acme&usage_type=api_call&interval=week&date_from=2025-02-03&date_to=2025-02-12T09:30:00Z";
    let body = usage(&app, q).await;
    assert_eq!(body["results"][0]["dates"], json!(["2025-02-03T00:00:00+00:00", "2025-02-10T00:00:00+00:00"]));
    assert_eq!(data(&body["results"][0]), [3.0, 28.0], "a whole week; then two whole days and a cut hour");
    let body = usage(&app, &format!("{q}&breakdowns=team")).await;
    let mut by_team: Vec<(String, Vec<f64>)> =
        body["results"].as_array().unwrap().iter().map(|r| (r["label"].as_str().unwrap().to_owned(), data(r))).collect();
    by_team.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(by_team, [("blue".to_owned(), vec![2.0, 8.0]), ("red".to_owned(), vec![1.0, 20.0])]);
    // Weeks of another zone are not UTC weeks: the same events, bucketed by Tokyo's Mondays.
    let body =
        usage(&app, "organization_id=acme&usage_type=api_call&interval=week&date_from=2025-02-03&date_to=2025-02-09&timezone=Asia/Tokyo")
            .await;
    assert_eq!(data(&body["results"][0]), [65.0], "Tokyo's week holds the UTC Sunday night before it, not the one at its end");
}

async fn compare_with_the_previous_period(app: TestApp) {
    send(
        &app,
        json!([ev("1", "u1", "", "api_call", 4.0, "2025-03-09T12:00:00Z"), ev("2", "u1", "", "api_call", 6.0, "2025-03-12T12:00:00Z"),]),
    )
    .await;
    let body =
        usage(&app, "organization_id=acme&usage_type=api_call&date_from=2025-03-11&date_to=2025-03-13&compare=previous_period").await;
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["compare_label"], "current");
    assert_eq!(data(&results[0]), [0.0, 6.0, 0.0]);
    assert_eq!(results[1]["compare_label"], "previous");
    assert_eq!(results[1]["dates"][0], "2025-03-08T00:00:00+00:00");
    assert_eq!(data(&results[1]), [0.0, 4.0, 0.0]);
}

async fn llm_breakdowns_by_model_and_status(app: TestApp) {
    let llm = |id: &str, model: &str, status: &str| {
        json!({"id": id, "timestamp": "2025-04-01T10:00:00Z", "organization_id": "acme", "user_id": "u1", "type": "llm_request",
               "model": model, "provider": "openai", "status": status, "input_tokens": 10, "output_tokens": 5, "cost": "0.01"})
    };
    send(&app, json!([llm("1", "gpt-4o", "success"), llm("2", "gpt-4o", "error"), llm("3", "gpt-4o-mini", "success")])).await;
    let body =
        usage(&app, "organization_id=acme&usage_type=llm_request&breakdowns=model,status&date_from=2025-04-01&date_to=2025-04-01").await;
    let mut got: Vec<(Value, f64)> =
        body["results"].as_array().unwrap().iter().map(|r| (r["breakdown_value"].clone(), r["count"].as_f64().unwrap())).collect();
    got.sort_by_key(|g| g.0.to_string());
    assert_eq!(got, [(json!(["gpt-4o", "error"]), 1.0), (json!(["gpt-4o", "success"]), 1.0), (json!(["gpt-4o-mini", "success"]), 1.0)]);
}

async fn gauges_sum_each_users_latest_value(app: TestApp) {
    send(
        &app,
        json!([
            ev("1", "u1", "", "storage_bytes", 100.0, "2025-05-01T01:00:00Z"),
            ev("2", "u1", "", "storage_bytes", 150.0, "2025-05-01T05:00:00Z"),
            ev("3", "u2", "", "storage_bytes", 40.0, "2025-05-01T03:00:00Z"),
            ev("4", "u2", "", "storage_bytes", 60.0, "2025-05-02T03:00:00Z"),
        ]),
    )
    .await;
    let body = usage(&app, "organization_id=acme&usage_type=storage_bytes&date_from=2025-05-01&date_to=2025-05-02").await;
    assert_eq!(data(&body["results"][0]), [190.0, 60.0]);
    assert_eq!(body["results"][0]["aggregation"], "latest");
}

async fn keys_narrow_what_a_series_reads(app: TestApp) {
    send(
        &app,
        json!([ev("1", "u1", "", "api_call", 1.0, "2025-06-01T10:00:00Z"), ev("2", "u2", "", "api_call", 2.0, "2025-06-01T10:00:00Z")]),
    )
    .await;
    let q = "usage_type=api_call&date_from=2025-06-01&date_to=2025-06-01";
    let org = app.key("org:acme").await;
    let (status, body) = app.request("GET", &format!("/v1/usage?{q}"), Some(&org), None).await;
    assert_eq!((status, data(&body["results"][0])), (200, vec![3.0]));
    let (status, _) = app.request("GET", &format!("/v1/usage?{q}&organization_id=globex"), Some(&org), None).await;
    assert_eq!(status, 403);
    let user = app.key("user:u2").await;
    let (status, body) = app.request("GET", &format!("/v1/usage?{q}"), Some(&user), None).await;
    assert_eq!((status, data(&body["results"][0])), (200, vec![2.0]));
    let (status, _) = app.request("GET", &format!("/v1/usage?{q}&user_id=u1"), Some(&user), None).await;
    assert_eq!(status, 403);
    let ingest = app.key("ingest").await;
    assert_eq!(app.request("GET", &format!("/v1/usage?{q}"), Some(&ingest), None).await.0, 403);
    assert_eq!(app.request("GET", &format!("/v1/usage?{q}"), None, None).await.0, 401);
    // An admin may read across organizations.
    let body = usage(&app, q).await;
    assert_eq!(data(&body["results"][0]), [3.0]);
    assert_eq!(app.get(&format!("/v1/usage?{q}&organization_id=nobody")).await.0, 404);
}

async fn bad_parameters_name_themselves(app: TestApp) {
    for (query, parameter) in [
        ("organization_id=acme", "usage_type"),
        ("usage_type=unknown", "usage_type"),
        ("usage_type=api_call&interval=minute", "interval"),
        ("usage_type=api_call&breakdowns=%5B%22colour%22%5D", "breakdowns"),
        ("usage_type=api_call&date_from=2025-02-01&date_to=2025-01-01", "date_to"),
        ("usage_type=api_call&interval=hour&date_from=-60d", "interval"),
        ("usage_type=api_call&timezone=Nowhere/Land", "timezone"),
        ("usage_type=api_call&limit=-1", "limit"),
        ("usage_type=api_call&bogus=1", "bogus"),
    ] {
        let (status, body) = app.get(&format!("/v1/usage?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["parameter"], parameter, "{query}: {body}");
        assert_eq!(body["type"], "urn:tally:problem:invalid-parameter");
    }
    let (_, body) = app.get("/v1/usage?usage_type=nope").await;
    assert!(body["detail"].as_str().unwrap().contains("api_call"), "lists the known types: {body}");
}

async fn csv_has_a_row_per_bucket(app: TestApp) {
    send(&app, json!([ev("1", "u1", "", "api_call", 2.0, "2025-07-01T10:00:00Z")])).await;
    let (status, body) =
        app.get("/v1/usage?organization_id=acme&usage_type=api_call&date_from=2025-07-01&date_to=2025-07-02&format=csv").await;
    assert_eq!(status, 200);
    let text = body.as_str().unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "series,label,usage_type,compare,date,value");
    assert_eq!(lines[1], "api_call,api_call,api_call,,2025-07-01T00:00:00+00:00,2");
    assert_eq!(lines.len(), 3);
}

fn money(v: &Value) -> f64 {
    v.as_str().unwrap_or_else(|| panic!("money is a string: {v}")).parse().unwrap()
}

async fn spend_prices_every_charge_model(app: TestApp) {
    let plan = json!({"id": "metered", "currency": "EUR", "usage": {
        "api_call": {"included": 100, "unit_price": "0.01"},
        "submission": {"charge": {"model": "graduated", "tiers": [
            {"up_to": 10, "unit_price": "1"}, {"up_to": null, "unit_price": "0.5", "flat_fee": "2"}]}},
        "mt_characters": {"charge": {"model": "package", "package_size": 1000, "price": "2.5", "free_units": 500}},
        "asr_seconds": {"charge": {"model": "volume", "tiers": [{"up_to": 60, "unit_price": "0.10"}, {"up_to": null, "unit_price": "0.05"}]}}
    }});
    assert_eq!(app.post("/v1/plans", plan).await.0, 201);
    assert_eq!(app.post("/v1/organizations", json!({"id": "acme"})).await.0, 201);
    let sub = json!({"id": "s1", "organization_id": "acme", "plan_id": "metered", "status": "active",
        "current_period_start": "2025-08-01T00:00:00Z", "current_period_end": "2025-09-01T00:00:00Z", "created_at": "2025-08-01T00:00:00Z"});
    let (status, body) = app.post("/v1/subscriptions", sub).await;
    assert_eq!(status, 201, "{body}");
    let day2 = "2025-08-02T10:00:00Z";
    let day3 = "2025-08-03T10:00:00Z";
    send(
        &app,
        json!([
            ev("a1", "u1", "", "api_call", 150.0, day2),
            ev("a2", "u1", "", "api_call", 50.0, day3),
            ev("s1", "u1", "", "submission", 8.0, day2),
            ev("s2", "u1", "", "submission", 6.0, day3),
            ev("m1", "u1", "", "mt_characters", 1200.0, day2),
            ev("m2", "u1", "", "mt_characters", 400.0, day3),
            ev("r1", "u1", "", "asr_seconds", 50.0, day2),
            ev("r2", "u1", "", "asr_seconds", 30.0, day3),
            ev("x1", "u1", "", "login", 1.0, day2),
        ]),
    )
    .await;
    let spend = |q: String| {
        let app = &app;
        async move {
            let (status, body) = app.get(&format!("/v1/spend?{q}")).await;
            assert_eq!(status, 200, "{q}: {body}");
            body
        }
    };
    let body = spend("organization_id=acme&breakdowns=type&date_from=2025-08-02&date_to=2025-08-03".into()).await;
    let mut got: Vec<(String, Vec<f64>, f64)> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(r["currency"], "EUR");
            (r["label"].as_str().unwrap().to_owned(), r["data"].as_array().unwrap().iter().map(money).collect(), money(&r["count"]))
        })
        .collect();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        got,
        [
            // 100 free, then 0.01 each: 50 and 50 billable.
            ("api_call".to_owned(), vec![0.5, 0.5], 1.0),
            // 50 s at 0.10 = 5; at 80 s every second drops to 0.05 = 4, so day 3 gives 1 back.
            ("asr_seconds".to_owned(), vec![5.0, -1.0], 4.0),
            // 500 free, then a started package of 1000 at 2.50: 700 billable → 1, 1100 → 2.
            ("mt_characters".to_owned(), vec![2.5, 2.5], 5.0),
            // 8 × 1; then 2 × 1 + 4 × 0.5 + 2 flat for entering the second tier.
            ("submission".to_owned(), vec![8.0, 6.0], 14.0),
        ]
    );
    // Starting mid-period still counts the period from its beginning.
    let body = spend("organization_id=acme&usage_type=api_call&date_from=2025-08-03&date_to=2025-08-03".into()).await;
    assert_eq!(body["results"][0]["data"].as_array().unwrap().iter().map(money).collect::<Vec<_>>(), [0.5]);
    // Without breakdowns, money adds up across usage types.
    let body = spend("organization_id=acme&date_from=2025-08-02&date_to=2025-08-03".into()).await;
    assert_eq!(body["results"].as_array().unwrap().len(), 1);
    assert_eq!(money(&body["results"][0]["count"]), 24.0);
    // No subscription, no spend.
    send(&app, json!([{"id": "g1", "timestamp": day2, "organization_id": "globex", "user_id": "u9", "type": "api_call", "quantity": 500}]))
        .await;
    let body = spend("organization_id=globex&date_from=2025-08-02&date_to=2025-08-03".into()).await;
    assert_eq!(body["results"], json!([]));
    let (status, body) = app.get("/v1/spend?organization_id=acme&breakdowns=status").await;
    assert_eq!((status, body["parameter"].as_str()), (400, Some("breakdowns")));
    let (status, _) = app.get("/v1/spend?organization_id=acme&date_from=2025-08-02&date_to=2025-08-03&format=csv").await;
    assert_eq!(status, 200);
    // Nonsense tiers are refused when the plan is saved.
    let bad = json!({"id": "bad", "usage": {"api_call": {"charge": {"model": "graduated", "tiers": [{"up_to": 5, "unit_price": "1"}]}}}});
    assert_eq!(app.post("/v1/plans", bad).await.0, 400);
}

/// Without `date_to` the range ends at the present, and the current hour is read from its
/// aggregates: every event so far counts, each once, and spend agrees.
async fn a_range_to_the_present_counts_the_current_hour(app: TestApp) {
    let now = jiff::Timestamp::now();
    let at = |minutes: i64| (now - jiff::SignedDuration::from_mins(minutes)).to_string();
    send(
        &app,
        json!([
            ev("p1", "u1", "t1", "api_call", 1.0, &at(1)),
            ev("p2", "u2", "t1", "api_call", 2.0, &at(0)),
            ev("p3", "u1", "t1", "api_call", 4.0, &at(90))
        ]),
    )
    .await;
    let body = usage(&app, "organization_id=acme&usage_type=api_call&interval=hour&date_from=-3h").await;
    assert_eq!(body["results"][0]["count"], 7.0, "{body}");
    let by_user = usage(&app, "organization_id=acme&usage_type=api_call&interval=day&date_from=-1d&breakdowns=[\"user\"]").await;
    let total: f64 = by_user["results"].as_array().unwrap().iter().map(|s| s["count"].as_f64().unwrap()).sum();
    assert_eq!(total, 7.0, "{by_user}");
}

/// Monthly UTC series read whole months from the monthly cells (and the current month whole at
/// the present); their figures must equal the same range summed from daily buckets, which read
/// hourly cells, for plain sums, team breakdowns, gauges and across organizations.
async fn utc_months_read_from_monthly_cells_agree_with_days(app: TestApp) {
    let now = jiff::Timestamp::now();
    let ago = |days: i64| (now - jiff::SignedDuration::from_hours(24 * days)).to_string();
    let mut events = vec![
        ev("m1", "u1", "t1", "api_call", 1.0, &ago(70)),
        ev("m2", "u2", "t2", "api_call", 2.0, &ago(40)),
        ev("m3", "u1", "t1", "api_call", 4.0, &ago(10)),
        ev("m4", "u1", "t1", "api_call", 8.0, &ago(0)),
        ev("g1", "u1", "t1", "storage_bytes", 100.0, &ago(50)),
        ev("g2", "u2", "t2", "storage_bytes", 300.0, &ago(45)),
        ev("g3", "u1", "t1", "storage_bytes", 200.0, &ago(5)),
    ];
    let mut other = ev("o1", "x1", "", "api_call", 16.0, &ago(20));
    other["organization_id"] = json!("globex");
    events.push(other);
    send(&app, json!(events)).await;

    let totals = |body: &Value| -> Vec<(String, f64)> {
        let mut t: Vec<(String, f64)> = body["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (s["label"].as_str().unwrap().to_owned(), s["count"].as_f64().unwrap()))
            .collect();
        t.sort_by(|a, b| a.0.cmp(&b.0));
        t
    };
    for query in [
        "organization_id=acme&usage_type=api_call",
        "organization_id=acme&breakdowns=[\"type\",\"team\"]",
        "breakdowns=[\"type\",\"organization\"]",
    ] {
        let months = usage(&app, &format!("{query}&interval=month&date_from=-3m")).await;
        // The same range, from the first day of the first month, in daily buckets.
        let first = months["date_from"].as_str().unwrap().to_owned();
        let days = usage(&app, &format!("{query}&interval=day&date_from={}", &first[..10])).await;
        assert_eq!(totals(&months), totals(&days), "{query}: {months} vs {days}");
        // A fixed end inside the current month cuts it: the part before the end only.
        let cut = usage(&app, &format!("{query}&interval=month&date_from=-3m&date_to={}", ago(3))).await;
        let cut_days = usage(&app, &format!("{query}&interval=day&date_from={}&date_to={}", &first[..10], ago(3))).await;
        assert_eq!(totals(&cut), totals(&cut_days), "{query} to a fixed end");
    }
    let plain = usage(&app, "organization_id=acme&usage_type=api_call&interval=month&date_from=-3m").await;
    assert_eq!(plain["results"][0]["count"], 15.0, "{plain}");
    // A gauge's months come from the organizations' sums of latest values; broken down by user
    // they come from every user's cells: per month, the users' figures add up to the sum.
    for end in ["", &format!("&date_to={}", ago(3))] {
        let summed = usage(&app, &format!("organization_id=acme&usage_type=storage_bytes&interval=month&date_from=-3m{end}")).await;
        let by_user =
            usage(&app, &format!("organization_id=acme&usage_type=storage_bytes&interval=month&date_from=-3m&breakdowns=[\"user\"]{end}"))
                .await;
        let mut per_month = vec![0.0; summed["results"][0]["data"].as_array().unwrap().len()];
        for series in by_user["results"].as_array().unwrap() {
            for (month, v) in per_month.iter_mut().zip(series["data"].as_array().unwrap()) {
                *month += v.as_f64().unwrap();
            }
        }
        let data: Vec<f64> = summed["results"][0]["data"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        assert_eq!(data, per_month, "{summed} vs {by_user}");
        assert!(data.contains(&200.0), "{summed}");
    }
}
