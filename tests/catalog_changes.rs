//! The catalog's change log, through which planning re-reads only the
//! points that changed: every write coffer makes of what the planner reads
//! is named, a refresh that finds nothing new names nothing, and a mark
//! that cannot be trusted (another catalog, a pruned log, a catalog put
//! back from an older copy) gets every point instead. On PostgreSQL, a
//! change that commits after a later-numbered one was read is still named.
//! Each test runs on SQLite and on PostgreSQL unless it is about one.

mod common;

use std::collections::BTreeSet;

use chrono::Utc;
use coffer::catalog::{Catalog, ChangeMark, CopyState, PointsRead};
use common::catalog_site::{Backend, Setup, on_both, verified};

/// What a read since `mark` named: `None` for every point, else the ids
/// of the changed points.
fn changed(c: &Catalog, mark: &ChangeMark) -> (Option<BTreeSet<String>>, ChangeMark) {
    let read = c.points_since(Some(mark), false).unwrap();
    let ids = match read.read {
        PointsRead::All { .. } => None,
        PointsRead::Changed { ids, .. } => Some(ids),
    };
    (ids, read.mark)
}

fn ids(list: &[&String]) -> Option<BTreeSet<String>> {
    Some(list.iter().map(|s| s.to_string()).collect())
}

/// `got` names `want`. On PostgreSQL a read also names again the changes
/// of transactions that were running at the mark's read, any database's
/// (other tests run beside this one), so it may name more points, but
/// only among those `written`.
fn assert_named(
    backend: Backend,
    got: &Option<BTreeSet<String>>,
    want: &[&String],
    written: &[&String],
) {
    match backend {
        Backend::Sqlite => assert_eq!(*got, ids(want)),
        Backend::Postgres => {
            let got = got.as_ref().expect("a trusted mark");
            let want = ids(want).unwrap();
            let written = ids(written).unwrap();
            assert!(want.is_subset(got) && got.is_subset(&written), "{got:?}");
        }
    }
}

on_both! {
    fn a_read_since_a_mark_names_exactly_the_points_written_since(backend: Backend) {
        let s = Setup::new(backend);
        let a = s.backup("web");
        s.sync("refresh");
        let mut c = s.open_catalog();
        let first = c.points_since(None, false).unwrap();
        let PointsRead::All { points, .. } = &first.read else {
            panic!("no mark: every point");
        };
        assert_eq!(points.len(), 1);
        let m0 = first.mark;

        // A refresh that finds nothing new only moves `last_seen`.
        s.sync("refresh");
        let (named, m) = changed(&c, &m0);
        assert_named(backend, &named, &[], &[&a]);
        assert_eq!((m.seq, m.nonce), (m0.seq, m0.nonce), "nothing was written");

        // A new point on the tier.
        let b = s.backup("db");
        s.sync("refresh");
        let (named, m1) = changed(&c, &m0);
        assert_named(backend, &named, &[&b], &[&a, &b]);
        let read = c.points_since(Some(&m0), false).unwrap();
        let PointsRead::Changed { points, .. } = read.read else {
            panic!("a trusted mark");
        };
        let points: Vec<_> = points.iter().filter(|p| p.point_id == b).collect();
        assert_eq!(points.len(), 1);
        assert_eq!(points[0].disks.len(), 1, "with its disks");
        assert_eq!(points[0].copies[0].state, CopyState::Present, "and copies");

        // A data verification's verdict.
        c.record_verification(&verified(&a, false)).unwrap();
        let read = c.points_since(Some(&m1), false).unwrap();
        let m2 = read.mark.clone();
        let PointsRead::Changed { ids: named, verdicts, .. } = read.read else {
            panic!("a trusted mark");
        };
        assert_named(backend, &Some(named), &[&a], &[&a, &b]);
        assert_eq!(verdicts.get(&(a.clone(), "local".into())), Some(&false));

        // A pruned point: its copy goes missing.
        s.ok(&["repo", "prune", &b, "--tier", "local"]);
        s.sync("refresh");
        let read = c.points_since(Some(&m2), false).unwrap();
        let m3 = read.mark.clone();
        let PointsRead::Changed { ids: named, points, .. } = read.read else {
            panic!("a trusted mark");
        };
        assert_named(backend, &Some(named), &[&b], &[&a, &b]);
        let gone = points.iter().find(|p| p.point_id == b).unwrap();
        assert_eq!(gone.copies[0].state, CopyState::Missing);

        // The oldest mark still names everything since.
        assert_named(backend, &changed(&c, &m0).0, &[&a, &b], &[&a, &b]);

        // A mark of another catalog is not trusted.
        let foreign = ChangeMark { log: "another".into(), ..m3.clone() };
        assert_eq!(changed(&c, &foreign).0, None);

        // Forgetting old changes: marks from before the forgotten ones
        // get every point; the newest is kept and its mark still holds.
        let forgotten = c.prune_point_changes(Utc::now() + chrono::TimeDelta::days(1)).unwrap();
        assert!(forgotten > 0);
        assert_eq!(changed(&c, &m0).0, None);
        assert_eq!(changed(&c, &m2).0, None);
        assert_named(backend, &changed(&c, &m3).0, &[], &[&a, &b]);
        let later = s.backup("mail");
        s.sync("refresh");
        assert_named(backend, &changed(&c, &m3).0, &[&later], &[&a, &b, &later]);
    }
}

