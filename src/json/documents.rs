//! The documents the commands print with `--json`, built from what the
//! engine returns.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::Serialize;

use super::Document;
use crate::catalog;
use crate::engine::Gathered;
use crate::engine::inventory::InventoryRow;
use crate::plan::cbt::CbtVerdict;
use crate::plan::compliance::VmCompliance;
use crate::plan::planner::{Action, Plan};
use crate::plan::retention::Verdict;
use crate::policy::Loaded;
use crate::policy::diag::{self, JsonDiagnostic};
use crate::repo::manifest::{Manifest, PointKind};
use crate::run::vm_backup::{Leftover, VmBackupOutcome};

/// `coffer validate --json`.
#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Validate {
    pub valid: bool,
    pub files: Vec<String>,
    pub errors: usize,
    pub warnings: usize,
    pub diagnostics: Vec<JsonDiagnostic>,
}

impl Document for Validate {
    const COMMAND: &'static str = "validate";
    const USAGE: &'static str = "coffer validate --json";
}

impl Validate {
    pub fn new(loaded: &Loaded, errors: usize, warnings: usize) -> Validate {
        Validate {
            valid: errors == 0,
            files: loaded
                .files
                .iter()
                .map(|f| f.display().to_string())
                .collect(),
            errors,
            warnings,
            diagnostics: diag::to_json(&loaded.diagnostics, &loaded.sources),
        }
    }
}

/// `coffer inventory --json`.
#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Inventory {
    pub vms: Vec<InventoryVm>,
}

impl Document for Inventory {
    const COMMAND: &'static str = "inventory";
    const USAGE: &'static str = "coffer inventory --json";
}

/// A VM as its source describes it.
#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct InventoryVm {
    pub source: String,
    pub name: String,
    pub moref: String,
    pub datacenter: Option<String>,
    /// The ESXi host that runs it (its managed object id).
    pub host: Option<String>,
    pub instance_uuid: Option<String>,
    /// `PoweredOn`, `PoweredOff` or `Suspended`.
    pub power_state: Option<String>,
    /// VMware Tools' running status (`guestToolsRunning`, …).
    pub tools: Option<String>,
    pub cbt: bool,
    pub consolidation_needed: bool,
    /// The key of an encrypted VM (coffer does not back those up).
    pub encryption_key: Option<String>,
    pub disks: Vec<InventoryDisk>,
    pub snapshots: Vec<InventorySnapshot>,
    /// The policies whose selectors take it (none: not backed up).
    pub policies: Vec<String>,
    /// Snapshot hygiene findings, in words.
    pub alerts: Vec<String>,
}

#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct InventoryDisk {
    pub key: i32,
    pub capacity_bytes: u64,
    pub file: String,
    pub change_id: Option<String>,
    /// The disk mode (`persistent`, `independent_persistent`, …).
    pub mode: Option<String>,
    /// `virtualMode` / `physicalMode` for a raw device mapping, else null.
    pub raw_device_mapping: Option<String>,
}

#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct InventorySnapshot {
    pub name: String,
    pub created: DateTime<Utc>,
}

impl Inventory {
    pub fn new(rows: &[InventoryRow]) -> Inventory {
        let vms = rows
            .iter()
            .map(|r| {
                let vm = &r.vm;
                InventoryVm {
                    source: r.source.clone(),
                    name: vm.name.clone(),
                    moref: vm.moref.value.clone(),
                    datacenter: vm.datacenter.clone(),
                    host: vm.host.as_ref().map(|h| h.value.clone()),
                    instance_uuid: vm.instance_uuid.clone(),
                    power_state: vm.power_state.map(|p| format!("{p:?}")),
                    tools: vm.tools_running_status.clone(),
                    cbt: vm.change_tracking_enabled,
                    consolidation_needed: vm.consolidation_needed,
                    encryption_key: vm.encryption_key.clone(),
                    disks: vm
                        .disks
                        .iter()
                        .map(|d| InventoryDisk {
                            key: d.key,
                            capacity_bytes: d.capacity_bytes,
                            file: d.file_name.clone(),
                            change_id: d.change_id.as_ref().map(|c| c.0.clone()),
                            mode: d.disk_mode.clone(),
                            raw_device_mapping: match &d.backing {
                                crate::inventory::DiskBacking::RawDeviceMapping {
                                    compatibility_mode,
                                } => Some(
                                    compatibility_mode
                                        .clone()
                                        .unwrap_or_else(|| "unknown".into()),
                                ),
                                _ => None,
                            },
                        })
                        .collect(),
                    snapshots: vm
                        .all_snapshots()
                        .iter()
                        .map(|s| InventorySnapshot {
                            name: s.name.clone(),
                            created: s.create_time,
                        })
                        .collect(),
                    policies: r.policies.clone(),
                    alerts: r.alerts.iter().map(|a| a.describe()).collect(),
                }
            })
            .collect();
        Inventory { vms }
    }
}

