//! Who is working on a repository, so gc never sweeps a chunk a running
//! backup or copy has just deduplicated against. Writers (backup, copy)
//! take shared locks; gc takes an exclusive one. A lock is an object under
//! `locks/`, refreshed while its holder runs; a lock whose holder is a dead
//! process on this host, or that was not refreshed for `STALE_AFTER`, no
//! longer counts.
//!
//! Taking a lock is "write mine, then look for conflicting ones": on a store
//! with read-after-write listings (a local directory, S3 since 2020) two
//! conflicting takers cannot both miss each other; at worst both back off.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use super::store::{Store, StoreError};
use super::{RepoError, Repository};

/// Where lock objects live. They are the only objects a repository rewrites
/// and deletes as a matter of course, so immutable stores never lock them.
pub const LOCKS_PREFIX: &str = "locks/";

/// A lock not refreshed for this long is stale (its holder is gone).
pub const STALE_AFTER: Duration = Duration::from_secs(30 * 60);

/// How often a held lock is refreshed.
const REFRESH_EVERY: Duration = Duration::from_secs(5 * 60);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockKind {
    /// Backups and copies: many at once.
    Shared,
    /// gc: alone.
    Exclusive,
}

/// The content of a lock object.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LockInfo {
    pub kind: LockKind,
    pub host: String,
    pub pid: u32,
    /// What holds it ("backup of db01", "gc").
    pub what: String,
    pub started: String,
    pub refreshed: String,
}

impl LockInfo {
    fn describe(&self) -> String {
        format!(
            "{} (pid {} on {}, since {})",
            self.what, self.pid, self.host, self.started
        )
    }

    /// Whether the holder is gone: a dead process on this host, or no
    /// refresh for `STALE_AFTER`.
    pub fn is_stale(&self, now: DateTime<Utc>) -> bool {
        if self.host == hostname() && !process_alive(self.pid) {
            return true;
        }
        match DateTime::parse_from_rfc3339(&self.refreshed) {
            Ok(t) => now.signed_duration_since(t).to_std().unwrap_or_default() > STALE_AFTER,
            Err(_) => true,
        }
    }
}

/// A held lock; released (its object deleted) when dropped.
pub struct RepoLock {
    store: Arc<dyn Store>,
    key: String,
    stop: Arc<(Mutex<bool>, Condvar)>,
    refresher: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for RepoLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RepoLock({})", self.key)
    }
}

impl Drop for RepoLock {
    fn drop(&mut self) {
        {
            let (m, cv) = &*self.stop;
            *m.lock().unwrap_or_else(|e| e.into_inner()) = true;
            cv.notify_all();
        }
        if let Some(t) = self.refresher.take() {
            let _ = t.join();
        }
        let _ = self.store.delete(&self.key);
    }
}

pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates
    // within it or truncates.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown-host".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

fn process_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

fn now_text() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Every lock object with its content; unreadable ones count as stale.
pub fn list_locks(store: &dyn Store) -> Result<Vec<(String, Option<LockInfo>)>, StoreError> {
    let mut out = Vec::new();
    for o in store.list(LOCKS_PREFIX)? {
        match store.get(&o.key) {
            Ok(bytes) => out.push((o.key, serde_json::from_slice(&bytes).ok())),
            Err(StoreError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

fn conflict(mine: LockKind, other: LockKind) -> bool {
    mine == LockKind::Exclusive || other == LockKind::Exclusive
}

/// The first live lock that conflicts with taking `kind`, other than `own`.
fn find_conflict(
    store: &dyn Store,
    kind: LockKind,
    own: Option<&str>,
) -> Result<Option<LockInfo>, StoreError> {
    let now = Utc::now();
    Ok(list_locks(store)?
        .into_iter()
        .filter(|(k, _)| Some(k.as_str()) != own)
        .filter_map(|(_, info)| info)
        .find(|info| !info.is_stale(now) && conflict(kind, info.kind)))
}

impl Repository {
    /// Takes a lock of `kind` for `what`, or fails with `Busy` naming the
    /// holder. Never waits: the caller (the runner) decides whether to.
    pub fn lock(&self, kind: LockKind, what: &str) -> Result<RepoLock, RepoError> {
        let store = self.store_arc();
        if let Some(holder) = find_conflict(store.as_ref(), kind, None)? {
            return Err(RepoError::Busy(holder.describe()));
        }
        let info = LockInfo {
            kind,
            host: hostname(),
            pid: std::process::id(),
            what: what.to_string(),
            started: now_text(),
            refreshed: now_text(),
        };
        let key = format!(
            "{LOCKS_PREFIX}{}-{}-{}-{}",
            match kind {
                LockKind::Shared => "shared",
                LockKind::Exclusive => "exclusive",
            },
            info.host,
            info.pid,
            hex::encode({
                let mut r = [0u8; 6];
                getrandom::fill(&mut r).expect("the OS random source works");
                r
            })
        );
        store.put(
            &key,
            &serde_json::to_vec_pretty(&info).expect("serializable"),
        )?;
        if let Some(holder) = find_conflict(store.as_ref(), kind, Some(&key))? {
            let _ = store.delete(&key);
            return Err(RepoError::Busy(holder.describe()));
        }
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let refresher = {
            let (store, key, stop, mut info) =
                (store.clone(), key.clone(), stop.clone(), info.clone());
            std::thread::Builder::new()
                .name("coffer-lock".into())
                .spawn(move || {
                    let (m, cv) = &*stop;
                    let mut stopped = m.lock().unwrap_or_else(|e| e.into_inner());
                    // The flag is checked under the mutex before each wait,
                    // so a release that comes first is never missed.
                    while !*stopped {
                        let (s, timeout) = cv
                            .wait_timeout_while(stopped, REFRESH_EVERY, |stop| !*stop)
                            .unwrap_or_else(|e| e.into_inner());
                        stopped = s;
                        if timeout.timed_out() {
                            info.refreshed = now_text();
                            let _ = store.put(
                                &key,
                                &serde_json::to_vec_pretty(&info).expect("serializable"),
                            );
                        }
                    }
                })
                .map_err(|e| RepoError::Invalid(format!("starting the lock refresher: {e}")))?
        };
        Ok(RepoLock {
            store,
            key,
            stop,
            refresher: Some(refresher),
        })
    }

    /// Deletes stale locks (holders gone); returns what was removed.
    pub fn remove_stale_locks(&self) -> Result<Vec<String>, RepoError> {
        let now = Utc::now();
        let mut removed = Vec::new();
        for (key, info) in list_locks(self.store())? {
            let stale = info.as_ref().is_none_or(|i| i.is_stale(now));
            if stale {
                self.store().delete(&key)?;
                removed.push(info.map_or(key, |i| i.describe()));
            }
        }
        Ok(removed)
    }
}
