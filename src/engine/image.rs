//! Backing up a plain disk image file (no ESXi): a full of its allocated
//! areas, or an incremental of the ranges a file lists since a parent
//! point. Used by administrators for images and by the benchmarks.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};

use super::observer::{Event, Observer};
use crate::repo::Repository;
use crate::repo::backup::{self, BackupRequest, DiskSource, FileDisk};
use crate::repo::manifest::{Manifest, VmIdentity};

/// What to back up: the arguments of `coffer backup-image`.
#[derive(Debug, Clone, clap::Args)]
pub struct ImageBackup {
    /// The disk image file to back up.
    pub file: PathBuf,
    /// Name to record the image under (default: the file name).
    #[arg(long)]
    pub vm: Option<String>,
    /// File of changed ranges (`OFFSET LENGTH` per line, bytes) since --base
    /// (default: the newest point of this VM): an incremental.
    #[arg(long)]
    pub changed: Option<PathBuf>,
    /// The point the changed ranges are relative to.
    #[arg(long, requires = "changed")]
    pub base: Option<String>,
    /// Chunk size, a power of two from 64KiB to 4MiB (default chosen by
    /// measurement, see docs/benchmarks.md).
    #[arg(long = "chunk-size", default_value = "256KiB", value_parser = parse_chunk_size)]
    pub chunk_size_bytes: u32,
}

/// A chunk size as `--chunk-size` gives it (the repository checks it is
/// one it takes).
fn parse_chunk_size(text: &str) -> Result<u32, String> {
    let size = crate::policy::units::parse_size(text)?;
    u32::try_from(size.0).map_err(|_| format!("{text} is too large"))
}

/// Reads a changed-ranges file: `OFFSET LENGTH` per line, `#` comments.
pub fn read_ranges(path: &Path) -> Result<Vec<std::ops::Range<u64>>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut it = line.split_whitespace();
        let parse = |v: Option<&str>| -> Result<u64> {
            v.ok_or_else(|| anyhow!("{}:{}: expected `OFFSET LENGTH`", path.display(), n + 1))?
                .parse()
                .with_context(|| {
                    format!(
                        "{}:{}: expected `OFFSET LENGTH` in bytes",
                        path.display(),
                        n + 1
                    )
                })
        };
        let (start, len) = (parse(it.next())?, parse(it.next())?);
        out.push(start..start.saturating_add(len));
    }
    Ok(out)
}

/// A stable UUID-shaped id for an image name.
pub fn image_uuid(name: &str) -> String {
    use sha2::Digest;
    let h = hex::encode(sha2::Sha256::digest(format!("coffer image {name}")));
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Backs the image up into `repo`; answers the point's manifest and the
/// name it was recorded under.
pub fn backup_image(
    repo: &Repository,
    a: &ImageBackup,
    observer: &dyn Observer,
) -> Result<(Manifest, String)> {
    let name = a.vm.clone().unwrap_or_else(|| {
        a.file
            .file_name()
            .map_or("image".into(), |n| n.to_string_lossy().into_owned())
    });
    let vm = VmIdentity {
        uuid: image_uuid(&name),
        name: name.clone(),
        source: None,
        source_instance: None,
    };
    let disk = FileDisk::open(&a.file).with_context(|| format!("opening {}", a.file.display()))?;
    let parent = match &a.changed {
        None => None,
        Some(_) => {
            let p = match &a.base {
                Some(id) => repo.find_point(id)?,
                None => repo
                    .list_points()?
                    .into_iter()
                    .filter(|p| p.vm_uuid == vm.uuid)
                    .max_by(|x, y| x.point_id.cmp(&y.point_id))
                    .ok_or_else(|| anyhow!("no earlier point of `{name}` to start an incremental from; run a full backup first"))?,
            };
            Some(repo.read_manifest(&p)?)
        }
    };
    // An incremental starts from the parent's index; when that is missing
    // or unreadable the image is read whole instead (a full, said why).
    let parent = match parent {
        Some(m) => match m
            .disks
            .iter()
            .find(|d| d.device_key == 0)
            .map(|d| repo.read_index(&m, d))
        {
            Some(Err(e)) => {
                observer.event(&Event::Message(format!(
                    "full backup: parent index missing or unreadable for point {} ({e})",
                    m.point_id
                )));
                None
            }
            _ => Some(m),
        },
        None => None,
    };
    let ranges = match (&a.changed, &parent) {
        (Some(f), Some(_)) => Some(read_ranges(f)?),
        _ => Some(
            disk.allocated_ranges()
                .context("finding the allocated ranges of the image")?,
        ),
    };
    let m = backup::backup(
        repo,
        BackupRequest {
            vm,
            consistency: "image".into(),
            chunk_size_bytes: a.chunk_size_bytes,
            parent: parent.as_ref(),
            disks: vec![DiskSource {
                device_key: 0,
                label: "disk0".into(),
                reader: &disk,
                change_id: None,
                from_parent: parent.is_some(),
                ranges,
                backing: None,
                slot: None,
            }],
            files: vec![],
            skipped_disks: vec![],
            threads: super::threads(),
        },
    )?;
    Ok((m, name))
}
