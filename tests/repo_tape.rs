//! The copy and restore part of the repository suite on a tape tier, over
//! the emulated library (a drive that only spaces over filemarks, a changer
//! moving cartridge files): copies send only what the media set lacks, a
//! point restores byte-identical after staging from tape, a session cut off
//! anywhere counts nothing, a full medium fails the copy cleanly, retention
//! frees whole media and only those, and coffer never writes over a
//! cartridge it did not label.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use coffer::repo::local::LocalStore;
use coffer::repo::manifest::{Manifest, VmIdentity};
use coffer::repo::store::{Store, StoreError};
use coffer::repo::{RepoError, Repository, ops};
use coffer::tape::device::TapeDrive;
use coffer::tape::emulated::{FileChanger, FileDrive};
use coffer::tape::format::{FileWriter, Kind};
use coffer::tape::tier::{Hardware, TapeSpec, TapeStore, stage_point};

const MIB: u64 = 1 << 20;

struct Tape {
    library: PathBuf,
    catalog: PathBuf,
    staging: PathBuf,
}

impl Tape {
    /// A library of `cartridges` blank cartridges of `capacity` bytes.
    fn new(t: &Path, cartridges: usize, capacity: u64) -> Tape {
        let library = t.join("library");
        FileChanger::create_lto(&library, 8, cartridges as u32, capacity, "CF").unwrap();
        Tape {
            library,
            catalog: t.join("catalog"),
            staging: t.join("staging"),
        }
    }

    fn store(&self) -> TapeStore {
        TapeStore::new(TapeSpec {
            tier: "tape".into(),
            pool: "VAULT".into(),
            hardware: Hardware::Emulated {
                library: self.library.clone(),
            },
            catalog: self.catalog.clone(),
        })
        .unwrap()
    }

    fn repo(&self, secret: Option<&str>) -> Repository {
        let store: Arc<dyn Store> = Arc::new(self.store());
        match Repository::open(store.clone(), secret.map(str::as_bytes)) {
            Ok(r) => r,
            Err(RepoError::NotARepository(_)) => {
                Repository::init_with(store, secret.map(str::as_bytes), None).unwrap()
            }
            Err(e) => panic!("{e}"),
        }
    }

    /// The bytes of point `m`'s disk, staged from tape and restored.
    fn restore(
        &self,
        repo: &Repository,
        m: &Manifest,
        secret: Option<&str>,
        out: &Path,
    ) -> Vec<u8> {
        let staged = stage_point(
            &self.store(),
            repo,
            m,
            &self.staging,
            secret.map(str::as_bytes),
        )
        .unwrap();
        assert!(ops::verify(&staged.repo, None, None, 2).unwrap().ok());
        common::restore_bytes(&staged.repo, m, out)
    }

    fn cartridge(&self, barcode: &str) -> PathBuf {
        for e in std::fs::read_dir(&self.library).unwrap() {
            let p = e.unwrap().path().join(barcode);
            if p.exists() {
                return p;
            }
        }
        panic!("no cartridge {barcode}");
    }

    /// Label, state and file numbers of every medium.
    fn media(&self) -> Vec<(String, String, Vec<u32>)> {
        self.store()
            .media(false)
            .unwrap()
            .into_iter()
            .map(|m| (m.label, m.state, m.files.iter().map(|f| f.file).collect()))
            .collect()
    }
}

fn local(t: &Path) -> Repository {
    Repository::init_with(
        Arc::new(LocalStore::new(t.join("local")).unwrap()),
        None,
        None,
    )
    .unwrap()
}

fn vm() -> VmIdentity {
    VmIdentity::new("db01", "4210aaaa-0000-0000-0000-000000000001")
}

fn backup(
    repo: &Repository,
    image: &Path,
    parent: Option<&Manifest>,
    ranges: Option<Vec<std::ops::Range<u64>>>,
) -> Manifest {
    common::backup_image(repo, vm(), image, parent, ranges, 256 << 10)
}

fn copy(from: &Repository, to: &Repository, m: &Manifest) -> Result<ops::CopyReport, RepoError> {
    ops::copy_point(from, to, &from.find_point(&m.point_id).unwrap(), 2).map(|(_, r)| r)
}

