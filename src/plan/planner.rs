//! The planner: desired state (policies) against what exists (the live
//! inventory and the restore points on every tier) at an instant, as a list
//! of actions with their reasons. Pure and deterministic: the same input
//! gives the same plan in the same order; the clock is an argument.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Timelike, Utc};

use super::cbt::{self, CbtVerdict, LiveDisk};
use super::compliance::VmCompliance;
use super::hygiene;
use crate::inventory::VmRecord;
use crate::policy::Config;
use crate::policy::model::{Policy, VmFacts};
use crate::repo::manifest::{DiskEntry, PointKind};

/// One restore point and where its copies are. A site holds about a
/// million of these, so the VM's identity is shared by its points.
#[derive(Debug, Clone)]
pub struct PointInfo {
    pub vm_uuid: Arc<str>,
    /// The source the VM was read from: with the UUID, the VM's identity
    /// (`None`: a point from before coffer recorded it).
    pub source: Option<Arc<str>>,
    pub vm_name: Arc<str>,
    pub point_id: String,
    pub created: DateTime<Utc>,
    pub kind: PointKind,
    pub disks: Box<[PointDisk]>,
    /// Tier name → that copy.
    pub copies: Copies,
}

/// What the planner needs of a point's disk: enough to judge it as the
/// base of an incremental. The manifest's other fields stay out, since a
/// site holds a million points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PointDisk {
    pub device_key: i32,
    pub size_bytes: u64,
    pub change_id: Option<Box<str>>,
    /// `[datastore] dir/name.vmdk` when it was read, if known.
    pub backing: Option<String>,
}

impl PointDisk {
    /// As the manifest's entry the CBT rules take.
    fn as_entry(&self) -> DiskEntry {
        DiskEntry {
            device_key: self.device_key,
            label: String::new(),
            size_bytes: self.size_bytes,
            chunk_size_bytes: 0,
            index_key: String::new(),
            index_sha256: String::new(),
            change_id: self.change_id.as_deref().map(str::to_string),
            backing: self.backing.clone(),
            bytes_read: 0,
            chunks_new: 0,
            bytes_stored_new: 0,
            chunks_data: 0,
        }
    }
}

/// The copies of a point by tier name, sorted by it. A vector, not a map:
/// a point has one to three copies, and a map node costs about 500 bytes
/// per point; callers share one name per tier between points.
#[derive(Debug, Clone, Default)]
pub struct Copies(Vec<(Arc<str>, CopyInfo)>);

type CopyRef<'a> = (&'a str, &'a CopyInfo);

impl Copies {
    fn find(&self, tier: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(t, _)| (**t).cmp(tier))
    }

    pub fn get(&self, tier: &str) -> Option<&CopyInfo> {
        self.find(tier).ok().map(|i| &self.0[i].1)
    }

    pub fn get_mut(&mut self, tier: &str) -> Option<&mut CopyInfo> {
        self.find(tier).ok().map(|i| &mut self.0[i].1)
    }

    pub fn contains_key(&self, tier: &str) -> bool {
        self.find(tier).is_ok()
    }

    /// Adds or replaces the copy on `tier`; returns the one replaced.
    pub fn insert(&mut self, tier: impl Into<Arc<str>>, copy: CopyInfo) -> Option<CopyInfo> {
        let tier = tier.into();
        match self.find(&tier) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, copy)),
            Err(i) => {
                self.0.insert(i, (tier, copy));
                None
            }
        }
    }

    pub fn remove(&mut self, tier: &str) -> Option<CopyInfo> {
        self.find(tier).ok().map(|i| self.0.remove(i).1)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Tier and copy, in tier order.
    pub fn iter(&self) -> impl Iterator<Item = CopyRef<'_>> {
        self.into_iter()
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(t, _)| &**t)
    }

    pub fn values(&self) -> impl Iterator<Item = &CopyInfo> {
        self.0.iter().map(|(_, c)| c)
    }
}

impl<T: Into<Arc<str>>> FromIterator<(T, CopyInfo)> for Copies {
    /// A tier given twice keeps its last copy, as a map would.
    fn from_iter<I: IntoIterator<Item = (T, CopyInfo)>>(iter: I) -> Self {
        let mut list: Vec<(Arc<str>, CopyInfo)> =
            iter.into_iter().map(|(t, c)| (t.into(), c)).collect();
        // Stable: of a tier given twice, the last given is the last kept.
        list.sort_by(|a, b| a.0.cmp(&b.0));
        list.reverse();
        list.dedup_by(|a, b| a.0 == b.0);
        list.reverse();
        list.shrink_to_fit();
        Copies(list)
    }
}

