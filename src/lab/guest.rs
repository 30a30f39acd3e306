//! What a lab VM's guest is, as far as quiescing goes, and the VSS manifest
//! a quiesced snapshot of it gets.
//!
//! A real host makes a quiesced snapshot application-consistent only when
//! the guest's VSS writers take part, and only a Windows guest with
//! `disk.EnableUUID = "TRUE"`, SCSI disks and no dynamic disks lets them;
//! any other guest that VMware Tools quiesces gets a file-system-consistent
//! snapshot (VDDK Programming Guide, "Working with Microsoft Shadow Copy",
//! table "Driver Type and Quiescing Mechanisms Used According to Guest
//! Operating Systems", and "The VMware VSS Implementation"; VMware KB
//! 1018194 / KB 1028881). When VSS took part, "VMware Tools generate a
//! vss-manifest.zip file containing the backup components document (BCD)
//! and writer manifests. The host agent stores this manifest file in the
//! snapshotDir of the virtual machine", and "the VSS snapshot is created
//! with the vss-manifest file, or without this file in the error case"
//! (VDDK Programming Guide, "Application-Consistent Backup and Restore").
//! The lab does the same: the manifest lies beside the VM's other files and
//! the VM's `layoutEx.file` lists it until the snapshot is removed.
//!
//! The guest's family and `disk.EnableUUID` are read from the VM's .vmx,
//! as a host reads them (`guestOS`, `disk.EnableUUID`), so a VM registered
//! from a restored .vmx keeps them. Every lab disk sits on `scsi0` and
//! none is dynamic, so the other two conditions always hold here.

use std::path::Path;

use super::state::{Fault, State, Vm};
use crate::vsphere::vmx::{self, value as vmx_value};

/// The guest family a lab VM's .vmx names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestOs {
    /// `guestOS = "other5xlinux-64"`, what lab VMs are made with: VMware
    /// Tools quiesces the file systems (freeze/thaw), no VSS.
    Linux,
    /// `guestOS = "windows2019srv-64"`: VSS writers take part when
    /// `disk.EnableUUID` is TRUE.
    Windows,
}

impl GuestOs {
    fn vmx_value(self) -> &'static str {
        match self {
            GuestOs::Linux => "other5xlinux-64",
            GuestOs::Windows => "windows2019srv-64",
        }
    }
}

/// What the .vmx of `vm` says of its guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestConfig {
    /// `config.guestId`, as the API names the .vmx's `guestOS`
    /// (`windows2019srv_64Guest`, `other5xLinux64Guest`).
    pub guest_id: String,
    pub windows: bool,
    /// `disk.EnableUUID = "TRUE"` (case-insensitive, as the host reads it).
    pub disk_enable_uuid: bool,
}

/// The API's guest id of a .vmx `guestOS` value (vSphere API reference,
/// `VirtualMachineGuestOsIdentifier`), for the values the lab writes.
pub(super) fn guest_id(vmx_guest_os: &str) -> String {
    match vmx_guest_os {
        "windows2019srv-64" => "windows2019srv_64Guest".into(),
        "other5xlinux-64" => "other5xLinux64Guest".into(),
        other => format!("{}Guest", other.replace('-', "_")),
    }
}

/// Whether `id` is one of the API's guest ids (`other5xLinux64Guest`,
/// `otherGuest64`) rather than a .vmx `guestOS` value: every
/// `VirtualMachineGuestOsIdentifier` ends in `Guest` or `Guest64`.
pub(super) fn is_guest_id(id: &str) -> bool {
    id.ends_with("Guest") || id.ends_with("Guest64")
}

pub fn guest_config(vm: &Vm, root: &Path) -> GuestConfig {
    let text = vm.vmx_text(root);
    let os = vmx_value(&text, "guestOS").unwrap_or("other5xlinux-64");
    GuestConfig {
        guest_id: guest_id(os),
        windows: os.to_ascii_lowercase().starts_with("win"),
        disk_enable_uuid: vmx_value(&text, "disk.EnableUUID")
            .is_some_and(|v| v.eq_ignore_ascii_case("true")),
    }
}

