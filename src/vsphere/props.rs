//! Reading the answers of the PropertyCollector (RetrieveResult): each object
//! comes with the properties asked for (`propSet`, name and `val`) and those
//! the server could not give (`missingSet`, each with a fault). Values are
//! typed by `xsi:type`, so a VirtualDisk is found among the devices by its
//! type, not by its element name (which is always `VirtualDevice`).
//!
//! It builds on `xml`, `response` and `fault` and never imports `soap`,
//! which hands it the answers. It must never perform I/O.

use std::collections::HashMap;

use roxmltree::Node;

use super::Error;
use super::fault::VimFault;
use super::response::{
    localized_fault, parse_bool, parse_number, parse_time, protocol, required_moref, required_text,
    with_response,
};
use super::types::{
    ChangeId, DiskBacking, GuestQuiesceFacts, HostNetwork, MoRef, Page, PortGroupInfo, PowerState,
    SnapshotNode, TaskInfo, TaskState, VSwitchInfo, VmDisk, VmQuestion, VmRecord,
};
use super::xml::{child_text, children_named, find_child, moref_of, text_of, xsi_type};

/// One object of a RetrieveResult.
pub(super) struct ObjectContent<'a, 'i> {
    pub obj: MoRef,
    pub props: HashMap<String, Node<'a, 'i>>,
}

/// Parses one page and turns each object into a `T`. A NotAuthenticated in
/// a `missingSet` (vcsim reports a lost session that way) is the fault of
/// the whole call, so the transport logs in again; other missing properties
/// are left for `item` to see as absent.
pub(super) fn parse_page<T>(
    xml: &str,
    method: &str,
    item: impl Fn(&ObjectContent<'_, '_>, &str) -> Result<T, Error>,
) -> Result<Page<T>, Error> {
    with_response(xml, method, |resp| {
        let mut page = Page {
            items: Vec::new(),
            token: None,
        };
        // No returnval at all: nothing matched.
        let Some(rv) = find_child(resp, "returnval") else {
            return Ok(page);
        };
        page.token = child_text(rv, "token").filter(|t| !t.is_empty());
        for obj in children_named(rv, "objects") {
            let content = object_content(obj, method)?;
            page.items.push(item(&content, method)?);
        }
        Ok(page)
    })
}

fn object_content<'a, 'i>(obj: Node<'a, 'i>, method: &str) -> Result<ObjectContent<'a, 'i>, Error> {
    let moref = required_moref(obj, "obj", method)?;
    let mut props = HashMap::new();
    for prop in children_named(obj, "propSet") {
        let name = required_text(prop, "name", method)?;
        if let Some(val) = find_child(prop, "val") {
            props.insert(name, val);
        }
    }
    for missing in children_named(obj, "missingSet") {
        if let Some(fault) = find_child(missing, "fault") {
            let fault = localized_fault(fault);
            if fault.is_not_authenticated() {
                return Err(Error::Fault(fault));
            }
        }
    }
    Ok(ObjectContent { obj: moref, props })
}

pub(super) fn vm_record(oc: &ObjectContent<'_, '_>, method: &str) -> Result<VmRecord, Error> {
    let text = |name: &str| oc.props.get(name).map(|v| text_of(*v).trim().to_string());
    let mut disks = Vec::new();
    if let Some(devices) = oc.props.get("config.hardware.device") {
        disks = parse_disks(*devices, method)?;
    }
    let mut snapshots = Vec::new();
    if let Some(info) = oc.props.get("snapshot") {
        for root in children_named(*info, "rootSnapshotList") {
            snapshots.push(snapshot_node(root, method)?);
        }
    }
    Ok(VmRecord {
        moref: oc.obj.clone(),
        name: text("name").unwrap_or_default(),
        instance_uuid: text("config.instanceUuid").filter(|s| !s.is_empty()),
        power_state: text("runtime.powerState").and_then(|s| PowerState::parse(&s)),
        tools_running_status: text("guest.toolsRunningStatus"),
        ip_address: text("guest.ipAddress").filter(|s| !s.is_empty()),
        change_tracking_enabled: text("config.changeTrackingEnabled")
            .is_some_and(|s| parse_bool(&s)),
        consolidation_needed: text("runtime.consolidationNeeded").is_some_and(|s| parse_bool(&s)),
        encryption_key: oc.props.get("config.keyId").and_then(|k| crypto_key_id(*k)),
        vmx_path: text("config.files.vmPathName").filter(|s| !s.is_empty()),
        disks,
        snapshots,
        // Filled in from the parent chains by `placement`.
        datacenter: None,
        host: oc.props.get("runtime.host").and_then(|v| moref_of(*v)),
    })
}

