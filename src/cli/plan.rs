//! `coffer plan`: refresh the catalog from every tier (reporting drift),
//! read the live inventory, and print what `apply` would do and why, with
//! each VM's 3-2-1-1-0 and RPO standing.

use std::path::PathBuf;

use anyhow::Result;
use chrono::{DateTime, Utc};

use super::terminal::{Terminal, colour_on_stdout};
use super::{EXIT_OK, Location, Output, PolicyArgs};
use crate::engine::Workspace;
use crate::text;

/// `--detailed-exitcode`: actions are pending.
pub const EXIT_CHANGES: u8 = 2;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub location: Location,
    #[command(flatten)]
    pub output: Output,
    /// Plan as of this instant (RFC 3339) instead of now.
    #[arg(long, value_parser = crate::policy::units::parse_time_arg)]
    pub at: Option<DateTime<Utc>>,
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

pub fn run(args: Args, p: &PolicyArgs) -> Result<u8> {
    let config = p.load()?;
    let now = args.at.unwrap_or_else(Utc::now);
    crate::engine::tiers::check_secrets(&config)?;
    let zone = config.settings.timezone;
    let terminal = Terminal::human().in_zone(zone);
    let mut ws = Workspace::open(config, args.location.state.as_deref(), &terminal)?;
    let gathered = ws.refresh()?;
    let plan = ws.plan(&gathered, now, args.allow_mass_prune);
    if let Some(out) = &args.out {
        ws.save_plan(out, &gathered, &plan)?;
    }
    let doc = || crate::json::PlanDoc::new(&plan, &gathered);
    let text = || text::plan(&plan, &gathered, colour_on_stdout(), zone);
    args.output.print(doc, text)?;
    let pending = args.detailed_exitcode && plan.has_pending_actions();
    Ok(if pending { EXIT_CHANGES } else { EXIT_OK })
}
