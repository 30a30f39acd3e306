//! What planning reads from the catalog, on SQLite and on PostgreSQL: a
//! site of `COFFER_BENCH_VMS` VMs (default 10,000) with 100 points each,
//! one disk, copies on two tiers and a data verification for every tenth
//! point. The read is what `gather` asks before the planner runs (every VM,
//! every point with its disks and copies, every copy's last data verdict),
//! timed best of three. Today's read (`all_points` + `data_verdicts`) is
//! set beside the one before it (a query per VM and one per copy), which is
//! timed on a tenth of the site because on a server it takes minutes.
//!
//! Run by `scripts/bench-catalog.sh` (release build); ignored otherwise.

mod common;

use std::time::Instant;

use coffer::catalog::Catalog;
use coffer::policy::model::CatalogLocation;

const POINTS: i64 = 100;

/// Fills the catalog's tables with `vms` VMs of `POINTS` points.
fn fill_sql(vms: i64, postgres: bool) -> String {
    // n: the point's number over the whole site; v: its VM.
    let series = if postgres {
        format!(
            "SELECT g AS n FROM generate_series(0, {}) g",
            vms * POINTS - 1
        )
    } else {
        format!(
            "WITH RECURSIVE s(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM s WHERE n < {}) SELECT n FROM s",
            vms * POINTS - 1
        )
    };
    let time = |secs: &str| {
        if postgres {
            format!(
                "to_char(to_timestamp({secs}) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
            )
        } else {
            format!("strftime('%Y-%m-%dT%H:%M:%S.000000Z', {secs}, 'unixepoch')")
        }
    };
    let pad = |expr: &str| {
        if postgres {
            format!("lpad(CAST({expr} AS TEXT), 8, '0')")
        } else {
            format!("printf('%08d', {expr})")
        }
    };
    let vm = pad(&format!("n / {POINTS}"));
    let pid = pad("n");
    let created = time(&format!(
        "1767225600 + (n % {POINTS}) * 86400 + n / {POINTS}"
    ));
    let now = time("1767225600");
    format!(
        "INSERT INTO vms (uuid, name, source, first_seen, last_seen) \
           SELECT 'vm-' || {vm}, 'vm' || {vm}, 'vc', {now}, {now} FROM ({series}) s \
           WHERE n % {POINTS} = 0;
         INSERT INTO points (point_id, vm_uuid, created, kind, parent, consistency, duration_ms, source, vm_name) \
           SELECT 'p-' || {pid}, 'vm-' || {vm}, {created}, \
                  CASE WHEN n % 30 = 0 THEN 'full' ELSE 'incremental' END, NULL, 'crash', 60000, 'vc', 'vm' || {vm} \
           FROM ({series}) s;
         INSERT INTO point_disks (point_id, device_key, label, size_bytes, chunk_size_bytes, index_sha256, change_id, backing) \
           SELECT 'p-' || {pid}, 2000, 'Hard disk 1', 42949672960, 4194304, 'ab', '52 aa/1', '[ds1] vm/vm.vmdk' \
           FROM ({series}) s;
         INSERT INTO copies (point_id, vm_uuid, tier, state, detail, locked_until, first_seen, last_seen) \
           SELECT 'p-' || {pid}, 'vm-' || {vm}, 'local', 'present', NULL, NULL, {now}, {now} FROM ({series}) s;
         INSERT INTO copies (point_id, vm_uuid, tier, state, detail, locked_until, first_seen, last_seen) \
           SELECT 'p-' || {pid}, 'vm-' || {vm}, 'offsite', 'present', NULL, NULL, {now}, {now} FROM ({series}) s;
         INSERT INTO verifications (kind, point_id, tier, started, finished, ok, data_ok) \
           SELECT 'verify', 'p-' || {pid}, 'local', {now}, {now}, 1, 1 FROM ({series}) s WHERE n % 10 = 0;"
    )
}

/// Today's read: what `gather` asks, in four queries.
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

/// The read before: a query per VM, one per copy.
fn read_before(c: &Catalog, vms: usize) -> usize {
    let mut n = 0;
    for vm in c.vms().unwrap().into_iter().take(vms) {
        for p in c.points_of_vm(&vm.uuid).unwrap() {
            for copy in &p.copies {
                let _ = c.last_data_verification(&p.point_id, &copy.tier).unwrap();
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
fn catalog_reads_for_planning_on_sqlite_and_postgres() {
    let vms: i64 = std::env::var("COFFER_BENCH_VMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let tmp = tempfile::tempdir().unwrap();
    let sqlite = CatalogLocation::File(tmp.path().join("catalog.db"));
    let postgres = common::postgres::location(tmp.path());
    let mut rows = Vec::new();
    for (name, at) in [("SQLite", &sqlite), ("PostgreSQL", &postgres)] {
        drop(Catalog::open_at(at).unwrap());
        let fill = Instant::now();
        match at {
            CatalogLocation::File(p) => {
                let conn = rusqlite::Connection::open(p).unwrap();
                conn.execute_batch(&format!("BEGIN; {} COMMIT;", fill_sql(vms, false)))
                    .unwrap();
            }
            CatalogLocation::Postgres { url, .. } => {
                let mut c = common::postgres::connect(url).unwrap();
                c.batch_execute(&format!("BEGIN; {} COMMIT; ANALYZE;", fill_sql(vms, true)))
                    .unwrap();
            }
        }
        let filled = fill.elapsed().as_secs_f64();
        let c = Catalog::open_at(at).unwrap();
        let (now, n) = best_of_three(|| read_now(&c));
        assert_eq!(n as i64, vms * POINTS);
        let tenth = (vms / 10).max(1) as usize;
        let (before, m) = best_of_three(|| read_before(&c, tenth));
        assert_eq!(m, tenth * POINTS as usize);
        // The read before, scaled to the whole site.
        let before_whole = before * vms as f64 / tenth as f64;
        rows.push((name, filled, now, before_whole));
    }
    println!("catalog reads for planning: {vms} VMs x {POINTS} points, 2 copies each, best of 3\n");
    println!(
        "| catalog | filled in | today's read | the read before (per VM, per copy) | before / today |"
    );
    println!("|---|---|---|---|---|");
    for (name, filled, now, before) in &rows {
        println!(
            "| {name} | {filled:.1} s | {now:.2} s | {before:.1} s (timed on a tenth) | {:.1}x |",
            before / now
        );
    }
    println!(
        "\nPostgreSQL / SQLite, today's read: {:.2}x",
        rows[1].2 / rows[0].2
    );
}
