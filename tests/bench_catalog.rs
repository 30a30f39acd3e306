//! Planning from the catalog, on SQLite and on PostgreSQL: a site of
//! `COFFER_BENCH_VMS` VMs (default 10,000) with 100 points each, laid out
//! as the planner benchmark's site (`benches/plan.rs`: 60 nightly points,
//! then about one a week back to a year; the newest 15 on `local`, all but
//! the newest on `offsite`, about one a month on `archive`; one disk; a
//! data verification of every tenth point, a few that found damage).
//!
//! Timed, best of three:
//! - the whole read (`all_points` + `data_verdicts`), what planning read
//!   before the points were kept between runs;
//! - `read_points` with no saved read (the first plan: read everything and
//!   save it), and with one and nothing changed;
//! - a night: each VM gets a new point on `local`, last night's point its
//!   copy on `offsite`, and the oldest local point is pruned; then
//!   `read_points` (the first plan of the morning) and the planner on what
//!   it read: planning's time, from catalog to plan.
//!
//! Run by `scripts/bench-catalog.sh` (release build); ignored otherwise.

mod common;

use std::sync::Arc;
use std::time::Instant;

use coffer::catalog::Catalog;
use coffer::engine::point_cache::{self, How};
use coffer::plan::planner::{PlanInput, plan, restic_retention};
use coffer::policy::Config;
use coffer::policy::model::CatalogLocation;
use coffer::repo::Repository;
use coffer::repo::local::LocalStore;
use coffer::repo::store::ObjectMeta;
use coffer::vsphere::types::{ChangeId, DiskBacking, MoRef, VmDisk, VmRecord};

const POINTS: i64 = 100;

/// How the benchmark's tier lists every manifest (`ObjectMeta::fingerprint`
/// of the listing below).
const AS_LISTED: &str = "1:0:listed";

/// Seconds (best of three) to refresh the fill's `offsite` tier, every
/// manifest on it listed as a refresh last read it, within the week:
/// the catalog's side of the refresh before each plan when nothing was
/// written. The refresh must find no drift.
fn refresh_unchanged(
    c: &mut Catalog,
    run_sql: &dyn Fn(&str),
    dir: &std::path::Path,
    vms: i64,
) -> f64 {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    run_sql(&format!(
        "UPDATE copies SET manifest_seen = '{AS_LISTED}', last_seen = '{now}' WHERE tier = 'offsite';"
    ));
    let path = dir.join("offsite-repo");
    Repository::init_with(Arc::new(LocalStore::new(&path).unwrap()), None, None).unwrap();
    // The fill's offsite copies: every point but each VM's newest.
    let listing: Vec<(String, String)> = (0..vms * POINTS)
        .filter(|n| n % POINTS > 0)
        .map(|n| (format!("vm-{:08}", n / POINTS), format!("p-{n:08}")))
        .collect();
    // A listing of the tier's points given, not written: a million files
    // are not needed to time the catalog's side.
    let mut store = common::store::Around::new(Arc::new(LocalStore::new(&path).unwrap()));
    store.listing = Box::new(move |prefix| {
        let meta = |(vm, point): &(String, String)| ObjectMeta {
            key: format!("points/{vm}/{point}/manifest.json"),
            size_bytes: 1,
            modified: std::time::UNIX_EPOCH,
            tag: Some("listed".into()),
        };
        (prefix == "points/").then(|| listing.iter().map(meta).collect())
    });
    let repo = Repository::open(Arc::new(store), None).unwrap();
    let mut best = f64::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        let drift = c.refresh_tier("offsite", &repo).unwrap();
        best = best.min(t.elapsed().as_secs_f64());
        assert_eq!(drift.listed as i64, vms * (POINTS - 1));
        assert!(drift.items.is_empty(), "{:?}", drift.items.first());
    }
    best
}

/// The site's "now": 2027-01-01T00:00:00Z.
const NOW: i64 = 1_798_761_600;

/// SQL for the points' numbers `0..n` as `{col}`, a time of `{secs}`
/// seconds since the epoch as the catalog writes it, and a number padded
/// to eight digits, in each dialect.
struct Dialect {
    postgres: bool,
}

impl Dialect {
    fn series(&self, col: &str, n: i64) -> String {
        if self.postgres {
            format!("SELECT g AS {col} FROM generate_series(0, {}) g", n - 1)
        } else {
            format!(
                "WITH RECURSIVE s({col}) AS (SELECT 0 UNION ALL SELECT {col} + 1 FROM s WHERE {col} < {}) SELECT {col} FROM s",
                n - 1
            )
        }
    }

    fn time(&self, secs: &str) -> String {
        if self.postgres {
            format!(
                "to_char(to_timestamp({secs}) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
            )
        } else {
            format!("strftime('%Y-%m-%dT%H:%M:%S.000000Z', {secs}, 'unixepoch')")
        }
    }

