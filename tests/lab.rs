//! The built-in lab driven by coffer's own vSphere client, over TLS on
//! loopback: everything a backup needs from a host (inventory, CBT,
//! snapshots, changed areas, datastore reads with Range), the faults the
//! lab injects, and state that survives a restart.

use std::io::{BufRead, BufReader};
use std::ops::Range;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use coffer::lab::{Lab, LabConfig, LabHandle};
use coffer::policy::model::TlsTrust;
use coffer::vsphere::soap::{self, SnapshotRequest};
use coffer::vsphere::types::{ChangeId, MoRef, PowerState, VmRecord};
use coffer::vsphere::{Error, QuiesceFault, Session, VimFault};

const TASK: Duration = Duration::from_secs(30);
const MIB: u64 = 1 << 20;

fn start(dir: &Path) -> LabHandle {
    let mut config = LabConfig::new(dir);
    // One object a page, a quarter of a 64 MiB disk an answer: the client
    // must follow tokens and offsets, as with a large real host.
    config.page_objects = 1;
    config.changed_areas_window_bytes = 16 * MIB;
    Lab::start(config).expect("the lab starts")
}

fn connect(lab: &LabHandle) -> Session {
    Session::connect(lab.url(), &lab.tls_trust(), lab.user(), lab.password())
        .unwrap_or_else(|e| panic!("login to {}: {e}", lab.url()))
}

fn vm_named(session: &Session, name: &str) -> VmRecord {
    session
        .list_vms()
        .expect("list VMs")
        .into_iter()
        .find(|v| v.name == name)
        .unwrap_or_else(|| panic!("no VM {name}"))
}

fn snap(name: &str, quiesce: bool) -> SnapshotRequest<'_> {
    SnapshotRequest {
        name,
        description: "coffer lab test",
        memory: false,
        quiesce,
    }
}

/// A datastore client: reqwest trusting the lab's CA, with a session cookie.
struct Datastore {
    http: reqwest::blocking::Client,
    base: String,
    cookie: String,
}

impl Datastore {
    fn new(lab: &LabHandle) -> Datastore {
        let mut roots = rustls::RootCertStore::empty();
        use rustls::pki_types::pem::PemObject;
        for c in rustls::pki_types::CertificateDer::pem_slice_iter(lab.ca_pem().as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let http = reqwest::blocking::Client::builder()
            .tls_backend_preconfigured(tls)
            .build()
            .unwrap();
        let base = lab.url().trim_end_matches("/sdk").to_string();
        let login = soap::login(
            &MoRef::new("SessionManager", "ha-sessionmgr"),
            lab.user(),
            lab.password(),
        );
        let resp = http
            .post(format!("{base}/sdk"))
            .header("Content-Type", "text/xml")
            .body(login.envelope)
            .send()
            .unwrap();
        let cookie = resp
            .headers()
            .get_all("set-cookie")
            .iter()
            .find_map(coffer::vsphere::transport::session_cookie)
            .expect("a session cookie");
        Datastore { http, base, cookie }
    }

    fn url(&self, path: &str) -> String {
        format!(
            "{}/folder/{path}?dcPath=ha-datacenter&dsName=datastore1",
            self.base
        )
    }

    fn get(&self, path: &str, range: Option<Range<u64>>) -> reqwest::blocking::Response {
        let mut req = self.http.get(self.url(path)).header("Cookie", &self.cookie);
        if let Some(r) = range {
            req = req.header("Range", format!("bytes={}-{}", r.start, r.end - 1));
        }
        req.send().expect("GET")
    }

    fn read(&self, path: &str, range: Range<u64>) -> Vec<u8> {
        let resp = self.get(path, Some(range.clone()));
        assert_eq!(resp.status(), 206, "{path} {range:?}");
        let body = resp.bytes().unwrap().to_vec();
        assert_eq!(body.len() as u64, range.end - range.start);
        body
    }

    fn put(&self, path: &str, data: Vec<u8>) -> u16 {
        self.http
            .put(self.url(path))
            .header("Cookie", &self.cookie)
            .body(data)
            .send()
            .unwrap()
            .status()
            .as_u16()
    }
}

/// `[datastore1] dir/x.vmdk` → `dir/x-flat.vmdk`
fn flat_of(file_name: &str) -> String {
    let rel = file_name.trim_start_matches("[datastore1] ");
    rel.replace(".vmdk", "-flat.vmdk")
}

fn areas(
    session: &Session,
    vm: &MoRef,
    s: &MoRef,
    key: i32,
    cap: u64,
    id: &ChangeId,
) -> Vec<Range<u64>> {
    let infos = session
        .changed_disk_areas(vm, s, key, cap, id)
        .expect("changed areas");
    assert_eq!(infos.last().unwrap().end_bytes(), cap);
    infos.into_iter().flat_map(|i| i.changed).collect()
}

#[test]
fn login_and_certificate_pinning() {
    let dir = tempfile::tempdir().unwrap();
    let lab = start(dir.path());
    let session = connect(&lab);
    assert_eq!(session.version(), "8.0.2.0");
    assert_eq!(
        session.service_content().about.product_line_id,
        "embeddedEsx"
    );
    assert!(lab.thumbprint().starts_with("sha256:"));

    let err = Session::connect(lab.url(), &lab.tls_trust(), lab.user(), "wrong").unwrap_err();
    assert!(
        matches!(err, Error::Fault(VimFault::InvalidLogin { .. })),
        "{err:?}"
    );

    let mut wrong = lab.thumbprint_bytes();
    wrong[0] ^= 0xff;
    let err = Session::connect(
        lab.url(),
        &TlsTrust::Thumbprint(wrong),
        lab.user(),
        lab.password(),
    )
    .unwrap_err();
    match &err {
        Error::ThumbprintMismatch { presented, .. } => assert_eq!(presented, &lab.thumbprint()),
        other => panic!("expected a thumbprint mismatch, got {other:?}"),
    }

    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, lab.ca_pem()).unwrap();
    Session::connect(lab.url(), &TlsTrust::CaFile(ca), lab.user(), lab.password())
        .expect("the lab's CA is trusted");

