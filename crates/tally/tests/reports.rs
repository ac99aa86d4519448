//! `GET /v1/user-reports` over HTTP, on both backends: records, `q` filters, ordering, paging,
//! exports and the errors operators see.

mod support;

use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

http_tests!(
    reports_show_fresh_usage_and_balances,
    reports_filter_order_page_and_export,
    reports_export_many_pages,
    reports_refuse_bad_input
);

/// acme (plan basic: 100 submissions + 20 add-on, period around now), globex (no subscription:
/// the calendar month); ann and bob in acme, cid in globex.
async fn setup(app: &support::TestApp) -> Timestamp {
    let now = Timestamp::now();
    let at = |d: SignedDuration| (now + d).to_string();
    for org in ["acme", "globex"] {
        assert_eq!(app.post("/v1/organizations", json!({"id": org, "name": format!("{org} Inc")})).await.0, 201);
    }
    let plan =
        json!({"id": "basic", "usage": {"submission": {"limit": 100}, "llm_request": {"limit": 1000}, "storage_bytes": {"limit": 8000}}});
    assert_eq!(app.post("/v1/plans", plan).await.0, 201);
    let sub = json!({"id": "sub-acme", "organization_id": "acme", "plan_id": "basic", "status": "active",
        "current_period_start": at(SignedDuration::from_hours(-24 * 10)), "current_period_end": at(SignedDuration::from_hours(24 * 20)),
        "add_ons": {"submission": 20}});
    assert_eq!(app.post("/v1/subscriptions", sub).await.0, 201);
    let users = [
        json!({"id": "ann", "organization_id": "acme", "username": "ann.demo", "email": "ann@acme.test", "first_name": "Ann",
               "last_name": "Lee", "role": 100, "date_joined": "2024-01-10T00:00:00Z", "metadata": {"tier": "gold"}}),
        json!({"id": "bob", "organization_id": "acme", "username": "bob-bot", "is_bot": true, "date_joined": "2024-06-01T00:00:00Z"}),
        json!({"id": "cid", "organization_id": "globex", "username": "cid.demo", "date_joined": "2025-01-01T00:00:00Z"}),
    ];
    for u in users {
        assert_eq!(app.post("/v1/users", u).await.0, 201);
    }
    let recent = at(SignedDuration::from_secs(-5));
    let old = at(SignedDuration::from_hours(-24 * 40));
    let events = json!([
        {"id": "e1", "timestamp": old, "organization_id": "acme", "user_id": "ann", "type": "submission", "quantity": 7},
        {"id": "e2", "timestamp": recent, "organization_id": "acme", "user_id": "ann", "type": "submission", "quantity": 30},
        {"id": "e3", "timestamp": recent, "organization_id": "acme", "user_id": "ann", "type": "storage_bytes", "quantity": 5000},
        {"id": "e4", "timestamp": recent, "organization_id": "acme", "user_id": "ann", "type": "llm_request", "model": "gpt-4o",
         "provider": "openai", "status": "success", "input_tokens": 100, "output_tokens": 20, "cost": "0.25"},
        {"id": "e5", "timestamp": recent, "organization_id": "acme", "user_id": "bob", "type": "submission", "quantity": 150},
        {"id": "e6", "timestamp": recent, "organization_id": "acme", "user_id": "bob", "type": "llm_request", "status": "error",
         "input_tokens": 10, "output_tokens": 0, "cost": "1.5"},
        {"id": "e7", "timestamp": recent, "organization_id": "globex", "user_id": "cid", "type": "submission", "quantity": 12},
        // An earlier storage sample: storage is a gauge, so only the latest (5000) counts.
        {"id": "e8", "timestamp": at(SignedDuration::from_secs(-60)), "organization_id": "acme", "user_id": "ann", "type": "storage_bytes", "quantity": 4000},
    ]);
    let (status, report) = app.post("/v1/events", events).await;
    assert_eq!((status, report["accepted"].as_u64()), (200, Some(8)), "{report}");
    now
}

fn ids(answer: &Value) -> Vec<&str> {
    answer["results"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap()).collect()
}

