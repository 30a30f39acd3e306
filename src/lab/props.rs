//! The property collector's answers, rendered: a VM's properties
//! (inventory, disks with their backing chain and change ids, snapshot
//! tree, tools and heartbeat), a snapshot's disks, a task's TaskInfo, and
//! the ServiceContent. Property values carry their `xsi:type`, as ESXi
//! writes them.
//!
//! It builds on `wire` and never imports `vim`, which calls it. It must
//! never change the lab's state.

use std::fmt::Write as _;
use std::path::Path;

use super::disk::Disk;
use super::inventory;
use super::state::{self, Fault, State, Vm};
use super::wire::{API_VERSION, TaskRecord, fault_fields, moref, time};
use crate::vsphere::soap::escape;

/// The ServiceContent of a standalone host or, in vCenter mode, of a
/// vCenter: `about.apiType` `VirtualCenter` and `productLineId` `vpx`
/// (vSphere API reference, `AboutInfo`), and the root folder of its
/// inventory (see `inventory`).
/// `with_ovf`: whether it names an OvfManager (the `no-ovf-manager` fault
/// plays an endpoint without one, whose ServiceContent leaves the optional
/// field out).
pub fn service_content(vcenter: bool, with_ovf: bool) -> String {
    let about = if vcenter {
        format!(
            "<about><name>VMware vCenter Server</name><fullName>VMware vCenter Server {API_VERSION} (coffer lab)</fullName>\
             <vendor>VMware, Inc.</vendor><version>{API_VERSION}</version><build>0</build><localeVersion>INTL</localeVersion>\
             <localeBuild>000</localeBuild><osType>linux-x64</osType><productLineId>vpx</productLineId>\
             <apiType>VirtualCenter</apiType><apiVersion>{API_VERSION}</apiVersion>\
             <instanceUuid>{}</instanceUuid><licenseProductName>VMware VirtualCenter Server</licenseProductName>\
             <licenseProductVersion>8.0</licenseProductVersion></about>",
            VCENTER_UUID
        )
    } else {
        format!(
            "<about><name>VMware ESXi</name><fullName>VMware ESXi {API_VERSION} (coffer lab)</fullName>\
             <vendor>VMware, Inc.</vendor><version>{API_VERSION}</version><build>0</build><localeVersion>INTL</localeVersion>\
             <localeBuild>000</localeBuild><osType>vmnix-x86</osType><productLineId>embeddedEsx</productLineId>\
             <apiType>HostAgent</apiType><apiVersion>{API_VERSION}</apiVersion><licenseProductName>VMware ESX Server</licenseProductName>\
             <licenseProductVersion>8.0</licenseProductVersion></about>"
        )
    };
    // In the WSDL's order of ServiceContent's fields.
    format!(
        "<returnval>{}{}{}{about}{}{}{}{}{}{}</returnval>",
        moref("rootFolder", "Folder", inventory::root_folder(vcenter)),
        moref(
            "propertyCollector",
            "PropertyCollector",
            "ha-property-collector"
        ),
        moref("viewManager", "ViewManager", "ViewManager"),
        moref("sessionManager", "SessionManager", "ha-sessionmgr"),
        moref("searchIndex", "SearchIndex", "ha-searchindex"),
        moref("fileManager", "FileManager", "ha-nfc-file-manager"),
        moref(
            "virtualDiskManager",
            "VirtualDiskManager",
            "ha-vdiskmanager"
        ),
        if with_ovf {
            moref("ovfManager", "OvfManager", ovf_manager(vcenter))
        } else {
            String::new()
        },
        moref(
            "guestOperationsManager",
            "GuestOperationsManager",
            "ha-guest-operations-manager"
        ),
    )
}

/// The OvfManager's moref: `ha-ovf-manager` on a standalone host,
/// `OvfManager` on a vCenter (govmomi's simulator, `esx` and `vpx`
/// service contents).
pub fn ovf_manager(vcenter: bool) -> &'static str {
    if vcenter {
        "OvfManager"
    } else {
        "ha-ovf-manager"
    }
}

/// The instance UUID the lab's vCenter reports.
const VCENTER_UUID: &str = "6c0ffee0-1ab0-4c0f-bfe0-000000000001";

