//! `coffer status`: what the daemon of a policy directory is doing now,
//! and when it runs next, from the status it keeps in the state directory.

use std::io::Write;

use anyhow::Result;

use super::{EXIT_OK, Location, load_or_report};
use crate::engine::metrics::{alive, read_status};

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
    let time = |t: chrono::DateTime<chrono::Utc>| {
        t.with_timezone(&config.settings.timezone)
            .format("%Y-%m-%d %H:%M:%S %:z")
            .to_string()
    };
    let Some(s) = read_status(&state)? else {
        writeln!(
            out,
            "no daemon has run with the state directory {}",
            state.display()
        )?;
        return Ok(EXIT_NO_DAEMON);
    };
    let running = alive(s.pid);
    if running {
        writeln!(
            out,
            "daemon: running (pid {}, since {})",
            s.pid,
            s.started.map(time).unwrap_or_default()
        )?;
    } else {
        writeln!(
            out,
            "daemon: not running (pid {} is gone; last heard of {})",
            s.pid,
            s.updated.map(time).unwrap_or_default()
        )?;
    }
    if let Some(m) = &s.metrics {
        writeln!(out, "metrics: {m}")?;
    }
    match (&s.run, running) {
        (Some(run), true) => {
            writeln!(
                out,
                "now: run {run}, since {}; {} running, {} queued",
                s.run_started.map(time).unwrap_or_default(),
                s.running.len(),
                s.queued
            )?;
            for line in &s.running {
                writeln!(out, "  {line}")?;
            }
        }
        (Some(run), false) => writeln!(
            out,
            "run {run} was in progress when the daemon stopped; the next apply recovers it"
        )?,
        (None, true) => match s.next_run {
            Some(t) => writeln!(out, "now: sleeping; next run {}", time(t))?,
            None => writeln!(out, "now: starting a run")?,
        },
        (None, false) => {}
    }
    if let (Some(run), Some(t)) = (&s.last_run, s.last_run_finished) {
        writeln!(
            out,
            "last run: {run}, ended {}: {}",
            time(t),
            s.last_run_subject.as_deref().unwrap_or("")
        )?;
    }
    Ok(if running { EXIT_OK } else { EXIT_NO_DAEMON })
}
