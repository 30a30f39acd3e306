//! Writing restore points. A disk is cut into fixed, offset-aligned chunks;
//! workers (one per core) each take the next chunk, read it, skip it when it
//! is all zero, hash it, and compress and store it when the repository does
//! not hold it yet. Memory is bounded by workers × chunk size: nothing is
//! buffered per disk but the index.
//!
//! An incremental is the parent's index with the chunks that the changed
//! ranges touch replaced. Only the changed bytes are read from the source: a
//! chunk that is changed in part is rebuilt from the parent's chunk (read
//! from this tier) patched with the changed ranges, so production I/O is
//! proportional to what changed, not to the chunk size. A full backup with
//! known allocated ranges (CBT `*`, or SEEK_DATA on a sparse image) is the
//! same operation from an all-zero parent.
//!
//! The source is asked for few, large reads: the chunks to rebuild are
//! grouped into requests of up to `ReadShape::max_request_bytes`, and two
//! changed areas closer than `merge_gap_bytes` are read as one, the bytes
//! between them included (they are the snapshot's, so using them is as
//! right as patching the parent's). A chunk a request covers whole needs
//! nothing from the parent. A host pays per request (its file service has
//! a setup cost and a small pool), so a full of a 2 GiB disk is a few
//! hundred requests, not eight thousand, while an incremental reads at most
//! the gap more than what changed around each area.
//!
//! What may be referenced without storing it comes from the repository's
//! chunk index (`chunk_index`), never from a listing of the store: a backup
//! costs what it reads and writes, not the size of the tier. A parent chunk
//! the index does not know as present and sound (verify found it missing or
//! damaged, or gc removed it) is never carried over: its whole area is read
//! from the source again and stored anew, which also repairs the damage.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use super::chunk::{self, ChunkDigest, Codec, ZERO_DIGEST};
use super::chunk_index::ChunkIndex;
use super::ids::{PointId, VmUuid};
use super::index::DiskIndex;
use super::manifest::{self, DiskEntry, Manifest, PointKind, VmIdentity};
use super::parallel;
use super::{RepoError, Repository};

/// Where disk bytes come from: an image file, or a snapshot's disk over the
/// datastore HTTP interface.
pub trait DiskReader: Send + Sync {
    fn size_bytes(&self) -> u64;
    /// Fills `buf` with the bytes at `offset`; a short read is an error.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()>;
    /// The reads this source wants to be asked for.
    fn read_shape(&self) -> ReadShape {
        ReadShape::default()
    }
}

/// The reads a backup asks of its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadShape {
    /// The largest single read (raised to the chunk size when smaller).
    pub max_request_bytes: u64,
    /// Changed areas closer than this are read as one.
    pub merge_gap_bytes: u64,
}

impl ReadShape {
    pub const DEFAULT_REQUEST_BYTES: u64 = 16 << 20;
    pub const DEFAULT_GAP_BYTES: u64 = 64 << 10;
}

impl Default for ReadShape {
    fn default() -> Self {
        ReadShape {
            max_request_bytes: Self::DEFAULT_REQUEST_BYTES,
            merge_gap_bytes: Self::DEFAULT_GAP_BYTES,
        }
    }
}

/// A disk image in a local file.
#[derive(Debug)]
pub struct FileDisk {
    file: File,
    size_bytes: u64,
}

impl FileDisk {
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = File::open(path)?;
        let size_bytes = file.metadata()?.len();
        Ok(FileDisk { file, size_bytes })
    }

    /// The ranges that hold data (SEEK_DATA/SEEK_HOLE); holes read as zero
    /// and need not be read at all.
    pub fn allocated_ranges(&self) -> std::io::Result<Vec<Range<u64>>> {
        let fd = self.file.as_raw_fd();
        let mut out = Vec::new();
        let mut pos: i64 = 0;
        let end = self.size_bytes as i64;
        while pos < end {
            // SAFETY: lseek on a descriptor this struct owns.
            let data = unsafe { libc::lseek(fd, pos, libc::SEEK_DATA) };
            if data < 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::ENXIO) {
                    break; // no data after pos
                }
                return Err(e);
            }
            // SAFETY: as above.
            let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
            if hole < 0 {
                return Err(std::io::Error::last_os_error());
            }
            out.push(data as u64..hole.min(end) as u64);
            pos = hole;
        }
        Ok(out)
    }
}

