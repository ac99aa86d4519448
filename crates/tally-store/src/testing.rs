//! Test support shared by every crate's tests: a fresh, isolated store per test on either
//! backend. PostgreSQL tests each get their own schema in the database `TALLY_TEST_DATABASE_URL`
//! names, so they run in parallel without seeing each other.

use crate::{Result, Store, StoreError};
use std::sync::Arc;

pub const TEST_DATABASE_ENV: &str = "TALLY_TEST_DATABASE_URL";

/// Keeps a test's data alive (the SQLite temp dir) for as long as the test holds it.
pub struct TestStore {
    pub store: Arc<dyn Store>,
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

pub async fn sqlite() -> TestStore {
    let dir = tempfile::Builder::new().prefix("tally-test-").tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("tally.db").display());
    let store = crate::open(&url).await.expect("open sqlite");
    TestStore { store, url, _dir: Some(dir) }
}

/// A store in a new schema of the test database, or `None` when no test database is configured.
pub async fn postgres() -> Option<TestStore> {
    let base = std::env::var(TEST_DATABASE_ENV).ok().filter(|u| !u.is_empty())?;
    let url = fresh_schema(&base).await.expect("create test schema");
    let store = crate::open(&url).await.expect("open postgres");
    Some(TestStore { store, url, _dir: None })
}

/// Like [`postgres`], but connecting through the URL `reroute` makes of the test URL (through a
/// proxy that a test can cut, say).
pub async fn postgres_via(reroute: impl FnOnce(&str) -> String) -> Option<TestStore> {
    let base = std::env::var(TEST_DATABASE_ENV).ok().filter(|u| !u.is_empty())?;
    let url = reroute(&fresh_schema(&base).await.expect("create test schema"));
    let store = crate::open(&url).await.expect("open postgres");
    Some(TestStore { store, url, _dir: None })
}

/// Creates an empty schema and returns a URL whose connections use it.
pub async fn fresh_schema(base: &str) -> Result<String> {
    named_schema(base, &format!("t_{}", random_suffix())).await
}

/// Creates the schema `name` unless it exists, and returns a URL whose connections use it.
/// `name` must be a plain identifier (letters, digits, underscores).
pub async fn named_schema(base: &str, name: &str) -> Result<String> {
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(StoreError::Config(format!("{name:?} is not a plain schema name")));
    }
    let (client, connection) =
        tokio_postgres::connect(base, tokio_postgres::NoTls).await.map_err(|e| StoreError::Unavailable(e.to_string()))?;
    tokio::spawn(connection);
    client.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {name}")).await.map_err(|e| StoreError::Internal(e.to_string()))?;
    let sep = if base.contains('?') { '&' } else { '?' };
    Ok(format!("{base}{sep}options=-csearch_path%3D{name}"))
}

fn random_suffix() -> String {
    use rand::Rng;
    let n: u64 = rand::rng().random();
    format!("{n:016x}")
}

/// Runs raw SQL statements on a test store's database: for tests that damage what the API never
/// lets a client touch (the kept figures a rebuild must restore, say).
pub async fn execute_raw(url: &str, statements: &str) -> Result<()> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        let conn = rusqlite::Connection::open(path).map_err(|e| StoreError::Internal(e.to_string()))?;
        conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(|e| StoreError::Internal(e.to_string()))?;
        return conn.execute_batch(statements).map_err(|e| StoreError::Internal(e.to_string()));
    }
    let (client, connection) =
        tokio_postgres::connect(url, tokio_postgres::NoTls).await.map_err(|e| StoreError::Unavailable(e.to_string()))?;
    tokio::spawn(connection);
    client.batch_execute(statements).await.map_err(|e| StoreError::Internal(e.to_string()))
}
