//! Reports and how they reach people. This part owns rendering reports
//! and sending them (`mail`); it reads results, it never changes them, and
//! a failure to deliver never fails the work being reported.

pub mod mail;
