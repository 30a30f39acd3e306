//! What the reports say, as plain data the templates render.

use serde::Serialize;

/// One action of a run.
#[derive(Debug, Clone, Serialize)]
pub struct ActionLine {
    pub ok: bool,
    pub action: String,
    pub detail: String,
    pub seconds: String,
}

/// One VM's standing.
#[derive(Debug, Clone, Serialize)]
pub struct VmLine {
    pub vm: String,
    pub policy: String,
    pub ok: bool,
    /// `ok`, `BREACH`, or `UNKNOWN` when the VM's source could not be read.
    pub standing: String,
    pub violations: Vec<String>,
    pub copies: u32,
    pub media: u32,
    pub offsite: u32,
    pub immutable: u32,
    /// Copies whose data verification found damage.
    pub verify_errors: u32,
    /// Drills whose newest run failed its guest checks (fsck, boot,
    /// scripts): separate from the data.
    pub guest_check_failures: u32,
    pub newest_good: Option<String>,
    pub rpo: Option<String>,
    pub last_drill: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub run_id: String,
    pub subject: String,
    pub status: String,
    pub failed: bool,
    pub actions: Vec<ActionLine>,
    pub compliance: Vec<VmLine>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Required {
    pub copies: u32,
    pub media: u32,
    pub offsite: u32,
    pub immutable: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct TierLine {
    pub name: String,
    pub points: usize,
    /// Bytes the tier's objects take, from one listing ("?" when unknown).
    pub stored: String,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ComplianceReport {
    pub generated: String,
    pub total: usize,
    pub ok_count: usize,
    pub breach_count: usize,
    /// Widths of the status bar, in percent.
    pub ok_percent: u32,
    pub breach_percent: u32,
    pub required: Required,
    pub vms: Vec<VmLine>,
    pub alerts: Vec<String>,
    pub tiers: Vec<TierLine>,
    /// Commits to the policy directory since the last compliance report,
    /// when it is a git repository (`hash date author: subject`).
    pub policy_changes: Vec<String>,
}
