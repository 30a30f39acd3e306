//! A restore point as a small NFS datastore: one folder named after the
//! recovered VM, holding its `.vmx` (rewritten as a restore rewrites it),
//! its NVRAM when the point kept one, and per disk a VMDK descriptor and a
//! flat extent whose bytes come from the repository's chunks, fetched,
//! decrypted and decompressed on demand with a chunk cache.
//!
//! Nothing is ever written into the repository. Every write goes to the
//! session's overlay folder on local disk:
//! - a write into a file of the point copies each touched 4 KiB block
//!   into a sparse file `base-<id>` the first time (copy on write) and
//!   writes there, and reads take those blocks from the overlay;
//! - files the host creates (`.lck-*` lock files, `.vswp`, `vmware.log`,
//!   the `.vmx~` it renames over the `.vmx`) live whole in the overlay as
//!   `new-<id>`.
//!
//! The file system is served over NFS v3 by `nfsserve` (see `serve`).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use async_trait::async_trait;
use nfsserve::nfs::{
    fattr3, fileid3, filename3, ftype3, nfspath3, nfsstat3, nfstime3, sattr3, set_size3, specdata3,
};
use nfsserve::vfs::{DirEntry, NFSFileSystem, ReadDirResult, VFSCapabilities};

use crate::repo::Repository;
use crate::repo::chunk::{Codec, ZERO_DIGEST};
use crate::repo::index::DiskIndex;
use crate::repo::manifest::Manifest;
use crate::run::restore::{VmxChanges, disk_position, disk_stem, rewrite_vmx_for};

/// The export's root directory.
const ROOT: fileid3 = 1;
/// The VM's folder, the root's only entry.
const FOLDER: fileid3 = 2;
/// The first id of the point's files; created files start at `FIRST_NEW`.
const FIRST_BASE: fileid3 = 3;
const FIRST_NEW: fileid3 = 1 << 20;
/// The copy-on-write unit of the overlay: the sector size guests write in
/// is 512 bytes, file systems write 4 KiB blocks.
const BLOCK: u64 = 4096;
/// Decoded chunks kept in memory, at most this many bytes.
const CACHE_BYTES: usize = 256 << 20;

/// What a file of the point holds.
enum Content {
    /// A small file, whole (.vmx, .nvram, a disk's descriptor).
    Bytes(Vec<u8>),
    /// A disk's flat extent, by its index in the repository.
    Disk(DiskIndex),
}

struct BaseFile {
    name: String,
    content: Content,
    size: u64,
}

/// A file or folder the host created in the VM's folder.
struct Created {
    name: String,
    parent: fileid3,
    dir: bool,
}

/// What changed on top of the point, in memory; the written bytes are in
/// the overlay folder.
#[derive(Default)]
struct Changes {
    /// Base files' blocks that were written (copied to `base-<id>`).
    dirty: HashMap<fileid3, BTreeSet<u64>>,
    /// Base files' sizes after a SETATTR or a write past their end.
    sizes: HashMap<fileid3, u64>,
    /// Base files the host removed or renamed something over.
    removed: HashSet<fileid3>,
    /// Base files the host renamed: their new names.
    renamed: HashMap<fileid3, (fileid3, String)>,
    created: BTreeMap<fileid3, Created>,
    next: fileid3,
    mtimes: HashMap<fileid3, nfstime3>,
}

/// Decoded chunks, least recently used dropped first.
#[derive(Default)]
struct ChunkCache {
    map: HashMap<crate::repo::chunk::ChunkDigest, Arc<Vec<u8>>>,
    order: VecDeque<crate::repo::chunk::ChunkDigest>,
    bytes: usize,
}

impl ChunkCache {
    fn get(&mut self, d: &crate::repo::chunk::ChunkDigest) -> Option<Arc<Vec<u8>>> {
        let hit = self.map.get(d).cloned()?;
        if let Some(i) = self.order.iter().position(|x| x == d) {
            self.order.remove(i);
        }
        self.order.push_back(*d);
        Some(hit)
    }

    fn put(&mut self, d: crate::repo::chunk::ChunkDigest, plain: Arc<Vec<u8>>) {
        if self.map.contains_key(&d) {
            return;
        }
        self.bytes += plain.len();
        self.map.insert(d, plain);
        self.order.push_back(d);
        while self.bytes > CACHE_BYTES {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(p) = self.map.remove(&old) {
                self.bytes -= p.len();
            }
        }
    }
}

