//! Builders and parsers of `soap` and `props`, against answers recorded from
//! vcsim (`*_vcsim*.xml`) and hand-written ones that stress namespaces
//! (tests/fixtures/vsphere/).

use roxmltree::Document;

use super::Error;
use super::fault::{QuiesceFault, VimFault};
use super::soap::{self, Objects, SnapshotRequest};
use super::types::{ChangeId, DiskBacking, MoRef, PowerState, TaskState};

macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/vsphere/",
            $name
        ))
    };
}

/// The method element inside the Body of a built envelope, checked to be
/// well-formed and in the vim25 namespace.
fn method_of(envelope: &str) -> (String, Vec<(String, String)>) {
    let doc = Document::parse(envelope).expect("well-formed envelope");
    let body = doc
        .root_element()
        .children()
        .find(|n| n.has_tag_name((soap::SOAP_ENV_NS, "Body")))
        .expect("Body");
    let method = body.children().find(|n| n.is_element()).expect("method");
    assert_eq!(method.tag_name().namespace(), Some(soap::VIM_NS));
    let args = method
        .children()
        .filter(|n| n.is_element())
        .map(|n| {
            let text = match n.attribute("type") {
                Some(t) => format!("{t}:{}", n.text().unwrap_or("")),
                None if n.children().any(|c| c.is_element()) => "…".to_string(),
                None => n.text().unwrap_or("").to_string(),
            };
            (n.tag_name().name().to_string(), text)
        })
        .collect();
    (method.tag_name().name().to_string(), args)
}

