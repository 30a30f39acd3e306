//! The policy language: a directory of TOML files in git that says which VMs
//! are backed up, how often, where to, for how long, and how recovery is
//! proven. This part owns reading, merging, checking and resolving those
//! files and the JSON Schema that describes them. It never touches a host, a
//! repository or the clock of a run; it only reports what is wrong, all of it,
//! with the place and a fix.
//!
//! Flow: `load` (walk, parse with spans, unknown keys via `schema`, per-entry
//! serde into `raw`) → `validate` (units, references, cross-file rules) →
//! `model::Config`.

pub mod diag;
mod keys;
pub mod load;
pub mod model;
pub mod raw;
pub mod schedule;
pub mod schema;
pub mod units;
pub mod validate;
mod validate_policy;
mod validate_settings;
mod validate_tiers;

use std::path::Path;

pub use diag::{Diagnostic, Severity, SourceMap};
pub use model::Config;

/// The outcome of loading a policy directory.
#[derive(Debug)]
pub struct Loaded {
    /// The resolved configuration, when there was no error.
    pub config: Option<Config>,
    /// Errors and warnings, sorted by file and position.
    pub diagnostics: Vec<Diagnostic>,
    /// The text of every file read, for rendering the diagnostics.
    pub sources: SourceMap,
    /// The policy files that were read.
    pub files: Vec<std::path::PathBuf>,
}

impl Loaded {
    /// How many of the diagnostics are errors.
    pub fn error_count(&self) -> usize {
        (self.diagnostics.iter())
            .filter(|d| d.severity == Severity::Error)
            .count()
    }

    pub fn has_errors(&self) -> bool {
        self.diagnostics
            .iter()
            .any(|d| d.severity == Severity::Error)
    }

    pub fn render(&self) -> String {
        diag::render_text(&self.diagnostics, &self.sources)
    }
}

/// Loads, checks and resolves the policy directory `dir`.
pub fn load(dir: &Path) -> Loaded {
    let mut sources = SourceMap::default();
    let mut diagnostics = Vec::new();
    let merged = load::load_dir(dir, &mut sources, &mut diagnostics);
    let clean_parse = !diagnostics.iter().any(|d| d.severity == Severity::Error);
    let resolved = validate::resolve(dir, &merged, &mut diagnostics);
    diag::sort(&mut diagnostics);
    Loaded {
        // A file that did not parse may hide definitions: never hand out a
        // config built from part of the directory.
        config: resolved.filter(|_| clean_parse),
        diagnostics,
        sources,
        files: merged.files,
    }
}
