//! coffer: a declarative backup policy engine for VMware ESXi / vCenter.
//!
//! The parts follow `DESIGN.md`: `policy` reads what operators declare,
//! `inventory` is the neutral model of what exists on the hosts (filled in
//! by `vsphere`, read by `plan`), `plan` decides, `repo` stores restore
//! points (`tape` is where a tape tier's points live: drive, changer,
//! media catalog), `vsphere` talks to the hosts,
//! `run` holds the jobs (one VM's backup, a drill, a restore, an export),
//! `engine` runs them (a workspace: gather, plan, apply, report, with an
//! observer that hears everything), `report` renders and mails, `json`
//! holds the shapes of the machine-readable output and `text` how the same
//! results read for people, `progress` counts bytes for progress bars, and
//! `cli` only parses arguments, calls the engine and writes its answer in
//! one of those two forms.

pub mod catalog;
pub mod cli;
pub mod engine;
pub mod instant;
pub mod inventory;
pub mod json;
pub mod lab;
pub mod plan;
pub mod policy;
pub mod progress;
pub mod repo;
pub mod report;
pub mod run;
pub mod tape;
pub mod text;
pub mod tls;
pub mod vsphere;