fn args(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

fn vm() -> MoRef {
    MoRef::new("VirtualMachine", "vm-42")
}

fn fault_of(err: Error) -> VimFault {
    match err {
        Error::Fault(f) => f,
        other => panic!("expected a fault, got {other:?}"),
    }
}

fn soap_fault(detail: &str, message: &str) -> String {
    format!(
        "<?xml version=\"1.0\"?><soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\" \
         xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\"><soapenv:Body><soapenv:Fault>\
         <faultcode>ServerFaultCode</faultcode><faultstring>{message}</faultstring>\
         <detail>{detail}</detail></soapenv:Fault></soapenv:Body></soapenv:Envelope>"
    )
}

// ---- builders ----------------------------------------------------------------

#[test]
fn text_is_escaped_and_survives_a_round_trip() {
    let password = "p<a>&\"s's\r\n\u{1}";
    let req = soap::login(
        &MoRef::new("SessionManager", "ha-sessionmgr"),
        "root",
        password,
    );
    assert_eq!(req.method, "Login");
    let doc = Document::parse(&req.envelope).unwrap();
    let pw = doc
        .descendants()
        .find(|n| n.has_tag_name((soap::VIM_NS, "password")))
        .unwrap();
    assert_eq!(pw.text(), Some("p<a>&\"s's\r\n\u{FFFD}"));
    assert_eq!(soap::escape("a&b<c>\"'"), "a&amp;b&lt;c&gt;&quot;&apos;");
}

#[test]
fn session_calls_name_their_arguments_in_wsdl_order() {
    let sm = MoRef::new("SessionManager", "SessionManager");
    assert_eq!(
        method_of(&soap::retrieve_service_content().envelope),
        (
            "RetrieveServiceContent".into(),
            args(&[("_this", "ServiceInstance:ServiceInstance")])
        )
    );
    assert_eq!(
        method_of(&soap::login(&sm, "u", "p").envelope),
        (
            "Login".into(),
            args(&[
                ("_this", "SessionManager:SessionManager"),
                ("userName", "u"),
                ("password", "p")
            ])
        )
    );
    assert_eq!(method_of(&soap::logout(&sm).envelope).0, "Logout");
    assert_eq!(
        method_of(&soap::current_time().envelope),
        (
            "CurrentTime".into(),
            args(&[("_this", "ServiceInstance:ServiceInstance")])
        )
    );
    assert_eq!(
        method_of(&soap::session_is_active(&sm, "52ab", "u").envelope).1,
        args(&[
            ("_this", "SessionManager:SessionManager"),
            ("sessionID", "52ab"),
            ("userName", "u")
        ])
    );
}

#[test]
fn vm_operations_build_the_documented_arguments() {
    let snap = MoRef::new("VirtualMachineSnapshot", "snapshot-7");
    assert_eq!(
        method_of(&soap::reconfig_change_tracking(&vm(), true).envelope),
        (
            "ReconfigVM_Task".into(),
            args(&[("_this", "VirtualMachine:vm-42"), ("spec", "…")])
        )
    );
    assert!(
        soap::reconfig_change_tracking(&vm(), false)
            .envelope
            .contains("<spec><changeTrackingEnabled>false</changeTrackingEnabled></spec>")
    );
    let req = SnapshotRequest {
        name: "coffer-run-7",
        description: "coffer backup",
        memory: false,
        quiesce: true,
    };
    assert_eq!(
        method_of(&soap::create_snapshot(&vm(), &req).envelope),
        (
            "CreateSnapshot_Task".into(),
            args(&[
                ("_this", "VirtualMachine:vm-42"),
                ("name", "coffer-run-7"),
                ("description", "coffer backup"),
                ("memory", "false"),
                ("quiesce", "true"),
            ])
        )
    );
    assert_eq!(
        method_of(&soap::remove_snapshot(&snap).envelope),
        (
            "RemoveSnapshot_Task".into(),
            args(&[
                ("_this", "VirtualMachineSnapshot:snapshot-7"),
                ("removeChildren", "false"),
                ("consolidate", "true"),
            ])
        )
    );
    assert_eq!(
        method_of(
            &soap::query_changed_disk_areas(
                &vm(),
                &snap,
                2000,
                1 << 40,
                &ChangeId("52 aa/3".into())
            )
            .envelope
        ),
        (
            "QueryChangedDiskAreas".into(),
            args(&[
                ("_this", "VirtualMachine:vm-42"),
                ("snapshot", "VirtualMachineSnapshot:snapshot-7"),
                ("deviceKey", "2000"),
                ("startOffset", "1099511627776"),
                ("changeId", "52 aa/3"),
            ])
        )
    );
    for (req, name) in [
        (soap::consolidate_vm_disks(&vm()), "ConsolidateVMDisks_Task"),
        (soap::power_on_vm(&vm()), "PowerOnVM_Task"),
        (soap::power_off_vm(&vm()), "PowerOffVM_Task"),
        (soap::unregister_vm(&vm()), "UnregisterVM"),
        (soap::destroy(&vm()), "Destroy_Task"),
    ] {
        assert_eq!(req.method, name);
        assert_eq!(
            method_of(&req.envelope),
            (name.to_string(), args(&[("_this", "VirtualMachine:vm-42")]))
        );
    }
}

#[test]
fn register_vm_puts_optional_arguments_in_place() {
    let folder = MoRef::new("Folder", "group-v3");
    let pool = MoRef::new("ResourcePool", "resgroup-8");
    assert_eq!(
        method_of(
            &soap::register_vm(
                &folder,
                "[ds1] restored/web.vmx",
                Some("web-restored"),
                Some(&pool),
                None
            )
            .envelope
        )
        .1,
        args(&[
            ("_this", "Folder:group-v3"),
            ("path", "[ds1] restored/web.vmx"),
            ("name", "web-restored"),
            ("asTemplate", "false"),
            ("pool", "ResourcePool:resgroup-8"),
        ])
    );
    assert_eq!(
        method_of(&soap::register_vm(&folder, "[ds1] a/a.vmx", None, None, None).envelope).1,
        args(&[
            ("_this", "Folder:group-v3"),
            ("path", "[ds1] a/a.vmx"),
            ("asTemplate", "false")
        ])
    );
}

#[test]
fn property_queries_traverse_a_container_view() {
    let root = MoRef::new("Folder", "group-d1");
    let view_req = soap::create_container_view(
        &MoRef::new("ViewManager", "ViewManager"),
        &root,
        &["VirtualMachine"],
        true,
    );
    assert_eq!(
        method_of(&view_req.envelope).1,
        args(&[
            ("_this", "ViewManager:ViewManager"),
            ("container", "Folder:group-d1"),
            ("type", "VirtualMachine"),
            ("recursive", "true"),
        ])
    );
    let pc = MoRef::new("PropertyCollector", "propertyCollector");
    let view = MoRef::new("ContainerView", "session[52]view-1");
    let req = soap::retrieve_properties_ex(
        &pc,
        "VirtualMachine",
        &["name", "snapshot"],
        &Objects::View(view),
        Some(50),
    );
    let doc = Document::parse(&req.envelope).unwrap();
    let spec = doc
        .descendants()
        .find(|n| n.has_tag_name((soap::VIM_NS, "specSet")))
        .unwrap();
    let names: Vec<_> = spec
        .children()
        .filter(|n| n.is_element())
        .map(|n| n.tag_name().name())
        .collect();
    assert_eq!(
        names,
        ["propSet", "objectSet"],
        "propSet comes before objectSet"
    );
    let select = doc
        .descendants()
        .find(|n| n.has_tag_name((soap::VIM_NS, "selectSet")))
        .unwrap();
    assert_eq!(
        select.attribute((soap::XSI_NS, "type")),
        Some("TraversalSpec")
    );
    let order: Vec<_> = select
        .children()
        .filter(|n| n.is_element())
        .map(|n| n.tag_name().name())
        .collect();
    assert_eq!(order, ["name", "type", "path", "skip"]);
    assert!(
        req.envelope
            .contains("<obj type=\"ContainerView\">session[52]view-1</obj><skip>true</skip>")
    );
    assert!(
        req.envelope
            .contains("<options><maxObjects>50</maxObjects></options>")
    );
    let one = soap::retrieve_properties_ex(
        &pc,
        "Task",
        &["info"],
        &Objects::One(MoRef::new("Task", "task-9")),
        None,
    );
    assert!(one.envelope.contains(
        "<objectSet><obj type=\"Task\">task-9</obj></objectSet></specSet><options></options>"
    ));
    assert_eq!(
        method_of(&soap::continue_retrieve_properties_ex(&pc, "tok&1").envelope).1,
        args(&[
            ("_this", "PropertyCollector:propertyCollector"),
            ("token", "tok&1")
        ])
    );
}

// ---- parsers -----------------------------------------------------------------

#[test]
fn service_versions_pick_the_newest_vim25() {
    assert_eq!(
        soap::parse_service_versions(fixture!("vim_service_versions_vcsim.xml")).unwrap(),
        "6.5"
    );
    let real = "<?xml version=\"1.0\"?><namespaces version=\"1.0\"><namespace><name>urn:vim2</name>\
                <version>2.5</version></namespace><namespace><name>urn:vim25</name><version>8.0.3.0</version>\
                <priorVersions><version>8.0.2.0</version></priorVersions></namespace></namespaces>";
    assert_eq!(soap::parse_service_versions(real).unwrap(), "8.0.3.0");
    assert_eq!(soap::soap_action("8.0.3.0"), "urn:vim25/8.0.3.0");
    assert!(soap::parse_service_versions("<namespaces/>").is_err());
}

#[test]
fn service_content_of_an_esx_host() {
    let sc = soap::parse_service_content(fixture!("service_content_vcsim_esx.xml")).unwrap();
    assert_eq!(sc.root_folder, MoRef::new("Folder", "ha-folder-root"));
    assert_eq!(
        sc.property_collector,
        MoRef::new("PropertyCollector", "ha-property-collector")
    );
    assert_eq!(sc.view_manager, MoRef::new("ViewManager", "ViewManager"));
    assert_eq!(
        sc.session_manager,
        MoRef::new("SessionManager", "ha-sessionmgr")
    );
    assert_eq!(sc.about.api_version, "6.5");
    assert_eq!(sc.about.product_line_id, "embeddedEsx");
    assert!(!sc.about.is_vcenter());
    assert_eq!(sc.about.instance_uuid, None);
}

#[test]
fn login_current_time_and_session_checks() {
    assert!(
        !soap::parse_login(fixture!("login_vcsim.xml"))
            .unwrap()
            .is_empty()
    );
    let t = "<e:Envelope xmlns:e=\"http://schemas.xmlsoap.org/soap/envelope/\"><e:Body>\
             <CurrentTimeResponse xmlns=\"urn:vim25\"><returnval>2026-11-25T15:22:51.4Z</returnval>\
             </CurrentTimeResponse></e:Body></e:Envelope>";
    assert_eq!(
        soap::parse_current_time(t).unwrap().to_rfc3339(),
        "2026-11-25T15:22:51.400+00:00"
    );
    let active = t
        .replace("CurrentTime", "SessionIsActive")
        .replace("2026-11-25T15:22:51.4Z", "true");
    assert!(soap::parse_session_is_active(&active).unwrap());
    let empty = "<e:Envelope xmlns:e=\"http://schemas.xmlsoap.org/soap/envelope/\"><e:Body>\
                 <LogoutResponse xmlns=\"urn:vim25\"/></e:Body></e:Envelope>";
    soap::parse_empty(empty, "Logout").unwrap();
    // The right name in the wrong namespace is not the answer.
    let wrong_ns = empty.replace("urn:vim25", "urn:vim2");
    assert!(matches!(
        soap::parse_empty(&wrong_ns, "Logout"),
        Err(Error::Protocol { .. })
    ));
    assert!(matches!(
        soap::parse_empty("<html>", "Logout"),
        Err(Error::Xml { .. })
    ));
}

#[test]
fn task_references_and_task_info() {
    let started = "<e:Envelope xmlns:e=\"http://schemas.xmlsoap.org/soap/envelope/\"><e:Body>\
                   <CreateSnapshot_TaskResponse xmlns=\"urn:vim25\"><returnval type=\"Task\">task-15</returnval>\
                   </CreateSnapshot_TaskResponse></e:Body></e:Envelope>";
    assert_eq!(
        soap::parse_moref_result(started, "CreateSnapshot_Task").unwrap(),
        MoRef::new("Task", "task-15")
    );
    let info = soap::parse_task_info(fixture!("task_info_success_vcsim.xml")).unwrap();
    assert_eq!(info.task, MoRef::new("Task", "task-15"));
    assert_eq!(info.state, TaskState::Success);
    // `result` has both xsi:type and a plain `type`: the plain one names the object.
    assert_eq!(
        info.result,
        Some(MoRef::new("VirtualMachineSnapshot", "snapshot-16"))
    );
    assert_eq!(info.error, None);
}

#[test]
fn a_failed_task_carries_its_typed_fault() {
    let xml = "<soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\" \
               xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\"><soapenv:Body>\
               <RetrievePropertiesExResponse xmlns=\"urn:vim25\"><returnval><objects><obj type=\"Task\">task-3</obj>\
               <propSet><name>info</name><val xsi:type=\"TaskInfo\"><key>task-3</key><task type=\"Task\">task-3</task>\
               <state>error</state><cancelled>false</cancelled><cancelable>false</cancelable>\
               <error><fault xsi:type=\"FilesystemQuiesceFault\"><faultMessage><key>msg.snapshot.quiesce.vmerr</key>\
               </faultMessage></fault><localizedMessage>An error occurred while quiescing the virtual machine.</localizedMessage></error>\
               <progress>37</progress></val></propSet></objects></returnval></RetrievePropertiesExResponse></soapenv:Body></soapenv:Envelope>";
    let info = soap::parse_task_info(xml).unwrap();
    assert_eq!(info.state, TaskState::Error);
    assert_eq!(info.progress_percent, Some(37));
    assert_eq!(
        info.error,
        Some(VimFault::Quiesce {
            kind: QuiesceFault::Filesystem,
            message: "An error occurred while quiescing the virtual machine.".into()
        })
    );
    for (state, expected) in [
        ("queued", TaskState::Queued),
        ("running", TaskState::Running),
    ] {
        let x = xml.replace("<state>error</state>", &format!("<state>{state}</state>"));
        assert_eq!(soap::parse_task_info(&x).unwrap().state, expected);
    }
}

#[test]
fn vms_and_disks_from_vcsim() {
    let page = soap::parse_vm_page(
        fixture!("retrieve_vms_vcsim_vpx.xml"),
        "RetrievePropertiesEx",
    )
    .unwrap();
    assert_eq!(page.token, None);
    assert_eq!(page.items.len(), 4);
    let vm = &page.items[0];
    assert_eq!(vm.moref, MoRef::new("VirtualMachine", "vm-57"));
    assert_eq!(vm.name, "DC0_H0_VM0");
    assert_eq!(vm.power_state, Some(PowerState::PoweredOn));
    assert_eq!(
        vm.instance_uuid.as_deref(),
        Some("b4689bed-97f0-5bcd-8a4c-07477cc8f06f")
    );
    assert!(!vm.change_tracking_enabled && !vm.consolidation_needed);
    assert_eq!(vm.disks.len(), 1, "only VirtualDisks among the devices");
    let d = &vm.disks[0];
    assert_eq!((d.key, d.capacity_bytes), (255511522, 4 << 20));
    assert_eq!(d.file_name, "[LocalDS_0] DC0_H0_VM0/disk1.vmdk");
    assert_eq!(d.backing, DiskBacking::Vmdk);
    assert_eq!(d.change_id, None);
    assert!(vm.snapshots.is_empty());
}

#[test]
fn snapshot_tree_from_vcsim() {
    let page =
        soap::parse_vm_page(fixture!("vm_snapshot_vcsim.xml"), "RetrievePropertiesEx").unwrap();
    let vm = &page.items[0];
    assert!(vm.change_tracking_enabled);
    let all = vm.all_snapshots();
    assert_eq!(all.len(), 1);
    assert_eq!(
        all[0].snapshot,
        MoRef::new("VirtualMachineSnapshot", "snapshot-16")
    );
    assert_eq!(all[0].name, "coffer-1");
}

#[test]
fn a_page_with_odd_prefixes_and_a_token() {
    let page = soap::parse_vm_page(
        fixture!("retrieve_vms_page1_odd_prefixes.xml"),
        "RetrievePropertiesEx",
    )
    .unwrap();
    assert_eq!(page.token.as_deref(), Some("page-2-token"));
    assert_eq!(page.items.len(), 2);
    let db = &page.items[0];
    assert_eq!(db.name, "db01");
    assert_eq!(
        db.tools_running_status.as_deref(),
        Some("guestToolsRunning")
    );
    assert!(db.change_tracking_enabled && db.consolidation_needed);
    // The device typed through a prefix bound to something else than
    // XMLSchema-instance is not a disk.
    let keys: Vec<i32> = db.disks.iter().map(|d| d.key).collect();
    assert_eq!(keys, [2000, 2001, 2002]);
    let [flat, independent, rdm] = &db.disks[..] else {
        unreachable!()
    };
    assert_eq!(flat.capacity_bytes, 40 << 30);
    assert_eq!(
        flat.datastore,
        Some(MoRef::new("Datastore", "datastore-11"))
    );
    assert_eq!(
        flat.change_id,
        Some(ChangeId(
            "52 3c 1a 0e 84 7f 5b 0d-85 f4 22 1b 30 00 38 e2/42".into()
        ))
    );
    assert!(!flat.is_independent() && !flat.is_rdm());
    assert_eq!(independent.capacity_bytes, 1 << 30, "from capacityInKB");
    assert!(independent.is_independent());
    assert!(rdm.is_rdm() && rdm.is_independent());
    assert_eq!(
        rdm.backing,
        DiskBacking::RawDeviceMapping {
            compatibility_mode: Some("physicalMode".into())
        }
    );
    let tree = db.all_snapshots();
    let names: Vec<_> = tree.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["before upgrade", "coffer-run-0042"]);
    assert_eq!(
        tree[0].create_time.to_rfc3339(),
        "2026-01-02T02:04:05.678+00:00"
    );
    assert!(tree[1].quiesced);
    // A property the user may not read is absent, not an error.
    assert_eq!(page.items[1].name, "orphan");
    assert!(page.items[1].disks.is_empty());

    let last = soap::parse_vm_page(
        fixture!("retrieve_vms_page2_default_ns.xml"),
        "ContinueRetrievePropertiesEx",
    )
    .unwrap();
    assert_eq!(last.token, None);
    assert_eq!(last.items[0].name, "web & db <prod> #2");
    assert_eq!(last.items[0].power_state, Some(PowerState::Suspended));
    // A page parsed as the wrong method is refused.
    assert!(
        soap::parse_vm_page(
            fixture!("retrieve_vms_page2_default_ns.xml"),
            "RetrievePropertiesEx"
        )
        .is_err()
    );
}

