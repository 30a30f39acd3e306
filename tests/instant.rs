//! Instant recovery: a restore point served over NFS v3 reads, through a
//! real NFS client, as the VM that was backed up; the client's writes land
//! in the session's overlay and never in the repository.

mod common;

use std::net::IpAddr;
use std::path::Path;

use coffer::instant::client::Nas;
use coffer::instant::export::PointExport;
use coffer::instant::serve;
use coffer::lab::{Lab, LabConfig, LabHandle};
use coffer::run::restore::VmxChanges;
use coffer::vsphere::soap::{self, Objects};
use coffer::vsphere::types::MoRef;
use coffer::vsphere::{Error, Session, VimFault};
use common::text;

/// A loopback address of this test's own, so that servers of tests
/// running side by side do not share ports 111 and 2049.
fn own_address(n: u8) -> IpAddr {
    let pid = std::process::id();
    format!("127.{}.{}.{n}", 80 + (pid >> 8) % 100, pid % 250 + 1)
        .parse()
        .unwrap()
}

fn backed_up(dir: &Path) -> std::path::PathBuf {
    let lab_state = common::one_vm_lab(dir);
    let lab = coffer::lab::Lab::start(coffer::lab::LabConfig::new(&lab_state)).unwrap();
    let ds = lab.datastore_dir();
    drop(lab);
    let backup = common::in_policy_dir(dir, &["backup", "lab-vm-01"]);
    assert!(backup.status.success(), "{}", text(&backup));
    ds
}

#[test]
fn a_point_served_over_nfs_reads_as_the_backup_and_writes_stay_in_the_overlay() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let ds = backed_up(dir);
    let (repo, points) = common::local_points(dir);
    let m = points.last().unwrap().clone();
    let overlay = dir.join("overlay");
    let changes = VmxChanges {
        name: "lab-vm-01-ir".into(),
        ..VmxChanges::default()
    };
    let export = PointExport::new(repo.clone(), &m, &changes, &overlay).unwrap();
    let address = own_address(1);
    let server = serve::serve(
        export.clone(),
        "coffer-test",
        address,
        &[serve::PORTMAP_PORT, serve::NFS_PORT],
    )
    .unwrap();
    let mut nas = Nas::mount(&address.to_string(), "/coffer-test").unwrap();
    assert_eq!(nas.list("").unwrap(), vec!["lab-vm-01-ir".to_string()]);
    let mut files = nas.list("lab-vm-01-ir").unwrap();
    files.sort();
    assert_eq!(
        files,
        [
            "lab-vm-01-ir-flat.vmdk",
            "lab-vm-01-ir.nvram",
            "lab-vm-01-ir.vmdk",
            "lab-vm-01-ir.vmx",
            "lab-vm-01-ir_1-flat.vmdk",
            "lab-vm-01-ir_1.vmdk"
        ]
    );
    let vmx = String::from_utf8(nas.read_all("lab-vm-01-ir/lab-vm-01-ir.vmx").unwrap()).unwrap();
    assert_eq!(
        coffer::vsphere::vmx::value(&vmx, "displayName"),
        Some("lab-vm-01-ir")
    );
    let flat = "lab-vm-01-ir/lab-vm-01-ir-flat.vmdk";
    let original = std::fs::read(ds.join("lab-vm-01/lab-vm-01-flat.vmdk")).unwrap();
    assert!(
        nas.read_all(flat).unwrap() == original,
        "the disk reads as backed up"
    );
    let second = std::fs::read(ds.join("lab-vm-01/lab-vm-01_1-flat.vmdk")).unwrap();
    assert!(
        nas.read_all("lab-vm-01-ir/lab-vm-01-ir_1-flat.vmdk")
            .unwrap()
            == second
    );

    // A write inside a block, one across two blocks, and a file the host
    // creates, as ESXi does with its lock files.
    nas.write_at(flat, 5000, b"written by the guest").unwrap();
    nas.write_at(flat, 8190, b"across").unwrap();
    let mut expect = original.clone();
    expect[5000..5020].copy_from_slice(b"written by the guest");
    expect[8190..8196].copy_from_slice(b"across");
    assert!(nas.read_at(flat, 0, 3 << 20).unwrap() == expect[..3 << 20]);
    nas.create("lab-vm-01-ir/.lck-0000000000000001").unwrap();
    nas.write_file("lab-vm-01-ir/.lck-0000000000000001", b"lock")
        .unwrap();
    assert_eq!(
        nas.read_all("lab-vm-01-ir/.lck-0000000000000001").unwrap(),
        b"lock"
    );
    // The host rewrites the .vmx, shorter and then longer.
    let vmx_path = "lab-vm-01-ir/lab-vm-01-ir.vmx";
    nas.write_file(vmx_path, b"short = \"1\"\n").unwrap();
    assert_eq!(nas.read_all(vmx_path).unwrap(), b"short = \"1\"\n");
    let long = vmx.repeat(3);
    nas.write_file(vmx_path, long.as_bytes()).unwrap();
    assert_eq!(nas.read_all(vmx_path).unwrap(), long.as_bytes());
    nas.remove("lab-vm-01-ir/.lck-0000000000000001").unwrap();
    assert!(
        !nas.list("lab-vm-01-ir")
            .unwrap()
            .iter()
            .any(|f| f.starts_with(".lck"))
    );
    nas.unmount().unwrap();

    // The writes are in the overlay; the repository is as it was.
    assert!(PointExport::overlay_bytes(&overlay) > 0);
    let verified = coffer::repo::ops::verify(&repo, None, None, 2).unwrap();
    assert!(verified.ok(), "the repository verifies after the session");
    assert!(
        common::restore_disk_bytes(&repo, &m, 0, &dir.join("d0.raw")) == original,
        "the point still restores to the bytes backed up"
    );
    drop(server);
    assert!(
        Nas::mount(&address.to_string(), "/coffer-test").is_err(),
        "a stopped server serves nothing"
    );
}

