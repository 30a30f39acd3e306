//! Reading an OVF 1.0 descriptor the way a host's OvfManager does before it
//! makes an import spec (`import_spec`): the files it references, its
//! disks, and the one virtual system with its operating system and virtual
//! hardware (DMTF DSP0243 "Open Virtualization Format Specification" 1.0:
//! `References/File`, `DiskSection/Disk`, `VirtualSystem`,
//! `OperatingSystemSection`, `VirtualHardwareSection` with its `System`
//! and CIM `Item`s), plus the VMware extensions ovftool writes inside the
//! hardware section with `--exportFlags=mac,uuid,extraconfig`:
//! `vmw:Config` (`uuid`, `firmware`, …), `vmw:ExtraConfig`, and a
//! `vmw:Config vmw:key="addressType"` inside an ethernet `Item`.
//!
//! Elements are matched by their namespace's local name (descriptors use
//! the default namespace or an `ovf:` prefix alike); attributes by local
//! name in the OVF or VMware namespace, or unqualified. It is pure: text
//! in, a model out; what the model means for a VM is `import_spec`'s.

use roxmltree::{Document, Node};

pub const OVF_NS: &str = "http://schemas.dmtf.org/ovf/envelope/1";
pub const VMW_NS: &str = "http://www.vmware.com/schema/ovf";

/// Why a descriptor cannot be read at all (CreateImportSpec answers it as
/// an InvalidArgument fault on `ovfDescriptor`, as govmomi's simulator
/// does in `simulator/ovf_manager.go`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OvfError {
    #[error("the OVF descriptor is not XML: {0}")]
    Xml(String),
    #[error("the OVF descriptor's root is <{0}>, not an OVF <Envelope>")]
    NotAnEnvelope(String),
    #[error(
        "the OVF descriptor has no VirtualSystem (a VirtualSystemCollection is not imported by the lab)"
    )]
    NoVirtualSystem,
    #[error("the OVF descriptor's VirtualSystem has no VirtualHardwareSection")]
    NoHardware,
    #[error("the OVF descriptor's {what} `{value}` is not a number")]
    NotANumber { what: &'static str, value: String },
}

/// One `References/File`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OvfFile {
    pub id: String,
    pub href: String,
    pub size_bytes: Option<u64>,
}

/// One `DiskSection/Disk`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OvfDisk {
    pub disk_id: String,
    pub file_ref: Option<String>,
    pub capacity_bytes: u64,
    pub format: Option<String>,
}

/// One `Item` of the virtual hardware: the CIM RASD fields the lab reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Item {
    pub resource_type: Option<u32>,
    pub resource_sub_type: Option<String>,
    pub instance_id: String,
    pub element_name: String,
    pub address: Option<String>,
    pub address_on_parent: Option<String>,
    pub parent: Option<String>,
    pub host_resource: Vec<String>,
    pub connection: Vec<String>,
    pub automatic_allocation: Option<bool>,
    pub virtual_quantity: Option<u64>,
    pub allocation_units: Option<String>,
    /// `vmw:Config` inside the item (key, value).
    pub config: Vec<(String, String)>,
}

/// What one descriptor holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Envelope {
    pub files: Vec<OvfFile>,
    pub disks: Vec<OvfDisk>,
    /// `VirtualSystem/Name`, else its `ovf:id`.
    pub name: String,
    /// `OperatingSystemSection`'s `vmw:osType`.
    pub os_type: Option<String>,
    /// `System/vssd:VirtualSystemType` (`vmx-19`, or several separated by
    /// spaces).
    pub system_type: Option<String>,
    pub items: Vec<Item>,
    /// `vmw:Config` of the hardware section (key, value).
    pub config: Vec<(String, String)>,
    /// `vmw:ExtraConfig` of the hardware section (key, value).
    pub extra_config: Vec<(String, String)>,
}

fn is(node: &Node<'_, '_>, local: &str) -> bool {
    node.is_element() && node.tag_name().name() == local
}

fn child<'a, 'i>(node: Node<'a, 'i>, local: &str) -> Option<Node<'a, 'i>> {
    node.children().find(|c| is(c, local))
}

fn text(node: Node<'_, '_>) -> String {
    node.children()
        .filter_map(|c| c.text())
        .collect::<String>()
        .trim()
        .to_string()
}

/// An attribute by local name: OVF- or VMware-qualified, or unqualified.
fn attr(node: Node<'_, '_>, local: &str) -> Option<String> {
    node.attributes()
        .find(|a| a.name() == local && matches!(a.namespace(), None | Some(OVF_NS) | Some(VMW_NS)))
        .map(|a| a.value().trim().to_string())
}

fn number(what: &'static str, value: &str) -> Result<u64, OvfError> {
    value.trim().parse().map_err(|_| OvfError::NotANumber {
        what,
        value: value.to_string(),
    })
}

