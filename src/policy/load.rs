//! Reading a policy directory: walk it for `*.toml`, parse every file with
//! spans, check keys against the schema, deserialize each named entry on its
//! own (so one broken policy does not hide the problems of the next) and merge
//! all files, refusing a name defined twice.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::diag::{Diagnostic, SourceMap, nearest};
use super::raw::{RawCompliance, RawNotify, RawPolicy, RawSettings, RawSource, RawTier};
use super::schema;

/// Policy files larger than this are refused unread: a policy is hand-written
/// text, and a multi-megabyte one is a mistake (or an attack on the parser).
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// A named entry and where it was defined.
#[derive(Debug, Clone)]
pub struct Entry<T> {
    pub file: PathBuf,
    pub name_span: Range<usize>,
    pub value: T,
}

/// Everything the files of a directory declare, merged.
#[derive(Debug, Default)]
pub struct Merged {
    pub files: Vec<PathBuf>,
    pub settings: Option<Entry<RawSettings>>,
    pub compliance: Option<Entry<RawCompliance>>,
    pub sources: BTreeMap<String, Entry<RawSource>>,
    pub tiers: BTreeMap<String, Entry<RawTier>>,
    pub policies: BTreeMap<String, Entry<RawPolicy>>,
    pub notify: BTreeMap<String, Entry<RawNotify>>,
    /// Names that are defined but failed to load (their error is reported);
    /// references to them are not reported again as missing.
    pub broken: std::collections::BTreeSet<String>,
}

/// Loads every `*.toml` below `dir`. Problems go to `diags`; what could be
/// read is returned regardless, so later checks still run on it.
pub fn load_dir(dir: &Path, sources: &mut SourceMap, diags: &mut Vec<Diagnostic>) -> Merged {
    let mut merged = Merged::default();
    if !dir.is_dir() {
        diags.push(
            Diagnostic::error(
                "no-policy-dir",
                format!("policy directory `{}` does not exist", dir.display()),
            )
            .hint("pass the directory with `-p DIR`; `examples/quickstart` is a working start"),
        );
        return merged;
    }
    let walker = walkdir::WalkDir::new(dir)
        .follow_links(false)
        .sort_by_file_name()
        .into_iter()
        // State and VCS directories are not policy.
        .filter_entry(|e| e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.'));
    for entry in walker {
        match entry {
            Ok(e)
                if e.file_type().is_file() && e.path().extension().is_some_and(|x| x == "toml") =>
            {
                load_file(e.path(), &mut merged, sources, diags);
                merged.files.push(e.path().to_path_buf());
            }
            Ok(_) => {}
            Err(err) => diags.push(Diagnostic::error(
                "unreadable",
                format!("cannot walk the policy directory: {err}"),
            )),
        }
    }
    if merged.files.is_empty() {
        diags.push(
            Diagnostic::error(
                "no-policy-files",
                format!("no `*.toml` files in `{}`", dir.display()),
            )
            .hint("policy files end in `.toml`; see examples/quickstart"),
        );
    }
    merged
}

fn load_file(
    path: &Path,
    merged: &mut Merged,
    sources: &mut SourceMap,
    diags: &mut Vec<Diagnostic>,
) {
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    if size > MAX_FILE_BYTES {
        sources.add(path, String::new());
        diags.push(
            Diagnostic::error(
                "file-too-large",
                format!("policy file is {size} bytes, more than the limit of {MAX_FILE_BYTES}"),
            )
            .at(path, 0..0)
            .hint("split the policies into several files; a policy directory may hold any number"),
        );
        return;
    }
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            diags.push(Diagnostic::error(
                "unreadable",
                format!("cannot read `{}`: {e}", path.display()),
            ));
            return;
        }
    };
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let at = e.utf8_error().valid_up_to();
            sources.add(path, String::from_utf8_lossy(e.as_bytes()).into_owned());
            diags.push(
                Diagnostic::error("not-utf8", "policy file is not valid UTF-8")
                    // The bad byte shows as U+FFFD, three bytes long.
                    .at(path, at..at + '\u{FFFD}'.len_utf8())
                    .hint("TOML files must be UTF-8; re-save the file as UTF-8"),
            );
            return;
        }
    };
    sources.add(path, text.clone());

    let (mut root, errors) = DeTable::parse_recoverable(&text);
    // After the first syntax error the parser's recovery guesses, and what
    // follows is mostly noise: report the first one, precisely.
    if let Some(e) = errors.into_iter().next() {
        let span = e.span().unwrap_or(0..0);
        let message = e.message().trim().to_string();
        diags.push(
            Diagnostic::error("syntax", format!("TOML syntax: {message}"))
                .at(path, span)
                .hint(syntax_hint(&message)),
        );
        return;
    }
    schema::check_keys(root.get_mut(), path, diags);

    for (key, value) in std::mem::take(root.get_mut()) {
        let section: &str = key.get_ref();
        match section {
            "settings" => single(
                &mut merged.settings,
                "settings",
                path,
                key.span(),
                value,
                diags,
            ),
            "compliance" => single(
                &mut merged.compliance,
                "compliance",
                path,
                key.span(),
                value,
                diags,
            ),
            "sources" => named(
                &mut merged.sources,
                &mut merged.broken,
                "source",
                path,
                value,
                diags,
            ),
            "tiers" => named(
                &mut merged.tiers,
                &mut merged.broken,
                "tier",
                path,
                value,
                diags,
            ),
            "policies" => named(
                &mut merged.policies,
                &mut merged.broken,
                "policy",
                path,
                value,
                diags,
            ),
            "notify" => named(
                &mut merged.notify,
                &mut merged.broken,
                "notifier",
                path,
                value,
                diags,
            ),
            // Unknown sections were reported and removed by the key check.
            _ => {}
        }
    }
}

