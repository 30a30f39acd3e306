//! Changed Block Tracking reset for real: a disk resized on the lab makes
//! `plan` show `reset-cbt` before a full; `apply` carries out the
//! disable / snapshot create-remove / enable cycle (the lab's change-id
//! epoch changes), the full reads the disk whole, and it restores to the
//! extended disk byte for byte. `coffer cbt reset VM` does the same cycle
//! on request.

mod common;

use std::path::Path;
use std::process::Output;

use common::{snapshot_count, text};

use coffer::repo::Repository;
use coffer::repo::manifest::Manifest;

fn write_policy(dir: &Path) {
    // A backup is due whenever the newest point is older than a second.
    common::one_vm_lab_policy(dir, r#"rpo = "1s""#);
}

fn run(dir: &Path, args: &[&str]) -> Output {
    common::in_policy_dir(dir, args)
}

/// Waits until the newest point on the tier is more than the policy's RPO
/// (1s) old, so a backup is due again (the point's time has whole seconds).
fn wait_until_due(dir: &Path) {
    let (_, ms) = common::local_points(dir);
    let newest = ms.last().expect("a point");
    let created = chrono::DateTime::parse_from_rfc3339(&newest.created).unwrap();
    let due = created + chrono::Duration::milliseconds(2100);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while chrono::Utc::now() < due {
        assert!(
            std::time::Instant::now() < deadline,
            "the clock does not move"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn epoch(m: &Manifest, disk: usize) -> String {
    let id = m.disks[disk].change_id.clone().unwrap();
    coffer::plan::cbt::change_id_epoch(&id).to_string()
}

/// Once the next backup is due: `plan` shows `reset-cbt` for lab-vm-01,
/// with `reason` (its start), before a full; `apply` carries both out and
/// leaves no snapshot. Answers the tier's points, oldest first.
fn plan_and_apply_reset_then_full(dir: &Path, reason: &str) -> (Repository, Vec<Manifest>) {
    wait_until_due(dir);
    let plan_text = text(&run(dir, &["plan"]));
    let reset_line = plan_text
        .lines()
        .position(|l| l.starts_with(&format!("~ reset-cbt lab-vm-01: {reason}")))
        .unwrap_or_else(|| panic!("no reset-cbt ({reason}) in the plan:\n{plan_text}"));
    let backup_line = plan_text
        .lines()
        .position(|l| l.starts_with("+ backup lab-vm-01 → local (full"))
        .unwrap_or_else(|| panic!("no full in the plan:\n{plan_text}"));
    assert!(reset_line < backup_line, "{plan_text}");
    let applied = run(dir, &["apply", "--no-mail"]);
    let applied_text = text(&applied);
    assert!(applied.status.success(), "{applied_text}");
    assert!(
        applied_text.contains("done ~ reset-cbt lab-vm-01"),
        "{applied_text}"
    );
    assert_eq!(snapshot_count(dir), 0, "{applied_text}");
    common::local_points(dir)
}

/// After guest writes, the next plan backs lab-vm-01 up as an incremental,
/// with no reset: the new baseline holds.
fn assert_next_backup_is_incremental(dir: &Path) {
    coffer::lab::write(&lab_state(dir), "lab-vm-01", 1.0).unwrap();
    wait_until_due(dir);
    let next = run(dir, &["plan"]);
    let next_text = text(&next);
    assert!(!next_text.contains("reset-cbt"), "{next_text}");
    assert!(
        next_text.contains("+ backup lab-vm-01 → local (incremental"),
        "{next_text}"
    );
}

/// The policy written in `dir`, its tier made and applied once: the one
/// point, a full.
fn first_full(dir: &Path) -> Vec<Manifest> {
    write_policy(dir);
    assert!(run(dir, &["repo", "init", "--all"]).status.success());
    let first = run(dir, &["apply", "--no-mail"]);
    assert!(first.status.success(), "{}", text(&first));
    let (_, before) = common::local_points(dir);
    assert_eq!(before.len(), 1);
    before
}

fn lab_state(dir: &Path) -> std::path::PathBuf {
    coffer::run::connect::lab_state_dir(&dir.join(".coffer"), "lab")
}

#[test]
fn a_resized_disk_gets_its_tracking_reset_and_a_full_that_reads_it_whole() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let before = first_full(dir);
    let size = before[0].disks[0].size_bytes;
    // The first full read the allocated areas only (a thin disk's holes
    // are not read): the whole-disk read below is a different request.
    assert!(before[0].disks[0].bytes_read < size);

    // An administrator extends the first disk by 64 MiB.
    let grown = size + (64 << 20);
    coffer::lab::extend_disk(&lab_state(dir), "lab-vm-01", 2000, grown).unwrap();
    let (repo, after) = plan_and_apply_reset_then_full(dir, "disk 2000 resized from");
    assert_eq!(after.len(), 2);
    let full = &after[1];
    assert_eq!(full.disks[0].size_bytes, grown);
    // A new tracking epoch, and the disks read whole.
    assert_ne!(epoch(&before[0], 0), epoch(full, 0));
    for d in &full.disks {
        assert_eq!(
            d.bytes_read, d.size_bytes,
            "disk {} not read whole",
            d.device_key
        );
    }
    let out = dir.join("restored.raw");
    common::restore_bytes(&repo, full, &out);
    let lab = coffer::lab::Lab::start(coffer::lab::LabConfig::new(lab_state(dir))).unwrap();
    let flat = std::fs::read(
        lab.datastore_dir()
            .join("lab-vm-01")
            .join("lab-vm-01-flat.vmdk"),
    )
    .unwrap();
    drop(lab);
    assert_eq!(flat.len() as u64, grown);
    assert!(
        std::fs::read(&out).unwrap() == flat,
        "the restored disk differs"
    );

    // The baseline holds: the next backup is an incremental, no reset.
    assert_next_backup_is_incremental(dir);
}

#[test]
fn cbt_reset_on_request_starts_a_new_epoch_and_leaves_no_snapshot() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    write_policy(dir);
    assert!(run(dir, &["repo", "init", "--all"]).status.success());
    assert!(run(dir, &["apply", "--no-mail"]).status.success());
    let reset = run(dir, &["cbt", "reset", "lab-vm-01"]);
    let reset_text = text(&reset);
    assert!(reset.status.success(), "{reset_text}");
    assert!(
        reset_text.contains("disabled") && reset_text.contains("enabled"),
        "{reset_text}"
    );
    assert_eq!(snapshot_count(dir), 0);
    wait_until_due(dir);
    let plan = run(dir, &["plan"]);
    assert!(
        text(&plan).contains("+ backup lab-vm-01 → local (full"),
        "{}",
        text(&plan)
    );
    assert!(run(dir, &["apply", "--no-mail"]).status.success());
    let (_, ms) = common::local_points(dir);
    assert_eq!(ms.len(), 2);
    assert_ne!(epoch(&ms[0], 0), epoch(&ms[1], 0));
    let unknown = run(dir, &["cbt", "reset", "no-such-vm"]);
    assert!(!unknown.status.success());
    assert!(text(&unknown).contains("no VM named `no-such-vm`"));
}

/// Restores disk `index` of point `m` and compares it with `file`, the
/// disk's flat extent on the lab's datastore.
fn restores_as(repo: &Repository, m: &Manifest, index: usize, file: &Path, out: &Path) {
    let idx = repo.read_index(m, &m.disks[index]).unwrap();
    coffer::repo::restore::restore_disk(
        repo,
        &idx,
        out,
        coffer::repo::restore::DiskFormat::Raw,
        true,
        2,
    )
    .unwrap();
    let flat = std::fs::read(file).unwrap();
    assert!(
        std::fs::read(out).unwrap() == flat,
        "disk {} restored from {} differs from {}",
        m.disks[index].device_key,
        m.point_id,
        file.display()
    );
}

fn inventory_disks(dir: &Path, vm: &str) -> Vec<serde_json::Value> {
    let out = run(dir, &["inventory", "--json"]);
    let inv: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    inv["vms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == vm)
        .unwrap_or_else(|| panic!("{vm} in the inventory: {}", text(&out)))["disks"]
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn a_storage_vmotion_to_nfs_resets_tracking_and_the_next_full_reads_the_disks_whole() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let before = first_full(dir);
    // On VMFS the first full read the allocated areas only.
    assert!(before[0].disks[0].bytes_read < before[0].disks[0].size_bytes);

    // An administrator moves the VM's disks to the NFS datastore.
    coffer::lab::relocate(&lab_state(dir), "lab-vm-01", "nfs1").unwrap();
    let moved = inventory_disks(dir, "lab-vm-01");
    assert_eq!(moved[0]["file"], "[nfs1] lab-vm-01/lab-vm-01.vmdk");
    // The move itself started a new change-id epoch on the host.
    let live_id = moved[0]["change_id"].as_str().unwrap().to_string();
    assert_ne!(
        coffer::plan::cbt::change_id_epoch(&live_id),
        epoch(&before[0], 0)
    );

    let (repo, after) = plan_and_apply_reset_then_full(
        dir,
        "disk 2000 moved from [datastore1] lab-vm-01/lab-vm-01.vmdk \
         to [nfs1] lab-vm-01/lab-vm-01.vmdk (Storage vMotion)",
    );
    assert_eq!(after.len(), 2);
    let full = &after[1];
    assert_ne!(epoch(&before[0], 0), epoch(full, 0));
    for d in &full.disks {
        assert_eq!(
            d.bytes_read, d.size_bytes,
            "disk {} not read whole",
            d.device_key
        );
        assert!(
            d.backing
                .as_deref()
                .is_some_and(|b| b.starts_with("[nfs1] ")),
            "{:?}",
            d.backing
        );
    }
    let lab = coffer::lab::Lab::start(coffer::lab::LabConfig::new(lab_state(dir))).unwrap();
    let nfs = lab.datastore_folder("nfs1");
    drop(lab);
    restores_as(
        &repo,
        full,
        0,
        &nfs.join("lab-vm-01/lab-vm-01-flat.vmdk"),
        &dir.join("d0.raw"),
    );
    restores_as(
        &repo,
        full,
        1,
        &nfs.join("lab-vm-01/lab-vm-01_1-flat.vmdk"),
        &dir.join("d1.raw"),
    );

    // The baseline on NFS holds: the next backup is an incremental.
    assert_next_backup_is_incremental(dir);
}

#[test]
fn a_first_full_on_nfs_says_once_that_allocated_areas_are_unknown_and_reads_every_disk_whole() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    write_policy(dir);
    assert!(run(dir, &["repo", "init", "--all"]).status.success());
    assert!(run(dir, &["inventory"]).status.success());
    // A VM with two thin disks, moved to NFS before coffer ever saw it.
    coffer::lab::add_vm(&lab_state(dir), "nfs-vm", &[16 << 20, 8 << 20]).unwrap();
    coffer::lab::relocate(&lab_state(dir), "nfs-vm", "nfs1").unwrap();

    let backup = run(dir, &["backup", "nfs-vm", "--json"]);
    assert!(backup.status.success(), "{}", text(&backup));
    let result: serde_json::Value = serde_json::from_slice(&backup.stdout).unwrap();
    let notes = result["notes"].as_array().unwrap();
    assert_eq!(notes.len(), 1, "{notes:?}");
    let note = notes[0].as_str().unwrap();
    assert!(
        note.starts_with("the host gives no allocated areas (`*`) on datastore nfs1")
            && note.ends_with("disk 2000, 2001 read whole"),
        "{note}"
    );
    for d in result["disks"].as_array().unwrap() {
        assert_eq!(d["mode"], "full");
        assert_eq!(d["bytes_fetched"], d["size_bytes"], "{d}");
    }
    let (repo, ms) = common::local_points(dir);
    let m = ms.iter().find(|m| m.vm.name == "nfs-vm").unwrap();
    let lab = coffer::lab::Lab::start(coffer::lab::LabConfig::new(lab_state(dir))).unwrap();
    let nfs = lab.datastore_folder("nfs1");
    drop(lab);
    restores_as(
        &repo,
        m,
        0,
        &nfs.join("nfs-vm/nfs-vm-flat.vmdk"),
        &dir.join("n0.raw"),
    );
    restores_as(
        &repo,
        m,
        1,
        &nfs.join("nfs-vm/nfs-vm_1-flat.vmdk"),
        &dir.join("n1.raw"),
    );
}
