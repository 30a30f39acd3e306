//! One action of a run, carried out: remove a snapshot, back up a VM,
//! copy a point between tiers, prune, collect garbage, or run a drill and
//! record its data and guest facts apart (only the data fact can mark a copy
//! damaged), in the catalog and in the tier's log.

use std::time::Duration;

use anyhow::{Result, anyhow};
use chrono::Utc;

use super::Runner;
use super::backup::{BackupJob, backup_action_with_retries};
use std::collections::BTreeMap;

use crate::catalog::{Catalog, Verification, VerificationKind, tierlog};
use crate::engine::observer::{Event, Observer};
use crate::engine::tiers::{Readable, open_tier, readable};
use crate::plan::planner::Action;
use crate::policy::Config;
use crate::policy::model::DrillKind;
use crate::repo::ops;
use crate::repo::store::StoreError;
use crate::run::connect::{self, Connected};
use crate::run::drill;
use crate::run::restore::{HostTarget, PlaceNames};

impl Runner<'_> {
    pub(super) fn execute(
        &mut self,
        action: &Action,
        catalog: &mut crate::catalog::Catalog,
    ) -> Result<String> {
        let config = self.config;
        match action {
            Action::Consolidate { source, vm, .. } => {
                let conn = self.session(source)?;
                let record = conn.vm(vm)?;
                if !record.consolidation_needed {
                    return Ok("already consolidated".into());
                }
                conn.session.run_task(
                    &crate::vsphere::soap::consolidate_vm_disks(&record.moref),
                    Duration::from_secs(30 * 60),
                )?;
                Ok("disks consolidated".into())
            }
            Action::ResetCbt { source, vm, .. } => {
                let run_id = self.run_id.clone();
                let installation = crate::run::installation::id(&config.settings.state_dir)?;
                let conn = self.session(source)?;
                let record = conn.vm(vm)?;
                let done = crate::run::cbt_reset::reset_cbt(
                    &conn.session,
                    &record,
                    &run_id,
                    &installation,
                    Duration::from_secs(30 * 60),
                )?;
                // The full after it reads whole disks, whatever the plan
                // made of it.
                self.cbt_reset.insert((source.clone(), vm.clone()));
                Ok(done)
            }
            Action::RemoveSnapshot {
                source,
                vm,
                snapshot,
                ..
            } => {
                let conn = self.session(source)?;
                let record = conn.vm(vm)?;
                let snap = record
                    .all_snapshots()
                    .into_iter()
                    .find(|s| &s.name == snapshot)
                    .map(|s| s.snapshot.clone())
                    .ok_or_else(|| anyhow!("snapshot {snapshot} is already gone"))?;
                conn.session
                    .remove_snapshot(&snap, Duration::from_secs(30 * 60))?;
                Ok(format!("removed snapshot {snapshot}"))
            }
            Action::Backup {
                source, vm, tier, ..
            } => {
                let run_id = self.run_id.clone();
                let (limit, observer) = (self.timeout, self.observer);
                let read_whole_disk = self.cbt_reset.contains(&(source.clone(), vm.clone()));
                let conn = self.session(source)?;
                let job = BackupJob {
                    config,
                    conn,
                    run_id: &run_id,
                    action,
                    progress: None,
                    limit,
                    read_whole_disk,
                    fence: None,
                    lost: None,
                };
                let done = backup_action_with_retries(&job, observer)?;
                let _ = catalog.record_snapshot_lifetime(&done.lifetime);
                if let Ok(repo) = open_tier(config, tier) {
                    let _ = catalog.refresh_points(tier, &repo, &[done.lifetime.point()]);
                }
                Ok(done.detail)
            }
            Action::Copy {
                point, from, to, ..
            } => copy(config, catalog, point, from, to, self.observer),
            Action::Prune {
                vm, point, tier, ..
            } => {
                if self.failed_copies.contains(&(vm.clone(), tier.clone())) {
                    anyhow::bail!(
                        "deferred: a copy of a newer point of {vm} to tier `{tier}` failed in this \
                         run, and retention counted that point when it chose this prune"
                    );
                }
                let repo = open_tier(config, tier)?;
                let p = repo.find_point(point)?;
                let _maintenance = crate::run::runlock::MaintenanceLock::take(
                    &config.settings,
                    true,
                    &format!("coffer prune of {point} on tier `{tier}`"),
                )?;
                ops::prune_point(&repo, &p)?;
                let _ = catalog.refresh_points(tier, &repo, &[p]);
                Ok("pruned".into())
            }
            Action::Gc { tier, .. } => gc(config, tier),
            Action::Drill {
                policy,
                drill: name,
                point,
                tier,
                ..
            } => drill(
                config,
                catalog,
                &mut self.sessions,
                (policy, name, point, tier),
                self.observer,
            ),
            Action::Wait { .. } | Action::KeepBlocked { .. } | Action::Alert { .. } => {
                Ok(String::new())
            }
        }
    }
}

