//! `coffer validate`: load a policy directory and report every problem.

use anyhow::Result;

use super::{EXIT_INVALID_CONFIG, EXIT_OK, PolicyArgs, print_result};
use crate::policy;
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
    let errors = loaded.error_count();
    let warnings = loaded.diagnostics.len() - errors;
    let doc = || crate::json::Validate::new(&loaded, errors, warnings);
    let text = || text::validated(&loaded, &args.policy.dir, errors, warnings);
    print_result(args.json, doc, text)?;
    Ok(if errors == 0 {
        EXIT_OK
    } else {
        EXIT_INVALID_CONFIG
    })
}
