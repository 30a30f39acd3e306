//! Bytes moved so far by a running job (a backup's read from the host, a
//! restore's chunks written and files uploaded), counted by the job and
//! read about once a second by whoever draws progress
//! (`engine::observer::ProgressBoard`).

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// How far a job is: bytes done so far, and what it plans to move (0 until
/// known).
#[derive(Debug, Default)]
pub struct ReadProgress {
    pub read: AtomicU64,
    pub planned: AtomicU64,
}

impl ReadProgress {
    /// `n` more bytes done.
    pub fn add(&self, n: u64) {
        self.read.fetch_add(n, Ordering::Relaxed);
    }

    /// `n` more bytes to do.
    pub fn plan(&self, n: u64) {
        self.planned.fetch_add(n, Ordering::Relaxed);
    }
}

/// A reader that counts the bytes that pass through it (an upload's body).
pub struct Counted<R> {
    pub inner: R,
    pub progress: Arc<ReadProgress>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.add(n as u64);
        Ok(n)
    }
}
