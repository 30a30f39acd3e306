//! The OVF import path end to end on a running lab: CreateImportSpec and
//! ImportVApp through the SOAP handler, the lease read through the
//! property collector, the disks uploaded over HTTPS to the NFC endpoint,
//! and what the lab holds afterwards.

use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

use roxmltree::Document;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::vmdk_stream::tests::stream_of;
use super::{Lab, LabConfig, LabHandle, content, nfc::LeaseOutcome, nfc::LeaseState};
use crate::run::ovf::{OvfDisk, VmHardware, ovf_envelope};
use crate::vsphere::soap::{SOAP_ENV_NS, VIM_NS, XSI_NS, escape};

const MIB: u64 = 1 << 20;

fn start(dir: &std::path::Path, vcenter: bool) -> LabHandle {
    let mut config = LabConfig::new(dir);
    config.vms = 0;
    config.password = Some("pw".into());
    config.vcenter = vcenter;
    Lab::start(config).unwrap()
}

/// SOAP calls straight into the lab's handler, with a session.
struct Soap<'a> {
    lab: &'a LabHandle,
    session: String,
}

impl<'a> Soap<'a> {
    fn login(lab: &'a LabHandle) -> Soap<'a> {
        let mut soap = Soap {
            lab,
            session: String::new(),
        };
        let answer = soap.raw(&format!(
            "<Login xmlns=\"{VIM_NS}\"><_this type=\"SessionManager\">ha-sessionmgr</_this>\
             <userName>root</userName><password>pw</password></Login>"
        ));
        let cookie = answer.set_cookie.expect("a session cookie");
        soap.session = super::vim::cookie_session(Some(&cookie)).unwrap();
        soap
    }

    fn raw(&self, body: &str) -> super::vim::Answer {
        let xml = format!(
            "<soapenv:Envelope xmlns:soapenv=\"{SOAP_ENV_NS}\" xmlns:xsi=\"{XSI_NS}\">\
             <soapenv:Body>{body}</soapenv:Body></soapenv:Envelope>"
        );
        let s = &self.lab.shared;
        s.vim.call(
            &s.store,
            &s.faults,
            (&s.user, &s.password),
            Some(self.session.clone()).filter(|k| !k.is_empty()),
            &xml,
        )
    }

    /// The answer's XML, or the fault's name.
    fn call(&self, method: &str, this: (&str, &str), args: &str) -> Result<String, String> {
        let answer = self.raw(&format!(
            "<{method} xmlns=\"{VIM_NS}\"><_this type=\"{}\">{}</_this>{args}</{method}>",
            this.0, this.1
        ));
        if answer.status == 200 {
            return Ok(answer.xml);
        }
        let doc = Document::parse(&answer.xml).unwrap();
        let detail = doc
            .descendants()
            .find(|n| n.tag_name().name() == "detail")
            .and_then(|d| d.first_element_child())
            .unwrap();
        Err(detail
            .attribute((XSI_NS, "type"))
            .unwrap_or_default()
            .to_string())
    }

    /// The lease's properties: name → the value's XML text.
    fn lease(&self, id: &str, paths: &[&str]) -> Vec<(String, String)> {
        let path_set: String = paths
            .iter()
            .map(|p| format!("<pathSet>{p}</pathSet>"))
            .collect();
        let xml = self
            .call(
                "RetrievePropertiesEx",
                ("PropertyCollector", "ha-property-collector"),
                &format!(
                    "<specSet><propSet><type>HttpNfcLease</type>{path_set}</propSet>\
                     <objectSet><obj type=\"HttpNfcLease\">{id}</obj></objectSet></specSet><options/>"
                ),
            )
            .unwrap();
        let doc = Document::parse(&xml).unwrap();
        doc.descendants()
            .filter(|n| n.tag_name().name() == "propSet")
            .map(|p| {
                let name = p
                    .children()
                    .find(|c| c.tag_name().name() == "name")
                    .unwrap();
                let val = p.children().find(|c| c.tag_name().name() == "val").unwrap();
                let inner = &xml[val.range()];
                (name.text().unwrap().to_string(), inner.to_string())
            })
            .collect()
    }

    fn lease_state(&self, id: &str) -> String {
        let props = self.lease(id, &["state"]);
        let xml = fragment(&props[0].1);
        let doc = Document::parse(&xml).unwrap();
        doc.descendants()
            .find(|n| n.tag_name().name() == "val")
            .and_then(|v| v.text())
            .unwrap()
            .to_string()
    }
}

/// A piece of an answer, with the namespaces it was written in.
fn fragment(xml: &str) -> String {
    format!(
        "<w xmlns=\"{VIM_NS}\" xmlns:xsi=\"{XSI_NS}\" xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\">{xml}</w>"
    )
}

/// A disk as the original VM's held it: the lab's made-up, bootable data.
fn original_disk(dir: &std::path::Path, name: &str, index: usize, capacity: u64) -> Vec<u8> {
    let path = dir.join(format!("{name}-{index}.img"));
    content::generate(&path, name, index, capacity).unwrap();
    std::fs::read(path).unwrap()
}

fn descriptor(disks: &[u64]) -> String {
    let hw = VmHardware {
        vcpus: 2,
        memory_mib: 1024,
        guest_os: "other5xLinux64Guest".into(),
        scsi_controller: "lsilogic".into(),
        hardware_version: "vmx-19".into(),
        ..VmHardware::default()
    };
    let disks: Vec<OvfDisk> = disks
        .iter()
        .enumerate()
        .map(|(i, &capacity_bytes)| OvfDisk {
            file_name: format!("db01-disk{}.vmdk", i + 1),
            file_size_bytes: 4096,
            capacity_bytes,
            slot: None,
        })
        .collect();
    ovf_envelope("db01", &hw, &disks).unwrap()
}

/// CreateImportSpec then ImportVApp with the spec sent back verbatim:
/// the lease id.
fn import(soap: &Soap<'_>, name: &str, disks: &[u64], pool: &str) -> Result<String, String> {
    let manager = super::props::ovf_manager(soap.lab.shared.vim.vcenter);
    let answer = soap.call(
        "CreateImportSpec",
        ("OvfManager", manager),
        &format!(
            "<ovfDescriptor>{}</ovfDescriptor><resourcePool type=\"ResourcePool\">{pool}</resourcePool>\
             <datastore type=\"Datastore\">datastore1</datastore><cisp><locale></locale>\
             <deploymentOption></deploymentOption><entityName>{name}</entityName>\
             <diskProvisioning>thin</diskProvisioning></cisp>",
            escape(&descriptor(disks))
        ),
    )?;
    let start = answer.find("<importSpec").unwrap();
    let inner_start = start + answer[start..].find('>').unwrap() + 1;
    let inner_end = answer.find("</importSpec>").unwrap();
    let spec = format!(
        "<spec xsi:type=\"VirtualMachineImportSpec\">{}</spec>",
        &answer[inner_start..inner_end]
    );
    let xml = soap.call("ImportVApp", ("ResourcePool", pool), &spec)?;
    let doc = Document::parse(&xml).unwrap();
    let rv = doc
        .descendants()
        .find(|n| n.tag_name().name() == "returnval")
        .unwrap();
    assert_eq!(rv.attribute("type"), Some("HttpNfcLease"));
    Ok(rv.text().unwrap().to_string())
}

/// The lease's disk URLs (`*` replaced by `host`) by importKey, once it
/// is ready: the first read answers `initializing`.
fn urls(soap: &Soap<'_>, id: &str, host: &str) -> Vec<(String, String)> {
    assert_eq!(soap.lease_state(id), "initializing");
    let props = soap.lease(id, &["state", "info"]);
    assert!(props[0].1.contains(">ready<"), "{props:?}");
    let xml = fragment(&props[1].1);
    let doc = Document::parse(&xml).unwrap();
    doc.descendants()
        .filter(|n| n.tag_name().name() == "deviceUrl")
        .map(|d| {
            let field = |k: &str| {
                d.children()
                    .find(|c| c.tag_name().name() == k)
                    .and_then(|c| c.text())
                    .unwrap_or_default()
                    .to_string()
            };
            (field("importKey"), field("url").replace('*', host))
        })
        .collect()
}

fn https(lab: &LabHandle) -> reqwest::blocking::Client {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(lab.ca_pem().as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::blocking::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

fn host_of(lab: &LabHandle) -> String {
    lab.url()
        .trim_start_matches("https://")
        .trim_end_matches("/sdk")
        .to_string()
}

fn vm_of<'s>(st: &'s super::state::State, name: &str) -> Option<&'s super::state::Vm> {
    st.vms.iter().find(|v| v.name == name)
}

/// Polls `f` until it holds or `limit` passes.
fn eventually(limit: Duration, f: impl Fn() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

#[test]
fn an_import_fills_its_disks_byte_for_byte_and_boots_after_complete() {
    let t = tempfile::tempdir().unwrap();
    let lab = start(&t.path().join("lab"), false);
    let soap = Soap::login(&lab);
    let disks = [
        original_disk(t.path(), "db01", 0, 8 * MIB),
        original_disk(t.path(), "db01", 1, 4 * MIB),
    ];
    let id = import(&soap, "db01-r", &[8 * MIB, 4 * MIB], "ha-root-pool").unwrap();
    let vm = lab
        .shared
        .store
        .read(|st, _| Ok(vm_of(st, "db01-r").unwrap().moref()))
        .unwrap();

    // Held: no power-on (the task fails), no destroy.
    let task = soap
        .call("PowerOnVM_Task", ("VirtualMachine", &vm), "")
        .unwrap();
    let task_id = Document::parse(&task)
        .unwrap()
        .descendants()
        .find(|n| n.tag_name().name() == "returnval")
        .unwrap()
        .text()
        .unwrap()
        .to_string();
    let info = soap
        .call(
            "RetrievePropertiesEx",
            ("PropertyCollector", "ha-property-collector"),
            &format!(
                "<specSet><propSet><type>Task</type><pathSet>info</pathSet></propSet>\
                 <objectSet><obj type=\"Task\">{task_id}</obj></objectSet></specSet><options/>"
            ),
        )
        .unwrap();
    assert!(info.contains("xsi:type=\"InvalidState\""), "{info}");
    assert_eq!(
        soap.call("UnregisterVM", ("VirtualMachine", &vm), ""),
        Err("InvalidState".into())
    );

    let urls = urls(&soap, &id, &host_of(&lab));
    assert_eq!(urls.len(), 2);
    assert_eq!(urls[0].0, "/db01-r/VirtualLsiLogicController0:0");
    assert!(
        urls[1].1.ends_with(&format!("/nfc/{id}/disk-1.vmdk")),
        "{urls:?}"
    );
    let client = https(&lab);
    // Disk 1 with every grain, zero ones too, chunked; disk 2 without
    // zero grains, by Content-Length.
    let first = stream_of(&disks[0], true);
    let resp = client
        .post(&urls[0].1)
        .header("Content-Type", "application/x-vnd.vmware-streamVmdk")
        .body(reqwest::blocking::Body::new(std::io::Cursor::new(
            first.clone(),
        )))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200, "{:?}", resp.text());
    soap.call(
        "HttpNfcLeaseProgress",
        ("HttpNfcLease", &id),
        "<percent>50</percent>",
    )
    .unwrap();
    let resp = client
        .put(&urls[1].1)
        .body(stream_of(&disks[1], false))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    soap.call("HttpNfcLeaseComplete", ("HttpNfcLease", &id), "")
        .unwrap();
    assert_eq!(soap.lease_state(&id), "done");
    assert_eq!(
        soap.call("HttpNfcLeaseComplete", ("HttpNfcLease", &id), ""),
        Err("InvalidState".into())
    );

    let root = lab.datastore_dir();
    for (i, disk) in disks.iter().enumerate() {
        let stem = if i == 0 {
            "db01-r".into()
        } else {
            format!("db01-r_{i}")
        };
        let flat = root.join(format!("db01-r/{stem}-flat.vmdk"));
        assert_eq!(&std::fs::read(&flat).unwrap(), disk, "disk {i}");
        // Thin: fewer blocks allocated than the disk holds.
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(&flat).unwrap();
        assert!(meta.blocks() * 512 < meta.len(), "disk {i} is not sparse");
    }
    let stats = lab.stats().nfc_lease(&id).unwrap();
    assert_eq!(
        (stats.state, stats.outcome),
        (LeaseState::Done, Some(LeaseOutcome::Completed))
    );
    let zero_grains = disks[0]
        .chunks(64 << 10)
        .filter(|g| g.iter().all(|b| *b == 0))
        .count() as u64;
    assert!(zero_grains > 0);
    assert_eq!(stats.disks[0].zero_grains, zero_grains);
    assert_eq!(stats.disks[0].grains, 128);
    assert_eq!(stats.disks[0].bytes_received, first.len() as u64);
    assert_eq!(stats.disks[1].zero_grains, 0);
    assert!(stats.disks.iter().all(|d| d.uploaded && d.uploads == 1));
    assert_eq!((stats.progress_calls, stats.last_percent), (1, Some(50)));

    // An ordinary VM now: it powers on, boots, and VMware Tools run.
    soap.call("PowerOnVM_Task", ("VirtualMachine", &vm), "")
        .unwrap();
    lab.shared
        .store
        .read(|st, root| {
            let v = vm_of(st, "db01-r").unwrap();
            assert!(v.powered_on && v.tools_running(root));
            assert_eq!(v.import_lease, None);
            let vmx = v.vmx_text(root);
            assert!(vmx.contains("guestOS = \"other5xlinux-64\""), "{vmx}");
            assert!(vmx.contains("numvcpus = \"2\""), "{vmx}");
            Ok(())
        })
        .unwrap();
}

#[test]
fn abort_and_timeout_leave_nothing_behind() {
    let t = tempfile::tempdir().unwrap();
    let lab = start(&t.path().join("lab"), false);
    let soap = Soap::login(&lab);
    let gone = |name: &str| {
        let registered = lab
            .shared
            .store
            .read(|st, _| Ok(vm_of(st, name).is_some()))
            .unwrap();
        !registered && !lab.datastore_dir().join(name).exists()
    };

    let id = import(&soap, "aborted", &[4 * MIB], "ha-root-pool").unwrap();
    assert!(
        lab.datastore_dir()
            .join("aborted/aborted-flat.vmdk")
            .exists()
    );
    soap.call("HttpNfcLeaseAbort", ("HttpNfcLease", &id), "")
        .unwrap();
    assert!(gone("aborted"));
    assert_eq!(soap.lease_state(&id), "error");
    assert!(soap.lease(&id, &["error"])[0].1.contains("RequestCanceled"));
    assert_eq!(
        soap.call("HttpNfcLeaseAbort", ("HttpNfcLease", &id), ""),
        Err("InvalidState".into())
    );
    // The same name imports again once the first is gone.
    let again = import(&soap, "aborted", &[4 * MIB], "ha-root-pool").unwrap();
    soap.call("HttpNfcLeaseAbort", ("HttpNfcLease", &again), "")
        .unwrap();

    lab.faults().apply("lease-timeout=1").unwrap();
    let id = import(&soap, "forgotten", &[4 * MIB], "ha-root-pool").unwrap();
    assert_eq!(urls(&soap, &id, "h").len(), 1);
    // No request comes: the lab's own thread expires the lease.
    assert!(eventually(Duration::from_secs(10), || gone("forgotten")));
    assert_eq!(soap.lease_state(&id), "error");
    assert!(soap.lease(&id, &["error"])[0].1.contains("Timedout"));
    assert_eq!(
        soap.call(
            "HttpNfcLeaseProgress",
            ("HttpNfcLease", &id),
            "<percent>1</percent>"
        ),
        Err("Timedout".into())
    );
    let stats = lab.stats().nfc_lease(&id).unwrap();
    assert_eq!(stats.outcome, Some(LeaseOutcome::TimedOut));
}

#[test]
fn a_cut_or_truncated_upload_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let lab = start(&t.path().join("lab"), false);
    let soap = Soap::login(&lab);
    let disk = original_disk(t.path(), "db01", 0, 4 * MIB);
    let stream = stream_of(&disk, false);
    let id = import(&soap, "db01-r", &[4 * MIB], "ha-root-pool").unwrap();
    let url = urls(&soap, &id, &host_of(&lab)).remove(0).1;
    let client = https(&lab);

