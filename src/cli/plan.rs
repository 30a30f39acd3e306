//! `coffer plan`: refresh the catalog from every tier (reporting drift),
//! read the live inventory, and print what `apply` would do and why, with
//! each VM's 3-2-1-1-0 and RPO standing.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use chrono::Utc;

use super::catalog::Location;
use super::terminal::Terminal;
use super::{EXIT_OK, load_or_report};
use crate::engine::report::{standing_word, vm_label};
use crate::engine::{Gathered, Workspace};
use crate::plan::planner::{self, Plan};

/// `--detailed-exitcode`: actions are pending.
pub const EXIT_CHANGES: u8 = 2;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub location: Location,
    /// Print the plan as JSON (versioned).
    #[arg(long)]
    pub json: bool,
    /// Plan as of this instant (RFC 3339) instead of now.
    #[arg(long)]
    pub at: Option<String>,
    /// Let retention prune more than half of a tier's points in one run
    /// (without it, one run prunes the oldest half and the rest waits).
    #[arg(long)]
    pub allow_mass_prune: bool,
    /// Exit 2 when actions are pending (`coffer compliance` exits 3 on a breach).
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// Also write the plan (JSON) to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Prints a plan for people: notes, one line per action, compliance, a summary.
pub fn print_plan(out: &mut dyn Write, plan: &Plan, g: &Gathered) -> Result<()> {
    let notes = &g.notes;
    for n in notes {
        writeln!(out, "note: {n}")?;
    }
    for a in &plan.actions {
        writeln!(out, "{}", a.line())?;
    }
    for c in &plan.compliance {
        let vm = vm_label(c, &plan.compliance);
        if c.violations.is_empty() {
            writeln!(out, "compliance {vm} ({}): ok", c.policy)?;
        } else {
            writeln!(
                out,
                "compliance {vm} ({}): {}: {}",
                c.policy,
                standing_word(c),
                c.violations.join("; ")
            )?;
        }
    }
    let count = |p: fn(&planner::Action) -> bool| plan.actions.iter().filter(|a| p(a)).count();
    writeln!(
        out,
        "plan: {} backups, {} copies, {} prunes, {} drills, {} snapshot removals, {} kept by a safety floor, {} alerts",
        count(|a| matches!(a, planner::Action::Backup { .. })),
        count(|a| matches!(a, planner::Action::Copy { .. })),
        count(|a| matches!(a, planner::Action::Prune { .. })),
        count(|a| matches!(a, planner::Action::Drill { .. })),
        count(|a| matches!(a, planner::Action::RemoveSnapshot { .. })),
        count(|a| matches!(a, planner::Action::KeepBlocked { .. })),
        count(|a| matches!(a, planner::Action::Alert { .. })),
    )?;
    let (full, incremental, copy, prune) = volumes(plan, g);
    if full + copy + prune > 0 || incremental > 0 {
        let size = crate::policy::units::format_size;
        writeln!(
            out,
            "volume: full backups read at most {} (allocated areas only){}; copies cover {} of disks (only chunks the target lacks are sent); prunes release points of {} of disks (gc frees what no other point shares)",
            size(full),
            if incremental > 0 {
                format!(", {incremental} incremental backups read only what CBT reports changed")
            } else {
                String::new()
            },
            size(copy),
            size(prune)
        )?;
    }
    Ok(())
}

/// What a plan moves, in bytes of disk: full backups (their disks'
/// capacity, an upper bound), the number of incrementals, copies and
/// prunes (the points' disk sizes).
fn volumes(plan: &Plan, g: &Gathered) -> (u64, usize, u64, u64) {
    let point_bytes = |id: &str| -> u64 {
        g.points
            .iter()
            .find(|p| p.point_id == id)
            .map_or(0, |p| p.disks.iter().map(|d| d.size_bytes).sum())
    };
    let (mut full, mut incremental, mut copy, mut prune) = (0, 0, 0, 0);
    for a in &plan.actions {
        match a {
            planner::Action::Backup {
                source,
                vm,
                full: true,
                ..
            } => {
                full += g
                    .inventory
                    .iter()
                    .find(|(s, v)| s == source && &v.name == vm)
                    .map_or(0, |(_, v)| v.disks.iter().map(|d| d.capacity_bytes).sum());
            }
            planner::Action::Backup { .. } => incremental += 1,
            planner::Action::Copy { point, .. } => copy += point_bytes(point),
            planner::Action::Prune { point, .. } => prune += point_bytes(point),
            _ => {}
        }
    }
    (full, incremental, copy, prune)
}

pub fn run(args: Args) -> Result<u8> {
    let config = load_or_report(&args.location.policy).map_err(|_| crate::cli::InvalidPolicyDir)?;
    let now = super::restore::parse_at(args.at.as_deref())?.unwrap_or_else(Utc::now);
    crate::engine::tiers::check_secrets(&config)?;
    let terminal = Terminal::human();
    let mut ws = Workspace::open(config, args.location.state.as_deref(), &terminal)?;
    let gathered = ws.refresh()?;
    let plan = ws.plan(&gathered, now, args.allow_mass_prune);
    let json = serde_json::to_string_pretty(&serde_json::json!({
        "format": plan.format,
        "now": plan.now,
        "notes": gathered.notes,
        "actions": plan.actions,
        "compliance": plan.compliance,
    }))?;
    if let Some(out) = &args.out {
        ws.save_plan(out, &gathered, &plan)?;
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{json}")?;
    } else {
        print_plan(&mut out, &plan, &gathered)?;
    }
    if !args.detailed_exitcode {
        return Ok(EXIT_OK);
    }
    let pending = plan.actions.iter().any(|a| {
        !matches!(
            a,
            planner::Action::Alert { .. }
                | planner::Action::KeepBlocked { .. }
                | planner::Action::Wait { .. }
        )
    });
    Ok(if pending { EXIT_CHANGES } else { EXIT_OK })
}
