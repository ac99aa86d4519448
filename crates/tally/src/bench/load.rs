//! `tally bench load`: minutes of mixed load on a running server — ingestion from several
//! clients while others read every kind of endpoint — with throughput and p50/p99 latency per
//! endpoint, and the process's memory sampled every second to show it stays flat. Then an
//! overload phase: more concurrent requests than the server serves at once, to show that the
//! excess is answered at once (503 or 429 with `Retry-After`) rather than left to time out.

use super::{Backends, Running};
use clap::Args;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tally_domain::Scope;

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Length of the mixed load.
    #[arg(long, default_value_t = 300)]
    pub seconds: u64,
    /// Clients posting events.
    #[arg(long, default_value_t = 4)]
    pub ingest_clients: usize,
    /// Events per ingest request.
    #[arg(long, default_value_t = 500)]
    pub batch: usize,
    /// Clients reading, each going round every read endpoint.
    #[arg(long, default_value_t = 4)]
    pub query_clients: usize,
    /// Length of the overload phase (0: none).
    #[arg(long, default_value_t = 20)]
    pub overload_seconds: u64,
    /// Concurrent requests in the overload phase (the server serves 64 at once by default).
    #[arg(long, default_value_t = 800)]
    pub overload_connections: usize,
    #[command(flatten)]
    pub backends: Backends,
}

/// Which key a read uses: the operator's, an organization's or a user's.
#[derive(Clone, Copy)]
enum As {
    Admin,
    Org,
    User,
}

/// The reads, over the demo data (organization `acme`, user `acme-u01`).
const READS: &[(&str, As)] = &[
    ("/v1/usage?organization_id=acme&usage_type=submission&interval=day&date_from=-30d", As::Admin),
    ("/v1/usage?breakdowns=[\"type\",\"team\"]&interval=week&date_from=-12w", As::Org),
    ("/v1/spend?organization_id=acme&interval=month&date_from=-3m", As::Admin),
    ("/v1/organizations/acme/usage/totals", As::Org),
    ("/v1/users/acme-u01/usage/totals", As::User),
    ("/v1/user-reports?q=is_active:true&ordering=-service_usage__submission__current_period&limit=50", As::Admin),
    ("/v1/user-reports?q=service_usage__balances__submission__balance_percent__gte:10", As::Admin),
    ("/v1/users/acme-u01/llm/summary", As::User),
    ("/v1/users/acme-u01/llm/breakdown?by=model,provider", As::User),
    ("/v1/users/acme-u01/llm/monthly", As::User),
    ("/v1/users/acme-u01/llm/requests?limit=50", As::User),
    ("/v1/organizations/acme/llm/summary?top=10", As::Org),
    ("/v1/llm/activity?limit=50", As::Admin),
    ("/v1/llm/unpriced-models", As::Admin),
    ("/v1/organizations/acme/seats", As::Org),
    ("/v1/organizations/acme/license-ledger", As::Org),
    ("/v1/organizations/acme/invoice-preview", As::Org),
    ("/v1/reports/churn", As::Admin),
    ("/v1/reports/churn/risers?min_increase=5", As::Admin),
    ("/v1/alerts?status=open", As::Admin),
    ("/v1/users/acme-u01/entitlements", As::Org),
    ("/v1/users?organization_id=acme&limit=100", As::Org),
    ("/v1/organizations", As::Admin),
    ("/compat/openmeter/api/v1/meters", As::Org),
];

/// Latencies in microseconds per endpoint, and answers by status.
#[derive(Default)]
struct Tally {
    latencies: HashMap<String, Vec<u32>>,
    statuses: HashMap<(String, u16), u64>,
    /// Refusals (429/503) without `Retry-After`, and requests that got no answer at all.
    without_retry_after: u64,
    failures: u64,
}

impl Tally {
    fn record(&mut self, name: &str, took: Duration, status: u16, retry_after: bool) {
        self.latencies.entry(name.to_owned()).or_default().push(u32::try_from(took.as_micros()).unwrap_or(u32::MAX));
        *self.statuses.entry((name.to_owned(), status)).or_default() += 1;
        if matches!(status, 429 | 503) && !retry_after {
            self.without_retry_after += 1;
        }
    }

    fn merge(&mut self, other: Tally) {
        for (k, mut v) in other.latencies {
            self.latencies.entry(k).or_default().append(&mut v);
        }
        for (k, v) in other.statuses {
            *self.statuses.entry(k).or_default() += v;
        }
        self.without_retry_after += other.without_retry_after;
        self.failures += other.failures;
    }
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    f64::from(sorted[rank.clamp(1, sorted.len()) - 1]) / 1000.0
}

/// The resident memory of this process now, in MB.
fn rss_mb() -> f64 {
    super::memory_mb("VmRSS:").unwrap_or(0.0)
}

pub async fn run(args: LoadArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let backends = args.backends.list();
    for (name, pg) in backends {
        let url = super::fresh_url(dir.path(), name, pg.as_deref(), "load").await?;
        one_backend(name, &url, &args).await?;
    }
    Ok(())
}