    // Logged out, the session is renewed once, transparently.
    session.logout().unwrap();
    session
        .keep_alive()
        .expect("re-login after NotAuthenticated");

    // Without a session cookie: NotAuthenticated, and 401 for files.
    let ds = Datastore::new(&lab);
    let resp = ds
        .http
        .post(lab.url())
        .body(soap::current_time().envelope)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 500);
    let body = resp.text().unwrap();
    let err = soap::parse_current_time(&body).unwrap_err();
    assert!(
        err.fault().is_some_and(VimFault::is_not_authenticated),
        "{err}"
    );
    let resp = ds
        .http
        .get(ds.url("lab-vm-01/lab-vm-01.vmdk"))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 401);
}

#[test]
fn full_then_incremental_backup_cycle() {
    let dir = tempfile::tempdir().unwrap();
    let lab = start(dir.path());
    let session = connect(&lab);
    let ds = Datastore::new(&lab);

    let vms = session.list_vms().expect("list VMs across pages");
    assert_eq!(vms.len(), 2, "{vms:?}");
    let rec = vm_named(&session, "lab-vm-01");
    assert_eq!(rec.power_state, Some(PowerState::PoweredOn));
    assert_eq!(
        rec.tools_running_status.as_deref(),
        Some("guestToolsRunning")
    );
    assert!(rec.instance_uuid.is_some());
    assert_eq!(rec.disks.len(), 2);
    assert_eq!(rec.disks[0].capacity_bytes, 64 * MIB);
    assert_eq!(rec.disks[1].capacity_bytes, 32 * MIB);
    assert_eq!(
        rec.disks[0].file_name,
        "[datastore1] lab-vm-01/lab-vm-01.vmdk"
    );
    assert!(!rec.change_tracking_enabled && rec.disks[0].change_id.is_none());
    let vm = rec.moref.clone();
    let disk = rec.disks[0].clone();

    session
        .set_change_tracking(&vm, true, TASK)
        .expect("enable CBT");
    let rec = vm_named(&session, "lab-vm-01");
    assert!(rec.change_tracking_enabled);
    assert!(
        rec.disks[0].change_id.is_none(),
        "CBT starts at the next snapshot"
    );

    // Full: snapshot, the allocated areas, read them.
    let first = session
        .create_snapshot(&vm, &snap("coffer-1", true), TASK)
        .expect("snapshot");
    let rec = vm_named(&session, "lab-vm-01");
    assert_eq!(rec.all_snapshots().len(), 1);
    assert!(rec.all_snapshots()[0].quiesced);
    assert!(
        rec.disks[0].file_name.ends_with("lab-vm-01-000001.vmdk"),
        "{rec:?}"
    );
    let snap_disks = session.snapshot_disks(&first).unwrap();
    assert_eq!(snap_disks[0].file_name, disk.file_name);
    let base_id = snap_disks[0].change_id.clone().expect("a change id");
    assert!(
        base_id.0.starts_with("52 ") && base_id.0.contains('/'),
        "{base_id}"
    );

    let allocated = areas(
        &session,
        &vm,
        &first,
        disk.key,
        disk.capacity_bytes,
        &ChangeId::all(),
    );
    assert_eq!(allocated[0].start, 0, "the MBR is allocated: {allocated:?}");
    let allocated_bytes: u64 = allocated.iter().map(|r| r.end - r.start).sum();
    assert!(
        allocated_bytes < disk.capacity_bytes / 2,
        "holes are skipped: {allocated:?}"
    );

    let descriptor = ds.get("lab-vm-01/lab-vm-01.vmdk", None).text().unwrap();
    assert!(
        descriptor.contains(&format!(
            "RW {} FLAT \"lab-vm-01-flat.vmdk\" 0",
            64 * MIB / 512
        )),
        "{descriptor}"
    );
    let flat = flat_of(&snap_disks[0].file_name);
    let on_disk = std::fs::read(lab.datastore_dir().join(&flat)).unwrap();

    // The guest writes while the snapshot exists: the snapshot's view stays.
    let written = lab.write("lab-vm-01", 2.0).expect("lab write");
    assert!(
        written[0].file.ends_with("-000001-delta.vmdk"),
        "{written:?}"
    );
    assert!(written[0].blocks > 0);
    lab.stats().reset();
    let mut image = vec![0u8; disk.capacity_bytes as usize];
    for r in &allocated {
        let part = ds.read(&flat, r.clone());
        image[r.start as usize..r.end as usize].copy_from_slice(&part);
    }
    assert_eq!(
        image, on_disk,
        "the snapshot's view is frozen byte for byte"
    );
    assert_eq!(lab.stats().bytes_served(&flat), allocated_bytes);

    session
        .remove_snapshot(&first, TASK)
        .expect("remove snapshot");
    let rec = vm_named(&session, "lab-vm-01");
    assert!(rec.snapshots.is_empty());
    assert_eq!(
        rec.disks[0].file_name, disk.file_name,
        "the delta is merged"
    );
    // Merged into the base, which the running VM now holds for writing:
    // the host serves it to no one (a reader must read under a snapshot).
    let w = written[0].areas[0].clone();
    let resp = ds.get(&flat, Some(w.clone()));
    assert_eq!(resp.status(), 500);
    assert!(resp.text().unwrap().contains("lock"));
    let base = std::fs::read(lab.datastore_dir().join(&flat)).unwrap();
    assert!(
        base[w.start as usize..].starts_with(b"coffer lab write block"),
        "the writes are kept"
    );

    // Incremental: exactly the written areas, and only those are read.
    let second = session
        .create_snapshot(&vm, &snap("coffer-2", false), TASK)
        .expect("snapshot 2");
    let next_id = session.snapshot_disks(&second).unwrap()[0]
        .change_id
        .clone()
        .unwrap();
    assert_ne!(next_id, base_id);
    let changed = areas(
        &session,
        &vm,
        &second,
        disk.key,
        disk.capacity_bytes,
        &base_id,
    );
    assert_eq!(changed, written[0].areas);
    let second_disk = areas(&session, &vm, &second, 2001, 32 * MIB, &ChangeId::all());
    assert_eq!(second_disk[0].start, 0, "{second_disk:?}");
    lab.stats().reset();
    for r in &changed {
        ds.read(&flat, r.clone());
    }
    let changed_bytes: u64 = changed.iter().map(|r| r.end - r.start).sum();
    assert_eq!(lab.stats().bytes_served(&flat), changed_bytes);

    // Change ids that are not this disk's: CBT cannot be trusted.
    let err = session
        .changed_disk_areas(
            &vm,
            &second,
            disk.key,
            disk.capacity_bytes,
            &ChangeId("52 00/1".into()),
        )
        .unwrap_err();
    assert!(err.fault().is_some_and(VimFault::cbt_untrusted), "{err}");
    let err = session
        .changed_disk_areas(
            &vm,
            &second,
            disk.key,
            disk.capacity_bytes,
            &ChangeId("garbage".into()),
        )
        .unwrap_err();
    assert!(err.fault().is_some_and(VimFault::cbt_untrusted), "{err}");
    session.remove_snapshot(&second, TASK).unwrap();

    // CBT off on the other VM: its queries are untrusted too.
    let other = vm_named(&session, "lab-vm-02").moref;
    let s = session
        .create_snapshot(&other, &snap("no-cbt", false), TASK)
        .unwrap();
    let err = session
        .changed_disk_areas(&other, &s, 2000, 64 * MIB, &ChangeId::all())
        .unwrap_err();
    assert!(
        matches!(
            err.fault(),
            Some(VimFault::File {
                cbt_untrusted: true,
                ..
            })
        ),
        "{err}"
    );
    session.remove_snapshot(&s, TASK).unwrap();
}

