//! `coffer schema`: print the JSON Schema of policy files, or of one of
//! coffer's JSON outputs.

use anyhow::{Result, anyhow};

use super::{EXIT_OK, print};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The schema of a JSON output instead (`inventory`, `plan`,
    /// `apply-events`, …; `list` names them all).
    #[arg(long, value_name = "OUTPUT")]
    pub output: Option<String>,
}

pub fn run(args: Args) -> Result<u8> {
    print(match args.output.as_deref() {
        None => crate::policy::schema::schema_text(),
        Some(name) => crate::json::output_schema(name).map_err(|e| anyhow!(e))?,
    })?;
    Ok(EXIT_OK)
}