    let truncated = stream[..stream.len() - 1024].to_vec();
    let resp = client.post(&url).body(truncated).send().unwrap();
    assert_eq!(resp.status(), 400);
    assert!(resp.text().unwrap().contains("end-of-stream"));

    lab.faults().apply("nfc-cut-after=65536").unwrap();
    assert!(client.post(&url).body(stream.clone()).send().is_err());
    let stats = lab.stats().nfc_lease(&id).unwrap();
    assert_eq!(stats.disks[0].uploads, 2);
    assert!(!stats.disks[0].uploaded);

    // Not a stream at all; then the whole one, which is taken.
    let resp = client.post(&url).body(vec![7u8; 4096]).send().unwrap();
    assert_eq!(resp.status(), 400);
    let resp = client.post(&url).body(stream).send().unwrap();
    assert_eq!(resp.status(), 200);
    assert!(lab.stats().nfc_lease(&id).unwrap().disks[0].uploaded);
    // A lease that is over takes no more.
    soap.call("HttpNfcLeaseAbort", ("HttpNfcLease", &id), "")
        .unwrap();
    let resp = client.post(&url).body(vec![0u8; 512]).send().unwrap();
    assert_eq!(resp.status(), 403);
}

#[test]
fn names_and_folders_in_use_and_bad_descriptors_are_faults() {
    let t = tempfile::tempdir().unwrap();
    let lab = start(&t.path().join("lab"), false);
    let soap = Soap::login(&lab);
    let id = import(&soap, "db01-r", &[4 * MIB], "ha-root-pool").unwrap();
    assert_eq!(
        import(&soap, "db01-r", &[4 * MIB], "ha-root-pool"),
        Err("DuplicateName".into())
    );
    std::fs::create_dir(lab.datastore_dir().join("leftover")).unwrap();
    assert_eq!(
        import(&soap, "leftover", &[4 * MIB], "ha-root-pool"),
        Err("FileAlreadyExists".into())
    );
    assert!(lab.datastore_dir().join("leftover").exists());
    assert_eq!(
        soap.call(
            "CreateImportSpec",
            ("OvfManager", "ha-ovf-manager"),
            "<ovfDescriptor>&lt;Envelope</ovfDescriptor>\
             <resourcePool type=\"ResourcePool\">ha-root-pool</resourcePool>\
             <datastore type=\"Datastore\">datastore1</datastore><cisp><entityName>x</entityName></cisp>"
        ),
        Err("InvalidArgument".into())
    );
    soap.call("HttpNfcLeaseComplete", ("HttpNfcLease", &id), "")
        .map(|_| ())
        .expect_err("a lease is not complete before it was ready");
}

