//! `tally import FILE`: the ingest path without HTTP. A reader thread decodes and validates
//! while the store commits the previous batch, so both cores stay busy.

use crate::ingest::bulk::BulkLoader;
use crate::ingest::{self, IngestReport, Rejected};
use anyhow::Context;
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use tally_domain::event::{EventRejection, ValidationContext};
use tally_domain::{RawEvent, UsageEvent};
use tally_store::Store;

/// Events read and validated per hand-over to the store. Transactions are `--commit-every`
/// events whatever this is; small keeps the events in flight, and memory, down.
const BATCH: usize = 10_000;
const SHOWN_REJECTIONS: usize = 20;

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// NDJSON or CSV file; `-` for standard input.
    pub file: PathBuf,
    /// Input format; guessed from the extension (.csv is CSV, anything else NDJSON).
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// Events stored per transaction. Larger is faster (each transaction writes the pages its
    /// events touch once), but holds the store's write lock longer: a server writing to the same
    /// SQLite file waits meanwhile.
    #[arg(long, default_value_t = ingest::bulk::COMMIT_EVERY, value_parser = clap::value_parser!(u64).range(1..))]
    pub commit_every: u64,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Format {
    Ndjson,
    Csv,
}

/// Validated events from `first` on (by position in the input), and the rejected ones.
struct Batch {
    first: usize,
    events: Vec<UsageEvent>,
    rejected: Vec<Rejected>,
}

#[derive(Debug, Serialize)]
pub struct Summary {
    pub read: usize,
    pub accepted: usize,
    pub duplicates: usize,
    pub rejected: usize,
    pub seconds: f64,
    pub events_per_second: f64,
    pub peak_rss_mb: Option<f64>,
}

pub async fn run(store: Arc<dyn Store>, args: ImportArgs) -> anyhow::Result<()> {
    let format = args.format.unwrap_or(match args.file.extension().and_then(|e| e.to_str()) {
        Some("csv") => Format::Csv,
        _ => Format::Ndjson,
    });
    let (input, size): (Box<dyn Read + Send>, Option<u64>) = if args.file.as_os_str() == "-" {
        (Box::new(std::io::stdin()), None)
    } else {
        let file = std::fs::File::open(&args.file).with_context(|| format!("opening {}", args.file.display()))?;
        let size = file.metadata().ok().map(|m| m.len());
        (Box::new(file), size)
    };
    let progress = match size {
        Some(bytes) => ProgressBar::new(bytes)
            .with_style(ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {per_sec} eta {eta}").expect("valid template")),
        None => ProgressBar::new_spinner(),
    };
    let known: std::collections::HashSet<String> = store.usage_types().await?.into_iter().map(|t| t.key.to_string()).collect();

    let started = Instant::now();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Batch>(1);
    let bar = progress.clone();
    let reader = std::thread::spawn(move || -> anyhow::Result<usize> {
        let ctx = ValidationContext { now: jiff::Timestamp::now(), known_types: &known };
        // Each event is validated as it is read, so a batch holds only validated events.
        let mut batch = Batch { first: 0, events: Vec::with_capacity(BATCH), rejected: Vec::new() };
        let mut read = 0usize;
        let mut add = |raw: Result<RawEvent, EventRejection>, read: &mut usize| -> bool {
            match raw.and_then(|r| r.validate(&ctx)) {
                Ok(event) => batch.events.push(event),
                Err(e) => batch.rejected.push(Rejected { index: *read - batch.first, code: e.code, reason: e.message }),
            }
            *read += 1;
            if *read - batch.first < BATCH {
                return true;
            }
            let full = std::mem::replace(&mut batch, Batch { first: *read, events: Vec::with_capacity(BATCH), rejected: Vec::new() });
            tx.blocking_send(full).is_ok()
        };
        match format {
            Format::Ndjson => {
                let mut lines = BufReader::with_capacity(1 << 20, input);
                let mut line = Vec::with_capacity(1024);
                let mut number = 0usize;
                loop {
                    line.clear();
                    let n = lines.read_until(b'\n', &mut line)?;
                    if n == 0 {
                        break;
                    }
                    number += 1;
                    bar.inc(n as u64);
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    if !add(ingest::decode_line(number, &line), &mut read) {
                        return Ok(read);
                    }
                }
            }
            Format::Csv => {
                for row in ingest::csv::decode(bar.wrap_read(input)) {
                    if !add(row, &mut read) {
                        return Ok(read);
                    }
                }
            }
        }
        if read > batch.first {
            let _ = tx.blocking_send(batch);
        }
        Ok(read)
    });

    let mut report = IngestReport::default();
    let mut loader = BulkLoader::new(store.as_ref(), args.commit_every).await?;
    while let Some(Batch { first, events, rejected }) = rx.recv().await {
        loader.add(events).await?;
        report.merge(IngestReport { rejected, ..IngestReport::default() }, first);
    }
    let stored = loader.finish().await?;
    (report.accepted, report.duplicates) = (stored.accepted as usize, stored.duplicates as usize);
    let read = reader.join().map_err(|_| anyhow::anyhow!("the reader thread panicked"))??;
    progress.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    for r in report.rejected.iter().take(SHOWN_REJECTIONS) {
        eprintln!("rejected event {}: {}", r.index, r.reason);
    }
    if report.rejected.len() > SHOWN_REJECTIONS {
        eprintln!("… and {} more rejected", report.rejected.len() - SHOWN_REJECTIONS);
    }
    let summary = Summary {
        read,
        accepted: report.accepted,
        duplicates: report.duplicates,
        rejected: report.rejected.len(),
        seconds,
        events_per_second: read as f64 / seconds.max(1e-9),
        peak_rss_mb: crate::bench::peak_rss_mb(),
    };
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        println!(
            "imported {} events in {:.2} s ({:.0} events/s): {} accepted, {} duplicates, {} rejected",
            summary.read, summary.seconds, summary.events_per_second, summary.accepted, summary.duplicates, summary.rejected
        );
    }
    Ok(())
}
