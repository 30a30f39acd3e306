//! Planning: pure functions from the desired state (policies), what exists
//! (inventory, catalog) and `now` to the actions that close the gap. Nothing
//! in here performs I/O or reads the clock; `now` is always passed in.

pub mod cbt;
pub mod compliance;
pub mod hygiene;
pub mod planner;
#[cfg(test)]
mod planner_props;
#[cfg(test)]
mod planner_tests;
pub mod retention;
pub mod schedule;