struct Inner {
    repo: Repository,
    folder: String,
    base: Vec<BaseFile>,
    overlay: PathBuf,
    changes: Mutex<Changes>,
    cache: Mutex<ChunkCache>,
    started: nfstime3,
    /// Bytes read from the repository's chunks (decoded), for the figures.
    chunk_bytes_read: std::sync::atomic::AtomicU64,
}

/// A restore point served as a datastore; clones share one state.
#[derive(Clone)]
pub struct PointExport {
    inner: Arc<Inner>,
}

fn now() -> nfstime3 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    nfstime3 {
        seconds: d.as_secs() as u32,
        nseconds: d.subsec_nanos(),
    }
}

fn io_err(e: impl std::fmt::Display) -> nfsstat3 {
    tracing::warn!("instant recovery export: {e}");
    nfsstat3::NFS3ERR_IO
}

fn name_of(f: &filename3) -> Result<String, nfsstat3> {
    let s = std::str::from_utf8(&f.0).map_err(|_| nfsstat3::NFS3ERR_INVAL)?;
    if s.is_empty() || s == "." || s == ".." || s.contains('/') {
        return Err(nfsstat3::NFS3ERR_INVAL);
    }
    Ok(s.to_string())
}

impl PointExport {
    /// The export of point `m` of `repo` as the VM `changes.name`, its
    /// writes kept in `overlay` (created if missing).
    pub fn new(
        repo: Repository,
        m: &Manifest,
        changes: &VmxChanges,
        overlay: &Path,
    ) -> Result<PointExport> {
        let stem = crate::repo::ids::FileStem::parse(&changes.name)
            .map_err(|e| anyhow::anyhow!("the recovered VM's name cannot be used: {e}"))?;
        let stem = stem.as_str().to_string();
        let mut base = Vec::new();
        let vmx = m
            .files
            .iter()
            .find(|(n, _)| n.ends_with(".vmx"))
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "point {} holds no .vmx: a VM cannot be booted from it",
                    m.point_id
                )
            })?;
        let text = repo.read_file(m, &vmx.0)?;
        let text = rewrite_vmx_for(&String::from_utf8_lossy(&text), changes, m);
        base.push((format!("{stem}.vmx"), Content::Bytes(text.into_bytes())));
        if let Some((name, _)) = m.files.iter().find(|(n, _)| n.ends_with(".nvram")) {
            base.push((
                format!("{stem}.nvram"),
                Content::Bytes(repo.read_file(m, name)?),
            ));
        }
        for disk in &m.disks {
            let index = repo
                .read_index(m, disk)
                .with_context(|| format!("reading the index of {}", disk.label))?;
            let disk_stem = disk_stem(&stem, disk_position(m, disk.device_key));
            let flat = format!("{disk_stem}-flat.vmdk");
            let descriptor = crate::repo::restore::vmdk_descriptor(index.disk_size_bytes, &flat);
            base.push((
                format!("{disk_stem}.vmdk"),
                Content::Bytes(descriptor.into_bytes()),
            ));
            base.push((flat, Content::Disk(index)));
        }
        std::fs::create_dir_all(overlay)
            .with_context(|| format!("creating the overlay {}", overlay.display()))?;
        let base = base
            .into_iter()
            .map(|(name, content)| {
                let size = match &content {
                    Content::Bytes(b) => b.len() as u64,
                    Content::Disk(i) => i.disk_size_bytes,
                };
                BaseFile {
                    name,
                    content,
                    size,
                }
            })
            .collect();
        Ok(PointExport {
            inner: Arc::new(Inner {
                repo,
                folder: stem,
                base,
                overlay: overlay.to_path_buf(),
                changes: Mutex::new(Changes {
                    next: FIRST_NEW,
                    ..Changes::default()
                }),
                cache: Mutex::new(ChunkCache::default()),
                started: now(),
                chunk_bytes_read: Default::default(),
            }),
        })
    }

    /// The VM's folder in the export (the recovered VM's name).
    pub fn folder(&self) -> &str {
        &self.inner.folder
    }

    /// Decoded bytes read from the repository so far.
    pub fn chunk_bytes_read(&self) -> u64 {
        self.inner
            .chunk_bytes_read
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    fn base(&self, id: fileid3) -> Option<&BaseFile> {
        let i = id.checked_sub(FIRST_BASE)? as usize;
        (id < FIRST_NEW).then(|| self.inner.base.get(i)).flatten()
    }

    fn overlay_file(&self, id: fileid3) -> PathBuf {
        if id >= FIRST_NEW {
            self.inner.overlay.join(format!("new-{id}"))
        } else {
            self.inner.overlay.join(format!("base-{id}"))
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Changes> {
        self.inner.changes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The entries of directory `dir`: (id, name).
    fn entries(&self, dir: fileid3) -> Vec<(fileid3, String)> {
        let c = self.lock();
        let mut out = Vec::new();
        if dir == ROOT {
            out.push((FOLDER, self.inner.folder.clone()));
        }
        if dir == FOLDER {
            for (i, f) in self.inner.base.iter().enumerate() {
                let id = FIRST_BASE + i as u64;
                if c.removed.contains(&id) {
                    continue;
                }
                match c.renamed.get(&id) {
                    Some((parent, name)) if *parent == dir => out.push((id, name.clone())),
                    Some(_) => {}
                    None => out.push((id, f.name.clone())),
                }
            }
        } else {
            for (id, (parent, name)) in &c.renamed {
                if *parent == dir && !c.removed.contains(id) {
                    out.push((*id, name.clone()));
                }
            }
        }
        for (id, f) in &c.created {
            if f.parent == dir {
                out.push((*id, f.name.clone()));
            }
        }
        out.sort();
        out
    }

    fn is_dir(&self, id: fileid3) -> bool {
        id == ROOT || id == FOLDER || self.lock().created.get(&id).is_some_and(|f| f.dir)
    }

    fn exists(&self, id: fileid3) -> bool {
        if id == ROOT || id == FOLDER {
            return true;
        }
        let c = self.lock();
        if id >= FIRST_NEW {
            c.created.contains_key(&id)
        } else {
            self.base(id).is_some() && !c.removed.contains(&id)
        }
    }

    fn size(&self, id: fileid3) -> Result<u64, nfsstat3> {
        if id >= FIRST_NEW {
            return Ok(std::fs::metadata(self.overlay_file(id))
                .map(|m| m.len())
                .unwrap_or(0));
        }
        let b = self.base(id).ok_or(nfsstat3::NFS3ERR_STALE)?;
        Ok(self.lock().sizes.get(&id).copied().unwrap_or(b.size))
    }

    fn attr(&self, id: fileid3) -> Result<fattr3, nfsstat3> {
        if !self.exists(id) {
            return Err(nfsstat3::NFS3ERR_STALE);
        }
        let dir = self.is_dir(id);
        let size = if dir { 4096 } else { self.size(id)? };
        let mtime = self
            .lock()
            .mtimes
            .get(&id)
            .copied()
            .unwrap_or(self.inner.started);
        Ok(fattr3 {
            ftype: if dir { ftype3::NF3DIR } else { ftype3::NF3REG },
            mode: if dir { 0o755 } else { 0o644 },
            nlink: if dir { 2 } else { 1 },
            uid: 0,
            gid: 0,
            size,
            used: size,
            rdev: specdata3::default(),
            fsid: 0,
            fileid: id,
            atime: mtime,
            mtime,
            ctime: mtime,
        })
    }

    /// Reads `len` bytes at `at` of a file of the point, as written so far.
    fn read_base(&self, id: fileid3, at: u64, len: u64) -> Result<Vec<u8>, nfsstat3> {
        let b = self.base(id).ok_or(nfsstat3::NFS3ERR_STALE)?;
        let size = self.size(id)?;
        let end = (at + len).min(size);
        if at >= end {
            return Ok(Vec::new());
        }
        let mut out = self.read_point(b, at, end - at)?;
        // Blocks the host wrote come from the overlay.
        let dirty: Vec<u64> = self
            .lock()
            .dirty
            .get(&id)
            .map(|d| d.range(at / BLOCK..end.div_ceil(BLOCK)).copied().collect())
            .unwrap_or_default();
        if !dirty.is_empty() {
            let f = File::open(self.overlay_file(id)).map_err(io_err)?;
            for blk in dirty {
                let (s, e) = ((blk * BLOCK).max(at), ((blk + 1) * BLOCK).min(end));
                f.read_exact_at(&mut out[(s - at) as usize..(e - at) as usize], s)
                    .map_err(io_err)?;
            }
        }
        Ok(out)
    }

    /// The point's own bytes at `at` (zeros past the point's size).
    fn read_point(&self, b: &BaseFile, at: u64, len: u64) -> Result<Vec<u8>, nfsstat3> {
        let mut out = vec![0u8; len as usize];
        match &b.content {
            Content::Bytes(bytes) => {
                let s = (at as usize).min(bytes.len());
                let e = ((at + len) as usize).min(bytes.len());
                out[..e - s].copy_from_slice(&bytes[s..e]);
            }
            Content::Disk(index) => {
                let cs = index.chunk_size_bytes as u64;
                let end = (at + len).min(index.disk_size_bytes);
                let mut pos = at;
                while pos < end {
                    let i = (pos / cs) as usize;
                    let range = index.range(i);
                    let upto = range.end.min(end);
                    let digest = index.chunks[i];
                    if digest != ZERO_DIGEST {
                        let plain = self.chunk(&digest, range.end - range.start)?;
                        out[(pos - at) as usize..(upto - at) as usize].copy_from_slice(
                            &plain[(pos - range.start) as usize..(upto - range.start) as usize],
                        );
                    }
                    pos = upto;
                }
            }
        }
        Ok(out)
    }

    fn chunk(
        &self,
        digest: &crate::repo::chunk::ChunkDigest,
        len: u64,
    ) -> Result<Arc<Vec<u8>>, nfsstat3> {
        let cached = self
            .inner
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(digest);
        if let Some(hit) = cached {
            return Ok(hit);
        }
        let plain = self
            .inner
            .repo
            .read_chunk(&mut Codec::new(1), digest)
            .map_err(io_err)?;
        if plain.len() as u64 != len {
            return Err(io_err(format!(
                "chunk {} has the wrong length for its place",
                digest.to_hex()
            )));
        }
        self.inner
            .chunk_bytes_read
            .fetch_add(len, std::sync::atomic::Ordering::Relaxed);
        let plain = Arc::new(plain);
        self.inner
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .put(*digest, plain.clone());
        Ok(plain)
    }

    /// Sets the size of a file of the point.
    fn resize_base(&self, id: fileid3, size: u64) -> Result<(), nfsstat3> {
        let old = self.size(id)?;
        if size == old {
            return Ok(());
        }
        // The block holding the new or old end is copied to the overlay;
        // every block past it reads from the overlay file, which reads
        // zeros where it was never written, as a grown file does.
        let edge = size.min(old);
        self.write_base(id, edge, &[])?;
        {
            let mut c = self.lock();
            let d = c.dirty.entry(id).or_default();
            d.extend(edge.div_ceil(BLOCK)..size.max(old).div_ceil(BLOCK));
            c.sizes.insert(id, size);
        }
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.overlay_file(id))
            .and_then(|f| f.set_len(size))
            .map_err(io_err)
    }

    /// Writes into a file of the point: each block touched for the first
    /// time is copied into the overlay first.
    fn write_base(&self, id: fileid3, at: u64, data: &[u8]) -> Result<(), nfsstat3> {
        let b = self.base(id).ok_or(nfsstat3::NFS3ERR_STALE)?;
        let path = self.overlay_file(id);
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_err)?;
        if at > self.size(id)? {
            self.resize_base(id, at)?;
        }
        let end = at + data.len() as u64;
        let size = self.size(id)?;
        let mut c = self.lock();
        let dirty = c.dirty.entry(id).or_default();
        for blk in at / BLOCK..end.div_ceil(BLOCK) {
            if dirty.contains(&blk) {
                continue;
            }
            let (s, e) = (blk * BLOCK, (blk + 1) * BLOCK);
            let whole = at <= s && e <= end;
            if !whole && s < size {
                let old = self.read_point(b, s, e.min(size) - s)?;
                f.write_all_at(&old, s).map_err(io_err)?;
            }
            dirty.insert(blk);
        }
        f.write_all_at(data, at).map_err(io_err)?;
        if end > size {
            c.sizes.insert(id, end);
        }
        c.mtimes.insert(id, now());
        Ok(())
    }

    /// The overlay's bytes on disk (what the session's writes cost).
    pub fn overlay_bytes(overlay: &Path) -> u64 {
        use std::os::unix::fs::MetadataExt;
        walkdir::WalkDir::new(overlay)
            .into_iter()
            .filter_map(|e| e.ok())
            .filter_map(|e| e.metadata().ok())
            .filter(|m| m.is_file())
            .map(|m| m.blocks() * 512)
            .sum()
    }

    fn lookup_name(&self, dir: fileid3, name: &str) -> Option<fileid3> {
        self.entries(dir)
            .into_iter()
            .find(|(_, n)| n == name)
            .map(|(id, _)| id)
    }

    /// Runs blocking repository work off the async executor.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(PointExport) -> Result<T, nfsstat3> + Send + 'static,
    ) -> Result<T, nfsstat3> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || f(me))
            .await
            .map_err(io_err)?
    }

    fn remove_entry(&self, dir: fileid3, name: &str) -> Result<(), nfsstat3> {
        let id = self.lookup_name(dir, name).ok_or(nfsstat3::NFS3ERR_NOENT)?;
        if id == FOLDER {
            return Err(nfsstat3::NFS3ERR_ACCES);
        }
        let mut c = self.lock();
        if id >= FIRST_NEW {
            let f = c.created.remove(&id).ok_or(nfsstat3::NFS3ERR_NOENT)?;
            if f.dir && c.created.values().any(|x| x.parent == id) {
                c.created.insert(id, f);
                return Err(nfsstat3::NFS3ERR_NOTEMPTY);
            }
            drop(c);
            let _ = std::fs::remove_file(self.overlay_file(id));
        } else {
            c.removed.insert(id);
            c.dirty.remove(&id);
            drop(c);
            let _ = std::fs::remove_file(self.overlay_file(id));
        }
        Ok(())
    }

    fn create_entry(&self, dir: fileid3, name: &str, is_dir: bool) -> Result<fileid3, nfsstat3> {
        if !self.is_dir(dir) || dir == ROOT {
            return Err(nfsstat3::NFS3ERR_ACCES);
        }
        if self.lookup_name(dir, name).is_some() {
            return Err(nfsstat3::NFS3ERR_EXIST);
        }
        let mut c = self.lock();
        let id = c.next;
        c.next += 1;
        c.created.insert(
            id,
            Created {
                name: name.to_string(),
                parent: dir,
                dir: is_dir,
            },
        );
        c.mtimes.insert(id, now());
        drop(c);
        if !is_dir {
            File::create(self.overlay_file(id)).map_err(io_err)?;
        }
        Ok(id)
    }
}

