//! What the vim25 methods and `coffer lab write` do to the state: take
//! and remove snapshots (stun, CBT epochs, deltas, consolidation), answer
//! changed areas, write as a guest, power, register and destroy VMs. Each
//! function works on a loaded `State` under the store's lock.

use std::path::Path;

use chrono::Utc;
use serde::Serialize;

use super::content::{self, Rng};
use super::disk::{
    BLOCK_BYTES, Cbt, ChangeIdError, Disk, RawMapping, RdmMode, block_ranges, descriptor_cid,
    lun_folder, rdm_descriptor, split_stem,
};
use super::state::{self, DATASTORE, Fault, Snapshot, SnapshotDisk, State, Vm, hex_id, new_cbt_id};
use crate::vsphere::delta::DeltaFormat;

/// What a snapshot request asks.
#[derive(Debug, Clone)]
pub struct SnapshotSpec {
    pub name: String,
    pub description: String,
    pub memory: bool,
    pub quiesce: bool,
}

/// Faults switched on for this call.
#[derive(Debug, Clone, Copy, Default)]
pub struct Injected {
    pub quiesce: bool,
    /// The guest's VSS writers fail: no VSS manifest.
    pub vss_writers: bool,
    pub snapshot: bool,
    pub remove_snapshot: bool,
    /// A physical-mode raw device mapping that is not independent makes
    /// the snapshot fail (see `Faults::prdm_snapshot`).
    pub physical_rdm_snapshot: bool,
}

/// CreateSnapshot: the stun applies a pending CBT change, advances the
/// change ids, freezes every disk and adds a delta. Answers the snapshot's id.
pub fn create_snapshot(
    state: &mut State,
    root: &Path,
    vm: &str,
    spec: &SnapshotSpec,
    injected: Injected,
) -> Result<u64, Fault> {
    create_snapshot_as(state, root, vm, spec, injected, None)
}

/// The delta format ESXi picks for a disk's snapshot: SEsparse on VMFS6
/// and for disks over 2 TiB, vmfsSparse otherwise (vSphere Storage guide,
/// "Snapshot Formats"), unless the VM says which.
pub fn delta_format_for(vmfs6: bool, vm: &Vm, capacity_bytes: u64) -> DeltaFormat {
    match vm.delta_format {
        Some(f) => f,
        None if vmfs6 || capacity_bytes > 2 << 40 => DeltaFormat::SeSparse,
        None => DeltaFormat::VmfsSparse,
    }
}

