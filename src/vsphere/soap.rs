//! SOAP envelopes of the vim25 API, built and parsed as pure values: every
//! function here is text in, text or typed value out, with no I/O, so each
//! is tested against recorded answers.
//!
//! Building: the arguments of a vim25 method are an XML sequence, so their
//! order is the WSDL's, not ours. Parsing: elements are matched by namespace
//! URI and local name, never by prefix, and `xsi:type` is read through the
//! XMLSchema-instance namespace, whatever prefix a server binds it to (vcsim
//! writes `XMLSchema-instance:type`).
//!
//! The files below it read one way: `xml` (namespace-aware element
//! helpers), `response` (the envelope, SOAP faults, typed readers) and
//! `props` (PropertyCollector answers) never import this file; it builds the
//! requests and hands each answer to them. It must never perform I/O or
//! decide what a fault means for a backup.

use chrono::{DateTime, Utc};
use roxmltree::{Document, Node};

use super::Error;
use super::response::{
    parse_bool, parse_number, parse_time, protocol, required_moref, required_text, with_response,
};
use super::types::{ChangeId, DiskChangeInfo, MoRef, Page, ServiceContent, TaskInfo, VmRecord};
use super::xml::{child_text, children_named, find_child, text_of};

pub use super::xml::{SOAP_ENV_NS, VIM_NS, XSI_NS};

/// The properties inventory reads of every VM.
pub const VM_PROPERTIES: &[&str] = &[
    "name",
    "config.instanceUuid",
    "runtime.powerState",
    "guest.toolsRunningStatus",
    "guest.ipAddress",
    "config.changeTrackingEnabled",
    "runtime.consolidationNeeded",
    "config.keyId",
    "config.hardware.device",
    "config.files.vmPathName",
    "snapshot",
    "runtime.host",
];

/// A SOAP request ready to send: the vim25 method (for the SOAPAction
/// header and for error messages) and the whole envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: &'static str,
    pub envelope: String,
}

/// Escapes text for an element or a double-quoted attribute. Characters
/// XML 1.0 cannot carry at all (most C0 controls) become U+FFFD; a carriage
/// return is written as a reference so that it survives end-of-line
/// normalisation.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\r' => out.push_str("&#13;"),
            '\t' | '\n' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// Writes the body of one method call.
pub(super) struct Call {
    method: &'static str,
    xml: String,
}

impl Call {
    pub(super) fn new(method: &'static str, this: &MoRef) -> Call {
        let mut call = Call {
            method,
            xml: format!("<{method} xmlns=\"{VIM_NS}\">"),
        };
        call.moref("_this", this);
        call
    }

    pub(super) fn moref(&mut self, tag: &str, moref: &MoRef) -> &mut Self {
        self.xml.push_str(&format!(
            "<{tag} type=\"{}\">{}</{tag}>",
            escape(&moref.kind),
            escape(&moref.value)
        ));
        self
    }

    pub(super) fn text(&mut self, tag: &str, text: &str) -> &mut Self {
        self.xml
            .push_str(&format!("<{tag}>{}</{tag}>", escape(text)));
        self
    }

    /// Numbers and booleans, whose Display is their xsd form.
    pub(super) fn value(&mut self, tag: &str, value: impl std::fmt::Display) -> &mut Self {
        self.xml.push_str(&format!("<{tag}>{value}</{tag}>"));
        self
    }

    pub(super) fn open(&mut self, tag: &str) -> &mut Self {
        self.xml.push_str(&format!("<{tag}>"));
        self
    }

    pub(super) fn open_typed(&mut self, tag: &str, xsi_type: &str) -> &mut Self {
        self.xml
            .push_str(&format!("<{tag} xsi:type=\"{xsi_type}\">"));
        self
    }

    /// Appends XML that is already well-formed vim25 (a spec the server
    /// gave and coffer sends back).
    pub(super) fn raw(&mut self, xml: &str) -> &mut Self {
        self.xml.push_str(xml);
        self
    }

    pub(super) fn close(&mut self, tag: &str) -> &mut Self {
        self.xml.push_str(&format!("</{tag}>"));
        self
    }

    pub(super) fn finish(&mut self) -> Request {
        Request {
            method: self.method,
            envelope: format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
                 <soapenv:Envelope xmlns:soapenv=\"{SOAP_ENV_NS}\" \
                 xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\" xmlns:xsi=\"{XSI_NS}\">\
                 <soapenv:Body>{}</{}></soapenv:Body></soapenv:Envelope>",
                self.xml, self.method
            ),
        }
    }
}

