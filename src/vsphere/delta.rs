//! The two delta (redo log) formats ESXi writes for a disk under a snapshot,
//! read through a small "read at offset" seam so the same code serves the
//! datastore HTTP reader, local files and hand-built images in tests.
//!
//! A delta holds the grains written since its snapshot; every grain it does
//! not hold reads from its parent (the next disk down the chain, ending at a
//! flat base extent). Two formats exist:
//!
//! - `vmfsSparse` (extent kind `VMFSSPARSE`): the ESX "COWD" sparse extent.
//!   One 512-byte sector of header starting with the bytes `COWD`, then
//!   little-endian 32-bit fields: version, flags, capacity in sectors, grain
//!   size in sectors, grain directory offset (sectors), grain directory
//!   entries, next free sector. The grain directory holds 32-bit sector
//!   offsets of grain tables (0: none); each grain table holds 4096 32-bit
//!   sector offsets of grains (0: not in this delta). ESX writes 512-byte
//!   grains (its "block allocation unit", per C. Hogan, "vSphere 5.1 Storage
//!   Enhancements – Part 2: SE Sparse Disks", cormachogan.com, 2012). The
//!   capacity field is 32 bits of sectors, hence the 2 TiB limit.
//! - `SEsparse` (extent kind `SESPARSE`, createType `seSparse`): the
//!   space-efficient sparse format, the default for snapshots on VMFS6 and
//!   for disks larger than 2 TiB on VMFS5 (vSphere Storage guide, "Snapshot
//!   Formats", docs.vmware.com GUID-88E5A594-DEBC-4662-812F-EA421591C70F;
//!   ESXi never mixes the two formats in one chain). A 512-byte
//!   constant header of little-endian 64-bit fields (magic `0xcafebabe`,
//!   version `0x200000001`, capacity, grain size 8 sectors, grain table size
//!   64 sectors, flags, four reserved, then offset/size pairs in sectors for
//!   the volatile header, journal header, journal, grain directory, grain
//!   tables, free bitmap, back map and grains), a 512-byte volatile header
//!   (magic `0xcafecafe`, next free grain table, transaction sequence, a
//!   "replay journal" flag). Grain directory entries are 64-bit: 0 for no
//!   table, else `0x1` in the top nibble and the table's index in the low 32
//!   bits. Grain table entries are 64-bit with the top nibble saying what the
//!   grain is: 0 not in this delta, 1 unmapped and 2 zero (both read as
//!   zeros), 3 allocated, with the grain's index split as bits 48–59 (low 12
//!   bits of the index) and bits 0–47 (the rest).
//!
//! Sources: qemu's `block/vmdk.c` (the VMDK3/COWD header, the seSparse
//! const and volatile headers and the entry encodings, read to learn the
//! layouts) and VMware's "Virtual Disk Format 1.1" specification for the
//! descriptor and extent kinds. qemu reads both formats and is the oracle in
//! this module's tests.
//!
//! The writer half (`create`, `write_at`) is what the lab uses to keep its
//! snapshot deltas in these same formats; it allocates grains at the end of
//! the file, as the host does.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

pub const SECTOR: u64 = 512;

const COWD_MAGIC: &[u8; 4] = b"COWD";
/// Entries per COWD grain table (fixed by the format).
const COWD_GT_ENTRIES: u64 = 4096;
/// The sector where the lab's COWD grain directory starts: after the 2 KiB
/// header ESX writes (the fields above plus parent name, generation and
/// description areas, which coffer does not read).
const COWD_GD_SECTOR: u64 = 4;

const SE_MAGIC: u64 = 0xcafe_babe;
const SE_VOLATILE_MAGIC: u64 = 0xcafe_cafe;
const SE_VERSION: u64 = 0x0000_0002_0000_0001;
const SE_GRAIN_SECTORS: u64 = 8;
const SE_GT_SECTORS: u64 = 64;
const SE_GT_ENTRIES: u64 = SE_GT_SECTORS * SECTOR / 8;
const SE_GD_ALLOCATED: u64 = 0x1000_0000_0000_0000;
const SE_KIND_MASK: u64 = 0xf000_0000_0000_0000;