/// A SQLite catalog put back from a copy taken before the mark numbers its
/// next changes again from where the copy stood: the mark's change is not
/// the one now under its number, and every point is read.
#[test]
fn a_catalog_put_back_from_an_older_copy_is_read_whole() {
    let s = Setup::new(Backend::Sqlite);
    s.backup("web");
    s.sync("refresh");
    let file = s.state.join("catalog.db");
    let copy = s.state.join("catalog.db.copy");
    // A consistent copy, as a backup of the catalog would take it.
    let conn = rusqlite::Connection::open(&file).unwrap();
    conn.execute_batch(&format!("VACUUM INTO '{}'", copy.display()))
        .unwrap();
    drop(conn);
    let a = s.backup("db");
    s.sync("refresh");
    let mark = s.open_catalog().points_since(None, false).unwrap().mark;

    std::fs::remove_file(&file).unwrap();
    let _ = std::fs::remove_file(s.state.join("catalog.db-wal"));
    let _ = std::fs::remove_file(s.state.join("catalog.db-shm"));
    std::fs::rename(&copy, &file).unwrap();
    // As many changes as before, other ones: the numbers meet again.
    let c = s.open_catalog();
    let (named, _) = changed(&c, &mark);
    assert_eq!(named, None, "the mark is past the put-back catalog's end");
    s.backup("mail");
    s.backup("dns");
    s.sync("refresh");
    let (named, _) = changed(&c, &mark);
    assert_eq!(
        named, None,
        "{a}'s changes are gone; another change holds its number"
    );
}

/// PostgreSQL numbers a change when it is written and commits it later:
/// a change numbered before the mark, committed after it was read, is
/// still named by the next read.
#[test]
fn a_change_committed_after_a_later_one_was_read_is_not_missed() {
    let s = Setup::new(Backend::Postgres);
    let a = s.backup("web");
    let b = s.backup("db");
    s.sync("refresh");
    let mut c = s.open_catalog();
    let m0 = c.points_since(None, false).unwrap().mark;

    // A writer numbers a change of `a` and holds its transaction open.
    let coffer::policy::model::CatalogLocation::Postgres { url, .. } = &s.catalog else {
        unreachable!()
    };
    let mut slow = common::postgres::connect(url).unwrap();
    let mut tx = slow.transaction().unwrap();
    tx.execute(
        "INSERT INTO verifications (kind, point_id, tier, started, ok, data_ok) \
         VALUES ('verify', $1, 'local', '2026-12-01T00:00:00.000000Z', 0, 0)",
        &[&a],
    )
    .unwrap();
    // Another commits a change of `b`, numbered after it, and is read.
    c.record_verification(&verified(&b, true)).unwrap();
    let (named, m1) = changed(&c, &m0);
    assert!(named.is_some_and(|n| n.contains(&b) && !n.contains(&a)));
    assert!(m1.seq > m0.seq);

    // The first commits: its change is numbered below the mark just read.
    tx.commit().unwrap();
    let read = c.points_since(Some(&m1), false).unwrap();
    let PointsRead::Changed {
        ids: named,
        verdicts,
        ..
    } = read.read
    else {
        panic!("a trusted mark");
    };
    assert!(named.contains(&a), "the late commit was missed: {named:?}");
    assert_eq!(verdicts.get(&(a.clone(), "local".into())), Some(&false));
}
