//! The catalog against a real repository: a tier is made with the real
//! binary (`repo init`, `backup-image`, `repo prune`), the catalog is rebuilt
//! and refreshed from it, and the drift names exactly what changed behind
//! its back. Also: the schema refuses a newer database, and a rebuild is
//! idempotent.

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use coffer::catalog::{Catalog, CatalogError, CopyState, SCHEMA_VERSION, Verification};
use coffer::repo::Repository;
use coffer::repo::local::LocalStore;
use common::{stderr, stdout};
use serde_json::Value;

/// A policy directory with one local tier, its repository, and a small
/// image to back up.
struct Setup {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    policies: PathBuf,
    repo: PathBuf,
    state: PathBuf,
    image: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let policies = dir.join("policies");
        std::fs::create_dir(&policies).unwrap();
        std::fs::write(
            policies.join("coffer.toml"),
            r#"
[settings]
timezone = "UTC"

[sources.lab]
kind = "lab"

[tiers.local]
backend = "local"
path = "../repo"
site = "here"

[policies.all]
sources = ["lab"]
vms = ["*"]
schedule = "0 0 1 * * *"
backup_to = "local"

[policies.all.retain.local]
last = 3
"#,
        )
        .unwrap();
        let image = dir.join("disk.raw");
        let f = std::fs::File::create(&image).unwrap();
        f.set_len(2 << 20).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, b"coffer catalog test", 4096).unwrap();
        let s = Setup {
            repo: dir.join("repo"),
            state: dir.join("state"),
            _tmp: tmp,
            dir,
            policies,
            image,
        };
        s.ok(&["repo", "init", "--tier", "local"]);
        s
    }

    /// Runs `coffer ARGS -p POLICIES` and insists on success.
    fn ok(&self, args: &[&str]) -> String {
        let mut all: Vec<&str> = args.to_vec();
        let p = self.policies.display().to_string();
        all.extend(["-p", &p]);
        let o = common::coffer_in(&self.dir, &all);
        assert!(
            o.status.success(),
            "coffer {all:?} failed:\n{}\n{}",
            stdout(&o),
            stderr(&o)
        );
        stdout(&o)
    }

    /// Backs the image up as `vm`; returns the new point id.
    fn backup(&self, vm: &str) -> String {
        let img = self.image.display().to_string();
        let out = self.ok(&[
            "backup-image",
            &img,
            "--vm",
            vm,
            "--tier",
            "local",
            "--json",
        ]);
        let v: Value = serde_json::from_str(&out).unwrap();
        v["point"].as_str().unwrap().to_string()
    }

    fn state_arg(&self) -> String {
        self.state.display().to_string()
    }

    /// `catalog rebuild|refresh --json`: the drift of tier `local`.
    fn sync(&self, verb: &str) -> Value {
        let state = self.state_arg();
        let out = self.ok(&[
            "catalog", verb, "--tier", "local", "--state", &state, "--json",
        ]);
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["format"], coffer::json::FORMAT);
        assert_eq!(v["tiers"][0]["tier"], "local");
        v["tiers"][0].clone()
    }

    fn show(&self) -> Value {
        let state = self.state_arg();
        let mut v: Value =
            serde_json::from_str(&self.ok(&["catalog", "show", "--state", &state, "--json"]))
                .unwrap();
        // When it was printed differs from one call to the next.
        v.as_object_mut().unwrap().remove("generated");
        v
    }

    fn manifest(&self, point: &str) -> PathBuf {
        let points = self.repo.join("points");
        for vm in std::fs::read_dir(&points).unwrap() {
            let m = vm.unwrap().path().join(point).join("manifest.json");
            if m.exists() {
                return m;
            }
        }
        panic!("no manifest for {point}");
    }

    fn open_catalog(&self) -> Catalog {
        Catalog::open(&self.state.join("catalog.db")).unwrap()
    }

    fn open_repo(&self) -> Repository {
        Repository::open(Arc::new(LocalStore::new(&self.repo).unwrap()), None).unwrap()
    }
}