/// Sets the guest family and `disk.EnableUUID` in `vm`'s .vmx, as an
/// administrator editing the VM's configuration parameters would (the VDDK
/// guide's "Enable Virtual Machine Application Consistent Quiescing").
pub fn set_guest(
    state: &mut State,
    root: &Path,
    vm: &str,
    os: GuestOs,
    disk_enable_uuid: bool,
) -> Result<(), Fault> {
    let v = state
        .vms
        .iter()
        .find(|v| v.name == vm || v.moref() == vm)
        .ok_or_else(|| Fault::not_found("VirtualMachine", vm))?;
    super::datastore_system::refuse_nas(v, "change the guest of")?;
    let text = vmx::with_value(&v.vmx_text(root), "guestOS", os.vmx_value());
    let text = vmx::with_value(
        &text,
        "disk.EnableUUID",
        if disk_enable_uuid { "TRUE" } else { "FALSE" },
    );
    std::fs::write(root.join(&v.vmx), text)?;
    Ok(())
}

/// An empty zip archive (its end-of-central-directory record alone): the
/// lab has no writers to describe, but the file is a real zip.
const EMPTY_ZIP: [u8; 22] = [
    0x50, 0x4b, 0x05, 0x06, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

/// For a quiesced snapshot `id` of `vm`: writes the VSS manifest beside the
/// VM's files when its guest's VSS writers take part, and answers its path
/// relative to the datastore; `None` (file-system quiescing) otherwise.
pub fn write_vss_manifest(vm: &Vm, root: &Path, id: u64) -> Result<Option<String>, Fault> {
    let guest = guest_config(vm, root);
    if !(guest.windows && guest.disk_enable_uuid) {
        return Ok(None);
    }
    let name = format!("vss-manifest{id}.zip");
    let rel = match vm.dir() {
        "" => name,
        dir => format!("{dir}/{name}"),
    };
    std::fs::write(root.join(&rel), EMPTY_ZIP)?;
    Ok(Some(rel))
}

/// Deletes a removed snapshot's VSS manifest, as the host deletes the
/// snapshot's files.
pub fn remove_vss_manifest(root: &Path, rel: &str) {
    let _ = std::fs::remove_file(root.join(rel));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vmx_names_the_guest_and_its_disk_uuid_setting() {
        let text = "guestOS = \"windows2019srv-64\"\ndisk.enableUUID = \"true\"\n";
        assert_eq!(vmx_value(text, "guestOS"), Some("windows2019srv-64"));
        assert_eq!(vmx_value(text, "disk.EnableUUID"), Some("true"));
        assert_eq!(guest_id("windows2019srv-64"), "windows2019srv_64Guest");
        assert_eq!(guest_id("other5xlinux-64"), "other5xLinux64Guest");
    }

    #[test]
    fn api_guest_ids_map_to_vmx_values_and_back() {
        for vmx in ["other5xlinux-64", "windows2019srv-64"] {
            assert!(is_guest_id(&guest_id(vmx)));
            assert_eq!(crate::vsphere::vmx::guest_os_of_id(&guest_id(vmx)), vmx);
        }
        assert_eq!(
            crate::vsphere::vmx::guest_os_of_id("rhel8_64Guest"),
            "rhel8-64"
        );
        assert_eq!(
            crate::vsphere::vmx::guest_os_of_id("ubuntu64Guest"),
            "ubuntu-64"
        );
        assert_eq!(
            crate::vsphere::vmx::guest_os_of_id("otherGuest64"),
            "other-64"
        );
        assert_eq!(crate::vsphere::vmx::guest_os_of_id("otherGuest"), "other");
        assert!(!is_guest_id("other5xlinux-64"));
    }
}
