//! `coffer backup VM`: one backup of one VM now, by its policy (or the one
//! named), into the policy's backup tier: incremental from the newest point
//! of that VM on the tier when CBT can be trusted, else a full, with the
//! reason. Ctrl-C stops the read, removes the snapshot and records nothing.

use std::io::Write;

use anyhow::Result;

use super::terminal::Terminal;
use super::{EXIT_OK, PolicyArgs, load_or_report};
use crate::engine::backup_now::{BackupNow, BackupTaken, backup_now};
use crate::engine::cancel;
use crate::plan::cbt::CbtVerdict;
use crate::run::vm_backup::VmBackupError;

/// Exit code of a backup stopped by Ctrl-C (128 + SIGINT).
pub const EXIT_CANCELLED: u8 = 130;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The VM's name.
    pub vm: String,
    /// The source to find it on (default: every ESXi and vCenter source).
    #[arg(long)]
    pub source: Option<String>,
    /// The policy to follow (default: the one whose selector takes the VM).
    #[arg(long)]
    pub policy: Option<String>,
    /// Write to this tier instead of the policy's `backup_to`.
    #[arg(long)]
    pub tier: Option<String>,
    /// Take a full backup even when an incremental is possible.
    #[arg(long)]
    pub full: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub policies: PolicyArgs,
}

pub fn run(args: Args) -> Result<u8> {
    cancel::install_signal_handler();
    let config = load_or_report(&args.policies).map_err(|_| crate::cli::InvalidPolicyDir)?;
    let what = BackupNow {
        vm: args.vm.clone(),
        source: args.source.clone(),
        policy: args.policy.clone(),
        tier: args.tier.clone(),
        full: args.full,
    };
    let BackupTaken {
        run_id,
        vm,
        tier,
        outcome,
    } = match backup_now(&config, &what, &Terminal::human()) {
        Ok(t) => t,
        Err(e) => {
            if let Some(VmBackupError::Cancelled { vm }) = e.downcast_ref::<VmBackupError>() {
                eprintln!(
                    "coffer: backup of {vm} cancelled; its snapshot was removed and no point was recorded"
                );
                return Ok(EXIT_CANCELLED);
            }
            return Err(e);
        }
    };
    let m = &outcome.manifest;
    let mut out = std::io::stdout().lock();
    if args.json {
        let doc = crate::json::Backup::new(&run_id, &vm, &tier, &outcome);
        writeln!(out, "{}", crate::json::render(&doc))?;
        return Ok(EXIT_OK);
    }
    for d in outcome
        .disks
        .iter()
        .filter(|d| d.read_from.starts_with("vCenter"))
    {
        writeln!(
            out,
            "warning: disk {} read through {}",
            d.device_key, d.read_from
        )?;
    }
    for l in &outcome.leftovers_removed {
        writeln!(out, "removed snapshot {}: {}", l.name, l.why)?;
    }
    for l in &outcome.leftovers_kept {
        writeln!(out, "left snapshot {} alone: {}", l.name, l.why)?;
    }
    writeln!(
        out,
        "VM {}: {} point {} on tier `{tier}` ({}-consistent{}) in {:.1}s, {}",
        vm,
        format!("{:?}", m.kind).to_lowercase(),
        m.point_id,
        outcome.consistency,
        outcome
            .quiesce_fallback
            .as_ref()
            .map(|w| format!("; quiescing failed: {w}"))
            .or_else(|| outcome
                .consistency_alert
                .as_ref()
                .map(|a| format!("; alert: {a}")))
            .unwrap_or_default(),
        m.duration_ms as f64 / 1000.0,
        outcome
            .snapshot_lifetime
            .describe_in(config.settings.timezone)
    )?;
    for (d, e) in outcome.disks.iter().zip(&m.disks) {
        let how = match &d.verdict {
            // Change ids are for whoever debugs change tracking (`-v`).
            CbtVerdict::Incremental { since } if super::verbose() => {
                format!("incremental, changed since change id {since}")
            }
            CbtVerdict::Incremental { .. } => {
                "incremental, what changed since the last point".to_string()
            }
            CbtVerdict::Full { reason } => format!("full ({reason})"),
        };
        let changed = d
            .bytes_changed
            .filter(|c| *c > 0)
            .map(|c| {
                format!(
                    ", {:.2}× the changed bytes",
                    d.bytes_fetched as f64 / c as f64
                )
            })
            .unwrap_or_default();
        let busy = match d.busy_answers {
            0 => String::new(),
            n => format!("; the host was busy (503) {n} times and coffer slowed down"),
        };
        writeln!(
            out,
            "  {} ({}): {how}; read {} in {} requests{changed}{busy}",
            d.label,
            crate::policy::units::format_size(e.size_bytes),
            crate::policy::units::format_size(d.bytes_fetched),
            d.requests
        )?;
    }
    for d in &m.skipped_disks {
        writeln!(out, "  skipped: {}", d.reason)?;
    }
    for n in &outcome.notes {
        writeln!(out, "  note: {n}")?;
    }
    writeln!(out, "snapshot {} removed", outcome.snapshot)?;
    Ok(EXIT_OK)
}
