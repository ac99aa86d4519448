//! Kill -9 the server during ingestion (three times, at random moments), restart it, and check that every acknowledged event is
//! stored exactly once and the aggregates equal a rebuild from raw events. Kill it during webhook
//! delivery, restart it, and check that every queued delivery arrives, none twice after its
//! success was recorded.

use serde_json::{Value, json};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_tally");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn start(db: &[String], port: u16) -> Child {
    Command::new(BIN)
        .args(db)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("TALLY_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

async fn wait_ready(client: &reqwest::Client, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(r) = client.get(format!("http://127.0.0.1:{port}/readyz")).send().await
            && r.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("server did not become ready");
}

fn batch(client_no: usize, n: usize) -> Vec<Value> {
    (0..200)
        .map(|i| {
            // Every tenth event repeats one from the previous batch: duplicates must not count.
            let seq = if i % 10 == 0 && n > 0 { (n - 1) * 200 + i } else { n * 200 + i };
            json!({"id": format!("c{client_no}-{seq}"), "timestamp": "2025-06-01T12:00:00Z", "organization_id": "crash",
                   "user_id": format!("u{}", seq % 50), "type": "api_call", "quantity": 1})
        })
        .collect()
}

async fn crash_and_recover(db: Vec<String>) {
    let key = String::from_utf8(Command::new(BIN).args(&db).args(["keys", "create", "--scope", "admin"]).output().unwrap().stdout)
        .unwrap()
        .trim()
        .to_owned();
    assert!(key.starts_with("tly_"), "{key}");
    let port = free_port();
    let client = reqwest::Client::new();
    let acked: Arc<Mutex<Vec<Vec<Value>>>> = Arc::default();
    // Three rounds, each killed at a random moment while four clients are sending.
    for round in 0..3 {
        let mut server = start(&db, port);
        wait_ready(&client, port).await;
        let mut clients = Vec::new();
        for c in 0..4 {
            let (client, key, acked) = (client.clone(), key.clone(), acked.clone());
            clients.push(tokio::spawn(async move {
                for n in round * 100_000.. {
                    let body = batch(c, n);
                    let sent = client.post(format!("http://127.0.0.1:{port}/v1/events")).bearer_auth(&key).json(&body).send().await;
                    match sent {
                        Ok(r) if r.status().is_success() => acked.lock().unwrap().push(body),
                        _ => return,
                    }
                }
            }));
        }
        let moment = rand::random_range(300..1500);
        tokio::time::sleep(Duration::from_millis(moment)).await;
        server.kill().unwrap(); // SIGKILL
        server.wait().unwrap();
        for c in clients {
            c.await.unwrap();
        }
    }
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    assert!(acked.len() >= 4, "too few batches acknowledged before the kills: {}", acked.len());

    let mut server = start(&db, port);
    wait_ready(&client, port).await;
    // Every acknowledged event must already be there: sending it again finds only duplicates.
    for body in &acked {
        let r = json_of(client.post(format!("http://127.0.0.1:{port}/v1/events")).bearer_auth(&key).json(body)).await;
        assert_eq!(r["accepted"], 0, "an acknowledged event was lost: {r}");
    }
    let totals = json_of(client.get(format!("http://127.0.0.1:{port}/v1/organizations/crash/usage/totals")).bearer_auth(&key)).await;
    server.kill().unwrap();
    server.wait().unwrap();

    // Aggregates equal raw events: nothing counted twice, nothing half-applied.
    let url = db_url(&db);
    let store = tally_store::open(&url).await.unwrap();
    let stored = store.event_count().await.unwrap();
    assert_eq!(totals["totals"][0]["count"].as_u64(), Some(stored), "{totals}");
    let live = store.aggregates_fingerprint().await.unwrap();
    store.rebuild_aggregates().await.unwrap();
    assert_eq!(live, store.aggregates_fingerprint().await.unwrap());
}

async fn json_of(request: reqwest::RequestBuilder) -> Value {
    request.send().await.unwrap().json().await.unwrap()
}

fn db_url(db: &[String]) -> String {
    match db {
        [flag, value] if flag == "--data-dir" => format!("sqlite://{value}/tally.db"),
        [_, url] => url.clone(),
        _ => unreachable!(),
    }
}

#[tokio::test]
async fn sqlite_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    crash_and_recover(vec!["--data-dir".into(), dir.path().display().to_string()]).await;
}

