//! OvfManager.CreateImportSpec: what a host makes of an OVF descriptor
//! (`ovf`) for one datastore and resource pool, an
//! `OvfCreateImportSpecResult` with a `VirtualMachineImportSpec` whose
//! `configSpec` a client sends back verbatim to ResourcePool.ImportVApp,
//! the files to upload (`fileItem`), and what cannot be imported
//! (`warning`, `error`: LocalizedMethodFault). The mapping of CIM items
//! to devices follows govmomi's simulator (`simulator/ovf_manager.go`):
//! ResourceType 3 CPUs, 4 memory, 6 SCSI controller, 10 ethernet, 17 disk
//! on its `Parent` controller, an unknown type an `OvfUnsupportedType`
//! error; 1 (VMCI), 5 (IDE), 14 (floppy), 15 (CD/DVD), 23 (USB) and 24
//! (video) are accepted and left out, as the lab models none of them.
//!
//! The `fileItem` deviceIds and the lease's keys name a disk by its
//! controller's vim type, bus and unit (`/<entity>/VirtualLsiLogicController0:0`),
//! as ESXi writes them (an ESXi 6.7 lease printed in nutanix/curie's
//! `__upload_vmdks`: key `/vm-67/VirtualLsiLogicController0:0`, importKey
//! `/<entity name>/VirtualLsiLogicController0:0`); the disk files are
//! `[ds] NAME/NAME.vmdk`, `NAME_1.vmdk`, … as ESXi names a new VM's disks.
//!
//! The configSpec is a `ConfigSpec` value (`config_spec` renders it and
//! reads it back from ImportVApp). It is pure; making the VM is
//! `import`'s.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use roxmltree::Node;

use super::config_spec::{
    ConfigSpec, ControllerSpec, DiskSpec, NicKind, NicSpec, ScsiKind, canonical_mac,
    canonical_uuid, child, device_id, disk_file_name, field, moref_arg, render_config_spec,
    spec_fault,
};
use super::guest;
use super::inventory;
use super::ovf::{self, Envelope, Item, byte_multiplier};
use super::state::{self, Fault, Store};
use super::wire::{fault_fields, moref};
use crate::vsphere::soap::escape;

/// One file the client uploads (`OvfFileItem`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileItem {
    pub device_id: String,
    pub path: String,
    pub size_bytes: Option<u64>,
}

/// CreateImportSpec's parameters beyond the descriptor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateParams {
    /// `cisp.entityName`; the descriptor's name when empty.
    pub entity_name: String,
    /// The datastore's name (its moref on the lab).
    pub datastore: String,
    /// The resource pool's moref.
    pub pool: String,
    /// `cisp.networkMapping`: OVF network name → Network moref value.
    pub network_mapping: Vec<(String, String)>,
    /// `cisp.diskProvisioning` (`thin`, `thick`, `eagerZeroedThick`, …).
    pub disk_provisioning: String,
}

/// An `OvfCreateImportSpecResult`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportSpecResult {
    pub spec: ConfigSpec,
    pub pool: String,
    pub file_items: Vec<FileItem>,
    pub warnings: Vec<Fault>,
    pub errors: Vec<Fault>,
}

/// The highest hardware version of a `VirtualSystemType` (`vmx-19`, or a
/// list such as `vmx-13 vmx-19`).
fn hardware_version(system_type: Option<&str>) -> Option<String> {
    system_type?
        .split_whitespace()
        .filter_map(|t| t.strip_prefix("vmx-")?.parse::<u32>().ok())
        .max()
        .map(|n| format!("vmx-{n:02}"))
}

/// An OVF fault about `item`, as a LocalizedMethodFault's fault.
fn unsupported_type(item: &Item, message: String) -> Fault {
    Fault::new("OvfUnsupportedType", message)
        .with("name", &item.element_name)
        .with("instanceId", &item.instance_id)
        .with("deviceType", item.resource_type.unwrap_or(0).to_string())
}

fn unsupported_sub_type(item: &Item) -> Fault {
    let sub = item.resource_sub_type.clone().unwrap_or_default();
    Fault::new(
        "OvfUnsupportedSubType",
        format!(
            "Unsupported hardware family '{sub}' for element '{}' (resource type {}).",
            item.element_name,
            item.resource_type.unwrap_or(0)
        ),
    )
    .with("elementName", &item.element_name)
    .with("instanceId", &item.instance_id)
    .with("deviceType", item.resource_type.unwrap_or(0).to_string())
    .with("deviceSubType", sub)
}

