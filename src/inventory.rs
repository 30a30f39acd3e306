//! The neutral inventory model: what exists on a host or a vCenter, as plain
//! values (a VM, its disks, its snapshot tree, a managed object reference, a
//! disk's change id, a `[datastore] path`). The vSphere client (`vsphere`)
//! fills these values in from what a host, a vCenter or the lab answers; the
//! planner (`plan`) and the runner read them; tests build them by hand.
//!
//! It owns only the data and the small pure questions about it (is this disk
//! independent, every snapshot of this VM, which datastore a path names). It
//! must never depend on `vsphere`, `lab`, `run` or `cli`, never speak a wire
//! format (SOAP names, datastore URLs) and never perform I/O: the client adds
//! what belongs to the protocol on its side (`vsphere::types`,
//! `vsphere::datastore`).

use std::fmt;

use chrono::{DateTime, Utc};

/// A managed object reference: the object's type and its id on that server
/// (`VirtualMachine` / `vm-42`). Ids are only meaningful on the server that
/// gave them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MoRef {
    pub kind: String,
    pub value: String,
}

impl MoRef {
    pub fn new(kind: impl Into<String>, value: impl Into<String>) -> Self {
        MoRef {
            kind: kind.into(),
            value: value.into(),
        }
    }
}

impl fmt::Display for MoRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.value)
    }
}

/// A disk's change tracking id as ESXi hands it out
/// (`52 de … b2 45/7`), or `*` to ask for every allocated area.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChangeId(pub String);

impl fmt::Display for ChangeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerState {
    PoweredOn,
    PoweredOff,
    Suspended,
}

/// How a disk is backed, as far as backup cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskBacking {
    /// A VMDK on a datastore (flat, thin or thick): readable and CBT-capable.
    Vmdk,
    /// A raw device mapping (`virtualMode` or `physicalMode`): virtual mode
    /// is read through its mapping file like a VMDK, physical mode cannot
    /// be snapshotted.
    RawDeviceMapping { compatibility_mode: Option<String> },
    /// Anything else (sparse, SE sparse, vvol…), by its backing type name.
    Other(String),
}

/// One VirtualDisk of `config.hardware.device`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmDisk {
    /// The device key: stable for the disk's life in this VM.
    pub key: i32,
    pub capacity_bytes: u64,
    /// `[datastore] dir/name.vmdk`
    pub file_name: String,
    pub datastore: Option<MoRef>,
    pub change_id: Option<ChangeId>,
    /// persistent, independent_persistent, independent_nonpersistent, …
    pub disk_mode: Option<String>,
    pub backing: DiskBacking,
    /// Where the .vmx holds the disk: its controller and unit (`scsi0:1`),
    /// when the host named the controller.
    pub slot: Option<String>,
}

impl VmDisk {
    /// Independent disks are left out of snapshots, so they cannot be backed up.
    pub fn is_independent(&self) -> bool {
        self.disk_mode
            .as_deref()
            .is_some_and(|m| m.starts_with("independent"))
    }

    pub fn is_rdm(&self) -> bool {
        matches!(self.backing, DiskBacking::RawDeviceMapping { .. })
    }

    /// Whether this is a raw device mapping in physical compatibility mode
    /// (or one whose mode the host did not say: taken as physical, the
    /// mode that cannot be snapshotted).
    pub fn is_physical_rdm(&self) -> bool {
        matches!(&self.backing, DiskBacking::RawDeviceMapping { compatibility_mode }
            if compatibility_mode.as_deref() != Some("virtualMode"))
    }

    /// Why a backup leaves this disk out, or `None` when it is read. A raw
    /// device mapping in physical compatibility mode cannot be held by a
    /// snapshot ("If you are using the RDM in physical compatibility mode,
    /// you cannot use a snapshot with the disk", vSphere Storage guide,
    /// "RDM Considerations and Limitations"), and its LUN takes the guest's
    /// SCSI commands unseen by the host; one in virtual mode is read like
    /// any disk, through its mapping file. An independent disk is not part
    /// of any snapshot ("Independent disks are not affected by snapshots",
    /// vSphere Virtual Machine Administration, "Virtual disk modes"), so
    /// reading it would give a disk in motion.
    pub fn why_not_backed_up(&self) -> Option<String> {
        if let DiskBacking::RawDeviceMapping { compatibility_mode } = &self.backing
            && self.is_physical_rdm()
        {
            return Some(format!(
                "disk {} is a raw device mapping in physical compatibility mode ({}): \
                 snapshots leave it out",
                self.file_name,
                compatibility_mode.as_deref().unwrap_or("mode not reported")
            ));
        }
        if self.is_independent() {
            return Some(format!(
                "disk {} is independent ({}): snapshots leave it out",
                self.file_name,
                self.disk_mode.as_deref().unwrap_or("independent")
            ));
        }
        if let DiskBacking::Other(kind) = &self.backing {
            return Some(format!("disk {} has a {kind} backing", self.file_name));
        }
        None
    }
}

/// One node of a VM's snapshot tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotNode {
    pub snapshot: MoRef,
    pub name: String,
    pub description: String,
    pub create_time: DateTime<Utc>,
    pub quiesced: bool,
    pub children: Vec<SnapshotNode>,
}

impl SnapshotNode {
    /// This node and all below it, parents first.
    pub fn walk(&self) -> Vec<&SnapshotNode> {
        let mut out = vec![self];
        for c in &self.children {
            out.extend(c.walk());
        }
        out
    }
}

