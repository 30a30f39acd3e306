//! Reading a streamOptimized VMDK as it arrives, the way a host's NFC
//! server takes a disk upload: front to back, never buffered whole, every
//! grain inflated and handed on at its disk offset. The format is the one
//! `repo::stream_vmdk` writes (its module doc has the layout): a sparse
//! extent header (magic `KDMV`, version 3, flags with compressed grains
//! and markers, capacity, grain size, `overHead` sectors of metadata up
//! front), then markers, each padded to a sector: a grain marker (LBA in
//! sectors, the compressed size, a zlib stream), or a metadata marker (a
//! sector count, size 0, a type: 0 end of stream, 1 grain table, 2 grain
//! directory, 3 footer) followed by that many sectors (VMware "Virtual
//! Disk Format 5.0", "Stream-Optimized Compressed Sparse Extents").
//!
//! A stream is refused unless its header matches the disk it is written
//! into and every grain lies inside the disk on a grain boundary; a body
//! that ends before the end-of-stream marker is refused too, so a cut
//! upload never passes for a whole one. The grain tables and directory
//! are skipped: a stream carries every grain's LBA in its marker.

use std::io::{self, Read};

use flate2::{Decompress, FlushDecompress, Status};

const SECTOR: u64 = 512;
const MAGIC: &[u8; 4] = b"KDMV";
const FLAG_NEWLINE_TEST: u32 = 1;
const FLAG_COMPRESSED: u32 = 1 << 16;
const FLAG_MARKERS: u32 = 1 << 17;
const COMPRESS_DEFLATE: u16 = 1;
/// The most sectors of metadata one marker may announce: a grain
/// directory of a 64 TiB disk (2^21 tables of 512 grains of 64 KiB) is
/// 16 384 sectors.
const MAX_METADATA_SECTORS: u64 = 1 << 16;

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("not a sparse VMDK (magic {0:02x?}, not KDMV)")]
    BadMagic([u8; 4]),
    #[error("sparse extent version {0}; a streamOptimized extent is version 3")]
    Version(u32),
    #[error("the header's flags {0:#x} lack compressed grains and markers: not streamOptimized")]
    NotStreamOptimized(u32),
    #[error("the header's newline test bytes are damaged (a text-mode transfer?)")]
    NewlineTest,
    #[error("compression algorithm {0}; only deflate (1) is defined")]
    Compression(u16),
    #[error("the stream's disk is {stream} sectors, the target disk {disk} sectors")]
    Capacity { stream: u64, disk: u64 },
    #[error("grain size {0} sectors is not a power of two from 8 to 2048")]
    GrainSize(u64),
    #[error("overHead {0} sectors leaves no room for the header")]
    Overhead(u64),
    #[error("a grain at sector {lba} is not on a grain boundary of {grain} sectors")]
    Misaligned { lba: u64, grain: u64 },
    #[error("a grain at sector {lba} lies beyond the disk's {sectors} sectors")]
    OutsideDisk { lba: u64, sectors: u64 },
    #[error("a grain at sector {lba} claims {size} compressed bytes, more than a grain can take")]
    GrainTooLarge { lba: u64, size: u64 },
    #[error("the grain at sector {lba} does not inflate: {why}")]
    Inflate { lba: u64, why: String },
    #[error("a metadata marker of type {0} is not one of the format's")]
    UnknownMarker(u32),
    #[error("a metadata marker announces {0} sectors")]
    MetadataTooLarge(u64),
    #[error("the footer is not a sparse extent header")]
    BadFooter,
    #[error("the stream ended before its end-of-stream marker")]
    Truncated,
    #[error("reading the stream: {0}")]
    Read(io::Error),
    #[error("writing the disk: {0}")]
    Write(io::Error),
}

/// What a whole stream held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamSummary {
    pub grains: u64,
    /// Grains that inflated to zeros only.
    pub zero_grains: u64,
}

/// A grain as it inflated: its disk offset and bytes (the disk's last
/// grain cut at the disk's end).
pub trait GrainSink {
    /// `zero` when the grain holds only zeros (its bytes are still given).
    fn grain(&mut self, offset_bytes: u64, data: &[u8], zero: bool) -> io::Result<()>;
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Reads exactly `buf.len()` bytes; the stream's end is `Truncated`.
fn read_exact(r: &mut impl Read, buf: &mut [u8]) -> Result<(), StreamError> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => StreamError::Truncated,
        _ => StreamError::Read(e),
    })
}

/// Skips `n` bytes.
fn skip(r: &mut impl Read, n: u64) -> Result<(), StreamError> {
    let skipped = io::copy(&mut r.take(n), &mut io::sink()).map_err(StreamError::Read)?;
    if skipped < n {
        return Err(StreamError::Truncated);
    }
    Ok(())
}

