//! The work queue of a PostgreSQL catalog (migrations 8 and 9): the
//! backups, copies and drills a coordinator (`apply --distributed`) hands
//! to workers (`coffer worker`) on any number of machines.
//!
//! A worker claims a row with `SELECT … FOR UPDATE SKIP LOCKED` under a
//! lease (a deadline by the database server's clock) that it renews while
//! it works. The limits (per ESXi host, per datastore, per tier) are
//! counted over the rows claimed with a live lease, inside the claiming
//! transaction and under a transaction advisory lock ([`CLAIM_LOCK`]), so
//! two workers never both take the last slot of a host. A row whose lease
//! ran out (its worker died, or lost the database) is claimed again; the
//! new claim says so, and the worker cleans up the earlier attempt first.
//! Every write after the claim names the worker and its attempt, so a
//! worker that lost its lease changes nothing.

use chrono::Utc;

use super::db::{Db, Row, args};
use super::{Catalog, CatalogError, time_text};

/// The advisory lock key a claim takes on PostgreSQL ("coffer-q").
pub const CLAIM_LOCK: i64 = 0x636f_6666_6572_2d71;

/// Now, in milliseconds since the epoch, by the database server's clock.
const NOW_MS: &str = "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)";

/// A backup, copy or drill for a worker, as the coordinator enqueues it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewWork {
    pub seq: i64,
    /// The plan's JSON form of the action.
    pub action: String,
    /// The VM's source (a backup's; empty for a copy or a drill).
    pub source: String,
    pub vm: String,
    /// The limits' keys: the VM's host, its datastores, the tier (a
    /// copy's: the one it writes; a drill's: the one it reads). A copy or
    /// a drill has no host (empty) and no datastore.
    pub host: String,
    pub datastores: Vec<String>,
    pub tier: String,
    /// The tier's repository id as the coordinator opened it.
    pub repo_id: String,
    /// A copy's: the repository id of the tier it reads.
    pub repo_from: Option<String>,
    /// The limits, from the coordinator's policy.
    pub max_host: u32,
    pub max_datastore: u32,
    pub max_tier: u32,
    /// Read every disk whole (its change tracking was reset).
    pub read_whole: bool,
}

/// One row of the queue.
#[derive(Debug, Clone, PartialEq)]
pub struct Work {
    pub id: i64,
    pub run_id: String,
    pub seq: i64,
    pub action: String,
    pub source: String,
    pub vm: String,
    pub host: String,
    pub tier: String,
    pub repo_id: String,
    /// A copy's: the repository id of the tier it reads.
    pub repo_from: Option<String>,
    pub read_whole: bool,
    /// queued, claimed, done or failed.
    pub state: String,
    pub worker: Option<String>,
    pub attempt: i64,
    /// Milliseconds the lease has left (negative: ran out); `None` unless
    /// claimed.
    pub lease_left_ms: Option<i64>,
    pub detail: Option<String>,
    pub seconds: Option<f64>,
    pub bytes_read: Option<i64>,
    pub bytes_stored: Option<i64>,
    pub recovered: Option<String>,
}

impl Work {
    /// The action's kind as the plan names it (`backup`, `copy`, `drill`,
    /// `gc`).
    pub fn kind(&self) -> String {
        serde_json::from_str::<serde_json::Value>(&self.action)
            .ok()
            .and_then(|v| v["action"].as_str().map(str::to_string))
            .unwrap_or_else(|| "backup".to_string())
    }

    /// The row for people: `backup VM`, `copy VM to TIER`, `drill VM on
    /// TIER`, `gc of TIER`.
    pub fn what(&self) -> String {
        match self.kind().as_str() {
            "copy" => format!("copy {} to {}", self.vm, self.tier),
            "drill" => format!("drill {} on {}", self.vm, self.tier),
            "gc" => format!("gc of {}", self.tier),
            kind => format!("{kind} {}", self.vm),
        }
    }
}

/// A row a worker claimed.
#[derive(Debug, Clone, PartialEq)]
pub struct Claimed {
    pub work: Work,
    /// The worker of the earlier attempt whose lease ran out, when this
    /// claim takes the row over from it.
    pub taken_from: Option<String>,
    /// When that earlier attempt was claimed, by its worker's clock (the
    /// clock that named any point it wrote).
    pub earlier_started: Option<String>,
}