#[test]
fn injected_faults_give_their_own_errors() {
    let dir = tempfile::tempdir().unwrap();
    let lab = start(dir.path());
    let session = connect(&lab);
    let ds = Datastore::new(&lab);
    let vm = vm_named(&session, "lab-vm-02").moref;
    let f = lab.faults();

    f.apply("quiesce").unwrap();
    let err = session
        .create_snapshot(&vm, &snap("q", true), TASK)
        .unwrap_err();
    assert!(
        matches!(
            err.fault(),
            Some(VimFault::Quiesce {
                kind: QuiesceFault::Application,
                ..
            })
        ),
        "{err}"
    );
    // A crash-consistent one still works.
    let s = session
        .create_snapshot(&vm, &snap("q", false), TASK)
        .unwrap();
    session.remove_snapshot(&s, TASK).unwrap();
    f.clear();

    f.apply("snapshot").unwrap();
    let err = session
        .create_snapshot(&vm, &snap("s", false), TASK)
        .unwrap_err();
    assert!(
        matches!(err.fault(), Some(VimFault::Snapshot { .. })),
        "{err}"
    );
    f.clear();

    let s = session
        .create_snapshot(&vm, &snap("r", false), TASK)
        .unwrap();
    f.apply("remove-snapshot").unwrap();
    let err = session.remove_snapshot(&s, TASK).unwrap_err();
    assert!(matches!(err.fault(), Some(VimFault::File { .. })), "{err}");
    f.clear();
    let rec = vm_named(&session, "lab-vm-02");
    assert!(
        rec.snapshots.is_empty() && rec.consolidation_needed,
        "{rec:?}"
    );
    session
        .run_task(&soap::consolidate_vm_disks(&vm), TASK)
        .expect("consolidate");
    let rec = vm_named(&session, "lab-vm-02");
    assert!(!rec.consolidation_needed);
    assert_eq!(
        rec.disks[0].file_name,
        "[datastore1] lab-vm-02/lab-vm-02.vmdk"
    );

    // Powered off, the VM holds no lock on its disk: the host serves it.
    session.run_task(&soap::power_off_vm(&vm), TASK).unwrap();
    let flat = "lab-vm-02/lab-vm-02-flat.vmdk";
    // The admin endpoint takes the same spec as the environment variable.
    let resp = ds
        .http
        .post(format!("{}/lab/faults", ds.base))
        .header("Cookie", &ds.cookie)
        .body("unavailable=2")
        .send()
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(ds.get(flat, Some(0..512)).status(), 503);
    assert_eq!(ds.get(flat, Some(0..512)).status(), 503);
    assert_eq!(ds.get(flat, Some(0..512)).status(), 206);

    f.apply("drop-after=100000").unwrap();
    let resp = ds.get(flat, Some(0..4 * MIB));
    assert_eq!(resp.status(), 206);
    assert!(resp.bytes().is_err(), "the body is cut short");
    assert_eq!(ds.read(flat, 0..512).len(), 512, "the next read works");
    let stats: serde_json::Value = ds
        .http
        .get(format!("{}/lab/stats", ds.base))
        .header("Cookie", &ds.cookie)
        .send()
        .unwrap()
        .text()
        .map(|t| serde_json::from_str(&t).unwrap())
        .unwrap();
    assert!(
        stats["served_bytes"][flat].as_u64().unwrap() >= 100_000 + 1024,
        "{stats}"
    );

    let resp = ds.get(flat, Some(64 * MIB..64 * MIB + 10));
    assert_eq!(resp.status(), 416);

    // Quiesce needs tools: a powered-off VM has none running.
    let rec = vm_named(&session, "lab-vm-02");
    assert_eq!(rec.power_state, Some(PowerState::PoweredOff));
    let err = session
        .create_snapshot(&vm, &snap("t", true), TASK)
        .unwrap_err();
    assert!(
        matches!(
            err.fault(),
            Some(VimFault::Quiesce {
                kind: QuiesceFault::ToolsUnavailable,
                ..
            })
        ),
        "{err}"
    );
}

