//! coffer against a vCenter: the lab in vCenter mode has two datacenters
//! (the second inside a folder), an ESXi host in each and a datastore of
//! the same name in both, with the VMs spread over them. Each VM's files
//! are read through its own datacenter, and `max_per_host` holds on each
//! ESXi host, not on the vCenter as a whole.

mod common;

use std::path::{Path, PathBuf};

use common::text;

/// A lab source in vCenter mode with `vms` VMs and `source_extra` keys.
fn setup(vms: u32, source_extra: &str) -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    common::one_vm_lab_policy(t.path(), "");
    let toml = std::fs::read_to_string(t.path().join("coffer.toml"))
        .unwrap()
        .replace(
            "lab_vms = 1",
            &format!("lab_vms = {vms}\nlab_mode = \"vcenter\"\n{source_extra}"),
        );
    std::fs::write(t.path().join("coffer.toml"), toml).unwrap();
    let init = common::in_policy_dir(t.path(), &["repo", "init", "--tier", "local"]);
    assert!(init.status.success(), "{}", text(&init));
    t
}

fn lab_dir(dir: &Path) -> PathBuf {
    coffer::run::connect::lab_state_dir(&dir.join(".coffer"), "lab")
}

fn lab_state(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(lab_dir(dir).join("state.json")).unwrap()).unwrap()
}

#[test]
fn every_vm_of_a_two_datacenter_vcenter_is_read_through_its_own_datacenter_and_restores_exactly() {
    let t = setup(3, "");
    let dir = t.path();
    // The inventory knows each VM's datacenter and host.
    let inv = common::in_policy_dir(dir, &["inventory", "--json"]);
    assert!(inv.status.success(), "{}", text(&inv));
    let inv_text = common::stdout(&inv);
    for expected in ["lab-dc-1", "region-b/lab-dc-2", "host-1", "host-2"] {
        assert!(inv_text.contains(expected), "{expected} in {inv_text}");
    }

    let out = common::in_policy_dir(dir, &["apply", "--no-mail"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        text(&out).matches("done + backup").count(),
        3,
        "{}",
        text(&out)
    );

    let repo = coffer::repo::Repository::open(
        std::sync::Arc::new(coffer::repo::local::LocalStore::new(dir.join("repo")).unwrap()),
        None,
    )
    .unwrap();
    let points = repo.list_points().unwrap();
    assert_eq!(points.len(), 3);
    let mut names = Vec::new();
    for p in &points {
        let m = repo.read_manifest(p).unwrap();
        let vm = m.vm.name.clone();
        for (i, d) in m.disks.iter().enumerate() {
            let flat = if i == 0 {
                format!("{vm}-flat.vmdk")
            } else {
                format!("{vm}_{i}-flat.vmdk")
            };
            let out = dir.join(format!("{vm}-{i}.raw"));
            let index = repo.read_index(&m, d).unwrap();
            coffer::repo::restore::restore_disk(
                &repo,
                &index,
                &out,
                coffer::repo::restore::DiskFormat::Raw,
                true,
                2,
            )
            .unwrap();
            let lab = std::fs::read(lab_dir(dir).join("datastore").join(&vm).join(&flat)).unwrap();
            assert!(
                std::fs::read(&out).unwrap() == lab,
                "disk {i} of {vm} restores to the lab's bytes"
            );
        }
        names.push(vm);
    }
    names.sort();
    assert_eq!(names, ["lab-vm-01", "lab-vm-02", "lab-vm-03"]);
}

#[test]
fn max_per_host_holds_on_each_esxi_host_of_a_vcenter() {
    let t = setup(4, "max_per_host = 1\nmax_per_datastore = 4");
    let dir = t.path();
    let out = common::in_policy_dir(dir, &["apply", "--no-mail", "--parallel", "4"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        text(&out).matches("done + backup").count(),
        4,
        "{}",
        text(&out)
    );
    let state = lab_state(dir);
    // Never two snapshots at once on one host…
    assert_eq!(
        state["most_snapshots_per_host"],
        serde_json::json!({"host-1": 1, "host-2": 1}),
        "{}",
        state["most_snapshots_per_host"]
    );
    // …but one on each host at the same time: the limit is per host, not
    // per vCenter.
    assert_eq!(
        state["most_snapshots_at_once"], 2,
        "the lab saw {} snapshots at once",
        state["most_snapshots_at_once"]
    );
}