/// The lab's state: its VMs by name, and its NAS datastores (as JSON).
fn lab_state(lab_dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(lab_dir.join("state.json")).unwrap()).unwrap()
}

/// No NAS datastore stays mounted in the lab.
fn assert_no_nas_datastore(state: &serde_json::Value) {
    assert!(
        state
            .get("nas_datastores")
            .and_then(|n| n.as_array())
            .is_none_or(|n| n.is_empty()),
        "no NAS datastore stays mounted: {state}"
    );
}

fn lab_vm_names(lab_dir: &Path) -> Vec<String> {
    lab_state(lab_dir)["vms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect()
}

/// A started instant-recovery session of the one-VM lab's `lab-vm-01`,
/// served on `own_address(n)`.
struct Running {
    t: tempfile::TempDir,
    /// The lab's datastore folder and its state folder.
    ds: std::path::PathBuf,
    lab_dir: std::path::PathBuf,
    listen: String,
    /// What `instant-recover` printed.
    said: String,
}

impl Running {
    fn start(n: u8) -> Running {
        let t = tempfile::tempdir().unwrap();
        let ds = backed_up(t.path());
        let lab_dir = coffer::run::connect::lab_state_dir(&t.path().join(".coffer"), "lab");
        let listen = own_address(n).to_string();
        let started = common::in_policy_dir(
            t.path(),
            &["instant-recover", "lab-vm-01", "--listen", &listen],
        );
        assert!(started.status.success(), "{}", text(&started));
        Running {
            said: common::stdout(&started),
            t,
            ds,
            lab_dir,
            listen,
        }
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        common::in_policy_dir(self.t.path(), args)
    }
}

/// `coffer instant-recover` boots the lab VM from the repository through
/// the lab host's NFS client; the guest's writes go to the overlay and the
/// repository verifies unchanged; `stop` leaves nothing on the host, no
/// server and no overlay.
#[test]
fn instant_recover_boots_from_the_repository_and_stop_leaves_nothing() {
    let session = Running::start(5);
    let (dir, ds, lab_dir, listen) = (
        session.t.path(),
        session.ds.clone(),
        session.lab_dir.clone(),
        session.listen.clone(),
    );
    let run = |args: &[&str]| session.run(args);
    let said = &session.said;
    assert!(said.contains("lab-vm-01-instant runs from point"), "{said}");
    assert!(said.contains("VMware Tools heartbeat after"), "{said}");
    assert!(lab_vm_names(&lab_dir).contains(&"lab-vm-01-instant".to_string()));

    // A second session of the same name is refused and changes nothing.
    let again = run(&["instant-recover", "lab-vm-01", "--listen", &listen]);
    assert!(!again.status.success());
    assert!(
        text(&again).contains("exists; stop it first"),
        "{}",
        text(&again)
    );

    // The guest writes to its disk: through the host's NFS client into
    // coffer's overlay.
    coffer::lab::write(&lab_dir, "lab-vm-01-instant", 10.0).unwrap();
    let mut nas = Nas::mount(&listen, "/coffer-lab-vm-01-instant").unwrap();
    let flat = "lab-vm-01-instant/lab-vm-01-instant-flat.vmdk";
    let original = std::fs::read(ds.join("lab-vm-01/lab-vm-01-flat.vmdk")).unwrap();
    let now = nas.read_all(flat).unwrap();
    assert_eq!(now.len(), original.len());
    assert!(now != original, "the guest's writes show in its disk");
    assert!(
        nas.list("lab-vm-01-instant")
            .unwrap()
            .iter()
            .any(|f| f.starts_with(".lck-")),
        "the host holds its lock file in the export"
    );
    drop(nas);

    let listed = run(&["instant-recover", "list"]);
    assert!(listed.status.success(), "{}", text(&listed));
    let line = common::stdout(&listed)
        .lines()
        .find(|l| l.starts_with("lab-vm-01-instant"))
        .map(str::to_string)
        .unwrap_or_default();
    assert!(line.contains("running"), "{}", common::stdout(&listed));

    // The recovery and its times are recorded: compliance names it.
    let c = text(&run(&["compliance"]));
    let recovery = c
        .lines()
        .find(|l| l.contains("last recovery"))
        .unwrap_or_else(|| panic!("no recovery in {c}"));
    assert!(
        recovery.contains("(instant recovery of point")
            && recovery.contains("onto lab as lab-vm-01-instant)")
            && recovery.contains("powered on after")
            && recovery.contains("heartbeat after"),
        "{recovery}"
    );

    // The repository is as it was: it verifies, the point restores to the
    // bytes backed up.
    let verified = run(&["repo", "verify", "--tier", "local"]);
    assert!(verified.status.success(), "{}", text(&verified));
    let (repo, points) = common::local_points(dir);
    assert_eq!(points.len(), 1, "instant recovery writes no point");
    assert!(common::restore_disk_bytes(&repo, &points[0], 0, &dir.join("d0.raw")) == original);

    let stopped = run(&["instant-recover", "stop", "lab-vm-01-instant"]);
    assert!(stopped.status.success(), "{}", text(&stopped));
    assert!(!lab_vm_names(&lab_dir).contains(&"lab-vm-01-instant".to_string()));
    let state = lab_state(&lab_dir);
    assert_no_nas_datastore(&state);
    assert!(
        Nas::mount(&listen, "/coffer-lab-vm-01-instant").is_err(),
        "the NFS server is stopped"
    );
    assert!(!dir.join(".coffer/instant/lab-vm-01-instant").exists());
    let listed = run(&["instant-recover", "list"]);
    assert!(common::stdout(&listed).contains("no instant-recovery sessions"));
}

/// `migrate` moves the instant VM onto the lab's datastore: the copy holds
/// the point plus the guest's writes, byte for byte, runs under the same
/// name, and the session leaves nothing behind.
#[test]
fn migrate_moves_the_instant_vm_with_its_writes_onto_the_datastore() {
    let session = Running::start(6);
    let (dir, ds, lab_dir, listen) = (
        session.t.path(),
        session.ds.clone(),
        session.lab_dir.clone(),
        session.listen.clone(),
    );
    let run = |args: &[&str]| session.run(args);
    coffer::lab::write(&lab_dir, "lab-vm-01-instant", 10.0).unwrap();
    let mut nas = Nas::mount(&listen, "/coffer-lab-vm-01-instant").unwrap();
    let disks = [
        "lab-vm-01-instant-flat.vmdk",
        "lab-vm-01-instant_1-flat.vmdk",
    ];
    let seen: Vec<Vec<u8>> = disks
        .iter()
        .map(|d| nas.read_all(&format!("lab-vm-01-instant/{d}")).unwrap())
        .collect();
    drop(nas);
    let original = std::fs::read(ds.join("lab-vm-01/lab-vm-01-flat.vmdk")).unwrap();
    assert!(seen[0] != original, "the guest wrote to its disk");

    let migrated = run(&["instant-recover", "migrate", "lab-vm-01-instant"]);
    assert!(migrated.status.success(), "{}", text(&migrated));
    assert!(
        common::stdout(&migrated).contains("migrated lab-vm-01-instant to datastore datastore1"),
        "{}",
        common::stdout(&migrated)
    );
    for (d, bytes) in disks.iter().zip(&seen) {
        let on_datastore = std::fs::read(ds.join("lab-vm-01-instant").join(d)).unwrap();
        assert!(
            &on_datastore == bytes,
            "{d} on the datastore is the point plus the guest's writes"
        );
    }
    let state = lab_state(&lab_dir);
    let vm = state["vms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "lab-vm-01-instant")
        .expect("the migrated VM is registered")
        .clone();
    assert_eq!(vm["vmx"], "lab-vm-01-instant/lab-vm-01-instant.vmx");
    assert_eq!(vm["powered_on"], true, "{vm}");
    assert_no_nas_datastore(&state);
    assert!(Nas::mount(&listen, "/coffer-lab-vm-01-instant").is_err());
    assert!(!dir.join(".coffer/instant/lab-vm-01-instant").exists());
    // The point is as it was.
    let (repo, points) = common::local_points(dir);
    assert!(common::restore_disk_bytes(&repo, &points[0], 0, &dir.join("d0.raw")) == original);
}

/// A policy directory with the lab as a vCenter (two datacenters, a host
/// in each), `lab-vm-01` backed up once.
fn backed_up_on_vcenter(dir: &Path) {
    common::one_vm_lab_policy(dir, "");
    let toml = std::fs::read_to_string(dir.join("coffer.toml"))
        .unwrap()
        .replace("lab_vms = 1", "lab_vms = 1\nlab_mode = \"vcenter\"");
    std::fs::write(dir.join("coffer.toml"), toml).unwrap();
    for args in [&["repo", "init", "--all"][..], &["backup", "lab-vm-01"]] {
        let out = common::in_policy_dir(dir, args);
        assert!(out.status.success(), "{}", text(&out));
    }
}

fn lab_vm<'a>(state: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    state["vms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name)
}

/// Through a vCenter, instant recovery runs the VM on the host asked for
/// (in that host's datacenter, VM folder and resource pool), refuses to
/// guess between two hosts, and `stop` leaves nothing.
#[test]
fn instant_recover_through_a_vcenter_runs_on_the_host_asked_for() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    backed_up_on_vcenter(dir);
    let lab_dir = coffer::run::connect::lab_state_dir(&dir.join(".coffer"), "lab");
    let listen = own_address(7).to_string();
    let run = |args: &[&str]| common::in_policy_dir(dir, args);

    let unsure = run(&["instant-recover", "lab-vm-01", "--listen", &listen]);
    assert!(!unsure.status.success());
    assert!(
        text(&unsure).contains("name the host with --host (hosts: "),
        "{}",
        text(&unsure)
    );
    assert!(lab_vm(&lab_state(&lab_dir), "lab-vm-01-instant").is_none());
    assert!(!dir.join(".coffer/instant/lab-vm-01-instant").exists());

    let started = run(&[
        "instant-recover",
        "lab-vm-01",
        "--listen",
        &listen,
        "--host",
        "host-2",
    ]);
    assert!(started.status.success(), "{}", text(&started));
    assert!(common::stdout(&started).contains("VMware Tools heartbeat after"));
    let state = lab_state(&lab_dir);
    let vm = lab_vm(&state, "lab-vm-01-instant").expect("registered");
    assert_eq!(vm["host"], "host-2", "{vm}");
    assert_eq!(vm["powered_on"], true, "{vm}");

    let stopped = run(&["instant-recover", "stop", "lab-vm-01-instant"]);
    assert!(stopped.status.success(), "{}", text(&stopped));
    let state = lab_state(&lab_dir);
    assert!(lab_vm(&state, "lab-vm-01-instant").is_none());
    assert_no_nas_datastore(&state);
    assert!(Nas::mount(&listen, "/coffer-lab-vm-01-instant").is_err());
}

