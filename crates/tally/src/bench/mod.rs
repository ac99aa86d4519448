//! `tally bench`: measured figures for BENCHMARKS.md. `ingest`: HTTP ingest from concurrent
//! clients, `tally import` of the same events, and PostgreSQL's own `COPY` of them into a plain
//! indexed table as a reference point. `series`: usage series queries over a loaded store, side
//! by side with PostgreSQL's `GROUP BY date_trunc(…)` over the raw events. `reports`: user
//! report pages, exports and rebuilds, beside a PostgreSQL materialized view. `seats`: pushes,
//! seat counts and the ledger job. `churn`: daily reports, backfills and the high-risk list.
//! `llm`: a heavy user's LLM analytics and OTLP ingest. `load`: minutes of mixed load with
//! latency per endpoint and memory over time, then an overload burst.

mod churn;
mod llm;
mod load;
mod reports;
mod seats;
mod series;

use crate::app::App;
use crate::config::{Config, Secret, StoreArgs};
use anyhow::Context;
use clap::{Args, Subcommand};
use futures_util::SinkExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::Arc;
use std::time::Instant;
use tally_domain::Scope;

/// The stores a benchmark runs on: SQLite, and PostgreSQL when given.
#[derive(Debug, Args)]
pub struct Backends {
    /// Also run against PostgreSQL (a fresh or kept schema in this database), with the
    /// benchmark's PostgreSQL reference where it has one.
    #[arg(long, env = "TALLY_BENCH_POSTGRES_URL")]
    pub postgres: Option<String>,
    /// Run against PostgreSQL alone, skipping SQLite.
    #[arg(long, requires = "postgres")]
    pub postgres_only: bool,
}

impl Backends {
    /// Each backend's name and, for PostgreSQL, its database URL.
    pub fn list(&self) -> Vec<(&'static str, Option<String>)> {
        let sqlite = (!self.postgres_only).then_some(("sqlite", None));
        sqlite.into_iter().chain(self.postgres.clone().map(|url| ("postgres", Some(url)))).collect()
    }
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Events per second over HTTP and through `tally import`, on SQLite and (with --postgres) PostgreSQL.
    Ingest(IngestArgs),
    /// Median latency of usage series queries, on SQLite and (with --postgres) PostgreSQL.
    Series(series::SeriesArgs),
    /// User reports: a filtered, ordered page, its count, a full export and a full rebuild.
    Reports(reports::ReportsArgs),
    /// Seats: a server's push, the seat count at a moment, the ledger job over a million rows.
    Seats(seats::SeatsArgs),
    /// Churn: one day's report, a backfill, the high-risk list.
    Churn(churn::ChurnArgs),
    /// LLM analytics: a heavy user's summary, breakdown and deep history; OTLP ingest.
    Llm(llm::LlmArgs),
    /// Minutes of mixed load: ingestion and every kind of read at once, then an overload burst.
    Load(load::LoadArgs),
}

#[derive(Debug, Args)]
pub struct IngestArgs {
    /// Distinct events to send.
    #[arg(long, default_value_t = 1_000_000)]
    pub events: usize,
    /// Concurrent HTTP clients.
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
    /// Events per HTTP request.
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    #[arg(long, default_value_t = 2000)]
    pub organizations: usize,
    #[arg(long, default_value_t = 200_000)]
    pub users: usize,
    #[command(flatten)]
    pub backends: Backends,
    /// Skip the HTTP part (measure import only).
    #[arg(long)]
    pub import_only: bool,
    /// Also run HTTP ingest with this many active alert rules (users', teams' and
    /// organizations' cost, token and usage rules over the events' own subjects).
    #[arg(long, default_value_t = 0)]
    pub rules: usize,
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The middle sample (the upper one of an even count).
fn median(samples: &[std::time::Duration]) -> std::time::Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    sorted.get(sorted.len() / 2).copied().unwrap_or_default()
}

/// Peak resident memory of this process, from the kernel's high-water mark.
pub fn peak_rss_mb() -> Option<f64> {
    memory_mb("VmHWM:")
}

