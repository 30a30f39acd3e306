//! The backup of one VM, as a closed loop: make sure CBT is on, take a
//! snapshot (quiesced when the policy asks), read each disk of the snapshot
//! into the repository (only the changed areas when CBT can be trusted),
//! record the snapshot's change ids in the point, remove the snapshot.
//!
//! The snapshot is removed on every path: success, an error, a cancel
//! (Ctrl-C), a panic in a reader (the guard's `Drop`). Its name carries the
//! run id (`coffer-<run id>`) and its description the installation id, so
//! a run that was killed outright leaves a snapshot the next backup of this
//! installation recognises as its own and removes; another installation's
//! snapshot is left alone until it is older than `snapshot_max_age` (see
//! `plan::hygiene::leftover_verdict`), because that coffer may still be
//! reading it.
//!
//! Removing a snapshot does not make its files vanish: ESXi merges the
//! running delta back into the disk the snapshot froze and deletes only the
//! delta (VMware KB 1015180, "Understanding virtual machine snapshots";
//! the lab does the same, `lab::disk::Disk::merge_up_into`). A read of a
//! removed snapshot therefore goes on and returns a mix of old and new
//! blocks. So before the point is committed the backup asks the host
//! whether its snapshot still exists; if not, it fails and records nothing.
//!
//! The consistency a point records is what the host gave (`consistency`):
//! a policy asking for `application` that gets `filesystem` removes the
//! snapshot and fails; `application-preferred` keeps the point and alerts.
//! A snapshot open past the policy's `max_snapshot_lifetime`
//! (`snapshot_lifetime`) stops the read, is removed, and fails the backup.

pub use crate::progress::ReadProgress;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::plan::cbt::{self, CbtVerdict, LiveDisk};
use crate::plan::hygiene::{LeftoverVerdict, leftover_verdict, snapshot_description};
use crate::policy::model::Consistency;
use crate::repo::backup::{self, BackupRequest, DiskReader, DiskSource};
use crate::repo::manifest::{Manifest, SkippedDisk, VmIdentity};
use crate::repo::{RepoError, Repository};
use crate::vsphere::datastore::{DatastoreDisk, DatastorePath, DiskError};
use crate::vsphere::soap::{self, SnapshotRequest};
use crate::vsphere::types::{ChangeId, MoRef, VmDisk, VmRecord};
use crate::vsphere::{Error as VsphereError, Session, VimFault};

pub use crate::plan::hygiene::{SNAPSHOT_PREFIX, snapshot_name};
pub use crate::run::consistency::{
    CONSISTENCY_APPLICATION, CONSISTENCY_CRASH, CONSISTENCY_FILESYSTEM, VSS_MANIFEST_FILE,
};
pub use crate::run::snapshot_lifetime::SnapshotLifetime;

use crate::run::connect::HostRoute;
use crate::run::consistency::{self, Achieved, consistency_asked};
use crate::run::snapshot_lifetime::SnapshotClock;

/// What to back up and how.
pub struct VmBackupRequest<'a> {
    pub vm: &'a VmRecord,
    /// This coffer's installation id (`run::installation::id`), written in
    /// the snapshot's description. The caller holds the runner lock of that
    /// installation's state dir.
    pub installation: &'a str,
    /// Coffer snapshots older than this are removed whoever took them.
    pub snapshot_max_age: Duration,
    /// The policy's name of the source the VM is read from: recorded in
    /// the manifest as part of the VM's identity.
    pub source: &'a str,
    /// `dcPath` of datastore URLs: `ha-datacenter` on a standalone ESXi host.
    pub datacenter: &'a str,
    /// Through a vCenter: read from the host that runs the VM, or why not
    /// (`Connected::host_route`); `None` reads through the source itself.
    pub host_route: Option<&'a HostRoute>,
    pub run_id: &'a str,
    pub consistency: Consistency,
    /// The newest good point of this VM on the tier, for an incremental.
    pub base: Option<&'a Manifest>,
    pub chunk_size_bytes: u32,
    pub threads: usize,
    /// Time limit for each vSphere task (snapshot, reconfigure, remove).
    pub task_timeout: Duration,
    /// Read every disk whole, not only the areas change tracking calls
    /// allocated (after a CBT reset).
    pub read_whole_disk: bool,
    /// Set (e.g. by Ctrl-C) to stop: the snapshot is still removed.
    pub cancel: &'a AtomicBool,
    /// The policy's `io_limit` on reads from the host, shared by its backups.
    pub io_limit: Option<&'a crate::run::throttle::Throttle>,
    /// Counts the bytes read from the host, for progress reports.
    pub progress: Option<&'a ReadProgress>,
    /// How the source's datastores are read (request size, requests in
    /// flight, patience with a busy host).
    pub read: crate::vsphere::datastore::ReadOptions,
    /// The longest the snapshot may stay open (the policy's
    /// `max_snapshot_lifetime`): past it the read stops, the snapshot is
    /// removed and the backup fails, recording nothing.
    pub max_snapshot_lifetime: Option<Duration>,
    /// Asked last before the point is committed, after the snapshot
    /// checks: whether this process may still commit it (a worker's lease
    /// is still its own). An error stops the commit and says why.
    pub fence: Option<&'a Fence<'a>>,
}

