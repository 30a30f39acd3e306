//! One backup action of a run: the VM's policy, base point and limits
//! turned into a backup request, a time limit, and retries when the failure
//! was transient.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::catalog::SnapshotLifetimeRecord;
use crate::engine::cancel::{self, SNAPSHOTS_OPEN};
use crate::engine::observer::{Bytes, Event, Observer};
use crate::engine::tiers::open_tier;
use crate::plan::planner::Action;
use crate::policy::Config;
use crate::run::connect::Connected;
use crate::run::vm_backup::{self, VmBackupError, VmBackupRequest};

/// Whether a failed backup is worth trying again: the host or the network
/// was briefly unavailable (a dropped connection, 503s beyond the reader's
/// own retries, a task already in progress). Never a refusal or a fault of
/// the VM itself.
fn transient(e: &anyhow::Error) -> bool {
    use crate::vsphere::Error as V;
    use crate::vsphere::datastore::DiskError;
    let vsphere = |v: &V| {
        matches!(v, V::Http { .. })
            || matches!(
                v.fault(),
                Some(crate::vsphere::VimFault::TaskInProgress { .. })
            )
    };
    match e.downcast_ref::<VmBackupError>() {
        Some(VmBackupError::Vsphere { source, .. }) => vsphere(source),
        Some(VmBackupError::Disk { source, .. }) => match source.as_ref() {
            DiskError::Vsphere { source, .. } => vsphere(source),
            DiskError::Status { status, .. } => *status == 503,
            _ => false,
        },
        Some(VmBackupError::Repo { source, .. }) => matches!(
            source,
            crate::repo::RepoError::SourceRead { .. }
                | crate::repo::RepoError::Store(crate::repo::store::StoreError::Backend(_))
        ),
        _ => false,
    }
}

/// What a backup action did: its result line, and how long its snapshot
/// was open, for the catalog.
pub(crate) struct BackupDone {
    pub detail: String,
    pub lifetime: SnapshotLifetimeRecord,
    pub bytes: Bytes,
}

