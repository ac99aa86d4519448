//! OTLP/HTTP JSON exports and the answers to bad ones.

mod support;

use serde_json::{Value, json};

http_tests!(otlp_json_exports_and_bad_input);

async fn post(app: &support::TestApp, content_type: &str, body: Vec<u8>) -> (u16, Value) {
    let resp = app
        .client
        .post(format!("{}/v1/otlp/v1/traces", app.base))
        .bearer_auth(app.key("org:acme").await)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn span(id: &str, attributes: Value) -> Value {
    json!({"traceId": "5b8efff798038103d269b633813fc60c", "spanId": id, "name": "chat",
           "startTimeUnixNano": "1740823200000000000", "endTimeUnixNano": "1740823200250000000", "kind": 3, "attributes": attributes})
}

fn string(key: &str, value: &str) -> Value {
    json!({"key": key, "value": {"stringValue": value}})
}

fn int(key: &str, value: i64) -> Value {
    json!({"key": key, "value": {"intValue": value.to_string()}})
}

async fn otlp_json_exports_and_bad_input(app: support::TestApp) {
    let export = json!({"resourceSpans": [{"resource": {"attributes": [string("service.name", "chat")]}, "scopeSpans": [{"spans": [
        span("eee19b7ec3c1b174", json!([string("gen_ai.request.model", "gpt-4o-mini"), int("gen_ai.usage.input_tokens", 2000), int("gen_ai.usage.output_tokens", 100), string("user.id", "ann")])),
        span("eee19b7ec3c1b175", json!([string("gen_ai.request.model", "gpt-4o"), int("gen_ai.usage.input_tokens", -5), string("user.id", "ann")])),
        span("eee19b7ec3c1b176", json!([string("gen_ai.request.model", "gpt-4o")])),
        span("eee19b7ec3c1b177", json!([string("http.route", "/health")])),
    ]}]}]});
    let (status, answer) = post(&app, "application/json", serde_json::to_vec(&export).unwrap()).await;
    assert_eq!(status, 200, "{answer}");
    // The org key gave the organization; negative tokens and the missing user are refused, the
    // plain HTTP span ignored, the good span stored.
    let partial = &answer["partialSuccess"];
    assert_eq!(partial["rejectedSpans"].as_i64(), Some(2), "{answer}");
    let message = partial["errorMessage"].as_str().unwrap();
    assert!(message.contains("1 accepted") && message.contains("1 ignored") && message.contains("user.id"), "{message}");
    assert!(message.contains("non-negative") || message.contains("negative"), "{message}");
    assert_eq!(app.store.event_count().await.unwrap(), 1);
    let (_, summary) = app.get("/v1/users/ann/llm/summary").await;
    // gpt-4o-mini: 2000 × 0.15/M + 100 × 0.60/M.
    assert_eq!((summary["summary"]["total_cost"].as_str(), summary["summary"]["avg_latency_ms"].as_f64()), (Some("0.00036"), Some(250.0)));

    let (status, problem) = post(&app, "application/x-protobuf", b"\xff\xff\xff not protobuf".to_vec()).await;
    assert_eq!(status, 400, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("protobuf"));
    let (status, _) = post(&app, "application/json", b"{\"resourceSpans\": 7}".to_vec()).await;
    assert_eq!(status, 400);
    let (status, _) = post(&app, "text/plain", b"hello".to_vec()).await;
    assert_eq!(status, 415);
    let user = app.key("user:ann").await;
    let resp = app
        .client
        .post(format!("{}/v1/otlp/v1/traces", app.base))
        .bearer_auth(user)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403);
}