/// Through a vCenter, `migrate` is a Storage vMotion: the instant VM moves
/// onto the datastore with the guest's writes and keeps running, and the
/// session leaves nothing behind.
#[test]
fn migrate_through_a_vcenter_is_a_storage_vmotion() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    backed_up_on_vcenter(dir);
    let lab_dir = coffer::run::connect::lab_state_dir(&dir.join(".coffer"), "lab");
    let listen = own_address(8).to_string();
    let run = |args: &[&str]| common::in_policy_dir(dir, args);
    let started = run(&[
        "instant-recover",
        "lab-vm-01",
        "--listen",
        &listen,
        "--host",
        "host-2",
    ]);
    assert!(started.status.success(), "{}", text(&started));
    coffer::lab::write(&lab_dir, "lab-vm-01-instant", 10.0).unwrap();
    let mut nas = Nas::mount(&listen, "/coffer-lab-vm-01-instant").unwrap();
    let seen = nas
        .read_all("lab-vm-01-instant/lab-vm-01-instant-flat.vmdk")
        .unwrap();
    drop(nas);
    let migrated = run(&["instant-recover", "migrate", "lab-vm-01-instant"]);
    assert!(migrated.status.success(), "{}", text(&migrated));
    assert!(
        common::stdout(&migrated).contains("by Storage vMotion, running throughout"),
        "{}",
        common::stdout(&migrated)
    );
    let state = lab_state(&lab_dir);
    let vm = lab_vm(&state, "lab-vm-01-instant").expect("still registered");
    assert_eq!(vm["powered_on"], true, "{vm}");
    assert_eq!(vm["host"], "host-2", "{vm}");
    assert!(vm.get("nas").is_none_or(|n| n.is_null()), "{vm}");
    let lab = coffer::lab::Lab::start(coffer::lab::LabConfig::new(&lab_dir)).unwrap();
    let ds = lab.datastore_dir();
    drop(lab);
    let moved = std::fs::read(ds.join("lab-vm-01-instant/lab-vm-01-instant-flat.vmdk")).unwrap();
    assert!(moved == seen, "the disk moved with the guest's writes");
    assert_no_nas_datastore(&state);
    assert!(Nas::mount(&listen, "/coffer-lab-vm-01-instant").is_err());
    assert!(!dir.join(".coffer/instant/lab-vm-01-instant").exists());
}

