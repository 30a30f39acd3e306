//! Restore and export as the engine serves them: finding the point (by id,
//! the newest at a time, or the newest, of a VM by name, on one tier or on
//! the first tier that holds it, local tiers first; VMs of one name on two
//! sources are two VMs), and restoring it onto a source of the policy as a
//! new VM. A point on a tier in an archive class is thawed first, one on
//! a tape tier staged first (`tiers::readable`).

use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use chrono::{DateTime, Utc};

use super::observer::{Observer, ProgressBoard};
use super::tiers::open_tier;
use crate::policy::Config;
use crate::policy::model::TierBackend;
use crate::repo::Repository;
use crate::repo::manifest::Manifest;
use crate::run::connect;
use crate::run::restore::{self, HostRestore, HostTarget, LocalRestore, PlaceNames, VmxChanges};

/// Which point of a VM: the newest, one by id, or the newest at a time,
/// from a tier or the first that holds one (the arguments of `restore`,
/// `export` and `instant-recover`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct PointChoice {
    /// The source the VM was backed up from, when VMs of this name were
    /// backed up from more than one.
    #[arg(long)]
    pub source: Option<String>,
    /// This point.
    #[arg(long, conflicts_with = "at")]
    pub point: Option<String>,
    /// The newest point at or before this time (RFC 3339).
    #[arg(long, value_parser = crate::policy::units::parse_time_arg)]
    pub at: Option<DateTime<Utc>>,
    /// The tier to read the point from (default: the first tier holding
    /// the VM, local tiers first).
    #[arg(long)]
    pub tier: Option<String>,
}

impl PointChoice {
    /// The chosen point of `vm`, as [`find_point`] finds it.
    pub fn find(&self, config: &Config, vm: &str) -> Result<(String, Repository, Manifest)> {
        let (tier, source, point) = (
            self.tier.as_deref(),
            self.source.as_deref(),
            self.point.as_deref(),
        );
        find_point(config, tier, vm, source, point, self.at)
    }
}

