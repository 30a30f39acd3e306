//! The datastore read path against a lab whose file service is throttled
//! as a real host's is: coffer asks for few, large requests, slows down when
//! the host answers 503 instead of failing, and what it stores restores to
//! the disk byte for byte.

mod common;

use std::path::Path;

use common::{snapshot_count, text};

/// `coffer backup lab-vm-01 --json` with `faults` set on the lab.
fn backup(dir: &Path, faults: &str) -> serde_json::Value {
    let out = common::command_in(dir)
        .args(["backup", "lab-vm-01", "--json", "-p", "."])
        .env("COFFER_LAB_FAULTS", faults)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)))
}

fn sum(v: &serde_json::Value, key: &str) -> u64 {
    v["disks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d[key].as_u64().unwrap())
        .sum()
}

/// Every disk of the newest point restores equal to the lab's flat files.
fn assert_restores_exactly(dir: &Path) {
    let repo = coffer::repo::Repository::open(
        std::sync::Arc::new(coffer::repo::local::LocalStore::new(dir.join("repo")).unwrap()),
        None,
    )
    .unwrap();
    let mut points = repo.list_points().unwrap();
    points.sort();
    let m = repo.read_manifest(points.last().unwrap()).unwrap();
    let datastore =
        coffer::run::connect::lab_state_dir(&dir.join(".coffer"), "lab").join("datastore");
    common::assert_point_restores_to_lab(&repo, &m, &datastore, dir);
}

fn setup(source_extra: &str) -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    common::one_vm_lab_policy(t.path(), "");
    let toml = std::fs::read_to_string(t.path().join("coffer.toml"))
        .unwrap()
        .replace("lab_vms = 1", &format!("lab_vms = 1\n{source_extra}"));
    std::fs::write(t.path().join("coffer.toml"), toml).unwrap();
    let init = common::in_policy_dir(t.path(), &["repo", "init", "--tier", "local"]);
    assert!(init.status.success(), "{}", text(&init));
    t
}

/// A host whose file service takes one transfer at a time turns coffer's
/// parallel requests away with 503: coffer lowers its requests in flight
/// and asks again rather than failing the backup, says the host was busy,
/// and the point restores exactly. No snapshot is left.
#[test]
fn a_host_that_turns_requests_away_slows_coffer_down_and_the_backup_lands() {
    let t = setup("max_requests = 4\nread_request = \"2MiB\"");
    let dir = t.path();
    let out = backup(dir, "folder-limit=1,folder-setup-ms=30");
    let busy = sum(&out, "busy_answers");
    assert!(
        busy > 0,
        "two workers at a one-transfer host were turned away: {out}"
    );
    // After the first turns, one request at a time: not a 503 for every
    // other request of the fifteen or so.
    assert!(busy <= 8, "{busy} busy answers: {out}");
    assert_restores_exactly(dir);
    assert_eq!(snapshot_count(dir), 0);
}

/// A full asks for large requests: the lab VM's first disk holds about
/// 20 MiB of data in five areas, read in a handful of requests of up to the
/// source's `read_request`; a smaller `read_request` takes more of them.
#[test]
fn a_full_asks_for_few_large_requests_shaped_by_the_source() {
    let t = setup("");
    let large = backup(t.path(), "");
    let (bytes, requests) = (sum(&large, "bytes_fetched"), sum(&large, "requests"));
    assert!(bytes > 20 << 20, "{large}");
    assert!(
        requests <= 16,
        "{requests} requests for {bytes} bytes: {large}"
    );
    assert_restores_exactly(t.path());

    let t = setup("read_request = \"256KiB\"");
    let small = backup(t.path(), "");
    assert_eq!(sum(&small, "bytes_fetched"), bytes, "{small}");
    assert!(
        sum(&small, "requests") >= bytes / (256 << 10),
        "at most 256 KiB a request: {small}"
    );
    assert_restores_exactly(t.path());
}

/// A host forgets sessions (hostd's idle timeout, a restart of its
/// management agents) while a backup reads: the next datastore request is
/// answered 401, coffer logs in again and reads on, and SOAP calls on the
/// same session work too.
#[test]
fn a_session_the_host_forgot_is_logged_in_again_for_datastore_reads() {
    use coffer::repo::backup::DiskReader;
    use coffer::vsphere::datastore::{DatastoreDisk, DatastorePath};
    let t = tempfile::tempdir().unwrap();
    let mut config = coffer::lab::LabConfig::new(t.path());
    config.vms = 1;
    let lab = coffer::lab::Lab::start(config).unwrap();
    let session =
        coffer::vsphere::Session::connect(lab.url(), &lab.tls_trust(), lab.user(), lab.password())
            .unwrap();
    let vm = session.list_vms().unwrap().remove(0);
    // Read under a snapshot, as a backup does (the running VM holds its
    // own files locked).
    let task = std::time::Duration::from_secs(30);
    let snapshot = session
        .create_snapshot(
            &vm.moref,
            &coffer::vsphere::soap::SnapshotRequest {
                name: "read",
                description: "",
                memory: false,
                quiesce: false,
            },
            task,
        )
        .unwrap();
    let disks = session.snapshot_disks(&snapshot).unwrap();
    let path = DatastorePath::parse(&disks[0].file_name).unwrap();
    let disk = DatastoreDisk::open(
        session.transport(),
        "ha-datacenter",
        &path,
        vm.disks[0].capacity_bytes,
        &Default::default(),
    )
    .unwrap();
    let mut before = vec![0u8; 1 << 20];
    disk.read_exact_at(&mut before, 2 << 20).unwrap();
    lab.faults().apply("expire-sessions").unwrap();
    let mut after = vec![0u8; 1 << 20];
    disk.read_exact_at(&mut after, 2 << 20)
        .expect("a 401 is answered by logging in again");
    assert!(before == after && before.iter().any(|b| *b != 0));
    lab.faults().apply("expire-sessions").unwrap();
    assert_eq!(session.list_vms().unwrap().len(), 1);
    session.remove_snapshot(&snapshot, task).unwrap();
}
