//! A lab VM whose disk is a raw disk image (`coffer lab add-vm NAME --disk
//! image=FILE`): the image, built here from bytes (an MBR, data, holes,
//! zeros written out), is copied sparsely; a first full reads its data,
//! not the disk's capacity, because the lab's allocated areas (`*`) follow
//! the data; backup and apply restore byte-identical; a bad image is
//! refused before anything is made.

mod common;

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::text;

use coffer::repo::manifest::Manifest;

const MIB: u64 = 1 << 20;
const KIB: u64 = 1 << 10;

fn run(dir: &Path, args: &[&str]) -> Output {
    common::in_policy_dir(dir, args)
}

fn lab_state(dir: &Path) -> PathBuf {
    coffer::run::connect::lab_state_dir(&dir.join(".coffer"), "lab")
}

/// `coffer lab ARGS --state <the policy's lab>`.
fn lab(dir: &Path, args: &[&str]) -> Output {
    common::command_in(dir)
        .arg("lab")
        .args(args)
        .arg("--state")
        .arg(lab_state(dir))
        .output()
        .expect("the coffer binary runs")
}

/// Bytes no compressor or deduplicator shortens (xorshift64*).
fn noise(seed: u64, len: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len.div_ceil(8))
        .flat_map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes()
        })
        .take(len as usize)
        .collect()
}

/// An MBR with one Linux partition from 1 MiB to the end of a disk of
/// `bytes`.
fn mbr(bytes: u64) -> Vec<u8> {
    let mut m = vec![0u8; 512];
    m[446] = 0x80;
    m[450] = 0x83;
    m[454..458].copy_from_slice(&2048u32.to_le_bytes());
    m[458..462].copy_from_slice(&((bytes / 512 - 2048) as u32).to_le_bytes());
    m[510] = 0x55;
    m[511] = 0xAA;
    m
}

/// A sparse raw image of 48 MiB + 4 KiB at `path` (the disk made of it is
/// 49 MiB): an MBR, four data areas with holes between them, and 2 MiB of
/// zeros written out (allocated in the image, a hole on the disk). Answers
/// its bytes and how many of them are data.
fn write_image(path: &Path) -> (Vec<u8>, u64) {
    let len = 48 * MIB + 4 * KIB;
    let areas: [(u64, Vec<u8>); 5] = [
        (0, mbr(len)),
        (MIB, noise(1, MIB)),
        (8 * MIB, b"coffer image test line\n".repeat(11398)),
        (30 * MIB, noise(2, 512 * KIB)),
        (48 * MIB, noise(3, 4 * KIB)),
    ];
    let f = std::fs::File::create(path).unwrap();
    f.set_len(len).unwrap();
    let mut bytes = vec![0u8; len as usize];
    for (at, data) in &areas {
        f.write_all_at(data, *at).unwrap();
        bytes[*at as usize..*at as usize + data.len()].copy_from_slice(data);
    }
    f.write_all_at(&vec![0u8; 2 * MIB as usize], 16 * MIB)
        .unwrap();
    let data: u64 = areas.iter().map(|(_, d)| d.len() as u64).sum();
    (bytes, data)
}

/// The points of `vm` on the tier, oldest first.
fn points_of(dir: &Path, vm: &str) -> Vec<Manifest> {
    let (_, ms) = common::local_points(dir);
    ms.into_iter().filter(|m| m.vm.name == vm).collect()
}

/// Restores `point`'s first disk as a raw file and answers its bytes.
fn restored(dir: &Path, point: &str, name: &str) -> Vec<u8> {
    let out = run(
        dir,
        &["repo", "restore", point, "--tier", "local", "-o", name],
    );
    assert!(out.status.success(), "{}", text(&out));
    std::fs::read(dir.join(name)).unwrap()
}