/// A last check before a point is committed (see `VmBackupRequest::fence`).
pub type Fence<'f> = dyn Fn() -> Result<(), String> + Sync + 'f;

/// What one disk's read was.
#[derive(Debug, Clone)]
pub struct DiskOutcome {
    pub device_key: i32,
    pub label: String,
    pub verdict: CbtVerdict,
    /// Bytes received from the datastore and the requests it took.
    pub bytes_fetched: u64,
    pub requests: u64,
    /// Requests the host answered 503 (busy) and were asked again.
    pub busy_answers: u64,
    /// For an incremental, the bytes change tracking named as changed.
    pub bytes_changed: Option<u64>,
    /// Where the disk was read: the source, an ESXi host, or vCenter's
    /// own `/folder` and why not the host.
    pub read_from: String,
}

#[derive(Debug)]
pub struct VmBackupOutcome {
    pub manifest: Manifest,
    /// What the host gave: "application" (quiesced, with a VSS manifest),
    /// "filesystem" (quiesced without one) or "crash".
    pub consistency: String,
    /// Why an application-consistent snapshot fell back to crash-consistent.
    pub quiesce_fallback: Option<String>,
    /// Said when the policy prefers application consistency and the host
    /// gave file-system consistency: the point is kept, with this alert.
    pub consistency_alert: Option<String>,
    pub cbt_enabled_now: bool,
    pub disks: Vec<DiskOutcome>,
    pub snapshot: String,
    /// When the snapshot was there (its CreateSnapshot task done) and when
    /// it was gone again (its RemoveSnapshot task done).
    pub snapshot_lifetime: SnapshotLifetime,
    /// coffer snapshots of earlier runs found on the VM and removed first.
    pub leftovers_removed: Vec<Leftover>,
    /// coffer snapshots found on the VM and left alone (another
    /// installation's backup may be reading them).
    pub leftovers_kept: Vec<Leftover>,
    /// What the backup had to do otherwise than asked, said once each
    /// (a datastore without allocated-areas answers, read whole).
    pub notes: Vec<String>,
}

/// A coffer snapshot a backup found on its VM, and why it was removed or
/// kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leftover {
    pub name: String,
    pub why: String,
}

/// Why a VM's backup failed. A variant caused by another error keeps that
/// error as its source and out of its own message, so printed whole
/// (`{:#}`, as the runner and the journal print it) the cause follows once:
/// `VM web01: snapshot of …: <the host's fault>`.
#[derive(Debug, thiserror::Error)]
pub enum VmBackupError {
    #[error("VM {vm}: unsupported: {reason}")]
    Unsupported { vm: String, reason: String },
    #[error("VM {vm}: {step}")]
    Vsphere {
        vm: String,
        step: &'static str,
        #[source]
        source: Box<VsphereError>,
    },
    #[error(
        "VM {vm}: the guest could not be quiesced ({source}) and the policy asks for {asked} consistency"
    )]
    QuiesceFailed {
        vm: String,
        /// The policy's `consistency`.
        asked: &'static str,
        #[source]
        source: Box<VsphereError>,
    },
    #[error(
        "VM {vm}: the snapshot is only file-system-consistent ({why}) and the policy asks for \
         application consistency; the snapshot was removed and no point was recorded"
    )]
    NotApplicationConsistent { vm: String, why: String },
    #[error("VM {vm}")]
    Disk {
        vm: String,
        #[source]
        source: Box<DiskError>,
    },
    #[error("VM {vm}")]
    Repo {
        vm: String,
        #[source]
        source: RepoError,
    },
    #[error("VM {vm}: cancelled; the snapshot was removed and no point was recorded")]
    Cancelled { vm: String },
    #[error(
        "VM {vm}: snapshot {snapshot} was open longer than the policy's max_snapshot_lifetime \
         of {limit}; the read was stopped and the snapshot removed, {lifetime}; no point was \
         recorded"
    )]
    SnapshotOpenTooLong {
        vm: String,
        snapshot: String,
        limit: String,
        lifetime: String,
    },
    #[error("VM {vm} was deleted while it was being backed up; no point was recorded")]
    VmGone { vm: String },
    #[error(
        "VM {vm}: snapshot {snapshot} was removed while it was being read (by hand, or by \
         another program); what was read may mix old and new data, so no point was recorded"
    )]
    SnapshotGone { vm: String, snapshot: String },
    #[error(
        "VM {vm}: {disk} moved while it was being read ({before} → {after}: a Storage vMotion, \
         or the disk was changed); what was read may mix old and new data, so no point was \
         recorded"
    )]
    DiskMoved {
        vm: String,
        disk: String,
        before: String,
        after: String,
    },
    #[error(
        "VM {vm}: snapshot {snapshot} is left alone ({why}); coffer cannot read a VM with \
         another snapshot on top, so this backup waits for the next run"
    )]
    HeldByAnotherRun {
        vm: String,
        snapshot: String,
        why: String,
    },
    #[error("VM {vm}: {cause}; and removing snapshot {snapshot} failed too: {removal}")]
    SnapshotLeft {
        vm: String,
        snapshot: String,
        cause: String,
        removal: String,
    },
}

