//! The consistency a point records is what the host gave, through the
//! coffer binary against the built-in lab: a quiesced snapshot is
//! application-consistent only when the guest's VSS writers took part (a
//! Windows guest with `disk.EnableUUID`, whose snapshot the host stores a
//! VSS manifest with), file-system-consistent otherwise; and the policy's
//! `consistency` decides what a file-system-consistent snapshot does.

mod common;

use std::path::Path;

use coffer::lab::guest::GuestOs;
use common::{in_policy_dir, snapshot_count, text};

/// A one-VM lab policy directory asking for `consistency`, its tier made
/// and its lab state created (so the guest can be set before a backup).
fn policy_dir(dir: &Path, consistency: &str) {
    common::one_vm_lab_policy(dir, "");
    let toml = std::fs::read_to_string(dir.join("coffer.toml"))
        .unwrap()
        .replace(
            "consistency = \"crash\"",
            &format!("consistency = \"{consistency}\""),
        );
    std::fs::write(dir.join("coffer.toml"), toml).unwrap();
    let init = in_policy_dir(dir, &["repo", "init", "--all"]);
    assert!(init.status.success(), "{}", text(&init));
    let inv = in_policy_dir(dir, &["inventory"]);
    assert!(inv.status.success(), "{}", text(&inv));
}

fn lab_state(dir: &Path) -> std::path::PathBuf {
    dir.join(".coffer").join("lab").join("lab")
}

/// The consistency of each point the catalog holds.
fn recorded(dir: &Path) -> Vec<String> {
    let out = in_policy_dir(dir, &["catalog", "show", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("catalog show --json prints JSON ({e}): {}", text(&out)));
    let mut found = Vec::new();
    collect_consistency(&v, &mut found);
    found
}

fn collect_consistency(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            if let Some(c) = m.get("consistency").and_then(|c| c.as_str()) {
                out.push(c.to_string());
            }
            m.values().for_each(|x| collect_consistency(x, out));
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| collect_consistency(x, out)),
        _ => {}
    }
}

#[test]
fn a_linux_guest_quiesced_for_application_preferred_is_recorded_filesystem_with_an_alert() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    policy_dir(dir, "application-preferred");
    let out = in_policy_dir(dir, &["apply", "--no-mail"]);
    let s = text(&out);
    assert!(out.status.success(), "{s}");
    assert!(s.contains("filesystem-consistent"), "{s}");
    assert!(
        s.contains("alert: file-system-consistent, not application-consistent"),
        "{s}"
    );
    assert!(s.contains("is not Windows"), "the alert says why: {s}");
    assert_eq!(recorded(dir), ["filesystem"]);
    // The run report carries the alert too.
    let report = in_policy_dir(dir, &["report"]);
    assert!(
        text(&report).contains("file-system-consistent, not application-consistent"),
        "{}",
        text(&report)
    );
    // And every plan says it until a point is application-consistent.
    let plan = in_policy_dir(dir, &["plan"]);
    assert!(
        text(&plan).contains("is filesystem-consistent, and policy `all` prefers application"),
        "{}",
        text(&plan)
    );
    assert_eq!(snapshot_count(dir), 0);
}

#[test]
fn a_windows_guest_with_disk_uuids_is_recorded_application_consistent() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    policy_dir(dir, "application");
    coffer::lab::set_guest(&lab_state(dir), "lab-vm-01", GuestOs::Windows, true).unwrap();
    let out = in_policy_dir(dir, &["apply", "--no-mail"]);
    let s = text(&out);
    assert!(out.status.success(), "{s}");
    assert!(s.contains("application-consistent"), "{s}");
    assert!(!s.contains("alert:"), "{s}");
    assert_eq!(recorded(dir), ["application"]);
    // The VSS manifest went with the snapshot.
    let vm_dir = lab_state(dir).join("datastore").join("lab-vm-01");
    let left: Vec<_> = std::fs::read_dir(&vm_dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("vss-manifest"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(snapshot_count(dir), 0);
}

#[test]
fn application_asked_of_a_guest_without_vss_fails_and_leaves_no_snapshot() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    policy_dir(dir, "application");
    // A Windows guest without disk.EnableUUID quiesces its file systems only.
    coffer::lab::set_guest(&lab_state(dir), "lab-vm-01", GuestOs::Windows, false).unwrap();
    let out = in_policy_dir(dir, &["apply", "--no-mail"]);
    let s = text(&out);
    assert_eq!(out.status.code(), Some(1), "{s}");
    assert!(
        s.contains("only file-system-consistent") && s.contains("disk.EnableUUID is not TRUE"),
        "{s}"
    );
    assert_eq!(snapshot_count(dir), 0);
    assert!(recorded(dir).is_empty(), "no point was recorded");
    // A Linux guest the same.
    coffer::lab::set_guest(&lab_state(dir), "lab-vm-01", GuestOs::Linux, true).unwrap();
    let out = in_policy_dir(dir, &["apply", "--no-mail"]);
    let s = text(&out);
    assert_eq!(out.status.code(), Some(1), "{s}");
    assert!(s.contains("is not Windows"), "{s}");
    assert_eq!(snapshot_count(dir), 0);
    assert!(recorded(dir).is_empty(), "no point was recorded");
}

#[test]
fn filesystem_accepts_a_quiesced_snapshot_without_vss_and_says_nothing() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    policy_dir(dir, "filesystem");
    let out = in_policy_dir(dir, &["apply", "--no-mail"]);
    let s = text(&out);
    assert!(out.status.success(), "{s}");
    assert!(
        s.contains("filesystem-consistent") && !s.contains("alert:"),
        "{s}"
    );
    assert_eq!(recorded(dir), ["filesystem"]);
}

#[test]
fn a_windows_guest_whose_vss_writers_fail_is_recorded_filesystem_and_says_so() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    policy_dir(dir, "application-preferred");
    coffer::lab::set_guest(&lab_state(dir), "lab-vm-01", GuestOs::Windows, true).unwrap();
    // The host still takes the quiesced snapshot, without a VSS manifest.
    let out = common::command_in(dir)
        .env(coffer::lab::FAULTS_ENV, "vss-writers")
        .args(["apply", "--no-mail", "-p", "."])
        .output()
        .unwrap();
    let s = text(&out);
    assert!(out.status.success(), "{s}");
    assert!(
        s.contains("filesystem-consistent") && s.contains("VSS writers did not take part"),
        "{s}"
    );
    assert_eq!(recorded(dir), ["filesystem"]);
    assert_eq!(snapshot_count(dir), 0);
}
