//! Threshold rules, budgets and webhooks end to end, on both backends: a user crossing a cost
//! rule during ingestion gets one alert and one signed delivery; a receiver that is down, then
//! fails, then recovers gets the delivery once; repeat steps; a hard budget flips entitlements;
//! the built-in error-rate rule opens and resolves a system alert; bad rules are refused.

mod support;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::TestApp;
use tally_domain::alerts::webhook::Secret;

http_tests!(
    a_cost_rule_alerts_once_with_one_signed_delivery,
    a_receiver_that_was_down_gets_the_delivery_once,
    repeat_steps_open_one_alert_each,
    a_hard_budget_flips_entitlements,
    the_system_rule_watches_the_llm_error_rate,
    bad_rules_and_channels_name_their_field,
    a_plan_rule_watches_each_user_billed_on_it,
);

/// A webhook receiver that checks every signature, as a customer's would.
#[derive(Default)]
struct Receiver {
    secret: Mutex<Option<Secret>>,
    /// Verified deliveries: (webhook-id, body).
    received: Mutex<Vec<(String, Value)>>,
    rejected: AtomicU32,
    /// Answer 500 to this many requests before accepting.
    fail_first: AtomicU32,
}

async fn receive(State(r): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    if r.fail_first.load(Ordering::SeqCst) > 0 {
        r.fail_first.fetch_sub(1, Ordering::SeqCst);
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    let secret = r.secret.lock().unwrap().clone().expect("the test sets the secret first");
    let id = header("webhook-id");
    match secret.verify(&id, &header("webhook-timestamp"), &header("webhook-signature"), &body, Timestamp::now()) {
        Ok(()) => {
            r.received.lock().unwrap().push((id, serde_json::from_slice(&body).unwrap()));
            StatusCode::NO_CONTENT
        }
        Err(_) => {
            r.rejected.fetch_add(1, Ordering::SeqCst);
            StatusCode::UNAUTHORIZED
        }
    }
}

/// Serves the receiver on `listener`; the task ends when aborted.
fn serve_receiver(listener: tokio::net::TcpListener, receiver: Arc<Receiver>) -> tokio::task::JoinHandle<()> {
    let router = axum::Router::new().route("/hook", axum::routing::post(receive)).with_state(receiver);
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    })
}

/// Waits (bounded) until `check` holds; the bound only keeps a broken build from hanging.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..300 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting until {what}");
}

fn llm(id: &str, org: &str, user: &str, status: &str, tokens: i64, cost: &str) -> Value {
    let at = (Timestamp::now() - SignedDuration::from_secs(5)).to_string();
    json!({"id": id, "timestamp": at, "organization_id": org, "user_id": user, "type": "llm_request", "model": "gpt-4o",
           "provider": "openai", "status": status, "input_tokens": tokens, "output_tokens": 0, "cost": cost, "latency_ms": 100})
}

async fn ingest(app: &TestApp, events: Value) {
    let n = events.as_array().map_or(1, Vec::len) as u64;
    let (status, report) = app.post("/v1/events", events).await;
    assert_eq!((status, report["accepted"].as_u64()), (200, Some(n)), "{report}");
}

async fn channel(app: &TestApp, url: &str) -> (String, Secret) {
    let (status, created) = app.post("/v1/notification-channels", json!({"name": "ops hook", "url": url})).await;
    assert_eq!(status, 201, "{created}");
    let secret = Secret::parse(created["secret"].as_str().unwrap()).unwrap();
    let (_, listed) = app.get("/v1/notification-channels").await;
    assert!(listed["results"].as_array().unwrap().iter().all(|c| c.get("secret").is_none()), "secrets are shown once: {listed}");
    (created["id"].as_str().unwrap().to_owned(), secret)
}

async fn alerts_of(app: &TestApp, query: &str) -> Vec<Value> {
    let (status, listed) = app.get(&format!("/v1/alerts?{query}")).await;
    assert_eq!(status, 200, "{listed}");
    listed["results"].as_array().unwrap().clone()
}

async fn deliveries(app: &TestApp, query: &str) -> Vec<Value> {
    let (status, listed) = app.get(&format!("/v1/notifications/deliveries?{query}")).await;
    assert_eq!(status, 200, "{listed}");
    listed["results"].as_array().unwrap().clone()
}

