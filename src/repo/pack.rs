//! Packs: chunk blobs stored many to an object, for tiers where every
//! object costs a request (and, in archive classes, per-object metadata and
//! a per-object transition fee). A backup or copy appends blobs to an open
//! pack; a pack that reaches its target size is uploaded whole, and the
//! packs of an operation are named by one index object before anything
//! references their chunks. Reads are byte ranges of packs.
//!
//! A pack object, `packs/ab/<sha256 of the object>`:
//!
//! ```text
//! blobs end to end (each exactly as a chunk object holds it: CFC1 …)
//! n × 40-byte entries: chunk id (32), offset (u32 LE), length (u32 LE)
//! u32 LE n
//! u32 LE CRC32 of the entries and n
//! "CFP1"
//! ```
//!
//! The trailer makes every pack self-describing: a pack whose index object
//! was lost (a run killed between the two uploads) is found by listing and
//! read through its trailer.
//!
//! An index object, `pack-index/<sha256 of the object>`: `"CFX1"`, u32 LE
//! version 1, then zstd of repeated records {pack id (32), u64 LE size, u32
//! LE n, n entries}. Its name proves its content; a damaged index object is
//! ignored and the packs it named are read through their trailers.

use std::collections::{HashMap, HashSet};
use std::sync::{Condvar, Mutex};
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use super::chunk::ChunkDigest;
use super::store::{Store, StoreError};

pub const PACKS_PREFIX: &str = "packs/";
pub const PACK_INDEX_PREFIX: &str = "pack-index/";
/// Where damaged blobs are set aside.
pub const QUARANTINE_PREFIX: &str = "quarantine/";

/// The key a damaged blob of chunk `d` in pack `p` is set aside under; the
/// map leaves that place out from then on (the pack itself may be
/// immutable, and its other chunks are sound).
pub fn quarantine_key(d: &ChunkDigest, p: &PackId) -> String {
    format!("{QUARANTINE_PREFIX}{}@{}", d.to_hex(), p.to_hex())
}

fn parse_quarantine_key(key: &str) -> Option<(ChunkDigest, PackId)> {
    let (d, p) = key.strip_prefix(QUARANTINE_PREFIX)?.split_once('@')?;
    let mut pack = [0u8; 32];
    hex::decode_to_slice(p, &mut pack).ok()?;
    Some((ChunkDigest::from_hex(d)?, PackId(pack)))
}
const PACK_MAGIC: &[u8; 4] = b"CFP1";
const INDEX_MAGIC: &[u8; 4] = b"CFX1";
const INDEX_VERSION: u32 = 1;
const ENTRY_BYTES: usize = 40;
/// n, CRC, magic.
const TAIL_BYTES: usize = 12;
/// What a first read of a pack's tail asks for: the whole trailer of any
/// pack of up to ~1,600 chunks in one request.
const TAIL_GUESS: u64 = 64 * 1024;

/// The default target size of a pack: measured in `docs/benchmarks.md`
/// (requests per GiB fall with size; restores of a few chunks read ranges,
/// so a larger pack costs little on reads).
pub const DEFAULT_TARGET_BYTES: u64 = 16 << 20;

/// The pack sizes a tier or a command may ask for (an entry's offset is a
/// u32, and a pack below a few chunks saves little).
pub const SIZE_RANGE: std::ops::RangeInclusive<u64> = (256 << 10)..=(1 << 30);

/// What can be wrong with a pack or an index object.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PackError {
    #[error("not a pack (bad magic)")]
    BadMagic,
    #[error("trailer truncated")]
    Truncated,
    #[error("trailer CRC mismatch: the pack is damaged")]
    BadCrc,
    #[error("entry {0} lies outside the pack's data")]
    OutOfBounds(usize),
    #[error("index object: its content does not match its name")]
    BadIndexDigest,
    #[error("index object: {0}")]
    BadIndex(String),
}

/// A pack's id: the SHA-256 of the whole object.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PackId(pub [u8; 32]);