/// `restore --to-source` onto a vCenter puts the VM on the host asked for,
/// and its disk holds the point's bytes.
#[test]
fn restore_onto_a_vcenter_registers_the_vm_on_the_host_asked_for() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    backed_up_on_vcenter(dir);
    let lab_dir = coffer::run::connect::lab_state_dir(&dir.join(".coffer"), "lab");
    let restored = common::in_policy_dir(
        dir,
        &[
            "restore",
            "lab-vm-01",
            "--to-source",
            "lab",
            "--host",
            "host-2",
            "--name",
            "lab-vm-01-back",
            "--power-on",
        ],
    );
    assert!(restored.status.success(), "{}", text(&restored));
    let state = lab_state(&lab_dir);
    let vm = lab_vm(&state, "lab-vm-01-back").expect("registered");
    assert_eq!(vm["host"], "host-2", "{vm}");
    assert_eq!(vm["powered_on"], true, "{vm}");
    let (repo, points) = common::local_points(dir);
    let lab = coffer::lab::Lab::start(coffer::lab::LabConfig::new(&lab_dir)).unwrap();
    let ds = lab.datastore_dir();
    drop(lab);
    let restored_disk = std::fs::read(ds.join("lab-vm-01-back/lab-vm-01-back-flat.vmdk")).unwrap();
    assert!(common::restore_disk_bytes(&repo, &points[0], 0, &dir.join("d0.raw")) == restored_disk);
}

