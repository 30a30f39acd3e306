//! Reports and how they reach people. This part owns what a run report and
//! a compliance report say (`model`), rendering them with templates an
//! administrator can override (`render`), and sending them (`mail`); it
//! reads results, it never changes them, and a failure to deliver never
//! fails the work being reported.

pub mod charts;
pub mod mail;
pub mod model;
pub mod render;