#[test]
fn tools_run_only_on_a_disk_that_boots() {
    let dir = tempfile::tempdir().unwrap();
    let lab = start(dir.path());
    let session = connect(&lab);
    let ds = Datastore::new(&lab);
    assert!(coffer::lab::boots(lab.state_dir(), "lab-vm-02").unwrap());
    // Wipe the file system header of lab-vm-02's disk.
    let flat = lab.datastore_dir().join("lab-vm-02/lab-vm-02-flat.vmdk");
    let f = std::fs::OpenOptions::new().write(true).open(&flat).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[0u8; 4096], MIB).unwrap();
    let rec = vm_named(&session, "lab-vm-02");
    assert_eq!(
        rec.tools_running_status.as_deref(),
        Some("guestToolsNotRunning")
    );
    assert!(!coffer::lab::boots(lab.state_dir(), "lab-vm-02").unwrap());

    // A restore: upload lab-vm-01's files under a new folder, register, boot.
    let src = lab.datastore_dir().join("lab-vm-01");
    for name in [
        "lab-vm-01.vmx",
        "lab-vm-01.vmdk",
        "lab-vm-01-flat.vmdk",
        "lab-vm-01_1.vmdk",
        "lab-vm-01_1-flat.vmdk",
    ] {
        let data = std::fs::read(src.join(name)).unwrap();
        assert_eq!(ds.put(&format!("restored/{name}"), data), 201, "{name}");
    }
    // A streamed upload arrives chunked.
    let vmx = std::fs::read(src.join("lab-vm-01.vmx")).unwrap();
    let resp = ds
        .http
        .put(ds.url("restored/lab-vm-01.vmx"))
        .header("Cookie", &ds.cookie)
        .body(reqwest::blocking::Body::new(std::io::Cursor::new(
            vmx.clone(),
        )))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200, "replaced");
    assert_eq!(
        std::fs::read(lab.datastore_dir().join("restored/lab-vm-01.vmx")).unwrap(),
        vmx
    );
    let folder = MoRef::new("Folder", "ha-folder-vm");
    let req = soap::register_vm(
        &folder,
        "[datastore1] restored/lab-vm-01.vmx",
        Some("restored-01"),
        None,
        None,
    );
    let info = session.run_task(&req, TASK).expect("register");
    let new_vm = info.result.expect("the registered VM");
    let rec = vm_named(&session, "restored-01");
    assert_eq!(rec.moref, new_vm);
    assert_eq!(rec.power_state, Some(PowerState::PoweredOff));
    assert_eq!(rec.disks.len(), 2);
    assert_eq!(rec.disks[1].capacity_bytes, 32 * MIB);
    // Its .vmx still records lab-vm-01's place: the host asks "moved or
    // copied?", and the power-on waits for the answer; Cancel fails it.
    let power_on = soap::power_on_vm(&new_vm);
    let task = session
        .call(&power_on, |x| soap::parse_moref_result(x, "PowerOnVM_Task"))
        .unwrap();
    assert!(matches!(
        session.wait_for_task(&task, std::time::Duration::from_secs(1)),
        Err(coffer::vsphere::Error::TaskTimeout { .. })
    ));
    let question = session.vm_question(&new_vm).unwrap().expect("a question");
    assert!(question.is_moved_or_copied(), "{question:?}");
    let cancel = soap::answer_vm(&new_vm, &question.id, "0");
    session
        .call(&cancel, |x| soap::parse_empty(x, "AnswerVM"))
        .unwrap();
    assert!(session.wait_for_task(&task, TASK).is_err(), "cancelled");
    assert_eq!(session.vm_question(&new_vm).unwrap(), None);
    session.power_on_answering(&new_vm, true, TASK).unwrap();
    let rec = vm_named(&session, "restored-01");
    assert_eq!(
        rec.tools_running_status.as_deref(),
        Some("guestToolsRunning")
    );
    session
        .run_task(&soap::power_off_vm(&new_vm), TASK)
        .unwrap();
    session
        .run_task(&soap::destroy(&new_vm), TASK)
        .expect("destroy");
    assert!(!lab.datastore_dir().join("restored").exists());
    assert_eq!(session.list_vms().unwrap().len(), 2);
}

