//! `coffer backup VM`: one backup of one VM now, by its policy (or the one
//! named), into the policy's backup tier: incremental from the newest point
//! of that VM on the tier when CBT can be trusted, else a full, with the
//! reason. Ctrl-C stops the read, removes the snapshot and records nothing.

use anyhow::Result;

use super::terminal::Terminal;
use super::{EXIT_OK, Output, PolicyArgs};
use crate::engine::backup_now::{BackupNow, backup_now};
use crate::engine::cancel;
use crate::run::vm_backup::VmBackupError;
use crate::text;

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
    #[command(flatten)]
    pub output: Output,
    #[command(flatten)]
    pub policies: PolicyArgs,
}

/// `verbose`: `-v` was given, the result shows details (change ids).
pub fn run(args: Args, verbose: bool) -> Result<u8> {
    cancel::install_signal_handler();
    let config = args.policies.load()?;
    let what = BackupNow {
        vm: args.vm.clone(),
        source: args.source.clone(),
        policy: args.policy.clone(),
        tier: args.tier.clone(),
        full: args.full,
    };
    let taken = match backup_now(&config, &what, &Terminal::human()) {
        Ok(t) => t,
        Err(e) => {
            if let Some(VmBackupError::Cancelled { vm }) = e.downcast_ref::<VmBackupError>() {
                eprint!("{}", text::backup_cancelled(vm));
                return Ok(EXIT_CANCELLED);
            }
            return Err(e);
        }
    };
    let t = &taken;
    let doc = || crate::json::Backup::new(&t.run_id, &t.vm, &t.tier, &t.outcome);
    let zone = config.settings.timezone;
    args.output
        .print(doc, || text::backup_taken(t, zone, verbose))?;
    Ok(EXIT_OK)
}