#[tokio::test]
async fn postgres_survives_kill_9() {
    let Ok(base) = std::env::var(tally_store::testing::TEST_DATABASE_ENV) else {
        eprintln!("skipped: {} is not set", tally_store::testing::TEST_DATABASE_ENV);
        return;
    };
    let url = tally_store::testing::fresh_schema(&base).await.unwrap();
    crash_and_recover(vec!["--database-url".into(), url]).await;
}

/// A webhook receiver that records every delivery's id and answers a little slowly, so a kill
/// can land while a request is in flight.
async fn slow_receiver(seen: Arc<Mutex<Vec<String>>>) -> u16 {
    use axum::http::HeaderMap;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let router = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap| {
            let seen = seen.clone();
            async move {
                let id = headers.get("webhook-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
                seen.lock().unwrap().push(id);
                tokio::time::sleep(Duration::from_millis(30)).await;
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    port
}

async fn webhooks_survive_kill_9(mut db: Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tally.toml");
    std::fs::write(&config, "[alerts]\nsweep_seconds = 0.5\nfirst_retry_seconds = 0.1\nwebhook_timeout_seconds = 1.0\n").unwrap();
    db.extend(["--config".to_owned(), config.display().to_string()]);
    let key = String::from_utf8(Command::new(BIN).args(&db).args(["keys", "create", "--scope", "admin"]).output().unwrap().stdout)
        .unwrap()
        .trim()
        .to_owned();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let hook = slow_receiver(seen.clone()).await;
    let port = free_port();
    let mut server = start(&db, port);
    let client = reqwest::Client::new();
    wait_ready(&client, port).await;
    let base = format!("http://127.0.0.1:{port}");
    let post = |path: &str, body: Value| client.post(format!("{base}{path}")).bearer_auth(&key).json(&body);
    let llm = |id: &str, cost: &str| {
        json!({"id": id, "timestamp": "2025-06-01T12:00:00Z", "organization_id": "hooks", "user_id": "u1", "type": "llm_request",
               "model": "m", "status": "success", "input_tokens": 1, "output_tokens": 1, "cost": cost})
    };
    json_of(post("/v1/events", json!([llm("first", "0.001")]))).await;
    let channel = json_of(post("/v1/notification-channels", json!({"url": format!("http://127.0.0.1:{hook}/hook")}))).await;
    // Every further cent is a step: one more charge of 0.99 opens 100 alerts, 100 deliveries.
    let rule = json!({"scope": {"type": "organization", "organization_id": "hooks"}, "metric": "llm_cost", "window": "all_time",
                      "threshold": 0, "repeat_every": "0.01", "channels": [channel["id"]]});
    let created = json_of(post("/v1/alert-rules", rule)).await;
    assert!(created["id"].is_string(), "{created}");
    json_of(post("/v1/events", json!([llm("big", "0.99")]))).await;

    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.lock().unwrap().len() < 20 {
        assert!(Instant::now() < deadline, "deliveries did not start");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.kill().unwrap(); // SIGKILL, mid-delivery
    server.wait().unwrap();
    let before = seen.lock().unwrap().len();
    assert!(before < 100, "the kill came too late to test anything ({before} delivered)");

    let mut server = start(&db, port);
    wait_ready(&client, port).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pending = json_of(client.get(format!("{base}/v1/notifications/deliveries?status=pending&limit=1")).bearer_auth(&key)).await;
        if pending["count"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "deliveries still pending: {pending}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let delivered = json_of(client.get(format!("{base}/v1/notifications/deliveries?status=delivered&limit=1")).bearer_auth(&key)).await;
    server.kill().unwrap();
    server.wait().unwrap();

    let seen = seen.lock().unwrap().clone();
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    for id in &seen {
        *counts.entry(id.as_str()).or_default() += 1;
    }
    assert_eq!((counts.len(), delivered["count"].as_u64()), (100, Some(100)), "every queued delivery arrives");
    // Only the request in flight at the kill may arrive again: its success was never recorded.
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.len() <= 1 && twice.iter().all(|(_, n)| **n == 2), "delivered twice after a success: {twice:?}");
}

#[tokio::test]
async fn sqlite_webhooks_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    webhooks_survive_kill_9(vec!["--data-dir".into(), dir.path().display().to_string()]).await;
}

#[tokio::test]
async fn postgres_webhooks_survive_kill_9() {
    let Ok(base) = std::env::var(tally_store::testing::TEST_DATABASE_ENV) else {
        eprintln!("skipped: {} is not set", tally_store::testing::TEST_DATABASE_ENV);
        return;
    };
    let url = tally_store::testing::fresh_schema(&base).await.unwrap();
    webhooks_survive_kill_9(vec!["--database-url".into(), url]).await;
}