impl PackId {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// `packs/ab/<hex>`.
    pub fn key(&self) -> String {
        let h = self.to_hex();
        format!("{PACKS_PREFIX}{}/{h}", &h[0..2])
    }

    /// The id a pack key names; `None` for anything else under `packs/`.
    pub fn from_key(key: &str) -> Option<PackId> {
        let rest = key.strip_prefix(PACKS_PREFIX)?;
        let (dir, name) = rest.split_once('/')?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(name, &mut out).ok()?;
        (dir == &name[0..2]).then_some(PackId(out))
    }
}

impl std::fmt::Debug for PackId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", &self.to_hex()[..16])
    }
}

/// One blob in a pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub digest: ChunkDigest,
    pub offset: u32,
    pub length: u32,
}

/// A pack as an index names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackRecord {
    pub id: PackId,
    pub size: u64,
    pub entries: Vec<Entry>,
}

/// A pack being filled.
#[derive(Default)]
pub struct PackBuilder {
    data: Vec<u8>,
    entries: Vec<Entry>,
}

impl PackBuilder {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes of blobs so far.
    pub fn data_bytes(&self) -> u64 {
        self.data.len() as u64
    }

    pub fn digests(&self) -> impl Iterator<Item = &ChunkDigest> {
        self.entries.iter().map(|e| &e.digest)
    }

    pub fn add(&mut self, digest: ChunkDigest, blob: &[u8]) {
        self.entries.push(Entry {
            digest,
            offset: self.data.len() as u32,
            length: blob.len() as u32,
        });
        self.data.extend_from_slice(blob);
    }

    /// The pack object and its record.
    pub fn finish(mut self) -> (PackRecord, Vec<u8>) {
        let trailer = encode_trailer(&self.entries);
        self.data.extend_from_slice(&trailer);
        let id = PackId(Sha256::digest(&self.data).into());
        let record = PackRecord {
            id,
            size: self.data.len() as u64,
            entries: self.entries,
        };
        (record, self.data)
    }
}

fn put_entry(out: &mut Vec<u8>, e: &Entry) {
    out.extend_from_slice(&e.digest.0);
    out.extend_from_slice(&e.offset.to_le_bytes());
    out.extend_from_slice(&e.length.to_le_bytes());
}

fn get_entry(b: &[u8]) -> Entry {
    Entry {
        digest: ChunkDigest(b[0..32].try_into().expect("32 bytes")),
        offset: u32::from_le_bytes(b[32..36].try_into().expect("4 bytes")),
        length: u32::from_le_bytes(b[36..40].try_into().expect("4 bytes")),
    }
}

fn encode_trailer(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * ENTRY_BYTES + TAIL_BYTES);
    for e in entries {
        put_entry(&mut out, e);
    }
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(PACK_MAGIC);
    out
}

/// How many bytes the trailer of a pack ending in `tail` takes (its last
/// 12 bytes are enough to know).
pub fn trailer_len(tail: &[u8]) -> Result<u64, PackError> {
    if tail.len() < TAIL_BYTES {
        return Err(PackError::Truncated);
    }
    let end = &tail[tail.len() - TAIL_BYTES..];
    if &end[8..12] != PACK_MAGIC {
        return Err(PackError::BadMagic);
    }
    let n = u32::from_le_bytes(end[0..4].try_into().expect("4 bytes")) as u64;
    Ok(n * ENTRY_BYTES as u64 + TAIL_BYTES as u64)
}