/// Reads exactly `buf.len()` bytes at `offset` of one file; a short read is
/// an error. The seam between the formats and where the bytes live.
pub trait ReadAt: Send + Sync {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
}

impl ReadAt for File {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(self, buf, offset)
    }
}

impl<T: ReadAt + ?Sized> ReadAt for &T {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        (**self).read_exact_at(buf, offset)
    }
}

impl<T: ReadAt + ?Sized> ReadAt for Box<T> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        (**self).read_exact_at(buf, offset)
    }
}

/// Which delta format a snapshot's redo log is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub enum DeltaFormat {
    /// The "COWD" sparse extent, ESXi's choice on VMFS5 for disks up to 2 TiB.
    #[default]
    VmfsSparse,
    /// Space-efficient sparse: VMFS6, and disks over 2 TiB on VMFS5.
    SeSparse,
}

impl DeltaFormat {
    /// The descriptor's `createType`.
    pub fn create_type(self) -> &'static str {
        match self {
            DeltaFormat::VmfsSparse => "vmfsSparse",
            DeltaFormat::SeSparse => "seSparse",
        }
    }

    /// The extent kind on the descriptor's extent line.
    pub fn extent_kind(self) -> &'static str {
        match self {
            DeltaFormat::VmfsSparse => "VMFSSPARSE",
            DeltaFormat::SeSparse => "SESPARSE",
        }
    }

    pub fn from_extent_kind(kind: &str) -> Option<DeltaFormat> {
        match kind {
            "VMFSSPARSE" => Some(DeltaFormat::VmfsSparse),
            "SESPARSE" => Some(DeltaFormat::SeSparse),
            _ => None,
        }
    }
}

/// Why a delta cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum DeltaError {
    #[error("reading the delta: {0}")]
    Io(#[from] io::Error),
    #[error("not a readable {format} delta: {reason}")]
    Malformed {
        format: &'static str,
        reason: String,
    },
}

fn malformed(format: DeltaFormat, reason: impl Into<String>) -> DeltaError {
    DeltaError::Malformed {
        format: format.create_type(),
        reason: reason.into(),
    }
}

/// What a delta says about one grain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grain {
    /// Not in this delta: read the parent.
    Parent,
    /// Reads as zeros (SEsparse zero or unmapped grain).
    Zero,
    /// Held here, at this byte offset of the delta file.
    Data(u64),
}

/// One opened delta: its header and grain directory, grain tables read on
/// demand and kept.
pub struct Delta<R> {
    file: R,
    format: DeltaFormat,
    capacity_bytes: u64,
    grain_bytes: u64,
    gt_entries: u64,
    /// Byte offset of each grain table in the file; 0 for none.
    pub(super) directory: Vec<u64>,
    /// SEsparse: byte offset of grain 0.
    grains_offset: u64,
    tables: Mutex<HashMap<usize, Arc<Vec<u64>>>>,
}

impl<R> std::fmt::Debug for Delta<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delta")
            .field("format", &self.format)
            .field("capacity_bytes", &self.capacity_bytes)
            .field("grain_bytes", &self.grain_bytes)
            .finish_non_exhaustive()
    }
}

fn u32_at(b: &[u8], at: usize) -> u64 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes")) as u64
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Directory and table sizes are bounded so a corrupt header cannot make
/// coffer allocate gigabytes: 64 TiB at 4 KiB grains, 4096 per table.
const MAX_DIRECTORY_ENTRIES: u64 = 1 << 22;

