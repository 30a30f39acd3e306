//! The per-disk index of a restore point: which chunk holds each fixed,
//! offset-aligned slice of the disk. Every index is complete (a synthetic
//! full): an incremental starts from its parent's list and replaces only the
//! entries whose chunks changed.
//!
//! ```text
//! 0..4    magic "CFI1"
//! 4..8    format version (u32 LE) = 1
//! 8..16   disk size in bytes (u64 LE)
//! 16..20  chunk size in bytes (u32 LE)
//! 20..28  number of entries (u64 LE) = ceil(disk size / chunk size)
//! 28..60  SHA-256 of the entry list
//! 60..    entries, 32 bytes each (ZERO_DIGEST for an all-zero chunk)
//! ```

use sha2::{Digest, Sha256};

use super::chunk::{ChunkDigest, ZERO_DIGEST};

pub const MAGIC: &[u8; 4] = b"CFI1";
pub const VERSION: u32 = 1;
const HEADER: usize = 60;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskIndex {
    pub disk_size_bytes: u64,
    pub chunk_size_bytes: u32,
    pub chunks: Vec<ChunkDigest>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IndexError {
    #[error("not an index (bad magic)")]
    BadMagic,
    #[error("index format version {0} is newer than this coffer understands (1); upgrade coffer")]
    NewerVersion(u32),
    #[error("index is truncated or has trailing bytes")]
    BadLength,
    #[error("index entry list does not match its digest: the index is damaged")]
    BadDigest,
    #[error("index header is inconsistent (size, chunk size and entry count disagree)")]
    Inconsistent,
}

impl DiskIndex {
    /// An index of a disk that holds only zeros.
    pub fn zeroed(disk_size_bytes: u64, chunk_size_bytes: u32) -> Self {
        DiskIndex {
            disk_size_bytes,
            chunk_size_bytes,
            chunks: vec![ZERO_DIGEST; chunk_count(disk_size_bytes, chunk_size_bytes) as usize],
        }
    }

    /// Byte range of entry `i` on the disk.
    pub fn range(&self, i: usize) -> std::ops::Range<u64> {
        let start = i as u64 * self.chunk_size_bytes as u64;
        start..(start + self.chunk_size_bytes as u64).min(self.disk_size_bytes)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + 32 * self.chunks.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&self.disk_size_bytes.to_le_bytes());
        out.extend_from_slice(&self.chunk_size_bytes.to_le_bytes());
        out.extend_from_slice(&(self.chunks.len() as u64).to_le_bytes());
        out.extend_from_slice(&list_digest(&self.chunks));
        for c in &self.chunks {
            out.extend_from_slice(&c.0);
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, IndexError> {
        if bytes.len() < HEADER {
            return Err(IndexError::BadLength);
        }
        if &bytes[0..4] != MAGIC {
            return Err(IndexError::BadMagic);
        }
        let u32_at = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().expect("4 bytes"));
        let u64_at = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
        let version = u32_at(4);
        if version > VERSION {
            return Err(IndexError::NewerVersion(version));
        }
        let disk_size_bytes = u64_at(8);
        let chunk_size_bytes = u32_at(16);
        let count = u64_at(20);
        if chunk_size_bytes == 0 || count != chunk_count(disk_size_bytes, chunk_size_bytes) {
            return Err(IndexError::Inconsistent);
        }
        if (bytes.len() - HEADER) as u64 != count * 32 {
            return Err(IndexError::BadLength);
        }
        let chunks: Vec<ChunkDigest> = bytes[HEADER..]
            .chunks_exact(32)
            .map(|c| ChunkDigest(c.try_into().expect("32 bytes")))
            .collect();
        if list_digest(&chunks) != bytes[28..60] {
            return Err(IndexError::BadDigest);
        }
        Ok(DiskIndex {
            disk_size_bytes,
            chunk_size_bytes,
            chunks,
        })
    }
}

pub fn chunk_count(disk_size_bytes: u64, chunk_size_bytes: u32) -> u64 {
    disk_size_bytes.div_ceil(chunk_size_bytes as u64)
}

fn list_digest(chunks: &[ChunkDigest]) -> [u8; 32] {
    let mut h = Sha256::new();
    for c in chunks {
        h.update(c.0);
    }
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let mut idx = DiskIndex::zeroed(10 * 1024 * 1024 + 5, 1 << 20);
        assert_eq!(idx.chunks.len(), 11);
        assert_eq!(idx.range(10), 10 * 1024 * 1024..10 * 1024 * 1024 + 5);
        idx.chunks[3] = ChunkDigest([7; 32]);
        let bytes = idx.encode();
        assert_eq!(DiskIndex::decode(&bytes).unwrap(), idx);
        let mut bad = bytes.clone();
        bad[HEADER + 5] ^= 1;
        assert_eq!(DiskIndex::decode(&bad), Err(IndexError::BadDigest));
        let mut newer = bytes.clone();
        newer[4] = 2;
        assert_eq!(DiskIndex::decode(&newer), Err(IndexError::NewerVersion(2)));
        assert_eq!(
            DiskIndex::decode(&bytes[..bytes.len() - 1]),
            Err(IndexError::BadLength)
        );
    }
}
