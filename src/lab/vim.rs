//! The SOAP side of the lab: the vim25 methods coffer calls, read by
//! namespace with roxmltree and answered in the shapes ESXi uses. Tasks
//! run to completion before their method answers; their TaskInfo is kept
//! for the client to poll.
//!
//! Property collector answers are rendered by `props`, and the XML writers
//! both use are in `wire`; `props` never calls back here. A method outside
//! the subset the lab implements must never be answered as if it
//! succeeded: it is a `MethodNotFound` fault.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::Utc;
use roxmltree::{Document, Node};

use super::datastore_system;
use super::faults::Faults;
use super::guestops;
use super::hostnet;
use super::import;
use super::import_spec;
use super::inventory;
use super::lifecycle;
use super::nfc;
use super::ops::{self, Injected, SnapshotSpec};
use super::props::{service_content, snapshot_object, task_object, vm_object};
use super::state::{self, Fault, State, Store};
use super::wire::{API_VERSION, TaskRecord, fault_fields, moref, time};
use crate::vsphere::soap::{SOAP_ENV_NS, VIM_NS, XSI_NS, escape};

pub const SESSION_COOKIE: &str = "vmware_soap_session";

pub fn service_versions_xml() -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\" ?>\n<namespaces version=\"1.0\">\n  <namespace>\n    \
         <name>urn:vim25</name>\n    <version>{API_VERSION}</version>\n    <priorVersions>\n      \
         <version>7.0.3.0</version>\n      <version>6.7</version>\n      <version>6.5</version>\n    \
         </priorVersions>\n  </namespace>\n</namespaces>\n"
    )
}

/// Sessions, tasks, views and pages: what the lab keeps in memory only.
#[derive(Default)]
pub struct Vim {
    sessions: Mutex<HashMap<String, String>>,
    tasks: Mutex<HashMap<String, TaskRecord>>,
    pages: Mutex<HashMap<String, Vec<String>>>,
    counter: AtomicU64,
    pub page_objects: usize,
    pub window_bytes: u64,
    /// Answer as a vCenter (see `inventory`), not as a standalone host.
    pub vcenter: bool,
    /// vCenter mode: the address (`127.0.0.1:port`) each host's own
    /// listener answers at, by host moref; its HostSystem `name`.
    pub host_addrs: Mutex<HashMap<String, String>>,
    /// Generic service tickets handed out and not yet used.
    tickets: Mutex<HashMap<String, Ticket>>,
    /// The guests' processes and files (see `guestops`).
    pub guest: Mutex<guestops::GuestOps>,
    /// The HttpNfcLeases of OVF imports (see `nfc`).
    pub leases: nfc::Leases,
}

/// A generic service ticket: one request (`GET` of one URL) on one host.
#[derive(Debug, Clone)]
struct Ticket {
    /// `127.0.0.1:port` of the host the URL names.
    addr: String,
    /// The URL's path and query, as the request will carry them.
    target: String,
}

/// The address that answers nothing: where the hosts' names lead under
/// the `hosts-unreachable` fault.
const NOWHERE: &str = "127.0.0.1:1";

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// `lock` for the lab's start, which fills `Vim::host_addrs`.
pub fn lock_map<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    lock(m)
}

/// What one SOAP call answers: the HTTP status, the envelope and a
/// session cookie to set.
pub struct Answer {
    pub status: u16,
    pub xml: String,
    pub set_cookie: Option<String>,
}

fn envelope(body: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<soapenv:Envelope xmlns:soapenv=\"{SOAP_ENV_NS}\" \
         xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\" xmlns:xsi=\"{XSI_NS}\">\n<soapenv:Body>\n{body}\n\
         </soapenv:Body>\n</soapenv:Envelope>"
    )
}

fn ok(method: &str, inner: &str) -> Answer {
    Answer {
        status: 200,
        xml: envelope(&format!(
            "<{method}Response xmlns=\"{VIM_NS}\">{inner}</{method}Response>"
        )),
        set_cookie: None,
    }
}

