//! Snapshot storms: a snapshot removal that left its delta files unmerged
//! (`runtime.consolidationNeeded`) is an alert in every plan, and `apply`
//! consolidates the disks of a VM coffer protects even when no backup of it
//! is due.

mod common;

use std::path::Path;
use std::process::Output;

use common::text;

fn write_policy(dir: &Path) {
    common::one_vm_lab_policy(dir, "");
}

fn run(dir: &Path, args: &[&str], faults: Option<&str>) -> Output {
    let mut c = common::command_in(dir);
    if let Some(f) = faults {
        c.env("COFFER_LAB_FAULTS", f);
    }
    c.args(args).args(["-p", "."]).output().unwrap()
}

fn needs_consolidation(dir: &Path) -> bool {
    let inv: serde_json::Value =
        serde_json::from_slice(&run(dir, &["inventory", "--json"], None).stdout).unwrap();
    inv["vms"][0]["consolidation_needed"].as_bool().unwrap()
}

#[test]
fn a_vm_left_needing_consolidation_is_consolidated_by_the_next_apply() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    write_policy(dir);
    assert!(run(dir, &["repo", "init", "--all"], None).status.success());
    // The host drops the backup's snapshot but does not merge its delta.
    let first = run(dir, &["apply", "--no-mail"], Some("remove-snapshot"));
    assert!(needs_consolidation(dir), "{}", text(&first));

    let plan = run(dir, &["plan"], None);
    let plan_text = text(&plan);
    assert!(
        plan_text.contains("! alert lab-vm-01: its disks need consolidation"),
        "{plan_text}"
    );
    assert!(
        plan_text.contains("~ consolidate lab-vm-01:"),
        "{plan_text}"
    );
    let applied = run(dir, &["apply", "--no-mail"], None);
    let applied_text = text(&applied);
    assert!(applied.status.success(), "{applied_text}");
    assert!(
        applied_text.contains("done ~ consolidate lab-vm-01"),
        "{applied_text}"
    );
    assert!(!needs_consolidation(dir), "{applied_text}");
    let again = run(dir, &["plan"], None);
    assert!(!text(&again).contains("consolidat"), "{}", text(&again));
}
