//! Token buckets: per API key, and per source address for connection attempts and failed
//! handshakes.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A token bucket refilled at `rate` per second up to `burst`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    /// A full bucket.
    pub(crate) fn full(burst: f64, now: Instant) -> Bucket {
        Bucket {
            tokens: burst,
            last: now,
        }
    }

    /// Takes one token, or says how long until one is available.
    pub(crate) fn take(&mut self, rate: f64, burst: f64, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - self.tokens) / rate.max(f64::MIN_POSITIVE);
            Err(Duration::from_secs_f64(wait.min(3600.0)))
        }
    }

    /// True when at least one token is available (without taking it).
    pub(crate) fn has_token(&mut self, rate: f64, burst: f64, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.last = now;
        self.tokens >= 1.0
    }
}

const SHARDS: usize = 16;
/// Addresses remembered per shard before the shard is reset (bounds memory under a flood of
/// distinct addresses; a reset only forgives, it never blocks anyone).
const MAX_PER_SHARD: usize = 8192;

/// Buckets per source address.
pub struct AddressLimiter {
    rate: f64,
    burst: f64,
    shards: Vec<Mutex<HashMap<IpAddr, Bucket>>>,
    hasher: RandomState,
}

impl AddressLimiter {
    /// A limiter allowing `rate` events per second per address with bursts of `burst`;
    /// a rate of 0 disables it.
    pub fn new(rate: f64, burst: f64) -> Self {
        AddressLimiter {
            rate,
            burst: burst.max(1.0),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
        }
    }

    fn with<T>(&self, ip: IpAddr, f: impl FnOnce(&mut Bucket) -> T) -> T {
        let shard = (self.hasher.hash_one(ip) as usize) % SHARDS;
        let mut map = self.shards[shard].lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_PER_SHARD && !map.contains_key(&ip) {
            map.clear();
        }
        let now = Instant::now();
        let bucket = map
            .entry(ip)
            .or_insert_with(|| Bucket::full(self.burst, now));
        f(bucket)
    }

    /// Counts one event from `ip`; false when over the limit.
    pub fn allow(&self, ip: IpAddr) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        self.with(ip, |b| {
            b.take(self.rate, self.burst, Instant::now()).is_ok()
        })
    }

    /// True while `ip` still has budget (does not count an event).
    pub fn has_budget(&self, ip: IpAddr) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        self.with(ip, |b| b.has_token(self.rate, self.burst, Instant::now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_refills_at_its_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::full(2.0, t0);
        assert!(b.take(1.0, 2.0, t0).is_ok());
        assert!(b.take(1.0, 2.0, t0).is_ok());
        let wait = b.take(1.0, 2.0, t0).unwrap_err();
        assert!(wait > Duration::from_millis(900) && wait <= Duration::from_secs(1));
        assert!(b.take(1.0, 2.0, t0 + Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn addresses_are_limited_separately() {
        let l = AddressLimiter::new(0.001, 2.0);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(l.allow(a) && l.allow(a));
        assert!(!l.allow(a));
        assert!(!l.has_budget(a));
        assert!(l.allow(b));
        assert!(AddressLimiter::new(0.0, 0.0).allow(a), "rate 0 disables");
    }
}
