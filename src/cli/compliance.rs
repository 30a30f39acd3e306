//! `coffer compliance`: each VM's 3-2-1-1-0 and RPO standing, from a fresh
//! refresh of the catalog and the sources; exit 3 when any VM breaches.

use std::io::Write;

use anyhow::Result;
use chrono::Utc;

use super::Location;
use super::terminal::Terminal;
use super::{EXIT_OK, load_or_report};
use crate::engine::Workspace;
use crate::text;

/// Exit code when a VM is out of compliance.
pub const EXIT_BREACH: u8 = 3;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub location: Location,
    /// Print the standing as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> Result<u8> {
    let config = load_or_report(&args.location.policy).map_err(|_| crate::cli::InvalidPolicyDir)?;
    let terminal = Terminal::human();
    let mut ws = Workspace::open(config, args.location.state.as_deref(), &terminal)?;
    let (gathered, plan) = ws.compliance(Utc::now())?;
    let config = &ws.config;
    let mut out = std::io::stdout().lock();
    if args.json {
        let doc = crate::json::Compliance::new(&plan, &gathered);
        writeln!(out, "{}", crate::json::render(&doc))?;
    } else {
        write!(out, "{}", text::compliance(config, &gathered, &plan))?;
    }
    Ok(
        if plan.compliance.iter().any(|v| !v.violations.is_empty()) {
            EXIT_BREACH
        } else {
            EXIT_OK
        },
    )
}
