//! `tally bench series`: loads generated events through the real ingest path, then times the
//! usage series queries the usage issue names, and PostgreSQL answering the same questions with
//! `GROUP BY date_trunc(…)` over the raw events table (indexed on organization and time).

use super::{Backends, bench_store, generate_chunk, median, ms, pg_client};
use crate::ingest;
use crate::ingest::bulk::{BulkLoader, COMMIT_EVERY};
use crate::series::{self, Measure, SeriesParams};
use clap::Args;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tally_domain::event::ValidationContext;
use tally_store::Store;

#[derive(Debug, Args)]
pub struct SeriesArgs {
    /// Events to load (over the last 90 days).
    #[arg(long, default_value_t = 20_000_000)]
    pub events: usize,
    #[arg(long, default_value_t = 2000)]
    pub organizations: usize,
    #[arg(long, default_value_t = 200_000)]
    pub users: usize,
    /// Runs of each query (a different organization each time); the median is reported.
    #[arg(long, default_value_t = 50)]
    pub runs: usize,
    #[command(flatten)]
    pub backends: Backends,
    /// Keep the loaded stores (SQLite files in this folder, PostgreSQL schemas named after the
    /// load) and reuse them when they already hold these events, instead of loading afresh.
    #[arg(long)]
    pub keep: Option<std::path::PathBuf>,
}

const CHUNK: usize = 40_000;

/// The three queries: (label, query parameters; `{org}` is replaced per run).
const QUERIES: [(&str, &str); 3] = [
    ("one organization, daily, one usage type, 30 days", "organization_id={org}&usage_type=submission&interval=day&date_from=-30d"),
    ("one organization, weekly by type and team, 90 days", "organization_id={org}&breakdowns=type,team&interval=week&date_from=-90d"),
    ("all organizations, monthly by type, 90 days", "breakdowns=type&interval=month&date_from=-90d"),
];

/// The same questions in plain SQL over raw events, for the PostgreSQL reference.
const REFERENCE: [&str; 3] = [
    "SELECT date_trunc('day', ts AT TIME ZONE 'UTC') AS d, sum(quantity) FROM events \
     WHERE organization_id = $1 AND usage_type = 'submission' AND ts >= now() - interval '30 days' GROUP BY d",
    "SELECT date_trunc('week', ts AT TIME ZONE 'UTC') AS w, usage_type, team_id, sum(quantity) FROM events \
     WHERE organization_id = $1 AND ts >= now() - interval '90 days' GROUP BY w, usage_type, team_id",
    "SELECT date_trunc('month', ts AT TIME ZONE 'UTC') AS m, usage_type, sum(quantity) FROM events \
     WHERE ts >= now() - interval '90 days' AND $1::text IS NOT NULL GROUP BY m, usage_type",
];

pub async fn run(args: SeriesArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let backends = args.backends.list();
    println!("| backend | query | median | reference: PostgreSQL GROUP BY over raw events | ratio |\n|---|---|---|---|---|");
    for (name, pg) in backends {
        let label = format!("series-{}-{}-{}", args.events, args.organizations, args.users);
        let (url, store, loaded) =
            bench_store(args.keep.as_deref(), dir.path(), name, pg.as_deref(), &format!("{name}-{label}"), args.events).await?;
        if !loaded {
            let (loaded, secs) = load(store.as_ref(), &args).await?;
            eprintln!("{name}: loaded {loaded} events in {secs:.1} s ({:.0}/s)", loaded as f64 / secs);
        }
        // As `tally serve` does after start and every hour.
        store.refresh_statistics().await?;
        let reference = match &pg {
            Some(_) => Some(pg_client(&url).await?),
            None => None,
        };
        for (i, (label, query)) in QUERIES.iter().enumerate() {
            let ours = median(&time_series(&store, query, &args).await?);
            let theirs = match &reference {
                Some(client) => Some(median(&time_reference(client, REFERENCE[i], &args).await?)),
                None => None,
            };
            let (theirs_text, ratio) = match theirs {
                Some(t) => (format!("{:.1} ms", ms(t)), format!("{:.1}×", t.as_secs_f64() / ours.as_secs_f64())),
                None => ("—".to_owned(), "—".to_owned()),
            };
            println!("| {name} | {label} | {:.2} ms | {theirs_text} | {ratio} |", ms(ours));
        }
    }
    Ok(())
}

/// Loads the generated events chunk by chunk through validation and the bulk loader.
async fn load(store: &dyn Store, args: &SeriesArgs) -> anyhow::Result<(usize, f64)> {
    let known: HashSet<String> = store.usage_types().await?.into_iter().map(|t| t.key.to_string()).collect();
    let ctx = ValidationContext { now: jiff::Timestamp::now(), known_types: &known };
    let started = Instant::now();
    let mut loader = BulkLoader::new(store, COMMIT_EVERY).await?;
    let mut first = 0;
    while first < args.events {
        let n = CHUNK.min(args.events - first);
        let lines = generate_chunk(first, n, args.organizations, args.users);
        let raws = lines.iter().enumerate().map(|(i, l)| ingest::decode_line(first + i + 1, l.as_bytes())).collect();
        let (events, rejected) = ingest::validate(raws, &ctx);
        anyhow::ensure!(rejected.is_empty(), "generated events were rejected: {:?}", rejected.first());
        loader.add(events).await?;
        first += n;
    }
    let loaded = loader.finish().await?.accepted as usize;
    Ok((loaded, started.elapsed().as_secs_f64()))
}

async fn time_series(store: &Arc<dyn Store>, query: &str, args: &SeriesArgs) -> anyhow::Result<Vec<Duration>> {
    let types = store.usage_types().await?;
    let mut samples = Vec::with_capacity(args.runs);
    for run in 0..args.runs {
        let q = query.replace("{org}", &format!("org{}", run % args.organizations));
        let pairs = q.split('&').filter_map(|p| p.split_once('=')).map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
        let parsed = SeriesParams::from_pairs(pairs)
            .and_then(|p| p.parse(Measure::Usage, jiff::Timestamp::now(), &types))
            .map_err(|e| anyhow::anyhow!("{}: {}", e.parameter, e.detail))?;
        let started = Instant::now();
        let answer = series::run(store.as_ref(), &parsed, &types).await?;
        samples.push(started.elapsed());
        anyhow::ensure!(!answer.results.is_empty() || run > 0, "the first run found no data: {q}");
    }
    Ok(samples)
}

async fn time_reference(client: &tokio_postgres::Client, sql: &str, args: &SeriesArgs) -> anyhow::Result<Vec<Duration>> {
    let statement = client.prepare(sql).await?;
    let mut samples = Vec::with_capacity(args.runs);
    for run in 0..args.runs {
        let org = format!("org{}", run % args.organizations);
        let started = Instant::now();
        client.query(&statement, &[&org]).await?;
        samples.push(started.elapsed());
    }
    Ok(samples)
}