#[test]
fn an_empty_result_has_no_returnval() {
    let xml = "<e:Envelope xmlns:e=\"http://schemas.xmlsoap.org/soap/envelope/\"><e:Body>\
               <RetrievePropertiesExResponse xmlns=\"urn:vim25\"/></e:Body></e:Envelope>";
    let page = soap::parse_vm_page(xml, "RetrievePropertiesEx").unwrap();
    assert!(page.items.is_empty() && page.token.is_none());
}

#[test]
fn snapshot_disks_carry_change_ids() {
    let disks = soap::parse_snapshot_disks(fixture!("snapshot_disks_vcsim.xml")).unwrap();
    assert_eq!(disks.len(), 1);
    assert_eq!(disks[0].key, 255511522);
    assert_eq!(
        disks[0].change_id,
        Some(ChangeId(
            "52 3b 24 de 84 7f 5b 0d-85 f4 22 1b 30 00 38 e2/1".into()
        ))
    );
}

#[test]
fn changed_areas_and_their_faults() {
    let info = soap::parse_changed_disk_areas(fixture!("changed_areas_all_vcsim.xml")).unwrap();
    assert_eq!((info.start_offset_bytes, info.length_bytes), (0, 4 << 20));
    assert_eq!(
        info.changed,
        vec![0..65536, 1179648..1179648 + 65536, 2097152..2097152 + 65536]
    );
    assert_eq!(info.end_bytes(), 4 << 20);

    let f = fault_of(
        soap::parse_changed_disk_areas(fixture!("changed_areas_bad_change_id_vcsim.xml"))
            .unwrap_err(),
    );
    assert!(f.cbt_untrusted());
    assert!(matches!(&f, VimFault::InvalidArgument { property: Some(p), .. } if p == "changeId"));
    assert!(f.to_string().contains("CBT untrusted"), "{f}");

    let file = soap_fault(
        "<FileNotFoundFault xmlns=\"urn:vim25\" xsi:type=\"FileNotFound\"><file>[ds] vm/vm-ctk.vmdk</file></FileNotFoundFault>",
        "Error caused by file [ds] vm/vm-ctk.vmdk",
    );
    let f = fault_of(soap::parse_changed_disk_areas(&file).unwrap_err());
    assert!(f.cbt_untrusted());
    assert!(matches!(&f, VimFault::File { file: Some(p), .. } if p == "[ds] vm/vm-ctk.vmdk"));
    // The same fault from another call says nothing about CBT.
    assert!(!fault_of(soap::parse_empty(&file, "UnregisterVM").unwrap_err()).cbt_untrusted());
}

