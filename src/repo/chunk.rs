//! Chunks: the unit of deduplication. A chunk is identified by the SHA-256 of
//! its plaintext (an HMAC-SHA-256 under the tier's id key when the tier is
//! encrypted, so equal data under two keys never collides and ids leak
//! nothing), and stored as a blob:
//!
//! ```text
//! 0..4   magic "CFC1"
//! 4      flags: bit 0 = zstd payload, bit 1 = encrypted
//! 5..8   reserved, zero
//! 8..12  CRC32 (little endian) of bytes 12..
//! 12..   [24-byte nonce, 16-byte tag when encrypted] payload
//! ```
//!
//! The CRC finds a flipped bit without the key; the digest (and the AEAD tag)
//! prove the content. An all-zero chunk is never stored: `ZERO_DIGEST` stands
//! for it in every index.

use std::fmt;

use chacha20poly1305::aead::AeadInOut;
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

pub const MAGIC: &[u8; 4] = b"CFC1";
const FLAG_ZSTD: u8 = 1;
const FLAG_ENCRYPTED: u8 = 2;
const HEADER: usize = 12;
/// No valid blob is shorter than its header.
pub const MIN_BLOB_BYTES: u64 = HEADER as u64;
const NONCE: usize = 24;
const TAG: usize = 16;
/// The largest chunk a repository holds (the largest chunk size).
pub const MAX_CHUNK_BYTES: usize = 4 << 20;

/// Where chunk objects are.
pub const CHUNKS_PREFIX: &str = "chunks/";

/// Whether an archive storage class (or access tier) applies to the object
/// at `key`: only to objects holding chunk data. Manifests, indexes, locks
/// and the config stay readable at once, so listing, planning and retention
/// never wait for a thaw.
pub fn archivable(key: &str) -> bool {
    key.starts_with(CHUNKS_PREFIX) || key.starts_with(super::pack::PACKS_PREFIX)
}

/// A chunk id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkDigest(pub [u8; 32]);

/// Stands for an all-zero chunk of any length; never stored.
pub const ZERO_DIGEST: ChunkDigest = ChunkDigest([0; 32]);

impl ChunkDigest {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
    pub fn from_hex(s: &str) -> Option<Self> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(ChunkDigest(out))
    }
    /// The object key of the chunk: `chunks/ab/cd/<hex>`.
    pub fn key(&self) -> String {
        let h = self.to_hex();
        format!("{CHUNKS_PREFIX}{}/{}/{}", &h[0..2], &h[2..4], h)
    }
    pub fn from_key(key: &str) -> Option<Self> {
        Self::from_hex(key.rsplit('/').next()?)
    }
}

impl fmt::Debug for ChunkDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", &self.to_hex()[..16])
    }
}

/// Keys of an encrypted tier, derived from its secret.
#[derive(Clone)]
pub struct Keys {
    pub id_key: [u8; 32],
    pub manifest_key: [u8; 32],
    cipher: XChaCha20Poly1305,
}

impl Keys {
    pub fn new(id_key: [u8; 32], enc_key: [u8; 32], manifest_key: [u8; 32]) -> Self {
        Keys {
            id_key,
            manifest_key,
            cipher: XChaCha20Poly1305::new(&enc_key.into()),
        }
    }

    /// HMAC-SHA-256 under `key`.
    pub fn mac(key: &[u8; 32], data: &[u8]) -> [u8; 32] {
        let mut m = <Hmac<Sha256>>::new_from_slice(key).expect("HMAC takes any key length");
        m.update(data);
        m.finalize().into_bytes().into()
    }
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Keys(…)")
    }
}

/// What can be wrong with a stored chunk.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChunkError {
    #[error("not a chunk blob (bad magic)")]
    BadMagic,
    #[error("blob truncated")]
    Truncated,
    #[error("CRC mismatch: the blob is damaged")]
    BadCrc,
    #[error("blob is encrypted but the tier has no key")]
    NeedsKey,
    #[error("authentication failed: wrong key or tampered blob")]
    BadTag,
    #[error("payload does not decompress: {0}")]
    Decompress(String),
    #[error("content does not match its id")]
    DigestMismatch,
}

/// Digest of a chunk's plaintext under the tier's keying.
pub fn digest(data: &[u8], keys: Option<&Keys>) -> ChunkDigest {
    match keys {
        Some(k) => ChunkDigest(Keys::mac(&k.id_key, data)),
        None => ChunkDigest(Sha256::digest(data).into()),
    }
}

/// Whether every byte is zero (a memcmp against a static zero page).
pub fn is_zero(data: &[u8]) -> bool {
    static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
    data.chunks(ZEROS.len()).all(|c| c == &ZEROS[..c.len()])
}

/// Per-thread compression state, reused across chunks.
pub struct Codec {
    compressor: zstd::bulk::Compressor<'static>,
    decompressor: zstd::bulk::Decompressor<'static>,
}

impl Codec {
    pub fn new(level: i32) -> Self {
        Codec {
            compressor: zstd::bulk::Compressor::new(level).expect("zstd level is valid"),
            decompressor: zstd::bulk::Decompressor::new().expect("zstd context"),
        }
    }

