//! `coffer apply`: plan, then carry the plan out (the engine's runner:
//! hygiene and backups, then copies, prunes and gc, then drills), print
//! every result, write the run report and mail it. One failed VM never
//! stops the others; Ctrl-C stops starting actions, lets the running
//! backup remove its snapshot, and exits 130; a second Ctrl-C exits as
//! soon as no snapshot is open.

use std::time::Duration;

use anyhow::Result;
use chrono::Utc;

use super::Location;
use super::backup::EXIT_CANCELLED;
use super::terminal::Terminal;
use crate::engine::{ApplyOptions, RunOutcome, Workspace, cancel};

/// Exit code of a run in which some actions failed.
pub const EXIT_PARTIAL: u8 = 1;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A plan saved by `coffer plan --out FILE`: carry out those of its
    /// actions the plan made now also holds; refused when it was edited,
    /// when the policies or the catalog changed since, or when it lists an
    /// action the plan made now does not.
    pub plan: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub location: Location,
    #[command(flatten)]
    pub run: RunArgs,
    /// The longest one backup may take; it is then stopped, its snapshot
    /// removed, and it counts as failed.
    #[arg(long, default_value = "12h")]
    pub action_timeout: String,
    /// Newline-delimited JSON events (run, plan, action started / finished /
    /// failed, mail) on stdout instead of lines for people.
    #[arg(long)]
    pub json: bool,
}

/// How a run goes, for `apply` and each run of the daemon.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Let retention prune more than half of a tier's points in one run
    /// (without it, one run prunes the oldest half and the rest waits).
    #[arg(long)]
    pub allow_mass_prune: bool,
    /// Do not send email, even when the notifiers' rules say to (reports
    /// are still written).
    #[arg(long)]
    pub no_mail: bool,
    /// Backups at once, in all (each source's `max_per_host` and
    /// `max_per_datastore` limit them further).
    #[arg(long, default_value_t = 4)]
    pub parallel: usize,
    /// Hand the backups, copies, gc and verify and restore drills to
    /// workers (`coffer worker`, on any machine) through the shared
    /// PostgreSQL catalog instead of doing them here; hygiene, prunes,
    /// what is on a tape tier and boot drills stay with this run.
    #[arg(long)]
    pub distributed: bool,
}

impl RunArgs {
    pub fn options(&self) -> ApplyOptions {
        ApplyOptions {
            allow_mass_prune: self.allow_mass_prune,
            mail: !self.no_mail,
            parallel: self.parallel,
            distributed: self.distributed,
            ..ApplyOptions::default()
        }
    }
}

/// A second Ctrl-C: once no backup holds a snapshot, stop at once. A copy
/// or gc cut short leaves nothing counted (manifests are written last);
/// the journal tells the next run what was interrupted.
pub fn exit_on_second_interrupt() {
    std::thread::spawn(|| {
        cancel::wait_for_safe_abort();
        eprint!("{}", crate::text::aborted_by_second_interrupt());
        std::process::exit(i32::from(EXIT_CANCELLED));
    });
}

/// The exit code of a run.
pub fn exit_code(r: &RunOutcome) -> u8 {
    if r.cancelled {
        EXIT_CANCELLED
    } else if r.failed {
        EXIT_PARTIAL
    } else {
        super::EXIT_OK
    }
}

pub fn run(args: Args) -> Result<u8> {
    cancel::install_signal_handler();
    let config = args.location.policy.load()?;
    let terminal = Terminal::new(args.json).in_zone(config.settings.timezone);
    let mut ws = Workspace::open_for_run(config, args.location.state.as_deref(), &terminal)?;
    exit_on_second_interrupt();
    let action_timeout = super::duration("--action-timeout", &args.action_timeout)?;
    // Whole seconds, at least one.
    let action_timeout = Duration::from_secs(action_timeout.as_secs().max(1));
    let options = ApplyOptions {
        plan_file: args.plan,
        action_timeout,
        ..args.run.options()
    };
    let outcome = ws.apply(&options, &Utc::now)?;
    Ok(exit_code(&outcome))
}