/// A session to `source`, connecting the first time it is asked for.
pub(crate) fn session_in<'s>(
    config: &Config,
    sessions: &'s mut BTreeMap<String, Connected>,
    source: &str,
) -> Result<&'s Connected> {
    if !sessions.contains_key(source) {
        let s = (config.sources.get(source))
            .ok_or_else(|| anyhow!("these policies have no source `{source}`"))?;
        let c = connect::connect(s, &config.settings.state_dir)?;
        sessions.insert(source.to_string(), c);
    }
    Ok(&sessions[source])
}

/// The copy action: `point` of tier `from` to tier `to`, sending only
/// the chunks `to` lacks; the catalog then knows `to` holds it. Run by
/// the runner, or by a worker the coordinator handed it to. It writes
/// under the maintenance lock held shared, as a backup does.
pub(crate) fn copy(
    config: &Config,
    catalog: &mut Catalog,
    point: &str,
    from: &str,
    to: &str,
    observer: &dyn Observer,
) -> Result<String> {
    let _writing = crate::run::runlock::MaintenanceLock::take(
        &config.settings,
        false,
        &format!("coffer copy of {point} to tier `{to}`"),
    )?;
    let src = open_tier(config, from)?;
    let dst = open_tier(config, to)?;
    let p = src.find_point(point)?;
    let read = readable(
        config,
        from,
        &src,
        &src.read_manifest(&p)?,
        "copy",
        "a later run carries the copy out once they read",
    )?;
    if let Readable::Waiting(why) = read {
        return Ok(why);
    }
    let threads = crate::engine::threads();
    let (m, r) = match ops::copy_point(read.repo(&src), &dst, &p, threads) {
        // A tape filled up: the copy counted nothing; once more, on the
        // next medium of the pool.
        Err(crate::repo::RepoError::Store(StoreError::MediumFull { medium })) => {
            observer.event(&Event::Message(format!(
                "coffer: tape medium {medium} is full; copying {point} again on another medium"
            )));
            let dst = open_tier(config, to)?;
            ops::copy_point(read.repo(&src), &dst, &p, threads)?
        }
        r => r?,
    };
    let _ = catalog.refresh_points(to, &dst, std::slice::from_ref(&p));
    let on_tape = match crate::engine::tiers::tape_store(config, to)? {
        Some(tape) => tape
            .where_is(&m.key()?)?
            .map(|(label, file)| format!(", on medium {label} file {file}"))
            .unwrap_or_default(),
        None => String::new(),
    };
    Ok(format!(
        "{} chunks sent ({}), {} already there{on_tape}",
        r.chunks_sent,
        crate::policy::units::format_size(r.bytes_sent),
        r.chunks_present
    ))
}

