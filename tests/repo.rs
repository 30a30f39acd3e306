//! The repository against real files: bytes restored equal bytes backed up,
//! incrementals read only what changed, damage is found and named, gc and
//! copy keep every point restorable, keys are checked, and a process killed
//! at any moment leaves a repository that verifies. Every test runs three
//! times: on a local directory, on a bucket of a real S3 server (moto) and
//! on a container of a real Azure Blob endpoint (Azurite).

mod common;

use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use coffer::repo::azure::AzureStore;
use coffer::repo::backup::{self, BackupRequest, DiskSource, FileDisk};
use coffer::repo::chunk::ChunkDigest;
use coffer::repo::manifest::{Manifest, VmIdentity};
use coffer::repo::restore::{self, DiskFormat};
use coffer::repo::s3::S3Store;
use coffer::repo::store::Store;
use coffer::repo::{PackConfig, RepoError, Repository, local::LocalStore, ops};
use common::{azurite, s3, stdout};

const MIB: u64 = 1 << 20;

/// A 48 MiB image: random data, text, a hole, all at odd offsets.
fn make_image(path: &Path) {
    let f = std::fs::File::create(path).unwrap();
    f.set_len(48 * MIB).unwrap();
    let mut noise = vec![0u8; 6 * MIB as usize];
    fill(&mut noise, 1);
    f.write_all_at(&noise, 3 * MIB + 4096).unwrap();
    let text = b"INSERT INTO orders VALUES (42, 'coffer');\n".repeat(200_000);
    f.write_all_at(&text, 20 * MIB + 123).unwrap();
    f.write_all_at(b"tail", 48 * MIB - 4).unwrap();
}

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
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

/// Where a test keeps its repositories.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Backend {
    Local,
    /// A local directory whose chunks go into packs.
    LocalPacks,
    S3,
    Azure,
}

/// The pack size the tests write at: small, so a test's few MiB make many
/// packs.
const TEST_PACK: u64 = 2 * MIB;

/// One repository location: its store, and how the CLI names it.
struct Place {
    store: Arc<dyn Store>,
    args: Vec<String>,
    env: Vec<(String, String)>,
    dir: Option<std::path::PathBuf>,
    /// How a repository created here stores chunks.
    packs: Option<u64>,
}

impl Place {
    fn new(backend: Backend, t: &Path, name: &str) -> Place {
        match backend {
            Backend::Local | Backend::LocalPacks => {
                let dir = t.join(name);
                Place {
                    store: Arc::new(LocalStore::new(&dir).unwrap()),
                    args: vec!["--repo".into(), dir.display().to_string()],
                    env: vec![],
                    dir: Some(dir),
                    packs: (backend == Backend::LocalPacks).then_some(TEST_PACK),
                }
            }
            Backend::S3 => {
                let bucket = s3::bucket(false);
                let endpoint = s3::moto().endpoint();
                Place {
                    store: Arc::new(S3Store::new(s3::location(&bucket, &endpoint)).unwrap()),
                    args: vec![
                        "--repo".into(),
                        format!("s3://{bucket}"),
                        "--endpoint".into(),
                        endpoint,
                    ],
                    env: vec![
                        ("AWS_ACCESS_KEY_ID".into(), "coffer-test".into()),
                        ("AWS_SECRET_ACCESS_KEY".into(), "coffer-test-secret".into()),
                    ],
                    dir: None,
                    packs: Some(TEST_PACK),
                }
            }
            Backend::Azure => {
                let container = azurite::container();
                let endpoint = azurite::azurite().endpoint();
                Place {
                    store: Arc::new(
                        AzureStore::new(azurite::location(&container, &endpoint)).unwrap(),
                    ),
                    args: vec![
                        "--repo".into(),
                        format!("azure://{}/{container}", azurite::ACCOUNT),
                        "--endpoint".into(),
                        endpoint,
                    ],
                    env: vec![("AZURE_STORAGE_ACCOUNT_KEY".into(), azurite::KEY.into())],
                    dir: None,
                    packs: Some(TEST_PACK),
                }
            }
        }
    }

    /// `coffer ARGS… <this repository>`.
    fn coffer(&self, args: &[&str]) -> std::process::Command {
        let mut c = common::command_in(&common::root());
        c.args(args).args(&self.args).envs(self.env.clone());
        c
    }

    /// `coffer repo init` here, storing chunks as this place does.
    fn init_cli(&self) -> std::process::Output {
        let size = self
            .packs
            .map_or("off".to_string(), |p| format!("{}KiB", p >> 10));
        self.coffer(&["repo", "init", "--pack-size", &size])
            .output()
            .unwrap()
    }