// ---- builders -------------------------------------------------------------

pub fn retrieve_service_content() -> Request {
    Call::new("RetrieveServiceContent", &MoRef::service_instance()).finish()
}

pub fn login(session_manager: &MoRef, user: &str, password: &str) -> Request {
    Call::new("Login", session_manager)
        .text("userName", user)
        .text("password", password)
        .finish()
}

/// AcquireGenericServiceTicket: a one-time credential for one GET of `url`
/// (a host's `/folder` URL), as govmomi's `object.Datastore.ServiceTicket`
/// asks for it (`SessionManagerHttpServiceRequestSpec`, method `httpGet`).
pub fn acquire_generic_service_ticket(session_manager: &MoRef, url: &str) -> Request {
    Call::new("AcquireGenericServiceTicket", session_manager)
        .open_typed("spec", "SessionManagerHttpServiceRequestSpec")
        .text("method", "httpGet")
        .text("url", url)
        .close("spec")
        .finish()
}

/// A generic service ticket: its `id` (sent as the cookie
/// `vmware_cgi_ticket`) and the host it is for, when the server names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceTicket {
    pub id: String,
    pub host_name: Option<String>,
}

pub fn parse_service_ticket(xml: &str) -> Result<ServiceTicket, Error> {
    let method = "AcquireGenericServiceTicket";
    with_response(xml, method, |resp| {
        let rv = find_child(resp, "returnval").ok_or_else(|| protocol(method, "no returnval"))?;
        Ok(ServiceTicket {
            id: required_text(rv, "id", method)?,
            host_name: child_text(rv, "hostName").filter(|h| !h.is_empty()),
        })
    })
}

pub fn logout(session_manager: &MoRef) -> Request {
    Call::new("Logout", session_manager).finish()
}

/// The cheapest authenticated call: a keep-alive.
pub fn current_time() -> Request {
    Call::new("CurrentTime", &MoRef::service_instance()).finish()
}

/// Needs the Sessions.ValidateSession privilege; prefer `current_time` to
/// keep a session alive.
pub fn session_is_active(session_manager: &MoRef, session_id: &str, user: &str) -> Request {
    Call::new("SessionIsActive", session_manager)
        .text("sessionID", session_id)
        .text("userName", user)
        .finish()
}

pub fn create_container_view(
    view_manager: &MoRef,
    container: &MoRef,
    kinds: &[&str],
    recursive: bool,
) -> Request {
    let mut call = Call::new("CreateContainerView", view_manager);
    call.moref("container", container);
    for kind in kinds {
        call.text("type", kind);
    }
    call.value("recursive", recursive).finish()
}

pub fn destroy_view(view: &MoRef) -> Request {
    Call::new("DestroyView", view).finish()
}

/// Which objects a property query reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Objects {
    /// This one object.
    One(MoRef),
    /// Every object a ContainerView holds (the view itself is skipped).
    View(MoRef),
}

/// RetrievePropertiesEx of `paths` of every object of type `kind` that
/// `objects` selects; `max_objects` caps a page (the server may page sooner).
pub fn retrieve_properties_ex(
    property_collector: &MoRef,
    kind: &str,
    paths: &[&str],
    objects: &Objects,
    max_objects: Option<u32>,
) -> Request {
    let mut call = Call::new("RetrievePropertiesEx", property_collector);
    call.open("specSet").open("propSet").text("type", kind);
    for path in paths {
        call.text("pathSet", path);
    }
    call.close("propSet").open("objectSet");
    match objects {
        Objects::One(obj) => {
            call.moref("obj", obj);
        }
        Objects::View(view) => {
            call.moref("obj", view)
                .value("skip", true)
                .open_typed("selectSet", "TraversalSpec")
                .text("name", "traverseView")
                .text("type", "ContainerView")
                .text("path", "view")
                .value("skip", false)
                .close("selectSet");
        }
    }
    call.close("objectSet").close("specSet").open("options");
    if let Some(n) = max_objects {
        call.value("maxObjects", n);
    }
    call.close("options").finish()
}

pub fn continue_retrieve_properties_ex(property_collector: &MoRef, token: &str) -> Request {
    Call::new("ContinueRetrievePropertiesEx", property_collector)
        .text("token", token)
        .finish()
}

