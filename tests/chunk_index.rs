//! A backup references only chunks the repository knows to be present and
//! sound: a chunk `repo verify` found missing or damaged is never carried
//! over by an incremental (its area is read from the source again) and is
//! stored anew by a full; a parent point whose index is gone makes a full
//! with the reason, not a failure forever; and the chunk index that holds
//! this knowledge survives backups side by side. Through the CLI on an
//! image file (`backup-image --changed`), on S3 (moto) through the library,
//! and through the lab for the VM path.

mod common;

use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use coffer::lab::{Lab, LabConfig};
use coffer::plan::cbt::CbtVerdict;
use coffer::policy::model::Consistency;
use coffer::repo::Repository;
use coffer::repo::chunk::{ChunkDigest, ZERO_DIGEST};
use coffer::repo::chunk_index::ChunkState;
use coffer::repo::local::LocalStore;
use coffer::repo::manifest::{Manifest, VmIdentity};
use coffer::repo::restore::{self, DiskFormat};
use coffer::repo::s3::S3Store;
use coffer::repo::{PointRef, ops};
use coffer::run::vm_backup::{VmBackupRequest, backup_vm};
use coffer::vsphere::Session;
use common::s3;

const MIB: u64 = 1 << 20;
const CHUNK: u64 = 256 << 10;

/// Deterministic pseudo-random bytes (xorshift).
fn fill(buf: &mut [u8], seed: u64) {
    let mut x = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    for chunk in buf.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
}

/// An 8 MiB image of distinct random chunks, so deleting one chunk hurts
/// exactly one area.
fn make_image(path: &Path, seed: u64) {
    let mut bytes = vec![0u8; 8 * MIB as usize];
    fill(&mut bytes, seed);
    std::fs::write(path, bytes).unwrap();
}

/// Overwrites `len` bytes at `offset`; returns the range for `--changed`.
fn write_at(path: &Path, offset: u64, len: usize, seed: u64) -> Range<u64> {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    let mut b = vec![0u8; len];
    fill(&mut b, seed);
    f.write_all_at(&b, offset).unwrap();
    offset..offset + len as u64
}

/// A local repository driven through the CLI, its chunk index in `cache`.
struct Cli {
    dir: PathBuf,
    repo: PathBuf,
    cache: PathBuf,
}

impl Cli {
    fn new(dir: &Path) -> Cli {
        let cli = Cli {
            dir: dir.to_path_buf(),
            repo: dir.join("repo"),
            cache: dir.join("cache"),
        };
        cli.ok(&["repo", "init"]);
        cli
    }

    fn run(&self, args: &[&str]) -> Output {
        common::command_in(&self.dir)
            .args(args)
            .arg("--repo")
            .arg(&self.repo)
            .env("XDG_CACHE_HOME", &self.cache)
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "coffer {args:?}: {}{}",
            common::stdout(&o),
            common::stderr(&o)
        );
        common::stdout(&o)
    }

    /// `backup-image` (with `--changed` when ranges are given); the point id.
    fn backup(&self, image: &Path, changed: Option<&[Range<u64>]>) -> (String, serde_json::Value) {
        let mut args = vec!["backup-image".to_string(), image.display().to_string()];
        if let Some(ranges) = changed {
            let f = self.dir.join("changed.txt");
            let text: String = ranges
                .iter()
                .map(|r| format!("{} {}\n", r.start, r.end - r.start))
                .collect();
            std::fs::write(&f, text).unwrap();
            args.push("--changed".into());
            args.push(f.display().to_string());
        }
        args.push("--json".into());
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = self.run(&a);
        assert!(
            o.status.success(),
            "backup-image: {}{}",
            common::stdout(&o),
            common::stderr(&o)
        );
        let v: serde_json::Value = serde_json::from_str(common::stdout(&o).trim()).unwrap();
        (v["point"].as_str().unwrap().to_string(), v)
    }

    fn open(&self) -> Repository {
        Repository::open(Arc::new(LocalStore::new(&self.repo).unwrap()), None)
            .unwrap()
            .with_chunk_index_dir(self.cache.join("coffer").join("chunk-index"))
    }

    fn restore(&self, point: &str) -> Vec<u8> {
        let out = self.dir.join(format!("restore-{point}.raw"));
        self.ok(&[
            "repo",
            "restore",
            point,
            "--out",
            out.to_str().unwrap(),
            "--force",
        ]);
        std::fs::read(out).unwrap()
    }
}

