//! `coffer worker`: take the backups, copies, drills and gc that coordinators
//! (`apply --distributed`) hand out through the shared PostgreSQL catalog,
//! until Ctrl-C.

use std::time::Duration;

use anyhow::Result;

use super::backup::EXIT_CANCELLED;
use super::terminal::Terminal;
use super::{EXIT_OK, Location};
use crate::engine::cancel;
use crate::engine::metrics::{self, Both, Metrics};
use crate::engine::worker::{WorkerOptions, run_worker};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub location: Location,
    /// This worker's name in the queue and the run reports [default: HOST-PID].
    #[arg(long)]
    pub name: Option<String>,
    /// Actions (backups, copies, drills) at once in this worker.
    #[arg(long, default_value_t = 2)]
    pub parallel: usize,
    /// How long a claimed action stays this worker's without renewal (it
    /// is renewed every third of it); a worker that dies loses its actions
    /// to the others after this long.
    #[arg(long, default_value = "60s")]
    pub lease: String,
    /// How often an idle worker asks for work.
    #[arg(long, default_value = "2s")]
    pub poll: String,
    /// The longest one backup may take; it is then stopped, its snapshot
    /// removed, and it counts as failed.
    #[arg(long, default_value = "12h")]
    pub action_timeout: String,
    /// Stop after this long without work (default: run until Ctrl-C).
    #[arg(long)]
    pub idle_exit: Option<String>,
    /// Serve this worker's Prometheus metrics at http://ADDR/metrics, each
    /// action labelled with the worker's name (port 0 picks a free one and
    /// prints it).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
}

pub fn run(args: Args) -> Result<u8> {
    cancel::install_signal_handler();
    super::apply::exit_on_second_interrupt();
    let config = args.location.policy.load()?;
    let at_least = |name: &str, text: &str, min: Duration| -> Result<Duration> {
        Ok(super::duration(name, text)?.max(min))
    };
    let mut options = WorkerOptions::named_after_this_process();
    if let Some(name) = args.name {
        options.name = name;
    }
    options.parallel = args.parallel.max(1);
    options.lease = at_least("--lease", &args.lease, Duration::from_secs(1))?;
    options.poll = at_least("--poll", &args.poll, Duration::from_millis(100))?;
    options.action_timeout = at_least(
        "--action-timeout",
        &args.action_timeout,
        Duration::from_secs(1),
    )?;
    options.idle_exit = args
        .idle_exit
        .map(|t| super::duration("--idle-exit", &t))
        .transpose()?;
    let terminal = Terminal::human().in_zone(config.settings.timezone);
    let metrics = std::sync::Arc::new(Metrics::new(None));
    if let Some(addr) = &args.metrics {
        eprint!(
            "{}",
            crate::text::metrics_served(metrics::serve(addr, metrics.clone())?)
        );
    }
    let summary = run_worker(&config, &options, &Both(&terminal, metrics.as_ref()))?;
    eprintln!(
        "worker {}: {} actions done, {} failed, {} lost to another worker",
        options.name, summary.done, summary.failed, summary.lost
    );
    Ok(if cancel::requested() {
        EXIT_CANCELLED
    } else {
        EXIT_OK
    })
}