#[async_trait]
impl NFSFileSystem for PointExport {
    fn capabilities(&self) -> VFSCapabilities {
        VFSCapabilities::ReadWrite
    }

    fn root_dir(&self) -> fileid3 {
        ROOT
    }

    async fn lookup(&self, dirid: fileid3, filename: &filename3) -> Result<fileid3, nfsstat3> {
        if !self.is_dir(dirid) {
            return Err(nfsstat3::NFS3ERR_NOTDIR);
        }
        match &filename.0[..] {
            b"." => return Ok(dirid),
            b".." => {
                return Ok(match dirid {
                    ROOT | FOLDER => ROOT,
                    d => self.lock().created.get(&d).map_or(ROOT, |f| f.parent),
                });
            }
            _ => {}
        }
        let name = name_of(filename)?;
        self.lookup_name(dirid, &name)
            .ok_or(nfsstat3::NFS3ERR_NOENT)
    }

    async fn getattr(&self, id: fileid3) -> Result<fattr3, nfsstat3> {
        self.attr(id)
    }

    async fn setattr(&self, id: fileid3, setattr: sattr3) -> Result<fattr3, nfsstat3> {
        if let set_size3::size(size) = setattr.size {
            if self.is_dir(id) {
                return Err(nfsstat3::NFS3ERR_ISDIR);
            }
            if id >= FIRST_NEW {
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(self.overlay_file(id))
                    .map_err(io_err)?;
                f.set_len(size).map_err(io_err)?;
            } else {
                self.blocking(move |me| me.resize_base(id, size)).await?;
            }
            self.lock().mtimes.insert(id, now());
        }
        self.attr(id)
    }

