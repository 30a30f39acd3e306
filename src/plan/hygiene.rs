//! Snapshot hygiene: snapshots older than the allowed age, and snapshots
//! coffer itself left behind (a run that was killed). Pure: a VM's snapshot
//! tree and the clock in, alerts out; the inventory prints them and the
//! planner turns them into alerts and removals.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::run::vm_backup::SNAPSHOT_PREFIX;
use crate::vsphere::types::{MoRef, VmRecord};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotIssue {
    /// Older than `snapshot_max_age`: it grows on the datastore.
    TooOld,
    /// Named `coffer-<run id>`: a backup that never removed it.
    LeftByCoffer { run_id: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotAlert {
    pub vm: String,
    pub snapshot: MoRef,
    pub name: String,
    pub created: DateTime<Utc>,
    pub age: Duration,
    pub issues: Vec<SnapshotIssue>,
}

impl SnapshotAlert {
    pub fn describe(&self) -> String {
        let age = crate::policy::units::format_duration(self.age);
        let mut parts = Vec::new();
        for i in &self.issues {
            parts.push(match i {
                SnapshotIssue::TooOld => format!("{age} old"),
                SnapshotIssue::LeftByCoffer { run_id } => {
                    format!("left behind by coffer run {run_id}")
                }
            });
        }
        format!(
            "VM {}: snapshot \"{}\" ({}): {}",
            self.vm,
            self.name,
            self.created.format("%Y-%m-%d %H:%M UTC"),
            parts.join(", ")
        )
    }

    pub fn left_by_coffer(&self) -> bool {
        self.issues
            .iter()
            .any(|i| matches!(i, SnapshotIssue::LeftByCoffer { .. }))
    }
}

/// The snapshots of `vm` that need attention at `now`. A coffer snapshot
/// younger than `in_progress_grace` belongs to a backup that may still be
/// running and is left alone.
pub fn snapshot_alerts(
    vm: &VmRecord,
    now: DateTime<Utc>,
    max_age: Duration,
    in_progress_grace: Duration,
) -> Vec<SnapshotAlert> {
    let mut out = Vec::new();
    for s in vm.all_snapshots() {
        let age = now
            .signed_duration_since(s.create_time)
            .to_std()
            .unwrap_or_default();
        let mut issues = Vec::new();
        if age > max_age {
            issues.push(SnapshotIssue::TooOld);
        }
        if let Some(run_id) = s.name.strip_prefix(SNAPSHOT_PREFIX)
            && age > in_progress_grace
        {
            issues.push(SnapshotIssue::LeftByCoffer {
                run_id: run_id.to_string(),
            });
        }
        if !issues.is_empty() {
            out.push(SnapshotAlert {
                vm: vm.name.clone(),
                snapshot: s.snapshot.clone(),
                name: s.name.clone(),
                created: s.create_time,
                age,
                issues,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vsphere::types::SnapshotNode;

    fn node(name: &str, created: &str, children: Vec<SnapshotNode>) -> SnapshotNode {
        SnapshotNode {
            snapshot: MoRef::new("VirtualMachineSnapshot", name),
            name: name.into(),
            description: String::new(),
            create_time: created.parse().unwrap(),
            quiesced: false,
            children,
        }
    }

    #[test]
    fn old_and_left_behind_snapshots_are_named_and_young_ones_are_not() {
        let vm = VmRecord {
            moref: MoRef::new("VirtualMachine", "vm-1"),
            name: "db01".into(),
            instance_uuid: None,
            power_state: None,
            tools_running_status: None,
            ip_address: None,
            change_tracking_enabled: true,
            consolidation_needed: false,
            vmx_path: None,
            disks: vec![],
            snapshots: vec![node(
                "before upgrade",
                "2026-11-01T10:00:00Z",
                vec![
                    node(
                        "coffer-20261124T010000Z-ab12",
                        "2026-11-24T01:00:00Z",
                        vec![],
                    ),
                    node(
                        "coffer-20261125T115900Z-cd34",
                        "2026-11-25T11:59:00Z",
                        vec![],
                    ),
                ],
            )],
        };
        let now: DateTime<Utc> = "2026-11-25T12:00:00Z".parse().unwrap();
        let alerts = snapshot_alerts(
            &vm,
            now,
            Duration::from_secs(24 * 3600),
            Duration::from_secs(3600),
        );
        let names: Vec<_> = alerts.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["before upgrade", "coffer-20261124T010000Z-ab12"]);
        assert_eq!(alerts[0].issues, vec![SnapshotIssue::TooOld]);
        assert_eq!(
            alerts[1].issues,
            vec![
                SnapshotIssue::TooOld,
                SnapshotIssue::LeftByCoffer {
                    run_id: "20261124T010000Z-ab12".into()
                }
            ]
        );
        assert!(alerts[1].describe().contains("left behind by coffer run"));
    }
}
