//! `coffer export` through the real binary: points exported as
//! streamOptimized VMDKs that qemu-img reads back identical to the source
//! images, and as OVAs whose descriptor, disks and manifest agree.

mod common;

use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Output;
use std::sync::Arc;

use coffer::repo::Repository;
use coffer::repo::backup::{self, BackupRequest, DiskSource, FileDisk};
use coffer::repo::local::LocalStore;
use coffer::repo::manifest::VmIdentity;
use common::{ok, stderr, stdout};
use sha2::{Digest, Sha256};

const MIB: u64 = 1 << 20;

/// A policy directory with one local tier, `local`, initialised.
fn policy_dir(dir: &Path) {
    std::fs::write(
        dir.join("coffer.toml"),
        "[settings]\ntimezone = \"UTC\"\n\n[tiers.local]\nbackend = \"local\"\npath = \"repo\"\nsite = \"here\"\n",
    )
    .unwrap();
    ok(&coffer(dir, &["repo", "init", "--tier", "local"]));
}

fn coffer(dir: &Path, args: &[&str]) -> Output {
    common::command_in(dir)
        .args(args)
        .args(["-p", "."])
        .output()
        .unwrap()
}

/// Deterministic pseudo-random bytes (xorshift).
fn fill(buf: &mut [u8], seed: u64) {
    let mut x = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    for chunk in buf.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
}

/// A 48 MiB image: random data, text, a hole, all at odd offsets, and data
/// in the last bytes; it spans two 32 MiB grain tables.
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

/// An image whose size is not a whole number of sectors or grains, with
/// data up to its last byte.
fn make_odd_image(path: &Path, size: u64, seed: u64) {
    let f = std::fs::File::create(path).unwrap();
    f.set_len(size).unwrap();
    let mut head = vec![0u8; 100_000];
    fill(&mut head, seed);
    f.write_all_at(&head, 0).unwrap();
    f.write_all_at(&head[..777], size - 777).unwrap();
}