impl<'a> IntoIterator for &'a Copies {
    type Item = CopyRef<'a>;
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (Arc<str>, CopyInfo)>,
        fn(&'a (Arc<str>, CopyInfo)) -> CopyRef<'a>,
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(t, c)| (&**t, c))
    }
}

#[derive(Debug, Clone, Default)]
pub struct CopyInfo {
    /// Object Lock on this copy until then.
    pub locked_until: Option<DateTime<Utc>>,
    /// The last verification of this copy: `Some(false)` when it failed.
    pub verified_ok: Option<bool>,
}

impl CopyInfo {
    /// Healthy: its last verification, if any, passed.
    pub fn healthy(&self) -> bool {
        self.verified_ok != Some(false)
    }
}

impl PointInfo {
    /// Good: restorable from at least one healthy copy. A copy that failed
    /// verification is damage on its tier, not in the point: the point's
    /// other copies stay, and the bad copy is pruned and copied again.
    pub fn good(&self) -> bool {
        self.copies.values().any(CopyInfo::healthy)
    }

    /// Holds a healthy copy on `tier`.
    pub fn healthy_on(&self, tier: &str) -> bool {
        self.copies.get(tier).is_some_and(CopyInfo::healthy)
    }
}

/// A finished drill, for `every` and for the guest-check findings.
#[derive(Debug, Clone)]
pub struct DrillRecord {
    pub policy: String,
    pub drill: String,
    pub vm_uuid: String,
    pub point_id: String,
    pub finished: DateTime<Utc>,
    pub ok: bool,
    /// The guest checks (fsck, boot, scripts): `None` when none ran. A
    /// failure is an alert and a compliance finding, never damage: the
    /// copy's data stands or falls by data verification alone.
    pub guest_ok: Option<bool>,
    /// What the guest checks said, with a failing check's own output.
    pub guest_detail: Option<String>,
}

/// Everything the planner looks at.
#[derive(Debug)]
pub struct PlanInput<'a> {
    pub config: &'a Config,
    /// Source name and VM, as the inventory found them.
    pub inventory: Vec<(String, VmRecord)>,
    /// Sources that could not be read, with the error: their VMs are
    /// `unknown`, neither vanished nor in compliance.
    pub unreachable_sources: BTreeMap<String, String>,
    pub points: Vec<PointInfo>,
    /// Tiers whose listing failed: nothing is pruned there.
    pub unlisted_tiers: BTreeSet<String>,
    pub drills: Vec<DrillRecord>,
    /// This installation's id when none of its runs is alive but the
    /// caller's: the coffer snapshots it owns are dead and removed.
    pub dead_installation: Option<String>,
    pub now: DateTime<Utc>,
    /// Allow pruning more than half of a tier's points in one run.
    pub allow_mass_prune: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case", tag = "action")]
pub enum Action {
    Backup {
        policy: String,
        source: String,
        vm: String,
        tier: String,
        full: bool,
        reason: String,
        base: Option<String>,
    },
    /// A backup is due but the window is closed.
    Wait {
        policy: String,
        vm: String,
        until: DateTime<Utc>,
        reason: String,
    },
    Copy {
        vm: String,
        point: String,
        from: String,
        to: String,
        reason: String,
    },
    Prune {
        vm: String,
        point: String,
        tier: String,
        reason: String,
    },
    /// A prune retention asks for but a safety floor forbids.
    KeepBlocked {
        vm: String,
        point: String,
        tier: String,
        reason: String,
    },
    Gc {
        tier: String,
        reason: String,
    },
    Drill {
        policy: String,
        drill: String,
        vm: String,
        point: String,
        tier: String,
        reason: String,
    },
    RemoveSnapshot {
        source: String,
        vm: String,
        snapshot: String,
        reason: String,
    },
    Alert {
        vm: Option<String>,
        message: String,
    },
}

impl Action {
    /// What makes two actions the same work whatever their reasons: kind,
    /// target and point. `None` for what carries nothing out (alerts,
    /// waits, kept points). A saved plan is carried out only where the plan
    /// made afresh holds an action of the same identity.
    pub fn identity(&self) -> Option<Vec<&str>> {
        match self {
            Action::Backup {
                policy,
                source,
                vm,
                tier,
                ..
            } => Some(vec!["backup", policy, source, vm, tier]),
            Action::Copy { vm, point, to, .. } => Some(vec!["copy", vm, point, to]),
            Action::Prune {
                vm, point, tier, ..
            } => Some(vec!["prune", vm, point, tier]),
            Action::Gc { tier, .. } => Some(vec!["gc", tier]),
            Action::Drill {
                policy,
                drill,
                vm,
                point,
                tier,
                ..
            } => Some(vec!["drill", policy, drill, vm, point, tier]),
            Action::RemoveSnapshot {
                source,
                vm,
                snapshot,
                ..
            } => Some(vec!["remove-snapshot", source, vm, snapshot]),
            Action::Wait { .. } | Action::KeepBlocked { .. } | Action::Alert { .. } => None,
        }
    }

