//! `coffer inventory`: every VM of the policy's sources with what backup
//! cares about (identity, power, tools, CBT, disks, snapshots), the policy
//! that selects it, and snapshot hygiene warnings.

use std::io::Write;

use anyhow::Result;

use super::{EXIT_OK, PolicyArgs, load_or_report};
use crate::engine::inventory::{InventoryRow, inventory};
use crate::plan::hygiene::SnapshotAlert;

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
    let alerts: Vec<&SnapshotAlert> = rows.iter().flat_map(|r| &r.alerts).collect();
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(
            out,
            "{}",
            crate::json::render(&crate::json::Inventory::new(&rows))
        )?;
    } else {
        writeln!(
            out,
            "{:<12} {:<24} {:<11} {:<10} {:<4} {:>5} {:>12} {:>5}  POLICY",
            "SOURCE", "VM", "POWER", "TOOLS", "CBT", "DISKS", "SIZE", "SNAPS"
        )?;
        for InventoryRow {
            source,
            vm,
            policies,
            ..
        } in &rows
        {
            writeln!(
                out,
                "{:<12} {:<24} {:<11} {:<10} {:<4} {:>5} {:>12} {:>5}  {}",
                source,
                vm.name,
                vm.power_state.map_or("?".into(), |p| format!("{p:?}")),
                match vm.tools_running_status.as_deref() {
                    Some("guestToolsRunning") => "running",
                    Some(_) => "not running",
                    None => "?",
                },
                if vm.change_tracking_enabled {
                    "on"
                } else {
                    "off"
                },
                vm.disks.len(),
                crate::policy::units::format_size(vm.disks.iter().map(|d| d.capacity_bytes).sum()),
                vm.all_snapshots().len(),
                if policies.is_empty() {
                    "(none: not backed up)".to_string()
                } else {
                    policies.join(", ")
                }
            )?;
        }
        for a in &alerts {
            writeln!(out, "warning: {}", a.describe())?;
        }
    }
    // Hygiene findings are warnings here; `plan` turns them into actions.
    Ok(EXIT_OK)
}