fn prop(name: &str, xsi_type: &str, inner: &str) -> String {
    format!("<propSet><name>{name}</name><val xsi:type=\"{xsi_type}\">{inner}</val></propSet>")
}

const VM_PATHS: &[&str] = &[
    "name",
    "config.name",
    "config.instanceUuid",
    "config.changeTrackingEnabled",
    "config.files.vmPathName",
    "config.hardware.device",
    "runtime.powerState",
    "runtime.consolidationNeeded",
    "runtime.question",
    "config.keyId",
    "guest.toolsRunningStatus",
    "guest.ipAddress",
    "guestHeartbeatStatus",
    "snapshot",
    "parent",
    "runtime.host",
];

/// `tools_off`: the injected fault that makes every guest's VMware Tools
/// silent (a VM that never reports a heartbeat); `vcenter`: the lab's mode,
/// which decides the VM's folder and host (see `inventory`).
pub fn vm_object(
    vm: &Vm,
    root: &Path,
    paths: &[String],
    all: bool,
    tools_off: bool,
    vcenter: bool,
) -> String {
    let place = inventory::placement(vcenter, vm);
    let wanted: Vec<&str> = if all || paths.is_empty() {
        VM_PATHS.to_vec()
    } else {
        paths.iter().map(String::as_str).collect()
    };
    let tools = vm.tools_running(root) && !tools_off;
    let mut out = format!("<objects>{}", moref("obj", "VirtualMachine", &vm.moref()));
    for path in wanted {
        let p = match path {
            "name" | "config.name" => prop(path, "xsd:string", &escape(&vm.name)),
            "config.instanceUuid" => prop(path, "xsd:string", &vm.instance_uuid),
            "config.changeTrackingEnabled" => {
                prop(path, "xsd:boolean", &vm.cbt_enabled.to_string())
            }
            "config.files.vmPathName" => prop(
                path,
                "xsd:string",
                &escape(&format!("[{}] {}", vm.home_datastore(), vm.vmx)),
            ),
            "config.hardware.device" => {
                let devices: Vec<String> = vm
                    .disks
                    .iter()
                    .enumerate()
                    .map(|(i, d)| disk_device(d, i, d.top(), d.cbt.as_ref().map(|c| c.change_id())))
                    .collect();
                prop(
                    path,
                    "ArrayOfVirtualDevice",
                    &(controller() + &devices.concat()),
                )
            }
            "runtime.powerState" => prop(
                path,
                "VirtualMachinePowerState",
                if vm.powered_on {
                    "poweredOn"
                } else {
                    "poweredOff"
                },
            ),
            "runtime.consolidationNeeded" => {
                prop(path, "xsd:boolean", &vm.consolidation_needed.to_string())
            }
            // Unset unless the VM asks (vSphere API reference,
            // VirtualMachineRuntimeInfo.question); the choices are the
            // host's for `msg.uuid.altered`: Cancel, I moved it, I copied it.
            "runtime.question" => match &vm.question {
                Some(q) => prop(path, "VirtualMachineQuestionInfo", &question_info(&q.id)),
                None => continue,
            },
            // A CryptoKeyId, present only on an encrypted VM (vSphere API
            // reference, VirtualMachineConfigInfo.keyId: "unset" otherwise).
            "config.keyId" => match &vm.encryption_key {
                Some(key) => prop(
                    path,
                    "CryptoKeyId",
                    &format!(
                        "<keyId>{}</keyId><providerId><id>lab-kms</id></providerId>",
                        escape(key)
                    ),
                ),
                None => continue,
            },
            "guest.toolsRunningStatus" => prop(
                path,
                "xsd:string",
                if tools {
                    "guestToolsRunning"
                } else {
                    "guestToolsNotRunning"
                },
            ),
            "guest.ipAddress" if tools => prop(path, "xsd:string", &super::net::guest_ip(vm)),
            "guest.ipAddress" => String::new(),
            "guestHeartbeatStatus" | "guest.guestHeartbeatStatus" => {
                let status = match (vm.powered_on, tools) {
                    (false, _) => "gray",
                    (true, true) => "green",
                    (true, false) => "red",
                };
                prop(path, "ManagedEntityStatus", status)
            }
            "snapshot" if !vm.snapshots.is_empty() => {
                prop(path, "VirtualMachineSnapshotInfo", &snapshot_info(vm))
            }
            // Asked by name only (never part of `VM_PATHS`), as coffer
            // asks them after a quiesced snapshot.
            "layoutEx.file" => prop(
                path,
                "ArrayOfVirtualMachineFileLayoutExFileInfo",
                &layout_ex_files(vm),
            ),
            "config.guestId" => prop(
                path,
                "xsd:string",
                &escape(&super::guest::guest_config(vm, root).guest_id),
            ),
            "config.extraConfig" => prop(path, "ArrayOfOptionValue", &extra_config(vm, root)),
            "parent" => format!(
                "<propSet><name>parent</name>{}</propSet>",
                moref(
                    "val",
                    "Folder",
                    vm.folder.as_deref().unwrap_or(place.vm_folder)
                )
            ),
            "resourcePool" => format!(
                "<propSet><name>resourcePool</name>{}</propSet>",
                moref(
                    "val",
                    "ResourcePool",
                    vm.pool.as_deref().unwrap_or(place.resource_pool)
                )
            ),
            "runtime.host" => format!(
                "<propSet><name>runtime.host</name>{}</propSet>",
                moref("val", "HostSystem", place.host)
            ),
            _ => continue,
        };
        out.push_str(&p);
    }
    out.push_str("</objects>");
    out
}