pub fn fault_answer(f: &Fault) -> Answer {
    Answer {
        status: 500,
        xml: envelope(&format!(
            "<soapenv:Fault><faultcode>ServerFaultCode</faultcode><faultstring>{}</faultstring>\
             <detail><{name}Fault xmlns=\"{VIM_NS}\" xsi:type=\"{name}\">{}</{name}Fault></detail>\
             </soapenv:Fault>",
            escape(&f.message),
            fault_fields(f),
            name = f.name
        )),
        set_cookie: None,
    }
}

// ---- reading requests ------------------------------------------------------

fn child<'a, 'i>(node: Node<'a, 'i>, local: &str) -> Option<Node<'a, 'i>> {
    node.children()
        .find(|c| c.is_element() && c.tag_name().name() == local)
}

fn children<'a, 'i: 'a>(
    node: Node<'a, 'i>,
    local: &'a str,
) -> impl Iterator<Item = Node<'a, 'i>> + 'a {
    node.children()
        .filter(move |c| c.is_element() && c.tag_name().name() == local)
}

fn text(node: Node<'_, '_>) -> String {
    node.children()
        .filter(|c| c.is_text())
        .filter_map(|c| c.text())
        .collect::<String>()
        .trim()
        .to_string()
}

fn arg(node: Node<'_, '_>, local: &str) -> Option<String> {
    child(node, local).map(text)
}

fn arg_bool(node: Node<'_, '_>, local: &str) -> bool {
    arg(node, local).is_some_and(|v| v == "true" || v == "1")
}

/// A moref argument: (type, value).
fn arg_moref(node: Node<'_, '_>, local: &str) -> Option<(String, String)> {
    let n = child(node, local)?;
    let kind = n
        .attributes()
        .find(|a| a.name() == "type" && a.namespace().is_none())?;
    Some((kind.value().to_string(), text(n)))
}

fn invalid(property: &str, message: &str) -> Fault {
    Fault::new("InvalidRequest", message.to_string()).with("invalidProperty", property)
}

/// The session key in a Cookie header.
pub fn cookie_session(cookie: Option<&str>) -> Option<String> {
    cookie?.split(';').find_map(|c| {
        let (n, v) = c.trim().split_once('=')?;
        (n.trim() == SESSION_COOKIE).then(|| v.trim().trim_matches('"').to_string())
    })
}

impl Vim {
    pub fn new(page_objects: usize, window_bytes: u64, vcenter: bool) -> Vim {
        Vim {
            page_objects,
            window_bytes,
            vcenter,
            ..Default::default()
        }
    }

    fn next(&self, prefix: &str) -> String {
        format!(
            "{prefix}-{}",
            self.counter.fetch_add(1, Ordering::SeqCst) + 1
        )
    }

    /// A host's `name`: where its own listener answers.
    pub fn host_name(&self, host: &str, faults: &Faults) -> String {
        if faults.hosts_unreachable.load(Ordering::SeqCst) {
            return NOWHERE.to_string();
        }
        lock(&self.host_addrs)
            .get(host)
            .cloned()
            .unwrap_or_else(|| NOWHERE.to_string())
    }

    /// Uses up the ticket `id` for a GET of `target` on the host at `addr`:
    /// a ticket is good for the one request it was made for ("a one-time
    /// credential that may be used to make the specified request":
    /// vSphere API reference, `SessionManager.AcquireGenericServiceTicket`).
    pub fn take_ticket(&self, id: &str, addr: &str, target: &str) -> bool {
        let mut tickets = lock(&self.tickets);
        match tickets.get(id) {
            Some(t) if t.addr == addr && t.target == target => {
                tickets.remove(id);
                true
            }
            _ => false,
        }
    }

