//! `tally bench seats`: what the seats issue names — a self-hosted server's push of 10,000 audit
//! rows (parsed and stored as the handler does), the seat count at an arbitrary moment for an
//! organization with 100,000 audit rows, and the ledger job over a million unprocessed rows.

use super::{Backends, fresh_url, median, ms};
use crate::seats::{self, LedgerOptions};
use clap::Args;
use jiff::{SignedDuration, Timestamp};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use std::time::Instant;
use tally_domain::entities::{Plan, Subscription, SubscriptionStatus};
use tally_domain::seats::RoleCounts;
use tally_domain::seats::audit::{AuditEvent, AuditEventType};
use tally_domain::seats::remote;
use tally_domain::{OrganizationId, Role, UserId};
use tally_store::{Store, Write};

#[derive(Debug, Args)]
pub struct SeatsArgs {
    /// Audit rows in one server push.
    #[arg(long, default_value_t = 10_000)]
    pub push_rows: usize,
    /// Audit rows of the organization whose seat count is asked.
    #[arg(long, default_value_t = 100_000)]
    pub organization_rows: usize,
    /// Unprocessed audit rows for the ledger job, over `--organizations` subscribed organizations.
    #[arg(long, default_value_t = 1_000_000)]
    pub ledger_rows: usize,
    #[arg(long, default_value_t = 1000)]
    pub organizations: usize,
    /// Seat-count queries; the median is reported.
    #[arg(long, default_value_t = 200)]
    pub runs: usize,
    #[command(flatten)]
    pub backends: Backends,
}

const DAYS: i64 = 60;

fn counts(members: u64, guests: u64) -> RoleCounts {
    RoleCounts::new([(Role::Owner, 1), (Role::Member, members), (Role::Guest, guests)], 0)
}

/// Row `i` of an organization's history: users join and leave, counts drift.
fn audit_row(org: &OrganizationId, i: usize, start: Timestamp, span: i64, rng: &mut StdRng) -> AuditEvent {
    let members = 20 + (i % 13) as u64;
    AuditEvent {
        organization_id: org.clone(),
        id: format!("a{i}"),
        event_time: start + SignedDuration::from_secs(rng.random_range(0..span)),
        event_type: if i % 3 == 2 { AuditEventType::UserDeactivated } else { AuditEventType::UserCreated },
        user_id: Some(UserId::parse(format!("{org}-u{}", i % 500)).expect("valid id")),
        role: Some(Role::Member),
        old_role: None,
        new_role: None,
        is_bot: false,
        plan_id: None,
        role_counts: Some(counts(members, (i % 11) as u64)),
        backfilled: false,
        server_id: None,
    }
}

async fn load_rows(store: &dyn Store, rows: impl Iterator<Item = AuditEvent>) -> anyhow::Result<()> {
    let mut batch = Vec::with_capacity(10_000);
    for row in rows {
        batch.push(row);
        if batch.len() == 10_000 {
            store.record_audit_events(std::mem::take(&mut batch), Timestamp::now()).await?;
        }
    }
    if !batch.is_empty() {
        store.record_audit_events(batch, Timestamp::now()).await?;
    }
    Ok(())
}

fn push_payload(rows: usize, start: Timestamp) -> Value {
    let realms: Vec<Value> =
        (1..=10).map(|r| json!({"id": r, "uuid": format!("realm-{r}"), "name": format!("Realm {r}"), "deactivated": false})).collect();
    let audit: Vec<Value> = (0..rows)
        .map(|i| {
            let extra = json!({"10": {"11": {"100": 1, "400": 20 + i % 9, "600": i % 4}, "12": 2}});
            json!({"id": i + 1, "realm_id": 1 + i % 10, "event_time": (start + SignedDuration::from_secs(i as i64 * 60)).to_string(),
                   "event_type": 101, "backfilled": false, "extra_data": extra.to_string()})
        })
        .collect();
    json!({"realm_counts": [], "installation_counts": [], "realms": realms, "audit_log_rows": audit})
}

