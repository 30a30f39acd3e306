//! Writing a point's disk as a streamOptimized VMDK: the one-file, compressed,
//! append-only form of VMware's sparse extent that OVA packages carry and
//! every hypervisor tool imports. The file is written front to back and
//! never sought, so it can go to a pipe or into an archive:
//!
//! ```text
//! sector 0          header: magic KDMV, version 3, flags (newline check,
//!                   compressed grains, markers), capacity, grainSize 128,
//!                   gdOffset = GD_AT_END (the directory comes last)
//! sector 1..        embedded descriptor, createType="streamOptimized"
//! overHead          first grain marker (overHead = 128: one grain of metadata)
//! per data grain    marker: LBA (u64, sectors), size (u32) + zlib stream,
//!                   padded to a sector
//! per 512 grains    GT marker (numSectors 4, type 1) + the grain table: the
//!                   sector of each grain's marker, 0 for an absent grain
//! at the end        GD marker (type 2) + the grain directory (sector of each
//!                   grain table, 0 for a table with no grain), footer
//!                   marker (type 3) + the header again with gdOffset set,
//!                   end-of-stream marker (a zero sector)
//! ```
//!
//! Zero chunks of the index are known without reading and all-zero grains
//! of data chunks are dropped: both read back as zeros. Chunks are read and
//! compressed by parallel workers a window at a time and written in order,
//! so memory is bounded by the window (threads × 2 chunks) plus one grain
//! table and the directory (4 bytes per 32 MiB of disk).

use std::io::Write;
use std::sync::Mutex;

use flate2::{Compress, Compression, FlushCompress, Status};

use super::chunk::{self, Codec, ZERO_DIGEST};
use super::index::DiskIndex;
use super::parallel;
use super::{RepoError, Repository};

pub const SECTOR_BYTES: u64 = 512;
/// Grain size of every extent coffer writes: 128 sectors, 64 KiB.
pub const GRAIN_SECTORS: u64 = 128;
pub const GRAIN_BYTES: u64 = GRAIN_SECTORS * SECTOR_BYTES;
/// Grain table entries per table (each table covers 32 MiB).
pub const GTES_PER_GT: u64 = 512;
/// Header flags: valid newline test (bit 0), compressed grains (bit 16),
/// markers (bit 17).
pub const FLAGS: u32 = 1 | (1 << 16) | (1 << 17);
/// gdOffset of the leading header: the directory is found via the footer.
pub const GD_AT_END: u64 = u64::MAX;
pub const COMPRESS_DEFLATE: u16 = 1;
pub const MAGIC: &[u8; 4] = b"KDMV";

const MARKER_EOS: u32 = 0;
const MARKER_GT: u32 = 1;
const MARKER_GD: u32 = 2;
const MARKER_FOOTER: u32 = 3;

/// What an export of one disk wrote.
#[derive(Debug, Clone, Default)]
pub struct StreamStats {
    /// Bytes of the VMDK file.
    pub bytes_written: u64,
    /// Data grains written (the rest of the disk reads as zeros).
    pub grains_written: u64,
    pub chunks_read: u64,
}

/// The 512-byte sparse extent header (the footer is the same with
/// `gd_offset` set to the directory's sector).
pub fn header(
    capacity_sectors: u64,
    descriptor_sectors: u64,
    overhead_sectors: u64,
    gd_offset: u64,
) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[0..4].copy_from_slice(MAGIC);
    h[4..8].copy_from_slice(&3u32.to_le_bytes());
    h[8..12].copy_from_slice(&FLAGS.to_le_bytes());
    h[12..20].copy_from_slice(&capacity_sectors.to_le_bytes());
    h[20..28].copy_from_slice(&GRAIN_SECTORS.to_le_bytes());
    h[28..36].copy_from_slice(&1u64.to_le_bytes()); // descriptorOffset
    h[36..44].copy_from_slice(&descriptor_sectors.to_le_bytes());
    h[44..48].copy_from_slice(&(GTES_PER_GT as u32).to_le_bytes());
    h[48..56].copy_from_slice(&0u64.to_le_bytes()); // rgdOffset: none
    h[56..64].copy_from_slice(&gd_offset.to_le_bytes());
    h[64..72].copy_from_slice(&overhead_sectors.to_le_bytes());
    h[72] = 0; // uncleanShutdown
    // The newline test characters: a transfer that rewrites line ends
    // damages these four bytes and readers notice.
    h[73..77].copy_from_slice(b"\n \r\n");
    h[77..79].copy_from_slice(&COMPRESS_DEFLATE.to_le_bytes());
    h
}