/// The point to restore: by id, the newest at a time, or the newest, of
/// the VM `vm` of `source`. VMs of one name on two sources are two VMs:
/// without `source`, a name recorded from more than one source is refused
/// rather than one of them guessed (points recorded without a source match
/// any).
pub fn find_point(
    config: &Config,
    tier: Option<&str>,
    vm: &str,
    source: Option<&str>,
    point: Option<&str>,
    at: Option<DateTime<Utc>>,
) -> Result<(String, Repository, Manifest)> {
    let mut tiers: Vec<&str> = match tier {
        Some(t) => vec![t],
        None => config.tiers.keys().map(String::as_str).collect(),
    };
    // Local tiers first, tiers that must be thawed last.
    tiers.sort_by_key(|t| {
        let tier = &config.tiers[*t];
        (
            !matches!(tier.backend, TierBackend::Local { .. }),
            tier.archive_class().is_some(),
        )
    });
    // The VMs the tiers hold points of, for a likely typo.
    let mut backed_up = std::collections::BTreeSet::new();
    for t in tiers {
        let repo = open_tier(config, t)?;
        let mut best: Option<Manifest> = None;
        let mut sources = std::collections::BTreeSet::new();
        for p in repo.list_points()? {
            if point.is_some_and(|id| id != p.point_id) {
                continue;
            }
            let Ok(m) = repo.read_manifest(&p) else {
                continue;
            };
            backed_up.insert(m.vm.name.clone());
            if m.vm.name != vm
                || source.is_some_and(|s| m.vm.source.as_deref().is_some_and(|own| own != s))
            {
                continue;
            }
            if let Some(own) = m.vm.source.as_deref() {
                sources.insert(own.to_string());
            }
            if let Some(at) = at {
                let created = DateTime::parse_from_rfc3339(&m.created)
                    .map(|c| c.with_timezone(&Utc))
                    .unwrap_or(at);
                if created > at {
                    continue;
                }
            }
            if best.as_ref().is_none_or(|b| m.point_id > b.point_id) {
                best = Some(m);
            }
        }
        if source.is_none() && sources.len() > 1 {
            bail!(
                "VMs named `{vm}` were backed up from sources {}: name one with --source",
                sources
                    .iter()
                    .map(|s| format!("`{s}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        if let Some(m) = best {
            return Ok((t.to_string(), repo, m));
        }
    }
    let near = if backed_up.contains(vm) {
        None
    } else {
        crate::policy::diag::nearest(vm, backed_up.iter().map(String::as_str))
    };
    bail!(
        "no point of VM `{vm}`{} on {}{}",
        point.map(|p| format!(" with id {p}")).unwrap_or_default(),
        tier.map_or("any tier".to_string(), |t| format!("tier `{t}`")),
        near.map(|n| format!("; did you mean `{n}`?"))
            .unwrap_or_default()
    )
}

/// Where and how a point is restored onto a source of the policy.
#[derive(Debug, Clone)]
pub struct ToSource<'a> {
    pub source: &'a str,
    /// Where on the source: on a vCenter the datacenter, host, VM folder
    /// and resource pool (each by default when not named).
    pub place: PlaceNames,
    pub datastore: &'a str,
    pub power_on: bool,
    /// After a power-on, how long to wait for the guest's first heartbeat
    /// (zero: not at all).
    pub heartbeat_timeout: std::time::Duration,
}

/// Restores `m` (read from tier `tier`) onto a source of the policy as a
/// new VM (files staged in a scratch directory under the state directory),
/// its progress shown to `observer`; powered on, it waits for the guest's
/// first heartbeat. The recovery and its times are recorded in the catalog
/// for the reports.
pub fn restore_to_source(
    config: &Config,
    repo: &Repository,
    tier: &str,
    m: &Manifest,
    to: &ToSource<'_>,
    changes: &VmxChanges,
    observer: &dyn Observer,
) -> Result<HostRestore> {
    let source = config
        .sources
        .get(to.source)
        .ok_or_else(|| anyhow!("no source named `{}`", to.source))?;
    let started = Utc::now();
    let began = std::time::Instant::now();
    let conn = connect::connect(source, &config.settings.state_dir)?;
    let scratch = tempfile::tempdir_in(&config.settings.state_dir)
        .or_else(|_| tempfile::tempdir())
        .context("a scratch directory for the restored files")?;
    let target = HostTarget::of_source(&conn, to.datastore, &to.place)?;
    let mut r = ProgressBoard::track(observer, &changes.name, |progress| {
        restore::restore_to_host(&restore::ToHost {
            repo,
            m,
            target: &target,
            changes,
            power_on: to.power_on,
            scratch: scratch.path(),
            threads: super::threads(),
            progress: Some(progress),
            stop: Some(super::cancel::flag()),
        })
    })?;
    let power_on_seconds = to.power_on.then(|| began.elapsed().as_secs_f64());
    if to.power_on && !to.heartbeat_timeout.is_zero() {
        match crate::run::drill::wait_for_heartbeat(
            &conn.session,
            &changes.name,
            to.heartbeat_timeout,
        ) {
            Ok(()) => r.heartbeat_seconds = Some(began.elapsed().as_secs_f64()),
            Err(why) => r.heartbeat_note = Some(why),
        }
    }
    let recovery = crate::catalog::Recovery {
        vm_uuid: m.vm.uuid.clone(),
        vm_name: m.vm.name.clone(),
        point_id: m.point_id.clone(),
        tier: tier.to_string(),
        source: to.source.to_string(),
        name: changes.name.clone(),
        method: "restore".into(),
        started,
        power_on_seconds,
        heartbeat_seconds: r.heartbeat_seconds,
    };
    // One that cannot be recorded is said, not fatal: the VM is up.
    if let Err(e) = record_recovery(config, &recovery) {
        observer.event(&super::observer::Event::Message(format!(
            "coffer: the recovery of {} could not be recorded in the catalog: {e:#}",
            recovery.name
        )));
    }
    Ok(r)
}

/// Records a recovery in the catalog.
pub fn record_recovery(config: &Config, recovery: &crate::catalog::Recovery) -> Result<()> {
    let at = super::catalog::catalog_location(None, config);
    let mut c = super::catalog::open_catalog(&at, Some(config), &super::observer::Silent)?;
    c.record_recovery(recovery)?;
    Ok(())
}

/// Restores `m` into `dir` as files (see `run::restore::restore_local`),
/// its progress shown to `observer`.
#[allow(clippy::too_many_arguments)]
pub fn restore_to_dir(
    repo: &Repository,
    m: &Manifest,
    dir: &Path,
    changes: &VmxChanges,
    only: Option<&[i32]>,
    force: bool,
    observer: &dyn Observer,
) -> Result<LocalRestore> {
    ProgressBoard::track(observer, &changes.name, |progress| {
        restore::restore_local(
            repo,
            m,
            dir,
            changes,
            only,
            force,
            super::threads(),
            Some(progress),
        )
    })
}