/// The multiplier of a CIM programmatic unit: `byte`, `byte * 2^20`,
/// `byte * 1024` (DSP0004 Annex C.1, as DSP0243 uses it for
/// `ovf:capacityAllocationUnits` and `rasd:AllocationUnits`; govmomi's
/// simulator reads the same forms in `ovfDiskCapacity`). `None` for a
/// unit that is not a multiple of bytes.
pub fn byte_multiplier(units: &str) -> Option<u64> {
    let compact: String = units.chars().filter(|c| !c.is_whitespace()).collect();
    let rest = compact.to_ascii_lowercase();
    let rest = rest.strip_prefix("byte")?;
    if rest.is_empty() {
        return Some(1);
    }
    let factor = rest.strip_prefix('*')?;
    match factor.split_once('^') {
        Some((base, exp)) => {
            let base: u64 = base.parse().ok()?;
            let exp: u32 = exp.parse().ok()?;
            base.checked_pow(exp)
        }
        None => factor.parse().ok(),
    }
}

/// `vmw:key`/`vmw:value` pairs of the VMware-namespace children named
/// `local`.
fn key_values(node: Node<'_, '_>, local: &str) -> Vec<(String, String)> {
    node.children()
        .filter(|c| is(c, local) && c.tag_name().namespace() == Some(VMW_NS))
        .filter_map(|c| Some((attr(c, "key")?, attr(c, "value").unwrap_or_default())))
        .collect()
}

fn item(node: Node<'_, '_>) -> Result<Item, OvfError> {
    let mut it = Item::default();
    for c in node.children().filter(|c| c.is_element()) {
        let value = text(c);
        match c.tag_name().name() {
            "ResourceType" => it.resource_type = Some(number("rasd:ResourceType", &value)? as u32),
            "ResourceSubType" => it.resource_sub_type = Some(value),
            "InstanceID" => it.instance_id = value,
            "ElementName" => it.element_name = value,
            "Address" => it.address = Some(value),
            "AddressOnParent" => it.address_on_parent = Some(value),
            "Parent" => it.parent = Some(value),
            "HostResource" => it.host_resource.push(value),
            "Connection" => it.connection.push(value),
            "AutomaticAllocation" => {
                it.automatic_allocation = Some(value.eq_ignore_ascii_case("true") || value == "1")
            }
            "VirtualQuantity" => {
                it.virtual_quantity = Some(number("rasd:VirtualQuantity", &value)?)
            }
            "AllocationUnits" => it.allocation_units = Some(value),
            _ => {}
        }
    }
    it.config = key_values(node, "Config");
    Ok(it)
}

