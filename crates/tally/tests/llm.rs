//! LLM analytics over HTTP, on both backends: per-user summary, breakdown and months, the
//! organization summary with its top users, partial hours, and who may read what.

mod support;

use serde_json::{Value, json};

http_tests!(llm_analytics_per_user_and_organization, requests_without_a_cost_are_priced_or_listed);

/// `event`: (id, user, time); `call`: (model, provider, status).
fn llm(event: (&str, &str, &str), call: (&str, &str, &str), tokens: (i64, i64), cost: &str, latency: i64) -> Value {
    let ((id, user, at), (model, provider, status)) = (event, call);
    json!({"id": id, "timestamp": at, "organization_id": "acme", "user_id": user, "type": "llm_request", "model": model,
           "provider": provider, "status": status, "input_tokens": tokens.0, "output_tokens": tokens.1, "cost": cost, "latency_ms": latency})
}

async fn llm_analytics_per_user_and_organization(app: support::TestApp) {
    let events = json!([
        llm(("a1", "ann", "2025-03-01T10:10:00Z"), ("gpt-4o", "openai", "success"), (100, 20), "0.10", 400),
        llm(("a2", "ann", "2025-03-01T10:40:00Z"), ("gpt-4o", "openai", "error"), (50, 0), "0.05", 1200),
        llm(("a3", "ann", "2025-03-15T08:00:00Z"), ("gpt-4o", "openai", "success"), (200, 80), "0.30", 800),
        llm(("a4", "ann", "2025-04-02T09:30:00Z"), ("claude-sonnet", "anthropic", "success"), (10, 5), "0.0125", 600),
        llm(("b1", "bob", "2025-03-03T12:00:00Z"), ("gpt-4o", "openai", "success"), (1000, 500), "1.5", 300),
        {"id": "x1", "timestamp": "2025-03-01T10:00:00Z", "organization_id": "acme", "user_id": "ann", "type": "api_call"},
    ]);
    let (status, report) = app.post("/v1/events", events).await;
    assert_eq!((status, report["accepted"].as_u64()), (200, Some(6)), "{report}");

    let (status, s) = app.get("/v1/users/ann/llm/summary").await;
    assert_eq!(status, 200, "{s}");
    let summary = &s["summary"];
    assert_eq!(
        (summary["total_requests"].as_i64(), summary["successful_requests"].as_i64(), summary["failed_requests"].as_i64()),
        (Some(4), Some(3), Some(1))
    );
    assert_eq!(
        (summary["input_tokens"].as_i64(), summary["output_tokens"].as_i64(), summary["total_tokens"].as_i64()),
        (Some(360), Some(105), Some(465))
    );
    assert_eq!(summary["total_cost"], "0.4625");
    // The average is exact; the p95 comes from daily histograms, within 1% of the exact 1200 ms.
    assert_eq!(summary["avg_latency_ms"].as_f64(), Some(750.0));
    let p95 = summary["p95_latency_ms"].as_i64().unwrap();
    assert!((1188..=1212).contains(&p95), "{p95}");
    assert_eq!((summary["most_used_model"].as_str(), summary["most_used_provider"].as_str()), (Some("gpt-4o"), Some("openai")));
    assert_eq!(
        (summary["first_request_at"].as_str(), summary["last_request_at"].as_str()),
        (Some("2025-03-01T10:10:00Z"), Some("2025-04-02T09:30:00Z"))
    );
    assert_eq!(summary["active_days"], 3);

    // A range that cuts hours: only a2 (10:40) and a3.
    let (_, cut) = app.get("/v1/users/ann/llm/summary?from=2025-03-01T10:30:00Z&to=2025-03-31T00:00:00Z").await;
    assert_eq!((cut["summary"]["total_requests"].as_i64(), cut["summary"]["total_cost"].as_str()), (Some(2), Some("0.35")));
    // Its latencies: the cut first day read raw, the whole days after it from histograms.
    assert_eq!(
        (cut["summary"]["avg_latency_ms"].as_f64(), cut["summary"]["first_request_at"].as_str()),
        (Some(1000.0), Some("2025-03-01T10:40:00Z"))
    );

    let (_, by_model) = app.get("/v1/users/ann/llm/breakdown?by=model").await;
    let rows = by_model["results"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(
        rows[0],
        json!({"model": "gpt-4o", "request_count": 3, "input_tokens": 350, "output_tokens": 100, "total_tokens": 450,
               "total_cost": "0.45", "avg_tokens_per_request": 150.0, "failure_rate": 1.0 / 3.0, "last_used": "2025-03-15T08:00:00Z"})
    );
    let (_, both) = app.get("/v1/users/ann/llm/breakdown?by=model,provider").await;
    assert_eq!((both["results"][1]["model"].as_str(), both["results"][1]["provider"].as_str()), (Some("claude-sonnet"), Some("anthropic")));
    let (status, problem) = app.get("/v1/users/ann/llm/breakdown?by=colour").await;
    assert_eq!((status, problem["parameter"].as_str()), (400, Some("by")));

    let (_, months) = app.get("/v1/users/ann/llm/monthly").await;
    let months = months["results"].as_array().unwrap();
    assert_eq!(
        months.iter().map(|m| (m["month"].as_str().unwrap(), m["request_count"].as_i64().unwrap())).collect::<Vec<_>>(),
        [("2025-03", 3), ("2025-04", 1)]
    );
    assert_eq!(months[1]["providers"][0]["provider"], "anthropic");

    let (status, org) = app.get("/v1/organizations/acme/llm/summary?top=1&top_by=tokens").await;
    assert_eq!(status, 200, "{org}");
    assert_eq!((org["summary"]["total_requests"].as_i64(), org["summary"]["total_cost"].as_str()), (Some(5), Some("1.9625")));
    assert_eq!(
        (org["summary"]["avg_latency_ms"].as_f64(), org["summary"]["first_request_at"].as_str()),
        (Some(660.0), Some("2025-03-01T10:10:00Z"))
    );
    assert_eq!(org["top_users"], json!([{"user_id": "bob", "requests": 1, "total_tokens": 1500, "total_cost": "1.5"}]));
    let (status, problem) = app.get("/v1/organizations/acme/llm/summary?top_by=speed").await;
    assert_eq!((status, problem["parameter"].as_str()), (400, Some("top_by")));

    // History: newest first, filtered, paged by cursor until the end.
    let (_, page) = app.get("/v1/users/ann/llm/requests?limit=2").await;
    let ids = |p: &Value| p["results"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_owned()).collect::<Vec<_>>();
    assert_eq!(ids(&page), ["a4", "a3"]);
    assert_eq!((page["results"][0]["cost"].as_str(), page["results"][0]["total_tokens"].as_i64()), (Some("0.0125"), Some(15)));
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let (_, next) = app.get(&format!("/v1/users/ann/llm/requests?limit=2&cursor={cursor}")).await;
    assert_eq!(ids(&next), ["a2", "a1"]);
    let (_, last) = app.get(&format!("/v1/users/ann/llm/requests?limit=2&cursor={}", next["next_cursor"].as_str().unwrap())).await;
    assert_eq!((ids(&last).len(), last["next_cursor"].clone()), (0, Value::Null));
    let (_, errors) = app.get("/v1/users/ann/llm/requests?status=error").await;
    assert_eq!(ids(&errors), ["a2"]);
    let (_, claude) = app.get("/v1/users/ann/llm/requests?provider=anthropic&from=2025-04-01T00:00:00Z").await;
    assert_eq!((ids(&claude), claude["next_cursor"].clone()), (vec!["a4".to_owned()], Value::Null));
    for (query, parameter) in [("cursor=nonsense", "cursor"), ("limit=0", "limit"), ("status=maybe", "status")] {
        let (status, problem) = app.get(&format!("/v1/users/ann/llm/requests?{query}")).await;
        assert_eq!((status, problem["parameter"].as_str()), (400, Some(parameter)), "{query}");
    }

    // Recent activity across users, newest first, with who made each request.
    // Metadata sync fills in the user that ingestion registered.
    let ann_details = json!({"id": "ann", "organization_id": "acme", "username": "ann.lee", "first_name": "Ann", "last_name": "Lee"});
    let admin = app.admin.clone();
    assert_eq!(app.request("PUT", "/v1/users/ann", Some(&admin), Some(ann_details)).await.0, 200);
    let (status, activity) = app.get("/v1/llm/activity?limit=2").await;
    assert_eq!(status, 200, "{activity}");
    let items = activity["results"].as_array().unwrap();
    assert_eq!(items.iter().map(|i| i["id"].as_str().unwrap()).collect::<Vec<_>>(), ["a4", "a3"]);
    assert_eq!((items[0]["user"]["username"].as_str(), items[0]["user"]["full_name"].as_str()), (Some("ann.lee"), Some("Ann Lee")));
    assert_eq!(items[0]["organization"]["id"], "acme");

    // A user key reads its own figures only; another organization's key sees nothing.
    let ann = app.key("user:ann").await;
    assert_eq!(app.request("GET", "/v1/users/ann/llm/summary", Some(&ann), None).await.0, 200);
    assert_eq!(app.request("GET", "/v1/users/bob/llm/summary", Some(&ann), None).await.0, 404);
    assert_eq!(app.request("GET", "/v1/users/bob/llm/requests", Some(&ann), None).await.0, 404);
    assert_eq!(app.request("GET", "/v1/organizations/acme/llm/summary", Some(&ann), None).await.0, 404);
    let globex = app.key("org:globex").await;
    assert_eq!(app.request("GET", "/v1/users/ann/llm/breakdown", Some(&globex), None).await.0, 404);
    let acme = app.key("org:acme").await;
    assert_eq!(app.request("GET", "/v1/users/bob/llm/monthly", Some(&acme), None).await.0, 200);
    assert_eq!(app.request("GET", "/v1/llm/activity", Some(&acme), None).await.0, 200);
    let (_, other) = app.request("GET", "/v1/llm/activity", Some(&globex), None).await;
    assert_eq!(other["results"], json!([]));
    assert_eq!(app.request("GET", "/v1/llm/activity", Some(&ann), None).await.0, 403);
    let ingest = app.key("ingest").await;
    assert_eq!(app.request("GET", "/v1/users/ann/llm/summary", Some(&ingest), None).await.0, 404);
}

async fn requests_without_a_cost_are_priced_or_listed(app: support::TestApp) {
    let (status, table) = app.get("/v1/llm/prices").await;
    assert_eq!(status, 200);
    let version = table["version"].as_i64().unwrap();
    assert!(table["results"].as_array().unwrap().iter().any(|p| p["model"] == "gpt-4o"), "{table}");

    let admin = app.admin.clone();
    let custom = json!({"model": "acme-llm-*", "input_per_million": "1", "output_per_million": "3"});
    let (status, saved) = app.request("PUT", "/v1/llm/prices/acme-llm-*", Some(&admin), Some(custom)).await;
    assert_eq!((status, saved["version"].as_i64()), (200, Some(version + 1)), "{saved}");
    let bad = json!({"model": "x", "input_per_million": "-1", "output_per_million": "0"});
    assert_eq!(app.request("PUT", "/v1/llm/prices/x", Some(&admin), Some(bad)).await.0, 400);
    let org_key = app.key("org:acme").await;
    let other = json!({"model": "y", "input_per_million": "1", "output_per_million": "1"});
    assert_eq!(app.request("PUT", "/v1/llm/prices/y", Some(&org_key), Some(other)).await.0, 403);

    let event = |id: &str, model: Option<&str>, cost: Option<&str>| {
        let mut e = json!({"id": id, "timestamp": "2025-03-01T10:00:00Z", "organization_id": "acme", "user_id": "ann",
                           "type": "llm_request", "status": "success", "input_tokens": 1000, "output_tokens": 500});
        if let Some(m) = model {
            e["model"] = json!(m);
        }
        if let Some(c) = cost {
            e["cost"] = json!(c);
        }
        e
    };
    let events = json!([
        event("p1", Some("gpt-4o"), None),        // 1000 × 2.50/M + 500 × 10/M = 0.0075
        event("p2", Some("gpt-4o"), Some("0.5")), // its own cost wins
        event("p3", Some("acme-llm-7b"), None),   // the new pattern: 0.001 + 0.0015
        event("p4", Some("my-finetune"), None),   // no price: no cost, listed
        event("p5", Some("my-finetune"), None),
        event("p6", None, None), // no model at all
    ]);
    assert_eq!(app.post("/v1/events", events).await.1["accepted"], 6);
    let (_, history) = app.get("/v1/users/ann/llm/requests").await;
    let costs: Vec<(String, Value)> =
        history["results"].as_array().unwrap().iter().map(|r| (r["id"].as_str().unwrap().to_owned(), r["cost"].clone())).collect();
    let cost = |id: &str| costs.iter().find(|(i, _)| i == id).unwrap().1.clone();
    assert_eq!((cost("p1"), cost("p2"), cost("p3"), cost("p4")), (json!("0.0075"), json!("0.5"), json!("0.0025"), Value::Null));
    let (_, summary) = app.get("/v1/users/ann/llm/summary").await;
    assert_eq!(summary["summary"]["total_cost"], "0.51");

    let (status, unpriced) = app.get("/v1/llm/unpriced-models").await;
    assert_eq!(status, 200);
    let rows: Vec<(&str, i64)> =
        unpriced["results"].as_array().unwrap().iter().map(|r| (r["model"].as_str().unwrap(), r["requests"].as_i64().unwrap())).collect();
    assert_eq!(rows, [("my-finetune", 2), ("", 1)]);
    let (_, theirs) = app.request("GET", "/v1/llm/unpriced-models", Some(&app.key("org:globex").await), None).await;
    assert_eq!(theirs["count"], 0);

    // Removing a price affects new events only.
    assert_eq!(app.request("DELETE", "/v1/llm/prices/acme-llm-*", Some(&admin), None).await.0, 204);
    assert_eq!(app.request("DELETE", "/v1/llm/prices/acme-llm-*", Some(&admin), None).await.0, 404);
    app.post("/v1/events", json!([event("p7", Some("acme-llm-7b"), None)])).await;
    let (_, unpriced) = app.get("/v1/llm/unpriced-models").await;
    assert!(unpriced["results"].as_array().unwrap().iter().any(|r| r["model"] == "acme-llm-7b" && r["requests"] == 1), "{unpriced}");

    // Input read from the prompt cache costs the cached-input price: 400 × 2.50/M + 600 × 1.25/M + 500 × 10/M.
    let mut cached = event("p8", Some("gpt-4o"), None);
    cached["cached_input_tokens"] = json!(600);
    let mut impossible = event("p9", Some("gpt-4o"), None);
    impossible["cached_input_tokens"] = json!(1001);
    let (status, report) = app.post("/v1/events", json!([cached, impossible])).await;
    assert_eq!((status, report["accepted"].as_u64()), (207, Some(1)), "{report}");
    assert!(report["rejected"][0]["reason"].as_str().unwrap().contains("cannot exceed"), "{report}");
    let (_, history) = app.get("/v1/users/ann/llm/requests").await;
    let p8 = history["results"].as_array().unwrap().iter().find(|r| r["id"] == "p8").cloned().unwrap();
    assert_eq!(p8["cost"], "0.00675");
}
