//! `coffer report`: the compliance report on demand (rendered from a fresh
//! refresh, written under the report directory, optionally mailed), or the
//! newest run report.

use anyhow::Result;

use super::terminal::Terminal;
use super::{EXIT_OK, Location, PolicyArgs, print};
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

pub fn run(args: Args, p: &PolicyArgs) -> Result<u8> {
    let config = p.load()?;
    let terminal = Terminal::human();
    if args.compliance {
        let mut ws = Workspace::open(config, args.location.state.as_deref(), &terminal)?;
        print(ws.compliance_report(args.send, None)?.text)?;
        return Ok(EXIT_OK);
    }
    let file = newest_run_report(&config)?;
    print(std::fs::read_to_string(&file)?)?;
    if args.send {
        send_stored_report(&config, &file, &terminal)?;
    }
    Ok(EXIT_OK)
}
