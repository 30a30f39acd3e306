//! What an incremental with nothing changed costs as the store grows: the
//! old way (every backup lists and stats every chunk of the tier, then does
//! the same work) against the chunk index (one lookup per chunk of the disk).
//!
//! Per size: a local repository with one 128 MiB disk backed up in full, then
//! chunk files fabricated around it (files named by random digests, each as
//! long as a blob header: a listing sees them exactly as real chunks) until
//! the store holds N chunks. The index is then rebuilt once from a listing
//! (what the first backup on a machine pays, shown as "first use"), and each
//! way runs three incrementals of the unchanged disk; the best is shown.
//! Page cache warm: the old way's cost on a cold cache is higher still
//! (74 µs a chunk measured in issue 11).
//!
//! `cargo bench --bench chunk_index` runs 10 000 and 100 000 chunks;
//! `COFFER_BENCH_CHUNKS=10000,100000,1000000` picks the sizes (the million
//! needs about 4 GiB of disk and a few minutes to fabricate).
//! `COFFER_BENCH_DIR` sets where the stores are made (default: the temp dir).

use std::io::Write;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use coffer::repo::Repository;
use coffer::repo::backup::{self, BackupRequest, DiskSource, FileDisk};
use coffer::repo::chunk::MIN_BLOB_BYTES;
use coffer::repo::local::LocalStore;
use coffer::repo::manifest::{Manifest, VmIdentity};

const DISK_BYTES: u64 = 128 << 20;
const CHUNK_BYTES: u32 = 256 << 10;

fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

fn make_image(path: &Path) {
    let mut f = std::fs::File::create(path).unwrap();
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..DISK_BYTES >> 20 {
        for c in buf.chunks_mut(8) {
            c.copy_from_slice(&xorshift(&mut x).to_le_bytes());
        }
        f.write_all(&buf).unwrap();
    }
}

fn run(repo: &Repository, image: &Path, parent: Option<&Manifest>) -> Manifest {
    let disk = FileDisk::open(image).unwrap();
    // Nothing changed since the parent; the full reads the whole disk.
    let ranges: Option<Vec<Range<u64>>> = parent.map(|_| Vec::new());
    backup::backup(
        repo,
        BackupRequest {
            vm: VmIdentity::new("bench", "4210aaaa-0000-0000-0000-00000000beef"),
            consistency: "crash".into(),
            chunk_size_bytes: CHUNK_BYTES,
            parent,
            disks: vec![DiskSource {
                device_key: 2000,
                label: "Hard disk 1".into(),
                reader: &disk,
                change_id: None,
                from_parent: parent.is_some(),
                backing: None,
                slot: None,
                ranges,
            }],
            files: vec![],
            skipped_disks: vec![],
            threads: 2,
        },
    )
    .unwrap()
}

/// Fills the store with chunk files named by random digests.
fn fabricate(root: &Path, count: u64, seed: u64) {
    let mut x = seed | 1;
    let blob = vec![0u8; MIN_BLOB_BYTES as usize];
    for _ in 0..count {
        let mut d = [0u8; 32];
        for c in d.chunks_mut(8) {
            c.copy_from_slice(&xorshift(&mut x).to_le_bytes());
        }
        let key = coffer::repo::chunk::ChunkDigest(d).key();
        let path = root.join(key);
        if let Err(e) = std::fs::write(&path, &blob) {
            assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{e}");
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &blob).unwrap();
        }
    }
}

fn best_of(n: usize, mut f: impl FnMut()) -> Duration {
    (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .unwrap()
}

fn main() {
    // `cargo test` runs benches with --bench absent: one small size only.
    let under_test = !std::env::args().any(|a| a == "--bench");
    let sizes: Vec<u64> = match std::env::var("COFFER_BENCH_CHUNKS") {
        Ok(v) => v.split(',').map(|s| s.trim().parse().unwrap()).collect(),
        Err(_) if under_test => vec![2_000],
        Err(_) => vec![10_000, 100_000],
    };
    let base = std::env::var_os("COFFER_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    println!(
        "incremental, nothing changed, {} MiB disk ({} chunks), local store, page cache warm",
        DISK_BYTES >> 20,
        DISK_BYTES / CHUNK_BYTES as u64
    );
    println!(
        "{:>10} {:>12} {:>14} {:>14} {:>8} {:>12}",
        "chunks", "listing", "old way", "chunk index", "ratio", "first use"
    );
    for n in sizes {
        let t = tempfile::tempdir_in(&base).unwrap();
        let root = t.path().join("repo");
        let repo = Repository::init(Arc::new(LocalStore::new(&root).unwrap()), None)
            .unwrap()
            .with_chunk_index_dir(t.path().join("state/chunk-index"));
        let image = t.path().join("disk.img");
        make_image(&image);
        let full = run(&repo, &image, None);
        let disk_chunks = DISK_BYTES / CHUNK_BYTES as u64;
        fabricate(&root, n.saturating_sub(disk_chunks), n);
        // The first use on a machine: the index is built from one listing.
        std::fs::remove_dir_all(t.path().join("state/chunk-index")).unwrap();
        let first_use = best_of(1, || {
            repo.trusted_chunk_index().unwrap();
        });
        assert_eq!(
            repo.chunk_index().unwrap().counts().unwrap().0,
            n.max(disk_chunks)
        );
        let listing = best_of(3, || {
            assert_eq!(repo.list_chunks().unwrap().len() as u64, n.max(disk_chunks));
        });
        // The old way: the same backup after a listing of the whole store.
        let old = best_of(3, || {
            let known = repo.list_chunks().unwrap();
            std::hint::black_box(known.len());
            run(&repo, &image, Some(&full));
        });
        let new = best_of(3, || {
            run(&repo, &image, Some(&full));
        });
        println!(
            "{:>10} {:>10.1}ms {:>12.1}ms {:>12.1}ms {:>7.1}x {:>10.1}ms",
            n,
            listing.as_secs_f64() * 1e3,
            old.as_secs_f64() * 1e3,
            new.as_secs_f64() * 1e3,
            old.as_secs_f64() / new.as_secs_f64(),
            first_use.as_secs_f64() * 1e3,
        );
    }
}