fn manifest_of(repo: &Repository, point: &str) -> Manifest {
    repo.read_manifest(&repo.find_point(point).unwrap())
        .unwrap()
}

/// The distinct data chunks of a point's first disk.
fn data_chunks(repo: &Repository, m: &Manifest) -> Vec<ChunkDigest> {
    let mut v: Vec<ChunkDigest> = repo
        .read_index(m, &m.disks[0])
        .unwrap()
        .chunks
        .into_iter()
        .filter(|d| *d != ZERO_DIGEST)
        .collect();
    v.dedup();
    v
}

#[test]
fn an_incremental_never_references_a_chunk_verify_found_missing() {
    let t = tempfile::tempdir().unwrap();
    let cli = Cli::new(t.path());
    let image = t.path().join("disk.img");
    make_image(&image, 1);
    let (full, _) = cli.backup(&image, None);
    let repo = cli.open();
    // Chunk 5 vanishes from the store (a disk error, a hand-made cleanup).
    let fm = manifest_of(&repo, &full);
    let victim = repo.read_index(&fm, &fm.disks[0]).unwrap().chunks[5];
    std::fs::remove_file(cli.repo.join(victim.key())).unwrap();
    let o = cli.run(&["repo", "verify"]);
    assert!(!o.status.success());
    assert!(
        common::stdout(&o).contains(&victim.to_hex()),
        "{}",
        common::stdout(&o)
    );
    // An incremental that changes another area only.
    let changed = write_at(&image, 20 * CHUNK + 100, 5000, 9);
    let (incr, v) = cli.backup(&image, Some(&[changed]));
    assert_eq!(v["kind"], "incremental");
    let m = manifest_of(&repo, &incr);
    assert!(
        repo.store().get(&victim.key()).is_ok(),
        "the missing chunk was stored anew"
    );
    // Chunk 5's area was read from the source again: the point is whole.
    assert_eq!(cli.restore(&incr), std::fs::read(&image).unwrap());
    let pr = PointRef {
        vm_uuid: m.vm.uuid.clone(),
        point_id: incr.clone(),
    };
    assert!(ops::verify(&repo, Some(&[pr]), None, 2).unwrap().ok());
    // The rewrite repaired the chunk for the older point as well.
    assert_eq!(
        repo.chunk_index().unwrap().state(&victim).unwrap(),
        Some(ChunkState::Present)
    );
    cli.ok(&["repo", "verify"]);
}

#[test]
fn a_full_after_verify_found_damage_rewrites_the_chunk() {
    let t = tempfile::tempdir().unwrap();
    let cli = Cli::new(t.path());
    let image = t.path().join("disk.img");
    make_image(&image, 2);
    let (full, _) = cli.backup(&image, None);
    let repo = cli.open();
    let fm = manifest_of(&repo, &full);
    let victim = repo.read_index(&fm, &fm.disks[0]).unwrap().chunks[3];
    // One bit flips in the stored blob: the file still exists.
    let path = cli.repo.join(victim.key());
    let mut blob = std::fs::read(&path).unwrap();
    let mid = blob.len() / 2;
    blob[mid] ^= 0x10;
    std::fs::write(&path, blob).unwrap();
    let o = cli.run(&["repo", "verify"]);
    assert!(!o.status.success(), "{}", common::stdout(&o));
    assert!(common::stdout(&o).contains("DAMAGED chunk"));
    // A full of the same data must not skip the damaged chunk because a
    // file of that name exists.
    let (again, v) = cli.backup(&image, None);
    assert_eq!(v["kind"], "full");
    assert!(v["chunks_new"].as_u64().unwrap() >= 1, "{v}");
    assert_eq!(cli.restore(&again), std::fs::read(&image).unwrap());
    // The blob was stored anew: every point verifies again.
    assert!(cli.ok(&["repo", "verify"]).contains("verification passed"));
    assert_eq!(cli.restore(&full), std::fs::read(&image).unwrap());
}