/// `create_snapshot`, its deltas in `format` when given (a user snapshot
/// taken on another host or datastore type), else as `delta_format_for`.
pub fn create_snapshot_as(
    state: &mut State,
    root: &Path,
    vm: &str,
    spec: &SnapshotSpec,
    injected: Injected,
    format: Option<DeltaFormat>,
) -> Result<u64, Fault> {
    let id = state.next_id;
    let vmfs6 = state.vmfs6;
    let v = state.vm_mut(vm)?;
    super::import::refuse_while_importing(v)?;
    super::datastore_system::refuse_nas(v, "snapshot")?;
    if spec.quiesce && !v.tools_running(root) {
        return Err(Fault::new(
            "ToolsUnavailable",
            "Cannot complete operation because VMware Tools is not running in this virtual machine.",
        ));
    }
    if spec.quiesce && injected.quiesce {
        return Err(Fault::new(
            "ApplicationQuiesceFault",
            "An error occurred while quiescing the virtual machine (fault injected by the lab).",
        ));
    }
    if injected.snapshot {
        return Err(Fault::new(
            "SnapshotLocked",
            "An error occurred while saving the snapshot: the snapshot files are locked (fault injected by the lab).",
        ));
    }
    if injected.physical_rdm_snapshot
        && let Some(d) = v.disks.iter().find(|d| {
            !d.is_independent() && d.rdm.as_ref().is_some_and(|r| r.mode == RdmMode::Physical)
        })
    {
        // The fault vim25 has for a device that keeps a VM from being
        // snapshotted (SnapshotIncompatibleDeviceInVm), worded as ESXi
        // words it for a bus-sharing controller.
        return Err(Fault::new(
            "SnapshotIncompatibleDeviceInVm",
            format!(
                "Virtual machine is configured to use a device that prevents the snapshot \
                 operation: Device '{}' is a raw device mapping in physical compatibility mode \
                 (fault injected by the lab).",
                d.datastore_path(&d.layers[0].descriptor)
            ),
        ));
    }
    let formats: Vec<DeltaFormat> = v
        .disks
        .iter()
        .map(|d| format.unwrap_or_else(|| delta_format_for(vmfs6, v, d.capacity_bytes)))
        .collect();
    let mut disks = Vec::new();
    for (d, format) in v.disks.iter_mut().zip(formats) {
        // "Independent disks are not affected by snapshots" (vSphere
        // Virtual Machine Administration, "Virtual disk modes"): no delta,
        // and the snapshot does not hold the disk. Nor does it hold a
        // physical-mode raw device mapping (see `Disk::left_out_of_snapshots`).
        if d.left_out_of_snapshots() {
            continue;
        }
        if !v.cbt_enabled || v.cbt_reset {
            d.cbt = None;
        }
        match &mut d.cbt {
            Some(cbt) => cbt.advance(),
            None if v.cbt_enabled => d.cbt = Some(Cbt::new(new_cbt_id())),
            None => {}
        }
        d.push_delta(root, id, format)?;
        disks.push(SnapshotDisk {
            key: d.key,
            change_id: d.cbt.as_ref().map(Cbt::change_id),
            cbt_seq: d.cbt.as_ref().map(|c| c.seq),
        });
    }
    v.cbt_reset = false;
    let vss_manifest = if spec.quiesce && !injected.vss_writers {
        super::guest::write_vss_manifest(v, root, id)?
    } else {
        None
    };
    v.snapshots.push(Snapshot {
        id,
        name: spec.name.clone(),
        description: spec.description.clone(),
        create_time: Utc::now(),
        quiesced: spec.quiesce,
        disks,
        vss_manifest,
    });
    state.next_id += 1;
    let at_once = state.vms.iter().filter(|v| !v.snapshots.is_empty()).count() as u32;
    state.most_snapshots_at_once = state.most_snapshots_at_once.max(at_once);
    let host = super::inventory::placement(state.vcenter, state.vm(vm)?).host;
    let on_host = state
        .vms
        .iter()
        .filter(|v| !v.snapshots.is_empty())
        .filter(|v| super::inventory::placement(state.vcenter, v).host == host)
        .count() as u32;
    let most = state
        .most_snapshots_per_host
        .entry(host.to_string())
        .or_default();
    *most = (*most).max(on_host);
    Ok(id)
}

/// RemoveSnapshot (keeping children, consolidating). With the fault
/// injected the snapshot goes but its delta stays: consolidation needed.
pub fn remove_snapshot(
    state: &mut State,
    root: &Path,
    snapshot: &str,
    injected: Injected,
) -> Result<(), Fault> {
    let (vm, id) = state.snapshot_owner(snapshot)?;
    let vm = vm.moref();
    let v = state.vm_mut(&vm)?;
    for s in v.snapshots.iter().filter(|s| s.id == id) {
        if let Some(rel) = &s.vss_manifest {
            super::guest::remove_vss_manifest(root, rel);
        }
    }
    v.snapshots.retain(|s| s.id != id);
    for d in &mut v.disks {
        let Some(level) = d.level_of(id) else {
            continue;
        };
        if injected.remove_snapshot {
            d.layers[level].frozen_by = None;
        } else {
            d.merge_up_into(root, level)?;
        }
    }
    if injected.remove_snapshot {
        v.consolidation_needed = true;
        let file = v
            .disks
            .first()
            .map(|d| d.datastore_path(&d.layers[d.top()].data_file));
        return Err(Fault::new(
            "FileLocked",
            "Unable to access file since it is locked: consolidation failed (fault injected by the lab).",
        )
        .with("file", file.unwrap_or_else(|| format!("[{DATASTORE}] "))));
    }
    Ok(())
}

/// ConsolidateVMDisks: merges every delta no snapshot holds any more.
pub fn consolidate(state: &mut State, root: &Path, vm: &str) -> Result<(), Fault> {
    let v = state.vm_mut(vm)?;
    for d in &mut v.disks {
        while let Some(level) = (0..d.top())
            .rev()
            .find(|&i| d.layers[i].frozen_by.is_none())
        {
            d.merge_up_into(root, level)?;
        }
    }
    v.consolidation_needed = false;
    Ok(())
}

