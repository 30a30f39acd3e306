//! A restored VM is the VM that was backed up: each disk goes back to the
//! controller and unit it had, whatever order the .vmx lists them in; its
//! NVRAM comes back; a power-on answers the host's "moved or copied?"
//! question (a power-on with the question pending never ends), "moved"
//! keeping the VM's BIOS UUID and MAC address, and `--new-uuid` giving it
//! new ones.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::text;

fn run(dir: &Path, args: &[&str]) -> Output {
    common::in_policy_dir(dir, args)
}

/// A policy directory in `dir` with the one-VM lab (two disks) backed up
/// once after `prepare` edited the VM's files; answers the lab's datastore
/// folder.
fn backed_up(dir: &Path, prepare: impl FnOnce(&Path)) -> PathBuf {
    let lab_state = common::one_vm_lab(dir);
    let lab = coffer::lab::Lab::start(coffer::lab::LabConfig::new(&lab_state)).unwrap();
    let ds = lab.datastore_dir();
    drop(lab);
    prepare(&ds);
    let backup = run(dir, &["backup", "lab-vm-01"]);
    assert!(backup.status.success(), "{}", text(&backup));
    ds
}

fn vmx_value(vmx: &str, key: &str) -> Option<String> {
    coffer::vsphere::vmx::value(vmx, key).map(str::to_string)
}

/// The .vmx names its second disk before its first, as one does after a
/// disk was added and the host rewrote the file: the restored .vmx puts
/// each disk's bytes back at its own controller and unit, and the VM's
/// NVRAM comes back beside it.
#[test]
fn each_disk_goes_back_to_its_controller_and_unit_and_the_nvram_comes_back() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let ds = backed_up(dir, |ds| {
        let path = ds.join("lab-vm-01/lab-vm-01.vmx");
        let vmx = std::fs::read_to_string(&path).unwrap();
        let (second, rest): (Vec<&str>, Vec<&str>) =
            vmx.lines().partition(|l| l.starts_with("scsi0:1."));
        let reordered = second.iter().chain(&rest).copied().collect::<Vec<_>>();
        std::fs::write(&path, reordered.join("\n") + "\n").unwrap();
    });
    let out_dir = dir.join("restored");
    let restored = run(
        dir,
        &[
            "restore",
            "lab-vm-01",
            "--name",
            "r",
            "-o",
            out_dir.to_str().unwrap(),
        ],
    );
    assert!(restored.status.success(), "{}", text(&restored));
    let vmx = std::fs::read_to_string(out_dir.join("r.vmx")).unwrap();
    assert!(vmx.starts_with("scsi0:1."), "the order is kept: {vmx}");
    assert_eq!(
        vmx_value(&vmx, "scsi0:0.fileName").as_deref(),
        Some("r.vmdk")
    );
    assert_eq!(
        vmx_value(&vmx, "scsi0:1.fileName").as_deref(),
        Some("r_1.vmdk")
    );
    for (restored, original) in [
        ("r-flat.vmdk", "lab-vm-01-flat.vmdk"),
        ("r_1-flat.vmdk", "lab-vm-01_1-flat.vmdk"),
    ] {
        assert!(
            std::fs::read(out_dir.join(restored)).unwrap()
                == std::fs::read(ds.join("lab-vm-01").join(original)).unwrap(),
            "{restored} holds the bytes of {original}"
        );
    }
    // The point records each disk's slot, in manifest format 2, which a
    // coffer that knows only format 1 refuses by number.
    let (_, points) = common::local_points(dir);
    let m = &points[0];
    assert_eq!(m.format, 2);
    assert_eq!(
        m.disks
            .iter()
            .map(|d| d.slot.as_deref())
            .collect::<Vec<_>>(),
        [Some("scsi0:0"), Some("scsi0:1")]
    );
    assert_eq!(vmx_value(&vmx, "nvram").as_deref(), Some("r.nvram"));
    let nvram = std::fs::read(out_dir.join("r.nvram")).unwrap();
    assert_eq!(nvram.len(), 8192);
    assert!(nvram == std::fs::read(ds.join("lab-vm-01/lab-vm-01.nvram")).unwrap());
}

/// Restored onto the host and powered on: without `--new-uuid` the host
/// asks "moved or copied?" (the .vmx's `uuid.location` is the old
/// folder's) and coffer answers "moved": the VM keeps its BIOS UUID and
/// MAC address. With `--new-uuid` it gets new ones. Both power on.
#[test]
fn a_powered_on_restore_answers_moved_or_copied_as_asked() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let ds = backed_up(dir, |_| {});
    let original = std::fs::read_to_string(ds.join("lab-vm-01/lab-vm-01.vmx")).unwrap();
    let bios = vmx_value(&original, "uuid.bios").expect("the lab's VM has a BIOS UUID");
    let mac = vmx_value(&original, "ethernet0.generatedAddress").expect("and a MAC address");
    let location = vmx_value(&original, "uuid.location").unwrap();

    for (name, new_uuid) in [("kept", false), ("copy", true)] {
        let mut args = vec![
            "restore",
            "lab-vm-01",
            "--to-source",
            "lab",
            "--name",
            name,
            "--power-on",
        ];
        if new_uuid {
            args.push("--new-uuid");
        }
        let out = run(dir, &args);
        assert!(out.status.success(), "{}", text(&out));
        let vmx = std::fs::read_to_string(ds.join(name).join(format!("{name}.vmx"))).unwrap();
        let now_location = vmx_value(&vmx, "uuid.location").unwrap();
        assert_ne!(
            now_location, location,
            "{name}: the host recorded the new place"
        );
        let (now_bios, now_mac) = (
            vmx_value(&vmx, "uuid.bios").unwrap(),
            vmx_value(&vmx, "ethernet0.generatedAddress").unwrap(),
        );
        if new_uuid {
            assert_ne!(now_bios, bios, "{vmx}");
            assert_ne!(now_mac, mac, "{vmx}");
        } else {
            assert_eq!(now_bios, bios, "{vmx}");
            assert_eq!(now_mac, mac, "{vmx}");
        }
    }
    let inv: serde_json::Value =
        serde_json::from_slice(&run(dir, &["inventory", "--json"]).stdout).unwrap();
    for name in ["kept", "copy"] {
        let vm = inv["vms"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("{name} is registered: {inv}"));
        assert_eq!(vm["power_state"], "PoweredOn", "{name}");
    }
    // Each restore waited for the guest's first heartbeat and was
    // recorded; compliance shows the newest with its times.
    let c = text(&run(dir, &["compliance"]));
    let recovery = c
        .lines()
        .find(|l| l.contains("last recovery"))
        .unwrap_or_else(|| panic!("no recovery in {c}"));
    assert!(
        recovery.contains("(full restore of point")
            && recovery.contains("onto lab as copy)")
            && recovery.contains("powered on after")
            && recovery.contains("heartbeat after"),
        "{recovery}"
    );
}
