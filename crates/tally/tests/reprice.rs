//! `tally llm reprice`: after a price is added, requests that had none get their cost, computed
//! costs follow the new table, an event's own cost stays, and the aggregates agree with a rebuild.

use std::process::Command;
use tally_domain::event::ValidationContext;
use tally_domain::llm::prices::ModelPrice;
use tally_domain::{Money, RawEvent};
use tally_store::testing::TestStore;

const BIN: &str = env!("CARGO_BIN_EXE_tally");

async fn reprice_fixes_costs_and_aggregates(t: TestStore) {
    let store = t.store.clone();
    let types = ["llm_request".to_owned()].into();
    let ctx = ValidationContext { now: jiff::Timestamp::now(), known_types: &types };
    let event = |id: &str, model: &str, cost: Option<&str>| {
        let cost = cost.map(|c| format!(r#","cost":"{c}""#)).unwrap_or_default();
        let json = format!(
            r#"{{"id":"{id}","timestamp":"2025-03-01T10:00:00Z","organization_id":"acme","user_id":"ann","type":"llm_request","model":"{model}","input_tokens":1000000,"output_tokens":0{cost}}}"#
        );
        RawEvent::from_json(&json).unwrap().validate(&ctx).unwrap()
    };
    let price = |model: &str, input: &str| ModelPrice {
        model: model.into(),
        input_per_million: Money::parse_non_negative(input).unwrap(),
        output_per_million: Money::from_nanos(0),
        cached_input_per_million: None,
    };
    // Stored without a price (no table loaded on this path): no cost.
    store.record_events(vec![event("a", "house-llm", None), event("b", "house-llm", Some("9")), event("c", "other", None)]).await.unwrap();
    assert_eq!(store.unpriced_models(None).await.unwrap().len(), 2);

    store.save_llm_price(&price("house-llm", "2")).await.unwrap();
    let out = Command::new(BIN)
        .args(["--database-url", &t.url, "llm", "reprice", "--from", "2025-03-01T00:00:00Z", "--to", "2025-04-01T00:00:00Z"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("re-priced 2 LLM requests"));
    let unpriced = store.unpriced_models(None).await.unwrap();
    assert_eq!(unpriced.iter().map(|u| u.model.as_str()).collect::<Vec<_>>(), ["other"]);
    // a: 1M input tokens at 2 = 2; b keeps its own 9.
    let totals = store.aggregates_fingerprint().await.unwrap();
    assert_eq!(totals.hourly_cost_nanos, 11_000_000_000);
    store.rebuild_aggregates().await.unwrap();
    assert_eq!(store.aggregates_fingerprint().await.unwrap(), totals);

    // A new price re-prices what Tally priced before, not the event's own cost.
    store.save_llm_price(&price("house-llm", "3")).await.unwrap();
    let out = Command::new(BIN)
        .args(["--database-url", &t.url, "llm", "reprice", "--from", "2025-03-01T00:00:00Z", "--to", "2025-04-01T00:00:00Z"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(store.aggregates_fingerprint().await.unwrap().hourly_cost_nanos, 12_000_000_000);
}

#[tokio::test]
async fn sqlite_reprice() {
    reprice_fixes_costs_and_aggregates(tally_store::testing::sqlite().await).await;
}

#[tokio::test]
async fn postgres_reprice() {
    let Some(t) = tally_store::testing::postgres().await else {
        eprintln!("skipped: {} is not set", tally_store::testing::TEST_DATABASE_ENV);
        return;
    };
    reprice_fixes_costs_and_aggregates(t).await;
}