/// `coffer plan --json`.
#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct PlanDoc {
    /// The time the plan was made for (`--at`, else now).
    pub now: DateTime<Utc>,
    /// What gathering noticed (unreachable sources, refused tiers, …).
    pub notes: Vec<String>,
    pub actions: Vec<Action>,
    pub compliance: Vec<VmCompliance>,
}

impl Document for PlanDoc {
    const COMMAND: &'static str = "plan";
    const USAGE: &'static str = "coffer plan --json";
}

impl PlanDoc {
    pub fn new(plan: &Plan, gathered: &Gathered) -> PlanDoc {
        PlanDoc {
            now: plan.now,
            notes: gathered.notes.clone(),
            actions: plan.actions.clone(),
            compliance: plan.compliance.clone(),
        }
    }
}

/// `coffer compliance --json`.
#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Compliance {
    pub now: DateTime<Utc>,
    pub notes: Vec<String>,
    pub vms: Vec<VmCompliance>,
    /// Every drill run the catalog holds, newest first.
    pub drills: Vec<DrillRunDoc>,
}

impl Document for Compliance {
    const COMMAND: &'static str = "compliance";
    const USAGE: &'static str = "coffer compliance --json";
}

impl Compliance {
    pub fn new(plan: &Plan, gathered: &Gathered) -> Compliance {
        Compliance {
            now: plan.now,
            notes: gathered.notes.clone(),
            vms: plan.compliance.clone(),
            drills: gathered.drill_runs.iter().map(Into::into).collect(),
        }
    }
}

/// A finished drill.
#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct DrillRunDoc {
    pub drill: String,
    pub kind: String,
    pub vm_uuid: String,
    pub point: String,
    pub finished: DateTime<Utc>,
    /// The whole drill passed.
    pub ok: bool,
    pub detail: Option<String>,
    /// Every chunk read back and proven (true), damage found (false), or
    /// not known from this drill (null).
    pub data_ok: Option<bool>,
    /// Guest checks (fsck, heartbeat, TCP, scripts); null when none ran.
    pub guest_ok: Option<bool>,
    pub guest_detail: Option<String>,
    /// Start to checks passed (a boot drill: to its services checked).
    pub restore_seconds: Option<f64>,
    /// A boot drill: start to the guest's first heartbeat.
    pub heartbeat_seconds: Option<f64>,
    /// A boot drill: "restore" (restored onto the host, then booted) or
    /// "instant" (booted from the repository over NFS).
    pub method: Option<String>,
}

impl From<&catalog::DrillRun> for DrillRunDoc {
    fn from(r: &catalog::DrillRun) -> DrillRunDoc {
        DrillRunDoc {
            drill: r.drill.clone(),
            kind: r.kind.clone(),
            vm_uuid: r.vm_uuid.clone(),
            point: r.point_id.clone(),
            finished: r.finished,
            ok: r.ok,
            detail: r.detail.clone(),
            data_ok: r.data_ok,
            guest_ok: r.guest_ok,
            guest_detail: r.guest_detail.clone(),
            restore_seconds: r.restore_seconds,
            heartbeat_seconds: r.heartbeat_seconds,
            method: r.method.clone(),
        }
    }
}

/// `coffer backup VM --json`.
#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Backup {
    pub run_id: String,
    pub vm: String,
    pub point: String,
    pub tier: String,
    pub kind: PointKind,
    pub parent: Option<String>,
    /// `application`, `filesystem` or `crash`.
    pub consistency: String,
    /// Why an application-consistent snapshot fell back to crash-consistent.
    pub quiesce_fallback: Option<String>,
    pub consistency_alert: Option<String>,
    pub snapshot: String,
    pub snapshot_created: DateTime<Utc>,
    pub snapshot_removed: DateTime<Utc>,
    /// coffer snapshots of earlier runs removed first, and why.
    pub leftovers_removed: Vec<LeftoverDoc>,
    /// coffer snapshots left alone, and why.
    pub leftovers_kept: Vec<LeftoverDoc>,
    pub notes: Vec<String>,
    pub duration_ms: u64,
    pub disks: Vec<BackupDisk>,
}

impl Document for Backup {
    const COMMAND: &'static str = "backup";
    const USAGE: &'static str = "coffer backup VM --json";
}

#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct LeftoverDoc {
    pub snapshot: String,
    pub detail: String,
}

impl From<&Leftover> for LeftoverDoc {
    fn from(l: &Leftover) -> LeftoverDoc {
        LeftoverDoc {
            snapshot: l.name.clone(),
            detail: l.why.clone(),
        }
    }
}

#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct BackupDisk {
    pub device_key: i32,
    /// `full` or `incremental`.
    pub mode: PointKind,
    /// Why a full, or since which change id an incremental.
    pub reason: String,
    pub bytes_fetched: u64,
    pub requests: u64,
    /// Requests the host answered 503 (busy).
    pub busy_answers: u64,
    /// Where the disk was read: an ESXi host, or vCenter and why.
    pub read_from: String,
    /// For an incremental, the bytes change tracking named as changed.
    pub bytes_changed: Option<u64>,
    pub size_bytes: u64,
    pub change_id: Option<String>,
}