    async fn read(
        &self,
        id: fileid3,
        offset: u64,
        count: u32,
    ) -> Result<(Vec<u8>, bool), nfsstat3> {
        if self.is_dir(id) {
            return Err(nfsstat3::NFS3ERR_ISDIR);
        }
        if !self.exists(id) {
            return Err(nfsstat3::NFS3ERR_STALE);
        }
        let size = self.size(id)?;
        let data = if id >= FIRST_NEW {
            let f = File::open(self.overlay_file(id)).map_err(io_err)?;
            let end = (offset + count as u64).min(size);
            let mut buf = vec![0u8; end.saturating_sub(offset) as usize];
            f.read_exact_at(&mut buf, offset).map_err(io_err)?;
            buf
        } else {
            self.blocking(move |me| me.read_base(id, offset, count as u64))
                .await?
        };
        let eof = offset + data.len() as u64 >= size;
        Ok((data, eof))
    }

    async fn write(&self, id: fileid3, offset: u64, data: &[u8]) -> Result<fattr3, nfsstat3> {
        if self.is_dir(id) {
            return Err(nfsstat3::NFS3ERR_ISDIR);
        }
        if !self.exists(id) {
            return Err(nfsstat3::NFS3ERR_STALE);
        }
        if id >= FIRST_NEW {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(self.overlay_file(id))
                .map_err(io_err)?;
            f.write_all_at(data, offset).map_err(io_err)?;
            self.lock().mtimes.insert(id, now());
        } else {
            let data = data.to_vec();
            self.blocking(move |me| me.write_base(id, offset, &data))
                .await?;
        }
        self.attr(id)
    }

