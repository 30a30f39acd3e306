//! What the catalog answers: the records it holds and the questions the
//! planner and the CLI ask of them.

use super::db::{Row, args};
use super::{Catalog, CatalogError, parse_time, time_text};
use crate::repo::PointRef;
use crate::repo::manifest::PointKind;
use chrono::{DateTime, Utc};

/// Which points a read is of.
#[derive(Debug, Clone, Copy)]
pub(super) enum Which<'a> {
    All,
    /// Those a clause on `points p` selects, with its arguments.
    Where(&'a str, &'a [super::db::Value]),
    /// Those whose id a query answers, with its arguments.
    IdIn(&'a str, &'a [super::db::Value]),
}

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

    pub(crate) fn parse(s: &str) -> Result<Self, CatalogError> {
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

/// The point of a `points` row, in [`POINT_COLUMNS`] order, without its
/// disks and copies.
fn point_row(mut r: Row) -> Result<PointRecord, CatalogError> {
    Ok(PointRecord {
        point_id: r.take(0)?,
        vm_uuid: r.take(1)?,
        created: parse_time("point created", &r.take::<String>(2)?)?,
        kind: point_kind(&r.take::<String>(3)?)?,
        parent: r.take(4)?,
        consistency: r.take(5)?,
        duration_ms: r.take::<i64>(6)?.max(0) as u64,
        source: r.take(7)?,
        vm_name: r.take(8)?,
        disks: Vec::new(),
        copies: Vec::new(),
    })
}

impl Catalog {
    /// Every VM, by name.
    pub fn vms(&self) -> Result<Vec<VmRecord>, CatalogError> {
        let rows = self.db.query(
            "SELECT uuid, name, source, first_seen, last_seen FROM vms ORDER BY name, uuid",
            &[],
        )?;
        rows.iter()
            .map(|r| {
                Ok(VmRecord {
                    uuid: r.get(0)?,
                    name: r.get(1)?,
                    source: r.get(2)?,
                    first_seen: parse_time("vm first seen", &r.get::<String>(3)?)?,
                    last_seen: parse_time("vm last seen", &r.get::<String>(4)?)?,
                })
            })
            .collect()
    }

    /// The points of a VM, newest first (ties by point id, descending),
    /// each with its disks and copies.
    pub fn points_of_vm(&self, vm_uuid: &str) -> Result<Vec<PointRecord>, CatalogError> {
        let rows = self.db.query(
            &format!(
                "SELECT {POINT_COLUMNS} FROM points WHERE vm_uuid = ?1 \
                 ORDER BY created DESC, point_id DESC"
            ),
            args![vm_uuid],
        )?;
        let mut points: Vec<PointRecord> =
            rows.into_iter().map(point_row).collect::<Result<_, _>>()?;
        self.complete_points(&mut points, Which::Where("p.vm_uuid = ?1", args![vm_uuid]))?;
        Ok(points)
    }

    /// Every point, by VM uuid, each VM's newest first (as
    /// [`Catalog::points_of_vm`]): three queries for the whole catalog, so
    /// that planning a site of thousands of VMs from a catalog across the
    /// network waits for three answers, not for thousands.
    pub fn all_points(
        &self,
    ) -> Result<std::collections::HashMap<String, Vec<PointRecord>>, CatalogError> {
        let points = self.points_where(Which::All)?;
        let mut by_vm: std::collections::HashMap<String, Vec<PointRecord>> =
            std::collections::HashMap::new();
        for p in points {
            by_vm.entry(p.vm_uuid.clone()).or_default().push(p);
        }
        Ok(by_vm)
    }

    /// The verdict of the last data verification of every copy that had
    /// one (see [`Catalog::last_data_verification`]), by (point, tier), in
    /// one query.
    pub fn data_verdicts(
        &self,
    ) -> Result<std::collections::HashMap<(String, String), bool>, CatalogError> {
        self.data_verdicts_where(Which::All)
    }

    /// The points `which` selects, with their disks and copies, by VM
    /// uuid and each VM's newest first: three queries.
    pub(super) fn points_where(&self, which: Which<'_>) -> Result<Vec<PointRecord>, CatalogError> {
        let (clause, args) = match which {
            Which::All => ("1 = 1".to_string(), &[][..]),
            Which::Where(c, a) => (c.to_string(), a),
            Which::IdIn(q, a) => (format!("p.point_id IN ({q})"), a),
        };
        let rows = self.db.query(
            &format!(
                "SELECT {POINT_COLUMNS} FROM points p WHERE {clause} \
                 ORDER BY vm_uuid, created DESC, point_id DESC"
            ),
            args,
        )?;
        let mut points: Vec<PointRecord> =
            rows.into_iter().map(point_row).collect::<Result<_, _>>()?;
        self.complete_points(&mut points, which)?;
        Ok(points)
    }

    /// [`Catalog::data_verdicts`] of the copies of the points `which`
    /// selects.
    pub(super) fn data_verdicts_where(
        &self,
        which: Which<'_>,
    ) -> Result<std::collections::HashMap<(String, String), bool>, CatalogError> {
        let (clause, args) = match which {
            Which::All => ("1 = 1".to_string(), &[][..]),
            Which::Where(c, a) => (
                format!("x.point_id IN (SELECT p.point_id FROM points p WHERE {c})"),
                a,
            ),
            Which::IdIn(q, a) => (format!("x.point_id IN ({q})"), a),
        };
        let rows = self.db.query(
            &format!(
                "SELECT x.point_id, x.tier, x.data_ok FROM verifications x \
                 WHERE x.data_ok IS NOT NULL AND {clause} ORDER BY x.started, x.id"
            ),
            args,
        )?;
        let mut out = std::collections::HashMap::new();
        // Oldest first: the last one of a copy stays.
        for r in rows {
            out.insert((r.get(0)?, r.get(1)?), r.get(2)?);
        }
        Ok(out)
    }

    /// One point by id.
    pub fn point(&self, point_id: &str) -> Result<Option<PointRecord>, CatalogError> {
        let Some(row) = self.db.query_one(
            &format!("SELECT {POINT_COLUMNS} FROM points WHERE point_id = ?1"),
            args![point_id],
        )?
        else {
            return Ok(None);
        };
        let mut points = vec![point_row(row)?];
        self.complete_points(
            &mut points,
            Which::Where("p.point_id = ?1", args![point_id]),
        )?;
        Ok(points.pop())
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
        let row = self.db.query_one(
            &format!(
                "SELECT {VERIFICATION_COLUMNS} FROM verifications WHERE point_id = ?1 \
                 ORDER BY started DESC, id DESC LIMIT 1"
            ),
            args![point_id],
        )?;
        row.map(|r| verification(&r, 0)).transpose()
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
        let row = self.db.query_one(
            &format!(
                "SELECT {VERIFICATION_COLUMNS} FROM verifications \
                 WHERE point_id = ?1 AND tier = ?2 AND data_ok IS NOT NULL \
                 ORDER BY started DESC, id DESC LIMIT 1"
            ),
            args![point_id, tier],
        )?;
        row.map(|r| verification(&r, 0)).transpose()
    }

    /// Every finished drill, for the planner's `every`.
    pub fn drill_runs(&self) -> Result<Vec<DrillRun>, CatalogError> {
        let rows = self.db.query(
            "SELECT p.vm_uuid, v.kind, v.point_id, v.tier, v.drill, v.started, v.finished, \
                    v.ok, v.detail, v.restore_seconds, v.data_ok, v.guest_ok, v.guest_detail, \
                    v.heartbeat_seconds, v.method \
             FROM verifications v \
             JOIN points p ON p.point_id = v.point_id \
             WHERE v.drill IS NOT NULL AND v.finished IS NOT NULL \
             ORDER BY v.finished",
            &[],
        )?;
        rows.iter()
            .map(|r| {
                let vm_uuid: String = r.get(0)?;
                let v = verification(r, 1)?;
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
        self.db.insert(
            "INSERT INTO verifications \
             (kind, point_id, tier, drill, started, finished, ok, detail, restore_seconds, \
              data_ok, guest_ok, guest_detail, heartbeat_seconds, method) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
            args![
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
        )
    }

    /// Copies whose manifest could not be read and whose point the catalog
    /// knows nothing else about (no readable copy anywhere).
    pub fn unreadable_copies(&self) -> Result<Vec<(PointRef, CopyRecord)>, CatalogError> {
        let rows = self.db.query(
            "SELECT c.vm_uuid, c.point_id, c.tier, c.state, c.detail, c.locked_until, \
                    c.first_seen, c.last_seen \
             FROM copies c LEFT JOIN points p ON p.point_id = c.point_id \
             WHERE p.point_id IS NULL ORDER BY c.vm_uuid, c.point_id, c.tier",
            &[],
        )?;
        rows.into_iter()
            .map(|mut r| {
                let point = PointRef {
                    vm_uuid: r.take(0)?,
                    point_id: r.take(1)?,
                };
                Ok((point, copy_record(&mut r, 2)?))
            })
            .collect()
    }

    /// The last refresh of a tier, if any.
    pub fn tier_refresh(&self, tier: &str) -> Result<Option<TierRefresh>, CatalogError> {
        let row = self.db.query_one(
            "SELECT tier, refreshed_at, ok, error FROM tier_refreshes WHERE tier = ?1",
            args![tier],
        )?;
        row.map(|r| {
            Ok(TierRefresh {
                tier: r.get(0)?,
                refreshed_at: parse_time("tier refresh", &r.get::<String>(1)?)?,
                ok: r.get(2)?,
                error: r.get(3)?,
            })
        })
        .transpose()
    }

    /// Fills in the disks and copies of `points`, which are the points
    /// `which` selects: two queries whatever the number of points.
    fn complete_points(
        &self,
        points: &mut [PointRecord],
        which: Which<'_>,
    ) -> Result<(), CatalogError> {
        let at: std::collections::HashMap<String, usize> = points
            .iter()
            .enumerate()
            .map(|(i, p)| (p.point_id.clone(), i))
            .collect();
        // Every point, or points by id: no join, each table in its primary
        // key's order.
        let (join, filter, args) = match which {
            Which::All => ("", "1 = 1".to_string(), &[][..]),
            Which::Where(c, a) => ("JOIN points p ON p.point_id = x.point_id", c.to_string(), a),
            Which::IdIn(q, a) => ("", format!("x.point_id IN ({q})"), a),
        };
        let disks = self.db.query(
            &format!(
                "SELECT x.point_id, x.device_key, x.label, x.size_bytes, x.chunk_size_bytes, \
                 x.index_sha256, x.change_id, x.backing FROM point_disks x {join} \
                 WHERE {filter} ORDER BY x.point_id, x.device_key"
            ),
            args,
        )?;
        for mut r in disks {
            let Some(&i) = at.get(&r.take::<String>(0)?) else {
                continue;
            };
            points[i].disks.push(DiskRecord {
                device_key: r.take(1)?,
                label: r.take(2)?,
                size_bytes: r.take::<i64>(3)? as u64,
                chunk_size_bytes: r.take::<i64>(4)? as u32,
                index_sha256: r.take(5)?,
                change_id: r.take(6)?,
                backing: r.take(7)?,
            });
        }
        let copies = self.db.query(
            &format!(
                "SELECT x.point_id, x.tier, x.state, x.detail, x.locked_until, x.first_seen, \
                 x.last_seen FROM copies x {join} WHERE {filter} ORDER BY x.point_id, x.tier"
            ),
            args,
        )?;
        for mut r in copies {
            let Some(&i) = at.get(&r.take::<String>(0)?) else {
                continue;
            };
            let copy = copy_record(&mut r, 1)?;
            points[i].copies.push(copy);
        }
        Ok(())
    }
}

const VERIFICATION_COLUMNS: &str = "kind, point_id, tier, drill, started, finished, ok, detail, \
     restore_seconds, data_ok, guest_ok, guest_detail, heartbeat_seconds, method";

/// The verification whose [`VERIFICATION_COLUMNS`] start at column `at`.
fn verification(r: &Row, at: usize) -> Result<Verification, CatalogError> {
    Ok(Verification {
        kind: VerificationKind::parse(&r.get::<String>(at)?)?,
        point_id: r.get(at + 1)?,
        tier: r.get(at + 2)?,
        drill: r.get(at + 3)?,
        started: parse_time("verification start", &r.get::<String>(at + 4)?)?,
        finished: opt_time("verification end", r.get(at + 5)?)?,
        ok: r.get(at + 6)?,
        detail: r.get(at + 7)?,
        restore_seconds: r.get(at + 8)?,
        data_ok: r.get(at + 9)?,
        guest_ok: r.get(at + 10)?,
        guest_detail: r.get(at + 11)?,
        heartbeat_seconds: r.get(at + 12)?,
        method: r.get(at + 13)?,
    })
}

/// The copy whose columns `tier, state, detail, locked_until, first_seen,
/// last_seen` start at column `at`.
fn copy_record(r: &mut Row, at: usize) -> Result<CopyRecord, CatalogError> {
    Ok(CopyRecord {
        tier: r.take(at)?,
        state: CopyState::parse(&r.take::<String>(at + 1)?)?,
        detail: r.take(at + 2)?,
        locked_until: opt_time("copy locked until", r.take(at + 3)?)?,
        first_seen: parse_time("copy first seen", &r.take::<String>(at + 4)?)?,
        last_seen: parse_time("copy last seen", &r.take::<String>(at + 5)?)?,
    })
}