impl<R: ReadAt> Delta<R> {
    /// Reads the header and grain directory; the format is told by the
    /// file's magic.
    pub fn open(file: R) -> Result<Delta<R>, DeltaError> {
        let mut header = [0u8; SECTOR as usize];
        file.read_exact_at(&mut header, 0)?;
        if &header[..4] == COWD_MAGIC {
            Self::open_cowd(file, &header)
        } else if u64_at(&header, 0) == SE_MAGIC {
            Self::open_sesparse(file, &header)
        } else {
            Err(DeltaError::Malformed {
                format: "delta",
                reason: format!(
                    "unknown magic {:02x?}: neither vmfsSparse (COWD) nor SEsparse",
                    &header[..8]
                ),
            })
        }
    }

    fn open_cowd(file: R, h: &[u8]) -> Result<Delta<R>, DeltaError> {
        let f = DeltaFormat::VmfsSparse;
        let version = u32_at(h, 4);
        let capacity = u32_at(h, 12);
        let grain = u32_at(h, 16);
        let gd_offset = u32_at(h, 20);
        let gd_entries = u32_at(h, 24);
        if version != 1 {
            return Err(malformed(f, format!("version {version}, only 1 is known")));
        }
        if grain == 0 || grain > 0x20_0000 {
            return Err(malformed(f, format!("grain of {grain} sectors")));
        }
        let needed = capacity.div_ceil(COWD_GT_ENTRIES * grain);
        if gd_entries < needed || gd_entries > MAX_DIRECTORY_ENTRIES {
            return Err(malformed(
                f,
                format!("{gd_entries} directory entries for {capacity} sectors"),
            ));
        }
        let mut raw = vec![0u8; gd_entries as usize * 4];
        file.read_exact_at(&mut raw, gd_offset * SECTOR)?;
        let directory = raw.chunks_exact(4).map(|c| u32_at(c, 0) * SECTOR).collect();
        Ok(Delta {
            file,
            format: f,
            capacity_bytes: capacity * SECTOR,
            grain_bytes: grain * SECTOR,
            gt_entries: COWD_GT_ENTRIES,
            directory,
            grains_offset: 0,
            tables: Mutex::new(HashMap::new()),
        })
    }

    fn open_sesparse(file: R, h: &[u8]) -> Result<Delta<R>, DeltaError> {
        let f = DeltaFormat::SeSparse;
        let field = |i: usize| u64_at(h, i * 8);
        let (version, capacity, grain, gt_size, flags) =
            (field(1), field(2), field(3), field(4), field(5));
        if version != SE_VERSION {
            return Err(malformed(f, format!("version {version:#x}")));
        }
        if grain != SE_GRAIN_SECTORS || gt_size != SE_GT_SECTORS {
            return Err(malformed(
                f,
                format!("grain of {grain} sectors and tables of {gt_size} sectors"),
            ));
        }
        if flags != 0 {
            return Err(malformed(f, format!("flags {flags:#x}")));
        }
        let (volatile_offset, gd_offset, gd_sectors, gt_offset, grains_offset) =
            (field(10), field(16), field(17), field(18), field(24));
        let mut volatile = [0u8; SECTOR as usize];
        file.read_exact_at(&mut volatile, volatile_offset * SECTOR)?;
        if u64_at(&volatile, 0) != SE_VOLATILE_MAGIC {
            return Err(malformed(f, "bad volatile header magic"));
        }
        if u64_at(&volatile, 24) != 0 {
            return Err(malformed(
                f,
                "its journal needs replaying (the delta was not closed cleanly)",
            ));
        }
        let gd_entries = gd_sectors * SECTOR / 8;
        let needed = capacity.div_ceil(SE_GT_ENTRIES * grain);
        if gd_entries < needed || gd_entries > MAX_DIRECTORY_ENTRIES {
            return Err(malformed(
                f,
                format!("{gd_entries} directory entries for {capacity} sectors"),
            ));
        }
        let mut raw = vec![0u8; gd_entries as usize * 8];
        file.read_exact_at(&mut raw, gd_offset * SECTOR)?;
        let mut directory = Vec::with_capacity(gd_entries as usize);
        for c in raw.chunks_exact(8) {
            let e = u64_at(c, 0);
            directory.push(match e {
                0 => 0,
                e if e & 0xffff_ffff_0000_0000 == SE_GD_ALLOCATED => {
                    (gt_offset + (e & 0xffff_ffff) * SE_GT_SECTORS) * SECTOR
                }
                e => return Err(malformed(f, format!("grain directory entry {e:#x}"))),
            });
        }
        Ok(Delta {
            file,
            format: f,
            capacity_bytes: capacity * SECTOR,
            grain_bytes: grain * SECTOR,
            gt_entries: SE_GT_ENTRIES,
            directory,
            grains_offset: grains_offset * SECTOR,
            tables: Mutex::new(HashMap::new()),
        })
    }