/// The descriptor embedded in a streamOptimized extent of `capacity_sectors`.
pub fn descriptor(capacity_sectors: u64, extent_name: &str, cid: u32) -> String {
    // The geometry ESXi writes for SCSI disks: 255 heads, 63 sectors.
    let cylinders = (capacity_sectors / (255 * 63)).clamp(1, 65535);
    format!(
        "# Disk DescriptorFile\n\
         version=1\n\
         encoding=\"UTF-8\"\n\
         CID={cid:08x}\n\
         parentCID=ffffffff\n\
         createType=\"streamOptimized\"\n\
         \n\
         # Extent description\n\
         RW {capacity_sectors} SPARSE \"{extent_name}\"\n\
         \n\
         # The Disk Data Base\n\
         #DDB\n\
         \n\
         ddb.adapterType = \"lsilogic\"\n\
         ddb.geometry.cylinders = \"{cylinders}\"\n\
         ddb.geometry.heads = \"255\"\n\
         ddb.geometry.sectors = \"63\"\n\
         ddb.virtualHWVersion = \"14\"\n"
    )
}

/// A marker for metadata: numSectors, size 0, type, padded to a sector.
fn metadata_marker(num_sectors: u64, kind: u32) -> [u8; 512] {
    let mut m = [0u8; 512];
    m[0..8].copy_from_slice(&num_sectors.to_le_bytes());
    m[12..16].copy_from_slice(&kind.to_le_bytes());
    m
}

/// Counts what goes out so offsets are known without seeking.
struct SectorWriter<W: Write> {
    inner: W,
    bytes: u64,
}

impl<W: Write> SectorWriter<W> {
    fn write(&mut self, b: &[u8]) -> Result<(), RepoError> {
        self.inner
            .write_all(b)
            .map_err(|e| RepoError::Invalid(format!("writing the VMDK: {e}")))?;
        self.bytes += b.len() as u64;
        Ok(())
    }

    fn pad_to_sector(&mut self) -> Result<(), RepoError> {
        let rem = self.bytes % SECTOR_BYTES;
        if rem != 0 {
            self.write(&[0u8; 512][..(SECTOR_BYTES - rem) as usize])?;
        }
        Ok(())
    }

    /// The current sector, as a grain table or directory entry holds it.
    fn sector_u32(&self) -> Result<u32, RepoError> {
        u32::try_from(self.bytes / SECTOR_BYTES).map_err(|_| {
            RepoError::Invalid(
                "the VMDK outgrew 2 TiB of compressed data, the most a sparse extent addresses"
                    .into(),
            )
        })
    }

    /// Writes `entries` as little-endian u32 padded to whole sectors.
    fn write_table(&mut self, entries: &[u32]) -> Result<(), RepoError> {
        let bytes: Vec<u8> = entries.iter().flat_map(|e| e.to_le_bytes()).collect();
        self.write(&bytes)?;
        self.pad_to_sector()
    }
}

/// One compressed grain, ready to write.
struct Grain {
    lba: u64,
    data: Vec<u8>,
}

/// zlib-compresses `plain` with a reused deflate state.
fn compress_grain(c: &mut Compress, plain: &[u8]) -> Result<Vec<u8>, RepoError> {
    c.reset();
    let mut out = Vec::with_capacity(plain.len() / 2 + 1024);
    loop {
        // Each call goes on from where the last one stopped.
        let consumed = c.total_in() as usize;
        let status = c
            .compress_vec(&plain[consumed..], &mut out, FlushCompress::Finish)
            .map_err(|e| RepoError::Invalid(format!("compressing a grain: {e}")))?;
        if status == Status::StreamEnd {
            return Ok(out);
        }
        // Incompressible data grows a little: give it more room.
        out.reserve(out.capacity().max(4096));
    }
}