async fn one_backend(backend: &str, url: &str, args: &LoadArgs) -> anyhow::Result<()> {
    let store = tally_store::open(url).await?;
    let demo = crate::demo::load(store.as_ref()).await?;
    eprintln!("{backend}: {demo}");
    let before = store.event_count().await?;
    let running = Running::start(store.clone(), url).await?;
    let keys = Arc::new([
        running.key.clone(),
        crate::cli::create_key(store.as_ref(), Scope::Organization(tally_domain::OrganizationId::parse("acme")?), "load").await?.1,
        crate::cli::create_key(store.as_ref(), Scope::User(tally_domain::UserId::parse("acme-u01")?), "load").await?.1,
    ]);
    let base = running.base.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(AtomicU64::new(0));
    let started = Instant::now();

    let memory = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut samples = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                samples.push((started.elapsed().as_secs_f64(), rss_mb()));
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            samples
        })
    };
    let mut tasks = Vec::new();
    for client in 0..args.ingest_clients {
        let (base, keys, stop, acknowledged, batch) = (base.clone(), keys.clone(), stop.clone(), acknowledged.clone(), args.batch);
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut tally = Tally::default();
            let mut seq = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let body = events(client, seq, batch);
                let sent = Instant::now();
                match http
                    .post(format!("{base}/v1/events"))
                    .bearer_auth(&keys[0])
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                {
                    Ok(answer) => {
                        let status = answer.status().as_u16();
                        let retry_after = answer.headers().get("retry-after").and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
                        let _ = answer.bytes().await;
                        tally.record("POST /v1/events", sent.elapsed(), status, retry_after.is_some());
                        if status == 200 {
                            acknowledged.fetch_add(batch as u64, Ordering::Relaxed);
                            seq += 1;
                        } else if let Some(wait) = retry_after {
                            tokio::time::sleep(Duration::from_secs(wait)).await;
                        }
                    }
                    Err(_) => tally.failures += 1,
                }
            }
            tally
        }));
    }
    for client in 0..args.query_clients {
        let (base, keys, stop) = (base.clone(), keys.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut tally = Tally::default();
            let mut i = client * 7;
            while !stop.load(Ordering::Relaxed) {
                let (path, who) = READS[i % READS.len()];
                i += 1;
                let key = &keys[who as usize];
                let sent = Instant::now();
                match http.get(format!("{base}{path}")).bearer_auth(key).send().await {
                    Ok(answer) => {
                        let status = answer.status().as_u16();
                        let retry_after = answer.headers().contains_key("retry-after");
                        let _ = answer.bytes().await;
                        let name = format!("GET {}", path.split('?').next().unwrap_or(path));
                        tally.record(&name, sent.elapsed(), status, retry_after);
                    }
                    Err(_) => tally.failures += 1,
                }
            }
            tally
        }));
    }
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut tally = Tally::default();
    for task in tasks {
        tally.merge(task.await?);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let samples = memory.await?;
    let overload = if args.overload_seconds > 0 { Some(overload(&base, &keys, args).await) } else { None };
    running.stop().await?;
    let stored = store.event_count().await?;
    let sent = acknowledged.load(Ordering::Relaxed);
    anyhow::ensure!(stored == before + sent, "{backend}: {stored} events stored, {before} demo + {sent} acknowledged");

    report(backend, args, elapsed, &tally, sent, &samples);
    if let Some(o) = overload {
        println!(
            "\nOverload ({} s, {} concurrent requests of `GET /v1/user-reports`): {} answered 200 (p99 {:.0} ms), {} shed with 503, {} limited with 429, {} refusals without Retry-After, {} without an answer in 10 s, {} others",
            args.overload_seconds, args.overload_connections, o.ok, o.p99_ms, o.shed, o.limited, o.without_retry_after, o.timeouts, o.other
        );
    }
    Ok(())
}