/// ReconfigVM_Task with `changeTrackingEnabled`. A powered-off VM applies
/// it at once; a running one at its next snapshot.
pub fn set_change_tracking(state: &mut State, vm: &str, enabled: bool) -> Result<(), Fault> {
    let v = state.vm_mut(vm)?;
    super::import::refuse_while_importing(v)?;
    if v.cbt_enabled && !enabled {
        v.cbt_reset = true;
    }
    v.cbt_enabled = enabled;
    if !v.powered_on {
        for d in &mut v.disks {
            if !enabled || v.cbt_reset {
                d.cbt = None;
            }
            if enabled && d.cbt.is_none() {
                d.cbt = Some(Cbt::new(new_cbt_id()));
            }
        }
        v.cbt_reset = false;
    }
    Ok(())
}

/// One answer of QueryChangedDiskAreas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangedAreas {
    pub start_offset_bytes: u64,
    pub length_bytes: u64,
    pub areas: Vec<std::ops::Range<u64>>,
}

/// The arguments of QueryChangedDiskAreas, and how much of the disk one
/// answer may cover.
#[derive(Debug, Clone, Copy)]
pub struct ChangeQuery<'a> {
    pub vm: &'a str,
    pub snapshot: &'a str,
    pub key: i32,
    pub start_bytes: u64,
    /// `*` for the allocated areas.
    pub change_id: &'a str,
    pub window_bytes: u64,
}

/// QueryChangedDiskAreas: the areas of disk `key` in `snapshot` changed
/// since `change_id` (`*`: allocated), from `start_bytes`, covering at most
/// `window_bytes` of the disk per answer.
pub fn changed_areas(
    state: &State,
    root: &Path,
    q: ChangeQuery<'_>,
) -> Result<ChangedAreas, Fault> {
    let ChangeQuery {
        vm,
        snapshot,
        key,
        start_bytes: start,
        change_id,
        window_bytes,
    } = q;
    let v = state.vm(vm)?;
    let (owner, id) = state.snapshot_owner(snapshot)?;
    if owner.id != v.id {
        return Err(
            Fault::new("InvalidArgument", "the snapshot is not of this VM")
                .with("invalidProperty", "snapshot"),
        );
    }
    let snap = v
        .snapshots
        .iter()
        .find(|s| s.id == id)
        .expect("owner has it");
    let (Some(disk), Some(at)) = (
        v.disks.iter().find(|d| d.key == key),
        snap.disks.iter().find(|d| d.key == key),
    ) else {
        return Err(
            Fault::new("InvalidArgument", format!("no disk with device key {key}"))
                .with("invalidProperty", "deviceKey"),
        );
    };
    let ctk = disk.datastore_path(&disk.layers[0].descriptor.replace(".vmdk", "-ctk.vmdk"));
    let (Some(cbt), Some(upto)) = (&disk.cbt, at.cbt_seq) else {
        return Err(Fault::new(
            "FileFault",
            "Error caused by file: change tracking is not enabled for this disk",
        )
        .with("file", ctk));
    };
    if at
        .change_id
        .as_deref()
        .and_then(|c| c.rsplit_once('/'))
        .map(|c| c.0)
        != Some(&cbt.id)
    {
        return Err(Fault::new(
            "FileFault",
            "Error caused by file: change tracking was reset since the snapshot",
        )
        .with("file", ctk));
    }
    if start >= disk.capacity_bytes {
        return Err(
            Fault::new("InvalidArgument", "startOffset is past the end of the disk")
                .with("invalidProperty", "startOffset"),
        );
    }
    let level = disk.level_of(id).expect("a snapshot freezes a layer");
    let blocks = if change_id.trim() == "*" {
        // The allocated areas come from VMFS itself: "For CBT to identify
        // disk sectors in use with the special \"*\" change ID, the virtual
        // disk must be located on a VMFS volume" (VMware KB 1020128); on
        // other storage the query "could fail" (VDDK Programming Guide,
        // "About Changed Block Tracking"). The lab's NFS datastore fails it.
        // A raw device mapping's data is on its LUN, not in a VMFS file:
        // VMFS has no allocation of it to report.
        if let Some(rdm) = &disk.rdm {
            return Err(Fault::new(
                "FileFault",
                format!(
                    "Error caused by file {ctk}: the allocated areas (changeId \"*\") are \
                     known only on VMFS, and disk {key} is a raw device mapping of LUN {}",
                    rdm.lun
                ),
            )
            .with("file", ctk));
        }
        let kind = state::datastore_type(disk.datastore_name()).unwrap_or("VMFS");
        if kind != "VMFS" {
            return Err(Fault::new(
                "FileFault",
                format!(
                    "Error caused by file {ctk}: the allocated areas (changeId \"*\") are \
                     known only on VMFS, and {} is {kind}",
                    disk.datastore_name()
                ),
            )
            .with("file", ctk));
        }
        disk.allocated_blocks(root, level)?
    } else {
        let since = cbt.sequence_of(change_id.trim()).map_err(|e| match e {
            ChangeIdError::Malformed(_) => {
                Fault::new("InvalidArgument", e.to_string()).with("invalidProperty", "changeId")
            }
            ChangeIdError::Unknown(_) => {
                Fault::new("FileFault", format!("Error caused by file: {e}"))
                    .with("file", ctk.clone())
            }
        })?;
        if since > upto {
            return Err(Fault::new(
                "FileFault",
                format!("Error caused by file: change id {change_id:?} is newer than the snapshot"),
            )
            .with("file", ctk));
        }
        cbt.changed_between(since, upto)
    };
    let end = (start + window_bytes).min(disk.capacity_bytes);
    Ok(ChangedAreas {
        start_offset_bytes: start,
        length_bytes: end - start,
        areas: block_ranges(&blocks, start..end),
    })
}

