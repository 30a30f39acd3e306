//! The partitions of a restored disk image, for the restore drill's file
//! system check: a real VM's disk starts with an MBR or a GPT, so a check
//! run on the whole image (`e2fsck -fn disk-flat.vmdk`) reads a partition
//! table where it expects a superblock and fails on every good backup.
//!
//! Pure reading: the MBR (with its extended partitions) or the GPT is
//! parsed, and each partition's first bytes are matched against the
//! signatures of the file systems a check command can be given. Nothing is
//! written. Sizes come from the table, never trusted beyond the image: a
//! partition that lies outside the image is reported, not read.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// A file system a check can be run on, named as `fsck.<name>` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsKind {
    Ext2,
    Ext3,
    Ext4,
    Xfs,
    Btrfs,
    Ntfs,
    Vfat,
}

impl FsKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FsKind::Ext2 => "ext2",
            FsKind::Ext3 => "ext3",
            FsKind::Ext4 => "ext4",
            FsKind::Xfs => "xfs",
            FsKind::Btrfs => "btrfs",
            FsKind::Ntfs => "ntfs",
            FsKind::Vfat => "vfat",
        }
    }
}

/// One area of a disk image that may hold a file system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// The partition's number as the guest's kernel counts it (MBR primary
    /// 1-4, logical from 5, GPT from 1); 0 for a file system on the whole
    /// disk.
    pub number: u32,
    pub offset_bytes: u64,
    pub size_bytes: u64,
    /// The table's type of the partition, in words (`mbr 0x83`, `gpt
    /// <guid>`, `whole disk`).
    pub table_type: String,
    /// The file system found at its start, if one coffer knows.
    pub fs: Option<FsKind>,
}

/// How the image is laid out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// A file system on the whole disk (no partition table).
    WholeDisk(Partition),
    /// An MBR or GPT and its partitions (possibly none).
    Table {
        kind: &'static str,
        partitions: Vec<Partition>,
    },
    /// Neither a partition table nor a known file system.
    Unknown,
}

const SECTOR: u64 = 512;
/// More entries than any real table holds: the limit on a crafted chain.
const MAX_PARTITIONS: usize = 256;

fn read_at(f: &File, len: u64, offset: u64, n: usize) -> io::Result<Option<Vec<u8>>> {
    if offset.checked_add(n as u64).is_none_or(|end| end > len) {
        return Ok(None);
    }
    let mut buf = vec![0; n];
    f.read_exact_at(&mut buf, offset)?;
    Ok(Some(buf))
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap_or_default())
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or_default())
}

/// The file system whose signature is at `offset`, if one is known.
fn fs_at(f: &File, len: u64, offset: u64) -> io::Result<Option<FsKind>> {
    // ext2/3/4: the superblock at 1024, magic 0xEF53 at 56 in it.
    if let Some(sb) = read_at(f, len, offset + 1024, 256)?
        && le16(&sb, 56) == 0xEF53
    {
        let (compat, incompat) = (le32(&sb, 0x5C), le32(&sb, 0x60));
        // extents, 64bit or flex_bg make it ext4; a journal makes it ext3.
        return Ok(Some(if incompat & (0x40 | 0x80 | 0x200) != 0 {
            FsKind::Ext4
        } else if compat & 0x4 != 0 {
            FsKind::Ext3
        } else {
            FsKind::Ext2
        }));
    }
    if let Some(b) = read_at(f, len, offset, 90)? {
        if &b[0..4] == b"XFSB" {
            return Ok(Some(FsKind::Xfs));
        }
        if &b[3..11] == b"NTFS    " {
            return Ok(Some(FsKind::Ntfs));
        }
        if &b[82..87] == b"FAT32" || &b[54..59] == b"FAT12" || &b[54..59] == b"FAT16" {
            return Ok(Some(FsKind::Vfat));
        }
    }
    if let Some(b) = read_at(f, len, offset + 0x10040, 8)?
        && &b[..] == b"_BHRfS_M"
    {
        return Ok(Some(FsKind::Btrfs));
    }
    Ok(None)
}

fn partition(
    f: &File,
    len: u64,
    number: u32,
    offset_bytes: u64,
    size_bytes: u64,
    table_type: String,
) -> io::Result<Partition> {
    let inside = offset_bytes
        .checked_add(size_bytes)
        .is_some_and(|end| end <= len);
    Ok(Partition {
        number,
        offset_bytes,
        size_bytes,
        table_type,
        fs: if inside {
            fs_at(f, len, offset_bytes)?
        } else {
            None
        },
    })
}