/// A memory figure of this process from `/proc/self/status` (`VmHWM:`, `VmRSS:`…), in MB.
pub fn memory_mb(field: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Deterministic synthetic events over the last 90 days: every usage type, a fifth of them LLM
/// requests.
pub fn generate(n: usize, organizations: usize, users: usize) -> Vec<String> {
    generate_chunk(0, n, organizations, users)
}

/// Events `first..first + n` of a synthetic stream; chunks can be generated one at a time so a
/// large load never holds every event in memory.
pub fn generate_chunk(first: usize, n: usize, organizations: usize, users: usize) -> Vec<String> {
    let mut rng = StdRng::seed_from_u64(42 ^ first as u64);
    let start = jiff::Timestamp::now().as_second() - 90 * 86_400;
    let types = ["api_call", "submission", "storage_bytes", "asr_seconds", "mt_characters", "login"];
    (first..first + n)
        .map(|i| {
            let user = rng.random_range(0..users);
            let org = user % organizations;
            let ts = jiff::Timestamp::from_second(start + rng.random_range(0..90 * 86_400)).expect("in range");
            let team = user % 7;
            if i % 5 == 0 {
                let input = rng.random_range(10..4000);
                let output = rng.random_range(0..1500);
                format!(
                    r#"{{"id":"b{i}","timestamp":"{ts}","organization_id":"org{org}","user_id":"u{user}","team_id":"t{team}","type":"llm_request","model":"gpt-4o-mini","provider":"openai","status":"{}","input_tokens":{input},"output_tokens":{output},"cost":"0.000{}","latency_ms":{}}}"#,
                    if i % 23 == 0 { "error" } else { "success" },
                    rng.random_range(100..999),
                    rng.random_range(100..5000),
                )
            } else {
                let ty = types[i % types.len()];
                format!(
                    r#"{{"id":"b{i}","timestamp":"{ts}","organization_id":"org{org}","user_id":"u{user}","team_id":"t{team}","type":"{ty}","quantity":{}}}"#,
                    rng.random_range(1..100)
                )
            }
        })
        .collect()
}

pub async fn run(_store: &StoreArgs, cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Ingest(args) => ingest(args).await,
        BenchCommand::Series(args) => series::run(args).await,
        BenchCommand::Reports(args) => reports::run(args).await,
        BenchCommand::Seats(args) => seats::run(args).await,
        BenchCommand::Churn(args) => churn::run(args).await,
        BenchCommand::Llm(args) => llm::run(args).await,
        BenchCommand::Load(args) => load::run(args).await,
    }
}

async fn ingest(args: IngestArgs) -> anyhow::Result<()> {
    eprintln!("generating {} events…", args.events);
    let lines = generate(args.events, args.organizations, args.users);
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("events.ndjson");
    std::fs::write(&file, lines.join("\n"))?;

    let mut rows = Vec::new();
    let backends = args.backends.list();
    for (name, pg) in &backends {
        if !args.import_only {
            let url = fresh_url(dir.path(), name, pg.as_deref(), "http").await?;
            let (rate, secs, _) = http_ingest(&url, &lines, &args, 0).await?;
            rows.push(format!(
                "| {name} | HTTP ingest, {} clients × {} events/request | {} | {secs:.2} s | {rate:.0} |",
                args.clients, args.batch, args.events
            ));
            if args.rules > 0 {
                let url = fresh_url(dir.path(), name, pg.as_deref(), "rules").await?;
                let (rate, secs, alerts) = http_ingest(&url, &lines, &args, args.rules).await?;
                rows.push(format!(
                    "| {name} | HTTP ingest with {} active alert rules ({alerts} alerts opened while it ran) | {} | {secs:.2} s | {rate:.0} |",
                    args.rules, args.events
                ));
            }
        }
        let url = fresh_url(dir.path(), name, pg.as_deref(), "import").await?;
        let summary = import(&url, &file)?;
        rows.push(format!(
            "| {name} | `tally import` (NDJSON) | {} | {:.2} s | {:.0} (peak RSS {:.0} MB) |",
            summary["read"],
            summary["seconds"].as_f64().unwrap_or(0.0),
            summary["events_per_second"].as_f64().unwrap_or(0.0),
            summary["peak_rss_mb"].as_f64().unwrap_or(0.0)
        ));
        if let Some(pg) = pg {
            let (rate, secs) = copy_reference(pg, &lines).await?;
            rows.push(format!("| postgres | reference: bare `COPY` into a table with PK + 1 index (no dedup, no aggregates) | {} | {secs:.2} s | {rate:.0} |", args.events));
        }
    }
    println!("| backend | what | events | time | events/s |\n|---|---|---|---|---|");
    for row in rows {
        println!("{row}");
    }
    Ok(())
}