async fn a_cost_rule_alerts_once_with_one_signed_delivery(app: TestApp) {
    let receiver = Arc::new(Receiver::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let server = serve_receiver(listener, receiver.clone());
    let (channel_id, secret) = channel(&app, &url).await;
    *receiver.secret.lock().unwrap() = Some(secret);

    ingest(&app, json!([llm("c0", "acme", "ann", "success", 10, "0.40")])).await;
    let rule = json!({"name": "Ann's LLM spend", "scope": {"type": "user", "user_id": "ann"}, "metric": "llm_cost",
                      "threshold": "1.00", "severity": "high", "channels": [channel_id, "log"]});
    let (status, created) = app.post("/v1/alert-rules", rule).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!((created["scope"]["organization_id"].as_str(), created["threshold"].as_str()), (Some("acme"), Some("1.00")));
    let rule_id = created["id"].as_str().unwrap().to_owned();

    ingest(&app, json!([llm("c1", "acme", "ann", "success", 10, "0.40")])).await;
    // Another user's spend is not Ann's.
    ingest(&app, json!([llm("o1", "acme", "bob", "success", 10, "5.00")])).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(alerts_of(&app, &format!("rule_id={rule_id}")).await.is_empty(), "0.80 is under the line");

    // Crossing: 1.20 > 1.00, then staying above opens nothing more.
    ingest(&app, json!([llm("c2", "acme", "ann", "success", 10, "0.40")])).await;
    eventually("the alert opens", || async { !alerts_of(&app, &format!("rule_id={rule_id}")).await.is_empty() }).await;
    ingest(&app, json!([llm("c3", "acme", "ann", "success", 10, "0.40"), llm("c4", "acme", "ann", "success", 10, "0.40")])).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let alerts = alerts_of(&app, &format!("rule_id={rule_id}")).await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let alert = &alerts[0];
    assert_eq!(
        (alert["source"].as_str(), alert["alert_type"].as_str(), alert["user_id"].as_str(), alert["severity"].as_str()),
        (Some("rule"), Some("LLM_COST"), Some("ann"), Some("high"))
    );
    assert_eq!((alert["details"]["value"].as_str(), alert["details"]["currency"].as_str()), (Some("1.2"), Some("USD")));

    eventually("the webhook is delivered", || async { receiver.received.lock().unwrap().len() == 1 }).await;
    let (id, body) = receiver.received.lock().unwrap()[0].clone();
    assert_eq!((body["type"].as_str(), body["data"]["id"].as_str()), (Some("alert.opened"), alert["id"].as_str()));
    let sent = deliveries(&app, &format!("alert_id={}", alert["id"].as_str().unwrap())).await;
    assert_eq!(sent.len(), 2, "one per channel: {sent:?}");
    eventually("both deliveries are done", || async {
        deliveries(&app, &format!("alert_id={}", alert["id"].as_str().unwrap())).await.iter().all(|d| d["status"] == "delivered")
    })
    .await;
    let webhook = deliveries(&app, &format!("channel_id={channel_id}")).await;
    assert_eq!((webhook.len(), webhook[0]["id"].as_str(), webhook[0]["attempts"].as_u64()), (1, Some(id.as_str()), Some(1)));
    assert_eq!(webhook[0]["attempt_log"][0]["status_code"], 204);
    // Nothing more arrives later, and nothing arrived unsigned.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!((receiver.received.lock().unwrap().len(), receiver.rejected.load(Ordering::SeqCst)), (1, 0));
    server.abort();
}

async fn a_receiver_that_was_down_gets_the_delivery_once(app: TestApp) {
    // Hold a port, then let it go: the receiver is down until it binds the port again.
    let port = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
    let (channel_id, secret) = channel(&app, &format!("http://127.0.0.1:{port}/hook")).await;
    let rule = json!({"scope": {"type": "organization", "organization_id": "acme"}, "metric": "llm_tokens", "threshold": 100,
                      "channels": [channel_id]});
    ingest(&app, json!([llm("t0", "acme", "ann", "success", 10, "0.01")])).await;
    let (status, created) = app.post("/v1/alert-rules", rule).await;
    assert_eq!(status, 201, "{created}");
    ingest(&app, json!([llm("t1", "acme", "ann", "success", 200, "0.01")])).await;

    eventually("two attempts failed", || async {
        deliveries(&app, &format!("channel_id={channel_id}")).await.first().is_some_and(|d| d["attempts"].as_u64() >= Some(2))
    })
    .await;
    let failed = &deliveries(&app, &format!("channel_id={channel_id}")).await[0];
    assert_eq!(failed["status"], "pending", "{failed}");
    assert!(failed["attempt_log"][0]["error"].as_str().unwrap().contains("could not reach"), "{failed}");

    // Up again, but answering 500 once: retried, then delivered exactly once.
    let receiver = Arc::new(Receiver { fail_first: AtomicU32::new(1), ..Default::default() });
    *receiver.secret.lock().unwrap() = Some(secret);
    let server = serve_receiver(tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap(), receiver.clone());
    eventually("the delivery lands", || async { receiver.received.lock().unwrap().len() == 1 }).await;
    eventually("the delivery is marked delivered", || async {
        deliveries(&app, &format!("channel_id={channel_id}")).await[0]["status"] == "delivered"
    })
    .await;
    let done = &deliveries(&app, &format!("channel_id={channel_id}")).await[0];
    let log = done["attempt_log"].as_array().unwrap();
    assert_eq!(log.len() as u64, done["attempts"].as_u64().unwrap());
    assert!(log.iter().any(|a| a["status_code"] == 500), "{done}");
    assert_eq!(log.last().unwrap()["status_code"], 204);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(receiver.received.lock().unwrap().len(), 1, "never delivered twice after a success");
    server.abort();
}

async fn repeat_steps_open_one_alert_each(app: TestApp) {
    ingest(&app, json!([llm("r0", "acme", "ann", "success", 10, "0.10")])).await;
    let rule = json!({"scope": {"type": "organization", "organization_id": "acme"}, "metric": "llm_cost", "threshold": 1,
                      "repeat_every": "1.00"});
    let (_, created) = app.post("/v1/alert-rules", rule).await;
    let rule_id = created["id"].as_str().unwrap().to_owned();
    ingest(&app, json!([llm("r1", "acme", "ann", "success", 10, "1.50")])).await;
    eventually("step 0 opens", || async { alerts_of(&app, &format!("rule_id={rule_id}")).await.len() == 1 }).await;
    // 3.60: past 1, 2 and 3; bob counts too, it is the organization's spend.
    ingest(&app, json!([llm("r2", "acme", "bob", "success", 10, "2.00")])).await;
    eventually("steps 1 and 2 open", || async { alerts_of(&app, &format!("rule_id={rule_id}")).await.len() == 3 }).await;
    let mut steps: Vec<u64> =
        alerts_of(&app, &format!("rule_id={rule_id}")).await.iter().map(|a| a["details"]["step"].as_u64().unwrap()).collect();
    steps.sort();
    assert_eq!(steps, [0, 1, 2]);
    let step_two = alerts_of(&app, &format!("rule_id={rule_id}")).await.into_iter().find(|a| a["details"]["step"] == 2).unwrap();
    assert_eq!(step_two["details"]["step_threshold"], "3.00");
}

async fn a_hard_budget_flips_entitlements(app: TestApp) {
    ingest(&app, json!([llm("b0", "acme", "ann", "success", 40, "0.01")])).await;
    let budget = json!({"name": "Token budget", "scope": {"type": "organization", "organization_id": "acme"}, "metric": "llm_tokens",
                        "window": "month", "threshold": 100, "hard": true});
    let (status, created) = app.post("/v1/alert-rules", budget).await;
    assert_eq!(status, 201, "{created}");

    let (status, e) = app.get("/v1/users/ann/entitlements").await;
    assert_eq!(status, 200, "{e}");
    assert_eq!(
        (e["allowed"].as_bool(), e["budgets"][0]["used"].as_str(), e["budgets"][0]["remaining"].as_str()),
        (Some(true), Some("40"), Some("60"))
    );
    // A user key reads its own entitlements.
    let ann = app.key("user:ann").await;
    let (status, own) = app.request("GET", "/v1/users/ann/entitlements?usage_type=llm_request", Some(&ann), None).await;
    assert_eq!((status, own["allowed"].as_bool()), (200, Some(true)), "{own}");
    let (status, _) = app.request("GET", "/v1/users/bob/entitlements", Some(&ann), None).await;
    assert_eq!(status, 404);
    // A budget of tokens does not limit another usage type.
    let (_, other) = app.get("/v1/users/ann/entitlements?usage_type=api_call").await;
    assert_eq!(other["budgets"].as_array().map(Vec::len), Some(0));

    ingest(&app, json!([llm("b1", "acme", "bob", "success", 70, "0.01")])).await;
    let (_, e) = app.get("/v1/users/ann/entitlements").await;
    assert_eq!(
        (e["allowed"].as_bool(), e["budgets"][0]["exceeded"].as_bool(), e["budgets"][0]["remaining"].as_str()),
        (Some(false), Some(true), Some("0"))
    );
    assert!(e["reason"].as_str().unwrap().contains("Token budget"), "{e}");
}

async fn the_system_rule_watches_the_llm_error_rate(app: TestApp) {
    let (_, rules) = app.get("/v1/alert-rules").await;
    let system = rules["results"].as_array().unwrap().iter().find(|r| r["builtin"] == true).cloned().unwrap();
    assert_eq!((system["metric"]["type"].as_str(), system["threshold"].as_str()), (Some("llm_error_rate"), Some("10")));
    let (status, _) = app.request("DELETE", &format!("/v1/alert-rules/{}", system["id"].as_str().unwrap()), Some(&app.admin), None).await;
    assert_eq!(status, 409);

    // 20 of 100 requests failed.
    let events: Vec<Value> =
        (0..100).map(|i| llm(&format!("e{i}"), "acme", "ann", if i % 5 == 0 { "error" } else { "success" }, 1, "0.001")).collect();
    ingest(&app, Value::Array(events)).await;
    eventually("a system alert opens", || async { alerts_of(&app, "source=system&status=open").await.len() == 1 }).await;
    let alert = &alerts_of(&app, "source=system").await[0];
    assert_eq!((alert["organization_id"].as_null(), alert["details"]["value"].as_str()), (Some(()), Some("20")));
    // An org key does not see system alerts.
    let org = app.key("org:acme").await;
    let (_, seen) = app.request("GET", "/v1/alerts?source=system", Some(&org), None).await;
    assert_eq!(seen["count"], 0);

    // The next 100 succeed: the rate over the last 100 drops to 0 and the alert resolves itself.
    let later = (Timestamp::now() - SignedDuration::from_secs(1)).to_string();
    let events: Vec<Value> = (0..100)
        .map(|i| {
            let mut e = llm(&format!("f{i}"), "acme", "ann", "success", 1, "0.001");
            e["timestamp"] = json!(later);
            e
        })
        .collect();
    ingest(&app, Value::Array(events)).await;
    eventually("the system alert resolves", || async { alerts_of(&app, "source=system&status=open").await.is_empty() }).await;
    assert_eq!(alerts_of(&app, "source=system").await[0]["resolution"], "auto");
}

async fn bad_rules_and_channels_name_their_field(app: TestApp) {
    ingest(&app, json!([llm("x0", "acme", "ann", "success", 1, "0.001")])).await;
    let scope = json!({"type": "organization", "organization_id": "acme"});
    let cases = [
        (json!({"scope": scope, "metric": "llm_karma", "threshold": 1}), "metric.type"),
        (json!({"scope": {"type": "galaxy"}, "metric": "llm_cost", "threshold": 1}), "scope.type"),
        (json!({"scope": scope, "metric": "llm_cost", "threshold": "a lot"}), "threshold"),
        (json!({"scope": scope, "metric": "llm_cost", "threshold": {"amount": 1}}), "threshold"),
        (json!({"scope": scope, "metric": "llm_cost", "threshold": 1, "channels": ["pagerduty"]}), "channels[0]"),
        (json!({"scope": scope, "metric": {"type": "usage_sum", "usage_type": "nonsense"}, "threshold": 1}), "metric.usage_type"),
        (json!({"scope": {"type": "user", "user_id": "nobody"}, "metric": "llm_cost", "threshold": 1}), "scope.user_id"),
    ];
    for (body, field) in cases {
        let (status, problem) = app.post("/v1/alert-rules", body.clone()).await;
        assert_eq!((status, problem["field"].as_str()), (400, Some(field)), "{body} → {problem}");
    }
    let (status, problem) = app.post("/v1/notification-channels", json!({"url": "ftp://example.com/hook"})).await;
    assert_eq!((status, problem["field"].as_str()), (400, Some("url")), "{problem}");
    let (status, _, _) = app.raw_post("/v1/alert-rules", "application/json", "{\"scope\": ").await;
    assert_eq!(status, 400);

    // Who may: an org key only for its own organization, a user key not at all.
    let other = app.key("org:globex").await;
    let (status, problem) =
        app.request("POST", "/v1/alert-rules", Some(&other), Some(json!({"scope": scope, "metric": "llm_cost", "threshold": 1}))).await;
    assert_eq!((status, problem["field"].as_str()), (400, Some("scope")), "{problem}");
    let theirs = json!({"scope": {"type": "user", "user_id": "ann"}, "metric": "llm_cost", "threshold": 1});
    let (status, problem) = app.request("POST", "/v1/alert-rules", Some(&other), Some(theirs)).await;
    assert_eq!((status, problem["field"].as_str()), (400, Some("scope.user_id")), "another organization's user is unknown: {problem}");
    let user = app.key("user:ann").await;
    let (status, _) = app.request("GET", "/v1/alert-rules", Some(&user), None).await;
    assert_eq!(status, 403);
    let own = app.key("org:acme").await;
    let (status, created) =
        app.request("POST", "/v1/alert-rules", Some(&own), Some(json!({"scope": scope, "metric": "llm_cost", "threshold": 1}))).await;
    assert_eq!(status, 201, "{created}");
    let (_, theirs) = app.request("GET", "/v1/alert-rules", Some(&other), None).await;
    assert_eq!(theirs["count"], 0, "another organization's rules stay hidden");
}

async fn a_plan_rule_watches_each_user_billed_on_it(app: TestApp) {
    let submission = |id: &str, org: &str, user: &str, quantity: i64| {
        let at = (Timestamp::now() - SignedDuration::from_secs(5)).to_string();
        json!({"id": id, "timestamp": at, "organization_id": org, "user_id": user, "type": "submission", "quantity": quantity})
    };
    let plan = json!({"id": "basic", "usage": {"submission": {"limit": 100.0}, "storage_bytes": {"limit": 1000.0}}});
    assert_eq!(app.post("/v1/plans", plan).await.0, 201);
    let now = Timestamp::now();
    for org in ["acme", "globex"] {
        app.post("/v1/organizations", json!({"id": org, "name": org})).await;
    }
    let sub = json!({"id": "s-acme", "organization_id": "acme", "plan_id": "basic", "status": "active",
                     "current_period_start": (now - SignedDuration::from_hours(24)).to_string(),
                     "current_period_end": (now + SignedDuration::from_hours(24 * 29)).to_string()});
    assert_eq!(app.post("/v1/subscriptions", sub).await.0, 201);
    // Ann is already past 80 % when the rule is made: it alerts at once.
    ingest(&app, json!([submission("p1", "acme", "ann", 85), submission("p2", "acme", "bob", 10), submission("p3", "globex", "gil", 95)]))
        .await;
    let rule = json!({"scope": {"type": "plan", "plan_id": "basic"}, "metric": {"type": "balance_percent", "usage_type": "submission"},
                      "operator": "gte", "threshold": 80});
    let (status, created) = app.post("/v1/alert-rules", rule).await;
    assert_eq!(status, 201, "{created}");
    let rule_id = created["id"].as_str().unwrap().to_owned();
    let users = |alerts: Vec<Value>| {
        let mut users: Vec<String> = alerts.iter().map(|a| a["user_id"].as_str().unwrap().to_owned()).collect();
        users.sort();
        users
    };
    assert_eq!(users(alerts_of(&app, &format!("rule_id={rule_id}")).await), ["ann"], "gil's organization is not on the plan");
    // Bob crosses during ingestion; each user is measured on their own.
    ingest(&app, json!([submission("p4", "acme", "bob", 75)])).await;
    eventually("bob's alert opens", || async { alerts_of(&app, &format!("rule_id={rule_id}")).await.len() == 2 }).await;
    assert_eq!(users(alerts_of(&app, &format!("rule_id={rule_id}")).await), ["ann", "bob"]);
    let bob = alerts_of(&app, &format!("rule_id={rule_id}")).await.into_iter().find(|a| a["user_id"] == "bob").unwrap();
    assert_eq!((bob["alert_type"].as_str(), bob["details"]["value"].as_str()), (Some("BALANCE_PERCENT"), Some("85")));

    // Storage is a gauge: ann uses 400 of 1000 bytes now, not the 1300 her two samples add up to.
    let storage = |id: &str, quantity: i64, ago: i64| {
        let at = (Timestamp::now() - SignedDuration::from_secs(ago)).to_string();
        json!({"id": id, "timestamp": at, "organization_id": "acme", "user_id": "ann", "type": "storage_bytes", "quantity": quantity})
    };
    ingest(&app, json!([storage("s1", 900, 60), storage("s2", 400, 5)])).await;
    let gauge = json!({"scope": {"type": "plan", "plan_id": "basic"}, "metric": {"type": "balance_percent", "usage_type": "storage_bytes"},
                       "threshold": 30});
    let (status, created) = app.post("/v1/alert-rules", gauge).await;
    assert_eq!(status, 201, "{created}");
    let opened = alerts_of(&app, &format!("rule_id={}", created["id"].as_str().unwrap())).await;
    assert_eq!(opened.len(), 1, "{opened:?}");
    assert_eq!((opened[0]["user_id"].as_str(), opened[0]["details"]["value"].as_str()), (Some("ann"), Some("40")));
    let for_org = json!({"scope": {"type": "organization", "organization_id": "acme"},
                         "metric": {"type": "balance_percent", "usage_type": "storage_bytes"}, "threshold": 30});
    let (status, problem) = app.post("/v1/alert-rules", for_org).await;
    assert_eq!((status, problem["field"].as_str()), (400, Some("scope")), "{problem}");
}