#[test]
fn state_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (thumbprint, password, vm, base_id) = {
        let lab = start(dir.path());
        let session = connect(&lab);
        let vm = vm_named(&session, "lab-vm-01").moref;
        session.set_change_tracking(&vm, true, TASK).unwrap();
        let s = session
            .create_snapshot(&vm, &snap("one", false), TASK)
            .unwrap();
        let id = session.snapshot_disks(&s).unwrap()[0]
            .change_id
            .clone()
            .unwrap();
        session.remove_snapshot(&s, TASK).unwrap();
        (lab.thumbprint(), lab.password().to_string(), vm, id)
    };
    // Written while no lab runs.
    let written = coffer::lab::write(dir.path(), "lab-vm-01", 1.0).unwrap();
    let lab = start(dir.path());
    assert_eq!(lab.thumbprint(), thumbprint, "the pinned certificate stays");
    assert_eq!(lab.password(), password);
    let session = connect(&lab);
    let rec = vm_named(&session, "lab-vm-01");
    assert_eq!(rec.moref, vm);
    assert!(rec.change_tracking_enabled);
    let s = session
        .create_snapshot(&vm, &snap("two", false), TASK)
        .unwrap();
    let changed = areas(&session, &vm, &s, 2000, 64 * MIB, &base_id);
    assert_eq!(changed, written[0].areas);
    session.remove_snapshot(&s, TASK).unwrap();
}

