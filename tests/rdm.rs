//! Raw device mappings. One in virtual compatibility mode is a disk like
//! any other to a backup: snapshots put deltas over it, change tracking
//! follows it, and coffer reads it through its mapping file (the host
//! serves the mapped LUN's bytes there), full and incremental, restoring it
//! as an ordinary disk. One in physical compatibility mode is left out of
//! snapshots: coffer skips it with the reason and backs up the VM's other
//! disks.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::text;

use coffer::lab::disk::RdmMode;

fn run(dir: &Path, args: &[&str]) -> Output {
    common::in_policy_dir(dir, args)
}

/// The lab's datastore folder (started as the policy has it: one VM).
fn datastore(lab_state: &Path) -> PathBuf {
    let mut config = coffer::lab::LabConfig::new(lab_state);
    config.vms = 1;
    coffer::lab::Lab::start(config).unwrap().datastore_dir()
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("JSON ({e}): {}", text(o)))
}

fn disk_json(backup: &serde_json::Value, key: i32) -> &serde_json::Value {
    backup["disks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["device_key"] == key)
        .unwrap_or_else(|| panic!("no disk {key} in {backup}"))
}

/// The lab's disk 2001 as the host shows it: a raw device mapping
/// descriptor naming its mapping file, whose bytes are the LUN's.
#[test]
fn the_lab_maps_a_lun_behind_a_real_rdm_descriptor_and_lists_the_backing() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let lab_state = common::one_vm_lab(dir);
    let ds = datastore(&lab_state);
    let before = std::fs::read(ds.join("lab-vm-01/lab-vm-01_1-flat.vmdk")).unwrap();
    coffer::lab::map_raw_device(&lab_state, "lab-vm-01", 2001, RdmMode::Virtual).unwrap();

    let descriptor = std::fs::read_to_string(ds.join("lab-vm-01/lab-vm-01_1.vmdk")).unwrap();
    let parsed = coffer::vsphere::datastore::parse_descriptor(&descriptor).unwrap();
    assert_eq!(parsed.create_type, "vmfsRawDeviceMap", "{descriptor}");
    assert_eq!(parsed.extents.len(), 1);
    assert_eq!(parsed.extents[0].kind, "VMFSRDM");
    assert_eq!(parsed.extents[0].file, "lab-vm-01_1-rdm.vmdk");
    assert_eq!(parsed.extents[0].sectors * 512, 32 << 20);
    assert!(!ds.join("lab-vm-01/lab-vm-01_1-flat.vmdk").exists());
    assert!(
        std::fs::read(ds.join("lab-vm-01/lab-vm-01_1-rdm.vmdk")).unwrap() == before,
        "the mapping file reads as the LUN, which holds what the disk held"
    );

    let inventory = run(dir, &["inventory", "--json"]);
    assert!(inventory.status.success(), "{}", text(&inventory));
    let inv = json(&inventory);
    let disks = inv["vms"][0]["disks"].as_array().unwrap();
    assert_eq!(disks[0]["raw_device_mapping"], serde_json::Value::Null);
    assert_eq!(disks[1]["raw_device_mapping"], "virtualMode", "{inv}");
    assert_eq!(disks[1]["file"], "[datastore1] lab-vm-01/lab-vm-01_1.vmdk");
    assert!(
        coffer::lab::boots(&lab_state, "lab-vm-01").unwrap(),
        "the guest still boots from its disks"
    );

    // A second mapping of the same disk, and any mapping under a
    // snapshot, are refused as a host refuses them.
    let again = coffer::lab::map_raw_device(&lab_state, "lab-vm-01", 2001, RdmMode::Physical);
    assert!(again.is_err());
    coffer::lab::user_snapshot(&lab_state, "lab-vm-01", "before", None).unwrap();
    let refused = coffer::lab::map_raw_device(&lab_state, "lab-vm-01", 2000, RdmMode::Virtual)
        .unwrap_err()
        .to_string();
    assert!(refused.contains("has snapshots"), "{refused}");
}