#[test]
fn through_the_vcenter_the_lease_points_at_the_vms_host() {
    let t = tempfile::tempdir().unwrap();
    let lab = start(&t.path().join("lab"), true);
    let soap = Soap::login(&lab);
    let disk = original_disk(t.path(), "db01", 0, 4 * MIB);
    let id = import(&soap, "db01-r", &[4 * MIB], "resgroup-2").unwrap();
    let host = lab
        .shared
        .store
        .read(|st, _| Ok(vm_of(st, "db01-r").unwrap().host.clone()))
        .unwrap();
    assert_eq!(host.as_deref(), Some("host-2"));
    let url = urls(&soap, &id, "unused").remove(0).1;
    let addr = lab.shared.vim.host_name("host-2", &lab.shared.faults);
    assert!(url.starts_with(&format!("https://{addr}/nfc/")), "{url}");
    let client = https(&lab);
    // vCenter itself serves no NFC.
    let on_vcenter = url.replace(&addr, &host_of(&lab));
    let resp = client
        .post(&on_vcenter)
        .body(vec![0u8; 512])
        .send()
        .unwrap();
    assert_eq!(resp.status(), 404);
    let resp = client
        .post(&url)
        .body(stream_of(&disk, false))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    soap.call("HttpNfcLeaseComplete", ("HttpNfcLease", &id), "")
        .unwrap();
    let mut flat = Vec::new();
    std::fs::File::open(lab.datastore_dir().join("db01-r/db01-r-flat.vmdk"))
        .unwrap()
        .read_to_end(&mut flat)
        .unwrap();
    assert_eq!(flat, disk);
}
