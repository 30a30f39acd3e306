//! The engine: everything a run does, as a library. The command line, the
//! daemon and the tests drive it the same way; none of them talks to a
//! host, opens a tier or writes the catalog except through it, and it never
//! prints: what happens goes to an [`Observer`].
//!
//! The map of a run, in the order things happen:
//!
//! 1. **Open** — [`Workspace::open`] (or [`Workspace::load`] from a policy
//!    directory) holds the resolved policies (`crate::policy::Config`) and
//!    the catalog (`catalog.rs`: a damaged catalog is moved aside and rebuilt
//!    from the tiers). [`Workspace::open_for_run`] first refuses missing
//!    secrets and tiers without a repository (`tiers.rs`, which also opens
//!    every repository: a tier's store, throttle, key and chunk index).
//! 2. **Gather** — [`Workspace::refresh`] (`gather.rs`) refreshes the
//!    catalog from every tier (drift and unlistable tiers become notes),
//!    reads every source's inventory (an unreachable source is recorded, and
//!    its VMs become `unknown`), and collects points, copies and drills:
//!    the points from those kept since the last plan and what the catalog's
//!    change log says changed since (`point_cache.rs`).
//! 3. **Plan** — [`Workspace::plan`] hands what was gathered to the pure
//!    planner (`crate::plan`). A plan can be saved for review and carried
//!    out later (`saved_plan.rs`: sealed, checked against a fresh plan).
//! 4. **Apply** — [`Workspace::apply`] (`apply/`) takes the runner lock,
//!    journals the run, recovers after a killed run, then runs three phases,
//!    planning again before each: hygiene and backups side by side within
//!    the limits (`apply/side_by_side.rs`, `apply/backup.rs`); copies,
//!    prunes and gc; drills (`apply/execute.rs`). Backups themselves are
//!    `crate::run::vm_backup` (snapshot → read → remove snapshot).
//! 5. **Report** — the run report and the compliance report
//!    (`report.rs`) are rendered, written under the report directory and
//!    mailed; [`Workspace::compliance`] answers each VM's standing.
//!
//! Around the run: `daemon.rs` loops over apply on the policies'
//! schedules; `cancel.rs` is the one stop flag (Ctrl-C in the CLI);
//! `backup_now.rs`, `restore.rs`, `instant.rs`, `image.rs`,
//! `repository.rs` and `inventory.rs` serve the commands that work outside
//! a plan (one backup now, restore and export, instant-recovery sessions,
//! disk images, a repository used directly, the inventory table).

pub mod apply;
pub mod backup_now;
pub mod cancel;
pub mod catalog;
pub mod daemon;
pub mod gather;
pub mod healthcheck;
pub mod image;
pub mod init;
pub mod instant;
pub mod inventory;
pub mod logging;
pub mod metrics;
pub mod observer;
pub mod point_cache;
pub mod report;
pub mod repository;
pub mod restore;
pub mod saved_plan;
pub mod tiers;
pub mod worker;
pub mod workspace;

pub use apply::{ApplyOptions, RunOutcome};
pub use gather::Gathered;
pub use observer::{Event, Observer, Outcome, Recorder, Silent};
pub use workspace::Workspace;

/// Worker threads for reading, hashing and compressing: one per core.
pub fn threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// A new run id: sortable, unique enough to name a snapshot.
pub fn new_run_id() -> String {
    let mut r = [0u8; 2];
    getrandom::fill(&mut r).expect("the OS random source works");
    format!(
        "{}-{}",
        chrono::Utc::now().format("%Y%m%dT%H%M%SZ"),
        hex::encode(r)
    )
}
