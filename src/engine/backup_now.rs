//! `backup VM`: one backup of one VM now, outside any plan, by its policy
//! (or the one named), into the policy's backup tier: incremental from the
//! newest point of that VM on the tier when CBT can be trusted, else a
//! full, with the reason. A cancel stops the read, removes the snapshot and
//! records nothing.

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};

use super::cancel;
use std::sync::Arc;

use super::observer::{Observer, ProgressBoard};
use super::tiers::RepoSpec;
use crate::policy::Config;
use crate::progress::ReadProgress;
use crate::repo::Repository;
use crate::repo::manifest::Manifest;
use crate::run::connect::{self, Connected};
use crate::run::vm_backup::{self, VmBackupOutcome, VmBackupRequest};

/// What to back up, and how: the arguments of `coffer backup`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct BackupNow {
    /// The VM's name.
    pub vm: String,
    /// The source to find it on (default: every ESXi and vCenter source).
    #[arg(long)]
    pub source: Option<String>,
    /// The policy to follow (default: the one whose selector takes the VM).
    #[arg(long)]
    pub policy: Option<String>,
    /// Write to this tier instead of the policy's `backup_to`.
    #[arg(long)]
    pub tier: Option<String>,
    /// Take a full backup even when an incremental is possible.
    #[arg(long)]
    pub full: bool,
}

/// A backup taken, with where it went.
pub struct BackupTaken {
    pub run_id: String,
    pub vm: String,
    pub tier: String,
    pub outcome: VmBackupOutcome,
}

/// The newest point of the VM `uuid` of `source` on `repo`: a point
/// recorded from another source (a VM there with the same instance UUID)
/// is another VM's and never a base. A point from before coffer recorded
/// sources counts as this VM's.
pub fn newest_point(repo: &Repository, uuid: &str, source: &str) -> Result<Option<Manifest>> {
    let mut listed: Vec<_> = repo
        .list_points()?
        .into_iter()
        .filter(|p| p.vm_uuid == uuid)
        .collect();
    listed.sort_by(|a, b| b.point_id.cmp(&a.point_id));
    for p in listed {
        let m = repo.read_manifest(&p)?;
        if m.vm.source.as_deref().is_none_or(|s| s == source) {
            return Ok(Some(m));
        }
    }
    Ok(None)
}

/// Finds the VM named `vm` on the sources (or on `source` only).
fn find_vm(
    config: &Config,
    vm: &str,
    source: Option<&str>,
) -> Result<(Connected, crate::vsphere::VmRecord)> {
    if let Some(name) = source {
        config.source_named(name)?;
    }
    let mut seen = Vec::new();
    for s in config.sources.values() {
        if source.is_some_and(|name| name != s.name) {
            continue;
        }
        let conn = connect::connect(s, &config.settings.state_dir)?;
        let vms = conn.session.list_vms()?;
        if let Some(record) = vms.iter().find(|v| v.name == vm) {
            let record = record.clone();
            return Ok((conn, record));
        }
        seen.extend(vms.into_iter().map(|v| v.name));
    }
    let seen: Vec<&str> = seen.iter().map(String::as_str).collect();
    bail!(
        "{} on the sources of {}",
        crate::policy::diag::no_such("VM", vm, &seen),
        config.dir.display()
    )
}

/// `cbt reset VM`: resets the VM's change tracking now (see
/// `crate::run::cbt_reset`), under the runner lock, so no backup of this
/// installation reads the VM meanwhile. The next backup of the VM is then a
/// full that reads its disks whole (its base's change ids are of the old
/// epoch).
pub fn reset_cbt_now(config: &Config, vm: &str, source: Option<&str>) -> Result<String> {
    let (conn, record) = find_vm(config, vm, source)?;
    let run_id = super::new_run_id();
    let _lock = crate::run::runlock::RunnerLock::take(
        &config.settings,
        &format!("coffer cbt reset {vm}, run {run_id}"),
    )?;
    let installation = crate::run::installation::id(&config.settings.state_dir)?;
    Ok(crate::run::cbt_reset::reset_cbt(
        &conn.session,
        &record,
        &run_id,
        &installation,
        Duration::from_secs(30 * 60),
    )?)
}

