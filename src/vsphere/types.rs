//! What the vSphere API answers, as plain typed values: no XML here, so the
//! planner and the runner can be tested with values built by hand.

use std::fmt;
use std::ops::Range;

use chrono::{DateTime, Utc};

use super::fault::VimFault;

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

    /// The one ServiceInstance every endpoint has.
    pub fn service_instance() -> Self {
        MoRef::new("ServiceInstance", "ServiceInstance")
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

impl ChangeId {
    /// "Everything allocated": the base of a full backup.
    pub fn all() -> Self {
        ChangeId("*".into())
    }
}

impl fmt::Display for ChangeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `about` of the ServiceContent: what the endpoint is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AboutInfo {
    pub full_name: String,
    pub api_version: String,
    /// `embeddedEsx` for a host, `vpx` for vCenter.
    pub product_line_id: String,
    /// vCenter's identity; a standalone host has none.
    pub instance_uuid: Option<String>,
}

impl AboutInfo {
    pub fn is_vcenter(&self) -> bool {
        self.product_line_id == "vpx"
    }
}

/// The entry points of an endpoint, from RetrieveServiceContent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceContent {
    pub root_folder: MoRef,
    pub property_collector: MoRef,
    pub view_manager: MoRef,
    pub session_manager: MoRef,
    pub about: AboutInfo,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerState {
    PoweredOn,
    PoweredOff,
    Suspended,
}

impl PowerState {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "poweredOn" => Some(PowerState::PoweredOn),
            "poweredOff" => Some(PowerState::PoweredOff),
            "suspended" => Some(PowerState::Suspended),
            _ => None,
        }
    }
}

/// How a disk is backed, as far as backup cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskBacking {
    /// A VMDK on a datastore (flat, thin or thick): readable and CBT-capable.
    Vmdk,
    /// A raw device mapping; physical mode cannot be snapshotted.
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
    /// `[datastore] dir/name.vmx` (`config.files.vmPathName`).
    pub vmx_path: Option<String>,
    pub disks: Vec<VmDisk>,
    /// Root snapshots; each holds its children.
    pub snapshots: Vec<SnapshotNode>,
}

impl VmRecord {
    /// Every snapshot of the VM, parents first.
    pub fn all_snapshots(&self) -> Vec<&SnapshotNode> {
        self.snapshots.iter().flat_map(|s| s.walk()).collect()
    }
}

/// The answer of QueryChangedDiskAreas for one call: the areas changed in
/// `[start_offset_bytes, start_offset_bytes + length_bytes)`. A disk larger
/// than what one answer covers needs another call from the end of this one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskChangeInfo {
    pub start_offset_bytes: u64,
    pub length_bytes: u64,
    pub changed: Vec<Range<u64>>,
}

impl DiskChangeInfo {
    /// Where the next call starts.
    pub fn end_bytes(&self) -> u64 {
        self.start_offset_bytes + self.length_bytes
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    Queued,
    Running,
    Success,
    Error,
}

/// The state of a task (`Task.info`).
#[derive(Debug, Clone, PartialEq)]
pub struct TaskInfo {
    pub task: MoRef,
    pub state: TaskState,
    pub progress_percent: Option<u8>,
    /// The created object, for tasks that create one (CreateSnapshot, RegisterVM).
    pub result: Option<MoRef>,
    pub error: Option<VimFault>,
}

/// One page of a RetrievePropertiesEx / ContinueRetrievePropertiesEx.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Present when more pages follow.
    pub token: Option<String>,
}
