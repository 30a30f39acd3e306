//! Snapshot hygiene: snapshots older than the allowed age, and snapshots
//! coffer itself left behind (a run that was killed). Pure: a VM's snapshot
//! tree and the clock in, alerts out; the inventory prints them and the
//! planner turns them into alerts and removals.
//!
//! It reads VMs as the neutral model of `crate::inventory` and must never
//! remove a snapshot itself. It owns the names and descriptions coffer
//! gives its snapshots (the backup loop in `crate::run::vm_backup` uses
//! them); it takes only the form of an installation id from `crate::run`.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::inventory::{MoRef, SnapshotNode, VmRecord};

/// Every snapshot coffer takes is named `coffer-<run id>`.
pub const SNAPSHOT_PREFIX: &str = "coffer-";

/// The name of the snapshot a backup of run `run_id` takes.
pub fn snapshot_name(run_id: &str) -> String {
    format!("{SNAPSHOT_PREFIX}{run_id}")
}

/// Who took a coffer snapshot, as its description says:
/// `coffer backup, run <run id>, installation <installation id>`.
pub fn snapshot_description(run_id: &str, installation: &str) -> String {
    format!("coffer backup, run {run_id}, installation {installation}")
}

/// The (installation id, run id) a coffer snapshot's description names;
/// `None` for a description of another form (a coffer older than
/// installation ids, or a snapshot someone renamed).
pub fn snapshot_owner(description: &str) -> Option<(&str, &str)> {
    let rest = description.strip_prefix("coffer backup, run ")?;
    let (run, installation) = rest.split_once(", installation ")?;
    (!run.is_empty() && crate::run::installation::is_valid(installation))
        .then_some((installation, run))
}

/// What a backup does with a coffer snapshot it finds on its VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeftoverVerdict {
    /// Removed, and why.
    Remove(String),
    /// Left alone, and why: it may belong to a backup still reading it.
    Keep(String),
}

/// The verdict on snapshot `s` for the backup run `run_id` of
/// `installation`, which holds its state dir's runner lock (so no other
/// run of this installation is alive). A coffer snapshot is removed only
/// when it is older than `max_age` (`snapshot_max_age`) or when it was
/// taken by a dead run of this installation; the snapshots of other
/// installations (another state dir, another machine) may be being read
/// right now and are kept. `None`: not a coffer snapshot, or this run's.
pub fn leftover_verdict(
    s: &SnapshotNode,
    now: DateTime<Utc>,
    max_age: Duration,
    installation: &str,
    run_id: &str,
) -> Option<LeftoverVerdict> {
    if !s.name.starts_with(SNAPSHOT_PREFIX) || s.name == snapshot_name(run_id) {
        return None;
    }
    let age = now
        .signed_duration_since(s.create_time)
        .to_std()
        .unwrap_or_default();
    let fmt = crate::policy::units::format_duration;
    if age > max_age {
        return Some(LeftoverVerdict::Remove(format!(
            "{} old, older than snapshot_max_age ({})",
            fmt(age),
            fmt(max_age)
        )));
    }
    Some(match snapshot_owner(&s.description) {
        Some((owner, run)) if owner == installation => LeftoverVerdict::Remove(format!(
            "taken by run {run} of this installation, which is no longer running"
        )),
        Some((owner, run)) => LeftoverVerdict::Keep(format!(
            "taken by run {run} of another coffer installation ({owner}) {} ago, which may still \
             be reading it; removed once older than snapshot_max_age ({})",
            fmt(age),
            fmt(max_age)
        )),
        None => LeftoverVerdict::Keep(format!(
            "its description names no coffer installation; {} old, removed once older than \
             snapshot_max_age ({})",
            fmt(age),
            fmt(max_age)
        )),
    })
}

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
        self.describe_in(chrono_tz::UTC)
    }

    /// The alert's line, its time in the policy's time zone `zone`.
    pub fn describe_in(&self, zone: chrono_tz::Tz) -> String {
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
            crate::policy::units::format_time(zone, self.created),
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
/// younger than `in_progress_grace` or than `max_age` may belong to a backup
/// that is still reading it (of this coffer or of another) and is left
/// alone: only older ones are named as left behind (and removed).
///
/// `dead_installation` names the installation (this one) none of whose runs
/// is alive but the caller's own: its coffer snapshots are left behind at
/// any age (a killed `backup` or `apply` left them), and are removed by the
/// next run rather than after `snapshot_max_age`.
pub fn snapshot_alerts(
    vm: &VmRecord,
    now: DateTime<Utc>,
    max_age: Duration,
    in_progress_grace: Duration,
    dead_installation: Option<&str>,
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
        let owner_dead = dead_installation
            .is_some_and(|me| snapshot_owner(&s.description).is_some_and(|(owner, _)| owner == me));
        if let Some(run_id) = s.name.strip_prefix(SNAPSHOT_PREFIX)
            && (owner_dead || age > in_progress_grace.max(max_age))
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
            encryption_key: None,
            vmx_path: None,
            datacenter: None,
            host: None,
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
            None,
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

#[cfg(test)]
mod leftover_tests {
    use super::*;

    fn snap(name: &str, description: &str, created: &str) -> SnapshotNode {
        SnapshotNode {
            snapshot: MoRef::new("VirtualMachineSnapshot", name),
            name: name.into(),
            description: description.into(),
            create_time: created.parse().unwrap(),
            quiesced: false,
            children: vec![],
        }
    }

    const ME: &str = "00112233aabbccdd";
    const OTHER: &str = "ffeeddcc00112233";

    #[test]
    fn another_installations_young_snapshot_is_never_removed() {
        let now: DateTime<Utc> = "2026-11-25T12:00:00Z".parse().unwrap();
        let day = Duration::from_secs(24 * 3600);
        let verdict = |s: &SnapshotNode| leftover_verdict(s, now, day, ME, "r-now");
        let theirs = snap(
            "coffer-r1",
            &snapshot_description("r1", OTHER),
            "2026-11-25T11:59:00Z",
        );
        assert!(matches!(verdict(&theirs), Some(LeftoverVerdict::Keep(w)) if w.contains(OTHER)));
        let mine = snap(
            "coffer-r2",
            &snapshot_description("r2", ME),
            "2026-11-25T11:59:00Z",
        );
        assert!(matches!(verdict(&mine), Some(LeftoverVerdict::Remove(w)) if w.contains("r2")));
        let unowned = snap("coffer-r3", "coffer backup, run r3", "2026-11-25T11:00:00Z");
        assert!(matches!(verdict(&unowned), Some(LeftoverVerdict::Keep(_))));
        let old = snap(
            "coffer-r4",
            &snapshot_description("r4", OTHER),
            "2026-11-24T11:00:00Z",
        );
        assert!(
            matches!(verdict(&old), Some(LeftoverVerdict::Remove(w)) if w.contains("snapshot_max_age"))
        );
        let own_run = snap(
            "coffer-r-now",
            &snapshot_description("r-now", ME),
            "2026-11-20T11:00:00Z",
        );
        assert_eq!(verdict(&own_run), None);
        assert_eq!(
            verdict(&snap("before upgrade", "", "2026-11-01T00:00:00Z")),
            None
        );
    }

    #[test]
    fn a_description_names_its_owner_and_run() {
        let d = snapshot_description("20261125T010000Z-ab12", ME);
        assert_eq!(snapshot_owner(&d), Some((ME, "20261125T010000Z-ab12")));
        assert_eq!(snapshot_owner("coffer backup, run x"), None);
        assert_eq!(
            snapshot_owner("coffer backup, run x, installation ../x"),
            None
        );
    }
}