fn qemu_info(path: &Path) -> serde_json::Value {
    let o = std::process::Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(path)
        .output()
        .unwrap();
    assert!(o.status.success(), "qemu-img info: {}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// qemu-img compare of a raw source image and an exported VMDK.
fn assert_identical(raw: &Path, vmdk: &Path) {
    let o = std::process::Command::new("qemu-img")
        .args(["compare", "-f", "raw", "-F", "vmdk"])
        .arg(raw)
        .arg(vmdk)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "qemu-img compare {} {}: {}{}",
        raw.display(),
        vmdk.display(),
        stdout(&o),
        stderr(&o)
    );
}

fn assert_stream_optimized(vmdk: &Path, size: u64) {
    let info = qemu_info(vmdk);
    assert_eq!(info["format"], "vmdk", "{info}");
    assert_eq!(info["virtual-size"], size.div_ceil(512) * 512, "{info}");
    let data = &info["format-specific"]["data"];
    assert_eq!(data["create-type"], "streamOptimized", "{info}");
    assert_eq!(data["extents"][0]["compressed"], true, "{info}");
    // Header at the front, footer marker + footer + end-of-stream marker
    // as the last three sectors.
    let bytes = std::fs::read(vmdk).unwrap();
    assert_eq!(&bytes[0..4], b"KDMV");
    assert_eq!(u32::from_le_bytes(bytes[4..8].try_into().unwrap()), 3);
    assert_eq!(&bytes[56..64], &[0xff; 8], "gdOffset is GD_AT_END");
    let tail = &bytes[bytes.len() - 1536..];
    assert_eq!(u32::from_le_bytes(tail[12..16].try_into().unwrap()), 3);
    assert_eq!(&tail[512..516], b"KDMV");
    let gd = u64::from_le_bytes(tail[512 + 56..512 + 64].try_into().unwrap());
    assert!(
        gd > 0 && gd * 512 < bytes.len() as u64,
        "footer gdOffset {gd}"
    );
    assert!(tail[1024..].iter().all(|b| *b == 0), "end-of-stream marker");
}

#[test]
fn a_point_exports_as_a_stream_optimized_vmdk_that_qemu_reads_back_identical() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    policy_dir(dir);
    make_image(&dir.join("disk.img"));
    let odd = 3 * MIB + 1000;
    make_odd_image(&dir.join("odd.img"), odd, 5);
    let out = ok(&coffer(
        dir,
        &["backup-image", "disk.img", "--tier", "local", "--json"],
    ));
    let first: serde_json::Value = serde_json::from_str(&out).unwrap();
    let first = first["point"].as_str().unwrap().to_string();
    ok(&coffer(
        dir,
        &["backup-image", "odd.img", "--tier", "local"],
    ));

    ok(&coffer(
        dir,
        &[
            "export",
            "disk.img",
            "--format",
            "vmdk",
            "-o",
            "disk.vmdk",
            "--point",
            &first,
        ],
    ));
    assert_stream_optimized(&dir.join("disk.vmdk"), 48 * MIB);
    assert_identical(&dir.join("disk.img"), &dir.join("disk.vmdk"));
    let exported = std::fs::metadata(dir.join("disk.vmdk")).unwrap().len();
    assert!(
        exported < 16 * MIB,
        "holes and zero grains take no room: {exported} bytes"
    );

    ok(&coffer(
        dir,
        &["export", "odd.img", "--format", "vmdk", "-o", "odd.vmdk"],
    ));
    assert_stream_optimized(&dir.join("odd.vmdk"), odd);
    assert_identical(&dir.join("odd.img"), &dir.join("odd.vmdk"));

    // A disk of zeros only: no grain, no grain table, still a valid VMDK.
    std::fs::File::create(dir.join("zero.img"))
        .unwrap()
        .set_len(40 * MIB)
        .unwrap();
    ok(&coffer(
        dir,
        &["backup-image", "zero.img", "--tier", "local"],
    ));
    ok(&coffer(
        dir,
        &["export", "zero.img", "--format", "vmdk", "-o", "zero.vmdk"],
    ));
    assert_stream_optimized(&dir.join("zero.vmdk"), 40 * MIB);
    assert_identical(&dir.join("zero.img"), &dir.join("zero.vmdk"));
    assert!(std::fs::metadata(dir.join("zero.vmdk")).unwrap().len() < 128 << 10);

    // An existing file is kept unless --force is given.
    let o = coffer(
        dir,
        &["export", "odd.img", "--format", "vmdk", "-o", "disk.vmdk"],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("give --force"), "{}", stderr(&o));
    assert_identical(&dir.join("disk.img"), &dir.join("disk.vmdk"));
    ok(&coffer(
        dir,
        &[
            "export",
            "odd.img",
            "--format",
            "vmdk",
            "-o",
            "disk.vmdk",
            "--force",
        ],
    ));
    assert_identical(&dir.join("odd.img"), &dir.join("disk.vmdk"));
    let leftovers: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".coffer-export")
        })
        .collect();
    assert!(leftovers.is_empty(), "no temporary files stay behind");
}

/// Writes a point of `db01` with two disks and a .vmx straight into the
/// tier's repository.
fn back_up_two_disk_vm(dir: &Path, disks: &[&Path]) {
    let repo =
        Repository::open(Arc::new(LocalStore::new(dir.join("repo")).unwrap()), None).unwrap();
    let readers: Vec<FileDisk> = disks.iter().map(|d| FileDisk::open(d).unwrap()).collect();
    backup::backup(
        &repo,
        BackupRequest {
            vm: VmIdentity::new("db01", "4210aaaa-0000-0000-0000-0000000000e1"),
            consistency: "crash".into(),
            chunk_size_bytes: 256 << 10,
            parent: None,
            disks: readers
                .iter()
                .enumerate()
                .map(|(i, r)| DiskSource::whole(2000 + i as i32, format!("Hard disk {}", i + 1), r))
                .collect(),
            files: vec![(
                "db01.vmx".into(),
                b"displayName = \"db01\"\nnumvcpus = \"4\"\nmemSize = \"4096\"\nguestOS = \"debian12-64\"\n"
                    .to_vec(),
            )],
            skipped_disks: vec![],
            threads: 2,
        },
    )
    .unwrap();
}