/// A worker as the fleet sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerRecord {
    pub name: String,
    pub machine: String,
    pub pid: i64,
    pub started: String,
    pub last_seen: String,
    /// Seconds since it was last seen, by the database's clock.
    pub silent_seconds: i64,
}

const WORK_COLUMNS: &str = "id, run_id, seq, action, source, vm, host, tier, read_whole, state, \
     worker, attempt, lease_until, detail, seconds, bytes_read, bytes_stored, recovered, repo_id, repo_from";

fn work_row(r: &Row, now_ms: i64) -> Result<Work, CatalogError> {
    let state: String = r.get(9)?;
    let lease: Option<i64> = r.get(12)?;
    Ok(Work {
        id: r.get(0)?,
        run_id: r.get(1)?,
        seq: r.get(2)?,
        action: r.get(3)?,
        source: r.get(4)?,
        vm: r.get(5)?,
        host: r.get(6)?,
        tier: r.get(7)?,
        read_whole: r.get(8)?,
        lease_left_ms: lease.filter(|_| state == "claimed").map(|l| l - now_ms),
        state,
        worker: r.get(10)?,
        attempt: r.get(11)?,
        detail: r.get(13)?,
        seconds: r.get(14)?,
        bytes_read: r.get(15)?,
        bytes_stored: r.get(16)?,
        recovered: r.get(17)?,
        repo_id: r.get(18)?,
        repo_from: r.get(19)?,
    })
}

impl Catalog {
    /// Refuses a catalog that cannot hold the queue: an embedded SQLite
    /// file is one machine's. `what` names who needs it.
    pub fn require_shared(&self, what: &str) -> Result<(), CatalogError> {
        if self.is_shared() {
            return Ok(());
        }
        Err(CatalogError::NotShared {
            what: what.to_string(),
            location: self.location.clone(),
        })
    }

    fn now_ms(db: &Db) -> Result<i64, CatalogError> {
        db.query_one(&format!("SELECT {NOW_MS}"), &[])?
            .ok_or_else(|| CatalogError::BadValue {
                what: "the database's clock",
                value: String::new(),
            })?
            .get(0)
    }

    /// Enqueues a run's backups, copies or drills, all or none.
    pub fn enqueue(&mut self, run_id: &str, items: &[NewWork]) -> Result<(), CatalogError> {
        self.require_shared("handing work to workers")?;
        let queued = time_text(Utc::now());
        self.db.transaction(|tx| {
            for w in items {
                let datastores = serde_json::to_string(&w.datastores).unwrap_or_default();
                tx.execute(
                    "INSERT INTO work (run_id, seq, action, source, vm, host, datastores, tier, \
                     max_host, max_datastore, max_tier, read_whole, state, attempt, queued, \
                     repo_id, repo_from) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, 'queued', 0, ?13, ?14, \
                     ?15)",
                    args![
                        run_id,
                        w.seq,
                        w.action,
                        w.source,
                        w.vm,
                        w.host,
                        datastores,
                        w.tier,
                        w.max_host.max(1),
                        w.max_datastore.max(1),
                        w.max_tier.max(1),
                        w.read_whole,
                        queued,
                        w.repo_id,
                        w.repo_from,
                    ],
                )?;
            }
            Ok(())
        })
    }

