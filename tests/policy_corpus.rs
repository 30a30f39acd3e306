//! The bad-input corpus: every directory under `tests/bad-policies/` is an
//! invalid policy directory. `coffer validate` must exit 10, name the
//! expected diagnostic codes (`expect.txt`) with file:line:col, a caret line
//! and a hint, and print exactly what the snapshot recorded. Generated cases
//! cover inputs too big to check in. Nothing may panic.

mod common;

use std::path::Path;

use common::{coffer, coffer_in, root, stderr, stdout};

fn check_case(dir: &Path, shown_as: &str) -> String {
    let out = coffer_in(dir.parent().unwrap(), &["validate", "-p", shown_as]);
    let text = stdout(&out);
    assert_eq!(
        out.status.code(),
        Some(10),
        "{shown_as} must be invalid (exit 10):\n{text}{}",
        stderr(&out)
    );
    assert!(
        !stderr(&out).contains("panicked"),
        "{shown_as} panicked: {}",
        stderr(&out)
    );
    text
}

#[test]
fn every_corpus_case_is_rejected_with_its_diagnostic() {
    let corpus = root().join("tests/bad-policies");
    let mut cases: Vec<_> = std::fs::read_dir(&corpus)
        .expect("tests/bad-policies exists")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    assert!(cases.len() >= 40, "the corpus has {} cases", cases.len());
    for case in cases {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let text = check_case(&case, &name);
        let expect = std::fs::read_to_string(case.join("expect.txt"))
            .unwrap_or_else(|_| panic!("{name}/expect.txt names the expected codes"));
        for code in expect.split_whitespace() {
            assert!(
                text.contains(&format!("error[{code}]")),
                "{name}: expected error[{code}] in:\n{text}"
            );
        }
        if !name.contains("empty") {
            assert!(
                text.contains(" --> "),
                "{name}: a location is printed:\n{text}"
            );
            assert!(
                text.contains('^'),
                "{name}: a caret line is printed:\n{text}"
            );
        }
        assert!(
            text.contains("= hint: "),
            "{name}: a hint is printed:\n{text}"
        );
        insta::assert_snapshot!(name, text);
    }
}

#[test]
fn a_ten_megabyte_file_is_refused_without_reading_it() {
    let dir = tempfile::tempdir().unwrap();
    let line = "# padding padding padding padding padding padding padding padding\n";
    std::fs::write(
        dir.path().join("huge.toml"),
        line.repeat(10 * 1024 * 1024 / line.len() + 1),
    )
    .unwrap();
    let out = coffer(&["validate", "-p", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(10));
    assert!(
        stdout(&out).contains("error[file-too-large]"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn deeply_nested_values_are_an_error_not_a_stack_overflow() {
    let dir = tempfile::tempdir().unwrap();
    let depth = 100_000;
    let text = format!("x = {}1{}\n", "[".repeat(depth), "]".repeat(depth));
    std::fs::write(dir.path().join("deep.toml"), text).unwrap();
    let tables = format!(
        "{}\n",
        (0..5000)
            .map(|i| format!("[a{}]", ".b".repeat(i % 200)))
            .collect::<Vec<_>>()
            .join("\n")
    );
    std::fs::write(dir.path().join("tables.toml"), tables).unwrap();
    let out = coffer(&["validate", "-p", dir.path().to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(10),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(stdout(&out).contains("deep.toml:1:"), "{}", stdout(&out));
}

#[test]
fn a_missing_directory_is_reported_with_a_hint() {
    let out = coffer(&["validate", "-p", "no/such/dir"]);
    assert_eq!(out.status.code(), Some(10));
    assert!(stdout(&out).contains("error[no-policy-dir]"));
    assert!(stdout(&out).contains("examples/quickstart"));
}

#[test]
fn json_output_is_versioned_and_locates_every_problem() {
    let out = coffer(&["validate", "--json", "-p", "tests/bad-policies"]);
    // The corpus as one directory: every case merged, many problems at once.
    assert_eq!(out.status.code(), Some(10));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    assert_eq!(doc["format"], coffer::json::FORMAT);
    assert_eq!(doc["valid"], false);
    let diags = doc["diagnostics"].as_array().unwrap();
    assert!(
        diags.len() >= 40,
        "all problems in one run, got {}",
        diags.len()
    );
    for d in diags {
        assert!(d["code"].is_string() && d["message"].is_string());
        if d["file"].is_string() {
            assert!(d["line"].as_u64().unwrap() >= 1 && d["column"].as_u64().unwrap() >= 1);
        }
    }
}

mod no_panic {
    use proptest::prelude::*;

    const BASE: &str = include_str!("../examples/quickstart/coffer.toml");

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

        /// Random edits of a valid file never panic the loader: they give a
        /// valid config or diagnostics that all carry a location.
        #[test]
        fn mutated_policies_never_panic(edits in prop::collection::vec((0usize..2000, any::<u8>(), 0u8..3), 1..8)) {
            let mut bytes = BASE.as_bytes().to_vec();
            for (at, byte, op) in edits {
                let i = at % (bytes.len() + 1);
                match op {
                    0 => bytes.insert(i, byte),
                    1 if i < bytes.len() => { bytes.remove(i); }
                    _ if i < bytes.len() => bytes[i] = byte,
                    _ => {}
                }
            }
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("p.toml"), &bytes).unwrap();
            let loaded = coffer::policy::load(dir.path());
            prop_assert!(loaded.config.is_some() || loaded.has_errors());
            for d in &loaded.diagnostics {
                prop_assert!(d.location.is_some(), "{:?}", d);
            }
            let _ = loaded.render();
        }
    }
}