/// What inventory knows of one VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmRecord {
    pub moref: MoRef,
    pub name: String,
    /// vCenter's instance UUID (`config.instanceUuid`): the identity coffer keys points by.
    pub instance_uuid: Option<String>,
    pub power_state: Option<PowerState>,
    /// guestToolsRunning, guestToolsNotRunning, …; needed to quiesce.
    pub tools_running_status: Option<String>,
    /// The guest's primary address as VMware Tools reports it.
    pub ip_address: Option<String>,
    pub change_tracking_enabled: bool,
    pub consolidation_needed: bool,
    /// The key of vSphere VM Encryption (`config.keyId`, a CryptoKeyId:
    /// its `keyId`, and the key provider's id after a `@`), or `None` for
    /// a VM that is not encrypted.
    pub encryption_key: Option<String>,
    /// `[datastore] dir/name.vmx` (`config.files.vmPathName`).
    pub vmx_path: Option<String>,
    pub disks: Vec<VmDisk>,
    /// Root snapshots; each holds its children.
    pub snapshots: Vec<SnapshotNode>,
    /// The inventory path of the VM's datacenter (`region-b/dc-2`), found
    /// from its parent chain; `None` when the chain does not reach one.
    /// On a vCenter each VM's datastore files are reached through its own
    /// datacenter: two datacenters may each have a datastore of one name.
    pub datacenter: Option<String>,
    /// The ESXi host that runs the VM (`runtime.host`), when known.
    pub host: Option<MoRef>,
}

impl VmRecord {
    /// Why coffer refuses to back up this VM at all, or `None`. An
    /// encrypted VM's disk files hold ciphertext under a key its key
    /// provider keeps (vSphere API reference, `VirtualMachineConfigInfo.keyId`:
    /// set exactly when the VM is encrypted, since vSphere 6.5): read over
    /// `/folder`, they would restore only where that key is, and never
    /// with a guest check coffer can run.
    pub fn why_refused(&self) -> Option<String> {
        self.encryption_key.as_ref().map(|key| {
            format!(
                "the VM is encrypted (config.keyId {key}): its disks would be read as ciphertext \
                 that cannot be restored without that key"
            )
        })
    }

    /// Every snapshot of the VM, parents first.
    pub fn all_snapshots(&self) -> Vec<&SnapshotNode> {
        self.snapshots.iter().flat_map(|s| s.walk()).collect()
    }
}

/// `[datastore] dir/name.vmdk`, split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatastorePath {
    pub datastore: String,
    /// Path inside the datastore, `/`-separated.
    pub path: String,
}

impl DatastorePath {
    pub fn parse(text: &str) -> Option<DatastorePath> {
        let rest = text.trim().strip_prefix('[')?;
        let (ds, path) = rest.split_once(']')?;
        let path = path.trim().trim_start_matches('/');
        (!ds.is_empty() && !path.is_empty()).then(|| DatastorePath {
            datastore: ds.to_string(),
            path: path.to_string(),
        })
    }

    /// A file in the same directory (extent names are relative to their
    /// descriptor).
    pub fn sibling(&self, name: &str) -> DatastorePath {
        let dir = self.path.rsplit_once('/').map_or("", |(d, _)| d);
        DatastorePath {
            datastore: self.datastore.clone(),
            path: if dir.is_empty() {
                name.to_string()
            } else {
                format!("{dir}/{name}")
            },
        }
    }
}

impl fmt::Display for DatastorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}", self.datastore, self.path)
    }
}

/// 32 hex digits as a UUID is written, `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
pub fn dashed_uuid(hex32: &str) -> String {
    let h = hex32;
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(mode: Option<&str>, backing: DiskBacking) -> VmDisk {
        VmDisk {
            key: 2001,
            capacity_bytes: 1 << 30,
            file_name: "[ds1] db01/db01_1.vmdk".into(),
            datastore: None,
            change_id: None,
            disk_mode: mode.map(str::to_string),
            backing,
            slot: Some("scsi0:1".into()),
        }
    }

    fn rdm(mode: Option<&str>) -> DiskBacking {
        DiskBacking::RawDeviceMapping {
            compatibility_mode: mode.map(str::to_string),
        }
    }

    #[test]
    fn a_virtual_mode_rdm_is_backed_up_unless_independent() {
        let virtual_rdm = disk(Some("persistent"), rdm(Some("virtualMode")));
        assert!(virtual_rdm.is_rdm() && !virtual_rdm.is_physical_rdm());
        assert_eq!(virtual_rdm.why_not_backed_up(), None);
        let independent = disk(Some("independent_persistent"), rdm(Some("virtualMode")));
        assert_eq!(
            independent.why_not_backed_up().as_deref(),
            Some(
                "disk [ds1] db01/db01_1.vmdk is independent (independent_persistent): snapshots leave it out"
            )
        );
    }

    #[test]
    fn a_physical_mode_rdm_is_left_out_for_its_mode_whatever_its_disk_mode() {
        let why = "disk [ds1] db01/db01_1.vmdk is a raw device mapping in physical compatibility mode (physicalMode): snapshots leave it out";
        for mode in [None, Some("persistent"), Some("independent_persistent")] {
            let d = disk(mode, rdm(Some("physicalMode")));
            assert!(d.is_physical_rdm());
            assert_eq!(d.why_not_backed_up().as_deref(), Some(why));
        }
        // A mapping whose mode the host did not say is taken as physical.
        let unknown = disk(Some("persistent"), rdm(None));
        assert!(
            unknown
                .why_not_backed_up()
                .is_some_and(|w| w.contains("(mode not reported)")),
            "{:?}",
            unknown.why_not_backed_up()
        );
        assert_eq!(
            disk(Some("persistent"), DiskBacking::Vmdk).why_not_backed_up(),
            None
        );
    }
}