/// `name` and `parent` of any managed entity (a folder, a datacenter, a
/// VM), for `placement`.
pub(super) fn entity(
    oc: &ObjectContent<'_, '_>,
    _method: &str,
) -> Result<super::placement::Entity, Error> {
    Ok(super::placement::Entity {
        obj: oc.obj.clone(),
        name: oc.props.get("name").map(|v| text_of(*v).trim().to_string()),
        parent: oc.props.get("parent").and_then(|v| moref_of(*v)),
    })
}

/// A CryptoKeyId (`keyId`, `providerId.id`) as `key@provider`; `None`
/// when the element holds no key id.
fn crypto_key_id(node: Node<'_, '_>) -> Option<String> {
    let key = child_text(node, "keyId").filter(|k| !k.trim().is_empty())?;
    let provider = find_child(node, "providerId").and_then(|p| child_text(p, "id"));
    Some(match provider.filter(|p| !p.trim().is_empty()) {
        Some(p) => format!("{}@{}", key.trim(), p.trim()),
        None => key.trim().to_string(),
    })
}

/// The .vmx device prefix of a controller type: a disk on bus 0 of a SCSI
/// controller at unit 1 is `scsi0:1` in the .vmx (`scsi0:1.fileName`). The
/// types are the vSphere API reference's VirtualController subtypes; the
/// prefixes are the .vmx's, as ESXi writes them and as other readers of
/// .vmx files take them (Proxmox's ESXi importer, qemu's `vmdk` tools).
fn vmx_prefix(controller_type: &str) -> Option<&'static str> {
    match controller_type {
        "VirtualLsiLogicController"
        | "VirtualLsiLogicSASController"
        | "ParaVirtualSCSIController"
        | "VirtualBusLogicController" => Some("scsi"),
        "VirtualIDEController" => Some("ide"),
        "VirtualAHCIController" => Some("sata"),
        "VirtualNVMEController" => Some("nvme"),
        _ => None,
    }
}

/// The VirtualDisks of an ArrayOfVirtualDevice; other devices are skipped.
fn parse_disks(devices: Node<'_, '_>, method: &str) -> Result<Vec<VmDisk>, Error> {
    let mut disks = Vec::new();
    // Controller key → `scsi0`, `sata1`, …: the first half of a disk's slot.
    let controllers: Vec<(String, String)> = devices
        .children()
        .filter(|d| d.is_element())
        .filter_map(|d| {
            let prefix = vmx_prefix(xsi_type(d)?.as_str())?;
            Some((
                child_text(d, "key")?.trim().to_string(),
                format!("{prefix}{}", child_text(d, "busNumber")?.trim()),
            ))
        })
        .collect();
    for dev in devices.children().filter(|d| d.is_element()) {
        if xsi_type(dev).as_deref() != Some("VirtualDisk") {
            continue;
        }
        let slot = child_text(dev, "controllerKey").and_then(|c| {
            let (_, controller) = controllers.iter().find(|(k, _)| *k == c.trim())?;
            Some(format!(
                "{controller}:{}",
                child_text(dev, "unitNumber")?.trim()
            ))
        });
        let key: i32 = parse_number(&required_text(dev, "key", method)?, "key", method)?;
        let capacity_bytes = match child_text(dev, "capacityInBytes") {
            Some(b) => parse_number(&b, "capacityInBytes", method)?,
            None => {
                let kib: u64 = parse_number(
                    &required_text(dev, "capacityInKB", method)?,
                    "capacityInKB",
                    method,
                )?;
                kib * 1024
            }
        };
        let backing = find_child(dev, "backing");
        let backing_type = backing.and_then(xsi_type).unwrap_or_default();
        let field = |local: &str| {
            backing
                .and_then(|b| child_text(b, local))
                .filter(|s| !s.is_empty())
        };
        let kind = match backing_type.as_str() {
            "VirtualDiskFlatVer2BackingInfo"
            | "VirtualDiskSeSparseBackingInfo"
            | "VirtualDiskSparseVer2BackingInfo" => DiskBacking::Vmdk,
            "VirtualDiskRawDiskMappingVer1BackingInfo" => DiskBacking::RawDeviceMapping {
                compatibility_mode: field("compatibilityMode"),
            },
            other => DiskBacking::Other(other.to_string()),
        };
        disks.push(VmDisk {
            key,
            capacity_bytes,
            file_name: field("fileName").unwrap_or_default(),
            datastore: backing
                .and_then(|b| find_child(b, "datastore"))
                .and_then(moref_of),
            change_id: field("changeId").map(ChangeId),
            disk_mode: field("diskMode"),
            backing: kind,
            slot,
        });
    }
    Ok(disks)
}