fn invalid_value(element: &str, attribute: &str, value: &str, message: String) -> Fault {
    Fault::new("OvfInvalidValue", message)
        .with("lineNumber", "0")
        .with("elementName", element)
        .with("attributeName", attribute)
        .with("value", value)
}

/// The OVF `rasd:*` number of `value`, or an OvfInvalidValue error.
fn item_number(item: &Item, field: &str, value: &str) -> Result<u32, Fault> {
    value.trim().parse().map_err(|_| {
        invalid_value(
            "Item",
            field,
            value,
            format!(
                "{field} of '{}' is not a number: {value}",
                item.element_name
            ),
        )
    })
}

/// The lowest number from `from` not in `taken` and not `skip`.
fn free(taken: &BTreeSet<u32>, from: u32, skip: Option<u32>) -> u32 {
    (from..)
        .find(|n| !taken.contains(n) && Some(*n) != skip)
        .expect("numbers never run out")
}

/// The SCSI unit a controller keeps for itself (vSphere API reference,
/// `VirtualSCSIController.scsiCtlrUnitNumber`: "typically 7").
const SCSI_CONTROLLER_UNIT: u32 = 7;
/// Units 0–15 on a SCSI bus; four SCSI controllers per VM.
const SCSI_UNITS: u32 = 16;
const SCSI_BUSES: u32 = 4;

/// The import spec of `env` for `params`.
pub fn build(env: &Envelope, params: &CreateParams) -> ImportSpecResult {
    let name = match params.entity_name.trim() {
        "" => env.name.clone(),
        n => n.to_string(),
    };
    let guest_id = match env.os_type.as_deref() {
        Some(t) if guest::is_guest_id(t) => t.to_string(),
        Some(t) if !t.is_empty() => guest::guest_id(t),
        _ => "otherGuest".to_string(),
    };
    let thin = !matches!(
        params.disk_provisioning.as_str(),
        "thick" | "eagerZeroedThick" | "monolithicFlat" | "twoGbMaxExtentFlat" | "flat"
    );
    let mut spec = ConfigSpec {
        name: name.clone(),
        version: hardware_version(env.system_type.as_deref()).unwrap_or_else(|| "vmx-19".into()),
        uuid: None,
        guest_id,
        vm_path_name: format!("[{}]", params.datastore),
        num_cpus: 1,
        memory_mb: 1024,
        controllers: Vec::new(),
        disks: Vec::new(),
        nics: Vec::new(),
        extra_config: env.extra_config.clone(),
        firmware: None,
    };
    let mut result = ImportSpecResult {
        spec: spec.clone(),
        pool: params.pool.clone(),
        file_items: Vec::new(),
        warnings: Vec::new(),
        errors: Vec::new(),
    };
    for (key, value) in &env.config {
        match key.as_str() {
            "uuid" => match canonical_uuid(value) {
                Some(u) => spec.uuid = Some(u),
                None => result.errors.push(invalid_value(
                    "Config",
                    "vmw:value",
                    value,
                    format!("'{value}' is not a UUID"),
                )),
            },
            "firmware" if matches!(value.as_str(), "bios" | "efi") => {
                spec.firmware = Some(value.clone())
            }
            "firmware" => result.errors.push(invalid_value(
                "Config",
                "vmw:value",
                value,
                format!("firmware '{value}' is neither bios nor efi"),
            )),
            other => result.warnings.push(
                Fault::new(
                    "OvfUnsupportedElementValue",
                    format!("The lab does not model the VM option '{other}'; it is left out."),
                )
                .with("name", "vmw:Config")
                .with("value", other),
            ),
        }
    }
    // Controllers first: disks name them by InstanceID.
    let mut buses = BTreeSet::new();
    let mut by_instance: Vec<(String, usize)> = Vec::new();
    for item in env.items.iter().filter(|i| i.resource_type == Some(6)) {
        let Some(kind) = item
            .resource_sub_type
            .as_deref()
            .and_then(ScsiKind::from_ovf)
        else {
            result.errors.push(unsupported_sub_type(item));
            continue;
        };
        let bus = match item.address.as_deref() {
            Some(a) => match item_number(item, "Address", a) {
                Ok(b) => b,
                Err(f) => {
                    result.errors.push(f);
                    continue;
                }
            },
            None => free(&buses, 0, None),
        };
        if bus >= SCSI_BUSES || !buses.insert(bus) {
            result.errors.push(invalid_value(
                "Item",
                "Address",
                &bus.to_string(),
                format!(
                    "SCSI bus {bus} of '{}' is taken or beyond 0–3",
                    item.element_name
                ),
            ));
            continue;
        }
        by_instance.push((item.instance_id.clone(), spec.controllers.len()));
        spec.controllers.push(ControllerSpec {
            key: -100 - spec.controllers.len() as i32,
            bus,
            kind,
        });
    }
    let mut units: Vec<BTreeSet<u32>> = vec![BTreeSet::new(); spec.controllers.len()];
    for item in &env.items {
        match item.resource_type {
            Some(3) => spec.num_cpus = item.virtual_quantity.unwrap_or(1).max(1) as u32,
            Some(4) => {
                let alloc = item.allocation_units.as_deref().unwrap_or("byte * 2^20");
                let bytes = byte_multiplier(alloc)
                    .unwrap_or(1 << 20)
                    .saturating_mul(item.virtual_quantity.unwrap_or(0));
                spec.memory_mb = bytes.div_ceil(1 << 20).max(4);
            }
            Some(6) => {}
            Some(10) => match nic(item, &params.network_mapping, spec.nics.len()) {
                Ok(n) => spec.nics.push(n),
                Err(f) => result.errors.push(f),
            },
            Some(17) => {
                let placed = disk(item, env, &by_instance, &mut units, &spec, &name, params);
                match placed {
                    Ok((d, file)) => {
                        result.file_items.extend(file);
                        spec.disks.push(d);
                    }
                    Err(f) => result.errors.push(f),
                }
            }
            Some(1 | 5 | 14 | 15 | 23 | 24) => {}
            Some(n) => result.errors.push(unsupported_type(
                item,
                format!("unsupported resource type: {n}"),
            )),
            None => result.errors.push(unsupported_type(
                item,
                format!("item '{}' has no resource type", item.element_name),
            )),
        }
    }
    for d in &mut spec.disks {
        d.thin = thin;
    }
    result.spec = spec;
    result
}