impl DiskReader for FileDisk {
    fn size_bytes(&self) -> u64 {
        self.size_bytes
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }
}

/// One disk to back up.
pub struct DiskSource<'a> {
    pub device_key: i32,
    pub label: String,
    pub reader: &'a dyn DiskReader,
    /// The CBT change id of the snapshot being read.
    pub change_id: Option<String>,
    /// Byte ranges to read. `None` reads the whole disk. With `from_parent`,
    /// the ranges changed since the parent point's disk; without, the
    /// allocated ranges of a full read.
    pub ranges: Option<Vec<Range<u64>>>,
    /// Build on the parent point's index of this disk (an incremental) rather
    /// than on an empty one (a full, e.g. when CBT cannot be trusted for
    /// this disk although the VM has a parent point).
    pub from_parent: bool,
    /// Where the disk lives (`[datastore] dir/name.vmdk`), recorded so the
    /// next backup can tell a moved disk (Storage vMotion).
    pub backing: Option<String>,
    /// The disk's controller and unit in the .vmx (`scsi0:1`).
    pub slot: Option<String>,
}

impl<'a> DiskSource<'a> {
    /// A disk read whole, with no change tracking and no parent: a full.
    pub fn whole(device_key: i32, label: impl Into<String>, reader: &'a dyn DiskReader) -> Self {
        DiskSource {
            device_key,
            label: label.into(),
            reader,
            change_id: None,
            ranges: None,
            from_parent: false,
            backing: None,
            slot: None,
        }
    }
}

/// A restore point to write.
pub struct BackupRequest<'a> {
    pub vm: VmIdentity,
    pub consistency: String,
    pub chunk_size_bytes: u32,
    /// The point an incremental starts from (its disks are matched by device key).
    pub parent: Option<&'a Manifest>,
    pub disks: Vec<DiskSource<'a>>,
    /// Small files of the VM kept with the point (the .vmx, the .nvram),
    /// by name; each is stored as one chunk.
    pub files: Vec<(String, Vec<u8>)>,
    /// Disks of the VM left out, recorded in the manifest.
    pub skipped_disks: Vec<manifest::SkippedDisk>,
    pub threads: usize,
}