/// A plain PostgreSQL connection, for `ANALYZE` and the reference queries.
async fn pg_client(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// `tally serve` over a store, on a free loopback port, with an admin key.
struct Running {
    base: String,
    key: String,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    writer: tokio::task::JoinHandle<()>,
    /// Rule evaluation, sweeps and deliveries, as `tally serve` runs them.
    background: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    async fn start(store: Arc<dyn tally_store::Store>, url: &str) -> anyhow::Result<Running> {
        let config = Config {
            listen: "127.0.0.1:0".parse()?,
            database_url: Secret::new(url.to_owned()),
            log_format: Default::default(),
            max_batch_events: Config::MAX_BATCH_EVENTS,
            max_body_bytes: Config::MAX_BODY_BYTES,
            max_concurrent_requests: Config::MAX_CONCURRENT_REQUESTS,
            max_queue_wait: Config::MAX_QUEUE_WAIT,
            rate_limit: Default::default(),
            churn: Default::default(),
            alerts: Default::default(),
        };
        let (_, key) = crate::cli::create_key(store.as_ref(), Scope::Admin, "bench").await?;
        let (app, writer) = App::start(store, &config).await?;
        let background = crate::alerts::spawn(app.alerting.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(crate::http::serve(listener, app, async move {
            let _ = stopped.await;
        }));
        Ok(Running { base, key, stop, server, writer, background })
    }

    /// Stops taking requests, lets the last batch commit.
    async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.background.iter().for_each(tokio::task::JoinHandle::abort);
        self.server.await??;
        self.writer.await?;
        Ok(())
    }
}

/// A benchmark's store, kept between runs with `--keep DIR` so that a large load is paid once and
/// its queries can be timed again later: a SQLite file in `DIR`, or on PostgreSQL a schema named
/// after `label` (which should say what was loaded). Without `keep`, a fresh store. Also says
/// whether it already holds the `events` to load; a kept store holding some other number is
/// refused rather than loaded on top of.
async fn bench_store(
    keep: Option<&std::path::Path>,
    dir: &std::path::Path,
    backend: &str,
    pg: Option<&str>,
    label: &str,
    events: usize,
) -> anyhow::Result<(String, Arc<dyn tally_store::Store>, bool)> {
    let url = match (keep, pg) {
        (None, _) => fresh_url(dir, backend, pg, label).await?,
        (Some(keep), None) => {
            std::fs::create_dir_all(keep)?;
            format!("sqlite://{}", keep.join(format!("{label}.db")).display())
        }
        (Some(_), Some(base)) => tally_store::testing::named_schema(base, &format!("keep_{}", label.replace('-', "_"))).await?,
    };
    let store = tally_store::open(&url).await?;
    let held = store.event_count().await? as usize;
    anyhow::ensure!(held == 0 || held == events, "the kept store {url} holds {held} events, not {events}: remove it");
    if held == events {
        eprintln!("{backend}: reusing the {events} events kept from an earlier run");
    }
    Ok((url, store, held == events))
}

async fn fresh_url(dir: &std::path::Path, backend: &str, pg: Option<&str>, label: &str) -> anyhow::Result<String> {
    Ok(match pg {
        None => format!("sqlite://{}", dir.join(format!("{backend}-{label}.db")).display()),
        Some(base) => tally_store::testing::fresh_schema(base).await?,
    })
}

/// Events per second, seconds, and the alerts rules opened meanwhile.
async fn http_ingest(url: &str, lines: &[String], args: &IngestArgs, rules: usize) -> anyhow::Result<(f64, f64, u64)> {
    let store = tally_store::open(url).await?;
    create_rules(store.as_ref(), rules, args).await?;
    let running = Running::start(store.clone(), url).await?;
    let (base, key) = (running.base.clone(), running.key.clone());
    let bodies: Vec<String> = lines.chunks(args.batch).map(|c| format!("[{}]", c.join(","))).collect();
    let bodies = Arc::new(bodies);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let client = reqwest::Client::new();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.clients {
        let (bodies, next, client, key, base) = (bodies.clone(), next.clone(), client.clone(), key.clone(), base.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(body) = bodies.get(i) else { return Ok::<(), anyhow::Error>(()) };
                loop {
                    let response = client
                        .post(format!("{base}/v1/events"))
                        .bearer_auth(&key)
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .await?;
                    if response.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE {
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                    anyhow::ensure!(response.status().is_success(), "ingest answered {}", response.status());
                    break;
                }
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    let secs = started.elapsed().as_secs_f64();
    running.stop().await?;
    let stored = store.event_count().await?;
    anyhow::ensure!(stored as usize == lines.len(), "stored {stored} events, sent {} distinct", lines.len());
    let alerts = store.alerts(&tally_store::AlertQuery { source: Some("rule".into()), ..Default::default() }).await?.count;
    Ok((lines.len() as f64 / secs, secs, alerts))
}

/// `n` rules over the synthetic events' subjects: four in five watch a user (cost, tokens or
/// submissions this period), one in ten a team's tokens today, one in ten an organization's
/// spend, with lines some subjects cross during the run.
async fn create_rules(store: &dyn tally_store::Store, n: usize, args: &IngestArgs) -> anyhow::Result<()> {
    use rust_decimal::Decimal;
    use tally_domain::alerts::{AlertRule, Metric, RuleScope, Window};
    use tally_domain::{OrganizationId, TeamId, UserId};
    let now = jiff::Timestamp::now();
    for i in 0..n {
        let user = (i * 7919) % args.users;
        let org = OrganizationId::parse(format!("org{}", user % args.organizations))?;
        let (scope, metric, window, threshold) = match i % 10 {
            0 => (RuleScope::Organization { organization_id: org }, Metric::LlmCost, Window::CurrentPeriod, Decimal::new(5, 1)),
            1 => (
                RuleScope::Team { organization_id: org, team_id: TeamId::parse(format!("t{}", user % 7))? },
                Metric::LlmTokens,
                Window::Day,
                Decimal::from(20_000),
            ),
            k => {
                let metric = match k % 3 {
                    0 => Metric::LlmCost,
                    1 => Metric::LlmTokens,
                    _ => Metric::UsageSum { usage_type: "submission".into() },
                };
                let threshold = if matches!(metric, Metric::LlmCost) { Decimal::new(1, 2) } else { Decimal::from(2_000) };
                (
                    RuleScope::User { organization_id: org, user_id: UserId::parse(format!("u{user}"))? },
                    metric,
                    Window::CurrentPeriod,
                    threshold,
                )
            }
        };
        let rule = AlertRule {
            id: format!("bench-{i}"),
            name: format!("bench rule {i}"),
            scope,
            metric,
            window,
            threshold,
            builtin: false,
            ..AlertRule::system(now)
        };
        store.save_alert_rule(&rule, tally_store::Write::Create).await?;
    }
    Ok(())
}

fn import(url: &str, file: &std::path::Path) -> anyhow::Result<serde_json::Value> {
    let exe = std::env::current_exe()?;
    let output = std::process::Command::new(exe)
        .args(["import", "--json", "--database-url", url])
        .arg(file)
        .output()
        .context("running tally import")?;
    anyhow::ensure!(output.status.success(), "tally import failed: {}", String::from_utf8_lossy(&output.stderr));
    Ok(serde_json::from_slice(&output.stdout)?)
}

async fn copy_reference(base: &str, lines: &[String]) -> anyhow::Result<(f64, f64)> {
    let url = tally_store::testing::fresh_schema(base).await?;
    let client = pg_client(&url).await?;
    client
        .batch_execute(
            "CREATE TABLE copy_ref (organization_id text NOT NULL, event_id text NOT NULL, ts timestamptz NOT NULL, user_id text NOT NULL,
             team_id text, usage_type text NOT NULL, quantity float8 NOT NULL, model text, provider text, status text,
             input_tokens int8, output_tokens int8, cost numeric, latency_ms int8, PRIMARY KEY (organization_id, event_id));
             CREATE INDEX ON copy_ref (organization_id, ts);",
        )
        .await?;
    // The same events as CSV rows, prepared before the clock starts.
    let mut csv = String::with_capacity(lines.len() * 120);
    for line in lines {
        let v: serde_json::Value = serde_json::from_str(line)?;
        let s = |k: &str| v.get(k).map(|x| x.as_str().map(str::to_owned).unwrap_or_else(|| x.to_string())).unwrap_or_default();
        csv.push_str(
            &[
                s("organization_id"),
                s("id"),
                s("timestamp"),
                s("user_id"),
                s("team_id"),
                s("type"),
                if v.get("quantity").is_some() { s("quantity") } else { "1".into() },
                s("model"),
                s("provider"),
                s("status"),
                s("input_tokens"),
                s("output_tokens"),
                s("cost"),
                s("latency_ms"),
            ]
            .join(","),
        );
        csv.push('\n');
    }
    let started = Instant::now();
    let sink = client.copy_in("COPY copy_ref FROM STDIN WITH (FORMAT csv)").await?;
    futures_util::pin_mut!(sink);
    for chunk in csv.as_bytes().chunks(1 << 20) {
        sink.send(bytes::Bytes::copy_from_slice(chunk)).await?;
    }
    sink.finish().await?;
    let secs = started.elapsed().as_secs_f64();
    Ok((lines.len() as f64 / secs, secs))
}