#[test]
fn copies_send_only_what_the_media_set_lacks_and_restore_after_staging() {
    let t = tempfile::tempdir().unwrap();
    let tape = Tape::new(t.path(), 2, 256 * MIB);
    let src = local(t.path());
    let img = t.path().join("disk.img");
    common::noise_file(&img, 6 * MIB, 1);
    let a = backup(&src, &img, None, None);
    let first_bytes = std::fs::read(&img).unwrap();
    // Two changed areas: the incremental's new chunks.
    let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(&[7u8; 4096], MIB).unwrap();
    f.write_all_at(&[9u8; 4096], 5 * MIB).unwrap();
    let b = backup(
        &src,
        &img,
        Some(&a),
        Some(vec![MIB..MIB + 4096, 5 * MIB..5 * MIB + 4096]),
    );

    let dst = tape.repo(None);
    let first = copy(&src, &dst, &a).unwrap();
    let second = copy(&src, &dst, &b).unwrap();
    assert!(first.chunks_sent >= 24, "{first:?}");
    assert_eq!(second.chunks_sent, 2, "only the changed chunks: {second:?}");
    // One tape file per session, after the label file.
    assert_eq!(
        tape.media(),
        vec![("CF0001L9".into(), "append".into(), vec![1, 2])]
    );
    // A chunk is on tape, not readable as an object: it names its medium.
    let d = dst.read_index(&a, &a.disks[0]).unwrap().chunks[0];
    match dst.store().get(&d.key()) {
        Err(StoreError::OnTape { medium, .. }) => assert_eq!(medium, "CF0001L9"),
        other => panic!("{other:?}"),
    }
    // Both restore, byte for byte, each staged from the files that hold it.
    assert_eq!(
        tape.restore(&dst, &a, None, &t.path().join("a.raw")),
        first_bytes
    );
    assert_eq!(
        tape.restore(&dst, &b, None, &t.path().join("b.raw")),
        std::fs::read(&img).unwrap()
    );
    // The staging directory is gone once the staged copy is dropped.
    assert_eq!(std::fs::read_dir(&tape.staging).unwrap().count(), 0);
    // One left by a process killed while it staged goes at the next
    // staging; one of a process still running stays.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let orphan = tape.staging.join(format!("pid{dead}.tape-x-1"));
    let alive = tape
        .staging
        .join(format!("pid{}.tape-y-1", std::process::id()));
    for d in [&orphan, &alive] {
        std::fs::create_dir_all(d.join("chunks")).unwrap();
        std::fs::write(d.join("chunks/blob"), b"left behind").unwrap();
    }
    tape.restore(&dst, &a, None, &t.path().join("a2.raw"));
    assert!(!orphan.exists() && alive.exists());
    // A verify of the tier itself reads no tape and marks nothing damaged.
    let e = ops::verify(&dst, None, None, 2).unwrap_err();
    assert!(e.to_string().contains("on tape and were not read"), "{e}");
}

#[test]
fn an_encrypted_tape_tier_re_encodes_and_needs_its_key_to_stage() {
    let t = tempfile::tempdir().unwrap();
    let tape = Tape::new(t.path(), 1, 256 * MIB);
    let src = local(t.path());
    let img = t.path().join("disk.img");
    common::noise_file(&img, 3 * MIB, 2);
    let a = backup(&src, &img, None, None);
    let dst = tape.repo(Some("tape passphrase"));
    let (m, _) = ops::copy_point(&src, &dst, &src.find_point(&a.point_id).unwrap(), 2).unwrap();
    assert_ne!(
        m.disks[0].index_sha256, a.disks[0].index_sha256,
        "keyed ids"
    );
    assert_eq!(
        tape.restore(&dst, &m, Some("tape passphrase"), &t.path().join("a.raw")),
        std::fs::read(&img).unwrap()
    );
    let wrong = stage_point(&tape.store(), &dst, &m, &tape.staging, Some(b"not it"));
    assert!(wrong.is_err());
    // Nothing of the plaintext is on the cartridge.
    let cart = std::fs::read(tape.cartridge("CF0001L9")).unwrap();
    let plain = std::fs::read(&img).unwrap();
    assert!(
        !cart
            .windows(64)
            .any(|w| w == &plain[MIB as usize..MIB as usize + 64])
    );
}