// ---- faults ------------------------------------------------------------------

#[test]
fn faults_are_typed_by_their_xsi_type() {
    let f = fault_of(
        soap::parse_login(&soap_fault(
            "<InvalidLoginFault xmlns=\"urn:vim25\" xsi:type=\"InvalidLogin\"></InvalidLoginFault>",
            "Login failure",
        ))
        .unwrap_err(),
    );
    assert_eq!(
        f,
        VimFault::InvalidLogin {
            message: "Login failure".into()
        }
    );

    let f =
        fault_of(soap::parse_current_time(fixture!("not_authenticated_vcsim.xml")).unwrap_err());
    assert!(f.is_not_authenticated());

    let f = fault_of(soap::parse_empty(
        &soap_fault(
            "<NoPermissionFault xmlns=\"urn:vim25\" xsi:type=\"NoPermission\"><object type=\"VirtualMachine\">vm-9</object>\
             <privilegeId>VirtualMachine.State.CreateSnapshot</privilegeId></NoPermissionFault>",
            "Permission to perform this operation was denied.",
        ),
        "Logout",
    ).unwrap_err());
    assert_eq!(
        f,
        VimFault::NoPermission {
            object: Some(MoRef::new("VirtualMachine", "vm-9")),
            privilege: Some("VirtualMachine.State.CreateSnapshot".into()),
            message: "Permission to perform this operation was denied.".into(),
        }
    );
    assert!(
        f.to_string()
            .contains("VirtualMachine.State.CreateSnapshot")
    );

    let f = fault_of(
        soap::parse_empty(
            &soap_fault(
                "<RestrictedVersionFault xmlns=\"urn:vim25\" xsi:type=\"RestrictedVersion\"/>",
                "Current license or ESXi version prohibits execution of the requested operation.",
            ),
            "X",
        )
        .unwrap_err(),
    );
    assert_eq!(f.to_string(), "free ESXi license: the API is read-only");

    let f = fault_of(soap::parse_empty(&soap_fault("<TaskInProgressFault xmlns=\"urn:vim25\" xsi:type=\"TaskInProgress\"><task type=\"Task\">task-2</task></TaskInProgressFault>", "busy"), "X").unwrap_err());
    assert_eq!(
        f,
        VimFault::TaskInProgress {
            task: Some(MoRef::new("Task", "task-2")),
            message: "busy".into()
        }
    );

    let f = fault_of(soap::parse_empty(&soap_fault("<ManagedObjectNotFoundFault xmlns=\"urn:vim25\" xsi:type=\"ManagedObjectNotFound\"><obj type=\"VirtualMachine\">vm-1</obj></ManagedObjectNotFoundFault>", "gone"), "X").unwrap_err());
    assert_eq!(
        f,
        VimFault::ManagedObjectNotFound {
            object: Some(MoRef::new("VirtualMachine", "vm-1")),
            message: "gone".into()
        }
    );
}

