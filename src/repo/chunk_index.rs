//! What a repository holds, kept locally so that a backup costs what it
//! reads and writes, not the size of the store. Before this index every
//! backup listed and stat'ed every chunk of the tier (about 74 µs a chunk:
//! 75 s a backup at a million chunks) only to learn which chunks it could
//! deduplicate against, and still trusted a chunk that `repo verify` had just
//! reported damaged or missing.
//!
//! One SQLite file per repository (by its id) under a local directory: the
//! state dir (`<state_dir>/chunk-index/`) for policy-driven commands, the
//! user's cache dir for bare `--repo` commands. A row per chunk: present, or
//! damaged (verify found it missing, short or failing its checks). A chunk
//! that is not in the index, or is damaged, is never referenced: a backup
//! writes it (again), an incremental re-reads its area from the source.
//!
//! Who changes it, and why that is safe (the index is a cache: it may lack
//! chunks, which costs a re-upload, but a "present" row for a chunk that is
//! gone would make a point unrestorable):
//! - writers (backup, copy) add rows only after the store's `flush`, so a
//!   row never names a chunk a power loss can take away;
//! - gc removes rows (durably) *before* deleting chunks, and quarantine marks
//!   them damaged before moving them away;
//! - verify marks damaged chunks and drops rows the store listing lacks;
//! - a reconcile (the first use, and after another installation's gc) adds
//!   what the listing holds. It runs only under a repository lock that keeps
//!   gc out (a backup's shared lock, gc's exclusive one).
//!
//! Another machine (or a second state dir) may gc the same repository: every
//! gc and quarantine writes a new object under `chunk-epochs/` before
//! deleting anything, and an index whose last reconcile saw another epoch is
//! reconciled before it is trusted. The check is one listing of that small
//! prefix per backup.
//!
//! The index is never a reason to delete a chunk: gc decides from the
//! manifests and the store listing alone.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use super::chunk::{ChunkDigest, ZERO_DIGEST};
use super::store::StoreError;
use super::{RepoError, Repository};

/// Where gc and quarantine leave a mark that chunks were removed.
pub const EPOCHS_PREFIX: &str = "chunk-epochs/";

/// How long a writer waits for another process holding the index.
const BUSY_TIMEOUT: Duration = Duration::from_secs(120);

/// What can go wrong with the index file.
#[derive(Debug, thiserror::Error)]
pub enum ChunkIndexError {
    #[error("chunk index {path}: {source}")]
    Sqlite {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("chunk index directory {path}: {source}")]
    Dir {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

// Boxed: an SQLite error is large, and every `RepoError` would pay for it.
impl From<ChunkIndexError> for RepoError {
    fn from(e: ChunkIndexError) -> Self {
        RepoError::ChunkIndex(Box::new(e))
    }
}

/// What the index knows of one chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkState {
    Present,
    /// Verify found it missing or failing its checks: never referenced
    /// again until a writer stores it anew.
    Damaged,
}

/// The persistent chunk index of one repository.
pub struct ChunkIndex {
    conn: Mutex<Connection>,
    path: PathBuf,
}

impl std::fmt::Debug for ChunkIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ChunkIndex({})", self.path.display())
    }
}

/// Whether SQLite says the file is not (or no longer) a database; anything
/// else (busy, permissions) is reported, never a reason to set the file aside.
fn is_damage(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt)
    )
}

/// The user's cache directory for bare `--repo` commands.
pub fn default_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".cache"))
        })
        .unwrap_or_else(std::env::temp_dir);
    base.join("coffer").join("chunk-index")
}

/// The index file of a repository id. The id comes from the repository's
/// `config`: anything but plain hex is hashed, so it can never name a path.
pub fn file_name(repo_id: &str) -> String {
    let safe = !repo_id.is_empty()
        && repo_id.len() <= 64
        && repo_id.bytes().all(|b| b.is_ascii_hexdigit());
    if safe {
        format!("{repo_id}.sqlite")
    } else {
        use sha2::Digest;
        format!("{}.sqlite", hex::encode(sha2::Sha256::digest(repo_id)))
    }
}

