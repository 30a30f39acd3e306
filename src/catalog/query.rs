//! What the catalog answers: the records it holds and the questions the
//! planner and the CLI ask of them.

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, Row, params};

use super::{Catalog, CatalogError, parse_time, time_text};
use crate::repo::PointRef;
use crate::repo::manifest::PointKind;

/// A VM the catalog has seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmRecord {
    pub uuid: String,
    pub name: String,
    pub source: Option<String>,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
}

/// One disk of a point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskRecord {
    pub device_key: i32,
    pub label: String,
    pub size_bytes: u64,
    pub chunk_size_bytes: u32,
    pub index_sha256: String,
    pub change_id: Option<String>,
    /// The datastore path the disk was read from (`None` before
    /// migration 4).
    pub backing: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CopyState {
    Present,
    Missing,
    Corrupt,
}

impl CopyState {
    pub fn as_str(self) -> &'static str {
        match self {
            CopyState::Present => "present",
            CopyState::Missing => "missing",
            CopyState::Corrupt => "corrupt",
        }
    }

    fn parse(s: &str) -> Result<Self, CatalogError> {
        match s {
            "present" => Ok(CopyState::Present),
            "missing" => Ok(CopyState::Missing),
            "corrupt" => Ok(CopyState::Corrupt),
            _ => Err(CatalogError::BadValue {
                what: "copy state",
                value: s.to_string(),
            }),
        }
    }
}

/// A copy of a point on a tier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyRecord {
    pub tier: String,
    pub state: CopyState,
    /// Why a copy is corrupt.
    pub detail: Option<String>,
    pub locked_until: Option<DateTime<Utc>>,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
}

/// A finished drill.
#[derive(Debug, Clone, PartialEq)]
pub struct DrillRun {
    pub drill: String,
    pub kind: String,
    pub point_id: String,
    pub vm_uuid: String,
    pub finished: DateTime<Utc>,
    /// The whole drill passed.
    pub ok: bool,
    pub detail: Option<String>,
    /// Data verification: every chunk read back and proven (`Some(true)`),
    /// damage found (`Some(false)`), or not known from this drill.
    pub data_ok: Option<bool>,
    /// Guest checks (fsck, heartbeat, TCP, scripts): `None` when none ran.
    pub guest_ok: Option<bool>,
    /// What the guest checks said, with the failing check's own output.
    pub guest_detail: Option<String>,
    /// Restore (and boot) time measured by the drill: to services checked.
    pub restore_seconds: Option<f64>,
    /// A boot drill: to the guest's first heartbeat.
    pub heartbeat_seconds: Option<f64>,
    /// A boot drill: "restore" or "instant".
    pub method: Option<String>,
}

/// A restore point with its disks and its copies (by tier name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PointRecord {
    pub point_id: String,
    pub vm_uuid: String,
    pub created: DateTime<Utc>,
    pub kind: PointKind,
    pub parent: Option<String>,
    /// What was achieved: "application", "filesystem", "crash" or "image".
    pub consistency: String,
    pub duration_ms: u64,
    /// The source the VM was read from, as its manifest records it (`None`
    /// for points from before coffer recorded it).
    pub source: Option<String>,
    /// The VM's name at this point, from its manifest.
    pub vm_name: Option<String>,
    pub disks: Vec<DiskRecord>,
    pub copies: Vec<CopyRecord>,
}

impl PointRecord {
    /// The copy on `tier`, in any state.
    pub fn copy_on(&self, tier: &str) -> Option<&CopyRecord> {
        self.copies.iter().find(|c| c.tier == tier)
    }

    /// Tiers that hold a readable copy.
    pub fn present_on(&self) -> impl Iterator<Item = &str> {
        self.copies
            .iter()
            .filter(|c| c.state == CopyState::Present)
            .map(|c| c.tier.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerificationKind {
    Verify,
    Restore,
    Boot,
}

impl VerificationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            VerificationKind::Verify => "verify",
            VerificationKind::Restore => "restore",
            VerificationKind::Boot => "boot",
        }
    }

    pub(crate) fn parse(s: &str) -> Result<Self, CatalogError> {
        match s {
            "verify" => Ok(VerificationKind::Verify),
            "restore" => Ok(VerificationKind::Restore),
            "boot" => Ok(VerificationKind::Boot),
            _ => Err(CatalogError::BadValue {
                what: "verification kind",
                value: s.to_string(),
            }),
        }
    }
}