    pub fn format(&self) -> DeltaFormat {
        self.format
    }

    pub fn capacity_bytes(&self) -> u64 {
        self.capacity_bytes
    }

    pub fn grain_bytes(&self) -> u64 {
        self.grain_bytes
    }

    fn table(&self, index: usize) -> io::Result<Option<Arc<Vec<u64>>>> {
        let at = self.directory[index];
        if at == 0 {
            return Ok(None);
        }
        if let Some(t) = self.tables.lock().expect("table cache").get(&index) {
            return Ok(Some(t.clone()));
        }
        let width = match self.format {
            DeltaFormat::VmfsSparse => 4,
            DeltaFormat::SeSparse => 8,
        };
        let mut raw = vec![0u8; (self.gt_entries * width) as usize];
        self.file.read_exact_at(&mut raw, at)?;
        let table: Vec<u64> = match self.format {
            DeltaFormat::VmfsSparse => raw.chunks_exact(4).map(|c| u32_at(c, 0)).collect(),
            DeltaFormat::SeSparse => raw.chunks_exact(8).map(|c| u64_at(c, 0)).collect(),
        };
        let table = Arc::new(table);
        self.tables
            .lock()
            .expect("table cache")
            .insert(index, table.clone());
        Ok(Some(table))
    }

    /// Where grain `index` (of `grain_bytes` each) is.
    pub fn grain(&self, index: u64) -> io::Result<Grain> {
        let gd = (index / self.gt_entries) as usize;
        if gd >= self.directory.len() {
            return Err(io::Error::other(format!(
                "grain {index} is beyond the delta's grain directory"
            )));
        }
        let Some(table) = self.table(gd)? else {
            return Ok(Grain::Parent);
        };
        let e = table[(index % self.gt_entries) as usize];
        match self.format {
            DeltaFormat::VmfsSparse => Ok(match e {
                0 => Grain::Parent,
                sector => Grain::Data(sector * SECTOR),
            }),
            DeltaFormat::SeSparse => match e & SE_KIND_MASK {
                0 if e == 0 => Ok(Grain::Parent),
                0x1000_0000_0000_0000 | 0x2000_0000_0000_0000 => Ok(Grain::Zero),
                0x3000_0000_0000_0000 => {
                    let n =
                        ((e & 0x0fff_0000_0000_0000) >> 48) | ((e & 0x0000_ffff_ffff_ffff) << 12);
                    Ok(Grain::Data(self.grains_offset + n * self.grain_bytes))
                }
                _ => Err(io::Error::other(format!(
                    "SEsparse grain table entry {e:#x} for grain {index} is not a known kind"
                ))),
            },
        }
    }

