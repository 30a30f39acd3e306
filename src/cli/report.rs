//! `coffer report`: the compliance report on demand (rendered from a fresh
//! refresh, written under the report directory, optionally mailed), or the
//! newest run report.

use std::io::Write;

use anyhow::Result;

use super::Location;
use super::terminal::Terminal;
use super::{EXIT_OK, load_or_report};
use crate::engine::Workspace;
use crate::engine::report::{newest_run_report, send_stored_report};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub location: Location,
    /// The compliance report (default: the newest run report).
    #[arg(long)]
    pub compliance: bool,
    /// Mail it through every notifier.
    #[arg(long)]
    pub send: bool,
}

pub fn run(args: Args) -> Result<u8> {
    let config = load_or_report(&args.location.policy).map_err(|_| crate::cli::InvalidPolicyDir)?;
    let terminal = Terminal::human();
    if args.compliance {
        let mut ws = Workspace::open(config, args.location.state.as_deref(), &terminal)?;
        let m = ws.compliance_report(args.send, None)?;
        write!(std::io::stdout().lock(), "{}", m.text)?;
        return Ok(EXIT_OK);
    }
    let file = newest_run_report(&config)?;
    let text = std::fs::read_to_string(&file)?;
    write!(std::io::stdout().lock(), "{text}")?;
    if args.send {
        send_stored_report(&config, &file, &terminal)?;
    }
    Ok(EXIT_OK)
}
