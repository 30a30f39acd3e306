//! The checked-in schema is what the code generates, and every example and
//! policy file points editors at it.

mod common;

use common::{root, toml_files};

#[test]
fn checked_in_schema_is_up_to_date() {
    let path = root().join("schema/coffer.schema.json");
    let on_disk = std::fs::read_to_string(&path).expect("schema/coffer.schema.json exists");
    let generated = coffer::policy::schema::schema_text();
    assert!(
        on_disk == generated,
        "schema/coffer.schema.json is stale: run `cargo run -- schema > schema/coffer.schema.json`"
    );
}

#[test]
fn schema_is_draft_07_and_closed() {
    let s = coffer::policy::schema::schema();
    assert_eq!(s["$schema"], "http://json-schema.org/draft-07/schema#");
    assert_eq!(s["additionalProperties"], false);
    for name in [
        "RawPolicy",
        "RawTier",
        "RawSource",
        "RawDrill",
        "RawRetain",
        "RawNotify",
    ] {
        assert_eq!(
            s["definitions"][name]["additionalProperties"], false,
            "{name} must reject unknown keys in editors too"
        );
    }
}

#[test]
fn every_example_and_policy_file_declares_the_schema_by_a_path_that_exists() {
    let mut files = toml_files(&root().join("examples"));
    files.extend(toml_files(&root().join("policies")));
    assert!(
        files.len() >= 5,
        "examples and policies hold files: {files:?}"
    );
    let schema = std::fs::canonicalize(root().join("schema/coffer.schema.json")).unwrap();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let first = text.lines().next().unwrap_or_default();
        let rel = first
            .strip_prefix("#:schema ")
            .unwrap_or_else(|| panic!("{} does not start with `#:schema`", f.display()));
        let target = f.parent().unwrap().join(rel.trim());
        assert_eq!(
            std::fs::canonicalize(&target).ok().as_ref(),
            Some(&schema),
            "{}: `#:schema {rel}` does not lead to schema/coffer.schema.json",
            f.display()
        );
    }
}
