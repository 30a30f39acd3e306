//! `coffer validate`: load a policy directory and report every problem.

use std::io::Write;

use anyhow::Result;

use super::{EXIT_INVALID_CONFIG, EXIT_OK, PolicyArgs};
use crate::policy::{self, Severity};
use crate::text;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Print diagnostics as JSON (format version 1) on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> Result<u8> {
    let loaded = policy::load(&args.policy.dir);
    let errors = loaded
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count();
    let warnings = loaded.diagnostics.len() - errors;
    let mut out = std::io::stdout().lock();
    if args.json {
        let doc = crate::json::Validate::new(&loaded, errors, warnings);
        writeln!(out, "{}", crate::json::render(&doc))?;
    } else {
        let dir = &args.policy.dir;
        write!(out, "{}", text::validated(&loaded, dir, errors, warnings))?;
    }
    Ok(if errors == 0 {
        EXIT_OK
    } else {
        EXIT_INVALID_CONFIG
    })
}
