//! What a repository must never do to its user's files and to itself:
//! a restore that fails leaves neither a partial file nor a damaged one
//! where a good file was (`repo restore`, `restore -o DIR`, `export`);
//! backups of identical data side by side never share a temporary file;
//! gc clears what killed runs leave (stale locks, empty point directories)
//! and says how many.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use coffer::repo::backup::{self, BackupRequest, DiskSource, FileDisk};
use coffer::repo::chunk::ZERO_DIGEST;
use coffer::repo::lock::{LockInfo, LockKind, hostname};
use coffer::repo::manifest::{Manifest, VmIdentity};
use coffer::repo::store::Store;
use coffer::repo::{Repository, local::LocalStore, ops};
use coffer::run::restore::{VmxChanges, restore_local};

const MIB: usize = 1 << 20;

fn noise(path: &Path, mib: usize, seed: u64) {
    common::noise_file(path, (mib * MIB) as u64, seed);
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn back_up(repo: &Repository, uuid: &str, images: &[&Path]) -> Manifest {
    let disks: Vec<FileDisk> = images.iter().map(|i| FileDisk::open(i).unwrap()).collect();
    backup::backup(
        repo,
        BackupRequest {
            vm: VmIdentity::new("db01", uuid),
            consistency: "crash".into(),
            chunk_size_bytes: 64 << 10,
            parent: None,
            disks: disks
                .iter()
                .enumerate()
                .map(|(i, d)| DiskSource::whole(2000 + i as i32, format!("Hard disk {}", i + 1), d))
                .collect(),
            files: vec![("db01.vmx".into(), b"displayName = \"db01\"\n".to_vec())],
            skipped_disks: vec![],
            threads: 2,
        },
    )
    .unwrap()
}

/// Every file in `dir`, by name: what a failed restore must leave as it was.
fn contents(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| (e.path(), std::fs::read(e.path()).unwrap()))
        .collect();
    out.sort();
    out
}

/// Damages the last data chunk of disk `disk` of `m`: deleted, or one bit
/// flipped.
fn damage(store: &dyn Store, repo: &Repository, m: &Manifest, disk: usize, delete: bool) {
    let index = repo.read_index(m, &m.disks[disk]).unwrap();
    let victim = *index
        .chunks
        .iter()
        .rev()
        .find(|d| **d != ZERO_DIGEST)
        .unwrap();
    if delete {
        store.delete(&victim.key()).unwrap();
    } else {
        let mut blob = store.get(&victim.key()).unwrap();
        let mid = blob.len() / 2;
        blob[mid] ^= 1;
        store.put(&victim.key(), &blob).unwrap();
    }
}

#[test]
fn a_failed_restore_leaves_no_partial_file_and_never_damages_a_good_one() {
    for delete in [true, false] {
        let t = tempfile::tempdir().unwrap();
        let image = t.path().join("disk.img");
        noise(&image, 2, 11);
        let repo_dir = t.path().join("repo");
        let store = Arc::new(LocalStore::new(&repo_dir).unwrap());
        let repo = Repository::init(store.clone(), None).unwrap();
        let m = back_up(&repo, "4210dddd-0000-0000-0000-000000000001", &[&image]);
        let out = t.path().join("out");
        std::fs::create_dir_all(&out).unwrap();
        let repo_restore = |args: &[&str]| -> Output {
            common::command_in(t.path())
                .args(["repo", "restore", &m.point_id, "--repo"])
                .arg(&repo_dir)
                .args(args)
                .output()
                .unwrap()
        };
        for (file, format) in [("good.raw", "raw"), ("good.vmdk", "vmdk")] {
            let o = repo_restore(&["-o", &format!("out/{file}"), "--format", format]);
            assert!(o.status.success(), "{}", text(&o));
        }
        assert_eq!(
            std::fs::read(out.join("good.raw")).unwrap(),
            std::fs::read(&image).unwrap()
        );
        let good = contents(&out);
        damage(store.as_ref(), &repo, &m, 0, delete);

        for (file, format) in [
            ("new.raw", "raw"),
            ("new.vmdk", "vmdk"),
            ("good.raw", "raw"),
            ("good.vmdk", "vmdk"),
        ] {
            for force in [false, true] {
                let mut args = vec!["-o".to_string(), format!("out/{file}")];
                args.extend(["--format".into(), format.into()]);
                if force {
                    args.push("--force".into());
                }
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                let o = repo_restore(&args);
                assert!(!o.status.success(), "{args:?}: {}", text(&o));
                assert_eq!(
                    contents(&out),
                    good,
                    "a failed restore ({args:?}, chunk deleted: {delete}) left the directory as it was"
                );
            }
        }

        // `restore -o DIR`: the VM's files beside good ones of an earlier restore.
        let vm_dir = t.path().join("vm");
        let changes = VmxChanges {
            name: "db01-restored".into(),
            ..VmxChanges::default()
        };
        // A good restore from a second, healthy point of the same data
        // cannot be had here (the chunk is shared), so the good files are
        // planted: what a previous restore wrote.
        std::fs::create_dir_all(&vm_dir).unwrap();
        for f in [
            "db01-restored.vmdk",
            "db01-restored-flat.vmdk",
            "db01-restored.vmx",
        ] {
            std::fs::write(vm_dir.join(f), format!("earlier {f}")).unwrap();
        }
        let earlier = contents(&vm_dir);
        for force in [false, true] {
            assert!(restore_local(&repo, &m, &vm_dir, &changes, None, force, 2, None).is_err());
            assert_eq!(contents(&vm_dir), earlier, "force: {force}");
        }
        let fresh = t.path().join("fresh");
        assert!(restore_local(&repo, &m, &fresh, &changes, None, false, 2, None).is_err());
        assert!(
            contents(&fresh).is_empty(),
            "nothing is left of a failed restore: {:?}",
            contents(&fresh)
                .iter()
                .map(|(p, _)| p.clone())
                .collect::<Vec<_>>()
        );
    }
}

