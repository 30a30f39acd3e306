//! Reading points back: a disk's chunks are fetched, checked against their
//! ids and written at their offsets by parallel workers. Zero chunks are not
//! written, so the output stays sparse. Output is a raw image or a VMDK
//! (monolithicFlat: a text descriptor next to a `-flat.vmdk` raw extent),
//! the form ESXi and qemu-img both read.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::chunk::{Codec, ZERO_DIGEST};
use super::index::DiskIndex;
use super::parallel;
use super::{RepoError, Repository};

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

/// Writes the disk of `index` into `out` (already sized) in parallel.
pub fn restore_into(
    repo: &Repository,
    index: &DiskIndex,
    out: &File,
    threads: usize,
) -> Result<RestoreStats, RepoError> {
    let written = AtomicU64::new(0);
    let read = AtomicU64::new(0);
    let work: Vec<usize> = (0..index.chunks.len())
        .filter(|i| index.chunks[*i] != ZERO_DIGEST)
        .collect();
    parallel::for_each(
        &work,
        threads,
        || Codec::new(1),
        |codec, &i| -> Result<(), RepoError> {
            let range = index.range(i);
            let plain = repo.read_chunk(codec, &index.chunks[i])?;
            if plain.len() as u64 != range.end - range.start {
                return Err(RepoError::Invalid(format!(
                    "chunk {} has the wrong length for its place",
                    index.chunks[i].to_hex()
                )));
            }
            out.write_all_at(&plain, range.start)
                .map_err(|e| RepoError::Invalid(format!("writing the restored disk: {e}")))?;
            written.fetch_add(plain.len() as u64, Ordering::Relaxed);
            read.fetch_add(1, Ordering::Relaxed);
            Ok(())
        },
    )?;
    Ok(RestoreStats {
        bytes_written: written.into_inner(),
        chunks_read: read.into_inner(),
        files: Vec::new(),
    })
}

fn create_output(path: &Path, size: u64, overwrite: bool) -> Result<File, RepoError> {
    let mut opts = OpenOptions::new();
    opts.write(true);
    if overwrite {
        opts.create(true).truncate(true);
    } else {
        opts.create_new(true);
    }
    let f = opts.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            RepoError::Invalid(format!(
                "`{}` exists; pass --force to overwrite it",
                path.display()
            ))
        } else {
            RepoError::Invalid(format!("creating `{}`: {e}", path.display()))
        }
    })?;
    f.set_len(size)
        .map_err(|e| RepoError::Invalid(format!("sizing `{}`: {e}", path.display())))?;
    Ok(f)
}

/// Restores a disk to `path`: a raw image, or `path` as a VMDK descriptor
/// with its extent beside it as `<stem>-flat.vmdk`.
pub fn restore_disk(
    repo: &Repository,
    index: &DiskIndex,
    path: &Path,
    format: DiskFormat,
    overwrite: bool,
    threads: usize,
) -> Result<RestoreStats, RepoError> {
    match format {
        DiskFormat::Raw => {
            let f = create_output(path, index.disk_size_bytes, overwrite)?;
            let mut stats = restore_into(repo, index, &f, threads)?;
            f.sync_all()
                .map_err(|e| RepoError::Invalid(format!("syncing `{}`: {e}", path.display())))?;
            stats.files.push(path.to_path_buf());
            Ok(stats)
        }
        DiskFormat::Vmdk => {
            let stem = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "disk".into());
            let flat_name = format!("{stem}-flat.vmdk");
            let flat = path.with_file_name(&flat_name);
            // A VMDK extent is a whole number of 512-byte sectors.
            let size = index.disk_size_bytes.div_ceil(512) * 512;
            let f = create_output(&flat, size, overwrite)?;
            let mut stats = restore_into(repo, index, &f, threads)?;
            f.sync_all()
                .map_err(|e| RepoError::Invalid(format!("syncing `{}`: {e}", flat.display())))?;
            let descriptor = vmdk_descriptor(size, &flat_name);
            if path.exists() && !overwrite {
                return Err(RepoError::Invalid(format!(
                    "`{}` exists; pass --force to overwrite it",
                    path.display()
                )));
            }
            std::fs::write(path, descriptor)
                .map_err(|e| RepoError::Invalid(format!("writing `{}`: {e}", path.display())))?;
            stats.files.push(path.to_path_buf());
            stats.files.push(flat);
            Ok(stats)
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
