//! Unknown-key detection driven by the JSON Schema generated from `raw`, so
//! the schema editors see and the keys `validate` accepts can never disagree.
//! Serde stops at the first unknown field; this walk finds all of them, with
//! the nearest valid key as a hint, and removes them so that deserializing
//! what is left still reports the type errors of the same table.

use std::path::Path;

use serde_json::Value as Json;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::diag::{Diagnostic, nearest, one_of};

/// Walks `table` against `schema` (the root schema with its definitions).
pub fn check_keys(
    table: &mut DeTable<'_>,
    schema: &Json,
    file: &Path,
    diags: &mut Vec<Diagnostic>,
) {
    walk_table(table, schema, schema, file, "", diags);
}

fn resolve<'a>(schema: &'a Json, root: &'a Json) -> &'a Json {
    let mut s = schema;
    for _ in 0..16 {
        match s.get("$ref").and_then(Json::as_str) {
            Some(r) => {
                let path = r.trim_start_matches('#');
                match root.pointer(path) {
                    Some(target) => s = target,
                    None => return s,
                }
            }
            None => return s,
        }
    }
    s
}

/// Picks the branch of an `anyOf`/`oneOf` that describes a value of this
/// shape (`Option<T>` becomes `anyOf [T, null]`).
fn branch_for<'a>(schema: &'a Json, root: &'a Json, want_object: bool) -> Option<&'a Json> {
    let s = resolve(schema, root);
    let variants = s
        .get("anyOf")
        .or_else(|| s.get("oneOf"))
        .and_then(Json::as_array);
    let Some(variants) = variants else {
        return Some(s);
    };
    // Several object branches (an untagged enum) cannot be told apart by
    // keys alone: leave those tables to serde.
    let matching: Vec<&Json> = variants
        .iter()
        .map(|v| resolve(v, root))
        .filter(|v| {
            let ty = v.get("type").and_then(Json::as_str);
            if want_object {
                ty == Some("object") || v.get("properties").is_some()
            } else {
                ty == Some("array")
            }
        })
        .collect();
    match matching.as_slice() {
        [one] => Some(one),
        _ => None,
    }
}

fn walk_value(
    value: &mut Spanned<DeValue<'_>>,
    schema: &Json,
    root: &Json,
    file: &Path,
    path: &str,
    diags: &mut Vec<Diagnostic>,
) {
    match value.get_mut() {
        DeValue::Table(t) => {
            if let Some(s) = branch_for(schema, root, true) {
                walk_table(t, s, root, file, path, diags);
            }
        }
        DeValue::Array(items) => {
            let Some(s) = branch_for(schema, root, false) else {
                return;
            };
            if let Some(item_schema) = s.get("items") {
                for item in items.iter_mut() {
                    walk_value(item, item_schema, root, file, path, diags);
                }
            }
        }
        _ => {}
    }
}

fn walk_table(
    table: &mut DeTable<'_>,
    schema: &Json,
    root: &Json,
    file: &Path,
    path: &str,
    diags: &mut Vec<Diagnostic>,
) {
    let schema = resolve(schema, root);
    let properties = schema.get("properties").and_then(Json::as_object);
    let additional = schema.get("additionalProperties");
    let closed = matches!(additional, Some(Json::Bool(false)));

    if let Some(props) = properties {
        let valid: Vec<&str> = props.keys().map(String::as_str).collect();
        let mut unknown = Vec::new();
        for (key, _) in table.iter() {
            let name: &str = key.get_ref();
            if !props.contains_key(name) && closed {
                let place = if path.is_empty() {
                    "at the top level".to_string()
                } else {
                    format!("in `{path}`")
                };
                let hint = match nearest(name, valid.iter().copied()) {
                    Some(n) => format!("did you mean `{n}`?"),
                    None => format!("valid keys here: {}", one_of(&valid)),
                };
                diags.push(
                    Diagnostic::error("unknown-key", format!("unknown key `{name}` {place}"))
                        .at(file, key.span())
                        .hint(hint),
                );
                unknown.push(name.to_string());
            }
        }
        if !unknown.is_empty() {
            let all = std::mem::take(table);
            for (k, v) in all {
                if !unknown.iter().any(|u| u.as_str() == k.get_ref().as_ref()) {
                    table.insert(k, v);
                }
            }
        }
        for (key, value) in table.iter_mut() {
            if let Some(prop) = props.get(key.get_ref().as_ref()) {
                let sub = join(path, key.get_ref());
                walk_value(value, prop, root, file, &sub, diags);
            }
        }
    } else if let Some(entry_schema) = additional.filter(|a| a.is_object()) {
        // A map of named entries, e.g. [policies.NAME].
        for (key, value) in table.iter_mut() {
            let sub = join(path, key.get_ref());
            walk_value(value, entry_schema, root, file, &sub, diags);
        }
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}
