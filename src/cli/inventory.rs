//! `coffer inventory`: every VM of the policy's sources with what backup
//! cares about (identity, power, tools, CBT, disks, snapshots), the policy
//! that selects it, and snapshot hygiene warnings.

use anyhow::Result;

use super::{EXIT_OK, PolicyArgs, print_result};
use crate::engine::inventory::inventory;
use crate::text;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only this source.
    #[arg(long)]
    pub source: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub policy: PolicyArgs,
}

pub fn run(args: Args) -> Result<u8> {
    let rows = inventory(&args.policy.load()?, args.source.as_deref())?;
    let doc = || crate::json::Inventory::new(&rows);
    print_result(args.json, doc, || text::inventory(&rows))?;
    // Hygiene findings are warnings here; `plan` turns them into actions.
    Ok(EXIT_OK)
}
