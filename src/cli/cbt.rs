//! `coffer cbt reset VM`: reset a VM's Changed Block Tracking now (disable,
//! a snapshot create/remove to apply it, enable), as `apply` does by itself
//! before a full when a disk was resized or moved.

use anyhow::Result;

use super::{EXIT_OK, PolicyArgs, print};
use crate::engine::backup_now::reset_cbt_now;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Reset the VM's change tracking; its next backup is a full that reads
    /// its disks whole.
    Reset(ResetArgs),
}

#[derive(Debug, clap::Args)]
pub struct ResetArgs {
    /// The VM's name.
    pub vm: String,
    /// The source to find it on (default: every source, in order).
    #[arg(long)]
    pub source: Option<String>,
}

pub fn run(command: Command, p: &PolicyArgs) -> Result<u8> {
    let Command::Reset(args) = command;
    let done = reset_cbt_now(&p.load()?, &args.vm, args.source.as_deref())?;
    print(format_args!("{done}\n"))?;
    Ok(EXIT_OK)
}
