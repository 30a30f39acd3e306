//! `coffer completions SHELL` and `coffer man`: what a shell and `man`
//! need, generated from the same definitions that parse the command line,
//! so they never fall behind it.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::CommandFactory;

use super::{Cli, EXIT_OK, print};

pub fn completions(shell: clap_complete::Shell) -> Result<u8> {
    let mut cmd = Cli::command();
    clap_complete::generate(shell, &mut cmd, "coffer", &mut std::io::stdout().lock());
    Ok(EXIT_OK)
}

/// The page of `coffer` on stdout, or with `out` one page per command
/// (`coffer.1`, `coffer-apply.1`, `coffer-repo-verify.1`, …) in that
/// directory.
pub fn man(out: Option<PathBuf>) -> Result<u8> {
    let cmd = Cli::command();
    match out {
        None => clap_mangen::Man::new(cmd).render(&mut std::io::stdout().lock())?,
        Some(dir) => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            clap_mangen::generate_to(cmd, &dir)
                .with_context(|| format!("writing the pages into {}", dir.display()))?;
            let pages = (std::fs::read_dir(&dir)?.filter_map(|e| e.ok()))
                .filter(|e| e.file_name().to_string_lossy().ends_with(".1"))
                .count();
            print(crate::text::man_pages_written(pages, &dir))?;
        }
    }
    Ok(EXIT_OK)
}