/// A start that fails on the host (the NFS server cannot listen on an
/// address this machine does not have) leaves no session and nothing on
/// the host.
#[test]
fn a_failed_start_leaves_no_session_and_nothing_on_the_host() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    backed_up(dir);
    let lab_dir = coffer::run::connect::lab_state_dir(&dir.join(".coffer"), "lab");
    let vms = lab_vm_names(&lab_dir);
    let failed = common::in_policy_dir(
        dir,
        &["instant-recover", "lab-vm-01", "--listen", "192.0.2.1"],
    );
    assert!(!failed.status.success());
    assert!(text(&failed).contains("NFS server"), "{}", text(&failed));
    assert!(!dir.join(".coffer/instant/lab-vm-01-instant").exists());
    assert_eq!(
        lab_vm_names(&lab_dir),
        vms,
        "nothing registered on the host"
    );
}

// ---- the lab's NAS datastores ----------------------------------------------

const TASK: std::time::Duration = std::time::Duration::from_secs(30);

/// The name of a vim25 fault an answer carries.
fn fault_name(e: &Error) -> String {
    match e {
        Error::Fault(VimFault::Other { name, .. }) => name.clone(),
        other => other.to_string(),
    }
}

/// lab-vm-01 backed up, its boot sector wiped first when `wipe_boot`,
/// and its last point served at `address` as export `/coffer-test`.
fn served_point(
    dir: &Path,
    address: IpAddr,
    wipe_boot: bool,
) -> (PointExport, std::path::PathBuf, serve::Server) {
    let lab_state = common::one_vm_lab(dir);
    let lab = Lab::start(LabConfig::new(&lab_state)).unwrap();
    if wipe_boot {
        let flat = lab.datastore_dir().join("lab-vm-01/lab-vm-01-flat.vmdk");
        let file = std::fs::OpenOptions::new().write(true).open(flat).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&file, &[0u8; 512], 0).unwrap();
        assert!(!coffer::lab::boots(&lab_state, "lab-vm-01").unwrap());
    }
    drop(lab);
    let backup = common::in_policy_dir(dir, &["backup", "lab-vm-01"]);
    assert!(backup.status.success(), "{}", text(&backup));
    let (repo, points) = common::local_points(dir);
    let overlay = dir.join("overlay");
    let changes = VmxChanges {
        name: "lab-vm-01-ir".into(),
        ..VmxChanges::default()
    };
    let export = PointExport::new(repo, points.last().unwrap(), &changes, &overlay).unwrap();
    let server = serve::serve(
        export.clone(),
        "coffer-test",
        address,
        &[serve::PORTMAP_PORT, serve::NFS_PORT],
    )
    .unwrap();
    (export, overlay, server)
}

