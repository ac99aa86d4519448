//! What the store needs done in the background while the server runs: each organization's
//! current-period figures kept on its billing period, and the query planner's statistics kept
//! current as data grows.

use std::sync::Arc;
use std::time::Duration;
use tally_store::Store;

/// Once at start (a store migrated from before period figures were kept has none recorded, and
/// a large load may have left statistics behind), then billing periods every minute (a calendar
/// month begun moves every organization without a subscription) and statistics every hour.
/// Reports read correct figures meanwhile, only slower.
pub async fn run(store: Arc<dyn Store>) {
    const STATISTICS_EVERY: u32 = 60;
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for minute in 0u32.. {
        tick.tick().await;
        match store.refresh_billing_periods(None, jiff::Timestamp::now()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(organizations = n, "billing periods refreshed"),
            Err(e) => tracing::warn!(error = %e, "refreshing billing periods failed; retrying in a minute"),
        }
        if minute.is_multiple_of(STATISTICS_EVERY)
            && let Err(e) = store.refresh_statistics().await
        {
            tracing::warn!(error = %e, "refreshing planner statistics failed; retrying in an hour");
        }
    }
}