/// Removes the snapshot when dropped, unless `remove` already did.
struct SnapshotGuard<'a> {
    session: &'a Session,
    snapshot: Option<MoRef>,
    timeout: Duration,
}

impl SnapshotGuard<'_> {
    /// Removes the snapshot now, retrying twice: a busy host refuses with
    /// TaskInProgress for a moment.
    fn remove(&mut self) -> Result<(), VsphereError> {
        let Some(snap) = self.snapshot.take() else {
            return Ok(());
        };
        let mut last = None;
        for attempt in 0..3 {
            if attempt > 0 {
                std::thread::sleep(Duration::from_secs(2 * attempt));
            }
            match self.session.remove_snapshot(&snap, self.timeout) {
                Ok(()) => return Ok(()),
                Err(e)
                    if e.fault()
                        .is_some_and(|f| matches!(f, VimFault::ManagedObjectNotFound { .. })) =>
                {
                    // Already gone (removed by hand, or the VM went away).
                    return Ok(());
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("three attempts failed"))
    }
}

impl Drop for SnapshotGuard<'_> {
    fn drop(&mut self) {
        if let Some(snap) = self.snapshot.clone()
            && let Err(e) = self.remove()
        {
            eprintln!("coffer: could not remove snapshot {snap}: {e}; the next run will remove it");
        }
    }
}

/// Fails reads once the cancel flag is set, so a running read stops soon.
struct Cancellable<'a> {
    inner: &'a dyn DiskReader,
    cancel: &'a AtomicBool,
    clock: &'a SnapshotClock,
    progress: Option<&'a ReadProgress>,
}