    /// Claims the first row whose limits allow it, for `worker`, with a
    /// lease of `lease_ms`; `None` when no row can be taken now.
    pub fn claim(&mut self, worker: &str, lease_ms: i64) -> Result<Option<Claimed>, CatalogError> {
        self.require_shared("a worker")?;
        self.db.transaction(|tx| {
            tx.execute("SELECT pg_advisory_xact_lock(?1)", args![CLAIM_LOCK])?;
            let now = Catalog::now_ms(tx)?;
            // What the live claims hold.
            let mut per_host = std::collections::BTreeMap::<String, u32>::new();
            let mut per_ds = std::collections::BTreeMap::<String, u32>::new();
            let mut per_tier = std::collections::BTreeMap::<String, u32>::new();
            for r in tx.query(
                "SELECT host, datastores, tier FROM work WHERE state = 'claimed' AND lease_until > ?1",
                args![now],
            )? {
                *per_host.entry(r.get(0)?).or_default() += 1;
                let dss: Vec<String> =
                    serde_json::from_str(&r.get::<String>(1)?).unwrap_or_default();
                for d in dss {
                    *per_ds.entry(d).or_default() += 1;
                }
                *per_tier.entry(r.get(2)?).or_default() += 1;
            }
            let candidates = tx.query(
                "SELECT id, host, datastores, tier, max_host, max_datastore, max_tier, worker, \
                 started FROM work WHERE state = 'queued' OR (state = 'claimed' AND lease_until <= ?1) \
                 ORDER BY id FOR UPDATE SKIP LOCKED",
                args![now],
            )?;
            for c in candidates {
                let host: String = c.get(1)?;
                let dss: Vec<String> =
                    serde_json::from_str(&c.get::<String>(2)?).unwrap_or_default();
                let tier: String = c.get(3)?;
                let (max_host, max_ds, max_tier): (i64, i64, i64) =
                    (c.get(4)?, c.get(5)?, c.get(6)?);
                let fits = i64::from(per_host.get(&host).copied().unwrap_or(0)) < max_host
                    && i64::from(per_tier.get(&tier).copied().unwrap_or(0)) < max_tier
                    && dss
                        .iter()
                        .all(|d| i64::from(per_ds.get(d).copied().unwrap_or(0)) < max_ds);
                if !fits {
                    continue;
                }
                let id: i64 = c.get(0)?;
                let taken_from: Option<String> = c.get(7)?;
                let earlier_started: Option<String> = c.get(8)?;
                tx.execute(
                    &format!(
                        "UPDATE work SET state = 'claimed', worker = ?2, attempt = attempt + 1, \
                         lease_until = {NOW_MS} + ?3, started = ?4 WHERE id = ?1"
                    ),
                    args![id, worker, lease_ms, time_text(Utc::now())],
                )?;
                let row = tx
                    .query_one(
                        &format!("SELECT {WORK_COLUMNS} FROM work WHERE id = ?1"),
                        args![id],
                    )?
                    .ok_or_else(|| CatalogError::BadValue {
                        what: "a claimed work row vanished",
                        value: id.to_string(),
                    })?;
                return Ok(Some(Claimed {
                    work: work_row(&row, now)?,
                    taken_from,
                    earlier_started,
                }));
            }
            Ok(None)
        })
    }

    /// Renews the lease of `w`; false when it is no longer this worker's
    /// (it ran out and another worker took the row over).
    pub fn renew(&mut self, w: &Work, worker: &str, lease_ms: i64) -> Result<bool, CatalogError> {
        let n = self.db.execute(
            &format!(
                "UPDATE work SET lease_until = {NOW_MS} + ?4 \
                 WHERE id = ?1 AND worker = ?2 AND attempt = ?3 AND state = 'claimed'"
            ),
            args![w.id, worker, w.attempt, lease_ms],
        )?;
        Ok(n == 1)
    }

    /// Whether `w` is still `worker`'s, its lease running at least
    /// `margin_ms` more by the database server's clock: what a worker asks
    /// before it commits a point.
    pub fn holds(&mut self, w: &Work, worker: &str, margin_ms: i64) -> Result<bool, CatalogError> {
        let row = self.db.query_one(
            &format!(
                "SELECT count(*) FROM work WHERE id = ?1 AND worker = ?2 AND attempt = ?3 \
                 AND state = 'claimed' AND lease_until > {NOW_MS} + ?4"
            ),
            args![w.id, worker, w.attempt, margin_ms],
        )?;
        Ok(row.map(|r| r.get::<i64>(0)).transpose()?.unwrap_or(0) == 1)
    }

    /// Records what a worker did about the earlier attempt of `w`.
    pub fn note_recovered(&mut self, w: &Work, note: &str) -> Result<(), CatalogError> {
        self.db.execute(
            "UPDATE work SET recovered = ?2 WHERE id = ?1",
            args![w.id, note],
        )?;
        Ok(())
    }

    /// Closes `w` as done or failed; false when it was no longer this
    /// worker's (nothing is written then).
    #[allow(clippy::too_many_arguments)]
    pub fn finish_work(
        &mut self,
        w: &Work,
        worker: &str,
        ok: bool,
        detail: &str,
        seconds: f64,
        bytes: Option<(u64, u64)>,
    ) -> Result<bool, CatalogError> {
        let n = self.db.execute(
            "UPDATE work SET state = ?4, finished = ?5, detail = ?6, seconds = ?7, \
             bytes_read = ?8, bytes_stored = ?9, lease_until = NULL \
             WHERE id = ?1 AND worker = ?2 AND attempt = ?3 AND state = 'claimed'",
            args![
                w.id,
                worker,
                w.attempt,
                if ok { "done" } else { "failed" },
                time_text(Utc::now()),
                detail,
                seconds,
                bytes.map(|b| b.0 as i64),
                bytes.map(|b| b.1 as i64),
            ],
        )?;
        Ok(n == 1)
    }

