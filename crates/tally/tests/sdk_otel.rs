//! The official OpenTelemetry Python SDK's OTLP/HTTP exporter against a running server.
//! `.ci/run` installs it and sets `TALLY_OTEL_PYTHON` to the interpreter that has it; without
//! that variable the test is skipped (and says so).

mod support;

use serde_json::json;

http_tests!(opentelemetry_sdk_exports_llm_spans);

async fn opentelemetry_sdk_exports_llm_spans(app: support::TestApp) {
    let Ok(python) = std::env::var("TALLY_OTEL_PYTHON") else {
        eprintln!("skipped: TALLY_OTEL_PYTHON is not set");
        return;
    };
    let key = app.key("ingest").await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/otel_traces.py");
    let base = app.base.clone();
    support::run_client(python, script, vec![base, key]).await;
    // Two GenAI spans (exported three times between them), the HTTP span ignored.
    assert_eq!(app.store.event_count().await.unwrap(), 2);
    let (_, ann) = app.get("/v1/users/ann/llm/summary").await;
    let s = &ann["summary"];
    assert_eq!((s["total_requests"].as_i64(), s["input_tokens"].as_i64(), s["output_tokens"].as_i64()), (Some(1), Some(1000), Some(500)));
    // No cost in the span: priced from the table (gpt-4o: 2.50 and 10.00 per million).
    assert_eq!(s["total_cost"], "0.0075");
    assert_eq!((s["most_used_model"].as_str(), s["most_used_provider"].as_str()), (Some("gpt-4o"), Some("openai")));
    let (_, bob) = app.get("/v1/users/bob/llm/breakdown?by=model,provider").await;
    assert_eq!(
        (bob["results"][0]["model"].clone(), bob["results"][0]["provider"].clone(), bob["results"][0]["failure_rate"].clone()),
        (json!("claude-3-5-sonnet-20241022"), json!("anthropic"), json!(1.0))
    );
    assert_eq!(bob["results"][0]["total_cost"], "0.00033");
}