/// Reads chunk `i`, cuts it into grains and compresses the ones with data.
fn chunk_grains(
    repo: &Repository,
    index: &DiskIndex,
    i: usize,
    codec: &mut Codec,
    deflate: &mut Compress,
) -> Result<Vec<Grain>, RepoError> {
    let range = index.range(i);
    let plain = repo.read_chunk(codec, &index.chunks[i])?;
    if plain.len() as u64 != range.end - range.start {
        return Err(RepoError::Invalid(format!(
            "chunk {} has the wrong length for its place",
            index.chunks[i].to_hex()
        )));
    }
    let mut grains = Vec::new();
    let mut full = vec![0u8; GRAIN_BYTES as usize];
    for (g, part) in plain.chunks(GRAIN_BYTES as usize).enumerate() {
        if chunk::is_zero(part) {
            continue;
        }
        // Every grain decompresses to a whole grain, the disk's last one too
        // (readers check the length): a short tail is padded with zeros.
        let whole = if part.len() as u64 == GRAIN_BYTES {
            part
        } else {
            full[..part.len()].copy_from_slice(part);
            full[part.len()..].fill(0);
            &full[..]
        };
        grains.push(Grain {
            lba: (range.start + g as u64 * GRAIN_BYTES) / SECTOR_BYTES,
            data: compress_grain(deflate, whole)?,
        });
    }
    Ok(grains)
}