/// Waits until `vm`'s newest point is more than the policy's RPO (1s) old,
/// so `apply` backs it up again (a point's time has whole seconds).
fn wait_until_due(dir: &Path, vm: &str) {
    let newest = points_of(dir, vm).pop().expect("a point");
    let created = chrono::DateTime::parse_from_rfc3339(&newest.created).unwrap();
    let due = created + chrono::Duration::milliseconds(2100);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while chrono::Utc::now() < due {
        assert!(std::time::Instant::now() < deadline, "the clock moves");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn an_imported_image_backs_up_reading_only_its_data_and_restores_byte_identical() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    common::one_vm_lab_policy(dir, r#"rpo = "1s""#);
    assert!(run(dir, &["repo", "init", "--all"]).status.success());
    assert!(run(dir, &["inventory"]).status.success());
    let image = dir.join("disk.raw");
    let (bytes, data_bytes) = write_image(&image);

    let added = lab(
        dir,
        &[
            "add-vm",
            "img-vm",
            "--disk",
            &format!("image={}", image.display()),
        ],
    );
    let added_text = text(&added);
    assert!(added.status.success(), "{added_text}");
    assert!(
        added_text.contains("disk 0: 49.0 MiB, from image") && added_text.contains("disk.raw"),
        "{added_text}"
    );
    assert!(coffer::lab::boots(&lab_state(dir), "img-vm").unwrap());

    // A first full reads what the allocated areas (`*`) name: the data,
    // rounded to the lab's 64 KiB tracking blocks, not the 49 MiB disk.
    let backup = run(dir, &["backup", "img-vm", "--json"]);
    assert!(backup.status.success(), "{}", text(&backup));
    let result: serde_json::Value = serde_json::from_slice(&backup.stdout).unwrap();
    let disk = &result["disks"][0];
    assert_eq!(disk["mode"], "full", "{disk}");
    assert_eq!(disk["size_bytes"], 49 * MIB, "{disk}");
    let fetched = disk["bytes_fetched"].as_u64().unwrap();
    assert!(
        fetched >= data_bytes && fetched <= data_bytes + 5 * 256 * KIB,
        "read {fetched} bytes for {data_bytes} of data: {disk}"
    );
    assert!(disk["requests"].as_u64().unwrap() <= 8, "{disk}");
    let point = result["point"].as_str().unwrap();
    let mut expected = bytes.clone();
    expected.resize((49 * MIB) as usize, 0);
    assert!(
        restored(dir, point, "full.raw") == expected,
        "the full restores to the image"
    );

    // Guest writes, then `apply`: an incremental of the imported disk.
    let w = lab(dir, &["write", "img-vm", "--percent", "2"]);
    assert!(w.status.success(), "{}", text(&w));
    wait_until_due(dir, "img-vm");
    let applied = run(dir, &["apply", "--no-mail"]);
    assert!(applied.status.success(), "{}", text(&applied));
    let newest = points_of(dir, "img-vm").pop().unwrap();
    assert_ne!(newest.point_id, point);
    assert_eq!(
        newest.kind,
        coffer::repo::manifest::PointKind::Incremental,
        "{}",
        text(&applied)
    );
    let flat = lab_state(dir).join("datastore/img-vm/img-vm-flat.vmdk");
    let now = std::fs::read(&flat).unwrap();
    assert_ne!(now, expected, "the guest wrote");
    assert!(
        restored(dir, &newest.point_id, "incr.raw") == now,
        "the incremental restores to the disk as written"
    );
    assert!(coffer::lab::boots(&lab_state(dir), "img-vm").unwrap());
}

#[test]
fn a_bad_image_is_refused_before_any_vm_is_made() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    common::one_vm_lab_policy(dir, "");
    assert!(run(dir, &["inventory"]).status.success());
    let datastore = lab_state(dir).join("datastore");

    let missing = dir.join("no-such.raw");
    let out = lab(
        dir,
        &[
            "add-vm",
            "bad",
            "--disk",
            &format!("image={}", missing.display()),
        ],
    );
    let s = text(&out);
    assert!(!out.status.success(), "{s}");
    assert!(
        s.contains(&format!("disk image {}", missing.display()))
            && s.contains("No such file or directory"),
        "{s}"
    );

    let out = lab(dir, &["add-vm", "bad", "--disk", "image="]);
    assert!(
        text(&out).contains("no image file after `image=`"),
        "{}",
        text(&out)
    );

    let image = dir.join("disk.raw");
    write_image(&image);
    let out = lab(
        dir,
        &[
            "add-vm",
            "bad",
            "--disk",
            "8MiB",
            "--disk",
            &format!("image={},size=16MiB", image.display()),
        ],
    );
    let s = text(&out);
    assert!(!out.status.success(), "{s}");
    assert!(s.contains("more than the disk size given"), "{s}");

    let out = lab(
        dir,
        &[
            "add-vm",
            "bad",
            "--disk",
            &format!("image={}", dir.display()),
        ],
    );
    assert!(text(&out).contains("not a regular file"), "{}", text(&out));
    assert!(!datastore.join("bad").exists(), "nothing was made");

    // A file system with no partition table imports but does not boot; a
    // larger size given is the disk's.
    let bare = dir.join("bare.raw");
    std::fs::write(&bare, noise(4, MIB)).unwrap();
    let out = lab(
        dir,
        &[
            "add-vm",
            "bare",
            "--disk",
            &format!("image={},size=4MiB", bare.display()),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("disk 0: 4.0 MiB"), "{}", text(&out));
    assert!(!coffer::lab::boots(&lab_state(dir), "bare").unwrap());
}
