//! The delivery worker: claims due outbox rows, sends each to its channel (a signed webhook
//! POST, or a line in the server log), and records the attempt: delivered, due again after a
//! backoff, or given up after a day. A claim is a lease, so a worker that dies mid-delivery
//! leaves the row to be retried, and a row is never marked twice.

use super::Alerting;
use jiff::{SignedDuration, Timestamp};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tally_domain::alerts::webhook::{Secret, next_attempt};
use tally_domain::alerts::{Channel, ChannelKind, LOG_CHANNEL};
use tally_store::{Delivery, DeliveryAttempt, StoreError};

/// Rows claimed at a time; they are sent one after another.
const BATCH: u32 = 8;

/// How long a claimed row is this worker's before another may take it: long enough for the
/// whole batch to time out one by one, so two workers never send the same row.
fn lease(alerting: &Alerting) -> SignedDuration {
    SignedDuration::from_secs_f64(alerting.settings.webhook_timeout_seconds * f64::from(BATCH + 1) + 5.0)
}
/// How often the outbox is looked at when nothing rang.
const IDLE_POLL: Duration = Duration::from_secs(1);
/// Receivers' answers are kept in the attempt log up to this length.
const MAX_ERROR_CHARS: usize = 300;

pub async fn run(alerting: Arc<Alerting>) {
    let client = match http_client(&alerting) {
        Ok(c) => c,
        Err(error) => {
            tracing::error!(%error, "webhook client could not start; deliveries wait in the outbox");
            return;
        }
    };
    loop {
        match deliver_due(&alerting, &client).await {
            Ok(n) if n > 0 => continue,
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "delivery round failed"),
        }
        let _ = tokio::time::timeout(IDLE_POLL, alerting.wake_delivery.notified()).await;
    }
}

fn http_client(alerting: &Alerting) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs_f64(alerting.settings.webhook_timeout_seconds))
        // A receiver that redirects does not get the payload somewhere else.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("Tally-Webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Delivers what is due now; returns how many rows it tried.
pub async fn deliver_due(alerting: &Alerting, client: &reqwest::Client) -> Result<usize, StoreError> {
    let store = &alerting.store;
    let now = Timestamp::now();
    let due = store.claim_deliveries(now, now + lease(alerting), BATCH).await?;
    let tried = due.len();
    // A batch's deliveries mostly share a few channels: each is read once.
    let mut channels: HashMap<String, Option<(Channel, Option<String>)>> = HashMap::new();
    for delivery in due {
        if !channels.contains_key(&delivery.channel_id) {
            let found = match delivery.channel_id.as_str() {
                LOG_CHANNEL => Some((Channel::log(), None)),
                id => store.channel(id).await?,
            };
            channels.insert(delivery.channel_id.clone(), found);
        }
        let started = Instant::now();
        let outcome = match &channels[&delivery.channel_id] {
            None => Outcome::GiveUp("the channel no longer exists".to_owned()),
            Some((channel, secret)) => send(client, channel, secret.as_deref(), &delivery).await,
        };
        let at = Timestamp::now();
        let duration_ms = started.elapsed().as_millis() as u64;
        let (attempt, delivered, retry_at) = match outcome {
            Outcome::Delivered(status) => (DeliveryAttempt { at, status_code: status, error: None, duration_ms }, true, None),
            Outcome::Retry(status, error) => {
                let first = SignedDuration::from_secs_f64(alerting.settings.first_retry_seconds);
                let retry = next_attempt(delivery.created_at, delivery.attempts + 1, at, first, rand::random::<f64>());
                if retry.is_none() {
                    tracing::warn!(delivery = %delivery.id, channel = %delivery.channel_id, "delivery given up after 24 hours: {error}");
                }
                (DeliveryAttempt { at, status_code: status, error: Some(error), duration_ms }, false, retry)
            }
            Outcome::GiveUp(error) => (DeliveryAttempt { at, status_code: None, error: Some(error), duration_ms }, false, None),
        };
        store.record_delivery_attempt(&delivery, attempt, delivered, retry_at).await?;
    }
    Ok(tried)
}

enum Outcome {
    Delivered(Option<u16>),
    Retry(Option<u16>, String),
    GiveUp(String),
}

async fn send(client: &reqwest::Client, channel: &Channel, secret: Option<&str>, delivery: &Delivery) -> Outcome {
    match &channel.kind {
        ChannelKind::Log => {
            let alert = &delivery.payload["data"];
            tracing::warn!(
                target: "tally::alerts",
                event = %delivery.event_type,
                alert = %alert["id"].as_str().unwrap_or_default(),
                alert_type = %alert["alert_type"].as_str().unwrap_or_default(),
                severity = %alert["severity"].as_str().unwrap_or_default(),
                organization = %alert["organization_id"].as_str().unwrap_or("(system)"),
                user = %alert["user_id"].as_str().unwrap_or_default(),
                details = %alert["details"],
                "{}",
                delivery.event_type
            );
            Outcome::Delivered(None)
        }
        ChannelKind::Webhook { url } => {
            let body = delivery.payload.to_string();
            let timestamp = Timestamp::now().as_second();
            let mut request = client
                .post(url)
                .header("content-type", "application/json")
                .header("webhook-id", &delivery.id)
                .header("webhook-timestamp", timestamp.to_string());
            if let Some(secret) = secret.and_then(|s| Secret::parse(s).ok()) {
                request = request.header("webhook-signature", secret.sign(&delivery.id, timestamp, body.as_bytes()));
            }
            match request.body(body).send().await {
                Ok(response) if response.status().is_success() => Outcome::Delivered(Some(response.status().as_u16())),
                Ok(response) => {
                    let status = response.status().as_u16();
                    let text: String = response.text().await.unwrap_or_default().chars().take(MAX_ERROR_CHARS).collect();
                    Outcome::Retry(Some(status), format!("the receiver answered {status}: {text}"))
                }
                Err(e) if e.is_timeout() => Outcome::Retry(None, "the receiver did not answer in time".to_owned()),
                Err(e) => Outcome::Retry(None, format!("could not reach the receiver: {}", error_chain(&e))),
            }
        }
    }
}

/// An error with its causes, which is where reqwest keeps the useful part.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text.chars().take(MAX_ERROR_CHARS).collect()
}