#[test]
fn a_session_cut_off_anywhere_counts_nothing_and_the_next_one_restores() {
    let t = tempfile::tempdir().unwrap();
    let tape = Tape::new(t.path(), 1, 256 * MIB);
    let src = local(t.path());
    let img = t.path().join("disk.img");
    common::noise_file(&img, 3 * MIB, 3);
    let a = backup(&src, &img, None, None);
    let dst = tape.repo(None);
    copy(&src, &dst, &a).unwrap();
    let good = std::fs::metadata(tape.cartridge("CF0001L9")).unwrap().len();
    let a_bytes = std::fs::read(&img).unwrap();
    common::noise_file(&img, 3 * MIB, 4);
    let b = backup(&src, &img, None, None);
    for cut in [1u64, 5, 4096, 300_000, 700_000] {
        // A copy killed mid-session: a session head and some chunk
        // records, never ended (no end record, no filemark, no catalog),
        // and the drive's last block torn.
        {
            let mut drive = FileDrive::new(&tape.library);
            drive.end_of_data().unwrap();
            let mut w = FileWriter::default();
            w.record(&mut drive, Kind::Session, "", b"{}").unwrap();
            let chunks = src.read_index(&b, &b.disks[0]).unwrap().chunks;
            for c in chunks.iter().take(4) {
                w.record(
                    &mut drive,
                    Kind::Object,
                    &c.key(),
                    &src.chunk_blob(c).unwrap(),
                )
                .unwrap();
            }
        }
        let cart = tape.cartridge("CF0001L9");
        let len = std::fs::metadata(&cart).unwrap().len();
        let keep = (good + cut).min(len);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&cart)
            .unwrap()
            .set_len(keep)
            .unwrap();
        // Nothing of it counts: b is not on the tier, a still restores.
        let dst = tape.repo(None);
        assert!(dst.find_point(&b.point_id).is_err(), "cut {cut}");
        assert_eq!(tape.media()[0].2, vec![1], "cut {cut}");
        assert_eq!(
            tape.restore(&dst, &a, None, &t.path().join("a.raw")),
            a_bytes
        );
    }
    // The next copy writes a file of its own after the cut-off one.
    let dst = tape.repo(None);
    copy(&src, &dst, &b).unwrap();
    let files = &tape.media()[0].2;
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(files[1] >= 2, "{files:?}");
    assert_eq!(
        tape.restore(&dst, &b, None, &t.path().join("b.raw")),
        std::fs::read(&img).unwrap()
    );
}

#[test]
fn a_full_medium_fails_the_copy_cleanly_and_retention_frees_whole_media() {
    let t = tempfile::tempdir().unwrap();
    // Cartridges of 6 MiB: a 2 MiB point fits, a 5 MiB one then does not.
    let tape = Tape::new(t.path(), 2, 6 * MIB);
    let src = local(t.path());
    let small = t.path().join("small.img");
    let big = t.path().join("big.img");
    common::noise_file(&small, 2 * MIB, 5);
    common::noise_file(&big, 5 * MIB, 6);
    let a = backup(&src, &small, None, None);
    let b = backup(&src, &big, None, None);
    let dst = tape.repo(None);
    copy(&src, &dst, &a).unwrap();
    let e = copy(&src, &dst, &b).unwrap_err();
    assert!(e.to_string().contains("CF0001L9 is full"), "{e}");
    let dst = tape.repo(None);
    assert!(
        dst.find_point(&b.point_id).is_err(),
        "a failed copy is no point"
    );
    // Run again: the copy takes the blank cartridge.
    copy(&src, &dst, &b).unwrap();
    assert_eq!(
        tape.media(),
        vec![
            ("CF0001L9".into(), "full".into(), vec![1]),
            ("CF0002L9".into(), "append".into(), vec![1]),
        ]
    );
    assert_eq!(
        tape.restore(&dst, &b, None, &t.path().join("b.raw")),
        std::fs::read(&big).unwrap()
    );
    // Retention lets a go: gc frees CF0001 whole, CF0002 still holds b.
    ops::prune_point(&dst, &dst.find_point(&a.point_id).unwrap()).unwrap();
    ops::gc(&dst, std::time::Duration::ZERO, false).unwrap();
    assert_eq!(tape.store().free_media().unwrap(), ["CF0001L9"]);
    assert_eq!(
        tape.media(),
        vec![
            ("CF0001L9".into(), "scratch".into(), vec![]),
            ("CF0002L9".into(), "append".into(), vec![1]),
        ]
    );
    // A point that does not fit CF0002 goes to the freed medium, which is
    // relabelled and rewritten from its beginning.
    common::noise_file(&big, 5 * MIB, 7);
    let c2 = backup(&src, &big, None, None);
    let e = copy(&src, &dst, &c2).unwrap_err();
    assert!(e.to_string().contains("CF0002L9 is full"), "{e}");
    let dst = tape.repo(None);
    copy(&src, &dst, &c2).unwrap();
    assert_eq!(
        tape.media(),
        vec![
            ("CF0001L9".into(), "append".into(), vec![1]),
            ("CF0002L9".into(), "full".into(), vec![1]),
        ]
    );
    assert_eq!(
        tape.restore(&dst, &c2, None, &t.path().join("c.raw")),
        std::fs::read(&big).unwrap()
    );
    assert_eq!(
        tape.restore(&dst, &b, None, &t.path().join("b2.raw")),
        std::fs::read(t.path().join("b.raw")).unwrap()
    );
}

