//! Overload: beyond the requests it serves at once, the server answers 503 with `Retry-After`
//! at once (nothing stored for those), serves the rest, still answers its health probes, and
//! serves normally again after.

mod support;

use serde_json::{Value, json};

#[tokio::test]
async fn excess_requests_are_shed_with_retry_after() {
    let app = support::spawn_with(tally_store::testing::sqlite().await, 1).await;
    let batch = |n: usize| -> Value {
        (0..2000)
            .map(|i| {
                json!({"id": format!("b{n}-{i}"), "timestamp": "2025-06-01T12:00:00Z", "organization_id": "acme",
                            "user_id": format!("u{}", i % 40), "type": "api_call"})
            })
            .collect()
    };
    let sends = (0..24).map(|n| {
        let request = app.client.post(format!("{}/v1/events", app.base)).bearer_auth(&app.admin).json(&batch(n));
        async move { request.send().await.unwrap() }
    });
    let probes = (0..8).map(|_| {
        let request = app.client.get(format!("{}/healthz", app.base));
        async move { request.send().await.unwrap().status().as_u16() }
    });
    let (answers, probes) = tokio::join!(futures_util::future::join_all(sends), futures_util::future::join_all(probes));
    assert!(probes.iter().all(|s| *s == 200), "health probes are answered at capacity too: {probes:?}");
    let mut accepted = 0;
    let mut shed = 0;
    for answer in answers {
        match answer.status().as_u16() {
            200 => accepted += 2000,
            503 => {
                assert_eq!(answer.headers()["retry-after"], "1");
                assert_eq!(answer.headers()["content-type"], "application/problem+json");
                let problem: Value = answer.json().await.unwrap();
                assert_eq!(problem["type"], "urn:tally:problem:overloaded", "{problem}");
                shed += 1;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(shed > 0, "24 requests at once against a limit of 1 shed none");
    assert!(accepted > 0);
    // What was shed was not stored; what was answered 200 was.
    assert_eq!(app.store.event_count().await.unwrap(), accepted as u64);
    let (status, _) = app.post("/v1/events", batch(99)).await;
    assert_eq!(status, 200, "serves normally once the burst is over");
}
