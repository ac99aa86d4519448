//! The command line: one binary, a subcommand per role.

mod import;
mod keys;
mod servers;

pub use keys::create as create_key;

use crate::app::App;
use crate::config::{Config, LogFormat, StoreArgs};
use anyhow::Context;
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::sync::Arc;
use tally_store::Store;
use tokio::task::JoinHandle;

#[derive(Debug, Parser)]
#[command(name = "tally", version, about = "Self-hosted usage analytics and billing reporting")]
pub struct Cli {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP API (embedded SQLite under ./tally-data unless --database-url is given).
    Serve(ServeArgs),
    /// Manage API keys.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Import usage events from an NDJSON or CSV file (`-` reads standard input).
    Import(import::ImportArgs),
    /// Fill an empty store with a realistic demo dataset.
    Demo,
    /// Maintain the aggregates.
    #[command(subcommand)]
    Aggregates(AggregatesCommand),
    /// Generate daily reports (churn), rebuild and inspect reports.
    #[command(subcommand, visible_alias = "report")]
    Reports(ReportsCommand),
    /// LLM maintenance.
    #[command(subcommand)]
    Llm(LlmCommand),
    /// Self-hosted servers that push their counts and audit logs.
    #[command(subcommand)]
    Servers(servers::ServersCommand),
    /// Run background jobs on demand.
    #[command(subcommand)]
    Jobs(servers::JobsCommand),
    /// Apply pending schema migrations and exit.
    Migrate,
    /// Print the HTTP API's OpenAPI 3.1 document (the one served at /v1/openapi.json).
    Openapi,
    /// Measure throughput; prints a report for BENCHMARKS.md.
    #[command(subcommand)]
    Bench(crate::bench::BenchCommand),
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address and port to listen on.
    #[arg(long, env = "TALLY_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Log format.
    #[arg(long, env = "TALLY_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Load demo data into an empty store and print a demo admin key.
    #[arg(long)]
    pub demo: bool,
}

#[derive(Debug, Subcommand)]
pub enum AggregatesCommand {
    /// Recompute every aggregate from the raw events.
    Rebuild,
}

#[derive(Debug, Subcommand)]
pub enum ReportsCommand {
    /// Compute a daily report (`churn`) for a day, or backfill several, oldest first.
    Generate(GenerateArgs),
    /// Recompute a report's figures from raw events, resumably (`user-reports`).
    Rebuild(RebuildArgs),
    /// List a report's rebuild runs, newest first.
    Runs {
        #[arg(value_parser = ["user-reports"])]
        report: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum LlmCommand {
    /// Re-price, with the current price table, the LLM requests of [from, to) whose cost Tally
    /// computed or could not compute (an event's own cost is kept), and rebuild their aggregates.
    Reprice {
        /// RFC 3339 date-time.
        #[arg(long)]
        from: jiff::Timestamp,
        /// RFC 3339 date-time (exclusive).
        #[arg(long)]
        to: jiff::Timestamp,
    },
}

#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    #[arg(value_parser = ["churn"])]
    pub report: String,
    /// The report date (YYYY-MM-DD, UTC); default yesterday.
    #[arg(long)]
    pub date: Option<jiff::civil::Date>,
    /// Days to compute, ending at --date (1 to 366).
    #[arg(long, default_value_t = 1)]
    pub days_back: u32,
    /// One organization only.
    #[arg(long, value_parser = |s: &str| tally_domain::OrganizationId::parse(s.to_owned()).map_err(|e| e.to_string()))]
    pub org: Option<tally_domain::OrganizationId>,
    /// Compute and print a summary; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Recompute days that already succeeded.
    #[arg(long)]
    pub force: bool,
    /// Print each day's rows per risk level.
    #[arg(short, long)]
    pub verbose: bool,
}

#[derive(Debug, clap::Args)]
pub struct RebuildArgs {
    #[arg(value_parser = ["user-reports"])]
    pub report: String,
    /// Organizations recomputed per transaction.
    #[arg(long, default_value_t = 20)]
    pub organizations_per_batch: u32,
    /// Pause between batches, in milliseconds, to spare a busy database.
    #[arg(long, default_value_t = 0)]
    pub throttle_ms: u64,
    /// Seconds a run stays claimed without progress (a killed run resumes after that).
    #[arg(long, default_value_t = 60)]
    pub lease_seconds: u64,
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
    runtime.block_on(dispatch(cli))
}

async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve(&cli.store, args).await,
        Command::Openapi => {
            println!("{}", crate::http::openapi().to_pretty_json()?);
            Ok(())
        }
        Command::Keys(cmd) => keys::run(open(&cli.store).await?, cmd).await,
        Command::Import(args) => {
            init_logging(LogFormat::Text, "warn");
            import::run(open(&cli.store).await?, args).await
        }
        Command::Demo => {
            init_logging(LogFormat::Text, "info");
            let summary = crate::demo::load(open(&cli.store).await?.as_ref()).await?;
            println!("{summary}");
            Ok(())
        }
        Command::Aggregates(AggregatesCommand::Rebuild) => {
            init_logging(LogFormat::Text, "info");
            let store = open(&cli.store).await?;
            let started = std::time::Instant::now();
            let n = store.rebuild_aggregates().await?;
            println!("rebuilt aggregates from {n} events in {:.2} s", started.elapsed().as_secs_f64());
            Ok(())
        }
        Command::Reports(ReportsCommand::Rebuild(args)) => {
            init_logging(LogFormat::Text, "warn");
            let store = open(&cli.store).await?;
            let options = crate::jobs::RebuildOptions {
                organizations_per_batch: args.organizations_per_batch,
                throttle: std::time::Duration::from_millis(args.throttle_ms),
                lease: std::time::Duration::from_secs(args.lease_seconds),
            };
            let started = std::time::Instant::now();
            let run = crate::jobs::rebuild_user_reports(store.as_ref(), options, |run| {
                eprintln!("run {}: {}, {} events, after {}", run.id, run.status, run.processed, run.cursor.as_deref().unwrap_or("-"));
            })
            .await?;
            println!(
                "{} rebuild {} {}: {} events in {:.2} s",
                args.report,
                run.id,
                run.status,
                run.processed,
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Command::Reports(ReportsCommand::Generate(args)) => {
            init_logging(LogFormat::Text, "warn");
            let config = Config::load(&cli.store, None, None)?;
            let today = jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC).date();
            let days = crate::daily::days(args.date, args.days_back, today)?;
            let store = tally_store::open(config.database_url.expose()).await.context("opening the store")?;
            let report = crate::daily::churn::ChurnReport { settings: config.churn };
            let options = crate::daily::Generate { organization: args.org, dry_run: args.dry_run, force: args.force };
            let verbose = args.verbose || args.dry_run;
            crate::daily::generate(&report, store.as_ref(), &days, &options, |day| {
                let date = day.date.map(|d| d.to_string()).unwrap_or_default();
                if day.skipped {
                    println!("{date}: already generated; skipped (--force recomputes it)");
                    return;
                }
                let verb = if args.dry_run { "would open" } else { "opened" };
                println!(
                    "{date}: {} rows, {verb} {} alerts, resolved {}, {} ms",
                    day.rows, day.alerts_opened, day.alerts_resolved, day.duration_ms
                );
                if verbose {
                    for (level, n) in &day.by_level {
                        println!("  {level:<8} {n}");
                    }
                }
            })
            .await?;
            if args.dry_run {
                println!("dry run: nothing was written");
            }
            Ok(())
        }
        Command::Reports(ReportsCommand::Runs { report }) => {
            let store = open(&cli.store).await?;
            for run in store.job_runs(&report).await? {
                println!("{}", serde_json::to_string(&run)?);
            }
            Ok(())
        }
        Command::Llm(LlmCommand::Reprice { from, to }) => {
            init_logging(LogFormat::Text, "warn");
            anyhow::ensure!(from < to, "--from must be before --to");
            let store = open(&cli.store).await?;
            let table = store.llm_prices().await?;
            let n = store.reprice_llm(from, to, &table).await?;
            println!("re-priced {n} LLM requests with price table version {}", table.version);
            Ok(())
        }
        Command::Servers(cmd) => servers::servers(open(&cli.store).await?, cmd).await,
        Command::Jobs(cmd) => {
            init_logging(LogFormat::Text, "warn");
            servers::jobs(open(&cli.store).await?, cmd).await
        }
        Command::Migrate => {
            init_logging(LogFormat::Text, "info");
            let store = open(&cli.store).await?;
            println!("{} schema is up to date", store.backend());
            Ok(())
        }
        Command::Bench(cmd) => {
            init_logging(LogFormat::Text, "warn");
            crate::bench::run(&cli.store, cmd).await
        }
    }
}

