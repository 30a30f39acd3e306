//! Benchmark (ignored in the test run; `scripts/bench-packs.sh` runs it in
//! release): what packs change on object storage. The same image is backed
//! up (a full, then an incremental after scattered writes) and restored on
//! moto through a counting proxy, once with one object per chunk and once
//! per pack size; printed side by side: PUT and GET requests, objects
//! written per GiB, repository size and restore throughput. Then the same
//! on a local directory, files per chunk against packs: wall time of the
//! full backup and of the restore, and files written.

mod common;

use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use coffer::repo::s3::S3Store;
use coffer::repo::store::Store;
use coffer::repo::{PackConfig, Repository};
use common::s3::{self, FaultyProxy};

use common::noise;

const MIB: u64 = 1 << 20;

struct Row {
    name: String,
    full_puts: u64,
    incr_puts: u64,
    restore_gets: u64,
    objects: usize,
    stored: u64,
    restore_mib_s: f64,
}

fn measure(
    name: &str,
    packs: Option<u64>,
    image: &std::path::Path,
    changed: &[std::ops::Range<u64>],
    t: &std::path::Path,
) -> Row {
    let proxy = FaultyProxy::start();
    let bucket = s3::bucket(false);
    let store: Arc<dyn Store> =
        Arc::new(S3Store::new(s3::location(&bucket, &proxy.endpoint())).unwrap());
    let repo = Repository::init_with(
        store.clone(),
        None,
        packs.map(|target_bytes| PackConfig { target_bytes }),
    )
    .unwrap();
    let vm =
        coffer::repo::manifest::VmIdentity::new("bench", "4210cccc-0000-0000-0000-000000000001");
    let puts = || proxy.faults.puts.load(Ordering::SeqCst);
    let gets = || proxy.faults.gets.load(Ordering::SeqCst);
    let p0 = puts();
    let full = common::backup_image(&repo, vm.clone(), image, None, None, 256 << 10);
    let full_puts = puts() - p0;
    // The scattered writes, then the incremental that reads only them.
    let f = std::fs::OpenOptions::new().write(true).open(image).unwrap();
    let mut block = vec![0u8; 64 << 10];
    for (i, r) in changed.iter().enumerate() {
        noise(&mut block, 1000 + i as u64);
        f.write_all_at(&block, r.start).unwrap();
    }
    let p1 = puts();
    let incr = common::backup_image(
        &repo,
        vm,
        image,
        Some(&full),
        Some(changed.to_vec()),
        256 << 10,
    );
    let incr_puts = puts() - p1;
    let fresh = Repository::open(store.clone(), None).unwrap();
    let g0 = gets();
    let started = Instant::now();
    let restored = common::restore_bytes(&fresh, &incr, &t.join(format!("{name}.raw")));
    let secs = started.elapsed().as_secs_f64();
    let restore_gets = gets() - g0;
    assert!(
        restored == std::fs::read(image).unwrap(),
        "{name}: restore is byte-identical"
    );
    let objects: Vec<_> = ["chunks/", "packs/", "pack-index/", "points/"]
        .iter()
        .flat_map(|p| store.list(p).unwrap())
        .collect();
    Row {
        name: name.to_string(),
        full_puts,
        incr_puts,
        restore_gets,
        objects: objects.len(),
        stored: objects.iter().map(|o| o.size_bytes).sum(),
        restore_mib_s: restored.len() as f64 / MIB as f64 / secs,
    }
}