    async fn create(
        &self,
        dirid: fileid3,
        filename: &filename3,
        attr: sattr3,
    ) -> Result<(fileid3, fattr3), nfsstat3> {
        let id = self.create_entry(dirid, &name_of(filename)?, false)?;
        let a = self.setattr(id, attr).await?;
        Ok((id, a))
    }

    async fn create_exclusive(
        &self,
        dirid: fileid3,
        filename: &filename3,
    ) -> Result<fileid3, nfsstat3> {
        self.create_entry(dirid, &name_of(filename)?, false)
    }

    async fn mkdir(
        &self,
        dirid: fileid3,
        dirname: &filename3,
    ) -> Result<(fileid3, fattr3), nfsstat3> {
        let id = self.create_entry(dirid, &name_of(dirname)?, true)?;
        Ok((id, self.attr(id)?))
    }

    async fn remove(&self, dirid: fileid3, filename: &filename3) -> Result<(), nfsstat3> {
        self.remove_entry(dirid, &name_of(filename)?)
    }

    async fn rename(
        &self,
        from_dirid: fileid3,
        from_filename: &filename3,
        to_dirid: fileid3,
        to_filename: &filename3,
    ) -> Result<(), nfsstat3> {
        let (from, to) = (name_of(from_filename)?, name_of(to_filename)?);
        let id = self
            .lookup_name(from_dirid, &from)
            .ok_or(nfsstat3::NFS3ERR_NOENT)?;
        if id == FOLDER || !self.is_dir(to_dirid) || to_dirid == ROOT {
            return Err(nfsstat3::NFS3ERR_ACCES);
        }
        if let Some(old) = self.lookup_name(to_dirid, &to) {
            if old == id {
                return Ok(());
            }
            self.remove_entry(to_dirid, &to)?;
        }
        let mut c = self.lock();
        if id >= FIRST_NEW {
            if let Some(f) = c.created.get_mut(&id) {
                f.name = to;
                f.parent = to_dirid;
            }
        } else {
            c.renamed.insert(id, (to_dirid, to));
        }
        Ok(())
    }

