//! `coffer plan`: refresh the catalog from every tier (reporting drift),
//! read the live inventory, and print what `apply` would do and why, with
//! each VM's 3-2-1-1-0 and RPO standing.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};

use super::catalog::{Location, catalog_path, open_catalog, open_tiers};
use super::{EXIT_OK, load_or_report};
use crate::catalog::{Catalog, CopyState};
use crate::plan::planner::{self, Copies, CopyInfo, Plan, PlanInput, PointDisk, PointInfo};
use crate::policy::Config;
use crate::run::connect;

/// `--detailed-exitcode`: actions are pending.
pub const EXIT_CHANGES: u8 = 2;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub location: Location,
    /// Print the plan as JSON (versioned).
    #[arg(long)]
    pub json: bool,
    /// Plan as of this instant (RFC 3339) instead of now.
    #[arg(long)]
    pub at: Option<String>,
    /// Let retention prune more than half of a tier's points in one run
    /// (without it, one run prunes the oldest half and the rest waits).
    #[arg(long)]
    pub allow_mass_prune: bool,
    /// Exit 2 when actions are pending (`coffer compliance` exits 3 on a breach).
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// Also write the plan (JSON) to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

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
    pub notes: Vec<String>,
    /// See `PlanInput::dead_installation`.
    pub dead_installation: Option<String>,
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
    let mut points = Vec::new();
    // One name per tier and per VM, shared by all the points.
    let tier_names: BTreeMap<&str, Arc<str>> = config
        .tiers
        .keys()
        .map(|t| (t.as_str(), Arc::from(t.as_str())))
        .collect();
    // One name per source too.
    let source_names: BTreeMap<String, Arc<str>> = config
        .sources
        .keys()
        .map(|s| (s.clone(), Arc::from(s.as_str())))
        .collect();
    for vm in catalog.vms()? {
        let (vm_uuid, vm_name): (Arc<str>, Arc<str>) =
            (vm.uuid.as_str().into(), vm.name.as_str().into());
        for p in catalog.points_of_vm(&vm.uuid)? {
            // Two VMs with this UUID on two sources each have their name.
            let point_vm_name = match &p.vm_name {
                Some(n) if **n != *vm_name => Arc::from(n.as_str()),
                _ => vm_name.clone(),
            };
            let source = p
                .source
                .as_deref()
                .map(|s| source_names.get(s).cloned().unwrap_or_else(|| Arc::from(s)));
            let copies: Copies = p
                .copies
                .iter()
                .filter(|c| c.state == CopyState::Present)
                .map(|c| -> Result<_> {
                    let lock = config
                        .tiers
                        .get(&c.tier)
                        .and_then(|t| t.immutable_for)
                        .and_then(|d| chrono::Duration::from_std(d).ok())
                        .map(|d| c.first_seen + d);
                    // Only data verification (every chunk read back and
                    // proven, or damage found) says a copy is damaged; a
                    // failed guest check (fsck, boot, script) does not.
                    let verified_ok = catalog
                        .last_data_verification(&p.point_id, &c.tier)?
                        .and_then(|v| v.data_ok);
                    Ok((
                        tier_names
                            .get(c.tier.as_str())
                            .cloned()
                            .unwrap_or_else(|| c.tier.as_str().into()),
                        CopyInfo {
                            locked_until: c.locked_until.or(lock),
                            verified_ok,
                        },
                    ))
                })
                .collect::<Result<_>>()?;
            if copies.is_empty() {
                continue;
            }
            points.push(PointInfo {
                vm_uuid: vm_uuid.clone(),
                source,
                vm_name: point_vm_name,
                point_id: p.point_id.clone(),
                created: p.created,
                kind: p.kind,
                disks: p
                    .disks
                    .iter()
                    .map(|d| PointDisk {
                        device_key: d.device_key,
                        size_bytes: d.size_bytes,
                        change_id: d.change_id.as_deref().map(Box::from),
                        backing: None,
                    })
                    .collect(),
                copies,
            });
        }
    }
    // Drill names are unique across policies (validation says so).
    let drill_runs = catalog.drill_runs()?;
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
        points,
        unlisted,
        drills,
        drill_runs,
        notes,
        dead_installation: dead_installation(&config.settings.state_dir),
    })
}

/// What a saved plan was made from: a digest of every policy file and of
/// the catalog's points and copies, with the lists to show what changed;
/// and a digest of the whole saved plan (its instant, its actions and
/// those lists), so an edit of the file is seen. The digest is no
/// signature (whoever can edit the file can compute it again): `apply
/// FILE` also plans afresh and carries out only what both plans contain.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Fingerprint {
    pub policies: BTreeMap<String, String>,
    pub copies: BTreeSet<String>,
    /// SHA-256 of the plan's instant, actions, policies and copies; empty
    /// in a plan saved by an older coffer (which is refused).
    #[serde(default)]
    pub plan_sha256: String,
}