#[test]
fn a_missing_parent_index_makes_the_next_backup_a_full_with_the_reason() {
    let t = tempfile::tempdir().unwrap();
    let cli = Cli::new(t.path());
    let image = t.path().join("disk.img");
    make_image(&image, 3);
    let (full, _) = cli.backup(&image, None);
    let repo = cli.open();
    let m = manifest_of(&repo, &full);
    std::fs::remove_file(cli.repo.join(&m.disks[0].index_key)).unwrap();
    let changed = write_at(&image, 7 * CHUNK, 4096, 4);
    let o = cli.run(&[
        "backup-image",
        image.to_str().unwrap(),
        "--changed",
        &{
            let f = t.path().join("c.txt");
            std::fs::write(
                &f,
                format!("{} {}\n", changed.start, changed.end - changed.start),
            )
            .unwrap();
            f.display().to_string()
        },
        "--json",
    ]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    assert!(
        common::stderr(&o).contains("parent index missing"),
        "{}",
        common::stderr(&o)
    );
    let v: serde_json::Value = serde_json::from_str(common::stdout(&o).trim()).unwrap();
    assert_eq!(v["kind"], "full");
    let point = v["point"].as_str().unwrap();
    assert_eq!(cli.restore(point), std::fs::read(&image).unwrap());
    // And again: the next incremental builds on the new full.
    let changed = write_at(&image, 2 * CHUNK, 4096, 5);
    let (_, v) = cli.backup(&image, Some(&[changed]));
    assert_eq!(v["kind"], "incremental");
}

fn image_backup(
    repo: &Repository,
    image: &Path,
    name: &str,
    parent: Option<&Manifest>,
    ranges: Option<Vec<Range<u64>>>,
) -> Manifest {
    let vm = VmIdentity::new(name, format!("4210aaaa-0000-0000-0000-{:012}", name.len()));
    common::backup_image(repo, vm, image, parent, ranges, CHUNK as u32)
}

use common::restore_bytes;

#[test]
fn on_s3_an_incremental_rewrites_a_quarantined_chunk_from_the_source() {
    let t = tempfile::tempdir().unwrap();
    let bucket = s3::bucket(false);
    let endpoint = s3::moto().endpoint();
    let store = Arc::new(S3Store::new(s3::location(&bucket, &endpoint)).unwrap());
    let repo = Repository::init(store, None)
        .unwrap()
        .with_chunk_index_dir(t.path().join("state/chunk-index"));
    let image = t.path().join("disk.img");
    make_image(&image, 6);
    let full = image_backup(&repo, &image, "db01", None, None);
    let victim = repo.read_index(&full, &full.disks[0]).unwrap().chunks[2];
    let mut blob = repo.store().get(&victim.key()).unwrap();
    let last = blob.len() - 1;
    blob[last] ^= 1;
    repo.store().put(&victim.key(), &blob).unwrap();
    let r = ops::verify(&repo, None, None, 2).unwrap();
    assert_eq!(r.bad_chunks.len(), 1);
    assert_eq!(ops::quarantine(&repo, &r.bad_chunks).unwrap(), 1);
    // The change touches the damaged chunk in part: the rest of it must come
    // from the source, not from the quarantined parent chunk.
    let changed = write_at(&image, 2 * CHUNK + 10, 100, 7);
    let incr = image_backup(&repo, &image, "db01", Some(&full), Some(vec![changed]));
    assert_eq!(
        restore_bytes(&repo, &incr, &t.path().join("r.raw")),
        std::fs::read(&image).unwrap()
    );
    let pr = PointRef {
        vm_uuid: incr.vm.uuid.clone(),
        point_id: incr.point_id.clone(),
    };
    assert!(ops::verify(&repo, Some(&[pr]), None, 2).unwrap().ok());
}

#[test]
fn the_chunk_index_survives_backups_side_by_side() {
    let t = tempfile::tempdir().unwrap();
    let cli = Cli::new(t.path());
    let images: Vec<PathBuf> = (0..4)
        .map(|i| {
            let p = t.path().join(format!("vm{i}.img"));
            // Two pairs of identical disks: the side-by-side writers race
            // for the same chunks.
            make_image(&p, 10 + i / 2);
            p
        })
        .collect();
    let children: Vec<std::process::Child> = images
        .iter()
        .map(|img| {
            common::command_in(t.path())
                .args(["backup-image", img.to_str().unwrap(), "--repo"])
                .arg(&cli.repo)
                .env("XDG_CACHE_HOME", &cli.cache)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", common::stderr(&o));
    }
    let repo = cli.open();
    let index = repo.chunk_index().unwrap();
    // Every chunk the points use is known present, and nothing is known
    // that the store lacks.
    let mut used = std::collections::HashSet::new();
    for p in repo.list_points().unwrap() {
        let m = repo.read_manifest(&p).unwrap();
        used.extend(data_chunks(&repo, &m));
    }
    assert_eq!(used.len(), 64, "two distinct disks of 32 chunks");
    for d in &used {
        assert!(index.is_present(d).unwrap(), "{d:?}");
    }
    assert_eq!(index.counts().unwrap(), (64, 0));
    cli.ok(&["repo", "verify"]);
    // A third backup of known data stores nothing new.
    let (_, v) = cli.backup(&images[0], None);
    assert_eq!(v["chunks_new"], 0, "{v}");
}

#[test]
fn gc_forgets_what_it_deletes_and_a_later_backup_stores_it_again() {
    let t = tempfile::tempdir().unwrap();
    let cli = Cli::new(t.path());
    let image = t.path().join("disk.img");
    make_image(&image, 20);
    let (first, _) = cli.backup(&image, None);
    let repo = cli.open();
    let used = data_chunks(&repo, &manifest_of(&repo, &first));
    ops::prune_point(&repo, &repo.find_point(&first).unwrap()).unwrap();
    let r = ops::gc(&repo, Duration::ZERO, false).unwrap();
    assert_eq!(r.chunks_deleted, 32);
    for d in used {
        assert_eq!(repo.chunk_index().unwrap().state(&d).unwrap(), None);
    }
    // The next backup must not deduplicate against what gc removed.
    let (again, v) = cli.backup(&image, None);
    assert_eq!(v["chunks_new"], 32, "{v}");
    assert_eq!(cli.restore(&again), std::fs::read(&image).unwrap());
}

#[test]
fn another_installations_gc_makes_this_index_reconcile_before_it_is_trusted() {
    let t = tempfile::tempdir().unwrap();
    let cli = Cli::new(t.path());
    let image = t.path().join("disk.img");
    make_image(&image, 21);
    let (first, _) = cli.backup(&image, None);
    // A second installation (another state dir) prunes and collects.
    let other = cli
        .open()
        .with_chunk_index_dir(t.path().join("other-state"));
    ops::prune_point(&other, &other.find_point(&first).unwrap()).unwrap();
    assert_eq!(
        ops::gc(&other, Duration::ZERO, false)
            .unwrap()
            .chunks_deleted,
        32
    );
    // This installation's index still lists the chunks; the new epoch makes
    // the next backup reconcile and store them again.
    let (again, v) = cli.backup(&image, None);
    assert_eq!(v["chunks_new"], 32, "{v}");
    assert_eq!(cli.restore(&again), std::fs::read(&image).unwrap());
}

#[test]
fn a_vm_incremental_rereads_a_chunk_verify_found_missing() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let mut cfg = LabConfig::new(dir.join("lab"));
    cfg.vms = 1;
    let lab = Lab::start(cfg).unwrap();
    let session =
        Session::connect(lab.url(), &lab.tls_trust(), lab.user(), lab.password()).unwrap();
    let repo = Repository::init(Arc::new(LocalStore::new(dir.join("repo")).unwrap()), None)
        .unwrap()
        .with_chunk_index_dir(dir.join("state/chunk-index"));
    let vm = || {
        session
            .list_vms()
            .unwrap()
            .into_iter()
            .find(|v| v.name == "lab-vm-01")
            .unwrap()
    };
    let cancel = AtomicBool::new(false);
    let backup = |base: Option<&Manifest>, run: &str| {
        let vm = vm();
        backup_vm(
            &session,
            &repo,
            &VmBackupRequest {
                vm: &vm,
                installation: "00112233aabbccdd",
                snapshot_max_age: Duration::from_secs(24 * 3600),
                source: "lab",
                datacenter: "ha-datacenter",
                host_route: None,
                run_id: run,
                consistency: Consistency::Crash,
                base,
                chunk_size_bytes: CHUNK as u32,
                threads: 2,
                task_timeout: Duration::from_secs(30),
                cancel: &cancel,
                read_whole_disk: false,
                io_limit: None,
                progress: None,
                read: Default::default(),
                max_snapshot_lifetime: None,
                fence: None,
            },
        )
        .unwrap()
    };
    let flat = || std::fs::read(lab.datastore_dir().join("lab-vm-01/lab-vm-01-flat.vmdk")).unwrap();
    let full = backup(None, "r1");
    let victim = *data_chunks(&repo, &full.manifest).last().unwrap();
    repo.store().delete(&victim.key()).unwrap();
    let r = ops::verify(&repo, None, None, 2).unwrap();
    assert_eq!(r.bad_chunks.len(), 1, "{:?}", r.bad_chunks);
    lab.write("lab-vm-01", 1.0).unwrap();
    let incr = backup(Some(&full.manifest), "r2");
    assert!(
        matches!(incr.disks[0].verdict, CbtVerdict::Incremental { .. }),
        "{:?}",
        incr.disks[0].verdict
    );
    let out = dir.join("r.raw");
    let index = repo
        .read_index(&incr.manifest, &incr.manifest.disks[0])
        .unwrap();
    restore::restore_disk(&repo, &index, &out, DiskFormat::Raw, true, 2).unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), flat());

    // The parent's index vanishes: the next backup is a full, saying why.
    std::fs::remove_file(dir.join("repo").join(&incr.manifest.disks[0].index_key)).unwrap();
    lab.write("lab-vm-01", 1.0).unwrap();
    let next = backup(Some(&incr.manifest), "r3");
    match &next.disks[0].verdict {
        CbtVerdict::Full { reason } => {
            assert!(reason.contains("parent index missing"), "{reason}")
        }
        v => panic!("expected a full, got {v:?}"),
    }
    let index = repo
        .read_index(&next.manifest, &next.manifest.disks[0])
        .unwrap();
    restore::restore_disk(&repo, &index, &out, DiskFormat::Raw, true, 2).unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), flat());
}