impl ChunkIndex {
    /// Opens (creating) the index at `path`. A file SQLite cannot open is
    /// moved aside and replaced by an empty one: the index is a cache that a
    /// reconcile rebuilds.
    pub fn open(path: &Path) -> Result<Self, ChunkIndexError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| ChunkIndexError::Dir {
                path: dir.display().to_string(),
                source,
            })?;
        }
        match Self::open_inner(path) {
            Ok(conn) => Ok(ChunkIndex {
                conn: Mutex::new(conn),
                path: path.to_path_buf(),
            }),
            Err(e) if !is_damage(&e) => Err(ChunkIndexError::Sqlite {
                path: path.display().to_string(),
                source: e,
            }),
            Err(_) => {
                let aside = path.with_extension(format!(
                    "damaged-{}",
                    chrono::Utc::now().format("%Y%m%dT%H%M%S")
                ));
                let _ = std::fs::rename(path, &aside);
                for ext in ["sqlite-wal", "sqlite-shm"] {
                    let _ = std::fs::remove_file(path.with_extension(ext));
                }
                let conn = Self::open_inner(path).map_err(|source| ChunkIndexError::Sqlite {
                    path: path.display().to_string(),
                    source,
                })?;
                Ok(ChunkIndex {
                    conn: Mutex::new(conn),
                    path: path.to_path_buf(),
                })
            }
        }
    }

    /// Opens the file, waiting out another process or thread that is
    /// creating it or switching it to WAL at the same moment: SQLite answers
    /// those with SQLITE_BUSY at once, without its busy handler (two
    /// backups side by side both open a new index).
    fn open_inner(path: &Path) -> rusqlite::Result<Connection> {
        let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
        let mut pause = Duration::from_millis(5);
        loop {
            match Self::open_once(path) {
                Err(e)
                    if matches!(
                        e.sqlite_error_code(),
                        Some(
                            rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                        )
                    ) && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(200));
                }
                other => return other,
            }
        }
    }

    fn open_once(path: &Path) -> rusqlite::Result<Connection> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let _: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
        // Every commit durable: a lost "removed by gc" would leave a row for
        // a chunk that is gone.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS chunks (
                 digest BLOB PRIMARY KEY NOT NULL,
                 damaged INTEGER NOT NULL DEFAULT 0
             ) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS meta (
                 key TEXT PRIMARY KEY NOT NULL,
                 value TEXT NOT NULL
             );",
        )?;
        // Proves the file is a database, not only a name.
        let _: i64 = conn.query_row("SELECT count(*) FROM meta", [], |r| r.get(0))?;
        Ok(conn)
    }

    fn err(&self, source: rusqlite::Error) -> ChunkIndexError {
        ChunkIndexError::Sqlite {
            path: self.path.display().to_string(),
            source,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The epoch of the last reconcile; `None` when the index was never
    /// reconciled with the store (a new file).
    pub fn reconciled_epoch(&self) -> Result<Option<String>, ChunkIndexError> {
        let conn = self.conn.lock().unwrap();
        conn.query_row(
            "SELECT value FROM meta WHERE key = 'reconciled_epoch'",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(|e| self.err(e))
    }

    pub fn state(&self, d: &ChunkDigest) -> Result<Option<ChunkState>, ChunkIndexError> {
        if *d == ZERO_DIGEST {
            return Ok(Some(ChunkState::Present));
        }
        let conn = self.conn.lock().unwrap();
        let mut st = conn
            .prepare_cached("SELECT damaged FROM chunks WHERE digest = ?1")
            .map_err(|e| self.err(e))?;
        st.query_row([&d.0[..]], |r| r.get::<_, i64>(0))
            .optional()
            .map(|v| {
                v.map(|dmg| {
                    if dmg == 0 {
                        ChunkState::Present
                    } else {
                        ChunkState::Damaged
                    }
                })
            })
            .map_err(|e| self.err(e))
    }

    /// Whether a backup may reference `d` without storing it.
    pub fn is_present(&self, d: &ChunkDigest) -> Result<bool, ChunkIndexError> {
        Ok(self.state(d)? == Some(ChunkState::Present))
    }

    /// Those of `digests` that are known present and sound (one lookup each:
    /// the cost follows the disk, not the store).
    pub fn present_among(
        &self,
        digests: impl IntoIterator<Item = ChunkDigest>,
    ) -> Result<HashSet<ChunkDigest>, ChunkIndexError> {
        let conn = self.conn.lock().unwrap();
        let mut st = conn
            .prepare_cached("SELECT 1 FROM chunks WHERE digest = ?1 AND damaged = 0")
            .map_err(|e| self.err(e))?;
        let mut out = HashSet::new();
        for d in digests {
            if d == ZERO_DIGEST
                || st.exists([&d.0[..]]).map_err(|e| ChunkIndexError::Sqlite {
                    path: self.path.display().to_string(),
                    source: e,
                })?
            {
                out.insert(d);
            }
        }
        Ok(out)
    }

    fn write_all(
        &self,
        sql: &str,
        digests: impl IntoIterator<Item = ChunkDigest>,
    ) -> Result<(), ChunkIndexError> {
        let mut conn = self.conn.lock().unwrap();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| self.err(e))?;
        {
            let mut st = tx.prepare_cached(sql).map_err(|e| self.err(e))?;
            for d in digests {
                if d != ZERO_DIGEST {
                    st.execute([&d.0[..]]).map_err(|e| self.err(e))?;
                }
            }
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// Chunks a writer stored and flushed: present and sound (a damage mark
    /// is cleared, the blob was just written anew).
    pub fn record_present(
        &self,
        digests: impl IntoIterator<Item = ChunkDigest>,
    ) -> Result<(), ChunkIndexError> {
        self.write_all(
            "INSERT INTO chunks (digest, damaged) VALUES (?1, 0)
             ON CONFLICT(digest) DO UPDATE SET damaged = 0",
            digests,
        )
    }

    /// Chunks verify found missing or damaged: never referenced again.
    pub fn record_damaged(
        &self,
        digests: impl IntoIterator<Item = ChunkDigest>,
    ) -> Result<(), ChunkIndexError> {
        self.write_all(
            "INSERT INTO chunks (digest, damaged) VALUES (?1, 1)
             ON CONFLICT(digest) DO UPDATE SET damaged = 1",
            digests,
        )
    }

    /// Chunks gc is about to delete.
    pub fn forget(
        &self,
        digests: impl IntoIterator<Item = ChunkDigest>,
    ) -> Result<(), ChunkIndexError> {
        self.write_all("DELETE FROM chunks WHERE digest = ?1", digests)
    }

    /// Drops every "present" row the listing lacks: the safe half of a
    /// reconcile, allowed without a lock (it can only cause a re-upload).
    pub fn drop_unlisted(&self, listed: &HashSet<ChunkDigest>) -> Result<usize, ChunkIndexError> {
        let mut conn = self.conn.lock().unwrap();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| self.err(e))?;
        let gone: Vec<Vec<u8>> = {
            let mut st = tx
                .prepare("SELECT digest FROM chunks WHERE damaged = 0")
                .map_err(|e| self.err(e))?;
            let rows = st
                .query_map([], |r| r.get::<_, Vec<u8>>(0))
                .map_err(|e| self.err(e))?;
            let mut gone = Vec::new();
            for row in rows {
                let bytes = row.map_err(|e| self.err(e))?;
                let listed_here = <[u8; 32]>::try_from(bytes.as_slice())
                    .is_ok_and(|a| listed.contains(&ChunkDigest(a)));
                if !listed_here {
                    gone.push(bytes);
                }
            }
            gone
        };
        {
            let mut st = tx
                .prepare_cached("DELETE FROM chunks WHERE digest = ?1")
                .map_err(|e| self.err(e))?;
            for g in &gone {
                st.execute([g]).map_err(|e| self.err(e))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))?;
        Ok(gone.len())
    }

    /// Makes the index agree with a store listing taken under a lock that
    /// keeps gc out: listed chunks become present (damage marks stay: a file
    /// that exists is not proven sound), rows the listing lacks go, and the
    /// epoch seen is remembered.
    pub fn reconcile(
        &self,
        listed: &HashSet<ChunkDigest>,
        epoch: &str,
    ) -> Result<(), ChunkIndexError> {
        self.drop_unlisted(listed)?;
        let mut conn = self.conn.lock().unwrap();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| self.err(e))?;
        {
            let mut st = tx
                .prepare_cached("INSERT OR IGNORE INTO chunks (digest, damaged) VALUES (?1, 0)")
                .map_err(|e| self.err(e))?;
            for d in listed {
                st.execute([&d.0[..]]).map_err(|e| self.err(e))?;
            }
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('reconciled_epoch', ?1)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                params![epoch],
            )
            .map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// Remembers an epoch this process wrote itself after its own reconcile.
    pub fn set_epoch(&self, epoch: &str) -> Result<(), ChunkIndexError> {
        let conn = self.conn.lock().unwrap();
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('reconciled_epoch', ?1)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![epoch],
        )
        .map(|_| ())
        .map_err(|e| self.err(e))
    }

    /// How many rows, by state (for tests and `repo info`).
    pub fn counts(&self) -> Result<(u64, u64), ChunkIndexError> {
        let conn = self.conn.lock().unwrap();
        conn.query_row(
            "SELECT coalesce(sum(damaged = 0), 0), coalesce(sum(damaged != 0), 0) FROM chunks",
            [],
            |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
        )
        .map_err(|e| self.err(e))
    }
}

/// The chunks the store holds, from a fresh listing (chunk objects and
/// every chunk of every listed pack; see `Repository::list_chunks`).
pub fn listed_chunks(repo: &Repository) -> Result<HashSet<ChunkDigest>, RepoError> {
    repo.reload_pack_map()?;
    Ok(repo.list_chunks()?.into_keys().collect())
}

impl Repository {
    /// The directory this repository's chunk index lives in.
    pub fn chunk_index_dir(&self) -> PathBuf {
        self.chunk_index_dir.clone().unwrap_or_else(default_dir)
    }

    /// Keeps the chunk index under `dir` (policy-driven commands: the state
    /// dir's `chunk-index/`).
    pub fn with_chunk_index_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.chunk_index_dir = Some(dir.into());
        self
    }

    /// Opens the chunk index as it is, without reconciling: for marks that
    /// are safe at any time (damage, forgetting).
    pub fn chunk_index(&self) -> Result<ChunkIndex, RepoError> {
        let path = self.chunk_index_dir().join(file_name(&self.config.id));
        Ok(ChunkIndex::open(&path)?)
    }

    /// The removal epochs in the store, sorted and joined: any removal (or
    /// expiry of an old epoch) changes it, whatever the clocks say.
    pub fn chunk_epochs(&self) -> Result<String, RepoError> {
        let mut keys: Vec<String> = self
            .store()
            .list(EPOCHS_PREFIX)?
            .into_iter()
            .filter_map(|o| o.key.strip_prefix(EPOCHS_PREFIX).map(str::to_string))
            .collect();
        keys.sort();
        Ok(keys.join(","))
    }

    /// Opens the chunk index ready to be trusted by a writer: reconciled
    /// with the store when new or when chunks were removed since (by any
    /// installation). The caller holds a lock that keeps gc out.
    pub fn trusted_chunk_index(&self) -> Result<ChunkIndex, RepoError> {
        let index = self.chunk_index()?;
        // Read before the listing: a removal after it changes the epochs.
        let epochs = self.chunk_epochs()?;
        if index.reconciled_epoch()?.as_deref() != Some(epochs.as_str()) {
            let listed = listed_chunks(self)?;
            index.reconcile(&listed, &epochs)?;
        }
        Ok(index)
    }

    /// Writes a new removal epoch, durably, before chunks are deleted, so
    /// every installation's index is reconciled before it is trusted again.
    pub fn new_chunk_epoch(&self) -> Result<String, RepoError> {
        let mut rand = [0u8; 8];
        getrandom::fill(&mut rand).expect("the OS random source works");
        let epoch = format!(
            "{}-{}",
            chrono::Utc::now().format("%Y%m%dT%H%M%S%.9fZ"),
            hex::encode(rand)
        );
        self.store()
            .put(&format!("{EPOCHS_PREFIX}{epoch}"), epoch.as_bytes())?;
        self.store().flush()?;
        Ok(epoch)
    }

    /// Deletes removal epochs older than `EPOCH_KEEP`, but never the newest:
    /// the set then changes, which only makes indexes reconcile once more.
    pub fn expire_chunk_epochs(&self) -> Result<(), RepoError> {
        let mut all = self.store().list(EPOCHS_PREFIX)?;
        all.sort_by(|a, b| a.key.cmp(&b.key));
        all.pop();
        let now = std::time::SystemTime::now();
        for o in all {
            if now
                .duration_since(o.modified)
                .is_ok_and(|age| age > EPOCH_KEEP)
            {
                match self.store().delete(&o.key) {
                    Ok(()) | Err(StoreError::Locked { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(())
    }
}

/// How long a removal epoch is kept.
const EPOCH_KEEP: Duration = Duration::from_secs(7 * 24 * 3600);

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u8) -> ChunkDigest {
        ChunkDigest([n; 32])
    }

    /// Backups side by side open a new index at the same moment; none of
    /// them may fail with "database is locked".
    #[test]
    fn many_writers_opening_a_new_index_at_once_all_succeed() {
        for round in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join(format!("x{round}.sqlite"));
            let barrier = std::sync::Barrier::new(8);
            std::thread::scope(|s| {
                for n in 0..8u8 {
                    let (path, barrier) = (&path, &barrier);
                    s.spawn(move || {
                        barrier.wait();
                        let idx = ChunkIndex::open(path).unwrap();
                        idx.record_present([d(n + 1)]).unwrap();
                    });
                }
            });
            let idx = ChunkIndex::open(&path).unwrap();
            assert_eq!(idx.counts().unwrap(), (8, 0));
        }
    }

    #[test]
    fn a_damaged_chunk_is_not_present_until_written_anew() {
        let dir = tempfile::tempdir().unwrap();
        let idx = ChunkIndex::open(&dir.path().join("x.sqlite")).unwrap();
        idx.record_present([d(1), d(2)]).unwrap();
        idx.record_damaged([d(2)]).unwrap();
        assert!(idx.is_present(&d(1)).unwrap());
        assert!(!idx.is_present(&d(2)).unwrap());
        // A reconcile that lists the damaged blob does not make it sound.
        idx.reconcile(&[d(1), d(2), d(3)].into_iter().collect(), "e1")
            .unwrap();
        assert_eq!(idx.state(&d(2)).unwrap(), Some(ChunkState::Damaged));
        assert!(idx.is_present(&d(3)).unwrap());
        idx.record_present([d(2)]).unwrap();
        assert!(idx.is_present(&d(2)).unwrap());
        assert!(idx.is_present(&ZERO_DIGEST).unwrap());
    }

    #[test]
    fn a_reconcile_drops_chunks_the_store_no_longer_lists() {
        let dir = tempfile::tempdir().unwrap();
        let idx = ChunkIndex::open(&dir.path().join("x.sqlite")).unwrap();
        idx.record_present([d(1), d(2)]).unwrap();
        idx.reconcile(&[d(2)].into_iter().collect(), "e2").unwrap();
        assert!(!idx.is_present(&d(1)).unwrap());
        assert_eq!(idx.reconciled_epoch().unwrap().as_deref(), Some("e2"));
    }

    #[test]
    fn an_unreadable_index_file_is_set_aside_and_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.sqlite");
        std::fs::write(&path, vec![0x55u8; 8192]).unwrap();
        let idx = ChunkIndex::open(&path).unwrap();
        assert_eq!(idx.reconciled_epoch().unwrap(), None);
        assert_eq!(idx.counts().unwrap(), (0, 0));
    }

    #[test]
    fn a_repository_id_never_names_a_path() {
        assert_eq!(file_name("00ff"), "00ff.sqlite");
        let f = file_name("../../etc/x");
        assert!(!f.contains('/') && !f.contains(".."));
    }
}
