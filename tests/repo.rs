//! The repository against real files: bytes restored equal bytes backed up,
//! incrementals read only what changed, damage is found and named, gc and
//! copy keep every point restorable, keys are checked, and a process killed
//! at any moment leaves a repository that verifies.

mod common;

use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use coffer::repo::backup::{self, BackupRequest, DiskSource, FileDisk};
use coffer::repo::manifest::{Manifest, VmIdentity};
use coffer::repo::restore::{self, DiskFormat};
use coffer::repo::{RepoError, Repository, local::LocalStore, ops};
use common::{coffer, stdout};

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

fn open_repo(dir: &Path, secret: Option<&str>) -> Repository {
    let store = Arc::new(LocalStore::new(dir).unwrap());
    match Repository::open(store.clone(), secret.map(str::as_bytes)) {
        Ok(r) => r,
        Err(RepoError::NotARepository(_)) => {
            Repository::init(store, secret.map(str::as_bytes)).unwrap()
        }
        Err(e) => panic!("{e}"),
    }
}

fn vm() -> VmIdentity {
    VmIdentity {
        name: "db01".into(),
        uuid: "4210aaaa-0000-0000-0000-000000000001".into(),
    }
}

fn run_backup(
    repo: &Repository,
    image: &Path,
    parent: Option<&Manifest>,
    ranges: Option<Vec<Range<u64>>>,
    chunk: u32,
) -> Manifest {
    let disk = FileDisk::open(image).unwrap();
    backup::backup(
        repo,
        BackupRequest {
            vm: vm(),
            consistency: "crash".into(),
            chunk_size_bytes: chunk,
            parent,
            disks: vec![DiskSource {
                device_key: 2000,
                label: "Hard disk 1".into(),
                reader: &disk,
                change_id: None,
                ranges,
            }],
            threads: 2,
        },
    )
    .unwrap()
}

fn restore_bytes(repo: &Repository, m: &Manifest, out: &Path) -> Vec<u8> {
    let index = repo.read_index(&m.disks[0]).unwrap();
    restore::restore_disk(repo, &index, out, DiskFormat::Raw, true, 2).unwrap();
    std::fs::read(out).unwrap()
}

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

