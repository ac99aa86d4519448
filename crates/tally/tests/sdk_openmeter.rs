//! OpenMeter's official JavaScript SDK (`@openmeter/sdk` from npm) against a running server.
//! `.ci/run` installs it and sets `TALLY_OPENMETER_SDK` to its entry module; without that
//! variable the test is skipped (and says so).

mod support;

use serde_json::json;

http_tests!(openmeter_sdk_meters_ingests_and_queries);

async fn openmeter_sdk_meters_ingests_and_queries(app: support::TestApp) {
    let Ok(sdk) = std::env::var("TALLY_OPENMETER_SDK") else {
        eprintln!("skipped: TALLY_OPENMETER_SDK is not set");
        return;
    };
    let key = app.key("org:acme").await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/openmeter_sdk.mjs");
    let base = format!("{}/compat/openmeter", app.base);
    support::run_client("node".into(), script, vec![sdk, base, key]).await;
    // Four distinct CloudEvents, each recorded by both meters (one of them sent twice).
    assert_eq!(app.store.event_count().await.unwrap(), 8);
    let (_, totals) = app.get("/v1/organizations/acme/usage/totals").await;
    assert_eq!(totals["totals"][0], json!({"usage_type": "prompts", "count": 4, "sum": 4.0}));
    assert_eq!(totals["totals"][1], json!({"usage_type": "tokens_total", "count": 4, "sum": 257.5}));
}
