//! The repository when the world misbehaves: S3 answering 503, 500 or not
//! at all, a bucket without Object Lock under an immutable tier, a locked
//! object asked to go, a full disk and a read-only one. Each gives a clear
//! error or a retry where retrying is right, and leaves a repository that
//! verifies with no half-written point.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use coffer::repo::azure::AzureStore;
use coffer::repo::backup::{self, BackupRequest, DiskSource, FileDisk};
use coffer::repo::manifest::{Manifest, VmIdentity};
use coffer::repo::restore::{self, DiskFormat};
use coffer::repo::s3::{LockMode, S3Store};
use coffer::repo::store::{Store, StoreError};
use coffer::repo::{RepoError, Repository, local::LocalStore, ops};
use common::azurite;
use common::s3::{self, FaultyProxy};

const MIB: u64 = 1 << 20;

fn noise_image(path: &Path, mib: u64, seed: u64) {
    common::noise_file(path, mib * MIB, seed);
}

fn backup(repo: &Repository, image: &Path, vm: &str) -> Result<Manifest, RepoError> {
    let disk = FileDisk::open(image).unwrap();
    backup::backup(
        repo,
        BackupRequest {
            vm: VmIdentity::new(vm, format!("4210bbbb-0000-0000-0000-{:012}", vm.len())),
            consistency: "crash".into(),
            chunk_size_bytes: 256 << 10,
            parent: None,
            disks: vec![DiskSource::whole(2000, "Hard disk 1", &disk)],
            files: vec![],
            skipped_disks: vec![],
            threads: 2,
        },
    )
}

fn restores_to(repo: &Repository, m: &Manifest, image: &Path, out: &Path) {
    let index = repo.read_index(m, &m.disks[0]).unwrap();
    restore::restore_disk(repo, &index, out, DiskFormat::Raw, true, 2).unwrap();
    assert!(
        std::fs::read(out).unwrap() == std::fs::read(image).unwrap(),
        "restored bytes equal the source"
    );
}

/// The object stores the fault tests run against.
#[derive(Clone, Copy)]
enum Object {
    S3,
    Azure,
}

/// A new repository on `on`, reached through a proxy that injects faults.
fn proxied_repo(on: Object) -> (FaultyProxy, Repository) {
    let (proxy, store): (FaultyProxy, Arc<dyn coffer::repo::store::Store>) = match on {
        Object::S3 => {
            let proxy = FaultyProxy::start();
            let bucket = s3::bucket(false);
            let store = S3Store::new(s3::location(&bucket, &proxy.endpoint())).unwrap();
            (proxy, Arc::new(store))
        }
        Object::Azure => {
            let proxy = FaultyProxy::to(azurite::azurite().addr());
            let container = azurite::container();
            let endpoint = format!("{}/{}", proxy.endpoint(), azurite::ACCOUNT);
            let store = AzureStore::new(azurite::location(&container, &endpoint)).unwrap();
            (proxy, Arc::new(store))
        }
    };
    // Object-storage tiers keep chunks in packs; small ones here, so that a
    // fault can land on any of several pack uploads.
    let packs = coffer::repo::PackConfig {
        target_bytes: 1 << 20,
    };
    (
        proxy,
        Repository::init_with(store, None, Some(packs)).unwrap(),
    )
}

fn busy_answers_are_retried_and_the_backup_lands(on: Object) {
    let t = tempfile::tempdir().unwrap();
    let image = t.path().join("disk.img");
    noise_image(&image, 4, 1);
    let (proxy, repo) = proxied_repo(on);
    proxy.faults.fail_503.store(3, Ordering::SeqCst);
    let m = backup(&repo, &image, "db01").expect("503 is retried");
    assert_eq!(
        proxy.faults.fail_503.load(Ordering::SeqCst),
        0,
        "all faults were hit"
    );
    assert!(ops::verify(&repo, None, None, 2).unwrap().ok());
    restores_to(&repo, &m, &image, &t.path().join("r.raw"));
}

fn answers_that_never_come_time_out_and_are_retried(on: Object) {
    let t = tempfile::tempdir().unwrap();
    let image = t.path().join("disk.img");
    noise_image(&image, 2, 2);
    let (proxy, repo) = proxied_repo(on);
    proxy.faults.stall.store(2, Ordering::SeqCst);
    let m = backup(&repo, &image, "web01").expect("a timed-out request is retried");
    assert_eq!(proxy.faults.stall.load(Ordering::SeqCst), 0);
    restores_to(&repo, &m, &image, &t.path().join("r.raw"));
}

