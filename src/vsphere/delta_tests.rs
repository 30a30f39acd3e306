//! The delta formats against hand-built images and against qemu-img as
//! the oracle: what `delta` reads of a chain is what qemu converts.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use super::delta::*;

const MIB: u64 = 1 << 20;

fn temp_file(dir: &std::path::Path, name: &str) -> File {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(dir.join(name))
        .unwrap()
}

fn filled(len: u64, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ ((i >> 9) as u8))
        .collect()
}

/// A parent that reads as 0xEE everywhere, so "from the parent" shows.
fn parent_ee(buf: &mut [u8], _offset: u64) -> io::Result<()> {
    buf.fill(0xee);
    Ok(())
}

#[test]
fn a_vmfs_sparse_delta_holds_written_grains_and_defers_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let f = temp_file(dir.path(), "d-delta.vmdk");
    create(&f, DeltaFormat::VmfsSparse, 8 * MIB).unwrap();
    let data = filled(3 * 512, 1);
    // Across the boundary of the first grain table (2 MiB of 512 B grains).
    write_at(&f, 2 * MIB - 512, &data).unwrap();
    let d = Delta::open(&f).unwrap();
    assert_eq!(d.format(), DeltaFormat::VmfsSparse);
    assert_eq!((d.capacity_bytes(), d.grain_bytes()), (8 * MIB, 512));
    assert!(matches!(d.grain(0).unwrap(), Grain::Parent));
    let mut buf = vec![0u8; 5 * 512];
    d.read_at(&mut buf, 2 * MIB - 1024, &parent_ee).unwrap();
    assert!(buf[..512].iter().all(|&b| b == 0xee));
    assert_eq!(&buf[512..2048], &data[..]);
    assert!(buf[2048..].iter().all(|&b| b == 0xee));
    // Rewriting a grain replaces it in place.
    write_at(&f, 2 * MIB, &[9u8; 512]).unwrap();
    let d = Delta::open(&f).unwrap();
    let mut one = [0u8; 512];
    d.read_at(&mut one, 2 * MIB, &parent_ee).unwrap();
    assert_eq!(one, [9u8; 512]);
}

#[test]
fn an_sesparse_delta_reads_data_zero_grains_and_parent() {
    let dir = tempfile::tempdir().unwrap();
    let f = temp_file(dir.path(), "d-sesparse.vmdk");
    create(&f, DeltaFormat::SeSparse, 40 * MIB).unwrap();
    let data = filled(8192, 2);
    write_at(&f, 16 * MIB - 4096, &data).unwrap();
    // Grain 1 made a zero grain by hand, as the host records an UNMAP.
    write_at(&f, 4096, &[5u8; 4096]).unwrap();
    let d = Delta::open(&f).unwrap();
    let Grain::Data(_) = d.grain(1).unwrap() else {
        panic!("grain 1 is allocated")
    };
    let gt = d.directory[0];
    f.write_all_at(&0x2000_0000_0000_0000u64.to_le_bytes(), gt + 8)
        .unwrap();
    let d = Delta::open(&f).unwrap();
    assert_eq!(d.grain_bytes(), 4096);
    assert_eq!(d.grain(1).unwrap(), Grain::Zero);
    let mut buf = vec![1u8; 3 * 4096];
    d.read_at(&mut buf, 0, &parent_ee).unwrap();
    assert!(buf[..4096].iter().all(|&b| b == 0xee));
    assert!(buf[4096..8192].iter().all(|&b| b == 0));
    assert!(buf[8192..].iter().all(|&b| b == 0xee));
    let mut buf = vec![0u8; 8192];
    d.read_at(&mut buf, 16 * MIB - 4096, &parent_ee).unwrap();
    assert_eq!(buf, data);
}

#[test]
fn unknown_and_unclean_deltas_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let f = temp_file(dir.path(), "x.vmdk");
    f.write_all_at(b"KDMV\x01\0\0\0", 0).unwrap();
    f.set_len(4096).unwrap();
    let err = Delta::open(&f).unwrap_err().to_string();
    assert!(err.contains("neither vmfsSparse"), "{err}");
    let f = temp_file(dir.path(), "y.vmdk");
    create(&f, DeltaFormat::SeSparse, MIB).unwrap();
    f.write_all_at(&1u64.to_le_bytes(), SECTOR + 24).unwrap();
    let err = Delta::open(&f).unwrap_err().to_string();
    assert!(err.contains("journal needs replaying"), "{err}");
    let f = temp_file(dir.path(), "z.vmdk");
    create(&f, DeltaFormat::VmfsSparse, MIB).unwrap();
    f.write_all_at(&0u32.to_le_bytes(), 24).unwrap();
    assert!(
        Delta::open(&f).is_err(),
        "a directory too small for the disk"
    );
}

