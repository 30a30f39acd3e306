//! Instant recovery: a restore point served over NFS v3 reads, through a
//! real NFS client, as the VM that was backed up; the client's writes land
//! in the session's overlay and never in the repository.

mod common;

use std::net::IpAddr;
use std::path::Path;

use coffer::instant::export::PointExport;
use coffer::instant::serve;
use coffer::lab::nas::Nas;
use coffer::run::restore::VmxChanges;
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

fn lab_vm_names(lab_dir: &Path) -> Vec<String> {
    lab_state(lab_dir)["vms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect()
}

/// `coffer instant-recover` boots the lab VM from the repository through
/// the lab host's NFS client; the guest's writes go to the overlay and the
/// repository verifies unchanged; `stop` leaves nothing on the host, no
/// server and no overlay.
#[test]
fn instant_recover_boots_from_the_repository_and_stop_leaves_nothing() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let ds = backed_up(dir);
    let lab_dir = coffer::run::connect::lab_state_dir(&dir.join(".coffer"), "lab");
    let address = own_address(3);
    let listen = address.to_string();
    let run = |args: &[&str]| common::in_policy_dir(dir, args);

    let started = run(&["instant-recover", "lab-vm-01", "--listen", &listen]);
    assert!(started.status.success(), "{}", text(&started));
    let said = common::stdout(&started);
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
    assert!(
        state
            .get("nas_datastores")
            .and_then(|n| n.as_array())
            .is_none_or(|n| n.is_empty()),
        "no NAS datastore stays mounted: {state}"
    );
    assert!(
        Nas::mount(&listen, "/coffer-lab-vm-01-instant").is_err(),
        "the NFS server is stopped"
    );
    assert!(!dir.join(".coffer/instant/lab-vm-01-instant").exists());
    let listed = run(&["instant-recover", "list"]);
    assert!(common::stdout(&listed).contains("no instant-recovery sessions"));
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