fn snapshot_node(node: Node<'_, '_>, method: &str) -> Result<SnapshotNode, Error> {
    let mut children = Vec::new();
    for child in children_named(node, "childSnapshotList") {
        children.push(snapshot_node(child, method)?);
    }
    Ok(SnapshotNode {
        snapshot: required_moref(node, "snapshot", method)?,
        name: required_text(node, "name", method)?,
        description: child_text(node, "description").unwrap_or_default(),
        create_time: parse_time(
            &required_text(node, "createTime", method)?,
            "createTime",
            method,
        )?,
        quiesced: child_text(node, "quiesced").is_some_and(|s| parse_bool(&s)),
        children,
    })
}

pub(super) fn parse_task_info(xml: &str) -> Result<TaskInfo, Error> {
    let method = "RetrievePropertiesEx";
    let page = parse_page(xml, method, |oc, method| {
        let info = oc
            .props
            .get("info")
            .ok_or_else(|| protocol(method, format!("{} has no info", oc.obj)))?;
        task_info(*info, method)
    })?;
    page.items
        .into_iter()
        .next()
        .ok_or_else(|| protocol(method, "the task was not found"))
}

fn task_info(info: Node<'_, '_>, method: &str) -> Result<TaskInfo, Error> {
    let state = match required_text(info, "state", method)?.trim() {
        "queued" => TaskState::Queued,
        "running" => TaskState::Running,
        "success" => TaskState::Success,
        "error" => TaskState::Error,
        other => return Err(protocol(method, format!("unknown task state {other:?}"))),
    };
    let progress_percent = child_text(info, "progress")
        .and_then(|p| p.trim().parse::<i64>().ok())
        .map(|p| p.clamp(0, 100) as u8);
    let error: Option<VimFault> = find_child(info, "error").map(localized_fault);
    Ok(TaskInfo {
        task: required_moref(info, "task", method)?,
        state,
        progress_percent,
        result: find_child(info, "result").and_then(moref_of),
        error,
    })
}

pub(super) fn parse_snapshot_disks(xml: &str) -> Result<Vec<VmDisk>, Error> {
    let method = "RetrievePropertiesEx";
    let page = parse_page(xml, method, |oc, method| {
        match oc.props.get("config.hardware.device") {
            Some(devices) => parse_disks(*devices, method),
            None => Err(protocol(
                method,
                format!("{} has no config.hardware.device", oc.obj),
            )),
        }
    })?;
    page.items
        .into_iter()
        .next()
        .ok_or_else(|| protocol(method, "the snapshot was not found"))
}

