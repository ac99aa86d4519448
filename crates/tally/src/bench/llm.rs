//! `tally bench llm`: loads synthetic events (a fifth of them LLM requests) plus one heavy user's
//! requests, starts the server, and times over HTTP what the LLM issue names: the heavy user's
//! summary and breakdown, their organization's summary, the models without a price, a page of
//! their history deep into it (by cursor), and OTLP ingestion
//! of GenAI spans from concurrent clients; on PostgreSQL also the same summary computed from the
//! raw rows with one `GROUP BY`, the approach of a SQL view.

use super::{Backends, Running, fresh_url, generate_chunk, median, ms, pg_client};
use crate::ingest::bulk::{BulkLoader, COMMIT_EVERY};
use clap::Args;
use jiff::{SignedDuration, Timestamp};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tally_domain::RawEvent;
use tally_domain::event::ValidationContext;
use tally_store::Store;

#[derive(Debug, Args)]
pub struct LlmArgs {
    /// Background events (a fifth of them LLM requests).
    #[arg(long, default_value_t = 2_000_000)]
    pub events: usize,
    /// LLM requests of the one heavy user.
    #[arg(long, default_value_t = 200_000)]
    pub heavy_requests: usize,
    #[arg(long, default_value_t = 2000)]
    pub organizations: usize,
    #[arg(long, default_value_t = 200_000)]
    pub users: usize,
    /// History depth (requests) before the timed page.
    #[arg(long, default_value_t = 100_000)]
    pub depth: usize,
    /// Spans sent to the OTLP endpoint.
    #[arg(long, default_value_t = 200_000)]
    pub spans: usize,
    #[arg(long, default_value_t = 20)]
    pub runs: usize,
    #[command(flatten)]
    pub backends: Backends,
}

const CHUNK: usize = 40_000;
const MODELS: [(&str, &str); 4] =
    [("gpt-4o-mini", "openai"), ("gpt-4o", "openai"), ("claude-3-5-sonnet", "anthropic"), ("gemini-1.5-pro", "google")];

fn heavy_line(i: usize, start: i64, rng: &mut StdRng) -> String {
    let ts = Timestamp::from_second(start + rng.random_range(0..90 * 86_400)).expect("in range");
    let (model, provider) = MODELS[i % MODELS.len()];
    format!(
        r#"{{"id":"h{i}","timestamp":"{ts}","organization_id":"org0","user_id":"heavy","type":"llm_request","model":"{model}","provider":"{provider}","status":"{}","input_tokens":{},"output_tokens":{},"cost":"0.00{}","latency_ms":{}}}"#,
        if i.is_multiple_of(17) { "error" } else { "success" },
        rng.random_range(10..4000),
        rng.random_range(0..1500),
        rng.random_range(100..999),
        rng.random_range(100..5000)
    )
}

async fn load(store: &dyn Store, args: &LlmArgs) -> anyhow::Result<f64> {
    let now = Timestamp::now();
    let known: HashSet<String> = store.usage_types().await?.into_iter().map(|t| t.key.to_string()).collect();
    let ctx = ValidationContext { now, known_types: &known };
    let validate = |line: &str| -> anyhow::Result<_> {
        RawEvent::from_json(line)
            .map_err(|e| anyhow::anyhow!("{}", e.message))?
            .validate(&ctx)
            .map_err(|e| anyhow::anyhow!("{}", e.message))
    };
    let started = Instant::now();
    let mut loader = BulkLoader::new(store, COMMIT_EVERY).await?;
    let mut first = 0;
    while first < args.events {
        let n = CHUNK.min(args.events - first);
        let events =
            generate_chunk(first, n, args.organizations, args.users).iter().map(|l| validate(l)).collect::<anyhow::Result<Vec<_>>>()?;
        loader.add(events).await?;
        first += n;
    }
    let start = now.as_second() - 90 * 86_400;
    let mut first = 0;
    while first < args.heavy_requests {
        let n = CHUNK.min(args.heavy_requests - first);
        let mut rng = StdRng::seed_from_u64(first as u64);
        let events = (first..first + n).map(|i| validate(&heavy_line(i, start, &mut rng))).collect::<anyhow::Result<Vec<_>>>()?;
        loader.add(events).await?;
        first += n;
    }
    loader.finish().await?;
    Ok(started.elapsed().as_secs_f64())
}

async fn timed_get(client: &reqwest::Client, url: &str, key: &str) -> anyhow::Result<(Duration, Value)> {
    let started = Instant::now();
    let response = client.get(url).bearer_auth(key).send().await?;
    anyhow::ensure!(response.status().is_success(), "{url} answered {}", response.status());
    let body: Value = response.json().await?;
    Ok((started.elapsed(), body))
}

fn otlp_export(first: usize, n: usize) -> Vec<u8> {
    let attr_s = |k: &str, v: &str| json!({"key": k, "value": {"stringValue": v}});
    let attr_i = |k: &str, v: i64| json!({"key": k, "value": {"intValue": v.to_string()}});
    let start = (Timestamp::now() - SignedDuration::from_hours(1)).as_nanosecond();
    let spans: Vec<Value> = (first..first + n)
        .map(|i| {
            let (model, provider) = MODELS[i % MODELS.len()];
            json!({"traceId": format!("{:032x}", i / 10 + 1), "spanId": format!("{:016x}", i + 1), "name": "chat", "kind": 3,
                   "startTimeUnixNano": (start + i as i128 * 1000).to_string(), "endTimeUnixNano": (start + i as i128 * 1000 + 350_000_000).to_string(),
                   "attributes": [attr_s("gen_ai.request.model", model), attr_s("gen_ai.provider.name", provider),
                                  attr_i("gen_ai.usage.input_tokens", 500 + (i % 900) as i64), attr_i("gen_ai.usage.output_tokens", (i % 300) as i64),
                                  attr_s("user.id", &format!("otlp-u{}", i % 5000)), attr_s("tally.organization_id", &format!("org{}", i % 50))]})
        })
        .collect();
    serde_json::to_vec(
        &json!({"resourceSpans": [{"resource": {"attributes": [attr_s("service.name", "bench")]}, "scopeSpans": [{"spans": spans}]}]}),
    )
    .expect("serializable")
}