/// The base flat disk of a chain, read by disk offset.
struct Flat(File);
impl ReadAt for Flat {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(&self.0, buf, offset)
    }
}

#[test]
fn a_chain_of_both_formats_reads_exactly_as_qemu_img_converts_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cap = 40 * MIB;
    // Base: a flat extent with content everywhere.
    let base = temp_file(d, "vm-flat.vmdk");
    base.write_all_at(&filled(cap, 7), 0).unwrap();
    std::fs::write(
        d.join("vm.vmdk"),
        format!(
            "# Disk DescriptorFile\nversion=1\nCID=0000000a\nparentCID=ffffffff\n\
             createType=\"vmfs\"\n\nRW {} VMFS \"vm-flat.vmdk\"\n",
            cap / SECTOR
        ),
    )
    .unwrap();
    // A vmfsSparse delta: scattered 512 B grains and a 3 MiB run over a
    // grain table boundary.
    let cowd = temp_file(d, "vm-000001-delta.vmdk");
    create(&cowd, DeltaFormat::VmfsSparse, cap).unwrap();
    write_at(&cowd, 512, &filled(512, 11)).unwrap();
    write_at(&cowd, MIB + 3 * 512, &filled(3 * 512, 12)).unwrap();
    write_at(&cowd, 5 * MIB, &filled(3 * MIB, 13)).unwrap();
    write_at(&cowd, cap - 512, &filled(512, 14)).unwrap();
    std::fs::write(
        d.join("vm-000001.vmdk"),
        descriptor(
            DeltaFormat::VmfsSparse,
            cap,
            "vm-000001-delta.vmdk",
            "vm.vmdk",
            0xb,
            0xa,
        ),
    )
    .unwrap();
    // An SEsparse delta on top: overlapping some of the above, across
    // its 16 MiB table boundary, written out of order.
    let se = temp_file(d, "vm-000002-sesparse.vmdk");
    create(&se, DeltaFormat::SeSparse, cap).unwrap();
    write_at(&se, 33 * MIB, &filled(64 << 10, 21)).unwrap();
    write_at(&se, 6 * MIB, &filled(8192, 22)).unwrap();
    write_at(&se, 16 * MIB - 8192, &filled(4 * 4096, 23)).unwrap();
    write_at(&se, 0, &filled(4096, 24)).unwrap();
    std::fs::write(
        d.join("vm-000002.vmdk"),
        descriptor(
            DeltaFormat::SeSparse,
            cap,
            "vm-000002-sesparse.vmdk",
            "vm-000001.vmdk",
            0xc,
            0xb,
        ),
    )
    .unwrap();

    let out = d.join("out.raw");
    let status = std::process::Command::new("qemu-img")
        .args(["convert", "-f", "vmdk", "-O", "raw"])
        .arg(d.join("vm-000002.vmdk"))
        .arg(&out)
        .status()
        .expect("qemu-img (qemu-utils) is installed");
    assert!(status.success(), "qemu-img accepts both delta formats");
    let expected = std::fs::read(&out).unwrap();
    assert_eq!(expected.len() as u64, cap);

    let chain = Chain {
        base: Flat(File::open(d.join("vm-flat.vmdk")).unwrap()),
        deltas: vec![
            Delta::open(File::open(d.join("vm-000002-sesparse.vmdk")).unwrap()).unwrap(),
            Delta::open(File::open(d.join("vm-000001-delta.vmdk")).unwrap()).unwrap(),
        ],
    };
    let mut got = vec![0u8; cap as usize];
    chain.read_at(&mut got, 0).unwrap();
    let first_diff = got.iter().zip(&expected).position(|(a, b)| a != b);
    assert_eq!(first_diff, None, "every byte equals qemu's");
    // Unaligned reads agree too.
    let mut part = vec![0u8; 777_777];
    chain.read_at(&mut part, 5 * MIB - 1234).unwrap();
    let at = (5 * MIB - 1234) as usize;
    assert_eq!(&part[..], &expected[at..at + part.len()]);
    // And the chain really changes what the base says.
    assert_ne!(got, std::fs::read(d.join("vm-flat.vmdk")).unwrap());
}