impl Backup {
    pub fn new(run_id: &str, vm: &str, tier: &str, outcome: &VmBackupOutcome) -> Backup {
        let m = &outcome.manifest;
        Backup {
            run_id: run_id.into(),
            vm: vm.into(),
            point: m.point_id.clone(),
            tier: tier.into(),
            kind: m.kind,
            parent: m.parent.clone(),
            consistency: outcome.consistency.clone(),
            quiesce_fallback: outcome.quiesce_fallback.clone(),
            consistency_alert: outcome.consistency_alert.clone(),
            snapshot: outcome.snapshot.clone(),
            snapshot_created: outcome.snapshot_lifetime.created,
            snapshot_removed: outcome.snapshot_lifetime.removed,
            leftovers_removed: outcome.leftovers_removed.iter().map(Into::into).collect(),
            leftovers_kept: outcome.leftovers_kept.iter().map(Into::into).collect(),
            notes: outcome.notes.clone(),
            duration_ms: m.duration_ms,
            disks: outcome
                .disks
                .iter()
                .zip(&m.disks)
                .map(|(d, e)| {
                    let (mode, reason) = match &d.verdict {
                        CbtVerdict::Incremental { since } => {
                            (PointKind::Incremental, format!("changed since {since}"))
                        }
                        CbtVerdict::Full { reason } => (PointKind::Full, reason.clone()),
                    };
                    BackupDisk {
                        device_key: d.device_key,
                        mode,
                        reason,
                        bytes_fetched: d.bytes_fetched,
                        requests: d.requests,
                        busy_answers: d.busy_answers,
                        read_from: d.read_from.clone(),
                        bytes_changed: d.bytes_changed,
                        size_bytes: e.size_bytes,
                        change_id: e.change_id.clone(),
                    }
                })
                .collect(),
        }
    }
}

/// `coffer backup-image --json`.
#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct BackupImage {
    pub point: String,
    pub kind: PointKind,
    pub seconds: f64,
    pub disk_bytes: u64,
    pub bytes_read: u64,
    pub chunks_new: u64,
    pub bytes_stored_new: u64,
}

impl Document for BackupImage {
    const COMMAND: &'static str = "backup-image";
    const USAGE: &'static str = "coffer backup-image FILE --json";
}

impl BackupImage {
    pub fn new(m: &Manifest, seconds: f64) -> BackupImage {
        let d = &m.disks[0];
        BackupImage {
            point: m.point_id.clone(),
            kind: m.kind,
            seconds,
            disk_bytes: d.size_bytes,
            bytes_read: d.bytes_read,
            chunks_new: d.chunks_new,
            bytes_stored_new: d.bytes_stored_new,
        }
    }
}

/// `coffer retention --json`.
#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Retention {
    pub points: Vec<RetentionPoint>,
}

impl Document for Retention {
    const COMMAND: &'static str = "retention";
    const USAGE: &'static str = "coffer retention simulate --json";
}

impl Retention {
    pub fn new(verdicts: &[Verdict]) -> Retention {
        Retention {
            points: verdicts
                .iter()
                .map(|v| RetentionPoint {
                    time: v.created,
                    keep: v.keep,
                    reasons: v.reasons.iter().map(|r| r.to_string()).collect(),
                })
                .collect(),
        }
    }
}

#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RetentionPoint {
    pub time: DateTime<Utc>,
    pub keep: bool,
    /// The rules that keep it (`daily 3`, …).
    pub reasons: Vec<String>,
}

/// `coffer lab write --json`.
#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct LabWrite {
    pub vm: String,
    pub disks: Vec<LabDiskWrite>,
}

impl Document for LabWrite {
    const COMMAND: &'static str = "lab-write";
    const USAGE: &'static str = "coffer lab write VM --json";
}

#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct LabDiskWrite {
    pub key: i32,
    /// The file the writes went to (the top layer), relative to the
    /// datastore.
    pub file: String,
    /// 64 KiB blocks written.
    pub blocks: usize,
    /// The byte ranges written.
    pub areas: Vec<Area>,
}

/// Bytes `start` (included) to `end` (excluded).
#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Area {
    pub start: u64,
    pub end: u64,
}

impl LabWrite {
    pub fn new(vm: &str, written: &[crate::lab::ops::DiskWrite]) -> LabWrite {
        LabWrite {
            vm: vm.into(),
            disks: written
                .iter()
                .map(|d| LabDiskWrite {
                    key: d.key,
                    file: d.file.clone(),
                    blocks: d.blocks,
                    areas: d
                        .areas
                        .iter()
                        .map(|r| Area {
                            start: r.start,
                            end: r.end,
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}