/// Takes the backup. `Err(VmBackupError::Cancelled)` (inside the anyhow
/// error) when it was cancelled: its snapshot was removed and no point
/// was recorded.
pub fn backup_now(
    config: &Config,
    what: &BackupNow,
    observer: &dyn Observer,
) -> Result<BackupTaken> {
    let (conn, vm) = find_vm(config, &what.vm, what.source.as_deref())?;
    let policy = match &what.policy {
        Some(name) => config
            .policies
            .get(name)
            .ok_or_else(|| anyhow!("{}", config.no_such_policy(name)))?,
        None => {
            let names: Vec<&str> = crate::plan::planner::policies_of(config, &conn.source, &vm)
                .into_iter()
                .map(|p| p.name.as_str())
                .collect();
            match names.as_slice() {
                [one] => &config.policies[*one],
                [] => bail!(
                    "no policy selects VM `{}` of source `{}`; name one with --policy",
                    vm.name,
                    conn.source
                ),
                many => bail!(
                    "policies {} all select VM `{}`; name one with --policy",
                    many.join(", "),
                    vm.name
                ),
            }
        }
    };
    let tier = what
        .tier
        .clone()
        .unwrap_or_else(|| policy.backup_to.clone());
    let repo = RepoSpec::Tier(tier.clone()).open(Some(config))?;
    let uuid = vm
        .instance_uuid
        .clone()
        .ok_or_else(|| anyhow!("VM `{}` has no instance UUID", vm.name))?;
    let base = if what.full {
        None
    } else {
        newest_point(&repo, &uuid, &conn.source)?
    };
    let run_id = super::new_run_id();
    let _lock = crate::run::runlock::RunnerLock::take(
        &config.settings,
        &format!("coffer backup {}, run {run_id}", vm.name),
    )?;
    let chunk = u32::try_from(policy.chunk_size.0).context("chunk size")?;
    let io_limit = crate::run::throttle::policy_throttle(policy);
    let installation = crate::run::installation::id(&config.settings.state_dir)?;
    let host_route = conn.host_route(&vm);
    let datacenter = conn.datacenter_of(&vm)?;
    let backup = |progress: &Arc<ReadProgress>| {
        let request = VmBackupRequest {
            vm: &vm,
            installation: &installation,
            snapshot_max_age: config.compliance.snapshot_max_age,
            source: &conn.source,
            datacenter,
            host_route: host_route.as_ref(),
            run_id: &run_id,
            consistency: policy.consistency,
            base: base.as_ref(),
            chunk_size_bytes: chunk,
            threads: super::threads(),
            task_timeout: Duration::from_secs(30 * 60),
            cancel: cancel::flag(),
            read_whole_disk: false,
            io_limit: io_limit.as_deref(),
            progress: Some(progress),
            read: conn.read,
            max_snapshot_lifetime: policy.max_snapshot_lifetime,
            fence: None,
        };
        vm_backup::backup_vm(&conn.session, &repo, &request)
    };
    // Written under the maintenance lock held shared, as `apply`'s backups
    // are: a gc or prune on a machine sharing the catalog waits for it.
    let what = format!("coffer backup of {}", vm.name);
    let writing = crate::run::runlock::MaintenanceLock::take(&config.settings, false, &what)?;
    let outcome = ProgressBoard::track(observer, &vm.name, backup)?;
    drop(writing);
    // The catalog keeps how long the snapshot was open, as `apply` has it
    // keep; the point itself reaches the catalog with the next refresh.
    // Best effort, and only into a catalog that exists: a missing or
    // damaged one is left to `plan`, which builds it from the tiers.
    let at = super::catalog::catalog_location(None, config);
    if at.exists()
        && let Ok(mut catalog) = crate::catalog::Catalog::open_at(&at)
    {
        let _ = catalog.record_snapshot_lifetime(&crate::catalog::SnapshotLifetimeRecord {
            run_id: run_id.clone(),
            vm_uuid: outcome.manifest.vm.uuid.clone(),
            vm_name: outcome.manifest.vm.name.clone(),
            snapshot: outcome.snapshot.clone(),
            point_id: outcome.manifest.point_id.clone(),
            created: outcome.snapshot_lifetime.created,
            removed: outcome.snapshot_lifetime.removed,
        });
    }
    Ok(BackupTaken {
        run_id,
        vm: vm.name.clone(),
        tier,
        outcome,
    })
}