    fn pad(&self, expr: &str) -> String {
        if self.postgres {
            format!("lpad(CAST({expr} AS TEXT), 8, '0')")
        } else {
            format!("printf('%08d', {expr})")
        }
    }
}

/// Fills the catalog's tables with `vms` VMs of `POINTS` points.
fn fill_sql(vms: i64, d: &Dialect) -> String {
    // n: the point's number over the whole site; its VM n / POINTS; j its
    // age in the VM's list, 0 the newest.
    let series = d.series("n", vms * POINTS);
    let vm = d.pad(&format!("n / {POINTS}"));
    let pid = d.pad("n");
    let j = format!("(n % {POINTS})");
    // 60 nightly points, then one about every 7.6 days; last night 11 h
    // before now, each VM's backup a few minutes after another's.
    let age = format!(
        "(CASE WHEN {j} < 60 THEN {j} * 86400 ELSE CAST((60 + ({j} - 60) * 7.6) * 86400 AS INTEGER) END)"
    );
    let created = d.time(&format!(
        "{NOW} - 39600 - {age} + (n / {POINTS}) * 7 % 1800"
    ));
    let copy = |tier: &str, when: &str| {
        format!(
            "INSERT INTO copies (point_id, vm_uuid, tier, state, detail, locked_until, first_seen, last_seen) \
               SELECT 'p-' || {pid}, 'vm-' || {vm}, '{tier}', 'present', NULL, NULL, {created}, {created} \
               FROM ({series}) s WHERE {when};"
        )
    };
    let now = d.time(&NOW.to_string());
    format!(
        "INSERT INTO vms (uuid, name, source, first_seen, last_seen) \
           SELECT 'vm-' || {vm}, 'vm' || {vm}, 'vc', {now}, {now} FROM ({series}) s \
           WHERE n % {POINTS} = 0;
         INSERT INTO points (point_id, vm_uuid, created, kind, parent, consistency, duration_ms, source, vm_name) \
           SELECT 'p-' || {pid}, 'vm-' || {vm}, {created}, \
                  CASE WHEN {j} % 30 = 0 THEN 'full' ELSE 'incremental' END, NULL, 'crash', 60000, 'vc', 'vm' || {vm} \
           FROM ({series}) s;
         INSERT INTO point_disks (point_id, device_key, label, size_bytes, chunk_size_bytes, index_sha256, change_id, backing) \
           SELECT 'p-' || {pid}, 2000, 'Hard disk 1', 42949672960, 4194304, 'ab', \
                  '52 3f 9a 1c 6e 0b 44 d2-8e 71 2a 5c 9f 03 b6 e4/' || n, NULL \
           FROM ({series}) s;
         {}
         {}
         {}
         INSERT INTO verifications (kind, point_id, tier, started, finished, ok, data_ok) \
           SELECT 'verify', 'p-' || {pid}, 'offsite', {now}, {now}, \
                  CASE WHEN n % 2000 = 10 THEN 0 ELSE 1 END, CASE WHEN n % 2000 = 10 THEN 0 ELSE 1 END \
           FROM ({series}) s WHERE n % 10 = 0 AND {j} > 0;",
        copy("local", &format!("{j} < 15")),
        copy("offsite", &format!("{j} > 0")),
        copy("archive", &format!("{j} % 30 = 1 OR ({j} >= 60 AND {j} % 4 = 0)")),
    )
}

/// Night `k` (from 1): each VM's new point on `local`, the point before it
/// on `offsite`, and the oldest point on `local` pruned from there. The
/// new points are `k` days after the site's last night.
fn night_sql(vms: i64, k: i64, d: &Dialect) -> String {
    let series = d.series("v", vms);
    let vm = d.pad("v");
    let created = d.time(&format!("{NOW} - 39600 + {k} * 86400 + v * 7 % 1800"));
    let id = |night: i64| format!("'p-n{night}-' || {vm}");
    // The point before: last night's, or the site's newest (j = 0).
    let before = if k == 1 {
        format!("'p-' || {}", d.pad(&format!("v * {POINTS}")))
    } else {
        id(k - 1)
    };
    // The oldest on local: the site's j = 15 - k.
    let oldest = format!("'p-' || {}", d.pad(&format!("v * {POINTS} + {}", 15 - k)));
    format!(
        "INSERT INTO points (point_id, vm_uuid, created, kind, parent, consistency, duration_ms, source, vm_name) \
           SELECT {new}, 'vm-' || {vm}, {created}, 'incremental', NULL, 'crash', 60000, 'vc', 'vm' || {vm} \
           FROM ({series}) s;
         INSERT INTO point_disks (point_id, device_key, label, size_bytes, chunk_size_bytes, index_sha256, change_id, backing) \
           SELECT {new}, 2000, 'Hard disk 1', 42949672960, 4194304, 'ab', '52 3f 9a/n{k}-' || v, NULL \
           FROM ({series}) s;
         INSERT INTO copies (point_id, vm_uuid, tier, state, detail, locked_until, first_seen, last_seen) \
           SELECT {new}, 'vm-' || {vm}, 'local', 'present', NULL, NULL, {created}, {created} FROM ({series}) s;
         INSERT INTO copies (point_id, vm_uuid, tier, state, detail, locked_until, first_seen, last_seen) \
           SELECT {before}, 'vm-' || {vm}, 'offsite', 'present', NULL, NULL, {created}, {created} \
           FROM ({series}) s WHERE 1 = 1 ON CONFLICT (point_id, tier) DO NOTHING;
         UPDATE copies SET state = 'missing' WHERE tier = 'local' AND point_id IN \
           (SELECT {oldest} FROM ({series}) s);",
        new = id(k),
    )
}