/// A verification or drill of one point on one tier.
#[derive(Debug, Clone, PartialEq)]
pub struct Verification {
    pub kind: VerificationKind,
    pub point_id: String,
    pub tier: String,
    /// The drill's name in the policy, for a drill.
    pub drill: Option<String>,
    pub started: DateTime<Utc>,
    /// `None` while it runs (or when it was cut short).
    pub finished: Option<DateTime<Utc>>,
    /// The whole verification or drill passed.
    pub ok: Option<bool>,
    pub detail: Option<String>,
    /// Data verification, the only fact that says a copy is damaged:
    /// every chunk read back and proven (`Some(true)`), damage found
    /// (`Some(false)`), or not known from this run (`None`: it stopped
    /// before, or failed for a reason that is not the data's).
    pub data_ok: Option<bool>,
    /// Guest checks (fsck, heartbeat, TCP, scripts): passed, failed, or
    /// none ran (`None`). A failed guest check is an alert and a compliance
    /// finding; it never makes a copy damaged.
    pub guest_ok: Option<bool>,
    /// What the guest checks said, with the failing check's own output.
    pub guest_detail: Option<String>,
    /// For a restore or boot drill: how long the restore took (for a boot
    /// drill: to its services checked).
    pub restore_seconds: Option<f64>,
    /// For a boot drill: to the guest's first heartbeat.
    pub heartbeat_seconds: Option<f64>,
    /// For a boot drill: how it brought the VM up, "restore" or "instant".
    pub method: Option<String>,
}

/// The outcome of the last refresh of a tier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierRefresh {
    pub tier: String,
    pub refreshed_at: DateTime<Utc>,
    pub ok: bool,
    pub error: Option<String>,
}

fn opt_time(what: &'static str, s: Option<String>) -> Result<Option<DateTime<Utc>>, CatalogError> {
    s.map(|s| parse_time(what, &s)).transpose()
}

fn point_kind(s: &str) -> Result<PointKind, CatalogError> {
    match s {
        "full" => Ok(PointKind::Full),
        "incremental" => Ok(PointKind::Incremental),
        _ => Err(CatalogError::BadValue {
            what: "point kind",
            value: s.to_string(),
        }),
    }
}

const POINT_COLUMNS: &str =
    "point_id, vm_uuid, created, kind, parent, consistency, duration_ms, source, vm_name";

/// Raw columns of a `points` row, converted outside the rusqlite closure
/// so that a bad value is a `CatalogError`, not a panic.
type PointRow = (
    String,
    String,
    String,
    String,
    Option<String>,
    String,
    i64,
    Option<String>,
    Option<String>,
);

fn point_row(r: &Row<'_>) -> rusqlite::Result<PointRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
    ))
}