/// Opens the store the configuration names (running migrations).
pub async fn open(args: &StoreArgs) -> anyhow::Result<Arc<dyn Store>> {
    let config = Config::load(args, None, None)?;
    tally_store::open(config.database_url.expose()).await.context("opening the store")
}

fn init_logging(format: LogFormat, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TALLY_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

async fn serve(store_args: &StoreArgs, args: ServeArgs) -> anyhow::Result<()> {
    let config = Config::load(store_args, args.listen, args.log_format)?;
    init_logging(config.log_format, "info,tower_http=warn");
    let store = tally_store::open(config.database_url.expose()).await.context("opening the store")?;
    if args.demo {
        let summary = crate::demo::load(store.as_ref()).await?;
        tracing::info!("{summary}");
        let (_, key) = keys::create(store.as_ref(), tally_domain::Scope::Admin, "demo").await?;
        println!("demo admin key: {key}");
    }
    let (app, writer) = App::start(store.clone(), &config).await?;
    let ledger = tokio::spawn(crate::seats::hourly_ledger(store.clone()));
    let churn = tokio::spawn(crate::daily::schedule(store.clone(), crate::daily::churn::ChurnReport { settings: config.churn.clone() }));
    let alerting = crate::alerts::spawn(app.alerting.clone());
    let upkeep = tokio::spawn(crate::upkeep::run(store.clone()));
    let limiter_upkeep = {
        let app = app.clone();
        tokio::spawn(async move {
            let mut every_minute = tokio::time::interval(std::time::Duration::from_secs(60));
            loop {
                every_minute.tick().await;
                app.rate_limiter.forget_idle();
            }
        })
    };
    let listener = tokio::net::TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
    tracing::info!(addr = %listener.local_addr()?, backend = store.backend(), "tally listening");
    crate::http::serve(listener, app, shutdown_signal()).await?;
    ledger.abort();
    churn.abort();
    upkeep.abort();
    limiter_upkeep.abort();
    alerting.iter().for_each(JoinHandle::abort);
    // Every request is answered; let the writer finish its last batch.
    writer.await.context("writer task")?;
    tracing::info!("shut down cleanly");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutdown requested; finishing in-flight requests");
}

#[cfg(test)]
mod tests {
    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
