//! coffer: a declarative backup policy engine for VMware ESXi / vCenter.
//!
//! The parts follow `DESIGN.md`: `policy` reads what operators declare,
//! `inventory` is the neutral model of what exists on the hosts (filled in
//! by `vsphere`, read by `plan`), `plan` decides, `repo` stores
//! restore points, `vsphere` talks to the hosts,
//! `run` carries out what was decided,
//! and `cli` wires commands to them.

pub mod catalog;
pub mod cli;
pub mod inventory;
pub mod lab;
pub mod plan;
pub mod policy;
pub mod repo;
pub mod report;
pub mod run;
pub mod vsphere;
