//! Exporting a point for other tools: every disk as a streamOptimized VMDK
//! (`repo::stream_vmdk`), alone or packed with an OVF 1.0 descriptor and a
//! SHA-256 manifest into an OVA (a ustar archive: the .ovf first, then the
//! disks in References order, then the .mf). The OVF needs each disk's file
//! size, so the disks are written to temporary files beside the output
//! first; the output itself appears under its name only when complete, and
//! an existing file is replaced only when asked.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

use crate::repo::Repository;
use crate::repo::manifest::Manifest;
use crate::repo::stream_vmdk;

/// What `coffer export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// An OVF package in one file: descriptor, disks, manifest.
    Ova,
    /// Each disk as a streamOptimized VMDK.
    Vmdk,
}

use super::ovf::{OvfDisk, VmHardware, ovf_envelope, scsi_slot};

/// The .mf lines: `SHA256(name)= hex`.
pub fn manifest_text(digests: &[(String, String)]) -> String {
    digests
        .iter()
        .map(|(name, hex)| format!("SHA256({name})= {hex}\n"))
        .collect()
}

/// A name safe as a file name inside an archive (ustar keeps 100 bytes).
pub fn file_stem_for(vm_name: &str) -> String {
    let s: String = vm_name
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || "-_.+".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    match s.trim_start_matches('.') {
        "" => "vm".into(),
        t => t.to_string(),
    }
}

/// Forwards writes and hashes them.
struct HashingWriter<W: Write> {
    inner: W,
    hash: Sha256,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// What an export wrote.
#[derive(Debug)]
pub struct Export {
    pub files: Vec<PathBuf>,
    /// Bytes of the written files.
    pub bytes_written: u64,
    /// Capacity of the exported disks.
    pub disk_bytes: u64,
    pub seconds: f64,
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn refuse_existing(path: &Path, force: bool) -> Result<()> {
    if !force && path.exists() {
        bail!("{} exists; give --force to replace it", path.display());
    }
    Ok(())
}

/// Gives a finished temporary file its name.
fn persist(tmp: tempfile::NamedTempFile, path: &Path, force: bool) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    // A temporary file is private; the export is an ordinary file.
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))
        .with_context(|| format!("setting the mode of {}", path.display()))?;
    tmp.as_file()
        .sync_all()
        .with_context(|| format!("syncing {}", path.display()))?;
    let r = if force {
        tmp.persist(path).map(|_| ())
    } else {
        tmp.persist_noclobber(path).map(|_| ())
    };
    r.map_err(|e| {
        if e.error.kind() == std::io::ErrorKind::AlreadyExists {
            anyhow::anyhow!("{} exists; give --force to replace it", path.display())
        } else {
            anyhow::anyhow!("naming {}: {}", path.display(), e.error)
        }
    })
}

/// Refuses further writes once `stop` is set (Ctrl-C during a long
/// export or a restore's staging).
struct Stoppable<'a, W: Write> {
    inner: W,
    stop: Option<&'a std::sync::atomic::AtomicBool>,
}

impl<W: Write> Write for Stoppable<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self
            .stop
            .is_some_and(|s| s.load(std::sync::atomic::Ordering::SeqCst))
        {
            return Err(std::io::Error::new(
                std::io::ErrorKind::Interrupted,
                "stopped",
            ));
        }
        self.inner.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes disk `disk` of `m` as a streamOptimized VMDK into a temporary file
/// in `dir`; returns it with its size and SHA-256. Setting `stop` ends it
/// with an error.
pub(crate) fn stream_disk(
    repo: &Repository,
    m: &Manifest,
    disk: usize,
    dir: &Path,
    extent_name: &str,
    threads: usize,
    stop: Option<&std::sync::atomic::AtomicBool>,
) -> Result<(tempfile::NamedTempFile, u64, String)> {
    let entry = &m.disks[disk];
    let index = repo.read_index(m, entry).with_context(|| {
        format!(
            "reading the index of {} of point {}",
            entry.label, m.point_id
        )
    })?;
    let tmp = tempfile::Builder::new()
        .prefix(".coffer-export-")
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    let (bytes, digest) = {
        let mut w = HashingWriter {
            inner: BufWriter::with_capacity(
                1 << 20,
                Stoppable {
                    inner: tmp.as_file(),
                    stop,
                },
            ),
            hash: Sha256::new(),
        };
        let stats = stream_vmdk::write_stream_optimized(repo, &index, &mut w, extent_name, threads)
            .with_context(|| format!("exporting {} of point {}", entry.label, m.point_id))?;
        w.flush()?;
        (stats.bytes_written, hex::encode(w.hash.finalize()))
    };
    Ok((tmp, bytes, digest))
}

