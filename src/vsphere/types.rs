//! What the vSphere API answers, as plain typed values: no XML here, so the
//! runner can be tested with values built by hand.
//!
//! The inventory records themselves (a VM, its disks and snapshots, a
//! managed object reference, a change id) live in the neutral
//! `crate::inventory` model and are re-exported here under their old paths;
//! this file adds only what belongs to the protocol: the service content,
//! tasks, changed-area answers, pages, and the wire names of a few inventory
//! values. It must never hold XML or decide anything.

use std::ops::Range;

use super::fault::VimFault;
pub use crate::inventory::{
    ChangeId, DiskBacking, MoRef, PowerState, SnapshotNode, VmDisk, VmRecord,
};

impl MoRef {
    /// The one ServiceInstance every endpoint has.
    pub fn service_instance() -> Self {
        MoRef::new("ServiceInstance", "ServiceInstance")
    }
}

impl ChangeId {
    /// "Everything allocated": the base of a full backup.
    pub fn all() -> Self {
        ChangeId("*".into())
    }
}

impl PowerState {
    /// The state from its vSphere name (`runtime.powerState`).
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "poweredOn" => Some(PowerState::PoweredOn),
            "poweredOff" => Some(PowerState::PoweredOff),
            "suspended" => Some(PowerState::Suspended),
            _ => None,
        }
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