    /// AcquireGenericServiceTicket for `spec` (a
    /// SessionManagerHttpServiceRequestSpec): a vCenter hands out a ticket
    /// for a GET of a URL on one of its hosts; the answer names the host.
    fn service_ticket(&self, spec: Option<Node<'_, '_>>) -> Result<String, Fault> {
        if !self.vcenter {
            return Err(Fault::new(
                "NotSupported",
                "The lab as a standalone host hands out no service tickets.",
            ));
        }
        let spec = spec.ok_or_else(|| invalid("spec", "a spec is required"))?;
        let method = arg(spec, "method").unwrap_or_default();
        if method != "httpGet" {
            return Err(invalid(
                "method",
                "the lab hands out tickets for httpGet only",
            ));
        }
        let url = arg(spec, "url").unwrap_or_default();
        let rest = url
            .strip_prefix("https://")
            .ok_or_else(|| invalid("url", "an https URL is required"))?;
        let (addr, target) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let mut id = [0u8; 16];
        getrandom::fill(&mut id).expect("the OS random source works");
        let id = hex::encode(id);
        lock(&self.tickets).insert(
            id.clone(),
            Ticket {
                addr: addr.to_string(),
                target: target.to_string(),
            },
        );
        Ok(format!(
            "<returnval><id>{id}</id><hostName>{}</hostName></returnval>",
            escape(addr)
        ))
    }

    /// Forgets every session (see `Faults::expire_sessions`).
    pub fn expire_sessions(&self) {
        lock(&self.sessions).clear();
    }

    pub fn is_session(&self, key: Option<&str>) -> bool {
        key.is_some_and(|k| lock(&self.sessions).contains_key(k))
    }

    /// Answers one POST to /sdk.
    pub fn call(
        &self,
        store: &Store,
        faults: &Faults,
        creds: (&str, &str),
        session: Option<String>,
        xml: &str,
    ) -> Answer {
        let doc = match Document::parse(xml) {
            Ok(d) => d,
            Err(e) => return fault_answer(&invalid("envelope", &format!("malformed XML: {e}"))),
        };
        let body = doc.root_element().children().find(|c| {
            c.is_element()
                && c.tag_name().name() == "Body"
                && c.tag_name().namespace() == Some(SOAP_ENV_NS)
        });
        let Some(call) = body.and_then(|b| b.children().find(|c| c.is_element())) else {
            return fault_answer(&invalid("Body", "the envelope has no body"));
        };
        if call.tag_name().namespace() != Some(VIM_NS) {
            return fault_answer(&Fault::new(
                "MethodNotFound",
                format!("{} is not a vim25 method", call.tag_name().name()),
            ));
        }
        let method = call.tag_name().name();
        let this = arg_moref(call, "_this").unwrap_or_default();
        match method {
            "RetrieveServiceContent" => {
                let with_ovf = !faults.no_ovf_manager.load(Ordering::SeqCst);
                return ok(method, &service_content(self.vcenter, with_ovf));
            }
            "Login" => return self.login(call, creds),
            _ => {}
        }
        let session = session.filter(|s| self.is_session(Some(s)));
        let Some(session) = session else {
            return fault_answer(
                &Fault::new("NotAuthenticated", "The session is not authenticated.")
                    .with("privilegeId", "System.View"),
            );
        };
        let result = self.dispatch(store, faults, &session, method, &this, call);
        match result {
            Ok(inner) => ok(method, &inner),
            Err(f) => fault_answer(&f),
        }
    }

    fn login(&self, call: Node<'_, '_>, (user, password): (&str, &str)) -> Answer {
        let (u, p) = (
            arg(call, "userName").unwrap_or_default(),
            arg(call, "password").unwrap_or_default(),
        );
        if u != user || p != password {
            return fault_answer(&Fault::new(
                "InvalidLogin",
                "Cannot complete login due to an incorrect user name or password.",
            ));
        }
        let mut key = [0u8; 16];
        getrandom::fill(&mut key).expect("the OS random source works");
        let key = hex::encode(key);
        lock(&self.sessions).insert(key.clone(), u.clone());
        let now = time(Utc::now());
        let mut answer = ok(
            "Login",
            &format!(
                "<returnval><key>{key}</key><userName>{u}</userName><fullName>{u}</fullName>\
                 <loginTime>{now}</loginTime><lastActiveTime>{now}</lastActiveTime>\
                 <locale>en</locale><messageLocale>en</messageLocale></returnval>",
                u = escape(&u)
            ),
        );
        answer.set_cookie = Some(format!(
            "{SESSION_COOKIE}=\"{key}\"; Path=/; HttpOnly; Secure;"
        ));
        answer
    }