/// A backup, tried again (twice at most, after a pause) when it failed for
/// a transient reason; every attempt removes its own snapshot. It writes
/// under the catalog's maintenance lock held shared, so a gc or prune on
/// any machine sharing the catalog waits for it, and it for them
/// (`runlock::MaintenanceLock`; nothing on a catalog that is one
/// machine's).
pub(crate) fn backup_action_with_retries(
    job: &BackupJob<'_>,
    observer: &dyn Observer,
) -> Result<BackupDone> {
    let action = job.action;
    let what = format!("coffer backup of {}", action.vm().unwrap_or_default());
    let _writing = crate::run::runlock::MaintenanceLock::take(&job.config.settings, false, &what)?;
    let pause = std::env::var("COFFER_RETRY_PAUSE_MS")
        .ok()
        .and_then(|m| m.parse().ok())
        .map_or(Duration::from_secs(30), Duration::from_millis);
    let mut attempt = 1;
    loop {
        match backup_action(job) {
            Ok(done) if attempt > 1 => {
                return Ok(BackupDone {
                    detail: format!("{} (attempt {attempt})", done.detail),
                    ..done
                });
            }
            Err(e) if attempt < 3 && transient(&e) => {
                observer.event(&Event::Message(format!(
                    "coffer: {} failed ({e:#}); trying again in {}s",
                    action.line(),
                    pause.as_secs()
                )));
                std::thread::sleep(pause * attempt);
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// One backup of a run, on a connected source.
pub(crate) struct BackupJob<'a> {
    pub config: &'a Config,
    pub conn: &'a Connected,
    pub run_id: &'a str,
    pub action: &'a Action,
    /// Bytes read so far, for progress reports.
    pub progress: Option<&'a crate::run::vm_backup::ReadProgress>,
    /// The longest the backup may take.
    pub limit: Duration,
    /// Read every disk whole (its change tracking was just reset).
    pub read_whole_disk: bool,
    /// The last check before the point is committed (a worker's lease).
    pub fence: Option<&'a crate::run::vm_backup::Fence<'a>>,
    /// Set when the backup is no longer this process's to finish (a
    /// worker's lease was taken over): it stops, its snapshot is removed,
    /// and nothing is committed.
    pub lost: Option<&'a std::sync::atomic::AtomicBool>,
}

/// One backup action on a connected source (no shared state: backups run
/// side by side), stopped after its time limit.
fn backup_action(job: &BackupJob<'_>) -> Result<BackupDone> {
    let BackupJob {
        config,
        conn,
        run_id,
        action,
        progress,
        limit,
        read_whole_disk: whole,
        fence,
        lost,
    } = *job;
    let Action::Backup {
        policy,
        source,
        vm,
        tier,
        full,
        base,
        ..
    } = action
    else {
        bail!("not a backup: {}", action.line());
    };
    let policy = &config.policies[policy];
    let repo = open_tier(config, tier)?;
    // A parent that cannot be read makes a full, said why, rather than a
    // backup that fails on every run.
    let (base, base_problem) = match base.as_ref().filter(|_| !full) {
        Some(id) => match repo.find_point(id).and_then(|p| repo.read_manifest(&p)) {
            Ok(m) => (Some(m), String::new()),
            Err(e) => (None, format!("; full: parent point {id} unreadable ({e})")),
        },
        None => (None, String::new()),
    };
    let had_base = base.is_some();
    let record = conn.vm(vm)?;
    // This backup stops on Ctrl-C or when its time is up, whichever first.
    let global = cancel::flag();
    let cancel = &std::sync::atomic::AtomicBool::new(false);
    let finished = &std::sync::atomic::AtomicBool::new(false);
    let io_limit = crate::run::throttle::policy_throttle(policy);
    let installation = crate::run::installation::id(&config.settings.state_dir)?;
    let host_route = conn.host_route(&record);
    let request = VmBackupRequest {
        vm: &record,
        installation: &installation,
        snapshot_max_age: config.compliance.snapshot_max_age,
        source,
        datacenter: conn.datacenter_of(&record)?,
        host_route: host_route.as_ref(),
        run_id,
        consistency: policy.consistency,
        base: base.as_ref(),
        chunk_size_bytes: u32::try_from(policy.chunk_size.0).context("chunk size")?,
        threads: crate::engine::threads(),
        task_timeout: Duration::from_secs(30 * 60),
        cancel,
        read_whole_disk: whole,
        io_limit: io_limit.as_deref(),
        progress,
        read: conn.read,
        max_snapshot_lifetime: policy.max_snapshot_lifetime,
        fence,
    };
    let started = Instant::now();
    SNAPSHOTS_OPEN.fetch_add(1, Ordering::SeqCst);
    let result = std::thread::scope(|s| {
        s.spawn(|| {
            while !finished.load(Ordering::Relaxed) {
                let lost = lost.is_some_and(|l| l.load(Ordering::Relaxed));
                if global.load(Ordering::Relaxed) || lost || started.elapsed() >= limit {
                    cancel.store(true, Ordering::Relaxed);
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let r = vm_backup::backup_vm(&conn.session, &repo, &request);
        finished.store(true, Ordering::Relaxed);
        r
    });
    SNAPSHOTS_OPEN.fetch_sub(1, Ordering::SeqCst);
    let o = match result {
        Err(VmBackupError::Cancelled { vm }) if lost.is_some_and(|l| l.load(Ordering::Relaxed)) => {
            bail!(
                "VM {vm}: the backup is no longer this worker's (its lease was taken over); it stopped, its snapshot was removed and nothing was committed"
            )
        }
        Err(VmBackupError::Cancelled { vm }) if !global.load(Ordering::Relaxed) => bail!(
            "VM {vm}: the backup did not finish within {} (--action-timeout); its snapshot was removed and no point was recorded",
            crate::policy::units::format_duration(limit)
        ),
        other => other?,
    };
    let read: u64 = o.disks.iter().map(|d| d.bytes_fetched).sum();
    let mut leftovers = String::new();
    for l in &o.leftovers_removed {
        leftovers.push_str(&format!("; removed snapshot {}: {}", l.name, l.why));
    }
    for l in &o.leftovers_kept {
        leftovers.push_str(&format!("; left snapshot {} alone: {}", l.name, l.why));
    }
    for d in &o.manifest.skipped_disks {
        leftovers.push_str(&format!("; skipped {}", d.reason));
    }
    // A disk the plan meant as incremental that was read whole says why
    // (its parent index missing, CBT distrusted at the host).
    let fell_back: String = o
        .disks
        .iter()
        .filter(|_| had_base)
        .filter_map(|d| match &d.verdict {
            crate::plan::cbt::CbtVerdict::Full { reason } => {
                Some(format!("; {}: full ({reason})", d.label))
            }
            _ => None,
        })
        .collect();
    let requests: u64 = o.disks.iter().map(|d| d.requests).sum();
    // A host read through a vCenter that fell back to vCenter's /folder.
    let via_vcenter = o
        .disks
        .iter()
        .find(|d| d.read_from.starts_with("vCenter"))
        .map(|d| format!("; read through {}", d.read_from))
        .unwrap_or_default();
    let busy = match o.disks.iter().map(|d| d.busy_answers).sum::<u64>() {
        0 => String::new(),
        n => format!("; the host was busy (503) {n} times and coffer slowed down"),
    };
    let lifetime = SnapshotLifetimeRecord {
        run_id: run_id.to_string(),
        vm_uuid: o.manifest.vm.uuid.clone(),
        vm_name: o.manifest.vm.name.clone(),
        snapshot: o.snapshot.clone(),
        point_id: o.manifest.point_id.clone(),
        created: o.snapshot_lifetime.created,
        removed: o.snapshot_lifetime.removed,
    };
    let notes: String = o.notes.iter().map(|n| format!("; {n}")).collect();
    let detail = format!(
        "{} point {} ({}-consistent{}), read {} in {requests} requests, {}{busy}{via_vcenter}{base_problem}{fell_back}{notes}{leftovers}",
        format!("{:?}", o.manifest.kind).to_lowercase(),
        o.manifest.point_id,
        o.consistency,
        o.quiesce_fallback
            .map(|w| format!(", quiescing failed: {w}"))
            .or_else(|| o.consistency_alert.map(|a| format!("; alert: {a}")))
            .unwrap_or_default(),
        crate::policy::units::format_size(read),
        o.snapshot_lifetime.describe_in(policy.timezone())
    );
    let bytes = Bytes {
        read,
        stored: o.manifest.disks.iter().map(|d| d.bytes_stored_new).sum(),
    };
    Ok(BackupDone {
        detail,
        lifetime,
        bytes,
    })
}
