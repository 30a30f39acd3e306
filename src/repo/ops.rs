//! Keeping a repository sound: verify (re-read and prove every chunk), gc
//! (mark from all manifests, sweep what nothing references once it is older
//! than a grace period), copy (a point to another tier, sending only missing
//! chunks, indexes next, manifest last) and prune (remove a point's manifest
//! first, then its indexes; chunks are left to gc).
//!
//! Each keeps the repository's chunk index (`chunk_index`) true: verify and
//! quarantine mark damaged chunks, gc forgets what it deletes before it
//! deletes it, and verify (a whole-repository run) and gc reconcile the
//! index with the store listing — the only operations whose cost follows
//! the size of the store.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use super::chunk::{self, ChunkDigest, Codec, ZERO_DIGEST};
use super::chunk_index;
use super::index::DiskIndex;
use super::lock::LockKind;
use super::manifest::{self, Manifest};
use super::parallel;
use super::store::StoreError;
use super::{PointRef, RepoError, Repository};

/// A damaged chunk and the points that need it.
#[derive(Debug, Clone)]
pub struct BadChunk {
    pub digest: ChunkDigest,
    pub error: String,
    pub points: Vec<String>,
}

/// The outcome of a verify.
#[derive(Debug, Default)]
pub struct VerifyReport {
    pub points: usize,
    pub chunks_checked: usize,
    pub bytes_checked: u64,
    pub bad_chunks: Vec<BadChunk>,
    /// Points whose manifest or index is unreadable, with why.
    pub bad_points: Vec<(String, String)>,
    /// Manifests found under names that are not valid ids (never read).
    pub refused_keys: Vec<String>,
    /// Point ids that depend on a bad chunk or have a bad index/manifest.
    pub failed_points: BTreeSet<String>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.bad_chunks.is_empty() && self.bad_points.is_empty() && self.refused_keys.is_empty()
    }
}

/// Which chunks a verify reads: all, or one slice of a rolling cycle so that
/// `of` runs together check every chunk once.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub part: u16,
    pub of: u16,
}

impl Sample {
    fn includes(&self, d: &ChunkDigest) -> bool {
        u16::from_be_bytes([d.0[0], d.0[1]]) % self.of == self.part
    }
}

/// Why a `PART/OF` is not a sample; each message follows `--sample `.
#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    #[error("takes PART/OF, e.g. 3/7")]
    Form,
    #[error(transparent)]
    Number(#[from] std::num::ParseIntError),
    #[error("{0}: PART must be below OF (0/7 … 6/7)")]
    Range(String),
}

impl std::str::FromStr for Sample {
    type Err = SampleError;

    /// `PART/OF`, e.g. `3/7`: the fourth of seven slices.
    fn from_str(s: &str) -> Result<Sample, SampleError> {
        let (a, b) = s.split_once('/').ok_or(SampleError::Form)?;
        let (part, of): (u16, u16) = (a.parse()?, b.parse()?);
        if of == 0 || part >= of {
            return Err(SampleError::Range(s.to_string()));
        }
        Ok(Sample { part, of })
    }
}

/// Points that could be read (with their indexes), and those that could not (with why).
type LoadedPoints = (Vec<(Manifest, Vec<DiskIndex>)>, Vec<(String, String)>);

/// Loads every manifest and index; what cannot be read is reported.
fn load_points(repo: &Repository, only: Option<&[PointRef]>) -> Result<LoadedPoints, RepoError> {
    let points = match only {
        Some(p) => p.to_vec(),
        None => repo.list_points()?,
    };
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for p in points {
        match repo.read_manifest(&p).and_then(|m| {
            let idx = m
                .disks
                .iter()
                .map(|d| repo.read_index(&m, d))
                .collect::<Result<Vec<_>, _>>()?;
            Ok((m, idx))
        }) {
            Ok(x) => good.push(x),
            Err(e) => bad.push((p.point_id.clone(), e.to_string())),
        }
    }
    Ok((good, bad))
}

