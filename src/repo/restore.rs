//! Reading points back: a disk's chunks are fetched, checked against their
//! ids and written at their offsets by parallel workers. Zero chunks are not
//! written, so the output stays sparse. Output is a raw image or a VMDK
//! (monolithicFlat: a text descriptor next to a `-flat.vmdk` raw extent),
//! the form ESXi and qemu-img both read.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::chunk::{Codec, ZERO_DIGEST};
use super::index::DiskIndex;
use super::parallel;
use super::{RepoError, Repository};
use crate::progress::ReadProgress;

/// How many chunks of a disk one worker reads at a time (with packs: in as
/// few ranged reads as their places allow).
const RUN_CHUNKS: usize = 16;

/// What a restore wrote.
#[derive(Debug, Clone, Default)]
pub struct RestoreStats {
    pub bytes_written: u64,
    pub chunks_read: u64,
    pub files: Vec<PathBuf>,
}

/// Output format of a restored disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DiskFormat {
    Raw,
    Vmdk,
}

/// Writes the disk of `index` into `out` (already sized) in parallel,
/// counting into `progress` the bytes of the disk done (zero chunks are
/// done at once: they are holes).
pub fn restore_into(
    repo: &Repository,
    index: &DiskIndex,
    out: &File,
    threads: usize,
    progress: Option<&ReadProgress>,
) -> Result<RestoreStats, RepoError> {
    let written = AtomicU64::new(0);
    let read = AtomicU64::new(0);
    let work: Vec<usize> = (0..index.chunks.len())
        .filter(|i| index.chunks[*i] != ZERO_DIGEST)
        .collect();
    if let Some(p) = progress {
        let holes: u64 = (0..index.chunks.len())
            .filter(|i| index.chunks[*i] == ZERO_DIGEST)
            .map(|i| index.range(i).end - index.range(i).start)
            .sum();
        p.add(holes);
    }
    // Runs of the disk, so that neighbouring chunks in one pack come in one
    // ranged read.
    let runs: Vec<&[usize]> = work.chunks(RUN_CHUNKS).collect();
    parallel::for_each(
        &runs,
        threads,
        || Codec::new(1),
        |codec, run| -> Result<(), RepoError> {
            let digests: Vec<_> = run.iter().map(|&i| index.chunks[i]).collect();
            let plains = repo.read_chunks(codec, &digests)?;
            for (&i, plain) in run.iter().zip(plains) {
                let range = index.range(i);
                if plain.len() as u64 != range.end - range.start {
                    return Err(RepoError::Invalid(format!(
                        "chunk {} has the wrong length for its place",
                        index.chunks[i].to_hex()
                    )));
                }
                out.write_all_at(&plain, range.start)
                    .map_err(|e| RepoError::Invalid(format!("writing the restored disk: {e}")))?;
                written.fetch_add(plain.len() as u64, Ordering::Relaxed);
                if let Some(p) = progress {
                    p.add(plain.len() as u64);
                }
                read.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        },
    )?;
    Ok(RestoreStats {
        bytes_written: written.into_inner(),
        chunks_read: read.into_inner(),
        files: Vec::new(),
    })
}

/// A restored file under construction: a temporary file beside its final
/// name, renamed into place only by `publish`, so a restore that fails (a
/// missing or damaged chunk) leaves neither a partial file nor a truncated
/// one where a good file was; dropping it removes the temporary.
struct PendingFile {
    tmp: tempfile::NamedTempFile,
    path: PathBuf,
}

impl PendingFile {
    fn create(path: &Path, size_bytes: u64, overwrite: bool) -> Result<Self, RepoError> {
        refuse_existing(path, overwrite)?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let name = path
            .file_name()
            .ok_or_else(|| RepoError::Invalid(format!("`{}` names no file", path.display())))?
            .to_string_lossy();
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}.coffer-restore-"))
            .tempfile_in(dir)
            .map_err(|e| {
                RepoError::Invalid(format!(
                    "creating a temporary file in `{}`: {e}",
                    dir.display()
                ))
            })?;
        tmp.as_file()
            .set_len(size_bytes)
            .map_err(|e| RepoError::Invalid(format!("sizing `{}`: {e}", path.display())))?;
        Ok(PendingFile {
            tmp,
            path: path.to_path_buf(),
        })
    }

    fn file(&self) -> &File {
        self.tmp.as_file()
    }

    /// Makes the data durable, then renames it into place.
    fn publish(self, overwrite: bool) -> Result<PathBuf, RepoError> {
        self.tmp
            .as_file()
            .sync_all()
            .map_err(|e| RepoError::Invalid(format!("syncing `{}`: {e}", self.path.display())))?;
        let persisted = if overwrite {
            self.tmp.persist(&self.path)
        } else {
            self.tmp.persist_noclobber(&self.path)
        };
        persisted.map_err(|e| {
            if e.error.kind() == std::io::ErrorKind::AlreadyExists {
                exists_error(&self.path)
            } else {
                RepoError::Invalid(format!(
                    "renaming into `{}`: {}",
                    self.path.display(),
                    e.error
                ))
            }
        })?;
        Ok(self.path)
    }
}

