//! The web dashboard in a real browser, on both backends: Debian's Chromium driven by
//! playwright-core (npm) through `tests/browser/dashboard.mjs`, against the demo data.
//! `.ci/run` installs both and sets `TALLY_PLAYWRIGHT` (playwright-core's entry module); without
//! it the test is skipped (and says so). Screenshots land in `target/tmp/screenshots/<backend>`.

mod support;

async fn dashboard(backend: &str, store: tally_store::testing::TestStore) {
    let Ok(playwright) = std::env::var("TALLY_PLAYWRIGHT") else {
        eprintln!("skipped: TALLY_PLAYWRIGHT is not set");
        return;
    };
    tally::demo::load(store.store.as_ref()).await.unwrap();
    let app = support::spawn(store).await;
    let user_key = app.key("user:acme-u01").await;
    let shots = format!("{}/screenshots/{backend}", env!("CARGO_TARGET_TMPDIR"));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/dashboard.mjs");
    support::run_client("node".into(), script, vec![playwright, app.base.clone(), app.admin.clone(), shots, user_key]).await;
    // The alert resolved in the browser is resolved in the store, with what was done.
    let (_, resolved) = app.get("/v1/alerts?status=resolved").await;
    let by_hand: Vec<_> = resolved["results"].as_array().unwrap().iter().filter(|a| a["resolution"] == "manual").collect();
    assert_eq!(by_hand.len(), 1, "{resolved}");
    assert_eq!(by_hand[0]["action_taken"], "Called the customer; renewal agreed.");
}

#[tokio::test]
async fn dashboard_on_sqlite() {
    dashboard("sqlite", tally_store::testing::sqlite().await).await;
}

#[tokio::test]
async fn dashboard_on_postgres() {
    let Some(store) = tally_store::testing::postgres().await else {
        eprintln!("skipped: {} is not set", tally_store::testing::TEST_DATABASE_ENV);
        return;
    };
    dashboard("postgres", store).await;
}
