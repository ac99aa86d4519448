//! Row-level access: every route, with every kind of key. Other tenants' identifiers are
//! markers; no successful answer to a key may contain a marker it must not see (error answers
//! may echo what was asked for, and are not read). The routes come from a hand-written list of
//! meaningful queries and from the OpenAPI document, so a new route is walked as soon as it is
//! documented (and the document is checked against the router in tests/openapi.rs).

mod support;

use serde_json::json;

http_tests!(no_read_route_leaks_across_scopes, every_documented_route_is_walked_with_every_scope);

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

/// Two organizations with users, teams, subscriptions, events, audit events, a ledger, churn
/// reports and alerts.
async fn populate(app: &support::TestApp) {
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
}

/// (key scope, markers it must never see)
const CASES: [(&str, &[&str]); 4] = [
    ("org:acme", &[ORG_B, CID]),
    ("user:ann", &[ORG_B, CID, BOB]),
    ("ingest", &[ORG_A, ORG_B, ANN, BOB, CID]),
    ("server:3f1c", &[ORG_A, ORG_B, ANN, BOB, CID]),
];

async fn no_read_route_leaks_across_scopes(app: support::TestApp) {
    populate(&app).await;
    let cases = CASES;
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

/// An id to put in a path, and whose it is: an organization, a user, or `""` for shared
/// reference data (plans, usage types, prices), which only an admin key may change.
type Owned = (String, &'static str);

/// Per-organization resources beyond `populate`: a registered server, an alert rule, a webhook
/// channel and an OpenMeter meter each, made with that organization's own key.
struct Extra {
    servers: Vec<Owned>,
    rules: Vec<Owned>,
    channels: Vec<Owned>,
    meters: Vec<Owned>,
    alerts: Vec<Owned>,
}

async fn extra(app: &support::TestApp) -> Extra {
    let mut extra = Extra { servers: vec![], rules: vec![], channels: vec![], meters: vec![], alerts: vec![] };
    for org in [ORG_A, ORG_B] {
        let (status, registered) = app
            .post("/v1/servers", json!({"hostname": format!("{org}.example"), "contact_email": "ops@example.org", "organization_id": org}))
            .await;
        assert_eq!(status, 201, "{registered}");
        extra.servers.push((registered["server"]["id"].as_str().unwrap().to_owned(), org));
        let key = app.key(&format!("org:{org}")).await;
        let rule = json!({"name": format!("{org} spend"), "scope": {"type": "organization", "organization_id": org}, "metric": "llm_cost",
                          "window": "all_time", "threshold": "0.001"});
        let (status, rule) = app.request("POST", "/v1/alert-rules", Some(&key), Some(rule)).await;
        assert_eq!(status, 201, "{rule}");
        extra.rules.push((rule["id"].as_str().unwrap().to_owned(), org));
        let channel = json!({"name": format!("{org} hook"), "url": "http://127.0.0.1:9/hook"});
        let (status, channel) = app.request("POST", "/v1/notification-channels", Some(&key), Some(channel)).await;
        assert_eq!(status, 201, "{channel}");
        extra.channels.push((channel["id"].as_str().unwrap().to_owned(), org));
        let slug = format!("meter_{}", org.replace('-', "_"));
        let meter = json!({"slug": slug, "aggregation": "COUNT", "eventType": "prompt"});
        let (status, meter) = app.request("POST", "/compat/openmeter/api/v1/meters", Some(&key), Some(meter)).await;
        assert_eq!(status, 201, "{meter}");
        extra.meters.push((slug, org));
    }
    // Each rule opens an alert at the next sweep (the organizations' LLM spend is over 0.001).
    for _ in 0..100 {
        let (_, alerts) = app.get("/v1/alerts?source=rule").await;
        extra.alerts = alerts["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| (a["id"].as_str().unwrap().to_owned(), if a["organization_id"] == ORG_A { ORG_A } else { ORG_B }))
            .collect();
        if extra.alerts.len() == 2 {
            return extra;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the rules opened no alerts: {:?}", extra.alerts);
}

/// The ids to try in a documented path, by what it names.
fn ids(path: &str, extra: &Extra) -> Vec<Owned> {
    let own = |v: &[(&str, &'static str)]| v.iter().map(|(id, owner)| (id.to_string(), *owner)).collect::<Vec<_>>();
    let prefix = path.split('{').next().unwrap();
    match prefix {
        "/v1/users/" => own(&[(ANN, ANN), (BOB, BOB), (CID, CID)]),
        "/v1/organizations/" => own(&[(ORG_A, ORG_A), (ORG_B, ORG_B)]),
        "/v1/teams/" => vec![(format!("team-{ORG_A}"), ORG_A), (format!("team-{ORG_B}"), ORG_B)],
        "/v1/subscriptions/" => vec![(format!("sub-{ORG_A}"), ORG_A), (format!("sub-{ORG_B}"), ORG_B)],
        "/v1/servers/" => extra.servers.clone(),
        "/v1/alert-rules/" => extra.rules.clone(),
        "/v1/notification-channels/" => extra.channels.clone(),
        "/v1/alerts/" => extra.alerts.clone(),
        "/compat/openmeter/api/v1/meters/" => extra.meters.clone(),
        "/v1/plans/" => own(&[("basic", "")]),
        "/v1/usage-types/" => own(&[("api_call", "")]),
        "/v1/llm/prices/" => own(&[("gpt-4o", "")]),
        "/ui/" => own(&[("app.js", "")]),
        _ => panic!("tests/access.rs has no ids for {path}: add them to `ids`"),
    }
}

/// Every documented operation, its path filled with each tenant's ids: reads must not show
/// another tenant's markers, and changes to another tenant's (or shared) resources must be
/// refused and leave them as they were.
async fn every_documented_route_is_walked_with_every_scope(app: support::TestApp) {
    populate(&app).await;
    let extra = extra(&app).await;
    let (_, doc) = app.request("GET", "/v1/openapi.json", None, None).await;
    let mut reads: Vec<String> = vec![];
    let mut writes: Vec<(String, String, &'static str)> = vec![];
    for (path, item) in doc["paths"].as_object().unwrap() {
        let instances: Vec<Owned> = if path.contains('{') { ids(path, &extra) } else { vec![(String::new(), "")] };
        for (id, owner) in instances {
            let concrete = path.split('{').next().unwrap().to_owned() + &id + path.split('}').nth(1).unwrap_or("");
            for method in ["get", "post", "put", "patch", "delete"].into_iter().filter(|m| item.get(*m).is_some()) {
                // The dashboard's files and this document are the same for everyone.
                let static_file = path == "/" || path.starts_with("/ui/") || path == "/v1/openapi.json";
                if method == "get" && !static_file {
                    reads.push(concrete.clone());
                    // Query parameters that name a tenant are tried with each.
                    let params: Vec<&str> =
                        item["get"]["parameters"].as_array().into_iter().flatten().filter_map(|p| p["name"].as_str()).collect();
                    for org in [ORG_A, ORG_B].iter().filter(|_| params.contains(&"organization_id")) {
                        reads.push(format!("{concrete}?organization_id={org}"));
                    }
                    for user in [ANN, BOB, CID].iter().filter(|_| params.contains(&"user_id")) {
                        reads.push(format!("{concrete}?user_id={user}"));
                    }
                } else if method != "get" && path.contains('{') {
                    writes.push((method.to_uppercase(), concrete.clone(), owner));
                }
            }
        }
    }
    assert!(reads.len() > 80 && writes.len() > 30, "{} reads, {} writes", reads.len(), writes.len());

    // What the admin sees of every resource the walk tries to change, to compare after it.
    let snapshot = |app: &support::TestApp, reads: Vec<String>| {
        let client = app.client.clone();
        let (base, admin) = (app.base.clone(), app.admin.clone());
        async move {
            let mut seen = Vec::new();
            for route in &reads {
                for org in [ORG_A, ORG_B] {
                    let resp =
                        client.get(format!("{base}{route}")).bearer_auth(&admin).header("x-tally-organization", org).send().await.unwrap();
                    seen.push((route.clone(), org, resp.status().as_u16(), resp.text().await.unwrap()));
                }
            }
            seen
        }
    };
    let targets: Vec<String> = writes.iter().map(|(_, route, _)| route.clone()).collect();
    let before = snapshot(&app, targets.clone()).await;

    for (scope, hidden) in CASES {
        let key = app.key(scope).await;
        for route in &reads {
            for org in [None, Some(ORG_B)] {
                let mut request = app.client.get(format!("{}{route}", app.base)).bearer_auth(&key);
                if let Some(org) = org {
                    request = request.header("x-tally-organization", org);
                }
                let resp = request.send().await.unwrap();
                let status = resp.status().as_u16();
                let body = resp.text().await.unwrap();
                assert!(status < 500, "{scope} GET {route}: {status} {body}");
                if (200..300).contains(&status) {
                    for marker in hidden {
                        assert!(!body.contains(marker), "{scope} reads {marker:?} at GET {route} (header {org:?}): {body}");
                    }
                }
            }
        }
        for (method, route, owner) in &writes {
            // A key may change its own tenant's data; everything else must be refused.
            if !owner.is_empty() && !hidden.contains(owner) {
                continue;
            }
            let admin_view = app.get(route).await.1;
            let bodies = [admin_view, json!({"name": "hijacked", "action_taken": "hijacked"})];
            for body in bodies {
                let (status, answer) = app.request(method, route, Some(&key), Some(body)).await;
                assert!(
                    matches!(status, 400 | 401 | 403 | 404 | 405 | 409 | 415 | 422),
                    "{scope} {method} {route} was not refused: {status} {answer}"
                );
            }
        }
    }
    let after = snapshot(&app, targets).await;
    assert!(before.iter().filter(|b| b.2 == 200).count() > 10, "the snapshot holds too few resources: {before:?}");
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(b, a, "{} changed during the walk", b.0);
    }
}