/// Writes the disk of `index` to `out` as a streamOptimized VMDK whose
/// descriptor names `extent_name`, reading chunks with `threads` workers.
pub fn write_stream_optimized<W: Write>(
    repo: &Repository,
    index: &DiskIndex,
    out: W,
    extent_name: &str,
    threads: usize,
) -> Result<StreamStats, RepoError> {
    if !(index.chunk_size_bytes as u64).is_multiple_of(GRAIN_BYTES) {
        return Err(RepoError::Invalid(format!(
            "chunk size {} is not a multiple of the 64 KiB VMDK grain",
            index.chunk_size_bytes
        )));
    }
    let capacity_sectors = index.disk_size_bytes.div_ceil(SECTOR_BYTES);
    let grain_count = capacity_sectors.div_ceil(GRAIN_SECTORS);
    let gt_count = grain_count.div_ceil(GTES_PER_GT) as usize;
    let mut cid = [0u8; 4];
    getrandom::fill(&mut cid).expect("the OS random source works");
    let desc = descriptor(capacity_sectors, extent_name, u32::from_le_bytes(cid));
    // At least one NUL after the text: readers take it as the end.
    let descriptor_sectors = (desc.len() as u64 + 1).div_ceil(SECTOR_BYTES);
    let overhead = (1 + descriptor_sectors).div_ceil(GRAIN_SECTORS) * GRAIN_SECTORS;

    let mut w = SectorWriter {
        inner: out,
        bytes: 0,
    };
    w.write(&header(
        capacity_sectors,
        descriptor_sectors,
        overhead,
        GD_AT_END,
    ))?;
    w.write(desc.as_bytes())?;
    let zeros = vec![0u8; ((overhead * SECTOR_BYTES) - w.bytes) as usize];
    w.write(&zeros)?;

    let mut stats = StreamStats::default();
    let mut directory = vec![0u32; gt_count];
    let mut table: Option<(usize, Vec<u32>)> = None;
    let flush_table = |w: &mut SectorWriter<W>,
                       directory: &mut Vec<u32>,
                       table: Option<(usize, Vec<u32>)>|
     -> Result<(), RepoError> {
        if let Some((gt, entries)) = table {
            let sectors = (GTES_PER_GT * 4).div_ceil(SECTOR_BYTES);
            w.write(&metadata_marker(sectors, MARKER_GT))?;
            directory[gt] = w.sector_u32()?;
            w.write_table(&entries)?;
        }
        Ok(())
    };

    let work: Vec<usize> = (0..index.chunks.len())
        .filter(|i| index.chunks[*i] != ZERO_DIGEST)
        .collect();
    let window = threads.max(1) * 2;
    for batch in work.chunks(window) {
        let slots: Vec<Mutex<Option<Vec<Grain>>>> =
            batch.iter().map(|_| Mutex::new(None)).collect();
        let items: Vec<usize> = (0..batch.len()).collect();
        parallel::for_each(
            &items,
            threads,
            || (Codec::new(1), Compress::new(Compression::default(), true)),
            |(codec, deflate), &k| -> Result<(), RepoError> {
                let grains = chunk_grains(repo, index, batch[k], codec, deflate)?;
                *slots[k].lock().expect("no worker panicked") = Some(grains);
                Ok(())
            },
        )?;
        stats.chunks_read += batch.len() as u64;
        for slot in slots {
            let grains = slot
                .into_inner()
                .expect("no worker panicked")
                .expect("every item of a finished batch has its grains");
            for g in grains {
                let grain_index = g.lba / GRAIN_SECTORS;
                let gt = (grain_index / GTES_PER_GT) as usize;
                if table.as_ref().is_none_or(|(cur, _)| *cur != gt) {
                    flush_table(&mut w, &mut directory, table.take())?;
                    table = Some((gt, vec![0u32; GTES_PER_GT as usize]));
                }
                let sector = w.sector_u32()?;
                let (_, entries) = table.as_mut().expect("set above");
                entries[(grain_index % GTES_PER_GT) as usize] = sector;
                let size = u32::try_from(g.data.len()).expect("a grain compresses to under 4 GiB");
                let mut marker = [0u8; 12];
                marker[0..8].copy_from_slice(&g.lba.to_le_bytes());
                marker[8..12].copy_from_slice(&size.to_le_bytes());
                w.write(&marker)?;
                w.write(&g.data)?;
                w.pad_to_sector()?;
                stats.grains_written += 1;
            }
        }
    }
    flush_table(&mut w, &mut directory, table.take())?;

    let gd_sectors = (gt_count as u64 * 4).div_ceil(SECTOR_BYTES);
    w.write(&metadata_marker(gd_sectors, MARKER_GD))?;
    let gd_offset = w.bytes / SECTOR_BYTES;
    w.write_table(&directory)?;
    w.write(&metadata_marker(1, MARKER_FOOTER))?;
    w.write(&header(
        capacity_sectors,
        descriptor_sectors,
        overhead,
        gd_offset,
    ))?;
    w.write(&metadata_marker(0, MARKER_EOS))?;
    w.inner
        .flush()
        .map_err(|e| RepoError::Invalid(format!("writing the VMDK: {e}")))?;
    stats.bytes_written = w.bytes;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_has_the_fields_at_their_offsets() {
        let h = header(98304, 2, 128, GD_AT_END);
        assert_eq!(&h[0..4], b"KDMV");
        assert_eq!(u32::from_le_bytes(h[4..8].try_into().unwrap()), 3);
        assert_eq!(u32::from_le_bytes(h[8..12].try_into().unwrap()), 0x30001);
        assert_eq!(u64::from_le_bytes(h[12..20].try_into().unwrap()), 98304);
        assert_eq!(u64::from_le_bytes(h[20..28].try_into().unwrap()), 128);
        assert_eq!(u64::from_le_bytes(h[56..64].try_into().unwrap()), u64::MAX);
        assert_eq!(u64::from_le_bytes(h[64..72].try_into().unwrap()), 128);
        assert_eq!(&h[73..77], b"\n \r\n");
        assert_eq!(u16::from_le_bytes(h[77..79].try_into().unwrap()), 1);
        assert!(h[79..].iter().all(|b| *b == 0));
    }

    #[test]
    fn a_grain_compresses_to_a_zlib_stream_that_inflates_back() {
        let mut c = Compress::new(Compression::default(), true);
        let mut plain = vec![0u8; GRAIN_BYTES as usize];
        let mut x: u32 = 7;
        for b in plain.iter_mut() {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            *b = (x >> 16) as u8;
        }
        for _ in 0..2 {
            let z = compress_grain(&mut c, &plain).unwrap();
            assert_eq!(z[0] & 0x0f, 8, "zlib header: deflate");
            let mut back = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::ZlibDecoder::new(&z[..]), &mut back)
                .unwrap();
            assert_eq!(back, plain);
        }
    }
}
