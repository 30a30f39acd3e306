//! `coffer apply`: plan, then carry the plan out (the engine's runner:
//! hygiene and backups, then copies, prunes and gc, then drills), print
//! every result, write the run report and mail it. One failed VM never
//! stops the others; Ctrl-C stops starting actions, lets the running
//! backup remove its snapshot, and exits 130; a second Ctrl-C exits as
//! soon as no snapshot is open.

use anyhow::Result;
use chrono::Utc;

use super::backup::EXIT_CANCELLED;
use super::terminal::Terminal;
use super::{Location, PolicyArgs};
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
    pub options: ApplyOptions,
    /// Newline-delimited JSON events (run, plan, action started / finished /
    /// failed, mail) on stdout instead of lines for people.
    #[arg(long)]
    pub json: bool,
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

pub fn run(args: Args, p: &PolicyArgs) -> Result<u8> {
    cancel::install_signal_handler();
    let config = p.load()?;
    let terminal = Terminal::new(args.json).in_zone(config.settings.timezone);
    let mut ws = Workspace::open_for_run(config, args.location.state.as_deref(), &terminal)?;
    exit_on_second_interrupt();
    let options = ApplyOptions {
        plan_file: args.plan,
        ..args.options
    };
    Ok(exit_code(&ws.apply(&options, &Utc::now)?))
}