async fn reports_show_fresh_usage_and_balances(app: support::TestApp) {
    let now = setup(&app).await;
    let (status, _) = app.request("GET", "/v1/user-reports", None, None).await;
    assert_eq!(status, 401);
    let org_key = app.key("org:acme").await;
    assert_eq!(app.request("GET", "/v1/user-reports", Some(&org_key), None).await.0, 403);

    let (status, answer) = app.get("/v1/user-reports").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!((answer["count"].as_u64(), ids(&answer)), (Some(3), vec!["ann", "bob", "cid"]));
    assert_eq!((answer["next"].clone(), answer["previous"].clone()), (Value::Null, Value::Null));
    let ann = &answer["results"][0];
    assert_eq!(ann["full_name"], "Ann Lee");
    assert_eq!(ann["organization"], json!({"id": "acme", "name": "acme Inc", "role": 100}));
    assert_eq!(ann["subscriptions"][0]["status"], "active");
    assert_eq!(ann["metadata"]["tier"], "gold");
    let usage = &ann["service_usage"];
    // The 40-day-old submission is before the period: all time only.
    assert_eq!(usage["submission"], json!({"all_time": 37.0, "current_period": 30.0}));
    assert_eq!(usage["total_storage_bytes"], 5000.0);
    assert_eq!(usage["balances"]["storage_bytes"]["balance_percent"], 62.5, "a gauge's latest value counts: {usage}");
    assert_eq!(
        usage["llm"]["current_period"],
        json!({"requests": 1, "failed": 0, "input_tokens": 100, "output_tokens": 20, "cost": "0.25"})
    );
    assert_eq!(
        usage["balances"]["submission"],
        json!({"effective_limit": 120.0, "balance_value": 90.0, "balance_percent": 25.0, "exceeded": false})
    );
    let bob = &answer["results"][1];
    assert_eq!(bob["service_usage"]["balances"]["submission"]["exceeded"], true);
    assert_eq!(bob["service_usage"]["llm"]["all_time"]["failed"], 1);
    // No subscription: the calendar month (the event is 5 s old: same month unless a month just began).
    let cid = &answer["results"][2];
    let same_month =
        (now - SignedDuration::from_secs(5)).to_zoned(jiff::tz::TimeZone::UTC).month() == now.to_zoned(jiff::tz::TimeZone::UTC).month();
    if same_month {
        assert_eq!(cid["service_usage"]["submission"]["current_period"], 12.0);
    }
    assert_eq!(cid["service_usage"]["balances"], json!({}));
    assert_eq!(cid["subscriptions"], json!([]));

    // Fresh: an acknowledged event shows in the next answer.
    let more = json!([{"id": "e9", "timestamp": now.to_string(), "organization_id": "acme", "user_id": "ann", "type": "submission", "quantity": 3}]);
    app.post("/v1/events", more).await;
    let (_, answer) = app.get("/v1/user-reports?q=id:ann").await;
    assert_eq!(answer["results"][0]["service_usage"]["submission"]["current_period"], 33.0);

    // The rebuild, started over HTTP, runs in the background and changes no figure.
    let (_, before) = app.get("/v1/user-reports").await;
    let (status, run) = app.post("/v1/user-reports/rebuild", json!({})).await;
    assert_eq!((status, run["status"].as_str()), (202, Some("in_progress")), "{run}");
    let started = std::time::Instant::now();
    loop {
        let (_, runs) = app.get("/v1/user-reports/runs").await;
        if runs["results"][0]["status"] == "completed" {
            assert_eq!(runs["results"][0]["id"], run["id"]);
            assert_eq!(runs["results"][0]["processed"], 9);
            break;
        }
        assert!(started.elapsed().as_secs() < 30, "{runs}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(app.get("/v1/user-reports").await.1, before);
    assert_eq!(app.request("POST", "/v1/user-reports/rebuild", Some(&org_key), Some(json!({}))).await.0, 403);
}

async fn reports_filter_order_page_and_export(app: support::TestApp) {
    setup(&app).await;
    let cases: &[(&str, &[&str])] = &[
        ("service_usage__submission__current_period__gte:30", &["ann", "bob"]),
        ("username__icontains:demo AND service_usage__submission__current_period__gte:10", &["ann", "cid"]),
        ("demo", &["ann", "cid"]),
        ("subscriptions[]__status:active", &["ann", "bob"]),
        ("NOT subscriptions[]__status:active", &["cid"]),
        ("metadata__tier:gold", &["ann"]),
        ("is_bot:true OR role:100", &["ann", "bob"]),
        ("NOT organization__id:acme", &["cid"]),
        ("date_joined__gte:2024-05-01", &["bob", "cid"]),
        ("date_joined__lt:2024-06-01T00:00:00Z", &["ann"]),
        ("service_usage__balances__submission__exceeded:true", &["bob"]),
        // Unlimited counts as 0 %.
        ("service_usage__balances__submission__balance_percent__lt:50", &["ann", "cid"]),
        ("service_usage__balances__submission__effective_limit__isnull:true", &["cid"]),
        ("service_usage__llm__all_time__cost__gt:1", &["bob"]),
        ("service_usage__total_storage_bytes__gt:0", &["ann"]),
        // 5000 of 8000 bytes in use (not the 9000 its two samples add up to).
        ("service_usage__balances__storage_bytes__balance_percent__gt:60", &["ann"]),
        ("service_usage__balances__storage_bytes__exceeded:true", &[]),
        ("full_name__istartswith:ann", &["ann"]),
        ("organization__name:\"globex Inc\"", &["cid"]),
        ("username__in:ann.demo,cid.demo", &["ann", "cid"]),
        ("last_login__isnull:false", &[]),
    ];
    for (q, expected) in cases {
        let (status, answer) = app.get(&format!("/v1/user-reports?q={}", urlencode(q))).await;
        assert_eq!(status, 200, "{q}: {answer}");
        assert_eq!(ids(&answer), *expected, "{q}");
        assert_eq!(answer["count"].as_u64(), Some(expected.len() as u64), "{q}");
    }

    // Not a lookup the language has: refused, not an empty page.
    let (status, answer) = app.get(&format!("/v1/user-reports?q={}", urlencode("email__endswith:x"))).await;
    assert_eq!(status, 400, "{answer}");

    // Ordering by a computed figure, paged one at a time.
    let path = "/v1/user-reports?ordering=-service_usage__llm__current_period__cost,username&limit=1";
    let (_, first) = app.get(path).await;
    assert_eq!((ids(&first), first["count"].as_u64()), (vec!["bob"], Some(3)));
    let next = first["next"].as_str().unwrap().to_owned();
    let (_, second) = app.get(&next).await;
    assert_eq!(ids(&second), ["ann"]);
    assert!(second["previous"].as_str().unwrap().contains("offset=0"));
    // Past the last match the page is empty and still counts the matches.
    let (_, beyond) = app.get(&format!("{path}&offset=5")).await;
    assert_eq!((ids(&beyond).len(), beyond["count"].as_u64()), (0, Some(3)));
    let (_, by_usage) = app.get("/v1/user-reports?ordering=-service_usage__submission__all_time").await;
    assert_eq!(ids(&by_usage), ["bob", "ann", "cid"]);

    // Exports: every row, no paging.
    let resp =
        app.client.get(format!("{}/v1/user-reports?format=csv&ordering=username", app.base)).bearer_auth(&app.admin).send().await.unwrap();
    assert_eq!(resp.headers()["content-type"], "text/csv; charset=utf-8");
    let csv = resp.text().await.unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 4, "{csv}");
    assert!(lines[0].starts_with("id,username,email,"));
    assert!(lines[0].contains("service_usage__submission__current_period"));
    assert!(lines[1].starts_with("ann,ann.demo,ann@acme.test,Ann,Lee,true,false,false,100,"), "{}", lines[1]);
    let resp = app.client.get(format!("{}/v1/user-reports?format=ndjson&q=demo", app.base)).bearer_auth(&app.admin).send().await.unwrap();
    let ndjson = resp.text().await.unwrap();
    let records: Vec<Value> = ndjson.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(records.iter().map(|r| r["id"].as_str().unwrap()).collect::<Vec<_>>(), ["ann", "cid"]);
}

/// Exports longer than a store page (1,000 rows): every matching user exactly once, in key order
/// or in the asked order, whether the pages are read ahead or not.
async fn reports_export_many_pages(app: support::TestApp) {
    let recent = (Timestamp::now() - SignedDuration::from_secs(5)).to_string();
    // 2,345 users over two organizations, registered by their events; every third has submitted 2.
    let events: Vec<Value> = (0..2345)
        .map(|i| {
            json!({"id": format!("m{i}"), "timestamp": recent, "organization_id": if i % 2 == 0 { "acme" } else { "globex" },
                   "user_id": format!("u{i:04}"), "type": if i % 3 == 0 { "submission" } else { "api_call" }, "quantity": 2})
        })
        .collect();
    let (status, report) = app.post("/v1/events", Value::Array(events)).await;
    assert_eq!((status, report["accepted"].as_u64()), (200, Some(2345)), "{report}");
    let export = |query: &str| {
        let (client, base, admin) = (app.client.clone(), app.base.clone(), app.admin.clone());
        let url = format!("{base}/v1/user-reports?format=csv&{query}");
        async move {
            let csv = client.get(url).bearer_auth(admin).send().await.unwrap().text().await.unwrap();
            csv.lines().skip(1).map(|l| l.split(',').next().unwrap().to_owned()).collect::<Vec<String>>()
        }
    };
    let mut in_key_order: Vec<(&str, String)> =
        (0..2345).map(|i| (if i % 2 == 0 { "acme" } else { "globex" }, format!("u{i:04}"))).collect();
    in_key_order.sort();
    let expected: Vec<String> = in_key_order.iter().map(|(_, u)| u.clone()).collect();
    assert_eq!(export("").await, expected);
    let submitted: Vec<String> =
        in_key_order.iter().filter(|(_, u)| u[1..].parse::<u32>().unwrap() % 3 == 0).map(|(_, u)| u.clone()).collect();
    assert_eq!(export("q=service_usage__submission__all_time__gte:1").await, submitted);
    let mut by_name = expected.clone();
    by_name.sort_by(|a, b| b.cmp(a));
    assert_eq!(export("ordering=-username").await, by_name);
}

async fn reports_refuse_bad_input(app: support::TestApp) {
    setup(&app).await;
    let bad = |q: &str| format!("/v1/user-reports?q={}", urlencode(q));
    let (status, problem) = app.get(&bad("colour:red")).await;
    assert_eq!((status, problem["parameter"].as_str(), problem["position"].as_u64()), (400, Some("q"), Some(0)));
    assert!(problem["allowed"].as_array().unwrap().iter().any(|f| f == "username"));
    let (status, problem) = app.get(&bad("role:1 OR")).await;
    assert_eq!((status, problem["position"].as_u64()), (400, Some(9)), "{problem}");
    let (status, problem) = app.get(&bad("role__icontains:1")).await;
    assert_eq!(status, 400);
    assert!(problem["detail"].as_str().unwrap().contains("does not apply"));
    let (status, problem) = app.get(&bad("date_joined__gte:soon")).await;
    assert_eq!(status, 400);
    assert!(problem["detail"].as_str().unwrap().contains("date-time"));
    let (status, problem) = app.get("/v1/user-reports?ordering=-colour").await;
    assert_eq!((status, problem["parameter"].as_str()), (400, Some("ordering")));
    assert!(problem["allowed"].is_array());
    for (query, parameter) in [
        ("limit=0", "limit"),
        ("limit=5000", "limit"),
        ("limit=ten", "limit"),
        ("offset=-1", "offset"),
        ("format=xml", "format"),
        ("sort=x", "sort"),
    ] {
        let (status, problem) = app.get(&format!("/v1/user-reports?{query}")).await;
        assert_eq!((status, problem["parameter"].as_str()), (400, Some(parameter)), "{query}");
    }
    // Injection attempts are values, never SQL.
    let (status, answer) = app.get(&bad("username:\"x' OR 1=1 --\"")).await;
    assert_eq!((status, answer["count"].as_u64()), (200, Some(0)));
    let (status, answer) = app.get(&bad("metadata__tier:\"gold') OR ('1'='1\"")).await;
    assert_eq!((status, answer["count"].as_u64()), (200, Some(0)));
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
