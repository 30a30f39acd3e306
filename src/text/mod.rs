//! How coffer's results read for people: the lines and tables every
//! command prints, and the lines the engine's events become on a terminal.
//!
//! The engine never prints; it answers with values and tells an
//! `Observer` what happens. The same results have two forms: `json` is
//! the one for machines (`--json`), this module the one for people. The
//! command line (`cli`) picks one and writes it, and owns the streams and
//! exit codes; the daemon and later workers share these lines so a result
//! reads the same wherever it is shown.
//!
//! Every function here is pure: a result (and how to show it: colour, the
//! time zone, how much detail) in, text out, each line ending in a
//! newline. Nothing here decides, prints, or reads the command line: what
//! the user asked for (`-v`, `--color`) comes in as a parameter.

mod backup;
mod catalog;
mod events;
mod instant;
mod lab;
mod paint;
mod plan;
mod repo;
mod setup;
mod status;
mod tables;

pub use backup::*;
pub use catalog::*;
pub use events::*;
pub use instant::*;
pub use lab::*;
pub use paint::*;
pub use plan::*;
pub use repo::*;
pub use setup::*;
pub use status::*;
pub use tables::*;