    /// Flips a byte in the middle of chunk `d`'s stored blob, wherever it
    /// is kept (its own object, or its place in a pack).
    fn damage_chunk(&self, repo: &Repository, d: &ChunkDigest) {
        let place = repo
            .with_pack_map(|m| m.locate(d).first().copied())
            .unwrap()
            .flatten();
        match place {
            Some(loc) => self.tamper(&loc.pack.key(), |b| {
                b[loc.offset as usize + loc.length as usize / 2] ^= 0x10;
            }),
            None => self.tamper(&d.key(), |b| {
                let mid = b.len() / 2;
                b[mid] ^= 0x10;
            }),
        }
    }

    /// Keys of the objects under `prefix`.
    fn keys(&self, prefix: &str) -> Vec<String> {
        let mut k: Vec<String> = self
            .store
            .list(prefix)
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        k.sort();
        k
    }

    /// Rewrites a stored object in place, behind the repository's back.
    fn tamper(&self, key: &str, f: impl FnOnce(&mut Vec<u8>)) {
        let mut bytes = self.store.get(key).unwrap();
        f(&mut bytes);
        self.store.put(key, &bytes).unwrap();
    }
}

fn open_repo(place: &Place, secret: Option<&str>) -> Repository {
    let store = place.store.clone();
    match Repository::open(store.clone(), secret.map(str::as_bytes)) {
        Ok(r) => r,
        Err(RepoError::NotARepository(_)) => Repository::init_with(
            store,
            secret.map(str::as_bytes),
            place.packs.map(|target_bytes| PackConfig { target_bytes }),
        )
        .unwrap(),
        Err(e) => panic!("{e}"),
    }
}

fn vm() -> VmIdentity {
    VmIdentity::new("db01", "4210aaaa-0000-0000-0000-000000000001")
}

fn run_backup(
    repo: &Repository,
    image: &Path,
    parent: Option<&Manifest>,
    ranges: Option<Vec<Range<u64>>>,
    chunk: u32,
) -> Manifest {
    common::backup_image(repo, vm(), image, parent, ranges, chunk)
}

use common::restore_bytes;

/// Scattered 64 KiB writes; returns the changed ranges as CBT reports them.
fn scatter_writes(image: &Path, count: u64, seed: u64) -> Vec<Range<u64>> {
    let f = std::fs::OpenOptions::new().write(true).open(image).unwrap();
    let mut ranges = Vec::new();
    let mut block = vec![0u8; 64 << 10];
    for i in 0..count {
        fill(&mut block, seed + i);
        let offset = ((seed + i) * 7_919 * 65_536) % (48 * MIB - (64 << 10));
        let offset = offset / 512 * 512;
        f.write_all_at(&block, offset).unwrap();
        ranges.push(offset..offset + block.len() as u64);
    }
    ranges
}

