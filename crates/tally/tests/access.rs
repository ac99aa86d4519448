//! Row-level access: every read route, with every kind of key. Other tenants' identifiers are
//! markers; no successful answer to a key may contain a marker it must not see (error answers
//! may echo what was asked for, and are not read).

mod support;

use serde_json::json;

http_tests!(no_read_route_leaks_across_scopes);

const ORG_A: &str = "acme";
const ORG_B: &str = "globex-secret";
const ANN: &str = "ann";
const BOB: &str = "bob-private";
const CID: &str = "cid-secret";

fn routes() -> Vec<String> {
    let mut routes: Vec<String> = [
        "/v1/organizations",
        "/v1/teams",
        "/v1/users",
        "/v1/subscriptions",
        "/v1/plans",
        "/v1/usage-types",
        "/v1/usage?usage_type=api_call&breakdowns=user&date_from=2025-01-01&date_to=2025-03-31",
        "/v1/usage?breakdowns=organization,user&date_from=2025-01-01&date_to=2025-03-31",
        "/v1/spend?breakdowns=organization,user&date_from=2025-01-01&date_to=2025-03-31",
        "/v1/user-reports",
        "/v1/user-reports?format=csv",
        "/v1/user-reports?format=ndjson",
        "/v1/user-reports/runs",
        "/compat/openmeter/api/v1/meters",
        "/v1/llm/activity",
        "/v1/servers",
        "/v1/remote/analytics/status",
        "/v1/reports/churn",
        "/v1/reports/churn/risers?min_increase=0",
        "/v1/reports/runs",
        "/v1/alerts",
        "/v1/alerts?status=open",
    ]
    .map(String::from)
    .to_vec();
    for org in [ORG_A, ORG_B] {
        routes.push(format!("/v1/organizations/{org}"));
        routes.push(format!("/v1/organizations/{org}/usage/totals"));
        routes.push(format!("/v1/organizations/{org}/llm/summary"));
        routes.push(format!("/v1/usage?organization_id={org}&breakdowns=user&date_from=2025-01-01&date_to=2025-03-31"));
        routes.push(format!("/v1/subscriptions/sub-{org}"));
        routes.push(format!("/v1/teams/team-{org}"));
        routes.push(format!("/v1/audit-events?organization_id={org}"));
        for tail in ["seats", "license-ledger", "invoice-preview"] {
            routes.push(format!("/v1/organizations/{org}/{tail}"));
        }
    }
    for user in [ANN, BOB, CID] {
        for tail in ["", "/usage/totals", "/llm/summary", "/llm/breakdown", "/llm/monthly", "/llm/requests", "/churn"] {
            routes.push(format!("/v1/users/{user}{tail}"));
        }
    }
    routes
}

async fn no_read_route_leaks_across_scopes(app: support::TestApp) {
    for org in [ORG_A, ORG_B] {
        app.post("/v1/organizations", json!({"id": org})).await;
        app.post("/v1/teams", json!({"id": format!("team-{org}"), "organization_id": org})).await;
    }
    app.post("/v1/plans", json!({"id": "basic"})).await;
    for org in [ORG_A, ORG_B] {
        let sub = json!({"id": format!("sub-{org}"), "organization_id": org, "plan_id": "basic", "status": "active",
            "current_period_start": "2025-01-01T00:00:00Z", "current_period_end": "2025-02-01T00:00:00Z"});
        assert_eq!(app.post("/v1/subscriptions", sub).await.0, 201);
    }
    let mut events = Vec::new();
    for (i, (org, user)) in [(ORG_A, ANN), (ORG_A, BOB), (ORG_B, CID)].into_iter().enumerate() {
        app.post("/v1/users", json!({"id": user, "organization_id": org, "username": user})).await;
        events.push(json!({"id": format!("c{i}"), "timestamp": "2025-02-01T10:00:00Z", "organization_id": org, "user_id": user,
            "team_id": format!("team-{org}"), "type": "api_call", "quantity": 2}));
        events.push(json!({"id": format!("l{i}"), "timestamp": "2025-02-01T11:00:00Z", "organization_id": org, "user_id": user,
            "type": "llm_request", "model": "gpt-4o", "provider": "openai", "status": "success", "input_tokens": 10, "output_tokens": 5, "cost": "0.01"}));
    }
    assert_eq!(app.post("/v1/events", json!(events)).await.0, 200);
    let audit: Vec<_> = [(ORG_A, ANN), (ORG_A, BOB), (ORG_B, CID)]
        .iter()
        .map(|(org, user)| json!({"id": format!("a-{user}"), "organization_id": org, "event_time": "2025-01-15T00:00:00Z", "event_type": 101, "user_id": user}))
        .collect();
    assert_eq!(app.post("/v1/audit-events", json!(audit)).await.0, 200);
    assert_eq!(app.post("/v1/jobs/ledger/run", json!({})).await.0, 200);
    // Two days of churn rows and alerts (every user is inactive by then).
    let options = tally::daily::Generate::default();
    let report = tally::daily::churn::ChurnReport { settings: Default::default() };
    let days = ["2025-02-10".parse().unwrap(), "2025-02-20".parse().unwrap()];
    tally::daily::generate(&report, app.store.as_ref(), &days, &options, |_| {}).await.unwrap();

    // (key scope, markers it must never see)
    let cases: [(&str, &[&str]); 4] = [
        ("org:acme", &[ORG_B, CID]),
        ("user:ann", &[ORG_B, CID, BOB]),
        ("ingest", &[ORG_A, ORG_B, ANN, BOB, CID]),
        ("server:3f1c", &[ORG_A, ORG_B, ANN, BOB, CID]),
    ];
    let routes = routes();
    // Sanity: the admin key sees every marker somewhere, so the markers are really in the answers.
    let mut admin_bodies = String::new();
    for route in &routes {
        let resp = app
            .client
            .get(format!("{}{route}", app.base))
            .bearer_auth(&app.admin)
            .header("x-tally-organization", ORG_B)
            .send()
            .await
            .unwrap();
        admin_bodies.push_str(&resp.text().await.unwrap());
    }
    for marker in [ORG_A, ORG_B, ANN, BOB, CID] {
        assert!(admin_bodies.contains(marker), "no admin answer mentions {marker}");
    }
    for (scope, hidden) in cases {
        let key = app.key(scope).await;
        let mut readable = 0;
        for route in &routes {
            let resp = app.client.get(format!("{}{route}", app.base)).bearer_auth(&key).send().await.unwrap();
            let status = resp.status().as_u16();
            let body = resp.text().await.unwrap();
            assert!(status < 500, "{scope} {route}: {status} {body}");
            if !(200..300).contains(&status) {
                continue;
            }
            readable += 1;
            for marker in hidden {
                assert!(!body.contains(marker), "{scope} reads {marker:?} at {route}: {body}");
            }
        }
        match scope {
            "org:acme" => assert!(readable > 20, "{scope} could read only {readable} routes"),
            // Its own user record, totals, LLM figures and history, and its usage series.
            "user:ann" => assert!(readable >= 8, "{scope} could read only {readable} routes"),
            // Keys that read nothing get nothing but reference data (plans, usage types).
            _ => assert!(readable <= 2, "{scope} could read {readable} routes"),
        }
    }
}
