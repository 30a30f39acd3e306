//! Command-line interface: one file per subcommand. This part parses what the
//! user typed, hands it to the engine (`crate::engine`) and writes what comes
//! back, for people (`crate::text`) or for machines (`crate::json`);
//! `terminal.rs` shows the engine's events, with progress bars and colour.
//! It owns the streams, exit codes and the choice of form, never decisions
//! nor the wording of results. No file here opens a tier, talks to a host
//! or writes the catalog. Where a command runs an engine operation, the
//! engine's own option type is its arguments (`ApplyOptions`,
//! `WorkerOptions`, `BackupNow`, …), so an option is defined once; the
//! policy directory (`-p`) is one option of every command.

mod apply;
mod backup;
mod catalog;
mod cbt;
mod compliance;
mod daemon;
mod export;
mod init;
mod instant;
mod inventory;
mod lab;
mod plan;
mod repo;
mod report;
mod restore;
mod retention;
mod schedule;
mod schema;
mod shell;
mod status;
mod tape;
mod terminal;
mod validate;
mod worker;

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::json::Document;

/// Success, nothing to report.
pub const EXIT_OK: u8 = 0;
/// A failure that is not the policy's fault (I/O, a host, a bug).
pub const EXIT_ERROR: u8 = 1;
/// The policy directory is invalid.
pub const EXIT_INVALID_CONFIG: u8 = 10;

/// The heading of the options every command takes.
const GLOBAL: &str = "Options of every command";

#[derive(Debug, Parser)]
#[command(
    name = "coffer",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("COFFER_COMMIT"), ")"),
    about = "Declarative backup policies for VMware ESXi and vCenter"
)]
pub struct Cli {
    #[command(flatten)]
    pub policies: PolicyArgs,
    /// Log more to stderr: -v each run and action, -vv each SOAP call and
    /// point written, -vvv each datastore read (`COFFER_LOG` takes a
    /// filter such as `coffer::vsphere=debug` instead).
    #[arg(
        short = 'v',
        long = "verbose",
        action = clap::ArgAction::Count,
        global = true,
        help_heading = GLOBAL
    )]
    pub verbose: u8,
    /// Colour on a terminal: auto (unless NO_COLOR is set), always, never.
    #[arg(long, value_enum, default_value = "auto", global = true, help_heading = GLOBAL)]
    pub color: terminal::ColorChoice,
    /// Log lines as text or as JSON objects (for journald, Loki, …).
    #[arg(long, value_enum, default_value = "text", global = true, help_heading = GLOBAL)]
    pub log_format: crate::engine::logging::LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// The policy directory, for every command that reads policies: one
/// option, accepted before the command too (`coffer -p DIR plan`).
#[derive(Debug, Clone, clap::Args)]
pub struct PolicyArgs {
    /// Policy directory (walked recursively for *.toml).
    #[arg(
        short = 'p',
        long = "policies",
        id = "dir",
        value_name = "DIR",
        env = "COFFER_POLICIES",
        default_value = "policies",
        global = true,
        help_heading = GLOBAL
    )]
    pub dir: PathBuf,
}

impl PolicyArgs {
    /// Loads the policy directory, its diagnostics on stderr; an invalid
    /// one is `InvalidPolicyDir` (exit 10) once the errors are printed.
    pub fn load(&self) -> Result<crate::policy::Config> {
        let loaded = crate::policy::load(&self.dir);
        eprint!("{}", loaded.render());
        loaded.config.ok_or_else(|| {
            eprint!("{}", crate::text::policy_dir_invalid(&self.dir));
            InvalidPolicyDir.into()
        })
    }
}

/// `--json`, for a command that prints one result.
#[derive(Debug, clap::Args)]
pub struct Output {
    /// Print the result as JSON (its schema: `coffer schema --output
    /// COMMAND`).
    #[arg(long)]
    pub json: bool,
}

impl Output {
    /// Writes the result on stdout: the JSON document `doc` makes with
    /// `--json`, else the text `text` makes.
    pub fn print<D: Document>(
        &self,
        doc: impl FnOnce() -> D,
        text: impl FnOnce() -> String,
    ) -> Result<()> {
        match self.json {
            true => print(format_args!("{}\n", crate::json::render(&doc()))),
            false => print(text()),
        }
    }
}

/// Writes `text` on stdout (a closed pipe is an error `main` keeps quiet).
pub(crate) fn print(text: impl std::fmt::Display) -> Result<()> {
    write!(std::io::stdout().lock(), "{text}")?;
    Ok(())
}

/// Where the catalog is: `--state DIR`, else the policy's settings.
#[derive(Debug, clap::Args)]
pub struct Location {
    /// State directory holding `catalog.db` (default: the policy's
    /// `settings.state_dir`, or its `settings.catalog`).
    #[arg(long = "state", value_name = "DIR")]
    pub state: Option<PathBuf>,
}