#[test]
fn a_failed_export_or_restore_of_a_later_disk_leaves_the_earlier_disks_files_untouched() {
    let t = tempfile::tempdir().unwrap();
    let (a, b) = (t.path().join("a.img"), t.path().join("b.img"));
    noise(&a, 1, 21);
    noise(&b, 1, 22);
    let store = Arc::new(LocalStore::new(t.path().join("repo")).unwrap());
    let repo = Repository::init(store.clone(), None).unwrap();
    let m = back_up(&repo, "4210dddd-0000-0000-0000-000000000002", &[&a, &b]);
    damage(store.as_ref(), &repo, &m, 1, true);
    let out = t.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let paths = coffer::run::export::vmdk_paths(&out.join("db01.vmdk"), 2);
    for p in &paths {
        std::fs::write(p, b"an earlier export").unwrap();
    }
    let earlier = contents(&out);
    assert!(coffer::run::export::export_vmdk(&repo, &m, &paths[0], true, 2).is_err());
    assert_eq!(contents(&out), earlier);

    // `restore -o DIR` of the same VM over an earlier restore, with --force.
    let vm_dir = t.path().join("vm");
    std::fs::create_dir_all(&vm_dir).unwrap();
    for f in [
        "db01-restored.vmdk",
        "db01-restored-flat.vmdk",
        "db01-restored_1.vmdk",
        "db01-restored_1-flat.vmdk",
        "db01-restored.vmx",
    ] {
        std::fs::write(vm_dir.join(f), format!("earlier {f}")).unwrap();
    }
    let earlier = contents(&vm_dir);
    let changes = VmxChanges {
        name: "db01-restored".into(),
        ..VmxChanges::default()
    };
    assert!(restore_local(&repo, &m, &vm_dir, &changes, None, true, 2, None).is_err());
    assert_eq!(
        contents(&vm_dir),
        earlier,
        "the first disk's files are untouched"
    );
}