#[test]
fn a_medium_a_kept_point_still_needs_is_never_freed_and_offsite_media_are_named() {
    let t = tempfile::tempdir().unwrap();
    let tape = Tape::new(t.path(), 2, 256 * MIB);
    let src = local(t.path());
    let img = t.path().join("disk.img");
    common::noise_file(&img, 4 * MIB, 8);
    let a = backup(&src, &img, None, None);
    let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(&[1u8; 4096], 0).unwrap();
    let changed: Vec<std::ops::Range<u64>> = std::iter::once(0..4096).collect();
    let b = backup(&src, &img, Some(&a), Some(changed));
    let dst = tape.repo(None);
    copy(&src, &dst, &a).unwrap();
    // CF0001 leaves the library (sent offsite): b's session takes CF0002,
    // and writes only its one new chunk there; the rest of b is on CF0001.
    let cf1 = tape.cartridge("CF0001L9");
    let away = t.path().join("CF0001L9");
    std::fs::rename(&cf1, &away).unwrap();
    let r = copy(&src, &dst, &b).unwrap();
    assert_eq!(r.chunks_sent, 1, "{r:?}");
    // Staging b needs CF0001: it says so, and nothing is half-restored.
    let e = stage_point(&tape.store(), &dst, &b, &tape.staging, None)
        .err()
        .expect("CF0001 is offsite");
    assert!(
        e.to_string().contains("CF0001L9 is not in the library"),
        "{e}"
    );
    assert_eq!(std::fs::read_dir(&tape.staging).unwrap().count(), 0);
    // Back from offsite, into the slot it was loaded from.
    std::fs::rename(&away, tape.library.join("slot-01/CF0001L9")).unwrap();
    // a goes; b still needs chunks on CF0001, so no medium is freed.
    ops::prune_point(&dst, &dst.find_point(&a.point_id).unwrap()).unwrap();
    ops::gc(&dst, std::time::Duration::ZERO, false).unwrap();
    let states: Vec<String> = tape.media().into_iter().map(|m| m.1).collect();
    assert_eq!(states, ["append", "append"]);
    assert_eq!(
        tape.restore(&dst, &b, None, &t.path().join("b.raw")),
        std::fs::read(&img).unwrap()
    );
}

#[test]
fn a_cartridge_coffer_did_not_label_is_never_written() {
    let t = tempfile::tempdir().unwrap();
    let tape = Tape::new(t.path(), 1, 256 * MIB);
    // The only cartridge holds another program's data.
    let cart = tape.cartridge("CF0001L9");
    let foreign = b"B\x11\x00\x00\x00some other backup".to_vec();
    std::fs::write(&cart, &foreign).unwrap();
    let src = local(t.path());
    let img = t.path().join("disk.img");
    common::noise_file(&img, MIB, 9);
    let a = backup(&src, &img, None, None);
    let dst = tape.repo(None);
    let e = copy(&src, &dst, &a).unwrap_err();
    let said = e.to_string();
    assert!(said.contains("no medium of pool VAULT"), "{said}");
    assert_eq!(std::fs::read(tape.cartridge("CF0001L9")).unwrap(), foreign);
    assert!(dst.find_point(&a.point_id).is_err());
}

