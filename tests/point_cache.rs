//! The planner's points kept between runs (`points.cache` in the state
//! dir): a read after a change hands the planner exactly what a whole read
//! of the catalog would, and a file that does not check out (cut short,
//! a flipped byte, another catalog's) is never trusted: every point is read
//! again. Each test runs on SQLite and on PostgreSQL.

mod common;

use coffer::engine::point_cache::{FILE_NAME, How, read_points};
use coffer::plan::planner::PointInfo;
use coffer::policy::Config;
use common::catalog_site::{Backend, Setup, on_both, verified};

fn config_in(s: &Setup) -> Config {
    let loaded = coffer::policy::load(&s.policies);
    loaded
        .config
        .unwrap_or_else(|| panic!("{:?}", loaded.diagnostics))
}

/// The points and how they were read, the file in place.
fn read(s: &Setup, config: &Config) -> (Vec<PointInfo>, How) {
    let mut c = s.open_catalog();
    let r = read_points(config, &mut c).unwrap();
    drop(r.saving);
    let mut points = r.points;
    points.sort_by(|a, b| a.point_id.cmp(&b.point_id));
    (points, r.how)
}

/// A read from the file after `n` changed points. On PostgreSQL a read
/// also takes again the changes of transactions that were running at the
/// last read, any database's (other tests run beside this one): at least
/// `n`.
fn assert_changed(backend: Backend, how: How, n: usize) {
    match (backend, how) {
        (Backend::Sqlite, _) => assert_eq!(how, How::Changed(n)),
        (Backend::Postgres, How::Changed(m)) => assert!(m >= n, "{how:?}"),
        (Backend::Postgres, How::All) => panic!("a whole read"),
    }
}

fn ids(points: &[PointInfo]) -> Vec<&str> {
    points.iter().map(|p| p.point_id.as_str()).collect()
}

on_both! {
    fn each_read_after_the_first_reads_only_what_changed(backend: Backend) {
        let s = Setup::new(backend);
        let a = s.backup("web");
        s.sync("refresh");
        let config = config_in(&s);
        let (first, how) = read(&s, &config);
        assert_eq!(how, How::All);
        assert_eq!(ids(&first), [a.as_str()]);
        assert!(config.settings.state_dir.join(FILE_NAME).is_file());

        let (again, how) = read(&s, &config);
        assert_changed(backend, how, 0);
        assert_eq!(again, first);

        // A new point, and a copy found damaged.
        let b = s.backup("db");
        s.sync("refresh");
        s.open_catalog()
            .record_verification(&verified(&a, false))
            .unwrap();
        let (after, how) = read(&s, &config);
        assert_changed(backend, how, 2);
        let mut both = [a.as_str(), b.as_str()];
        both.sort();
        assert_eq!(ids(&after), both);
        let web = after.iter().find(|p| p.point_id == a).unwrap();
        assert_eq!(web.copies.get("local").unwrap().verified_ok, Some(false));
        assert_eq!(web.vm_name.as_ref(), "web");
        assert_eq!(after.iter().find(|p| p.point_id == b).unwrap().disks.len(), 1);

        // A pruned point leaves the planner's view.
        s.ok(&["repo", "prune", &b, "--tier", "local"]);
        s.sync("refresh");
        let (pruned, how) = read(&s, &config);
        assert_changed(backend, how, 1);
        assert_eq!(ids(&pruned), [a.as_str()]);
        assert_eq!(pruned[0], after.iter().find(|p| p.point_id == a).unwrap().clone());

        // What the policies say is applied when the points are handed over,
        // not kept in the file: a tier made immutable locks the copies at
        // once, from their first sight.
        let mut locked = config.clone();
        locked.tiers.get_mut("local").unwrap().immutable_for =
            Some(std::time::Duration::from_secs(86_400));
        let (now_locked, how) = read(&s, &locked);
        assert_changed(backend, how, 0);
        let first_seen = s.open_catalog().point(&a).unwrap().unwrap().copies[0].first_seen;
        assert_eq!(
            now_locked[0].copies.get("local").unwrap().locked_until,
            Some(first_seen + chrono::TimeDelta::days(1))
        );
    }
}

on_both! {
    fn a_file_that_does_not_check_out_is_never_trusted(backend: Backend) {
        let s = Setup::new(backend);
        let a = s.backup("web");
        let b = s.backup("db");
        s.sync("refresh");
        let config = config_in(&s);
        let file = config.settings.state_dir.join(FILE_NAME);
        let (truth, _) = read(&s, &config);
        let good = std::fs::read(&file).unwrap();

        // Cut short.
        std::fs::write(&file, &good[..good.len() - 7]).unwrap();
        let (points, how) = read(&s, &config);
        assert_eq!((points.as_slice(), how), (truth.as_slice(), How::All));

        // One byte of a point id flipped: the checksum fails.
        let mut flipped = good.clone();
        let at = flipped
            .windows(a.len())
            .position(|w| w == a.as_bytes())
            .unwrap();
        flipped[at + a.len() - 1] ^= 1;
        std::fs::write(&file, &flipped).unwrap();
        let (points, how) = read(&s, &config);
        assert_eq!((points.as_slice(), how), (truth.as_slice(), How::All));

        // Not a file of points at all.
        std::fs::write(&file, b"{\"points\": []}").unwrap();
        let (points, how) = read(&s, &config);
        assert_eq!((points.as_slice(), how), (truth.as_slice(), How::All));

        // Another catalog's file, put in this state dir: its points are
        // not this catalog's.
        let other = Setup::new(backend);
        other.backup("mail");
        other.sync("refresh");
        let other_config = config_in(&other);
        read(&other, &other_config);
        std::fs::copy(other_config.settings.state_dir.join(FILE_NAME), &file).unwrap();
        let (points, how) = read(&s, &config);
        assert_eq!(how, How::All);
        let mut both = [a.as_str(), b.as_str()];
        both.sort();
        assert_eq!(ids(&points), both);
        assert_eq!(points, truth);
    }
}

/// A process killed while writing the file leaves its copy behind: the
/// next save removes it once it is an hour old, and leaves a younger one
/// (another process may be writing it) alone.
#[test]
fn a_copy_left_by_a_killed_writer_is_removed() {
    let s = Setup::new(Backend::Sqlite);
    s.backup("web");
    s.sync("refresh");
    let config = config_in(&s);
    let state = &config.settings.state_dir;
    std::fs::create_dir_all(state).unwrap();
    let old = state.join("points.cache.new-killed");
    let young = state.join("points.cache.new-writing");
    for f in [&old, &young] {
        std::fs::write(f, vec![0u8; 4096]).unwrap();
    }
    let two_hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
    std::fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(two_hours_ago)
        .unwrap();
    let (_, how) = read(&s, &config);
    assert_eq!(how, How::All);
    assert!(!old.exists(), "the killed writer's copy is gone");
    assert!(young.exists(), "a copy being written is left alone");
    assert!(state.join(FILE_NAME).is_file());
}
