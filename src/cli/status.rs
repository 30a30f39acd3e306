//! `coffer status`: what the daemon of a policy directory is doing now,
//! and when it runs next, from the status it keeps in the state directory;
//! with a shared catalog, the workers and the backups they hold.

use anyhow::Result;

use super::{EXIT_OK, Location, PolicyArgs, print};
use crate::engine::metrics::{alive, read_status};
use crate::text;

/// No daemon is running for this policy directory.
pub const EXIT_NO_DAEMON: u8 = 3;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub location: Location,
}

pub fn run(args: Args, p: &PolicyArgs) -> Result<u8> {
    let config = p.load()?;
    let state = args.location.state_dir(&config);
    match crate::engine::worker::fleet(&config) {
        Ok(Some((workers, claimed))) => print(text::fleet(&workers, &claimed))?,
        Ok(None) => {}
        // The daemon's own status is still worth showing.
        Err(e) => print(text::fleet_unreadable(&e))?,
    }
    let Some(s) = read_status(&state)? else {
        print(text::no_daemon(&state))?;
        return Ok(EXIT_NO_DAEMON);
    };
    let running = alive(s.pid);
    print(text::daemon_status(&s, running, config.settings.timezone))?;
    Ok(if running { EXIT_OK } else { EXIT_NO_DAEMON })
}
