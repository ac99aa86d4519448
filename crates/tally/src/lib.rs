//! The `tally` binary's library: configuration, the HTTP API, ingestion, the CLI commands, demo
//! data and benchmarks. Domain logic lives in `tally-domain`, storage in `tally-store`.

pub mod alerts;
pub mod app;
pub mod bench;
pub mod cli;
pub mod compat;
pub mod config;
pub mod daily;
pub mod demo;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod ingest;
pub mod jobs;
pub mod metrics;
pub mod reports;
pub mod seats;
pub mod series;
pub mod upkeep;