/// The entries of a pack of `size` bytes, from bytes at its end (at least
/// its trailer); every entry must lie inside the pack's data.
pub fn parse_trailer(tail: &[u8], size: u64) -> Result<Vec<Entry>, PackError> {
    let len = trailer_len(tail)?;
    if (tail.len() as u64) < len || size < len {
        return Err(PackError::Truncated);
    }
    let t = &tail[tail.len() - len as usize..];
    let body = &t[..t.len() - 8];
    let crc = u32::from_le_bytes(t[t.len() - 8..t.len() - 4].try_into().expect("4 bytes"));
    if crc32fast::hash(body) != crc {
        return Err(PackError::BadCrc);
    }
    let data_end = size - len;
    let entries: Vec<Entry> = body[..body.len() - 4]
        .chunks_exact(ENTRY_BYTES)
        .map(get_entry)
        .collect();
    for (i, e) in entries.iter().enumerate() {
        if e.offset as u64 + e.length as u64 > data_end {
            return Err(PackError::OutOfBounds(i));
        }
    }
    Ok(entries)
}

/// Reads a pack's entries through its trailer: one ranged read of its tail,
/// a second when the trailer is longer than the first guess.
pub fn read_trailer(store: &dyn Store, id: &PackId, size: u64) -> Result<Vec<Entry>, ReadError> {
    let first = TAIL_GUESS.min(size);
    let tail = store.get_range(&id.key(), size - first..size)?;
    let need = trailer_len(&tail)?;
    if need <= first {
        return Ok(parse_trailer(&tail, size)?);
    }
    if need > size {
        return Err(PackError::Truncated.into());
    }
    let tail = store.get_range(&id.key(), size - need..size)?;
    Ok(parse_trailer(&tail, size)?)
}

/// Why a pack could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Pack(#[from] PackError),
}

/// An index object for `records`: its key and bytes.
pub fn encode_index(records: &[PackRecord]) -> (String, Vec<u8>) {
    let mut plain = Vec::new();
    for r in records {
        plain.extend_from_slice(&r.id.0);
        plain.extend_from_slice(&r.size.to_le_bytes());
        plain.extend_from_slice(&(r.entries.len() as u32).to_le_bytes());
        for e in &r.entries {
            put_entry(&mut plain, e);
        }
    }
    let mut out = Vec::with_capacity(plain.len() / 2 + 8);
    out.extend_from_slice(INDEX_MAGIC);
    out.extend_from_slice(&INDEX_VERSION.to_le_bytes());
    out.extend_from_slice(&zstd::bulk::compress(&plain, 3).expect("zstd compresses memory"));
    let key = format!("{PACK_INDEX_PREFIX}{}", hex::encode(Sha256::digest(&out)));
    (key, out)
}

/// The records of an index object read from `key`; its content must hash
/// to its name.
pub fn decode_index(key: &str, bytes: &[u8]) -> Result<Vec<PackRecord>, PackError> {
    let name = key.strip_prefix(PACK_INDEX_PREFIX).unwrap_or(key);
    if hex::encode(Sha256::digest(bytes)) != name {
        return Err(PackError::BadIndexDigest);
    }
    if bytes.len() < 8 || &bytes[0..4] != INDEX_MAGIC {
        return Err(PackError::BadMagic);
    }
    let version = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
    if version != INDEX_VERSION {
        return Err(PackError::BadIndex(format!("version {version}")));
    }
    let plain =
        zstd::stream::decode_all(&bytes[8..]).map_err(|e| PackError::BadIndex(e.to_string()))?;
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < plain.len() {
        if plain.len() - at < 44 {
            return Err(PackError::Truncated);
        }
        let id = PackId(plain[at..at + 32].try_into().expect("32 bytes"));
        let size = u64::from_le_bytes(plain[at + 32..at + 40].try_into().expect("8 bytes"));
        let n = u32::from_le_bytes(plain[at + 40..at + 44].try_into().expect("4 bytes")) as usize;
        at += 44;
        let len = n.checked_mul(ENTRY_BYTES).ok_or(PackError::Truncated)?;
        if plain.len() - at < len {
            return Err(PackError::Truncated);
        }
        let entries = plain[at..at + len]
            .chunks_exact(ENTRY_BYTES)
            .map(get_entry)
            .collect();
        at += len;
        out.push(PackRecord { id, size, entries });
    }
    Ok(out)
}

/// Where a chunk's blob is: a byte range of a pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub pack: PackId,
    pub offset: u32,
    pub length: u32,
}