    /// One line for people: symbol, target, reason.
    pub fn line(&self) -> String {
        match self {
            Action::Backup {
                policy,
                vm,
                tier,
                full,
                reason,
                ..
            } => format!(
                "+ backup {vm} → {tier} ({}, policy {policy}): {reason}",
                if *full { "full" } else { "incremental" }
            ),
            Action::Wait {
                vm, until, reason, ..
            } => format!(
                "… wait {vm} until {}: {reason}",
                until.format("%Y-%m-%d %H:%M UTC")
            ),
            Action::Copy {
                vm,
                point,
                from,
                to,
                reason,
            } => format!("> copy {vm} {point} {from} → {to}: {reason}"),
            Action::Prune {
                vm,
                point,
                tier,
                reason,
            } => format!("- prune {vm} {point} on {tier}: {reason}"),
            Action::KeepBlocked {
                vm,
                point,
                tier,
                reason,
            } => format!("= keep {vm} {point} on {tier}: {reason}"),
            Action::Gc { tier, reason } => format!("- gc {tier}: {reason}"),
            Action::Drill {
                drill,
                vm,
                point,
                tier,
                reason,
                ..
            } => format!("? drill {drill} {vm} {point} on {tier}: {reason}"),
            Action::RemoveSnapshot {
                vm,
                snapshot,
                reason,
                ..
            } => format!("- remove-snapshot {vm} \"{snapshot}\": {reason}"),
            Action::Alert { vm, message } => match vm {
                Some(vm) => format!("! alert {vm}: {message}"),
                None => format!("! alert: {message}"),
            },
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Plan {
    pub format: u32,
    pub now: DateTime<Utc>,
    pub actions: Vec<Action>,
    pub compliance: Vec<VmCompliance>,
}

/// Why the newest healthy point on the backup tier is kept, even when
/// retention lets it go (its tier keeps a point whose copy there failed
/// verification and is yet to be copied again).
pub const BASE_OF_NEXT_BACKUP: &str = "the base of the next incremental backup";

/// The reason of a prune that removes a copy which failed verification.
pub const FAILED_VERIFICATION: &str = "the copy failed data verification";

/// Why a prune retention asks for waits for a later run: the tier's
/// mass-prune floor (at most half of a tier's points in one run).
pub const MASS_PRUNE_FLOOR: &str = "the mass-prune floor defers it to a later run";

/// Version of the JSON form of a plan.
pub const PLAN_FORMAT: u32 = 1;

/// Retention verdicts: point id → the rules that keep it (absent: forget).
pub type Kept = BTreeMap<String, Vec<String>>;

/// Retention by restic's `forget` rules over a VM's good points: what
/// `tier` should hold, with the rules that keep each point.
pub fn restic_retention(points: &[&PointInfo], policy: &Policy, tier: &str) -> Kept {
    let Some(rules) = policy.retain.get(tier) else {
        return Kept::new();
    };
    let good: Vec<super::retention::PointTime> = points
        .iter()
        .filter(|p| p.good())
        .map(|p| super::retention::PointTime {
            id: p.point_id.clone(),
            created: p.created,
        })
        .collect();
    super::retention::apply(&good, rules, policy.timezone())
        .into_iter()
        .filter(|v| v.keep)
        .map(|v| {
            let reasons = v.reasons.iter().map(|r| r.to_string()).collect();
            (v.id, reasons)
        })
        .collect()
}

/// The policies that select a VM of a source.
pub fn policies_of<'c>(config: &'c Config, source: &str, vm: &VmRecord) -> Vec<&'c Policy> {
    let datastores: Vec<String> = vm
        .disks
        .iter()
        .filter_map(|d| crate::inventory::DatastorePath::parse(&d.file_name))
        .map(|p| p.datastore)
        .collect();
    let facts = VmFacts {
        source,
        name: &vm.name,
        folder: "",
        tags: &[],
        datastores: &datastores,
    };
    config
        .policies
        .values()
        .filter(|p| p.selector.matches(&facts))
        .collect()
}

fn window_opens(policy: &Policy, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let w = policy.window.as_ref()?;
    let tz = policy.timezone();
    let local = now.with_timezone(&tz);
    let minute = local.hour() * 60 + local.minute();
    if w.contains(minute) {
        return None;
    }
    // The next minute the window contains (at most a day away).
    (1..=24 * 60).find_map(|m| {
        let t = now + chrono::Duration::minutes(m);
        let l = t.with_timezone(&tz);
        w.contains(l.hour() * 60 + l.minute())
            .then(|| t.with_second(0).unwrap_or(t))
    })
}

/// A VM as its points know it: instance UUID and source (`None`: recorded
/// before coffer kept the source).
type VmKey<'a> = (&'a str, Option<&'a str>);

/// The instance UUIDs that VMs of more than one source share, each with an
/// alert: coffer keeps them apart, and says so, since one is most likely a
/// copy of the other.
fn duplicate_uuids<'a>(
    inventory: &[&'a (String, VmRecord)],
    by_vm: &BTreeMap<VmKey<'_>, &[&PointInfo]>,
    actions: &mut Vec<Action>,
) -> BTreeSet<&'a str> {
    let mut holders: BTreeMap<&str, Vec<(&str, &str)>> = BTreeMap::new();
    for (source, vm) in inventory {
        if let Some(uuid) = vm.instance_uuid.as_deref() {
            holders
                .entry(uuid)
                .or_default()
                .push((source.as_str(), vm.name.as_str()));
        }
    }
    let mut out = BTreeSet::new();
    for (uuid, list) in holders {
        let sources: BTreeSet<&str> = list.iter().map(|(s, _)| *s).collect();
        if sources.len() < 2 {
            continue;
        }
        out.insert(uuid);
        let legacy = by_vm.get(&(uuid, None)).map_or(0, |p| p.len());
        actions.push(Action::Alert {
            vm: None,
            message: format!(
                "instance UUID {uuid} is held by {}: they are kept apart, each with its own points{}",
                list.iter()
                    .map(|(s, n)| format!("VM {n} of source `{s}`"))
                    .collect::<Vec<_>>()
                    .join(" and "),
                if legacy > 0 {
                    format!(
                        "; {legacy} older points that do not record their source count for neither"
                    )
                } else {
                    String::new()
                }
            ),
        });
    }
    out
}

