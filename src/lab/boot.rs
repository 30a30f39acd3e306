//! Whether a lab guest boots from its disk: the lab runs no boot loader, so
//! it checks what firmware and a boot loader would need to find.
//!
//! A disk the lab made (`content`: its MBR carries the lab's boot code)
//! boots when its partition table still holds the lab's partition and the
//! file system header there is intact; wiping either is how tests break a
//! guest. A disk imported from an image (`image`) holds someone else's
//! boot loader and file system, which the lab cannot judge; it boots when
//! its partition table holds at least one partition inside the disk: a
//! valid MBR, or a protective MBR with a GPT whose header and entry array
//! pass their CRC32 checks, as firmware requires before it uses one (UEFI
//! Specification 2.10, §5.2.1 "Legacy MBR", §5.3.2 "GPT Header" and
//! §5.3.3 "GPT Partition Entry Array"). A bare file system with no
//! partition table does not boot, as a BIOS or UEFI firmware would find
//! nothing to start on it.

use std::io;

use super::content;

/// The sector size of every lab disk (a VMDK's sectors are 512 bytes).
const SECTOR: u64 = 512;
/// The MBR's partition type of a GPT's protective partition.
const PROTECTIVE_MBR_TYPE: u8 = 0xEE;
const GPT_SIGNATURE: &[u8; 8] = b"EFI PART";
/// A GPT entry array larger than this is not one a partitioning tool
/// writes (128 entries of 128 bytes is the usual 16 KiB).
const MAX_GPT_ENTRY_ARRAY_BYTES: u64 = 1 << 20;

/// Reads `len` bytes at a disk offset, as the guest sees the disk.
pub type ReadAt<'a> = dyn Fn(u64, usize) -> io::Result<Vec<u8>> + 'a;

/// Whether a disk of `capacity_bytes` read through `read` boots; the error
/// says what is missing or broken.
pub fn check(capacity_bytes: u64, read: &ReadAt<'_>) -> Result<(), String> {
    let mbr = read(0, SECTOR as usize).map_err(|e| format!("reading the MBR: {e}"))?;
    if mbr.len() < SECTOR as usize || mbr[510..512] != [0x55, 0xAA] {
        return Err("no MBR signature".into());
    }
    if mbr.starts_with(content::BOOT_CODE) {
        return lab_disk(&mbr, read);
    }
    let partitions = mbr_partitions(&mbr);
    if partitions.iter().any(|p| p.kind == PROTECTIVE_MBR_TYPE) {
        return gpt(capacity_bytes, read);
    }
    let inside = |p: &MbrPartition| {
        p.start_sector > 0
            && p.sectors > 0
            && (p.start_sector + p.sectors) * SECTOR <= capacity_bytes
    };
    if partitions.iter().any(inside) {
        Ok(())
    } else {
        Err("the MBR holds no partition inside the disk".into())
    }
}

/// A disk the lab made: the lab's partition at 1 MiB and its header.
fn lab_disk(mbr: &[u8], read: &ReadAt<'_>) -> Result<(), String> {
    let first = mbr_partitions(mbr).into_iter().next();
    if !first.is_some_and(|p| {
        p.kind == 0x83 && p.start_sector * SECTOR == content::PARTITION_START_BYTES
    }) {
        return Err("the partition table does not hold the lab's partition".into());
    }
    let header = read(content::PARTITION_START_BYTES, content::HEADER_BYTES)
        .map_err(|e| format!("reading the file system header: {e}"))?;
    content::check_header(&header)
}

#[derive(Debug, Clone, Copy)]
struct MbrPartition {
    kind: u8,
    start_sector: u64,
    sectors: u64,
}

