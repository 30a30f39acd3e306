//! Gathering what a plan is made from: the catalog refreshed from every
//! tier (drift and unlistable tiers become notes), the live inventory of
//! every source (an unreachable source is recorded, never skipped), the
//! points and their copies, the drills run so far. `make_plan` then hands
//! it all to the pure planner.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;
use chrono::{DateTime, Utc};

use super::tiers::open_tiers;
use crate::catalog::Catalog;
use crate::plan::planner::{self, Plan, PlanInput, PointInfo};
use crate::policy::Config;
use crate::run::connect;

/// What was gathered for a plan, and what went wrong gathering it.
pub struct Gathered {
    pub inventory: Vec<(String, crate::vsphere::VmRecord)>,
    /// Sources that could not be read, with why.
    pub unreachable: BTreeMap<String, String>,
    pub points: Vec<PointInfo>,
    pub unlisted: BTreeSet<String>,
    pub drills: Vec<planner::DrillRecord>,
    /// Every drill run, for the reports.
    pub drill_runs: Vec<crate::catalog::DrillRun>,
    /// Restores onto hosts and instant recoveries, oldest first.
    pub recoveries: Vec<crate::catalog::Recovery>,
    pub notes: Vec<String>,
    /// See `PlanInput::dead_installation`.
    pub dead_installation: Option<String>,
    /// The points' file being written while the planner works.
    pub saving: super::point_cache::Saving,
}

/// This installation's id when no other run of it can be alive (see
/// `runlock::other_runs_are_dead`).
pub fn dead_installation(state_dir: &std::path::Path) -> Option<String> {
    if !crate::run::runlock::other_runs_are_dead(state_dir) {
        return None;
    }
    crate::run::installation::id(state_dir).ok()
}

/// Refreshes the catalog from every tier and reads every source.
pub fn gather(config: &Config, catalog: &mut Catalog) -> Result<Gathered> {
    let mut notes = Vec::new();
    let mut unlisted = BTreeSet::new();
    for (name, opened) in open_tiers(config)? {
        let name = &name;
        let refreshed = opened.and_then(|repo| {
            catalog
                .refresh_tier(name, &repo)
                .map_err(anyhow::Error::from)
        });
        match refreshed {
            Ok(drift) => {
                for item in &drift.items {
                    notes.push(format!("drift on tier `{name}`: {item}"));
                }
            }
            Err(e) => {
                notes.push(format!("tier `{name}` could not be listed: {e:#}"));
                unlisted.insert(name.clone());
            }
        }
    }
    let mut inventory = Vec::new();
    let mut unreachable = BTreeMap::new();
    for source in config.sources.values() {
        match connect::connect(source, &config.settings.state_dir).and_then(|c| {
            c.session
                .list_vms()
                .map_err(anyhow::Error::from)
                .map(|vms| (c, vms))
        }) {
            Ok((_conn, vms)) => {
                inventory.extend(vms.into_iter().map(|v| (source.name.clone(), v)));
            }
            Err(e) => {
                notes.push(format!("source `{}` could not be read: {e:#}", source.name));
                unreachable.insert(source.name.clone(), format!("{e:#}"));
            }
        }
    }
    // Read through the points saved last time: only what changed since
    // comes from the catalog.
    let read = super::point_cache::read_points(config, catalog)?;
    tracing::debug!(points = read.points.len(), how = ?read.how, "points read");
    // Drill names are unique across policies (validation says so).
    let drill_runs = catalog.drill_runs()?;
    let recoveries = catalog.recoveries()?;
    let drills = drill_runs
        .clone()
        .into_iter()
        .filter_map(|r| {
            let policy = config
                .policies
                .values()
                .find(|p| p.drills.iter().any(|d| d.name == r.drill))?;
            Some(planner::DrillRecord {
                policy: policy.name.clone(),
                drill: r.drill,
                vm_uuid: r.vm_uuid,
                point_id: r.point_id,
                finished: r.finished,
                ok: r.ok,
                guest_ok: r.guest_ok,
                guest_detail: r.guest_detail,
            })
        })
        .collect();
    Ok(Gathered {
        inventory,
        unreachable,
        points: read.points,
        saving: read.saving,
        unlisted,
        drills,
        drill_runs,
        recoveries,
        notes,
        dead_installation: dead_installation(&config.settings.state_dir),
    })
}

impl Gathered {
    /// The newest recovery of a VM an administrator ran, in words: when,
    /// how, onto what, and its times to power-on and to the first
    /// heartbeat; its time in `zone`.
    pub fn last_recovery(&self, vm_uuid: &str, zone: chrono_tz::Tz) -> Option<String> {
        let r = self.recoveries.iter().rfind(|r| r.vm_uuid == vm_uuid)?;
        let how = match r.method.as_str() {
            "instant" => "instant recovery",
            _ => "full restore",
        };
        let mut times = Vec::new();
        if let Some(s) = r.power_on_seconds {
            times.push(format!("powered on after {s:.1}s"));
        }
        times.push(match r.heartbeat_seconds {
            Some(h) => format!("heartbeat after {h:.1}s"),
            None => "no heartbeat recorded".into(),
        });
        Some(format!(
            "last recovery {} ({how} of point {} onto {} as {}): {}",
            crate::policy::units::format_time(zone, r.started),
            r.point_id,
            r.source,
            r.name,
            times.join(", ")
        ))
    }

    /// The newest drill of a VM, in words: name, kind, when, result, and
    /// the measured restore time; its time in `zone`.
    pub fn last_drill(&self, vm_uuid: &str, zone: chrono_tz::Tz) -> Option<String> {
        let r = self
            .drill_runs
            .iter()
            .filter(|r| r.vm_uuid == vm_uuid)
            .max_by_key(|r| r.finished)?;
        let kind = match &r.method {
            Some(m) => format!("{}, {m}", r.kind),
            None => r.kind.clone(),
        };
        // The time to recovered (a boot drill: to its services checked)
        // and, for a boot drill, to the guest's first heartbeat.
        let times = match (r.restore_seconds, r.heartbeat_seconds, r.method.is_some()) {
            (Some(s), Some(h), _) => {
                format!(", restore time {s:.1}s to services checked, heartbeat after {h:.1}s")
            }
            (Some(s), None, true) => format!(", restore time {s:.1}s to services checked"),
            (Some(s), None, false) => format!(", restore time {s:.1}s"),
            _ => String::new(),
        };
        Some(format!(
            "last drill {} ({kind}) {}: {}{times}",
            r.drill,
            crate::policy::units::format_time(zone, r.finished),
            match (r.ok, r.data_ok, r.guest_ok) {
                (true, _, _) => "passed",
                (false, Some(true), Some(false)) => "guest checks FAILED (data verified)",
                (false, Some(false), _) => "FAILED (data damaged)",
                (false, None, Some(false)) => "guest checks FAILED",
                _ => "FAILED",
            },
        ))
    }
}

/// Plans from what was gathered.
pub fn make_plan(
    config: &Config,
    g: &Gathered,
    now: DateTime<Utc>,
    allow_mass_prune: bool,
) -> Plan {
    let input = PlanInput {
        config,
        inventory: g.inventory.clone(),
        unreachable_sources: g.unreachable.clone(),
        points: std::borrow::Cow::Borrowed(&g.points),
        unlisted_tiers: g.unlisted.clone(),
        drills: g.drills.clone(),
        dead_installation: g.dead_installation.clone(),
        now,
        allow_mass_prune,
    };
    planner::plan(&input, &planner::restic_retention)
}