/// Sorts, merges and clips ranges to `size`.
pub fn normalize_ranges(mut ranges: Vec<Range<u64>>, size: u64) -> Vec<Range<u64>> {
    ranges.retain(|r| r.start < r.end && r.start < size);
    ranges.sort_by_key(|r| r.start);
    let mut out: Vec<Range<u64>> = Vec::with_capacity(ranges.len());
    for r in ranges {
        let r = r.start..r.end.min(size);
        match out.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

/// Per chunk: the ranges (relative to the chunk) to read from the source.
fn touched_chunks(ranges: &[Range<u64>], chunk: u64) -> Vec<(usize, Vec<Range<usize>>)> {
    let mut out: Vec<(usize, Vec<Range<usize>>)> = Vec::new();
    for r in ranges {
        let mut pos = r.start;
        while pos < r.end {
            let i = (pos / chunk) as usize;
            let chunk_start = i as u64 * chunk;
            let end = r.end.min(chunk_start + chunk);
            let rel = (pos - chunk_start) as usize..(end - chunk_start) as usize;
            match out.last_mut() {
                Some((last, list)) if *last == i => list.push(rel),
                _ => out.push((i, vec![rel])),
            }
            pos = end;
        }
    }
    out
}

/// Reads of the source (`spans`, in disk order, each one request) and the
/// chunks they feed; every byte a chunk takes from the source is in one of
/// its batch's spans.
#[derive(Debug, PartialEq, Eq)]
struct Batch {
    spans: Vec<Range<u64>>,
    chunks: Vec<usize>,
}

impl Batch {
    fn bytes(&self) -> u64 {
        self.spans.iter().map(|r| r.end - r.start).sum()
    }

    /// Adds `part` to the last span when it is close enough and the batch
    /// stays within `max`, else as a span of its own.
    fn add(&mut self, part: Range<u64>, shape: ReadShape, max: u64) {
        let total = self.bytes();
        match self.spans.last_mut() {
            Some(last)
                if part.start >= last.end
                    && part.start - last.end <= shape.merge_gap_bytes
                    && total + (part.end - last.end) <= max =>
            {
                last.end = part.end;
            }
            _ => self.spans.push(part),
        }
    }
}

/// Groups the chunks to rebuild (`work`, by index, with the ranges to read
/// relative to each chunk) into reads shaped by `shape`: a chunk joins the
/// batch before it when its first range continues that batch's last read.
fn batches(work: &[(usize, Vec<Range<usize>>)], chunk: u64, shape: ReadShape) -> Vec<Batch> {
    let max = shape.max_request_bytes.max(chunk);
    let mut out: Vec<Batch> = Vec::new();
    for (i, parts) in work {
        let at = *i as u64 * chunk;
        let mut parts = parts.iter().map(|p| at + p.start as u64..at + p.end as u64);
        let Some(first) = parts.next() else { continue };
        let joins = out.last().is_some_and(|b| {
            let last = b.spans.last().expect("a batch has a read");
            first.start >= last.end
                && first.start - last.end <= shape.merge_gap_bytes
                && b.bytes() + chunk <= max
        });
        if !joins {
            out.push(Batch {
                spans: Vec::new(),
                chunks: Vec::new(),
            });
        }
        let batch = out.last_mut().expect("just pushed");
        batch.chunks.push(*i);
        batch.add(first, shape, max);
        for p in parts {
            batch.add(p, shape, max);
        }
    }
    out
}

struct DiskStats {
    bytes_read: AtomicU64,
    chunks_new: AtomicU64,
    bytes_stored_new: AtomicU64,
}

/// Writes a restore point and returns its committed manifest.
pub fn backup(repo: &Repository, req: BackupRequest<'_>) -> Result<Manifest, RepoError> {
    backup_checked(repo, req, &|| Ok(()))
}

/// [`backup`], with `still_valid` asked after every byte was read and
/// before the manifest is committed: an error there commits nothing (a VM
/// backup uses it to prove its snapshot still existed through the read).
pub fn backup_checked(
    repo: &Repository,
    req: BackupRequest<'_>,
    still_valid: &dyn Fn() -> Result<(), RepoError>,
) -> Result<Manifest, RepoError> {
    let started = Instant::now();
    let now = chrono::Utc::now();
    let point_id = manifest::new_point_id(now);
    let (vm_id, point) = (VmUuid::parse(&req.vm.uuid)?, PointId::parse(&point_id)?);
    if !(chunk::MAX_CHUNK_BYTES as u32 >= req.chunk_size_bytes
        && req.chunk_size_bytes.is_power_of_two()
        && req.chunk_size_bytes >= 64 << 10)
    {
        return Err(RepoError::Invalid(format!(
            "chunk size {} is not a power of two from 64KiB to 4MiB",
            req.chunk_size_bytes
        )));
    }
    // Held until the manifest is written: gc must not sweep what this
    // backup deduplicates against.
    let _lock = repo.lock(
        super::lock::LockKind::Shared,
        &format!("backup of {}", req.vm.name),
    )?;
    // Under the shared lock: gc cannot remove chunks while this backup
    // decides what it may reference.
    let chunk_index = repo.trusted_chunk_index()?;
    let known = Known {
        index: &chunk_index,
        written: Mutex::new(HashSet::new()),
    };
    let mut disks = Vec::new();
    let mut incremental = false;
    for d in &req.disks {
        let size = d.reader.size_bytes();
        let parent_disk = req
            .parent
            .and_then(|p| p.disks.iter().find(|x| x.device_key == d.device_key));
        let base = match (parent_disk.filter(|_| d.from_parent), &d.ranges) {
            (Some(pd), Some(_)) => {
                if pd.size_bytes != size || pd.chunk_size_bytes != req.chunk_size_bytes {
                    return Err(RepoError::Invalid(format!(
                        "disk {} changed size or chunk size since point {}: an incremental cannot start from it; take a full backup",
                        d.label,
                        req.parent.map_or("", |p| p.point_id.as_str())
                    )));
                }
                incremental = true;
                repo.read_index(req.parent.expect("a parent disk has a parent"), pd)?
            }
            (None, Some(_)) if req.parent.is_some() && d.from_parent => {
                return Err(RepoError::Invalid(format!(
                    "disk {} (device {}) is not in the parent point: take a full backup",
                    d.label, d.device_key
                )));
            }
            _ => DiskIndex::zeroed(size, req.chunk_size_bytes),
        };
        let ranges = match &d.ranges {
            Some(r) => normalize_ranges(r.clone(), size),
            None => std::iter::once(0..size).collect(),
        };
        let rewrite = unsound_chunks(&chunk_index, &base)?;
        let (index, stats) = write_disk(
            repo,
            d.reader,
            base,
            &ranges,
            &rewrite,
            &known,
            req.threads.max(1),
        )?;
        let index_key = manifest::index_key(&vm_id, &point, d.device_key);
        let index_sha256 = repo.write_index(&index_key, &index)?;
        disks.push(DiskEntry {
            device_key: d.device_key,
            label: d.label.clone(),
            size_bytes: size,
            chunk_size_bytes: req.chunk_size_bytes,
            index_key,
            index_sha256,
            change_id: d.change_id.clone(),
            backing: d.backing.clone(),
            slot: d.slot.clone(),
            bytes_read: stats.bytes_read.into_inner(),
            chunks_new: stats.chunks_new.into_inner(),
            bytes_stored_new: stats.bytes_stored_new.into_inner(),
            chunks_data: index.chunks.iter().filter(|c| **c != ZERO_DIGEST).count() as u64,
        });
    }
    let mut m = Manifest {
        format: manifest::FORMAT,
        point_id,
        vm: req.vm,
        kind: if incremental {
            PointKind::Incremental
        } else {
            PointKind::Full
        },
        parent: if incremental {
            req.parent.map(|p| p.point_id.clone())
        } else {
            None
        },
        consistency: req.consistency,
        created: now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        duration_ms: started.elapsed().as_millis() as u64,
        disks,
        files: write_files(repo, &req.files, &known)?,
        skipped_disks: req.skipped_disks,
        mac: None,
    };
    m.format = manifest::format_needed(&m);
    still_valid()?;
    let committed = repo.commit_manifest(m)?;
    // After the store's flush (in the commit): a row never names a chunk a
    // power loss could take away. The point is committed: a failure here
    // (like a crash before it) only costs re-uploads, so it is not an error.
    let _ = chunk_index.record_present(known.written.into_inner().unwrap());
    Ok(committed)
}

/// What a backup may reference without storing it: chunks the index knows
/// as present and sound, and those this backup stored itself.
struct Known<'a> {
    index: &'a ChunkIndex,
    written: Mutex<HashSet<ChunkDigest>>,
}

impl Known<'_> {
    /// Whether the caller must store `d`; at most one caller is told so.
    fn claim(&self, d: &ChunkDigest) -> Result<bool, RepoError> {
        if self.written.lock().unwrap().contains(d) || self.index.is_present(d)? {
            return Ok(false);
        }
        Ok(self.written.lock().unwrap().insert(*d))
    }

    fn unclaim(&self, d: &ChunkDigest) {
        self.written.lock().unwrap().remove(d);
    }
}