impl Location {
    pub fn range(&self) -> std::ops::Range<u64> {
        self.offset as u64..self.offset as u64 + self.length as u64
    }

    /// The blob stored here: one ranged read of its pack.
    pub fn read(&self, store: &dyn Store) -> Result<Vec<u8>, StoreError> {
        store.get_range(&self.pack.key(), self.range())
    }
}

/// A pack the store lists, and what is known of it.
#[derive(Debug, Clone)]
pub struct PackInfo {
    pub size: u64,
    pub modified: SystemTime,
    pub entries: Vec<Entry>,
    /// Named by a readable index object (else: read through its trailer).
    pub indexed: bool,
}

/// Every pack of a repository and where each chunk is: from the index
/// objects, checked against the listing of `packs/` (a pack not listed is
/// gone, whatever an index says), with packs no index names read through
/// their trailers.
#[derive(Debug, Default)]
pub struct PackMap {
    pub packs: HashMap<PackId, PackInfo>,
    chunks: HashMap<ChunkDigest, Location>,
    /// Further copies of a chunk (a repack or two writers storing it at
    /// once): a read whose first copy is damaged tries these.
    more: HashMap<ChunkDigest, Vec<Location>>,
    /// The index objects read, with the packs each names.
    pub index_objects: Vec<(String, Vec<PackId>)>,
    /// Packs listed whose trailer could not be read (damaged, or in
    /// archive storage), with why: never deleted by gc.
    pub unreadable: Vec<(PackId, String)>,
    /// Index objects that could not be read, with why.
    pub bad_index_objects: Vec<(String, String)>,
    /// Places set aside as damaged (`quarantine_key`): left out.
    quarantined: HashSet<(ChunkDigest, PackId)>,
}

impl PackMap {
    /// Reads the map from `store`: one listing of each prefix, every index
    /// object, and a ranged read per pack no index names.
    pub fn load(store: &dyn Store) -> Result<PackMap, StoreError> {
        let mut map = PackMap {
            quarantined: store
                .list(QUARANTINE_PREFIX)?
                .iter()
                .filter_map(|o| parse_quarantine_key(&o.key))
                .collect(),
            ..PackMap::default()
        };
        let listed: HashMap<PackId, (u64, SystemTime)> = store
            .list(PACKS_PREFIX)?
            .into_iter()
            .filter_map(|o| PackId::from_key(&o.key).map(|id| (id, (o.size_bytes, o.modified))))
            .collect();
        let mut index_keys: Vec<_> = store.list(PACK_INDEX_PREFIX)?;
        index_keys.sort_by(|a, b| a.key.cmp(&b.key));
        for o in index_keys {
            let Some(records) = map.read_index_object(store, &o.key)? else {
                continue;
            };
            for r in records {
                match listed.get(&r.id) {
                    Some((size, modified)) if *size == r.size && !map.packs.contains_key(&r.id) => {
                        map.add(r.id, *size, *modified, r.entries, true)
                    }
                    _ => {}
                }
            }
        }
        for (id, (size, modified)) in &listed {
            if map.packs.contains_key(id) {
                continue;
            }
            match read_trailer(store, id, *size) {
                Ok(entries) => map.add(*id, *size, *modified, entries, false),
                Err(ReadError::Store(StoreError::NotFound(_))) => {}
                Err(ReadError::Store(e @ StoreError::Backend(_))) => return Err(e),
                Err(e) => map.unreadable.push((*id, e.to_string())),
            }
        }
        Ok(map)
    }

