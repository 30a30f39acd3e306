//! What changed since a reader last read the points: the catalog's change
//! log. Every write of what the planner reads of a point (the point, its
//! disks, a copy's state, lock or first sight, a data verification)
//! appends the point's id to `point_changes`, by trigger (migration 10), so
//! no writer can forget to. A planner that kept the points it read last
//! time asks only for the points changed since its [`ChangeMark`], and a
//! site of a million points is re-read in the time its last night's
//! changes take.
//!
//! The mark is trusted only when it is provably this log's and nothing
//! since it is gone; otherwise the answer is every point:
//! - the log's id (made at random by the migration) must be the mark's:
//!   another catalog, or one made afresh, has another;
//! - the log must not have been pruned past the mark (`change_log.horizon`);
//! - the mark's own row must still hold the random `nonce` it had: a
//!   catalog restored from an older copy numbers its next changes again
//!   from where the copy stood, and those rows hold other nonces.
//!
//! On PostgreSQL transactions commit in any order, not in the order of
//! the `seq` their rows took: a change numbered below the mark may commit
//! after the mark was read. Each row records its transaction id, and the
//! mark the oldest transaction still running when it was read
//! (`pg_snapshot_xmin`); the next read also takes every row of a
//! transaction at least that new. SQLite has one writer at a time, whose
//! rows are numbered in commit order.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};

use super::db::{Db, args};
use super::query::{PointRecord, Which};
use super::{Catalog, CatalogError, time_text};

/// Where a reader of the points stood: the last change it saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeMark {
    /// The change log's id.
    pub log: String,
    /// The newest change seen (0: none yet).
    pub seq: i64,
    /// That change's random nonce.
    pub nonce: i64,
    /// On PostgreSQL, the oldest transaction that was still running: its
    /// changes and later ones are read again. `i64::MAX` on SQLite.
    pub xmin: i64,
}

/// The points, as [`Catalog::points_since`] read them.
#[derive(Debug)]
pub enum PointsRead {
    /// Every point: there was no mark, or it could not be trusted.
    All {
        points: Vec<PointRecord>,
        verdicts: HashMap<(String, String), bool>,
    },
    /// What changed since the mark: the ids of the changed points, and
    /// what the catalog now holds of those still there (a point not among
    /// `points` is gone).
    Changed {
        ids: BTreeSet<String>,
        points: Vec<PointRecord>,
        verdicts: HashMap<(String, String), bool>,
    },
}

/// What [`Catalog::points_since`] answers.
#[derive(Debug)]
pub struct PointsSince {
    pub read: PointsRead,
    /// The mark to pass next time.
    pub mark: ChangeMark,
    /// Every point as well, from the same snapshot, when asked for: what a
    /// check of a saved read compares it with.
    pub all: Option<PointsRead>,
}

/// The changed points' ids, as a filter: `?1` the mark's seq, `?2` its
/// xmin.
const CHANGED: &str = "SELECT point_id FROM point_changes WHERE seq > ?1 OR txid >= ?2";

impl Catalog {
    /// The points, with their disks, copies and data verdicts, as one
    /// consistent snapshot of the catalog: all of them when `since` is
    /// `None` or cannot be trusted, else only those changed since; and
    /// the mark to pass next time. With `and_all`, every point as well.
    pub fn points_since(
        &self,
        since: Option<&ChangeMark>,
        and_all: bool,
    ) -> Result<PointsSince, CatalogError> {
        self.db.snapshot(|db| {
            let xmin = match db {
                Db::Sqlite(_) => i64::MAX,
                Db::Postgres(_) => db
                    .query_one(
                        "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint",
                        &[],
                    )?
                    .map(|r| r.get::<i64>(0))
                    .transpose()?
                    .unwrap_or(0),
            };
            let (log, horizon): (String, i64) =
                match db.query_one("SELECT id, horizon FROM change_log", &[])? {
                    Some(r) => (r.get(0)?, r.get(1)?),
                    None => {
                        return Err(CatalogError::BadValue {
                            what: "change log",
                            value: "no row in change_log".into(),
                        });
                    }
                };
            let (seq, nonce) = match db.query_one(
                "SELECT seq, nonce FROM point_changes ORDER BY seq DESC LIMIT 1",
                &[],
            )? {
                Some(r) => (r.get(0)?, r.get(1)?),
                None => (0, 0),
            };
            let mark = ChangeMark {
                log: log.clone(),
                seq,
                nonce,
                xmin,
            };
            let trusted = match since {
                Some(m) if m.log == log && m.seq >= horizon && m.seq <= seq => {
                    m.seq == 0
                        || db
                            .query_one(
                                "SELECT nonce FROM point_changes WHERE seq = ?1",
                                args![m.seq],
                            )?
                            .map(|r| r.get::<i64>(0))
                            .transpose()?
                            == Some(m.nonce)
                }
                _ => false,
            };
            let all = || -> Result<PointsRead, CatalogError> {
                Ok(PointsRead::All {
                    points: self.points_where(Which::All)?,
                    verdicts: self.data_verdicts_where(Which::All)?,
                })
            };
            let Some(m) = since.filter(|_| trusted) else {
                return Ok(PointsSince {
                    read: all()?,
                    mark,
                    all: None,
                });
            };
            let all = if and_all { Some(all()?) } else { None };
            let bounds = args![m.seq, m.xmin];
            let ids = db
                .query(
                    &format!("SELECT DISTINCT point_id FROM ({CHANGED}) c"),
                    bounds,
                )?
                .into_iter()
                .map(|mut r| r.take::<String>(0))
                .collect::<Result<BTreeSet<_>, _>>()?;
            // Nothing changed: no query for nothing (on PostgreSQL each
            // one scans a table).
            let changed = Which::IdIn(CHANGED, bounds);
            let (points, verdicts) = if ids.is_empty() {
                (Vec::new(), HashMap::new())
            } else {
                (
                    self.points_where(changed)?,
                    self.data_verdicts_where(changed)?,
                )
            };
            Ok(PointsSince {
                read: PointsRead::Changed {
                    ids,
                    points,
                    verdicts,
                },
                mark,
                all,
            })
        })
    }

    /// Forgets the changes recorded before `before`, keeping the newest
    /// whatever its age; a reader whose mark was among them reads every
    /// point again. Answers how many were forgotten.
    pub fn prune_point_changes(&mut self, before: DateTime<Utc>) -> Result<usize, CatalogError> {
        let oldest = self
            .db
            .query_one("SELECT at FROM point_changes ORDER BY seq LIMIT 1", &[])?;
        let cutoff = time_text(before);
        match oldest {
            Some(r) if r.get::<String>(0)? < cutoff => {}
            _ => return Ok(0),
        }
        self.db.transaction(|tx| {
            // Everything below the first change still young enough, or
            // below the newest: a prefix, so a mark at or after it has
            // every change after it.
            let keep_from: Option<i64> = tx
                .query_one(
                    "SELECT COALESCE(\
                       (SELECT min(seq) FROM point_changes WHERE at >= ?1), \
                       (SELECT max(seq) FROM point_changes))",
                    args![cutoff],
                )?
                .map(|r| r.get::<Option<i64>>(0))
                .transpose()?
                .flatten();
            let Some(keep_from) = keep_from else {
                return Ok(0);
            };
            tx.execute(
                "UPDATE change_log SET horizon = ?1 WHERE horizon < ?1",
                args![keep_from],
            )?;
            tx.execute("DELETE FROM point_changes WHERE seq < ?1", args![keep_from])
        })
    }
}
