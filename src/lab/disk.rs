//! A lab disk: a chain of layers on the datastore and its change tracking.
//!
//! Layer 0 is the base (`<name>.vmdk` descriptor, `<name>-flat.vmdk` sparse
//! flat extent). Each snapshot freezes the layer on top and adds a delta
//! (`<name>-00000N.vmdk`) in one of the two formats ESXi writes
//! (`vsphere::delta`): `vmfsSparse` ("COWD", data in
//! `<name>-00000N-delta.vmdk`), ESXi's choice on VMFS5 for disks up to 2 TiB,
//! or `SEsparse` (data in `<name>-00000N-sesparse.vmdk`), its choice on VMFS6
//! and for disks over 2 TiB (vSphere Storage guide, "Snapshot Formats",
//! docs.vmware.com GUID-88E5A594-DEBC-4662-812F-EA421591C70F). ESXi never
//! mixes the two in one chain (it converts a VM's deltas when it moves
//! between VMFS5 and VMFS6); the lab can, per snapshot, so tests cover a
//! reader of both at once. The layer keeps the set of 64 KiB blocks written
//! since, so reads know which layer holds a block; the bytes live only in
//! the real delta file, which qemu-img reads too. Guest writes always go to
//! the top layer, so every
//! frozen layer, and the view a snapshot gives of the disk, stays
//! byte-for-byte what it was. Removing a snapshot merges the layer above the
//! one it froze into that one, as ESXi consolidates a delta into its parent.
//!
//! Change tracking (`Cbt`) counts in the same 64 KiB blocks: each snapshot
//! closes an epoch of written blocks and names the disk's state
//! `<disk uuid>/<sequence>`.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::state;
use crate::vsphere::delta::{self, Delta, DeltaFormat};

/// The unit of deltas, of change tracking and of guest writes.
pub const BLOCK_BYTES: u64 = 64 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Layer {
    /// Descriptor file, relative to the datastore root.
    pub descriptor: String,
    /// Flat extent (base) or delta data file, relative to the datastore root.
    pub data_file: String,
    /// Blocks a delta holds; empty (meaning "all") for the base.
    pub blocks: BTreeSet<u64>,
    /// The delta format of `data_file`; `None` for a raw file read by disk
    /// offset (the base's flat extent).
    #[serde(default)]
    pub format: Option<DeltaFormat>,
    /// The snapshot that froze this layer; `None` for the top layer, or for
    /// a layer whose snapshot is gone but which is not merged yet
    /// (consolidation needed).
    pub frozen_by: Option<u64>,
}

/// One epoch of change tracking: the blocks written before the snapshot
/// that took sequence `seq`, after the one before.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Epoch {
    pub seq: u64,
    pub blocks: BTreeSet<u64>,
}

/// Change tracking of one disk, active since sequence `first_seq`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Cbt {
    /// `52 xx xx xx xx xx xx xx-xx xx xx xx xx xx xx xx`
    pub id: String,
    pub first_seq: u64,
    pub seq: u64,
    pub epochs: Vec<Epoch>,
    /// Written since the last snapshot.
    pub pending: BTreeSet<u64>,
}

/// How many epochs a disk remembers; older change ids become unknown.
const MAX_EPOCHS: usize = 256;

/// Why QueryChangedDiskAreas cannot answer for a change id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeIdError {
    #[error("change id {0:?} is not of the form `<uuid>/<sequence>`")]
    Malformed(String),
    #[error("change id {0:?} is not known for this disk")]
    Unknown(String),
}

impl Cbt {
    pub fn new(id: String) -> Cbt {
        Cbt {
            id,
            first_seq: 1,
            seq: 1,
            epochs: Vec::new(),
            pending: BTreeSet::new(),
        }
    }

    pub fn change_id(&self) -> String {
        format!("{}/{}", self.id, self.seq)
    }

    /// A snapshot: the writes so far become an epoch and the sequence advances.
    pub fn advance(&mut self) {
        self.seq += 1;
        self.epochs.push(Epoch {
            seq: self.seq,
            blocks: std::mem::take(&mut self.pending),
        });
        if self.epochs.len() > MAX_EPOCHS {
            let dropped = self.epochs.remove(0);
            self.first_seq = dropped.seq;
        }
    }

