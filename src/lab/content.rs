//! What a lab disk holds when it is made: an MBR with one Linux partition,
//! a file-system-like header block at the partition start (magic, the VM's
//! name, an extent table and a SHA-256 of the block) and file-like extents
//! of text, random and compressible data, all derived from the VM's name, so
//! the same VM always gets the same bytes. Everything else is a hole.
//!
//! The header is what the lab's "boot" check (`boot`) looks for on a disk
//! whose MBR carries the lab's boot code: a restored disk that carries a
//! valid partition table and header boots, one that does not, never gets
//! its tools running. A disk imported from an image (`image`) holds none of
//! this.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use sha2::{Digest, Sha256};

pub const MIB: u64 = 1 << 20;
/// The partition starts at 1 MiB (LBA 2048), as partitioning tools align it.
pub const PARTITION_START_BYTES: u64 = MIB;
pub const HEADER_BYTES: usize = 4096;
/// Data extents and guest writes stay above this, clear of the boot area.
pub const DATA_START_BYTES: u64 = 2 * MIB;
pub const MAGIC: &[u8; 8] = b"CFLABFS1";
/// The start of the boot code of every MBR the lab makes: how the boot
/// check tells the lab's own disks from imported ones.
pub const BOOT_CODE: &[u8] = b"coffer lab boot sector";
const SECTOR: u64 = 512;
const MAX_EXTENTS: usize = 32;
const CHECKSUM_AT: usize = HEADER_BYTES - 32;

/// A small deterministic generator (SplitMix64): reproducible contents need
/// no cryptographic quality.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// Seeded from a text (a VM's name, a disk's index).
    pub fn from_text(text: &str) -> Rng {
        let digest = Sha256::digest(text.as_bytes());
        Rng(u64::from_le_bytes(digest[..8].try_into().expect("8 bytes")))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtentKind {
    Text = 1,
    Random = 2,
    Compressible = 3,
}

/// One file-like extent of the made-up file system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub offset_bytes: u64,
    pub length_bytes: u64,
    pub kind: ExtentKind,
}

/// The extents of a disk of `capacity_bytes`: about a third of it, with
/// holes between them, all 64 KiB aligned.
pub fn layout(capacity_bytes: u64) -> Vec<Extent> {
    let unit = 64 * 1024;
    let part = |divisor: u64| (capacity_bytes / divisor / unit).max(1) * unit;
    let plan: [(Option<ExtentKind>, u64); 10] = [
        (Some(ExtentKind::Text), part(16)),
        (None, part(32)),
        (Some(ExtentKind::Random), part(8)),
        (None, part(16)),
        (Some(ExtentKind::Compressible), part(16)),
        (None, part(32)),
        (Some(ExtentKind::Text), part(32)),
        (None, part(16)),
        (Some(ExtentKind::Random), part(32)),
        (None, 0),
    ];
    let mut at = DATA_START_BYTES;
    let mut out = Vec::new();
    for (kind, len) in plan {
        if at + len > capacity_bytes {
            break;
        }
        if let Some(kind) = kind {
            out.push(Extent {
                offset_bytes: at,
                length_bytes: len,
                kind,
            });
        }
        at += len;
    }
    out
}

const WORDS: &[&str] = &[
    "backup",
    "restore",
    "policy",
    "tier",
    "snapshot",
    "disk",
    "chunk",
    "index",
    "catalog",
    "retention",
    "the",
    "a",
    "of",
    "and",
    "to",
    "host",
    "datastore",
    "guest",
    "kernel",
    "log",
    "service",
    "started",
    "stopped",
    "user",
    "request",
    "ok",
    "error",
    "warning",
    "config",
];

fn text_block(rng: &mut Rng, buf: &mut [u8]) {
    let mut pos = 0;
    let mut line = 0u64;
    while pos < buf.len() {
        let mut s = format!("{line:06} ");
        for _ in 0..(6 + rng.below(10)) {
            s.push_str(WORDS[rng.below(WORDS.len() as u64) as usize]);
            s.push(' ');
        }
        s.push('\n');
        let n = s.len().min(buf.len() - pos);
        buf[pos..pos + n].copy_from_slice(&s.as_bytes()[..n]);
        pos += n;
        line += 1;
    }
}

fn compressible_block(rng: &mut Rng, buf: &mut [u8], base: u64) {
    let mut pos = 0;
    let mut record = base;
    while pos < buf.len() {
        // Records, then a run of zeros now and then: like a database page.
        let s = if rng.below(8) == 0 {
            "\0".repeat(256)
        } else {
            format!("record={record:08} status=ok size=4096 flags=0000\n")
        };
        let n = s.len().min(buf.len() - pos);
        buf[pos..pos + n].copy_from_slice(&s.as_bytes()[..n]);
        pos += n;
        record += 1;
    }
}

