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
    /// The newest restore or instant recovery an administrator ran, with
    /// its measured times.
    pub last_recovery: Option<String>,
    /// Which counts fall short of what is required (cells to highlight).
    pub short: Shortfalls,
}

/// The counts of a VM that fall short of the requirement.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Shortfalls {
    pub copies: bool,
    pub media: bool,
    pub offsite: bool,
    pub immutable: bool,
    pub verify_errors: bool,
    pub guest_check_failures: bool,
    pub rpo: bool,
}

/// The first lines of a run report: what a manager reads.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    /// The installation (`settings.name`).
    pub site: String,
    pub vms_ok: usize,
    pub vms_total: usize,
    pub actions: usize,
    pub failed: usize,
    /// Bytes backups read from the hosts and stored as new chunks.
    pub read: String,
    pub stored: String,
    pub duration: String,
    /// When the next run starts (in the policies' time zone).
    pub next_run: Option<String>,
}

/// An action that failed: why, and what coffer does about it.
#[derive(Debug, Clone, Serialize)]
pub struct FailureLine {
    pub action: String,
    pub reason: String,
    pub next: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub run_id: String,
    pub subject: String,
    pub status: String,
    pub failed: bool,
    pub summary: RunSummary,
    pub failures: Vec<FailureLine>,
    pub actions: Vec<ActionLine>,
    pub compliance: Vec<VmLine>,
    /// Backup duration and bytes read per VM (inline SVG; empty when the
    /// run took no backup).
    pub chart: String,
    /// The same figures as lines, for the text part.
    pub chart_lines: Vec<String>,
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
    #[serde(skip)]
    pub stored_bytes: Option<u64>,
    pub error: Option<String>,
}

/// A chart of the compliance report: inline SVG, and its figures as lines
/// for the text part.
#[derive(Debug, Clone, Serialize)]
pub struct Chart {
    pub svg: String,
    pub title: String,
    pub lines: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ComplianceReport {
    /// The installation (`settings.name`).
    pub site: String,
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
    /// Compliance over the last reports, stored bytes per tier over time,
    /// RPO margin per VM.
    pub charts: Vec<Chart>,
}