#[test]
fn coffer_backup_of_a_vm_whose_parent_index_is_gone_is_a_full_with_the_reason() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    std::fs::write(
        dir.join("coffer.toml"),
        r#"
[sources.lab]
kind = "lab"
lab_vms = 1

[tiers.local]
backend = "local"
path = "repo"

[policies.all]
sources = ["lab"]
vms = ["*"]
schedule = "0 0 1 * * *"
consistency = "crash"
backup_to = "local"

[policies.all.retain.local]
last = 3
"#,
    )
    .unwrap();
    let run = |args: &[&str]| {
        let o = common::command_in(dir)
            .args(args)
            .args(["-p", "."])
            .output()
            .unwrap();
        let text = format!("{}{}", common::stdout(&o), common::stderr(&o));
        assert!(o.status.success(), "coffer {args:?}: {text}");
        text
    };
    run(&["repo", "init", "--tier", "local"]);
    run(&["backup", "lab-vm-01"]);
    // A tier of the policy keeps its chunk index in the state dir.
    let indexes: Vec<_> = std::fs::read_dir(dir.join(".coffer/chunk-index"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "sqlite"))
        .collect();
    assert_eq!(indexes.len(), 1);
    for e in walkdir(&dir.join("repo/points")) {
        if e.extension().is_some_and(|x| x == "index") {
            std::fs::remove_file(e).unwrap();
        }
    }
    let out = run(&["backup", "lab-vm-01"]);
    assert!(out.contains("parent index missing"), "{out}");
    assert!(out.contains("full"), "{out}");
}

