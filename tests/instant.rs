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
