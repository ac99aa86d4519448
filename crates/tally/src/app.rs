//! The running application: the store, the group committer in front of it, metrics, and the
//! caches that ingestion consults on every event: the known usage types and the LLM price table.

use crate::config::Config;
use crate::metrics::Metrics;
use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tally_store::{GroupCommitter, Store, StoreError};
use tokio::task::JoinHandle;

/// Events per group-commit transaction: big enough to amortize the commit, small enough to
/// keep a transaction well under a second.
const MAX_COMMIT_EVENTS: usize = 50_000;
/// Requests allowed to wait for the writer before new ones are told to retry.
const COMMIT_QUEUE_DEPTH: usize = 256;
/// How often an unknown usage type may trigger a reload (another process may have created it).
const TYPE_RELOAD_INTERVAL: Duration = Duration::from_secs(1);

pub type AppState = Arc<App>;

pub struct App {
    pub store: Arc<dyn Store>,
    pub committer: GroupCommitter,
    pub metrics: Arc<Metrics>,
    pub usage_types: UsageTypeCache,
    pub prices: PriceCache,
    /// Threshold rules, their evaluation and notifications.
    pub alerting: Arc<crate::alerts::Alerting>,
    pub max_batch_events: usize,
    pub max_body_bytes: usize,
    pub max_concurrent_requests: usize,
    pub max_queue_wait: std::time::Duration,
    /// Requests per API key.
    pub rate_limiter: crate::http::rate_limit::KeyRateLimiter,
}

impl App {
    /// Builds the app and starts its writer; the handle finishes once every clone of the app
    /// (and so every sender to the writer) is dropped and the last batch is committed.
    pub async fn start(store: Arc<dyn Store>, config: &Config) -> Result<(AppState, JoinHandle<()>), StoreError> {
        let metrics = Metrics::new();
        let observer = {
            let metrics = metrics.clone();
            Arc::new(move |n: usize, took: Duration| metrics.observe_commit(n, took)) as tally_store::CommitObserver
        };
        let (committer, writer) = GroupCommitter::start(store.clone(), MAX_COMMIT_EVENTS, COMMIT_QUEUE_DEPTH, Some(observer));
        let usage_types = UsageTypeCache::default();
        usage_types.reload(store.as_ref()).await?;
        let prices = PriceCache::default();
        prices.seed_and_load(store.as_ref()).await?;
        let alerting = Arc::new(crate::alerts::Alerting::start(store.clone(), config.alerts.clone()).await?);
        let app = App {
            store,
            alerting,
            committer,
            metrics,
            usage_types,
            prices,
            max_batch_events: config.max_batch_events,
            max_body_bytes: config.max_body_bytes,
            max_concurrent_requests: config.max_concurrent_requests,
            max_queue_wait: config.max_queue_wait,
            rate_limiter: crate::http::rate_limit::KeyRateLimiter::new(config.rate_limit),
        };
        Ok((Arc::new(app), writer))
    }
}

#[derive(Default)]
pub struct UsageTypeCache {
    keys: RwLock<Arc<HashSet<String>>>,
    reloaded: RwLock<Option<Instant>>,
}

impl UsageTypeCache {
    pub fn known(&self) -> Arc<HashSet<String>> {
        self.keys.read().expect("usage type cache lock").clone()
    }

    pub async fn reload(&self, store: &dyn Store) -> Result<(), StoreError> {
        let keys: HashSet<String> = store.usage_types().await?.into_iter().map(|t| t.key.to_string()).collect();
        *self.keys.write().expect("usage type cache lock") = Arc::new(keys);
        *self.reloaded.write().expect("usage type cache lock") = Some(Instant::now());
        Ok(())
    }

    /// Reloads when a batch names a type we do not know, at most once per interval.
    pub async fn reload_if_stale(&self, store: &dyn Store) -> Result<(), StoreError> {
        let stale = self.reloaded.read().expect("usage type cache lock").is_none_or(|at| at.elapsed() >= TYPE_RELOAD_INTERVAL);
        if stale { self.reload(store).await } else { Ok(()) }
    }
}

/// How long ingestion may price with a table another process could have changed since.
const PRICE_RELOAD_INTERVAL: Duration = Duration::from_secs(30);

/// The LLM price table ingestion prices with.
#[derive(Default)]
pub struct PriceCache {
    table: RwLock<(Arc<tally_domain::llm::prices::PriceTable>, Option<Instant>)>,
}

impl PriceCache {
    /// Loads the table; a store that never had one gets the defaults.
    pub async fn seed_and_load(&self, store: &dyn Store) -> Result<(), StoreError> {
        if store.llm_prices().await?.version == 0 {
            for price in tally_domain::llm::prices::defaults() {
                store.save_llm_price(&price).await?;
            }
        }
        self.reload(store).await
    }

    pub async fn reload(&self, store: &dyn Store) -> Result<(), StoreError> {
        let table = store.llm_prices().await?;
        *self.table.write().expect("price cache lock") = (Arc::new(table), Some(Instant::now()));
        Ok(())
    }

    /// The table to price with now, reloaded when it may be stale.
    pub async fn current(&self, store: &dyn Store) -> Result<Arc<tally_domain::llm::prices::PriceTable>, StoreError> {
        let stale = self.table.read().expect("price cache lock").1.is_none_or(|at| at.elapsed() >= PRICE_RELOAD_INTERVAL);
        if stale {
            self.reload(store).await?;
        }
        Ok(self.table.read().expect("price cache lock").0.clone())
    }
}