fn nic(item: &Item, mapping: &[(String, String)], index: usize) -> Result<NicSpec, Fault> {
    let kind = item
        .resource_sub_type
        .as_deref()
        .and_then(NicKind::from_ovf)
        .ok_or_else(|| unsupported_sub_type(item))?;
    let connection = item.connection.first().cloned().unwrap_or_default();
    if connection.is_empty() {
        return Err(invalid_value(
            "Item",
            "Connection",
            "",
            format!("network adapter '{}' names no network", item.element_name),
        ));
    }
    // A mapped network by its moref: on a standalone host a Network's
    // moref is `HaNetwork-<name>` (govmomi's simulator, `esx` model); the
    // lab's port groups are its networks. Unmapped, the OVF's name stands
    // (govmomi's simulator falls back to `VM Network` instead).
    let network = mapping
        .iter()
        .find(|(n, _)| *n == connection)
        .map(|(_, net)| net.strip_prefix("HaNetwork-").unwrap_or(net).to_string())
        .unwrap_or(connection);
    // `vmw:Config addressType`: manual keeps the address as given;
    // generated asks for it, and the host keeps it when it may (see
    // `import::vmx_text`); without one the host generates a new address.
    let address_type = item
        .config
        .iter()
        .find(|(k, _)| k == "addressType")
        .map(|(_, v)| v.to_ascii_lowercase());
    let manual = address_type.as_deref() == Some("manual");
    let mac = match (address_type.is_some(), item.address.as_deref()) {
        (true, Some(a)) => Some(canonical_mac(a).ok_or_else(|| {
            invalid_value(
                "Item",
                "Address",
                a,
                format!("'{a}' of '{}' is not a MAC address", item.element_name),
            )
        })?),
        _ => None,
    };
    Ok(NicSpec {
        key: -300 - index as i32,
        kind,
        network,
        start_connected: item.automatic_allocation.unwrap_or(true),
        mac,
        manual,
    })
}

