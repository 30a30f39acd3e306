//! `coffer plan`: refresh the catalog from every tier (reporting drift),
//! read the live inventory, and print what `apply` would do and why, with
//! each VM's 3-2-1-1-0 and RPO standing.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use chrono::Utc;

use super::Location;
use super::terminal::{Terminal, colour_on_stdout};
use super::{EXIT_OK, load_or_report};
use crate::engine::Workspace;
use crate::plan::planner;
use crate::text;

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

pub fn run(args: Args) -> Result<u8> {
    let config = load_or_report(&args.location.policy).map_err(|_| crate::cli::InvalidPolicyDir)?;
    let now = super::restore::parse_at(args.at.as_deref())?.unwrap_or_else(Utc::now);
    crate::engine::tiers::check_secrets(&config)?;
    let zone = config.settings.timezone;
    let terminal = Terminal::human().in_zone(zone);
    let mut ws = Workspace::open(config, args.location.state.as_deref(), &terminal)?;
    let gathered = ws.refresh()?;
    let plan = ws.plan(&gathered, now, args.allow_mass_prune);
    if let Some(out) = &args.out {
        ws.save_plan(out, &gathered, &plan)?;
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        let doc = crate::json::PlanDoc::new(&plan, &gathered);
        writeln!(out, "{}", crate::json::render(&doc))?;
    } else {
        let colour = colour_on_stdout();
        write!(out, "{}", text::plan(&plan, &gathered, colour, zone))?;
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