/// What `write_percent` changed on one disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiskWrite {
    pub key: i32,
    /// The file the writes went to (the top layer), relative to the datastore.
    pub file: String,
    pub blocks: usize,
    pub areas: Vec<std::ops::Range<u64>>,
}

/// Writes scattered 64 KiB blocks over `percent` % of the data area of
/// every disk of `vm` (by name), as a guest would: into the top layer,
/// recorded by change tracking. The boot area is never touched.
pub fn write_percent(
    state: &mut State,
    root: &Path,
    vm: &str,
    percent: f64,
    seed: u64,
) -> Result<Vec<DiskWrite>, Fault> {
    // A NAS VM's guest writes go to the NFS server (WRITE, RFC 1813
    // §3.3.7), as its host sends them; change tracking never runs there.
    let mut nas = match state.vms.iter().find(|v| v.name == vm || v.moref() == vm) {
        Some(v) if v.nas.is_some() => match super::datastore_system::Files::of(state, root, v)? {
            super::datastore_system::Files::Nas(nas) => Some(nas),
            super::datastore_system::Files::Local(_) => None,
        },
        _ => None,
    };
    let v = state
        .vms
        .iter_mut()
        .find(|v| v.name == vm || v.moref() == vm)
        .ok_or_else(|| Fault::not_found("VirtualMachine", vm))?;
    let mut rng = Rng::new(seed);
    let mut out = Vec::new();
    for d in &mut v.disks {
        let first = content::DATA_START_BYTES / BLOCK_BYTES;
        let last = d.capacity_bytes / BLOCK_BYTES;
        let span = last.saturating_sub(first);
        let want = ((span as f64) * percent.clamp(0.0, 100.0) / 100.0).ceil() as u64;
        let mut chosen = std::collections::BTreeSet::new();
        while (chosen.len() as u64) < want.min(span) {
            chosen.insert(first + rng.below(span));
        }
        let mut data = vec![0u8; BLOCK_BYTES as usize];
        for &b in &chosen {
            rng.fill(&mut data);
            let stamp = format!("coffer lab write block {b} seed {seed}\n");
            data[..stamp.len()].copy_from_slice(stamp.as_bytes());
            match &mut nas {
                Some(nas) => nas.write_at(&d.layers[d.top()].data_file, b * BLOCK_BYTES, &data)?,
                None => d.write_block(root, b, &data)?,
            }
        }
        out.push(DiskWrite {
            key: d.key,
            file: d.layers[d.top()].data_file.clone(),
            blocks: chosen.len(),
            areas: block_ranges(&chosen, 0..d.capacity_bytes),
        });
    }
    Ok(out)
}