#[test]
#[ignore = "a benchmark: scripts/bench-packs.sh"]
fn packs_against_one_object_per_chunk_on_moto() {
    let mib: u64 = common::bench_size("COFFER_BENCH_MIB", 256);
    let t = tempfile::tempdir().unwrap();
    let base = t.path().join("base.img");
    // Half incompressible, a quarter text, a quarter hole: like a VM disk.
    let f = std::fs::File::create(&base).unwrap();
    f.set_len(mib * MIB).unwrap();
    let mut buf = vec![0u8; (mib * MIB / 2) as usize];
    noise(&mut buf, 7);
    f.write_all_at(&buf, 0).unwrap();
    let text = b"INSERT INTO orders VALUES (42, 'coffer', '2026-12-03');\n"
        .repeat((mib * MIB / 4 / 56) as usize);
    f.write_all_at(&text, mib * MIB / 2).unwrap();
    // 2% of the disk in scattered 64 KiB writes.
    let count = mib * MIB * 2 / 100 / (64 << 10);
    let changed: Vec<_> = (0..count)
        .map(|i| {
            let o = (i * 7_919 * 65_536) % (mib * MIB - (64 << 10));
            let o = o / 65_536 * 65_536;
            o..o + (64 << 10)
        })
        .collect();
    let mut rows = Vec::new();
    for (name, packs) in [
        ("per-chunk", None),
        ("packs-4MiB", Some(4 * MIB)),
        ("packs-16MiB", Some(16 * MIB)),
        ("packs-64MiB", Some(64 * MIB)),
    ] {
        let image = t.path().join(format!("{name}.img"));
        std::fs::copy(&base, &image).unwrap();
        rows.push(measure(name, packs, &image, &changed, t.path()));
    }
    let local = [("per-chunk", None), ("packs-16MiB", Some(16 * MIB))].map(|(name, packs)| {
        let image = t.path().join(format!("local-{name}.img"));
        std::fs::copy(&base, &image).unwrap();
        (name, measure_local(packs, &image, t.path()))
    });
    let gib = mib as f64 / 1024.0;
    println!(
        "\nimage {mib} MiB, 256 KiB chunks, incremental after {count} scattered 64 KiB writes (2%)"
    );
    println!(
        "{:<12} {:>10} {:>10} {:>10} {:>12} {:>10} {:>12} {:>12} {:>10}",
        "layout",
        "full PUT",
        "PUT/GiB",
        "incr PUT",
        "restore GET",
        "objects",
        "stored MiB",
        "restore MiB/s",
        "PUT ratio"
    );
    let base_puts = rows[0].full_puts as f64;
    for r in &rows {
        println!(
            "{:<12} {:>10} {:>10.0} {:>10} {:>12} {:>10} {:>12.1} {:>12.1} {:>9.1}x",
            r.name,
            r.full_puts,
            r.full_puts as f64 / gib,
            r.incr_puts,
            r.restore_gets,
            r.objects,
            r.stored as f64 / MIB as f64,
            r.restore_mib_s,
            base_puts / r.full_puts.max(1) as f64,
        );
    }
    println!("\nlocal directory, same image (full backup, then a restore of it)");
    println!(
        "{:<12} {:>10} {:>14} {:>14}",
        "layout", "files", "backup MiB/s", "restore MiB/s"
    );
    for (name, (files, backup, restore)) in &local {
        println!("{name:<12} {files:>10} {backup:>14.1} {restore:>14.1}");
    }
}

/// Files written, backup and restore MiB/s of a full backup on a local
/// directory.
fn measure_local(
    packs: Option<u64>,
    image: &std::path::Path,
    t: &std::path::Path,
) -> (usize, f64, f64) {
    let dir = tempfile::tempdir_in(t).unwrap();
    let store: Arc<dyn Store> = Arc::new(coffer::repo::local::LocalStore::new(dir.path()).unwrap());
    let repo = Repository::init_with(
        store,
        None,
        packs.map(|target_bytes| PackConfig { target_bytes }),
    )
    .unwrap();
    let vm =
        coffer::repo::manifest::VmIdentity::new("bench", "4210cccc-0000-0000-0000-000000000002");
    let size = std::fs::metadata(image).unwrap().len() as f64 / MIB as f64;
    let started = Instant::now();
    let m = common::backup_image(&repo, vm, image, None, None, 256 << 10);
    let backup = size / started.elapsed().as_secs_f64();
    let files = walkdir::WalkDir::new(dir.path())
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .count();
    let fresh = Repository::open(repo.store_arc(), None).unwrap();
    let started = Instant::now();
    let restored = common::restore_bytes(&fresh, &m, &t.join("local.raw"));
    let restore = size / started.elapsed().as_secs_f64();
    assert!(restored == std::fs::read(image).unwrap());
    (files, backup, restore)
}