#[test]
fn snapshot_faults_tell_quiesce_apart() {
    let parse = |ty: &str| {
        fault_of(
            soap::parse_empty(
                &soap_fault(&format!("<F xmlns=\"urn:vim25\" xsi:type=\"{ty}\"/>"), "m"),
                "X",
            )
            .unwrap_err(),
        )
    };
    assert_eq!(
        parse("ApplicationQuiesceFault"),
        VimFault::Quiesce {
            kind: QuiesceFault::Application,
            message: "m".into()
        }
    );
    assert_eq!(
        parse("FilesystemQuiesceFault"),
        VimFault::Quiesce {
            kind: QuiesceFault::Filesystem,
            message: "m".into()
        }
    );
    assert_eq!(
        parse("ToolsUnavailable"),
        VimFault::Quiesce {
            kind: QuiesceFault::ToolsUnavailable,
            message: "m".into()
        }
    );
    assert_eq!(
        parse("SnapshotLocked"),
        VimFault::Snapshot {
            name: "SnapshotLocked".into(),
            message: "m".into()
        }
    );
    assert_eq!(
        parse("TooManySnapshotLevels"),
        VimFault::Snapshot {
            name: "TooManySnapshotLevels".into(),
            message: "m".into()
        }
    );
    assert_eq!(
        parse("HostCommunication"),
        VimFault::Other {
            name: "HostCommunication".into(),
            message: "m".into()
        }
    );
}