/// Reads the layout of the image at `path`.
pub fn layout(path: &Path) -> io::Result<Layout> {
    let f = File::open(path)?;
    let len = f.metadata()?.len();
    // A file system on the whole disk first: FAT and NTFS boot sectors
    // also end in 0x55AA, as an MBR does.
    if let Some(fs) = fs_at(&f, len, 0)? {
        return Ok(Layout::WholeDisk(Partition {
            number: 0,
            offset_bytes: 0,
            size_bytes: len,
            table_type: "whole disk".into(),
            fs: Some(fs),
        }));
    }
    let Some(mbr) = read_at(&f, len, 0, SECTOR as usize)? else {
        return Ok(Layout::Unknown);
    };
    if mbr[510..512] != [0x55, 0xAA] {
        return Ok(Layout::Unknown);
    }
    let entries: Vec<(u8, u64, u64)> = (0..4)
        .map(|i| {
            let e = &mbr[446 + 16 * i..446 + 16 * (i + 1)];
            (e[4], u64::from(le32(e, 8)), u64::from(le32(e, 12)))
        })
        .collect();
    if entries.iter().any(|(t, _, _)| *t == 0xEE) {
        for sector in [SECTOR, 4096] {
            if let Some(p) = gpt(&f, len, sector)? {
                return Ok(Layout::Table {
                    kind: "gpt",
                    partitions: p,
                });
            }
        }
        return Ok(Layout::Table {
            kind: "gpt (unreadable)",
            partitions: Vec::new(),
        });
    }
    let mut partitions = Vec::new();
    for (i, (kind, start, sectors)) in entries.into_iter().enumerate() {
        if kind == 0 || sectors == 0 {
            continue;
        }
        if matches!(kind, 0x05 | 0x0F | 0x85) {
            logical(&f, len, start, &mut partitions)?;
            continue;
        }
        partitions.push(partition(
            &f,
            len,
            i as u32 + 1,
            start * SECTOR,
            sectors * SECTOR,
            format!("mbr 0x{kind:02x}"),
        )?);
    }
    Ok(Layout::Table {
        kind: "mbr",
        partitions,
    })
}

/// The logical partitions of the extended partition at `base` (sectors):
/// a chain of EBRs, each relative to the extended partition's start.
fn logical(f: &File, len: u64, base: u64, out: &mut Vec<Partition>) -> io::Result<()> {
    let mut ebr_at = base;
    let mut number = 5;
    for _ in 0..MAX_PARTITIONS {
        let Some(ebr) = read_at(f, len, ebr_at * SECTOR, SECTOR as usize)? else {
            return Ok(());
        };
        if ebr[510..512] != [0x55, 0xAA] {
            return Ok(());
        }
        let e = &ebr[446..462];
        let (kind, start, sectors) = (e[4], u64::from(le32(e, 8)), u64::from(le32(e, 12)));
        if kind != 0 && sectors != 0 {
            out.push(partition(
                f,
                len,
                number,
                (ebr_at + start) * SECTOR,
                sectors * SECTOR,
                format!("mbr 0x{kind:02x}"),
            )?);
            number += 1;
        }
        let next = &ebr[462..478];
        let next_start = u64::from(le32(next, 8));
        if next[4] == 0 || next_start == 0 || base + next_start <= ebr_at {
            return Ok(());
        }
        ebr_at = base + next_start;
    }
    Ok(())
}

fn guid(b: &[u8]) -> String {
    format!(
        "{:08x}-{:04x}-{:04x}-{}-{}",
        le32(b, 0),
        le16(b, 4),
        le16(b, 6),
        hex::encode(&b[8..10]),
        hex::encode(&b[10..16])
    )
}