fn a_store_that_keeps_failing_gives_a_clear_error_and_no_point(on: Object) {
    let t = tempfile::tempdir().unwrap();
    let image = t.path().join("disk.img");
    noise_image(&image, 4, 3);
    let (proxy, repo) = proxied_repo(on);
    let good = backup(&repo, &image, "app01").unwrap();
    noise_image(&image, 4, 4);
    proxy.faults.fail_500.store(u32::MAX, Ordering::SeqCst);
    let err = backup(&repo, &image, "app01").unwrap_err().to_string();
    assert!(
        err.contains("500") && err.contains("retries"),
        "the error names the status and the retries: {err}"
    );
    proxy.faults.fail_500.store(0, Ordering::SeqCst);
    let points = repo.list_points().unwrap();
    assert_eq!(points.len(), 1, "the failed backup left no point");
    assert_eq!(points[0].point_id, good.point_id);
    assert!(ops::verify(&repo, None, None, 2).unwrap().ok());
}

#[test]
fn s3_503s_are_retried_and_the_backup_lands() {
    busy_answers_are_retried_and_the_backup_lands(Object::S3);
}

#[test]
fn azure_503s_are_retried_and_the_backup_lands() {
    busy_answers_are_retried_and_the_backup_lands(Object::Azure);
}

#[test]
fn s3_answers_that_never_come_time_out_and_are_retried() {
    answers_that_never_come_time_out_and_are_retried(Object::S3);
}

#[test]
fn azure_answers_that_never_come_time_out_and_are_retried() {
    answers_that_never_come_time_out_and_are_retried(Object::Azure);
}

#[test]
fn s3_that_keeps_failing_gives_a_clear_error_and_no_point() {
    a_store_that_keeps_failing_gives_a_clear_error_and_no_point(Object::S3);
}

#[test]
fn azure_that_keeps_failing_gives_a_clear_error_and_no_point() {
    a_store_that_keeps_failing_gives_a_clear_error_and_no_point(Object::Azure);
}

#[test]
fn azure_container_that_does_not_exist_is_named() {
    let mut loc = azurite::location("no-such-container", &azurite::azurite().endpoint());
    loc.max_retries = 0;
    let store = Arc::new(AzureStore::new(loc).unwrap());
    let err = Repository::open(store, None).unwrap_err().to_string();
    assert!(
        err.contains("container `no-such-container` does not exist")
            && err.contains("ContainerNotFound"),
        "{err}"
    );
}

#[test]
fn s3_bucket_that_does_not_exist_is_named() {
    let mut loc = s3::location("no-such-bucket-here", &s3::moto().endpoint());
    loc.max_retries = 0;
    let store = Arc::new(S3Store::new(loc).unwrap());
    let err = Repository::open(store, None).unwrap_err().to_string();
    assert!(
        err.contains("no-such-bucket-here") && err.contains("NoSuchBucket"),
        "{err}"
    );
}

#[test]
fn an_immutable_tier_needs_a_bucket_with_object_lock() {
    let bucket = s3::bucket(false);
    let mut loc = s3::location(&bucket, &s3::moto().endpoint());
    loc.lock = Some((LockMode::Compliance, Duration::from_secs(86400)));
    let err = S3Store::new(loc).unwrap_err().to_string();
    assert!(
        err.contains("Object Lock") && err.contains(&bucket),
        "{err}"
    );
}

