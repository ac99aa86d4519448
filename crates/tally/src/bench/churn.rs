//! `tally bench churn`: loads subscribers and their events through the ingest path, then times
//! one day's churn report, a backfill of many days, and the high-risk list of a day through the
//! same code as `GET /v1/reports/churn`; on PostgreSQL also the same day's signals computed by
//! one SQL query over the raw events, the approach the report's pre-computation replaces.

use super::{Backends, bench_store, median, ms, pg_client};
use crate::daily::churn::ChurnReport;
use crate::daily::{self, Generate};
use crate::ingest::bulk::{BulkLoader, COMMIT_EVERY};
use clap::Args;
use jiff::civil::Date;
use jiff::{SignedDuration, Timestamp, ToSpan};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashSet;
use std::time::Instant;
use tally_domain::entities::{Plan, Subscription, SubscriptionStatus};
use tally_domain::event::ValidationContext;
use tally_domain::{OrganizationId, RawEvent};
use tally_store::{ChurnOrdering, ChurnQuery, Page, Store, Write};

#[derive(Debug, Args)]
pub struct ChurnArgs {
    /// Events to load (over the last `--days` days plus the two windows before them).
    #[arg(long, default_value_t = 2_000_000)]
    pub events: usize,
    #[arg(long, default_value_t = 2000)]
    pub organizations: usize,
    #[arg(long, default_value_t = 200_000)]
    pub users: usize,
    /// Days of the backfill.
    #[arg(long, default_value_t = 90)]
    pub days: u32,
    /// Runs of the high-risk list; the median is reported.
    #[arg(long, default_value_t = 20)]
    pub runs: usize,
    #[command(flatten)]
    pub backends: Backends,
    /// Keep the loaded stores (SQLite files in this folder, PostgreSQL schemas named after the
    /// load and its first day) and reuse them when they already hold these events.
    #[arg(long)]
    pub keep: Option<std::path::PathBuf>,
}

const CHUNK: usize = 40_000;

