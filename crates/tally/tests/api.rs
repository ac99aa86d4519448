//! The HTTP API through a real server, on both backends.

mod support;

use serde_json::{Value, json};
use support::TestApp;

http_tests!(
    nul_characters_are_stored_or_refused_never_a_500,
    keys_are_required_and_scoped,
    ingest_reports_each_event,
    bad_bodies_get_problem_details,
    totals_follow_the_scope,
    entities_create_read_update_list,
    new_usage_types_are_accepted_at_once,
    operations_endpoints,
);

fn ev(id: &str, org: &str, user: &str, ty: &str, qty: f64, at: &str) -> Value {
    json!({"id": id, "timestamp": at, "organization_id": org, "user_id": user, "type": ty, "quantity": qty})
}

async fn keys_are_required_and_scoped(app: TestApp) {
    let (status, body) = app.request("GET", "/v1/organizations", None, None).await;
    assert_eq!(status, 401);
    assert_eq!(body["type"], "urn:tally:problem:unauthorized");
    assert_eq!(app.request("GET", "/v1/organizations", Some("tly_wrong"), None).await.0, 401);
    let ingest = app.key("ingest").await;
    assert_eq!(app.request("GET", "/v1/organizations", Some(&ingest), None).await.0, 403);
    let batch = json!([ev("e1", "acme", "u1", "api_call", 1.0, "2025-01-01T00:00:00Z")]);
    assert_eq!(app.request("POST", "/v1/events", Some(&ingest), Some(batch.clone())).await.0, 200);
    let org = app.key("org:acme").await;
    assert_eq!(app.request("POST", "/v1/events", Some(&org), Some(batch)).await.0, 403);
    assert_eq!(app.request("GET", "/v1/organizations/acme", Some(&org), None).await.0, 200);
    // Another organization's data looks exactly like data that does not exist.
    app.post("/v1/organizations", json!({"id": "globex"})).await;
    assert_eq!(app.request("GET", "/v1/organizations/globex", Some(&org), None).await.0, 404);
    let (_, listed) = app.request("GET", "/v1/organizations", Some(&org), None).await;
    assert_eq!(listed["count"], 1);
    // Revoked keys stop working at once.
    let keys = app.store.api_keys().await.unwrap();
    let org_key = keys.iter().find(|k| k.scope.to_string() == "org:acme").unwrap();
    app.store.revoke_api_key(&org_key.id, jiff::Timestamp::now()).await.unwrap();
    assert_eq!(app.request("GET", "/v1/organizations/acme", Some(&org), None).await.0, 401);
}

