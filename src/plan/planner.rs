//! The planner: desired state (policies) against what exists (the live
//! inventory and the restore points on every tier) at an instant, as a list
//! of actions with their reasons. Pure and deterministic: the same input
//! gives the same plan in the same order; the clock is an argument.
//!
//! This file owns `plan` itself: it walks the inventory VM by VM (which
//! policy selects it, which points are its own, which UUIDs two sources
//! share, which VMs are gone or unknown) and asks the parts beside it for
//! each decision: `backup` (is one due, full or incremental), `tiers`
//! (copies, prunes, the mass-prune floor), `drills`, `hygiene` and
//! `compliance`. Its inputs are in `input`, its output in `action`; both are
//! re-exported here under their old paths. It must never perform I/O, read
//! the clock or depend on the vSphere client: the inventory is the neutral
//! model of `crate::inventory`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::{backup, drills, hygiene, tiers};
use crate::inventory::VmRecord;
use crate::policy::Config;
use crate::policy::model::{Policy, VmFacts};

pub use super::action::{Action, PLAN_FORMAT, Plan};
pub use super::input::{
    Copies, CopyInfo, DrillRecord, PlanInput, PointConsistency, PointDisk, PointInfo,
};
pub use super::tiers::{
    BASE_OF_NEXT_BACKUP, FAILED_VERIFICATION, Kept, MASS_PRUNE_FLOOR, ONLY_DAMAGED_COPIES,
    restic_retention,
};

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

/// The points grouped by VM (instance UUID, then source) and each VM's
/// newest first (ties by point id, descending). A site holds a million
/// points of ten thousand VMs: each VM is numbered in key order once, so
/// the sort compares numbers and times, not UUIDs.
fn by_vm_newest_first(points: &[PointInfo]) -> Vec<&PointInfo> {
    let mut numbers: std::collections::HashMap<VmKey<'_>, usize> = Default::default();
    let mut last: Option<(&PointInfo, usize)> = None;
    let mut order: Vec<(usize, &PointInfo)> = Vec::with_capacity(points.len());
    for p in points {
        // The points of one VM share its names, and mostly come together.
        let n = match last {
            Some((q, n))
                if std::sync::Arc::ptr_eq(&q.vm_uuid, &p.vm_uuid) && q.source == p.source =>
            {
                n
            }
            _ => {
                let next = numbers.len();
                *numbers
                    .entry((&*p.vm_uuid, p.source.as_deref()))
                    .or_insert(next)
            }
        };
        last = Some((p, n));
        order.push((n, p));
    }
    let mut keys: Vec<(VmKey<'_>, usize)> = numbers.into_iter().collect();
    keys.sort_unstable();
    let mut rank = vec![0; keys.len()];
    for (r, (_, n)) in keys.iter().enumerate() {
        rank[*n] = r;
    }
    for entry in &mut order {
        entry.0 = rank[entry.0];
    }
    order.sort_unstable_by(|(ra, a), (rb, b)| {
        ra.cmp(rb)
            .then(b.created.cmp(&a.created))
            .then_with(|| b.point_id.cmp(&a.point_id))
    });
    order.into_iter().map(|(_, p)| p).collect()
}

/// Builds the plan. `retain` applies a tier's retention to a VM's points
/// there (restic's `forget` rules); passed in so it stays one function.
pub fn plan(
    input: &PlanInput<'_>,
    retain: &dyn for<'p> Fn(&[&'p PointInfo], &Policy, &str) -> Kept<'p>,
) -> Plan {
    let config = input.config;
    let now = input.now;
    let mut actions = Vec::new();
    let mut compliance = Vec::new();
    // Each VM's points newest first, as slices of one sorted list.
    // A VM is its instance UUID and its source: two sources may hold VMs
    // with the same UUID (files copied between hosts, two vCenters), and
    // one's points must never make the other look protected.
    let sorted = by_vm_newest_first(&input.points);
    let by_vm: BTreeMap<VmKey<'_>, &[&PointInfo]> = sorted
        .chunk_by(|a, b| a.vm_uuid == b.vm_uuid && a.source == b.source)
        .map(|list| ((&*list[0].vm_uuid, list[0].source.as_deref()), list))
        .collect();
    let last_drills = drills::last_drills(&input.drills);
    let newest_drills = drills::newest_drills(&input.drills);
    let mut matched: BTreeSet<VmKey<'_>> = BTreeSet::new();
    let mut prunes_per_tier: tiers::PrunesPerTier<'_> = BTreeMap::new();

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
                message: alert.describe_in(config.settings.timezone),
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
        // Delta files a snapshot removal left unmerged grow on the datastore
        // and slow the VM (VMware KB 2003638): an alert in every plan, and
        // for a VM coffer protects, the consolidation itself.
        if vm.consolidation_needed {
            actions.push(Action::Alert {
                vm: Some(vm.name.clone()),
                message: "its disks need consolidation (runtime.consolidationNeeded): a snapshot \
                          removal left delta files behind, which grow until they are merged"
                    .into(),
            });
            if !policies.is_empty() {
                actions.push(Action::Consolidate {
                    source: source.clone(),
                    vm: vm.name.clone(),
                    reason: "a snapshot removal left its delta files unmerged".into(),
                });
            }
        }
        // A disk backups leave out is said in every plan, so nobody takes
        // the VM's points for whole.
        if !policies.is_empty() {
            for reason in vm.disks.iter().filter_map(|d| d.why_not_backed_up()) {
                actions.push(Action::Alert {
                    vm: Some(vm.name.clone()),
                    message: format!("{reason}; its backups leave it out"),
                });
            }
        }
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
            all.sort_by(|a, b| {
                b.created
                    .cmp(&a.created)
                    .then_with(|| b.point_id.cmp(&a.point_id))
            });
            merged = all;
            &merged
        };
        // A VM coffer refuses (encrypted) gets no backup, only the reason,
        // in every plan; it stays in compliance, where it shows as
        // unprotected.
        match vm.why_refused() {
            Some(reason) => actions.push(Action::Alert {
                vm: Some(vm.name.clone()),
                message: format!("{reason}; it is not backed up"),
            }),
            None => backup::plan_backup(policy, source, vm, points, now, &mut actions),
        }
        actions.extend(backup::consistency_alert(policy, vm, points));
        tiers::plan_tiers(
            input,
            policy,
            vm,
            points,
            retain,
            &mut actions,
            &mut prunes_per_tier,
        );
        drills::plan_drills(input, &last_drills, policy, vm, points, &mut actions);
        let mut standing =
            super::compliance::vm_compliance(config, policy, source, &vm.name, uuid, points, now);
        drills::guest_check_findings(
            &newest_drills,
            policy,
            vm,
            uuid,
            &mut actions,
            &mut standing,
        );
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
    tiers::mass_prune_floor(input, prunes_per_tier, &mut actions);
    Plan {
        format: PLAN_FORMAT,
        now,
        actions,
        compliance,
    }
}
