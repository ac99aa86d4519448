//! PostgreSQL going away under a running server: requests get 503 with `Retry-After`, nothing is
//! acknowledged, and the server recovers when the database comes back.

mod support;

use serde_json::json;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A TCP proxy to PostgreSQL that can be cut (every connection dropped, no new ones) and restored.
struct Proxy {
    addr: SocketAddr,
    target: String,
    cut: Option<watch::Sender<bool>>,
}

impl Proxy {
    async fn start(addr: SocketAddr, target: &str) -> Proxy {
        let listener = TcpListener::bind(addr).await.expect("bind proxy");
        let addr = listener.local_addr().unwrap();
        let (cut, cut_rx) = watch::channel(false);
        let target_addr = target.to_owned();
        tokio::spawn(async move {
            let mut stop = cut_rx.clone();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((mut client, _)) = accepted else { return };
                        let target = target_addr.clone();
                        let mut stop = cut_rx.clone();
                        tokio::spawn(async move {
                            let Ok(mut server) = TcpStream::connect(&target).await else { return };
                            tokio::select! {
                                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                                _ = stop.changed() => {}
                            }
                        });
                    }
                    _ = stop.changed() => return,
                }
            }
        });
        Proxy { addr, target: target.to_owned(), cut: Some(cut) }
    }

    fn cut(&mut self) {
        if let Some(cut) = self.cut.take() {
            let _ = cut.send(true);
        }
    }

    async fn restore(&mut self) {
        *self = Proxy::start(self.addr, &self.target).await;
    }
}

/// `postgres://user@host:port/db?…` → (`host:port`, the URL with `replacement` in its place).
fn reroute(url: &str, replacement: &str) -> (String, String) {
    let after_at = url.find('@').map_or_else(|| url.find("://").unwrap() + 3, |i| i + 1);
    let end = after_at + url[after_at..].find('/').unwrap();
    (url[after_at..end].to_owned(), format!("{}{replacement}{}", &url[..after_at], &url[end..]))
}

#[tokio::test]
async fn postgres_down_answers_503_and_acknowledges_nothing() {
    let Ok(base) = std::env::var(tally_store::testing::TEST_DATABASE_ENV) else {
        eprintln!("skipped: no test database");
        return;
    };
    let (target, _) = reroute(&base, "");
    let mut proxy = Proxy::start("127.0.0.1:0".parse().unwrap(), &target).await;
    let addr = proxy.addr.to_string();
    let store = tally_store::testing::postgres_via(|url| reroute(url, &addr).1).await.unwrap();
    let app = support::spawn(store).await;
    let event =
        |id: &str| json!([{"id": id, "timestamp": "2025-01-01T00:00:00Z", "organization_id": "acme", "user_id": "u1", "type": "api_call"}]);
    assert_eq!(app.post("/v1/events", event("before")).await.0, 200);

    proxy.cut();
    let resp = app.client.post(format!("{}/v1/events", app.base)).bearer_auth(&app.admin).json(&event("during")).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().get("retry-after").is_some());
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    assert_eq!(app.get("/readyz").await.0, 503);

    proxy.restore().await;
    // The pool notices its dead connections and reconnects; give it a few tries.
    let mut status = 0;
    for _ in 0..50 {
        status = app.post("/v1/events", event("during")).await.0;
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200, "the server recovers once the database is back");
    // "during" was never acknowledged, and now it is stored exactly once.
    let (_, body) = app.post("/v1/events", event("during")).await;
    assert_eq!(body["duplicates"], 1);
    assert_eq!(app.store.event_count().await.unwrap(), 2);
}