    /// Reads one index object and remembers it: its records, or `None`
    /// when it is gone or unreadable (then noted in `bad_index_objects`).
    fn read_index_object(
        &mut self,
        store: &dyn Store,
        key: &str,
    ) -> Result<Option<Vec<PackRecord>>, StoreError> {
        let records = match store.get(key) {
            Ok(bytes) => decode_index(key, &bytes).map_err(|e| e.to_string()),
            Err(StoreError::NotFound(_)) => return Ok(None),
            Err(e @ StoreError::Archived { .. }) => Err(e.to_string()),
            Err(e) => return Err(e),
        };
        match records {
            Ok(records) => {
                self.index_objects
                    .push((key.to_string(), records.iter().map(|r| r.id).collect()));
                Ok(Some(records))
            }
            Err(why) => {
                tracing::warn!(object = %key, %why, "a pack index object is unreadable; its packs are read through their trailers");
                self.bad_index_objects.push((key.to_string(), why));
                Ok(None)
            }
        }
    }

    /// Learns of index objects written since this map was read: one
    /// listing, then a read of each new object. Their packs are trusted to
    /// exist (a read that finds one gone moves on to the next place).
    pub fn learn_new_indexes(&mut self, store: &dyn Store) -> Result<(), StoreError> {
        let known: HashSet<String> = self
            .index_objects
            .iter()
            .map(|(k, _)| k.clone())
            .chain(self.bad_index_objects.iter().map(|(k, _)| k.clone()))
            .collect();
        for o in store.list(PACK_INDEX_PREFIX)? {
            if known.contains(&o.key) {
                continue;
            }
            let Some(records) = self.read_index_object(store, &o.key)? else {
                continue;
            };
            for r in records {
                if !self.packs.contains_key(&r.id) {
                    self.add(r.id, r.size, o.modified, r.entries, true);
                }
            }
        }
        Ok(())
    }

    /// Adds a pack and its entries.
    pub fn add(
        &mut self,
        id: PackId,
        size: u64,
        modified: SystemTime,
        mut entries: Vec<Entry>,
        indexed: bool,
    ) {
        if !self.quarantined.is_empty() {
            entries.retain(|e| !self.quarantined.contains(&(e.digest, id)));
        }
        for e in &entries {
            let loc = Location {
                pack: id,
                offset: e.offset,
                length: e.length,
            };
            match self.chunks.entry(e.digest) {
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(loc);
                }
                std::collections::hash_map::Entry::Occupied(o) => {
                    if *o.get() != loc {
                        self.more.entry(e.digest).or_default().push(loc);
                    }
                }
            }
        }
        self.packs.insert(
            id,
            PackInfo {
                size,
                modified,
                entries,
                indexed,
            },
        );
    }

    /// Every place chunk `d` is stored, first found first.
    pub fn locate(&self, d: &ChunkDigest) -> Vec<Location> {
        let mut out: Vec<Location> = self.chunks.get(d).copied().into_iter().collect();
        if let Some(more) = self.more.get(d) {
            out.extend(more.iter().copied());
        }
        out
    }

    pub fn contains(&self, d: &ChunkDigest) -> bool {
        self.chunks.contains_key(d)
    }

    /// Every chunk the packs hold.
    pub fn digests(&self) -> impl Iterator<Item = &ChunkDigest> {
        self.chunks.keys()
    }
}

/// The writer side, shared by every clone of a repository: the open pack,
/// uploads in flight, and packs uploaded but not yet named by an index.
pub struct Packer {
    target: u64,
    state: Mutex<PackerState>,
    idle: Condvar,
}

#[derive(Default)]
struct PackerState {
    open: PackBuilder,
    /// Chunks in the open pack or in an upload in flight: a second put of
    /// one of them is a no-op.
    pending: HashSet<ChunkDigest>,
    in_flight: usize,
    /// Uploaded, not yet named by an index object.
    unindexed: Vec<PackRecord>,
    /// Chunks whose pack failed to upload: a commit that references one
    /// fails (until the chunk is stored again).
    lost: HashSet<ChunkDigest>,
}

impl Packer {
    pub fn new(target: u64) -> Self {
        Packer {
            target: target.max(1),
            state: Mutex::new(PackerState::default()),
            idle: Condvar::new(),
        }
    }