fn syntax_hint(message: &str) -> String {
    let specific = if message.contains("duplicate key") {
        "a key may appear only once in a table; remove or rename one of them"
    } else if message.contains("unquoted key") || message.contains("expected `=`") {
        "keys and values are separated by `=`, e.g. `daily = 7`"
    } else if message.contains("string") {
        "strings are quoted: \"…\" or '…'"
    } else if message.contains("inline table") || message.contains('}') {
        "an inline table is written on one line: `{ env = \"NAME\" }`"
    } else if message.contains("array") || message.contains(']') {
        "arrays are written `[\"a\", \"b\"]` and closed with `]`"
    } else {
        "fix this first; later lines are checked once the file parses"
    };
    format!("{specific} (TOML syntax: https://toml.io)")
}

/// Deserializes one value, turning a serde error into a diagnostic.
pub fn decode<T: DeserializeOwned>(
    value: Spanned<DeValue<'_>>,
    what: &str,
    file: &Path,
    diags: &mut Vec<Diagnostic>,
) -> Option<T> {
    let whole = value.span();
    match T::deserialize(ValueDeserializer::from(value)) {
        Ok(v) => Some(v),
        Err(e) => {
            let message = e.message().trim().to_string();
            // `scheduel = …` was reported as unknown with "did you mean
            // `schedule`?"; "missing field `schedule`" says it again.
            if let Some(field) = message
                .strip_prefix("missing field `")
                .and_then(|r| r.strip_suffix('`'))
                && diags.iter().any(|d| {
                    d.code == "unknown-key"
                        && d.location.as_ref().is_some_and(|l| l.file == file)
                        && d.hint.as_deref() == Some(&format!("did you mean `{field}`?"))
                })
            {
                return None;
            }
            let mut d = Diagnostic::error("invalid-value", format!("{what}: {message}"))
                .at(file, e.span().unwrap_or(whole));
            if let Some(h) = hint_for_serde_message(&message) {
                d = d.hint(h);
            }
            diags.push(d);
            None
        }
    }
}