/// `config.guestId`, `config.extraConfig` and `layoutEx.file` of one VM.
pub(super) fn parse_guest_quiesce_facts(xml: &str) -> Result<GuestQuiesceFacts, Error> {
    let method = "RetrievePropertiesEx";
    let page = parse_page(xml, method, |oc, _| {
        let mut facts = GuestQuiesceFacts {
            guest_id: oc
                .props
                .get("config.guestId")
                .map(|v| text_of(*v).trim().to_string())
                .filter(|s| !s.is_empty()),
            ..GuestQuiesceFacts::default()
        };
        if let Some(options) = oc.props.get("config.extraConfig") {
            for o in options.children().filter(|o| o.is_element()) {
                if child_text(o, "key")
                    .is_some_and(|k| k.trim().eq_ignore_ascii_case("disk.EnableUUID"))
                {
                    // The .vmx spelling: "TRUE", "true", "1".
                    facts.disk_enable_uuid = child_text(o, "value")
                        .map(|v| v.trim().eq_ignore_ascii_case("true") || v.trim() == "1");
                }
            }
        }
        if let Some(files) = oc.props.get("layoutEx.file") {
            for f in files.children().filter(|f| f.is_element()) {
                if let Some(name) = child_text(f, "name")
                    && GuestQuiesceFacts::is_vss_manifest(&name)
                {
                    facts.vss_manifests.push(name);
                }
            }
        }
        Ok(facts)
    })?;
    page.items
        .into_iter()
        .next()
        .ok_or_else(|| protocol(method, "the VM was not found"))
}

/// `runtime.question` of one VM, `None` when it asks nothing.
/// `processManager` and `fileManager` of a GuestOperationsManager.
pub(super) fn parse_guest_managers(xml: &str) -> Result<(Option<MoRef>, Option<MoRef>), Error> {
    let page = parse_page(xml, "RetrievePropertiesEx", |oc, _| {
        Ok((
            oc.props.get("processManager").and_then(|v| moref_of(*v)),
            oc.props.get("fileManager").and_then(|v| moref_of(*v)),
        ))
    })?;
    Ok(page.items.into_iter().next().unwrap_or((None, None)))
}

/// `configManager.networkSystem` of a HostSystem.
pub(super) fn parse_network_system(xml: &str) -> Result<Option<MoRef>, Error> {
    parse_moref_property(xml, "configManager.networkSystem")
}

/// A property holding one managed object reference
/// (`configManager.datastoreSystem` of a HostSystem, say).
pub(super) fn parse_moref_property(xml: &str, path: &str) -> Result<Option<MoRef>, Error> {
    let page = parse_page(xml, "RetrievePropertiesEx", |oc, _| {
        Ok(oc.props.get(path).and_then(|v| moref_of(*v)))
    })?;
    Ok(page.items.into_iter().next().flatten())
}

