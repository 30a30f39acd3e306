//! Diagnostics: a problem in a policy file, located by file and byte span,
//! rendered the way compilers do (`file:line:col`, the line, a caret, a hint)
//! or as JSON for tooling. Every check in `policy` reports through this type
//! so that one run can list all problems, not only the first.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// How bad a problem is: errors make a policy directory invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// A place in a policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: PathBuf,
    pub span: Range<usize>,
}

/// One problem, with where it is and how to fix it.
#[derive(Debug, Clone)]
pub struct Diagnostic {
    pub severity: Severity,
    /// Stable kebab-case identifier, e.g. `unknown-key`, for tooling and tests.
    pub code: &'static str,
    pub message: String,
    /// None for problems that belong to no file (an unreadable directory).
    pub location: Option<Location>,
    pub hint: Option<String>,
    /// Other places that take part, e.g. the first definition of a duplicate.
    pub related: Vec<(Location, String)>,
}

impl Diagnostic {
    pub fn error(code: &'static str, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            code,
            message: message.into(),
            location: None,
            hint: None,
            related: Vec::new(),
        }
    }

    pub fn warning(code: &'static str, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(code, message)
        }
    }

    pub fn at(mut self, file: &Path, span: Range<usize>) -> Self {
        self.location = Some(Location {
            file: file.to_path_buf(),
            span,
        });
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn related(mut self, file: &Path, span: Range<usize>, label: impl Into<String>) -> Self {
        self.related.push((
            Location {
                file: file.to_path_buf(),
                span,
            },
            label.into(),
        ));
        self
    }
}

/// The text of every file diagnostics may point into, to turn byte spans into
/// lines and columns.
#[derive(Debug, Default)]
pub struct SourceMap {
    files: BTreeMap<PathBuf, String>,
}

/// A resolved position: 1-based line and column (in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LineCol {
    pub line: usize,
    pub column: usize,
}

impl SourceMap {
    pub fn add(&mut self, file: &Path, text: String) {
        self.files.insert(file.to_path_buf(), text);
    }

    pub fn text(&self, file: &Path) -> Option<&str> {
        self.files.get(file).map(String::as_str)
    }

    /// Line and column of a byte offset; offsets past the end clamp to it.
    pub fn line_col(&self, file: &Path, offset: usize) -> LineCol {
        let Some(text) = self.text(file) else {
            return LineCol { line: 1, column: 1 };
        };
        let offset = floor_char_boundary(text, offset.min(text.len()));
        let before = &text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = text[line_start..offset].chars().count() + 1;
        LineCol { line, column }
    }

    fn line_text(&self, file: &Path, line: usize) -> Option<&str> {
        self.text(file)?.lines().nth(line - 1)
    }
}

