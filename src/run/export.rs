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

/// The virtual hardware an OVF describes, from the point's .vmx when it
/// has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmHardware {
    pub vcpus: u32,
    pub memory_mib: u64,
    /// vSphere guest id (`guestOS` of the .vmx).
    pub guest_os: String,
    /// OVF ResourceSubType of the SCSI controller.
    pub scsi_controller: String,
    /// `vmx-NN`.
    pub hardware_version: String,
}

impl Default for VmHardware {
    fn default() -> Self {
        VmHardware {
            vcpus: 1,
            memory_mib: 1024,
            guest_os: "otherGuest".into(),
            scsi_controller: "lsilogic".into(),
            hardware_version: "vmx-14".into(),
        }
    }
}

impl VmHardware {
    /// Reads numvcpus, memSize, guestOS, scsi0.virtualDev and
    /// virtualHW.version; what is missing or unreadable keeps its default.
    pub fn from_vmx(vmx: &str) -> Self {
        let mut hw = VmHardware::default();
        for line in vmx.lines() {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let value = value.trim().trim_matches('"');
            match key.trim().to_ascii_lowercase().as_str() {
                "numvcpus" => {
                    if let Ok(n @ 1..) = value.parse() {
                        hw.vcpus = n;
                    }
                }
                "memsize" => {
                    if let Ok(n @ 1..) = value.parse() {
                        hw.memory_mib = n;
                    }
                }
                "guestos" if !value.is_empty() => hw.guest_os = value.to_string(),
                "scsi0.virtualdev" => {
                    hw.scsi_controller = match value.to_ascii_lowercase().as_str() {
                        "pvscsi" => "VirtualSCSI",
                        "lsisas1068" => "lsilogicsas",
                        "buslogic" => "buslogic",
                        _ => "lsilogic",
                    }
                    .into()
                }
                "virtualhw.version" => {
                    if let Ok(n) = value.parse::<u32>() {
                        hw.hardware_version = format!("vmx-{n:02}");
                    }
                }
                _ => {}
            }
        }
        hw
    }
}

/// One disk as the OVF references it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OvfDisk {
    pub file_name: String,
    pub file_size_bytes: u64,
    pub capacity_bytes: u64,
}

/// The OVF format URI of a streamOptimized VMDK.
pub const STREAM_OPTIMIZED_URI: &str =
    "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized";

/// Disks per SCSI controller: units 0–15 but 7, the controller's own.
const DISKS_PER_CONTROLLER: usize = 15;
const MAX_CONTROLLERS: usize = 4;

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// The OVF 1.0 descriptor of a VM named `name` with `disks`. Child elements
/// of each `Item` are in the alphabetical order the CIM schema prescribes.
pub fn ovf_envelope(name: &str, hw: &VmHardware, disks: &[OvfDisk]) -> Result<String> {
    if disks.len() > DISKS_PER_CONTROLLER * MAX_CONTROLLERS {
        bail!(
            "{} disks do not fit on {MAX_CONTROLLERS} SCSI controllers",
            disks.len()
        );
    }
    let name = xml_escape(name);
    let mut s = String::new();
    s.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    s.push_str(
        "<Envelope xmlns=\"http://schemas.dmtf.org/ovf/envelope/1\" \
         xmlns:ovf=\"http://schemas.dmtf.org/ovf/envelope/1\" \
         xmlns:rasd=\"http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData\" \
         xmlns:vssd=\"http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData\" \
         xmlns:vmw=\"http://www.vmware.com/schema/ovf\" \
         xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\">\n",
    );
    s.push_str("  <References>\n");
    for (i, d) in disks.iter().enumerate() {
        s.push_str(&format!(
            "    <File ovf:href=\"{}\" ovf:id=\"file{}\" ovf:size=\"{}\"/>\n",
            xml_escape(&d.file_name),
            i + 1,
            d.file_size_bytes
        ));
    }
    s.push_str("  </References>\n");
    s.push_str("  <DiskSection>\n    <Info>Virtual disk information</Info>\n");
    for (i, d) in disks.iter().enumerate() {
        s.push_str(&format!(
            "    <Disk ovf:capacity=\"{}\" ovf:capacityAllocationUnits=\"byte\" \
             ovf:diskId=\"vmdisk{n}\" ovf:fileRef=\"file{n}\" ovf:format=\"{STREAM_OPTIMIZED_URI}\"/>\n",
            d.capacity_bytes,
            n = i + 1
        ));
    }
    s.push_str("  </DiskSection>\n");
    s.push_str(&format!(
        "  <VirtualSystem ovf:id=\"{name}\">\n    <Info>A virtual machine exported by coffer</Info>\n    <Name>{name}</Name>\n"
    ));
    // CIM operating system 1 is "Other"; vmw:osType carries the real guest.
    s.push_str(&format!(
        "    <OperatingSystemSection ovf:id=\"1\" vmw:osType=\"{}\">\n      <Info>The kind of installed guest operating system</Info>\n    </OperatingSystemSection>\n",
        xml_escape(&hw.guest_os)
    ));
    s.push_str("    <VirtualHardwareSection>\n      <Info>Virtual hardware requirements</Info>\n");
    s.push_str(&format!(
        "      <System>\n        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>\n        <vssd:InstanceID>0</vssd:InstanceID>\n        <vssd:VirtualSystemIdentifier>{name}</vssd:VirtualSystemIdentifier>\n        <vssd:VirtualSystemType>{}</vssd:VirtualSystemType>\n      </System>\n",
        xml_escape(&hw.hardware_version)
    ));
    let item = |fields: &[(&str, String)]| {
        let mut it = String::from("      <Item>\n");
        for (k, v) in fields {
            it.push_str(&format!("        <rasd:{k}>{}</rasd:{k}>\n", xml_escape(v)));
        }
        it.push_str("      </Item>\n");
        it
    };
    s.push_str(&item(&[
        ("AllocationUnits", "hertz * 10^6".into()),
        ("Description", "Number of Virtual CPUs".into()),
        ("ElementName", format!("{} virtual CPU(s)", hw.vcpus)),
        ("InstanceID", "1".into()),
        ("ResourceType", "3".into()),
        ("VirtualQuantity", hw.vcpus.to_string()),
    ]));
    s.push_str(&item(&[
        ("AllocationUnits", "byte * 2^20".into()),
        ("Description", "Memory Size".into()),
        ("ElementName", format!("{}MB of memory", hw.memory_mib)),
        ("InstanceID", "2".into()),
        ("ResourceType", "4".into()),
        ("VirtualQuantity", hw.memory_mib.to_string()),
    ]));
    let controllers = disks.len().div_ceil(DISKS_PER_CONTROLLER).max(1);
    let mut instance = 3;
    let mut controller_ids = Vec::new();
    for c in 0..controllers {
        s.push_str(&item(&[
            ("Address", c.to_string()),
            ("Description", "SCSI Controller".into()),
            ("ElementName", format!("SCSI controller {c}")),
            ("InstanceID", instance.to_string()),
            ("ResourceSubType", hw.scsi_controller.clone()),
            ("ResourceType", "6".into()),
        ]));
        controller_ids.push(instance);
        instance += 1;
    }
    for i in 0..disks.len() {
        let slot = i % DISKS_PER_CONTROLLER;
        let unit = if slot >= 7 { slot + 1 } else { slot };
        s.push_str(&item(&[
            ("AddressOnParent", unit.to_string()),
            ("ElementName", format!("Hard disk {}", i + 1)),
            ("HostResource", format!("ovf:/disk/vmdisk{}", i + 1)),
            ("InstanceID", instance.to_string()),
            (
                "Parent",
                controller_ids[i / DISKS_PER_CONTROLLER].to_string(),
            ),
            ("ResourceType", "17".into()),
        ]));
        instance += 1;
    }
    s.push_str("    </VirtualHardwareSection>\n  </VirtualSystem>\n</Envelope>\n");
    Ok(s)
}

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