/// The four primary entries of an MBR, empty ones (type 0) left out.
fn mbr_partitions(mbr: &[u8]) -> Vec<MbrPartition> {
    (0..4)
        .map(|i| &mbr[446 + 16 * i..446 + 16 * (i + 1)])
        .filter(|e| e[4] != 0)
        .map(|e| MbrPartition {
            kind: e[4],
            start_sector: u64::from(u32::from_le_bytes(e[8..12].try_into().expect("4 bytes"))),
            sectors: u64::from(u32::from_le_bytes(e[12..16].try_into().expect("4 bytes"))),
        })
        .collect()
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// The primary GPT (header at LBA 1): valid, and holding a used entry
/// inside the disk.
fn gpt(capacity_bytes: u64, read: &ReadAt<'_>) -> Result<(), String> {
    let header = read(SECTOR, SECTOR as usize).map_err(|e| format!("reading the GPT: {e}"))?;
    if header.len() < 92 || &header[..8] != GPT_SIGNATURE {
        return Err("a protective MBR but no GPT header at LBA 1".into());
    }
    let header_bytes = le_u32(&header, 12) as usize;
    if !(92..=SECTOR as usize).contains(&header_bytes) {
        return Err(format!("the GPT header claims {header_bytes} bytes"));
    }
    let mut zeroed = header[..header_bytes].to_vec();
    zeroed[16..20].fill(0);
    if crc32fast::hash(&zeroed) != le_u32(&header, 16) {
        return Err("the GPT header's CRC32 does not match".into());
    }
    let entries_at = le_u64(&header, 72).saturating_mul(SECTOR);
    let count = u64::from(le_u32(&header, 80));
    let entry_bytes = u64::from(le_u32(&header, 84));
    let array_bytes = count.saturating_mul(entry_bytes);
    if entry_bytes < 128
        || array_bytes > MAX_GPT_ENTRY_ARRAY_BYTES
        || entries_at.saturating_add(array_bytes) > capacity_bytes
    {
        return Err("the GPT's partition entry array is not inside the disk".into());
    }
    let entries = read(entries_at, array_bytes as usize)
        .map_err(|e| format!("reading the GPT's partition entries: {e}"))?;
    if crc32fast::hash(&entries) != le_u32(&header, 88) {
        return Err("the GPT partition entry array's CRC32 does not match".into());
    }
    let used_inside = entries.chunks(entry_bytes as usize).any(|e| {
        let (first, last) = (le_u64(e, 32), le_u64(e, 40));
        e[..16].iter().any(|&b| b != 0)
            && first > 0
            && first <= last
            && last < capacity_bytes / SECTOR
    });
    if used_inside {
        Ok(())
    } else {
        Err("the GPT holds no partition inside the disk".into())
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    /// An MBR with one partition of `kind` from `start` for `sectors`.
    pub(in crate::lab) fn mbr(kind: u8, start: u32, sectors: u32) -> Vec<u8> {
        let mut m = vec![0u8; 512];
        m[446 + 4] = kind;
        m[446 + 8..446 + 12].copy_from_slice(&start.to_le_bytes());
        m[446 + 12..446 + 16].copy_from_slice(&sectors.to_le_bytes());
        m[510] = 0x55;
        m[511] = 0xAA;
        m
    }

    fn reader(disk: &[u8]) -> impl Fn(u64, usize) -> io::Result<Vec<u8>> + '_ {
        move |at, len| {
            let at = at as usize;
            disk.get(at..at + len)
                .map(<[u8]>::to_vec)
                .ok_or_else(|| io::Error::other("beyond the disk"))
        }
    }

    /// A disk of `capacity` with a protective MBR and a GPT of one entry.
    fn gpt_disk(capacity: u64) -> Vec<u8> {
        let mut d = vec![0u8; capacity as usize];
        d[..512].copy_from_slice(&mbr(0xEE, 1, (capacity / 512 - 1) as u32));
        let mut entries = vec![0u8; 128 * 128];
        entries[..16].copy_from_slice(&[0xAF; 16]);
        entries[32..40].copy_from_slice(&2048u64.to_le_bytes());
        entries[40..48].copy_from_slice(&(capacity / 512 - 34).to_le_bytes());
        let mut h = vec![0u8; 92];
        h[..8].copy_from_slice(GPT_SIGNATURE);
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[24..32].copy_from_slice(&1u64.to_le_bytes());
        h[72..80].copy_from_slice(&2u64.to_le_bytes());
        h[80..84].copy_from_slice(&128u32.to_le_bytes());
        h[84..88].copy_from_slice(&128u32.to_le_bytes());
        h[88..92].copy_from_slice(&crc32fast::hash(&entries).to_le_bytes());
        let crc = crc32fast::hash(&h);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        d[512..604].copy_from_slice(&h);
        d[1024..1024 + entries.len()].copy_from_slice(&entries);
        d
    }

    #[test]
    fn an_imported_disk_boots_with_a_partition_in_its_mbr_or_gpt() {
        let cap = 4 * MIB;
        let mut d = vec![0u8; cap as usize];
        d[..512].copy_from_slice(&mbr(0x83, 2048, 4096));
        assert_eq!(check(cap, &reader(&d)), Ok(()));
        // A partition reaching past the disk, no partition, no signature.
        d[..512].copy_from_slice(&mbr(0x83, 2048, 8192));
        assert!(
            check(cap, &reader(&d))
                .unwrap_err()
                .contains("no partition")
        );
        d[..512].copy_from_slice(&mbr(0, 0, 0));
        assert!(
            check(cap, &reader(&d))
                .unwrap_err()
                .contains("no partition")
        );
        assert_eq!(
            check(cap, &reader(&vec![0u8; cap as usize])),
            Err("no MBR signature".into())
        );

        let g = gpt_disk(cap);
        assert_eq!(check(cap, &reader(&g)), Ok(()));
        let mut broken = g.clone();
        broken[1024 + 40] ^= 1;
        assert!(check(cap, &reader(&broken)).unwrap_err().contains("CRC32"));
        let mut broken = g;
        broken[512] = b'X';
        assert!(
            check(cap, &reader(&broken))
                .unwrap_err()
                .contains("no GPT header")
        );
    }

    #[test]
    fn a_lab_made_disk_needs_its_partition_and_header() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d");
        content::generate(&path, "vm1", 0, 8 * MIB).unwrap();
        let mut d = std::fs::read(&path).unwrap();
        assert_eq!(check(8 * MIB, &reader(&d)), Ok(()));
        let h = content::PARTITION_START_BYTES as usize;
        d[h + 100] ^= 1;
        assert!(
            check(8 * MIB, &reader(&d))
                .unwrap_err()
                .contains("checksum")
        );
        d[h..h + 8].fill(0);
        assert!(check(8 * MIB, &reader(&d)).unwrap_err().contains("header"));
        // The lab's boot code with another partition table is not a lab disk
        // that boots, even though the partition is a valid one.
        let mut moved = std::fs::read(&path).unwrap();
        moved[446 + 8..446 + 12].copy_from_slice(&4096u32.to_le_bytes());
        assert!(
            check(8 * MIB, &reader(&moved))
                .unwrap_err()
                .contains("lab's partition")
        );
    }
}
