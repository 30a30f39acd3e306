//! `coffer compliance`: each VM's 3-2-1-1-0 and RPO standing, from a fresh
//! refresh of the catalog and the sources; exit 3 when any VM breaches.

use anyhow::Result;
use chrono::Utc;

use super::terminal::Terminal;
use super::{EXIT_OK, Location, Output, PolicyArgs};
use crate::engine::Workspace;
use crate::text;

/// Exit code when a VM is out of compliance.
pub const EXIT_BREACH: u8 = 3;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub location: Location,
    #[command(flatten)]
    pub output: Output,
}

pub fn run(args: Args, p: &PolicyArgs) -> Result<u8> {
    let config = p.load()?;
    let terminal = Terminal::human();
    let mut ws = Workspace::open(config, args.location.state.as_deref(), &terminal)?;
    let (gathered, plan) = ws.compliance(Utc::now())?;
    let doc = || crate::json::Compliance::new(&plan, &gathered);
    args.output
        .print(doc, || text::compliance(&ws.config, &gathered, &plan))?;
    Ok(if plan.breached() {
        EXIT_BREACH
    } else {
        EXIT_OK
    })
}
