//! Two tiers are never one storage: `validate` compares canonical paths
//! (symlinks resolved) and S3 bucket and prefix, and opening the tiers of
//! a policy compares repository ids, for what neither path shows (here: two
//! endpoints of one S3 server). Either way nothing is listed or pruned.

mod common;

use std::path::Path;
use std::process::Output;

use common::s3;

fn run(dir: &Path, args: &[&str]) -> Output {
    common::command_in(dir)
        .args(args)
        .args(["-p", "."])
        .env("TEST_S3_KEY", "coffer-test")
        .env("TEST_S3_SECRET", "coffer-test-secret")
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

const HEAD: &str = r#"
[settings]
timezone = "UTC"

[sources.lab]
kind = "lab"
lab_vms = 1

[tiers.fast]
backend = "local"
path = "repo"
"#;

const POLICY: &str = r#"
[policies.all]
sources = ["lab"]
vms = ["*"]
schedule = "0 0 1 * * *"
consistency = "crash"
backup_to = "fast"

[policies.all.retain.fast]
last = 10
"#;

/// Manifests under a local repository.
fn point_count(repo: &Path) -> usize {
    let Ok(vms) = std::fs::read_dir(repo.join("points")) else {
        return 0;
    };
    vms.flatten()
        .flat_map(|vm| std::fs::read_dir(vm.path()).unwrap().flatten())
        .filter(|p| p.path().join("manifest.json").exists())
        .count()
}

/// Three points of the lab VM on tier `fast`.
fn three_points(dir: &Path) {
    std::fs::write(dir.join("coffer.toml"), format!("{HEAD}{POLICY}")).unwrap();
    assert!(
        run(dir, &["repo", "init", "--tier", "fast"])
            .status
            .success()
    );
    for _ in 0..3 {
        let o = run(dir, &["backup", "lab-vm-01"]);
        assert!(o.status.success(), "{}", text(&o));
    }
    assert_eq!(point_count(&dir.join("repo")), 3);
}

#[test]
fn two_tiers_reaching_one_repository_through_a_symlink_are_refused_and_nothing_is_pruned() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    three_points(dir);
    // A second tier on the same directory, through a symlink, whose
    // retention keeps one point.
    std::os::unix::fs::symlink(dir.join("repo"), dir.join("mirror")).unwrap();
    std::fs::write(
        dir.join("coffer.toml"),
        format!(
            "{HEAD}\n[tiers.mirror]\nbackend = \"local\"\npath = \"mirror\"\n{POLICY}\n\
             [policies.all.retain.mirror]\nlast = 1\n"
        ),
    )
    .unwrap();
    let o = run(dir, &["validate"]);
    assert_eq!(o.status.code(), Some(10), "{}", text(&o));
    assert!(
        text(&o).contains(
            "error[same-storage]: tier `mirror` (`mirror`) is the same storage as tier `fast` (`repo`)"
        ),
        "{}",
        text(&o)
    );
    let o = run(dir, &["apply", "--no-mail", "--allow-mass-prune"]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("error[same-storage]"), "{}", text(&o));
    assert_eq!(point_count(&dir.join("repo")), 3, "{}", text(&o));
}

#[test]
fn two_tiers_opening_one_repository_by_two_endpoints_are_refused_and_nothing_is_pruned() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let bucket = s3::bucket(false);
    // One S3 server under two addresses: no path comparison can tell.
    let proxy = s3::FaultyProxy::start();
    let tier = |name: &str, endpoint: &str| {
        format!(
            r#"
[tiers.{name}]
backend = "s3"
bucket = "{bucket}"
prefix = "dc1"
endpoint = "{endpoint}"
access_key = {{ env = "TEST_S3_KEY" }}
secret_key = {{ env = "TEST_S3_SECRET" }}
"#
        )
    };
    std::fs::write(
        dir.join("coffer.toml"),
        format!(
            "{HEAD}{}{}{POLICY}\n[policies.all.retain.offsite]\nlast = 10\n\
             [policies.all.retain.copy]\nlast = 1\n",
            tier("offsite", &s3::moto().endpoint()),
            tier("copy", &proxy.endpoint()),
        ),
    )
    .unwrap();
    let o = run(dir, &["validate"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        run(dir, &["repo", "init", "--tier", "fast"])
            .status
            .success()
    );
    assert!(
        run(dir, &["repo", "init", "--tier", "offsite"])
            .status
            .success()
    );
    for _ in 0..3 {
        let o = run(dir, &["backup", "lab-vm-01", "--tier", "offsite"]);
        assert!(o.status.success(), "{}", text(&o));
    }
    let listed = |o: &Output| text(o).lines().filter(|l| l.contains("lab-vm-01")).count();
    let before = run(dir, &["repo", "ls", "--tier", "offsite"]);
    assert_eq!(listed(&before), 3, "{}", text(&before));

    for args in [
        &["plan"][..],
        &["compliance"][..],
        &["apply", "--no-mail", "--allow-mass-prune"][..],
    ] {
        let o = run(dir, args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", text(&o));
        assert!(
            text(&o).contains("tiers `copy` and `offsite` open the same repository"),
            "{args:?}: {}",
            text(&o)
        );
    }
    let after = run(dir, &["repo", "ls", "--tier", "offsite"]);
    assert_eq!(listed(&after), 3, "{}", text(&after));
}