/// RelocateVM_Task with a target datastore (`spec.datastore`, or a
/// `spec.disk` locator per disk): a Storage vMotion of `vm`'s disks to
/// `datastore`, every layer's files moved, snapshots and all, as vSphere
/// 5 and later move a VM's snapshots with it (vSphere Virtual Machine
/// Administration, "Storage vMotion Requirements and Limitations"). The
/// lab keeps the VM's home (.vmx) where it is, as a relocation with a disk
/// locator per disk does. The move is a stun of the VM that restarts change
/// tracking: each tracked disk gets a new change-id epoch, and older change
/// ids are no longer answered (VMware KB 1020128 lists migrations among
/// what resets CBT; the tracking file does not follow the disk reliably,
/// KB 2048201, which is why coffer resets it after a move, see
/// `plan::cbt::reset_reason`). The disk's backing file name changes with
/// its datastore.
pub fn relocate_disks(
    state: &mut State,
    root: &Path,
    vm: &str,
    keys: Option<&[i32]>,
    datastore: &str,
) -> Result<(), Fault> {
    if let Some(v) = state.vms.iter().find(|v| v.name == vm || v.moref() == vm) {
        super::import::refuse_while_importing(v)?;
    }
    if let Some(v) = state.vms.iter().find(|v| v.name == vm || v.moref() == vm)
        && v.nas.is_some()
    {
        // A whole NAS VM moves off its NAS datastore; single disks of it
        // do not (see `relocate_home`).
        if keys.is_none() && state.nas(datastore).is_none() {
            return super::datastore_system::relocate_home(state, root, vm, datastore);
        }
        super::datastore_system::refuse_nas(v, "move single disks of")?;
    }
    if state.nas(datastore).is_some() {
        return Err(Fault::new(
            "NotSupported",
            format!("the lab does not move disks to NAS datastores ({datastore})"),
        ));
    }
    if state::datastore_type(datastore).is_none() {
        return Err(Fault::not_found("Datastore", datastore));
    }
    let v = state
        .vms
        .iter_mut()
        .find(|v| v.name == vm || v.moref() == vm)
        .ok_or_else(|| Fault::not_found("VirtualMachine", vm))?;
    let cbt_enabled = v.cbt_enabled;
    let to = state::datastore_folder(root, datastore);
    // The lab does not model moving a mapping file (or converting a mapped
    // LUN into a VMDK, which a Storage vMotion may do).
    if let Some(d) = v.disks.iter().find(|d| {
        d.rdm.is_some()
            && keys.is_none_or(|k| k.contains(&d.key))
            && d.datastore_name() != datastore
    }) {
        return Err(Fault::new(
            "NotSupported",
            format!(
                "disk {} of {vm} is a raw device mapping, which the lab does not move",
                d.key
            ),
        ));
    }
    for d in v
        .disks
        .iter_mut()
        .filter(|d| keys.is_none_or(|k| k.contains(&d.key)))
    {
        if d.datastore_name() == datastore {
            continue;
        }
        let from = d.folder(root);
        for layer in &d.layers {
            for rel in [&layer.descriptor, &layer.data_file] {
                let target = to.join(rel);
                if let Some(dir) = target.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                std::fs::rename(from.join(rel), target)?;
            }
        }
        d.datastore = (datastore != DATASTORE).then(|| datastore.to_string());
        if d.cbt.is_some() && cbt_enabled {
            d.cbt = Some(Cbt::new(new_cbt_id()));
        }
    }
    Ok(())
}

/// VM `vm` (by name or moref) for a reconfiguration ESXi makes only while
/// the VM has no snapshot; `refusal` says what cannot happen otherwise.
fn vm_to_reconfigure<'s>(
    state: &'s mut State,
    vm: &str,
    refusal: &str,
) -> Result<&'s mut Vm, Fault> {
    let v = state
        .vms
        .iter_mut()
        .find(|v| v.name == vm || v.moref() == vm)
        .ok_or_else(|| Fault::not_found("VirtualMachine", vm))?;
    super::datastore_system::refuse_nas(v, "reconfigure the disks of")?;
    if !v.snapshots.is_empty() {
        return Err(Fault::new(
            "InvalidState",
            format!("VM {vm} has snapshots: {refusal}"),
        ));
    }
    Ok(v)
}

