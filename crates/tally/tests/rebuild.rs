//! `tally reports rebuild user-reports`: killed half-way with `kill -9`, refused while another
//! process holds the lease, resumed from its cursor, and ending with exactly the live figures.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tally_domain::event::ValidationContext;
use tally_domain::{RawEvent, UsageEvent};
use tally_store::Store;
use tally_store::testing::TestStore;

const BIN: &str = env!("CARGO_BIN_EXE_tally");

fn rebuild(url: &str, extra: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(["--database-url", url, "reports", "rebuild", "user-reports", "--lease-seconds", "1"]).args(extra).env("TALLY_LOG", "warn");
    cmd
}

fn events(n: usize) -> Vec<UsageEvent> {
    let types = ["api_call", "submission", "storage_bytes", "llm_request", "login"].into_iter().map(String::from).collect();
    let ctx = ValidationContext { now: jiff::Timestamp::now(), known_types: &types };
    (0..n)
        .map(|i| {
            let json = format!(
                r#"{{"id":"e{i}","timestamp":"2025-01-0{}T{:02}:00:00Z","organization_id":"org{:02}","user_id":"u{}","type":"{}","quantity":{},"cost":"0.01","status":"success"}}"#,
                1 + i % 9,
                i % 24,
                i % 30,
                i % 97,
                ["api_call", "submission", "storage_bytes", "llm_request", "login"][i % 5],
                1 + i % 13
            );
            RawEvent::from_json(&json).unwrap().validate(&ctx).unwrap()
        })
        .collect()
}

async fn wait_for(store: &Arc<dyn Store>, what: &str, done: impl Fn(&[tally_store::JobRun]) -> bool) -> Vec<tally_store::JobRun> {
    let started = Instant::now();
    loop {
        let runs = store.job_runs("user-reports").await.unwrap();
        if done(&runs) {
            return runs;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "timed out waiting for {what}: {runs:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn killed_rebuild_resumes_to_the_live_figures(t: TestStore) {
    let store = t.store.clone();
    store.record_events(events(3000)).await.unwrap();
    let live = store.aggregates_fingerprint().await.unwrap();

    // Slowly, one organization per batch, so it can be caught half-way.
    let mut child = rebuild(&t.url, &["--organizations-per-batch", "1", "--throttle-ms", "150"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let runs = wait_for(&store, "a first batch", |runs| runs.first().is_some_and(|r| r.processed > 0)).await;
    let run_id = runs[0].id.clone();

    // Another process is refused while the lease is held.
    let second = rebuild(&t.url, &[]).output().unwrap();
    assert!(!second.status.success());
    assert!(String::from_utf8_lossy(&second.stderr).contains("in progress"), "{}", String::from_utf8_lossy(&second.stderr));

    child.kill().unwrap();
    child.wait().unwrap();
    let runs = store.job_runs("user-reports").await.unwrap();
    assert_eq!(runs.len(), 1);
    let halfway = &runs[0];
    assert_eq!(halfway.status, "in_progress");
    assert!(halfway.processed > 0 && halfway.processed < 3000, "{halfway:?}");
    assert!(halfway.cursor.is_some());

    // Once the lease lapses, the next run resumes the same one from its cursor.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let out = rebuild(&t.url, &[]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&run_id) && stdout.contains("completed"), "{stdout}");
    let runs = store.job_runs("user-reports").await.unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!((runs[0].status.as_str(), runs[0].processed), ("completed", 3000));
    assert!(runs[0].finished_at.is_some());
    assert_eq!(store.aggregates_fingerprint().await.unwrap(), live);

    // A new run starts once the last one is complete.
    let out = rebuild(&t.url, &[]).output().unwrap();
    assert!(out.status.success());
    assert_eq!(store.job_runs("user-reports").await.unwrap().len(), 2);
    assert_eq!(store.aggregates_fingerprint().await.unwrap(), live);
}

#[tokio::test]
async fn sqlite_rebuild_survives_kill_9() {
    killed_rebuild_resumes_to_the_live_figures(tally_store::testing::sqlite().await).await;
}

#[tokio::test]
async fn postgres_rebuild_survives_kill_9() {
    let Some(t) = tally_store::testing::postgres().await else {
        eprintln!("skipped: {} is not set", tally_store::testing::TEST_DATABASE_ENV);
        return;
    };
    killed_rebuild_resumes_to_the_live_figures(t).await;
}
