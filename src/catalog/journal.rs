//! The journal of runs: each action is recorded before it starts and when
//! it ends, so after a crash, a power loss or `kill -9` the next run finds
//! what was under way, cleans up after it and says so.

use super::db::args;
use super::{Catalog, CatalogError, parse_time, time_text};
use chrono::{DateTime, Utc};

/// An action a run started and never finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unfinished {
    pub run_id: String,
    pub seq: i64,
    pub kind: String,
    /// What the action was about (the plan's JSON form of the action).
    pub target: String,
    pub started: Option<DateTime<Utc>>,
}

/// How long a backup's snapshot was open, and the point it gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotLifetimeRecord {
    pub run_id: String,
    pub vm_uuid: String,
    pub vm_name: String,
    pub snapshot: String,
    pub point_id: String,
    pub created: DateTime<Utc>,
    pub removed: DateTime<Utc>,
}

impl SnapshotLifetimeRecord {
    /// The point the backup made.
    pub fn point(&self) -> crate::repo::PointRef {
        crate::repo::PointRef {
            vm_uuid: self.vm_uuid.clone(),
            point_id: self.point_id.clone(),
        }
    }
}

impl Catalog {
    /// Records how long a backup's snapshot was open (migration 5).
    pub fn record_snapshot_lifetime(
        &mut self,
        r: &SnapshotLifetimeRecord,
    ) -> Result<(), CatalogError> {
        self.db.execute(
            "INSERT INTO snapshot_lifetimes \
             (run_id, vm_uuid, vm_name, snapshot, point_id, created, removed) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
             ON CONFLICT (run_id, vm_uuid, snapshot) DO UPDATE SET \
             vm_name = excluded.vm_name, point_id = excluded.point_id, \
             created = excluded.created, removed = excluded.removed",
            args![
                r.run_id,
                r.vm_uuid,
                r.vm_name,
                r.snapshot,
                r.point_id,
                time_text(r.created),
                time_text(r.removed)
            ],
        )?;
        Ok(())
    }

    /// How long the snapshot `point_id` was read from was open, if this
    /// catalog saw that backup.
    pub fn snapshot_lifetime_of(
        &self,
        point_id: &str,
    ) -> Result<Option<SnapshotLifetimeRecord>, CatalogError> {
        let row = self.db.query_one(
            "SELECT run_id, vm_uuid, vm_name, snapshot, created, removed \
             FROM snapshot_lifetimes WHERE point_id = ?1 ORDER BY removed DESC LIMIT 1",
            args![point_id],
        )?;
        row.map(|r| {
            Ok(SnapshotLifetimeRecord {
                run_id: r.get(0)?,
                vm_uuid: r.get(1)?,
                vm_name: r.get(2)?,
                snapshot: r.get(3)?,
                point_id: point_id.to_string(),
                created: parse_time("snapshot created", &r.get::<String>(4)?)?,
                removed: parse_time("snapshot removed", &r.get::<String>(5)?)?,
            })
        })
        .transpose()
    }

    /// Records that a run starts.
    pub fn start_run(&mut self, run_id: &str, command: &str) -> Result<(), CatalogError> {
        self.db.execute(
            "INSERT INTO runs (run_id, command, started) VALUES (?1, ?2, ?3)",
            args![run_id, command, time_text(Utc::now())],
        )?;
        Ok(())
    }

    /// Records that a run ended, with its outcome (success, partial, …).
    pub fn finish_run(&mut self, run_id: &str, outcome: &str) -> Result<(), CatalogError> {
        self.db.execute(
            "UPDATE runs SET finished = ?2, outcome = ?3 WHERE run_id = ?1",
            args![run_id, time_text(Utc::now()), outcome],
        )?;
        Ok(())
    }

    /// Records that an action starts; returns its row id.
    pub fn action_started(
        &mut self,
        run_id: &str,
        seq: i64,
        kind: &str,
        target: &str,
        reason: &str,
    ) -> Result<i64, CatalogError> {
        self.db.insert(
            "INSERT INTO actions (run_id, seq, kind, target, reason, state, started) \
             VALUES (?1, ?2, ?3, ?4, ?5, 'running', ?6)",
            args![run_id, seq, kind, target, reason, time_text(Utc::now())],
        )
    }

    /// Records how an action ended.
    pub fn action_finished(
        &mut self,
        id: i64,
        ok: bool,
        outcome: &str,
    ) -> Result<(), CatalogError> {
        self.db.execute(
            "UPDATE actions SET state = ?2, finished = ?3, outcome = ?4, error = ?5 WHERE id = ?1",
            args![
                id,
                if ok { "done" } else { "failed" },
                time_text(Utc::now()),
                if ok { Some(outcome) } else { None },
                if ok { None } else { Some(outcome) },
            ],
        )?;
        Ok(())
    }

    /// Actions of earlier runs that were started and never finished.
    pub fn unfinished_actions(&self) -> Result<Vec<Unfinished>, CatalogError> {
        let rows = self.db.query(
            "SELECT run_id, seq, kind, target, started FROM actions \
             WHERE state = 'running' ORDER BY run_id, seq",
            &[],
        )?;
        rows.into_iter()
            .map(|r| {
                Ok(Unfinished {
                    run_id: r.get(0)?,
                    seq: r.get(1)?,
                    kind: r.get(2)?,
                    target: r.get(3)?,
                    started: r
                        .get::<Option<String>>(4)?
                        .map(|s| parse_time("action start", &s))
                        .transpose()?,
                })
            })
            .collect()
    }

    /// Closes an interrupted action: failed, with why.
    pub fn mark_interrupted(&mut self, u: &Unfinished, note: &str) -> Result<(), CatalogError> {
        self.db.execute(
            "UPDATE actions SET state = 'failed', finished = ?3, error = ?4 \
             WHERE run_id = ?1 AND seq = ?2",
            args![u.run_id, u.seq, time_text(Utc::now()), note],
        )?;
        self.db.execute(
            "UPDATE runs SET finished = COALESCE(finished, ?2), outcome = COALESCE(outcome, 'interrupted') \
             WHERE run_id = ?1",
            args![u.run_id, time_text(Utc::now())],
        )?;
        Ok(())
    }
}