    /// Fills `buf` with the disk's bytes at `offset` as this delta shows
    /// them; what it does not hold comes from `parent`. Neighbouring grains
    /// of the same kind are read in one call (one request over HTTP).
    pub fn read_at(
        &self,
        buf: &mut [u8],
        offset: u64,
        parent: &dyn Fn(&mut [u8], u64) -> io::Result<()>,
    ) -> io::Result<()> {
        let end = offset + buf.len() as u64;
        if end > self.capacity_bytes {
            return Err(io::Error::other(format!(
                "read of {offset}..{end} beyond the delta's {} bytes",
                self.capacity_bytes
            )));
        }
        // Runs of (kind, disk start, length).
        let mut runs: Vec<(Grain, u64, u64)> = Vec::new();
        let mut pos = offset;
        while pos < end {
            let index = pos / self.grain_bytes;
            let within = pos % self.grain_bytes;
            let len = (self.grain_bytes - within).min(end - pos);
            let grain = match self.grain(index)? {
                Grain::Data(at) => Grain::Data(at + within),
                other => other,
            };
            match (runs.last_mut(), grain) {
                (Some((Grain::Data(at), _, n)), Grain::Data(next)) if *at + *n == next => *n += len,
                (Some((Grain::Parent, _, n)), Grain::Parent)
                | (Some((Grain::Zero, _, n)), Grain::Zero) => *n += len,
                _ => runs.push((grain, pos, len)),
            }
            pos += len;
        }
        for (grain, start, len) in runs {
            let out = &mut buf[(start - offset) as usize..(start - offset + len) as usize];
            match grain {
                Grain::Data(at) => self.file.read_exact_at(out, at)?,
                Grain::Zero => out.fill(0),
                Grain::Parent => parent(out, start)?,
            }
        }
        Ok(())
    }
}

/// A disk as its top delta shows it: deltas (top first) over a base that
/// reads the base disk's bytes by disk offset.
pub struct Chain<B, R> {
    pub base: B,
    /// Top first.
    pub deltas: Vec<Delta<R>>,
}

impl<B: ReadAt, R: ReadAt> Chain<B, R> {
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.read_level(0, buf, offset)
    }

    fn read_level(&self, level: usize, buf: &mut [u8], offset: u64) -> io::Result<()> {
        match self.deltas.get(level) {
            None => self.base.read_exact_at(buf, offset),
            Some(d) => d.read_at(buf, offset, &|b, o| self.read_level(level + 1, b, o)),
        }
    }
}

/// Layout of an SEsparse file the lab writes, in sectors.
struct SeLayout {
    gd_entries: u64,
    gd_offset: u64,
    gd_sectors: u64,
    gt_offset: u64,
    bitmap_offset: u64,
    bitmap_sectors: u64,
    backmap_offset: u64,
    backmap_sectors: u64,
    grains_offset: u64,
}

fn se_layout(capacity_sectors: u64) -> SeLayout {
    let align = |s: u64| s.div_ceil(2048) * 2048;
    let gd_entries = capacity_sectors
        .div_ceil(SE_GT_ENTRIES * SE_GRAIN_SECTORS)
        .max(1);
    let gd_offset = 4096;
    let gd_sectors = (gd_entries * 8).div_ceil(SECTOR);
    let gt_offset = align(gd_offset + gd_sectors);
    let gt_sectors = gd_entries * SE_GT_SECTORS;
    let grains = capacity_sectors.div_ceil(SE_GRAIN_SECTORS);
    let bitmap_offset = align(gt_offset + gt_sectors);
    let bitmap_sectors = grains.div_ceil(8).div_ceil(SECTOR).max(1);
    let backmap_offset = align(bitmap_offset + bitmap_sectors);
    let backmap_sectors = (grains * 8).div_ceil(SECTOR);
    SeLayout {
        gd_entries,
        gd_offset,
        gd_sectors,
        gt_offset,
        bitmap_offset,
        bitmap_sectors,
        backmap_offset,
        backmap_sectors,
        grains_offset: align(backmap_offset + backmap_sectors),
    }
}