    /// The sequence a change id names, if it is one of this disk's.
    pub fn sequence_of(&self, change_id: &str) -> Result<u64, ChangeIdError> {
        let (uuid, seq) = change_id
            .rsplit_once('/')
            .ok_or_else(|| ChangeIdError::Malformed(change_id.into()))?;
        let seq: u64 = seq
            .trim()
            .parse()
            .map_err(|_| ChangeIdError::Malformed(change_id.into()))?;
        if uuid != self.id || seq < self.first_seq || seq > self.seq {
            return Err(ChangeIdError::Unknown(change_id.into()));
        }
        Ok(seq)
    }

    /// Blocks written after sequence `since`, up to and including `upto`.
    pub fn changed_between(&self, since: u64, upto: u64) -> BTreeSet<u64> {
        self.epochs
            .iter()
            .filter(|e| e.seq > since && e.seq <= upto)
            .flat_map(|e| e.blocks.iter().copied())
            .collect()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Disk {
    /// Device key (2000, 2001, …).
    pub key: i32,
    pub capacity_bytes: u64,
    /// The backing's uuid (`6000C29…`).
    pub uuid: String,
    /// Base first, top last.
    pub layers: Vec<Layer>,
    pub cbt: Option<Cbt>,
    /// Numbers the next delta's files.
    pub next_delta: u32,
    /// `diskMode`: `persistent` when `None`, else e.g.
    /// `independent_persistent`, which snapshots leave out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// The datastore holding every layer's files, `datastore1` when
    /// `None`; layer paths are relative to its folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datastore: Option<String>,
    /// Set when the disk is a raw device mapping (see `RawMapping`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rdm: Option<RawMapping>,
}

/// A raw device mapping's compatibility mode, as the vSphere API names it
/// (`VirtualDiskRawDiskMappingVer1BackingInfo.compatibilityMode`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum RdmMode {
    /// The host virtualises the LUN as it does a VMDK: snapshots, disk
    /// modes and change tracking apply.
    #[serde(rename = "virtualMode")]
    Virtual,
    /// SCSI commands pass to the LUN; snapshots and disk modes do not apply.
    #[serde(rename = "physicalMode")]
    Physical,
}

impl RdmMode {
    pub fn as_str(self) -> &'static str {
        match self {
            RdmMode::Virtual => "virtualMode",
            RdmMode::Physical => "physicalMode",
        }
    }

    /// `virtual`, `virtualMode`, `physical` or `physicalMode`.
    pub fn parse(text: &str) -> Option<RdmMode> {
        match text {
            "virtual" | "virtualMode" => Some(RdmMode::Virtual),
            "physical" | "physicalMode" => Some(RdmMode::Physical),
            _ => None,
        }
    }
}

/// A disk whose base is a LUN mapped through a file on the datastore: the
/// descriptor (`<name>.vmdk`, createType `vmfsRawDeviceMap` or
/// `vmfsPassthroughRawDeviceMap`) names the mapping file (`<name>-rdm.vmdk`
/// in virtual mode, `<name>-rdmp.vmdk` in physical mode: VMware KB 1026256,
/// "Recreating pass-through Raw Device Mapping (RDM) files") in a `VMFSRDM`
/// extent. The LUN's bytes live outside every datastore, in
/// `<state>/luns/<lun>`; the mapping file is a symbolic link to them, so a
/// read or write of the mapping file reaches the LUN, as on VMFS: "using
/// the mapping file as a proxy. Most operations that are valid for an
/// ordinary file can be applied to the mapping file and are redirected to
/// operate on the mapped device" (vSphere Storage guide, "Raw Device
/// Mapping", "File System Operations"). Deltas of snapshots sit on it like
/// on any base.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RawMapping {
    pub mode: RdmMode,
    /// The LUN's canonical name (`naa.…`).
    pub lun: String,
}

fn open_rw(root: &Path, rel: &str) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(root.join(rel))
}

