//! `coffer schema`: print the JSON Schema of policy files.

use std::io::Write;

use anyhow::Result;

use super::EXIT_OK;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> Result<u8> {
    std::io::stdout()
        .lock()
        .write_all(crate::policy::schema::schema_text().as_bytes())?;
    Ok(EXIT_OK)
}
