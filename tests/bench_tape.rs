//! Benchmark (ignored in the test run; `scripts/bench-tape.sh` runs it in
//! release): what a tape tier costs against a disk tier, on the emulated
//! library. The same point is copied from a local tier to a second local
//! tier and to tape, an incremental after scattered writes is copied to
//! both, and the point is restored from the disk tier and from tape
//! (staging, then the restore); printed side by side with tape/disk
//! ratios, and the bytes the tape holds against the disk tier's. The
//! emulated drive is a file: these figures are coffer's own cost (records,
//! CRCs, the catalog, staging), not a drive's speed.

mod common;

use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Instant;

use sha2::Digest;

use coffer::repo::local::LocalStore;
use coffer::repo::{Repository, ops};
use coffer::tape::emulated::FileChanger;
use coffer::tape::tier::{Hardware, TapeSpec, TapeStore, stage_point};

use common::noise;

const MIB: u64 = 1 << 20;

fn dir_bytes(p: &std::path::Path) -> u64 {
    walkdir::WalkDir::new(p)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

fn mib_s(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / MIB as f64 / secs.max(1e-9)
}

#[test]
#[ignore = "benchmark: scripts/bench-tape.sh"]
fn tape_against_disk() {
    let mib: u64 = common::bench_size("COFFER_BENCH_MIB", 256);
    let t = tempfile::tempdir().unwrap();
    let image = t.path().join("disk.img");
    // Half noise, a quarter text-like, a quarter zeros: what a VM disk has.
    {
        let f = std::fs::File::create(&image).unwrap();
        let mut block = vec![0u8; MIB as usize];
        for i in 0..mib {
            match i % 4 {
                0 | 1 => noise(&mut block, i),
                2 => block
                    .iter_mut()
                    .enumerate()
                    .for_each(|(j, b)| *b = b"coffer tape bench "[j % 18]),
                _ => block.fill(0),
            }
            f.write_all_at(&block, i * MIB).unwrap();
        }
    }
    let vm =
        coffer::repo::manifest::VmIdentity::new("bench", "4210dddd-0000-0000-0000-000000000001");
    let src = Repository::init_with(
        Arc::new(LocalStore::new(t.path().join("src")).unwrap()),
        None,
        None,
    )
    .unwrap();
    let full = common::backup_image(&src, vm.clone(), &image, None, None, 256 << 10);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&image)
        .unwrap();
    let mut block = vec![0u8; 64 << 10];
    let mut changed = Vec::new();
    for i in 0..(mib / 8).max(1) {
        let at = (i * 7919 * (64 << 10)) % (mib * MIB - (64 << 10));
        noise(&mut block, 500 + i);
        f.write_all_at(&block, at).unwrap();
        changed.push(at..at + (64 << 10));
    }
    let incr = common::backup_image(&src, vm, &image, Some(&full), Some(changed), 256 << 10);

    let disk_dir = t.path().join("disk");
    let disk =
        Repository::init_with(Arc::new(LocalStore::new(&disk_dir).unwrap()), None, None).unwrap();
    let library = t.path().join("library");
    FileChanger::create(&library, 4, &["CF0001L9"], 64 << 30).unwrap();
    let spec = TapeSpec {
        tier: "vault".into(),
        pool: "VAULT".into(),
        hardware: Hardware::Emulated {
            library: library.clone(),
        },
        catalog: t.path().join("catalog"),
    };
    let tape_store = || TapeStore::new(spec.clone()).unwrap();
    let tape = Repository::init_with(Arc::new(tape_store()), None, None).unwrap();

    let copy = |to: &Repository, m: &coffer::repo::manifest::Manifest| {
        let started = Instant::now();
        let (_, r) = ops::copy_point(&src, to, &src.find_point(&m.point_id).unwrap(), 4).unwrap();
        (started.elapsed().as_secs_f64(), r)
    };
    let (disk_full_s, r) = copy(&disk, &full);
    let full_bytes = r.bytes_sent;
    let (tape_full_s, _) = copy(&tape, &full);
    let (disk_incr_s, ri) = copy(&disk, &incr);
    let (tape_incr_s, ti) = copy(&tape, &incr);
    assert_eq!(ri.chunks_sent, ti.chunks_sent, "the same chunks to both");

    // Each timed step starts with nothing dirty in the page cache, so one
    // step's writeback is not the next one's cost.
    let settle = || {
        // SAFETY: sync(2) takes no arguments.
        unsafe { libc::sync() }
    };
    // Restored images go to memory when it can hold them (/dev/shm), so
    // the figures are the reads, not this machine's disk writes.
    let out_dir = tempfile::tempdir_in("/dev/shm").unwrap_or_else(|_| tempfile::tempdir().unwrap());
    let restore = |repo: &Repository, out: &str| {
        use coffer::repo::restore::{self, DiskFormat};
        let index = repo.read_index(&incr, &incr.disks[0]).unwrap();
        let path = out_dir.path().join(out);
        settle();
        let started = Instant::now();
        restore::restore_disk(repo, &index, &path, DiskFormat::Raw, true, 2).unwrap();
        let secs = started.elapsed().as_secs_f64();
        // Checked outside the timing: the bytes are the image's.
        let bytes = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        (secs, sha2::Sha256::digest(&bytes))
    };
    let (disk_restore_s, from_disk) = restore(&disk, "disk.raw");
    settle();
    let staged = stage_point(&tape_store(), &tape, &incr, &t.path().join("staging"), None).unwrap();
    let stage_s = staged.report.seconds;
    let (tape_restore_s, from_tape) = restore(&staged.repo, "tape.raw");
    // The same restore again from the staging copy, now read once.
    let (again_s, _) = restore(&staged.repo, "again.raw");
    let want = sha2::Sha256::digest(std::fs::read(&image).unwrap());
    assert!(from_disk == want && from_tape == want);
    let disk_stored = dir_bytes(&disk_dir.join("chunks"));
    let tape_stored = dir_bytes(&library);
    let image_bytes = mib * MIB;

    println!(
        "\ntape tier against disk tier, {mib} MiB image ({} MiB stored after compression), emulated library",
        full_bytes / MIB
    );
    println!(
        "{:<44} {:>12} {:>12} {:>10}",
        "", "disk", "tape", "tape/disk"
    );
    let row = |what: &str, d: f64, tp: f64, unit: &str| {
        println!(
            "{what:<44} {:>9.2} {unit:<2} {:>9.2} {unit:<2} {:>9.2}x",
            d,
            tp,
            tp / d
        );
    };
    row("copy of the full, seconds", disk_full_s, tape_full_s, "s");
    row(
        "copy of the full, MiB/s of image",
        mib_s(image_bytes, disk_full_s),
        mib_s(image_bytes, tape_full_s),
        "",
    );
    row(
        "copy of the incremental, seconds",
        disk_incr_s,
        tape_incr_s,
        "s",
    );
    row(
        "restore, seconds (tape: staging + restore)",
        disk_restore_s,
        stage_s + tape_restore_s,
        "s",
    );
    println!("{:<44} {:>12} {:>9.2} s", "  of which staging", "", stage_s);
    row(
        "a second restore from the staging copy",
        disk_restore_s,
        again_s,
        "s",
    );
    row(
        "bytes stored, MiB",
        disk_stored as f64 / MIB as f64,
        tape_stored as f64 / MIB as f64,
        "",
    );
    println!(
        "incremental: {} chunks sent to each; staging read {} objects from {} tape files ({} MiB)",
        ti.chunks_sent,
        staged.report.objects,
        staged.report.files,
        staged.report.bytes_read / MIB
    );
}
