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
        common::assert_point_restores_to_lab(&repo, &m, &lab_dir(dir).join("datastore"), dir);
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

/// `coffer backup VM --json` with `faults` set on the lab.
fn backup_json(dir: &Path, vm: &str, faults: &str) -> serde_json::Value {
    let out = common::command_in(dir)
        .args(["backup", vm, "--json", "-p", "."])
        .env("COFFER_LAB_FAULTS", faults)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)))
}

/// The disks of the newest point of `vm` restore to the lab's flat files.
fn assert_newest_point_restores_exactly(dir: &Path, vm: &str, point: &str) {
    let repo = coffer::repo::Repository::open(
        std::sync::Arc::new(coffer::repo::local::LocalStore::new(dir.join("repo")).unwrap()),
        None,
    )
    .unwrap();
    let p = repo.find_point(point).unwrap();
    let m = repo.read_manifest(&p).unwrap();
    assert_eq!(m.vm.name, vm);
    common::assert_point_restores_to_lab(&repo, &m, &lab_dir(dir).join("datastore"), dir);
}

/// Through a vCenter whose `/folder` proxy sends a disk request to a host
/// without the file's lock (HTTP 500), coffer reads from the host that
/// runs the VM with a service ticket, and the point is exact.
#[test]
fn reads_through_a_vcenter_go_to_the_host_that_runs_the_vm() {
    let t = setup(2, "");
    let dir = t.path();
    for vm in ["lab-vm-01", "lab-vm-02"] {
        let v = backup_json(dir, vm, "proxy-wrong-host");
        let disks = v["disks"].as_array().unwrap();
        assert!(!disks.is_empty());
        for d in disks {
            let from = d["read_from"].as_str().unwrap();
            assert!(from.starts_with("host 127.0.0.1:"), "{vm}: {from}");
        }
        assert_newest_point_restores_exactly(dir, vm, v["point"].as_str().unwrap());
    }
}

/// A host that cannot be reached by its name is read through vCenter's
/// own `/folder` instead, and the backup says so.
#[test]
fn a_host_that_cannot_be_reached_is_read_through_vcenter_and_said() {
    let t = setup(1, "");
    let dir = t.path();
    let v = backup_json(dir, "lab-vm-01", "hosts-unreachable");
    for d in v["disks"].as_array().unwrap() {
        let from = d["read_from"].as_str().unwrap();
        assert!(
            from.starts_with("vCenter's /folder (host 127.0.0.1:1 could not be read"),
            "{from}"
        );
    }
    assert_newest_point_restores_exactly(dir, "lab-vm-01", v["point"].as_str().unwrap());
}

/// The lab's hosts serve `/folder` only for a generic service ticket made
/// for that very request, and each ticket once.
#[test]
fn a_lab_host_serves_a_file_once_per_ticket_and_never_without_one() {
    use coffer::vsphere::transport::Transport;
    let t = tempfile::tempdir().unwrap();
    let mut config = coffer::lab::LabConfig::new(t.path().join("lab"));
    config.vcenter = true;
    let lab = coffer::lab::Lab::start(config).unwrap();
    let session =
        coffer::vsphere::Session::connect(lab.url(), &lab.tls_trust(), lab.user(), lab.password())
            .unwrap();
    let vm = session
        .list_vms()
        .unwrap()
        .into_iter()
        .find(|v| v.name == "lab-vm-01")
        .unwrap();
    let host = session.host_name(vm.host.as_ref().unwrap()).unwrap();
    let base = format!("https://{host}");
    // The .vmx: the running VM holds its disk files locked (see the lab's
    // `datastore::writer_of`).
    let path = "/folder/lab-vm-01/lab-vm-01.vmx?dcPath=ha-datacenter&dsName=datastore1";
    let bare = Transport::new(&base, &lab.tls_trust()).unwrap();
    assert_eq!(bare.datastore_get(path, None).unwrap().status, 401);
    let ticket = session.service_ticket(&format!("{base}{path}")).unwrap().id;
    // A transport that sends this one ticket with every request.
    let reuse = Transport::for_host(
        &base,
        &lab.tls_trust(),
        Box::new(move |_| Ok(ticket.clone())),
    )
    .unwrap();
    let first = reuse.datastore_get(path, None).unwrap();
    assert_eq!(first.status, 200);
    assert!(String::from_utf8_lossy(&first.body).contains("displayName"));
    assert_eq!(reuse.datastore_get(path, None).unwrap().status, 401);
}