#[test]
fn fault_types_resolve_by_namespace_not_prefix() {
    // The type through a prefixed QName, with xsi bound to an unusual prefix.
    let odd = "<S:Envelope xmlns:S=\"http://schemas.xmlsoap.org/soap/envelope/\"><S:Body><S:Fault>\
               <faultcode>S:Server</faultcode><faultstring>denied</faultstring><detail>\
               <v:Whatever xmlns:v=\"urn:vim25\" xmlns:XMLSchema-instance=\"http://www.w3.org/2001/XMLSchema-instance\" \
               XMLSchema-instance:type=\"v:InvalidLogin\"/></detail></S:Fault></S:Body></S:Envelope>";
    assert_eq!(
        fault_of(soap::parse_login(odd).unwrap_err()),
        VimFault::InvalidLogin {
            message: "denied".into()
        }
    );
    // A "xsi" prefix bound elsewhere is not xsi:type: the tag names the fault.
    let decoy = "<S:Envelope xmlns:S=\"http://schemas.xmlsoap.org/soap/envelope/\"><S:Body><S:Fault>\
                 <faultcode>S:Server</faultcode><faultstring>x</faultstring><detail>\
                 <NotAuthenticatedFault xmlns=\"urn:vim25\" xmlns:xsi=\"urn:decoy\" xsi:type=\"InvalidLogin\"/>\
                 </detail></S:Fault></S:Body></S:Envelope>";
    assert!(fault_of(soap::parse_login(decoy).unwrap_err()).is_not_authenticated());
    // No detail at all: the fault code names it.
    let bare = "<S:Envelope xmlns:S=\"http://schemas.xmlsoap.org/soap/envelope/\"><S:Body><S:Fault>\
                <faultcode>S:Client</faultcode><faultstring>Unable to parse</faultstring></S:Fault></S:Body></S:Envelope>";
    assert_eq!(
        fault_of(soap::parse_login(bare).unwrap_err()),
        VimFault::Other {
            name: "S:Client".into(),
            message: "Unable to parse".into()
        }
    );
}