/// A disk item: its spec and the file to upload into it, if any.
fn disk(
    item: &Item,
    env: &Envelope,
    by_instance: &[(String, usize)],
    units: &mut [BTreeSet<u32>],
    spec: &ConfigSpec,
    name: &str,
    params: &CreateParams,
) -> Result<(DiskSpec, Option<FileItem>), Fault> {
    let parent = item.parent.clone().unwrap_or_default();
    let reference = |attribute: &str, value: &str, what: String| {
        let mut f = invalid_value("Item", attribute, value, what);
        f.name = "OvfInvalidValueReference".into();
        f
    };
    let &(_, c) = by_instance
        .iter()
        .find(|(id, _)| *id == parent)
        .ok_or_else(|| {
            reference(
                "Parent",
                &parent,
                format!(
                    "disk '{}' is on '{parent}', which is not a SCSI controller the lab imports",
                    item.element_name
                ),
            )
        })?;
    let controller = &spec.controllers[c];
    let host_resource = item.host_resource.first().cloned().unwrap_or_default();
    let disk_id = host_resource.rsplit('/').next().unwrap_or_default();
    let ovf_disk = env
        .disks
        .iter()
        .find(|d| !d.disk_id.is_empty() && d.disk_id == disk_id)
        .ok_or_else(|| {
            reference(
                "HostResource",
                &host_resource,
                format!("no disk '{host_resource}' in the DiskSection"),
            )
        })?;
    if ovf_disk.capacity_bytes == 0 || !ovf_disk.capacity_bytes.is_multiple_of(512) {
        return Err(invalid_value(
            "Disk",
            "ovf:capacity",
            &ovf_disk.capacity_bytes.to_string(),
            format!(
                "disk '{disk_id}' of {} bytes is not a whole number of 512-byte sectors",
                ovf_disk.capacity_bytes
            ),
        ));
    }
    let taken = &mut units[c];
    let unit = match item.address_on_parent.as_deref() {
        Some(a) => item_number(item, "AddressOnParent", a)?,
        None => free(taken, 0, Some(SCSI_CONTROLLER_UNIT)),
    };
    if unit >= SCSI_UNITS || unit == SCSI_CONTROLLER_UNIT || !taken.insert(unit) {
        return Err(invalid_value(
            "Item",
            "AddressOnParent",
            &unit.to_string(),
            format!(
                "unit {unit} of '{}' is taken, the controller's own, or beyond 0–15",
                item.element_name
            ),
        ));
    }
    let index = spec.disks.len();
    let file = match &ovf_disk.file_ref {
        None => None,
        Some(r) => {
            let f = env.files.iter().find(|f| f.id == *r).ok_or_else(|| {
                reference(
                    "Disk",
                    r,
                    format!("disk '{disk_id}' refers to no file '{r}'"),
                )
            })?;
            Some(FileItem {
                device_id: device_id(name, controller.kind, controller.bus, unit),
                path: f.href.clone(),
                size_bytes: f.size_bytes,
            })
        }
    };
    Ok((
        DiskSpec {
            key: -200 - index as i32,
            controller_key: controller.key,
            unit,
            capacity_bytes: ovf_disk.capacity_bytes,
            file_name: format!(
                "[{}] {name}/{}",
                params.datastore,
                disk_file_name(name, index)
            ),
            thin: true,
        },
        file,
    ))
}

fn localized(tag: &str, f: &Fault) -> String {
    format!(
        "<{tag}><fault xsi:type=\"{}\">{}</fault><localizedMessage>{}</localizedMessage></{tag}>",
        f.name,
        fault_fields(f),
        escape(&f.message)
    )
}

/// The `returnval` of CreateImportSpec.
pub fn render_result(r: &ImportSpecResult) -> String {
    let mut out = format!(
        "<returnval><importSpec xsi:type=\"VirtualMachineImportSpec\"><configSpec>{}</configSpec>{}</importSpec>",
        render_config_spec(&r.spec),
        moref("resPoolEntity", "ResourcePool", &r.pool)
    );
    for f in &r.file_items {
        let _ = write!(
            out,
            "<fileItem><deviceId>{}</deviceId><path>{}</path>",
            escape(&f.device_id),
            escape(&f.path)
        );
        if let Some(size) = f.size_bytes {
            let _ = write!(out, "<size>{size}</size>");
        }
        out.push_str("<cimType>17</cimType><create>false</create></fileItem>");
    }
    for w in &r.warnings {
        out.push_str(&localized("warning", w));
    }
    for e in &r.errors {
        out.push_str(&localized("error", e));
    }
    out.push_str("</returnval>");
    out
}