/// Reads exactly `buf.len()` bytes at `offset`, zeros past the end of file.
fn read_full(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let n = file.read_at(&mut buf[done..], offset + done as u64)?;
        if n == 0 {
            buf[done..].fill(0);
            break;
        }
        done += n;
    }
    Ok(())
}

/// The descriptor of a flat disk, with the extent line readers look for.
pub fn flat_descriptor(capacity_bytes: u64, flat_name: &str, cid: u32) -> String {
    format!(
        "# Disk DescriptorFile\nversion=1\nencoding=\"UTF-8\"\nCID={cid:08x}\nparentCID=ffffffff\n\
         createType=\"vmfs\"\n\n# Extent description\nRW {} FLAT \"{flat_name}\" 0\n\n\
         # The Disk Data Base\n#DDB\n\nddb.adapterType = \"lsilogic\"\nddb.virtualHWVersion = \"19\"\n",
        capacity_bytes / 512
    )
}

/// The descriptor of a raw device mapping (see `RawMapping`): one
/// `VMFSRDM` extent naming the mapping file, as `vmkfstools -r` (virtual)
/// and `vmkfstools -z` (physical) write it.
pub fn rdm_descriptor(capacity_bytes: u64, mapping_name: &str, cid: u32, mode: RdmMode) -> String {
    let create_type = match mode {
        RdmMode::Virtual => "vmfsRawDeviceMap",
        RdmMode::Physical => "vmfsPassthroughRawDeviceMap",
    };
    format!(
        "# Disk DescriptorFile\nversion=1\nencoding=\"UTF-8\"\nCID={cid:08x}\nparentCID=ffffffff\n\
         createType=\"{create_type}\"\n\n# Extent description\nRW {} VMFSRDM \"{mapping_name}\"\n\n\
         # The Disk Data Base\n#DDB\n\nddb.adapterType = \"lsilogic\"\nddb.virtualHWVersion = \"19\"\n",
        capacity_bytes / 512
    )
}

/// The folder that holds the lab's LUNs (the mapped devices of raw
/// device mappings), beside the datastores' folders: no datastore path
/// reaches it.
pub fn lun_folder(root: &Path) -> PathBuf {
    root.with_file_name("luns")
}

/// The content id (`CID=`) a descriptor names.
pub(super) fn descriptor_cid(root: &Path, descriptor: &str) -> io::Result<u32> {
    let text = std::fs::read_to_string(root.join(descriptor))?;
    Ok(text
        .lines()
        .find_map(|l| l.trim().strip_prefix("CID="))
        .and_then(|c| u32::from_str_radix(c.trim(), 16).ok())
        .unwrap_or(0xffff_ffff))
}

/// `dir/name.vmdk` → (`dir/`, `name`).
pub(super) fn split_stem(descriptor: &str) -> (&str, &str) {
    let (dir, file) = match descriptor.rfind('/') {
        Some(i) => descriptor.split_at(i + 1),
        None => ("", descriptor),
    };
    (dir, file.strip_suffix(".vmdk").unwrap_or(file))
}

impl Disk {
    /// The name of the datastore holding this disk.
    pub fn datastore_name(&self) -> &str {
        self.datastore.as_deref().unwrap_or(state::DATASTORE)
    }

    /// The folder of this disk's datastore, given `root`, `datastore1`'s.
    pub fn folder(&self, root: &Path) -> PathBuf {
        state::datastore_folder(root, self.datastore_name())
    }

    /// `[datastore] path` of one of this disk's files.
    pub fn datastore_path(&self, rel: &str) -> String {
        format!("[{}] {rel}", self.datastore_name())
    }

    /// Left out of snapshots (`independent_persistent`,
    /// `independent_nonpersistent`).
    pub fn is_independent(&self) -> bool {
        self.mode
            .as_deref()
            .is_some_and(|m| m.starts_with("independent"))
    }