#[test]
fn two_copies_at_once_take_turns_at_the_drive() {
    let t = tempfile::tempdir().unwrap();
    let tape = Tape::new(t.path(), 2, 256 * MIB);
    let src = local(t.path());
    let (one, two) = (t.path().join("one.img"), t.path().join("two.img"));
    common::noise_file(&one, 3 * MIB, 10);
    common::noise_file(&two, 3 * MIB, 11);
    let a = backup(&src, &one, None, None);
    let b = backup(&src, &two, None, None);
    tape.repo(None);
    // Two processes' worth of stores on one drive, copying side by side.
    std::thread::scope(|s| {
        for m in [&a, &b] {
            let (src, tape) = (&src, &tape);
            s.spawn(move || copy(src, &tape.repo(None), m).unwrap());
        }
    });
    let files = &tape.media()[0].2;
    assert_eq!(files, &vec![1, 2], "one file each, one after the other");
    let dst = tape.repo(None);
    assert_eq!(
        tape.restore(&dst, &a, None, &t.path().join("a.raw")),
        std::fs::read(&one).unwrap()
    );
    assert_eq!(
        tape.restore(&dst, &b, None, &t.path().join("b.raw")),
        std::fs::read(&two).unwrap()
    );
}

#[test]
fn a_lost_catalog_is_rebuilt_from_the_tapes_alone() {
    let t = tempfile::tempdir().unwrap();
    let tape = Tape::new(t.path(), 2, 256 * MIB);
    let src = local(t.path());
    let img = t.path().join("disk.img");
    common::noise_file(&img, 4 * MIB, 12);
    let a = backup(&src, &img, None, None);
    let a_bytes = std::fs::read(&img).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(&[3u8; 4096], 2 * MIB).unwrap();
    let changed: Vec<std::ops::Range<u64>> = std::iter::once(2 * MIB..2 * MIB + 4096).collect();
    let b = backup(&src, &img, Some(&a), Some(changed));
    let dst = tape.repo(Some("vault key"));
    copy(&src, &dst, &a).unwrap();
    copy(&src, &dst, &b).unwrap();
    drop(dst);
    // A session cut off after them.
    {
        let mut drive = FileDrive::new(&tape.library);
        drive.end_of_data().unwrap();
        let mut w = FileWriter::default();
        w.record(&mut drive, Kind::Session, "", b"{}").unwrap();
        w.finish(&mut drive).unwrap();
    }
    // The catalog directory is gone (the backup server was rebuilt).
    std::fs::remove_dir_all(&tape.catalog).unwrap();
    let r = tape.store().scan().unwrap();
    assert_eq!(
        (r.media.clone(), r.files, r.points),
        (vec!["CF0001L9".to_string()], 2, 2),
        "{r:?}"
    );
    assert!(
        r.skipped
            .iter()
            .any(|s| s.contains("CF0001L9 file 3: cut off")),
        "{r:?}"
    );
    assert!(
        r.skipped.iter().any(|s| s.contains("CF0002L9: blank")),
        "{r:?}"
    );
    // The tier opens with its key again, and both points restore.
    let dst = tape.repo(Some("vault key"));
    let mut ids: Vec<String> = dst
        .list_points()
        .unwrap()
        .into_iter()
        .map(|p| p.point_id)
        .collect();
    ids.sort();
    let mut want = vec![a.point_id.clone(), b.point_id.clone()];
    want.sort();
    assert_eq!(ids, want);
    let ma = dst
        .read_manifest(&dst.find_point(&a.point_id).unwrap())
        .unwrap();
    let mb = dst
        .read_manifest(&dst.find_point(&b.point_id).unwrap())
        .unwrap();
    assert_eq!(
        tape.restore(&dst, &ma, Some("vault key"), &t.path().join("a.raw")),
        a_bytes
    );
    assert_eq!(
        tape.restore(&dst, &mb, Some("vault key"), &t.path().join("b.raw")),
        std::fs::read(&img).unwrap()
    );
    // A copy after the scan appends after the cut-off file.
    common::noise_file(&img, MIB, 13);
    let c = backup(&src, &img, None, None);
    copy(&src, &dst, &c).unwrap();
    assert_eq!(tape.media()[0].2, vec![1, 2, 4]);
}