/// The drill action: drill `drill` of `policy` on `point` of `tier`; its
/// data and guest facts recorded apart, in the catalog and in the tier's
/// log (only the data fact can mark the copy damaged). Run by the runner,
/// or by a worker the coordinator handed it to.
pub(crate) fn drill(
    config: &Config,
    catalog: &mut Catalog,
    sessions: &mut BTreeMap<String, Connected>,
    (policy, drill, point, tier): (&str, &str, &str, &str),
    observer: &dyn Observer,
) -> Result<String> {
    let d = config.policies[policy]
        .drills
        .iter()
        .find(|d| d.name == drill)
        .ok_or_else(|| anyhow!("no drill {drill}"))?;
    let tier_repo = open_tier(config, tier)?;
    let p = tier_repo.find_point(point)?;
    let started = Utc::now();
    let read = readable(
        config,
        tier,
        &tier_repo,
        &tier_repo.read_manifest(&p)?,
        "drill",
        "a later run carries the drill out once they read",
    )?;
    if let Readable::Waiting(why) = read {
        return Ok(why);
    }
    let repo = read.repo(&tier_repo);
    let threads = crate::engine::threads();
    let scratch = config.settings.state_dir.join("drills");
    std::fs::create_dir_all(&scratch)?;
    let (kind, mut o) = match d.kind {
        DrillKind::Verify => {
            let r = ops::verify(repo, Some(std::slice::from_ref(&p)), None, threads)?;
            let detail = if r.ok() {
                format!(
                    "data verified: {} chunks ({}) read back and proven",
                    r.chunks_checked,
                    crate::policy::units::format_size(r.bytes_checked)
                )
            } else {
                // Damaged chunks go to quarantine, so a copy from
                // a healthy tier can put them back.
                let moved = ops::quarantine(repo, &r.bad_chunks)?;
                format!(
                    "{} damaged chunks (moved to quarantine/: {moved}); the copy on `{tier}` is marked bad",
                    r.bad_chunks.len()
                )
            };
            let o = drill::DrillOutcome {
                ok: r.ok(),
                detail,
                data_ok: Some(r.ok()),
                guest_ok: None,
                guest_detail: None,
                restore_seconds: None,
                heartbeat_seconds: None,
                method: None,
            };
            (VerificationKind::Verify, o)
        }
        DrillKind::Restore => {
            let m = repo.read_manifest(&p)?;
            let o = drill::restore_drill(repo, &m, d, &scratch, threads);
            (VerificationKind::Restore, o)
        }
        DrillKind::Boot => {
            let m = repo.read_manifest(&p)?;
            let host = d
                .host
                .clone()
                .ok_or_else(|| anyhow!("boot drill {drill} names no host"))?;
            let conn = session_in(config, sessions, &host)?;
            let datastore = d.datastore.as_deref().unwrap_or("datastore1");
            let names = PlaceNames {
                host: d.esx_host.clone(),
                folder: d.folder.clone(),
                pool: d.resource_pool.clone(),
                datacenter: None,
            };
            let target = HostTarget::of_source(conn, datastore, &names)?;
            let o = drill::boot_drill(repo, &m, d, &target, &scratch, threads);
            (VerificationKind::Boot, o)
        }
    };
    // From tape, the recovery time counts the staging: a real
    // recovery waits for it too.
    if let Readable::Staged(s) = &read {
        o.detail = format!("{}; {}", s.report.describe(), o.detail);
        o.restore_seconds = o.restore_seconds.map(|r| r + s.report.seconds);
    }
    // Data and guest checks are recorded as separate facts: only
    // the data fact can mark the copy damaged.
    let verification = Verification {
        kind,
        point_id: point.to_string(),
        tier: tier.to_string(),
        drill: Some(drill.to_string()),
        started,
        finished: Some(Utc::now()),
        ok: Some(o.ok),
        detail: Some(o.detail.clone()),
        data_ok: o.data_ok,
        guest_ok: o.guest_ok,
        guest_detail: o.guest_detail.clone(),
        restore_seconds: o.restore_seconds,
        heartbeat_seconds: o.heartbeat_seconds,
        method: o.method.map(str::to_string),
    };
    catalog.record_verification(&verification)?;
    // A rebuilt catalog finds it again in the tier's log.
    if let Err(e) = tierlog::append(&tier_repo, &tierlog::LogEvent::verification(&verification)) {
        observer.event(&Event::Message(format!(
            "coffer: could not log drill {drill} on tier `{tier}`: {e}"
        )));
    }
    if o.ok {
        Ok(match o.restore_seconds {
            Some(s) => format!("{} (RTO {s:.1}s)", o.detail),
            None => o.detail,
        })
    } else {
        anyhow::bail!("{}", o.detail)
    }
}

/// The gc action: deletes the chunks of tier `tier` that no point uses
/// (an hour's grace), under the maintenance lock held exclusively, so no
/// backup or copy writes meanwhile on any machine. Run by the runner, or
/// by a worker the coordinator handed it to.
pub(crate) fn gc(config: &Config, tier: &str) -> Result<String> {
    let repo = open_tier(config, tier)?;
    let _maintenance = crate::run::runlock::MaintenanceLock::take(
        &config.settings,
        true,
        &format!("coffer gc of tier `{tier}`"),
    )?;
    let r = ops::gc(&repo, Duration::from_secs(3600), false)?;
    let packs = r.packs_deleted + r.packs_repacked + r.packs_locked;
    // A tape tier frees whole media once nothing on them is kept.
    let media = match crate::engine::tiers::free_tape_media(config, tier)? {
        Some(freed) if freed.is_empty() => "; no medium freed".to_string(),
        Some(freed) => format!("; media freed for reuse: {}", freed.join(", ")),
        None => String::new(),
    };
    Ok(format!(
        "{} chunks deleted, {} freed, {} stale locks and {} empty directories removed{}{}{media}",
        r.chunks_deleted,
        crate::policy::units::format_size(r.bytes_freed),
        r.stale_locks_removed,
        r.empty_dirs_removed,
        if r.chunks_locked > 0 {
            format!(", {} still locked", r.chunks_locked)
        } else {
            String::new()
        },
        if packs > 0 {
            format!(
                "; packs: {} deleted, {} repacked, {} still immutable",
                r.packs_deleted, r.packs_repacked, r.packs_locked
            )
        } else {
            String::new()
        }
    ))
}