    /// Left out of every snapshot: an independent disk, or a raw device
    /// mapping in physical mode. "If you are using the RDM in physical
    /// compatibility mode, you cannot use a snapshot with the disk"
    /// (vSphere Storage guide, "RDM Considerations and Limitations"); the
    /// host still snapshots the VM's other disks and leaves the LUN alone,
    /// as backup products that snapshot such VMs document ("Physical
    /// compatibility mode RDM disks are not backed up because they are not
    /// included in a VMware snapshot", Hitachi Ops Center Protector, "About
    /// VMware policy classifications"). The vSphere documentation says only
    /// that such snapshots are "not supported"; the lab models what those
    /// products report.
    pub fn left_out_of_snapshots(&self) -> bool {
        self.is_independent()
            || self
                .rdm
                .as_ref()
                .is_some_and(|r| r.mode == RdmMode::Physical)
    }

    pub fn top(&self) -> usize {
        self.layers.len() - 1
    }

    /// Reads `buf.len()` bytes at `offset` of the disk as layer `level` (and
    /// those below it) show it.
    pub fn read(&self, root: &Path, level: usize, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let files: Vec<File> = self.layers[..=level]
            .iter()
            .map(|l| File::open(self.folder(root).join(&l.data_file)))
            .collect::<io::Result<_>>()?;
        let mut done = 0usize;
        while done < buf.len() {
            let at = offset + done as u64;
            let block = at / BLOCK_BYTES;
            let n = ((block + 1) * BLOCK_BYTES - at).min((buf.len() - done) as u64) as usize;
            let layer = (1..=level)
                .rev()
                .find(|&i| self.layers[i].blocks.contains(&block))
                .unwrap_or(0);
            read_layer(
                &self.layers[layer],
                &files[layer],
                &mut buf[done..done + n],
                at,
            )?;
            done += n;
        }
        Ok(())
    }

    /// A guest write of one whole block to the top layer, recorded by CBT.
    pub fn write_block(&mut self, root: &Path, block: u64, data: &[u8]) -> io::Result<()> {
        assert_eq!(data.len() as u64, BLOCK_BYTES, "whole blocks only");
        let top = self.top();
        let file = open_rw(&self.folder(root), &self.layers[top].data_file)?;
        write_layer(&self.layers[top], &file, data, block * BLOCK_BYTES)?;
        if top > 0 {
            self.layers[top].blocks.insert(block);
        }
        if let Some(cbt) = &mut self.cbt {
            cbt.pending.insert(block);
        }
        Ok(())
    }

    /// Freezes the top layer for `snapshot` and adds a delta in `format`
    /// above it.
    pub fn push_delta(
        &mut self,
        root: &Path,
        snapshot: u64,
        format: DeltaFormat,
    ) -> io::Result<()> {
        let (dir, stem) = split_stem(&self.layers[0].descriptor);
        let (dir, stem) = (dir.to_string(), stem.to_string());
        self.next_delta += 1;
        let n = self.next_delta;
        let descriptor = format!("{dir}{stem}-{n:06}.vmdk");
        let suffix = match format {
            DeltaFormat::VmfsSparse => "delta",
            DeltaFormat::SeSparse => "sesparse",
        };
        let data_file = format!("{dir}{stem}-{n:06}-{suffix}.vmdk");
        let parent = split_stem(&self.layers[self.top()].descriptor)
            .1
            .to_string()
            + ".vmdk";
        let delta_name = data_file.rsplit('/').next().unwrap_or(&data_file);
        // The child names its parent's content id, as the host writes it.
        let parent_cid = descriptor_cid(&self.folder(root), &self.layers[self.top()].descriptor)?;
        std::fs::write(
            self.folder(root).join(&descriptor),
            delta::descriptor(
                format,
                self.capacity_bytes,
                delta_name,
                &parent,
                n,
                parent_cid,
            ),
        )?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(self.folder(root).join(&data_file))?;
        delta::create(&file, format, self.capacity_bytes)?;
        let top = self.top();
        self.layers[top].frozen_by = Some(snapshot);
        self.layers.push(Layer {
            descriptor,
            data_file,
            blocks: BTreeSet::new(),
            format: Some(format),
            frozen_by: None,
        });
        Ok(())
    }

    /// The layer `snapshot` froze.
    pub fn level_of(&self, snapshot: u64) -> Option<usize> {
        self.layers
            .iter()
            .position(|l| l.frozen_by == Some(snapshot))
    }

