//! First contact: `coffer init` writes a policy directory that validates
//! and runs as it is. Against the lab, a newcomer's flow from the README
//! (init, repo init, apply) backs the lab's VMs up; against a host, init
//! pins the certificate the host presents, lists its VMs, and the policy
//! it writes backs that host up.

mod common;

use std::path::Path;
use std::process::Output;

use common::text;

fn coffer(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = common::command_in(dir);
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

#[test]
fn init_then_apply_backs_up_the_lab_with_the_defaults() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let out = coffer(dir, &["init"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("next: coffer validate -p policies"),
        "{}",
        text(&out)
    );
    let policies = dir.join("policies");
    let toml = std::fs::read_to_string(policies.join("coffer.toml")).unwrap();
    assert!(
        toml.starts_with("#:schema ./coffer.schema.json\n"),
        "{toml}"
    );
    assert_eq!(
        std::fs::read(policies.join("coffer.schema.json")).unwrap(),
        coffer(dir, &["schema"], &[]).stdout,
        "the schema the policy file names is coffer's"
    );
    let ignore = std::fs::read_to_string(policies.join(".gitignore")).unwrap();
    assert!(ignore.contains(".coffer/") && ignore.contains("repo/"));

    // The README's flow, every command with its default policy directory.
    let validate = coffer(dir, &["validate"], &[]);
    assert!(validate.status.success(), "{}", text(&validate));
    assert!(
        coffer(dir, &["repo", "init", "--all"], &[])
            .status
            .success()
    );
    let apply = coffer(dir, &["apply", "--no-mail"], &[]);
    let s = text(&apply);
    assert_eq!(apply.status.code(), Some(0), "{s}");
    for vm in ["lab-vm-01", "lab-vm-02"] {
        assert!(s.contains(&format!("done + backup {vm}")), "{s}");
    }

    // A second init leaves the directory alone.
    let again = coffer(dir, &["init"], &[]);
    assert!(!again.status.success());
    assert!(
        text(&again).contains("already holds policies"),
        "{}",
        text(&again)
    );
    assert_eq!(
        std::fs::read_to_string(policies.join("coffer.toml")).unwrap(),
        toml
    );
}

#[test]
fn init_from_a_host_pins_its_certificate_lists_its_vms_and_backs_it_up() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let mut cfg = coffer::lab::LabConfig::new(dir.join("host"));
    cfg.vms = 2;
    let lab = coffer::lab::Lab::start(cfg).unwrap();
    let env = [("COFFER_TEST_HOST_PASSWORD", lab.password())];
    let args = [
        "init",
        "site",
        "--from-source",
        lab.url(),
        "--user",
        lab.user(),
        "--password-env",
        "COFFER_TEST_HOST_PASSWORD",
    ];

    let wrong = coffer(
        dir,
        &args,
        &[("COFFER_TEST_HOST_PASSWORD", "not-the-password")],
    );
    assert!(!wrong.status.success());
    assert!(text(&wrong).contains("logging in to"), "{}", text(&wrong));
    assert!(!dir.join("site/coffer.toml").exists(), "nothing written");

    let out = coffer(dir, &args, &env);
    let s = text(&out);
    assert!(out.status.success(), "{s}");
    assert!(
        s.contains(&format!("presents the certificate {}", lab.thumbprint())),
        "{s}"
    );
    let toml = std::fs::read_to_string(dir.join("site/coffer.toml")).unwrap();
    assert!(
        toml.contains(&format!("thumbprint = \"{}\"", lab.thumbprint())),
        "{toml}"
    );
    assert!(toml.contains("kind = \"esxi\""), "{toml}");
    assert!(
        toml.contains("password = { env = \"COFFER_TEST_HOST_PASSWORD\" }"),
        "{toml}"
    );
    assert!(toml.contains("#   lab-vm-01\n#   lab-vm-02\n"), "{toml}");

    assert!(
        coffer(dir, &["validate", "-p", "site"], &[])
            .status
            .success()
    );
    assert!(
        coffer(dir, &["repo", "init", "--all", "-p", "site"], &[])
            .status
            .success()
    );
    let apply = coffer(dir, &["apply", "--no-mail", "-p", "site"], &env);
    let s = text(&apply);
    assert_eq!(apply.status.code(), Some(0), "{s}");
    for vm in ["lab-vm-01", "lab-vm-02"] {
        assert!(s.contains(&format!("done + backup {vm}")), "{s}");
    }
    drop(lab);
}

#[test]
fn the_version_names_the_commit_it_was_built_from() {
    let out = coffer(&common::root(), &["--version"], &[]);
    let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(common::root())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    match head {
        Some(head) => assert_eq!(
            s,
            format!("coffer {} (commit {head})", env!("CARGO_PKG_VERSION"))
        ),
        // Outside a git checkout the build says so.
        None => assert!(s.ends_with("(commit unknown)"), "{s}"),
    }
}