/// CreateImportSpec's arguments: the descriptor and the rest
/// (`ovfDescriptor`, `resourcePool`, `datastore`, `cisp` with
/// `entityName`, `networkMapping` and `diskProvisioning`).
pub fn create_args(call: Node<'_, '_>) -> Result<(String, CreateParams), Fault> {
    let descriptor = field(call, "ovfDescriptor")
        .ok_or_else(|| spec_fault("ovfDescriptor", "an OVF descriptor is required".into()))?;
    let pool = moref_arg(call, "resourcePool", "ResourcePool")
        .ok_or_else(|| spec_fault("resourcePool", "a ResourcePool is required".into()))?;
    let datastore = moref_arg(call, "datastore", "Datastore")
        .ok_or_else(|| spec_fault("datastore", "a Datastore is required".into()))?;
    let cisp = child(call, "cisp");
    let cisp_field = |k: &str| cisp.and_then(|c| field(c, k)).unwrap_or_default();
    let network_mapping = cisp
        .map(|c| {
            c.children()
                .filter(|m| m.is_element() && m.tag_name().name() == "networkMapping")
                .filter_map(|m| Some((field(m, "name")?, field(m, "network")?)))
                .collect()
        })
        .unwrap_or_default();
    Ok((
        descriptor,
        CreateParams {
            entity_name: cisp_field("entityName"),
            datastore,
            pool,
            network_mapping,
            disk_provisioning: cisp_field("diskProvisioning"),
        },
    ))
}

