//! A real server on port 0 over a fresh store, and a small JSON client for tests.
#![allow(dead_code)]

use serde_json::Value;
use std::sync::Arc;
use tally::app::App;
use tally::config::{Config, Secret};
use tally_domain::Scope;
use tally_store::Store;
use tally_store::testing::TestStore;

pub struct TestApp {
    pub base: String,
    pub admin: String,
    pub store: Arc<dyn Store>,
    pub client: reqwest::Client,
    _store: TestStore,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    background: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.background.iter().for_each(tokio::task::JoinHandle::abort);
    }
}

pub async fn spawn(test_store: TestStore) -> TestApp {
    spawn_with(test_store, |_| {}).await
}

/// A server with its configuration changed by `configure`.
pub async fn spawn_with(test_store: TestStore, configure: impl FnOnce(&mut Config)) -> TestApp {
    let store = test_store.store.clone();
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: Secret::new(test_store.url.clone()),
        log_format: Default::default(),
        max_batch_events: Config::MAX_BATCH_EVENTS,
        max_body_bytes: Config::MAX_BODY_BYTES,
        max_concurrent_requests: Config::MAX_CONCURRENT_REQUESTS,
        max_queue_wait: Config::MAX_QUEUE_WAIT,
        rate_limit: Default::default(),
        churn: Default::default(),
        // Fast retries and sweeps, so delivery and sliding-window tests finish in seconds.
        alerts: tally::config::AlertSettings { sweep_seconds: 1.0, first_retry_seconds: 0.2, webhook_timeout_seconds: 2.0 },
    };
    configure(&mut config);
    let (_, admin) = tally::cli::create_key(store.as_ref(), Scope::Admin, "test").await.unwrap();
    let (app, _writer) = App::start(store.clone(), &config).await.unwrap();
    let background = tally::alerts::spawn(app.alerting.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(tally::http::serve(listener, app, async move {
        let _ = stopped.await;
    }));
    TestApp { base, admin, store, client: reqwest::Client::new(), _store: test_store, stop: Some(stop), background }
}

impl TestApp {
    pub async fn key(&self, scope: &str) -> String {
        tally::cli::create_key(self.store.as_ref(), Scope::parse(scope).unwrap(), "test").await.unwrap().1
    }

    pub async fn request(&self, method: &str, path: &str, key: Option<&str>, body: Option<Value>) -> (u16, Value) {
        let mut req = self.client.request(method.parse().unwrap(), format!("{}{path}", self.base));
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.request("GET", path, Some(&self.admin.clone()), None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.request("POST", path, Some(&self.admin.clone()), Some(body)).await
    }

    pub async fn raw_post(
        &self,
        path: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let resp = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.admin)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        (status, headers, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }
}

/// Runs an official client's script (`program script args…`) off the async runtime and fails the
/// test with its output unless it succeeds.
pub async fn run_client(program: String, script: &'static str, args: Vec<String>) {
    let shown = format!("{program} {script}");
    let output = tokio::task::spawn_blocking(move || std::process::Command::new(program).arg(script).args(args).output())
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    assert!(
        output.status.success(),
        "{shown} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Instantiates each async test fn for SQLite and (when configured) PostgreSQL.
#[macro_export]
macro_rules! http_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let app = $crate::support::spawn(tally_store::testing::sqlite().await).await;
                    super::$name(app).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    let Some(store) = tally_store::testing::postgres().await else {
                        eprintln!("skipped: {} is not set", tally_store::testing::TEST_DATABASE_ENV);
                        return;
                    };
                    let app = $crate::support::spawn(store).await;
                    super::$name(app).await;
                }
            )*
        }
    };
}
