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
    #[command(flatten)]
    pub what: BackupNow,
    #[command(flatten)]
    pub output: Output,
}

/// `verbose`: `-v` was given, the result shows details (change ids).
pub fn run(args: Args, p: &PolicyArgs, verbose: bool) -> Result<u8> {
    cancel::install_signal_handler();
    let config = p.load()?;
    let t = match backup_now(&config, &args.what, &Terminal::human()) {
        Ok(t) => t,
        Err(e) => {
            if let Some(VmBackupError::Cancelled { vm }) = e.downcast_ref::<VmBackupError>() {
                eprint!("{}", text::backup_cancelled(vm));
                return Ok(EXIT_CANCELLED);
            }
            return Err(e);
        }
    };
    let doc = || crate::json::Backup::new(&t.run_id, &t.vm, &t.tier, &t.outcome);
    let zone = config.settings.timezone;
    args.output
        .print(doc, || text::backup_taken(&t, zone, verbose))?;
    Ok(EXIT_OK)
}
