//! Seats and the license ledger over HTTP, on both backends: audit events from an organization's
//! own system and from a self-hosted server's pushes, seat counts at any moment, the ledger job
//! (also run concurrently with itself) and the invoice preview.

mod support;

use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};
use support::TestApp;

http_tests!(self_hosted_server_scenario, native_audit_events_count_seats_from_users, bad_pushes_and_keys_are_refused);

fn days(n: i64) -> String {
    (Timestamp::now() + SignedDuration::from_hours(24 * n)).to_string()
}

fn counts(owners: u64, members: u64, guests: u64) -> Value {
    json!({"10": {"11": {"100": owners, "400": members, "600": guests}, "12": 0}})
}

fn row(id: i64, realm: i64, at_day: i64, event_type: i64, extra: Value) -> Value {
    json!({"id": id, "realm_id": realm, "event_time": days(at_day), "event_type": event_type, "backfilled": false,
           "extra_data": extra.to_string()})
}

fn realms(deactivated_two: bool) -> Value {
    json!([
        {"id": 1, "uuid": "8b1c7a4e-0000-4000-8000-000000000001", "name": "Alpha", "deactivated": false},
        {"id": 2, "uuid": "8b1c7a4e-0000-4000-8000-000000000002", "name": "Beta", "deactivated": deactivated_two},
        {"id": 3, "uuid": "8b1c7a4e-0000-4000-8000-000000000003", "name": "Gamma", "deactivated": false},
    ])
}

async fn push(app: &TestApp, key: &str, body: Value) -> Value {
    let (status, outcome) = app.request("POST", "/v1/remote/analytics", Some(key), Some(body)).await;
    assert_eq!(status, 200, "{outcome}");
    outcome
}