/// Backups of identical data, side by side in one process, each through its
/// own store instance on the same directory: they write the same chunks at
/// the same moments, and none may take another's temporary file.
fn identical_backups_side_by_side(secret: Option<&'static str>, writers: usize) {
    let t = tempfile::tempdir().unwrap();
    let image = t.path().join("disk.img");
    noise(&image, 4, 31);
    let dir = t.path().join("repo");
    Repository::init(
        Arc::new(LocalStore::new(&dir).unwrap()),
        secret.map(str::as_bytes),
    )
    .unwrap();
    let barrier = Arc::new(std::sync::Barrier::new(writers));
    let handles: Vec<_> = (0..writers)
        .map(|i| {
            let (dir, image, barrier) = (dir.clone(), image.clone(), barrier.clone());
            std::thread::spawn(move || {
                let repo = Repository::open(
                    Arc::new(LocalStore::new(&dir).unwrap()),
                    secret.map(str::as_bytes),
                )
                .unwrap();
                barrier.wait();
                let disk = FileDisk::open(&image).unwrap();
                backup::backup(
                    &repo,
                    BackupRequest {
                        vm: VmIdentity::new(
                            format!("twin{i}"),
                            format!("4210eeee-0000-0000-0000-{i:012}"),
                        ),
                        consistency: "crash".into(),
                        chunk_size_bytes: 64 << 10,
                        parent: None,
                        disks: vec![DiskSource::whole(2000, "Hard disk 1", &disk)],
                        files: vec![],
                        skipped_disks: vec![],
                        threads: 2,
                    },
                )
                .map_err(|e| e.to_string())
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    for r in &results {
        assert!(r.is_ok(), "every backup succeeds: {r:?}");
    }
    let repo = Repository::open(
        Arc::new(LocalStore::new(&dir).unwrap()),
        secret.map(str::as_bytes),
    )
    .unwrap();
    let report = ops::verify(&repo, None, None, 2).unwrap();
    assert!(report.ok(), "{:?}", report.bad_chunks);
    assert_eq!(report.points, writers);
    let out = t.path().join("r.raw");
    for r in results {
        let m = r.unwrap();
        assert!(common::restore_bytes(&repo, &m, &out) == std::fs::read(&image).unwrap());
    }
}

#[test]
fn identical_backups_side_by_side_never_share_a_temporary_chunk_file() {
    identical_backups_side_by_side(None, 8);
}

#[test]
fn identical_backups_side_by_side_on_an_encrypted_tier_never_publish_a_corrupt_chunk() {
    identical_backups_side_by_side(Some("correct horse battery staple"), 4);
}

fn set_old(path: &Path) {
    let old = SystemTime::now() - Duration::from_secs(3 * 3600);
    std::fs::File::open(path)
        .unwrap()
        .set_modified(old)
        .unwrap();
}

#[test]
fn gc_removes_stale_locks_and_empty_point_directories_and_says_how_many() {
    let t = tempfile::tempdir().unwrap();
    let image = t.path().join("disk.img");
    noise(&image, 1, 41);
    let dir = t.path().join("repo");
    let store = Arc::new(LocalStore::new(&dir).unwrap());
    let repo = Repository::init(store.clone(), None).unwrap();
    let uuid = "4210ffff-0000-0000-0000-000000000001";
    let m = back_up(&repo, uuid, &[&image]);

    // A lock of a process of this host that is gone, and one of another
    // host not refreshed for hours: what killed runs leave.
    let gone = {
        let mut c = std::process::Command::new("true").spawn().unwrap();
        let pid = c.id();
        c.wait().unwrap();
        pid
    };
    let long_ago = (chrono::Utc::now() - chrono::Duration::hours(3)).to_rfc3339();
    let now = chrono::Utc::now().to_rfc3339();
    for (key, host, pid, refreshed) in [
        ("locks/shared-dead", hostname(), gone, now.clone()),
        (
            "locks/shared-old",
            "elsewhere".to_string(),
            1,
            long_ago.clone(),
        ),
    ] {
        let info = LockInfo {
            kind: LockKind::Shared,
            host,
            pid,
            what: "backup of db01".into(),
            started: long_ago.clone(),
            refreshed,
        };
        store.put(key, &serde_json::to_vec(&info).unwrap()).unwrap();
    }
    // Point directories of killed runs: one empty and old, one holding only
    // an old index (never committed), one empty but young (a writer may be
    // about to use it), and a VM directory left empty.
    let points = dir.join("points").join(uuid);
    let empty_old = points.join("20200101T000000000Z-000001");
    let with_index = points.join("20200101T000000000Z-000002");
    let empty_young = points.join("20200101T000000000Z-000003");
    let empty_vm = dir.join("points/4210ffff-0000-0000-0000-000000000009");
    for d in [&empty_old, &with_index, &empty_young, &empty_vm] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(with_index.join("disk-2000.index"), b"half an index").unwrap();
    set_old(&with_index.join("disk-2000.index"));
    set_old(&empty_old);
    set_old(&empty_vm);

    let o = common::command_in(t.path())
        .args(["repo", "gc", "--grace", "1h", "--repo"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let out = text(&o);
    assert!(
        out.contains("2 stale locks and 3 empty directories"),
        "gc says what it removed: {out}"
    );
    assert!(store.list("locks/").unwrap().is_empty(), "no lock is left");
    assert!(!empty_old.exists() && !with_index.exists() && !empty_vm.exists());
    assert!(empty_young.exists(), "a young directory is kept");
    assert!(
        points.join(&m.point_id).join("manifest.json").exists(),
        "the committed point is untouched"
    );
    assert!(ops::verify(&repo, None, None, 2).unwrap().ok());

    // A second gc finds nothing more.
    let r = ops::gc(&repo, Duration::from_secs(3600), false).unwrap();
    assert_eq!((r.stale_locks_removed, r.empty_dirs_removed), (0, 0));
}