/// The GPT's partitions, when its header is at LBA 1 for `sector`.
fn gpt(f: &File, len: u64, sector: u64) -> io::Result<Option<Vec<Partition>>> {
    let Some(h) = read_at(f, len, sector, 92)? else {
        return Ok(None);
    };
    if &h[0..8] != b"EFI PART" {
        return Ok(None);
    }
    let (entries_lba, count, entry_size) = (le64(&h, 72), le32(&h, 80), le32(&h, 84));
    if entry_size < 128 || count as usize > MAX_PARTITIONS * 4 {
        return Ok(None);
    }
    let mut out = Vec::new();
    for i in 0..u64::from(count) {
        let at = entries_lba
            .saturating_mul(sector)
            .saturating_add(i * u64::from(entry_size));
        let Some(e) = read_at(f, len, at, 128)? else {
            break;
        };
        if e[0..16].iter().all(|b| *b == 0) {
            continue;
        }
        let (first, last) = (le64(&e, 32), le64(&e, 40));
        if last < first {
            continue;
        }
        out.push(partition(
            f,
            len,
            i as u32 + 1,
            first.saturating_mul(sector),
            (last - first + 1).saturating_mul(sector),
            format!("gpt {}", guid(&e[0..16])),
        )?);
        if out.len() >= MAX_PARTITIONS {
            break;
        }
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    /// An ext4-looking superblock at `offset` (magic and the extents flag).
    fn ext4_at(img: &mut [u8], offset: usize) {
        img[offset + 1024 + 56..offset + 1024 + 58].copy_from_slice(&0xEF53u16.to_le_bytes());
        img[offset + 1024 + 0x60..offset + 1024 + 0x64].copy_from_slice(&0x40u32.to_le_bytes());
    }

    fn mbr_entry(img: &mut [u8], at: usize, kind: u8, start: u32, sectors: u32) {
        img[at + 4] = kind;
        img[at + 8..at + 12].copy_from_slice(&start.to_le_bytes());
        img[at + 12..at + 16].copy_from_slice(&sectors.to_le_bytes());
    }

    fn write(img: &[u8]) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), img).unwrap();
        f
    }

    #[test]
    fn an_mbr_with_primary_and_logical_partitions_names_each_file_system() {
        let mut img = vec![0u8; 8 * MIB as usize];
        // 1: ext4 at 1 MiB; 2: extended at 3 MiB holding one logical ext4
        // at 4 MiB; 3: swap-like unknown at 6 MiB.
        mbr_entry(&mut img, 446, 0x83, 2048, 4096);
        mbr_entry(&mut img, 462, 0x05, 6144, 6144);
        mbr_entry(&mut img, 478, 0x82, 12288, 2048);
        img[510] = 0x55;
        img[511] = 0xAA;
        let ebr = 6144 * 512;
        mbr_entry(&mut img, ebr + 446, 0x83, 2048, 2048);
        img[ebr + 510] = 0x55;
        img[ebr + 511] = 0xAA;
        ext4_at(&mut img, MIB as usize);
        ext4_at(&mut img, 4 * MIB as usize);
        let f = write(&img);
        let Layout::Table { kind, partitions } = layout(f.path()).unwrap() else {
            panic!("no table found");
        };
        assert_eq!(kind, "mbr");
        let seen: Vec<(u32, u64, Option<FsKind>)> = partitions
            .iter()
            .map(|p| (p.number, p.offset_bytes, p.fs))
            .collect();
        assert_eq!(
            seen,
            [
                (1, MIB, Some(FsKind::Ext4)),
                (5, 4 * MIB, Some(FsKind::Ext4)),
                (3, 6 * MIB, None),
            ]
        );
    }

    #[test]
    fn a_gpt_behind_a_protective_mbr_is_read() {
        let mut img = vec![0u8; 4 * MIB as usize];
        mbr_entry(&mut img, 446, 0xEE, 1, 8191);
        img[510] = 0x55;
        img[511] = 0xAA;
        let h = 512;
        img[h..h + 8].copy_from_slice(b"EFI PART");
        img[h + 72..h + 80].copy_from_slice(&2u64.to_le_bytes());
        img[h + 80..h + 84].copy_from_slice(&128u32.to_le_bytes());
        img[h + 84..h + 88].copy_from_slice(&128u32.to_le_bytes());
        // Entry 2 (the first is empty): 2048..6143, a Linux data GUID.
        let e = 1024 + 128;
        img[e..e + 16].copy_from_slice(&[0xAF; 16]);
        img[e + 32..e + 40].copy_from_slice(&2048u64.to_le_bytes());
        img[e + 40..e + 48].copy_from_slice(&6143u64.to_le_bytes());
        ext4_at(&mut img, MIB as usize);
        let f = write(&img);
        let Layout::Table { kind, partitions } = layout(f.path()).unwrap() else {
            panic!("no table found");
        };
        assert_eq!(kind, "gpt");
        assert_eq!(partitions.len(), 1);
        assert_eq!(partitions[0].number, 2);
        assert_eq!(partitions[0].offset_bytes, MIB);
        assert_eq!(partitions[0].size_bytes, 2 * MIB);
        assert_eq!(partitions[0].fs, Some(FsKind::Ext4));
    }

    #[test]
    fn a_file_system_on_the_whole_disk_and_random_bytes_are_told_apart() {
        let mut img = vec![0u8; 2 * MIB as usize];
        ext4_at(&mut img, 0);
        let f = write(&img);
        assert!(matches!(
            layout(f.path()).unwrap(),
            Layout::WholeDisk(Partition {
                number: 0,
                offset_bytes: 0,
                fs: Some(FsKind::Ext4),
                ..
            })
        ));
        let noise: Vec<u8> = (0..MIB).map(|i| (i * 7 % 251) as u8).collect();
        let f = write(&noise);
        assert_eq!(layout(f.path()).unwrap(), Layout::Unknown);
    }

    #[test]
    fn a_partition_beyond_the_image_or_a_looping_chain_is_not_followed() {
        let mut img = vec![0u8; MIB as usize];
        mbr_entry(&mut img, 446, 0x83, 1 << 30, 2048);
        // An extended partition whose EBR points back at itself.
        mbr_entry(&mut img, 462, 0x05, 8, 64);
        img[510] = 0x55;
        img[511] = 0xAA;
        let ebr = 8 * 512;
        mbr_entry(&mut img, ebr + 462, 0x05, 0, 64);
        img[ebr + 510] = 0x55;
        img[ebr + 511] = 0xAA;
        let f = write(&img);
        let Layout::Table { partitions, .. } = layout(f.path()).unwrap() else {
            panic!("no table found");
        };
        assert_eq!(partitions.len(), 1);
        assert_eq!(partitions[0].fs, None);
    }
}