/// The heavy user's summary as one `GROUP BY` over the raw rows.
const GROUP_BY: &str = "SELECT count(*), count(*) FILTER (WHERE status = 'success'), count(*) FILTER (WHERE status = 'error'), \
    sum(input_tokens), sum(output_tokens), sum(cost_nanos), avg(latency_ms), \
    percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms), min(ts), max(ts), count(DISTINCT date_trunc('day', ts)), \
    mode() WITHIN GROUP (ORDER BY model), mode() WITHIN GROUP (ORDER BY provider) \
    FROM events WHERE organization_id = 'org0' AND user_id = 'heavy' AND usage_type = 'llm_request'";

pub async fn run(args: LlmArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let backends = args.backends.list();
    println!("| backend | what | time |\n|---|---|---|");
    for (name, pg) in backends {
        let url = fresh_url(dir.path(), name, pg.as_deref(), "llm").await?;
        let store = tally_store::open(&url).await?;
        let secs = load(store.as_ref(), &args).await?;
        eprintln!("{name}: loaded {} events in {secs:.1} s", args.events + args.heavy_requests);
        // Statistics, as `tally serve` gathers them after start and every hour.
        store.refresh_statistics().await?;
        let running = Running::start(store.clone(), &url).await?;
        let (base, key) = (running.base.clone(), running.key.clone());
        let client = reqwest::Client::new();

        let reads = [
            ("heavy user's summary", "/v1/users/heavy/llm/summary"),
            ("heavy user's breakdown by model and provider", "/v1/users/heavy/llm/breakdown?by=model,provider"),
            ("the heavy user's organization's summary with top users", "/v1/organizations/org0/llm/summary"),
            ("models without a price, all organizations", "/v1/llm/unpriced-models"),
        ];
        for (what, path) in reads {
            let mut samples = Vec::new();
            let mut requests = 0;
            for _ in 0..args.runs {
                let (d, body) = timed_get(&client, &format!("{base}{path}"), &key).await?;
                samples.push(d);
                requests = body["summary"]["total_requests"].as_u64().unwrap_or(requests);
            }
            let shown = if requests > 0 { format!(" ({requests} requests)") } else { String::new() };
            println!("| {name} | {what}{shown}, median of {} | {:.1} ms |", args.runs, ms(median(&samples)));
        }

        // Walk the history by cursor to the asked depth, then time the next pages.
        let mut cursor: Option<String> = None;
        let mut walked = 0;
        while walked < args.depth {
            let page = format!(
                "{base}/v1/users/heavy/llm/requests?limit=1000{}",
                cursor.as_ref().map_or(String::new(), |c| format!("&cursor={c}"))
            );
            let (_, body) = timed_get(&client, &page, &key).await?;
            walked += body["results"].as_array().map_or(0, Vec::len);
            cursor = body["next_cursor"].as_str().map(str::to_owned);
            anyhow::ensure!(cursor.is_some(), "the history ended after {walked} requests");
        }
        let mut samples = Vec::new();
        for _ in 0..args.runs {
            let page = format!("{base}/v1/users/heavy/llm/requests?limit=50&cursor={}", cursor.as_deref().unwrap_or_default());
            samples.push(timed_get(&client, &page, &key).await?.0);
        }
        println!("| {name} | history page of 50 at cursor depth {walked}, median of {} | {:.1} ms |", args.runs, ms(median(&samples)));

        // OTLP: JSON exports of 1,000 spans from 4 clients.
        let bodies: Arc<Vec<Vec<u8>>> =
            Arc::new((0..args.spans.div_ceil(1000)).map(|b| otlp_export(b * 1000, 1000.min(args.spans - b * 1000))).collect());
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let (bodies, next, client, key, base) = (bodies.clone(), next.clone(), client.clone(), key.clone(), base.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(body) = bodies.get(i) else { return Ok::<(), anyhow::Error>(()) };
                    let response = client
                        .post(format!("{base}/v1/otlp/v1/traces"))
                        .bearer_auth(&key)
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .await?;
                    anyhow::ensure!(response.status().is_success(), "OTLP answered {}", response.status());
                }
            }));
        }
        for t in tasks {
            t.await??;
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "| {name} | OTLP/HTTP JSON ingest, {} GenAI spans in exports of 1,000 from 4 clients | {:.0} spans/s |",
            args.spans,
            args.spans as f64 / secs
        );

        running.stop().await?;
        if pg.is_some() {
            let client = pg_client(&url).await?;
            let mut samples = Vec::new();
            for _ in 0..args.runs.min(5) {
                let started = Instant::now();
                client.query(GROUP_BY, &[]).await?;
                samples.push(started.elapsed());
            }
            println!("| {name} | reference: the heavy user's summary as one GROUP BY over raw rows | {:.1} ms |", ms(median(&samples)));
        }
    }
    Ok(())
}