/// Users fade at different times: one in four stops being active somewhere in the period.
fn event_line(i: usize, args: &ChurnArgs, start: i64, span: i64, rng: &mut StdRng) -> String {
    let user = rng.random_range(0..args.users);
    let org = user % args.organizations;
    let stop = if user % 4 == 0 { span * ((user / 4) % 10) as i64 / 10 } else { span };
    let ts = Timestamp::from_second(start + rng.random_range(0..stop.max(86_400))).expect("in range");
    let (kind, extra) = match i % 10 {
        0..=2 => ("login", String::new()),
        3 => ("assignment_completed", String::new()),
        4 => ("api_call", format!(r#","properties":{{"frustration_score":{}}}"#, (user * 7 + i) % 101)),
        _ => ("api_call", String::new()),
    };
    format!(r#"{{"id":"c{i}","timestamp":"{ts}","organization_id":"org{org}","user_id":"u{user}","type":"{kind}","quantity":1{extra}}}"#)
}

async fn load(store: &dyn Store, args: &ChurnArgs, start: Timestamp) -> anyhow::Result<f64> {
    let now = Timestamp::now();
    let completions: tally_domain::UsageType = serde_json::from_value(
        serde_json::json!({"key": "assignment_completed", "name": "Assignments", "unit": "assignments", "aggregation": "count"}),
    )?;
    store.save_usage_type(&completions, Write::Replace).await?;
    let plan: Plan = serde_json::from_value(serde_json::json!({"id": "bench"}))?;
    store.save_plan(&plan, Write::Replace).await?;
    let known: HashSet<String> = store.usage_types().await?.into_iter().map(|t| t.key.to_string()).collect();
    let ctx = ValidationContext { now, known_types: &known };
    let span = now.as_second() - start.as_second();
    let started = Instant::now();
    let mut loader = BulkLoader::new(store, COMMIT_EVERY).await?;
    let mut first = 0;
    while first < args.events {
        let n = CHUNK.min(args.events - first);
        let mut rng = StdRng::seed_from_u64(first as u64);
        let events = (first..first + n)
            .map(|i| {
                RawEvent::from_json(&event_line(i, args, start.as_second(), span, &mut rng))
                    .map_err(|e| anyhow::anyhow!("{}", e.message))?
                    .validate(&ctx)
                    .map_err(|e| anyhow::anyhow!("{}", e.message))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        loader.add(events).await?;
        first += n;
    }
    loader.finish().await?;
    for o in 0..args.organizations {
        let status = match o % 20 {
            0 => SubscriptionStatus::PaymentIssue,
            1 => SubscriptionStatus::Trialing,
            _ => SubscriptionStatus::Active,
        };
        let sub = Subscription {
            id: format!("sub{o}"),
            organization_id: OrganizationId::parse(format!("org{o}"))?,
            plan_id: "bench".into(),
            status,
            current_period_start: now - SignedDuration::from_hours(24 * 20),
            current_period_end: now + SignedDuration::from_hours(24 * 10),
            trial_end: (status == SubscriptionStatus::Trialing).then(|| now + SignedDuration::from_hours(48)),
            add_ons: Default::default(),
            created_at: now,
        };
        store.save_subscription(&sub, Write::Replace).await?;
    }
    Ok(started.elapsed().as_secs_f64())
}

/// The same day's signals as one query over the raw events, as a SQL view would compute them.
const ONE_QUERY: &str = "WITH w AS (SELECT $1::timestamptz AS s, $2::timestamptz AS m, $3::timestamptz AS e) \
    SELECT u.organization_id, u.user_id, \
      max(ev.ts) AS last_active, \
      count(ev.*) FILTER (WHERE ev.ts < w.m) AS earlier, count(ev.*) FILTER (WHERE ev.ts >= w.m) AS recent, \
      count(ev.*) FILTER (WHERE ev.usage_type = 'login' AND ev.ts < w.m) AS logins_earlier, \
      count(ev.*) FILTER (WHERE ev.usage_type = 'login' AND ev.ts >= w.m) AS logins_recent, \
      count(ev.*) FILTER (WHERE ev.usage_type = 'assignment_completed' AND ev.ts < w.m) AS done_earlier, \
      count(ev.*) FILTER (WHERE ev.usage_type = 'assignment_completed' AND ev.ts >= w.m) AS done_recent, \
      avg((ev.properties ->> 'frustration_score')::float8) FILTER (WHERE jsonb_typeof(ev.properties -> 'frustration_score') = 'number') AS frustration, \
      bool_or(s.status = 'payment_issue') AS payment_issue \
    FROM w CROSS JOIN users u JOIN subscriptions s ON s.organization_id = u.organization_id AND s.status IN ('active', 'trialing', 'payment_issue') \
    LEFT JOIN events ev ON ev.organization_id = u.organization_id AND ev.user_id = u.user_id AND ev.ts >= w.s AND ev.ts < w.e \
    WHERE u.is_active AND NOT u.is_bot \
    GROUP BY u.organization_id, u.user_id";

pub async fn run(args: ChurnArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let backends = args.backends.list();
    let today = Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC).date();
    let last: Date = today.yesterday()?;
    let first = last.checked_sub(i64::from(args.days - 1).days())?;
    let start = tally_domain::time::date_start(first.checked_sub(14.days())?);
    let options = Generate { organization: None, dry_run: false, force: true };
    let report = ChurnReport { settings: Default::default() };
    println!("| backend | what | time |\n|---|---|---|");
    for (name, pg) in backends {
        // Events are dated back from the load's day, so a kept load serves only the same days.
        let label = format!("{name}-churn-{}-{}-{}-{first}", args.events, args.organizations, args.users);
        let (url, store, loaded) = bench_store(args.keep.as_deref(), dir.path(), name, pg.as_deref(), &label, args.events).await?;
        if !loaded {
            let secs = load(store.as_ref(), &args, start).await?;
            eprintln!("{name}: loaded {} events in {secs:.1} s", args.events);
        }
        // As `tally serve` does after start and every hour.
        store.refresh_statistics().await?;

        let started = Instant::now();
        let day = daily::generate(&report, store.as_ref(), &[last], &options, |_| {}).await?;
        println!(
            "| {name} | one day's churn report ({} subscribers, {} alerts opened) | {:.1} s |",
            day[0].rows,
            day[0].alerts_opened,
            started.elapsed().as_secs_f64()
        );

        let days: Vec<Date> = (0..i64::from(args.days)).map(|n| first.checked_add(n.days())).collect::<Result<_, _>>()?;
        let started = Instant::now();
        let done = daily::generate(&report, store.as_ref(), &days, &options, |_| {}).await?;
        let rows: u64 = done.iter().map(|d| d.rows).sum();
        println!("| {name} | backfill of {} days ({rows} rows) | {:.0} s |", args.days, started.elapsed().as_secs_f64());

        let mut samples = Vec::with_capacity(args.runs);
        let mut shown = 0;
        for _ in 0..args.runs {
            let q = ChurnQuery {
                date: Some(last),
                organization_id: None,
                user_id: None,
                risk_level: Some("HIGH".into()),
                min_score: None,
                ordering: ChurnOrdering::ScoreDesc,
                page: Page { limit: 50, offset: 0 },
            };
            let started = Instant::now();
            shown = store.churn_scores(&q).await?.count;
            samples.push(started.elapsed());
        }
        println!("| {name} | high-risk list of a day, page of 50 with its count ({shown} HIGH) | {:.1} ms |", ms(median(&samples)));

        // A user's history, as `GET /v1/users/{id}/churn` reads it (`u7` belongs to `org7`).
        let mut samples = Vec::with_capacity(args.runs);
        let mut dates = 0;
        for _ in 0..args.runs {
            let q = ChurnQuery {
                date: None,
                organization_id: Some(OrganizationId::parse("org7")?),
                user_id: Some("u7".into()),
                risk_level: None,
                min_score: None,
                ordering: ChurnOrdering::DateDesc,
                page: Page { limit: 100, offset: 0 },
            };
            let started = Instant::now();
            dates = store.churn_scores(&q).await?.count;
            samples.push(started.elapsed());
        }
        println!("| {name} | a user's score history with its count ({dates} days) | {:.1} ms |", ms(median(&samples)));

        if pg.is_some() {
            let client = pg_client(&url).await?;
            let end = tally_domain::time::date_start(last.tomorrow()?);
            let middle = end - SignedDuration::from_hours(24 * 7);
            let from = middle - SignedDuration::from_hours(24 * 7);
            let started = Instant::now();
            let n = client.query(ONE_QUERY, &[&from, &middle, &end]).await?.len();
            println!(
                "| {name} | reference: the same day's signals in one SQL query over raw events ({n} rows) | {:.1} s |",
                started.elapsed().as_secs_f64()
            );
        }
    }
    Ok(())
}
