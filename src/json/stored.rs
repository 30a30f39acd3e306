//! The documents of what is stored, built from what the engine read: a
//! repository's points (`repo ls`, `repo verify`) and the catalog's
//! (`catalog rebuild`, `refresh`, `show`).

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::Serialize;

use super::Document;
use crate::catalog::{self, Drift, DriftKind, PointRecord};
use crate::engine::catalog::Contents;
use crate::repo::manifest::{Manifest, PointKind};
use crate::repo::ops::VerifyReport;

/// `coffer repo ls --json`.
#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RepoLs {
    /// The repository (a directory or `s3://bucket/prefix`).
    pub repository: String,
    pub points: Vec<RepoPoint>,
    /// Manifests whose manifest could not be read, and why.
    pub unreadable: Vec<RepoUnreadable>,
    /// Object names that are not valid point names (never read).
    pub refused: Vec<String>,
}

impl Document for RepoLs {
    const COMMAND: &'static str = "repo-ls";
    const USAGE: &'static str = "coffer repo ls --json";
}

impl RepoLs {
    /// The points of `repository` (as it describes itself) that `listing`
    /// found.
    pub fn new(repository: String, listing: &crate::engine::repository::Listing) -> RepoLs {
        RepoLs {
            repository,
            points: listing.manifests.iter().map(RepoPoint::from).collect(),
            unreadable: (listing.unreadable.iter())
                .map(|(point, detail)| RepoUnreadable {
                    point: point.clone(),
                    detail: detail.clone(),
                })
                .collect(),
            refused: listing.refused.clone(),
        }
    }
}

#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RepoPoint {
    pub point: String,
    pub vm: String,
    pub vm_uuid: String,
    pub kind: PointKind,
    /// As the manifest records it (RFC 3339).
    pub created: String,
    pub parent: Option<String>,
    pub consistency: String,
    /// The disks' sizes together.
    pub size_bytes: u64,
    /// Data chunks the disks reference.
    pub chunks: u64,
}

impl From<&Manifest> for RepoPoint {
    fn from(m: &Manifest) -> RepoPoint {
        RepoPoint {
            point: m.point_id.clone(),
            vm: m.vm.name.clone(),
            vm_uuid: m.vm.uuid.clone(),
            kind: m.kind,
            created: m.created.clone(),
            parent: m.parent.clone(),
            consistency: m.consistency.clone(),
            size_bytes: m.disks.iter().map(|d| d.size_bytes).sum(),
            chunks: m.disks.iter().map(|d| d.chunks_data).sum(),
        }
    }
}

#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RepoUnreadable {
    pub point: String,
    pub detail: String,
}

/// `coffer repo verify --json`.
#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RepoVerify {
    pub ok: bool,
    pub points: usize,
    pub chunks_checked: usize,
    pub bytes_checked: u64,
    pub seconds: f64,
    pub damaged_chunks: Vec<DamagedChunk>,
    pub damaged_points: Vec<RepoUnreadable>,
    /// Manifests under names that are not valid points (never read).
    pub foreign: Vec<String>,
    /// Every point that cannot be restored as it was.
    pub failed_points: Vec<String>,
}

impl Document for RepoVerify {
    const COMMAND: &'static str = "repo-verify";
    const USAGE: &'static str = "coffer repo verify --json";
}

impl RepoVerify {
    pub fn new(r: &VerifyReport, seconds: f64) -> RepoVerify {
        RepoVerify {
            ok: r.ok(),
            points: r.points,
            chunks_checked: r.chunks_checked,
            bytes_checked: r.bytes_checked,
            seconds,
            damaged_chunks: r
                .bad_chunks
                .iter()
                .map(|b| DamagedChunk {
                    digest: b.digest.to_hex(),
                    detail: b.error.to_string(),
                    points: b.points.clone(),
                })
                .collect(),
            damaged_points: r
                .bad_points
                .iter()
                .map(|(p, why)| RepoUnreadable {
                    point: p.clone(),
                    detail: why.to_string(),
                })
                .collect(),
            foreign: r.refused_keys.clone(),
            failed_points: r.failed_points.iter().cloned().collect(),
        }
    }
}

#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct DamagedChunk {
    pub digest: String,
    pub detail: String,
    /// The points that use it.
    pub points: Vec<String>,
}

/// `coffer catalog rebuild --json` and `catalog refresh --json`.
#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct CatalogSync {
    pub tiers: Vec<TierDrift>,
}

impl Document for CatalogSync {
    const COMMAND: &'static str = "catalog-sync";
    const USAGE: &'static str = "coffer catalog rebuild --json, coffer catalog refresh --json";
}

impl CatalogSync {
    pub fn new(drifts: &[Drift]) -> CatalogSync {
        CatalogSync {
            tiers: drifts.iter().map(Into::into).collect(),
        }
    }
}

#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct TierDrift {
    pub tier: String,
    /// Points the tier lists (readable or not).
    pub listed: usize,
    pub drift: Vec<DriftDoc>,
}

#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct DriftDoc {
    pub point: String,
    pub vm_uuid: String,
    /// `missing`, `never-seen`, `appeared` or `corrupt`.
    pub kind: String,
    /// Why a manifest is corrupt.
    pub detail: Option<String>,
}