#[test]
fn a_virtual_mode_rdm_is_backed_up_full_then_incremental_and_restores_byte_for_byte() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let lab_state = common::one_vm_lab(dir);
    coffer::lab::map_raw_device(&lab_state, "lab-vm-01", 2001, RdmMode::Virtual).unwrap();

    let plan = run(dir, &["plan"]);
    let plan_text = text(&plan);
    assert!(!plan_text.contains("raw device mapping"), "{plan_text}");
    assert!(plan_text.contains("+ backup lab-vm-01"), "{plan_text}");

    // The full: the mapped LUN is no VMFS file, so the host knows no
    // allocated areas of it and it is read whole, said once; disk 2000 on
    // VMFS is still read by its allocated areas.
    let full = run(dir, &["backup", "lab-vm-01", "--json"]);
    assert!(full.status.success(), "{}", text(&full));
    let full = json(&full);
    let notes: Vec<&str> = full["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(
        notes[0]
            .starts_with("the host gives no allocated areas (`*`) of raw device mapping disk 2001")
            && notes[0].ends_with("read whole"),
        "{}",
        notes[0]
    );
    let rdm = disk_json(&full, 2001);
    assert_eq!(rdm["bytes_fetched"], rdm["size_bytes"], "{rdm}");
    let flat = disk_json(&full, 2000);
    assert!(
        flat["bytes_fetched"].as_u64().unwrap() < flat["size_bytes"].as_u64().unwrap(),
        "{flat}"
    );

    let (repo, ms) = common::local_points(dir);
    assert_eq!(ms.len(), 1);
    assert_eq!(
        ms[0].disks.iter().map(|d| d.device_key).collect::<Vec<_>>(),
        [2000, 2001]
    );
    assert!(ms[0].skipped_disks.is_empty(), "{:?}", ms[0].skipped_disks);
    assert!(
        ms[0].disks[1].change_id.is_some(),
        "change tracking follows the RDM"
    );
    let ds = datastore(&lab_state);
    common::assert_point_restores_to_lab(&repo, &ms[0], &ds, dir);

    // The guest writes; the incremental reads only what changed.
    let write = common::command_in(dir)
        .args([
            "lab",
            "write",
            "lab-vm-01",
            "--percent",
            "5",
            "--json",
            "--state",
        ])
        .arg(&lab_state)
        .output()
        .unwrap();
    assert!(write.status.success(), "{}", text(&write));
    let written = json(&write);
    let areas = written["disks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["key"] == 2001)
        .unwrap()["areas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["end"].as_u64().unwrap() - a["start"].as_u64().unwrap())
        .sum::<u64>();
    assert!(areas > 0);
    let incr = run(dir, &["backup", "lab-vm-01", "--json"]);
    assert!(incr.status.success(), "{}", text(&incr));
    let incr = json(&incr);
    assert_eq!(incr["kind"], "incremental", "{incr}");
    let rdm = disk_json(&incr, 2001);
    assert_eq!(rdm["mode"], "incremental", "{rdm}");
    assert_eq!(rdm["bytes_changed"], areas, "{rdm}");
    let fetched = rdm["bytes_fetched"].as_u64().unwrap();
    assert!(
        fetched >= areas && fetched <= 2 * areas,
        "read {fetched} bytes for {areas} changed: {rdm}"
    );

    let (repo, ms) = common::local_points(dir);
    assert_eq!(ms.len(), 2);
    common::assert_point_restores_to_lab(&repo, &ms[1], &ds, dir);

    // Restored to files, the RDM comes back as an ordinary disk: a flat
    // VMDK in its slot.
    let out_dir = dir.join("restored");
    let restored = run(
        dir,
        &["restore", "lab-vm-01", "-o", out_dir.to_str().unwrap()],
    );
    assert!(restored.status.success(), "{}", text(&restored));
    let descriptor = std::fs::read_to_string(out_dir.join("lab-vm-01-restored_1.vmdk")).unwrap();
    let parsed = coffer::vsphere::datastore::parse_descriptor(&descriptor).unwrap();
    assert_ne!(parsed.create_type, "vmfsRawDeviceMap", "{descriptor}");
    assert!(
        parsed.extents.iter().all(|e| e.kind != "VMFSRDM"),
        "{descriptor}"
    );
    assert!(
        std::fs::read(out_dir.join("lab-vm-01-restored_1-flat.vmdk")).unwrap()
            == std::fs::read(ds.join("lab-vm-01/lab-vm-01_1-rdm.vmdk")).unwrap(),
        "the restored disk holds the LUN's bytes"
    );
}

#[test]
fn a_physical_mode_rdm_is_left_out_with_its_reason_and_the_other_disks_are_backed_up() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let lab_state = common::one_vm_lab(dir);
    coffer::lab::map_raw_device(&lab_state, "lab-vm-01", 2001, RdmMode::Physical).unwrap();
    let ds = datastore(&lab_state);
    let descriptor = std::fs::read_to_string(ds.join("lab-vm-01/lab-vm-01_1.vmdk")).unwrap();
    let parsed = coffer::vsphere::datastore::parse_descriptor(&descriptor).unwrap();
    assert_eq!(parsed.create_type, "vmfsPassthroughRawDeviceMap");
    assert_eq!(parsed.extents[0].file, "lab-vm-01_1-rdmp.vmdk");

    let reason = "disk [datastore1] lab-vm-01/lab-vm-01_1.vmdk is a raw device mapping in physical compatibility mode (physicalMode): snapshots leave it out";
    let plan = run(dir, &["plan"]);
    assert!(
        text(&plan).contains(&format!(
            "! alert lab-vm-01: {reason}; its backups leave it out"
        )),
        "{}",
        text(&plan)
    );
    let applied = run(dir, &["apply", "--no-mail"]);
    let applied_text = text(&applied);
    assert!(applied.status.success(), "{applied_text}");
    assert!(
        applied_text.contains(&format!("; skipped {reason}")),
        "{applied_text}"
    );

    let (repo, ms) = common::local_points(dir);
    assert_eq!(ms.len(), 1);
    let m = &ms[0];
    assert_eq!(
        m.disks.iter().map(|d| d.device_key).collect::<Vec<_>>(),
        [2000]
    );
    assert_eq!(m.skipped_disks.len(), 1);
    assert_eq!(m.skipped_disks[0].device_key, 2001);
    assert_eq!(m.skipped_disks[0].reason, reason);
    common::assert_point_restores_to_lab(&repo, m, &ds, dir);
}