/// Chunks of a parent index that must not be carried over: not known as
/// present and sound. One index lookup per distinct chunk of the disk.
fn unsound_chunks(index: &ChunkIndex, base: &DiskIndex) -> Result<Vec<usize>, RepoError> {
    let distinct: HashSet<ChunkDigest> = base
        .chunks
        .iter()
        .copied()
        .filter(|c| *c != ZERO_DIGEST)
        .collect();
    if distinct.is_empty() {
        return Ok(Vec::new());
    }
    let sound = index.present_among(distinct)?;
    Ok(base
        .chunks
        .iter()
        .enumerate()
        .filter(|(_, c)| **c != ZERO_DIGEST && !sound.contains(c))
        .map(|(i, _)| i)
        .collect())
}

/// Stores each file as one chunk; returns (name, chunk id) for the manifest.
fn write_files(
    repo: &Repository,
    files: &[(String, Vec<u8>)],
    known: &Known<'_>,
) -> Result<Vec<(String, String)>, RepoError> {
    let mut codec = Codec::new(1);
    let mut out = Vec::new();
    for (name, bytes) in files {
        if bytes.len() > chunk::MAX_CHUNK_BYTES {
            return Err(RepoError::Invalid(format!(
                "file {name} is {} bytes, more than one chunk ({} bytes) holds",
                bytes.len(),
                chunk::MAX_CHUNK_BYTES
            )));
        }
        let d = chunk::digest(bytes, repo.keys());
        if known.claim(&d)? {
            let blob = codec.encode(bytes, &d, repo.keys());
            if let Err(e) = repo.put_chunk_blob(&d, &blob) {
                known.unclaim(&d);
                return Err(e);
            }
        }
        out.push((name.clone(), d.to_hex()));
    }
    Ok(out)
}