impl Catalog {
    /// Every VM, by name.
    pub fn vms(&self) -> Result<Vec<VmRecord>, CatalogError> {
        let mut stmt = self.conn.prepare(
            "SELECT uuid, name, source, first_seen, last_seen FROM vms ORDER BY name, uuid",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
            ))
        })?;
        rows.map(|row| {
            let (uuid, name, source, first, last) = row?;
            Ok(VmRecord {
                uuid,
                name,
                source,
                first_seen: parse_time("vm first seen", &first)?,
                last_seen: parse_time("vm last seen", &last)?,
            })
        })
        .collect()
    }

    /// The points of a VM, newest first (ties by point id, descending),
    /// each with its disks and copies.
    pub fn points_of_vm(&self, vm_uuid: &str) -> Result<Vec<PointRecord>, CatalogError> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {POINT_COLUMNS} FROM points WHERE vm_uuid = ?1 \
             ORDER BY created DESC, point_id DESC"
        ))?;
        let rows: Vec<PointRow> = stmt
            .query_map([vm_uuid], point_row)?
            .collect::<Result<_, _>>()?;
        rows.into_iter().map(|r| self.complete_point(r)).collect()
    }

    /// One point by id.
    pub fn point(&self, point_id: &str) -> Result<Option<PointRecord>, CatalogError> {
        let row = self
            .conn
            .query_row(
                &format!("SELECT {POINT_COLUMNS} FROM points WHERE point_id = ?1"),
                [point_id],
                point_row,
            )
            .optional()?;
        row.map(|r| self.complete_point(r)).transpose()
    }

    /// The newest point of a VM that some tier holds readable and whose
    /// data on that tier was not found damaged by its last data
    /// verification: what a restore, a drill or an incremental can start
    /// from. Guest checks (fsck, boot) do not count: they say nothing about
    /// the data.
    pub fn newest_good_point(&self, vm_uuid: &str) -> Result<Option<PointRecord>, CatalogError> {
        for p in self.points_of_vm(vm_uuid)? {
            let mut good = false;
            for tier in p.present_on() {
                good |= self
                    .last_data_verification(&p.point_id, tier)?
                    .is_none_or(|v| v.data_ok != Some(false));
            }
            if good {
                return Ok(Some(p));
            }
        }
        Ok(None)
    }

    /// The most recently started verification or drill of a point.
    pub fn last_verification(&self, point_id: &str) -> Result<Option<Verification>, CatalogError> {
        let row = self
            .conn
            .query_row(
                &format!(
                    "SELECT {VERIFICATION_COLUMNS} FROM verifications WHERE point_id = ?1 \
                     ORDER BY started DESC, id DESC LIMIT 1"
                ),
                [point_id],
                verification_row,
            )
            .optional()?;
        row.map(verification).transpose()
    }

    /// The most recent verification or drill of the copy of `point_id` on
    /// `tier` that proved its data or found it damaged: the fact that says
    /// whether the copy is damaged. Drills that failed only their guest
    /// checks, or stopped before reading the data, are not data facts.
    pub fn last_data_verification(
        &self,
        point_id: &str,
        tier: &str,
    ) -> Result<Option<Verification>, CatalogError> {
        let row = self
            .conn
            .query_row(
                &format!(
                    "SELECT {VERIFICATION_COLUMNS} FROM verifications \
                     WHERE point_id = ?1 AND tier = ?2 AND data_ok IS NOT NULL \
                     ORDER BY started DESC, id DESC LIMIT 1"
                ),
                [point_id, tier],
                verification_row,
            )
            .optional()?;
        row.map(verification).transpose()
    }

    /// Every finished drill, for the planner's `every`.
    pub fn drill_runs(&self) -> Result<Vec<DrillRun>, CatalogError> {
        let mut stmt = self.conn.prepare(
            "SELECT p.vm_uuid, v.kind, v.point_id, v.tier, v.drill, v.started, v.finished, \
                    v.ok, v.detail, v.restore_seconds, v.data_ok, v.guest_ok, v.guest_detail, \
                    v.heartbeat_seconds, v.method \
             FROM verifications v \
             JOIN points p ON p.point_id = v.point_id \
             WHERE v.drill IS NOT NULL AND v.finished IS NOT NULL \
             ORDER BY v.finished",
        )?;
        let rows: Vec<(String, VerificationRow)> = stmt
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    (
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                        r.get(7)?,
                        r.get(8)?,
                        r.get(9)?,
                        r.get(10)?,
                        r.get(11)?,
                        r.get(12)?,
                        r.get(13)?,
                        r.get(14)?,
                    ),
                ))
            })?
            .collect::<Result<_, _>>()?;
        rows.into_iter()
            .map(|(vm_uuid, row)| {
                let v = verification(row)?;
                Ok(DrillRun {
                    drill: v.drill.unwrap_or_default(),
                    kind: v.kind.as_str().to_string(),
                    point_id: v.point_id,
                    vm_uuid,
                    finished: v.finished.unwrap_or(v.started),
                    ok: v.ok == Some(true),
                    detail: v.detail,
                    data_ok: v.data_ok,
                    guest_ok: v.guest_ok,
                    guest_detail: v.guest_detail,
                    restore_seconds: v.restore_seconds,
                    heartbeat_seconds: v.heartbeat_seconds,
                    method: v.method,
                })
            })
            .collect()
    }

    /// Records a verification or drill; returns its row id.
    pub fn record_verification(&mut self, v: &Verification) -> Result<i64, CatalogError> {
        self.conn.execute(
            "INSERT INTO verifications \
             (kind, point_id, tier, drill, started, finished, ok, detail, restore_seconds, \
              data_ok, guest_ok, guest_detail, heartbeat_seconds, method) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
            params![
                v.kind.as_str(),
                v.point_id,
                v.tier,
                v.drill,
                time_text(v.started),
                v.finished.map(time_text),
                v.ok,
                v.detail,
                v.restore_seconds,
                v.data_ok,
                v.guest_ok,
                v.guest_detail,
                v.heartbeat_seconds,
                v.method,
            ],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Copies whose manifest could not be read and whose point the catalog
    /// knows nothing else about (no readable copy anywhere).
    pub fn unreadable_copies(&self) -> Result<Vec<(PointRef, CopyRecord)>, CatalogError> {
        let mut stmt = self.conn.prepare(
            "SELECT c.vm_uuid, c.point_id, c.tier, c.state, c.detail, c.locked_until, \
                    c.first_seen, c.last_seen \
             FROM copies c LEFT JOIN points p ON p.point_id = c.point_id \
             WHERE p.point_id IS NULL ORDER BY c.vm_uuid, c.point_id, c.tier",
        )?;
        let rows: Vec<(String, String, CopyRow)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, copy_row(r, 2)?)))?
            .collect::<Result<_, _>>()?;
        rows.into_iter()
            .map(|(vm_uuid, point_id, c)| Ok((PointRef { vm_uuid, point_id }, copy_record(c)?)))
            .collect()
    }

    /// The last refresh of a tier, if any.
    pub fn tier_refresh(&self, tier: &str) -> Result<Option<TierRefresh>, CatalogError> {
        let row = self
            .conn
            .query_row(
                "SELECT tier, refreshed_at, ok, error FROM tier_refreshes WHERE tier = ?1",
                [tier],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, bool>(2)?,
                        r.get::<_, Option<String>>(3)?,
                    ))
                },
            )
            .optional()?;
        row.map(|(tier, at, ok, error)| {
            Ok(TierRefresh {
                tier,
                refreshed_at: parse_time("tier refresh", &at)?,
                ok,
                error,
            })
        })
        .transpose()
    }

    fn complete_point(&self, row: PointRow) -> Result<PointRecord, CatalogError> {
        let (point_id, vm_uuid, created, kind, parent, consistency, duration_ms, source, vm_name) =
            row;
        let mut stmt = self.conn.prepare_cached(
            "SELECT device_key, label, size_bytes, chunk_size_bytes, index_sha256, change_id, \
             backing FROM point_disks WHERE point_id = ?1 ORDER BY device_key",
        )?;
        let disks = stmt
            .query_map([&point_id], |r| {
                Ok(DiskRecord {
                    device_key: r.get(0)?,
                    label: r.get(1)?,
                    size_bytes: r.get::<_, i64>(2)? as u64,
                    chunk_size_bytes: r.get::<_, i64>(3)? as u32,
                    index_sha256: r.get(4)?,
                    change_id: r.get(5)?,
                    backing: r.get(6)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        let mut stmt = self.conn.prepare_cached(
            "SELECT tier, state, detail, locked_until, first_seen, last_seen \
             FROM copies WHERE point_id = ?1 ORDER BY tier",
        )?;
        let copies = stmt
            .query_map([&point_id], |r| copy_row(r, 0))?
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .map(copy_record)
            .collect::<Result<_, _>>()?;
        Ok(PointRecord {
            created: parse_time("point created", &created)?,
            kind: point_kind(&kind)?,
            point_id,
            vm_uuid,
            parent,
            consistency,
            duration_ms: duration_ms.max(0) as u64,
            source,
            vm_name,
            disks,
            copies,
        })
    }
}

const VERIFICATION_COLUMNS: &str = "kind, point_id, tier, drill, started, finished, ok, detail, \
     restore_seconds, data_ok, guest_ok, guest_detail, heartbeat_seconds, method";

/// Raw columns of a `verifications` row, in [`VERIFICATION_COLUMNS`] order.
type VerificationRow = (
    String,
    String,
    String,
    Option<String>,
    String,
    Option<String>,
    Option<bool>,
    Option<String>,
    Option<f64>,
    Option<bool>,
    Option<bool>,
    Option<String>,
    Option<f64>,
    Option<String>,
);

fn verification_row(r: &Row<'_>) -> rusqlite::Result<VerificationRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
        r.get(9)?,
        r.get(10)?,
        r.get(11)?,
        r.get(12)?,
        r.get(13)?,
    ))
}

fn verification(row: VerificationRow) -> Result<Verification, CatalogError> {
    let (
        kind,
        point_id,
        tier,
        drill,
        started,
        finished,
        ok,
        detail,
        secs,
        data_ok,
        guest_ok,
        gd,
        heartbeat,
        method,
    ) = row;
    Ok(Verification {
        kind: VerificationKind::parse(&kind)?,
        point_id,
        tier,
        drill,
        started: parse_time("verification start", &started)?,
        finished: opt_time("verification end", finished)?,
        ok,
        detail,
        data_ok,
        guest_ok,
        guest_detail: gd,
        restore_seconds: secs,
        heartbeat_seconds: heartbeat,
        method,
    })
}

type CopyRow = (
    String,
    String,
    Option<String>,
    Option<String>,
    String,
    String,
);

/// The copy columns `tier, state, detail, locked_until, first_seen,
/// last_seen` starting at column `at`.
fn copy_row(r: &Row<'_>, at: usize) -> rusqlite::Result<CopyRow> {
    Ok((
        r.get(at)?,
        r.get(at + 1)?,
        r.get(at + 2)?,
        r.get(at + 3)?,
        r.get(at + 4)?,
        r.get(at + 5)?,
    ))
}

fn copy_record(c: CopyRow) -> Result<CopyRecord, CatalogError> {
    let (tier, state, detail, locked_until, first, last) = c;
    Ok(CopyRecord {
        tier,
        state: CopyState::parse(&state)?,
        detail,
        locked_until: opt_time("copy locked until", locked_until)?,
        first_seen: parse_time("copy first seen", &first)?,
        last_seen: parse_time("copy last seen", &last)?,
    })
}
