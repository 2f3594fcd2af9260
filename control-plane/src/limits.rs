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
//! Console and tunnel WebSockets are capped by how many are open at once, per instance and per
//! token or session (this replica's), and each is closed after `websocket_idle_secs` without a
//! frame either way.
//!
//! ```toml
//! [limits]
//! requests_per_second = 100   # CLOUD_LIMITS_REQUESTS_PER_SECOND: per token or session; 0: no limit
//! burst = 1000                # CLOUD_LIMITS_BURST: requests at once before the rate applies
//! websockets_per_instance = 8 # CLOUD_LIMITS_WEBSOCKETS_PER_INSTANCE: consoles and tunnels open at once
//! websockets_per_caller = 16  # CLOUD_LIMITS_WEBSOCKETS_PER_CALLER: per token or session
//! websocket_idle_secs = 900   # CLOUD_LIMITS_WEBSOCKET_IDLE_SECS: closed after this long quiet; 0: never
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
    /// Console and tunnel WebSockets open at once to one instance.
    pub websockets_per_instance: u32,
    /// Console and tunnel WebSockets open at once for one token or session.
    pub websockets_per_caller: u32,
    /// Seconds without a frame either way after which a WebSocket is closed; 0: never.
    pub websocket_idle_secs: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            requests_per_second: 100,
            burst: 1000,
            websockets_per_instance: 8,
            websockets_per_caller: 16,
            websocket_idle_secs: 900,
        }
    }
}

impl LimitsConfig {
    /// How long a WebSocket may stay quiet (`None`: forever).
    pub fn websocket_idle(&self) -> Option<Duration> {
        (self.websocket_idle_secs > 0).then(|| Duration::from_secs(u64::from(self.websocket_idle_secs)))
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

/// Why a WebSocket was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionCap {
    #[error("this instance already has {limit} console and tunnel connections open (limits.websockets_per_instance)")]
    Instance { limit: u32 },
    #[error(
        "this token or session already has {limit} console and tunnel connections open (limits.websockets_per_caller)"
    )]
    Caller { limit: u32 },
}

#[derive(Debug, Default)]
struct Open {
    instances: HashMap<String, u32>,
    callers: HashMap<CallerKey, u32>,
}

/// The console and tunnel WebSockets open on this replica.
#[derive(Debug, Clone)]
pub struct Connections {
    per_instance: u32,
    per_caller: u32,
    open: std::sync::Arc<Mutex<Open>>,
}

/// One open WebSocket: counted until dropped.
#[derive(Debug)]
pub struct ConnectionSlot {
    open: std::sync::Arc<Mutex<Open>>,
    instance: String,
    caller: Option<CallerKey>,
}

impl Connections {
    pub fn new(config: &LimitsConfig) -> Self {
        Self {
            per_instance: config.websockets_per_instance,
            per_caller: config.websockets_per_caller,
            open: std::sync::Arc::default(),
        }
    }

    /// A slot for one more WebSocket to `instance` by `caller`, if neither is at its cap.
    pub fn open(&self, instance: &str, caller: Option<CallerKey>) -> Result<ConnectionSlot, ConnectionCap> {
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if open.instances.get(instance).copied().unwrap_or(0) >= self.per_instance {
            return Err(ConnectionCap::Instance { limit: self.per_instance });
        }
        if let Some(key) = caller
            && open.callers.get(&key).copied().unwrap_or(0) >= self.per_caller
        {
            return Err(ConnectionCap::Caller { limit: self.per_caller });
        }
        *open.instances.entry(instance.to_owned()).or_default() += 1;
        if let Some(key) = caller {
            *open.callers.entry(key).or_default() += 1;
        }
        Ok(ConnectionSlot { open: self.open.clone(), instance: instance.to_owned(), caller })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        fn release<K: std::hash::Hash + Eq>(map: &mut HashMap<K, u32>, key: &K) {
            if let Some(n) = map.get_mut(key) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    map.remove(key);
                }
            }
        }
        release(&mut open.instances, &self.instance);
        if let Some(key) = &self.caller {
            release(&mut open.callers, key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate_and_each_caller_on_its_own() {
        let limiter = RateLimiter::new(&LimitsConfig { requests_per_second: 10, burst: 3, ..LimitsConfig::default() });
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
        let limiter = RateLimiter::new(&LimitsConfig { requests_per_second: 0, burst: 1, ..LimitsConfig::default() });
        let key = CallerKey::Token(uuid::Uuid::new_v4());
        assert!((0..10_000).all(|_| limiter.admit(key).is_ok()));
    }

    #[test]
    fn quiet_callers_are_swept_out() {
        let limiter =
            RateLimiter::new(&LimitsConfig { requests_per_second: 1000, burst: 2, ..LimitsConfig::default() });
        let t0 = Instant::now();
        for _ in 0..=SWEEP_ABOVE {
            assert_eq!(limiter.admit_at(CallerKey::Token(uuid::Uuid::new_v4()), t0), Ok(()));
        }
        assert_eq!(limiter.admit_at(CallerKey::Token(uuid::Uuid::new_v4()), t0 + Duration::from_secs(1)), Ok(()));
        assert_eq!(limiter.buckets.lock().map(|b| b.len()).unwrap_or_default(), 1);
    }

    #[test]
    fn websockets_are_capped_per_instance_and_per_caller_until_one_closes() {
        let config = LimitsConfig { websockets_per_instance: 2, websockets_per_caller: 3, ..LimitsConfig::default() };
        let connections = Connections::new(&config);
        let (alice, bob) = (Some(CallerKey::Token(uuid::Uuid::new_v4())), Some(CallerKey::Token(uuid::Uuid::new_v4())));
        let a1 = connections.open("web-1", alice).expect("first");
        let _a2 = connections.open("web-1", alice).expect("second");
        assert_eq!(connections.open("web-1", bob).err(), Some(ConnectionCap::Instance { limit: 2 }));
        let _a3 = connections.open("web-2", alice).expect("another instance");
        assert_eq!(connections.open("web-3", alice).err(), Some(ConnectionCap::Caller { limit: 3 }));
        // Closing one frees its place on both counts.
        drop(a1);
        let _b1 = connections.open("web-1", bob).expect("room again on web-1");
        let _a4 = connections.open("web-3", alice).expect("room again for alice");
        drop((_a2, _a3, _a4, _b1));
        let open = connections.open.lock().map(|o| (o.instances.len(), o.callers.len())).unwrap_or_default();
        assert_eq!(open, (0, 0), "nothing is left counted");
    }
}