pub async fn run(args: SeatsArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let backends = args.backends.list();
    let now = Timestamp::now();
    let start = now - SignedDuration::from_hours(24 * DAYS);
    println!("| backend | what | time |\n|---|---|---|");
    for (name, pg) in backends {
        let url = fresh_url(dir.path(), name, pg.as_deref(), "seats").await?;
        let store = tally_store::open(&url).await?;

        // A push: parsed and stored in one transaction, as POST /v1/remote/analytics does.
        let (server, _) = seats::register_server(store.as_ref(), "bench.example", "ops@bench.example", None).await?;
        let body = serde_json::to_vec(&push_payload(args.push_rows, start))?;
        let started = Instant::now();
        let value: Value = serde_json::from_slice(&body)?;
        let push = remote::parse(&value, &server.id, Timestamp::now())?;
        let outcome = store.record_push(&server, push, Timestamp::now()).await?;
        println!(
            "| {name} | push of {} audit rows ({} KiB JSON): parse + store | {:.0} ms |",
            outcome.audit_log_rows.stored,
            body.len() / 1024,
            ms(started.elapsed())
        );

        // The seat count at arbitrary moments of a long history.
        let big = OrganizationId::parse("big")?;
        let mut rng = StdRng::seed_from_u64(7);
        let history: Vec<AuditEvent> = (0..args.organization_rows).map(|i| audit_row(&big, i, start, DAYS * 86_400, &mut rng)).collect();
        load_rows(store.as_ref(), history.into_iter()).await?;
        let licensee = seats::licensee(store.as_ref(), &big).await?;
        let mut samples = Vec::with_capacity(args.runs);
        for _ in 0..args.runs {
            let at = start + SignedDuration::from_secs(rng.random_range(0..DAYS * 86_400));
            let started = Instant::now();
            let count = seats::seats_at(store.as_ref(), &licensee, at).await?;
            samples.push(started.elapsed());
            anyhow::ensure!(count.source.is_some(), "no audit row before {at}");
        }
        println!(
            "| {name} | seat count at a random moment, {} audit rows (median of {}) | {:.2} ms |",
            args.organization_rows,
            args.runs,
            ms(median(&samples))
        );

        // The ledger job over every unprocessed row, most of them of subscribed organizations.
        let plan: Plan = serde_json::from_value(
            json!({"id": "seats", "seats": {"free_seats": 5, "price_per_seat_monthly": "6", "minimum_licenses": 10, "guest_seat_ratio": 5}}),
        )?;
        store.save_plan(&plan, Write::Replace).await?;
        let per_org = args.ledger_rows.saturating_sub(args.organization_rows + args.push_rows) / args.organizations.max(1);
        let load_started = Instant::now();
        for o in 0..args.organizations {
            let org = OrganizationId::parse(format!("org{o}"))?;
            let sub = Subscription {
                id: format!("sub{o}"),
                organization_id: org.clone(),
                plan_id: "seats".into(),
                status: SubscriptionStatus::Active,
                current_period_start: now - SignedDuration::from_hours(24 * 25),
                current_period_end: now + SignedDuration::from_hours(24 * 5),
                trial_end: None,
                add_ons: Default::default(),
                created_at: now,
            };
            store.save_subscription(&sub, Write::Replace).await?;
            let mut rng = StdRng::seed_from_u64(o as u64);
            let rows: Vec<AuditEvent> = (0..per_org).map(|i| audit_row(&org, i, start, DAYS * 86_400, &mut rng)).collect();
            load_rows(store.as_ref(), rows.into_iter()).await?;
        }
        eprintln!("{name}: loaded {} audit rows in {:.1} s", per_org * args.organizations, load_started.elapsed().as_secs_f64());
        let started = Instant::now();
        let run = seats::run_ledger(store.as_ref(), LedgerOptions::default(), |_| {}).await?;
        let elapsed = started.elapsed();
        let ledger_rows = store.ledger(&OrganizationId::parse("org0")?, tally_store::Page { limit: 1, offset: 0 }).await?.count;
        println!(
            "| {name} | ledger job over {} unprocessed audit rows ({} organizations on a plan; org0's ledger: {ledger_rows} rows) | {:.1} s |",
            run.processed,
            args.organizations,
            elapsed.as_secs_f64()
        );
    }
    Ok(())
}
