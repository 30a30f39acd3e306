//! Logs: `tracing` events from the runner, the vSphere client and the
//! repository, written to stderr as text or as JSON lines (for journald,
//! Loki and the like).
//!
//! Nothing is logged by default beyond warnings; `-v` shows each run and
//! action (`info`), `-vv` each SOAP call and point written (`debug`),
//! `-vvv` each datastore read (`trace`). `COFFER_LOG` takes a filter in
//! `RUST_LOG` syntax instead (`coffer::vsphere=debug,info`). Every event of
//! an action is inside its span, which carries the run id, the action's
//! kind, VM, tier and policy. Logs are for people and log stores; what
//! the run did is in its report and in the catalog, whatever the level.

use anyhow::{Result, anyhow};
use tracing::Span;
use tracing_subscriber::EnvFilter;

use crate::plan::planner::Action;

/// The environment variable with a log filter (`RUST_LOG` syntax).
pub const LOG_ENV: &str = "COFFER_LOG";

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// One line of text per event.
    #[default]
    Text,
    /// One JSON object per event, with its span's fields.
    Json,
}

/// Installs the logger for this process: `verbose` is the count of `-v`,
/// overridden by `COFFER_LOG` when that is set.
pub fn init(verbose: u8, format: LogFormat) -> Result<()> {
    let filter = match std::env::var(LOG_ENV) {
        Ok(f) if !f.trim().is_empty() => {
            EnvFilter::try_new(&f).map_err(|e| anyhow!("{LOG_ENV}={f}: {e}"))?
        }
        _ => EnvFilter::new(match verbose {
            0 => "warn",
            1 => "warn,coffer=info",
            2 => "warn,coffer=debug",
            _ => "warn,coffer=trace",
        }),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false);
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .try_init(),
    };
    installed.map_err(|e| anyhow!("installing the logger: {e}"))
}

/// The span of one action of run `run_id`: its events carry the run, the
/// action's kind, VM, tier and policy.
pub fn action_span(run_id: &str, action: &Action) -> Span {
    let tier = match action {
        Action::Backup { tier, .. }
        | Action::Prune { tier, .. }
        | Action::KeepBlocked { tier, .. }
        | Action::Gc { tier, .. }
        | Action::Drill { tier, .. } => Some(tier.as_str()),
        Action::Copy { to, .. } => Some(to.as_str()),
        _ => None,
    };
    tracing::info_span!(
        "action",
        run_id,
        action = action.kind(),
        vm = action.vm(),
        tier,
        policy = action.policy(),
    )
}
