//! Webhook signatures and retry timing. Signatures follow the Standard Webhooks scheme (as Svix
//! and the receivers built for it verify): `webhook-id`, `webhook-timestamp` (Unix seconds) and
//! `webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`, with a `whsec_` secret.
//! The timestamp is inside what is signed, so a receiver can refuse old deliveries (replays).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use jiff::{SignedDuration, Timestamp};
use sha2::Sha256;

const SECRET_PREFIX: &str = "whsec_";
/// Receivers should refuse deliveries whose timestamp is further than this from their clock.
pub const TOLERANCE: SignedDuration = SignedDuration::from_mins(5);
/// A delivery is retried for this long after it was queued, then given up.
pub const GIVE_UP_AFTER: SignedDuration = SignedDuration::from_hours(24);
/// The longest wait between two attempts.
const MAX_BACKOFF: SignedDuration = SignedDuration::from_hours(1);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the secret must be `whsec_` followed by base64 of 24 to 64 bytes")]
    BadSecret,
    #[error("the timestamp is too far from now")]
    Stale,
    #[error("no signature matches")]
    Mismatch,
}

/// A signing secret, as shown to the receiver (`whsec_…`).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

impl Secret {
    pub fn generate() -> Secret {
        Secret(rand::random::<[u8; 32]>().to_vec())
    }

    pub fn parse(text: &str) -> Result<Secret, SignatureError> {
        let encoded = text.strip_prefix(SECRET_PREFIX).ok_or(SignatureError::BadSecret)?;
        let bytes = STANDARD.decode(encoded).map_err(|_| SignatureError::BadSecret)?;
        if !(24..=64).contains(&bytes.len()) {
            return Err(SignatureError::BadSecret);
        }
        Ok(Secret(bytes))
    }

    pub fn expose(&self) -> String {
        format!("{SECRET_PREFIX}{}", STANDARD.encode(&self.0))
    }

    fn mac(&self, id: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    /// The `webhook-signature` header value for this delivery.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        format!("v1,{}", STANDARD.encode(self.mac(id, timestamp, body).finalize().into_bytes()))
    }

    /// Checks a delivery as a receiver does: the timestamp within [`TOLERANCE`] of `now`, and
    /// one of the space-separated `v1,` signatures matching (compared in constant time).
    pub fn verify(&self, id: &str, timestamp: &str, signatures: &str, body: &[u8], now: Timestamp) -> Result<(), SignatureError> {
        let ts: i64 = timestamp.trim().parse().map_err(|_| SignatureError::Stale)?;
        if (now.as_second() - ts).abs() > TOLERANCE.as_secs() {
            return Err(SignatureError::Stale);
        }
        let matches = signatures
            .split_whitespace()
            .filter_map(|s| s.strip_prefix("v1,"))
            .any(|encoded| STANDARD.decode(encoded).is_ok_and(|sig| self.mac(id, ts, body).verify_slice(&sig).is_ok()));
        if matches { Ok(()) } else { Err(SignatureError::Mismatch) }
    }
}

/// When to try a failed delivery again: `first_retry` doubled per attempt made, at most an hour
/// apart, with up to a tenth of jitter so retries from one outage spread out; `None` once the
/// delivery is older than [`GIVE_UP_AFTER`].
pub fn next_attempt(queued_at: Timestamp, attempts: u32, now: Timestamp, first_retry: SignedDuration, jitter: f64) -> Option<Timestamp> {
    let doubled = first_retry.as_secs_f64() * 2f64.powi(attempts.saturating_sub(1).min(30) as i32);
    let wait = doubled.min(MAX_BACKOFF.as_secs_f64()) * (1.0 + jitter.clamp(0.0, 1.0) / 10.0);
    let at = now + SignedDuration::from_secs_f64(wait);
    (at <= queued_at + GIVE_UP_AFTER).then_some(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_match_the_standard_webhooks_reference() {
        // The example of the Standard Webhooks specification.
        let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        let sig = secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        let now = Timestamp::from_second(1614265330 + 60).unwrap();
        assert_eq!(secret.verify("msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", &format!("v1,bogus {sig}"), body, now), Ok(()));
        assert_eq!(secret.verify("msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", &sig, b"{}", now), Err(SignatureError::Mismatch));
        let later = Timestamp::from_second(1614265330 + 3600).unwrap();
        assert_eq!(secret.verify("msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", &sig, body, later), Err(SignatureError::Stale));
    }

    #[test]
    fn secrets_round_trip_and_reject_junk() {
        let s = Secret::generate();
        assert_eq!(Secret::parse(&s.expose()).unwrap(), s);
        assert_eq!(Secret::parse("hunter2"), Err(SignatureError::BadSecret));
        assert_eq!(Secret::parse("whsec_c2hvcnQ="), Err(SignatureError::BadSecret));
    }

    #[test]
    fn retries_back_off_then_give_up() {
        let queued: Timestamp = "2026-11-22T00:00:00Z".parse().unwrap();
        let first = SignedDuration::from_secs(5);
        let wait = |attempts, now: Timestamp| next_attempt(queued, attempts, now, first, 0.0).map(|t| t.duration_since(now).as_secs());
        assert_eq!(wait(1, queued), Some(5));
        assert_eq!(wait(3, queued), Some(20));
        assert_eq!(wait(20, queued), Some(3600), "at most an hour apart");
        assert_eq!(wait(20, queued + SignedDuration::from_hours(23)), Some(3600));
        assert_eq!(wait(20, queued + SignedDuration::from_mins(23 * 60 + 30)), None, "past 24 hours it is given up");
    }
}