/// Disk `key` of `vm` (by name or reference) for a ReconfigVM_Task that
/// edits it, refused with `refusal` while the VM has snapshots.
fn disk_to_reconfigure<'s>(
    state: &'s mut State,
    vm: &str,
    key: i32,
    refusal: &str,
) -> Result<&'s mut Disk, Fault> {
    vm_to_reconfigure(state, vm, refusal)?
        .disks
        .iter_mut()
        .find(|d| d.key == key)
        .ok_or_else(|| Fault::not_found("VirtualDisk", &key.to_string()))
}

/// ReconfigVM_Task editing a VirtualDisk's `diskMode`. ESXi changes the
/// mode only of a disk no snapshot holds (vSphere Virtual Machine
/// Administration, "Change the virtual disk configuration": the mode cannot
/// change while the VM has snapshots).
pub fn set_disk_mode(state: &mut State, vm: &str, key: i32, mode: &str) -> Result<(), Fault> {
    let d = disk_to_reconfigure(state, vm, key, "a disk's mode cannot change")?;
    d.mode = (mode != "persistent").then(|| mode.to_string());
    Ok(())
}

/// ReconfigVM_Task replacing disk `key` of `vm` with a raw device mapping
/// of a LUN that holds what the disk held (the disk's flat extent becomes
/// the LUN's bytes), in compatibility mode `mode` (see `RawMapping`): the
/// descriptor is rewritten as `vmkfstools -r`/`-z` writes one, the mapping
/// file is the LUN's proxy on the datastore, and the disk's backing in the
/// inventory becomes a `VirtualDiskRawDiskMappingVer1BackingInfo`. Like
/// any change of a disk's backing, refused while the VM has snapshots.
pub fn map_raw_device(
    state: &mut State,
    root: &Path,
    vm: &str,
    key: i32,
    mode: RdmMode,
) -> Result<(), Fault> {
    let d = disk_to_reconfigure(state, vm, key, "a disk's backing cannot change")?;
    if d.rdm.is_some() {
        return Err(Fault::new(
            "InvalidDeviceSpec",
            format!("disk {key} of {vm} is a raw device mapping already"),
        ));
    }
    let io = |e: std::io::Error| Fault::new("FileFault", e.to_string());
    let folder = d.folder(root);
    let base = d.layers[0].clone();
    let (dir, stem) = split_stem(&base.descriptor);
    let suffix = match mode {
        RdmMode::Virtual => "rdm",
        RdmMode::Physical => "rdmp",
    };
    let mapping_name = format!("{stem}-{suffix}.vmdk");
    let mapping = format!("{dir}{mapping_name}");
    let lun = format!("naa.6000c29{}", hex_id(&format!("lun/{}", d.uuid), 25));
    let luns = lun_folder(root);
    std::fs::create_dir_all(&luns).map_err(io)?;
    std::fs::rename(folder.join(&base.data_file), luns.join(&lun)).map_err(io)?;
    // From the mapping file's folder up to the state directory, which
    // holds every datastore's folder and `luns`.
    let up = "../".repeat(mapping.matches('/').count() + 1);
    std::os::unix::fs::symlink(format!("{up}luns/{lun}"), folder.join(&mapping)).map_err(io)?;
    let cid = descriptor_cid(&folder, &base.descriptor).map_err(io)?;
    std::fs::write(
        folder.join(&base.descriptor),
        rdm_descriptor(d.capacity_bytes, &mapping_name, cid, mode),
    )
    .map_err(io)?;
    d.layers[0].data_file = mapping;
    d.rdm = Some(RawMapping { mode, lun });
    Ok(())
}