/// Builds the plan. `retain` applies a tier's retention to a VM's points
/// there (restic's `forget` rules); passed in so it stays one function.
pub fn plan(input: &PlanInput<'_>, retain: &dyn Fn(&[&PointInfo], &Policy, &str) -> Kept) -> Plan {
    let config = input.config;
    let now = input.now;
    let mut actions = Vec::new();
    let mut compliance = Vec::new();
    // Each VM's points newest first, as slices of one sorted list.
    // A VM is its instance UUID and its source: two sources may hold VMs
    // with the same UUID (files copied between hosts, two vCenters), and
    // one's points must never make the other look protected.
    let mut sorted: Vec<&PointInfo> = input.points.iter().collect();
    sorted.sort_unstable_by(|a, b| {
        (&a.vm_uuid, &a.source)
            .cmp(&(&b.vm_uuid, &b.source))
            .then(b.created.cmp(&a.created))
            .then(b.point_id.cmp(&a.point_id))
    });
    let by_vm: BTreeMap<VmKey<'_>, &[&PointInfo]> = sorted
        .chunk_by(|a, b| a.vm_uuid == b.vm_uuid && a.source == b.source)
        .map(|list| ((&*list[0].vm_uuid, list[0].source.as_deref()), list))
        .collect();
    // The last finish of each drill per VM, in one pass over the records.
    let mut last_drills: LastDrills = BTreeMap::new();
    for r in &input.drills {
        let last = last_drills
            .entry((&r.policy, &r.drill, &r.vm_uuid))
            .or_insert(r.finished);
        *last = (*last).max(r.finished);
    }
    // The newest run of each drill per VM: its guest checks are the VM's
    // standing until the drill runs again.
    let mut newest_drills: BTreeMap<(&str, &str, &str), &DrillRecord> = BTreeMap::new();
    for r in &input.drills {
        let e = newest_drills
            .entry((&r.policy, &r.drill, &r.vm_uuid))
            .or_insert(r);
        if r.finished > e.finished {
            *e = r;
        }
    }
    let mut matched: BTreeSet<VmKey<'_>> = BTreeSet::new();
    let mut prunes_per_tier: PrunesPerTier<'_> = BTreeMap::new();

    let mut inventory: Vec<&(String, VmRecord)> = input.inventory.iter().collect();
    inventory.sort_by(|a, b| (&a.0, &a.1.name).cmp(&(&b.0, &b.1.name)));
    let duplicated = duplicate_uuids(&inventory, &by_vm, &mut actions);
    for (source, vm) in inventory {
        for alert in hygiene::snapshot_alerts(
            vm,
            now,
            config.compliance.snapshot_max_age,
            Duration::from_secs(6 * 3600),
            input.dead_installation.as_deref(),
        ) {
            actions.push(Action::Alert {
                vm: Some(vm.name.clone()),
                message: alert.describe(),
            });
            if alert.left_by_coffer() {
                actions.push(Action::RemoveSnapshot {
                    source: source.clone(),
                    vm: vm.name.clone(),
                    snapshot: alert.name.clone(),
                    reason: "left behind by an earlier coffer run that is no longer running".into(),
                });
            }
        }
        let policies = policies_of(config, source, vm);
        let Some(uuid) = vm.instance_uuid.as_deref() else {
            continue;
        };
        // Points recorded without a source are this VM's unless another
        // source holds a VM with the same UUID: then they are neither's.
        let shared = duplicated.contains(uuid);
        matched.insert((uuid, Some(source.as_str())));
        if !shared {
            matched.insert((uuid, None));
        }
        let policy = match policies.as_slice() {
            [] => {
                actions.push(Action::Alert {
                    vm: Some(vm.name.clone()),
                    message: "no policy selects this VM: it is not backed up".into(),
                });
                continue;
            }
            [one] => *one,
            many => {
                actions.push(Action::Alert {
                    vm: Some(vm.name.clone()),
                    message: format!(
                        "policies {} all select this VM; {} is used",
                        many.iter()
                            .map(|p| p.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                        many[0].name
                    ),
                });
                many[0]
            }
        };
        let own = by_vm
            .get(&(uuid, Some(source.as_str())))
            .copied()
            .unwrap_or_default();
        let legacy = if shared {
            &[][..]
        } else {
            by_vm.get(&(uuid, None)).copied().unwrap_or_default()
        };
        let merged: Vec<&PointInfo>;
        let points: &[&PointInfo] = if legacy.is_empty() {
            own
        } else if own.is_empty() {
            legacy
        } else {
            let mut all = [own, legacy].concat();
            all.sort_by(|a, b| b.created.cmp(&a.created).then(b.point_id.cmp(&a.point_id)));
            merged = all;
            &merged
        };
        plan_backup(policy, source, vm, points, now, &mut actions);
        plan_tiers(
            input,
            policy,
            vm,
            points,
            retain,
            &mut actions,
            &mut prunes_per_tier,
        );
        plan_drills(input, &last_drills, policy, vm, points, &mut actions);
        let mut standing =
            super::compliance::vm_compliance(config, policy, source, &vm.name, uuid, points, now);
        for (drill, r) in policy.drills.iter().filter_map(|d| {
            newest_drills
                .get(&(policy.name.as_str(), d.name.as_str(), uuid))
                .map(|r| (d, *r))
        }) {
            if r.guest_ok != Some(false) {
                continue;
            }
            // A guest check that fails is the VM's finding, not the data's:
            // the point stays, retention and the next backup are unchanged.
            actions.push(Action::Alert {
                vm: Some(vm.name.clone()),
                message: format!(
                    "guest check of drill `{}` failed on point {} ({}); the point's data is not affected and it is kept: {}",
                    drill.name,
                    r.point_id,
                    r.finished.format("%Y-%m-%d %H:%M UTC"),
                    r.guest_detail.as_deref().unwrap_or("no detail recorded")
                ),
            });
            standing.guest_check_failures += 1;
            standing
                .violations
                .push(format!("guest check of drill `{}` failed", drill.name));
        }
        compliance.push(standing);
    }
    // Points of VMs the inventory does not show: gone from a source that
    // answered, or unknown because their source could not be read.
    for (&(uuid, source), points) in &by_vm {
        if matched.contains(&(uuid, source)) || (source.is_none() && duplicated.contains(uuid)) {
            continue;
        }
        let name = &points[0].vm_name;
        let unreachable: Vec<(&str, &str)> = match source {
            Some(s) => input
                .unreachable_sources
                .get_key_value(s)
                .map(|(s, e)| (s.as_str(), e.as_str()))
                .into_iter()
                .collect(),
            // Recorded before coffer kept the source: any source that did
            // not answer may hold it.
            None => input
                .unreachable_sources
                .iter()
                .map(|(s, e)| (s.as_str(), e.as_str()))
                .collect(),
        };
        if unreachable.is_empty() {
            actions.push(Action::Alert {
                vm: Some(name.to_string()),
                message: format!(
                    "the VM is gone from {}; its {} points are kept until pruned by hand",
                    source.map_or("every source".to_string(), |s| format!("source `{s}`")),
                    points.len()
                ),
            });
            continue;
        }
        let unknown =
            super::compliance::unknown_vm(config, uuid, source, name, &unreachable, points, now);
        actions.push(Action::Alert {
            vm: Some(name.to_string()),
            message: format!(
                "standing unknown, {}; nothing of it is pruned until its source answers",
                unknown.violations[0].trim_start_matches("unknown: ")
            ),
        });
        compliance.push(unknown);
    }
    // The mass-prune floor, per tier: one run removes at most half of a
    // tier's points, the oldest first, and says how many wait. Retention
    // still makes progress every run: a backlog (runs killed before their
    // prune phase, a retention made shorter) shrinks run by run, visibly,
    // instead of blocking every prune for good.
    for (tier, mut prunes) in prunes_per_tier {
        let total = input
            .points
            .iter()
            .filter(|p| p.copies.contains_key(tier))
            .count();
        if prunes.is_empty() {
            continue;
        }
        actions.reserve(prunes.len() + 2);
        let allowance = if input.allow_mass_prune || prunes.len() * 2 <= total {
            prunes.len()
        } else {
            (total / 2).max(1)
        };
        prunes.sort_by(|a, b| (a.created, a.point).cmp(&(b.created, b.point)));
        let waiting = prunes.split_off(allowance.min(prunes.len()));
        if !waiting.is_empty() {
            actions.push(Action::Alert {
                vm: None,
                message: format!(
                    "tier `{tier}`: retention would prune {} of its {total} points; the mass-prune floor lets one run remove at most half, so this run prunes the oldest {}, and {} remain for the next runs (--allow-mass-prune removes them at once)",
                    prunes.len() + waiting.len(),
                    prunes.len(),
                    waiting.len()
                ),
            });
        }
        for p in waiting {
            actions.push(Action::KeepBlocked {
                vm: p.vm.to_string(),
                point: p.point.to_string(),
                tier: tier.to_string(),
                reason: format!("{MASS_PRUNE_FLOOR} (more than half of the tier's {total} points)"),
            });
        }
        for p in &prunes {
            actions.push(Action::Prune {
                vm: p.vm.to_string(),
                point: p.point.to_string(),
                tier: tier.to_string(),
                reason: p.reason.into(),
            });
        }
        if !prunes.is_empty() {
            actions.push(Action::Gc {
                tier: tier.to_string(),
                reason: "points were pruned".into(),
            });
        }
    }
    Plan {
        format: PLAN_FORMAT,
        now,
        actions,
        compliance,
    }
}

fn plan_backup(
    policy: &Policy,
    source: &str,
    vm: &VmRecord,
    points: &[&PointInfo],
    now: DateTime<Utc>,
    actions: &mut Vec<Action>,
) {
    let on_tier: Vec<&PointInfo> = points
        .iter()
        .copied()
        .filter(|p| p.healthy_on(&policy.backup_to))
        .collect();
    let newest = on_tier.first();
    let due = match newest {
        None => Some("no restore point yet".to_string()),
        Some(p) => {
            let fire = policy.schedule.last_at_or_before(now);
            let rpo_breached = policy
                .rpo
                .is_some_and(|rpo| (now - p.created).to_std().unwrap_or_default() > rpo);
            if rpo_breached {
                Some(format!(
                    "RPO {} breached: newest good point is from {}",
                    crate::policy::units::format_duration(policy.rpo.unwrap_or_default()),
                    p.created.format("%Y-%m-%d %H:%M UTC")
                ))
            } else {
                fire.filter(|f| *f > p.created)
                    .map(|f| format!("scheduled at {}", f.format("%Y-%m-%d %H:%M UTC")))
            }
        }
    };
    let Some(reason) = due else {
        return;
    };
    if let Some(until) = window_opens(policy, now) {
        actions.push(Action::Wait {
            policy: policy.name.clone(),
            vm: vm.name.clone(),
            until,
            reason: format!("{reason}; outside the backup window"),
        });
        return;
    }
    // A newest point that failed verification may share damaged chunks:
    // do not build on anything, read everything again.
    let newest_any = points
        .iter()
        .find(|p| p.copies.contains_key(&policy.backup_to));
    let (full, why) = if newest_any.is_some_and(|p| !p.good()) {
        (
            true,
            "full: the newest point failed data verification".to_string(),
        )
    } else {
        full_or_incremental(policy, vm, &on_tier, now)
    };
    actions.push(Action::Backup {
        policy: policy.name.clone(),
        source: source.to_string(),
        vm: vm.name.clone(),
        tier: policy.backup_to.clone(),
        full,
        reason: format!("{reason}; {why}"),
        base: (!full).then(|| on_tier[0].point_id.clone()),
    });
}

fn full_or_incremental(
    policy: &Policy,
    vm: &VmRecord,
    on_tier: &[&PointInfo],
    now: DateTime<Utc>,
) -> (bool, String) {
    let Some(base) = on_tier.first() else {
        return (true, "full: first backup".into());
    };
    if let Some(every) = policy.full_every {
        let last_full = on_tier.iter().find(|p| p.kind == PointKind::Full);
        match last_full {
            None => return (true, "full: no full on the tier".into()),
            Some(f) if (now - f.created).to_std().unwrap_or_default() >= every => {
                return (
                    true,
                    format!(
                        "full: full_every {} reached",
                        crate::policy::units::format_duration(every)
                    ),
                );
            }
            _ => {}
        }
    }
    for disk in &vm.disks {
        let live = LiveDisk {
            device_key: disk.key,
            capacity_bytes: disk.capacity_bytes,
            backing: &disk.file_name,
            change_id: disk.change_id.as_ref().map(|c| c.0.as_str()),
        };
        let base_disk = base
            .disks
            .iter()
            .find(|d| d.device_key == disk.key)
            .map(PointDisk::as_entry);
        let base_disk = base_disk.as_ref();
        // The VM's own disk shows its newest id; only the epoch is compared.
        let mut live_for_check = live.clone();
        if let (Some(b), Some(_)) = (
            base_disk.and_then(|d| d.change_id.as_deref()),
            live.change_id,
        ) && cbt::change_id_epoch(b) == live.change_id.map(cbt::change_id_epoch).unwrap_or("")
        {
            live_for_check.change_id = Some(b);
        }
        if let CbtVerdict::Full { reason } =
            cbt::verdict(base_disk, &live_for_check, vm.change_tracking_enabled)
        {
            return (true, format!("full: {reason}"));
        }
    }
    (false, format!("incremental from {}", base.point_id))
}

/// A prune retention asks for, held until the tier's mass-prune floor is
/// known: borrowed, since a large site plans tens of thousands.
struct PendingPrune<'a> {
    created: DateTime<Utc>,
    vm: &'a str,
    point: &'a str,
    reason: &'static str,
}