impl Fingerprint {
    /// The digest that seals a saved plan's instant and actions with what
    /// it was made from.
    pub fn seal(&self, now: DateTime<Utc>, actions: &[planner::Action]) -> Result<String> {
        use sha2::Digest;
        let bytes = serde_json::to_vec(&serde_json::json!({
            "now": now,
            "actions": actions,
            "policies": self.policies,
            "copies": self.copies,
        }))?;
        Ok(hex::encode(sha2::Sha256::digest(&bytes)))
    }

    /// Whether the file's actions are the ones it was saved with.
    pub fn seals(&self, now: DateTime<Utc>, actions: &[planner::Action]) -> Result<bool> {
        Ok(!self.plan_sha256.is_empty() && self.seal(now, actions)? == self.plan_sha256)
    }

    pub fn of(config: &Config, g: &Gathered) -> Result<Fingerprint> {
        use sha2::Digest;
        let mut policies = BTreeMap::new();
        for file in crate::policy::load(&config.dir).files {
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let rel = file
                .strip_prefix(&config.dir)
                .unwrap_or(&file)
                .display()
                .to_string();
            policies.insert(rel, hex::encode(sha2::Sha256::digest(&bytes)));
        }
        let copies = g
            .points
            .iter()
            .flat_map(|p| p.copies.keys().map(move |t| format!("{}@{t}", p.point_id)))
            .collect();
        Ok(Fingerprint {
            policies,
            copies,
            plan_sha256: String::new(),
        })
    }

    /// What differs from `now`, in words; empty when nothing does.
    pub fn changes(&self, now: &Fingerprint) -> Vec<String> {
        let mut out = Vec::new();
        for (f, d) in &now.policies {
            match self.policies.get(f) {
                None => out.push(format!("policy file {f} was added")),
                Some(old) if old != d => out.push(format!("policy file {f} changed")),
                _ => {}
            }
        }
        for f in self.policies.keys() {
            if !now.policies.contains_key(f) {
                out.push(format!("policy file {f} was removed"));
            }
        }
        for c in now.copies.difference(&self.copies) {
            out.push(format!("catalog: copy {c} appeared"));
        }
        for c in self.copies.difference(&now.copies) {
            out.push(format!("catalog: copy {c} is gone"));
        }
        out
    }
}

/// A plan as `--out` saves it and `apply FILE` reads it.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct SavedPlan {
    pub format: u32,
    pub now: DateTime<Utc>,
    pub fingerprint: Fingerprint,
    pub actions: Vec<planner::Action>,
}