/// Serde's messages name what was expected; turn the common ones into a fix.
fn hint_for_serde_message(message: &str) -> Option<String> {
    if let Some(rest) = message.strip_prefix("unknown variant `") {
        let (got, expected) = rest.split_once('`')?;
        let options: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
        return Some(match nearest(got, options.iter().copied()) {
            Some(n) => format!("did you mean `{n}`?"),
            None => format!("expected {}", super::diag::one_of(&options)),
        });
    }
    if message.starts_with("missing field") {
        return Some("add the key to this table".into());
    }
    if message.contains("invalid type: string") && message.contains("expected u") {
        return Some("write a number without quotes".into());
    }
    if message.contains("invalid type: integer") && message.contains("expected a string") {
        return Some(
            "quote the value; durations, sizes and rates carry a unit, e.g. \"4h\", \"4MiB\""
                .into(),
        );
    }
    if message.contains("invalid value: integer") {
        return Some("the number is out of range for this key".into());
    }
    if message.contains("expected a map") {
        return Some(
            "this key takes a table: a `[section]` of its own or `{ key = value }`".into(),
        );
    }
    if message.contains("expected a sequence") {
        return Some("this key takes a list: `[\"a\", \"b\"]`".into());
    }
    Some("docs/policy.md lists every key with its type".into())
}

fn single<T: DeserializeOwned>(
    slot: &mut Option<Entry<T>>,
    section: &str,
    file: &Path,
    key_span: Range<usize>,
    value: Spanned<DeValue<'_>>,
    diags: &mut Vec<Diagnostic>,
) {
    if let Some(first) = slot {
        diags.push(
            Diagnostic::error(
                "duplicate",
                format!("`[{section}]` is defined in more than one file"),
            )
            .at(file, key_span)
            .related(&first.file, first.name_span.clone(), "first defined here")
            .hint(format!(
                "keep one `[{section}]` table in the whole policy directory"
            )),
        );
        return;
    }
    if let Some(v) = decode::<T>(value, &format!("[{section}]"), file, diags) {
        *slot = Some(Entry {
            file: file.to_path_buf(),
            name_span: key_span,
            value: v,
        });
    }
}

fn named<T: DeserializeOwned>(
    map: &mut BTreeMap<String, Entry<T>>,
    broken: &mut std::collections::BTreeSet<String>,
    kind: &str,
    file: &Path,
    value: Spanned<DeValue<'_>>,
    diags: &mut Vec<Diagnostic>,
) {
    let span = value.span();
    let DeValue::Table(table) = value.into_inner() else {
        diags.push(
            Diagnostic::error("invalid-value", format!("a {kind} must be a named table"))
                .at(file, span)
                .hint(format!("write one table per {kind}: `[{}s.NAME]`", kind)),
        );
        return;
    };
    for (name, body) in table {
        let name_span = name.span();
        let name = name.into_inner().into_owned();
        if !valid_name(&name) {
            diags.push(
                Diagnostic::error(
                    "invalid-name",
                    format!("`{name}` is not a valid {kind} name"),
                )
                .at(file, name_span.clone())
                .hint("names start with a letter or digit and use letters, digits, `.`, `_`, `-`"),
            );
            broken.insert(name);
            continue;
        }
        if let Some(first) = map.get(&name) {
            diags.push(
                Diagnostic::error("duplicate", format!("{kind} `{name}` is defined twice"))
                    .at(file, name_span)
                    .related(&first.file, first.name_span.clone(), "first defined here")
                    .hint(format!(
                        "{kind} names are unique across all policy files; rename one"
                    )),
            );
            continue;
        }
        match decode::<T>(body, &format!("{kind} `{name}`"), file, diags) {
            Some(v) => {
                map.insert(
                    name,
                    Entry {
                        file: file.to_path_buf(),
                        name_span,
                        value: v,
                    },
                );
            }
            None => {
                broken.insert(name);
            }
        }
    }
}

/// Names of sources, tiers, policies, drills and notifiers.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && name.len() <= 64
}
