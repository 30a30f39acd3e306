//! `coffer status`: what the daemon of a policy directory is doing now,
//! and when it runs next, from the status it keeps in the state directory.

use std::io::Write;

use anyhow::Result;

use super::{EXIT_OK, Location, load_or_report};
use crate::engine::metrics::{alive, read_status};
use crate::text;

/// No daemon is running for this policy directory.
pub const EXIT_NO_DAEMON: u8 = 3;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub location: Location,
}

pub fn run(args: Args) -> Result<u8> {
    let config = load_or_report(&args.location.policy).map_err(|_| crate::cli::InvalidPolicyDir)?;
    let state = args.location.state_dir(&config);
    let mut out = std::io::stdout().lock();
    let Some(s) = read_status(&state)? else {
        write!(out, "{}", text::no_daemon(&state))?;
        return Ok(EXIT_NO_DAEMON);
    };
    let running = alive(s.pid);
    let zone = config.settings.timezone;
    write!(out, "{}", text::daemon_status(&s, running, zone))?;
    Ok(if running { EXIT_OK } else { EXIT_NO_DAEMON })
}