/// `layoutEx.file`: the VM's files with their types (vSphere API
/// reference, `VirtualMachineFileLayoutExFileInfo` and
/// `VirtualMachineFileLayoutExFileType`): the .vmx, each disk layer's
/// descriptor and extent, and each snapshot's VSS manifest. The API has no
/// type of its own for `vss-manifest*.zip`; the lab gives it
/// `snapshotManifestList`, the snapshot manifest metadata type, and coffer
/// goes by the file's name, not its type.
fn layout_ex_files(vm: &Vm) -> String {
    let home = |rel: &str| format!("[{}] {rel}", vm.home_datastore());
    let mut files: Vec<(String, &str)> = vec![(home(&vm.vmx), "config")];
    for d in &vm.disks {
        for layer in &d.layers {
            files.push((d.datastore_path(&layer.descriptor), "diskDescriptor"));
            files.push((d.datastore_path(&layer.data_file), "diskExtent"));
        }
    }
    for s in &vm.snapshots {
        if let Some(m) = &s.vss_manifest {
            files.push((home(m), "snapshotManifestList"));
        }
    }
    let mut out = String::new();
    for (key, (name, kind)) in files.iter().enumerate() {
        let _ = write!(
            out,
            "<VirtualMachineFileLayoutExFileInfo><key>{key}</key><name>{}</name><type>{kind}</type>\
             <size>0</size><uniqueSize>0</uniqueSize><accessible>true</accessible>\
             </VirtualMachineFileLayoutExFileInfo>",
            escape(name)
        );
    }
    out
}

/// `config.extraConfig`: the .vmx options the lab knows a host reports
/// there, `disk.EnableUUID` among them.
fn extra_config(vm: &Vm, root: &Path) -> String {
    let guest = super::guest::guest_config(vm, root);
    format!(
        "<OptionValue xsi:type=\"OptionValue\"><key>disk.EnableUUID</key>\
         <value xsi:type=\"xsd:string\">{}</value></OptionValue>",
        if guest.disk_enable_uuid {
            "TRUE"
        } else {
            "FALSE"
        }
    )
}

fn controller() -> String {
    "<VirtualDevice xsi:type=\"VirtualLsiLogicController\"><key>1000</key><deviceInfo><label>SCSI controller 0</label>\
     <summary>LSI Logic</summary></deviceInfo><controllerKey>100</controllerKey><unitNumber>3</unitNumber>\
     <busNumber>0</busNumber><hotAddRemove>true</hotAddRemove><sharedBus>noSharing</sharedBus>\
     <scsiCtlrUnitNumber>7</scsiCtlrUnitNumber></VirtualDevice>"
        .to_string()
}