    fn dispatch(
        &self,
        store: &Store,
        faults: &Faults,
        session: &str,
        method: &str,
        this: &(String, String),
        call: Node<'_, '_>,
    ) -> Result<String, Fault> {
        let injected = || Injected {
            quiesce: faults.quiesce.load(Ordering::SeqCst),
            vss_writers: faults.vss_writers.load(Ordering::SeqCst),
            snapshot: faults.snapshot.load(Ordering::SeqCst),
            remove_snapshot: faults.remove_snapshot.load(Ordering::SeqCst),
            physical_rdm_snapshot: faults.prdm_snapshot.load(Ordering::SeqCst),
        };
        let vm = this.1.as_str();
        match method {
            "Logout" => {
                lock(&self.sessions).remove(session);
                Ok(String::new())
            }
            "CurrentTime" => Ok(format!("<returnval>{}</returnval>", time(Utc::now()))),
            "SessionIsActive" => {
                let id = arg(call, "sessionID").unwrap_or_default();
                let active = self.is_session(Some(&id));
                Ok(format!("<returnval>{active}</returnval>"))
            }
            "AcquireGenericServiceTicket" => self.service_ticket(child(call, "spec")),
            "CreateContainerView" => Ok(moref(
                "returnval",
                "ContainerView",
                &self.next("session-view"),
            )),
            "DestroyView" => Ok(String::new()),
            "RetrievePropertiesEx" => self.retrieve(store, faults, call),
            "ContinueRetrievePropertiesEx" => {
                let token = arg(call, "token").unwrap_or_default();
                let rest = lock(&self.pages).remove(&token).ok_or_else(|| {
                    Fault::new("InvalidArgument", "unknown token").with("invalidProperty", "token")
                })?;
                Ok(format!(
                    "<returnval>{}</returnval>",
                    self.page(rest, usize::MAX)
                ))
            }
            "CancelRetrievePropertiesEx" => {
                let token = arg(call, "token").unwrap_or_default();
                lock(&self.pages).remove(&token);
                Ok(String::new())
            }
            "ReconfigVM_Task" => {
                let spec = child(call, "spec");
                let enabled = spec.and_then(|s| arg(s, "changeTrackingEnabled"));
                self.task(store, method, this, |st, _| {
                    if let Some(e) = &enabled {
                        ops::set_change_tracking(st, vm, e == "true" || e == "1")?;
                    }
                    Ok(None)
                })
            }
            // A Storage vMotion: `spec.datastore` moves every disk, a
            // `spec.disk` locator (diskId, datastore) one disk
            // (VirtualMachineRelocateSpec, vSphere API reference).
            "RelocateVM_Task" => {
                let spec = child(call, "spec");
                let all = spec.and_then(|s| arg_moref(s, "datastore")).map(|d| d.1);
                let per_disk: Vec<(i32, String)> = spec
                    .map(|s| {
                        children(s, "disk")
                            .filter_map(|l| {
                                let key = arg(l, "diskId")?.trim().parse().ok()?;
                                Some((key, arg_moref(l, "datastore")?.1))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                self.task(store, method, this, |st, root| {
                    if let Some(ds) = &all {
                        ops::relocate_disks(st, root, vm, None, ds)?;
                    }
                    for (key, ds) in &per_disk {
                        ops::relocate_disks(st, root, vm, Some(&[*key]), ds)?;
                    }
                    Ok(None)
                })
            }
            "CreateSnapshot_Task" => {
                let spec = SnapshotSpec {
                    name: arg(call, "name").unwrap_or_default(),
                    description: arg(call, "description").unwrap_or_default(),
                    memory: arg_bool(call, "memory"),
                    quiesce: arg_bool(call, "quiesce"),
                };
                let injected = injected();
                self.task(store, method, this, |st, root| {
                    let id = ops::create_snapshot(st, root, vm, &spec, injected)?;
                    Ok(Some((
                        "VirtualMachineSnapshot".into(),
                        state::snapshot_moref(id),
                    )))
                })
            }
            "RemoveSnapshot_Task" => {
                let injected = injected();
                let snapshot = this.1.clone();
                let owner = store.read(|st, _| {
                    let (v, _) = st.snapshot_owner(&snapshot)?;
                    Ok((v.moref(), v.name.clone()))
                })?;
                self.task_on(
                    store,
                    method,
                    ("VirtualMachine".into(), owner.0),
                    owner.1,
                    |st, root| ops::remove_snapshot(st, root, &snapshot, injected).map(|_| None),
                )
            }
            "ConsolidateVMDisks_Task" => self.task(store, method, this, |st, root| {
                ops::consolidate(st, root, vm).map(|_| None)
            }),
            "PowerOnVM_Task" => {
                let name = store.read(|st, _| Ok(st.vm(vm)?.name.clone()))?;
                let id = self.next("haTask");
                let outcome = store.update(|st, root| lifecycle::power_on(st, root, vm, &id));
                let record = TaskRecord {
                    id: id.clone(),
                    name: "PowerOnVM".into(),
                    entity: this.clone(),
                    entity_name: name,
                    result: None,
                    running: outcome.as_ref().is_ok_and(|asked| *asked),
                    error: outcome.err(),
                    time: Utc::now(),
                };
                lock(&self.tasks).insert(id.clone(), record);
                Ok(moref("returnval", "Task", &id))
            }
            "AnswerVM" => {
                let question = arg(call, "questionId").unwrap_or_default();
                let choice = arg(call, "answerChoice").unwrap_or_default();
                let (task, outcome) =
                    store.update(|st, root| lifecycle::answer(st, root, vm, &question, &choice))?;
                if let Some(t) = lock(&self.tasks).get_mut(&task) {
                    t.running = false;
                    t.error = outcome.err();
                    t.time = Utc::now();
                }
                Ok(String::new())
            }
            "PowerOffVM_Task" => self.task(store, method, this, |st, root| {
                lifecycle::power_off(st, root, vm).map(|_| None)
            }),
            "Destroy_Task" => self.task(store, method, this, |st, root| {
                lifecycle::destroy(st, root, vm).map(|_| None)
            }),
            "UnregisterVM" => store
                .update(|st, _| lifecycle::unregister(st, vm))
                .map(|_| String::new()),
            "RegisterVM_Task" => {
                let path = arg(call, "path").unwrap_or_default();
                let name = arg(call, "name");
                let (host, pool) = (arg(call, "host"), arg(call, "pool"));
                let folder = this.clone();
                self.task_on(store, method, folder.clone(), String::new(), |st, root| {
                    let on = inventory::registered_host(
                        st.vcenter,
                        &folder.1,
                        host.as_deref(),
                        pool.as_deref(),
                    )?;
                    let id = lifecycle::register(st, root, &path, name.as_deref())?;
                    let (in_folder, in_pool) =
                        inventory::chosen(st.vcenter, &folder.1, pool.as_deref());
                    let vm = st.vm_mut(&id)?;
                    if vm.host.is_none() {
                        vm.host = on.map(str::to_string);
                    }
                    (vm.folder, vm.pool) = (in_folder, in_pool);
                    Ok(Some(("VirtualMachine".into(), id)))
                })
            }
            // VMware Tools guest operations (see `guestops`).
            "StartProgramInGuest"
            | "ListProcessesInGuest"
            | "InitiateFileTransferFromGuest"
            | "DeleteFileInGuest" => self.guest_operation(store, method, call),
            // A host's NAS datastores (see `datastore_system`); `_this`
            // is its datastore system.
            "CreateNasDatastore" => {
                let spec = child(call, "spec");
                let field = |k: &str| spec.and_then(|s| arg(s, k)).unwrap_or_default();
                let spec = datastore_system::NasSpec {
                    remote_host: field("remoteHost"),
                    remote_path: field("remotePath"),
                    local_path: field("localPath"),
                    access_mode: field("accessMode"),
                    kind: Some(field("type"))
                        .filter(|t| !t.is_empty())
                        .unwrap_or_else(|| "NFS".into()),
                };
                let name = datastore_system::create(store, vm, &spec)?;
                Ok(moref("returnval", "Datastore", &name))
            }
            "RemoveDatastore" => {
                let ds = arg_moref(call, "datastore")
                    .ok_or_else(|| invalid("datastore", "a datastore is required"))?;
                datastore_system::remove(store, vm, &ds.1).map(|()| String::new())
            }
            // A host's standard switches and port groups (see `hostnet`).
            "AddVirtualSwitch" => {
                let name = arg(call, "vswitchName").unwrap_or_default();
                let ports = child(call, "spec")
                    .and_then(|s| arg(s, "numPorts"))
                    .and_then(|n| n.trim().parse().ok())
                    .unwrap_or(128);
                store
                    .update(|st, _| hostnet::add_vswitch(st, vm, &name, ports))
                    .map(|()| String::new())
            }
            "AddPortGroup" => {
                let spec = child(call, "portgrp");
                let field = |k: &str| spec.and_then(|s| arg(s, k)).unwrap_or_default();
                let (name, vswitch) = (field("name"), field("vswitchName"));
                let vlan = field("vlanId").trim().parse().unwrap_or(0);
                store
                    .update(|st, _| hostnet::add_port_group(st, vm, &name, &vswitch, vlan))
                    .map(|()| String::new())
            }
            "RemovePortGroup" => {
                let name = arg(call, "pgName").unwrap_or_default();
                store
                    .update(|st, root| hostnet::remove_port_group(st, root, vm, &name))
                    .map(|()| String::new())
            }
            "RemoveVirtualSwitch" => {
                let name = arg(call, "vswitchName").unwrap_or_default();
                store
                    .update(|st, root| hostnet::remove_vswitch(st, root, vm, &name))
                    .map(|()| String::new())
            }
            // The OVF import (see `import_spec`, `import` and `nfc`).
            "CreateImportSpec" => import_spec::create_import_spec(store, self.vcenter, this, call),
            "ImportVApp" => {
                if this.0 != "ResourcePool" {
                    return Err(Fault::not_found(&this.0, &this.1));
                }
                let (spec, place) = super::config_spec::import_args(call, &this.1)?;
                let id = nfc::new_lease_id();
                let imported =
                    store.update(|st, root| import::import_vapp(st, root, &spec, &place, &id))?;
                self.leases.open(&id, &imported);
                Ok(moref("returnval", "HttpNfcLease", &id))
            }
            "HttpNfcLeaseProgress" | "HttpNfcLeaseComplete" | "HttpNfcLeaseAbort" => self
                .leases
                .call(store, faults, method, this, call)
                .map(|()| String::new()),
            "QueryChangedDiskAreas" => {
                let snapshot = arg_moref(call, "snapshot")
                    .ok_or_else(|| invalid("snapshot", "a snapshot is required"))?;
                let key: i32 = arg(call, "deviceKey")
                    .and_then(|k| k.parse().ok())
                    .ok_or_else(|| invalid("deviceKey", "deviceKey is not a number"))?;
                let start: u64 = arg(call, "startOffset")
                    .and_then(|k| k.parse().ok())
                    .ok_or_else(|| invalid("startOffset", "startOffset is not a number"))?;
                let change_id = arg(call, "changeId").unwrap_or_default();
                let areas = store.read(|st, root| {
                    ops::changed_areas(
                        st,
                        root,
                        ops::ChangeQuery {
                            vm,
                            snapshot: &snapshot.1,
                            key,
                            start_bytes: start,
                            change_id: &change_id,
                            window_bytes: self.window_bytes,
                        },
                    )
                })?;
                let mut out = format!(
                    "<returnval><startOffset>{}</startOffset><length>{}</length>",
                    areas.start_offset_bytes, areas.length_bytes
                );
                for a in areas.areas {
                    let _ = write!(
                        out,
                        "<changedArea><start>{}</start><length>{}</length></changedArea>",
                        a.start,
                        a.end - a.start
                    );
                }
                out.push_str("</returnval>");
                Ok(out)
            }
            other => Err(Fault::new(
                "MethodNotFound",
                format!("The lab does not implement {other}"),
            )
            .with("method", other)),
        }
    }

    /// Runs a task's work on the VM `this` and records its TaskInfo.
    /// A guest operation on the VM `vm` of the call, as the user of its
    /// `auth` (see `guestops`).
    fn guest_operation(
        &self,
        store: &Store,
        method: &str,
        call: Node<'_, '_>,
    ) -> Result<String, Fault> {
        let vm = arg_moref(call, "vm")
            .map(|m| m.1)
            .ok_or_else(|| invalid("vm", "a VM is required"))?;
        let auth = child(call, "auth");
        let field =
            |n: Option<Node<'_, '_>>, k: &str| n.and_then(|n| arg(n, k)).unwrap_or_default();
        let (user, password) = (field(auth, "username"), field(auth, "password"));
        store.read(|st, root| {
            let v = st.vm(&vm)?;
            guestops::admit(v, root, &user, &password)?;
            let mut guest = lock(&self.guest);
            match method {
                "StartProgramInGuest" => {
                    let spec = child(call, "spec");
                    let pid = guest.start(
                        v,
                        root,
                        &field(spec, "programPath"),
                        &field(spec, "arguments"),
                    )?;
                    Ok(format!("<returnval>{pid}</returnval>"))
                }
                "ListProcessesInGuest" => {
                    let pids: Vec<u64> = children(call, "pids")
                        .filter_map(|p| text(p).trim().parse().ok())
                        .collect();
                    Ok(guest.list(v, &pids))
                }
                "InitiateFileTransferFromGuest" => {
                    let token = self.next("guest-file");
                    guest.initiate_from(v, &arg(call, "guestFilePath").unwrap_or_default(), token)
                }
                _ => guest
                    .delete(v, &arg(call, "filePath").unwrap_or_default())
                    .map(|()| String::new()),
            }
        })
    }

    fn task(
        &self,
        store: &Store,
        method: &str,
        this: &(String, String),
        work: impl FnOnce(&mut State, &Path) -> Result<Option<(String, String)>, Fault>,
    ) -> Result<String, Fault> {
        let name = store.read(|st, _| Ok(st.vm(&this.1)?.name.clone()))?;
        self.task_on(store, method, this.clone(), name, work)
    }

    fn task_on(
        &self,
        store: &Store,
        method: &str,
        entity: (String, String),
        entity_name: String,
        work: impl FnOnce(&mut State, &Path) -> Result<Option<(String, String)>, Fault>,
    ) -> Result<String, Fault> {
        let outcome = store.update(work);
        let id = self.next("haTask");
        let record = TaskRecord {
            id: id.clone(),
            name: method.trim_end_matches("_Task").to_string(),
            entity,
            entity_name,
            result: outcome.as_ref().ok().cloned().flatten(),
            error: outcome.err(),
            time: Utc::now(),
            running: false,
        };
        lock(&self.tasks).insert(id.clone(), record);
        Ok(moref("returnval", "Task", &id))
    }

    fn retrieve(
        &self,
        store: &Store,
        faults: &Faults,
        call: Node<'_, '_>,
    ) -> Result<String, Fault> {
        let tools_off = faults.tools_off.load(std::sync::atomic::Ordering::SeqCst);
        if !tools_off {
            super::net::ensure_listeners(store);
        }
        let spec = child(call, "specSet").ok_or_else(|| invalid("specSet", "no specSet"))?;
        let mut paths: Vec<String> = Vec::new();
        let mut all = false;
        // The types asked for: a container view answers only its objects
        // of these types (coffer asks one type per query).
        let mut kinds: Vec<String> = Vec::new();
        for p in children(spec, "propSet") {
            all |= arg_bool(p, "all");
            paths.extend(children(p, "pathSet").map(text));
            kinds.extend(arg(p, "type"));
        }
        let vcenter = self.vcenter;
        let host_name = |d: &inventory::Datacenter| {
            if vcenter {
                self.host_name(d.host, faults)
            } else {
                d.host_name.to_string()
            }
        };
        let nas = store.read(|st, _| Ok(st.nas_datastores.clone()))?;
        let mut objects = Vec::new();
        for o in children(spec, "objectSet") {
            let Some(obj) = arg_moref(o, "obj") else {
                continue;
            };
            objects.push(obj);
        }
        let max = child(call, "options")
            .and_then(|o| arg(o, "maxObjects"))
            .and_then(|m| m.parse::<usize>().ok())
            .filter(|&m| m > 0)
            .unwrap_or(usize::MAX);
        let mut out = Vec::new();
        for (kind, value) in objects {
            match kind.as_str() {
                "ContainerView" => {
                    for kind in &kinds {
                        if let Some(xs) =
                            inventory::objects_of(vcenter, kind, &paths, all, &host_name, &nas)
                        {
                            out.extend(xs);
                            continue;
                        }
                        let xs = store.read(|st, root| {
                            Ok(st
                                .vms
                                .iter()
                                .map(|v| vm_object(v, root, &paths, all, tools_off, vcenter))
                                .collect::<Vec<_>>())
                        })?;
                        out.extend(xs);
                    }
                }
                "VirtualMachine" => out.push(store.read(|st, root| {
                    Ok(vm_object(
                        st.vm(&value)?,
                        root,
                        &paths,
                        all,
                        tools_off,
                        vcenter,
                    ))
                })?),
                "Folder" | "Datacenter" | "ComputeResource" | "ResourcePool" | "HostSystem" => {
                    let obj = moref("obj", &kind, &value);
                    let found =
                        inventory::objects_of(vcenter, &kind, &paths, all, &host_name, &nas)
                            .unwrap_or_default()
                            .into_iter()
                            .find(|o| o.contains(&obj))
                            .ok_or_else(|| Fault::not_found(&kind, &value))?;
                    out.push(found);
                }
                "VirtualMachineSnapshot" => {
                    out.push(store.read(|st, _| snapshot_object(st, &value))?)
                }
                "Datastore" => match nas.iter().find(|d| d.name == value) {
                    Some(d) => out.push(datastore_system::nas_datastore_object(d, &paths, all)),
                    None => out.push(super::props::datastore_object(&value, &paths, all)?),
                },
                "HostDatastoreSystem" => {
                    out.push(store.read(|st, _| datastore_system::object(st, &value, &paths, all))?)
                }
                "GuestOperationsManager" => out.push(format!(
                    "<objects>{}{}{}</objects>",
                    moref("obj", &kind, &value),
                    guestops::manager_prop(&paths, all, "processManager", "GuestProcessManager"),
                    guestops::manager_prop(&paths, all, "fileManager", "GuestFileManager"),
                )),
                "HostNetworkSystem" => {
                    out.push(store.read(|st, _| hostnet::object(st, &value, &paths, all))?)
                }
                "HttpNfcLease" => {
                    self.leases.expire(store, faults);
                    out.push(self.leases.object(
                        &value,
                        &paths,
                        all,
                        &|h| self.host_name(h, faults),
                        faults,
                    )?)
                }
                "Task" => {
                    let task = lock(&self.tasks)
                        .get(&value)
                        .cloned()
                        .ok_or_else(|| Fault::not_found("Task", &value))?;
                    out.push(task_object(&task));
                }
                _ => return Err(Fault::not_found(&kind, &value)),
            }
        }
        if out.is_empty() {
            return Ok(String::new());
        }
        Ok(format!("<returnval>{}</returnval>", self.page(out, max)))
    }

    /// One page of objects; the rest kept under a token.
    fn page(&self, mut objects: Vec<String>, max: usize) -> String {
        let limit = max.min(self.page_objects.max(1));
        let mut out = String::new();
        if objects.len() > limit {
            let rest = objects.split_off(limit);
            let token = self.next("token");
            let _ = write!(out, "<token>{token}</token>");
            lock(&self.pages).insert(token, rest);
        }
        for o in objects {
            out.push_str(&o);
        }
        out
    }
}
