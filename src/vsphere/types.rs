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
    /// Guest operations through VMware Tools (absent on old or stripped
    /// servers).
    pub guest_operations_manager: Option<MoRef>,
    /// OVF import and export (`OvfManager`), when the server has one.
    pub ovf_manager: Option<MoRef>,
    pub about: AboutInfo,
}

/// Who a guest operation runs as (`NamePasswordAuthentication`).
#[derive(Clone)]
pub struct GuestAuth {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for GuestAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GuestAuth({}, password hidden)", self.user)
    }
}

/// A guest process as `ListProcessesInGuest` tells it: its exit code once
/// it has ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestProcess {
    pub pid: i64,
    pub exit_code: Option<i32>,
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

/// What a VM says of how its guest is quiesced, read right after a
/// quiesced snapshot: the guest, `disk.EnableUUID`, and the VSS manifests
/// among its files. A quiesced snapshot is application-consistent only
/// when the guest's VSS writers took part, and then the host stores a
/// `vss-manifest*.zip` in the VM's snapshot directory (VDDK Programming
/// Guide, "Working with Microsoft Shadow Copy" and "Application-Consistent
/// Backup and Restore"); the VM's `layoutEx.file` lists it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuestQuiesceFacts {
    /// `config.guestId` (`windows2019srv_64Guest`, `ubuntu64Guest`, …).
    pub guest_id: Option<String>,
    /// `disk.EnableUUID` of `config.extraConfig`; `None` when not set.
    pub disk_enable_uuid: Option<bool>,
    /// Datastore paths of `layoutEx.file` entries named `vss-manifest*.zip`.
    pub vss_manifests: Vec<String>,
}

impl GuestQuiesceFacts {
    /// Whether a file name (a datastore path or a bare name) is a VSS
    /// manifest's. By name, since the file types of `layoutEx` have none of
    /// their own for it.
    pub fn is_vss_manifest(name: &str) -> bool {
        let base = name
            .rsplit(['/', ' '])
            .next()
            .unwrap_or(name)
            .to_ascii_lowercase();
        base.starts_with("vss-manifest") && base.ends_with(".zip")
    }

    /// Why a quiesced snapshot whose VM shows these facts got no VSS
    /// manifest: what the host documents as the conditions of
    /// application-consistent quiescing (VMware KB 1018194, KB 1028881).
    pub fn why_no_vss(&self) -> String {
        let windows = self
            .guest_id
            .as_deref()
            .is_some_and(|g| g.to_ascii_lowercase().starts_with("win"));
        match (&self.guest_id, windows, self.disk_enable_uuid) {
            (Some(g), false, _) => format!(
                "the guest ({g}) is not Windows, so VMware Tools quiesced its file systems \
                 without VSS writers"
            ),
            (_, _, Some(false) | None) if windows => {
                "disk.EnableUUID is not TRUE in the VM's configuration, so the guest's VSS \
                 writers did not take part"
                    .into()
            }
            _ => "the guest's VSS writers did not take part (dynamic or IDE disks, or a writer \
                  failed; see the guest's event log)"
                .into(),
        }
    }
}

/// A host's standard switches and port groups (`HostNetworkSystem.networkInfo`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostNetwork {
    pub vswitches: Vec<VSwitchInfo>,
    pub port_groups: Vec<PortGroupInfo>,
}

/// A standard switch and its physical uplinks (`pnic` keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VSwitchInfo {
    pub name: String,
    pub uplinks: Vec<String>,
}

/// A port group and the switch it is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortGroupInfo {
    pub name: String,
    pub vswitch: String,
}

impl HostNetwork {
    /// The switch of port group `name`.
    pub fn switch_of(&self, port_group: &str) -> Option<&VSwitchInfo> {
        let pg = self.port_groups.iter().find(|p| p.name == port_group)?;
        self.vswitches.iter().find(|v| v.name == pg.vswitch)
    }
}

/// A question a VM asks before it goes on (`runtime.question`, a
/// VirtualMachineQuestionInfo): a power-on waits until it is answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmQuestion {
    pub id: String,
    pub text: String,
    /// The ids of its messages (`msg.uuid.altered`: "moved or copied?").
    pub message_ids: Vec<String>,
    /// Its choices: key, label, summary.
    pub choices: Vec<(String, String, String)>,
}

impl VmQuestion {
    /// The "This virtual machine might have been moved or copied" question
    /// a host asks at power-on when the .vmx's `uuid.location` is not
    /// where the VM now is.
    pub fn is_moved_or_copied(&self) -> bool {
        self.message_ids.iter().any(|m| m == "msg.uuid.altered")
    }

    /// The key of the choice "I moved it" (`moved`) or "I copied it",
    /// found by its label (`button.uuid.movedTheVM`) or summary
    /// (`I _moved it`): the keys themselves are only numbers.
    pub fn uuid_choice(&self, moved: bool) -> Option<&str> {
        let word = if moved { "moved" } else { "copied" };
        self.choices
            .iter()
            .find(|(_, label, summary)| {
                label.to_ascii_lowercase().contains(word)
                    || summary.replace('_', "").to_ascii_lowercase().contains(word)
            })
            .map(|(key, _, _)| key.as_str())
    }
}