#[test]
fn full_and_incremental_restore_byte_identical_and_incremental_reads_only_changes() {
    let t = tempfile::tempdir().unwrap();
    let image = t.path().join("disk.img");
    make_image(&image);
    let repo = open_repo(&t.path().join("repo"), None);
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

#[test]
fn restored_vmdk_is_accepted_by_qemu_img_compare() {
    let t = tempfile::tempdir().unwrap();
    let image = t.path().join("disk.img");
    make_image(&image);
    let repo = open_repo(&t.path().join("repo"), None);
    let m = run_backup(&repo, &image, None, None, 256 << 10);
    let index = repo.read_index(&m.disks[0]).unwrap();
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

#[test]
fn a_flipped_bit_is_found_and_named_with_the_points_that_use_it() {
    let t = tempfile::tempdir().unwrap();
    let image = t.path().join("disk.img");
    make_image(&image);
    let dir = t.path().join("repo");
    let repo = open_repo(&dir, None);
    let a = run_backup(&repo, &image, None, None, 1 << 20);
    let b = run_backup(
        &repo,
        &image,
        Some(&a),
        Some(scatter_writes(&image, 2, 9)),
        1 << 20,
    );
    // Damage a chunk both points share.
    let index = repo.read_index(&a.disks[0]).unwrap();
    let shared = index
        .chunks
        .iter()
        .find(|d| {
            **d != coffer::repo::chunk::ZERO_DIGEST
                && repo.read_index(&b.disks[0]).unwrap().chunks.contains(d)
        })
        .unwrap();
    let path = dir.join(shared.key());
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    std::fs::write(&path, bytes).unwrap();

    let report = ops::verify(&repo, None, None, 2).unwrap();
    assert!(!report.ok());
    assert_eq!(report.bad_chunks.len(), 1);
    assert_eq!(report.bad_chunks[0].digest, *shared);
    assert_eq!(
        report.bad_chunks[0].points,
        vec![a.point_id.clone(), b.point_id.clone()]
    );
    // Through the CLI: exit 4, chunk and points named.
    let out = coffer(&["repo", "verify", "--repo", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(4));
    let text = stdout(&out);
    assert!(
        text.contains(&shared.to_hex()) && text.contains(&a.point_id) && text.contains(&b.point_id),
        "{text}"
    );
    // A restore of a damaged point fails loudly instead of writing bad data.
    let idx = repo.read_index(&a.disks[0]).unwrap();
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

#[test]
fn rolling_verify_samples_cover_every_chunk_once() {
    let t = tempfile::tempdir().unwrap();
    let image = t.path().join("disk.img");
    make_image(&image);
    let repo = open_repo(&t.path().join("repo"), None);
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

#[test]
fn gc_frees_what_pruned_points_held_and_keeps_everything_else_restorable() {
    let t = tempfile::tempdir().unwrap();
    let image = t.path().join("disk.img");
    make_image(&image);
    let repo = open_repo(&t.path().join("repo"), None);
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
    let r = ops::gc(&repo, Duration::ZERO, false).unwrap();
    assert!(r.chunks_deleted > 0 && r.bytes_freed > 0, "{r:?}");
    assert!(ops::verify(&repo, None, None, 2).unwrap().ok());
    assert_eq!(
        restore_bytes(&repo, &b, &t.path().join("b.raw")),
        expected_b
    );
}

#[test]
fn copy_sends_only_missing_chunks_and_the_copy_restores() {
    let t = tempfile::tempdir().unwrap();
    let image = t.path().join("disk.img");
    make_image(&image);
    let src = open_repo(&t.path().join("src"), None);
    let dst = open_repo(&t.path().join("dst"), None);
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
    let enc = open_repo(&t.path().join("enc"), Some("correct horse"));
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

#[test]
fn encrypted_tiers_check_the_key_and_hide_content() {
    let t = tempfile::tempdir().unwrap();
    let image = t.path().join("disk.img");
    make_image(&image);
    let dir = t.path().join("repo");
    let repo = open_repo(&dir, Some("s3cret passphrase"));
    let m = run_backup(&repo, &image, None, None, 1 << 20);
    assert_eq!(
        restore_bytes(&repo, &m, &t.path().join("r.raw")),
        std::fs::read(&image).unwrap()
    );
    let store = Arc::new(LocalStore::new(&dir).unwrap());
    assert!(matches!(
        Repository::open(store.clone(), Some(b"wrong")),
        Err(RepoError::WrongKey)
    ));
    assert!(matches!(
        Repository::open(store, None),
        Err(RepoError::KeyRequired)
    ));
    // No plaintext of the text region appears in any stored object.
    for e in walkdir::WalkDir::new(dir.join("chunks"))
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
    {
        let bytes = std::fs::read(e.path()).unwrap();
        assert!(
            !bytes.windows(11).any(|w| w == b"INSERT INTO"),
            "plaintext leaked in {}",
            e.path().display()
        );
    }
    // A tampered manifest is refused.
    let key = dir.join(m.key());
    let text = std::fs::read_to_string(&key)
        .unwrap()
        .replace("\"crash\"", "\"application\"");
    std::fs::write(&key, text).unwrap();
    let p = repo.find_point(&m.point_id).unwrap();
    assert!(matches!(
        repo.read_manifest(&p),
        Err(RepoError::BadManifest { .. })
    ));
}

#[test]
fn a_repository_of_a_newer_format_is_refused_with_a_message() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("repo");
    open_repo(&dir, None);
    let cfg = std::fs::read_to_string(dir.join("config"))
        .unwrap()
        .replace("\"version\": 1", "\"version\": 9");
    std::fs::write(dir.join("config"), cfg).unwrap();
    let err = Repository::open(Arc::new(LocalStore::new(&dir).unwrap()), None).unwrap_err();
    assert!(err.to_string().contains("newer than this coffer"), "{err}");
}

#[test]
fn an_incremental_refuses_a_resized_disk() {
    let t = tempfile::tempdir().unwrap();
    let image = t.path().join("disk.img");
    make_image(&image);
    let repo = open_repo(&t.path().join("repo"), None);
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
                ranges: Some(std::iter::once(0..4096).collect()),
            }],
            threads: 2,
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("take a full backup"), "{err}");
}

/// SIGKILL a backup at many moments; after each kill the repository still
/// verifies, shows no half-written point, and gc removes the leftovers.
#[test]
fn a_backup_killed_anywhere_leaves_a_repository_that_verifies() {
    let t = tempfile::tempdir().unwrap();
    let image = t.path().join("disk.img");
    let f = std::fs::File::create(&image).unwrap();
    let mut data = vec![0u8; 64 * MIB as usize];
    fill(&mut data, 3);
    f.write_all_at(&data, 0).unwrap();
    let dir = t.path().join("repo");
    let d = dir.to_str().unwrap();
    assert_eq!(
        coffer(&["repo", "init", "--repo", d]).status.code(),
        Some(0)
    );
    let mut committed = 0;
    for (i, delay_ms) in [5u64, 20, 40, 80, 120, 200, 350].into_iter().enumerate() {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_coffer"))
            .args([
                "backup-image",
                image.to_str().unwrap(),
                "--repo",
                d,
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
        let repo = open_repo(&dir, None);
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
    let repo = open_repo(&dir, None);
    ops::gc(&repo, Duration::ZERO, false).unwrap();
    assert!(ops::verify(&repo, None, None, 2).unwrap().ok());
    let leftovers: Vec<_> = walkdir::WalkDir::new(&dir)
        .into_iter()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "gc removed temporary files: {leftovers:?}"
    );
}