/// The output paths of `export_vmdk`: `out` for the first disk, then
/// `<stem>_<i>.vmdk` beside it, as ESXi names a VM's further disks.
pub fn vmdk_paths(out: &Path, disks: usize) -> Vec<PathBuf> {
    let stem = out
        .file_stem()
        .map_or_else(|| "disk".into(), |s| s.to_string_lossy().into_owned());
    (0..disks)
        .map(|i| {
            if i == 0 {
                out.to_path_buf()
            } else {
                out.with_file_name(format!("{stem}_{i}.vmdk"))
            }
        })
        .collect()
}

/// Exports every disk of `m` as a streamOptimized VMDK (see `vmdk_paths`).
pub fn export_vmdk(
    repo: &Repository,
    m: &Manifest,
    out: &Path,
    force: bool,
    threads: usize,
) -> Result<Export> {
    let started = Instant::now();
    let paths = vmdk_paths(out, m.disks.len());
    for p in &paths {
        refuse_existing(p, force)?;
    }
    let mut written = 0;
    // Every disk is written and proven before any takes its final name: a
    // failure on the second disk leaves the first one's old file as it was.
    let mut done = Vec::with_capacity(paths.len());
    for (i, path) in paths.iter().enumerate() {
        let name = path
            .file_name()
            .map_or_else(|| "disk.vmdk".into(), |n| n.to_string_lossy().into_owned());
        let (tmp, bytes, _) = stream_disk(repo, m, i, parent_dir(path), &name, threads, None)?;
        done.push(tmp);
        written += bytes;
    }
    for (tmp, path) in done.into_iter().zip(&paths) {
        persist(tmp, path, force)?;
    }
    Ok(Export {
        files: paths,
        bytes_written: written,
        disk_bytes: m.disks.iter().map(|d| d.size_bytes).sum(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn append(
    tar: &mut tar::Builder<impl Write>,
    name: &str,
    size: u64,
    mtime: u64,
    data: impl std::io::Read,
) -> Result<()> {
    let mut h = tar::Header::new_ustar();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(mtime);
    h.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut h, name, data)
        .with_context(|| format!("adding {name} to the OVA"))
}

/// Exports `m` as an OVA at `out`.
pub fn export_ova(
    repo: &Repository,
    m: &Manifest,
    out: &Path,
    force: bool,
    threads: usize,
) -> Result<Export> {
    let started = Instant::now();
    refuse_existing(out, force)?;
    let dir = parent_dir(out);
    let stem = file_stem_for(&m.vm.name);
    let hw = match m.files.iter().find(|(n, _)| n.ends_with(".vmx")) {
        Some((name, _)) => {
            let vmx = repo.read_file(m, name)?;
            // A copy of the VM, not the VM: new UUID and MAC addresses.
            VmHardware::from_vmx(&String::from_utf8_lossy(&vmx)).without_identity()
        }
        None => VmHardware::default(),
    };
    let mut disks = Vec::new();
    let mut ovf_disks = Vec::new();
    for (i, entry) in m.disks.iter().enumerate() {
        let name = format!("{stem}-disk{}.vmdk", i + 1);
        let (tmp, size, digest) = stream_disk(repo, m, i, dir, &name, threads, None)?;
        ovf_disks.push(OvfDisk {
            file_name: name.clone(),
            file_size_bytes: size,
            capacity_bytes: entry.size_bytes,
            slot: scsi_slot(entry.slot.as_deref()),
        });
        disks.push((name, tmp, size, digest));
    }
    let ovf_name = format!("{stem}.ovf");
    let ovf = ovf_envelope(&m.vm.name, &hw, &ovf_disks)?;
    let mut digests = vec![(
        ovf_name.clone(),
        hex::encode(Sha256::digest(ovf.as_bytes())),
    )];
    digests.extend(disks.iter().map(|(n, _, _, d)| (n.clone(), d.clone())));
    let mf = manifest_text(&digests);

    let tmp = tempfile::Builder::new()
        .prefix(".coffer-export-")
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    let mtime = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut tar = tar::Builder::new(BufWriter::with_capacity(1 << 20, tmp.as_file()));
    append(&mut tar, &ovf_name, ovf.len() as u64, mtime, ovf.as_bytes())?;
    for (name, file, size, _) in &disks {
        let f = File::open(file.path()).with_context(|| format!("reopening {name}"))?;
        append(&mut tar, name, *size, mtime, f)?;
    }
    let mf_name = format!("{stem}.mf");
    append(&mut tar, &mf_name, mf.len() as u64, mtime, mf.as_bytes())?;
    let mut w = tar.into_inner().context("finishing the OVA")?;
    w.flush().context("writing the OVA")?;
    drop(w);
    let written = tmp.as_file().metadata()?.len();
    persist(tmp, out, force)?;
    Ok(Export {
        files: vec![out.to_path_buf()],
        bytes_written: written,
        disk_bytes: m.disks.iter().map(|d| d.size_bytes).sum(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_stems_are_safe() {
        assert_eq!(file_stem_for("db 01/prod"), "db_01_prod");
        assert_eq!(file_stem_for(".."), "vm");
        assert_eq!(file_stem_for("disk.img"), "disk.img");
    }
}