/// What the lab's snapshots hold: a delta over a virtual-mode RDM, none
/// over a physical-mode one, which the host leaves out of the snapshot as
/// it leaves out an independent disk; the VM's other disks are held.
#[test]
fn a_snapshot_holds_a_virtual_mode_rdm_and_leaves_a_physical_mode_one_out() {
    let t = tempfile::tempdir().unwrap();
    let state = t.path().join("lab");
    let mut config = coffer::lab::LabConfig::new(&state);
    config.vms = 1;
    drop(coffer::lab::Lab::start(config).unwrap());
    coffer::lab::add_vm(&state, "three", &[4 << 20, 4 << 20, 4 << 20]).unwrap();
    coffer::lab::map_raw_device(&state, "three", 2001, RdmMode::Virtual).unwrap();
    coffer::lab::map_raw_device(&state, "three", 2002, RdmMode::Physical).unwrap();
    coffer::lab::user_snapshot(&state, "three", "one", None).unwrap();

    let st: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("state.json")).unwrap()).unwrap();
    let vm = st["vms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "three")
        .unwrap();
    let layers = |i: usize| vm["disks"][i]["layers"].as_array().unwrap().len();
    assert_eq!((layers(0), layers(1), layers(2)), (2, 2, 1), "{vm}");
    let held: Vec<i64> = vm["snapshots"][0]["disks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["key"].as_i64().unwrap())
        .collect();
    assert_eq!(held, [2000, 2001]);
    // The delta over the virtual-mode RDM names the RDM's descriptor as
    // its parent, as over any disk.
    let ds = state.join("datastore");
    let delta = std::fs::read_to_string(ds.join("three/three_1-000001.vmdk")).unwrap();
    assert!(
        delta.contains("parentFileNameHint=\"three_1.vmdk\""),
        "{delta}"
    );
}

/// A host that refuses to snapshot a VM with a physical-mode RDM (the lab
/// with `prdm-snapshot`): the backup fails before reading anything, with
/// the host's words, and leaves no snapshot and no point. Made
/// independent, the mapping is left out of the snapshot there too, and the
/// VM's other disk is backed up.
#[test]
fn a_host_refusing_snapshots_with_a_physical_mode_rdm_fails_the_backup_clearly_and_leaves_nothing()
{
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let lab_state = common::one_vm_lab(dir);
    coffer::lab::map_raw_device(&lab_state, "lab-vm-01", 2001, RdmMode::Physical).unwrap();
    let backup = || {
        common::command_in(dir)
            .args(["backup", "lab-vm-01", "-p", "."])
            .env("COFFER_LAB_FAULTS", "prdm-snapshot")
            .output()
            .unwrap()
    };

    let refused = backup();
    let said = text(&refused);
    assert_eq!(refused.status.code(), Some(1), "{said}");
    assert!(
        said.contains("SnapshotIncompatibleDeviceInVm")
            && said.contains("is a raw device mapping in physical compatibility mode"),
        "{said}"
    );
    assert_eq!(common::snapshot_count(dir), 0);
    assert!(common::local_points(dir).1.is_empty());

    coffer::lab::set_disk_mode(&lab_state, "lab-vm-01", 2001, "independent_persistent").unwrap();
    let done = backup();
    assert!(done.status.success(), "{}", text(&done));
    let (_, ms) = common::local_points(dir);
    assert_eq!(ms.len(), 1);
    assert_eq!(
        ms[0].disks.iter().map(|d| d.device_key).collect::<Vec<_>>(),
        [2000]
    );
    assert!(
        ms[0].skipped_disks[0]
            .reason
            .contains("physical compatibility mode"),
        "{:?}",
        ms[0].skipped_disks
    );
}
