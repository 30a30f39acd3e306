//! Every file under `examples/` and `policies/` is loaded and valid, so the
//! documentation cannot rot.

mod common;

use std::path::Path;

use common::{coffer, root, stdout, toml_files};

fn policy_dirs(top: &Path) -> Vec<std::path::PathBuf> {
    let mut dirs: Vec<_> = std::fs::read_dir(top)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir() && !toml_files(p).is_empty())
        .collect();
    dirs.sort();
    dirs
}

fn assert_valid_and_complete(dir: &Path) {
    let loaded = coffer::policy::load(dir);
    assert!(
        !loaded.has_errors(),
        "{} is invalid:\n{}",
        dir.display(),
        loaded.render()
    );
    assert!(
        loaded.diagnostics.is_empty(),
        "{} has warnings:\n{}",
        dir.display(),
        loaded.render()
    );
    let mut read = loaded.files.clone();
    read.sort();
    assert_eq!(
        read,
        toml_files(dir),
        "every file of {} is read",
        dir.display()
    );
}

#[test]
fn every_example_directory_is_valid() {
    let dirs = policy_dirs(&root().join("examples"));
    let names: Vec<_> = dirs
        .iter()
        .map(|d| d.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for expected in ["quickstart", "offsite-s3", "drills"] {
        assert!(
            names.iter().any(|n| n == expected),
            "examples/{expected} exists"
        );
    }
    for d in dirs {
        assert_valid_and_complete(&d);
    }
}

#[test]
fn the_sample_organisation_is_valid_and_uses_the_whole_vocabulary() {
    let dir = root().join("policies");
    assert_valid_and_complete(&dir);
    let config = coffer::policy::load(&dir).config.unwrap();
    assert!(config.policies.len() >= 3, "gold, silver, bronze");
    assert!(!config.notify.is_empty());
    let sites: std::collections::BTreeSet<_> = config
        .tiers
        .values()
        .filter_map(|t| t.site.clone())
        .collect();
    assert!(sites.len() >= 2, "two sites at least: {sites:?}");
    assert!(config.policies.values().any(|p| !p.drills.is_empty()));
}

#[test]
fn validate_exits_zero_on_the_examples() {
    for dir in ["examples/quickstart", "policies"] {
        let out = coffer(&["validate", "-p", dir]);
        assert_eq!(out.status.code(), Some(0), "{dir}: {}", stdout(&out));
        assert!(stdout(&out).contains(": valid ("));
    }
}
