//! What the planner produces: the actions of a plan, each with its reason,
//! and the plan itself (its actions and every VM's compliance standing), in
//! the JSON form a saved plan keeps. An action's identity is what a saved
//! plan is matched against when it is carried out.
//!
//! It owns these types, their one-line text and their identity. It must
//! never decide which actions a plan holds (that is `planner`) nor carry
//! any out (that is the runner).

use chrono::{DateTime, Utc};

use super::compliance::VmCompliance;

#[derive(
    Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
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
    /// The VM's disks are consolidated (`ConsolidateVMDisks_Task`): a
    /// snapshot removal left delta files the host did not merge.
    Consolidate {
        source: String,
        vm: String,
        reason: String,
    },
    /// Change tracking of the VM is reset (disabled, applied by a snapshot
    /// create/remove, enabled) before the full backup that follows it.
    ResetCbt {
        source: String,
        vm: String,
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
            Action::ResetCbt { source, vm, .. } => Some(vec!["reset-cbt", source, vm]),
            Action::Consolidate { source, vm, .. } => Some(vec!["consolidate", source, vm]),
            Action::Wait { .. } | Action::KeepBlocked { .. } | Action::Alert { .. } => None,
        }
    }

    /// The action's kind as its JSON form names it (`backup`, `copy`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            Action::Backup { .. } => "backup",
            Action::Wait { .. } => "wait",
            Action::Copy { .. } => "copy",
            Action::Prune { .. } => "prune",
            Action::KeepBlocked { .. } => "keep-blocked",
            Action::Gc { .. } => "gc",
            Action::Drill { .. } => "drill",
            Action::RemoveSnapshot { .. } => "remove-snapshot",
            Action::Consolidate { .. } => "consolidate",
            Action::ResetCbt { .. } => "reset-cbt",
            Action::Alert { .. } => "alert",
        }
    }

    /// The VM the action is about, if one.
    pub fn vm(&self) -> Option<&str> {
        match self {
            Action::Backup { vm, .. }
            | Action::Wait { vm, .. }
            | Action::Copy { vm, .. }
            | Action::Prune { vm, .. }
            | Action::KeepBlocked { vm, .. }
            | Action::Drill { vm, .. }
            | Action::RemoveSnapshot { vm, .. }
            | Action::Consolidate { vm, .. }
            | Action::ResetCbt { vm, .. } => Some(vm),
            Action::Alert { vm, .. } => vm.as_deref(),
            Action::Gc { .. } => None,
        }
    }

    /// Why the action is in the plan (an alert's message).
    pub fn reason(&self) -> &str {
        match self {
            Action::Backup { reason, .. }
            | Action::Wait { reason, .. }
            | Action::Copy { reason, .. }
            | Action::Prune { reason, .. }
            | Action::KeepBlocked { reason, .. }
            | Action::Gc { reason, .. }
            | Action::Drill { reason, .. }
            | Action::RemoveSnapshot { reason, .. }
            | Action::Consolidate { reason, .. }
            | Action::ResetCbt { reason, .. } => reason,
            Action::Alert { message, .. } => message,
        }
    }

    /// The policy the action follows, if one.
    pub fn policy(&self) -> Option<&str> {
        match self {
            Action::Backup { policy, .. }
            | Action::Wait { policy, .. }
            | Action::Drill { policy, .. } => Some(policy),
            _ => None,
        }
    }

    /// The line without its reason: what the action does, for a result
    /// line that follows the plan's own line.
    pub fn short_line(&self) -> String {
        let line = self.line();
        match line.strip_suffix(self.reason()) {
            Some(head) => head.trim_end().trim_end_matches(':').to_string(),
            None => line,
        }
    }

    /// One line for people: symbol, target, reason (times in UTC).
    pub fn line(&self) -> String {
        self.line_in(chrono_tz::UTC)
    }

    /// [`Action::line`] with its times in the policy's time zone `zone`.
    pub fn line_in(&self, zone: chrono_tz::Tz) -> String {
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
                crate::policy::units::format_time(zone, *until)
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
            Action::ResetCbt { vm, reason, .. } => format!("~ reset-cbt {vm}: {reason}"),
            Action::Consolidate { vm, reason, .. } => format!("~ consolidate {vm}: {reason}"),
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

impl Plan {
    /// Whether `apply` has something to do: any action but alerts, kept
    /// points it may not prune, and waits.
    pub fn has_pending_actions(&self) -> bool {
        self.actions.iter().any(|a| {
            !matches!(
                a,
                Action::Alert { .. } | Action::KeepBlocked { .. } | Action::Wait { .. }
            )
        })
    }

    /// Whether any VM is out of compliance.
    pub fn breached(&self) -> bool {
        self.compliance.iter().any(|v| !v.violations.is_empty())
    }
}

/// Version of the JSON form of a plan.
pub const PLAN_FORMAT: u32 = 1;

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(actions: Vec<Action>) -> Plan {
        Plan {
            format: PLAN_FORMAT,
            now: DateTime::UNIX_EPOCH,
            actions,
            compliance: Vec::new(),
        }
    }

    #[test]
    fn alerts_waits_and_blocked_prunes_are_not_pending_work() {
        let idle = vec![
            Action::Alert {
                vm: None,
                message: "m".into(),
            },
            Action::Wait {
                policy: "p".into(),
                vm: "vm".into(),
                until: DateTime::UNIX_EPOCH,
                reason: "r".into(),
            },
            Action::KeepBlocked {
                vm: "vm".into(),
                point: "pt".into(),
                tier: "t".into(),
                reason: "r".into(),
            },
        ];
        assert!(!plan(idle.clone()).has_pending_actions());
        let mut busy = idle;
        busy.push(Action::Prune {
            vm: "vm".into(),
            point: "pt".into(),
            tier: "t".into(),
            reason: "r".into(),
        });
        assert!(plan(busy).has_pending_actions());
        assert!(!plan(Vec::new()).breached());
    }
}