/// A host's (or any object's) properties `paths`, as the raw answer.
fn raw_properties(session: &Session, obj: &MoRef, paths: &[&str]) -> String {
    let req = soap::retrieve_properties_ex(
        &session.service_content().property_collector,
        &obj.kind,
        paths,
        &Objects::One(obj.clone()),
        None,
    );
    session.transport().post(&req).unwrap()
}

fn lab_nas_datastores(lab: &LabHandle) -> Vec<String> {
    coffer::lab::state::Store::new(lab.state_dir())
        .read(|st, _| Ok(st.nas_datastores.iter().map(|d| d.name.clone()).collect()))
        .unwrap()
}

/// The VM `vm`'s heartbeat (`guestHeartbeatStatus`: gray, green, red).
fn heartbeat(session: &Session, vm: &MoRef) -> String {
    let xml = raw_properties(session, vm, &["guestHeartbeatStatus"]);
    ["green", "red", "gray", "yellow"]
        .iter()
        .find(|c| xml.contains(&format!(">{c}</val>")))
        .map(|c| c.to_string())
        .unwrap_or(xml)
}

/// What instant recovery does with a host: mount the export as a NAS
/// datastore, register the VM from it and power it on answering "moved",
/// on `host` in `folder`. Answers the datastore and the VM.
fn boot_from_export(
    session: &Session,
    address: IpAddr,
    host: &MoRef,
    folder: &MoRef,
) -> (MoRef, MoRef) {
    let ds = session
        .create_nas_datastore(host, &address.to_string(), "/coffer-test", "coffer-ir")
        .unwrap();
    assert_eq!(ds, MoRef::new("Datastore", "coffer-ir"));
    let info = session
        .run_task(
            &soap::register_vm(
                folder,
                "[coffer-ir] lab-vm-01-ir/lab-vm-01-ir.vmx",
                Some("lab-vm-01-ir"),
                None,
                Some(host),
            ),
            TASK,
        )
        .expect("register from the NAS datastore");
    let vm = info.result.expect("the registered VM");
    session.power_on_answering(&vm, true, TASK).unwrap();
    (ds, vm)
}

fn nas_vm_record(session: &Session) -> coffer::inventory::VmRecord {
    session
        .list_vms()
        .unwrap()
        .into_iter()
        .find(|v| v.name == "lab-vm-01-ir")
        .expect("the NAS VM is listed")
}

