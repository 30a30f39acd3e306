//! A logged-in session on one endpoint: version negotiation, Login, one
//! re-login when the server has forgotten the session (NotAuthenticated,
//! e.g. after an idle timeout), and the calls coffer makes, each one request
//! built by `soap` and one answer parsed by it.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::Error;
use super::soap::{self, Objects, Request, SnapshotRequest};
use super::transport::Transport;
use super::types::{
    ChangeId, DiskChangeInfo, GuestAuth, GuestProcess, GuestQuiesceFacts, HostNetwork, MoRef,
    ServiceContent, TaskInfo, TaskState, VmDisk, VmQuestion, VmRecord,
};
use crate::policy::model::TlsTrust;

/// How many objects one page of a property collection asks for.
const PAGE_OBJECTS: u32 = 100;

pub struct Session {
    transport: Transport,
    content: ServiceContent,
    version: String,
    user: String,
    password: String,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never prints the password.
        f.debug_struct("Session")
            .field("transport", &self.transport)
            .field("version", &self.version)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Connects to `url` (`https://host`, with or without `/sdk`), picks the
    /// vim25 version and logs in.
    pub fn connect(
        url: &str,
        trust: &TlsTrust,
        user: &str,
        password: &str,
    ) -> Result<Session, Error> {
        let transport = Transport::new(url, trust)?;
        let offered = match transport.service_versions()? {
            Some(xml) => Some(soap::parse_service_versions(&xml)?),
            None => None,
        };
        if let Some(v) = &offered {
            transport.set_version(v);
        }
        let content =
            soap::parse_service_content(&transport.post(&soap::retrieve_service_content())?)?;
        // Without a versions file, speak what the endpoint says it is.
        let version = offered.unwrap_or_else(|| content.about.api_version.clone());
        transport.set_version(&version);
        let session = Session {
            transport,
            content,
            version,
            user: user.to_string(),
            password: password.to_string(),
        };
        session.login()?;
        Ok(session)
    }

    fn login(&self) -> Result<String, Error> {
        self.transport
            .login(&self.content.session_manager, &self.user, &self.password)
    }

    /// The vim25 version this session speaks.
    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn service_content(&self) -> &ServiceContent {
        &self.content
    }

    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// Sends `request` and parses the answer; when the server says the
    /// session is not authenticated, logs in again and retries once.
    pub fn call<T>(
        &self,
        request: &Request,
        parse: impl Fn(&str) -> Result<T, Error>,
    ) -> Result<T, Error> {
        match parse(&self.transport.post(request)?) {
            Err(Error::Fault(f)) if f.is_not_authenticated() && request.method != "Login" => {
                self.login()?;
                parse(&self.transport.post(request)?)
            }
            other => other,
        }
    }

    /// Ends the session on the server.
    pub fn logout(&self) -> Result<(), Error> {
        let req = soap::logout(&self.content.session_manager);
        soap::parse_empty(&self.transport.post(&req)?, req.method)
    }

    /// Keeps the session alive; answers the server's clock.
    pub fn keep_alive(&self) -> Result<DateTime<Utc>, Error> {
        self.call(&soap::current_time(), soap::parse_current_time)
    }

    /// Every VM under the root folder with the properties inventory needs.
    pub fn list_vms(&self) -> Result<Vec<VmRecord>, Error> {
        let req = soap::create_container_view(
            &self.content.view_manager,
            &self.content.root_folder,
            &["VirtualMachine"],
            true,
        );
        let view = self.call(&req, |x| soap::parse_moref_result(x, req.method))?;
        let result = self.collect_vms(&view);
        // The view lives until the session ends; dropping it early is tidy, not vital.
        let destroy = soap::destroy_view(&view);
        let _ = self.call(&destroy, |x| soap::parse_empty(x, destroy.method));
        let mut vms = result?;
        // Each VM's datacenter, from the parent chains. A server that
        // cannot answer leaves them unknown: the source's `datacenter` is
        // used instead (see `run::connect`).
        if let Ok(paths) = self.datacenter_paths() {
            for vm in &mut vms {
                vm.datacenter = paths.get(&vm.moref).cloned();
            }
        }
        Ok(vms)
    }

