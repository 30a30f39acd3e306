//! `coffer validate`: load a policy directory and report every problem.

use anyhow::Result;

use super::{EXIT_INVALID_CONFIG, EXIT_OK, Output, PolicyArgs};
use crate::policy;
use crate::text;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub output: Output,
}

pub fn run(args: Args, p: &PolicyArgs) -> Result<u8> {
    let loaded = policy::load(&p.dir);
    let errors = loaded.error_count();
    let warnings = loaded.diagnostics.len() - errors;
    let doc = || crate::json::Validate::new(&loaded, errors, warnings);
    let text = || text::validated(&loaded, &p.dir, errors, warnings);
    args.output.print(doc, text)?;
    Ok(if errors == 0 {
        EXIT_OK
    } else {
        EXIT_INVALID_CONFIG
    })
}
