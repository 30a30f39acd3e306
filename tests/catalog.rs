//! The catalog against a real repository: a tier is made with the real
//! binary (`repo init`, `backup-image`, `repo prune`), the catalog is rebuilt
//! and refreshed from it, and the drift names exactly what changed behind
//! its back. Also: the schema refuses a newer database, and a rebuild is
//! idempotent.
//!
//! Every test of the catalog's contents runs twice, on the embedded SQLite
//! file and on a real PostgreSQL server (`common::postgres`), through the
//! same commands and the same assertions.

mod common;

use std::path::Path;

use coffer::catalog::{Catalog, CatalogError, CopyState, SCHEMA_VERSION, Verification};
use coffer::policy::model::{CatalogLocation, SecretRef};
use common::catalog_site::{Backend, Setup, on_both};
use common::stderr;
use serde_json::Value;

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

on_both! {
    fn a_pruned_point_is_reported_missing_and_nothing_else(backend: Backend) {
        let s = Setup::new(backend);
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
        // The whole catalog at once reads the same.
        let all = catalog.all_points().unwrap();
        assert_eq!(all[&web.uuid], points);
        assert_eq!(all.values().map(Vec::len).sum::<usize>(), 3);
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
        let text = s.ok_on_catalog(&["catalog", "show", "--vm", "web"]);
        assert!(
            text.contains(a.as_str()) && text.contains("local (missing)"),
            "{text}"
        );
        assert!(!text.contains("db ("), "{text}");
    }
}