/// A disk's backing at `level` of its chain, its parents nested. A raw
/// device mapping is a `VirtualDiskRawDiskMappingVer1BackingInfo` at every
/// level: "the type of the backing is consistent throughout the chain; any
/// new delta disk backings which are added must be of the same type as the
/// root disk backing. As such, this only applies to disks in virtual
/// compatibility mode" (vSphere API reference, its `parent`).
fn backing(d: &Disk, level: usize, change_id: Option<&str>, tag: &str) -> String {
    let layer = &d.layers[level];
    let file = format!(
        "<fileName>{}</fileName>{}",
        escape(&d.datastore_path(&layer.descriptor)),
        moref("datastore", "Datastore", d.datastore_name()),
    );
    let mode = escape(d.mode.as_deref().unwrap_or("persistent"));
    let mut s = match &d.rdm {
        Some(rdm) => format!(
            "<{tag} xsi:type=\"VirtualDiskRawDiskMappingVer1BackingInfo\">{file}\
             <lunUuid>0200000000{}</lunUuid><deviceName>/vmfs/devices/disks/{}</deviceName>\
             <compatibilityMode>{}</compatibilityMode><diskMode>{mode}</diskMode><uuid>{}</uuid>",
            rdm.lun.trim_start_matches("naa."),
            rdm.lun,
            rdm.mode.as_str(),
            d.uuid
        ),
        None => format!(
            "<{tag} xsi:type=\"VirtualDiskFlatVer2BackingInfo\">{file}\
             <diskMode>{mode}</diskMode><thinProvisioned>true</thinProvisioned><uuid>{}</uuid>",
            d.uuid
        ),
    };
    if let Some(c) = change_id {
        let _ = write!(s, "<changeId>{}</changeId>", escape(c));
    }
    if level > 0 {
        s.push_str(&backing(d, level - 1, None, "parent"));
    }
    let _ = write!(s, "</{tag}>");
    s
}

fn disk_device(d: &Disk, unit: usize, level: usize, change_id: Option<String>) -> String {
    format!(
        "<VirtualDevice xsi:type=\"VirtualDisk\"><key>{}</key><deviceInfo><label>Hard disk {}</label>\
         <summary>{} KB</summary></deviceInfo>{}<controllerKey>1000</controllerKey><unitNumber>{unit}</unitNumber>\
         <capacityInKB>{}</capacityInKB><capacityInBytes>{}</capacityInBytes></VirtualDevice>",
        d.key,
        unit + 1,
        d.capacity_bytes / 1024,
        backing(d, level, change_id.as_deref(), "backing"),
        d.capacity_bytes / 1024,
        d.capacity_bytes
    )
}

fn snapshot_info(vm: &Vm) -> String {
    // A linear chain: each snapshot is the only child of the one before.
    let mut tree = String::new();
    for s in vm.snapshots.iter().rev() {
        let tag = if s.id == vm.snapshots[0].id {
            "rootSnapshotList"
        } else {
            "childSnapshotList"
        };
        tree = format!(
            "<{tag}>{}{}<name>{}</name><description>{}</description><id>{}</id><createTime>{}</createTime>\
             <state>{}</state><quiesced>{}</quiesced><replaySupported>false</replaySupported>{tree}</{tag}>",
            moref(
                "snapshot",
                "VirtualMachineSnapshot",
                &state::snapshot_moref(s.id)
            ),
            moref("vm", "VirtualMachine", &vm.moref()),
            escape(&s.name),
            escape(&s.description),
            s.id,
            time(s.create_time),
            if vm.powered_on {
                "poweredOn"
            } else {
                "poweredOff"
            },
            s.quiesced,
        );
    }
    let current = vm.snapshots.last().map(|s| s.id).unwrap_or_default();
    format!(
        "{}{tree}",
        moref(
            "currentSnapshot",
            "VirtualMachineSnapshot",
            &state::snapshot_moref(current)
        )
    )
}

