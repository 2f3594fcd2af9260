//! Per-caller request rate limits: a token bucket per API token or console session, in this
//! replica's memory.
//!
//! ```text
//!  request ─▶ authenticated as token T ─▶ bucket(T): refilled at `requests_per_second`, holds
//!             at most `burst` ─▶ a request takes one ─▶ none left: 429, Retry-After: seconds
//!             until one is back
//! ```
//! Each replica counts on its own: behind a balancer spreading one caller over N replicas the
//! caller gets up to N times the rate. Buckets of callers gone quiet (full again) are dropped
//! once there are many, so memory stays bounded by the callers active in the last moments.
//!
//! ```toml
//! [limits]
//! requests_per_second = 100   # CLOUD_LIMITS_REQUESTS_PER_SECOND: per token or session; 0: no limit
//! burst = 1000                # CLOUD_LIMITS_BURST: requests at once before the rate applies
//! ```

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// `[limits]` configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Sustained requests per second per token or session; 0 turns the limit off.
    pub requests_per_second: u32,
    /// Requests a quiet caller may make at once.
    pub burst: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self { requests_per_second: 100, burst: 1000 }
    }
}

/// Who a bucket belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallerKey {
    Token(uuid::Uuid),
    Session(uuid::Uuid),
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Buckets kept before the full ones are swept out.
const SWEEP_ABOVE: usize = 10_000;

/// The rate limiter of one replica.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<CallerKey, Bucket>>,
}

impl RateLimiter {
    pub fn new(config: &LimitsConfig) -> Self {
        Self {
            rate: f64::from(config.requests_per_second),
            burst: f64::from(config.burst.max(1)),
            buckets: Mutex::default(),
        }
    }

    /// Takes one request from `key`'s bucket; `Err(wait)` when it is empty, with how long
    /// until a request is allowed again.
    pub fn admit(&self, key: CallerKey) -> Result<(), Duration> {
        self.admit_at(key, Instant::now())
    }

    fn admit_at(&self, key: CallerKey, now: Instant) -> Result<(), Duration> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() > SWEEP_ABOVE {
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, b| b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate < burst);
        }
        let bucket = buckets.entry(key).or_insert(Bucket { tokens: self.burst, at: now });
        let refilled = now.saturating_duration_since(bucket.at).as_secs_f64() * self.rate;
        bucket.tokens = (bucket.tokens + refilled).min(self.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / self.rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate_and_each_caller_on_its_own() {
        let limiter = RateLimiter::new(&LimitsConfig { requests_per_second: 10, burst: 3 });
        let (a, b) = (CallerKey::Token(uuid::Uuid::new_v4()), CallerKey::Session(uuid::Uuid::new_v4()));
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.admit_at(a, t0), Ok(()));
        }
        let wait = limiter.admit_at(a, t0).expect_err("the burst is spent");
        assert!(wait > Duration::from_millis(90) && wait <= Duration::from_millis(100), "{wait:?}");
        // Another caller is not held back by the first.
        assert_eq!(limiter.admit_at(b, t0), Ok(()));
        // One request back after a tenth of a second, not two.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(limiter.admit_at(a, t1), Ok(()));
        assert!(limiter.admit_at(a, t1).is_err());
        // A quiet caller's bucket fills up to the burst, no further.
        let t2 = t1 + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(limiter.admit_at(a, t2), Ok(()));
        }
        assert!(limiter.admit_at(a, t2).is_err());
    }

    #[test]
    fn zero_means_no_limit() {
        let limiter = RateLimiter::new(&LimitsConfig { requests_per_second: 0, burst: 1 });
        let key = CallerKey::Token(uuid::Uuid::new_v4());
        assert!((0..10_000).all(|_| limiter.admit(key).is_ok()));
    }

    #[test]
    fn quiet_callers_are_swept_out() {
        let limiter = RateLimiter::new(&LimitsConfig { requests_per_second: 1000, burst: 2 });
        let t0 = Instant::now();
        for _ in 0..=SWEEP_ABOVE {
            assert_eq!(limiter.admit_at(CallerKey::Token(uuid::Uuid::new_v4()), t0), Ok(()));
        }
        assert_eq!(limiter.admit_at(CallerKey::Token(uuid::Uuid::new_v4()), t0 + Duration::from_secs(1)), Ok(()));
        assert_eq!(limiter.buckets.lock().map(|b| b.len()).unwrap_or_default(), 1);
    }
}