impl Gathered {
    /// The newest drill of a VM, in words: name, kind, when, result, and
    /// the measured restore time.
    pub fn last_drill(&self, vm_uuid: &str) -> Option<String> {
        let r = self
            .drill_runs
            .iter()
            .filter(|r| r.vm_uuid == vm_uuid)
            .max_by_key(|r| r.finished)?;
        Some(format!(
            "last drill {} ({}) {}: {}{}",
            r.drill,
            r.kind,
            r.finished.format("%Y-%m-%d %H:%M UTC"),
            match (r.ok, r.data_ok, r.guest_ok) {
                (true, _, _) => "passed",
                (false, Some(true), Some(false)) => "guest checks FAILED (data verified)",
                (false, Some(false), _) => "FAILED (data damaged)",
                _ => "FAILED",
            },
            r.restore_seconds
                .map(|s| format!(", restore time {s:.1}s"))
                .unwrap_or_default()
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
        points: g.points.clone(),
        unlisted_tiers: g.unlisted.clone(),
        drills: g.drills.clone(),
        dead_installation: g.dead_installation.clone(),
        now,
        allow_mass_prune,
    };
    planner::plan(&input, &planner::restic_retention)
}

/// Prints a plan for people: notes, one line per action, compliance, a summary.
pub fn print_plan(out: &mut dyn Write, plan: &Plan, g: &Gathered) -> Result<()> {
    let notes = &g.notes;
    for n in notes {
        writeln!(out, "note: {n}")?;
    }
    for a in &plan.actions {
        writeln!(out, "{}", a.line())?;
    }
    for c in &plan.compliance {
        let vm = vm_label(c, &plan.compliance);
        if c.violations.is_empty() {
            writeln!(out, "compliance {vm} ({}): ok", c.policy)?;
        } else {
            writeln!(
                out,
                "compliance {vm} ({}): {}: {}",
                c.policy,
                standing_word(c),
                c.violations.join("; ")
            )?;
        }
    }
    let count = |p: fn(&planner::Action) -> bool| plan.actions.iter().filter(|a| p(a)).count();
    writeln!(
        out,
        "plan: {} backups, {} copies, {} prunes, {} drills, {} snapshot removals, {} kept by a safety floor, {} alerts",
        count(|a| matches!(a, planner::Action::Backup { .. })),
        count(|a| matches!(a, planner::Action::Copy { .. })),
        count(|a| matches!(a, planner::Action::Prune { .. })),
        count(|a| matches!(a, planner::Action::Drill { .. })),
        count(|a| matches!(a, planner::Action::RemoveSnapshot { .. })),
        count(|a| matches!(a, planner::Action::KeepBlocked { .. })),
        count(|a| matches!(a, planner::Action::Alert { .. })),
    )?;
    let (full, incremental, copy, prune) = volumes(plan, g);
    if full + copy + prune > 0 || incremental > 0 {
        let size = crate::policy::units::format_size;
        writeln!(
            out,
            "volume: full backups read at most {} (allocated areas only){}; copies cover {} of disks (only chunks the target lacks are sent); prunes release points of {} of disks (gc frees what no other point shares)",
            size(full),
            if incremental > 0 {
                format!(", {incremental} incremental backups read only what CBT reports changed")
            } else {
                String::new()
            },
            size(copy),
            size(prune)
        )?;
    }
    Ok(())
}

/// A VM's name for people, with its source (`name@source`) when another VM
/// in `all` has the same name.
pub fn vm_label(
    c: &crate::plan::compliance::VmCompliance,
    all: &[crate::plan::compliance::VmCompliance],
) -> String {
    let twice = all.iter().filter(|o| o.vm == c.vm).count() > 1;
    match (&c.source, twice) {
        (Some(s), true) => format!("{}@{s}", c.vm),
        _ => c.vm.clone(),
    }
}

/// A VM's standing in one word, for people: `ok`, `BREACH`, or `UNKNOWN`
/// when its source could not be read.
pub fn standing_word(c: &crate::plan::compliance::VmCompliance) -> &'static str {
    use crate::plan::compliance::Standing;
    match c.standing {
        Standing::Ok => "ok",
        Standing::Breach => "BREACH",
        Standing::Unknown => "UNKNOWN",
    }
}

/// What a plan moves, in bytes of disk: full backups (their disks'
/// capacity, an upper bound), the number of incrementals, copies and
/// prunes (the points' disk sizes).
fn volumes(plan: &Plan, g: &Gathered) -> (u64, usize, u64, u64) {
    let point_bytes = |id: &str| -> u64 {
        g.points
            .iter()
            .find(|p| p.point_id == id)
            .map_or(0, |p| p.disks.iter().map(|d| d.size_bytes).sum())
    };
    let (mut full, mut incremental, mut copy, mut prune) = (0, 0, 0, 0);
    for a in &plan.actions {
        match a {
            planner::Action::Backup {
                source,
                vm,
                full: true,
                ..
            } => {
                full += g
                    .inventory
                    .iter()
                    .find(|(s, v)| s == source && &v.name == vm)
                    .map_or(0, |(_, v)| v.disks.iter().map(|d| d.capacity_bytes).sum());
            }
            planner::Action::Backup { .. } => incremental += 1,
            planner::Action::Copy { point, .. } => copy += point_bytes(point),
            planner::Action::Prune { point, .. } => prune += point_bytes(point),
            _ => {}
        }
    }
    (full, incremental, copy, prune)
}

pub fn run(args: Args) -> Result<u8> {
    let config = load_or_report(&args.location.policy).map_err(|_| crate::cli::InvalidPolicyDir)?;
    let now = super::restore::parse_at(args.at.as_deref())?.unwrap_or_else(Utc::now);
    crate::cli::check_secrets(&config)?;
    let path = catalog_path(&args.location, Some(&config))?;
    let mut catalog = open_catalog(&path, Some(&config))?;
    let gathered = gather(&config, &mut catalog)?;
    let plan = make_plan(&config, &gathered, now, args.allow_mass_prune);
    let json = serde_json::to_string_pretty(&serde_json::json!({
        "format": plan.format,
        "now": plan.now,
        "notes": gathered.notes,
        "actions": plan.actions,
        "compliance": plan.compliance,
    }))?;
    if let Some(out) = &args.out {
        let mut fingerprint = Fingerprint::of(&config, &gathered)?;
        fingerprint.plan_sha256 = fingerprint.seal(plan.now, &plan.actions)?;
        let saved = SavedPlan {
            format: plan.format,
            now: plan.now,
            fingerprint,
            actions: plan.actions.clone(),
        };
        std::fs::write(out, serde_json::to_string_pretty(&saved)?)
            .with_context(|| format!("writing {}", out.display()))?;
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{json}")?;
    } else {
        print_plan(&mut out, &plan, &gathered)?;
    }
    if !args.detailed_exitcode {
        return Ok(EXIT_OK);
    }
    let pending = plan.actions.iter().any(|a| {
        !matches!(
            a,
            planner::Action::Alert { .. }
                | planner::Action::KeepBlocked { .. }
                | planner::Action::Wait { .. }
        )
    });
    Ok(if pending { EXIT_CHANGES } else { EXIT_OK })
}