    /// Fails every row of `run_id` (every run's when `None`) that no
    /// worker holds: queued ones, and claimed ones whose lease ran out
    /// (those are answered, for their earlier attempt to be cleaned up).
    pub fn abandon_work(
        &mut self,
        run_id: Option<&str>,
        why: &str,
    ) -> Result<Vec<Work>, CatalogError> {
        if !self.is_shared() {
            return Ok(Vec::new());
        }
        self.db.transaction(|tx| {
            tx.execute("SELECT pg_advisory_xact_lock(?1)", args![CLAIM_LOCK])?;
            let now = Catalog::now_ms(tx)?;
            let rows = tx.query(
                &format!(
                    "SELECT {WORK_COLUMNS} FROM work WHERE (run_id = ?1 OR ?1 IS NULL) \
                     AND (state = 'queued' OR (state = 'claimed' AND lease_until <= ?2)) \
                     ORDER BY id"
                ),
                args![run_id, now],
            )?;
            let mut out = Vec::new();
            for r in &rows {
                let w = work_row(r, now)?;
                tx.execute(
                    "UPDATE work SET state = 'failed', finished = ?2, detail = ?3, \
                     lease_until = NULL WHERE id = ?1",
                    args![w.id, time_text(Utc::now()), why],
                )?;
                if w.state == "claimed" {
                    out.push(w);
                }
            }
            Ok(out)
        })
    }

    /// The rows of a run, in the order they were enqueued.
    pub fn work_of_run(&self, run_id: &str) -> Result<Vec<Work>, CatalogError> {
        self.require_shared("the work queue")?;
        let now = Catalog::now_ms(&self.db)?;
        self.db
            .query(
                &format!("SELECT {WORK_COLUMNS} FROM work WHERE run_id = ?1 ORDER BY seq"),
                args![run_id],
            )?
            .iter()
            .map(|r| work_row(r, now))
            .collect()
    }

    /// The rows a worker holds now.
    pub fn claimed_work(&self) -> Result<Vec<Work>, CatalogError> {
        if !self.is_shared() {
            return Ok(Vec::new());
        }
        let now = Catalog::now_ms(&self.db)?;
        self.db
            .query(
                &format!("SELECT {WORK_COLUMNS} FROM work WHERE state = 'claimed' ORDER BY id"),
                &[],
            )?
            .iter()
            .map(|r| work_row(r, now))
            .collect()
    }

    /// Says that `name` is alive (and registers it the first time).
    pub fn worker_seen(&mut self, name: &str, machine: &str, pid: u32) -> Result<(), CatalogError> {
        let now = time_text(Utc::now());
        self.db.execute(
            "INSERT INTO workers (name, machine, pid, started, last_seen) \
             VALUES (?1, ?2, ?3, ?4, ?4) ON CONFLICT (name) DO UPDATE SET \
             machine = excluded.machine, pid = excluded.pid, last_seen = excluded.last_seen",
            args![name, machine, pid, now],
        )?;
        Ok(())
    }

    /// Every worker that ever registered, by name.
    pub fn workers(&self) -> Result<Vec<WorkerRecord>, CatalogError> {
        if !self.is_shared() {
            return Ok(Vec::new());
        }
        let now = Utc::now();
        self.db
            .query(
                "SELECT name, machine, pid, started, last_seen FROM workers ORDER BY name",
                &[],
            )?
            .iter()
            .map(|r| {
                let last_seen: String = r.get(4)?;
                let silent = super::parse_time("worker last seen", &last_seen)
                    .map(|t| (now - t).num_seconds())
                    .unwrap_or(0);
                Ok(WorkerRecord {
                    name: r.get(0)?,
                    machine: r.get(1)?,
                    pid: r.get(2)?,
                    started: r.get(3)?,
                    last_seen,
                    silent_seconds: silent,
                })
            })
            .collect()
    }
}
