//! `plan`, `apply`, `compliance` and `retention simulate` from the command
//! line, on a policy directory whose source is the built-in lab.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Output, Stdio};

fn write_policy(dir: &Path) {
    std::fs::write(
        dir.join("coffer.toml"),
        r#"
[settings]
timezone = "Europe/Berlin"

[sources.lab]
kind = "lab"
lab_vms = 2

[tiers.local]
backend = "local"
path = "repo"
site = "here"

[tiers.offsite]
backend = "local"
path = "offsite"
site = "there"
media = "tape"

[policies.all]
sources = ["lab"]
vms = ["*"]
schedule = "0 0 1 * * *"
consistency = "crash"
backup_to = "local"

[policies.all.retain.local]
last = 3

[policies.all.retain.offsite]
daily = 7
"#,
    )
    .unwrap();
}

fn run(dir: &Path, args: &[&str]) -> Output {
    common::command_in(dir)
        .args(args)
        .args(["-p", "."])
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn a_saved_plan_is_applied_as_saved_and_refused_once_stale() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    write_policy(dir);
    for tier in ["local", "offsite"] {
        assert!(run(dir, &["repo", "init", "--tier", tier]).status.success());
    }
    let plan = run(dir, &["plan", "--out", "plan.json", "--detailed-exitcode"]);
    assert_eq!(plan.status.code(), Some(2), "{}", text(&plan));
    assert!(text(&plan).contains("+ backup lab-vm-01 → local (full"));
    let applied = run(dir, &["apply", "plan.json", "--no-mail"]);
    assert_eq!(applied.status.code(), Some(0), "{}", text(&applied));
    let out = text(&applied);
    assert_eq!(out.matches("done + backup").count(), 2, "{out}");
    // Exactly the saved actions: the new points are not copied by this run.
    assert!(!out.contains("done > copy"), "{out}");

    // Now the copies are pending; a plan saved, then the catalog changes.
    let plan = run(dir, &["plan", "--out", "copies.json"]);
    assert!(text(&plan).contains("> copy lab-vm-01"), "{}", text(&plan));
    assert!(
        run(dir, &["backup", "lab-vm-02", "--full"])
            .status
            .success()
    );
    let stale = run(dir, &["apply", "copies.json", "--no-mail"]);
    assert_eq!(stale.status.code(), Some(1));
    let err = text(&stale);
    assert!(
        err.contains("stale") && err.contains("@local appeared"),
        "{err}"
    );

    // A policy edit makes a saved plan stale too.
    let plan = run(dir, &["plan", "--out", "copies.json"]);
    assert!(plan.status.success());
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join("coffer.toml"))
        .unwrap();
    writeln!(f, "# reviewed").unwrap();
    let stale = run(dir, &["apply", "copies.json", "--no-mail"]);
    assert!(
        text(&stale).contains("policy file coffer.toml changed"),
        "{}",
        text(&stale)
    );

    // Without a file, apply plans and copies in one run; compliance then
    // holds but for the immutable copy.
    let applied = run(dir, &["apply", "--no-mail"]);
    assert_eq!(applied.status.code(), Some(0), "{}", text(&applied));
    assert!(text(&applied).contains("done > copy"), "{}", text(&applied));
    let c = run(dir, &["compliance"]);
    assert_eq!(c.status.code(), Some(3), "{}", text(&c));
    let c = text(&c);
    assert!(
        c.contains("BREACH: 0 immutable copies of 1 required"),
        "{c}"
    );
    assert!(!c.contains("copies of 3 required"), "{c}");
    let plan = run(dir, &["plan", "--detailed-exitcode"]);
    assert_eq!(
        plan.status.code(),
        Some(0),
        "nothing left to do: {}",
        text(&plan)
    );
}

#[test]
fn retention_simulate_names_the_rule_that_keeps_each_time() {
    let t = tempfile::tempdir().unwrap();
    write_policy(t.path());
    let mut child = common::command_in(t.path())
        .args([
            "retention",
            "simulate",
            "--policy",
            "all",
            "--tier",
            "offsite",
            "-p",
            ".",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"2026-11-20T23:30:00Z\n2026-11-21T00:30:00Z\n2026-11-21T22:00:00Z\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    // In Berlin, 23:30 UTC on the 20th is already the 21st: one bucket.
    assert!(
        s.contains("keep    2026-11-21 23:00:00 CET  daily 2026-11-21"),
        "{s}"
    );
    assert!(s.contains("remove  2026-11-21 01:30:00 CET"), "{s}");
    assert!(
        s.contains("2 kept, 1 removed of 3") || s.contains("1 kept, 2 removed of 3"),
        "{s}"
    );
    let bad = common::command_in(t.path())
        .args(["retention", "simulate", "-p", "."])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
}