/// The site's policies (`benches/site.toml`, as `benches/plan.rs` plans
/// them, without its drills), with the state dir (for the saved read) in
/// `dir`.
fn config(dir: &std::path::Path) -> Config {
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::write(
        policies.join("coffer.toml"),
        include_str!("../benches/site.toml"),
    )
    .unwrap();
    let loaded = coffer::policy::load(&policies);
    let mut config = loaded
        .config
        .unwrap_or_else(|| panic!("{:?}", loaded.diagnostics));
    config.settings.state_dir = dir.join("state");
    config
}

/// The site's VMs as the inventory finds them.
fn inventory(vms: i64) -> Vec<(String, VmRecord)> {
    (0..vms)
        .map(|v| {
            let name = format!("vm{v:08}");
            (
                "vc".to_string(),
                VmRecord {
                    moref: MoRef::new("VirtualMachine", format!("vm-{v}")),
                    name: name.clone(),
                    instance_uuid: Some(format!("vm-{v:08}")),
                    power_state: None,
                    tools_running_status: None,
                    ip_address: None,
                    change_tracking_enabled: true,
                    consolidation_needed: false,
                    encryption_key: None,
                    vmx_path: None,
                    datacenter: None,
                    host: None,
                    disks: vec![VmDisk {
                        key: 2000,
                        capacity_bytes: 40 << 30,
                        file_name: format!("[ds{}] {name}/{name}.vmdk", v % 8),
                        datastore: None,
                        change_id: Some(ChangeId(format!("52 3f 9a/{v}"))),
                        disk_mode: Some("persistent".into()),
                        backing: DiskBacking::Vmdk,
                        slot: None,
                    }],
                    snapshots: vec![],
                },
            )
        })
        .collect()
}

/// The whole read: what `gather` asked before the points were kept
/// between runs, in four queries.
fn read_now(c: &Catalog) -> usize {
    let mut all = c.all_points().unwrap();
    let verdicts = c.data_verdicts().unwrap();
    let mut n = 0;
    for vm in c.vms().unwrap() {
        for p in all.remove(&vm.uuid).unwrap_or_default() {
            for copy in &p.copies {
                let _ = verdicts.get(&(p.point_id.clone(), copy.tier.clone()));
            }
            n += 1;
        }
    }
    n
}

fn best_of_three(f: impl Fn() -> usize) -> (f64, usize) {
    let mut best = f64::MAX;
    let mut n = 0;
    for _ in 0..3 {
        let t = Instant::now();
        n = f();
        best = best.min(t.elapsed().as_secs_f64());
    }
    (best, n)
}

