//! A store around another, for tests and benchmarks: it sees every key
//! read whole, and may answer a listing of its own.

use std::sync::Arc;
use std::time::Duration;

use coffer::repo::store::{ObjectMeta, Store, StoreError, Thaw, ThawSpeed};

type Listing = dyn Fn(&str) -> Option<Vec<ObjectMeta>> + Send + Sync;

pub struct Around {
    pub inner: Arc<dyn Store>,
    /// Called with each key read whole.
    pub on_get: Box<dyn Fn(&str) + Send + Sync>,
    /// The listing of a prefix, when this store answers it itself.
    pub listing: Box<Listing>,
}

impl Around {
    /// `inner`, unchanged: set what to see.
    pub fn new(inner: Arc<dyn Store>) -> Around {
        Around {
            inner,
            on_get: Box::new(|_| {}),
            listing: Box::new(|_| None),
        }
    }
}

impl Store for Around {
    fn put(&self, key: &str, data: &[u8]) -> Result<(), StoreError> {
        self.inner.put(key, data)
    }
    fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        (self.on_get)(key);
        self.inner.get(key)
    }
    fn get_range(&self, key: &str, range: std::ops::Range<u64>) -> Result<Vec<u8>, StoreError> {
        self.inner.get_range(key, range)
    }
    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        match (self.listing)(prefix) {
            Some(listed) => Ok(listed),
            None => self.inner.list(prefix),
        }
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
    fn immutable_for(&self) -> Option<Duration> {
        self.inner.immutable_for()
    }
    fn thaw(&self, key: &str, days: u32, speed: ThawSpeed) -> Result<Thaw, StoreError> {
        self.inner.thaw(key, days, speed)
    }
}