#[test]
fn a_vm_exports_as_an_ova_whose_descriptor_disks_and_manifest_agree() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    policy_dir(dir);
    let a = dir.join("a.img");
    let b = dir.join("b.img");
    make_image(&a);
    make_odd_image(&b, 5 * MIB + 512 * 3, 9);
    back_up_two_disk_vm(dir, &[&a, &b]);

    let out = ok(&coffer(
        dir,
        &[
            "export",
            "db01",
            "--format",
            "ova",
            "-o",
            "db01.ova",
            "--tier",
            "local",
            "--at",
            "2999-01-01T00:00:00Z",
        ],
    ));
    assert!(out.contains("wrote db01.ova"), "{out}");

    // Unpack, keeping the archive's order.
    let mut entries: Vec<(String, Vec<u8>)> = Vec::new();
    let mut archive = tar::Archive::new(std::fs::File::open(dir.join("db01.ova")).unwrap());
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        assert_eq!(e.header().as_ustar().map(|_| ()), Some(()), "ustar headers");
        let name = e.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        entries.push((name, data));
    }
    let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["db01.ovf", "db01-disk1.vmdk", "db01-disk2.vmdk", "db01.mf"]
    );

    let ovf = std::str::from_utf8(&entries[0].1).unwrap();
    let doc = roxmltree::Document::parse(ovf).unwrap();
    const OVF: &str = "http://schemas.dmtf.org/ovf/envelope/1";
    let files: Vec<_> = doc
        .descendants()
        .filter(|n| n.has_tag_name((OVF, "File")))
        .collect();
    let disks: Vec<_> = doc
        .descendants()
        .filter(|n| n.has_tag_name((OVF, "Disk")))
        .collect();
    assert_eq!((files.len(), disks.len()), (2, 2));
    for (i, (size, src)) in [(48 * MIB, &a), (5 * MIB + 1536, &b)].iter().enumerate() {
        let (name, data) = &entries[i + 1];
        assert_eq!(files[i].attribute((OVF, "href")), Some(name.as_str()));
        assert_eq!(
            files[i].attribute((OVF, "size")),
            Some(data.len().to_string().as_str())
        );
        let file_id = files[i].attribute((OVF, "id")).unwrap();
        assert_eq!(disks[i].attribute((OVF, "fileRef")), Some(file_id));
        assert_eq!(
            disks[i].attribute((OVF, "capacity")),
            Some(size.to_string().as_str())
        );
        assert_eq!(
            disks[i].attribute((OVF, "capacityAllocationUnits")),
            Some("byte")
        );
        assert_eq!(
            disks[i].attribute((OVF, "format")),
            Some("http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized")
        );
        let path = dir.join(name);
        std::fs::write(&path, data).unwrap();
        assert_stream_optimized(&path, *size);
        assert_identical(src, &path);
    }
    let quantity = |resource_type: &str| -> String {
        let item = doc
            .descendants()
            .filter(|n| n.tag_name().name() == "Item")
            .find(|n| {
                n.children().any(|c| {
                    c.tag_name().name() == "ResourceType" && c.text() == Some(resource_type)
                })
            })
            .unwrap();
        item.children()
            .find(|c| c.tag_name().name() == "VirtualQuantity")
            .and_then(|c| c.text())
            .unwrap()
            .to_string()
    };
    assert_eq!(quantity("3"), "4", "vCPUs from the .vmx");
    assert_eq!(quantity("4"), "4096", "memory from the .vmx");
    let disk_items = doc
        .descendants()
        .filter(|n| n.tag_name().name() == "ResourceType" && n.text() == Some("17"))
        .count();
    assert_eq!(disk_items, 2);
    let name = doc
        .descendants()
        .find(|n| n.has_tag_name((OVF, "Name")))
        .and_then(|n| n.text());
    assert_eq!(name, Some("db01"));

    // The manifest names every other file with its SHA-256.
    let mf = std::str::from_utf8(&entries[3].1).unwrap();
    let expected: String = entries[..3]
        .iter()
        .map(|(n, d)| format!("SHA256({n})= {}\n", hex::encode(Sha256::digest(d))))
        .collect();
    assert_eq!(mf, expected);

    // The OVA is not replaced without --force.
    let o = coffer(
        dir,
        &["export", "db01", "--format", "ova", "-o", "db01.ova"],
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("exists; give --force"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn exporting_a_vm_without_points_names_what_was_looked_for() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    policy_dir(dir);
    let o = coffer(
        dir,
        &[
            "export", "nosuch", "--format", "ova", "-o", "x.ova", "--tier", "local",
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("no point of VM `nosuch` on tier `local`"),
        "{}",
        stderr(&o)
    );
    assert!(!dir.join("x.ova").exists());
    let o = coffer(
        dir,
        &[
            "export",
            "nosuch",
            "--format",
            "vmdk",
            "-o",
            "x.vmdk",
            "--point",
            "20200101T000000Z-000000",
        ],
    );
    assert!(
        stderr(&o).contains("with id 20200101T000000Z-000000"),
        "{}",
        stderr(&o)
    );
}