fn write_disk(
    repo: &Repository,
    reader: &dyn DiskReader,
    base: DiskIndex,
    ranges: &[Range<u64>],
    rewrite: &[usize],
    known: &Known<'_>,
    threads: usize,
) -> Result<(DiskIndex, DiskStats), RepoError> {
    let chunk = base.chunk_size_bytes as u64;
    let mut work: BTreeMap<usize, Vec<Range<usize>>> =
        touched_chunks(ranges, chunk).into_iter().collect();
    // A parent chunk that cannot be trusted is read whole from the source:
    // nothing of it is carried over or patched.
    for &i in rewrite {
        let r = base.range(i);
        work.insert(i, std::iter::once(0..(r.end - r.start) as usize).collect());
    }
    let work: Vec<(usize, Vec<Range<usize>>)> = work.into_iter().collect();
    let reads = batches(&work, chunk, reader.read_shape());
    let results: Mutex<Vec<(usize, ChunkDigest)>> = Mutex::new(Vec::with_capacity(work.len()));
    let stats = DiskStats {
        bytes_read: AtomicU64::new(0),
        chunks_new: AtomicU64::new(0),
        bytes_stored_new: AtomicU64::new(0),
    };
    parallel::for_each(
        &reads,
        threads,
        || (Codec::new(1), Vec::new(), vec![0u8; chunk as usize]),
        |(codec, read, buf), batch| -> Result<(), RepoError> {
            let len = batch.bytes() as usize;
            read.resize(len, 0);
            let mut at = 0;
            for span in &batch.spans {
                let n = (span.end - span.start) as usize;
                reader
                    .read_exact_at(&mut read[at..at + n], span.start)
                    .map_err(|source| RepoError::SourceRead {
                        offset: span.start,
                        source,
                    })?;
                at += n;
            }
            stats.bytes_read.fetch_add(len as u64, Ordering::Relaxed);
            for &i in &batch.chunks {
                let d = build_chunk(
                    repo,
                    &base,
                    i,
                    (&batch.spans, read),
                    buf,
                    codec,
                    known,
                    &stats,
                )?;
                results.lock().unwrap().push((i, d));
            }
            Ok(())
        },
    )?;
    let mut index = base;
    for (i, d) in results.into_inner().unwrap() {
        index.chunks[i] = d;
    }
    Ok((index, stats))
}