/// Turns changed block tracking on or off. On a running VM the change takes
/// effect at the next stun (a snapshot create or remove).
pub fn reconfig_change_tracking(vm: &MoRef, enabled: bool) -> Request {
    Call::new("ReconfigVM_Task", vm)
        .open("spec")
        .value("changeTrackingEnabled", enabled)
        .close("spec")
        .finish()
}

/// What a snapshot is asked to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRequest<'a> {
    pub name: &'a str,
    pub description: &'a str,
    /// Include the VM's memory (coffer never does: backups read disks).
    pub memory: bool,
    /// Ask VMware Tools to quiesce the guest first.
    pub quiesce: bool,
}

pub fn create_snapshot(vm: &MoRef, snapshot: &SnapshotRequest<'_>) -> Request {
    Call::new("CreateSnapshot_Task", vm)
        .text("name", snapshot.name)
        .text("description", snapshot.description)
        .value("memory", snapshot.memory)
        .value("quiesce", snapshot.quiesce)
        .finish()
}

/// Removes one snapshot, keeping its children, and consolidates its disks.
pub fn remove_snapshot(snapshot: &MoRef) -> Request {
    Call::new("RemoveSnapshot_Task", snapshot)
        .value("removeChildren", false)
        .value("consolidate", true)
        .finish()
}

/// Changed areas of disk `device_key` in `snapshot` since `change_id`
/// (`*`: the allocated areas), from `start_offset_bytes`.
pub fn query_changed_disk_areas(
    vm: &MoRef,
    snapshot: &MoRef,
    device_key: i32,
    start_offset_bytes: u64,
    change_id: &ChangeId,
) -> Request {
    Call::new("QueryChangedDiskAreas", vm)
        .moref("snapshot", snapshot)
        .value("deviceKey", device_key)
        .value("startOffset", start_offset_bytes)
        .text("changeId", &change_id.0)
        .finish()
}

/// A Storage vMotion of `vm` (its home and disks) to `datastore`
/// (RelocateVM_Task with `spec.datastore`): `instant-recover migrate`
/// through a vCenter moves a running instant VM off coffer's export with
/// it; tests move lab VMs with it, as an administrator would.
pub fn relocate_vm(vm: &MoRef, datastore: &MoRef) -> Request {
    Call::new("RelocateVM_Task", vm)
        .open_typed("spec", "VirtualMachineRelocateSpec")
        .moref("datastore", datastore)
        .close("spec")
        .finish()
}

pub fn consolidate_vm_disks(vm: &MoRef) -> Request {
    Call::new("ConsolidateVMDisks_Task", vm).finish()
}

/// Registers the VM whose .vmx is at `vmx_path` (`[datastore] dir/vm.vmx`)
/// in `folder`. ESXi needs no pool; vCenter needs a resource pool.
pub fn register_vm(
    folder: &MoRef,
    vmx_path: &str,
    name: Option<&str>,
    pool: Option<&MoRef>,
    host: Option<&MoRef>,
) -> Request {
    let mut call = Call::new("RegisterVM_Task", folder);
    call.text("path", vmx_path);
    if let Some(name) = name {
        call.text("name", name);
    }
    call.value("asTemplate", false);
    if let Some(pool) = pool {
        call.moref("pool", pool);
    }
    if let Some(host) = host {
        call.moref("host", host);
    }
    call.finish()
}

pub fn power_on_vm(vm: &MoRef) -> Request {
    Call::new("PowerOnVM_Task", vm).finish()
}

/// AnswerVM: answers question `question_id` of `vm` with choice `choice`.
pub fn answer_vm(vm: &MoRef, question_id: &str, choice: &str) -> Request {
    let mut call = Call::new("AnswerVM", vm);
    call.text("questionId", question_id);
    call.text("answerChoice", choice);
    call.finish()
}

pub fn power_off_vm(vm: &MoRef) -> Request {
    Call::new("PowerOffVM_Task", vm).finish()
}

pub fn unregister_vm(vm: &MoRef) -> Request {
    Call::new("UnregisterVM", vm).finish()
}

/// Destroys a managed entity: for a VM, its files too.
pub fn destroy(entity: &MoRef) -> Request {
    Call::new("Destroy_Task", entity).finish()
}

// ---- parsers ---------------------------------------------------------------