/// CreateImportSpec on the lab's OvfManager `this`: the import spec of
/// the call's descriptor for its pool and datastore. A descriptor that
/// cannot be read is an InvalidArgument fault on `ovfDescriptor` (govmomi's
/// simulator); the lab imports onto `datastore1` only.
pub fn create_import_spec(
    store: &Store,
    vcenter: bool,
    this: &(String, String),
    call: Node<'_, '_>,
) -> Result<String, Fault> {
    if this.0 != "OvfManager" || this.1 != super::props::ovf_manager(vcenter) {
        return Err(Fault::not_found(&this.0, &this.1));
    }
    let (descriptor, params) = create_args(call)?;
    if inventory::datacenter_of_pool(vcenter, &params.pool).is_none() {
        return Err(Fault::not_found("ResourcePool", &params.pool));
    }
    let nas = store.read(|st, _| Ok(st.nas(&params.datastore).is_some()))?;
    if state::datastore_type(&params.datastore).is_none() && !nas {
        return Err(Fault::not_found("Datastore", &params.datastore));
    }
    if params.datastore != state::DATASTORE {
        return Err(Fault::new(
            "NotSupported",
            format!(
                "The lab imports onto {} only, not {}.",
                state::DATASTORE,
                params.datastore
            ),
        ));
    }
    let envelope = ovf::parse(&descriptor).map_err(|e| {
        Fault::new("InvalidArgument", e.to_string()).with("invalidProperty", "ovfDescriptor")
    })?;
    Ok(render_result(&build(&envelope, &params)))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::lab::ovf;
    use crate::run::ovf::{OvfDisk as ExportDisk, VmHardware, ovf_envelope};

    fn params(name: &str) -> CreateParams {
        CreateParams {
            entity_name: name.into(),
            datastore: "datastore1".into(),
            pool: "ha-root-pool".into(),
            ..Default::default()
        }
    }

    fn coffer_envelope(disks: usize) -> Envelope {
        let hw = VmHardware {
            vcpus: 2,
            memory_mib: 2048,
            guest_os: "other5xlinux-64".into(),
            scsi_controller: "lsilogic".into(),
            hardware_version: "vmx-19".into(),
            ..VmHardware::default()
        };
        let disks: Vec<ExportDisk> = (0..disks)
            .map(|i| ExportDisk {
                file_name: format!("db01-disk{}.vmdk", i + 1),
                file_size_bytes: 1000 + i as u64,
                capacity_bytes: (64 << 20) >> i,
                slot: None,
            })
            .collect();
        ovf::parse(&ovf_envelope("db01", &hw, &disks).unwrap()).unwrap()
    }

    #[test]
    fn coffers_envelope_makes_a_spec_with_one_file_per_disk() {
        let r = build(&coffer_envelope(2), &params("db01-r"));
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        assert!(r.warnings.is_empty());
        let s = &r.spec;
        assert_eq!(
            (s.name.as_str(), s.version.as_str(), s.guest_id.as_str()),
            ("db01-r", "vmx-19", "other5xLinux64Guest")
        );
        assert_eq!((s.num_cpus, s.memory_mb), (2, 2048));
        assert_eq!(s.vm_path_name, "[datastore1]");
        assert_eq!(s.controllers.len(), 1);
        assert_eq!(s.controllers[0].kind, ScsiKind::LsiLogic);
        assert_eq!(s.disks[0].file_name, "[datastore1] db01-r/db01-r.vmdk");
        assert_eq!(s.disks[1].file_name, "[datastore1] db01-r/db01-r_1.vmdk");
        assert_eq!(
            (s.disks[1].unit, s.disks[1].capacity_bytes, s.disks[1].thin),
            (1, 32 << 20, true)
        );
        assert_eq!(
            r.file_items,
            [
                FileItem {
                    device_id: "/db01-r/VirtualLsiLogicController0:0".into(),
                    path: "db01-disk1.vmdk".into(),
                    size_bytes: Some(1000),
                },
                FileItem {
                    device_id: "/db01-r/VirtualLsiLogicController0:1".into(),
                    path: "db01-disk2.vmdk".into(),
                    size_bytes: Some(1001),
                },
            ]
        );
    }

    /// The spec of coffer's own descriptor of a VM with two disks.
    pub(in crate::lab) fn coffer_spec() -> ConfigSpec {
        build(&coffer_envelope(2), &params("db01-r")).spec
    }

    #[test]
    fn what_cannot_be_imported_is_an_error_and_options_a_warning() {
        let mut env = coffer_envelope(1);
        env.items.push(Item {
            resource_type: Some(35),
            instance_id: "9".into(),
            element_name: "Quantum coupler".into(),
            ..Default::default()
        });
        env.items.push(Item {
            resource_type: Some(15),
            instance_id: "10".into(),
            ..Default::default()
        });
        env.items[2].resource_sub_type = Some("megaraid".into());
        env.config.push(("cpuHotAddEnabled".into(), "true".into()));
        let r = build(&env, &params("x"));
        let names: Vec<&str> = r.errors.iter().map(|e| e.name.as_str()).collect();
        // The unknown controller, then its disk, then the unknown type.
        assert_eq!(
            names,
            [
                "OvfUnsupportedSubType",
                "OvfInvalidValueReference",
                "OvfUnsupportedType"
            ]
        );
        assert!(
            r.errors[2]
                .fields
                .contains(&("deviceType".into(), "35".into()))
        );
        assert_eq!(r.warnings.len(), 1);
        assert!(render_result(&r).contains("<error><fault xsi:type=\"OvfUnsupportedType\">"));
    }

    #[test]
    fn a_manual_mac_is_kept_and_a_mapped_network_used() {
        let item = Item {
            resource_type: Some(10),
            resource_sub_type: Some("VmxNet3".into()),
            connection: vec!["prod".into()],
            address: Some("00-50-56-AA-BB-CC".into()),
            config: vec![("addressType".into(), "manual".into())],
            ..Default::default()
        };
        let mapping = [("prod".to_string(), "HaNetwork-VM Network".to_string())];
        let n = nic(&item, &mapping, 0).unwrap();
        assert_eq!(n.network, "VM Network");
        assert_eq!(n.mac.as_deref(), Some("00:50:56:aa:bb:cc"));
        assert!(n.start_connected);
        let generated = nic(
            &Item {
                config: vec![],
                ..item
            },
            &[],
            1,
        )
        .unwrap();
        assert_eq!((generated.network.as_str(), generated.mac), ("prod", None));
    }
}