#[test]
fn a_lost_session_in_a_missing_set_fails_the_call() {
    // vcsim answers a property read without a session this way, where ESXi
    // sends a SOAP fault; both must lead to a new login.
    let xml = "<soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\" \
               xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\"><soapenv:Body>\
               <RetrievePropertiesExResponse xmlns=\"urn:vim25\"><returnval><objects><obj type=\"VirtualMachine\">vm-1</obj>\
               <missingSet><path>name</path><fault><fault xsi:type=\"NotAuthenticated\"><object type=\"VirtualMachine\">vm-1</object>\
               <privilegeId>System.View</privilegeId></fault></fault></missingSet></objects></returnval>\
               </RetrievePropertiesExResponse></soapenv:Body></soapenv:Envelope>";
    assert!(
        fault_of(soap::parse_vm_page(xml, "RetrievePropertiesEx").unwrap_err())
            .is_not_authenticated()
    );
}

#[test]
fn a_service_ticket_is_asked_for_one_get_of_one_url_and_read_back() {
    let sm = MoRef::new("SessionManager", "SessionManager");
    let url = "https://esx-1.example.com/folder/db/db-flat.vmdk?dcPath=ha-datacenter&dsName=ds1";
    let req = soap::acquire_generic_service_ticket(&sm, url);
    assert_eq!(req.method, "AcquireGenericServiceTicket");
    assert!(
        req.envelope
            .contains("xsi:type=\"SessionManagerHttpServiceRequestSpec\""),
        "{}",
        req.envelope
    );
    assert!(req.envelope.contains("<method>httpGet</method>"));
    assert!(req.envelope.contains(&soap::escape(url)));
    let answer = "<?xml version=\"1.0\"?><soapenv:Envelope \
        xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\"><soapenv:Body>\
        <AcquireGenericServiceTicketResponse xmlns=\"urn:vim25\"><returnval>\
        <id>52a1-ticket</id><hostName>esx-1.example.com</hostName>\
        <sslThumbprint>AB:CD</sslThumbprint></returnval>\
        </AcquireGenericServiceTicketResponse></soapenv:Body></soapenv:Envelope>";
    let ticket = soap::parse_service_ticket(answer).unwrap();
    assert_eq!(ticket.id, "52a1-ticket");
    assert_eq!(ticket.host_name.as_deref(), Some("esx-1.example.com"));
}