/// The vim25 version to speak, from `/sdk/vimServiceVersions.xml`: the
/// newest the endpoint offers. The file is not SOAP and has no namespace.
pub fn parse_service_versions(xml: &str) -> Result<String, Error> {
    let method = "vimServiceVersions.xml";
    let doc = Document::parse(xml).map_err(|e| Error::Xml {
        method: method.into(),
        detail: e.to_string(),
    })?;
    let local = |n: Node<'_, '_>, name: &str| n.is_element() && n.tag_name().name() == name;
    for ns in doc
        .root_element()
        .children()
        .filter(|n| local(*n, "namespace"))
    {
        let name = ns.children().find(|n| local(*n, "name")).map(text_of);
        if name.as_deref().map(str::trim) == Some(VIM_NS)
            && let Some(version) = ns.children().find(|n| local(*n, "version"))
        {
            return Ok(text_of(version).trim().to_string());
        }
    }
    Err(protocol(method, "no urn:vim25 namespace with a version"))
}

/// The SOAPAction header value for a vim25 `version`.
pub fn soap_action(version: &str) -> String {
    format!("{VIM_NS}/{version}")
}

pub fn parse_service_content(xml: &str) -> Result<ServiceContent, Error> {
    let method = "RetrieveServiceContent";
    with_response(xml, method, |resp| {
        let rv = find_child(resp, "returnval").ok_or_else(|| protocol(method, "no returnval"))?;
        let about = find_child(rv, "about").ok_or_else(|| protocol(method, "no about"))?;
        Ok(ServiceContent {
            root_folder: required_moref(rv, "rootFolder", method)?,
            property_collector: required_moref(rv, "propertyCollector", method)?,
            view_manager: required_moref(rv, "viewManager", method)?,
            session_manager: required_moref(rv, "sessionManager", method)?,
            guest_operations_manager: find_child(rv, "guestOperationsManager")
                .and_then(super::xml::moref_of),
            ovf_manager: find_child(rv, "ovfManager").and_then(super::xml::moref_of),
            about: super::types::AboutInfo {
                full_name: child_text(about, "fullName").unwrap_or_default(),
                api_version: required_text(about, "apiVersion", method)?,
                product_line_id: child_text(about, "productLineId").unwrap_or_default(),
                instance_uuid: child_text(about, "instanceUuid"),
            },
        })
    })
}

/// The session key of a successful Login.
pub fn parse_login(xml: &str) -> Result<String, Error> {
    let method = "Login";
    with_response(xml, method, |resp| {
        let rv = find_child(resp, "returnval").ok_or_else(|| protocol(method, "no returnval"))?;
        required_text(rv, "key", method)
    })
}

/// A method that returns nothing (Logout, UnregisterVM, DestroyView).
pub fn parse_empty(xml: &str, method: &str) -> Result<(), Error> {
    with_response(xml, method, |_| Ok(()))
}

pub fn parse_current_time(xml: &str) -> Result<DateTime<Utc>, Error> {
    let method = "CurrentTime";
    with_response(xml, method, |resp| {
        parse_time(
            &required_text(resp, "returnval", method)?,
            "returnval",
            method,
        )
    })
}

pub fn parse_session_is_active(xml: &str) -> Result<bool, Error> {
    let method = "SessionIsActive";
    with_response(xml, method, |resp| {
        Ok(parse_bool(&required_text(resp, "returnval", method)?))
    })
}

/// A method whose answer is one managed object reference: every `*_Task`
/// (the task) and CreateContainerView (the view).
pub fn parse_moref_result(xml: &str, method: &str) -> Result<MoRef, Error> {
    with_response(xml, method, |resp| {
        required_moref(resp, "returnval", method)
    })
}

pub fn parse_changed_disk_areas(xml: &str) -> Result<DiskChangeInfo, Error> {
    let method = "QueryChangedDiskAreas";
    let parsed = with_response(xml, method, |resp| {
        let rv = find_child(resp, "returnval").ok_or_else(|| protocol(method, "no returnval"))?;
        let start: u64 = parse_number(
            &required_text(rv, "startOffset", method)?,
            "startOffset",
            method,
        )?;
        let length: u64 = parse_number(&required_text(rv, "length", method)?, "length", method)?;
        let mut changed = Vec::new();
        for area in children_named(rv, "changedArea") {
            let a: u64 = parse_number(&required_text(area, "start", method)?, "start", method)?;
            let n: u64 = parse_number(&required_text(area, "length", method)?, "length", method)?;
            changed.push(a..a + n);
        }
        Ok(DiskChangeInfo {
            start_offset_bytes: start,
            length_bytes: length,
            changed,
        })
    });
    parsed.map_err(|e| match e {
        Error::Fault(f) => Error::Fault(f.from_changed_disk_areas()),
        other => other,
    })
}