/// A property holding a list of managed object references
/// (`ArrayOfManagedObjectReference`: a host's `datastore`, say).
pub(super) fn parse_moref_list_property(xml: &str, path: &str) -> Result<Vec<MoRef>, Error> {
    let page = parse_page(xml, "RetrievePropertiesEx", |oc, _| {
        Ok(oc
            .props
            .get(path)
            .map(|v| {
                v.children()
                    .filter(|c| c.is_element())
                    .filter_map(moref_of)
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default())
    })?;
    Ok(page.items.into_iter().flatten().collect())
}

/// `networkInfo` of a HostNetworkSystem: each switch's name and uplinks,
/// each port group's name and switch (`spec.vswitchName`).
pub(super) fn parse_host_network(xml: &str) -> Result<HostNetwork, Error> {
    let page = parse_page(xml, "RetrievePropertiesEx", |oc, _| {
        let Some(info) = oc.props.get("networkInfo") else {
            return Ok(HostNetwork::default());
        };
        let text = |n: Node<'_, '_>, name: &str| {
            child_text(n, name)
                .map(|t| t.trim().to_string())
                .unwrap_or_default()
        };
        Ok(HostNetwork {
            vswitches: children_named(*info, "vswitch")
                .map(|v| VSwitchInfo {
                    name: text(v, "name"),
                    uplinks: children_named(v, "pnic")
                        .map(|p| text_of(p).trim().to_string())
                        .collect(),
                })
                .collect(),
            port_groups: children_named(*info, "portgroup")
                .filter_map(|p| find_child(p, "spec"))
                .map(|spec| PortGroupInfo {
                    name: text(spec, "name"),
                    vswitch: text(spec, "vswitchName"),
                })
                .collect(),
        })
    })?;
    Ok(page.items.into_iter().next().unwrap_or_default())
}

pub(super) fn parse_vm_question(xml: &str) -> Result<Option<VmQuestion>, Error> {
    let method = "RetrievePropertiesEx";
    let page = parse_page(xml, method, |oc, _| {
        Ok(oc.props.get("runtime.question").map(|q| {
            let text = |n: Node<'_, '_>, name: &str| {
                child_text(n, name)
                    .map(|t| t.trim().to_string())
                    .unwrap_or_default()
            };
            VmQuestion {
                id: text(*q, "id"),
                text: text(*q, "text"),
                message_ids: children_named(*q, "message")
                    .map(|m| text(m, "id"))
                    .collect(),
                choices: find_child(*q, "choice")
                    .map(|c| {
                        children_named(c, "choiceInfo")
                            .map(|i| (text(i, "key"), text(i, "label"), text(i, "summary")))
                            .collect()
                    })
                    .unwrap_or_default(),
            }
        }))
    })?;
    Ok(page.items.into_iter().next().flatten())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(props: &str) -> String {
        format!(
            "<soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\" \
             xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\"><soapenv:Body>\
             <RetrievePropertiesExResponse xmlns=\"urn:vim25\"><returnval><objects>\
             <obj type=\"VirtualMachine\">vm-7</obj>{props}</objects></returnval>\
             </RetrievePropertiesExResponse></soapenv:Body></soapenv:Envelope>"
        )
    }

    #[test]
    fn a_vss_manifest_among_the_vm_files_is_found_by_name() {
        let xml = answer(
            "<propSet><name>config.guestId</name><val xsi:type=\"xsd:string\">windows2019srv_64Guest</val></propSet>\
             <propSet><name>config.extraConfig</name><val xsi:type=\"ArrayOfOptionValue\">\
             <OptionValue xsi:type=\"OptionValue\"><key>disk.EnableUUID</key><value xsi:type=\"xsd:string\">TRUE</value></OptionValue>\
             </val></propSet>\
             <propSet><name>layoutEx.file</name><val xsi:type=\"ArrayOfVirtualMachineFileLayoutExFileInfo\">\
             <VirtualMachineFileLayoutExFileInfo><key>0</key><name>[ds1] w/w.vmx</name><type>config</type></VirtualMachineFileLayoutExFileInfo>\
             <VirtualMachineFileLayoutExFileInfo><key>7</key><name>[ds1] w/vss-manifest3.zip</name><type>snapshotManifestList</type></VirtualMachineFileLayoutExFileInfo>\
             <VirtualMachineFileLayoutExFileInfo><key>8</key><name>[ds1] w/w-aux.xml</name><type>snapshotManifestList</type></VirtualMachineFileLayoutExFileInfo>\
             </val></propSet>",
        );
        let facts = parse_guest_quiesce_facts(&xml).unwrap();
        assert_eq!(facts.guest_id.as_deref(), Some("windows2019srv_64Guest"));
        assert_eq!(facts.disk_enable_uuid, Some(true));
        assert_eq!(facts.vss_manifests, ["[ds1] w/vss-manifest3.zip"]);
    }

    #[test]
    fn a_quiesce_without_vss_says_which_condition_failed() {
        let linux = parse_guest_quiesce_facts(&answer(
            "<propSet><name>config.guestId</name><val xsi:type=\"xsd:string\">ubuntu64Guest</val></propSet>",
        ))
        .unwrap();
        assert!(linux.vss_manifests.is_empty());
        assert!(
            linux
                .why_no_vss()
                .contains("(ubuntu64Guest) is not Windows")
        );
        let no_uuid = GuestQuiesceFacts {
            guest_id: Some("windows2019srv_64Guest".into()),
            ..GuestQuiesceFacts::default()
        };
        assert!(no_uuid.why_no_vss().contains("disk.EnableUUID is not TRUE"));
        let both = GuestQuiesceFacts {
            disk_enable_uuid: Some(true),
            ..no_uuid
        };
        assert!(both.why_no_vss().contains("VSS writers did not take part"));
    }
}
