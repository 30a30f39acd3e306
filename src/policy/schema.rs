//! The JSON Schema (draft-07) of a policy file, generated from the `raw`
//! types. `schema/coffer.schema.json` is this output, checked in; the key check
//! of `load` walks the same value, so editors and `validate` agree.

use std::path::Path;
use std::sync::OnceLock;

use schemars::generate::SchemaSettings;
use serde_json::Value as Json;
use toml::de::DeTable;

use super::diag::Diagnostic;
use super::raw::RawFile;

/// The schema as JSON.
pub fn schema() -> &'static Json {
    static SCHEMA: OnceLock<Json> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let schema = SchemaSettings::draft07()
            .into_generator()
            .into_root_schema_for::<RawFile>();
        serde_json::to_value(schema).expect("a generated schema is valid JSON")
    })
}

/// The schema as the text checked in at `schema/coffer.schema.json`.
pub fn schema_text() -> String {
    let mut text = serde_json::to_string_pretty(schema()).expect("schema serializes");
    text.push('\n');
    text
}

/// Reports (and removes) every key the schema does not know.
pub fn check_keys(table: &mut DeTable<'_>, file: &Path, diags: &mut Vec<Diagnostic>) {
    super::keys::check_keys(table, schema(), file, diags);
}