/// One page of VMs, from a RetrievePropertiesEx or
/// ContinueRetrievePropertiesEx of `VM_PROPERTIES`.
pub fn parse_vm_page(xml: &str, method: &str) -> Result<Page<VmRecord>, Error> {
    super::props::parse_page(xml, method, super::props::vm_record)
}

/// A page of `name` and `parent` of managed entities (see `placement`).
pub fn parse_entity_page(xml: &str, method: &str) -> Result<Page<super::placement::Entity>, Error> {
    super::props::parse_page(xml, method, super::props::entity)
}

/// The `info` of a Task, from a RetrievePropertiesEx of that one property.
pub fn parse_task_info(xml: &str) -> Result<TaskInfo, Error> {
    super::props::parse_task_info(xml)
}

/// The disks of a snapshot (its `config.hardware.device`), which carry the
/// change ids to record for the next incremental.
/// The properties `parse_guest_quiesce_facts` reads.
pub const GUEST_QUIESCE_PROPERTIES: &[&str] =
    &["config.guestId", "config.extraConfig", "layoutEx.file"];

pub fn parse_guest_quiesce_facts(xml: &str) -> Result<super::types::GuestQuiesceFacts, Error> {
    super::props::parse_guest_quiesce_facts(xml)
}

/// A guest operation's call on `manager` for the guest of `vm`, with its
/// `auth`: a user and password, not interactive.
fn guest_call(
    method: &'static str,
    manager: &MoRef,
    vm: &MoRef,
    auth: &super::types::GuestAuth,
) -> Call {
    let mut call = Call::new(method, manager);
    call.moref("vm", vm)
        .open_typed("auth", "NamePasswordAuthentication")
        .value("interactiveSession", false)
        .text("username", &auth.user)
        .text("password", &auth.password)
        .close("auth");
    call
}

/// `StartProgramInGuest`: runs `program` with `arguments` in the guest.
pub fn start_program_in_guest(
    process_manager: &MoRef,
    vm: &MoRef,
    auth: &super::types::GuestAuth,
    program: &str,
    arguments: &str,
) -> Request {
    guest_call("StartProgramInGuest", process_manager, vm, auth)
        .open_typed("spec", "GuestProgramSpec")
        .text("programPath", program)
        .text("arguments", arguments)
        .close("spec")
        .finish()
}

/// `ListProcessesInGuest` of one pid.
pub fn list_processes_in_guest(
    process_manager: &MoRef,
    vm: &MoRef,
    auth: &super::types::GuestAuth,
    pid: i64,
) -> Request {
    guest_call("ListProcessesInGuest", process_manager, vm, auth)
        .value("pids", pid)
        .finish()
}

/// `InitiateFileTransferFromGuest` of `path`: answers a URL to GET it from.
pub fn initiate_file_transfer_from_guest(
    file_manager: &MoRef,
    vm: &MoRef,
    auth: &super::types::GuestAuth,
    path: &str,
) -> Request {
    guest_call("InitiateFileTransferFromGuest", file_manager, vm, auth)
        .text("guestFilePath", path)
        .finish()
}

pub fn delete_file_in_guest(
    file_manager: &MoRef,
    vm: &MoRef,
    auth: &super::types::GuestAuth,
    path: &str,
) -> Request {
    guest_call("DeleteFileInGuest", file_manager, vm, auth)
        .text("filePath", path)
        .finish()
}

/// The pid `StartProgramInGuest` answers.
pub fn parse_pid(xml: &str) -> Result<i64, Error> {
    let method = "StartProgramInGuest";
    with_response(xml, method, |resp| {
        parse_number(
            &required_text(resp, "returnval", method)?,
            "returnval",
            method,
        )
    })
}

