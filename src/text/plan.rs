//! A plan for people: the notes of gathering, one line per action with
//! its reason, a compact compliance standing, a summary and the volume
//! the plan moves. `coffer plan` prints it, and `apply` when it starts.

use std::fmt::Write as _;

use super::{paint, paint_action};
use crate::engine::Gathered;
use crate::engine::report::{standing_word, vm_label};
use crate::plan::planner::{self, Plan};
use crate::policy::units::format_size;

/// A plan: notes, one line per action, compliance, a summary.
pub fn plan(plan: &Plan, g: &Gathered, colour: bool, zone: chrono_tz::Tz) -> String {
    let mut out = String::new();
    for n in &g.notes {
        let _ = writeln!(out, "note: {n}");
    }
    for a in &plan.actions {
        let _ = writeln!(out, "{}", paint_action(colour, &a.line_in(zone)));
    }
    // A compact standing: the count, and only the VMs out of policy in
    // full (`coffer compliance` lists every VM).
    let ok = plan
        .compliance
        .iter()
        .filter(|c| c.violations.is_empty())
        .count();
    let _ = writeln!(
        out,
        "compliance: {ok} of {} VMs meet their policy",
        plan.compliance.len()
    );
    for c in plan.compliance.iter().filter(|c| !c.violations.is_empty()) {
        let _ = writeln!(
            out,
            "compliance {} ({}): {}: {}",
            vm_label(c, &plan.compliance),
            c.policy,
            paint(colour, "1;31", standing_word(c)),
            c.violations.join("; ")
        );
    }
    let count = |p: fn(&planner::Action) -> bool| plan.actions.iter().filter(|a| p(a)).count();
    let _ = writeln!(
        out,
        "plan: {} backups, {} copies, {} prunes, {} drills, {} snapshot removals, {} kept by a safety floor, {} alerts",
        count(|a| matches!(a, planner::Action::Backup { .. })),
        count(|a| matches!(a, planner::Action::Copy { .. })),
        count(|a| matches!(a, planner::Action::Prune { .. })),
        count(|a| matches!(a, planner::Action::Drill { .. })),
        count(|a| matches!(a, planner::Action::RemoveSnapshot { .. })),
        count(|a| matches!(a, planner::Action::KeepBlocked { .. })),
        count(|a| matches!(a, planner::Action::Alert { .. })),
    );
    let (full, incremental, copy, prune) = volumes(plan, g);
    if full + copy + prune > 0 || incremental > 0 {
        let _ = writeln!(
            out,
            "volume: full backups read at most {} (allocated areas only){}; copies cover {} of disks (only chunks the target lacks are sent); prunes release points of {} of disks (gc frees what no other point shares)",
            format_size(full),
            if incremental > 0 {
                format!(", {incremental} incremental backups read only what CBT reports changed")
            } else {
                String::new()
            },
            format_size(copy),
            format_size(prune)
        );
    }
    out
}

/// What a plan moves, in bytes of disk: full backups (their disks'
/// capacity, an upper bound), the number of incrementals, copies and
/// prunes (the points' disk sizes).
fn volumes(plan: &Plan, g: &Gathered) -> (u64, usize, u64, u64) {
    // Looked up once each: a site of 10,000 VMs plans about 100,000
    // copies and prunes over 1,000,000 points.
    let sizes: std::collections::HashMap<&str, u64> = g
        .points
        .iter()
        .map(|p| (&*p.point_id, p.disks.iter().map(|d| d.size_bytes).sum()))
        .collect();
    // The first VM of a name on a source, as the backup names it.
    let mut capacities: std::collections::HashMap<(&str, &str), u64> = Default::default();
    for (s, v) in &g.inventory {
        capacities
            .entry((s.as_str(), v.name.as_str()))
            .or_insert_with(|| v.disks.iter().map(|d| d.capacity_bytes).sum());
    }
    let point_bytes = |id: &str| -> u64 { sizes.get(id).copied().unwrap_or(0) };
    let (mut full, mut incremental, mut copy, mut prune) = (0, 0, 0, 0);
    for a in &plan.actions {
        match a {
            planner::Action::Backup {
                source,
                vm,
                full: true,
                ..
            } => {
                full += capacities
                    .get(&(source.as_str(), vm.as_str()))
                    .copied()
                    .unwrap_or(0);
            }
            planner::Action::Backup { .. } => incremental += 1,
            planner::Action::Copy { point, .. } => copy += point_bytes(point),
            planner::Action::Prune { point, .. } => prune += point_bytes(point),
            _ => {}
        }
    }
    (full, incremental, copy, prune)
}