#[test]
#[ignore = "a benchmark: scripts/bench-catalog.sh runs it"]
fn planning_from_the_catalog_on_sqlite_and_postgres() {
    let vms: i64 = common::bench_size("COFFER_BENCH_VMS", 10_000);
    let tmp = tempfile::tempdir().unwrap();
    let mut rows = Vec::new();
    for name in ["SQLite", "PostgreSQL"] {
        let dir = tmp.path().join(name);
        let config = config(&dir);
        let state = &config.settings.state_dir;
        std::fs::create_dir_all(state).unwrap();
        let d = Dialect {
            postgres: name == "PostgreSQL",
        };
        let at = if d.postgres {
            common::postgres::location(&dir)
        } else {
            CatalogLocation::File(state.join("catalog.db"))
        };
        let run_sql = |sql: &str| match &at {
            CatalogLocation::File(p) => {
                let conn = rusqlite::Connection::open(p).unwrap();
                conn.execute_batch(&format!("BEGIN; {sql} COMMIT;"))
                    .unwrap();
            }
            CatalogLocation::Postgres { url, .. } => {
                let mut c = common::postgres::connect(url).unwrap();
                c.batch_execute(&format!("BEGIN; {sql} COMMIT; ANALYZE;"))
                    .unwrap();
            }
        };
        drop(Catalog::open_at(&at).unwrap());
        let fill = Instant::now();
        run_sql(&fill_sql(vms, &d));
        let filled = fill.elapsed().as_secs_f64();
        let mut c = Catalog::open_at(&at).unwrap();
        // Nothing written on the tier: no copy changes, nor the change log.
        let refreshed = refresh_unchanged(&mut c, &run_sql, &dir, vms);
        // The fill is history: its changes are long forgotten.
        c.prune_point_changes(chrono::Utc::now() + chrono::TimeDelta::days(1))
            .unwrap();
        let (whole, n) = best_of_three(|| read_now(&c));
        assert_eq!(n as i64, vms * POINTS);
        let saved = state.join(point_cache::FILE_NAME);
        // The time to the points in hand; the file is written meanwhile.
        let mut read = |expect: fn(How) -> bool| {
            let t = Instant::now();
            let read = point_cache::read_points(&config, &mut c).unwrap();
            let secs = t.elapsed().as_secs_f64();
            assert!(expect(read.how), "{:?}", read.how);
            (secs, read, t)
        };
        let mut cold = f64::MAX;
        for _ in 0..3 {
            std::fs::remove_file(&saved).ok();
            let (secs, read, _) = read(|h| h == How::All);
            drop(read);
            cold = cold.min(secs);
        }
        let mut warm = f64::MAX;
        for _ in 0..3 {
            warm = warm.min(read(|h| h == How::Changed(0)).0);
        }
        let inventory = inventory(vms);
        let (mut morning, mut planned, mut total, mut actions) = (f64::MAX, f64::MAX, f64::MAX, 0);
        for k in 1..=3 {
            run_sql(&night_sql(vms, k, &d));
            let (secs, read, start) = read(|h| matches!(h, How::Changed(n) if n > 0));
            let (points, saving) = (read.points, read.saving);
            // Every point with a readable copy: the fill's, and the nights'.
            assert_eq!(points.len() as i64, vms * (POINTS + k));
            let input = PlanInput {
                config: &config,
                inventory: inventory.clone(),
                unreachable_sources: Default::default(),
                points: points.into(),
                unlisted_tiers: Default::default(),
                drills: vec![],
                dead_installation: None,
                now: chrono::DateTime::from_timestamp(NOW + k * 86400, 0).unwrap(),
                allow_mass_prune: false,
            };
            let t = Instant::now();
            let p = plan(&input, &restic_retention);
            let plan_secs = t.elapsed().as_secs_f64();
            // Planning is done once the file is in place too.
            drop(saving);
            let whole_secs = start.elapsed().as_secs_f64();
            actions = p.actions.len();
            if std::env::var("COFFER_BENCH_SHOW").is_ok() {
                let mut kinds = std::collections::BTreeMap::new();
                for a in &p.actions {
                    let l = a.line();
                    let w: Vec<&str> = l.split_whitespace().take(2).collect();
                    *kinds.entry(w.join(" ")).or_insert(0) += 1;
                }
                eprintln!("{kinds:?}");
            }
            morning = morning.min(secs);
            planned = planned.min(plan_secs);
            total = total.min(whole_secs);
        }
        rows.push((
            name, filled, whole, cold, warm, morning, planned, total, actions, refreshed,
        ));
    }
    println!(
        "planning from the catalog: {vms} VMs x {POINTS} points, copies on 1-3 tiers, best of 3\n"
    );
    println!(
        "| catalog | filled in | whole read | first read (and save) | read, nothing changed | read after a night | planner | planning after a night |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (name, filled, whole, cold, warm, morning, planned, total, actions, _) in &rows {
        println!(
            "| {name} | {filled:.1} s | {whole:.2} s | {cold:.2} s | {warm:.2} s | {morning:.2} s | {planned:.2} s ({actions} actions) | {total:.2} s |"
        );
    }
    println!(
        "\nPostgreSQL / SQLite: whole read {:.2}x, planning after a night {:.2}x",
        rows[1].2 / rows[0].2,
        rows[1].7 / rows[0].7
    );
    for (name, _, whole, _, _, morning, _, _, _, _) in &rows {
        println!(
            "{name}: whole read / read after a night {:.1}x",
            whole / morning
        );
    }
    let listed = vms * (POINTS - 1);
    for (name, .., refreshed) in &rows {
        println!(
            "{name}: refresh of a tier of {listed} points, nothing written since it was read: {refreshed:.2} s"
        );
    }
}