/// Re-reads chunks and checks CRC, authentication and digest; a chunk
/// shared by many points is read once.
pub fn verify(
    repo: &Repository,
    only: Option<&[PointRef]>,
    sample: Option<Sample>,
    threads: usize,
) -> Result<VerifyReport, RepoError> {
    let (points, bad_points) = load_points(repo, only)?;
    let refused_keys = match only {
        Some(_) => Vec::new(),
        None => repo.list_points_checked()?.1,
    };
    let mut users: HashMap<ChunkDigest, Vec<String>> = HashMap::new();
    for (m, indexes) in &points {
        let files = m.file_digests();
        for d in indexes.iter().flat_map(|i| i.chunks.iter()).chain(&files) {
            if *d != ZERO_DIGEST && sample.is_none_or(|s| s.includes(d)) {
                let u = users.entry(*d).or_default();
                if u.last() != Some(&m.point_id) {
                    u.push(m.point_id.clone());
                }
            }
        }
    }
    let mut work: Vec<ChunkDigest> = users.keys().copied().collect();
    // In pack order: neighbouring reads of one object (a disk's read-ahead,
    // a server's cache) rather than jumps between them.
    repo.with_pack_map(|m| {
        work.sort_by_cached_key(|d| m.locate(d).first().map(|l| (l.pack, l.offset)))
    })?;
    let bad: Mutex<Vec<(ChunkDigest, String)>> = Mutex::new(Vec::new());
    let archived = std::sync::atomic::AtomicUsize::new(0);
    let on_tape = std::sync::atomic::AtomicUsize::new(0);
    let bytes = std::sync::atomic::AtomicU64::new(0);
    // A damaged chunk is a finding, not a reason to stop: every item succeeds.
    parallel::for_each(
        &work,
        threads,
        || Codec::new(1),
        |codec, d| {
            match repo.read_chunk(codec, d) {
                Ok(plain) => {
                    bytes.fetch_add(plain.len() as u64, Ordering::Relaxed);
                }
                Err(RepoError::Chunk { source, .. }) => {
                    bad.lock().unwrap().push((*d, source.to_string()))
                }
                Err(RepoError::Store(StoreError::NotFound(_))) => {
                    bad.lock().unwrap().push((*d, "missing".into()))
                }
                // In archive storage: not read, so neither good nor bad.
                Err(RepoError::Store(StoreError::Archived { .. })) => {
                    archived.fetch_add(1, Ordering::Relaxed);
                }
                // On tape: likewise.
                Err(RepoError::Store(StoreError::OnTape { .. })) => {
                    on_tape.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => bad.lock().unwrap().push((*d, e.to_string())),
            }
            Ok::<(), RepoError>(())
        },
    )?;
    // A verification that could not read everything proves nothing and
    // marks nothing damaged: it fails and says what to thaw.
    let on_tape = on_tape.into_inner();
    if on_tape > 0 {
        return Err(RepoError::Invalid(format!(
            "{on_tape} of {} chunks are on tape and were not read; a drill of kind \"verify\" \
             on the tape tier stages its points from tape and proves them",
            work.len()
        )));
    }
    let archived = archived.into_inner();
    if archived > 0 {
        return Err(RepoError::Invalid(format!(
            "{archived} of {} chunks are in archive storage and were not read; \
             thaw the points first (`coffer repo thaw POINT`), then verify again",
            work.len()
        )));
    }
    let mut report = VerifyReport {
        points: points.len() + bad_points.len(),
        chunks_checked: work.len(),
        bytes_checked: bytes.into_inner(),
        ..VerifyReport::default()
    };
    for (digest, error) in bad.into_inner().unwrap() {
        let pts = users.remove(&digest).unwrap_or_default();
        report.failed_points.extend(pts.iter().cloned());
        report.bad_chunks.push(BadChunk {
            digest,
            error,
            points: pts,
        });
    }
    report.bad_chunks.sort_by_key(|b| b.digest);
    // The damage record: no backup references these again, the next one
    // that meets their data stores it anew.
    let index = repo.chunk_index()?;
    index.record_damaged(report.bad_chunks.iter().map(|b| b.digest))?;
    if only.is_none() {
        // The safe half of a reconcile (no lock needed): chunks the store
        // no longer holds stop counting as present.
        index.drop_unlisted(&chunk_index::listed_chunks(repo)?)?;
    }
    report
        .failed_points
        .extend(bad_points.iter().map(|(p, _)| p.clone()));
    report.bad_points = bad_points;
    report.refused_keys = refused_keys;
    Ok(report)
}

/// Moves damaged chunks out of the way, to `quarantine/`: kept for a
/// post-mortem, no longer found by backups (which then write the data anew)
/// or by copies (which then send a healthy blob from another tier). A chunk
/// object that cannot even be read is just removed. In a pack, only the
/// damaged blob is set aside (`quarantine/<chunk>@<pack>`): the map leaves
/// that place out, and the pack's other chunks stay where they are. Each
/// place is read again first, and set aside only when it still fails to
/// decode. Returns how many chunks moved.
pub fn quarantine(repo: &Repository, bad: &[BadChunk]) -> Result<usize, RepoError> {
    let store = repo.store();
    let mut moved = 0;
    if bad.is_empty() {
        return Ok(0);
    }
    // Before anything moves: marked damaged here, and a new removal epoch
    // for every other installation's index.
    repo.chunk_index()?
        .record_damaged(bad.iter().map(|b| b.digest))?;
    repo.new_chunk_epoch()?;
    let mut codec = Codec::new(1);
    for b in bad {
        let places = repo
            .with_pack_map(|m| m.locate(&b.digest))?
            .unwrap_or_default();
        let mut set_aside = false;
        for loc in places {
            let Ok(blob) = loc.read(store) else {
                continue;
            };
            if codec.decode(&blob, &b.digest, repo.keys()).is_err() {
                store.put(&super::pack::quarantine_key(&b.digest, &loc.pack), &blob)?;
                set_aside = true;
            }
        }
        let key = b.digest.key();
        match store.get(&key) {
            Ok(blob) => {
                let aside = format!("{}{}", super::pack::QUARANTINE_PREFIX, b.digest.to_hex());
                store.put(&aside, &blob)?;
                store.delete(&key)?;
                set_aside = true;
            }
            Err(StoreError::NotFound(_)) => {}
            Err(_) => {
                store.delete(&key)?;
                set_aside = true;
            }
        }
        if set_aside {
            moved += 1;
        }
    }
    store.flush()?;
    repo.reload_pack_map()?;
    Ok(moved)
}

/// What gc found and did.
#[derive(Debug, Default)]
pub struct GcReport {
    pub chunks_referenced: usize,
    pub chunks_deleted: usize,
    pub bytes_freed: u64,
    /// Unreferenced but younger than the grace period: a backup running now
    /// may have just deduplicated against them.
    pub chunks_kept_young: usize,
    /// Leftovers of interrupted writes and points without a manifest.
    pub incomplete_deleted: usize,
    /// Unreferenced, but still under an immutability lock: left for a later
    /// gc (the server refused; coffer does not retry).
    pub chunks_locked: usize,
    /// Lock objects whose holder is gone (a dead process, or no refresh for
    /// `lock::STALE_AFTER`).
    pub stale_locks_removed: usize,
    /// Empty directories (point and VM directories of killed runs).
    pub empty_dirs_removed: usize,
    /// Packs deleted because nothing they hold is referenced.
    pub packs_deleted: usize,
    /// Packs whose referenced chunks were moved to new packs (their waste
    /// passed the tier's threshold), then deleted.
    pub packs_repacked: usize,
    /// Packs that would be deleted or repacked but are still immutable.
    pub packs_locked: usize,
    /// Packs whose trailer cannot be read and that no index names: never
    /// deleted (their content is unknown); `coffer repo verify` says more.
    pub packs_unreadable: usize,
}

/// What gc does with the packs of a repository.
#[derive(Default)]
struct PackSweep {
    /// Nothing in them is referenced: deleted.
    dead: Vec<super::pack::PackId>,
    /// Their waste passed the threshold: referenced chunks moved, then deleted.
    repack: Vec<(super::pack::PackId, Vec<super::pack::Entry>)>,
    /// Kept as they are.
    keep: Vec<super::pack::PackRecord>,
    /// Unreferenced chunks that go with `dead` and `repack`, with their
    /// pack and stored size.
    gone: Vec<(super::pack::PackId, ChunkDigest, u64)>,
    /// The index objects must be rewritten (packs go, a kept pack is named
    /// by no index, or there are many index objects).
    rewrite_index: bool,
    young: usize,
    locked: usize,
    unreadable: usize,
}

/// Above this many index objects gc merges them into one.
const MAX_INDEX_OBJECTS: usize = 32;

/// Decides, from a fresh pack map, which packs gc deletes, repacks and
/// keeps. A pack is touched only when it is older than the grace period
/// and no longer immutable; a referenced chunk whose blob fails its CRC
/// keeps its pack (verify and quarantine deal with it).
fn sweep_packs(
    repo: &Repository,
    marked: &HashSet<ChunkDigest>,
    old_enough: impl Fn(SystemTime) -> bool,
    now: SystemTime,
) -> Result<PackSweep, RepoError> {
    let mut plan = PackSweep::default();
    repo.reload_pack_map()?;
    let immutable = repo.store().immutable_for();
    let waste_limit = repo.repack_waste();
    repo.with_pack_map(|map| {
        plan.unreadable = map.unreadable.len();
        plan.rewrite_index = map.index_objects.len() + map.bad_index_objects.len()
            > MAX_INDEX_OBJECTS
            || !map.bad_index_objects.is_empty();
        let mut ids: Vec<_> = map.packs.keys().copied().collect();
        ids.sort();
        for id in ids {
            let info = &map.packs[&id];
            let data: u64 = info.entries.iter().map(|e| e.length as u64).sum();
            let unused: Vec<&super::pack::Entry> = info
                .entries
                .iter()
                .filter(|e| !marked.contains(&e.digest))
                .collect();
            let waste: u64 = unused.iter().map(|e| e.length as u64).sum();
            let keep = |plan: &mut PackSweep| {
                if !info.indexed {
                    plan.rewrite_index = true;
                }
                plan.keep.push(super::pack::PackRecord {
                    id,
                    size: info.size,
                    entries: info.entries.clone(),
                })
            };
            if !unused.is_empty() && !old_enough(info.modified) {
                plan.young += unused.len();
                keep(&mut plan);
                continue;
            }
            let wanted = unused.len() == info.entries.len()
                || (data > 0 && waste as f64 / data as f64 >= waste_limit);
            if unused.is_empty() || !wanted {
                keep(&mut plan);
                continue;
            }
            if immutable.is_some_and(|keep_for| info.modified + keep_for > now) {
                plan.locked += 1;
                keep(&mut plan);
                continue;
            }
            plan.rewrite_index = true;
            plan.gone
                .extend(unused.iter().map(|e| (id, e.digest, e.length as u64)));
            if unused.len() == info.entries.len() {
                plan.dead.push(id);
            } else {
                let live = info
                    .entries
                    .iter()
                    .filter(|e| marked.contains(&e.digest))
                    .copied()
                    .collect();
                plan.repack.push((id, live));
            }
        }
    })?;
    Ok(plan)
}

/// Moves the referenced chunks of the packs in `plan.repack` into new
/// packs (each read whole, each blob's CRC checked first). A pack with a
/// damaged referenced blob is kept instead. Returns the new packs' records.
fn repack(
    repo: &Repository,
    plan: &mut PackSweep,
) -> Result<Vec<super::pack::PackRecord>, RepoError> {
    let mut moved: HashSet<ChunkDigest> = HashSet::new();
    let mut kept_back = Vec::new();
    for (id, live) in std::mem::take(&mut plan.repack) {
        let bytes = repo.store().get(&id.key())?;
        let blob = |e: &super::pack::Entry| {
            bytes.get(e.offset as usize..e.offset as usize + e.length as usize)
        };
        if live
            .iter()
            .any(|e| blob(e).is_none_or(|b| Codec::check_crc(b).is_err()))
        {
            kept_back.push(id);
            continue;
        }
        for e in &live {
            if moved.insert(e.digest) {
                repo.put_chunk_blob(&e.digest, blob(e).expect("checked above"))?;
            }
        }
        plan.repack.push((id, live));
    }
    if !kept_back.is_empty() {
        // Its unreferenced chunks stay too.
        repo.with_pack_map(|map| {
            for id in &kept_back {
                let info = &map.packs[id];
                plan.gone.retain(|(p, _, _)| p != id);
                plan.keep.push(super::pack::PackRecord {
                    id: *id,
                    size: info.size,
                    entries: info.entries.clone(),
                });
            }
        })?;
    }
    repo.finish_packs()
}

/// Mark and sweep. Refuses to sweep when a manifest cannot be read: a
/// damaged manifest must not make its chunks look unreferenced. Runs alone
/// (an exclusive lock): a backup or copy in progress makes it fail with
/// `Busy` rather than sweep a chunk that backup has deduplicated against.
pub fn gc(repo: &Repository, grace: Duration, dry_run: bool) -> Result<GcReport, RepoError> {
    let _lock = if dry_run {
        None
    } else {
        Some(repo.lock(LockKind::Exclusive, "gc")?)
    };
    let now = SystemTime::now();
    let old_enough = |t: SystemTime| now.duration_since(t).is_ok_and(|age| age >= grace);
    let (points, bad) = load_points(repo, None)?;
    if let Some((p, why)) = bad.first() {
        return Err(RepoError::Invalid(format!(
            "gc stopped before deleting anything: point {p} is unreadable ({why}); run `coffer repo verify` and prune or repair it first"
        )));
    }
    let mut marked: HashSet<ChunkDigest> = HashSet::new();
    let mut live_prefixes: HashSet<String> = HashSet::new();
    for (m, indexes) in &points {
        let (vm, point) = m.ids()?;
        live_prefixes.insert(manifest::point_prefix(&vm, &point));
        marked.extend(m.file_digests());
        for idx in indexes {
            marked.extend(idx.chunks.iter().copied());
        }
    }
    marked.remove(&ZERO_DIGEST);
    let mut report = GcReport {
        chunks_referenced: marked.len(),
        ..GcReport::default()
    };
    if !dry_run {
        repo.expire_chunk_epochs()?;
    }
    // Read before the listing: a removal by anyone after it shows as a new
    // epoch, and this index is then reconciled again before it is trusted.
    let epochs_before = repo.chunk_epochs()?;
    let all_chunks: Vec<(ChunkDigest, u64, SystemTime)> = repo
        .store()
        .list("chunks/")?
        .into_iter()
        .filter_map(|o| ChunkDigest::from_key(&o.key).map(|d| (d, o.size_bytes, o.modified)))
        .collect();
    let mut packs = if repo.has_packs() {
        sweep_packs(repo, &marked, old_enough, now)?
    } else {
        PackSweep::default()
    };
    report.packs_locked = packs.locked;
    report.packs_unreadable = packs.unreadable;
    report.chunks_kept_young += packs.young;
    let mut sweep: Vec<(ChunkDigest, u64)> = Vec::new();
    for (digest, size, modified) in &all_chunks {
        if marked.contains(digest) {
            continue;
        }
        if !old_enough(*modified) {
            report.chunks_kept_young += 1;
            continue;
        }
        sweep.push((*digest, *size));
    }
    let mut deleted: HashSet<ChunkDigest> = HashSet::new();
    if dry_run {
        report.chunks_deleted = sweep.len() + packs.gone.len();
        report.bytes_freed = sweep.iter().map(|(_, s)| s).sum::<u64>()
            + packs.gone.iter().map(|(_, _, s)| s).sum::<u64>();
        report.packs_deleted = packs.dead.len();
        report.packs_repacked = packs.repack.len();
    } else {
        // New packs for what is moved, and an index naming every pack that
        // stays, are durable before any pack or index object goes.
        let survivors = if packs.rewrite_index {
            let mut records = repack(repo, &mut packs)?;
            records.extend(std::mem::take(&mut packs.keep));
            let (key, bytes) = super::pack::encode_index(&records);
            repo.store().put(&key, &bytes)?;
            repo.store().flush()?;
            Some((key, records))
        } else {
            None
        };
        // The index forgets a chunk (durably) before it is deleted, and
        // every other installation learns of the removal first: no index
        // ever keeps a "present" row for a chunk that is gone.
        let index = repo.chunk_index()?;
        let mut epochs_now = epochs_before.clone();
        if !sweep.is_empty() || !packs.gone.is_empty() {
            index.forget(
                (sweep.iter().map(|(d, _)| *d)).chain(packs.gone.iter().map(|(_, d, _)| *d)),
            )?;
            let mine = repo.new_chunk_epoch()?;
            let expected = {
                let mut v: Vec<&str> = epochs_before
                    .split(',')
                    .filter(|e| !e.is_empty())
                    .chain(std::iter::once(mine.as_str()))
                    .collect();
                v.sort();
                v.join(",")
            };
            let after = repo.chunk_epochs()?;
            // Someone else removed chunks meanwhile: leave the index marked
            // stale so the next writer reconciles it.
            if after == expected {
                epochs_now = after;
            }
        }
        for (digest, size) in &sweep {
            match repo.store().delete(&digest.key()) {
                Ok(()) => {}
                Err(StoreError::Locked { .. }) => {
                    report.chunks_locked += 1;
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
            deleted.insert(*digest);
            report.chunks_deleted += 1;
            report.bytes_freed += size;
        }
        if let Some((new_index, _)) = &survivors {
            // A pack the server still refuses to delete is counted as
            // locked, not as deleted or repacked, and frees nothing.
            let mut freed: HashMap<super::pack::PackId, (usize, u64)> = HashMap::new();
            for (id, _, size) in &packs.gone {
                let f = freed.entry(*id).or_default();
                f.0 += 1;
                f.1 += size;
            }
            let gone = (packs.dead.iter().map(|id| (id, false)))
                .chain(packs.repack.iter().map(|(id, _)| (id, true)));
            for (id, repacked) in gone {
                match repo.store().delete(&id.key()) {
                    Ok(()) if repacked => report.packs_repacked += 1,
                    Ok(()) => report.packs_deleted += 1,
                    Err(StoreError::Locked { .. }) => {
                        report.packs_locked += 1;
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                }
                let (chunks, bytes) = freed.get(id).copied().unwrap_or_default();
                report.chunks_deleted += chunks;
                report.bytes_freed += bytes;
            }
            // Every index object but the new one: what they name that still
            // exists, the new one names too.
            for o in repo.store().list(super::pack::PACK_INDEX_PREFIX)? {
                if &o.key != new_index {
                    match repo.store().delete(&o.key) {
                        Ok(()) | Err(StoreError::Locked { .. }) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            repo.store().flush()?;
            repo.reload_pack_map()?;
        }
        let mut listed: HashSet<ChunkDigest> = all_chunks
            .iter()
            .filter(|(d, size, _)| *size >= chunk::MIN_BLOB_BYTES && !deleted.contains(d))
            .map(|(d, _, _)| *d)
            .collect();
        repo.with_pack_map(|m| listed.extend(m.digests().copied()))?;
        index.reconcile(&listed, &epochs_now)?;
    }
    // Indexes of points that never got their manifest (an interrupted
    // backup or copy), and temporary files of interrupted writes.
    let store = repo.store();
    let mut leftovers: Vec<(String, u64)> = store
        .list("points/")?
        .into_iter()
        .filter(|o| old_enough(o.modified))
        // A key no store would accept (only a foreign S3 client can create
        // one) is left alone: gc deletes only what coffer could have written.
        .filter(|o| super::store::check_key(&o.key).is_ok())
        .filter(|o| !live_prefixes.iter().any(|p| o.key.starts_with(p.as_str())))
        .map(|o| (o.key, o.size_bytes))
        .collect();
    leftovers.extend(
        store
            .incomplete()?
            .into_iter()
            .filter(|o| old_enough(o.modified))
            .map(|o| (o.key, o.size_bytes)),
    );
    let mut emptied = Vec::new();
    for (key, size) in leftovers {
        if !dry_run {
            store.delete(&key)?;
            emptied.push(key);
        }
        report.incomplete_deleted += 1;
        report.bytes_freed += size;
    }
    if !dry_run {
        // Every other holder conflicts with gc's exclusive lock, so what is
        // left besides gc's own lock belongs to holders that are gone.
        report.stale_locks_removed = repo.remove_stale_locks()?.len();
        report.empty_dirs_removed = store.remove_empty_dirs("points/", grace, &emptied)?;
    }
    Ok(report)
}

/// What a copy sent.
#[derive(Debug, Default)]
pub struct CopyReport {
    pub chunks_sent: usize,
    pub bytes_sent: u64,
    pub chunks_present: usize,
}

/// Copies a point to another repository: only the chunks the target lacks
/// (known from one listing), then the indexes, then the manifest. When both
/// repositories key chunk ids alike the blobs travel as they are; otherwise
/// each chunk is re-encoded for the target and the indexes rewritten.
pub fn copy_point(
    from: &Repository,
    to: &Repository,
    point: &PointRef,
    threads: usize,
) -> Result<(Manifest, CopyReport), RepoError> {
    let m = from.read_manifest(point)?;
    let _lock = to.lock(
        LockKind::Shared,
        &format!("copy of point {}", point.point_id),
    )?;
    let target_index = to.trusted_chunk_index()?;
    let sent: Mutex<HashSet<ChunkDigest>> = Mutex::new(HashSet::new());
    let target_has = |d: &ChunkDigest| -> Result<bool, RepoError> {
        Ok(sent.lock().unwrap().contains(d) || target_index.is_present(d)?)
    };
    let same_keying = match (from.keys(), to.keys()) {
        (None, None) => true,
        (Some(a), Some(b)) => a.id_key == b.id_key,
        _ => false,
    };
    let mut new_manifest = m.clone();
    let report = Mutex::new(CopyReport::default());
    // The point's files (.vmx, .nvram): one chunk each, proven, re-encoded
    // when the keying differs.
    let mut codec = Codec::new(1);
    for (entry, d) in new_manifest.files.iter_mut().zip(m.file_digests()) {
        let plain = from.read_chunk(&mut codec, &d)?;
        let nd = super::chunk::digest(&plain, to.keys());
        if !target_has(&nd)? {
            let blob = codec.encode(&plain, &nd, to.keys());
            to.put_chunk_blob(&nd, &blob)?;
            sent.lock().unwrap().insert(nd);
            let mut r = report.lock().unwrap();
            r.chunks_sent += 1;
            r.bytes_sent += blob.len() as u64;
        }
        entry.1 = nd.to_hex();
    }
    for (disk, entry) in m.disks.iter().zip(new_manifest.disks.iter_mut()) {
        let index = from.read_index(&m, disk)?;
        let mut unique: Vec<ChunkDigest> = index
            .chunks
            .iter()
            .copied()
            .filter(|d| *d != ZERO_DIGEST)
            .collect();
        unique.sort();
        unique.dedup();
        let mapping: Mutex<BTreeMap<ChunkDigest, ChunkDigest>> = Mutex::new(BTreeMap::new());
        parallel::for_each(
            &unique,
            threads,
            || Codec::new(1),
            |codec, d| -> Result<(), RepoError> {
                if same_keying {
                    if target_has(d)? {
                        report.lock().unwrap().chunks_present += 1;
                        return Ok(());
                    }
                    let blob = from.chunk_blob(d)?;
                    // Never spread damage: prove the blob before sending it.
                    codec
                        .decode(&blob, d, from.keys())
                        .map_err(|source| RepoError::Chunk {
                            digest: d.to_hex(),
                            source,
                        })?;
                    to.put_chunk_blob(d, &blob)?;
                    sent.lock().unwrap().insert(*d);
                    let mut r = report.lock().unwrap();
                    r.chunks_sent += 1;
                    r.bytes_sent += blob.len() as u64;
                } else {
                    let plain = from.read_chunk(codec, d)?;
                    let nd = super::chunk::digest(&plain, to.keys());
                    mapping.lock().unwrap().insert(*d, nd);
                    if target_has(&nd)? {
                        report.lock().unwrap().chunks_present += 1;
                        return Ok(());
                    }
                    let blob = codec.encode(&plain, &nd, to.keys());
                    to.put_chunk_blob(&nd, &blob)?;
                    sent.lock().unwrap().insert(nd);
                    let mut r = report.lock().unwrap();
                    r.chunks_sent += 1;
                    r.bytes_sent += blob.len() as u64;
                }
                Ok(())
            },
        )?;
        let mut out_index = index;
        if !same_keying {
            let mapping = mapping.into_inner().unwrap();
            for c in out_index.chunks.iter_mut() {
                if *c != ZERO_DIGEST {
                    *c = mapping[c];
                }
            }
        }
        // The target's key is derived from the point's validated ids, as
        // the source's was: never from the manifest's text.
        let key = m.index_key_of(entry)?;
        entry.index_sha256 = to.write_index(&key, &out_index)?;
    }
    let committed = to.commit_manifest(new_manifest)?;
    // After the commit's flush, and best effort, as for a backup.
    let _ = target_index.record_present(sent.into_inner().unwrap());
    Ok((committed, report.into_inner().unwrap()))
}

/// Removes a point: the manifest first (the point stops existing), then its
/// indexes. Chunks are left to gc, which knows what else uses them.
/// What a thaw of a point found and asked for, in objects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ThawReport {
    pub objects: usize,
    pub ready: usize,
    pub requested: usize,
    pub pending: usize,
}

impl ThawReport {
    /// Every object reads now.
    pub fn done(&self) -> bool {
        self.ready == self.objects
    }
}

/// Asks the store to thaw every chunk point `m` needs (its disks' and its
/// files'), each for `days` at `speed`; run again, it reports how far the
/// thaw is and asks only for what was not asked for yet. Manifests and
/// indexes are never in an archive class, so this reads them directly.
pub fn thaw_point(
    repo: &Repository,
    m: &Manifest,
    days: u32,
    speed: super::store::ThawSpeed,
    threads: usize,
) -> Result<ThawReport, RepoError> {
    use super::store::Thaw;
    let mut wanted: BTreeSet<ChunkDigest> = m.file_digests().into_iter().collect();
    for d in &m.disks {
        wanted.extend(repo.read_index(m, d)?.chunks.iter().copied());
    }
    wanted.remove(&ZERO_DIGEST);
    // The objects that hold them: each chunk's own object, or its pack.
    let work: Vec<String> = match repo.with_pack_map(|map| {
        wanted
            .iter()
            .map(|d| {
                map.locate(d)
                    .first()
                    .map_or_else(|| d.key(), |l| l.pack.key())
            })
            .collect::<BTreeSet<String>>()
    })? {
        Some(keys) => keys.into_iter().collect(),
        None => wanted.iter().map(ChunkDigest::key).collect(),
    };
    let counts = Mutex::new(ThawReport {
        objects: work.len(),
        ..ThawReport::default()
    });
    parallel::for_each(
        &work,
        threads,
        || (),
        |_, key| {
            let state = repo.store().thaw(key, days, speed)?;
            let mut c = counts.lock().unwrap();
            match state {
                Thaw::Ready => c.ready += 1,
                Thaw::Requested => c.requested += 1,
                Thaw::Pending => c.pending += 1,
            }
            Ok::<(), RepoError>(())
        },
    )?;
    Ok(counts.into_inner().unwrap())
}

/// What a migration to packs did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MigrateReport {
    /// Chunk objects moved into packs.
    pub chunks_packed: usize,
    /// Packs written.
    pub packs_written: usize,
    /// Chunk objects deleted once their pack was durable.
    pub objects_deleted: usize,
    /// Chunk objects left where they are: still immutable (a later
    /// migration removes them) or damaged (`coffer repo verify` reports
    /// them).
    pub objects_left: usize,
    /// The repository was already at version 2 (a run that finishes an
    /// interrupted migration).
    pub was_packed: bool,
}

/// Moves a repository's chunk objects into packs of `target_bytes` and
/// makes it version 2, under the exclusive lock. Order: the packs and their
/// index are durable first, then the config says version 2, and only then
/// are the chunk objects deleted, so a run killed at any point leaves every
/// chunk readable (from its object, its pack, or both); running it again
/// finishes the job. Each blob's CRC is checked before it is packed; a
/// damaged one stays an object for verify to report.
pub fn migrate_to_packs(repo: &Repository, target_bytes: u64) -> Result<MigrateReport, RepoError> {
    let _lock = repo.lock(LockKind::Exclusive, "migration to packs")?;
    let mut report = MigrateReport {
        was_packed: repo.has_packs(),
        ..MigrateReport::default()
    };
    let mut config = repo.config.clone();
    config.packs = Some(config.packs.unwrap_or(super::PackConfig { target_bytes }));
    config.version = 2;
    let packed = repo.clone().packed(config.packs.expect("just set"));
    packed.reload_pack_map()?;
    let objects: Vec<_> = repo
        .store()
        .list(chunk::CHUNKS_PREFIX)?
        .into_iter()
        .filter_map(|o| ChunkDigest::from_key(&o.key).map(|d| (d, o.key)))
        .collect();
    let mut in_packs: Vec<(ChunkDigest, String)> = Vec::new();
    for (d, key) in objects {
        if packed.with_pack_map(|m| m.contains(&d))?.unwrap_or(false) {
            in_packs.push((d, key));
            continue;
        }
        let blob = match repo.store().get(&key) {
            Ok(b) => b,
            Err(StoreError::NotFound(_)) => continue,
            Err(e) => return Err(e.into()),
        };
        if Codec::check_crc(&blob).is_err() {
            report.objects_left += 1;
            continue;
        }
        packed.put_chunk_blob(&d, &blob)?;
        report.chunks_packed += 1;
        in_packs.push((d, key));
    }
    report.packs_written = packed.finish_packs()?.len();
    repo.store().flush()?;
    if !report.was_packed {
        repo.store().put(
            "config",
            &serde_json::to_vec_pretty(&config).expect("config serializes"),
        )?;
        repo.store().flush()?;
    }
    for (_, key) in in_packs {
        match repo.store().delete(&key) {
            Ok(()) => report.objects_deleted += 1,
            Err(StoreError::Locked { .. }) => report.objects_left += 1,
            Err(e) => return Err(e.into()),
        }
    }
    repo.store().flush()?;
    Ok(report)
}

pub fn prune_point(repo: &Repository, point: &PointRef) -> Result<(), RepoError> {
    let m = repo.read_manifest(point)?;
    // Keys derived from the point's validated ids, never the manifest's text.
    repo.store().delete(&m.key()?)?;
    repo.store().flush()?;
    for d in &m.disks {
        repo.store().delete(&m.index_key_of(d)?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{Sample, SampleError};

    #[test]
    fn a_sample_is_a_part_below_its_whole() {
        let s: Sample = "3/7".parse().unwrap();
        assert_eq!((s.part, s.of), (3, 7));
        let s: Sample = "0/1".parse().unwrap();
        assert_eq!((s.part, s.of), (0, 1));
    }

    #[test]
    fn a_sample_refuses_other_forms() {
        assert!(matches!("3".parse::<Sample>(), Err(SampleError::Form)));
        assert!(matches!(
            "a/7".parse::<Sample>(),
            Err(SampleError::Number(_))
        ));
        for bad in ["7/7", "8/7", "0/0"] {
            let e = bad.parse::<Sample>().unwrap_err();
            assert!(matches!(e, SampleError::Range(_)), "{bad}");
            assert_eq!(
                e.to_string(),
                format!("{bad}: PART must be below OF (0/7 … 6/7)")
            );
        }
    }
}