impl Location {
    /// The state directory: `--state DIR`, else the policy's.
    pub fn state_dir(&self, config: &crate::policy::Config) -> PathBuf {
        self.state
            .clone()
            .unwrap_or_else(|| config.settings.state_dir.clone())
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a policy directory: commented, valid, against the lab or a host.
    Init(init::Args),
    /// Check a policy directory and report every problem with file:line:column.
    Validate(validate::Args),
    /// Print the JSON Schema of policy files.
    Schema(schema::Args),
    /// Inspect schedules.
    #[command(subcommand)]
    Schedule(schedule::Command),
    /// Work with a repository directly: init, ls, verify, gc, copy, restore, prune.
    #[command(subcommand)]
    Repo(repo::Command),
    /// Tape tiers: their media, and an emulated library to try one.
    #[command(subcommand)]
    Tape(tape::Command),
    /// Back up a plain disk image file into a repository.
    BackupImage(repo::BackupImageArgs),
    /// List the VMs of the sources, with their policy and snapshot hygiene.
    Inventory(inventory::Args),
    /// Back up one VM now, by its policy.
    Backup(backup::Args),
    /// What apply would do, and why: backups, copies, prunes, drills, hygiene, compliance.
    Plan(plan::Args),
    /// Plan and carry the plan out: backups, copies, prunes, gc, drills; report and mail.
    Apply(apply::Args),
    /// The catalog: rebuild it from a tier, refresh it and report drift, show it.
    #[command(subcommand)]
    Catalog(catalog::Command),
    /// Changed Block Tracking: reset it for a VM.
    #[command(subcommand)]
    Cbt(cbt::Command),
    /// Apply whenever a policy is due, forever (one catch-up run at start).
    Daemon(daemon::Args),
    /// What the daemon is doing now and when it runs next; with a shared
    /// catalog, the workers and the actions they hold.
    Status(status::Args),
    /// Take the backups, copies, drills and gc coordinators (`apply
    /// --distributed`) hand out through the shared PostgreSQL catalog,
    /// until Ctrl-C.
    Worker(worker::Args),
    /// Restore a VM from a point: to local files, or onto a host as a new VM.
    Restore(restore::Args),
    /// Boot a VM straight from a restore point over NFS (list, stop NAME).
    InstantRecover(instant::Args),
    /// Export a VM's point as an OVA or streamOptimized VMDKs for other tools.
    Export(export::Args),
    /// The compliance report (rendered, stored, optionally mailed) or the newest run report.
    Report(report::Args),
    /// Each VM's 3-2-1-1-0 and RPO standing; exit 3 on a breach.
    Compliance(compliance::Args),
    /// Check a retention before committing it.
    #[command(subcommand)]
    Retention(retention::Command),
    /// Run the built-in ESXi simulator, or write to a lab VM's disks.
    #[command(subcommand)]
    Lab(lab::Command),
    /// Print shell completions, e.g. `coffer completions bash >
    /// /etc/bash_completion.d/coffer`.
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page in roff (`coffer man | man -l -`), or write
    /// one page per command into a directory.
    Man {
        /// Write `coffer.1`, `coffer-apply.1`, … into this directory.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
}

/// A command that needs the policy directory found it invalid (the
/// problems are already printed): exit 10, as for `validate`.
#[derive(Debug, thiserror::Error)]
#[error("the policy directory is invalid")]
pub struct InvalidPolicyDir;

/// Parses the command line and runs the command; returns the exit code.
pub fn run() -> Result<u8> {
    let cli = Cli::parse();
    crate::engine::logging::init(cli.verbose, cli.log_format)?;
    terminal::set_colour(cli.color);
    // Printing shows details (change ids) only from one `-v` on.
    match run_command(cli.command, &cli.policies, cli.verbose > 0) {
        Err(e) if e.downcast_ref::<InvalidPolicyDir>().is_some() => Ok(EXIT_INVALID_CONFIG),
        other => other,
    }
}

/// `p`: the policy directory, for the commands that read one.
fn run_command(command: Command, p: &PolicyArgs, verbose: bool) -> Result<u8> {
    match command {
        Command::Init(args) => init::run(args),
        Command::Validate(args) => validate::run(args, p),
        Command::Schema(args) => schema::run(args),
        Command::Schedule(command) => schedule::run(command, p),
        Command::Repo(command) => repo::run(command, p),
        Command::Tape(command) => tape::run(command, p),
        Command::BackupImage(args) => repo::backup_image(args, p),
        Command::Inventory(args) => inventory::run(args, p),
        Command::Backup(args) => backup::run(args, p, verbose),
        Command::Plan(args) => plan::run(args, p),
        Command::Apply(args) => apply::run(args, p),
        Command::Catalog(command) => catalog::run(command, p),
        Command::Cbt(command) => cbt::run(command, p),
        Command::Daemon(args) => daemon::run(args, p),
        Command::Status(args) => status::run(args, p),
        Command::Worker(args) => worker::run(args, p),
        Command::Restore(args) => restore::run(args, p),
        Command::InstantRecover(args) => instant::run(args, p),
        Command::Export(args) => export::run(args, p),
        Command::Report(args) => report::run(args, p),
        Command::Compliance(args) => compliance::run(args, p),
        Command::Retention(command) => retention::run(command, p),
        Command::Lab(command) => lab::run(command),
        Command::Completions { shell } => shell::completions(shell),
        Command::Man { out } => shell::man(out),
    }
}
