//! Layered configuration: defaults, then an optional `tally.toml`, then `TALLY_*` environment
//! variables, then flags; a later source wins. Clap reads the last two (a flag beats its
//! variable); this module lays them over the file and the defaults.

use anyhow::Context;
use clap::Args;
use serde::Deserialize;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_DATA_DIR: &str = "tally-data";
pub const DEFAULT_CONFIG: &str = "tally.toml";

/// A value that must never reach a log line: `Debug` and `Display` print a placeholder.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Secret(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Where the data lives; shared by every subcommand that opens the store.
#[derive(Debug, Clone, Args, Default)]
pub struct StoreArgs {
    /// Directory of the embedded SQLite database (used unless --database-url is given).
    #[arg(long, env = "TALLY_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// PostgreSQL URL (postgres://user:pass@host/db); the embedded SQLite store is used without it.
    #[arg(long, env = "TALLY_DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<String>,
    /// Configuration file; `./tally.toml` is read when present.
    #[arg(long, env = "TALLY_CONFIG", global = true)]
    pub config: Option<PathBuf>,
}

/// What `tally.toml` may hold.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<String>,
    pub log_format: Option<LogFormat>,
    pub max_batch_events: Option<usize>,
    pub max_body_bytes: Option<usize>,
    /// Requests served at once; others wait for a turn.
    pub max_concurrent_requests: Option<usize>,
    /// How long a request may wait for its turn before it gets 503 with `Retry-After`.
    pub max_queue_wait_ms: Option<u64>,
    /// Churn-report weights, windows and event types.
    pub churn: Option<tally_domain::churn::ChurnSettings>,
    /// Rule sweeps and webhook delivery.
    pub alerts: Option<AlertSettings>,
    /// Requests per second each API key may make; beyond it, 429 with `Retry-After`.
    pub rate_limit: Option<RateLimit>,
}

/// `[rate_limit]` in `tally.toml`: a token bucket per API key.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimit {
    /// Sustained requests per second per key; 0 turns the limit off.
    pub per_second: u32,
    /// Requests a key may make at once after a quiet spell.
    pub burst: u32,
}

impl Default for RateLimit {
    /// Generous enough for a dashboard and for ingestion in batches; a runaway client or
    /// script is held back instead of starving everyone else.
    fn default() -> Self {
        RateLimit { per_second: 1000, burst: 2000 }
    }
}

/// `[alerts]` in `tally.toml`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertSettings {
    /// How often every rule is re-evaluated (sliding windows fall, periods roll over).
    pub sweep_seconds: f64,
    /// The wait before a failed webhook delivery's first retry; each further one doubles it.
    pub first_retry_seconds: f64,
    /// How long a receiver may take to answer.
    pub webhook_timeout_seconds: f64,
}

impl Default for AlertSettings {
    fn default() -> Self {
        AlertSettings { sweep_seconds: 60.0, first_retry_seconds: 5.0, webhook_timeout_seconds: 10.0 }
    }
}

