//! `coffer daemon`: the engine's daemon (apply whenever a policy is due,
//! forever, one catch-up run at start), with Ctrl-C to end it.

use anyhow::Result;

use super::backup::EXIT_CANCELLED;
use super::terminal::Terminal;
use super::{EXIT_OK, Location, PolicyArgs};
use crate::engine::ApplyOptions;
use crate::engine::cancel;
use crate::engine::daemon::{DaemonEnd, DaemonOptions, fake_clock, run_daemon};
use crate::engine::metrics::{self, Both};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub location: Location,
    /// Stop after this many runs (default: never).
    #[arg(long)]
    pub max_runs: Option<u32>,
    #[command(flatten)]
    pub options: ApplyOptions,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g.
    /// 127.0.0.1:9464; port 0 picks a free one and prints it).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
}

pub fn run(args: Args, p: &PolicyArgs) -> Result<u8> {
    cancel::install_signal_handler();
    let options = DaemonOptions {
        state: args.location.state.clone(),
        apply: args.options,
        max_runs: args.max_runs,
        fake_clock: fake_clock()?,
    };
    let load = || p.load();
    super::apply::exit_on_second_interrupt();
    let config = load()?;
    let state = args.location.state_dir(&config);
    let (metrics, served) = metrics::for_daemon(&state, args.metrics.as_deref())?;
    if let Some(addr) = served {
        eprint!("{}", crate::text::metrics_served(addr));
    }
    let terminal = Terminal::human().in_zone(config.settings.timezone);
    match run_daemon(&load, &options, &Both(&terminal, metrics.as_ref()))? {
        DaemonEnd::Cancelled => Ok(EXIT_CANCELLED),
        DaemonEnd::MaxRuns => Ok(EXIT_OK),
    }
}