/// A batch of `n` new events for the demo's organizations and users, ids unique per client.
fn events(client: usize, seq: usize, n: usize) -> String {
    let now = jiff::Timestamp::now();
    let orgs = [("acme", 24), ("globex", 16), ("initech", 8), ("umbrella", 14)];
    let lines: Vec<String> = (0..n)
        .map(|i| {
            let (org, users) = orgs[(seq + i) % orgs.len()];
            let user = (i * 7 + seq) % users;
            if i % 5 == 0 {
                format!(
                    r#"{{"id":"load-{client}-{seq}-{i}","timestamp":"{now}","organization_id":"{org}","user_id":"{org}-u{user:02}","type":"llm_request","model":"gpt-4o-mini","provider":"openai","status":"success","input_tokens":{},"output_tokens":{},"latency_ms":{}}}"#,
                    100 + i,
                    20 + i % 50,
                    300 + i % 900
                )
            } else {
                let kind = ["api_call", "submission", "login", "asr_seconds"][i % 4];
                format!(r#"{{"id":"load-{client}-{seq}-{i}","timestamp":"{now}","organization_id":"{org}","user_id":"{org}-u{user:02}","type":"{kind}","quantity":{}}}"#, 1 + i % 9)
            }
        })
        .collect();
    format!("[{}]", lines.join(","))
}

fn report(backend: &str, args: &LoadArgs, elapsed: f64, tally: &Tally, events: u64, samples: &[(f64, f64)]) {
    println!(
        "\n### {backend}: {:.0} s, {} ingest clients × {} events/request, {} query clients\n",
        elapsed, args.ingest_clients, args.batch, args.query_clients
    );
    println!("| endpoint | requests | per second | p50 ms | p99 ms | max ms | answers |\n|---|---|---|---|---|---|---|");
    let mut names: Vec<&String> = tally.latencies.keys().collect();
    names.sort();
    let mut total = 0;
    for name in names {
        let mut l = tally.latencies[name].clone();
        l.sort_unstable();
        total += l.len();
        let mut answers: Vec<String> =
            tally.statuses.iter().filter(|((n, _), _)| n == name).map(|((_, status), count)| format!("{count}× {status}")).collect();
        answers.sort();
        println!(
            "| `{name}` | {} | {:.1} | {:.1} | {:.1} | {:.1} | {} |",
            l.len(),
            l.len() as f64 / elapsed,
            percentile(&l, 50.0),
            percentile(&l, 99.0),
            percentile(&l, 100.0),
            answers.join(", ")
        );
    }
    println!(
        "\n{total} requests ({:.0}/s), {events} events ingested ({:.0}/s), {} refusals without Retry-After, {} requests without an answer",
        total as f64 / elapsed,
        events as f64 / elapsed,
        tally.without_retry_after,
        tally.failures
    );
    let window = |from: f64, to: f64| {
        let in_window: Vec<f64> = samples.iter().filter(|(t, _)| (from..to).contains(t)).map(|(_, m)| *m).collect();
        in_window.iter().sum::<f64>() / in_window.len().max(1) as f64
    };
    let peak = samples.iter().map(|(_, m)| *m).fold(0.0, f64::max);
    let span = elapsed;
    let (early, late) = (window(span * 0.2, span * 0.4), window(span * 0.8, span));
    println!(
        "Memory (RSS of the process: server and load generator): peak {peak:.0} MB; mean {early:.0} MB from {:.0} to {:.0} s, {late:.0} MB from {:.0} to {:.0} s ({:+.1}%)",
        span * 0.2,
        span * 0.4,
        span * 0.8,
        span,
        (late - early) / early.max(1.0) * 100.0
    );
    // The curve itself: whether memory levels off shows only over the whole run.
    let minutes: Vec<String> =
        (0..(span / 60.0).floor() as usize).map(|m| format!("{:.0}", window(m as f64 * 60.0, (m + 1) as f64 * 60.0))).collect();
    println!("Mean RSS per minute (MB): {}", minutes.join(", "));
}

struct Overload {
    ok: u64,
    shed: u64,
    limited: u64,
    other: u64,
    timeouts: u64,
    without_retry_after: u64,
    p99_ms: f64,
}

/// `connections` requests at a time, each sent again as soon as it is answered.
async fn overload(base: &str, keys: &Arc<[String; 3]>, args: &LoadArgs) -> Overload {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(args.overload_connections)
        .build()
        .expect("client");
    let until = Instant::now() + Duration::from_secs(args.overload_seconds);
    let tasks: Vec<_> = (0..args.overload_connections)
        .map(|_| {
            let (http, url, key) = (http.clone(), format!("{base}/v1/user-reports?limit=100"), keys[0].clone());
            tokio::spawn(async move {
                let mut tally = Tally::default();
                while Instant::now() < until {
                    let sent = Instant::now();
                    match http.get(&url).bearer_auth(&key).send().await {
                        Ok(answer) => {
                            let status = answer.status().as_u16();
                            let retry_after = answer.headers().contains_key("retry-after");
                            let _ = answer.bytes().await;
                            tally.record("overload", sent.elapsed(), status, retry_after);
                            if matches!(status, 429 | 503) {
                                tokio::time::sleep(Duration::from_millis(200)).await;
                            }
                        }
                        Err(_) => tally.failures += 1,
                    }
                }
                tally
            })
        })
        .collect();
    let mut tally = Tally::default();
    for t in tasks {
        if let Ok(t) = t.await {
            tally.merge(t);
        }
    }
    let count = |s: u16| tally.statuses.get(&("overload".to_owned(), s)).copied().unwrap_or(0);
    let all: u64 = tally.statuses.values().sum();
    let mut ok_latencies = tally.latencies.remove("overload").unwrap_or_default();
    ok_latencies.sort_unstable();
    Overload {
        ok: count(200),
        shed: count(503),
        limited: count(429),
        other: all - count(200) - count(503) - count(429),
        timeouts: tally.failures,
        without_retry_after: tally.without_retry_after,
        p99_ms: percentile(&ok_latencies, 99.0),
    }
}
