//! `tally reports rebuild user-reports`: killed half-way with `kill -9`, refused while another
//! process holds the lease, resumed from its cursor, and ending with exactly the live figures
//! even where the kept ones were damaged.
//! `tally jobs run ledger` killed half-way and run again: the same ledger as an uninterrupted run.

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
    // Damage what the report keeps per user, as a bug or a restore from an old backup might.
    tally_store::testing::execute_raw(
        &t.url,
        "UPDATE user_usage SET sum = sum + 1000, count = count + 1 WHERE usage_type <> 'login'; \
         DELETE FROM user_usage WHERE usage_type = 'login'; \
         INSERT INTO user_usage_period (organization_id, user_id, usage_type, count, sum, min, max, last_ts, last_value, \
           llm_successes, llm_failures, input_tokens, output_tokens, cost_nanos, latency_ms_sum) \
         SELECT organization_id, user_id, usage_type, count, sum, min, max, last_ts, last_value, llm_successes, llm_failures, \
           input_tokens, output_tokens, cost_nanos, latency_ms_sum FROM user_usage WHERE true ON CONFLICT DO NOTHING; \
         UPDATE users SET last_activity = NULL WHERE user_id < 'u5';",
    )
    .await
    .unwrap();
    assert_ne!(store.aggregates_fingerprint().await.unwrap(), live);

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

/// Audit events of one organization on a seat plan: members joining day after day.
async fn seat_history(store: &Arc<dyn Store>, n: usize) {
    use tally_domain::entities::{Organization, Plan, Subscription, SubscriptionStatus};
    use tally_domain::seats::audit::{AuditEvent, AuditEventType};
    use tally_domain::{OrganizationId, Role, UserId};
    let org = OrganizationId::parse("seats").unwrap();
    let start: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
    let day = jiff::SignedDuration::from_hours(24);
    store.save_organization(&Organization::registered(org.clone(), start), tally_store::Write::Replace).await.unwrap();
    let plan: Plan = serde_json::from_value(serde_json::json!({"id": "seat-plan", "seats": {"price_per_seat_monthly": "8"}})).unwrap();
    store.save_plan(&plan, tally_store::Write::Replace).await.unwrap();
    let subscription = Subscription {
        id: "seat-sub".into(),
        organization_id: org.clone(),
        plan_id: "seat-plan".into(),
        status: SubscriptionStatus::Active,
        current_period_start: start,
        current_period_end: start + day * 31,
        trial_end: None,
        add_ons: Default::default(),
        created_at: start,
    };
    store.save_subscription(&subscription, tally_store::Write::Replace).await.unwrap();
    let events: Vec<AuditEvent> = (0..n)
        .map(|i| AuditEvent {
            organization_id: org.clone(),
            id: format!("a{i:05}"),
            event_time: start + jiff::SignedDuration::from_secs(i as i64 * 60),
            event_type: AuditEventType::UserCreated,
            user_id: Some(UserId::parse(format!("u{i}")).unwrap()),
            role: Some(Role::Member),
            old_role: None,
            new_role: None,
            is_bot: false,
            plan_id: None,
            role_counts: None,
            backfilled: false,
            server_id: None,
        })
        .collect();
    store.record_audit_events(events, start + day * 30).await.unwrap();
}

async fn ledger_rows(store: &Arc<dyn Store>) -> Vec<(u64, u64, bool, String)> {
    let org = tally_domain::OrganizationId::parse("seats").unwrap();
    let mut rows: Vec<_> = tally::series::every(|page| store.ledger(&org, page))
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.licenses, e.licenses_at_next_renewal, e.is_renewal, e.audit_id))
        .collect();
    rows.sort_by(|a, b| a.3.cmp(&b.3));
    rows
}

/// `tally jobs run ledger` killed half-way and run again writes the same ledger as one run
/// that was never interrupted: one row per cause, none twice, none missing.
async fn killed_ledger_job_resumes_to_the_same_ledger(t: TestStore, reference: TestStore) {
    for store in [&t.store, &reference.store] {
        seat_history(store, 3000).await;
    }
    let run = |url: &str, batch: &str| {
        let mut cmd = Command::new(BIN);
        cmd.args(["--database-url", url, "jobs", "run", "ledger", "--batch", batch, "--lease-seconds", "1"]).env("TALLY_LOG", "warn");
        cmd
    };
    assert!(run(&reference.url, "10000").output().unwrap().status.success());

    let mut child = run(&t.url, "25").stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let started = Instant::now();
    loop {
        let runs = t.store.job_runs("ledger").await.unwrap();
        if runs.first().is_some_and(|r| r.processed >= 100) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "the ledger job did not start: {runs:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let halfway = t.store.job_runs("ledger").await.unwrap();
    assert!(halfway[0].status == "in_progress" && halfway[0].processed < 3000, "killed too late: {:?}", halfway[0]);

    tokio::time::sleep(Duration::from_millis(1200)).await;
    let rerun = run(&t.url, "10000").output().unwrap();
    assert!(rerun.status.success(), "{}", String::from_utf8_lossy(&rerun.stderr));
    let (resumed, whole) = (ledger_rows(&t.store).await, ledger_rows(&reference.store).await);
    assert!(!whole.is_empty());
    assert_eq!(resumed, whole, "the interrupted ledger differs from the uninterrupted one");
    let causes: std::collections::HashSet<&String> = resumed.iter().map(|r| &r.3).collect();
    assert_eq!(causes.len(), resumed.len(), "a cause appears twice");
}

#[tokio::test]
async fn sqlite_ledger_job_survives_kill_9() {
    killed_ledger_job_resumes_to_the_same_ledger(tally_store::testing::sqlite().await, tally_store::testing::sqlite().await).await;
}

#[tokio::test]
async fn postgres_ledger_job_survives_kill_9() {
    let (Some(t), Some(reference)) = (tally_store::testing::postgres().await, tally_store::testing::postgres().await) else {
        eprintln!("skipped: {} is not set", tally_store::testing::TEST_DATABASE_ENV);
        return;
    };
    killed_ledger_job_resumes_to_the_same_ledger(t, reference).await;
}