/// Writes an empty delta of `capacity_bytes` (a multiple of 512) in
/// `format` to `file` (which should be empty).
pub fn create(file: &File, format: DeltaFormat, capacity_bytes: u64) -> io::Result<()> {
    let sectors = capacity_bytes / SECTOR;
    match format {
        DeltaFormat::VmfsSparse => {
            let gd_entries = sectors.div_ceil(COWD_GT_ENTRIES).max(1);
            let gd_sectors = (gd_entries * 4).div_ceil(SECTOR);
            let free = COWD_GD_SECTOR + gd_sectors;
            let mut h = vec![0u8; (COWD_GD_SECTOR * SECTOR) as usize];
            h[..4].copy_from_slice(COWD_MAGIC);
            let fields: [u64; 7] = [1, 3, sectors, 1, COWD_GD_SECTOR, gd_entries, free];
            if sectors > u32::MAX as u64 {
                return Err(io::Error::other(
                    "a vmfsSparse delta holds at most 2 TiB; use SEsparse",
                ));
            }
            for (i, v) in fields.iter().enumerate() {
                h[4 + i * 4..8 + i * 4].copy_from_slice(&(*v as u32).to_le_bytes());
            }
            file.write_all_at(&h, 0)?;
            file.set_len(free * SECTOR)?;
        }
        DeltaFormat::SeSparse => {
            let l = se_layout(sectors);
            let grains = sectors.div_ceil(SE_GRAIN_SECTORS);
            let fields: [u64; 26] = [
                SE_MAGIC,
                SE_VERSION,
                sectors,
                SE_GRAIN_SECTORS,
                SE_GT_SECTORS,
                0,
                0,
                0,
                0,
                0,
                1, // volatile header
                1,
                2, // journal header
                2,
                2048, // journal
                2048,
                l.gd_offset,
                l.gd_sectors,
                l.gt_offset,
                l.gd_entries * SE_GT_SECTORS,
                l.bitmap_offset,
                l.bitmap_sectors,
                l.backmap_offset,
                l.backmap_sectors,
                l.grains_offset,
                grains * SE_GRAIN_SECTORS,
            ];
            let mut h = vec![0u8; SECTOR as usize];
            for (i, v) in fields.iter().enumerate() {
                h[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
            }
            file.write_all_at(&h, 0)?;
            let mut v = vec![0u8; SECTOR as usize];
            v[..8].copy_from_slice(&SE_VOLATILE_MAGIC.to_le_bytes());
            // Next free grain table 0, transaction sequence 1, clean.
            v[16..24].copy_from_slice(&1u64.to_le_bytes());
            file.write_all_at(&v, SECTOR)?;
            file.set_len(l.grains_offset * SECTOR)?;
        }
    }
    Ok(())
}

/// Writes whole grains of data at `offset` into the delta in `file`,
/// allocating grains (and grain tables) at the end of the file as the host
/// does. `offset` and `data.len()` must be multiples of the grain size.
pub fn write_at(file: &File, offset: u64, data: &[u8]) -> Result<(), DeltaError> {
    let mut delta = Delta::open(file)?;
    let g = delta.grain_bytes;
    if !offset.is_multiple_of(g) || !(data.len() as u64).is_multiple_of(g) {
        return Err(malformed(
            delta.format,
            format!("writes must be whole {g}-byte grains"),
        ));
    }
    if offset + data.len() as u64 > delta.capacity_bytes {
        return Err(malformed(delta.format, "write beyond the disk's capacity"));
    }
    let first = offset / g;
    let count = data.len() as u64 / g;
    let mut i = 0;
    while i < count {
        let index = first + i;
        let at = (i * g) as usize;
        if let Grain::Data(to) = delta.grain(index)? {
            file.write_all_at(&data[at..at + g as usize], to)?;
            i += 1;
            continue;
        }
        // A run of grains not yet in this delta, within one grain table:
        // their data goes at the end of the file in one write, their table
        // entries in another.
        let gd = (index / delta.gt_entries) as usize;
        let slot = index % delta.gt_entries;
        let mut n = 1;
        while i + n < count
            && slot + n < delta.gt_entries
            && !matches!(delta.grain(index + n)?, Grain::Data(_))
        {
            n += 1;
        }
        let gt_at = match delta.directory[gd] {
            0 => {
                let at = allocate_table(file, &delta, gd)?;
                delta.directory[gd] = at;
                at
            }
            at => at,
        };
        let run = &data[at..at + (n * g) as usize];
        let len = file.metadata()?.len();
        let mut entries = Vec::new();
        match delta.format {
            DeltaFormat::VmfsSparse => {
                let sector = len.div_ceil(SECTOR);
                file.write_all_at(run, sector * SECTOR)?;
                for k in 0..n {
                    let s = (sector + k * g / SECTOR) as u32;
                    entries.extend_from_slice(&s.to_le_bytes());
                }
                file.write_all_at(&entries, gt_at + slot * 4)?;
                let free = (sector * SECTOR + n * g).div_ceil(SECTOR) as u32;
                file.write_all_at(&free.to_le_bytes(), 28)?;
            }
            DeltaFormat::SeSparse => {
                let next = (len.max(delta.grains_offset) - delta.grains_offset).div_ceil(g);
                file.write_all_at(run, delta.grains_offset + next * g)?;
                for k in 0..n {
                    let m = next + k;
                    let e: u64 = 0x3000_0000_0000_0000 | ((m & 0xfff) << 48) | (m >> 12);
                    entries.extend_from_slice(&e.to_le_bytes());
                }
                file.write_all_at(&entries, gt_at + slot * 8)?;
            }
        }
        // The table changed on disk: read it again when next needed.
        delta.tables.lock().expect("table cache").remove(&gd);
        i += n;
    }
    Ok(())
}

/// Adds grain table `gd` to the delta; answers its byte offset.
fn allocate_table(file: &File, delta: &Delta<&File>, gd: usize) -> io::Result<u64> {
    let mut header = [0u8; SECTOR as usize];
    FileExt::read_exact_at(file, &mut header, 0)?;
    match delta.format {
        DeltaFormat::VmfsSparse => {
            let sector = file.metadata()?.len().div_ceil(SECTOR);
            let bytes = COWD_GT_ENTRIES * 4;
            file.write_all_at(&vec![0u8; bytes as usize], sector * SECTOR)?;
            let gd_offset = u32_at(&header, 20) * SECTOR;
            file.write_all_at(&(sector as u32).to_le_bytes(), gd_offset + gd as u64 * 4)?;
            let free = (sector * SECTOR + bytes).div_ceil(SECTOR) as u32;
            file.write_all_at(&free.to_le_bytes(), 28)?;
            Ok(sector * SECTOR)
        }
        DeltaFormat::SeSparse => {
            let volatile_at = u64_at(&header, 80) * SECTOR;
            let mut v = [0u8; 8];
            FileExt::read_exact_at(file, &mut v, volatile_at + 8)?;
            let next = u64::from_le_bytes(v);
            let gt_offset = u64_at(&header, 18 * 8);
            let gd_offset = u64_at(&header, 16 * 8) * SECTOR;
            let at = (gt_offset + next * SE_GT_SECTORS) * SECTOR;
            file.write_all_at(&vec![0u8; (SE_GT_SECTORS * SECTOR) as usize], at)?;
            file.write_all_at(
                &(SE_GD_ALLOCATED | next).to_le_bytes(),
                gd_offset + gd as u64 * 8,
            )?;
            file.write_all_at(&(next + 1).to_le_bytes(), volatile_at + 8)?;
            Ok(at)
        }
    }
}

/// The descriptor of a delta disk whose data is `data_file` (a name in the
/// same directory) over the disk described by `parent` (likewise).
pub fn descriptor(
    format: DeltaFormat,
    capacity_bytes: u64,
    data_file: &str,
    parent: &str,
    cid: u32,
    parent_cid: u32,
) -> String {
    format!(
        "# Disk DescriptorFile\nversion=1\nencoding=\"UTF-8\"\nCID={cid:08x}\nparentCID={parent_cid:08x}\n\
         createType=\"{}\"\nparentFileNameHint=\"{parent}\"\n\n# Extent description\n\
         RW {} {} \"{data_file}\"\n\n# The Disk Data Base\n#DDB\n",
        format.create_type(),
        capacity_bytes / SECTOR,
        format.extent_kind(),
    )
}