/// Tier name → the prunes on it.
type PrunesPerTier<'a> = BTreeMap<&'a str, Vec<PendingPrune<'a>>>;

#[allow(clippy::too_many_arguments)]
fn plan_tiers<'a>(
    input: &PlanInput<'_>,
    policy: &Policy,
    vm: &'a VmRecord,
    points: &[&'a PointInfo],
    retain: &dyn Fn(&[&PointInfo], &Policy, &str) -> Kept,
    actions: &mut Vec<Action>,
    prunes: &mut PrunesPerTier<'a>,
) {
    let newest_good = points.iter().find(|p| p.good()).map(|p| p.point_id.clone());
    // The base of the next incremental: pruning it would make that a full.
    let base = points
        .iter()
        .find(|p| p.healthy_on(&policy.backup_to))
        .map(|p| p.point_id.as_str());
    let is_base = |p: &PointInfo, tier: &str| tier == policy.backup_to && base == Some(&p.point_id);
    // What each tier's retention keeps, over all the VM's points (a tier
    // holds the points its retention keeps, wherever they are now).
    let mut keeps: BTreeMap<&str, Kept> = BTreeMap::new();
    for tier in policy.retain.keys() {
        keeps.insert(tier.as_str(), retain(points, policy, tier));
    }
    let by_id: BTreeMap<&str, &PointInfo> =
        points.iter().map(|p| (p.point_id.as_str(), *p)).collect();
    // Copies first: a kept point the tier lacks, from a tier that has it.
    let mut pending_sources: BTreeSet<(&str, &str)> = BTreeSet::new();
    for (tier, kept) in &keeps {
        for (point_id, rules) in kept {
            let Some(p) = by_id.get(point_id.as_str()) else {
                continue;
            };
            // A damaged copy on the tier is pruned first (below) and the
            // plan after that copies the point again, from the source this
            // plan keeps for it.
            let damaged = p.copies.get(tier).is_some_and(|c| !c.healthy());
            if (p.copies.contains_key(tier) && !damaged) || !p.good() {
                continue;
            }
            if let Some(from) = p
                .copies
                .iter()
                .find(|(t, c)| c.healthy() && !input.unlisted_tiers.contains(*t))
                .map(|(t, _)| t)
            {
                pending_sources.insert((p.point_id.as_str(), from));
                if damaged {
                    continue;
                }
                actions.push(Action::Copy {
                    vm: vm.name.clone(),
                    point: p.point_id.clone(),
                    from: from.to_string(),
                    to: tier.to_string(),
                    reason: format!("kept by {}", rules.join(", ")),
                });
            }
        }
    }
    let locked = |c: &CopyInfo| c.locked_until.is_some_and(|u| u > input.now);
    // A copy this plan does not prune: healthy, and kept, locked, on an
    // unlisted tier or on a tier without retention, or the newest good point.
    let stays = |p: &PointInfo, tier: &str, c: &CopyInfo| {
        c.healthy()
            && (input.unlisted_tiers.contains(tier)
                || keeps.get(tier).is_none_or(|k| k.contains_key(&p.point_id))
                || locked(c)
                || Some(&p.point_id) == newest_good.as_ref()
                || is_base(p, tier))
    };
    // Prunes: what a tier holds that its retention does not keep.
    for &p in points {
        for (tier, copy) in &p.copies {
            let Some(kept) = keeps.get(tier) else {
                continue;
            };
            if kept.contains_key(&p.point_id) && copy.healthy() {
                continue;
            }
            let blocked = if input.unlisted_tiers.contains(tier) {
                Some("the tier's listing failed; nothing is pruned there".to_string())
            } else if Some(&p.point_id) == newest_good.as_ref() && copy.healthy() {
                Some("the newest good point of the VM is never pruned".to_string())
            } else if is_base(p, tier) && copy.healthy() {
                Some(BASE_OF_NEXT_BACKUP.to_string())
            } else if pending_sources.contains(&(p.point_id.as_str(), tier))
                && !p.copies.iter().any(|(t, c)| t != tier && stays(p, t, c))
            {
                // If the copy failed, the point would be gone.
                Some("the only source of a pending copy".to_string())
            } else {
                copy.locked_until.filter(|_| locked(copy)).map(|u| {
                    format!(
                        "locked (immutable) until {}",
                        u.format("%Y-%m-%d %H:%M UTC")
                    )
                })
            };
            match blocked {
                Some(reason) => actions.push(Action::KeepBlocked {
                    vm: vm.name.clone(),
                    point: p.point_id.clone(),
                    tier: tier.to_string(),
                    reason,
                }),
                None => prunes.entry(tier).or_default().push(PendingPrune {
                    created: p.created,
                    vm: &vm.name,
                    point: &p.point_id,
                    reason: if copy.healthy() {
                        "no retention rule keeps it"
                    } else {
                        FAILED_VERIFICATION
                    },
                }),
            }
        }
    }
}

