//! Restore drills in the plan: which drill is due for a VM (never run, or
//! its `every` has passed since the last finish) and on which healthy
//! point, and what the newest run of each drill's guest checks means for
//! the VM's standing (an alert and a compliance finding, never damage).
//!
//! It owns these decisions as `Drill` and `Alert` actions. It must never
//! perform I/O, and never treat a failed guest check as a reason to prune
//! or distrust a point's data.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::action::Action;
use super::compliance::VmCompliance;
use super::input::{DrillRecord, PlanInput, PointInfo};
use crate::inventory::VmRecord;
use crate::policy::model::{Policy, TAPE_NOTE};

/// (policy, drill, VM uuid) → when that drill last finished.
pub(super) type LastDrills<'a> = BTreeMap<(&'a str, &'a str, &'a str), DateTime<Utc>>;

pub(super) fn plan_drills(
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
            let tier = input.config.tiers.get(&d.tier);
            let reason = match tier.and_then(|t| t.thaw_note()) {
                Some(note) => format!("{reason}; {note}, and the drill runs once it reads"),
                None if tier.is_some_and(|t| t.is_tape()) => format!("{reason}; {TAPE_NOTE}"),
                None => reason,
            };
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

/// (policy, drill, VM uuid) → the newest run of that drill.
pub(super) type NewestDrills<'a> = BTreeMap<(&'a str, &'a str, &'a str), &'a DrillRecord>;

/// The last finish of each drill per VM, in one pass over the records.
pub(super) fn last_drills(drills: &[DrillRecord]) -> LastDrills<'_> {
    let mut last_drills: LastDrills = BTreeMap::new();
    for r in drills {
        let last = last_drills
            .entry((&r.policy, &r.drill, &r.vm_uuid))
            .or_insert(r.finished);
        *last = (*last).max(r.finished);
    }
    last_drills
}

/// The newest run of each drill per VM: its guest checks are the VM's
/// standing until the drill runs again.
pub(super) fn newest_drills(drills: &[DrillRecord]) -> NewestDrills<'_> {
    let mut newest_drills: NewestDrills = BTreeMap::new();
    for r in drills {
        let e = newest_drills
            .entry((&r.policy, &r.drill, &r.vm_uuid))
            .or_insert(r);
        if r.finished > e.finished {
            *e = r;
        }
    }
    newest_drills
}

/// The failed guest checks of the newest run of each of the policy's
/// drills on this VM: an alert each, and a finding in its standing.
pub(super) fn guest_check_findings(
    newest_drills: &NewestDrills<'_>,
    policy: &Policy,
    vm: &VmRecord,
    uuid: &str,
    actions: &mut Vec<Action>,
    standing: &mut VmCompliance,
) {
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
                crate::policy::units::format_time(policy.timezone(), r.finished),
                r.guest_detail.as_deref().unwrap_or("no detail recorded")
            ),
        });
        standing.guest_check_failures += 1;
        standing
            .violations
            .push(format!("guest check of drill `{}` failed", drill.name));
    }
}