/// Writes disk `disk` of `m` as a streamOptimized VMDK into a temporary file
/// in `dir`; returns it with its size and SHA-256.
fn stream_disk(
    repo: &Repository,
    m: &Manifest,
    disk: usize,
    dir: &Path,
    extent_name: &str,
    threads: usize,
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
            inner: BufWriter::with_capacity(1 << 20, tmp.as_file()),
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
        let (tmp, bytes, _) = stream_disk(repo, m, i, parent_dir(path), &name, threads)?;
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
            VmHardware::from_vmx(&String::from_utf8_lossy(&vmx))
        }
        None => VmHardware::default(),
    };
    let mut disks = Vec::new();
    let mut ovf_disks = Vec::new();
    for (i, entry) in m.disks.iter().enumerate() {
        let name = format!("{stem}-disk{}.vmdk", i + 1);
        let (tmp, size, digest) = stream_disk(repo, m, i, dir, &name, threads)?;
        ovf_disks.push(OvfDisk {
            file_name: name.clone(),
            file_size_bytes: size,
            capacity_bytes: entry.size_bytes,
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
    fn hardware_comes_from_the_vmx_or_defaults() {
        let hw = VmHardware::from_vmx(
            "numvcpus = \"4\"\nmemSize = \"8192\"\nguestOS = \"debian12-64\"\nscsi0.virtualDev = \"pvscsi\"\nvirtualHW.version = \"19\"\n",
        );
        assert_eq!(hw.vcpus, 4);
        assert_eq!(hw.memory_mib, 8192);
        assert_eq!(hw.guest_os, "debian12-64");
        assert_eq!(hw.scsi_controller, "VirtualSCSI");
        assert_eq!(hw.hardware_version, "vmx-19");
        assert_eq!(
            VmHardware::from_vmx("memSize = \"x\"\n"),
            VmHardware::default()
        );
    }

    #[test]
    fn the_envelope_parses_and_disks_skip_unit_seven() {
        let disks: Vec<OvfDisk> = (0..17)
            .map(|i| OvfDisk {
                file_name: format!("a&b-disk{}.vmdk", i + 1),
                file_size_bytes: 1000 + i,
                capacity_bytes: 1 << 30,
            })
            .collect();
        let xml = ovf_envelope("a&b", &VmHardware::default(), &disks).unwrap();
        let doc = roxmltree::Document::parse(&xml).unwrap();
        let units: Vec<&str> = doc
            .descendants()
            .filter(|n| n.tag_name().name() == "AddressOnParent")
            .filter_map(|n| n.text())
            .collect();
        assert_eq!(units[6..9], ["6", "8", "9"]);
        assert_eq!(units[15], "0", "the 16th disk is on the second controller");
        let files = doc
            .descendants()
            .filter(|n| n.tag_name().name() == "File")
            .count();
        assert_eq!(files, 17);
        assert!(ovf_envelope("x", &VmHardware::default(), &vec![disks[0].clone(); 61]).is_err());
    }

    #[test]
    fn file_stems_are_safe() {
        assert_eq!(file_stem_for("db 01/prod"), "db_01_prod");
        assert_eq!(file_stem_for(".."), "vm");
        assert_eq!(file_stem_for("disk.img"), "disk.img");
    }
}
