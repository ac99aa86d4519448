//! The OpenMeter-compatible API over HTTP: meters, CloudEvents ingestion, meter queries, and the
//! errors its clients expect.

mod support;

use serde_json::{Value, json};

http_tests!(meters_count_cloud_events_exactly, refused_requests_store_nothing_and_say_why);

const BASE: &str = "/compat/openmeter/api/v1";

struct Client<'a> {
    app: &'a support::TestApp,
    key: String,
}

impl Client<'_> {
    async fn send(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Option<String>,
        accept: Option<&str>,
    ) -> (u16, String, String) {
        let mut req = self.app.client.request(method.parse().unwrap(), format!("{}{BASE}{path}", self.app.base)).bearer_auth(&self.key);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        if let Some(accept) = accept {
            req = req.header("accept", accept);
        }
        if let Some(body) = body {
            req = req.body(body);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let ct = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
        (status, ct, resp.text().await.unwrap())
    }

    async fn json(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let (status, _, text) = self.send(method, path, Some("application/json"), body.map(|b| b.to_string()), None).await;
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    async fn ingest(&self, content_type: &str, body: Value) -> (u16, Value) {
        let (status, _, text) = self.send("POST", "/events", Some(content_type), Some(body.to_string()), None).await;
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

fn cloud_event(id: &str, subject: &str, time: &str, data: Value) -> Value {
    json!({"specversion": "1.0", "id": id, "source": "chat-svc", "type": "prompt", "subject": subject, "time": time, "data": data})
}

async fn meters_count_cloud_events_exactly(app: support::TestApp) {
    let om = Client { key: app.key("org:acme").await, app: &app };
    let tokens = json!({"slug": "tokens_total", "name": "Tokens", "aggregation": "SUM", "eventType": "prompt",
                        "valueProperty": "$.tokens", "groupBy": {"model": "$.model"}});
    let (status, meter) = om.json("POST", "/meters", Some(tokens.clone())).await;
    assert_eq!(status, 201, "{meter}");
    assert_eq!((meter["slug"].as_str(), meter["aggregation"].as_str()), (Some("tokens_total"), Some("SUM")));
    assert_eq!(meter["id"].as_str().unwrap().len(), 26);
    assert_eq!(om.json("POST", "/meters", Some(tokens)).await.0, 409);
    let prompts = json!({"slug": "prompts", "aggregation": "COUNT", "eventType": "prompt"});
    assert_eq!(om.json("POST", "/meters", Some(prompts)).await.0, 201);
    let (_, by_id) = om.json("GET", &format!("/meters/{}", meter["id"].as_str().unwrap()), None).await;
    assert_eq!(by_id["slug"], "tokens_total");
    let (_, list) = om.json("GET", "/meters", None).await;
    assert_eq!(list.as_array().unwrap().iter().map(|m| m["slug"].as_str().unwrap()).collect::<Vec<_>>(), ["prompts", "tokens_total"]);

    // One event, then a batch that repeats it, then plain JSON.
    let single = cloud_event("e1", "ann", "2025-03-01T10:15:00.250Z", json!({"tokens": 0.1, "model": "gpt-4o"}));
    assert_eq!(om.ingest("application/cloudevents+json", single.clone()).await.0, 204);
    let batch = json!([
        single,
        cloud_event("e2", "ann", "2025-03-01T23:30:00Z", json!({"tokens": "0.2", "model": "gpt-4o"})),
        cloud_event("e3", "bob", "2025-03-02T08:00:00Z", json!({"tokens": 3, "model": "claude"})),
    ]);
    assert_eq!(om.ingest("application/cloudevents-batch+json", batch).await.0, 204);
    let plain = cloud_event("e4", "bob", "2025-03-02T09:00:00Z", json!({"tokens": 4}));
    assert_eq!(om.ingest("application/json", json!([plain])).await.0, 204);
    // Four CloudEvents, each counted by two meters; the repeated one once.
    assert_eq!(app.store.event_count().await.unwrap(), 8);

    // The whole range, exactly: 0.1 + 0.2 + 3 + 4.
    let (status, all) = om.json("GET", "/meters/tokens_total/query", None).await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(
        all["data"],
        json!([{"value": 7.3, "windowStart": "2025-03-01T10:15:00Z", "windowEnd": "2025-03-02T09:01:00Z",
                                     "subject": null, "groupBy": {}}])
    );

    // Daily windows in UTC, and in New York where every event falls on March 1st or 2nd locally.
    let (_, daily) =
        om.json("GET", "/meters/tokens_total/query?windowSize=DAY&from=2025-03-01T00:00:00Z&to=2025-03-03T00:00:00Z", None).await;
    assert_eq!(daily["windowSize"], "DAY");
    let values: Vec<(&str, f64)> =
        daily["data"].as_array().unwrap().iter().map(|r| (r["windowStart"].as_str().unwrap(), r["value"].as_f64().unwrap())).collect();
    assert_eq!(values, [("2025-03-01T00:00:00Z", 0.3), ("2025-03-02T00:00:00Z", 7.0)]);
    let (_, ny) = om.json("GET", "/meters/tokens_total/query?windowSize=DAY&windowTimeZone=America/New_York", None).await;
    let starts: Vec<&str> = ny["data"].as_array().unwrap().iter().map(|r| r["windowStart"].as_str().unwrap()).collect();
    assert_eq!(starts, ["2025-03-01T05:00:00Z", "2025-03-02T05:00:00Z"]);

    // Group by subject and model; filter by model; filter by subject.
    let (_, grouped) = om.json("GET", "/meters/tokens_total/query?groupBy=subject&groupBy=model", None).await;
    let rows: Vec<(&str, Value, f64)> = grouped["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["subject"].as_str().unwrap(), r["groupBy"]["model"].clone(), r["value"].as_f64().unwrap()))
        .collect();
    assert_eq!(rows, [("ann", json!("gpt-4o"), 0.3), ("bob", Value::Null, 4.0), ("bob", json!("claude"), 3.0)]);
    let (_, filtered) = om.json("GET", "/meters/tokens_total/query?filterGroupBy%5Bmodel%5D=gpt-4o", None).await;
    assert_eq!(filtered["data"][0]["value"], 0.3);
    let (_, bob) = om.json("GET", "/meters/prompts/query?subject=bob", None).await;
    assert_eq!((bob["data"][0]["value"].as_f64(), bob["data"][0]["subject"].as_str()), (Some(2.0), Some("bob")));

    // POST query, and CSV.
    let body = json!({"windowSize": "HOUR", "subject": ["ann"], "from": "2025-03-01T00:00:00Z", "to": "2025-03-02T00:00:00Z"});
    let (status, posted) = om.json("POST", "/meters/prompts/query", Some(body)).await;
    assert_eq!(status, 200, "{posted}");
    assert_eq!(posted["data"].as_array().unwrap().len(), 2);
    let (status, ct, csv) = om.send("GET", "/meters/tokens_total/query?groupBy=model&windowSize=DAY", None, None, Some("text/csv")).await;
    assert_eq!((status, ct.as_str()), (200, "text/csv; charset=utf-8"));
    assert_eq!(
        csv,
        "window_start,window_end,subject,model,value\n\
         2025-03-01T00:00:00Z,2025-03-02T00:00:00Z,,gpt-4o,0.3\n\
         2025-03-02T00:00:00Z,2025-03-03T00:00:00Z,,,4\n\
         2025-03-02T00:00:00Z,2025-03-03T00:00:00Z,,claude,3\n"
    );

    // Meters record into Tally usage types: the native totals agree.
    let (_, totals) = app.get("/v1/organizations/acme/usage/totals").await;
    assert_eq!(totals["totals"][0], json!({"usage_type": "prompts", "count": 4, "sum": 4.0}));
    assert_eq!((totals["totals"][1]["usage_type"].as_str(), totals["totals"][1]["count"].as_u64()), (Some("tokens_total"), Some(4)));
    // Tally's own aggregates add in floating point; the meter query above is the exact one.
    assert!((totals["totals"][1]["sum"].as_f64().unwrap() - 7.3).abs() < 1e-9);

    // Update the group-by, then delete.
    let (status, updated) = om.json("PUT", "/meters/tokens_total", Some(json!({"groupBy": {"model": "$.model", "tier": "$.tier"}}))).await;
    assert_eq!((status, updated["groupBy"]["tier"].as_str()), (200, Some("$.tier")));
    assert_eq!(om.json("DELETE", "/meters/prompts", None).await.0, 204);
    assert_eq!(om.json("GET", "/meters/prompts", None).await.0, 404);
}

async fn refused_requests_store_nothing_and_say_why(app: support::TestApp) {
    let om = Client { key: app.key("org:acme").await, app: &app };
    let (status, problem) = om.json("POST", "/meters", Some(json!({"slug": "Bad-Slug", "aggregation": "SUM", "eventType": "x"}))).await;
    assert_eq!((status, problem["field"].as_str()), (400, Some("slug")), "{problem}");
    let (status, problem) = om.json("POST", "/meters", Some(json!({"slug": "calls", "aggregation": "SUM", "eventType": "api"}))).await;
    assert_eq!((status, problem["field"].as_str()), (400, Some("valueProperty")));
    // A slug that names a built-in usage type with another aggregation.
    let (status, _) = om
        .json("POST", "/meters", Some(json!({"slug": "storage_bytes", "aggregation": "SUM", "eventType": "s", "valueProperty": "$.b"})))
        .await;
    assert_eq!(status, 409);
    let meter = json!({"slug": "tokens", "aggregation": "SUM", "eventType": "prompt", "valueProperty": "$.tokens", "groupBy": {"model": "$.model"}});
    assert_eq!(om.json("POST", "/meters", Some(meter)).await.0, 201);

    // One bad event refuses the batch, with each bad index and why.
    let good = cloud_event("g1", "ann", "2025-03-01T10:00:00Z", json!({"tokens": 5}));
    let batch = json!([good, cloud_event("b1", "ann", "2025-03-01T10:00:00Z", json!({"tokens": "lots"})),
                       {"specversion": "1.0", "id": "b2", "source": "s", "type": "unknown", "subject": "ann"},
                       cloud_event("b3", "ann", "2099-01-01T00:00:00Z", json!({"tokens": 1}))]);
    let (status, problem) = om.ingest("application/cloudevents-batch+json", batch).await;
    assert_eq!(status, 400, "{problem}");
    let invalid: Vec<u64> = problem["invalidEvents"].as_array().unwrap().iter().map(|i| i["index"].as_u64().unwrap()).collect();
    assert_eq!(invalid, [1, 2, 3]);
    assert!(problem["invalidEvents"][1]["reason"].as_str().unwrap().contains("no meter counts events of type \"unknown\""));
    assert_eq!(app.store.event_count().await.unwrap(), 0);

    let (status, _) = om.ingest("text/plain", json!({})).await;
    assert_eq!(status, 415);
    let (status, problem) = om.ingest("application/cloudevents+json", json!([good])).await;
    assert_eq!(status, 400, "{problem}");
    let (status, _, text) = om.send("POST", "/events", Some("application/json"), Some("{\"id\": ".into()), None).await;
    assert_eq!(status, 400, "{text}");

    // Keys: an admin key names the organization; an ingest key writes only; a user key neither.
    let admin = Client { key: app.admin.clone(), app: &app };
    let (status, problem) = admin.json("GET", "/meters", None).await;
    assert_eq!(status, 400);
    assert!(problem["detail"].as_str().unwrap().contains("X-Tally-Organization"));
    let ingest = Client { key: app.key("ingest").await, app: &app };
    assert_eq!(ingest.json("GET", "/meters", None).await.0, 403);
    let user = Client { key: app.key("user:ann").await, app: &app };
    assert_eq!(user.ingest("application/cloudevents+json", good.clone()).await.0, 403);
    let resp = app
        .client
        .post(format!("{}{BASE}/events", app.base))
        .bearer_auth(app.key("ingest").await)
        .header("x-tally-organization", "acme")
        .header("content-type", "application/cloudevents+json")
        .body(good.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    assert_eq!(app.store.event_count().await.unwrap(), 1);

    // Queries name the parameter at fault, as problem+json.
    for (query, parameter) in [
        ("groupBy=colour", "groupBy"),
        ("windowSize=WEEK", "windowSize"),
        ("windowTimeZone=Mars", "windowTimeZone"),
        ("from=2025-03-02T00:00:00Z&to=2025-03-01T00:00:00Z", "to"),
        ("filterGroupBy%5Bcolour%5D=red", "filterGroupBy[colour]"),
    ] {
        let (status, ct, text) = om.send("GET", &format!("/meters/tokens/query?{query}"), None, None, None).await;
        let problem: Value = serde_json::from_str(&text).unwrap();
        assert_eq!((status, ct.as_str(), problem["parameter"].as_str()), (400, "application/problem+json", Some(parameter)), "{query}");
    }
    assert_eq!(om.json("GET", "/meters/nope/query", None).await.0, 404);
}
