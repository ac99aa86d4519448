//! `tally servers` (self-hosted servers that push their data) and `tally jobs run` (jobs on demand).

use clap::Subcommand;
use std::sync::Arc;
use tally_domain::OrganizationId;
use tally_store::Store;

#[derive(Debug, Subcommand)]
pub enum ServersCommand {
    /// Register a server; prints its id and its secret key (shown only this once).
    Register {
        #[arg(long)]
        hostname: String,
        #[arg(long)]
        contact_email: String,
        /// The organization billed for the server (default: a new `server-<id>`).
        #[arg(long, value_parser = |s: &str| OrganizationId::parse(s.to_owned()).map_err(|e| e.to_string()))]
        organization: Option<OrganizationId>,
    },
    /// List servers and when each last pushed.
    List,
    /// Replace a server's key; prints the new one. The old key stops working at once.
    RotateKey { id: String },
}

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// Run a job now, to completion.
    Run {
        #[arg(value_parser = ["ledger"])]
        job: String,
        /// Audit events per transaction.
        #[arg(long, default_value_t = 10_000)]
        batch: u32,
        /// How long the run stays claimed without progress; a killed run is resumable after it.
        #[arg(long, default_value_t = 60)]
        lease_seconds: u64,
    },
}

pub async fn servers(store: Arc<dyn Store>, cmd: ServersCommand) -> anyhow::Result<()> {
    match cmd {
        ServersCommand::Register { hostname, contact_email, organization } => {
            let (server, key) = crate::seats::register_server(store.as_ref(), &hostname, &contact_email, organization).await?;
            eprintln!("registered server {} (organization {})", server.id, server.organization_id);
            println!("server_id={}", server.id);
            println!("api_key={key}");
        }
        ServersCommand::List => {
            println!("{:<38} {:<28} {:<30} last push", "id", "hostname", "organization");
            for s in store.servers().await? {
                let last = s.last_push_at.map_or("never".to_owned(), |t| t.to_string());
                println!("{:<38} {:<28} {:<30} {last}", s.id, s.hostname, s.organization_id.as_str());
            }
        }
        ServersCommand::RotateKey { id } => match crate::seats::rotate_server_key(store.as_ref(), &id).await? {
            Some(key) => println!("api_key={key}"),
            None => anyhow::bail!("no server with id {id:?}"),
        },
    }
    Ok(())
}

pub async fn jobs(store: Arc<dyn Store>, cmd: JobsCommand) -> anyhow::Result<()> {
    let JobsCommand::Run { job: _, batch, lease_seconds } = cmd;
    let started = std::time::Instant::now();
    let options = crate::seats::LedgerOptions { batch, lease: std::time::Duration::from_secs(lease_seconds.max(1)) };
    let run =
        crate::seats::run_ledger(store.as_ref(), options, |run| eprintln!("run {}: {} audit events processed", run.id, run.processed))
            .await?;
    println!("ledger run {} {}: {} audit events in {:.2} s", run.id, run.status, run.processed, started.elapsed().as_secs_f64());
    Ok(())
}
