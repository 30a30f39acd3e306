//! coffer's machine-readable output: every document a command prints with
//! `--json` and every event `apply --json` streams, one type each.
//!
//! Every document is an object with the same three keys first: `format`
//! (the version of these formats, [`FORMAT`]), `command` (which command
//! printed it) and `generated` (when, RFC 3339 in UTC). Every event line
//! carries `format`, `time` and `event`. A field means the same thing
//! wherever it appears: times are RFC 3339 strings, sizes are bytes, a
//! `detail` is always a sentence (or null), a VM is named by `vm` (its
//! name) and `vm_uuid`.
//!
//! The JSON Schema of each document is generated from these types and
//! checked in under `docs/json/` (`coffer schema --output COMMAND`);
//! `docs/json.md` shows an example of each. This module owns the shapes;
//! it must never compute what they report (the engine does) nor print
//! (the command line does).

mod documents;
mod events;
mod stored;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use schemars::generate::SchemaSettings;
use serde::Serialize;
use serde_json::Value as Json;

pub use documents::*;
pub use events::{EventLine, event_lines, event_text};
pub use stored::*;

/// Version of coffer's JSON output formats. 2: every document has
/// `format`, `command` and `generated`, every event a `time`; `detail` is
/// always text; `validate` says `format` where it said `version`.
pub const FORMAT: u32 = 2;

/// A document one command prints with `--json`.
pub trait Document: Serialize + JsonSchema {
    /// The command as `command` names it and its schema file is named
    /// (`docs/json/<COMMAND>.schema.json`).
    const COMMAND: &'static str;
    /// The command lines that print it, for the schema's title.
    const USAGE: &'static str;
}

/// A document with the keys every document has.
#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
struct Envelope<'a, T> {
    /// Version of coffer's JSON output formats (docs/json.md).
    format: u32,
    /// The command that printed this document.
    command: &'a str,
    /// When the document was made (RFC 3339, UTC).
    generated: DateTime<Utc>,
    #[serde(flatten)]
    body: &'a T,
}

/// The document as `--json` prints it: pretty, in its envelope.
pub fn render<T: Document>(doc: &T) -> String {
    let envelope = Envelope {
        format: FORMAT,
        command: T::COMMAND,
        generated: Utc::now(),
        body: doc,
    };
    serde_json::to_string_pretty(&envelope).expect("documents serialize")
}

/// The JSON Schema (draft-07) of `T` in its envelope.
pub fn schema_of<T: JsonSchema>() -> Json {
    let schema = SchemaSettings::draft07()
        .into_generator()
        .into_root_schema_for::<T>();
    serde_json::to_value(schema).expect("a generated schema is valid JSON")
}

fn document_schema<T: Document + 'static>() -> (&'static str, Json) {
    let mut schema = schema_of::<Envelope<'static, T>>();
    schema["title"] = T::USAGE.into();
    (T::COMMAND, schema)
}

/// Every output's schema, by the name its file has under `docs/json/`:
/// the documents by command, and `apply-events` for `apply --json`.
pub fn schemas() -> Vec<(&'static str, Json)> {
    vec![
        document_schema::<Validate>(),
        document_schema::<Inventory>(),
        document_schema::<PlanDoc>(),
        document_schema::<Compliance>(),
        document_schema::<Backup>(),
        document_schema::<BackupImage>(),
        document_schema::<Retention>(),
        document_schema::<RepoLs>(),
        document_schema::<RepoVerify>(),
        document_schema::<CatalogSync>(),
        document_schema::<CatalogShow>(),
        document_schema::<LabWrite>(),
        ("apply-events", {
            let mut schema = schema_of::<EventLine>();
            schema["title"] = "coffer apply --json: one event per line".into();
            schema
        }),
    ]
}

/// What `coffer schema --output NAME` prints: that output's schema, or
/// for `list` every output's name; else which outputs there are.
pub fn output_schema(name: &str) -> Result<String, String> {
    let names: Vec<&str> = schemas().iter().map(|(n, _)| *n).collect();
    if name == "list" {
        return Ok(names.iter().map(|n| format!("{n}\n")).collect());
    }
    schema_text(name).ok_or_else(|| crate::policy::diag::no_such("JSON output", name, &names))
}

/// A schema as its checked-in file holds it.
pub fn schema_text(name: &str) -> Option<String> {
    let (_, schema) = schemas().into_iter().find(|(n, _)| *n == name)?;
    let mut text = serde_json::to_string_pretty(&schema).expect("schemas serialize");
    text.push('\n');
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::output_schema;

    #[test]
    fn an_output_schema_is_found_by_name_listed_or_refused_with_a_hint() {
        let list = output_schema("list").unwrap();
        assert!(list.lines().any(|l| l == "apply-events"), "{list}");
        assert!(output_schema("plan").unwrap().starts_with('{'));
        let e = output_schema("plann").unwrap_err();
        assert!(e.starts_with("no JSON output named `plann`"), "{e}");
    }
}
