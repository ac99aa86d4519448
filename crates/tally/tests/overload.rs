//! Overload: beyond the requests it serves at once, the server answers 503 with `Retry-After`
//! at once (nothing stored for those), serves the rest, still answers its health probes, and
//! serves normally again after.

mod support;

use serde_json::{Value, json};

#[tokio::test]
async fn excess_requests_are_shed_with_retry_after() {
    let app = support::spawn_with(tally_store::testing::sqlite().await, |c| {
        c.max_concurrent_requests = 1;
        c.max_queue_wait = std::time::Duration::ZERO;
    })
    .await;
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

/// One key beyond its rate gets 429 with `Retry-After` and nothing stored for the refused
/// requests; another key is not held back by it; after the wait the key gets through again.
#[tokio::test]
async fn a_key_beyond_its_rate_gets_429_and_others_do_not() {
    let app = support::spawn_with(tally_store::testing::sqlite().await, |c| {
        c.rate_limit = tally::config::RateLimit { per_second: 2, burst: 3 };
    })
    .await;
    let event = |n: usize| json!([{"id": format!("r{n}"), "timestamp": "2025-06-01T12:00:00Z", "organization_id": "acme", "user_id": "u1", "type": "api_call"}]);
    let mut statuses = vec![];
    let mut retry_after = None;
    for n in 0..6 {
        let answer = app.client.post(format!("{}/v1/events", app.base)).bearer_auth(&app.admin).json(&event(n)).send().await.unwrap();
        statuses.push(answer.status().as_u16());
        if answer.status() == 429 {
            retry_after = Some(answer.headers()["retry-after"].to_str().unwrap().parse::<u64>().unwrap());
            assert_eq!(answer.headers()["content-type"], "application/problem+json");
            let problem: Value = answer.json().await.unwrap();
            assert_eq!(problem["type"], "urn:tally:problem:rate-limited", "{problem}");
        }
    }
    assert_eq!(&statuses[..3], &[200, 200, 200], "the burst passes: {statuses:?}");
    assert!(statuses[3..].contains(&429), "beyond the burst: {statuses:?}");
    let accepted = statuses.iter().filter(|s| **s == 200).count() as u64;
    assert_eq!(app.store.event_count().await.unwrap(), accepted, "refused requests store nothing");

    let other = app.key("org:acme").await;
    let (status, _) = app.request("GET", "/v1/organizations/acme", Some(&other), None).await;
    assert_eq!(status, 200, "another key has its own bucket");

    tokio::time::sleep(std::time::Duration::from_secs(retry_after.unwrap())).await;
    let (status, _) = app.post("/v1/events", event(99)).await;
    assert_eq!(status, 200, "after Retry-After the key gets through");
}

/// Oversized requests are refused before any work: a body beyond `max_body_bytes` with 413 and
/// a problem body, headers beyond the server's limits with 431; the server serves on.
#[tokio::test]
async fn oversized_bodies_and_headers_are_refused() {
    let app = support::spawn_with(tally_store::testing::sqlite().await, |c| c.max_body_bytes = 64 * 1024).await;
    let big = format!("[{}]", vec![r#"{"id":"x","type":"api_call"}"#; 4000].join(","));
    let (status, headers, problem) = app.raw_post("/v1/events", "application/json", big).await;
    assert_eq!(status, 413, "{problem}");
    assert_eq!(headers["content-type"], "application/problem+json");
    assert_eq!(problem["type"], "urn:tally:problem:payload-too-large");

    let huge = "x".repeat(1024 * 1024);
    let answer = app.client.get(format!("{}/v1/organizations", app.base)).bearer_auth(&app.admin).header("x-padding", huge).send().await;
    assert_eq!(answer.unwrap().status().as_u16(), 431);
    let mut many = app.client.get(format!("{}/v1/organizations", app.base)).bearer_auth(&app.admin);
    for n in 0..200 {
        many = many.header(format!("x-header-{n}"), "1");
    }
    let answer = many.send().await;
    assert_eq!(answer.unwrap().status().as_u16(), 431);

    let (status, _) = app.get("/v1/organizations").await;
    assert_eq!(status, 200, "serves on after refusing them");
}