fn floor_char_boundary(text: &str, mut i: usize) -> usize {
    while i > 0 && !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Sorts diagnostics by file and position so output is stable.
pub fn sort(diags: &mut [Diagnostic]) {
    diags.sort_by(|a, b| {
        let key = |d: &Diagnostic| {
            d.location
                .as_ref()
                .map(|l| (l.file.clone(), l.span.start, l.span.end))
        };
        key(a)
            .cmp(&key(b))
            .then(a.code.cmp(b.code))
            .then(a.message.cmp(&b.message))
    });
}

/// Renders diagnostics for a terminal: compiler style, paths as given.
pub fn render_text(diags: &[Diagnostic], sources: &SourceMap) -> String {
    let mut out = String::new();
    for d in diags {
        let label = match d.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let _ = writeln!(out, "{label}[{}]: {}", d.code, d.message);
        if let Some(loc) = &d.location {
            render_snippet(&mut out, sources, loc, None);
        }
        for (loc, note) in &d.related {
            render_snippet(&mut out, sources, loc, Some(note));
        }
        if let Some(hint) = &d.hint {
            let _ = writeln!(out, "   = hint: {hint}");
        }
        out.push('\n');
    }
    out
}

fn render_snippet(out: &mut String, sources: &SourceMap, loc: &Location, note: Option<&str>) {
    let start = sources.line_col(&loc.file, loc.span.start);
    let _ = writeln!(
        out,
        "  --> {}:{}:{}",
        loc.file.display(),
        start.line,
        start.column
    );
    let Some(line) = sources.line_text(&loc.file, start.line) else {
        return;
    };
    // Long lines (a 10 MB single-line file) are cut around the caret.
    let chars: Vec<char> = line.chars().collect();
    let first = start.column.saturating_sub(60);
    let shown: String = chars.iter().skip(first).take(120).collect();
    let end = sources.line_col(&loc.file, loc.span.end);
    let width = if end.line == start.line && end.column > start.column {
        end.column - start.column
    } else {
        chars.len().saturating_sub(start.column - 1).max(1)
    }
    .min(120);
    let gutter = start.line.to_string().len();
    let _ = writeln!(out, "{:gutter$} |", "");
    let _ = writeln!(out, "{} | {}", start.line, shown.trim_end());
    let _ = writeln!(
        out,
        "{:gutter$} | {}{}{}",
        "",
        " ".repeat(start.column - 1 - first),
        "^".repeat(width.max(1)),
        note.map(|n| format!(" {n}")).unwrap_or_default()
    );
}

/// One diagnostic as JSON (in `validate --json`).
#[derive(Debug, Serialize, schemars::JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct JsonDiagnostic {
    pub severity: Severity,
    pub code: &'static str,
    pub message: String,
    pub file: Option<String>,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub end_line: Option<usize>,
    pub end_column: Option<usize>,
    pub hint: Option<String>,
    pub related: Vec<JsonRelated>,
}

/// A related place in JSON output.
#[derive(Debug, Serialize, schemars::JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct JsonRelated {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub note: String,
}

pub fn to_json(diags: &[Diagnostic], sources: &SourceMap) -> Vec<JsonDiagnostic> {
    diags
        .iter()
        .map(|d| {
            let (file, start, end) = match &d.location {
                Some(l) => (
                    Some(l.file.display().to_string()),
                    Some(sources.line_col(&l.file, l.span.start)),
                    Some(sources.line_col(&l.file, l.span.end)),
                ),
                None => (None, None, None),
            };
            JsonDiagnostic {
                severity: d.severity,
                code: d.code,
                message: d.message.clone(),
                file,
                line: start.map(|p| p.line),
                column: start.map(|p| p.column),
                end_line: end.map(|p| p.line),
                end_column: end.map(|p| p.column),
                hint: d.hint.clone(),
                related: d
                    .related
                    .iter()
                    .map(|(l, note)| {
                        let p = sources.line_col(&l.file, l.span.start);
                        JsonRelated {
                            file: l.file.display().to_string(),
                            line: p.line,
                            column: p.column,
                            note: note.clone(),
                        }
                    })
                    .collect(),
            }
        })
        .collect()
}

/// The candidate closest to `word`, if it is close enough to be a likely typo.
pub fn nearest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// "no {what} named `name`", then the likely typo ("did you mean `x`?")
/// or, for a few, what exists: what an unknown VM, source, tier, policy or
/// drill on the command line answers.
pub fn no_such(what: &str, name: &str, known: &[&str]) -> String {
    let mut out = format!("no {what} named `{name}`");
    if let Some(near) = nearest(name, known.iter().copied()) {
        out.push_str(&format!("; did you mean `{near}`?"));
    } else if known.len() <= 12 {
        out.push_str(&format!("; there are {}", one_of(known)));
    }
    out
}

/// "a, b or c" for hints listing what exists.
pub fn one_of(names: &[&str]) -> String {
    match names {
        [] => "none are defined".into(),
        [one] => format!("`{one}`"),
        _ => {
            let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
            format!(
                "{} or {}",
                quoted[..quoted.len() - 1].join(", "),
                quoted[quoted.len() - 1]
            )
        }
    }
}