impl AlertSettings {
    pub fn check(&self) -> Result<(), String> {
        let within = |v: f64, lo: f64, hi: f64| v.is_finite() && (lo..=hi).contains(&v);
        if !within(self.sweep_seconds, 0.1, 86_400.0) {
            return Err("sweep_seconds must be from 0.1 to 86400".into());
        }
        if !within(self.first_retry_seconds, 0.01, 3600.0) {
            return Err("first_retry_seconds must be from 0.01 to 3600".into());
        }
        if !within(self.webhook_timeout_seconds, 0.1, 300.0) {
            return Err("webhook_timeout_seconds must be from 0.1 to 300".into());
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub database_url: Secret,
    pub log_format: LogFormat,
    /// Events per ingest request.
    pub max_batch_events: usize,
    /// Bytes per ingest request body.
    pub max_body_bytes: usize,
    /// Requests served at once; others wait for a turn, at most `max_queue_wait`, and are then
    /// shed (503 with `Retry-After`).
    pub max_concurrent_requests: usize,
    pub max_queue_wait: std::time::Duration,
    pub churn: tally_domain::churn::ChurnSettings,
    pub alerts: AlertSettings,
    pub rate_limit: RateLimit,
}

impl Config {
    pub const MAX_BATCH_EVENTS: usize = 10_000;
    pub const MAX_BODY_BYTES: usize = 10 * 1024 * 1024;
    /// Enough to keep two cores and the database busy, few enough that each admitted request
    /// finishes in reasonable time even when all are heavy reads.
    pub const MAX_CONCURRENT_REQUESTS: usize = 64;
    pub const MAX_QUEUE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

    /// Resolves the layers. `listen` and `log_format` come from `tally serve`'s flags.
    pub fn load(store: &StoreArgs, listen: Option<SocketAddr>, log_format: Option<LogFormat>) -> anyhow::Result<Config> {
        let file = read_file(store.config.as_deref())?;
        let database_url = match store.database_url.clone().or(file.database_url) {
            Some(url) => url,
            None => {
                let dir = store.data_dir.clone().or(file.data_dir).unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
                format!("sqlite://{}", dir.join("tally.db").display())
            }
        };
        let churn = file.churn.unwrap_or_default();
        churn.check().map_err(|e| anyhow::anyhow!("[churn] in the configuration file: {e}"))?;
        let alerts = file.alerts.unwrap_or_default();
        alerts.check().map_err(|e| anyhow::anyhow!("[alerts] in the configuration file: {e}"))?;
        Ok(Config {
            churn,
            alerts,
            listen: listen.or(file.listen).unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("valid default")),
            database_url: Secret::new(database_url),
            log_format: log_format.or(file.log_format).unwrap_or_default(),
            max_batch_events: file.max_batch_events.unwrap_or(Self::MAX_BATCH_EVENTS),
            max_body_bytes: file.max_body_bytes.unwrap_or(Self::MAX_BODY_BYTES),
            max_concurrent_requests: file.max_concurrent_requests.unwrap_or(Self::MAX_CONCURRENT_REQUESTS).max(1),
            max_queue_wait: file.max_queue_wait_ms.map_or(Self::MAX_QUEUE_WAIT, std::time::Duration::from_millis),
            rate_limit: file.rate_limit.unwrap_or_default(),
        })
    }
}

fn read_file(explicit: Option<&Path>) -> anyhow::Result<FileConfig> {
    let path = match explicit {
        Some(p) => p.to_owned(),
        None if Path::new(DEFAULT_CONFIG).exists() => PathBuf::from(DEFAULT_CONFIG),
        None => return Ok(FileConfig::default()),
    };
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::new("postgres://u:pw@h/db".into());
        assert_eq!(format!("{s:?}"), "Secret(***)");
        let c = Config::load(&StoreArgs { database_url: Some("postgres://u:pw@h/db".into()), ..Default::default() }, None, None).unwrap();
        assert!(!format!("{c:?}").contains("pw"));
    }

    #[test]
    fn later_layers_win() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tally.toml");
        std::fs::write(&file, "listen = \"127.0.0.1:9000\"\ndata_dir = \"/srv/tally\"\nmax_batch_events = 50\n").unwrap();
        let args = StoreArgs { config: Some(file.clone()), ..Default::default() };
        let c = Config::load(&args, None, None).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:9000");
        assert_eq!(c.database_url.expose(), "sqlite:///srv/tally/tally.db");
        assert_eq!(c.max_batch_events, 50);
        let args = StoreArgs { config: Some(file), data_dir: Some("/data".into()), ..Default::default() };
        let c = Config::load(&args, Some("0.0.0.0:1".parse().unwrap()), None).unwrap();
        assert_eq!(c.listen.to_string(), "0.0.0.0:1");
        assert_eq!(c.database_url.expose(), "sqlite:///data/tally.db");
    }

    #[test]
    fn unknown_file_keys_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tally.toml");
        std::fs::write(&file, "lisen = \"x\"\n").unwrap();
        let err = Config::load(&StoreArgs { config: Some(file), ..Default::default() }, None, None).unwrap_err();
        assert!(format!("{err:#}").contains("lisen"));
    }
}