fn locks(nas: &mut Nas) -> Vec<String> {
    nas.list("lab-vm-01-ir")
        .unwrap()
        .into_iter()
        .filter(|f| f.starts_with(".lck-"))
        .collect()
}

/// The whole round: boot the point from the export, see the guest run,
/// its lock files and .vmx on the export, its writes in the overlay, then
/// power off, unregister and unmount.
fn instant_boot_round(vcenter: bool, n: u8) {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let address = own_address(n);
    let (export, overlay, server) = served_point(dir, address, false);
    let mut config = LabConfig::new(dir.join("host"));
    config.vcenter = vcenter;
    let lab = Lab::start(config).unwrap();
    let session = Session::connect(lab.url(), &lab.tls_trust(), lab.user(), lab.password())
        .expect("login to the lab");
    // On a vCenter, the second host, in the datacenter inside a folder.
    let (host, folder, system) = if vcenter {
        (
            MoRef::new("HostSystem", "host-2"),
            MoRef::new("Folder", "group-v2"),
            "datastoreSystem-host-2",
        )
    } else {
        (
            MoRef::new("HostSystem", "ha-host"),
            MoRef::new("Folder", "ha-folder-vm"),
            "ha-datastoresystem",
        )
    };
    assert_eq!(
        session.datastore_system(&host).unwrap(),
        MoRef::new("HostDatastoreSystem", system)
    );

    // Nothing listens at another address of ours: the mount fails.
    let err = session
        .create_nas_datastore(
            &host,
            &own_address(n + 100).to_string(),
            "/coffer-test",
            "gone",
        )
        .unwrap_err();
    assert_eq!(fault_name(&err), "HostConfigFault", "{err}");
    assert!(err.to_string().contains("NFS mount"), "{err}");
    assert!(lab_nas_datastores(&lab).is_empty());

    let (ds, vm) = boot_from_export(&session, address, &host, &folder);
    assert_eq!(lab_nas_datastores(&lab), ["coffer-ir"]);
    // A name in use, and the same export again.
    for (remote, name, fault) in [
        ("/coffer-test", "datastore1", "DuplicateName"),
        ("/coffer-test", "coffer-ir", "DuplicateName"),
        ("/coffer-test", "coffer-ir-2", "AlreadyExists"),
    ] {
        let err = session
            .create_nas_datastore(&host, &address.to_string(), remote, name)
            .unwrap_err();
        assert_eq!(fault_name(&err), fault, "{name}: {err}");
    }
    // The host and the datastore say so.
    let host_props = raw_properties(&session, &host, &["datastore"]);
    assert!(host_props.contains(">coffer-ir<"), "{host_props}");
    let ds_props = raw_properties(
        &session,
        &ds,
        &["summary.type", "info.nas.remoteHost", "info.nas.remotePath"],
    );
    assert!(ds_props.contains(">NFS<"), "{ds_props}");
    assert!(ds_props.contains(&format!(">{address}<")), "{ds_props}");
    assert!(ds_props.contains(">/coffer-test<"), "{ds_props}");

    let rec = nas_vm_record(&session);
    assert_eq!(
        rec.tools_running_status.as_deref(),
        Some("guestToolsRunning")
    );
    assert_eq!(heartbeat(&session, &vm), "green");
    // Its guest answers on the ports its .vmx declares.
    let ip = rec
        .ip_address
        .clone()
        .expect("the guest reports an address");
    std::net::TcpStream::connect((ip.as_str(), 22)).expect("the guest listens on port 22");
    assert_eq!(
        rec.vmx_path.as_deref(),
        Some("[coffer-ir] lab-vm-01-ir/lab-vm-01-ir.vmx")
    );
    assert_eq!(rec.host.as_ref(), Some(&host));
    assert!(
        rec.disks[0]
            .file_name
            .starts_with("[coffer-ir] lab-vm-01-ir/"),
        "{:?}",
        rec.disks[0]
    );

    // On the export: a lock file per disk, and the .vmx the host rewrote
    // (its new place), kept in the overlay.
    let mut nas = Nas::mount(&address.to_string(), "/coffer-test").unwrap();
    assert_eq!(locks(&mut nas).len(), 2, "{:?}", nas.list("lab-vm-01-ir"));
    let vmx = String::from_utf8(nas.read_all("lab-vm-01-ir/lab-vm-01-ir.vmx").unwrap()).unwrap();
    assert_eq!(
        coffer::vsphere::vmx::value(&vmx, "uuid.location"),
        Some(coffer::lab::state::location_uuid("lab-vm-01-ir/lab-vm-01-ir.vmx").as_str())
    );
    assert!(PointExport::overlay_bytes(&overlay) > 0);

    // The guest writes: through NFS WRITE, into the overlay.
    let before = PointExport::overlay_bytes(&overlay);
    let writes = coffer::lab::write(lab.state_dir(), "lab-vm-01-ir", 1.0).unwrap();
    let area = writes[0].areas[0].clone();
    let flat = "lab-vm-01-ir/lab-vm-01-ir-flat.vmdk";
    let seen = nas.read_at(flat, area.start, 64).unwrap();
    assert!(
        seen.starts_with(b"coffer lab write block"),
        "{:?}",
        String::from_utf8_lossy(&seen)
    );
    assert!(PointExport::overlay_bytes(&overlay) > before);

    // What the lab does not do on NAS: snapshots (so backups) and moves.
    let err = session
        .create_snapshot(
            &vm,
            &soap::SnapshotRequest {
                name: "no",
                description: "",
                memory: false,
                quiesce: false,
            },
            TASK,
        )
        .unwrap_err();
    assert!(err.to_string().contains("NAS datastores"), "{err}");
    let err = session
        .run_task(&soap::relocate_vm(&vm, &ds), TASK)
        .unwrap_err();
    assert!(err.to_string().contains("NAS datastores"), "{err}");

    session.run_task(&soap::power_off_vm(&vm), TASK).unwrap();
    assert!(locks(&mut nas).is_empty(), "the host let go of its locks");
    assert_eq!(heartbeat(&session, &vm), "gray");
    // Still registered: the datastore is in use.
    let err = session.remove_datastore(&host, &ds).unwrap_err();
    assert_eq!(fault_name(&err), "ResourceInUse", "{err}");
    session.call_empty(&soap::unregister_vm(&vm)).unwrap();
    session.remove_datastore(&host, &ds).unwrap();
    assert!(lab_nas_datastores(&lab).is_empty());
    let host_props = raw_properties(&session, &host, &["datastore"]);
    assert!(!host_props.contains(">coffer-ir<"), "{host_props}");
    // The files stay on the export: unregistering deletes nothing.
    assert!(nas.size(flat).is_ok());
    nas.unmount().unwrap();
    drop(server);
    drop(export);
}

