//! A disk a snapshot cannot hold does not stop the VM's backup: an
//! independent disk is left out, recorded in the point with the reason,
//! said in the run's result and alerted in every plan; the other disks are
//! backed up and restore byte for byte.

mod common;

use std::path::Path;
use std::process::Output;

use common::text;

use coffer::repo::Repository;
use coffer::repo::local::LocalStore;

fn run(dir: &Path, args: &[&str]) -> Output {
    common::in_policy_dir(dir, args)
}

#[test]
fn an_independent_disk_is_left_out_and_said_and_the_other_disks_are_backed_up() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let lab_state = common::one_vm_lab(dir);
    coffer::lab::set_disk_mode(&lab_state, "lab-vm-01", 2001, "independent_persistent").unwrap();

    let plan = run(dir, &["plan"]);
    assert!(
        text(&plan).contains("! alert lab-vm-01: disk [datastore1] lab-vm-01/lab-vm-01_1.vmdk is independent (independent_persistent): snapshots leave it out; its backups leave it out"),
        "{}",
        text(&plan)
    );
    let applied = run(dir, &["apply", "--no-mail"]);
    let applied_text = text(&applied);
    assert!(applied.status.success(), "{applied_text}");
    assert!(
        applied_text
            .contains("; skipped disk [datastore1] lab-vm-01/lab-vm-01_1.vmdk is independent"),
        "{applied_text}"
    );

    let repo = Repository::open(
        std::sync::Arc::new(LocalStore::new(dir.join("repo")).unwrap()),
        None,
    )
    .unwrap();
    let points = repo.list_points().unwrap();
    assert_eq!(points.len(), 1);
    let m = repo.read_manifest(&points[0]).unwrap();
    assert_eq!(
        m.disks.iter().map(|d| d.device_key).collect::<Vec<_>>(),
        [2000]
    );
    assert_eq!(m.skipped_disks.len(), 1);
    assert_eq!(m.skipped_disks[0].device_key, 2001);
    assert!(m.skipped_disks[0].reason.contains("independent"));
    let out = dir.join("disk0.raw");
    common::restore_bytes(&repo, &m, &out);
    let lab = coffer::lab::Lab::start(coffer::lab::LabConfig::new(&lab_state)).unwrap();
    let flat = std::fs::read(lab.datastore_dir().join("lab-vm-01/lab-vm-01-flat.vmdk")).unwrap();
    drop(lab);
    assert!(std::fs::read(&out).unwrap() == flat, "disk 2000 differs");

    // A VM whose every disk is independent is refused, with the reasons.
    coffer::lab::set_disk_mode(&lab_state, "lab-vm-01", 2000, "independent_nonpersistent").unwrap();
    let refused = run(dir, &["backup", "lab-vm-01"]);
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("no disk coffer can back up"),
        "{}",
        text(&refused)
    );
}

/// The lab's state file, as the lab keeps it between runs.
fn lab_state_json(lab_state: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(lab_state.join("state.json")).unwrap()).unwrap()
}

#[test]
fn an_encrypted_vm_is_refused_with_its_reason_before_any_snapshot() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let lab_state = common::one_vm_lab(dir);
    coffer::lab::set_encryption(&lab_state, "lab-vm-01", Some("key-7f3a")).unwrap();
    let before = lab_state_json(&lab_state);

    let inventory = run(dir, &["inventory", "--json"]);
    let inv: serde_json::Value = serde_json::from_slice(&inventory.stdout).unwrap();
    assert_eq!(
        inv["vms"][0]["encryption_key"],
        "key-7f3a@lab-kms",
        "{}",
        text(&inventory)
    );

    let reason = "the VM is encrypted (config.keyId key-7f3a@lab-kms): its disks would be read as ciphertext that cannot be restored without that key";
    let plan = run(dir, &["plan"]);
    let plan_text = text(&plan);
    assert!(
        plan_text.contains(&format!("! alert lab-vm-01: {reason}; it is not backed up")),
        "{plan_text}"
    );
    assert!(plan_text.contains("plan: 0 backups"), "{plan_text}");

    let applied = run(dir, &["apply", "--no-mail"]);
    let applied_text = text(&applied);
    assert!(applied_text.contains(reason), "{applied_text}");

    let refused = run(dir, &["backup", "lab-vm-01"]);
    assert!(!refused.status.success());
    assert!(text(&refused).contains(reason), "{}", text(&refused));

    // Nothing touched the VM: no snapshot was ever created (the lab numbers
    // each one from next_id), change tracking was not switched on, and no
    // point exists.
    let after = lab_state_json(&lab_state);
    assert_eq!(after["next_id"], before["next_id"]);
    assert_eq!(after["most_snapshots_at_once"], 0);
    assert_eq!(after["vms"][0]["cbt_enabled"], false);
    let repo = Repository::open(
        std::sync::Arc::new(LocalStore::new(dir.join("repo")).unwrap()),
        None,
    )
    .unwrap();
    assert!(repo.list_points().unwrap().is_empty());
}