    /// Appends a blob to the open pack; uploads the pack (on the calling
    /// thread, outside the lock) when it has reached its target size.
    pub fn put(&self, store: &dyn Store, d: &ChunkDigest, blob: &[u8]) -> Result<(), StoreError> {
        let full = {
            let mut st = self.state.lock().unwrap();
            if !st.pending.insert(*d) {
                return Ok(());
            }
            st.lost.remove(d);
            st.open.add(*d, blob);
            if st.open.data_bytes() < self.target {
                return Ok(());
            }
            st.in_flight += 1;
            std::mem::take(&mut st.open)
        };
        let done = self.upload(store, full);
        let mut st = self.state.lock().unwrap();
        st.in_flight -= 1;
        self.idle.notify_all();
        done
    }

    fn upload(&self, store: &dyn Store, pack: PackBuilder) -> Result<(), StoreError> {
        let digests: Vec<ChunkDigest> = pack.digests().copied().collect();
        let (record, bytes) = pack.finish();
        let done = store.put(&record.id.key(), &bytes);
        let mut st = self.state.lock().unwrap();
        for d in &digests {
            st.pending.remove(d);
        }
        match &done {
            Ok(()) => st.unindexed.push(record),
            Err(_) => st.lost.extend(digests),
        }
        done
    }

    /// Uploads the open pack, waits for uploads in flight, and writes one
    /// index object naming every pack uploaded since the last one. Returns
    /// the records indexed (for the in-memory map).
    pub fn finish(&self, store: &dyn Store) -> Result<Vec<PackRecord>, StoreError> {
        let open = {
            let mut st = self.state.lock().unwrap();
            while st.in_flight > 0 {
                st = self.idle.wait(st).unwrap();
            }
            st.in_flight += 1;
            std::mem::take(&mut st.open)
        };
        let uploaded = if open.is_empty() {
            Ok(())
        } else {
            self.upload(store, open)
        };
        let records = {
            let mut st = self.state.lock().unwrap();
            st.in_flight -= 1;
            self.idle.notify_all();
            std::mem::take(&mut st.unindexed)
        };
        uploaded?;
        if records.is_empty() {
            return Ok(records);
        }
        let (key, bytes) = encode_index(&records);
        if let Err(e) = store.put(&key, &bytes) {
            // The packs are in the store and readable through their
            // trailers; the next finish names them again.
            self.state.lock().unwrap().unindexed.extend(records);
            return Err(e);
        }
        Ok(records)
    }

    /// Which of `digests` were in a pack that failed to upload.
    pub fn lost_among<'a>(
        &self,
        digests: impl IntoIterator<Item = &'a ChunkDigest>,
    ) -> Option<ChunkDigest> {
        let st = self.state.lock().unwrap();
        if st.lost.is_empty() {
            return None;
        }
        digests.into_iter().find(|d| st.lost.contains(d)).copied()
    }

    pub fn has_lost(&self) -> bool {
        !self.state.lock().unwrap().lost.is_empty()
    }
}

/// One ranged read of a pack that serves several wanted blobs.
#[derive(Debug, PartialEq, Eq)]
pub struct SpanRead {
    pub pack: PackId,
    /// The bytes of the pack read.
    pub span: std::ops::Range<u64>,
    /// Each blob served: its position in the wanted list, and its bytes
    /// within the read.
    pub members: Vec<(usize, std::ops::Range<usize>)>,
}