/// The header's grain size and overhead, after checking it describes a
/// streamOptimized extent of `capacity_bytes`.
fn check_header(h: &[u8; 512], capacity_bytes: u64) -> Result<(u64, u64), StreamError> {
    let magic: [u8; 4] = h[0..4].try_into().expect("4 bytes");
    if &magic != MAGIC {
        return Err(StreamError::BadMagic(magic));
    }
    let version = le_u32(h, 4);
    if version != 3 {
        return Err(StreamError::Version(version));
    }
    let flags = le_u32(h, 8);
    if flags & (FLAG_COMPRESSED | FLAG_MARKERS) != FLAG_COMPRESSED | FLAG_MARKERS {
        return Err(StreamError::NotStreamOptimized(flags));
    }
    if flags & FLAG_NEWLINE_TEST != 0 && &h[73..77] != b"\n \r\n" {
        return Err(StreamError::NewlineTest);
    }
    let compression = u16::from_le_bytes([h[77], h[78]]);
    if compression != COMPRESS_DEFLATE {
        return Err(StreamError::Compression(compression));
    }
    let capacity = le_u64(h, 12);
    if capacity * SECTOR != capacity_bytes {
        return Err(StreamError::Capacity {
            stream: capacity,
            disk: capacity_bytes / SECTOR,
        });
    }
    let grain = le_u64(h, 20);
    if !grain.is_power_of_two() || !(8..=2048).contains(&grain) {
        return Err(StreamError::GrainSize(grain));
    }
    let overhead = le_u64(h, 64);
    if overhead == 0 || overhead > MAX_METADATA_SECTORS {
        return Err(StreamError::Overhead(overhead));
    }
    Ok((grain, overhead))
}

