//! Tables for people: the inventory of the hosts, every VM's compliance
//! standing, and what a retention keeps.

use std::fmt::Write as _;

use crate::engine::Gathered;
use crate::engine::inventory::InventoryRow;
use crate::engine::report::{local_time, standing_word, vm_label};
use crate::plan::planner::Plan;
use crate::plan::retention::Verdict;
use crate::policy::Config;
use crate::policy::units::format_size;

/// `coffer inventory`: one row per VM with what backup cares about and
/// the policies that take it, then the snapshot hygiene warnings.
pub fn inventory(rows: &[InventoryRow]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<12} {:<24} {:<11} {:<10} {:<4} {:>5} {:>12} {:>5}  POLICY",
        "SOURCE", "VM", "POWER", "TOOLS", "CBT", "DISKS", "SIZE", "SNAPS"
    );
    for InventoryRow {
        source,
        vm,
        policies,
        ..
    } in rows
    {
        let _ = writeln!(
            out,
            "{:<12} {:<24} {:<11} {:<10} {:<4} {:>5} {:>12} {:>5}  {}",
            source,
            vm.name,
            vm.power_state.map_or("?".into(), |p| format!("{p:?}")),
            match vm.tools_running_status.as_deref() {
                Some("guestToolsRunning") => "running",
                Some(_) => "not running",
                None => "?",
            },
            if vm.change_tracking_enabled {
                "on"
            } else {
                "off"
            },
            vm.disks.len(),
            format_size(vm.disks.iter().map(|d| d.capacity_bytes).sum()),
            vm.all_snapshots().len(),
            if policies.is_empty() {
                "(none: not backed up)".to_string()
            } else {
                policies.join(", ")
            }
        );
    }
    for a in rows.iter().flat_map(|r| &r.alerts) {
        let _ = writeln!(out, "warning: {}", a.describe());
    }
    out
}

/// `coffer compliance`: the notes of gathering, the requirements, then
/// each VM's counts, newest good point, standing and last drill.
pub fn compliance(config: &Config, gathered: &Gathered, plan: &Plan) -> String {
    let mut out = String::new();
    for n in &gathered.notes {
        let _ = writeln!(out, "note: {n}");
    }
    let c = &config.compliance;
    let _ = writeln!(
        out,
        "{:<24} {:<14} {:>6} {:>6} {:>7} {:>9} {:>8} {:>6}  {:<23} STANDING",
        "VM",
        "POLICY",
        "COPIES",
        "MEDIA",
        "OFFSITE",
        "IMMUTABLE",
        "DATA ERR",
        "GUEST",
        "NEWEST GOOD"
    );
    let _ = writeln!(
        out,
        "{:<24} {:<14} {:>6} {:>6} {:>7} {:>9} {:>8} {:>6}",
        "(required)", "", c.copies, c.media, c.offsite, c.immutable, c.verify_errors, 0
    );
    for v in &plan.compliance {
        let _ = writeln!(
            out,
            "{:<24} {:<14} {:>6} {:>6} {:>7} {:>9} {:>8} {:>6}  {:<23} {}",
            vm_label(v, &plan.compliance),
            v.policy,
            v.copies,
            v.media,
            v.offsite,
            v.immutable,
            v.verify_errors,
            v.guest_check_failures,
            v.newest_good
                .map_or("none".to_string(), |t| local_time(config, t)),
            if v.violations.is_empty() {
                "ok".to_string()
            } else {
                format!("{}: {}", standing_word(v), v.violations.join("; "))
            }
        );
        if let Some(d) = gathered.last_drill(&v.vm_uuid, config.settings.timezone) {
            let _ = writeln!(out, "{:<24} {d}", "");
        }
        if let Some(r) = gathered.last_recovery(&v.vm_uuid, config.settings.timezone) {
            let _ = writeln!(out, "{:<24} {r}", "");
        }
    }
    out
}

/// `retention simulate`: each time kept (and by which rule) or removed,
/// in `zone`, and the count.
pub fn retention(verdicts: &[Verdict], zone: chrono_tz::Tz) -> String {
    let mut out = String::new();
    let kept = verdicts.iter().filter(|v| v.keep).count();
    for v in verdicts {
        let local = v
            .created
            .with_timezone(&zone)
            .format("%Y-%m-%d %H:%M:%S %Z");
        if v.keep {
            let _ = writeln!(out, "keep    {local}  {}", v.reasons_text());
        } else {
            let _ = writeln!(out, "remove  {local}");
        }
    }
    let _ = writeln!(
        out,
        "{kept} kept, {} removed of {}",
        verdicts.len() - kept,
        verdicts.len()
    );
    out
}
