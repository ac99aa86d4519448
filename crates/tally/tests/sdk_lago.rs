//! Lago's official Python client (`lago-python-client` from PyPI) against a running server.
//! `.ci/run` installs it and sets `TALLY_LAGO_PYTHON` to the interpreter that has it; without
//! that variable the test is skipped (and says so).

mod support;

use serde_json::json;

http_tests!(lago_python_client_ingests);

async fn lago_python_client_ingests(app: support::TestApp) {
    let Ok(python) = std::env::var("TALLY_LAGO_PYTHON") else {
        eprintln!("skipped: TALLY_LAGO_PYTHON is not set");
        return;
    };
    app.post("/v1/organizations", json!({"id": "acme"})).await;
    app.post("/v1/plans", json!({"id": "basic"})).await;
    let sub = json!({"id": "sub-acme", "organization_id": "acme", "plan_id": "basic", "status": "active",
        "current_period_start": "2025-01-01T00:00:00Z", "current_period_end": "2025-02-01T00:00:00Z"});
    assert_eq!(app.post("/v1/subscriptions", sub).await.0, 201);
    let ingest = app.key("ingest").await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/lago_events.py");
    let base = app.base.clone();
    support::run_client(python, script, vec![base, ingest]).await;
    // t1 (3, sent three times) + t2 (4) api_call, t3 (2) submission; nothing from refused requests.
    assert_eq!(app.store.event_count().await.unwrap(), 3);
    let (_, totals) = app.get("/v1/organizations/acme/usage/totals").await;
    assert_eq!(
        totals["totals"],
        json!([{"usage_type": "api_call", "count": 2, "sum": 7.0}, {"usage_type": "submission", "count": 1, "sum": 2.0}])
    );
}
