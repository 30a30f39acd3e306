//! One runner per policy directory: `apply`, `backup` and `daemon` hold an
//! exclusive lock on `<state_dir>/runner.lock` while they work, so two of
//! them never back up the same VM at once. The lock is an flock: it is
//! released when the process ends, however it ends.
//!
//! A catalog on PostgreSQL may be shared by coffer installations on
//! several machines, each with its own state dir; their journals are one.
//! There the runner also holds a session advisory lock on the catalog's
//! server, on a connection of its own, so that one run never takes another
//! machine's running actions for interrupted ones. The server releases it
//! when that connection ends, however the process ends.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail};

use crate::catalog::db::{MAINTENANCE_LOCK, RUNNER_LOCK};
use crate::catalog::pg_text;
use crate::policy::model::{CatalogLocation, Settings};

/// Whether this process holds a runner lock (an flock taken twice in one
/// process through two descriptors conflicts with itself, so the holder
/// must know without asking the file).
static HELD_HERE: AtomicBool = AtomicBool::new(false);

/// Held while a runner works.
#[derive(Debug)]
pub struct RunnerLock {
    _file: File,
    /// The connection that holds the runner lock of a PostgreSQL catalog.
    _shared: Option<SharedLock>,
}

/// The runner lock on a PostgreSQL catalog's server.
struct SharedLock {
    _conn: postgres::Client,
}

impl std::fmt::Debug for SharedLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedLock")
    }
}

impl Drop for RunnerLock {
    fn drop(&mut self) {
        HELD_HERE.store(false, Ordering::SeqCst);
    }
}

/// Whether no run of the installation whose state dir is `state_dir` can be
/// alive but this process's own: it holds the runner lock, or nobody does.
/// Then every coffer snapshot that installation's earlier runs left is
/// dead and may be removed. A `plan` beside a working `apply` says no.
pub fn other_runs_are_dead(state_dir: &Path) -> bool {
    if HELD_HERE.load(Ordering::SeqCst) {
        return true;
    }
    let Ok(file) = std::fs::File::open(state_dir.join("runner.lock")) else {
        // No lock file: no runner ever worked here.
        return !state_dir.join("runner.lock").exists();
    };
    // SAFETY: flock on a descriptor this function owns; the lock taken is
    // released when `file` is closed at the end of this function.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

impl RunnerLock {
    /// Takes the lock of the installation `settings` describes (and of its
    /// catalog, when that is shared), or says who holds it.
    pub fn take(settings: &Settings, what: &str) -> Result<RunnerLock> {
        let state_dir = &settings.state_dir;
        std::fs::create_dir_all(state_dir)
            .with_context(|| format!("creating {}", state_dir.display()))?;
        let path = state_dir.join("runner.lock");
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        // SAFETY: flock on a descriptor this function owns.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            bail!(
                "another coffer runner is working on this policy directory ({}); try again when it is done",
                holder.trim()
            );
        }
        let shared = match &settings.catalog {
            CatalogLocation::Postgres { url, password } => Some(take_shared(url, password, what)?),
            CatalogLocation::File(_) => None,
        };
        file.set_len(0)?;
        file.rewind()?;
        write!(file, "{what}, pid {}", std::process::id())?;
        HELD_HERE.store(true, Ordering::SeqCst);
        Ok(RunnerLock {
            _file: file,
            _shared: shared,
        })
    }
}

/// A connection of its own to the PostgreSQL catalog `url` for a lock,
/// named after its holder (`application_name`: `WHAT, pid N on HOST`), so
/// that whoever finds the lock taken can say by whom.
fn named_connection(
    url: &str,
    password: &Option<crate::policy::model::SecretRef>,
    what: &str,
) -> Result<postgres::Client> {
    let mut client = crate::catalog::connect_postgres(url, password.as_ref())?;
    let me = format!(
        "{what}, pid {} on {}",
        std::process::id(),
        crate::policy::model::host_name()
    );
    client
        .execute("SELECT set_config('application_name', $1, false)", &[&me])
        .map_err(|e| anyhow::anyhow!("naming a connection to {url}: {}", pg_text(&e)))?;
    Ok(client)
}

/// Takes the runner lock on the server of the PostgreSQL catalog `url`.
fn take_shared(
    url: &str,
    password: &Option<crate::policy::model::SecretRef>,
    what: &str,
) -> Result<SharedLock> {
    let mut client = named_connection(url, password, what)?;
    let got: bool = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&RUNNER_LOCK])
        .map_err(|e| anyhow::anyhow!("taking the runner lock on {url}: {}", pg_text(&e)))?
        .get(0);
    if !got {
        // An advisory lock on a bigint key shows in pg_locks as its high
        // and low halves (PostgreSQL documentation, "pg_locks").
        let holder = client
            .query_opt(
                "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
                 WHERE l.locktype = 'advisory' AND l.granted \
                 AND l.classid::bigint = $1 AND l.objid::bigint = $2 LIMIT 1",
                &[&(RUNNER_LOCK >> 32), &(RUNNER_LOCK & 0xffff_ffff)],
            )
            .ok()
            .flatten()
            .and_then(|r| r.get::<_, Option<String>>(0))
            .unwrap_or_else(|| "a coffer runner".into());
        bail!(
            "another coffer runner is working on the shared catalog {url} ({holder}); try again when it is done"
        );
    }
    Ok(SharedLock { _conn: client })
}

/// How long gc or prune waits for the backups that workers on other
/// machines are writing (and a backup for a gc), before it gives up.
const MAINTENANCE_WAIT: &str = "120s";

/// Repository maintenance against the writers of other machines, on a
/// catalog shared through PostgreSQL, in addition to the repositories' own
/// locks: gc and prune hold the maintenance lock exclusively, and every
/// backup and copy, on a worker or a runner, holds it shared while it
/// writes. Nothing on a catalog
/// that is one machine's (its runner lock already keeps its runs apart).
#[derive(Debug)]
pub struct MaintenanceLock {
    _held: Option<SharedLock>,
}

impl MaintenanceLock {
    /// Takes the lock (`exclusive` for gc and prune, shared for a backup),
    /// waiting up to two minutes for the holders of the other kind.
    pub fn take(settings: &Settings, exclusive: bool, what: &str) -> Result<MaintenanceLock> {
        let CatalogLocation::Postgres { url, password } = &settings.catalog else {
            return Ok(MaintenanceLock { _held: None });
        };
        let mut client = named_connection(url, password, what)?;
        let take = if exclusive {
            "SELECT pg_advisory_lock($1)"
        } else {
            "SELECT pg_advisory_lock_shared($1)"
        };
        client
            .batch_execute(&format!("SET lock_timeout = '{MAINTENANCE_WAIT}'"))
            .and_then(|_| client.execute(take, &[&MAINTENANCE_LOCK]))
            .map_err(|e| {
                anyhow::anyhow!(
                    "{what}: waited {MAINTENANCE_WAIT} for {} on other machines and gave up: {}",
                    if exclusive {
                        "the backups being written"
                    } else {
                        "a gc or prune"
                    },
                    pg_text(&e)
                )
            })?;
        Ok(MaintenanceLock {
            _held: Some(SharedLock { _conn: client }),
        })
    }
}
