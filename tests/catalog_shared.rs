//! A catalog on a real PostgreSQL server (`common::postgres`), shared by
//! two coffer installations (two policy directories with their own state
//! directories, as on two machines) over the same repositories: `apply`
//! journals there, one installation's runner keeps the other's out, a run
//! killed mid-backup is recovered from the shared journal, and either
//! installation reads the other's points without touching a tier.

mod common;

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::{snapshot_count, text};

/// A policy directory at `dir` whose tiers are the shared `repos` and whose
/// catalog is the PostgreSQL database `url`.
fn write_policy(dir: &Path, repos: &Path, url: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let catalog = common::postgres::settings(&common::postgres::location_at(url, dir));
    std::fs::write(
        dir.join("coffer.toml"),
        format!(
            r#"
[settings]
{catalog}
[sources.lab]
kind = "lab"
lab_vms = 2

[tiers.local]
backend = "local"
path = "{local}"
site = "here"

[policies.all]
sources = ["lab"]
vms = ["*"]
schedule = "0 0 1 * * *"
consistency = "crash"
backup_to = "local"

[policies.all.retain.local]
last = 3
"#,
            local = repos.join("local").display(),
        ),
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

#[test]
fn two_installations_share_one_postgres_catalog_and_its_journal() {
    let t = tempfile::tempdir().unwrap();
    let url = common::postgres::database();
    let (a, b) = (t.path().join("site-a"), t.path().join("site-b"));
    write_policy(&a, t.path(), &url);
    write_policy(&b, t.path(), &url);
    assert!(
        run(&a, &["repo", "init", "--tier", "local"])
            .status
            .success()
    );

    // Site A's runner holds a snapshot (its reads are slowed by 503s).
    let mut child = common::command_in(&a)
        .args(["apply", "--no-mail", "-p", "."])
        .env("COFFER_LAB_FAULTS", "unavailable=5")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while snapshot_count(&a) == 0 {
        assert!(Instant::now() < deadline, "no snapshot appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Site B has a state dir of its own: only the shared catalog's lock
    // keeps it out, and it names the run that holds it.
    let second = run(&b, &["apply", "--no-mail"]);
    assert_eq!(second.status.code(), Some(1), "{}", text(&second));
    assert!(
        text(&second).contains("another coffer runner is working on the shared catalog")
            && text(&second).contains("coffer apply, run "),
        "{}",
        text(&second)
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let left = snapshot_count(&a);
    assert!(left >= 1, "the killed run left its snapshots");

    // The next run finds the killed run's actions in the shared journal
    // and removes what they left.
    let again = run(&a, &["apply", "--no-mail"]);
    let out = text(&again);
    assert_eq!(again.status.code(), Some(0), "{out}");
    assert!(out.contains("recovered: run "), "{out}");
    assert_eq!(
        out.matches("removed its snapshot coffer-").count(),
        left,
        "every snapshot of the killed run is removed: {out}"
    );
    assert_eq!(snapshot_count(&a), 0);
    assert!(
        run(&a, &["repo", "verify", "--tier", "local"])
            .status
            .success()
    );

    // Site B reads site A's points from the catalog alone.
    let show = run(&b, &["catalog", "show", "--json"]);
    assert!(show.status.success(), "{}", text(&show));
    let v: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    let mut names: Vec<&str> = v["vms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|vm| vm["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["lab-vm-01", "lab-vm-02"], "{v}");
    for vm in v["vms"].as_array().unwrap() {
        assert_eq!(vm["points"].as_array().unwrap().len(), 1, "{vm}");
        assert_eq!(vm["points"][0]["copies"][0]["state"], "present", "{vm}");
    }
    // And nothing of the catalog was written to either state dir.
    for dir in [&a, &b] {
        assert!(!dir.join(".coffer/catalog.db").exists());
    }
}

/// `coffer validate` of a policy directory whose only setting is
/// `catalog = URL`: its exit code and what it printed.
/// `coffer repo gc` and `repo prune` on a tier of a policy directory whose
/// catalog is shared take the maintenance lock exclusively, as `apply`'s
/// do: each waits while a backup on another machine holds it shared
/// (PostgreSQL shows the lock request waiting), and runs once it is let go.
#[test]
fn repo_gc_and_prune_by_hand_wait_for_backups_on_other_machines() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("a");
    let url = common::postgres::database();
    write_policy(&dir, t.path(), &url);
    assert!(
        run(&dir, &["repo", "init", "--tier", "local"])
            .status
            .success()
    );
    let backed = run(&dir, &["apply", "--no-mail"]);
    assert!(backed.status.success(), "{}", text(&backed));
    let ls = run(&dir, &["repo", "ls", "--tier", "local", "--json"]);
    let listing: serde_json::Value = serde_json::from_slice(&ls.stdout).unwrap();
    let point = listing["points"][0]["point"].as_str().unwrap().to_string();
    let config = coffer::policy::load(&dir).config.unwrap();
    let mut db = common::postgres::connect(&url).unwrap();
    for args in [
        vec!["repo", "gc", "--tier", "local"],
        vec!["repo", "prune", &point, "--tier", "local"],
    ] {
        // A worker's backup writing on another machine.
        let writing =
            coffer::run::runlock::MaintenanceLock::take(&config.settings, false, "backup").unwrap();
        let mut child = common::command_in(&dir)
            .args(&args)
            .args(["-p", "."])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let waiting: i64 = db
                .query_one(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
                    &[],
                )
                .unwrap()
                .get(0);
            if waiting > 0 {
                break;
            }
            assert!(
                child.try_wait().unwrap().is_none(),
                "{args:?} ran beside a backup that held the lock"
            );
            assert!(
                Instant::now() < deadline,
                "{args:?} never waited for the lock"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        drop(writing);
        let done = child.wait_with_output().unwrap();
        assert!(done.status.success(), "{args:?}: {}", text(&done));
    }
    let ls = run(&dir, &["repo", "ls", "--tier", "local", "--json"]);
    let listing: serde_json::Value = serde_json::from_slice(&ls.stdout).unwrap();
    let ids: Vec<&str> = (listing["points"].as_array().unwrap().iter())
        .filter_map(|p| p["point"].as_str())
        .collect();
    assert!(!ids.contains(&point.as_str()), "pruned: {ids:?}");
}

fn validate_catalog(url: &str) -> (Option<i32>, String) {
    let t = tempfile::tempdir().unwrap();
    std::fs::write(
        t.path().join("coffer.toml"),
        format!("[settings]\ncatalog = \"{url}\"\n"),
    )
    .unwrap();
    let o = run(t.path(), &["validate"]);
    (o.status.code(), text(&o))
}

#[test]
fn a_password_in_a_postgres_catalog_url_is_refused_with_its_place() {
    let (code, out) = validate_catalog("postgres://coffer:hunter2@db.example.com/coffer");
    assert_eq!(code, Some(10), "{out}");
    assert!(out.contains("coffer.toml:2:11"), "{out}");
    assert!(out.contains("`catalog` holds a password"), "{out}");
    assert!(out.contains("catalog_password"), "{out}");
}

/// A CA file named by a relative path, or one given without asking for
/// TLS, is refused by `validate` with its place, before any connection.
#[test]
fn a_catalog_url_whose_tls_cannot_work_is_refused_with_its_place() {
    for (url, said) in [
        (
            "postgres://coffer@db.example.com/coffer?sslmode=verify-full&sslrootcert=ca.pem",
            "not an absolute path",
        ),
        (
            "postgres://coffer@db.example.com/coffer?sslrootcert=/etc/coffer/ca.pem",
            "add sslmode=verify-full",
        ),
    ] {
        let (code, out) = validate_catalog(url);
        assert_eq!(code, Some(10), "{out}");
        assert!(out.contains("coffer.toml:2:11"), "{out}");
        assert!(out.contains(said), "{out}");
    }
    // A URL that asks for verified TLS with an absolute CA path is valid.
    let (_, out) = validate_catalog(
        "postgres://coffer@db.example.com/coffer?sslmode=verify-full&sslrootcert=/etc/coffer/ca.pem",
    );
    assert!(!out.contains("bad-url"), "{out}");
}