/// The processes `ListProcessesInGuest` answers.
pub fn parse_guest_processes(xml: &str) -> Result<Vec<super::types::GuestProcess>, Error> {
    let method = "ListProcessesInGuest";
    with_response(xml, method, |resp| {
        children_named(resp, "returnval")
            .map(|p| {
                Ok(super::types::GuestProcess {
                    pid: parse_number(&required_text(p, "pid", method)?, "pid", method)?,
                    exit_code: child_text(p, "exitCode")
                        .filter(|_| child_text(p, "endTime").is_some())
                        .map(|c| parse_number(c.trim(), "exitCode", method))
                        .transpose()?,
                })
            })
            .collect()
    })
}

/// The `url` of a FileTransferInformation.
pub fn parse_file_transfer_url(xml: &str) -> Result<String, Error> {
    let method = "InitiateFileTransferFromGuest";
    with_response(xml, method, |resp| {
        let rv = find_child(resp, "returnval").ok_or_else(|| protocol(method, "no returnval"))?;
        required_text(rv, "url", method)
    })
}

/// `processManager` and `fileManager` of the GuestOperationsManager.
pub fn parse_guest_managers(xml: &str) -> Result<(Option<MoRef>, Option<MoRef>), Error> {
    super::props::parse_guest_managers(xml)
}

/// `AddVirtualSwitch` of `name` without a bridge: a switch with no
/// physical uplink (HostVirtualSwitchSpec; `numPorts` is required).
pub fn add_virtual_switch(network_system: &MoRef, name: &str) -> Request {
    let mut call = Call::new("AddVirtualSwitch", network_system);
    call.text("vswitchName", name)
        .open("spec")
        .value("numPorts", 128)
        .close("spec");
    call.finish()
}

/// `AddPortGroup` `name` on switch `vswitch`, no VLAN, the switch's
/// policy (an empty HostNetworkPolicy inherits it).
pub fn add_port_group(network_system: &MoRef, name: &str, vswitch: &str) -> Request {
    let mut call = Call::new("AddPortGroup", network_system);
    call.open("portgrp")
        .text("name", name)
        .value("vlanId", 0)
        .text("vswitchName", vswitch)
        .open("policy")
        .close("policy")
        .close("portgrp");
    call.finish()
}

pub fn remove_port_group(network_system: &MoRef, name: &str) -> Request {
    let mut call = Call::new("RemovePortGroup", network_system);
    call.text("pgName", name);
    call.finish()
}

pub fn remove_virtual_switch(network_system: &MoRef, name: &str) -> Request {
    let mut call = Call::new("RemoveVirtualSwitch", network_system);
    call.text("vswitchName", name);
    call.finish()
}

/// `CreateNasDatastore`: mounts `remote_path` of the NFS v3 server
/// `remote_host` read-write as datastore `name` (HostNasVolumeSpec; the
/// spec has no port: the host asks the server's portmapper).
pub fn create_nas_datastore(
    datastore_system: &MoRef,
    remote_host: &str,
    remote_path: &str,
    name: &str,
) -> Request {
    let mut call = Call::new("CreateNasDatastore", datastore_system);
    call.open("spec")
        .text("remoteHost", remote_host)
        .text("remotePath", remote_path)
        .text("localPath", name)
        .text("accessMode", "readWrite")
        .text("type", "NFS")
        .close("spec");
    call.finish()
}

/// `RemoveDatastore`: unmounts a NAS datastore from the host.
pub fn remove_datastore(datastore_system: &MoRef, datastore: &MoRef) -> Request {
    let mut call = Call::new("RemoveDatastore", datastore_system);
    call.moref("datastore", datastore);
    call.finish()
}

pub fn parse_moref_property(xml: &str, path: &str) -> Result<Option<MoRef>, Error> {
    super::props::parse_moref_property(xml, path)
}

pub fn parse_moref_list_property(xml: &str, path: &str) -> Result<Vec<MoRef>, Error> {
    super::props::parse_moref_list_property(xml, path)
}

pub fn parse_network_system(xml: &str) -> Result<Option<MoRef>, Error> {
    super::props::parse_network_system(xml)
}

pub fn parse_host_network(xml: &str) -> Result<super::types::HostNetwork, Error> {
    super::props::parse_host_network(xml)
}

pub fn parse_vm_question(xml: &str) -> Result<Option<super::types::VmQuestion>, Error> {
    super::props::parse_vm_question(xml)
}

pub fn parse_snapshot_disks(xml: &str) -> Result<Vec<super::types::VmDisk>, Error> {
    super::props::parse_snapshot_disks(xml)
}