/// Decodes the stream `r` for a disk of `capacity_bytes`, handing every
/// grain to `sink`. Reads up to the end-of-stream marker and no further.
pub fn decode(
    r: &mut impl Read,
    capacity_bytes: u64,
    sink: &mut impl GrainSink,
) -> Result<StreamSummary, StreamError> {
    let mut header = [0u8; 512];
    read_exact(r, &mut header)?;
    let (grain_sectors, overhead) = check_header(&header, capacity_bytes)?;
    skip(r, (overhead - 1) * SECTOR)?;
    let sectors = capacity_bytes / SECTOR;
    let grain_bytes = grain_sectors * SECTOR;
    // zlib's worst case for incompressible data is a few bytes per 16 KiB
    // block; twice the grain is more than any honest grain needs.
    let max_compressed = 2 * grain_bytes + 1024;
    let mut summary = StreamSummary::default();
    let mut inflater = Decompress::new(true);
    let mut compressed = Vec::new();
    // One byte more than a grain: a grain that inflates to more shows.
    let mut plain = vec![0u8; grain_bytes as usize + 1];
    loop {
        let mut marker = [0u8; 12];
        read_exact(r, &mut marker)?;
        let value = le_u64(&marker, 0);
        let size = u64::from(le_u32(&marker, 8));
        if size == 0 {
            let mut rest = [0u8; 500];
            read_exact(r, &mut rest)?;
            let kind = le_u32(&rest, 0);
            if value > MAX_METADATA_SECTORS {
                return Err(StreamError::MetadataTooLarge(value));
            }
            match kind {
                0 => return Ok(summary),
                1 | 2 => skip(r, value * SECTOR)?,
                3 => {
                    let mut footer = [0u8; 512];
                    read_exact(r, &mut footer)?;
                    if &footer[0..4] != MAGIC {
                        return Err(StreamError::BadFooter);
                    }
                    skip(r, value.saturating_sub(1) * SECTOR)?;
                }
                other => return Err(StreamError::UnknownMarker(other)),
            }
            continue;
        }
        let lba = value;
        if !lba.is_multiple_of(grain_sectors) {
            return Err(StreamError::Misaligned {
                lba,
                grain: grain_sectors,
            });
        }
        if lba >= sectors {
            return Err(StreamError::OutsideDisk { lba, sectors });
        }
        if size > max_compressed {
            return Err(StreamError::GrainTooLarge { lba, size });
        }
        compressed.resize(size as usize, 0);
        read_exact(r, &mut compressed)?;
        skip(r, (12 + size).next_multiple_of(SECTOR) - 12 - size)?;
        inflater.reset(true);
        let status = inflater
            .decompress(&compressed, &mut plain, FlushDecompress::Finish)
            .map_err(|e| StreamError::Inflate {
                lba,
                why: e.to_string(),
            })?;
        let inflated = inflater.total_out() as usize;
        if status != Status::StreamEnd || inflated as u64 > grain_bytes {
            return Err(StreamError::Inflate {
                lba,
                why: "it inflates to more than a grain, or its zlib stream is cut".into(),
            });
        }
        let offset = lba * SECTOR;
        let len = (inflated as u64).min(capacity_bytes - offset) as usize;
        let data = &plain[..len];
        let zero = data.iter().all(|b| *b == 0);
        summary.grains += 1;
        if zero {
            summary.zero_grains += 1;
        }
        sink.grain(offset, data, zero).map_err(StreamError::Write)?;
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::repo::stream_vmdk::{GD_AT_END, GRAIN_BYTES, descriptor, header};
    use flate2::Compression;
    use flate2::write::ZlibEncoder;
    use std::io::Write;

    fn metadata(sectors: u64, kind: u32) -> Vec<u8> {
        let mut m = vec![0u8; 512];
        m[0..8].copy_from_slice(&sectors.to_le_bytes());
        m[12..16].copy_from_slice(&kind.to_le_bytes());
        m
    }

    fn pad(out: &mut Vec<u8>) {
        out.resize(out.len().next_multiple_of(512), 0);
    }

    /// A streamOptimized VMDK of `disk` as coffer's writer lays it out
    /// (header, descriptor, grains, a grain table, the directory, the
    /// footer, end of stream), every 64 KiB grain in it, zero grains too
    /// when `with_zero_grains`.
    pub(in crate::lab) fn stream_of(disk: &[u8], with_zero_grains: bool) -> Vec<u8> {
        let sectors = disk.len() as u64 / 512;
        let desc = descriptor(sectors, "disk.vmdk", 7);
        let desc_sectors = (desc.len() as u64 + 1).div_ceil(512);
        let overhead = (1 + desc_sectors).div_ceil(128) * 128;
        let mut out = header(sectors, desc_sectors, overhead, GD_AT_END).to_vec();
        out.extend_from_slice(desc.as_bytes());
        out.resize((overhead * 512) as usize, 0);
        for (i, g) in disk.chunks(GRAIN_BYTES as usize).enumerate() {
            if !with_zero_grains && g.iter().all(|b| *b == 0) {
                continue;
            }
            let mut z = ZlibEncoder::new(Vec::new(), Compression::fast());
            z.write_all(g).unwrap();
            let data = z.finish().unwrap();
            out.extend_from_slice(&(i as u64 * 128).to_le_bytes());
            out.extend_from_slice(&(data.len() as u32).to_le_bytes());
            out.extend_from_slice(&data);
            pad(&mut out);
        }
        out.extend(metadata(4, 1));
        out.extend(vec![0u8; 4 * 512]);
        out.extend(metadata(1, 2));
        out.extend(vec![0u8; 512]);
        out.extend(metadata(1, 3));
        out.extend(header(sectors, desc_sectors, overhead, 42));
        out.extend(metadata(0, 0));
        out
    }

    /// A disk of `mib` MiB with a few grains of data.
    pub(in crate::lab) fn sample_disk(mib: usize) -> Vec<u8> {
        let mut d = vec![0u8; mib << 20];
        for (i, at) in [0usize, 3 << 16, (mib << 20) - 100].into_iter().enumerate() {
            for (j, b) in d[at..(at + 100).min(mib << 20)].iter_mut().enumerate() {
                *b = (i * 31 + j) as u8 | 1;
            }
        }
        d
    }

    struct Memory(Vec<u8>);

    impl GrainSink for Memory {
        fn grain(&mut self, at: u64, data: &[u8], _zero: bool) -> io::Result<()> {
            self.0[at as usize..at as usize + data.len()].copy_from_slice(data);
            Ok(())
        }
    }

    #[test]
    fn a_stream_decodes_to_its_disk() {
        let disk = sample_disk(1);
        let mut out = Memory(vec![0; disk.len()]);
        let s = decode(
            &mut &stream_of(&disk, true)[..],
            disk.len() as u64,
            &mut out,
        )
        .unwrap();
        assert_eq!(out.0, disk);
        assert_eq!((s.grains, s.zero_grains), (16, 13));
        let s = decode(
            &mut &stream_of(&disk, false)[..],
            disk.len() as u64,
            &mut out,
        )
        .unwrap();
        assert_eq!((s.grains, s.zero_grains), (3, 0));
    }

    #[test]
    fn a_cut_or_foreign_stream_is_refused() {
        let disk = sample_disk(1);
        let whole = stream_of(&disk, false);
        let mut out = Memory(vec![0; disk.len()]);
        let cut = &whole[..whole.len() - 512];
        assert!(matches!(
            decode(&mut &cut[..], disk.len() as u64, &mut out),
            Err(StreamError::Truncated)
        ));
        assert!(matches!(
            decode(&mut &whole[..], 2 << 20, &mut out),
            Err(StreamError::Capacity { .. })
        ));
        let mut bad = whole.clone();
        bad[0] = b'X';
        assert!(matches!(
            decode(&mut &bad[..], disk.len() as u64, &mut out),
            Err(StreamError::BadMagic(_))
        ));
        // The first grain marker moved off a grain boundary.
        let mut bad = whole;
        let first = 128 * 512;
        bad[first..first + 8].copy_from_slice(&5u64.to_le_bytes());
        assert!(matches!(
            decode(&mut &bad[..], disk.len() as u64, &mut out),
            Err(StreamError::Misaligned { lba: 5, .. })
        ));
    }
}