fn walkdir(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walkdir(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Backups and gc killed (SIGKILL) at assorted moments, over and over: the
/// chunk index may lack chunks afterwards, but it never makes a backup
/// reference a chunk that is gone.
#[test]
fn backups_and_gc_killed_anywhere_never_leave_the_index_naming_a_gone_chunk() {
    let t = tempfile::tempdir().unwrap();
    let cli = Cli::new(t.path());
    let image = t.path().join("disk.img");
    make_image(&image, 30);
    let spawn = |args: &[&str]| {
        common::command_in(t.path())
            .args(args)
            .arg("--repo")
            .arg(&cli.repo)
            .env("XDG_CACHE_HOME", &cli.cache)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let img = image.to_str().unwrap().to_string();
    for (i, delay_ms) in [5u64, 30, 80, 200, 400].into_iter().enumerate() {
        let mut b = spawn(&["backup-image", &img, "--chunk-size", "64KiB"]);
        // A kill at an arbitrary moment is the point here, not a wait.
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = b.kill();
        b.wait().unwrap();
        let mut g = spawn(&["repo", "gc", "--grace", "0s"]);
        std::thread::sleep(Duration::from_millis(delay_ms / 2));
        let _ = g.kill();
        g.wait().unwrap();
        write_at(&image, i as u64 * MIB + 777, 3000, 40 + i as u64);
    }
    // Whatever the kills left: a full, then gc, then an incremental.
    let run = |args: &[&str]| {
        let o = cli.run(args);
        assert!(o.status.success(), "{args:?}: {}", common::stderr(&o));
    };
    run(&["backup-image", &img, "--chunk-size", "64KiB"]);
    let repo = cli.open();
    let full = repo.list_points().unwrap().pop().unwrap();
    assert_eq!(cli.restore(&full.point_id), std::fs::read(&image).unwrap());
    run(&["repo", "gc", "--grace", "0s"]);
    let changed = write_at(&image, 3 * MIB + 5, 70_000, 99);
    let f = t.path().join("changed.txt");
    std::fs::write(
        &f,
        format!("{} {}\n", changed.start, changed.end - changed.start),
    )
    .unwrap();
    run(&[
        "backup-image",
        &img,
        "--chunk-size",
        "64KiB",
        "--changed",
        f.to_str().unwrap(),
        "--base",
        &full.point_id,
    ]);
    let newest = repo.list_points().unwrap().pop().unwrap();
    assert_ne!(newest.point_id, full.point_id);
    assert_eq!(
        cli.restore(&newest.point_id),
        std::fs::read(&image).unwrap()
    );
    assert!(cli.ok(&["repo", "verify"]).contains("verification passed"));
}