/// Reads a descriptor.
pub fn parse(descriptor: &str) -> Result<Envelope, OvfError> {
    let doc = Document::parse(descriptor).map_err(|e| OvfError::Xml(e.to_string()))?;
    let root = doc.root_element();
    if root.tag_name().name() != "Envelope" {
        return Err(OvfError::NotAnEnvelope(root.tag_name().name().to_string()));
    }
    let mut env = Envelope::default();
    if let Some(refs) = child(root, "References") {
        for f in refs.children().filter(|c| is(c, "File")) {
            env.files.push(OvfFile {
                id: attr(f, "id").unwrap_or_default(),
                href: attr(f, "href").unwrap_or_default(),
                size_bytes: attr(f, "size")
                    .map(|s| number("ovf:size", &s))
                    .transpose()?,
            });
        }
    }
    if let Some(section) = child(root, "DiskSection") {
        for d in section.children().filter(|c| is(c, "Disk")) {
            let capacity = number("ovf:capacity", &attr(d, "capacity").unwrap_or_default())?;
            let units = attr(d, "capacityAllocationUnits").unwrap_or_else(|| "byte".into());
            let multiplier = byte_multiplier(&units).ok_or(OvfError::NotANumber {
                what: "ovf:capacityAllocationUnits",
                value: units.clone(),
            })?;
            env.disks.push(OvfDisk {
                disk_id: attr(d, "diskId").unwrap_or_default(),
                file_ref: attr(d, "fileRef"),
                capacity_bytes: capacity.saturating_mul(multiplier),
                format: attr(d, "format"),
            });
        }
    }
    let system = child(root, "VirtualSystem").ok_or(OvfError::NoVirtualSystem)?;
    env.name = child(system, "Name")
        .map(text)
        .filter(|n| !n.is_empty())
        .or_else(|| attr(system, "id"))
        .unwrap_or_default();
    env.os_type = child(system, "OperatingSystemSection").and_then(|o| attr(o, "osType"));
    let hw = child(system, "VirtualHardwareSection").ok_or(OvfError::NoHardware)?;
    env.system_type = child(hw, "System")
        .and_then(|s| child(s, "VirtualSystemType"))
        .map(text);
    for i in hw.children().filter(|c| is(c, "Item")) {
        env.items.push(item(i)?);
    }
    env.config = key_values(hw, "Config");
    env.extra_config = key_values(hw, "ExtraConfig");
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::ovf::{OvfDisk as ExportDisk, VmHardware, ovf_envelope};

    #[test]
    fn allocation_units_are_multiples_of_bytes() {
        assert_eq!(byte_multiplier("byte"), Some(1));
        assert_eq!(byte_multiplier("byte * 2^20"), Some(1 << 20));
        assert_eq!(byte_multiplier("byte*2^30"), Some(1 << 30));
        assert_eq!(byte_multiplier("byte * 1024"), Some(1024));
        assert_eq!(byte_multiplier("hertz * 10^6"), None);
    }

    #[test]
    fn coffers_own_descriptor_reads_back() {
        let hw = VmHardware {
            vcpus: 2,
            memory_mib: 2048,
            guest_os: "other5xLinux64Guest".into(),
            scsi_controller: "VirtualSCSI".into(),
            hardware_version: "vmx-19".into(),
            ..VmHardware::default()
        };
        let disks = [
            ExportDisk {
                file_name: "db01-disk1.vmdk".into(),
                file_size_bytes: 1234,
                capacity_bytes: 64 << 20,
                slot: None,
            },
            ExportDisk {
                file_name: "db01-disk2.vmdk".into(),
                file_size_bytes: 99,
                capacity_bytes: 32 << 20,
                slot: None,
            },
        ];
        let env = parse(&ovf_envelope("db01", &hw, &disks).unwrap()).unwrap();
        assert_eq!(env.name, "db01");
        assert_eq!(env.os_type.as_deref(), Some("other5xLinux64Guest"));
        assert_eq!(env.system_type.as_deref(), Some("vmx-19"));
        assert_eq!(env.files.len(), 2);
        assert_eq!(env.files[1].href, "db01-disk2.vmdk");
        assert_eq!(env.files[1].size_bytes, Some(99));
        assert_eq!(env.disks[0].capacity_bytes, 64 << 20);
        assert_eq!(env.disks[1].file_ref.as_deref(), Some("file2"));
        let types: Vec<u32> = env.items.iter().filter_map(|i| i.resource_type).collect();
        assert_eq!(types, [3, 4, 6, 17, 17]);
        let disk = &env.items[4];
        assert_eq!(disk.parent.as_deref(), Some("3"));
        assert_eq!(disk.address_on_parent.as_deref(), Some("1"));
        assert_eq!(disk.host_resource, ["ovf:/disk/vmdisk2"]);
    }

    #[test]
    fn vmware_extensions_are_read() {
        let text = r#"<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1"
            xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"
            xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
            xmlns:vmw="http://www.vmware.com/schema/ovf">
          <DiskSection><Disk ovf:capacity="2" ovf:capacityAllocationUnits="byte * 2^30" ovf:diskId="vmdisk1"/></DiskSection>
          <VirtualSystem ovf:id="vm1"><VirtualHardwareSection>
            <Item><rasd:ElementName>Network adapter 1</rasd:ElementName><rasd:InstanceID>5</rasd:InstanceID>
              <rasd:ResourceType>10</rasd:ResourceType><rasd:Connection>VM Network</rasd:Connection>
              <rasd:Address>00:50:56:01:02:03</rasd:Address>
              <rasd:AutomaticAllocation>false</rasd:AutomaticAllocation>
              <vmw:Config ovf:required="false" vmw:key="addressType" vmw:value="manual"/></Item>
            <vmw:Config ovf:required="false" vmw:key="uuid" vmw:value="564d0000-1111-2222-3333-444455556666"/>
            <vmw:Config ovf:required="false" vmw:key="firmware" vmw:value="efi"/>
            <vmw:ExtraConfig ovf:required="false" vmw:key="disk.EnableUUID" vmw:value="TRUE"/>
          </VirtualHardwareSection></VirtualSystem></Envelope>"#;
        let env = parse(text).unwrap();
        assert_eq!(env.name, "vm1");
        assert_eq!(env.disks[0].capacity_bytes, 2 << 30);
        assert_eq!(
            env.config[0],
            ("uuid".into(), "564d0000-1111-2222-3333-444455556666".into())
        );
        assert_eq!(env.config[1], ("firmware".into(), "efi".into()));
        assert_eq!(
            env.extra_config,
            [("disk.EnableUUID".into(), "TRUE".into())]
        );
        let nic = &env.items[0];
        assert_eq!(nic.automatic_allocation, Some(false));
        assert_eq!(nic.config, [("addressType".into(), "manual".into())]);
        assert_eq!(nic.address.as_deref(), Some("00:50:56:01:02:03"));
    }

    #[test]
    fn what_is_not_a_descriptor_is_refused() {
        assert!(matches!(parse("<Envelope"), Err(OvfError::Xml(_))));
        assert_eq!(
            parse("<html/>"),
            Err(OvfError::NotAnEnvelope("html".into()))
        );
        assert_eq!(
            parse(&format!("<Envelope xmlns=\"{OVF_NS}\"/>")),
            Err(OvfError::NoVirtualSystem)
        );
    }
}