on_both! {
    fn a_corrupted_manifest_is_reported_corrupt(backend: Backend) {
        let s = Setup::new(backend);
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
}

on_both! {
    fn a_corrupt_manifest_of_an_unknown_point_is_still_recorded(backend: Backend) {
        let s = Setup::new(backend);
        let a = s.backup("web");
        std::fs::write(s.manifest(&a), b"{").unwrap();
        let rebuilt = s.sync("rebuild");
        assert_eq!(drift(&rebuilt), vec![pair("corrupt", &a)]);
        let show = s.show();
        assert_eq!(show["unreadable"][0]["point"], a.as_str());
        assert_eq!(show["unreadable"][0]["state"], "corrupt");
    }
}

on_both! {
    fn a_new_point_is_reported_never_seen(backend: Backend) {
        let s = Setup::new(backend);
        let a = s.backup("web");
        s.sync("rebuild");
        let b = s.backup("web");
        let c = s.backup("mail");
        let d = s.backup("Zeta");
        let refreshed = s.sync("refresh");
        let mut want = vec![
            pair("never-seen", &b),
            pair("never-seen", &c),
            pair("never-seen", &d),
        ];
        want.sort();
        assert_eq!(drift(&refreshed), want);
        let catalog = s.open_catalog();
        let names: Vec<String> = catalog.vms().unwrap().into_iter().map(|v| v.name).collect();
        // Byte order on both, whatever the server's collation (the test
        // cluster's, ICU en-US, would put "Zeta" last).
        assert_eq!(names, ["Zeta", "mail", "web"]);
        assert!(catalog.point(&a).unwrap().is_some());
    }
}

on_both! {
    fn a_rebuild_is_idempotent(backend: Backend) {
        let s = Setup::new(backend);
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

on_both! {
    fn a_failed_verification_is_not_a_good_point(backend: Backend) {
        let s = Setup::new(backend);
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
        let verdicts = catalog.data_verdicts().unwrap();
        assert_eq!(verdicts.get(&(b.clone(), "local".to_string())), Some(&false));
        assert_eq!(verdicts.len(), 1);
    }
}

on_both! {
    fn a_failed_guest_check_never_makes_a_point_bad(backend: Backend) {
        let s = Setup::new(backend);
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
}

on_both! {
    fn a_tier_that_cannot_be_listed_is_recorded_as_failed(backend: Backend) {
        let s = Setup::new(backend);
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

/// A PostgreSQL catalog on the test server, in a database of its own.
fn postgres_catalog() -> (tempfile::TempDir, CatalogLocation) {
    let tmp = tempfile::tempdir().unwrap();
    let at = common::postgres::location(tmp.path());
    (tmp, at)
}

/// The settings of installation `name` (its state dir under `root`) on
/// the catalog `at`.
fn installation(root: &Path, at: &CatalogLocation, name: &str) -> coffer::policy::model::Settings {
    coffer::policy::model::Settings {
        state_dir: root.join(name),
        catalog: at.clone(),
        timezone: chrono_tz::UTC,
        report_dir: root.join(name).join("reports"),
        healthcheck_url: None,
        name: name.into(),
    }
}

fn url_of(at: &CatalogLocation) -> &str {
    match at {
        CatalogLocation::Postgres { url, .. } => url,
        CatalogLocation::File(_) => unreachable!(),
    }
}

#[test]
fn a_postgres_catalog_from_a_newer_coffer_is_refused() {
    let (_tmp, at) = postgres_catalog();
    let c = Catalog::open_at(&at).unwrap();
    assert_eq!(c.schema_version().unwrap(), SCHEMA_VERSION);
    assert!(c.is_shared());
    drop(c);
    // Reopening an up-to-date catalog changes nothing.
    assert_eq!(
        Catalog::open_at(&at).unwrap().schema_version().unwrap(),
        SCHEMA_VERSION
    );
    common::postgres::connect(url_of(&at))
        .unwrap()
        .execute(
            "UPDATE coffer_schema SET version = $1",
            &[&i64::from(SCHEMA_VERSION + 1)],
        )
        .unwrap();
    match Catalog::open_at(&at) {
        Err(e @ CatalogError::NewerSchema { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("newer than this coffer"), "{msg}");
            assert!(msg.contains(url_of(&at)), "{msg}");
        }
        other => panic!("expected NewerSchema, got {other:?}"),
    }
}

#[test]
fn a_failed_postgres_migration_leaves_the_database_as_it_was() {
    let (_tmp, at) = postgres_catalog();
    let mut admin = common::postgres::connect(url_of(&at)).unwrap();
    // A table in the way of migration 1.
    admin
        .batch_execute("CREATE TABLE alerts (x INTEGER)")
        .unwrap();
    match Catalog::open_at(&at) {
        Err(CatalogError::Migration { version: 1, .. }) => {}
        other => panic!("expected migration 1 to fail, got {other:?}"),
    }
    let version: i64 = admin
        .query_one("SELECT version FROM coffer_schema", &[])
        .unwrap()
        .get(0);
    assert_eq!(version, 0);
    let vms: i64 = admin
        .query_one(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'vms'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(vms, 0, "migration 1 was rolled back whole");
    // Out of the way, the next open migrates.
    admin.batch_execute("DROP TABLE alerts").unwrap();
    assert_eq!(
        Catalog::open_at(&at).unwrap().schema_version().unwrap(),
        SCHEMA_VERSION
    );
}

#[test]
fn coffer_processes_opening_a_new_postgres_catalog_at_once_migrate_it_once() {
    let (_tmp, at) = postgres_catalog();
    let opened: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..6)
            .map(|_| scope.spawn(|| Catalog::open_at(&at).map(|c| c.schema_version())))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for o in opened {
        assert_eq!(o.unwrap().unwrap(), SCHEMA_VERSION);
    }
    let rows: i64 = common::postgres::connect(url_of(&at))
        .unwrap()
        .query_one("SELECT count(*) FROM coffer_schema", &[])
        .unwrap()
        .get(0);
    assert_eq!(rows, 1);
}

#[test]
fn a_wrong_postgres_password_is_an_error_that_names_the_catalog() {
    let (tmp, at) = postgres_catalog();
    let wrong = tmp.path().join("wrong");
    std::fs::write(&wrong, "not the password").unwrap();
    let at = CatalogLocation::Postgres {
        url: url_of(&at).to_string(),
        password: Some(SecretRef::File(wrong)),
    };
    let err = Catalog::open_at(&at).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, CatalogError::Connect { .. }) && msg.contains(url_of(&at)),
        "{msg}"
    );
    assert!(msg.contains("password"), "{msg}");
    assert!(
        !msg.contains("not the password"),
        "the secret is never shown: {msg}"
    );
}

/// `sslmode=verify-full` with `sslrootcert`: the catalog is opened over
/// TLS (the server says so of the connection), the server's certificate
/// verified against the CA named. Without that CA (the system's roots do
/// not know it), or through a host name the certificate does not name,
/// coffer refuses the server. Without `sslmode`, it speaks plain text.
#[test]
fn a_postgres_catalog_over_tls_verifies_the_server() {
    let (tmp, at) = postgres_catalog();
    let (url, password) = match &at {
        CatalogLocation::Postgres { url, password } => (url.clone(), password.clone()),
        CatalogLocation::File(_) => unreachable!(),
    };
    let ca = common::postgres::server().ca_file();
    let ssl_of_session = |url: &str| -> Result<bool, String> {
        let mut c =
            coffer::catalog::connect_postgres(url, password.as_ref()).map_err(|e| e.to_string())?;
        let row = c
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .unwrap();
        Ok(row.get(0))
    };
    let verified = format!("{url}?sslmode=verify-full&sslrootcert={}", ca.display());
    assert_eq!(ssl_of_session(&verified), Ok(true));
    assert_eq!(ssl_of_session(&url), Ok(false), "no sslmode: plain text");
    // The catalog itself, through the same connection.
    let tls_at = CatalogLocation::Postgres {
        url: verified.clone(),
        password: password.clone(),
    };
    let mut c = Catalog::open_at(&tls_at).unwrap();
    c.worker_seen("w1", "host-a", 4242).unwrap();
    assert_eq!(c.workers().unwrap().len(), 1);

    let unknown_ca = ssl_of_session(&format!("{url}?sslmode=require")).unwrap_err();
    assert!(unknown_ca.contains("certificate"), "{unknown_ca}");
    let other_name = verified.replace("@127.0.0.1:", "@localhost:");
    let refused = ssl_of_session(&other_name).unwrap_err();
    assert!(refused.contains("certificate"), "{refused}");
    let relative =
        ssl_of_session(&format!("{url}?sslmode=require&sslrootcert=ca.pem")).unwrap_err();
    assert!(relative.contains("not an absolute path"), "{relative}");
    let no_tls = ssl_of_session(&format!("{url}?sslrootcert={}", ca.display())).unwrap_err();
    assert!(no_tls.contains("sslmode"), "{no_tls}");
    drop(tmp);
}

#[test]
fn two_installations_sharing_a_postgres_catalog_never_run_at_once() {
    let (tmp, at) = postgres_catalog();
    let (a, b) = (
        installation(tmp.path(), &at, "site-a"),
        installation(tmp.path(), &at, "site-b"),
    );
    let held = coffer::run::runlock::RunnerLock::take(&a, "coffer apply, run A").unwrap();
    // Another state dir (another machine): its own flock is free, the
    // catalog's lock is not.
    let err = coffer::run::runlock::RunnerLock::take(&b, "coffer apply, run B")
        .unwrap_err()
        .to_string();
    assert!(err.contains("another coffer runner"), "{err}");
    assert!(
        err.contains("coffer apply, run A"),
        "the holder is named: {err}"
    );
    drop(held);
    let _b = coffer::run::runlock::RunnerLock::take(&b, "coffer apply, run B").unwrap();
}

#[test]
fn gc_on_one_machine_waits_for_backups_written_on_another() {
    use coffer::run::runlock::MaintenanceLock;
    use std::sync::atomic::{AtomicBool, Ordering};
    let (tmp, at) = postgres_catalog();
    let settings = installation(tmp.path(), &at, "site");
    // Two workers write at once: the lock is shared.
    let a = MaintenanceLock::take(&settings, false, "backup a").unwrap();
    let b = MaintenanceLock::take(&settings, false, "backup b").unwrap();
    let released = AtomicBool::new(false);
    std::thread::scope(|s| {
        let gc = s.spawn(|| {
            let held = MaintenanceLock::take(&settings, true, "gc").unwrap();
            // The gc got the lock only once both backups let go.
            assert!(released.load(Ordering::SeqCst), "gc ran beside a backup");
            drop(held);
        });
        std::thread::sleep(std::time::Duration::from_millis(500));
        drop(a);
        std::thread::sleep(std::time::Duration::from_millis(300));
        released.store(true, Ordering::SeqCst);
        drop(b);
        gc.join().unwrap();
    });
    // A SQLite catalog is one machine's: nothing to take.
    let file = coffer::policy::model::Settings {
        catalog: CatalogLocation::File(tmp.path().join("catalog.db")),
        ..settings.clone()
    };
    let _x = MaintenanceLock::take(&file, true, "gc").unwrap();
    let _y = MaintenanceLock::take(&file, true, "gc").unwrap();
}

on_both! {
    fn a_refresh_reads_only_the_manifests_written_since_it_read_them(backend: Backend) {
        let s = Setup::new(backend);
        let (a, b, c) = (s.backup("web"), s.backup("db"), s.backup("mail"));
        // Counts the manifests read.
        let read = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let local = coffer::repo::local::LocalStore::new(&s.repo).unwrap();
        let mut store = common::store::Around::new(std::sync::Arc::new(local));
        let counter = read.clone();
        store.on_get = Box::new(move |key| {
            if key.ends_with("/manifest.json") {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        });
        let taken = || read.swap(0, std::sync::atomic::Ordering::SeqCst);
        let repo = coffer::repo::Repository::open(std::sync::Arc::new(store), None).unwrap();
        let mut catalog = s.open_catalog();
        let refresh = |catalog: &mut Catalog| {
            let d = catalog.refresh_tier("local", &repo).unwrap();
            assert_eq!(d.listed, 3);
            d.items.iter().map(|i| format!("{} {:?}", i.point.point_id, i.kind)).collect::<Vec<_>>()
        };
        assert_eq!(refresh(&mut catalog).len(), 3, "three points never seen");
        assert_eq!(taken(), 3);
        assert!(refresh(&mut catalog).is_empty());
        assert_eq!(taken(), 0, "nothing was written: nothing is read");

        // The same bytes written again: read again, and still good.
        let bytes = std::fs::read(s.manifest(&a)).unwrap();
        std::fs::write(s.manifest(&a), &bytes).unwrap();
        assert!(refresh(&mut catalog).is_empty());
        assert_eq!(taken(), 1);

        // Damaged in place, same size, its time set back: still read again
        // (its change time moved), and found corrupt.
        let m = s.manifest(&b);
        let before = std::fs::metadata(&m).unwrap();
        let mut damaged = std::fs::read(&m).unwrap();
        damaged[0] = b'[';
        std::fs::write(&m, &damaged).unwrap();
        let f = std::fs::File::options().write(true).open(&m).unwrap();
        f.set_modified(before.modified().unwrap()).unwrap();
        drop(f);
        assert_eq!(std::fs::metadata(&m).unwrap().len(), before.len());
        let found = refresh(&mut catalog);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with(&format!("{b} Corrupt")), "{found:?}");
        assert_eq!(taken(), 1);
        // A corrupt copy is read at every refresh, until it reads again.
        assert!(refresh(&mut catalog).is_empty());
        assert_eq!(taken(), 1);

        // A manifest read more than a week ago is read again, written or not.
        s.sql(&format!(
            "UPDATE copies SET last_seen = '2026-01-01T00:00:00.000000Z' WHERE point_id = '{c}'"
        ));
        assert!(refresh(&mut catalog).is_empty());
        assert_eq!(taken(), 2, "c, and the corrupt b");
        assert!(refresh(&mut catalog).is_empty());
        assert_eq!(taken(), 1, "the corrupt b only");

        // The operator's `catalog refresh` reads every manifest.
        catalog.reread_tier("local", &repo).unwrap();
        assert_eq!(taken(), 3);
    }
}

/// On object storage a refresh that finds nothing written reads no
/// manifest: the listing and the repository's config only. A manifest
/// written again (same size, other bytes: a new ETag) is read again.
#[test]
fn on_object_storage_a_refresh_reads_only_the_manifests_written_again() {
    use std::sync::atomic::Ordering::SeqCst;
    let proxy = common::s3::FaultyProxy::start();
    let bucket = common::s3::bucket(false);
    let location = common::s3::location(&bucket, &proxy.endpoint());
    let store = std::sync::Arc::new(coffer::repo::s3::S3Store::new(location).unwrap());
    let repo = coffer::repo::Repository::init_with(store.clone(), None, None).unwrap();
    let t = tempfile::tempdir().unwrap();
    let image = t.path().join("disk.raw");
    common::noise_file(&image, 256 << 10, 3);
    let vm = coffer::repo::manifest::VmIdentity::new("web", "4210eeee-0000-0000-0000-000000000001");
    let a = common::backup_image(&repo, vm.clone(), &image, None, None, 64 << 10);
    common::backup_image(&repo, vm, &image, None, None, 64 << 10);
    let mut catalog = Catalog::open(&t.path().join("catalog.db")).unwrap();
    let gets = || proxy.faults.gets.load(SeqCst);

    let g = gets();
    assert_eq!(catalog.refresh_tier("s3", &repo).unwrap().items.len(), 2);
    let first = gets() - g;
    let g = gets();
    assert!(catalog.refresh_tier("s3", &repo).unwrap().items.is_empty());
    assert_eq!(
        gets() - g,
        first - 2,
        "the same requests but the two manifests"
    );

    let key = format!("points/{}/{}/manifest.json", a.vm.uuid, a.point_id);
    let mut bytes = coffer::repo::store::Store::get(store.as_ref(), &key).unwrap();
    bytes[0] = b'[';
    coffer::repo::store::Store::put(store.as_ref(), &key, &bytes).unwrap();
    let g = gets();
    let drift = catalog.refresh_tier("s3", &repo).unwrap();
    assert_eq!(gets() - g, first - 1, "one manifest read again");
    assert!(
        matches!(&drift.items[..], [i] if i.point.point_id == a.point_id
            && matches!(i.kind, coffer::catalog::DriftKind::Corrupt { .. })),
        "{:?}",
        drift.items
    );
}