async fn ingest_reports_each_event(app: TestApp) {
    let now = jiff::Timestamp::now();
    let future = (now + jiff::SignedDuration::from_hours(25)).to_string();
    let batch = json!([
        ev("e1", "acme", "u1", "api_call", 2.0, "2025-01-01T10:00:00Z"),
        ev("e2", "acme", "u1", "nope", 1.0, "2025-01-01T10:00:00Z"),
        ev("e3", "acme", "u1", "api_call", -1.0, "2025-01-01T10:00:00Z"),
        ev("e4", "acme", "u1", "api_call", 1.0, &future),
        ev("e5", "acme", "u1", "api_call", 1.0, "1999-12-31T23:59:59Z"),
        ev("e1", "acme", "u1", "api_call", 2.0, "2025-01-01T10:00:00Z"),
        {"id": "l1", "timestamp": "2025-01-01T10:00:00Z", "organization_id": "acme", "user_id": "u1", "type": "llm_request",
         "model": "gpt-4o", "provider": "openai", "status": "success", "input_tokens": 100, "output_tokens": 20, "cost": "0.0015", "latency_ms": 800},
        {"id": "l2", "timestamp": "2025-01-01T10:00:00Z", "organization_id": "acme", "user_id": "u1", "type": "llm_request", "input_tokens": -3},
    ]);
    let (status, body) = app.post("/v1/events", batch.clone()).await;
    assert_eq!(status, 207, "{body}");
    assert_eq!(body["accepted"], 2);
    assert_eq!(body["duplicates"], 1);
    let rejected: Vec<(u64, String)> = body["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["index"].as_u64().unwrap(), r["reason"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(rejected.iter().map(|r| r.0).collect::<Vec<_>>(), [1, 2, 3, 4, 7]);
    assert!(rejected[0].1.contains("unknown usage type \"nope\"") && rejected[0].1.contains("api_call"), "{}", rejected[0].1);
    assert!(rejected[1].1.contains("non-negative"));
    assert!(rejected[2].1.contains("future"));
    assert!(rejected[3].1.contains("2000"));
    assert!(rejected[4].1.contains("input_tokens"));
    // The same request again: everything valid is a duplicate, nothing counts twice.
    let (_, again) = app.post("/v1/events", batch).await;
    assert_eq!((again["accepted"].as_u64(), again["duplicates"].as_u64()), (Some(0), Some(3)));
    let (_, totals) = app.get("/v1/organizations/acme/usage/totals").await;
    assert_eq!(
        totals["totals"],
        json!([{"usage_type": "api_call", "count": 1, "sum": 2.0}, {"usage_type": "llm_request", "count": 1, "sum": 1.0}])
    );

    let ndjson = format!(
        "{}\n\n{{broken\n{}\n",
        ev("n1", "acme", "u2", "login", 1.0, "2025-01-02T00:00:00Z"),
        ev("n2", "acme", "u2", "login", 1.0, "2025-01-02T00:00:00Z")
    );
    let (status, _, body) = app.raw_post("/v1/events", "application/x-ndjson", ndjson).await;
    assert_eq!(status, 207);
    assert_eq!(body["accepted"], 2);
    assert_eq!(body["rejected"][0]["index"], 1);
    assert!(body["rejected"][0]["reason"].as_str().unwrap().starts_with("line 3:"));
}

async fn bad_bodies_get_problem_details(app: TestApp) {
    let (status, headers, body) = app.raw_post("/v1/events", "application/json", "[\n{\"id\": \"a\"},\n{\"id\" 1}\n]").await;
    assert_eq!(status, 400);
    assert_eq!(headers["content-type"], "application/problem+json");
    assert_eq!((body["line"].as_u64(), body["column"].as_u64()), (Some(3), Some(7)));
    assert_eq!(app.raw_post("/v1/events", "text/csv", "a,b").await.0, 415);
    let too_many: Vec<Value> = (0..10_001).map(|i| ev(&format!("e{i}"), "o", "u", "login", 1.0, "2025-01-01T00:00:00Z")).collect();
    let (status, _, body) = app.raw_post("/v1/events", "application/json", serde_json::to_string(&too_many).unwrap()).await;
    assert_eq!(status, 413);
    assert!(body["detail"].as_str().unwrap().contains("10000"));
    let huge = format!("[\"{}\"]", "x".repeat(11 * 1024 * 1024));
    assert_eq!(app.raw_post("/v1/events", "application/json", huge).await.0, 413);
    assert_eq!(app.get("/v1/nowhere").await.0, 404);
    let (status, body) = app.post("/v1/users", json!({"id": "u1", "organization_id": "o", "role": 500})).await;
    assert_eq!(status, 400);
    assert!(body["detail"].as_str().unwrap().contains("unknown role 500"), "{body}");
    let (status, body) = app.post("/v1/organizations", json!({"id": "o", "nmae": "typo"})).await;
    assert_eq!(status, 400);
    assert!(body["detail"].as_str().unwrap().contains("nmae"));
    let (status, body) = app.get("/v1/users?limit=5000").await;
    assert_eq!(status, 400);
    assert_eq!(body["parameter"], "limit");
}

async fn totals_follow_the_scope(app: TestApp) {
    let batch = json!([
        ev("a", "acme", "u1", "submission", 1.0, "2025-01-01T09:30:00Z"),
        ev("b", "acme", "u1", "submission", 2.0, "2025-01-01T10:30:00Z"),
        ev("c", "acme", "u2", "submission", 4.0, "2025-01-01T11:30:00Z"),
        ev("d", "globex", "u3", "submission", 8.0, "2025-01-01T11:30:00Z"),
    ]);
    app.post("/v1/events", batch).await;
    let (_, body) = app.get("/v1/organizations/acme/usage/totals?from=2025-01-01T10:00:00Z&to=2025-01-01T12:00:00Z").await;
    assert_eq!(body["totals"][0]["sum"], 6.0);
    assert_eq!(body["from"], "2025-01-01T10:00:00Z");
    let (_, body) = app.get("/v1/users/u1/usage/totals").await;
    assert_eq!(body["totals"][0]["sum"], 3.0);
    let (status, body) = app.get("/v1/organizations/acme/usage/totals?from=yesterday").await;
    assert_eq!(status, 400);
    assert_eq!(body["parameter"], "from");
    let (status, _) = app.get("/v1/organizations/acme/usage/totals?from=2025-02-01T00:00:00Z&to=2025-01-01T00:00:00Z").await;
    assert_eq!(status, 400);
    let user = app.key("user:u1").await;
    assert_eq!(app.request("GET", "/v1/users/u1/usage/totals", Some(&user), None).await.0, 200);
    assert_eq!(app.request("GET", "/v1/users/u2/usage/totals", Some(&user), None).await.0, 404);
    assert_eq!(app.request("GET", "/v1/organizations/acme/usage/totals", Some(&user), None).await.0, 404);
    let org = app.key("org:globex").await;
    assert_eq!(app.request("GET", "/v1/users/u1/usage/totals", Some(&org), None).await.0, 404);
    let (status, body) = app.request("GET", "/v1/users/u3/usage/totals", Some(&org), None).await;
    assert_eq!((status, body["totals"][0]["sum"].as_f64()), (200, Some(8.0)));
    assert_eq!(app.get("/v1/organizations/missing/usage/totals").await.0, 404);
}

async fn entities_create_read_update_list(app: TestApp) {
    let (status, org) = app.post("/v1/organizations", json!({"id": "acme", "name": "Acme", "metadata": {"region": "eu"}})).await;
    assert_eq!(status, 201, "{org}");
    assert_eq!(app.post("/v1/organizations", json!({"id": "acme"})).await.0, 409);
    let (status, patched) = app
        .request("PATCH", "/v1/organizations/acme", Some(&app.admin), Some(json!({"name": "Acme Inc", "metadata": {"tier": "gold"}})))
        .await;
    assert_eq!(status, 200);
    assert_eq!(patched["name"], "Acme Inc");
    assert_eq!(patched["metadata"], json!({"region": "eu", "tier": "gold"}));
    assert_eq!(app.get("/v1/organizations/acme").await.1["name"], "Acme Inc");
    let (status, _) = app.request("PUT", "/v1/organizations/other", Some(&app.admin), Some(json!({"id": "acme"}))).await;
    assert_eq!(status, 400);

    assert_eq!(app.post("/v1/teams", json!({"id": "t1", "organization_id": "acme", "name": "Core"})).await.0, 201);
    for i in 0..7 {
        let role = [100, 200, 300, 400, 600][i % 5];
        let (status, _) =
            app.post("/v1/users", json!({"id": format!("u{i}"), "organization_id": "acme", "role": role, "is_bot": i == 6})).await;
        assert_eq!(status, 201);
    }
    let (_, page) = app.get("/v1/users?organization_id=acme&limit=3&offset=3").await;
    assert_eq!(page["count"], 7);
    assert_eq!(page["results"].as_array().unwrap().len(), 3);
    assert_eq!(page["results"][0]["id"], "u3");
    // PUT is an idempotent sync: it creates, then replaces.
    let body = json!({"id": "u9", "organization_id": "acme", "username": "ada", "role": 200});
    assert_eq!(app.request("PUT", "/v1/users/u9", Some(&app.admin), Some(body.clone())).await.0, 200);
    assert_eq!(app.request("PUT", "/v1/users/u9", Some(&app.admin), Some(body)).await.0, 200);
    assert_eq!(app.get("/v1/users/u9").await.1["username"], "ada");
    let (status, _) = app.request("PATCH", "/v1/users/u9", Some(&app.admin), Some(json!({"organization_id": "globex"}))).await;
    assert_eq!(status, 400);

    let plan = json!({"id": "pro", "name": "Pro", "usage": {"submission": {"limit": 5000, "unit_price": "0.002"}},
                      "seats": {"free_seats": 10, "price_per_seat_monthly": "8.00", "minimum_licenses": 6, "guest_seat_ratio": 5}});
    let (status, plan) = app.post("/v1/plans", plan).await;
    assert_eq!(status, 201, "{plan}");
    assert_eq!(plan["usage"]["submission"]["unit_price"], "0.002");
    let org_key = app.key("org:acme").await;
    assert_eq!(app.request("POST", "/v1/plans", Some(&org_key), Some(json!({"id": "cheap"}))).await.0, 403);
    assert_eq!(app.request("GET", "/v1/plans/pro", Some(&org_key), None).await.0, 200);
    let sub = json!({"id": "s1", "organization_id": "acme", "plan_id": "pro", "status": "trialing",
                     "current_period_start": "2025-01-01T00:00:00Z", "current_period_end": "2025-02-01T00:00:00Z", "trial_end": "2025-01-15T00:00:00Z"});
    assert_eq!(app.post("/v1/subscriptions", sub).await.0, 201);
    let (status, patched) =
        app.request("PATCH", "/v1/subscriptions/s1", Some(&org_key), Some(json!({"status": "active", "trial_end": null}))).await;
    assert_eq!(status, 200);
    assert_eq!((patched["status"].as_str(), &patched["trial_end"]), (Some("active"), &Value::Null));
    let (status, body) = app.request("PATCH", "/v1/subscriptions/s1", Some(&org_key), Some(json!({"status": "paused"}))).await;
    assert_eq!(status, 400, "{body}");
    let bad_period = json!({"id": "s2", "organization_id": "acme", "plan_id": "pro", "status": "active",
                     "current_period_start": "2025-02-01T00:00:00Z", "current_period_end": "2025-01-01T00:00:00Z"});
    assert_eq!(app.post("/v1/subscriptions", bad_period).await.0, 400);
    let (_, subs) = app.request("GET", "/v1/subscriptions", Some(&org_key), None).await;
    assert_eq!(subs["count"], 1);
}

async fn new_usage_types_are_accepted_at_once(app: TestApp) {
    let (_, types) = app.get("/v1/usage-types").await;
    assert!(types["count"].as_u64().unwrap() >= 7);
    let (status, body) = app
        .post(
            "/v1/usage-types",
            json!({"key": "assignment_completed", "name": "Assignments", "unit": "assignments", "aggregation": "count"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(app.post("/v1/usage-types", json!({"key": "Bad-Key", "aggregation": "sum"})).await.0, 400);
    assert_eq!(app.post("/v1/usage-types", json!({"key": "x", "aggregation": "avg"})).await.0, 400);
    let (status, body) = app.post("/v1/events", json!([ev("a1", "o", "u", "assignment_completed", 1.0, "2025-01-01T00:00:00Z")])).await;
    assert_eq!((status, body["accepted"].as_u64()), (200, Some(1)));
}

async fn operations_endpoints(app: TestApp) {
    let get = |path: &'static str| {
        let client = app.client.clone();
        let base = app.base.clone();
        async move {
            let r = client.get(format!("{base}{path}")).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    assert_eq!(get("/healthz").await.0, 200);
    assert_eq!(get("/readyz").await.0, 200);
    app.post(
        "/v1/events",
        json!([ev("a", "o", "u", "login", 1.0, "2025-01-01T00:00:00Z"), ev("b", "o", "u", "nope", 1.0, "2025-01-01T00:00:00Z")]),
    )
    .await;
    let (status, metrics) = get("/metrics").await;
    assert_eq!(status, 200);
    assert!(metrics.contains("tally_ingest_events_total{outcome=\"accepted\"} 1"), "{metrics}");
    assert!(metrics.contains("tally_ingest_rejected_events_total{reason=\"unknown_usage_type\"} 1"));
    assert!(metrics.contains("tally_commit_batch_seconds_count"));
}

/// PostgreSQL cannot hold the NUL character in text or JSON (schemathesis found a 500 there):
/// SQLite stores it, PostgreSQL answers 400 naming the reason; neither fails.
async fn nul_characters_are_stored_or_refused_never_a_500(app: support::TestApp) {
    let team = json!({"id": "t-nul", "organization_id": "acme", "name": "a\u{0}b", "metadata": {"k": "x\u{0}y"}});
    let (status, body) = app.post("/v1/teams", team).await;
    match app.store.backend() {
        "sqlite" => assert_eq!(status, 201, "{body}"),
        _ => {
            assert_eq!(status, 400, "{body}");
            assert_eq!(body["type"], "urn:tally:problem:unstorable-value", "{body}");
        }
    }
    // In events it is refused per event on both backends, so it cannot fail the batch it would
    // have been committed with.
    let mut bad = ev("nul", "acme", "u-nul", "api_call", 1.0, "2025-01-01T00:00:00Z");
    bad["properties"] = json!({"path": "a\u{0}b"});
    let good = ev("fine", "acme", "u-nul", "api_call", 1.0, "2025-01-01T00:00:00Z");
    let (status, body) = app.post("/v1/events", json!([bad, good])).await;
    assert_eq!((status, body["accepted"].as_u64()), (207, Some(1)), "{body}");
    assert_eq!(body["rejected"][0]["index"], 0, "{body}");
    assert!(body["rejected"][0]["reason"].as_str().unwrap().contains("NUL"), "{body}");
}
