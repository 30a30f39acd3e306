//! `coffer worker`: take the backups, copies, drills and gc that coordinators
//! (`apply --distributed`) hand out through the shared PostgreSQL catalog,
//! until Ctrl-C.

use anyhow::Result;

use super::backup::EXIT_CANCELLED;
use super::terminal::Terminal;
use super::{EXIT_OK, PolicyArgs};
use crate::engine::cancel;
use crate::engine::metrics::{self, Both, Metrics};
use crate::engine::worker::{WorkerOptions, run_worker};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub options: WorkerOptions,
    /// Serve this worker's Prometheus metrics at http://ADDR/metrics, each
    /// action labelled with the worker's name (port 0 picks a free one and
    /// prints it).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
}

pub fn run(args: Args, p: &PolicyArgs) -> Result<u8> {
    cancel::install_signal_handler();
    super::apply::exit_on_second_interrupt();
    let config = p.load()?;
    let terminal = Terminal::human().in_zone(config.settings.timezone);
    let metrics = std::sync::Arc::new(Metrics::new(None));
    if let Some(addr) = &args.metrics {
        let served = metrics::serve(addr, metrics.clone())?;
        eprint!("{}", crate::text::metrics_served(served));
    }
    let both = Both(&terminal, metrics.as_ref());
    let summary = run_worker(&config, &args.options, &both)?;
    eprint!(
        "{}",
        crate::text::worker_ended(&args.options.name, &summary)
    );
    Ok(if cancel::requested() {
        EXIT_CANCELLED
    } else {
        EXIT_OK
    })
}