/// ReconfigVM_Task with a `crypto` spec (CryptoSpecEncrypt, or
/// CryptoSpecDecrypt for `None`): the VM's `config.keyId` is set to the key
/// (vSphere API reference, VirtualMachineConfigSpec.crypto and
/// VirtualMachineConfigInfo.keyId). vSphere encrypts or decrypts only a VM
/// without snapshots (vSphere Security, "Virtual Machine Encryption
/// Interoperability"), and so does the lab.
pub fn set_encryption(state: &mut State, vm: &str, key: Option<&str>) -> Result<(), Fault> {
    let v = vm_to_reconfigure(state, vm, "it cannot be encrypted or decrypted")?;
    v.encryption_key = key.map(str::to_string);
    Ok(())
}

/// ReconfigVM_Task editing a VirtualDisk's `capacityInKB` upward: the disk
/// grows in place (the new space reads as zeros), and its change tracking
/// goes on as if nothing happened, which is exactly why a backup must not
/// trust it afterwards (VMware KB 2090639: QueryChangedDiskAreas answers
/// wrong areas after a disk is extended). ESXi refuses to extend a disk
/// that has snapshots (VMware KB 1004047, "Increasing the size of a virtual
/// disk": "the virtual machine must not have snapshots"), and to shrink one.
pub fn extend_disk(
    state: &mut State,
    root: &Path,
    vm: &str,
    key: i32,
    capacity_bytes: u64,
) -> Result<(), Fault> {
    let d = disk_to_reconfigure(state, vm, key, "a disk cannot be extended")?;
    // A raw device mapping is as large as its LUN, which grows on the
    // storage array, not through the VM.
    if d.rdm.is_some() {
        return Err(Fault::new(
            "InvalidDeviceSpec",
            format!("disk {key} of {vm} is a raw device mapping: its LUN sets its size"),
        ));
    }
    if capacity_bytes < d.capacity_bytes || !capacity_bytes.is_multiple_of(512) {
        return Err(Fault::new(
            "InvalidArgument",
            format!(
                "disk {key} of {vm}: {capacity_bytes} bytes is smaller than {} or not whole sectors",
                d.capacity_bytes
            ),
        ));
    }
    let folder = d.folder(root);
    let base = &d.layers[0];
    let io = |e: std::io::Error| Fault::new("FileFault", e.to_string());
    std::fs::OpenOptions::new()
        .write(true)
        .open(folder.join(&base.data_file))
        .and_then(|f| f.set_len(capacity_bytes))
        .map_err(io)?;
    let flat_name = base
        .data_file
        .rsplit('/')
        .next()
        .unwrap_or(&base.data_file)
        .to_string();
    let mut cid = [0u8; 4];
    getrandom::fill(&mut cid).expect("the OS random source works");
    let cid = u32::from_le_bytes(cid);
    std::fs::write(
        folder.join(&base.descriptor),
        super::disk::flat_descriptor(capacity_bytes, &flat_name, cid),
    )
    .map_err(io)?;
    d.capacity_bytes = capacity_bytes;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::state::{Store, snapshot_moref};

    fn query<'a>(snapshot: &'a str, change_id: &'a str) -> ChangeQuery<'a> {
        ChangeQuery {
            vm: "vm-1",
            snapshot,
            key: 2000,
            start_bytes: 0,
            change_id,
            window_bytes: 1 << 40,
        }
    }

    fn spec(name: &str) -> SnapshotSpec {
        SnapshotSpec {
            name: name.into(),
            description: String::new(),
            memory: false,
            quiesce: false,
        }
    }

    #[test]
    fn cbt_follows_snapshots_and_writes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let st = store.init(2, "root", Some("pw")).unwrap();
        assert_eq!(st.vms.len(), 2);
        assert_eq!(st.vms[0].disks.len(), 2);
        let root = store.datastore_root();
        assert!(st.vms[0].boots(&root));
        store
            .update(|s, _| set_change_tracking(s, "vm-1", true))
            .unwrap();
        let s1 = store
            .update(|s, r| create_snapshot(s, r, "vm-1", &spec("a"), Injected::default()))
            .unwrap();
        let full = store
            .read(|s, r| changed_areas(s, r, query(&snapshot_moref(s1), "*")))
            .unwrap();
        assert!(full.areas.iter().any(|a| a.start == 0), "{full:?}");
        let base = store
            .read(|s, _| Ok(s.vms[0].snapshots[0].disks[0].change_id.clone().unwrap()))
            .unwrap();
        let written = store
            .update(|s, r| write_percent(s, r, "lab-vm-01", 1.0, 7))
            .unwrap();
        store
            .update(|s, r| remove_snapshot(s, r, &snapshot_moref(s1), Injected::default()))
            .unwrap();
        let s2 = store
            .update(|s, r| create_snapshot(s, r, "vm-1", &spec("b"), Injected::default()))
            .unwrap();
        let inc = store
            .read(|s, r| changed_areas(s, r, query(&snapshot_moref(s2), &base)))
            .unwrap();
        assert_eq!(inc.areas, written[0].areas);
        let err = store
            .read(|s, r| changed_areas(s, r, query(&snapshot_moref(s2), "52 00/1")))
            .unwrap_err();
        assert_eq!(err.name, "FileFault");
        assert!(store.read(|s, r| Ok(s.vms[0].boots(r))).unwrap());
    }

    #[test]
    fn a_cbt_reset_starts_a_new_change_id() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        store.init(1, "root", Some("pw")).unwrap();
        let cycle = |store: &Store| {
            let id = store
                .update(|s, r| create_snapshot(s, r, "vm-1", &spec("c"), Injected::default()))
                .unwrap();
            let change = store
                .read(|s, _| Ok(s.vms[0].snapshots[0].disks[0].change_id.clone()))
                .unwrap();
            store
                .update(|s, r| remove_snapshot(s, r, &snapshot_moref(id), Injected::default()))
                .unwrap();
            change
        };
        store
            .update(|s, _| set_change_tracking(s, "vm-1", true))
            .unwrap();
        let old = cycle(&store).expect("CBT on at the snapshot");
        store
            .update(|s, _| set_change_tracking(s, "vm-1", false))
            .unwrap();
        store
            .update(|s, _| set_change_tracking(s, "vm-1", true))
            .unwrap();
        let new = cycle(&store).expect("CBT on again");
        let (old_uuid, new_uuid) = (
            old.rsplit_once('/').unwrap().0,
            new.rsplit_once('/').unwrap().0,
        );
        assert_ne!(old_uuid, new_uuid, "a reset gives the disk a new change id");
        let s = store
            .update(|s, r| create_snapshot(s, r, "vm-1", &spec("d"), Injected::default()))
            .unwrap();
        let err = store
            .read(|st, r| changed_areas(st, r, query(&snapshot_moref(s), &old)))
            .unwrap_err();
        assert_eq!(err.name, "FileFault");
        store
            .read(|st, r| changed_areas(st, r, query(&snapshot_moref(s), &new)))
            .expect("the new id is known");
        // Off, then a snapshot: no change ids at all.
        store
            .update(|s, _| set_change_tracking(s, "vm-1", false))
            .unwrap();
        assert_eq!(cycle_second(&store), None);
    }

    /// The change id of a snapshot taken on top of the existing one.
    fn cycle_second(store: &Store) -> Option<String> {
        store
            .update(|s, r| create_snapshot(s, r, "vm-1", &spec("e"), Injected::default()))
            .unwrap();
        store
            .read(|s, _| {
                Ok(s.vms[0].snapshots.last().unwrap().disks[0]
                    .change_id
                    .clone())
            })
            .unwrap()
    }

    #[test]
    fn a_failed_removal_needs_consolidation() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        store.init(1, "root", Some("pw")).unwrap();
        let s1 = store
            .update(|s, r| create_snapshot(s, r, "vm-1", &spec("a"), Injected::default()))
            .unwrap();
        let fail = Injected {
            remove_snapshot: true,
            ..Injected::default()
        };
        let err = store
            .update(|s, r| remove_snapshot(s, r, &snapshot_moref(s1), fail))
            .unwrap_err();
        assert_eq!(err.name, "FileLocked");
        let st = store.read(|s, _| Ok(s.clone())).unwrap();
        assert!(st.vms[0].snapshots.is_empty() && st.vms[0].consolidation_needed);
        assert_eq!(st.vms[0].disks[0].layers.len(), 2);
        store.update(|s, r| consolidate(s, r, "vm-1")).unwrap();
        let st = store.read(|s, _| Ok(s.clone())).unwrap();
        assert!(!st.vms[0].consolidation_needed);
        assert_eq!(st.vms[0].disks[0].layers.len(), 1);
    }
}
