//! Setting a directory up, as the quickstart and the README say: every
//! command that loads policies exits 10 on an invalid directory; a secret
//! that is not there at run time is an error naming it (never a tier that
//! seems empty); `apply` before the repositories exist refuses up front
//! and names `coffer repo init --all`, which creates every tier's.

mod common;

use std::path::Path;
use std::process::Output;

use common::{command_in, stderr, stdout};

fn run(dir: &Path, args: &[&str]) -> Output {
    command_in(dir)
        .args(args)
        .args(["-p", "."])
        .env_remove("COFFER_TEST_MISSING_KEY")
        .output()
        .unwrap()
}

fn both(o: &Output) -> String {
    format!("{}{}", stdout(o), stderr(o))
}

fn lab_policy(dir: &Path, tier_extra: &str) {
    std::fs::write(
        dir.join("coffer.toml"),
        format!(
            r#"
[settings]
timezone = "UTC"

[sources.lab]
kind = "lab"
lab_vms = 1

[tiers.local]
backend = "local"
path = "repo"
site = "here"
{tier_extra}

[tiers.second]
backend = "local"
path = "repo2"
site = "there"

[policies.all]
sources = ["lab"]
vms = ["*"]
schedule = "0 0 1 * * *"
consistency = "crash"
backup_to = "local"

[policies.all.retain.local]
last = 3

[policies.all.retain.second]
last = 3
"#
        ),
    )
    .unwrap();
}

#[test]
fn every_command_that_loads_policies_exits_10_on_an_invalid_directory() {
    let t = tempfile::tempdir().unwrap();
    std::fs::write(
        t.path().join("coffer.toml"),
        "[tiers.local\nbackend = \"local\"\n",
    )
    .unwrap();
    let commands: &[&[&str]] = &[
        &["validate"],
        &["plan"],
        &["apply", "--no-mail"],
        &["compliance"],
        &["inventory"],
        &["backup", "vm"],
        &["report", "--compliance"],
        &["catalog", "refresh"],
        &["catalog", "rebuild", "--tier", "local"],
        &["repo", "ls", "--tier", "local"],
        &["repo", "init", "--tier", "local"],
        &["repo", "init", "--all"],
        &["restore", "vm", "--tier", "local", "--out", "x"],
        &[
            "export", "vm", "--tier", "local", "--out", "x", "--format", "ova",
        ],
        &["daemon"],
    ];
    for args in commands {
        let out = run(t.path(), args);
        assert_eq!(
            out.status.code(),
            Some(10),
            "`coffer {}` must exit 10:\n{}",
            args.join(" "),
            both(&out)
        );
    }
}

#[test]
fn a_missing_or_unbounded_secret_is_an_error_naming_it_in_plan_and_apply() {
    let t = tempfile::tempdir().unwrap();
    lab_policy(
        t.path(),
        r#"encryption_key = { env = "COFFER_TEST_MISSING_KEY" }"#,
    );
    for args in [&["plan"][..], &["apply", "--no-mail"][..]] {
        let out = run(t.path(), args);
        let s = both(&out);
        assert_eq!(out.status.code(), Some(1), "{}: {s}", args[0]);
        assert!(
            s.contains("tier `local`: encryption key: environment variable `COFFER_TEST_MISSING_KEY` is not set"),
            "{}: {s}",
            args[0]
        );
        assert!(!s.contains("no restore point yet"), "{s}");
    }
    // A secret file that is a device is refused at once, not read forever.
    lab_policy(t.path(), r#"encryption_key = { file = "/dev/zero" }"#);
    let out = run(t.path(), &["plan"]);
    let s = both(&out);
    assert_eq!(out.status.code(), Some(1), "{s}");
    assert!(
        s.contains("/dev/zero") && s.contains("not a regular file"),
        "{s}"
    );
}

#[test]
fn apply_before_repo_init_refuses_up_front_and_repo_init_all_creates_every_tier() {
    let t = tempfile::tempdir().unwrap();
    lab_policy(t.path(), "");
    let out = run(t.path(), &["apply", "--no-mail"]);
    let s = both(&out);
    assert_eq!(out.status.code(), Some(1), "{s}");
    assert!(s.contains("`local`, `second`"), "{s}");
    assert!(s.contains("coffer repo init --all"), "{s}");
    assert!(!s.contains("backup"), "nothing was attempted: {s}");
    assert!(!t.path().join("repo/config").exists());

    let init = run(t.path(), &["repo", "init", "--all"]);
    assert!(init.status.success(), "{}", both(&init));
    assert!(t.path().join("repo/config").is_file());
    assert!(t.path().join("repo2/config").is_file());
    let again = run(t.path(), &["repo", "init", "--all"]);
    assert!(again.status.success(), "{}", both(&again));
    assert_eq!(stdout(&again).matches("already a repository").count(), 2);

    let out = run(t.path(), &["apply", "--no-mail"]);
    assert_eq!(out.status.code(), Some(0), "{}", both(&out));
}