    /// Merges layer `level + 1` into layer `level` and drops it; the merged
    /// layer is frozen by whatever froze the upper one.
    pub fn merge_up_into(&mut self, root: &Path, level: usize) -> io::Result<()> {
        let upper = self.layers[level + 1].clone();
        let src = File::open(self.folder(root).join(&upper.data_file))?;
        let dst = open_rw(&self.folder(root), &self.layers[level].data_file)?;
        let mut buf = vec![0u8; BLOCK_BYTES as usize];
        for &block in &upper.blocks {
            read_layer(&upper, &src, &mut buf, block * BLOCK_BYTES)?;
            write_layer(&self.layers[level], &dst, &buf, block * BLOCK_BYTES)?;
        }
        dst.sync_all()?;
        let lower = &mut self.layers[level];
        if level > 0 {
            lower.blocks.extend(upper.blocks.iter().copied());
        }
        lower.frozen_by = upper.frozen_by;
        self.layers.remove(level + 1);
        // The delta that sat on the merged one now sits on `level`: the host
        // rewrites its descriptor's parent hint, so the chain stays whole.
        if let Some(child) = self.layers.get(level + 1) {
            let parent = &self.layers[level].descriptor;
            let parent_name = parent.rsplit('/').next().unwrap_or(parent);
            let parent_cid = descriptor_cid(&self.folder(root), parent)?;
            let path = self.folder(root).join(&child.descriptor);
            let text = std::fs::read_to_string(&path)?;
            let rewritten: String = text
                .lines()
                .map(|l| match l.split_once('=') {
                    Some(("parentFileNameHint", _)) => {
                        format!("parentFileNameHint=\"{parent_name}\"\n")
                    }
                    Some(("parentCID", _)) => format!("parentCID={parent_cid:08x}\n"),
                    _ => format!("{l}\n"),
                })
                .collect();
            std::fs::write(&path, rewritten)?;
        }
        for f in [&upper.descriptor, &upper.data_file] {
            match std::fs::remove_file(self.folder(root).join(f)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

    /// Blocks that hold data in the view of layer `level`: the base's
    /// allocated areas (holes skipped) and every delta block.
    pub fn allocated_blocks(&self, root: &Path, level: usize) -> io::Result<BTreeSet<u64>> {
        let mut blocks = BTreeSet::new();
        let base = File::open(self.folder(root).join(&self.layers[0].data_file))?;
        for range in data_ranges(&base, self.capacity_bytes)? {
            let first = range.start / BLOCK_BYTES;
            let last = range.end.div_ceil(BLOCK_BYTES);
            blocks.extend(first..last);
        }
        for layer in &self.layers[1..=level] {
            blocks.extend(layer.blocks.iter().copied());
        }
        Ok(blocks)
    }
}

/// Reads the bytes at disk offset `at` that `layer` holds, from its file.
fn read_layer(layer: &Layer, file: &File, buf: &mut [u8], at: u64) -> io::Result<()> {
    match layer.format {
        None => read_full(file, buf, at),
        Some(_) => Delta::open(file)
            .map_err(io::Error::other)?
            .read_at(buf, at, &|_, o| {
                Err(io::Error::other(format!(
                    "{}: the lab reads offset {o} from a delta that does not hold it",
                    layer.data_file
                )))
            }),
    }
}

/// Writes whole blocks at disk offset `at` into `layer`'s file.
fn write_layer(layer: &Layer, file: &File, data: &[u8], at: u64) -> io::Result<()> {
    match layer.format {
        None => file.write_all_at(data, at),
        Some(_) => delta::write_at(file, at, data).map_err(io::Error::other),
    }
}

/// The data (non-hole) ranges of a file, by SEEK_DATA / SEEK_HOLE.
pub(super) fn data_ranges(file: &File, len: u64) -> io::Result<Vec<std::ops::Range<u64>>> {
    let fd = file.as_raw_fd();
    let mut out = Vec::new();
    let mut at: i64 = 0;
    while (at as u64) < len {
        // SAFETY: lseek on a file descriptor we own; no memory is touched.
        let data = unsafe { libc::lseek(fd, at, libc::SEEK_DATA) };
        if data < 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::ENXIO) {
                break;
            }
            return Err(err);
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        if hole < 0 {
            return Err(io::Error::last_os_error());
        }
        out.push(data as u64..(hole as u64).min(len));
        at = hole;
    }
    Ok(out)
}

/// Merges sorted blocks into byte ranges, clipped to `window`.
pub fn block_ranges(
    blocks: &BTreeSet<u64>,
    window: std::ops::Range<u64>,
) -> Vec<std::ops::Range<u64>> {
    let mut out: Vec<std::ops::Range<u64>> = Vec::new();
    for &b in blocks {
        let start = (b * BLOCK_BYTES).max(window.start);
        let end = ((b + 1) * BLOCK_BYTES).min(window.end);
        if start >= end {
            continue;
        }
        match out.last_mut() {
            Some(last) if last.end == start => last.end = end,
            _ => out.push(start..end),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAP: u64 = 16 * BLOCK_BYTES;

    fn new_disk(root: &Path) -> Disk {
        std::fs::create_dir_all(root.join("vm")).unwrap();
        let f = File::create(root.join("vm/vm-flat.vmdk")).unwrap();
        f.set_len(CAP).unwrap();
        f.write_all_at(&[7u8; BLOCK_BYTES as usize], 2 * BLOCK_BYTES)
            .unwrap();
        std::fs::write(
            root.join("vm/vm.vmdk"),
            flat_descriptor(CAP, "vm-flat.vmdk", 0x1234),
        )
        .unwrap();
        Disk {
            key: 2000,
            capacity_bytes: CAP,
            uuid: "u".into(),
            layers: vec![Layer {
                descriptor: "vm/vm.vmdk".into(),
                data_file: "vm/vm-flat.vmdk".into(),
                blocks: BTreeSet::new(),
                format: None,
                frozen_by: None,
            }],
            cbt: None,
            next_delta: 0,
            mode: None,
            datastore: None,
            rdm: None,
        }
    }

    fn view(d: &Disk, root: &Path, level: usize) -> Vec<u8> {
        let mut buf = vec![0u8; CAP as usize];
        d.read(root, level, 0, &mut buf).unwrap();
        buf
    }

    fn block(v: u8) -> Vec<u8> {
        vec![v; BLOCK_BYTES as usize]
    }

    #[test]
    fn a_snapshot_view_is_frozen_and_removal_keeps_writes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let mut d = new_disk(root);
        d.write_block(root, 0, &block(1)).unwrap();
        let before = view(&d, root, 0);
        d.push_delta(root, 1, DeltaFormat::VmfsSparse).unwrap();
        assert_eq!(d.layers[1].descriptor, "vm/vm-000001.vmdk");
        d.write_block(root, 0, &block(9)).unwrap();
        d.write_block(root, 5, &block(5)).unwrap();
        assert_eq!(view(&d, root, 0), before, "the snapshot's view is frozen");
        assert_eq!(std::fs::read(root.join("vm/vm-flat.vmdk")).unwrap(), before);
        let live = view(&d, root, 1);
        assert_eq!(live[0], 9);
        assert_eq!(live[5 * BLOCK_BYTES as usize], 5);
        assert_eq!(live[2 * BLOCK_BYTES as usize], 7);
        // A second snapshot, then remove the first: the delta merges down.
        d.push_delta(root, 2, DeltaFormat::SeSparse).unwrap();
        d.write_block(root, 3, &block(3)).unwrap();
        let second = view(&d, root, 1);
        let lvl = d.level_of(1).unwrap();
        d.merge_up_into(root, lvl).unwrap();
        assert_eq!(d.layers.len(), 2);
        assert_eq!(d.level_of(2), Some(0));
        assert_eq!(view(&d, root, 0), second, "snapshot 2's view is unchanged");
        assert!(!root.join("vm/vm-000001.vmdk").exists());
        d.merge_up_into(root, 0).unwrap();
        let all = view(&d, root, 0);
        assert_eq!((all[0], all[3 * 65536], all[5 * 65536]), (9, 3, 5));
    }

    fn qemu_view(root: &Path, descriptor: &str) -> Vec<u8> {
        let out = root.join("qemu.raw");
        let status = std::process::Command::new("qemu-img")
            .args(["convert", "-f", "vmdk", "-O", "raw"])
            .arg(root.join(descriptor))
            .arg(&out)
            .status()
            .expect("qemu-img (qemu-utils) is installed");
        assert!(status.success(), "qemu-img reads {descriptor}");
        std::fs::read(out).unwrap()
    }

    #[test]
    fn lab_deltas_are_real_vmfs_sparse_and_sesparse_files_that_qemu_reads_alike() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let mut d = new_disk(root);
        d.write_block(root, 1, &block(1)).unwrap();
        d.push_delta(root, 1, DeltaFormat::VmfsSparse).unwrap();
        d.write_block(root, 4, &block(4)).unwrap();
        d.write_block(root, 2, &block(2)).unwrap();
        d.push_delta(root, 2, DeltaFormat::SeSparse).unwrap();
        assert_eq!(d.layers[2].data_file, "vm/vm-000002-sesparse.vmdk");
        d.write_block(root, 2, &block(22)).unwrap();
        d.write_block(root, 15, &block(15)).unwrap();
        assert_eq!(qemu_view(root, "vm/vm-000001.vmdk"), view(&d, root, 1));
        let top = view(&d, root, 2);
        assert_eq!(qemu_view(root, "vm/vm-000002.vmdk"), top);
        assert_eq!(
            (top[2 * 65536], top[4 * 65536], top[15 * 65536]),
            (22, 4, 15)
        );
        // Removing the first snapshot merges the vmfsSparse delta into the
        // base; removing the second merges SEsparse data there too.
        d.merge_up_into(root, 0).unwrap();
        assert_eq!(view(&d, root, 1), top);
        assert_eq!(qemu_view(root, "vm/vm-000002.vmdk"), top);
        d.merge_up_into(root, 0).unwrap();
        assert_eq!(view(&d, root, 0), top);
    }

    #[test]
    fn allocated_blocks_skip_holes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let mut d = new_disk(root);
        d.push_delta(root, 1, DeltaFormat::SeSparse).unwrap();
        d.write_block(root, 9, &block(1)).unwrap();
        assert_eq!(d.allocated_blocks(root, 0).unwrap(), BTreeSet::from([2]));
        assert_eq!(d.allocated_blocks(root, 1).unwrap(), BTreeSet::from([2, 9]));
    }

    #[test]
    fn change_ids_name_epochs() {
        let mut c = Cbt::new("52 aa-bb".into());
        assert_eq!(c.change_id(), "52 aa-bb/1");
        c.pending.insert(3);
        c.advance();
        c.pending.extend([4, 5]);
        c.advance();
        assert_eq!(c.changed_between(1, 3), BTreeSet::from([3, 4, 5]));
        assert_eq!(c.changed_between(2, 3), BTreeSet::from([4, 5]));
        assert_eq!(c.sequence_of("52 aa-bb/2"), Ok(2));
        assert!(matches!(
            c.sequence_of("52 cc-dd/2"),
            Err(ChangeIdError::Unknown(_))
        ));
        assert!(matches!(
            c.sequence_of("52 aa-bb/9"),
            Err(ChangeIdError::Unknown(_))
        ));
        assert!(matches!(
            c.sequence_of("garbage"),
            Err(ChangeIdError::Malformed(_))
        ));
    }

    #[test]
    fn ranges_merge_and_clip() {
        let b = BTreeSet::from([0, 1, 3]);
        assert_eq!(
            block_ranges(&b, 0..CAP),
            vec![0..2 * BLOCK_BYTES, 3 * BLOCK_BYTES..4 * BLOCK_BYTES]
        );
        assert_eq!(
            block_ranges(&b, 100..3 * BLOCK_BYTES + 10),
            vec![100..2 * BLOCK_BYTES, 3 * BLOCK_BYTES..3 * BLOCK_BYTES + 10]
        );
    }
}
