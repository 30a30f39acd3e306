//! `coffer inventory`: every VM of the policy's sources with what backup
//! cares about (identity, power, tools, CBT, disks, snapshots), the policy
//! that selects it, and snapshot hygiene warnings.

use anyhow::Result;

use super::{EXIT_OK, Output, PolicyArgs};
use crate::engine::inventory::inventory;
use crate::text;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only this source.
    #[arg(long)]
    pub source: Option<String>,
    #[command(flatten)]
    pub output: Output,
}

pub fn run(args: Args, p: &PolicyArgs) -> Result<u8> {
    let rows = inventory(&p.load()?, args.source.as_deref())?;
    let doc = || crate::json::Inventory::new(&rows);
    args.output.print(doc, || text::inventory(&rows))?;
    // Hygiene findings are warnings here; `plan` turns them into actions.
    Ok(EXIT_OK)
}