/// A Datastore's properties: its name and `summary` (name, type,
/// accessible), as the property collector answers for `datastore-…` or,
/// on a host, the datastore's name as its id.
pub fn datastore_object(name: &str, paths: &[String], all: bool) -> Result<String, Fault> {
    let kind = state::datastore_type(name).ok_or_else(|| Fault::not_found("Datastore", name))?;
    let summary = format!(
        "{}<name>{}</name><url>ds:///vmfs/volumes/{}/</url><capacity>0</capacity>\
         <freeSpace>0</freeSpace><accessible>true</accessible><multipleHostAccess>false</multipleHostAccess>\
         <type>{kind}</type>",
        moref("datastore", "Datastore", name),
        escape(name),
        escape(name)
    );
    let wanted: Vec<&str> = if all || paths.is_empty() {
        vec!["name", "summary"]
    } else {
        paths.iter().map(String::as_str).collect()
    };
    let mut out = format!("<objects>{}", moref("obj", "Datastore", name));
    for path in wanted {
        out.push_str(&match path {
            "name" | "summary.name" => prop(path, "xsd:string", &escape(name)),
            "summary.type" => prop(path, "xsd:string", kind),
            "summary.accessible" => prop(path, "xsd:boolean", "true"),
            "summary" => prop(path, "DatastoreSummary", &summary),
            _ => continue,
        });
    }
    out.push_str("</objects>");
    Ok(out)
}

pub fn snapshot_object(st: &State, moref_value: &str) -> Result<String, Fault> {
    let (vm, id) = st.snapshot_owner(moref_value)?;
    let snap = vm
        .snapshots
        .iter()
        .find(|s| s.id == id)
        .expect("owner has it");
    let devices: Vec<String> = vm
        .disks
        .iter()
        .enumerate()
        .filter_map(|(i, d)| {
            let at = snap.disks.iter().find(|s| s.key == d.key)?;
            Some(disk_device(d, i, d.level_of(id)?, at.change_id.clone()))
        })
        .collect();
    Ok(format!(
        "<objects>{}{}</objects>",
        moref("obj", "VirtualMachineSnapshot", moref_value),
        prop(
            "config.hardware.device",
            "ArrayOfVirtualDevice",
            &(controller() + &devices.concat())
        )
    ))
}

/// The VirtualMachineQuestionInfo of the "moved or copied?" question.
fn question_info(id: &str) -> String {
    let choice = |key: &str, label: &str, summary: &str| {
        format!(
            "<choiceInfo><label>{label}</label><summary>{summary}</summary><key>{key}</key></choiceInfo>"
        )
    };
    format!(
        "<id>{}</id><text>msg.uuid.altered:This virtual machine might have been moved or copied.</text>\
         <choice>{}{}{}<defaultIndex>2</defaultIndex></choice>\
         <message><id>msg.uuid.altered</id><text>This virtual machine might have been moved or copied.</text></message>",
        escape(id),
        choice("0", "button.uuid.cancel", "Cancel"),
        choice("1", "button.uuid.movedTheVM", "I _moved it"),
        choice("2", "button.uuid.copiedTheVM", "I _copied it"),
    )
}

pub fn task_object(t: &TaskRecord) -> String {
    let mut info = format!(
        "<key>{id}</key>{}<descriptionId>VirtualMachine.{}</descriptionId>{}<entityName>{}</entityName>\
         <name>{}</name><state>{}</state><cancelled>false</cancelled><cancelable>false</cancelable>",
        moref("task", "Task", &t.id),
        t.name,
        moref("entity", &t.entity.0, &t.entity.1),
        escape(&t.entity_name),
        t.name,
        if t.running {
            "running"
        } else if t.error.is_some() {
            "error"
        } else {
            "success"
        },
        id = t.id,
    );
    if let Some(f) = &t.error {
        let _ = write!(
            info,
            "<error><fault xsi:type=\"{}\">{}</fault><localizedMessage>{}</localizedMessage></error>",
            f.name,
            fault_fields(f),
            escape(&f.message)
        );
    }
    if let Some((kind, value)) = &t.result {
        let _ = write!(
            info,
            "<result type=\"{kind}\" xsi:type=\"ManagedObjectReference\">{}</result>",
            escape(value)
        );
    }
    let now = time(t.time);
    let _ = write!(
        info,
        "<queueTime>{now}</queueTime><startTime>{now}</startTime><completeTime>{now}</completeTime>\
         <eventChainId>1</eventChainId>"
    );
    format!(
        "<objects>{}{}</objects>",
        moref("obj", "Task", &t.id),
        prop("info", "TaskInfo", &info)
    )
}
