//! Requests per API key: a token bucket (GCRA, by `governor`) per key, so one runaway client
//! cannot starve the others. Beyond it a request gets 429 with `Retry-After`, before any work.

use super::error::ApiError;
use crate::config::RateLimit;
use axum::http::StatusCode;
use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use std::num::NonZeroU32;

pub struct KeyRateLimiter {
    limit: RateLimit,
    limiter: Option<RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock>>,
}

impl KeyRateLimiter {
    pub fn new(limit: RateLimit) -> Self {
        let limiter = NonZeroU32::new(limit.per_second).map(|rate| {
            let burst = NonZeroU32::new(limit.burst).unwrap_or(rate);
            RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        KeyRateLimiter { limit, limiter }
    }

    /// Takes one request from the key's bucket, or says how long until there is one.
    pub fn check(&self, key_id: &str) -> Result<(), ApiError> {
        let Some(limiter) = &self.limiter else { return Ok(()) };
        limiter.check_key(&key_id.to_owned()).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            let mut error = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                format!(
                    "this API key may make {} requests per second (bursts of {}); retry in {:.1} s",
                    self.limit.per_second,
                    self.limit.burst.max(self.limit.per_second),
                    wait.as_secs_f64()
                ),
            );
            // Whole seconds, rounded up: a client that waits that long gets through.
            error.retry_after = Some(u32::try_from(wait.as_millis().div_ceil(1000)).unwrap_or(u32::MAX).max(1));
            error
        })
    }

    /// Forgets keys whose buckets are full again, so the table holds only recently busy keys.
    pub fn forget_idle(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.retain_recent();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_gets_its_burst_then_429_with_retry_after_and_other_keys_are_untouched() {
        let limiter = KeyRateLimiter::new(RateLimit { per_second: 1, burst: 3 });
        for _ in 0..3 {
            limiter.check("a").unwrap();
        }
        let refused = limiter.check("a").unwrap_err();
        assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(refused.retry_after, Some(1));
        assert!(refused.detail.contains("1 requests per second (bursts of 3)"), "{}", refused.detail);
        limiter.check("b").unwrap();
    }

    #[test]
    fn zero_turns_the_limit_off() {
        let limiter = KeyRateLimiter::new(RateLimit { per_second: 0, burst: 0 });
        for _ in 0..10_000 {
            limiter.check("a").unwrap();
        }
    }
}