/// Chunk `i`: the parts of the batch's reads (their disk ranges, and their
/// bytes end to end) that fall in it, over the parent's bytes (or zeros)
/// where no read reaches.
#[allow(clippy::too_many_arguments)]
fn build_chunk(
    repo: &Repository,
    base: &DiskIndex,
    i: usize,
    (spans, bytes): (&[Range<u64>], &[u8]),
    buf: &mut Vec<u8>,
    codec: &mut Codec,
    known: &Known<'_>,
    stats: &DiskStats,
) -> Result<ChunkDigest, RepoError> {
    let range = base.range(i);
    let len = (range.end - range.start) as usize;
    buf.resize(len, 0);
    // (disk range, where its bytes start in `bytes`) of each read in the chunk.
    let mut pieces = Vec::new();
    let mut at = 0u64;
    for span in spans {
        let (from, to) = (span.start.max(range.start), span.end.min(range.end));
        if from < to {
            pieces.push((from..to, at + (from - span.start)));
        }
        at += span.end - span.start;
    }
    let covered: u64 = pieces.iter().map(|(r, _)| r.end - r.start).sum();
    if covered < len as u64 {
        // Changed in part: start from what the parent holds.
        let old = base.chunks[i];
        if old == ZERO_DIGEST {
            buf.fill(0);
        } else {
            let plain = repo.read_chunk(codec, &old)?;
            if plain.len() != len {
                return Err(RepoError::Invalid(format!(
                    "chunk {} of the parent has the wrong length",
                    old.to_hex()
                )));
            }
            buf.copy_from_slice(&plain);
        }
    }
    for (r, start) in pieces {
        let n = (r.end - r.start) as usize;
        let into = (r.start - range.start) as usize;
        buf[into..into + n].copy_from_slice(&bytes[start as usize..start as usize + n]);
    }
    if chunk::is_zero(buf) {
        return Ok(ZERO_DIGEST);
    }
    let d = chunk::digest(buf, repo.keys());
    if !known.claim(&d)? {
        return Ok(d);
    }
    let blob = codec.encode(buf, &d, repo.keys());
    if let Err(e) = repo.put_chunk_blob(&d, &blob) {
        known.unclaim(&d);
        return Err(e);
    }
    stats.chunks_new.fetch_add(1, Ordering::Relaxed);
    stats
        .bytes_stored_new
        .fetch_add(blob.len() as u64, Ordering::Relaxed);
    Ok(d)
}

#[cfg(test)]
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;

    #[test]
    fn ranges_normalize_and_split_by_chunk() {
        let r = normalize_ranges(vec![10..20, 0..5, 15..30, 100..200, 5..6], 150);
        assert_eq!(r, vec![0..6, 10..30, 100..150]);
        let t = touched_chunks(&[0..6, 10..30, 60..70], 16);
        assert_eq!(
            t,
            vec![
                (0, vec![0..6, 10..16]),
                (1, vec![0..14]),
                (3, vec![12..16]),
                (4, vec![0..6])
            ]
        );
    }

    const SHAPE: ReadShape = ReadShape {
        max_request_bytes: 64,
        merge_gap_bytes: 4,
    };

    #[test]
    fn close_areas_are_read_as_one_request_up_to_the_largest() {
        // A whole disk of 16-byte chunks: one read per 64 bytes.
        let whole: Vec<_> = (0..10).map(|i| (i, vec![0..16])).collect();
        let b = batches(&whole, 16, SHAPE);
        assert_eq!(
            b.iter().map(|b| b.spans.clone()).collect::<Vec<_>>(),
            vec![vec![0..64], vec![64..128], vec![128..160]]
        );
        assert_eq!(b[0].chunks, vec![0, 1, 2, 3]);
        // Areas 3 bytes apart merge (the 3 bytes are read); 10 apart do not,
        // inside one chunk or across two.
        let t = touched_chunks(&normalize_ranges(vec![2..5, 8..10, 20..22, 28..30], 64), 16);
        let b = batches(&t, 16, SHAPE);
        assert_eq!(
            b,
            vec![
                Batch {
                    spans: vec![2..10],
                    chunks: vec![0]
                },
                Batch {
                    spans: vec![20..22, 28..30],
                    chunks: vec![1]
                },
            ]
        );
    }

    /// An incremental with scattered writes reads what changed and the
    /// small gaps between close areas, nowhere near whole chunks.
    #[test]
    fn scattered_changes_read_little_more_than_what_changed() {
        let chunk = 1 << 20;
        let shape = ReadShape::default();
        // 200 areas of 64 KiB at pseudo-random 64 KiB-aligned places of 4 GiB.
        let mut x = 7u64;
        let areas: Vec<Range<u64>> = (0..200)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let at = (x >> 33) % (4 << 14) * (64 << 10);
                at..at + (64 << 10)
            })
            .collect();
        let areas = normalize_ranges(areas, 4 << 30);
        let changed: u64 = areas.iter().map(|r| r.end - r.start).sum();
        let b = batches(&touched_chunks(&areas, chunk), chunk, shape);
        let read: u64 = b.iter().map(Batch::bytes).sum();
        assert!(
            read >= changed && read * 10 <= changed * 11,
            "{read} for {changed}"
        );
        assert!(b.iter().all(|b| b.bytes() <= shape.max_request_bytes));
    }
}
