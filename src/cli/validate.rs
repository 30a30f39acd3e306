//! `coffer validate`: load a policy directory and report every problem.

use std::io::Write;

use anyhow::Result;

use super::{EXIT_INVALID_CONFIG, EXIT_OK, PolicyArgs};
use crate::policy::{self, Severity, diag};

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
        let doc = crate::json::Validate {
            valid: errors == 0,
            files: loaded
                .files
                .iter()
                .map(|f| f.display().to_string())
                .collect(),
            errors,
            warnings,
            diagnostics: diag::to_json(&loaded.diagnostics, &loaded.sources),
        };
        writeln!(out, "{}", crate::json::render(&doc))?;
    } else {
        write!(out, "{}", loaded.render())?;
        if let Some(config) = &loaded.config {
            writeln!(
                out,
                "{}: valid ({} files; {} sources, {} tiers, {} policies, {} drills, {} notifiers; {} warnings)",
                args.policy.dir.display(),
                loaded.files.len(),
                config.sources.len(),
                config.tiers.len(),
                config.policies.len(),
                config
                    .policies
                    .values()
                    .map(|p| p.drills.len())
                    .sum::<usize>(),
                config.notify.len(),
                warnings,
            )?;
        } else {
            writeln!(
                out,
                "{}: invalid ({errors} errors, {warnings} warnings)",
                args.policy.dir.display()
            )?;
        }
    }
    Ok(if errors == 0 {
        EXIT_OK
    } else {
        EXIT_INVALID_CONFIG
    })
}