fn exists_error(path: &Path) -> RepoError {
    RepoError::Invalid(format!(
        "`{}` exists; pass --force to overwrite it",
        path.display()
    ))
}

fn refuse_existing(path: &Path, overwrite: bool) -> Result<(), RepoError> {
    if !overwrite && std::fs::symlink_metadata(path).is_ok() {
        return Err(exists_error(path));
    }
    Ok(())
}

/// Restores a disk to `path`: a raw image, or `path` as a VMDK descriptor
/// with its extent beside it as `<stem>-flat.vmdk`. Every chunk is proven
/// (its digest checked) before anything appears under the final names; an
/// existing file is replaced only then, and only with `overwrite`.
pub fn restore_disk(
    repo: &Repository,
    index: &DiskIndex,
    path: &Path,
    format: DiskFormat,
    overwrite: bool,
    threads: usize,
) -> Result<RestoreStats, RepoError> {
    prepare_disk(repo, index, path, format, overwrite, threads, None)?.publish()
}

/// A disk restored and proven under temporary names, not yet in place:
/// a restore of several files prepares them all, then publishes them, so a
/// failure on the last disk leaves the first one's old files as they were.
/// Dropped unpublished, it removes its temporary files.
pub struct PreparedDisk {
    /// In publishing order: a VMDK's extent before its descriptor.
    files: Vec<PendingFile>,
    overwrite: bool,
    stats: RestoreStats,
}

impl PreparedDisk {
    /// Renames the files into place; returns what was written.
    pub fn publish(self) -> Result<RestoreStats, RepoError> {
        let mut stats = self.stats;
        let mut placed: Vec<PathBuf> = self
            .files
            .into_iter()
            .map(|f| f.publish(self.overwrite))
            .collect::<Result<_, _>>()?;
        // Listed descriptor first, as the VMDK is named by it.
        placed.reverse();
        stats.files = placed;
        Ok(stats)
    }
}

/// Restores a disk as `restore_disk` does, but leaves the files under
/// their temporary names until `PreparedDisk::publish`.
pub fn prepare_disk(
    repo: &Repository,
    index: &DiskIndex,
    path: &Path,
    format: DiskFormat,
    overwrite: bool,
    threads: usize,
    progress: Option<&ReadProgress>,
) -> Result<PreparedDisk, RepoError> {
    match format {
        DiskFormat::Raw => {
            let out = PendingFile::create(path, index.disk_size_bytes, overwrite)?;
            let stats = restore_into(repo, index, out.file(), threads, progress)?;
            Ok(PreparedDisk {
                files: vec![out],
                overwrite,
                stats,
            })
        }
        DiskFormat::Vmdk => {
            let stem = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "disk".into());
            let flat_name = format!("{stem}-flat.vmdk");
            let flat = path.with_file_name(&flat_name);
            refuse_existing(path, overwrite)?;
            // A VMDK extent is a whole number of 512-byte sectors.
            let size = index.disk_size_bytes.div_ceil(512) * 512;
            let extent = PendingFile::create(&flat, size, overwrite)?;
            let stats = restore_into(repo, index, extent.file(), threads, progress)?;
            let descriptor = PendingFile::create(path, 0, overwrite)?;
            {
                let mut f = descriptor.file();
                std::io::Write::write_all(&mut f, vmdk_descriptor(size, &flat_name).as_bytes())
                    .map_err(|e| {
                        RepoError::Invalid(format!("writing `{}`: {e}", path.display()))
                    })?;
            }
            // The extent first: a descriptor never names an extent that is
            // not (yet) there.
            Ok(PreparedDisk {
                files: vec![extent, descriptor],
                overwrite,
                stats,
            })
        }
    }
}

/// The descriptor of a monolithicFlat VMDK of `size_bytes` (a multiple of 512).
pub fn vmdk_descriptor(size_bytes: u64, flat_name: &str) -> String {
    let sectors = size_bytes / 512;
    // The geometry ESXi writes for SCSI disks: 255 heads, 63 sectors.
    let cylinders = (sectors / (255 * 63)).clamp(1, 65535);
    let mut cid = [0u8; 4];
    getrandom::fill(&mut cid).expect("the OS random source works");
    format!(
        "# Disk DescriptorFile\n\
         version=1\n\
         encoding=\"UTF-8\"\n\
         CID={cid}\n\
         parentCID=ffffffff\n\
         createType=\"monolithicFlat\"\n\
         \n\
         # Extent description\n\
         RW {sectors} FLAT \"{flat_name}\" 0\n\
         \n\
         # The Disk Data Base\n\
         #DDB\n\
         \n\
         ddb.adapterType = \"lsilogic\"\n\
         ddb.geometry.cylinders = \"{cylinders}\"\n\
         ddb.geometry.heads = \"255\"\n\
         ddb.geometry.sectors = \"63\"\n\
         ddb.virtualHWVersion = \"14\"\n",
        cid = hex::encode(cid),
    )
}