/// Declares each test once per backend: `local::NAME`, `local_packs::NAME`
/// (chunks in packs on a directory), `on_s3::NAME` and `on_azure::NAME`
/// (both in packs, as object-storage tiers are by default).
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod local {
            $(#[test] fn $name() { super::$name(super::Backend::Local) })*
        }
        mod local_packs {
            $(#[test] fn $name() { super::$name(super::Backend::LocalPacks) })*
        }
        mod on_s3 {
            $(#[test] fn $name() { super::$name(super::Backend::S3) })*
        }
        mod on_azure {
            $(#[test] fn $name() { super::$name(super::Backend::Azure) })*
        }
    };
}

on_every_backend!(
    full_and_incremental_restore_byte_identical_and_incremental_reads_only_changes,
    restored_vmdk_is_accepted_by_qemu_img_compare,
    a_flipped_bit_is_found_and_named_with_the_points_that_use_it,
    rolling_verify_samples_cover_every_chunk_once,
    gc_frees_what_pruned_points_held_and_keeps_everything_else_restorable,
    copy_sends_only_missing_chunks_and_the_copy_restores,
    encrypted_tiers_check_the_key_and_hide_content,
    a_repository_of_a_newer_format_is_refused_with_a_message,
    an_incremental_refuses_a_resized_disk,
    a_backup_killed_anywhere_leaves_a_repository_that_verifies,
    gc_never_runs_beside_a_writer_and_stale_locks_do_not_block,
    a_damaged_copy_is_repaired_from_a_healthy_tier,
);

/// A chunk damaged on one tier: verify finds it, quarantine moves it out of
/// the way, and copying the point again from a healthy tier puts a good
/// blob back, for every point that shares it.
fn a_damaged_copy_is_repaired_from_a_healthy_tier(be: Backend) {
    let t = tempfile::tempdir().unwrap();
    let image = t.path().join("disk.img");
    make_image(&image);
    let src = open_repo(&Place::new(Backend::Local, t.path(), "src"), None);
    let place = Place::new(be, t.path(), "dst");
    let dst = open_repo(&place, None);
    let a = run_backup(&src, &image, None, None, 1 << 20);
    let pa = src.find_point(&a.point_id).unwrap();
    ops::copy_point(&src, &dst, &pa, 2).unwrap();
    let victim = dst
        .read_index(&a, &a.disks[0])
        .unwrap()
        .chunks
        .into_iter()
        .find(|d| *d != coffer::repo::chunk::ZERO_DIGEST)
        .unwrap();
    place.damage_chunk(&dst, &victim);
    let r = ops::verify(&dst, None, None, 2).unwrap();
    assert_eq!(r.bad_chunks.len(), 1);
    assert_eq!(ops::quarantine(&dst, &r.bad_chunks).unwrap(), 1);
    // Set aside whole (a chunk object), or its place in a pack.
    let aside = place.keys("quarantine/");
    assert!(
        aside.len() == 1 && aside[0].starts_with(&format!("quarantine/{}", victim.to_hex())),
        "{aside:?}"
    );
    // The copy sends the missing chunk again from the healthy tier.
    let (_, c) = ops::copy_point(&src, &dst, &pa, 2).unwrap();
    assert_eq!(c.chunks_sent, 1, "{c:?}");
    assert!(ops::verify(&dst, None, None, 2).unwrap().ok());
    assert_eq!(
        restore_bytes(&dst, &a, &t.path().join("r.raw")),
        std::fs::read(&image).unwrap()
    );
}

fn gc_never_runs_beside_a_writer_and_stale_locks_do_not_block(b: Backend) {
    use coffer::repo::lock::{LockInfo, LockKind};
    let t = tempfile::tempdir().unwrap();
    let image = t.path().join("disk.img");
    make_image(&image);
    let place = Place::new(b, t.path(), "repo");
    let repo = open_repo(&place, None);
    // A backup in progress (its shared lock) stops gc, which names it.
    let writer = repo.lock(LockKind::Shared, "backup of db01").unwrap();
    let err = ops::gc(&repo, Duration::ZERO, false).unwrap_err();
    assert!(
        matches!(err, RepoError::Busy(_)) && err.to_string().contains("backup of db01"),
        "{err}"
    );
    // Other writers still go ahead beside it.
    let m = run_backup(&repo, &image, None, None, 1 << 20);
    drop(writer);
    // gc in progress stops a backup.
    let gc = repo.lock(LockKind::Exclusive, "gc").unwrap();
    let disk = FileDisk::open(&image).unwrap();
    let err = backup::backup(
        &repo,
        BackupRequest {
            vm: vm(),
            consistency: "crash".into(),
            chunk_size_bytes: 1 << 20,
            parent: None,
            disks: vec![DiskSource {
                device_key: 2000,
                label: "Hard disk 1".into(),
                reader: &disk,
                change_id: None,
                from_parent: false,
                backing: None,
                slot: None,
                ranges: None,
            }],
            files: vec![],
            skipped_disks: vec![],
            threads: 2,
        },
    )
    .unwrap_err();
    assert!(
        matches!(err, RepoError::Busy(ref h) if h.contains("gc")),
        "{err}"
    );
    drop(gc);
    assert!(ops::gc(&repo, Duration::ZERO, false).is_ok());

    // Locks of holders that are gone do not block: a dead process on this
    // host, and one on another host not refreshed for an hour.
    let dead = LockInfo {
        kind: LockKind::Exclusive,
        host: coffer::repo::lock::hostname(),
        pid: u32::MAX / 2,
        what: "gc".into(),
        started: "2026-01-01T00:00:00Z".into(),
        refreshed: chrono::Utc::now().to_rfc3339(),
    };
    let old = LockInfo {
        host: "elsewhere".into(),
        pid: 1,
        refreshed: (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339(),
        ..dead.clone()
    };
    let live_elsewhere = LockInfo {
        host: "elsewhere".into(),
        pid: 2,
        kind: LockKind::Shared,
        what: "backup of web01".into(),
        refreshed: chrono::Utc::now().to_rfc3339(),
        ..dead.clone()
    };
    for (name, info) in [("a", &dead), ("b", &old), ("c", &live_elsewhere)] {
        place
            .store
            .put(&format!("locks/{name}"), &serde_json::to_vec(info).unwrap())
            .unwrap();
    }
    let m2 = run_backup(
        &repo,
        &image,
        Some(&m),
        Some(std::iter::once(0..4096).collect()),
        1 << 20,
    );
    assert!(
        ops::gc(&repo, Duration::ZERO, false)
            .unwrap_err()
            .to_string()
            .contains("backup of web01 (pid 2 on elsewhere")
    );
    // `coffer repo unlock` removes the stale two and keeps the live one.
    let out = place.coffer(&["repo", "unlock"]).output().unwrap();
    let text = stdout(&out);
    assert!(
        text.contains("2 stale locks removed; 1 live locks remain"),
        "{text}{}",
        common::stderr(&out)
    );
    place.store.delete("locks/c").unwrap();
    ops::gc(&repo, Duration::ZERO, false).unwrap();
    assert_eq!(repo.list_points().unwrap().len(), 2);
    assert_eq!(
        restore_bytes(&repo, &m2, &t.path().join("r.raw")),
        std::fs::read(&image).unwrap()
    );
}

fn full_and_incremental_restore_byte_identical_and_incremental_reads_only_changes(b: Backend) {
    let t = tempfile::tempdir().unwrap();
    let image = t.path().join("disk.img");
    make_image(&image);
    let repo = open_repo(&Place::new(b, t.path(), "repo"), None);
    let allocated = FileDisk::open(&image).unwrap().allocated_ranges().unwrap();
    let full = run_backup(&repo, &image, None, Some(allocated), 1 << 20);
    let at_full = std::fs::read(&image).unwrap();
    assert_eq!(
        restore_bytes(&repo, &full, &t.path().join("a.raw")),
        at_full
    );

    let changed = scatter_writes(&image, 20, 5);
    let changed_bytes: u64 = backup::normalize_ranges(changed.clone(), 48 * MIB)
        .iter()
        .map(|r| r.end - r.start)
        .sum();
    let incr = run_backup(&repo, &image, Some(&full), Some(changed), 1 << 20);
    assert_eq!(incr.parent.as_deref(), Some(full.point_id.as_str()));
    assert_eq!(
        incr.disks[0].bytes_read, changed_bytes,
        "only the changed bytes are read from the source"
    );
    assert_eq!(
        restore_bytes(&repo, &incr, &t.path().join("b.raw")),
        std::fs::read(&image).unwrap()
    );
    // The full is still the full.
    assert_eq!(
        restore_bytes(&repo, &full, &t.path().join("c.raw")),
        at_full
    );
    // Sparse: the hole in the image is a hole in the restored file.
    let meta = std::fs::metadata(t.path().join("a.raw")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert!(
        meta.blocks() * 512 < 30 * MIB,
        "restored file is sparse ({} bytes allocated)",
        meta.blocks() * 512
    );
}

fn restored_vmdk_is_accepted_by_qemu_img_compare(b: Backend) {
    let t = tempfile::tempdir().unwrap();
    let image = t.path().join("disk.img");
    make_image(&image);
    let repo = open_repo(&Place::new(b, t.path(), "repo"), None);
    let m = run_backup(&repo, &image, None, None, 256 << 10);
    let index = repo.read_index(&m, &m.disks[0]).unwrap();
    let out = t.path().join("restored.vmdk");
    restore::restore_disk(&repo, &index, &out, DiskFormat::Vmdk, false, 2).unwrap();
    let info = std::process::Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        info.status.success(),
        "{}",
        String::from_utf8_lossy(&info.stderr)
    );
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["format"], "vmdk");
    assert_eq!(info["virtual-size"], 48 * MIB);
    let cmp = std::process::Command::new("qemu-img")
        .args(["compare", "-f", "vmdk", "-F", "raw"])
        .arg(&out)
        .arg(&image)
        .output()
        .unwrap();
    assert!(
        cmp.status.success(),
        "qemu-img compare: {}",
        String::from_utf8_lossy(&cmp.stdout)
    );
    // Refuses to overwrite without being told.
    assert!(restore::restore_disk(&repo, &index, &out, DiskFormat::Vmdk, false, 2).is_err());
}

fn a_flipped_bit_is_found_and_named_with_the_points_that_use_it(be: Backend) {
    let t = tempfile::tempdir().unwrap();
    let image = t.path().join("disk.img");
    make_image(&image);
    let place = Place::new(be, t.path(), "repo");
    let repo = open_repo(&place, None);
    let a = run_backup(&repo, &image, None, None, 1 << 20);
    let b = run_backup(
        &repo,
        &image,
        Some(&a),
        Some(scatter_writes(&image, 2, 9)),
        1 << 20,
    );
    // Damage a chunk both points share.
    let index = repo.read_index(&a, &a.disks[0]).unwrap();
    let shared = index
        .chunks
        .iter()
        .find(|d| {
            **d != coffer::repo::chunk::ZERO_DIGEST
                && repo.read_index(&b, &b.disks[0]).unwrap().chunks.contains(d)
        })
        .unwrap();
    place.damage_chunk(&repo, shared);

    let report = ops::verify(&repo, None, None, 2).unwrap();
    assert!(!report.ok());
    assert_eq!(report.bad_chunks.len(), 1);
    assert_eq!(report.bad_chunks[0].digest, *shared);
    assert_eq!(
        report.bad_chunks[0].points,
        vec![a.point_id.clone(), b.point_id.clone()]
    );
    // Through the CLI: exit 4, chunk and points named.
    let out = place.coffer(&["repo", "verify"]).output().unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", common::stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains(&shared.to_hex()) && text.contains(&a.point_id) && text.contains(&b.point_id),
        "{text}"
    );
    // A restore of a damaged point fails loudly instead of writing bad data.
    let idx = repo.read_index(&a, &a.disks[0]).unwrap();
    assert!(
        restore::restore_disk(
            &repo,
            &idx,
            &t.path().join("x.raw"),
            DiskFormat::Raw,
            true,
            2
        )
        .is_err()
    );
}

fn rolling_verify_samples_cover_every_chunk_once(b: Backend) {
    let t = tempfile::tempdir().unwrap();
    let image = t.path().join("disk.img");
    make_image(&image);
    let repo = open_repo(&Place::new(b, t.path(), "repo"), None);
    run_backup(&repo, &image, None, None, 64 << 10);
    let all = ops::verify(&repo, None, None, 2).unwrap().chunks_checked;
    let parts: usize = (0..5)
        .map(|p| {
            ops::verify(&repo, None, Some(ops::Sample { part: p, of: 5 }), 2)
                .unwrap()
                .chunks_checked
        })
        .sum();
    assert_eq!(parts, all);
}

fn gc_frees_what_pruned_points_held_and_keeps_everything_else_restorable(be: Backend) {
    let t = tempfile::tempdir().unwrap();
    let image = t.path().join("disk.img");
    make_image(&image);
    let repo = open_repo(&Place::new(be, t.path(), "repo"), None);
    let a = run_backup(&repo, &image, None, None, 1 << 20);
    let changed = scatter_writes(&image, 10, 77);
    let b = run_backup(&repo, &image, Some(&a), Some(changed), 1 << 20);
    let expected_b = std::fs::read(&image).unwrap();
    let pa = repo.find_point(&a.point_id).unwrap();
    ops::prune_point(&repo, &pa).unwrap();
    assert_eq!(repo.list_points().unwrap().len(), 1);
    // Within the grace period nothing goes: a running backup may depend on it.
    let young = ops::gc(&repo, Duration::from_secs(3600), false).unwrap();
    assert_eq!(young.chunks_deleted, 0);
    assert!(young.chunks_kept_young > 0);
    // With packs, a pack goes or is rewritten only past the repack
    // threshold: the lowest here, so that the few (small) changed chunks
    // count.
    let repo = repo.with_pack_tuning(None, Some(f64::MIN_POSITIVE));
    let r = ops::gc(&repo, Duration::ZERO, false).unwrap();
    assert!(r.chunks_deleted > 0 && r.bytes_freed > 0, "{r:?}");
    assert!(ops::verify(&repo, None, None, 2).unwrap().ok());
    assert_eq!(
        restore_bytes(&repo, &b, &t.path().join("b.raw")),
        expected_b
    );
}

fn copy_sends_only_missing_chunks_and_the_copy_restores(be: Backend) {
    let t = tempfile::tempdir().unwrap();
    let image = t.path().join("disk.img");
    make_image(&image);
    // The source is always local (the fast tier); the destination is the
    // backend under test, as in a copy to the offsite tier.
    let src = open_repo(&Place::new(Backend::Local, t.path(), "src"), None);
    let dst = open_repo(&Place::new(be, t.path(), "dst"), None);
    let a = run_backup(&src, &image, None, None, 1 << 20);
    let b = run_backup(
        &src,
        &image,
        Some(&a),
        Some(scatter_writes(&image, 3, 11)),
        1 << 20,
    );
    let (_, first) = ops::copy_point(&src, &dst, &src.find_point(&a.point_id).unwrap(), 2).unwrap();
    let (_, second) =
        ops::copy_point(&src, &dst, &src.find_point(&b.point_id).unwrap(), 2).unwrap();
    assert!(first.chunks_sent > 0);
    assert!(
        second.chunks_sent <= 3,
        "only the chunks the writes touched: {second:?}"
    );
    assert!(second.chunks_present > 0);
    assert_eq!(
        restore_bytes(&dst, &b, &t.path().join("b.raw")),
        std::fs::read(&image).unwrap()
    );
    // Copy into an encrypted tier re-encodes and still restores.
    let enc = open_repo(&Place::new(be, t.path(), "enc"), Some("correct horse"));
    let (m, _) = ops::copy_point(&src, &enc, &src.find_point(&b.point_id).unwrap(), 2).unwrap();
    assert_ne!(
        m.disks[0].index_sha256, b.disks[0].index_sha256,
        "keyed ids differ"
    );
    assert_eq!(
        restore_bytes(&enc, &m, &t.path().join("e.raw")),
        std::fs::read(&image).unwrap()
    );
}

fn encrypted_tiers_check_the_key_and_hide_content(b: Backend) {
    let t = tempfile::tempdir().unwrap();
    let image = t.path().join("disk.img");
    make_image(&image);
    let place = Place::new(b, t.path(), "repo");
    let repo = open_repo(&place, Some("s3cret passphrase"));
    let m = run_backup(&repo, &image, None, None, 1 << 20);
    assert_eq!(
        restore_bytes(&repo, &m, &t.path().join("r.raw")),
        std::fs::read(&image).unwrap()
    );
    assert!(matches!(
        Repository::open(place.store.clone(), Some(b"wrong")),
        Err(RepoError::WrongKey)
    ));
    assert!(matches!(
        Repository::open(place.store.clone(), None),
        Err(RepoError::KeyRequired)
    ));
    // No plaintext of the text region appears in any stored object.
    let objects: Vec<_> = ["chunks/", "packs/", "pack-index/"]
        .iter()
        .flat_map(|p| place.store.list(p).unwrap())
        .collect();
    assert!(objects.len() >= 3, "{objects:?}");
    for o in objects {
        let bytes = place.store.get(&o.key).unwrap();
        assert!(
            !bytes.windows(11).any(|w| w == b"INSERT INTO"),
            "plaintext leaked in {}",
            o.key
        );
    }
    // A tampered manifest is refused.
    place.tamper(&m.key().unwrap(), |bytes| {
        let text = String::from_utf8(bytes.clone())
            .unwrap()
            .replace("\"crash\"", "\"application\"");
        *bytes = text.into_bytes();
    });
    let p = repo.find_point(&m.point_id).unwrap();
    assert!(matches!(
        repo.read_manifest(&p),
        Err(RepoError::BadManifest { .. })
    ));
}

fn a_repository_of_a_newer_format_is_refused_with_a_message(b: Backend) {
    let t = tempfile::tempdir().unwrap();
    let place = Place::new(b, t.path(), "repo");
    open_repo(&place, None);
    place.tamper("config", |bytes| {
        let text = String::from_utf8(bytes.clone())
            .unwrap()
            .replace("\"version\": 1", "\"version\": 9")
            .replace("\"version\": 2", "\"version\": 9");
        *bytes = text.into_bytes();
    });
    let err = Repository::open(place.store.clone(), None).unwrap_err();
    assert!(err.to_string().contains("newer than this coffer"), "{err}");
}

fn an_incremental_refuses_a_resized_disk(b: Backend) {
    let t = tempfile::tempdir().unwrap();
    let image = t.path().join("disk.img");
    make_image(&image);
    let repo = open_repo(&Place::new(b, t.path(), "repo"), None);
    let a = run_backup(&repo, &image, None, None, 1 << 20);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&image)
        .unwrap()
        .set_len(64 * MIB)
        .unwrap();
    let disk = FileDisk::open(&image).unwrap();
    let err = backup::backup(
        &repo,
        BackupRequest {
            vm: vm(),
            consistency: "crash".into(),
            chunk_size_bytes: 1 << 20,
            parent: Some(&a),
            disks: vec![DiskSource {
                device_key: 2000,
                label: "Hard disk 1".into(),
                reader: &disk,
                change_id: None,
                from_parent: true,
                backing: None,
                slot: None,
                ranges: Some(std::iter::once(0..4096).collect()),
            }],
            files: vec![],
            skipped_disks: vec![],
            threads: 2,
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("take a full backup"), "{err}");
}

/// SIGKILL a backup at many moments; after each kill the repository still
/// verifies, shows no half-written point, and gc removes the leftovers.
fn a_backup_killed_anywhere_leaves_a_repository_that_verifies(b: Backend) {
    let t = tempfile::tempdir().unwrap();
    let image = t.path().join("disk.img");
    let f = std::fs::File::create(&image).unwrap();
    let mut data = vec![0u8; 64 * MIB as usize];
    fill(&mut data, 3);
    f.write_all_at(&data, 0).unwrap();
    let place = Place::new(b, t.path(), "repo");
    let init = place.init_cli();
    assert_eq!(init.status.code(), Some(0), "{}", common::stderr(&init));
    let mut committed = 0;
    for (i, delay_ms) in [5u64, 20, 40, 80, 120, 200, 350].into_iter().enumerate() {
        let mut child = place
            .coffer(&[
                "backup-image",
                image.to_str().unwrap(),
                "--vm",
                "kill-test",
                "--chunk-size",
                "64KiB",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let status = child.wait().unwrap();
        if status.success() {
            committed += 1;
        }
        let repo = open_repo(&place, None);
        let points = repo.list_points().unwrap();
        assert_eq!(
            points.len(),
            committed,
            "round {i}: only committed points are visible"
        );
        let v = ops::verify(&repo, None, None, 2).unwrap();
        assert!(v.ok(), "round {i}: {v:?}");
        // Change a little so the next round writes new chunks.
        f.write_all_at(&[i as u8 + 1; 4096], (i as u64) * 5 * MIB)
            .unwrap();
    }
    let repo = open_repo(&place, None);
    ops::gc(&repo, Duration::ZERO, false).unwrap();
    assert!(ops::verify(&repo, None, None, 2).unwrap().ok());
    if let Some(dir) = &place.dir {
        let leftovers: Vec<_> = walkdir::WalkDir::new(dir)
            .into_iter()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
            .collect();
        assert!(
            leftovers.is_empty(),
            "gc removed temporary files: {leftovers:?}"
        );
    }
}

/// Declares each packs test on every backend whose chunks go into packs.
macro_rules! on_pack_backends {
    ($($name:ident),* $(,)?) => {
        mod packs_local {
            $(#[test] fn $name() { super::$name(super::Backend::LocalPacks) })*
        }
        mod packs_on_s3 {
            $(#[test] fn $name() { super::$name(super::Backend::S3) })*
        }
        mod packs_on_azure {
            $(#[test] fn $name() { super::$name(super::Backend::Azure) })*
        }
    };
}

on_pack_backends!(
    packs_hold_many_chunks_and_a_lost_or_damaged_index_is_rebuilt_from_trailers,
    gc_repacks_only_past_the_waste_threshold_and_loses_nothing,
    migrate_moves_chunk_objects_into_packs_and_every_point_restores,
);

/// The unique stored chunks of a point.
fn chunks_of(repo: &Repository, m: &Manifest) -> std::collections::BTreeSet<ChunkDigest> {
    let mut out: std::collections::BTreeSet<ChunkDigest> = m.file_digests().into_iter().collect();
    for d in &m.disks {
        out.extend(repo.read_index(m, d).unwrap().chunks);
    }
    out.remove(&coffer::repo::chunk::ZERO_DIGEST);
    out
}

/// Chunks go many to an object; with every index object gone (a run killed
/// between a pack and its index) or damaged, the packs are read through
/// their trailers and restore byte-identical; gc then names them in one
/// index again.
fn packs_hold_many_chunks_and_a_lost_or_damaged_index_is_rebuilt_from_trailers(b: Backend) {
    let t = tempfile::tempdir().unwrap();
    let image = t.path().join("disk.img");
    make_image(&image);
    let place = Place::new(b, t.path(), "repo");
    let repo = open_repo(&place, None);
    let m = run_backup(&repo, &image, None, None, 64 << 10);
    let chunks = chunks_of(&repo, &m).len();
    let packs = place.keys("packs/");
    assert!(place.keys("chunks/").is_empty(), "no chunk objects");
    assert!(
        packs.len() >= 2 && packs.len() * 10 < chunks,
        "{chunks} chunks in {} packs",
        packs.len()
    );
    assert_eq!(place.keys("pack-index/").len(), 1, "one index per commit");
    let expected = std::fs::read(&image).unwrap();

    for k in place.keys("pack-index/") {
        place.store.delete(&k).unwrap();
    }
    // A planted index object whose content does not match its name.
    place
        .store
        .put(&format!("pack-index/{}", "ab".repeat(32)), b"CFX1 nonsense")
        .unwrap();
    let fresh = open_repo(&place, None);
    assert_eq!(restore_bytes(&fresh, &m, &t.path().join("a.raw")), expected);
    assert!(ops::verify(&fresh, None, None, 2).unwrap().ok());

    let r = ops::gc(&fresh, Duration::ZERO, false).unwrap();
    assert_eq!((r.chunks_deleted, r.packs_deleted), (0, 0), "{r:?}");
    assert_eq!(
        place.keys("pack-index/").len(),
        1,
        "one index names them all"
    );
    assert_eq!(place.keys("packs/"), packs, "no pack was rewritten");
    let again = open_repo(&place, None);
    assert_eq!(restore_bytes(&again, &m, &t.path().join("b.raw")), expected);
}

/// gc deletes packs nothing references, repacks a pack only when its
/// unreferenced share passes the threshold, and every remaining point
/// restores byte-identical throughout.
fn gc_repacks_only_past_the_waste_threshold_and_loses_nothing(be: Backend) {
    let t = tempfile::tempdir().unwrap();
    let image = t.path().join("disk.img");
    make_image(&image);
    let place = Place::new(be, t.path(), "repo");
    let repo = open_repo(&place, None);
    let a = run_backup(&repo, &image, None, None, 64 << 10);
    let changed = scatter_writes(&image, 40, 5);
    let b = run_backup(&repo, &image, Some(&a), Some(changed), 64 << 10);
    let expected_b = std::fs::read(&image).unwrap();
    let only_a: Vec<ChunkDigest> = chunks_of(&repo, &a)
        .difference(&chunks_of(&repo, &b))
        .copied()
        .collect();
    assert!(!only_a.is_empty());
    ops::prune_point(&repo, &repo.find_point(&a.point_id).unwrap()).unwrap();

    // A threshold no pack reaches: nothing is rewritten.
    let strict = open_repo(&place, None).with_pack_tuning(None, Some(1.0));
    let packs_before = place.keys("packs/");
    let r = ops::gc(&strict, Duration::ZERO, false).unwrap();
    assert_eq!(r.packs_repacked, 0, "{r:?}");
    assert!(
        place
            .keys("packs/")
            .iter()
            .all(|k| packs_before.contains(k)),
        "no new pack"
    );
    assert_eq!(
        restore_bytes(&strict, &b, &t.path().join("b1.raw")),
        expected_b
    );

    // A low threshold: the packs that held a's chunks are rewritten.
    let eager = open_repo(&place, None).with_pack_tuning(None, Some(0.01));
    let dry = ops::gc(&eager, Duration::ZERO, true).unwrap();
    assert!(dry.packs_repacked > 0, "{dry:?}");
    let r = ops::gc(&eager, Duration::ZERO, false).unwrap();
    assert_eq!(r.packs_repacked, dry.packs_repacked, "{r:?}");
    assert!(r.chunks_deleted >= only_a.len(), "{r:?}");
    let fresh = open_repo(&place, None);
    let stored = fresh.list_chunks().unwrap();
    assert!(
        only_a.iter().all(|d| !stored.contains_key(d)),
        "a's chunks are gone"
    );
    assert!(chunks_of(&fresh, &b).iter().all(|d| stored.contains_key(d)));
    assert!(ops::verify(&fresh, None, None, 2).unwrap().ok());
    assert_eq!(
        restore_bytes(&fresh, &b, &t.path().join("b2.raw")),
        expected_b
    );
    assert_eq!(place.keys("pack-index/").len(), 1);
}

/// A repository of chunk objects (format 1) moves into packs: the config
/// says version 2, no chunk object is left, and every point restores
/// byte-identical; a second run has nothing to do.
fn migrate_moves_chunk_objects_into_packs_and_every_point_restores(b: Backend) {
    let t = tempfile::tempdir().unwrap();
    let image = t.path().join("disk.img");
    make_image(&image);
    let mut place = Place::new(b, t.path(), "repo");
    place.packs = None;
    let repo = open_repo(&place, None);
    assert!(!repo.has_packs() && repo.config.version == 1);
    let a = run_backup(&repo, &image, None, None, 256 << 10);
    let expected_a = std::fs::read(&image).unwrap();
    let m = run_backup(
        &repo,
        &image,
        Some(&a),
        Some(scatter_writes(&image, 8, 3)),
        256 << 10,
    );
    let expected_b = std::fs::read(&image).unwrap();
    let objects = place.keys("chunks/").len();
    assert!(objects > 10);

    let out = place
        .coffer(&["repo", "migrate", "--pack-size", "1MiB"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", common::stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains(&format!("{objects} chunk objects moved into")) && text.contains("version 2"),
        "{text}"
    );
    assert!(place.keys("chunks/").is_empty());
    let fresh = open_repo(&place, None);
    assert!(fresh.has_packs() && fresh.config.version == 2);
    assert!(ops::verify(&fresh, None, None, 2).unwrap().ok());
    assert_eq!(
        restore_bytes(&fresh, &a, &t.path().join("a.raw")),
        expected_a
    );
    assert_eq!(
        restore_bytes(&fresh, &m, &t.path().join("b.raw")),
        expected_b
    );
    let again = ops::migrate_to_packs(&fresh, 1 << 20).unwrap();
    assert_eq!((again.chunks_packed, again.was_packed), (0, true));
    // A backup after the migration writes packs.
    let c = run_backup(
        &fresh,
        &image,
        Some(&m),
        Some(scatter_writes(&image, 2, 8)),
        256 << 10,
    );
    assert!(place.keys("chunks/").is_empty());
    assert_eq!(
        restore_bytes(&fresh, &c, &t.path().join("c.raw")),
        std::fs::read(&image).unwrap()
    );
}
