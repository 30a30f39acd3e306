//! Bandwidth limits shared by every task that draws on them: a token
//! bucket per limit (a policy's `io_limit` on reads from the hosts, a tier's
//! `bandwidth` on writes to it). A task takes tokens for the bytes it is
//! about to move and sleeps when the bucket is empty; tasks that share a
//! limit share the bucket, so the limit holds for all of them together.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::repo::backup::DiskReader;
use crate::repo::store::{ObjectMeta, Store, StoreError, Thaw, ThawSpeed};

/// A token bucket of `rate` bytes per second with one second of burst.
#[derive(Debug)]
pub struct Throttle {
    rate: f64,
    state: Mutex<(f64, Instant)>,
}

impl Throttle {
    pub fn new(bytes_per_second: u64) -> Throttle {
        let rate = bytes_per_second.max(1) as f64;
        Throttle {
            rate,
            state: Mutex::new((rate, Instant::now())),
        }
    }

    /// Waits until `bytes` may pass.
    pub fn take(&self, bytes: u64) {
        let wait = {
            let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let refill = now.duration_since(s.1).as_secs_f64() * self.rate;
            s.0 = (s.0 + refill).min(self.rate);
            s.1 = now;
            s.0 -= bytes as f64;
            if s.0 >= 0.0 {
                Duration::ZERO
            } else {
                Duration::from_secs_f64(-s.0 / self.rate)
            }
        };
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }
}

/// The process-wide throttles, one per limited policy or tier, so every
/// task drawing on a limit shares one bucket.
static SHARED: Mutex<Vec<(String, std::sync::Arc<Throttle>)>> = Mutex::new(Vec::new());

fn shared(key: String, rate: u64) -> std::sync::Arc<Throttle> {
    let mut all = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, t)) = all.iter().find(|(k, _)| *k == key) {
        return t.clone();
    }
    let t = std::sync::Arc::new(Throttle::new(rate));
    all.push((key, t.clone()));
    t
}

/// The throttle of a policy's `io_limit`, when it has one.
pub fn policy_throttle(p: &crate::policy::model::Policy) -> Option<std::sync::Arc<Throttle>> {
    p.io_limit
        .map(|r| shared(format!("policy/{}", p.name), r.bytes_per_second))
}

/// The throttle of a tier's `bandwidth`, when it has one.
pub fn tier_throttle(t: &crate::policy::model::Tier) -> Option<std::sync::Arc<Throttle>> {
    t.bandwidth
        .map(|r| shared(format!("tier/{}", t.name), r.bytes_per_second))
}

/// A disk reader that draws on a throttle.
pub struct ThrottledReader<'a> {
    pub inner: &'a dyn DiskReader,
    pub throttle: &'a Throttle,
}

impl DiskReader for ThrottledReader<'_> {
    fn size_bytes(&self) -> u64 {
        self.inner.size_bytes()
    }
    fn read_shape(&self) -> crate::repo::backup::ReadShape {
        self.inner.read_shape()
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.throttle.take(buf.len() as u64);
        self.inner.read_exact_at(buf, offset)
    }
}

/// A store whose writes draw on a throttle.
pub struct ThrottledStore {
    pub inner: std::sync::Arc<dyn Store>,
    pub throttle: std::sync::Arc<Throttle>,
}

impl Store for ThrottledStore {
    fn put(&self, key: &str, data: &[u8]) -> Result<(), StoreError> {
        self.throttle.take(data.len() as u64);
        self.inner.put(key, data)
    }
    fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        self.inner.get(key)
    }
    fn get_range(&self, key: &str, range: std::ops::Range<u64>) -> Result<Vec<u8>, StoreError> {
        self.inner.get_range(key, range)
    }
    fn immutable_for(&self) -> Option<Duration> {
        self.inner.immutable_for()
    }
    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        self.inner.list(prefix)
    }
    fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.inner.delete(key)
    }
    fn flush(&self) -> Result<(), StoreError> {
        self.inner.flush()
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn incomplete(&self) -> Result<Vec<ObjectMeta>, StoreError> {
        self.inner.incomplete()
    }
    fn thaw(&self, key: &str, days: u32, speed: ThawSpeed) -> Result<Thaw, StoreError> {
        self.inner.thaw(key, days, speed)
    }
    fn remove_empty_dirs(
        &self,
        prefix: &str,
        grace: Duration,
        emptied: &[String],
    ) -> Result<usize, StoreError> {
        self.inner.remove_empty_dirs(prefix, grace, emptied)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_throttle_holds_its_rate_across_threads() {
        // 4 threads × 8 takes of 64 KiB = 2 MiB through 1 MiB/s with one
        // second of burst: at least one second (a lower bound only).
        let t = Throttle::new(1 << 20);
        let started = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..8 {
                        t.take(64 << 10);
                    }
                });
            }
        });
        assert!(
            started.elapsed() >= Duration::from_millis(950),
            "{:?}",
            started.elapsed()
        );
    }
}