#[test]
fn a_lab_host_boots_a_point_from_coffers_nfs_export() {
    instant_boot_round(false, 2);
}

#[test]
fn a_lab_vcenter_boots_a_point_from_coffers_nfs_export_on_its_second_host() {
    instant_boot_round(true, 3);
}

#[test]
fn a_point_without_a_boot_sector_does_not_boot_from_the_export() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let address = own_address(4);
    let (_export, _overlay, _server) = served_point(dir, address, true);
    let lab = Lab::start(LabConfig::new(dir.join("host"))).unwrap();
    let session = Session::connect(lab.url(), &lab.tls_trust(), lab.user(), lab.password())
        .expect("login to the lab");
    let host = MoRef::new("HostSystem", "ha-host");
    let (ds, vm) = boot_from_export(
        &session,
        address,
        &host,
        &MoRef::new("Folder", "ha-folder-vm"),
    );
    let rec = nas_vm_record(&session);
    assert_eq!(
        rec.power_state,
        Some(coffer::vsphere::types::PowerState::PoweredOn)
    );
    assert_eq!(
        rec.tools_running_status.as_deref(),
        Some("guestToolsNotRunning")
    );
    assert_eq!(heartbeat(&session, &vm), "red");
    // Destroy: unregistered, its files removed through NFS.
    session.run_task(&soap::power_off_vm(&vm), TASK).unwrap();
    session.run_task(&soap::destroy(&vm), TASK).unwrap();
    let mut nas = Nas::mount(&address.to_string(), "/coffer-test").unwrap();
    assert!(nas.list("lab-vm-01-ir").unwrap_or_default().is_empty());
    nas.unmount().unwrap();
    session.remove_datastore(&host, &ds).unwrap();
    assert!(lab_nas_datastores(&lab).is_empty());
}
