//! `coffer inventory`: every VM of the policy's sources with what backup
//! cares about (identity, power, tools, CBT, disks, snapshots), the policy
//! that selects it, and snapshot hygiene warnings.

use std::io::Write;

use anyhow::Result;

use super::{EXIT_OK, PolicyArgs, load_or_report};
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
    let config = load_or_report(&args.policy).map_err(|_| crate::cli::InvalidPolicyDir)?;
    let rows = inventory(&config, args.source.as_deref())?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(
            out,
            "{}",
            crate::json::render(&crate::json::Inventory::new(&rows))
        )?;
    } else {
        write!(out, "{}", text::inventory(&rows))?;
    }
    // Hygiene findings are warnings here; `plan` turns them into actions.
    Ok(EXIT_OK)
}
