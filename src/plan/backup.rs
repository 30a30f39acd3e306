//! Whether a VM's backup is due at `now` (no point yet, the schedule fired
//! since the newest good point, the RPO is breached), whether it waits for
//! the backup window, and whether it is full or incremental (the newest
//! point failed verification, `full_every`, the CBT rules of `cbt` against
//! the base point).
//!
//! It owns only that decision for one VM and policy, as a `Backup` or
//! `Wait` action. It must never perform I/O, read the clock or look at
//! other VMs' points.

use chrono::{DateTime, Timelike, Utc};

use super::action::Action;
use super::cbt::{self, CbtVerdict, LiveDisk};
use super::input::{PointConsistency, PointDisk, PointInfo};
use crate::inventory::VmRecord;
use crate::policy::model::{Consistency, Policy};
use crate::repo::manifest::PointKind;

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

pub(super) fn plan_backup(
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
                    crate::policy::units::format_time(policy.timezone(), p.created)
                ))
            } else {
                fire.filter(|f| *f > p.created).map(|f| {
                    format!(
                        "scheduled at {}",
                        crate::policy::units::format_time(policy.timezone(), f)
                    )
                })
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
    // A disk resized or moved since the base keeps a tracking file that
    // cannot be trusted any more: reset it before the full rebuilds the
    // baseline (the full then reads the whole disk).
    if let Some(reason) = on_tier.first().and_then(|base| cbt_reset_reason(vm, base)) {
        actions.push(Action::ResetCbt {
            source: source.to_string(),
            vm: vm.name.clone(),
            reason: format!("{reason}; its change tracking cannot be trusted"),
        });
    }
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

/// Why the VM's change tracking must be reset before its next backup
/// (see `cbt::reset_reason`): the first disk that was resized or moved
/// since `base`.
fn cbt_reset_reason(vm: &VmRecord, base: &PointInfo) -> Option<String> {
    vm.disks.iter().find_map(|disk| {
        let (live, base_disk) = live_and_base(disk, base);
        cbt::reset_reason(base_disk.as_ref(), &live)
    })
}

/// A disk of the VM as the CBT rules see it, and the same disk (by device
/// key) in the base point.
fn live_and_base<'d>(
    disk: &'d crate::inventory::VmDisk,
    base: &PointInfo,
) -> (LiveDisk<'d>, Option<crate::repo::manifest::DiskEntry>) {
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
    (live, base_disk)
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
        let (live, base_disk) = live_and_base(disk, base);
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

/// An alert when the newest good point of a VM whose policy asks for (or
/// prefers) application consistency is weaker: file-system-consistent (the
/// guest was quiesced without VSS writers: not Windows, or no
/// `disk.EnableUUID`) or crash-consistent (quiescing failed). Said in every
/// plan until a point is application-consistent again.
pub(super) fn consistency_alert(
    policy: &Policy,
    vm: &VmRecord,
    points: &[&PointInfo],
) -> Option<Action> {
    let wants = match policy.consistency {
        Consistency::Application => "asks for",
        Consistency::ApplicationPreferred => "prefers",
        Consistency::Filesystem | Consistency::Crash => return None,
    };
    let newest = points.iter().find(|p| p.good())?;
    let weaker = matches!(
        newest.consistency,
        PointConsistency::Filesystem | PointConsistency::Crash
    );
    weaker.then(|| Action::Alert {
        vm: Some(vm.name.clone()),
        message: format!(
            "its newest point {} is {}-consistent, and policy `{}` {wants} application \
             consistency (a quiesced snapshot is application-consistent only when the guest's \
             VSS writers take part: Windows, with disk.EnableUUID = TRUE)",
            newest.point_id,
            newest.consistency.as_str(),
            policy.name
        ),
    })
}