    async fn readdir(
        &self,
        dirid: fileid3,
        start_after: fileid3,
        max_entries: usize,
    ) -> Result<ReadDirResult, nfsstat3> {
        if !self.is_dir(dirid) {
            return Err(nfsstat3::NFS3ERR_NOTDIR);
        }
        let all = self.entries(dirid);
        let skip = if start_after == 0 {
            0
        } else {
            all.iter()
                .position(|(id, _)| *id == start_after)
                .map(|i| i + 1)
                .ok_or(nfsstat3::NFS3ERR_BAD_COOKIE)?
        };
        let mut entries = Vec::new();
        for (id, name) in all.iter().skip(skip).take(max_entries) {
            entries.push(DirEntry {
                fileid: *id,
                name: name.as_bytes().into(),
                attr: self.attr(*id)?,
            });
        }
        let end = skip + entries.len() >= all.len();
        Ok(ReadDirResult { entries, end })
    }

    async fn symlink(
        &self,
        _dirid: fileid3,
        _linkname: &filename3,
        _symlink: &nfspath3,
        _attr: &sattr3,
    ) -> Result<(fileid3, fattr3), nfsstat3> {
        Err(nfsstat3::NFS3ERR_NOTSUPP)
    }

    async fn readlink(&self, _id: fileid3) -> Result<nfspath3, nfsstat3> {
        Err(nfsstat3::NFS3ERR_NOTSUPP)
    }
}