impl DiskReader for Cancellable<'_> {
    fn size_bytes(&self) -> u64 {
        self.inner.size_bytes()
    }
    fn read_shape(&self) -> crate::repo::backup::ReadShape {
        self.inner.read_shape()
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::Interrupted,
                "cancelled",
            ));
        }
        if self.clock.past_deadline() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the snapshot has been open longer than max_snapshot_lifetime",
            ));
        }
        self.inner.read_exact_at(buf, offset)?;
        if let Some(p) = self.progress {
            p.read.fetch_add(buf.len() as u64, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// The disks of `vm` a backup leaves out, with why.
fn skipped_disks(vm: &VmRecord) -> Vec<SkippedDisk> {
    vm.disks
        .iter()
        .filter_map(|d| {
            d.why_not_backed_up().map(|reason| SkippedDisk {
                device_key: d.key,
                file: d.file_name.clone(),
                reason,
                slot: d.slot.clone(),
            })
        })
        .collect()
}

/// Backs up one VM into `repo`; see the module comment for the loop.
pub fn backup_vm(
    session: &Session,
    repo: &Repository,
    req: &VmBackupRequest<'_>,
) -> Result<VmBackupOutcome, VmBackupError> {
    let vm = req.vm;
    let name = vm.name.clone();
    let vs = |step: &'static str| {
        let name = name.clone();
        move |source: VsphereError| VmBackupError::Vsphere {
            vm: name.clone(),
            step,
            source: Box::new(source),
        }
    };
    let Some(uuid) = vm.instance_uuid.clone() else {
        return Err(VmBackupError::Unsupported {
            vm: name,
            reason: "the VM has no instance UUID".into(),
        });
    };
    // Refused before anything touches the VM: no snapshot, no CBT change.
    if let Some(reason) = vm.why_refused() {
        return Err(VmBackupError::Unsupported { vm: name, reason });
    }
    if vm.disks.is_empty() {
        return Err(VmBackupError::Unsupported {
            vm: name,
            reason: "the VM has no virtual disks".into(),
        });
    }
    // Disks a snapshot cannot hold are left out and recorded in the point;
    // a VM with no other disk is refused.
    let skipped = skipped_disks(vm);
    if skipped.len() == vm.disks.len() {
        return Err(VmBackupError::Unsupported {
            vm: name,
            reason: format!(
                "no disk coffer can back up: {}",
                skipped
                    .iter()
                    .map(|s| s.reason.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        });
    }
    // A run killed outright (power loss, SIGKILL) left its snapshot: remove
    // it before taking a new one, if it is this installation's or too old.
    let mut leftovers_removed = Vec::new();
    let mut leftovers_kept = Vec::new();
    let now = chrono::Utc::now();
    for s in vm.all_snapshots() {
        match leftover_verdict(s, now, req.snapshot_max_age, req.installation, req.run_id) {
            None => {}
            Some(LeftoverVerdict::Keep(why)) => leftovers_kept.push(Leftover {
                name: s.name.clone(),
                why,
            }),
            Some(LeftoverVerdict::Remove(why)) => {
                match session.remove_snapshot(&s.snapshot, req.task_timeout) {
                    Err(e)
                        if e.fault().is_some_and(|f| {
                            matches!(f, VimFault::ManagedObjectNotFound { .. })
                        }) => {}
                    r => r.map_err(vs("removing a snapshot an earlier run left behind"))?,
                }
                leftovers_removed.push(Leftover {
                    name: s.name.clone(),
                    why,
                });
            }
        }
    }
    // Another coffer's backup may be reading that snapshot; a snapshot of
    // ours on top of it would be a delta chain coffer does not read.
    if let Some(kept) = leftovers_kept.first() {
        return Err(VmBackupError::HeldByAnotherRun {
            vm: name,
            snapshot: kept.name.clone(),
            why: kept.why.clone(),
        });
    }
    if vm.consolidation_needed {
        session
            .run_task(&soap::consolidate_vm_disks(&vm.moref), req.task_timeout)
            .map_err(vs("consolidating disks left by an earlier snapshot"))?;
    }
    let cbt_was_enabled = vm.change_tracking_enabled;
    if !cbt_was_enabled {
        // Takes effect at the next stun: the snapshot below.
        session
            .set_change_tracking(&vm.moref, true, req.task_timeout)
            .map_err(vs("enabling Changed Block Tracking"))?;
    }
    if req.cancel.load(Ordering::Relaxed) {
        return Err(VmBackupError::Cancelled { vm: name });
    }

    let snap_name = snapshot_name(req.run_id);
    let description = snapshot_description(req.run_id, req.installation);
    let want_quiesce = req.consistency != Consistency::Crash;
    // VSS manifests of other snapshots already among the VM's files are no
    // evidence for this one. When the host does not say, any manifest
    // found afterwards counts.
    let manifests_before: Vec<String> = if want_quiesce {
        session
            .guest_quiesce_facts(&vm.moref)
            .map(|f| f.vss_manifests)
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    let take = |quiesce: bool| {
        session.create_snapshot(
            &vm.moref,
            &SnapshotRequest {
                name: &snap_name,
                description: &description,
                memory: false,
                quiesce,
            },
            req.task_timeout,
        )
    };
    let (snapshot, quiesced, quiesce_fallback) = match take(want_quiesce) {
        Ok(s) => (s, want_quiesce, None),
        Err(e)
            if want_quiesce
                && e.fault()
                    .is_some_and(|f| matches!(f, VimFault::Quiesce { .. })) =>
        {
            if req.consistency != Consistency::ApplicationPreferred {
                return Err(VmBackupError::QuiesceFailed {
                    vm: name,
                    asked: consistency_asked(req.consistency),
                    source: Box::new(e),
                });
            }
            let why = e.to_string();
            let s = take(false).map_err(vs(
                "creating a crash-consistent snapshot after quiescing failed",
            ))?;
            (s, false, Some(why))
        }
        Err(e) => return Err(vs("creating the snapshot")(e)),
    };
    let created = chrono::Utc::now();
    let clock = SnapshotClock::start(req.max_snapshot_lifetime);
    let mut guard = SnapshotGuard {
        session,
        snapshot: Some(snapshot.clone()),
        timeout: req.task_timeout,
    };
    // What the host gave, not what was asked: a quiesced snapshot is
    // application-consistent only with a VSS manifest beside it.
    let Achieved {
        consistency,
        vss_manifest,
        filesystem_only,
    } = consistency::achieved(session, &vm.moref, quiesced, &manifests_before);
    let consistency_alert = match (&filesystem_only, req.consistency) {
        (Some(why), Consistency::Application) => {
            let cause = VmBackupError::NotApplicationConsistent {
                vm: name.clone(),
                why: why.clone(),
            };
            return match guard.remove() {
                Ok(()) => Err(cause),
                Err(e) => Err(VmBackupError::SnapshotLeft {
                    vm: name,
                    snapshot: snap_name,
                    cause: cause.to_string(),
                    removal: e.to_string(),
                }),
            };
        }
        (Some(why), Consistency::ApplicationPreferred) => Some(format!(
            "file-system-consistent, not application-consistent: {why}"
        )),
        _ => None,
    };

    let result = read_disks(
        session,
        repo,
        req,
        &snapshot,
        &uuid,
        consistency,
        vss_manifest.as_deref(),
        &clock,
        cbt_was_enabled,
    )
    .map_err(|e| {
        // A read that fails because the VM itself went away says so,
        // rather than blaming the datastore.
        let gone = matches!(e, VmBackupError::Disk { .. } | VmBackupError::Repo { .. })
            && session
                .list_vms()
                .is_ok_and(|vms| !vms.iter().any(|v| v.moref == vm.moref));
        if gone {
            VmBackupError::VmGone { vm: name.clone() }
        } else {
            e
        }
    });
    let removal = guard.remove();
    let lifetime = SnapshotLifetime {
        created,
        removed: chrono::Utc::now(),
    };
    // A read the deadline stopped says so, with how long the snapshot was
    // open, whatever error the stopped read surfaced as.
    let result = match result {
        Err(VmBackupError::Repo { .. } | VmBackupError::Disk { .. })
            if clock.expired.load(Ordering::SeqCst) =>
        {
            Err(VmBackupError::SnapshotOpenTooLong {
                vm: name.clone(),
                snapshot: snap_name.clone(),
                limit: clock
                    .limit
                    .map(crate::policy::units::format_duration)
                    .unwrap_or_default(),
                lifetime: lifetime.describe(),
            })
        }
        other => other,
    };
    match (result, removal) {
        (Ok((manifest, disks, notes)), Ok(())) => Ok(VmBackupOutcome {
            manifest,
            consistency: consistency.to_string(),
            quiesce_fallback,
            consistency_alert,
            cbt_enabled_now: true,
            disks,
            snapshot: snap_name,
            snapshot_lifetime: lifetime,
            leftovers_removed,
            leftovers_kept,
            notes,
        }),
        (Ok(_), Err(e)) => Err(VmBackupError::SnapshotLeft {
            vm: name,
            snapshot: snap_name,
            cause: "the point was written".into(),
            removal: e.to_string(),
        }),
        (Err(cause), Ok(())) => Err(cause),
        (Err(cause), Err(e)) => Err(VmBackupError::SnapshotLeft {
            vm: name,
            snapshot: snap_name,
            cause: cause.to_string(),
            removal: e.to_string(),
        }),
    }
}

#[allow(clippy::too_many_arguments)]
fn read_disks(
    session: &Session,
    repo: &Repository,
    req: &VmBackupRequest<'_>,
    snapshot: &MoRef,
    uuid: &str,
    consistency: &str,
    vss_manifest: Option<&str>,
    clock: &SnapshotClock,
    cbt_was_enabled: bool,
) -> Result<(Manifest, Vec<DiskOutcome>, Vec<String>), VmBackupError> {
    let vm = req.vm;
    let skipped = skipped_disks(vm);
    let name = &vm.name;
    let vs = |step: &'static str| {
        move |source: VsphereError| VmBackupError::Vsphere {
            vm: name.clone(),
            step,
            source: Box::new(source),
        }
    };
    let disks = session
        .snapshot_disks(snapshot)
        .map_err(vs("reading the snapshot's disks"))?;
    let mut plans = Vec::new();
    // Datastores whose host refused the allocated-areas query (`*`): the
    // datastore, the disks read whole there, the host's fault. Asked once
    // per datastore and said once.
    let mut no_allocated_areas: Vec<(String, Vec<i32>, String)> = Vec::new();
    // Raw device mappings whose host refused it: the disk, the fault.
    let mut no_rdm_allocated_areas: Vec<(i32, String)> = Vec::new();
    for disk in disks
        .iter()
        .filter(|d| !skipped.iter().any(|s| s.device_key == d.key))
    {
        let base_disk = req
            .base
            .and_then(|b| b.disks.iter().find(|d| d.device_key == disk.key));
        let live = LiveDisk {
            device_key: disk.key,
            capacity_bytes: disk.capacity_bytes,
            backing: &disk.file_name,
            change_id: disk.change_id.as_ref().map(|c| c.0.as_str()),
        };
        let mut verdict = cbt::verdict(base_disk, &live, cbt_was_enabled);
        // A full because tracking cannot be trusted (or right after a
        // reset) reads the whole disk: the allocated-areas answer (`*`)
        // comes from the same tracking layer.
        let mut distrusted = req.read_whole_disk
            || (cbt_was_enabled
                && base_disk.is_some()
                && matches!(verdict, CbtVerdict::Full { .. }));
        // An incremental starts from the parent's index: when that is gone
        // or unreadable, read the disk whole rather than fail every run.
        if let (CbtVerdict::Incremental { .. }, Some(bd), Some(bm)) =
            (&verdict, base_disk, req.base)
            && let Err(e) = repo.read_index(bm, bd)
        {
            verdict = CbtVerdict::Full {
                reason: format!("parent index missing or unreadable ({e})"),
            };
        }
        let mut ranges: Option<Vec<std::ops::Range<u64>>> = None;
        if let CbtVerdict::Incremental { since } = &verdict {
            match session.changed_disk_areas(
                &vm.moref,
                snapshot,
                disk.key,
                disk.capacity_bytes,
                &ChangeId(since.clone()),
            ) {
                Ok(pages) => ranges = Some(pages.into_iter().flat_map(|p| p.changed).collect()),
                Err(VsphereError::Fault(f)) if f.cbt_untrusted() => {
                    distrusted = true;
                    verdict = CbtVerdict::Full {
                        reason: format!("the host could not say what changed since {since}: {f}"),
                    };
                }
                Err(e) => return Err(vs("querying changed areas")(e)),
            }
        }
        if matches!(verdict, CbtVerdict::Full { .. }) && disk.change_id.is_some() && !distrusted {
            // `*`: the allocated areas; a thin disk's holes are not read.
            // Only VMFS knows them ("the virtual disk must be located on a
            // VMFS volume", VMware KB 1020128): on an NFS datastore the host
            // answers with a fault, and the disk is read whole.
            // Nor of a raw device mapping's LUN, which is no VMFS file
            // (the lab answers with a fault, as for NFS): asked per disk,
            // never blamed on its datastore.
            let datastore = DatastorePath::parse(&disk.file_name)
                .map_or_else(|| disk.file_name.clone(), |p| p.datastore);
            if let Some(known) = no_allocated_areas
                .iter_mut()
                .find(|(ds, _, _)| *ds == datastore && !disk.is_rdm())
            {
                known.1.push(disk.key);
            } else {
                match session.changed_disk_areas(
                    &vm.moref,
                    snapshot,
                    disk.key,
                    disk.capacity_bytes,
                    &ChangeId::all(),
                ) {
                    Ok(pages) => ranges = Some(pages.into_iter().flat_map(|p| p.changed).collect()),
                    Err(VsphereError::Fault(f)) if disk.is_rdm() => {
                        no_rdm_allocated_areas.push((disk.key, f.to_string()))
                    }
                    Err(VsphereError::Fault(f)) => {
                        no_allocated_areas.push((datastore, vec![disk.key], f.to_string()))
                    }
                    // Not a host's answer (a dropped connection): read whole,
                    // as before, without blaming the datastore.
                    Err(_) => {}
                }
            }
        }
        let path =
            DatastorePath::parse(&disk.file_name).ok_or_else(|| VmBackupError::Unsupported {
                vm: name.clone(),
                reason: format!("disk {} is not on a datastore", disk.file_name),
            })?;
        plans.push((disk, verdict, ranges, path));
    }
    if let Some(p) = req.progress {
        let planned: u64 = plans
            .iter()
            .map(|(disk, _, ranges, _)| match ranges {
                Some(r) => r.iter().map(|r| r.end - r.start).sum(),
                None => disk.capacity_bytes,
            })
            .sum();
        p.planned.store(planned, Ordering::Relaxed);
    }
    let transport = session.transport();
    let mut readers = Vec::new();
    let mut read_from = Vec::new();
    // Through a vCenter, from the host that runs the VM; a host that
    // cannot be read sends this disk and the next ones through vCenter's
    // own `/folder`, said in the outcome.
    let (mut via_host, mut fallback) = match req.host_route {
        Some(HostRoute::Host { name, transport }) => (Some((name.as_str(), &**transport)), None),
        Some(HostRoute::Fallback(why)) => (None, Some(why.clone())),
        None => (None, None),
    };
    for (disk, _, _, path) in &plans {
        if let Some((host, t)) = via_host {
            // A host speaks of its own datacenter only.
            match DatastoreDisk::open(t, "ha-datacenter", path, disk.capacity_bytes, &req.read) {
                Ok(r) => {
                    readers.push(r);
                    read_from.push(format!("host {host}"));
                    continue;
                }
                Err(e) => {
                    fallback = Some(format!("host {host} could not be read: {e}"));
                    via_host = None;
                }
            }
        }
        readers.push(
            DatastoreDisk::open(
                transport,
                req.datacenter,
                path,
                disk.capacity_bytes,
                &req.read,
            )
            .map_err(|source| VmBackupError::Disk {
                vm: name.clone(),
                source: Box::new(source),
            })?,
        );
        read_from.push(match &fallback {
            Some(why) => format!("vCenter's /folder ({why})"),
            None => "the source's /folder".to_string(),
        });
    }
    let throttled: Vec<Option<crate::run::throttle::ThrottledReader<'_>>> = readers
        .iter()
        .map(|r| {
            req.io_limit
                .map(|throttle| crate::run::throttle::ThrottledReader { inner: r, throttle })
        })
        .collect();
    let cancellable: Vec<Cancellable<'_>> = readers
        .iter()
        .zip(&throttled)
        .map(|(r, t)| Cancellable {
            inner: match t {
                Some(t) => t as &dyn DiskReader,
                None => r as &dyn DiskReader,
            },
            cancel: req.cancel,
            clock,
            progress: req.progress,
        })
        .collect();
    let sources = plans
        .iter()
        .zip(&cancellable)
        .enumerate()
        .map(|(i, ((disk, verdict, ranges, _), reader))| DiskSource {
            device_key: disk.key,
            // Numbered as the VM numbers them, skipped disks included.
            label: format!(
                "Hard disk {}",
                vm.disks.iter().position(|d| d.key == disk.key).unwrap_or(i) + 1
            ),
            reader,
            change_id: disk.change_id.as_ref().map(|c| c.0.clone()),
            ranges: ranges.clone(),
            from_parent: matches!(verdict, CbtVerdict::Incremental { .. }),
            backing: Some(disk.file_name.clone()),
            slot: disk.slot.clone(),
        })
        .collect();
    // The VM's configuration, kept with the point so a restore can
    // register the VM again. A host that does not serve it (some vCenter
    // setups forbid /folder for .vmx) leaves the point without it.
    let mut files = Vec::new();
    let mut notes = Vec::new();
    if let Some(vmx) = vm.vmx_path.as_deref().and_then(DatastorePath::parse) {
        let resp = crate::vsphere::datastore::fetch_small_file(
            session.transport(),
            &req.read,
            &vmx.url(req.datacenter),
        )
        .map_err(vs("reading the VM's .vmx"))?;
        if resp.status == 200 {
            let name = vmx.path.rsplit('/').next().unwrap_or("vm.vmx").to_string();
            // The VM's NVRAM (its BIOS or EFI variables: boot order, secure
            // boot keys) is the file the .vmx's `nvram` names beside it
            // (vSphere Virtual Machine Administration, "Virtual Machine
            // Files"); a restore without it boots with factory settings.
            if let Some(nvram) =
                crate::vsphere::vmx::value(&String::from_utf8_lossy(&resp.body), "nvram")
                    .filter(|n| !n.is_empty() && !n.contains('/'))
                    .map(str::to_string)
            {
                let path = vmx.sibling(&nvram);
                let got = crate::vsphere::datastore::fetch_small_file(
                    session.transport(),
                    &req.read,
                    &path.url(req.datacenter),
                );
                match got {
                    Ok(r) if r.status == 200 => files.push((nvram, r.body)),
                    Ok(r) => notes.push(format!(
                        "the VM's NVRAM ({nvram}) was not kept: the host answered HTTP {}",
                        r.status
                    )),
                    Err(e) => notes.push(format!("the VM's NVRAM ({nvram}) was not kept: {e}")),
                }
            }
            files.push((name, resp.body));
        }
    }
    // The snapshot's VSS manifest (the backup components document and the
    // writers' manifests), which the VDDK guide asks backup applications
    // to keep with the backup ("Working with Microsoft Shadow Copy").
    if let Some(path) = vss_manifest.and_then(DatastorePath::parse) {
        let resp = session
            .transport()
            .datastore_get(&path.url(req.datacenter), None)
            .map_err(vs("reading the snapshot's VSS manifest"))?;
        if resp.status == 200 {
            files.push((VSS_MANIFEST_FILE.to_string(), resp.body));
        }
    }
    // Asked after the last byte was read, before the point is committed:
    // the snapshot is still there, and each disk read is still the file it
    // was when the read began. A Storage vMotion moves a VM's snapshot
    // files with its disks ("Storage vMotion of virtual machines with
    // snapshots is supported", vSphere vCenter Server and Host Management,
    // "Storage vMotion Requirements and Limitations"), so the snapshot's
    // `config.hardware.device` then names other files.
    let snapshot_gone = AtomicBool::new(false);
    let moved: std::sync::Mutex<Option<(String, String, String)>> = Default::default();
    let still_there = || -> Result<(), RepoError> {
        let vms = session.list_vms().map_err(|e| {
            RepoError::Invalid(format!(
                "could not confirm that snapshot {snapshot} still exists: {e}"
            ))
        })?;
        let exists = vms
            .iter()
            .filter(|v| v.moref == vm.moref)
            .flat_map(|v| v.all_snapshots())
            .any(|s| &s.snapshot == snapshot);
        if !exists {
            snapshot_gone.store(true, Ordering::SeqCst);
            return Err(RepoError::Invalid(format!("snapshot {snapshot} is gone")));
        }
        let now = session.snapshot_disks(snapshot).map_err(|e| {
            RepoError::Invalid(format!(
                "could not confirm that the disks of snapshot {snapshot} did not move: {e}"
            ))
        })?;
        if let Some(change) = disk_moved(plans.iter().map(|(d, ..)| *d), &now) {
            let said = format!("{} moved: {} → {}", change.0, change.1, change.2);
            *moved.lock().unwrap_or_else(|p| p.into_inner()) = Some(change);
            return Err(RepoError::Invalid(said));
        }
        if let Some(fence) = req.fence {
            fence().map_err(RepoError::Invalid)?;
        }
        Ok(())
    };
    let result = backup::backup_checked(
        repo,
        BackupRequest {
            vm: VmIdentity {
                name: name.clone(),
                uuid: uuid.to_string(),
                source: Some(req.source.to_string()),
                source_instance: session.service_content().about.instance_uuid.clone(),
            },
            consistency: consistency.to_string(),
            chunk_size_bytes: req.chunk_size_bytes,
            parent: req.base,
            disks: sources,
            files,
            skipped_disks: skipped.clone(),
            threads: req.threads,
        },
        &still_there,
    );
    // A read that failed because the snapshot was removed under it (the
    // host then locks the files again for the running VM) is told as that.
    if let Err(RepoError::SourceRead { .. }) = &result {
        let _ = still_there();
    }
    let moved = moved.into_inner().unwrap_or_else(|p| p.into_inner());
    let manifest = match result {
        Ok(m) => m,
        Err(_) if moved.is_some() => {
            let (disk, before, after) = moved.expect("checked");
            return Err(VmBackupError::DiskMoved {
                vm: name.clone(),
                disk,
                before,
                after,
            });
        }
        Err(_) if snapshot_gone.load(Ordering::SeqCst) => {
            return Err(VmBackupError::SnapshotGone {
                vm: name.clone(),
                snapshot: snapshot_name(req.run_id),
            });
        }
        Err(_) if req.cancel.load(Ordering::Relaxed) => {
            return Err(VmBackupError::Cancelled { vm: name.clone() });
        }
        Err(source) => {
            return Err(VmBackupError::Repo {
                vm: name.clone(),
                source,
            });
        }
    };
    let outcomes = plans
        .iter()
        .zip(&readers)
        .zip(&manifest.disks)
        .zip(read_from)
        .map(
            |((((disk, verdict, ranges, _), reader), entry), read_from)| {
                let (bytes_fetched, requests) = reader.fetched();
                let bytes_changed = ranges
                    .as_ref()
                    .filter(|_| matches!(verdict, CbtVerdict::Incremental { .. }))
                    .map(|r| {
                        backup::normalize_ranges(r.clone(), disk.capacity_bytes)
                            .iter()
                            .map(|r| r.end - r.start)
                            .sum()
                    });
                DiskOutcome {
                    device_key: disk.key,
                    label: entry.label.clone(),
                    verdict: verdict.clone(),
                    bytes_fetched,
                    requests,
                    busy_answers: reader.busy_answers(),
                    bytes_changed,
                    read_from,
                }
            },
        )
        .collect();
    notes.extend(
        no_allocated_areas
            .iter()
            .map(|(datastore, keys, fault)| {
                format!(
                    "the host gives no allocated areas (`*`) on datastore {datastore} \
                     (ESXi knows them only on VMFS, not on NFS; it answered: {fault}): \
                     disk {} read whole",
                    keys.iter()
                        .map(i32::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
            .chain(no_rdm_allocated_areas.iter().map(|(key, fault)| {
                format!(
                    "the host gives no allocated areas (`*`) of raw device mapping disk {key} \
                     (its data is on a LUN, not in a VMFS file; it answered: {fault}): read whole"
                )
            })),
    );
    Ok((manifest, outcomes, notes))
}

/// The first of `read` (the snapshot's disks as the read began) that `now`
/// (as they are after it) holds as another file or size, or no longer
/// holds: its label, what it was and what it is.
fn disk_moved<'a>(
    read: impl IntoIterator<Item = &'a VmDisk>,
    now: &[VmDisk],
) -> Option<(String, String, String)> {
    read.into_iter().find_map(|before| {
        let describe = |d: &VmDisk| format!("{} ({} bytes)", d.file_name, d.capacity_bytes);
        let label = format!("disk {}", before.key);
        match now.iter().find(|d| d.key == before.key) {
            None => Some((label, describe(before), "no such disk".into())),
            Some(after)
                if after.file_name != before.file_name
                    || after.capacity_bytes != before.capacity_bytes =>
            {
                Some((label, describe(before), describe(after)))
            }
            Some(_) => None,
        }
    })
}