    /// Builds the blob of a chunk whose digest is already known.
    pub fn encode(&mut self, plain: &[u8], id: &ChunkDigest, keys: Option<&Keys>) -> Vec<u8> {
        let compressed = self.compressor.compress(plain).ok();
        // Keep zstd only when it saves at least 1/32: incompressible data
        // restores faster raw.
        let (mut flags, payload): (u8, &[u8]) = match &compressed {
            Some(c) if c.len() < plain.len() - plain.len() / 32 => (FLAG_ZSTD, c),
            _ => (0, plain),
        };
        let mut blob = Vec::with_capacity(HEADER + NONCE + TAG + payload.len());
        blob.extend_from_slice(MAGIC);
        blob.extend_from_slice(&[0; 8]);
        match keys {
            None => blob.extend_from_slice(payload),
            Some(k) => {
                flags |= FLAG_ENCRYPTED;
                let mut nonce = [0u8; NONCE];
                getrandom::fill(&mut nonce).expect("the OS random source works");
                blob.extend_from_slice(&nonce);
                blob.extend_from_slice(&[0; TAG]);
                let start = blob.len();
                blob.extend_from_slice(payload);
                let tag = k
                    .cipher
                    .encrypt_inout_detached(
                        &XNonce::from(nonce),
                        &id.0,
                        (&mut blob[start..]).into(),
                    )
                    .expect("encryption of a chunk cannot fail");
                blob[HEADER + NONCE..HEADER + NONCE + TAG].copy_from_slice(&tag);
            }
        }
        blob[4] = flags;
        let crc = crc32fast::hash(&blob[HEADER..]);
        blob[8..12].copy_from_slice(&crc.to_le_bytes());
        blob
    }

    /// Checks a blob's CRC only (cheap, needs no key).
    pub fn check_crc(blob: &[u8]) -> Result<(), ChunkError> {
        if blob.len() < HEADER {
            return Err(ChunkError::Truncated);
        }
        if &blob[0..4] != MAGIC {
            return Err(ChunkError::BadMagic);
        }
        let crc = u32::from_le_bytes(blob[8..12].try_into().expect("4 bytes"));
        if crc32fast::hash(&blob[HEADER..]) != crc {
            return Err(ChunkError::BadCrc);
        }
        Ok(())
    }

    /// Decodes a blob and proves it holds the chunk `id`.
    pub fn decode(
        &mut self,
        blob: &[u8],
        id: &ChunkDigest,
        keys: Option<&Keys>,
    ) -> Result<Vec<u8>, ChunkError> {
        Self::check_crc(blob)?;
        let flags = blob[4];
        let mut payload;
        let payload_ref: &[u8] = if flags & FLAG_ENCRYPTED != 0 {
            let k = keys.ok_or(ChunkError::NeedsKey)?;
            if blob.len() < HEADER + NONCE + TAG {
                return Err(ChunkError::Truncated);
            }
            let nonce: [u8; NONCE] = blob[HEADER..HEADER + NONCE].try_into().expect("sized");
            let tag: [u8; TAG] = blob[HEADER + NONCE..HEADER + NONCE + TAG]
                .try_into()
                .expect("sized");
            payload = blob[HEADER + NONCE + TAG..].to_vec();
            k.cipher
                .decrypt_inout_detached(
                    &XNonce::from(nonce),
                    &id.0,
                    (&mut payload[..]).into(),
                    &tag.into(),
                )
                .map_err(|_| ChunkError::BadTag)?;
            &payload
        } else {
            &blob[HEADER..]
        };
        let plain = if flags & FLAG_ZSTD != 0 {
            self.decompressor
                .decompress(payload_ref, MAX_CHUNK_BYTES)
                .map_err(|e| ChunkError::Decompress(e.to_string()))?
        } else {
            payload_ref.to_vec()
        };
        if digest(&plain, keys) != *id {
            return Err(ChunkError::DigestMismatch);
        }
        Ok(plain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys::new([1; 32], [2; 32], [3; 32])
    }

    #[test]
    fn round_trip_plain_and_encrypted_compressible_and_not() {
        let mut codec = Codec::new(1);
        let text = b"the quick brown fox ".repeat(5000);
        let mut noise = vec![0u8; 100_000];
        getrandom::fill(&mut noise).unwrap();
        for data in [&text[..], &noise[..]] {
            for k in [None, Some(keys())] {
                let id = digest(data, k.as_ref());
                let blob = codec.encode(data, &id, k.as_ref());
                assert_eq!(codec.decode(&blob, &id, k.as_ref()).unwrap(), data);
            }
        }
        let id = digest(&text, None);
        assert!(
            codec.encode(&text, &id, None).len() < text.len() / 10,
            "text compresses"
        );
        let id = digest(&noise, None);
        assert_eq!(
            codec.encode(&noise, &id, None)[4] & FLAG_ZSTD,
            0,
            "noise is stored raw"
        );
    }

    #[test]
    fn keyed_ids_differ_from_plain_ids_and_between_keys() {
        let data = b"same data";
        let other = Keys::new([9; 32], [2; 32], [3; 32]);
        assert_ne!(digest(data, None), digest(data, Some(&keys())));
        assert_ne!(digest(data, Some(&other)), digest(data, Some(&keys())));
    }

    #[test]
    fn damage_is_found() {
        let mut codec = Codec::new(1);
        let data = vec![7u8; 4096];
        let id = digest(&data, None);
        let mut blob = codec.encode(&data, &id, None);
        let last = blob.len() - 1;
        blob[last] ^= 1;
        assert_eq!(codec.decode(&blob, &id, None), Err(ChunkError::BadCrc));
        let k = keys();
        let id = digest(&data, Some(&k));
        let blob = codec.encode(&data, &id, Some(&k));
        let wrong = Keys::new([1; 32], [5; 32], [3; 32]);
        assert_eq!(
            codec.decode(&blob, &id, Some(&wrong)),
            Err(ChunkError::BadTag)
        );
        assert_eq!(codec.decode(&blob, &id, None), Err(ChunkError::NeedsKey));
    }

    #[test]
    fn zero_detection() {
        assert!(is_zero(&vec![0u8; 1 << 20]));
        let mut v = vec![0u8; 1 << 20];
        v[(1 << 20) - 1] = 1;
        assert!(!is_zero(&v));
        assert!(is_zero(&[]));
    }
}