/// Several coffer processes may start the same lab at once (a runner and an
/// `inventory` beside it). Each must come up, with one certificate between
/// them: two set-ups writing keys at once once paired a certificate with
/// the other's key and the second start failed.
#[test]
fn labs_started_at_once_on_a_fresh_directory_share_one_certificate() {
    // The window is short: many rounds, each on a fresh directory.
    for _ in 0..60 {
        let dir = tempfile::tempdir().unwrap();
        let thumbprints: Vec<String> = std::thread::scope(|s| {
            let starts: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| {
                        // No VMs: the start is the certificate and the state.
                        let mut config = LabConfig::new(dir.path());
                        config.vms = 0;
                        Lab::start(config).expect("the lab starts").thumbprint()
                    })
                })
                .collect();
            starts.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(
            thumbprints.iter().all(|t| *t == thumbprints[0]),
            "{thumbprints:?}"
        );
    }
}

#[test]
fn the_cli_serves_and_writes() {
    let dir = tempfile::tempdir().unwrap();
    let exe = env!("CARGO_BIN_EXE_coffer");
    let mut child = Command::new(exe)
        .args(["lab", "serve", "--vms", "1", "--state"])
        .arg(dir.path())
        .env("COFFER_LAB_FAULTS", "snapshot")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut info = None;
    let mut text = String::new();
    for _ in 0..10 {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if line.starts_with('{') {
            info = Some(serde_json::from_str::<serde_json::Value>(&line).unwrap());
            break;
        }
        text.push_str(&line);
    }
    let info = info.unwrap_or_else(|| panic!("no JSON line after {text:?}"));
    assert!(text.contains("thumbprint: sha256:"), "{text}");
    let field = |k: &str| info[k].as_str().unwrap().to_string();
    let hex = field("thumbprint")
        .trim_start_matches("sha256:")
        .replace(':', "");
    let pin: [u8; 32] = hex::decode(hex).unwrap().try_into().unwrap();
    let session = Session::connect(
        &field("url"),
        &TlsTrust::Thumbprint(pin),
        &field("user"),
        &field("password"),
    );
    let result = (|| {
        let session = session?;
        let vm = vm_named(&session, "lab-vm-01").moref;
        // The fault switched on by the environment.
        let err = session
            .create_snapshot(&vm, &snap("x", false), TASK)
            .unwrap_err();
        assert!(
            matches!(err.fault(), Some(VimFault::Snapshot { .. })),
            "{err}"
        );
        let out = Command::new(exe)
            .args([
                "lab",
                "write",
                "lab-vm-01",
                "--percent",
                "1",
                "--json",
                "--state",
            ])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["disks"].as_array().unwrap().len(), 2, "{report}");
        Ok::<_, Error>(())
    })();
    child.kill().unwrap();
    child.wait().unwrap();
    result.unwrap();
}

