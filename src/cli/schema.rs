//! `coffer schema`: print the JSON Schema of policy files, or of one of
//! coffer's JSON outputs.

use std::io::Write;

use anyhow::Result;

use super::EXIT_OK;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The schema of a JSON output instead (`inventory`, `plan`,
    /// `apply-events`, …; `list` names them all).
    #[arg(long, value_name = "OUTPUT")]
    pub output: Option<String>,
}

pub fn run(args: Args) -> Result<u8> {
    let mut out = std::io::stdout().lock();
    let text = match args.output.as_deref() {
        None => crate::policy::schema::schema_text(),
        Some("list") => crate::json::schemas()
            .iter()
            .map(|(name, _)| format!("{name}\n"))
            .collect(),
        Some(name) => crate::json::schema_text(name).ok_or_else(|| {
            let names: Vec<&str> = crate::json::schemas().iter().map(|(n, _)| *n).collect();
            anyhow::anyhow!(crate::policy::diag::no_such("JSON output", name, &names))
        })?,
    };
    out.write_all(text.as_bytes())?;
    Ok(EXIT_OK)
}