#[test]
fn an_immutable_tier_locks_what_it_writes_and_a_locked_delete_is_reported() {
    let t = tempfile::tempdir().unwrap();
    let image = t.path().join("disk.img");
    noise_image(&image, 2, 5);
    let bucket = s3::bucket(true);
    let mut loc = s3::location(&bucket, &s3::moto().endpoint());
    loc.lock = Some((LockMode::Compliance, Duration::from_secs(2 * 86400)));
    let store = Arc::new(S3Store::new(loc).unwrap());
    let repo = Repository::init(store.clone(), None).unwrap();
    let m = backup(&repo, &image, "fin01").unwrap();

    // The server holds a retention date two days ahead on the manifest.
    let (mode, until) = store
        .lock_of(&m.key().unwrap())
        .unwrap()
        .expect("the manifest is locked");
    assert_eq!(mode, "COMPLIANCE");
    let until = chrono::DateTime::parse_from_rfc3339(&until).unwrap();
    let ahead = until.signed_duration_since(chrono::Utc::now());
    assert!(
        ahead > chrono::Duration::hours(47) && ahead <= chrono::Duration::hours(48),
        "locked for two days: {until}"
    );

    // Pruning is refused by the server and reported with the date, at once.
    let started = std::time::Instant::now();
    let p = repo.find_point(&m.point_id).unwrap();
    let err = ops::prune_point(&repo, &p).unwrap_err();
    match &err {
        RepoError::Store(StoreError::Locked { until, .. }) => {
            assert!(until.is_some(), "the lock date is named: {err}")
        }
        other => panic!("expected a locked error, got {other}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "a locked delete is not retried"
    );
    // Nothing was hidden: the point is still listed and restorable.
    assert_eq!(repo.list_points().unwrap().len(), 1);
    restores_to(&repo, &m, &image, &t.path().join("r.raw"));
    // An unreferenced chunk under lock: gc leaves it and says so.
    let orphan = format!("chunks/ee/ee/{}", "e".repeat(64));
    store.put(&orphan, b"orphaned").unwrap();
    let r = ops::gc(&repo, Duration::ZERO, false).unwrap();
    assert_eq!((r.chunks_deleted, r.chunks_locked), (0, 1), "{r:?}");
    assert!(store.get(&orphan).is_ok());
}

/// Under Object Lock gc never rewrites or deletes a pack still immutable:
/// not a pack nothing references, not one that is mostly waste. It says so,
/// writes no new pack, and every point still restores.
#[test]
fn gc_never_repacks_or_deletes_a_pack_under_object_lock() {
    let t = tempfile::tempdir().unwrap();
    let image = t.path().join("disk.img");
    noise_image(&image, 3, 6);
    let bucket = s3::bucket(true);
    let mut loc = s3::location(&bucket, &s3::moto().endpoint());
    loc.lock = Some((LockMode::Compliance, Duration::from_secs(86400)));
    let store = Arc::new(S3Store::new(loc).unwrap());
    let packs = coffer::repo::PackConfig {
        target_bytes: 1 << 20,
    };
    let repo = Repository::init_with(store.clone(), None, Some(packs)).unwrap();
    let m = backup(&repo, &image, "fin02").unwrap();
    // Unreferenced chunks in packs of their own (a backup that failed
    // before its commit), and a pack mixing them with a referenced one.
    let other = Repository::open(store.clone(), None)
        .unwrap()
        .with_pack_tuning(None, Some(0.01));
    let kept = repo.read_index(&m, &m.disks[0]).unwrap().chunks[0];
    other
        .put_chunk_blob(&kept, &repo.chunk_blob(&kept).unwrap())
        .unwrap();
    let mut codec = coffer::repo::chunk::Codec::new(1);
    for i in 0..8u8 {
        let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ i as u64;
        let plain: Vec<u8> = (0..200 << 10)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let d = coffer::repo::chunk::digest(&plain, None);
        other
            .put_chunk_blob(&d, &codec.encode(&plain, &d, None))
            .unwrap();
    }
    other.finish_chunks().unwrap();
    let before: Vec<String> = store
        .list("packs/")
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    let r = ops::gc(&other, Duration::ZERO, false).unwrap();
    assert!(r.packs_locked >= 1, "{r:?}");
    assert_eq!((r.packs_deleted, r.packs_repacked), (0, 0), "{r:?}");
    let after: Vec<String> = store
        .list("packs/")
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(before.len(), after.len(), "no pack written or deleted");
    restores_to(&repo, &m, &image, &t.path().join("r.raw"));
}

/// A tmpfs mounted for one test, unmounted when the test ends.
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(at: &Path, size: &str) -> Option<Mount> {
        std::fs::create_dir_all(at).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!(
                "SKIPPED: cannot mount a tmpfs here (needs root); the disk-full and read-only cases were not run"
            );
            return None;
        }
        Some(Mount(at.to_path_buf()))
    }

    fn read_only(&self) {
        let s = std::process::Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(s.success());
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn a_full_disk_fails_the_backup_clearly_and_loses_nothing() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("repo");
    let Some(_mount) = Mount::tmpfs(&dir, "6m") else {
        return;
    };
    let small = t.path().join("small.img");
    noise_image(&small, 2, 7);
    let big = t.path().join("big.img");
    noise_image(&big, 8, 8);
    let repo = Repository::init(Arc::new(LocalStore::new(&dir).unwrap()), None).unwrap();
    let good = backup(&repo, &small, "small").unwrap();
    let err = backup(&repo, &big, "big").unwrap_err();
    assert!(
        matches!(err, RepoError::Store(StoreError::NoSpace { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("no space left"), "{err}");
    let points = repo.list_points().unwrap();
    assert_eq!(points.len(), 1, "no half-written point");
    assert!(ops::verify(&repo, None, None, 2).unwrap().ok());
    restores_to(&repo, &good, &small, &t.path().join("r.raw"));
    // gc frees what the failed backup wrote.
    let r = ops::gc(&repo, Duration::ZERO, false).unwrap();
    assert!(r.chunks_deleted > 0, "{r:?}");
    assert!(ops::verify(&repo, None, None, 2).unwrap().ok());
}

#[test]
fn a_read_only_repository_refuses_backups_and_still_restores() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("repo");
    let Some(mount) = Mount::tmpfs(&dir, "16m") else {
        return;
    };
    let image = t.path().join("disk.img");
    noise_image(&image, 2, 9);
    let repo = Repository::init(Arc::new(LocalStore::new(&dir).unwrap()), None).unwrap();
    let good = backup(&repo, &image, "ro01").unwrap();
    mount.read_only();
    noise_image(&image, 2, 10);
    let err = backup(&repo, &image, "ro01").unwrap_err();
    assert!(
        matches!(err, RepoError::Store(StoreError::PermissionDenied { .. })),
        "{err}"
    );
    assert_eq!(repo.list_points().unwrap().len(), 1);
    assert!(ops::verify(&repo, None, None, 2).unwrap().ok());
    noise_image(&image, 2, 9);
    restores_to(&repo, &good, &image, &t.path().join("r.raw"));
}