/// (policy, drill, VM uuid) → when that drill last finished.
type LastDrills<'a> = BTreeMap<(&'a str, &'a str, &'a str), DateTime<Utc>>;

fn plan_drills(
    input: &PlanInput<'_>,
    last_drills: &LastDrills<'_>,
    policy: &Policy,
    vm: &VmRecord,
    points: &[&PointInfo],
    actions: &mut Vec<Action>,
) {
    let Some(uuid) = vm.instance_uuid.as_deref() else {
        return;
    };
    for d in &policy.drills {
        let last = last_drills
            .get(&(policy.name.as_str(), d.name.as_str(), uuid))
            .copied();
        let due = match last {
            None => Some("never run".to_string()),
            Some(t) if (input.now - t).to_std().unwrap_or_default() >= d.every => Some(format!(
                "last run {}, every {}",
                t.format("%Y-%m-%d"),
                crate::policy::units::format_duration(d.every)
            )),
            _ => None,
        };
        let Some(reason) = due else { continue };
        let point = points.iter().find(|p| p.healthy_on(&d.tier));
        if let Some(p) = point {
            actions.push(Action::Drill {
                policy: policy.name.clone(),
                drill: d.name.clone(),
                vm: vm.name.clone(),
                point: p.point_id.clone(),
                tier: d.tier.clone(),
                reason,
            });
        }
    }
}