/// The disk files a .vmx names (`*.fileName = "….vmdk"`).
fn vmx_disks(vmx: &str) -> Vec<(String, String)> {
    vmx.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().trim_matches('"').to_string()))
        .filter(|(k, v)| k.to_ascii_lowercase().ends_with(".filename") && v.ends_with(".vmdk"))
        .collect()
}

#[test]
fn a_point_without_its_first_disk_restores_the_others_in_their_slots_and_names_the_one_left_out() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let lab_state = common::one_vm_lab(dir);
    coffer::lab::set_disk_mode(&lab_state, "lab-vm-01", 2000, "independent_persistent").unwrap();
    let backup = run(dir, &["backup", "lab-vm-01"]);
    assert!(backup.status.success(), "{}", text(&backup));

    let lab = coffer::lab::Lab::start(coffer::lab::LabConfig::new(&lab_state)).unwrap();
    let ds = lab.datastore_dir();
    drop(lab);
    let second = std::fs::read(ds.join("lab-vm-01/lab-vm-01_1-flat.vmdk")).unwrap();
    let said = "not restored: device 2000: disk [datastore1] lab-vm-01/lab-vm-01.vmdk is independent (independent_persistent): snapshots leave it out; the point does not hold it, and the restored VM has no such disk";

    // To files: the second disk keeps its slot (scsi0:1, `_1`), the first
    // is gone from the .vmx, and every disk the .vmx names is there.
    let out_dir = dir.join("restored");
    let restored = run(
        dir,
        &["restore", "lab-vm-01", "-o", out_dir.to_str().unwrap()],
    );
    let restored_text = text(&restored);
    assert!(restored.status.success(), "{restored_text}");
    assert!(restored_text.contains(said), "{restored_text}");
    let vmx = std::fs::read_to_string(out_dir.join("lab-vm-01-restored.vmx")).unwrap();
    assert_eq!(
        vmx_disks(&vmx),
        [(
            "scsi0:1.fileName".to_string(),
            "lab-vm-01-restored_1.vmdk".to_string()
        )],
        "{vmx}"
    );
    assert!(!vmx.contains("scsi0:0."), "{vmx}");
    assert!(out_dir.join("lab-vm-01-restored_1.vmdk").exists());
    assert!(!out_dir.join("lab-vm-01-restored.vmdk").exists());
    assert!(
        std::fs::read(out_dir.join("lab-vm-01-restored_1-flat.vmdk")).unwrap() == second,
        "the restored second disk differs"
    );

    // Onto the host: the VM registers with the one disk the point holds.
    let onto = run(
        dir,
        &[
            "restore",
            "lab-vm-01",
            "--to-source",
            "lab",
            "--datastore",
            "datastore1",
            "--name",
            "back",
        ],
    );
    let onto_text = text(&onto);
    assert!(onto.status.success(), "{onto_text}");
    assert!(onto_text.contains(said), "{onto_text}");
    let inventory = run(dir, &["inventory", "--json"]);
    let inv: serde_json::Value = serde_json::from_slice(&inventory.stdout).unwrap();
    let back = inv["vms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "back")
        .unwrap_or_else(|| panic!("{}", text(&inventory)));
    let disks = back["disks"].as_array().unwrap();
    assert_eq!(disks.len(), 1, "{back}");
    // The host made the VM through its OVF import and named its one disk
    // itself; the disk sits in the slot it had (scsi0:1) with its bytes.
    let vmx = std::fs::read_to_string(ds.join("back/back.vmx")).unwrap();
    let file = coffer::vsphere::vmx::value(&vmx, "scsi0:1.fileName")
        .unwrap_or_else(|| panic!("no disk at scsi0:1: {vmx}"))
        .to_string();
    assert!(!vmx.contains("scsi0:0."), "{vmx}");
    assert_eq!(disks[0]["file"], format!("[datastore1] back/{file}"));
    let flat = file.replace(".vmdk", "-flat.vmdk");
    assert!(std::fs::read(ds.join("back").join(flat)).unwrap() == second);
}
