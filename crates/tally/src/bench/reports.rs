//! `tally bench reports`: loads users and events through the real ingest path, then times what
//! the user-report issue names — a filtered, ordered page (with and without its count), a full
//! CSV export, a full rebuild — and, on PostgreSQL, a `REFRESH MATERIALIZED VIEW` of an
//! equivalent per-user report over the raw events, the approach Tally replaces.

use super::{Backends, bench_store, median, ms, pg_client};
use crate::ingest::bulk::{BulkLoader, COMMIT_EVERY};
use crate::jobs::{self, RebuildOptions};
use crate::reports;
use clap::Args;
use jiff::{SignedDuration, Timestamp};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};
use tally_domain::entities::{Plan, Subscription, SubscriptionStatus};
use tally_domain::event::ValidationContext;
use tally_domain::report::{Catalog, filter};
use tally_domain::{OrganizationId, RawEvent};
use tally_store::report::ReportQuery;
use tally_store::{Store, Write};

#[derive(Debug, Args)]
pub struct ReportsArgs {
    /// Events to load (over the last 45 days).
    #[arg(long, default_value_t = 20_000_000)]
    pub events: usize,
    #[arg(long, default_value_t = 2000)]
    pub organizations: usize,
    #[arg(long, default_value_t = 200_000)]
    pub users: usize,
    /// Runs of each page query; the median is reported.
    #[arg(long, default_value_t = 20)]
    pub runs: usize,
    #[command(flatten)]
    pub backends: Backends,
    /// Keep the loaded stores (SQLite files in this folder, PostgreSQL schemas named after the
    /// load) and reuse them when they already hold these events, instead of loading afresh.
    #[arg(long)]
    pub keep: Option<std::path::PathBuf>,
    /// Time the page, count and export only (no rebuild, no materialized view).
    #[arg(long)]
    pub queries_only: bool,
}

const CHUNK: usize = 40_000;
const Q: &str = "username__icontains:demo AND service_usage__submission__current_period__gte:10";
const ORDERING: &str = "-service_usage__llm__current_period__cost";

/// One user in ten has "demo" in its name; users are spread over organizations.
fn user_of(i: usize, args: &ReportsArgs) -> (String, String) {
    let user = i % args.users;
    let name = if user.is_multiple_of(10) { format!("demo{user}") } else { format!("u{user}") };
    (format!("org{}", user % args.organizations), name)
}

fn event_line(i: usize, args: &ReportsArgs, start: i64, rng: &mut StdRng) -> String {
    let (org, user) = user_of(rng.random_range(0..args.users), args);
    let ts = Timestamp::from_second(start + rng.random_range(0..45 * 86_400)).expect("in range");
    if i.is_multiple_of(5) {
        format!(
            r#"{{"id":"r{i}","timestamp":"{ts}","organization_id":"{org}","user_id":"{user}","type":"llm_request","status":"success","input_tokens":{},"output_tokens":{},"cost":"0.00{}"}}"#,
            100 + i % 900,
            i % 300,
            1 + i % 97
        )
    } else {
        let ty = ["api_call", "submission", "storage_bytes", "submission"][i % 4];
        format!(
            r#"{{"id":"r{i}","timestamp":"{ts}","organization_id":"{org}","user_id":"{user}","type":"{ty}","quantity":{}}}"#,
            1 + i % 20
        )
    }
}