/// `(kind, point)` pairs of a drift, sorted.
fn drift(d: &Value) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = d["drift"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["kind"].as_str().unwrap().to_string(),
                i["point"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

fn pair(kind: &str, point: &str) -> (String, String) {
    (kind.to_string(), point.to_string())
}

#[test]
fn a_pruned_point_is_reported_missing_and_nothing_else() {
    let s = Setup::new();
    let a = s.backup("web");
    let b = s.backup("web");
    let c = s.backup("db");

    let rebuilt = s.sync("rebuild");
    assert_eq!(rebuilt["listed"], 3);
    let mut never: Vec<_> = [&a, &b, &c].iter().map(|p| pair("never-seen", p)).collect();
    never.sort();
    assert_eq!(drift(&rebuilt), never);
    // Nothing changed: nothing to report.
    assert_eq!(drift(&s.sync("refresh")), vec![]);

    s.ok(&["repo", "prune", &a, "--tier", "local"]);
    let refreshed = s.sync("refresh");
    assert_eq!(refreshed["listed"], 2);
    assert_eq!(drift(&refreshed), vec![pair("missing", &a)]);
    // Recorded: the next refresh is quiet again.
    assert_eq!(drift(&s.sync("refresh")), vec![]);

    let catalog = s.open_catalog();
    let web = catalog
        .vms()
        .unwrap()
        .into_iter()
        .find(|v| v.name == "web")
        .unwrap();
    let points = catalog.points_of_vm(&web.uuid).unwrap();
    assert_eq!(points.len(), 2);
    assert_eq!(points[0].point_id, b, "newest first");
    assert_eq!(
        points[0].copy_on("local").unwrap().state,
        CopyState::Present
    );
    assert_eq!(
        points[1].copy_on("local").unwrap().state,
        CopyState::Missing
    );
    assert_eq!(points[0].disks.len(), 1);
    assert_eq!(points[0].disks[0].size_bytes, 2 << 20);
    assert_eq!(
        catalog
            .newest_good_point(&web.uuid)
            .unwrap()
            .unwrap()
            .point_id,
        b
    );
    assert!(catalog.tier_refresh("local").unwrap().unwrap().ok);

    // `show` says where the copies are.
    let show = s.show();
    let web_json = show["vms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "web")
        .unwrap();
    assert_eq!(web_json["points"][0]["copies"][0]["state"], "present");
    assert_eq!(web_json["points"][1]["copies"][0]["state"], "missing");
    let state = s.state_arg();
    let text = s.ok(&["catalog", "show", "--vm", "web", "--state", &state]);
    assert!(
        text.contains(a.as_str()) && text.contains("local (missing)"),
        "{text}"
    );
    assert!(!text.contains("db ("), "{text}");
}

#[test]
fn a_corrupted_manifest_is_reported_corrupt() {
    let s = Setup::new();
    let a = s.backup("web");
    let b = s.backup("web");
    s.sync("rebuild");

    let m = s.manifest(&a);
    let mut bytes = std::fs::read(&m).unwrap();
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&m, bytes).unwrap();

    let refreshed = s.sync("refresh");
    assert_eq!(drift(&refreshed), vec![pair("corrupt", &a)]);
    assert!(
        !refreshed["drift"][0]["detail"].as_str().unwrap().is_empty(),
        "a reason is given"
    );
    assert_eq!(drift(&s.sync("refresh")), vec![], "reported once");
    let catalog = s.open_catalog();
    let p = catalog.point(&a).unwrap().unwrap();
    assert_eq!(p.copy_on("local").unwrap().state, CopyState::Corrupt);
    assert!(
        catalog
            .point(&b)
            .unwrap()
            .unwrap()
            .present_on()
            .eq(["local"])
    );

    // A manifest that reads but names another point is corrupt too.
    let other = std::fs::read_to_string(s.manifest(&b)).unwrap();
    std::fs::write(s.manifest(&a), other).unwrap();
    let refreshed = s.sync("refresh");
    assert_eq!(drift(&refreshed), vec![], "still corrupt: no change");
    let p = s.open_catalog().point(&a).unwrap().unwrap();
    let detail = p.copy_on("local").unwrap().detail.clone().unwrap();
    assert!(detail.contains(&b), "{detail}");
}

#[test]
fn a_corrupt_manifest_of_an_unknown_point_is_still_recorded() {
    let s = Setup::new();
    let a = s.backup("web");
    std::fs::write(s.manifest(&a), b"{").unwrap();
    let rebuilt = s.sync("rebuild");
    assert_eq!(drift(&rebuilt), vec![pair("corrupt", &a)]);
    let show = s.show();
    assert_eq!(show["unreadable"][0]["point"], a.as_str());
    assert_eq!(show["unreadable"][0]["state"], "corrupt");
}

#[test]
fn a_new_point_is_reported_never_seen() {
    let s = Setup::new();
    let a = s.backup("web");
    s.sync("rebuild");
    let b = s.backup("web");
    let c = s.backup("mail");
    let refreshed = s.sync("refresh");
    let mut want = vec![pair("never-seen", &b), pair("never-seen", &c)];
    want.sort();
    assert_eq!(drift(&refreshed), want);
    let catalog = s.open_catalog();
    let names: Vec<String> = catalog.vms().unwrap().into_iter().map(|v| v.name).collect();
    assert_eq!(names, ["mail", "web"]);
    assert!(catalog.point(&a).unwrap().is_some());
}

#[test]
fn a_rebuild_is_idempotent() {
    let s = Setup::new();
    let a = s.backup("web");
    s.backup("web");
    s.backup("db");
    s.sync("rebuild");
    s.ok(&["repo", "prune", &a, "--tier", "local"]);
    s.sync("refresh");
    let first = s.show();
    let again = s.sync("rebuild");
    // Every copy is read anew: known points appear, nothing is new or lost.
    assert!(
        drift(&again).iter().all(|(k, _)| k == "appeared"),
        "{again}"
    );
    assert_eq!(s.show(), first_without_missing(&first));
    let twice = s.sync("rebuild");
    assert_eq!(drift(&twice), drift(&again));
    assert_eq!(s.show(), first_without_missing(&first));
}

/// After a rebuild the catalog no longer remembers a copy that vanished
/// before it: that copy is forgotten, its point stays (history).
fn first_without_missing(show: &Value) -> Value {
    let mut v = show.clone();
    for vm in v["vms"].as_array_mut().unwrap() {
        for p in vm["points"].as_array_mut().unwrap() {
            p["copies"]
                .as_array_mut()
                .unwrap()
                .retain(|c| c["state"] != "missing");
        }
    }
    v
}

#[test]
fn a_catalog_from_a_newer_coffer_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("catalog.db");
    drop(Catalog::open(&path).unwrap());
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
    }
    match Catalog::open(&path) {
        Err(e @ CatalogError::NewerSchema { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("newer than this coffer"), "{msg}");
            assert!(msg.contains(&format!("{}", SCHEMA_VERSION + 1)), "{msg}");
        }
        other => panic!("expected NewerSchema, got {other:?}"),
    }
    // And through the CLI, with the message on stderr.
    let o = common::coffer(&[
        "catalog",
        "show",
        "--state",
        &tmp.path().display().to_string(),
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("newer than this coffer"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_new_catalog_is_migrated_and_in_wal_mode() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("deep/state/catalog.db");
    let c = Catalog::open(&path).unwrap();
    assert_eq!(c.schema_version().unwrap(), SCHEMA_VERSION);
    drop(c);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let mode: String = conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    // Reopening an up-to-date catalog changes nothing.
    assert_eq!(
        Catalog::open(&path).unwrap().schema_version().unwrap(),
        SCHEMA_VERSION
    );
}

#[test]
fn a_failed_verification_is_not_a_good_point() {
    let s = Setup::new();
    let a = s.backup("web");
    let b = s.backup("web");
    let mut catalog = s.open_catalog();
    catalog.rebuild_tier("local", &s.open_repo()).unwrap();
    let vm = catalog.vms().unwrap()[0].uuid.clone();
    assert_eq!(catalog.newest_good_point(&vm).unwrap().unwrap().point_id, b);
    let now = chrono::Utc::now();
    catalog
        .record_verification(&Verification {
            kind: coffer::catalog::VerificationKind::Verify,
            point_id: b.clone(),
            tier: "local".into(),
            drill: None,
            started: now,
            finished: Some(now),
            ok: Some(false),
            detail: Some("chunk damaged".into()),
            data_ok: Some(false),
            guest_ok: None,
            guest_detail: None,
            restore_seconds: None,
            heartbeat_seconds: None,
            method: None,
        })
        .unwrap();
    assert_eq!(
        catalog
            .last_verification(&b)
            .unwrap()
            .unwrap()
            .detail
            .as_deref(),
        Some("chunk damaged")
    );
    assert_eq!(catalog.newest_good_point(&vm).unwrap().unwrap().point_id, a);
    assert!(catalog.last_verification(&a).unwrap().is_none());
}

#[test]
fn a_failed_guest_check_never_makes_a_point_bad() {
    let s = Setup::new();
    s.backup("web");
    let b = s.backup("web");
    let mut catalog = s.open_catalog();
    catalog.rebuild_tier("local", &s.open_repo()).unwrap();
    let vm = catalog.vms().unwrap()[0].uuid.clone();
    let now = chrono::Utc::now();
    // A restore drill proved every chunk, then its fsck failed.
    catalog
        .record_verification(&Verification {
            kind: coffer::catalog::VerificationKind::Restore,
            point_id: b.clone(),
            tier: "local".into(),
            drill: Some("fsck".into()),
            started: now,
            finished: Some(now),
            ok: Some(false),
            detail: Some("guest check failed: e2fsck: bad magic".into()),
            data_ok: Some(true),
            guest_ok: Some(false),
            guest_detail: Some("e2fsck: bad magic".into()),
            restore_seconds: None,
            heartbeat_seconds: None,
            method: None,
        })
        .unwrap();
    assert_eq!(catalog.newest_good_point(&vm).unwrap().unwrap().point_id, b);
    let data = catalog
        .last_data_verification(&b, "local")
        .unwrap()
        .unwrap();
    assert_eq!((data.data_ok, data.guest_ok), (Some(true), Some(false)));
    let runs = catalog.drill_runs().unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].guest_ok, Some(false));
    assert_eq!(runs[0].guest_detail.as_deref(), Some("e2fsck: bad magic"));
    // A drill that failed before it read the data is no data fact either.
    let later = now + chrono::Duration::seconds(1);
    catalog
        .record_verification(&Verification {
            kind: coffer::catalog::VerificationKind::Boot,
            point_id: b.clone(),
            tier: "local".into(),
            drill: Some("boot".into()),
            started: later,
            finished: Some(later),
            ok: Some(false),
            detail: Some("restore onto the drill host failed: host down".into()),
            data_ok: None,
            guest_ok: None,
            guest_detail: None,
            restore_seconds: None,
            heartbeat_seconds: None,
            method: None,
        })
        .unwrap();
    assert_eq!(catalog.newest_good_point(&vm).unwrap().unwrap().point_id, b);
    assert_eq!(
        catalog
            .last_data_verification(&b, "local")
            .unwrap()
            .unwrap()
            .drill
            .as_deref(),
        Some("fsck")
    );
}

#[test]
fn a_tier_that_cannot_be_listed_is_recorded_as_failed() {
    let s = Setup::new();
    s.backup("web");
    let mut catalog = s.open_catalog();
    let repo = s.open_repo();
    catalog.rebuild_tier("local", &repo).unwrap();
    // The repository's directory disappears (an unmounted disk).
    std::fs::rename(&s.repo, s.dir.join("elsewhere")).unwrap();
    let err = catalog.refresh_tier("local", &repo).unwrap_err();
    assert!(matches!(err, CatalogError::Listing { .. }), "{err}");
    let failed = catalog.tier_refresh("local").unwrap().unwrap();
    assert!(!failed.ok);
    assert!(failed.error.unwrap().contains("not a coffer repository"));
    // No copy was marked missing.
    let vm = catalog.vms().unwrap()[0].uuid.clone();
    let p = &catalog.points_of_vm(&vm).unwrap()[0];
    assert_eq!(p.copy_on("local").unwrap().state, CopyState::Present);
}

#[test]
fn a_failed_migration_leaves_the_database_as_it_was() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("catalog.db");
    {
        // A table in the way of migration 1.
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE alerts (x INTEGER);")
            .unwrap();
    }
    match Catalog::open(&path) {
        Err(CatalogError::Migration { version: 1, .. }) => {}
        other => panic!("expected migration 1 to fail, got {other:?}"),
    }
    let conn = rusqlite::Connection::open(&path).unwrap();
    let version: u32 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, 0);
    let tables: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'vms'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tables, 0, "nothing of the failed migration remains");
}