async fn ledger(app: &TestApp, server: &str) -> Vec<(u64, u64, bool, String)> {
    let (status, page) = app.get(&format!("/v1/servers/{server}/license-ledger?limit=100")).await;
    assert_eq!(status, 200, "{page}");
    let mut rows: Vec<(u64, u64, bool, String)> = page["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["licenses"].as_u64().unwrap(),
                r["licenses_at_next_renewal"].as_u64().unwrap(),
                r["is_renewal"].as_bool().unwrap(),
                r["audit_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    rows.reverse();
    rows
}

async fn self_hosted_server_scenario(app: TestApp) {
    let (status, registered) = app.post("/v1/servers", json!({"hostname": "chat.example.org", "contact_email": "ops@example.org"})).await;
    assert_eq!(status, 201, "{registered}");
    let server = registered["server"]["id"].as_str().unwrap().to_owned();
    let org = registered["server"]["organization_id"].as_str().unwrap().to_owned();
    let key = registered["api_key"].as_str().unwrap().to_owned();

    // Never pushed: its figures are missing, not zero.
    let (status, problem) = app.get(&format!("/v1/servers/{server}/seats")).await;
    assert_eq!((status, problem["type"].as_str()), (409, Some("urn:tally:problem:missing-data")), "{problem}");

    // Format 1: count tables only.
    let format1 = json!({
        "realm_counts": [{"id": 1, "realm": 1, "property": "active_users:is_bot:day", "subgroup": "false", "end_time": days(-1), "value": 5}],
        "installation_counts": [{"id": 1, "property": "active_users:is_bot:day", "subgroup": null, "end_time": days(-1), "value": 9}],
    });
    let outcome = push(&app, &key, format1).await;
    assert_eq!((outcome["format"].as_u64(), outcome["realm_counts"]["stored"].as_u64()), (Some(1), Some(1)), "{outcome}");

    // Format 2 with three realms and their history before the subscription starts.
    let history = json!({
        "realm_counts": [], "installation_counts": [], "realms": realms(false),
        "audit_log_rows": [
            row(1, 1, -40, 101, counts(1, 4, 0)),
            row(2, 2, -35, 101, counts(1, 2, 3)),
            row(3, 3, -30, 101, counts(1, 0, 0)),
        ],
    });
    let outcome = push(&app, &key, history).await;
    assert_eq!((outcome["format"].as_u64(), outcome["audit_log_rows"]["stored"].as_u64()), (Some(2), Some(3)), "{outcome}");

    // The server's organization takes a seat-priced plan: $8 a month, 10 free seats, 6 at least,
    // five guests per paid seat.
    let plan =
        json!({"id": "business", "seats": {"free_seats": 10, "price_per_seat_monthly": "8", "minimum_licenses": 6, "guest_seat_ratio": 5}});
    assert_eq!(app.post("/v1/plans", plan).await.0, 201);
    let subscription = json!({"id": "sub-server", "organization_id": org, "plan_id": "business", "status": "active",
        "current_period_start": days(-10), "current_period_end": days(20)});
    assert_eq!(app.post("/v1/subscriptions", subscription).await.0, 201);

    // Two members join Alpha; a guest joins Gamma (Gamma: 1 owner + 6 guests → 2 seats). Rows 1
    // and 2 are sent again.
    let growth = json!({
        "realm_counts": [], "installation_counts": [], "realms": realms(false),
        "audit_log_rows": [
            row(1, 1, -40, 101, counts(1, 4, 0)),
            row(2, 2, -35, 101, counts(1, 2, 3)),
            row(4, 1, -5, 101, counts(1, 6, 0)),
            row(5, 3, -4, 101, counts(1, 0, 6)),
        ],
    });
    let outcome = push(&app, &key, growth).await;
    assert_eq!(outcome["audit_log_rows"], json!({"stored": 2, "duplicates": 2}), "{outcome}");

    // The ledger job, twice, and then twice at once: one new row per change, never two.
    let (status, run) = app.post("/v1/jobs/ledger/run", json!({})).await;
    assert_eq!((status, run["status"].as_str()), (200, Some("completed")), "{run}");
    assert_eq!(app.post("/v1/jobs/ledger/run", json!({})).await.0, 200);
    let (a, b) = tokio::join!(app.post("/v1/jobs/ledger/run", json!({})), app.post("/v1/jobs/ledger/run", json!({})));
    for (status, body) in [a, b] {
        assert!(status == 200 || status == 409, "{status} {body}");
    }
    let first_period = ledger(&app, &server).await;
    assert_eq!(
        first_period.iter().map(|r| (r.0, r.1, r.2)).collect::<Vec<_>>(),
        [(9, 9, true), (11, 11, false), (12, 12, false)],
        "{first_period:?}"
    );
    assert_eq!(&first_period[1].3, "4");

    // A late row (a member joined Beta 7 days ago, before rows already processed) and Beta's
    // deactivation two days ago.
    let late = json!({
        "realm_counts": [], "installation_counts": [], "realms": realms(true),
        "audit_log_rows": [row(6, 2, -7, 101, counts(1, 3, 3)), row(7, 2, -2, 201, json!({}))],
    });
    push(&app, &key, late).await;
    let (status, run) = app.post("/v1/jobs/ledger/run", json!({})).await;
    assert_eq!(status, 200, "{run}");
    let rows = ledger(&app, &server).await;
    assert_eq!(
        rows.iter().map(|r| (r.0, r.1, r.2)).collect::<Vec<_>>(),
        // The late member was in use 4 days ago too (7 + 4 + 2 = 13 seats); Beta's deactivation
        // lowers the next renewal, never the period's licenses.
        [(9, 9, true), (11, 11, false), (12, 12, false), (13, 13, false), (13, 9, false)],
        "{rows:?}"
    );

    // The seat count now, by hand: Alpha 1 + 6 = 7, Beta deactivated 0, Gamma max(1, ⌈6/5⌉) = 2.
    let (status, seats) = app.get(&format!("/v1/servers/{server}/seats")).await;
    assert_eq!((status, seats["seats"].as_u64()), (200, Some(9)), "{seats}");
    let by_realm: Vec<u64> = seats["realms"].as_array().unwrap().iter().map(|r| r["seats"].as_u64().unwrap()).collect();
    assert_eq!(by_realm, [7, 0, 2]);
    // And at a moment in the past: before Alpha grew, Beta still active (5 + 3 + 1).
    let (_, past) = app.get(&format!("/v1/servers/{server}/seats?at={}", days(-20))).await;
    assert_eq!(past["seats"].as_u64(), Some(9), "{past}");
    assert_eq!(past["source"]["id"].as_str(), Some("3"));
    let realm_org = format!("{server}.realm-1");
    let (_, alpha) = app.get(&format!("/v1/organizations/{realm_org}/seats")).await;
    assert_eq!(alpha["seats"].as_u64(), Some(7), "{alpha}");
    // A realm without a plan of its own counts guests as its server's plan does.
    let (_, gamma) = app.get(&format!("/v1/organizations/{server}.realm-3/seats")).await;
    assert_eq!((gamma["seats"].as_u64(), gamma["guest_seat_ratio"].as_u64()), (Some(2), Some(5)), "{gamma}");

    // The invoice preview: the renewal at 9 seats is within the 10 free ones; crossing them 5
    // days ago makes all 11 seats payable for the rest of the period, then one more twice.
    let (status, invoice) = app.get(&format!("/v1/servers/{server}/invoice-preview")).await;
    assert_eq!(status, 200, "{invoice}");
    let lines = invoice["lines"].as_array().unwrap();
    let summary: Vec<(&str, u64)> = lines.iter().map(|l| (l["kind"].as_str().unwrap(), l["quantity"].as_u64().unwrap())).collect();
    assert_eq!(summary, [("renewal", 0), ("proration", 11), ("proration", 1), ("proration", 1)], "{invoice}");
    let cents = |v: &Value| -> i64 {
        let text = v.as_str().unwrap();
        let (units, frac) = text.split_once('.').unwrap_or((text, ""));
        units.parse::<i64>().unwrap() * 100 + format!("{frac:0<2}")[..2].parse::<i64>().unwrap()
    };
    let total: i64 = lines.iter().map(|l| cents(&l["amount"])).sum();
    assert_eq!(total, cents(&invoice["total"]));
    // 11 seats × $8 × about 25 of ~30 days.
    assert!((7000..=7700).contains(&cents(&lines[1]["amount"])), "{invoice}");
    assert_eq!(invoice["currency"], "USD");

    // The status tells the server where it stands.
    let (status, state) = app.request("GET", "/v1/remote/analytics/status", Some(&key), None).await;
    assert_eq!((status, state["last_audit_log_id"].as_i64(), state["last_realm_count_id"].as_i64()), (200, Some(7), Some(1)), "{state}");
}

async fn native_audit_events_count_seats_from_users(app: TestApp) {
    let ingest = app.key("ingest").await;
    let event = |id: &str, day: i64, t: i64, user: &str, extra: Value| {
        let mut e = json!({"id": id, "organization_id": "acme", "event_time": days(day), "event_type": t, "user_id": user});
        e.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        e
    };
    let events = json!([
        event("a1", -9, 101, "owner", json!({"role": 100})),
        event("a2", -8, 101, "m1", json!({})),
        event("a3", -7, 101, "m2", json!({})),
        event("a4", -6, 101, "g1", json!({"role": 600})),
        event("a5", -5, 101, "bot", json!({"is_bot": true})),
        event("a6", -4, 105, "g1", json!({"old_role": 600, "new_role": 400})),
        event("a7", -3, 103, "m2", json!({})),
        event("a7", -3, 103, "m2", json!({})),
    ]);
    let (status, body) = app.request("POST", "/v1/audit-events", Some(&ingest), Some(events)).await;
    assert_eq!((status, body["stored"].as_u64(), body["duplicates"].as_u64()), (200, Some(7), Some(1)), "{body}");

    // Tally computed each event's counts from its own user table.
    let (_, listed) = app.get("/v1/audit-events?organization_id=acme&limit=10").await;
    assert_eq!(listed["count"], 7);
    assert_eq!(listed["results"][0]["id"], "a7");
    assert_eq!(listed["results"][0]["role_counts"], json!({"humans": {"100": 1, "200": 0, "300": 0, "400": 2, "600": 0}, "bots": 1}));
    let (_, user) = app.get("/v1/users/g1").await;
    assert_eq!(user["role"], 400);

    let seats_at = |day: i64| format!("/v1/organizations/acme/seats?at={}", days(day));
    assert_eq!(app.get(&seats_at(-10)).await.1["seats"], 0);
    assert_eq!(app.get(&seats_at(-6)).await.1["seats"], 3); // the guest is free without a plan
    let (_, now) = app.get("/v1/organizations/acme/seats").await;
    assert_eq!((now["seats"].as_u64(), now["source"]["id"].as_str()), (Some(3), Some("a7")), "{now}");

    // Counts the sender gives are kept as given.
    let given = json!({"id": "a8", "organization_id": "acme", "event_time": days(-1), "event_type": 102, "user_id": "m2",
                       "role_counts": {"humans": {"100": 1, "400": 40}, "bots": 0}});
    assert_eq!(app.request("POST", "/v1/audit-events", Some(&ingest), Some(given)).await.0, 200);
    assert_eq!(app.get("/v1/organizations/acme/seats").await.1["seats"], 41);

    // An org key reads its own organization only; a user key reads none of it.
    let other = app.key("org:globex").await;
    assert_eq!(app.request("GET", "/v1/organizations/acme/seats", Some(&other), None).await.0, 404);
    let own = app.key("org:acme").await;
    assert_eq!(app.request("GET", "/v1/organizations/acme/seats", Some(&own), None).await.0, 200);
    assert_eq!(app.request("POST", "/v1/audit-events", Some(&own), Some(json!([]))).await.0, 403);
}

async fn bad_pushes_and_keys_are_refused(app: TestApp) {
    let (_, registered) = app.post("/v1/servers", json!({"hostname": "h.example", "contact_email": "a@h.example"})).await;
    let server = registered["server"]["id"].as_str().unwrap().to_owned();
    let key = registered["api_key"].as_str().unwrap().to_owned();
    let good = json!({
        "realm_counts": [], "installation_counts": [], "realms": realms(false),
        "audit_log_rows": [row(1, 1, -3, 101, counts(1, 1, 0)), row(2, 1, -2, 101, counts(1, 2, 0))],
    });
    let refused = |edit: &dyn Fn(&mut Value)| {
        let mut body = good.clone();
        edit(&mut body);
        body
    };
    let cases = [
        (refused(&|b| b["audit_log_rows"][1]["event_type"] = json!(777)), "audit_log_rows", 1, "event_type"),
        (refused(&|b| b["audit_log_rows"][1]["extra_data"] = json!("{\"10\": ")), "audit_log_rows", 1, "extra_data"),
        (refused(&|b| b["audit_log_rows"][0]["realm_id"] = json!(99)), "audit_log_rows", 0, "realm_id"),
        (
            refused(&|b| {
                b["realms"][2].as_object_mut().unwrap().remove("uuid");
            }),
            "realms",
            2,
            "uuid",
        ),
    ];
    for (body, table, index, field) in cases {
        let (status, problem) = app.request("POST", "/v1/remote/analytics", Some(&key), Some(body)).await;
        assert_eq!(status, 400, "{problem}");
        assert_eq!(
            (problem["table"].as_str(), problem["row"].as_u64(), problem["field"].as_str()),
            (Some(table), Some(index), Some(field))
        );
    }
    // Nothing of a refused push was stored.
    let (_, state) = app.request("GET", "/v1/remote/analytics/status", Some(&key), None).await;
    assert_eq!(state["last_push_at"], Value::Null, "{state}");
    assert_eq!(app.request("POST", "/v1/remote/analytics", Some(&key), Some(json!([1]))).await.0, 400);

    push(&app, &key, good).await;
    // A moment more than two days after the last push: the data is missing.
    let (status, problem) = app.get(&format!("/v1/servers/{server}/seats?at={}", days(3))).await;
    assert_eq!(status, 409, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("missing since"), "{problem}");
    // No plan yet: no invoice, said plainly.
    let (status, problem) = app.get(&format!("/v1/servers/{server}/invoice-preview")).await;
    assert_eq!(status, 409, "{problem}");

    // Rotation: the old key stops working at once, the new one works.
    let (status, rotated) = app.post(&format!("/v1/servers/{server}/rotate-key"), json!({})).await;
    assert_eq!(status, 200, "{rotated}");
    assert_eq!(app.request("GET", "/v1/remote/analytics/status", Some(&key), None).await.0, 401);
    let new_key = rotated["api_key"].as_str().unwrap();
    assert_eq!(app.request("GET", "/v1/remote/analytics/status", Some(new_key), None).await.0, 200);
    assert_eq!(app.request("GET", "/v1/remote/analytics/status", Some("tly_nonsense"), None).await.0, 401);
    // Other keys cannot push.
    assert_eq!(app.request("POST", "/v1/remote/analytics", Some(&app.admin.clone()), Some(json!({}))).await.0, 403);

    // Native audit events: one bad event refuses the whole request and names it.
    let (status, problem) = app
        .post(
            "/v1/audit-events",
            json!([
                {"id": "x1", "organization_id": "o", "event_time": days(-1), "event_type": 101, "user_id": "u"},
                {"id": "x2", "organization_id": "o", "event_time": days(-1), "event_type": 150, "user_id": "u"},
            ]),
        )
        .await;
    assert_eq!(status, 400, "{problem}");
    assert_eq!(problem["errors"][0]["index"], 1);
    assert_eq!(problem["errors"][0]["field"], "event_type");
    assert_eq!(app.get("/v1/audit-events?organization_id=o").await.0, 404);
    let (status, problem) = app.get(&format!("/v1/servers/{server}/seats?at=yesterday")).await;
    assert_eq!((status, problem["parameter"].as_str()), (400, Some("at")), "{problem}");
}