async fn load(store: &dyn Store, args: &ReportsArgs) -> anyhow::Result<f64> {
    let now = Timestamp::now();
    let plan: Plan = serde_json::from_value(
        serde_json::json!({"id": "bench", "usage": {"submission": {"limit": 500}, "llm_request": {"limit": 2000}}}),
    )?;
    store.save_plan(&plan, Write::Replace).await?;
    let known: HashSet<String> = store.usage_types().await?.into_iter().map(|t| t.key.to_string()).collect();
    let ctx = ValidationContext { now, known_types: &known };
    let start = now.as_second() - 45 * 86_400;
    let started = Instant::now();
    let mut loader = BulkLoader::new(store, COMMIT_EVERY).await?;
    let mut first = 0;
    while first < args.events {
        let n = CHUNK.min(args.events - first);
        let mut rng = StdRng::seed_from_u64(first as u64);
        let events = (first..first + n)
            .map(|i| {
                RawEvent::from_json(&event_line(i, args, start, &mut rng))
                    .map_err(|e| anyhow::anyhow!("{}", e.message))?
                    .validate(&ctx)
                    .map_err(|e| anyhow::anyhow!("{}", e.message))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        loader.add(events).await?;
        first += n;
    }
    loader.finish().await?;
    // Every other organization has a subscription whose period began 15 days ago.
    for o in (0..args.organizations).step_by(2) {
        let sub = Subscription {
            id: format!("sub{o}"),
            organization_id: OrganizationId::parse(format!("org{o}"))?,
            plan_id: "bench".into(),
            status: SubscriptionStatus::Active,
            current_period_start: now - SignedDuration::from_hours(15 * 24),
            current_period_end: now + SignedDuration::from_hours(15 * 24),
            trial_end: None,
            add_ons: Default::default(),
            created_at: now,
        };
        store.save_subscription(&sub, Write::Replace).await?;
    }
    Ok(started.elapsed().as_secs_f64())
}

async fn query(store: &dyn Store, count: bool, limit: u32, offset: u64) -> anyhow::Result<ReportQuery> {
    let types = store.usage_types().await?;
    let catalog = Catalog::new(types.iter().map(|t| t.key.to_string()).collect());
    let filter = filter(Q, &catalog).map_err(|e| anyhow::anyhow!("{}", e.message))?;
    let ordering = catalog.ordering(ORDERING).map_err(|e| anyhow::anyhow!("{}", e.message))?;
    Ok(ReportQuery { filter, ordering, limit, offset, count, after: None, now: Timestamp::now() })
}

/// A page as the HTTP handler makes it: the users, then their records.
async fn page(store: &dyn Store, count: bool) -> anyhow::Result<(Duration, usize, Option<u64>)> {
    let q = query(store, count, 50, 0).await?;
    let started = Instant::now();
    let keys = store.report_users(&q).await?;
    let rows = store.report_rows(&keys.users, q.now).await?;
    Ok((started.elapsed(), rows.len(), keys.count))
}

/// Every user, as `format=csv` writes them: key order, a page at a time.
async fn export(store: std::sync::Arc<dyn Store>) -> anyhow::Result<(Duration, usize)> {
    let types = store.usage_types().await?;
    let plans: HashMap<String, Plan> = crate::series::every(|p| store.plans(p)).await?.into_iter().map(|p| (p.id.clone(), p)).collect();
    let columns = reports::CsvColumns::new(&types);
    let mut q = query(store.as_ref(), false, reports::EXPORT_PAGE, 0).await?;
    q.filter = None;
    q.ordering.clear();
    let started = Instant::now();
    let (mut rows_out, mut bytes) = (0, 0);
    let mut pages = std::pin::pin!(reports::Export::new(store, q).prefetched());
    while let Some(rows) = futures_util::StreamExt::next(&mut pages).await.transpose()? {
        let mut w = csv::Writer::from_writer(Vec::new());
        for row in &rows {
            w.write_record(columns.row(&reports::record(row, &types, &plans)))?;
        }
        bytes += w.into_inner().map_err(|e| anyhow::anyhow!("{e}"))?.len();
        rows_out += rows.len();
    }
    anyhow::ensure!(bytes > 0, "the export wrote nothing");
    Ok((started.elapsed(), rows_out))
}

/// The report as one materialized view over raw events, as the product Tally replaces does it.
const MATERIALIZED_VIEW: &str = "DROP MATERIALIZED VIEW IF EXISTS bench_user_report; CREATE MATERIALIZED VIEW bench_user_report AS \
    WITH periods AS (SELECT o.organization_id, COALESCE(s.current_period_start, date_trunc('month', now())) AS ps, \
                            COALESCE(s.current_period_end, date_trunc('month', now()) + interval '1 month') AS pe \
                     FROM organizations o LEFT JOIN subscriptions s ON s.organization_id = o.organization_id AND s.status = 'active') \
    SELECT u.organization_id, u.user_id, u.username, \
      sum(e.quantity) FILTER (WHERE e.usage_type = 'submission') AS submission_all_time, \
      sum(e.quantity) FILTER (WHERE e.usage_type = 'submission' AND e.ts >= p.ps AND e.ts < p.pe) AS submission_current, \
      sum(e.quantity) FILTER (WHERE e.usage_type = 'api_call') AS api_call_all_time, \
      sum(e.quantity) FILTER (WHERE e.usage_type = 'api_call' AND e.ts >= p.ps AND e.ts < p.pe) AS api_call_current, \
      max(e.quantity) FILTER (WHERE e.usage_type = 'storage_bytes') AS storage, \
      count(*) FILTER (WHERE e.usage_type = 'llm_request') AS llm_requests, \
      sum(e.cost_nanos) FILTER (WHERE e.usage_type = 'llm_request' AND e.ts >= p.ps AND e.ts < p.pe) AS llm_cost_current \
    FROM users u JOIN periods p ON p.organization_id = u.organization_id \
    LEFT JOIN events e ON e.organization_id = u.organization_id AND e.user_id = u.user_id \
    GROUP BY u.organization_id, u.user_id, u.username";

pub async fn run(args: ReportsArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let backends = args.backends.list();
    println!("| backend | what | time |\n|---|---|---|");
    for (name, pg) in backends {
        let label = format!("{name}-reports-{}-{}-{}", args.events, args.organizations, args.users);
        let (url, store, loaded) = bench_store(args.keep.as_deref(), dir.path(), name, pg.as_deref(), &label, args.events).await?;
        if !loaded {
            let secs = load(store.as_ref(), &args).await?;
            eprintln!("{name}: loaded {} events in {secs:.1} s", args.events);
        }
        // As `tally serve` does after start and every hour.
        store.refresh_statistics().await?;
        let mut without = Vec::new();
        let mut with = Vec::new();
        let mut shown = (0, None);
        for _ in 0..args.runs {
            let (d, rows, _) = page(store.as_ref(), false).await?;
            without.push(d);
            let (d, _, count) = page(store.as_ref(), true).await?;
            with.push(d);
            shown = (rows, count);
        }
        println!("| {name} | page of 50: `{Q}`, ordered by `{ORDERING}` ({} rows) | {:.1} ms |", shown.0, ms(median(&without)));
        println!("| {name} | the same with `count` ({} matching) | {:.1} ms |", shown.1.unwrap_or_default(), ms(median(&with)));
        let (d, rows) = export(store.clone()).await?;
        println!("| {name} | full CSV export ({rows} rows) | {:.2} s |", d.as_secs_f64());
        if args.queries_only {
            continue;
        }
        let started = Instant::now();
        let run = jobs::rebuild_user_reports(store.as_ref(), RebuildOptions::default(), |_| {}).await?;
        println!("| {name} | full rebuild ({} events) | {:.1} s |", run.processed, started.elapsed().as_secs_f64());
        if pg.is_some() {
            let client = pg_client(&url).await?;
            client.batch_execute(MATERIALIZED_VIEW).await?;
            let started = Instant::now();
            client.batch_execute("REFRESH MATERIALIZED VIEW bench_user_report").await?;
            println!(
                "| {name} | reference: `REFRESH MATERIALIZED VIEW` of an equivalent per-user report | {:.1} s |",
                started.elapsed().as_secs_f64()
            );
        }
    }
    Ok(())
}
