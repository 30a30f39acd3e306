//! How long a backup's snapshot stays open, through the coffer binary
//! against the built-in lab: every backup records when its snapshot was
//! created and removed and says it, and a snapshot open past the policy's
//! `max_snapshot_lifetime` stops the read, is removed and fails the backup
//! with no point recorded.

mod common;

use std::path::Path;

use common::{in_policy_dir, snapshot_count, text};

fn policy_dir(dir: &Path, policy_extra: &str) {
    common::one_vm_lab_policy(dir, policy_extra);
    let init = in_policy_dir(dir, &["repo", "init", "--all"]);
    assert!(init.status.success(), "{}", text(&init));
}

fn points(dir: &Path) -> Vec<serde_json::Value> {
    let out = in_policy_dir(dir, &["catalog", "show", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("catalog show --json prints JSON ({e}): {}", text(&out)));
    v["vms"]
        .as_array()
        .expect("a list of VMs")
        .iter()
        .flat_map(|vm| vm["points"].as_array().cloned().unwrap_or_default())
        .collect()
}

#[test]
fn every_backup_records_how_long_its_snapshot_was_open() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    policy_dir(dir, "");
    let out = in_policy_dir(dir, &["apply", "--no-mail"]);
    let s = text(&out);
    assert!(out.status.success(), "{s}");
    assert!(s.contains("snapshot open "), "{s}");
    let points = points(dir);
    assert_eq!(points.len(), 1, "{points:?}");
    let snap = &points[0]["snapshot"];
    let created = snap["created"].as_str().expect("created recorded");
    let removed = snap["removed"].as_str().expect("removed recorded");
    assert!(created <= removed, "{snap}");
    assert!(snap["open_ms"].as_i64().is_some_and(|ms| ms >= 0), "{snap}");
    let report = in_policy_dir(dir, &["report"]);
    assert!(
        text(&report).contains("snapshot open "),
        "{}",
        text(&report)
    );
    // `coffer backup` records it the same way.
    let now = in_policy_dir(dir, &["backup", "lab-vm-01"]);
    assert!(now.status.success(), "{}", text(&now));
    assert!(text(&now).contains("snapshot open "), "{}", text(&now));
    let plan = in_policy_dir(dir, &["plan"]);
    assert!(plan.status.success(), "{}", text(&plan));
    let points = self::points(dir);
    assert_eq!(points.len(), 2, "{points:?}");
    assert!(
        points.iter().all(|p| p["snapshot"]["removed"].is_string()),
        "{points:?}"
    );
}

#[test]
fn a_snapshot_open_past_its_limit_stops_the_read_is_removed_and_records_nothing() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    // The read is slowed to 1 MiB/s (the VM holds about 30 MiB): it cannot
    // finish within the snapshot's one second.
    policy_dir(dir, "io_limit = \"1MiB/s\"\nmax_snapshot_lifetime = \"1s\"");
    let out = in_policy_dir(dir, &["apply", "--no-mail"]);
    let s = text(&out);
    assert_eq!(out.status.code(), Some(1), "{s}");
    assert!(
        s.contains("was open longer than the policy's max_snapshot_lifetime of 1s"),
        "{s}"
    );
    assert!(s.contains("snapshot open "), "the lifetime is said: {s}");
    assert_eq!(snapshot_count(dir), 0);
    assert!(points(dir).is_empty(), "no point was recorded");
    let ls = in_policy_dir(dir, &["repo", "ls", "--tier", "local"]);
    assert_eq!(
        common::stdout(&ls).lines().count(),
        1,
        "no point: {}",
        text(&ls)
    );
    let verify = in_policy_dir(dir, &["repo", "verify", "--tier", "local"]);
    assert!(verify.status.success(), "{}", text(&verify));
}