    fn collect_vms(&self, view: &MoRef) -> Result<Vec<VmRecord>, Error> {
        let pc = &self.content.property_collector;
        let first = soap::retrieve_properties_ex(
            pc,
            "VirtualMachine",
            soap::VM_PROPERTIES,
            &Objects::View(view.clone()),
            Some(PAGE_OBJECTS),
        );
        let mut page = self.call(&first, |x| soap::parse_vm_page(x, first.method))?;
        let mut vms = std::mem::take(&mut page.items);
        while let Some(token) = page.token.take() {
            let next = soap::continue_retrieve_properties_ex(pc, &token);
            page = self.call(&next, |x| soap::parse_vm_page(x, next.method))?;
            vms.append(&mut page.items);
        }
        Ok(vms)
    }

    /// The current state of a task.
    pub fn task_info(&self, task: &MoRef) -> Result<TaskInfo, Error> {
        self.properties_of(task, &["info"], soap::parse_task_info)
    }

    /// Polls `task` until it ends (from 100 ms up to 2 s apart). A task that
    /// failed gives its fault as the error.
    pub fn wait_for_task(&self, task: &MoRef, timeout: Duration) -> Result<TaskInfo, Error> {
        let start = Instant::now();
        let mut pause = Duration::from_millis(100);
        loop {
            let info = self.task_info(task)?;
            match info.state {
                TaskState::Success => return Ok(info),
                TaskState::Error => {
                    return Err(Error::Fault(info.error.unwrap_or(super::VimFault::Other {
                        name: "TaskFailed".into(),
                        message: format!("task {task} failed without a fault"),
                    })));
                }
                TaskState::Queued | TaskState::Running => {}
            }
            if start.elapsed() >= timeout {
                return Err(Error::TaskTimeout {
                    task: task.clone(),
                    waited: start.elapsed(),
                });
            }
            std::thread::sleep(pause.min(timeout.saturating_sub(start.elapsed())));
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }

    /// Starts a `*_Task` method and waits for it.
    pub fn run_task(&self, request: &Request, timeout: Duration) -> Result<TaskInfo, Error> {
        let task = self.call(request, |x| soap::parse_moref_result(x, request.method))?;
        self.wait_for_task(&task, timeout)
    }

    pub fn set_change_tracking(
        &self,
        vm: &MoRef,
        enabled: bool,
        timeout: Duration,
    ) -> Result<(), Error> {
        self.run_task(&soap::reconfig_change_tracking(vm, enabled), timeout)
            .map(|_| ())
    }

    /// Takes a snapshot and answers its reference.
    pub fn create_snapshot(
        &self,
        vm: &MoRef,
        snapshot: &SnapshotRequest<'_>,
        timeout: Duration,
    ) -> Result<MoRef, Error> {
        let req = soap::create_snapshot(vm, snapshot);
        let info = self.run_task(&req, timeout)?;
        info.result.ok_or_else(|| Error::Protocol {
            method: req.method.into(),
            detail: "the task succeeded without naming the snapshot".into(),
        })
    }

    pub fn remove_snapshot(&self, snapshot: &MoRef, timeout: Duration) -> Result<(), Error> {
        self.run_task(&soap::remove_snapshot(snapshot), timeout)
            .map(|_| ())
    }

    /// `paths` of the one object `obj` (of the type its moref names),
    /// parsed by `parse`.
    pub(super) fn properties_of<T>(
        &self,
        obj: &MoRef,
        paths: &[&str],
        parse: impl Fn(&str) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let req = soap::retrieve_properties_ex(
            &self.content.property_collector,
            &obj.kind,
            paths,
            &Objects::One(obj.clone()),
            None,
        );
        self.call(&req, parse)
    }

    /// The guest process and file managers (`guestOperationsManager`'s
    /// `processManager` and `fileManager`).
    pub fn guest_managers(&self) -> Result<(MoRef, MoRef), Error> {
        let missing = |what: &str| Error::Protocol {
            method: "RetrievePropertiesEx".into(),
            detail: format!("the server offers no {what}: guest operations are not available"),
        };
        let gom = self
            .content
            .guest_operations_manager
            .clone()
            .ok_or_else(|| missing("guestOperationsManager"))?;
        let (pm, fm) = self.properties_of(
            &gom,
            &["processManager", "fileManager"],
            soap::parse_guest_managers,
        )?;
        Ok((
            pm.ok_or_else(|| missing("processManager"))?,
            fm.ok_or_else(|| missing("fileManager"))?,
        ))
    }

    /// Starts `program arguments` in the guest of `vm`; its pid.
    pub fn start_program_in_guest(
        &self,
        process_manager: &MoRef,
        vm: &MoRef,
        auth: &GuestAuth,
        program: &str,
        arguments: &str,
    ) -> Result<i64, Error> {
        let req = soap::start_program_in_guest(process_manager, vm, auth, program, arguments);
        self.call(&req, soap::parse_pid)
    }

    /// The guest process `pid` of `vm`, if the guest still lists it.
    pub fn guest_process(
        &self,
        process_manager: &MoRef,
        vm: &MoRef,
        auth: &GuestAuth,
        pid: i64,
    ) -> Result<Option<GuestProcess>, Error> {
        let req = soap::list_processes_in_guest(process_manager, vm, auth, pid);
        Ok(self
            .call(&req, soap::parse_guest_processes)?
            .into_iter()
            .find(|p| p.pid == pid))
    }

    /// The content of `path` in the guest of `vm`, through a file transfer
    /// (the URL's host `*` stands for the host coffer talks to), then the
    /// file deleted in the guest.
    pub fn take_guest_file(
        &self,
        file_manager: &MoRef,
        vm: &MoRef,
        auth: &GuestAuth,
        path: &str,
    ) -> Result<Vec<u8>, Error> {
        let req = soap::initiate_file_transfer_from_guest(file_manager, vm, auth, path);
        let url = self.call(&req, soap::parse_file_transfer_url)?;
        let path_and_query = url
            .split_once("://")
            .and_then(|(_, rest)| rest.find('/').map(|i| rest[i..].to_string()))
            .ok_or_else(|| Error::Protocol {
                method: req.method.into(),
                detail: format!("a transfer URL without a path: {url}"),
            })?;
        let resp = self.transport.datastore_get(&path_and_query, None)?;
        if resp.status != 200 {
            return Err(Error::Protocol {
                method: req.method.into(),
                detail: format!("the guest file transfer answered HTTP {}", resp.status),
            });
        }
        let delete = soap::delete_file_in_guest(file_manager, vm, auth, path);
        self.call(&delete, |x| soap::parse_empty(x, delete.method))?;
        Ok(resp.body)
    }

    /// The network system of `host` (`configManager.networkSystem`).
    pub fn network_system(&self, host: &MoRef) -> Result<MoRef, Error> {
        self.properties_of(
            host,
            &["configManager.networkSystem"],
            soap::parse_network_system,
        )?
        .ok_or_else(|| Error::Protocol {
            method: "RetrievePropertiesEx".into(),
            detail: format!("host {host} names no network system"),
        })
    }

    /// A host's datastore system (`configManager.datastoreSystem`).
    pub fn datastore_system(&self, host: &MoRef) -> Result<MoRef, Error> {
        self.properties_of(host, &["configManager.datastoreSystem"], |x| {
            soap::parse_moref_property(x, "configManager.datastoreSystem")
        })?
        .ok_or_else(|| Error::Protocol {
            method: "RetrievePropertiesEx".into(),
            detail: format!("host {host} names no datastore system"),
        })
    }

    /// Mounts an NFS v3 export on `host` as datastore `name`.
    pub fn create_nas_datastore(
        &self,
        host: &MoRef,
        remote_host: &str,
        remote_path: &str,
        name: &str,
    ) -> Result<MoRef, Error> {
        let system = self.datastore_system(host)?;
        let req = soap::create_nas_datastore(&system, remote_host, remote_path, name);
        self.call(&req, |x| soap::parse_moref_result(x, req.method))
    }

    /// Unmounts datastore `datastore` from `host`.
    pub fn remove_datastore(&self, host: &MoRef, datastore: &MoRef) -> Result<(), Error> {
        let system = self.datastore_system(host)?;
        self.call_empty(&soap::remove_datastore(&system, datastore))
    }

    /// The switches and port groups of a host (`networkInfo` of its network
    /// system).
    pub fn host_network(&self, network_system: &MoRef) -> Result<HostNetwork, Error> {
        self.properties_of(network_system, &["networkInfo"], soap::parse_host_network)
    }

    /// Sends a call that answers nothing (adding or removing a switch or a
    /// port group).
    pub fn call_empty(&self, req: &Request) -> Result<(), Error> {
        self.call(req, |x| soap::parse_empty(x, req.method))
    }

    /// The question `vm` is asking, if any (`runtime.question`).
    pub fn vm_question(&self, vm: &MoRef) -> Result<Option<VmQuestion>, Error> {
        self.properties_of(vm, &["runtime.question"], soap::parse_vm_question)
    }

    /// Powers `vm` on, answering the "moved or copied" question a host
    /// asks when the VM's files are not where its .vmx says they were:
    /// "I moved it" when `moved` (the VM keeps its BIOS UUID and MAC
    /// addresses), "I copied it" otherwise (the host makes new ones). A
    /// power-on with a question pending waits forever, so any other
    /// question fails the power-on with its text.
    pub fn power_on_answering(
        &self,
        vm: &MoRef,
        moved: bool,
        timeout: Duration,
    ) -> Result<TaskInfo, Error> {
        let req = soap::power_on_vm(vm);
        let task = self.call(&req, |x| soap::parse_moref_result(x, req.method))?;
        let start = Instant::now();
        let mut answered = false;
        loop {
            match self.wait_for_task(&task, Duration::from_millis(500)) {
                Err(Error::TaskTimeout { .. }) => {}
                done => return done,
            }
            if let Some(q) = self.vm_question(vm)? {
                match q.uuid_choice(moved).filter(|_| q.is_moved_or_copied()) {
                    Some(choice) if !answered => {
                        let answer = soap::answer_vm(vm, &q.id, choice);
                        self.call(&answer, |x| soap::parse_empty(x, answer.method))?;
                        answered = true;
                    }
                    Some(_) => {}
                    None => {
                        return Err(Error::Protocol {
                            method: req.method.into(),
                            detail: format!(
                                "the VM asks a question coffer cannot answer (question {}: {}); \
                                 answer it in the vSphere Client",
                                q.id,
                                q.text.replace('\n', " ")
                            ),
                        });
                    }
                }
            }
            if start.elapsed() >= timeout {
                return Err(Error::TaskTimeout {
                    task,
                    waited: start.elapsed(),
                });
            }
        }
    }

    /// The guest, `disk.EnableUUID` and the VSS manifests among the files
    /// of `vm`: what tells a quiesced snapshot's consistency.
    pub fn guest_quiesce_facts(&self, vm: &MoRef) -> Result<GuestQuiesceFacts, Error> {
        self.properties_of(
            vm,
            soap::GUEST_QUIESCE_PROPERTIES,
            soap::parse_guest_quiesce_facts,
        )
    }

    /// The disks of a snapshot as they were when it was taken.
    pub fn snapshot_disks(&self, snapshot: &MoRef) -> Result<Vec<VmDisk>, Error> {
        self.properties_of(
            snapshot,
            &["config.hardware.device"],
            soap::parse_snapshot_disks,
        )
    }

    /// Every changed area of one disk of `snapshot` since `change_id`, over
    /// as many calls as the host needs to cover `capacity_bytes`.
    pub fn changed_disk_areas(
        &self,
        vm: &MoRef,
        snapshot: &MoRef,
        device_key: i32,
        capacity_bytes: u64,
        change_id: &ChangeId,
    ) -> Result<Vec<DiskChangeInfo>, Error> {
        let mut out = Vec::new();
        let mut offset = 0;
        while offset < capacity_bytes {
            let req = soap::query_changed_disk_areas(vm, snapshot, device_key, offset, change_id);
            let info = self.call(&req, soap::parse_changed_disk_areas)?;
            if info.end_bytes() <= offset {
                return Err(Error::Protocol {
                    method: req.method.into(),
                    detail: format!("no progress at offset {offset}"),
                });
            }
            offset = info.end_bytes();
            out.push(info);
        }
        Ok(out)
    }
}