#[test]
fn a_storage_vmotion_to_the_nfs_datastore_moves_the_files_and_restarts_change_tracking() {
    let t = tempfile::tempdir().unwrap();
    let lab = start(t.path());
    let session = connect(&lab);
    let vm = vm_named(&session, "lab-vm-01");
    session
        .set_change_tracking(&vm.moref, true, Duration::from_secs(30))
        .unwrap();
    let first = session
        .create_snapshot(&vm.moref, &snap("before", false), Duration::from_secs(30))
        .unwrap();
    let before = session.snapshot_disks(&first).unwrap();
    session
        .remove_snapshot(&first, Duration::from_secs(30))
        .unwrap();
    assert!(before[0].file_name.starts_with("[datastore1] "));

    // The datastore reports its type, as a host does.
    let nfs = MoRef::new("Datastore", "nfs1");
    let req = soap::retrieve_properties_ex(
        &session.service_content().property_collector,
        "Datastore",
        &["summary.type"],
        &soap::Objects::One(nfs.clone()),
        None,
    );
    let answer = session.call(&req, |xml| Ok(xml.to_string())).unwrap();
    assert!(answer.contains(">NFS</val>"), "{answer}");

    session
        .run_task(&soap::relocate_vm(&vm.moref, &nfs), Duration::from_secs(30))
        .unwrap();
    let moved = vm_named(&session, "lab-vm-01");
    assert_eq!(moved.disks[0].file_name, "[nfs1] lab-vm-01/lab-vm-01.vmdk");
    assert_eq!(
        moved.disks[0].datastore,
        Some(MoRef::new("Datastore", "nfs1"))
    );
    assert!(
        !lab.datastore_dir()
            .join("lab-vm-01/lab-vm-01-flat.vmdk")
            .exists()
    );
    // A new change-id epoch: the ids from before the move are not answered.
    let snap2 = session
        .create_snapshot(&vm.moref, &snap("after", false), Duration::from_secs(30))
        .unwrap();
    let after = session.snapshot_disks(&snap2).unwrap();
    let epoch = |d: &coffer::vsphere::types::VmDisk| {
        coffer::plan::cbt::change_id_epoch(&d.change_id.as_ref().unwrap().0).to_string()
    };
    assert_ne!(epoch(&before[0]), epoch(&after[0]));
    let old = session.changed_disk_areas(
        &vm.moref,
        &snap2,
        2000,
        after[0].capacity_bytes,
        before[0].change_id.as_ref().unwrap(),
    );
    assert!(old.is_err(), "{old:?}");
    // On NFS the allocated-areas query faults.
    let all = session.changed_disk_areas(
        &vm.moref,
        &snap2,
        2000,
        after[0].capacity_bytes,
        &ChangeId::all(),
    );
    match all {
        Err(Error::Fault(f)) => assert!(f.to_string().contains("only on VMFS"), "{f}"),
        other => panic!("`*` on NFS answered {other:?}"),
    }
    // The files are served from the NFS datastore only.
    let ds = Datastore::new(&lab);
    let nfs_url = |p: &str| format!("{}/folder/{p}?dcPath=ha-datacenter&dsName=nfs1", ds.base);
    let flat = std::fs::read(
        lab.datastore_folder("nfs1")
            .join("lab-vm-01/lab-vm-01-flat.vmdk"),
    )
    .unwrap();
    let got = ds
        .http
        .get(nfs_url("lab-vm-01/lab-vm-01-flat.vmdk"))
        .header("Cookie", &ds.cookie)
        .header("Range", "bytes=0-65535")
        .send()
        .unwrap();
    assert_eq!(got.status(), 206);
    assert!(got.bytes().unwrap()[..] == flat[..65536]);
    assert_eq!(ds.get("lab-vm-01/lab-vm-01-flat.vmdk", None).status(), 404);
    session
        .remove_snapshot(&snap2, Duration::from_secs(30))
        .unwrap();
}
