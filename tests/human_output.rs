//! Output for people: the plan's standing is compact (a count, breaches in
//! full), apply shows each action's reason once, change ids only with
//! `-v`, times with their offset.

mod common;

use common::{command_in, in_policy_dir, one_vm_lab, stdout, text};

#[test]
fn plan_and_apply_say_each_thing_once_and_details_wait_for_v() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let lab = one_vm_lab(dir);

    let plan = stdout(&in_policy_dir(dir, &["plan"]));
    assert!(
        plan.contains("compliance: 0 of 1 VMs meet their policy"),
        "{plan}"
    );
    assert!(
        plan.contains("compliance lab-vm-01 (all): BREACH: "),
        "{plan}"
    );

    let o = in_policy_dir(dir, &["apply", "--no-mail"]);
    assert!(o.status.success(), "{}", text(&o));
    let applied = stdout(&o);
    assert_eq!(
        applied.matches("no restore point yet").count(),
        1,
        "the reason is in the plan's line only: {applied}"
    );
    assert!(
        applied.contains("done + backup lab-vm-01 → local (full, policy all) ("),
        "{applied}"
    );

    let write = command_in(dir)
        .args(["lab", "write", "lab-vm-01", "--percent", "2", "--state"])
        .arg(&lab)
        .output()
        .unwrap();
    assert!(write.status.success(), "{}", text(&write));
    let quiet = stdout(&in_policy_dir(dir, &["backup", "lab-vm-01"]));
    assert!(
        quiet.contains("incremental, what changed since the last point"),
        "{quiet}"
    );
    assert!(!quiet.contains("change id"), "{quiet}");
    let detailed = stdout(&in_policy_dir(dir, &["-v", "backup", "lab-vm-01"]));
    assert!(detailed.contains("changed since change id "), "{detailed}");

    let standing = stdout(&in_policy_dir(dir, &["compliance"]));
    assert!(
        standing.contains(" +00:00"),
        "times carry their offset: {standing}"
    );
}