fn mbr(capacity_bytes: u64, seed: &mut Rng) -> [u8; 512] {
    let mut m = [0u8; 512];
    m[..BOOT_CODE.len()].copy_from_slice(BOOT_CODE);
    m[440..444].copy_from_slice(&(seed.next_u64() as u32).to_le_bytes());
    let e = &mut m[446..462];
    e[0] = 0x80;
    e[1..4].copy_from_slice(&[0xFE, 0xFF, 0xFF]);
    e[4] = 0x83;
    e[5..8].copy_from_slice(&[0xFE, 0xFF, 0xFF]);
    let start = (PARTITION_START_BYTES / SECTOR) as u32;
    let sectors = (capacity_bytes / SECTOR) as u32 - start;
    e[8..12].copy_from_slice(&start.to_le_bytes());
    e[12..16].copy_from_slice(&sectors.to_le_bytes());
    m[510] = 0x55;
    m[511] = 0xAA;
    m
}

fn header(label: &str, capacity_bytes: u64, extents: &[Extent]) -> Vec<u8> {
    let mut h = vec![0u8; HEADER_BYTES];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&1u32.to_le_bytes());
    h[12..20].copy_from_slice(&capacity_bytes.to_le_bytes());
    let name = label.as_bytes();
    let n = name.len().min(64);
    h[20..22].copy_from_slice(&(n as u16).to_le_bytes());
    h[22..22 + n].copy_from_slice(&name[..n]);
    let count = extents.len().min(MAX_EXTENTS);
    h[86..90].copy_from_slice(&(count as u32).to_le_bytes());
    for (i, e) in extents.iter().take(count).enumerate() {
        let at = 96 + i * 24;
        h[at..at + 8].copy_from_slice(&e.offset_bytes.to_le_bytes());
        h[at + 8..at + 16].copy_from_slice(&e.length_bytes.to_le_bytes());
        h[at + 16] = e.kind as u8;
    }
    let sum = Sha256::digest(&h[..CHECKSUM_AT]);
    h[CHECKSUM_AT..].copy_from_slice(&sum);
    h
}

/// Writes the initial contents of disk `index` of VM `vm` into the (new,
/// sparse) file at `path`.
pub fn generate(path: &Path, vm: &str, index: usize, capacity_bytes: u64) -> io::Result<()> {
    let file = File::create(path)?;
    file.set_len(capacity_bytes)?;
    let mut rng = Rng::from_text(&format!("{vm}/disk{index}"));
    file.write_all_at(&mbr(capacity_bytes, &mut rng), 0)?;
    let extents = layout(capacity_bytes);
    let label = format!("{vm} disk {index}");
    file.write_all_at(
        &header(&label, capacity_bytes, &extents),
        PARTITION_START_BYTES,
    )?;
    let mut buf = vec![0u8; MIB as usize];
    for e in &extents {
        let mut at = e.offset_bytes;
        while at < e.offset_bytes + e.length_bytes {
            let n = (e.offset_bytes + e.length_bytes - at).min(MIB) as usize;
            let chunk = &mut buf[..n];
            match e.kind {
                ExtentKind::Text => text_block(&mut rng, chunk),
                ExtentKind::Random => rng.fill(chunk),
                ExtentKind::Compressible => compressible_block(&mut rng, chunk, at / 64),
            }
            file.write_all_at(chunk, at)?;
            at += n as u64;
        }
    }
    file.sync_all()
}

/// Whether `header` (read at the partition start) is a valid file system
/// header of a lab disk; the error says what is broken.
pub fn check_header(header: &[u8]) -> Result<(), String> {
    if header.len() < HEADER_BYTES || &header[..8] != MAGIC {
        return Err("no file system header at the partition start".into());
    }
    if Sha256::digest(&header[..CHECKSUM_AT])[..] != header[CHECKSUM_AT..HEADER_BYTES] {
        return Err("the file system header checksum does not match".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_leaves_holes_and_stays_inside() {
        let l = layout(64 * MIB);
        assert!(l.len() >= 4);
        let data: u64 = l.iter().map(|e| e.length_bytes).sum();
        assert!(data < 64 * MIB / 2, "{data}");
        for w in l.windows(2) {
            assert!(w[0].offset_bytes + w[0].length_bytes < w[1].offset_bytes);
        }
        assert!(l.last().unwrap().offset_bytes + l.last().unwrap().length_bytes <= 64 * MIB);
        assert!(!layout(32 * MIB).is_empty());
    }

    #[test]
    fn generated_disk_boots_and_is_deterministic() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        generate(&a, "vm1", 0, 8 * MIB).unwrap();
        generate(&b, "vm1", 0, 8 * MIB).unwrap();
        let (da, db) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        assert_eq!(da, db);
        let h = PARTITION_START_BYTES as usize;
        check_header(&da[h..h + HEADER_BYTES]).unwrap();
        assert!(da.starts_with(BOOT_CODE));
        let mut broken = da[h..h + HEADER_BYTES].to_vec();
        broken[100] ^= 1;
        assert!(check_header(&broken).unwrap_err().contains("checksum"));
        let c = dir.path().join("c");
        generate(&c, "vm2", 0, 8 * MIB).unwrap();
        assert_ne!(std::fs::read(&c).unwrap(), da);
    }
}