/// Groups byte ranges of one pack that lie close together into single
/// reads. `gap` is how many unneeded bytes a read may span to save a
/// request.
pub fn coalesce(wanted: &[(usize, Location)], gap: u64) -> Vec<SpanRead> {
    let mut sorted: Vec<&(usize, Location)> = wanted.iter().collect();
    sorted.sort_by_key(|(_, l)| (l.pack, l.offset));
    let mut out: Vec<SpanRead> = Vec::new();
    for (i, l) in sorted {
        let r = l.range();
        match out.last_mut() {
            Some(read) if read.pack == l.pack && r.start <= read.span.end + gap => {
                read.span.end = read.span.end.max(r.end);
                let at = read.span.start;
                read.members
                    .push((*i, (r.start - at) as usize..(r.end - at) as usize));
            }
            _ => out.push(SpanRead {
                pack: l.pack,
                span: r.clone(),
                members: vec![(*i, 0..(r.end - r.start) as usize)],
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u8) -> ChunkDigest {
        ChunkDigest([n; 32])
    }

    #[test]
    fn a_pack_names_itself_and_its_trailer_finds_every_blob() {
        let mut b = PackBuilder::default();
        b.add(d(1), b"first blob");
        b.add(d(2), b"second");
        let (rec, bytes) = b.finish();
        assert_eq!(rec.id.0, <[u8; 32]>::from(Sha256::digest(&bytes)));
        assert_eq!(PackId::from_key(&rec.id.key()), Some(rec.id));
        let entries = parse_trailer(&bytes, bytes.len() as u64).unwrap();
        assert_eq!(entries, rec.entries);
        let e = entries[1];
        assert_eq!(
            &bytes[e.offset as usize..(e.offset + e.length) as usize],
            b"second"
        );
        // Any tail that holds the trailer will do.
        let tail = &bytes[5..];
        assert_eq!(
            parse_trailer(tail, bytes.len() as u64).unwrap(),
            rec.entries
        );
    }

    #[test]
    fn a_damaged_or_foreign_trailer_is_refused() {
        let mut b = PackBuilder::default();
        b.add(d(1), b"blob");
        let (_, bytes) = b.finish();
        let n = bytes.len();
        let mut flipped = bytes.clone();
        flipped[n - 20] ^= 1;
        assert_eq!(parse_trailer(&flipped, n as u64), Err(PackError::BadCrc));
        let mut magic = bytes.clone();
        magic[n - 1] = b'X';
        assert_eq!(parse_trailer(&magic, n as u64), Err(PackError::BadMagic));
        assert_eq!(
            parse_trailer(&bytes[n - 8..], n as u64),
            Err(PackError::Truncated)
        );
        // An entry pointing past the data is refused even with a good CRC.
        let entries = vec![Entry {
            digest: d(1),
            offset: 0,
            length: 100,
        }];
        let mut fake = b"tiny".to_vec();
        fake.extend_from_slice(&encode_trailer(&entries));
        assert_eq!(
            parse_trailer(&fake, fake.len() as u64),
            Err(PackError::OutOfBounds(0))
        );
        assert_eq!(PackId::from_key("packs/zz/abc"), None);
        assert_eq!(
            PackId::from_key(&format!("packs/00/{}", "ab".repeat(32))),
            None
        );
    }

    #[test]
    fn an_index_object_round_trips_and_proves_its_name() {
        let recs = vec![
            PackRecord {
                id: PackId([7; 32]),
                size: 1234,
                entries: vec![Entry {
                    digest: d(3),
                    offset: 0,
                    length: 99,
                }],
            },
            PackRecord {
                id: PackId([8; 32]),
                size: 10,
                entries: vec![],
            },
        ];
        let (key, bytes) = encode_index(&recs);
        assert_eq!(decode_index(&key, &bytes).unwrap(), recs);
        let mut bad = bytes.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(decode_index(&key, &bad), Err(PackError::BadIndexDigest));
    }

    #[test]
    fn close_ranges_of_a_pack_become_one_read() {
        let p = PackId([1; 32]);
        let q = PackId([2; 32]);
        let l = |pack, offset, length| Location {
            pack,
            offset,
            length,
        };
        let wanted = vec![
            (0, l(p, 100, 50)),
            (1, l(p, 0, 100)),
            (2, l(q, 0, 10)),
            (3, l(p, 1000, 10)),
        ];
        let reads = coalesce(&wanted, 64);
        assert_eq!(reads.len(), 3);
        assert_eq!(reads[0].span, 0..150);
        assert_eq!(reads[0].members, vec![(1, 0..100), (0, 100..150)]);
        assert_eq!(reads[1].span, 1000..1010);
        assert_eq!(reads[2].pack, q);
    }
}