impl From<&Drift> for TierDrift {
    fn from(d: &Drift) -> TierDrift {
        TierDrift {
            tier: d.tier.clone(),
            listed: d.listed,
            drift: d
                .items
                .iter()
                .map(|i| {
                    let (kind, detail) = match &i.kind {
                        DriftKind::Missing => ("missing", None),
                        DriftKind::NeverSeen => ("never-seen", None),
                        DriftKind::Appeared => ("appeared", None),
                        DriftKind::Corrupt { reason } => ("corrupt", Some(reason.clone())),
                    };
                    DriftDoc {
                        point: i.point.point_id.clone(),
                        vm_uuid: i.point.vm_uuid.clone(),
                        kind: kind.into(),
                        detail,
                    }
                })
                .collect(),
        }
    }
}

/// `coffer catalog show --json`.
#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct CatalogShow {
    pub vms: Vec<CatalogVm>,
    /// Copies whose manifest could not be read.
    pub unreadable: Vec<CatalogUnreadable>,
}

impl Document for CatalogShow {
    const COMMAND: &'static str = "catalog-show";
    const USAGE: &'static str = "coffer catalog show --json";
}

impl CatalogShow {
    /// The catalog's `contents`, each point with the lifetime of the
    /// snapshot it was read from, as `lifetime` finds it.
    pub fn new(
        contents: &Contents,
        lifetime: impl Fn(&str) -> Option<catalog::SnapshotLifetimeRecord>,
    ) -> CatalogShow {
        CatalogShow {
            vms: contents
                .listed
                .iter()
                .map(|(vm, points)| CatalogVm {
                    uuid: vm.uuid.clone(),
                    name: vm.name.clone(),
                    source: vm.source.clone(),
                    points: points
                        .iter()
                        .map(|p| CatalogPoint::new(p, lifetime(&p.point_id)))
                        .collect(),
                })
                .collect(),
            unreadable: contents
                .unreadable
                .iter()
                .map(|(p, c)| CatalogUnreadable {
                    point: p.point_id.clone(),
                    vm_uuid: p.vm_uuid.clone(),
                    tier: c.tier.clone(),
                    state: c.state.as_str().into(),
                    detail: c.detail.clone(),
                })
                .collect(),
        }
    }
}

#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct CatalogVm {
    pub uuid: String,
    pub name: String,
    pub source: Option<String>,
    pub points: Vec<CatalogPoint>,
}

#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct CatalogPoint {
    pub point: String,
    pub created: DateTime<Utc>,
    pub kind: PointKind,
    pub parent: Option<String>,
    pub consistency: String,
    pub duration_ms: u64,
    /// When the snapshot it was read from was created and removed, when
    /// this catalog recorded the backup.
    pub snapshot: Option<SnapshotDoc>,
    pub disks: Vec<CatalogDisk>,
    pub copies: Vec<CopyDoc>,
}

#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct SnapshotDoc {
    pub name: String,
    pub created: DateTime<Utc>,
    pub removed: DateTime<Utc>,
    pub open_ms: i64,
}

#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct CatalogDisk {
    pub device_key: i32,
    pub label: String,
    pub size_bytes: u64,
    pub chunk_size_bytes: u32,
    pub index_sha256: String,
    pub change_id: Option<String>,
}

#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct CopyDoc {
    pub tier: String,
    /// `present`, `missing`, `corrupt`, …
    pub state: String,
    pub detail: Option<String>,
    /// Object Lock retention of an immutable copy.
    pub locked_until: Option<DateTime<Utc>>,
}

impl CatalogPoint {
    pub fn new(p: &PointRecord, snapshot: Option<catalog::SnapshotLifetimeRecord>) -> CatalogPoint {
        CatalogPoint {
            point: p.point_id.clone(),
            created: p.created,
            kind: p.kind,
            parent: p.parent.clone(),
            consistency: p.consistency.clone(),
            duration_ms: p.duration_ms,
            snapshot: snapshot.map(|s| SnapshotDoc {
                open_ms: (s.removed - s.created).num_milliseconds(),
                name: s.snapshot,
                created: s.created,
                removed: s.removed,
            }),
            disks: p
                .disks
                .iter()
                .map(|d| CatalogDisk {
                    device_key: d.device_key,
                    label: d.label.clone(),
                    size_bytes: d.size_bytes,
                    chunk_size_bytes: d.chunk_size_bytes,
                    index_sha256: d.index_sha256.clone(),
                    change_id: d.change_id.clone(),
                })
                .collect(),
            copies: p.copies.iter().map(CopyDoc::from).collect(),
        }
    }
}

impl From<&catalog::CopyRecord> for CopyDoc {
    fn from(c: &catalog::CopyRecord) -> CopyDoc {
        CopyDoc {
            tier: c.tier.clone(),
            state: c.state.as_str().into(),
            detail: c.detail.clone(),
            locked_until: c.locked_until,
        }
    }
}

#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct CatalogUnreadable {
    pub point: String,
    pub vm_uuid: String,
    pub tier: String,
    pub state: String,
    pub detail: Option<String>,
}
