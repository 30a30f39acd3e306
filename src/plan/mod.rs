//! Planning: pure functions from the desired state (policies), what exists
//! (inventory, catalog) and `now` to the actions that close the gap. Nothing
//! in here performs I/O or reads the clock; `now` is always passed in.
//!
//! The files read downward: `input` (what a plan reads) and `action` (what
//! it produces) are plain data; `backup`, `tiers`, `drills`, `hygiene`,
//! `compliance`, `cbt` and `retention` each decide one thing;
//! `planner` walks the VMs and asks them. What exists on the hosts comes as
//! the neutral model of `crate::inventory`: nothing in here imports the
//! vSphere client (`crate::vsphere`) or the command line.

pub mod action;
mod backup;
pub mod cbt;
pub mod compliance;
mod drills;
pub mod hygiene;
pub mod input;
pub mod planner;
#[cfg(test)]
mod planner_props;
#[cfg(test)]
mod planner_tests;
pub mod retention;
/// Schedules are part of the resolved policy; kept reachable here.
pub use crate::policy::schedule;
mod tiers;
