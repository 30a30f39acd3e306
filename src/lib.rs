//! coffer: a declarative backup policy engine for VMware ESXi / vCenter.
//!
//! The parts follow `DESIGN.md`: `policy` reads what operators declare,
//! `plan` decides, `repo` stores restore points, `vsphere` talks to the hosts,
//! and `cli` wires commands to them.

pub mod cli;
pub mod lab;
pub mod plan;
pub mod policy;
pub mod repo;
pub mod vsphere;
