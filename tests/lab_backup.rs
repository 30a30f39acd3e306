//! coffer's backup loop against the built-in lab: a full and an
//! incremental that reads exactly the areas written (counted by the lab),
//! restores byte-identical to the disk at snapshot time, and every fault
//! path (quiesce, snapshot, 503s, a connection cut mid-read, a failed
//! snapshot removal, an unreachable host, Ctrl-C, SIGKILL) ending with no
//! snapshot left and no point recorded as good unless it is.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use coffer::lab::guest::GuestOs;
use coffer::lab::{Lab, LabConfig, LabHandle};
use coffer::plan::cbt::CbtVerdict;
use coffer::policy::model::{Consistency, TlsTrust};
use coffer::repo::Repository;
use coffer::repo::backup::normalize_ranges;
use coffer::repo::local::LocalStore;
use coffer::repo::manifest::Manifest;
use coffer::repo::restore::{self, DiskFormat};
use coffer::run::throttle::Throttle;
use coffer::run::vm_backup::ReadProgress;
use coffer::run::vm_backup::{VmBackupError, VmBackupOutcome, VmBackupRequest, backup_vm};
use coffer::vsphere::types::VmRecord;
use coffer::vsphere::{Session, VimFault};

const TASK: Duration = Duration::from_secs(30);
/// The installation id these tests back up as.
const INSTALLATION: &str = "00112233aabbccdd";

struct Bed {
    _t: tempfile::TempDir,
    dir: std::path::PathBuf,
    lab: LabHandle,
    session: Session,
    repo: Repository,
}

fn bed() -> Bed {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().to_path_buf();
    let mut cfg = LabConfig::new(dir.join("lab"));
    cfg.vms = 2;
    let lab = Lab::start(cfg).unwrap();
    let session =
        Session::connect(lab.url(), &lab.tls_trust(), lab.user(), lab.password()).unwrap();
    let repo =
        Repository::init(Arc::new(LocalStore::new(dir.join("repo")).unwrap()), None).unwrap();
    Bed {
        _t: t,
        dir,
        lab,
        session,
        repo,
    }
}

impl Bed {
    fn vm(&self, name: &str) -> VmRecord {
        self.session
            .list_vms()
            .unwrap()
            .into_iter()
            .find(|v| v.name == name)
            .unwrap()
    }

    fn backup(
        &self,
        name: &str,
        consistency: Consistency,
        base: Option<&Manifest>,
        run: &str,
    ) -> Result<VmBackupOutcome, VmBackupError> {
        let vm = self.vm(name);
        let cancel = AtomicBool::new(false);
        backup_vm(
            &self.session,
            &self.repo,
            &VmBackupRequest {
                vm: &vm,
                installation: INSTALLATION,
                snapshot_max_age: Duration::from_secs(24 * 3600),
                source: "lab",
                datacenter: "ha-datacenter",
                host_route: None,
                run_id: run,
                consistency,
                base,
                chunk_size_bytes: 256 << 10,
                threads: 2,
                task_timeout: TASK,
                cancel: &cancel,
                read_whole_disk: false,
                io_limit: None,
                progress: None,
                read: Default::default(),
                max_snapshot_lifetime: None,
                fence: None,
            },
        )
    }

    /// A crash-consistent full of `name` as installation `installation`,
    /// read through `io_limit`, counting into `progress`.
    fn backup_as(
        &self,
        name: &str,
        installation: &str,
        run: &str,
        io_limit: Option<&Throttle>,
        progress: Option<&ReadProgress>,
    ) -> Result<VmBackupOutcome, VmBackupError> {
        let vm = self.vm(name);
        let cancel = AtomicBool::new(false);
        backup_vm(
            &self.session,
            &self.repo,
            &VmBackupRequest {
                vm: &vm,
                installation,
                snapshot_max_age: Duration::from_secs(24 * 3600),
                source: "lab",
                datacenter: "ha-datacenter",
                host_route: None,
                run_id: run,
                consistency: Consistency::Crash,
                base: None,
                chunk_size_bytes: 256 << 10,
                threads: 2,
                task_timeout: TASK,
                cancel: &cancel,
                read_whole_disk: false,
                io_limit,
                progress,
                read: Default::default(),
                max_snapshot_lifetime: None,
                fence: None,
            },
        )
    }

    fn snapshots(&self, name: &str) -> Vec<String> {
        self.vm(name)
            .all_snapshots()
            .iter()
            .map(|s| s.name.clone())
            .collect()
    }

    /// The VM's disks as files on the lab's datastore.
    fn flat(&self, vm: &str, n: usize) -> Vec<u8> {
        let name = if n == 0 {
            format!("{vm}-flat.vmdk")
        } else {
            format!("{vm}_{n}-flat.vmdk")
        };
        std::fs::read(self.lab.datastore_dir().join(vm).join(name)).unwrap()
    }

    fn restore(&self, m: &Manifest, disk: usize) -> Vec<u8> {
        let out = self.dir.join(format!("restore-{}-{disk}.raw", m.point_id));
        let index = self.repo.read_index(m, &m.disks[disk]).unwrap();
        restore::restore_disk(&self.repo, &index, &out, DiskFormat::Raw, true, 2).unwrap();
        std::fs::read(out).unwrap()
    }

    /// A crash-consistent full of `vm` read at 4 MiB/s (so it is still
    /// reading while `meanwhile` runs, which this asserts), run once the
    /// read has begun; answers the backup's result.
    fn backup_while_reading(
        &self,
        vm: &str,
        meanwhile: impl FnOnce(),
    ) -> Result<VmBackupOutcome, VmBackupError> {
        let slow = Throttle::new(4 << 20);
        let progress = ReadProgress::default();
        std::thread::scope(|s| {
            let backup =
                s.spawn(|| self.backup_as(vm, INSTALLATION, "run-a", Some(&slow), Some(&progress)));
            wait_for("the backup to read", || {
                progress.read.load(Ordering::Relaxed) > 0
            });
            meanwhile();
            assert!(!backup.is_finished(), "the backup must still be reading");
            backup.join().unwrap()
        })
    }

    fn flat_bytes_served(&self) -> u64 {
        self.lab
            .stats()
            .served()
            .iter()
            .filter(|(k, _)| k.ends_with("-flat.vmdk"))
            .map(|(_, v)| v)
            .sum()
    }
}

#[test]
fn full_then_incremental_reads_only_what_changed_and_restores_exactly() {
    let b = bed();
    // A Windows guest with disk UUIDs: its VSS writers take part.
    coffer::lab::set_guest(b.lab.state_dir(), "lab-vm-01", GuestOs::Windows, true).unwrap();
    let full = b
        .backup("lab-vm-01", Consistency::Application, None, "r1")
        .unwrap();
    assert_eq!(full.consistency, "application");
    // The snapshot's VSS manifest is kept with the point.
    assert!(b.repo.read_file(&full.manifest, "vss-manifest.zip").is_ok());
    // The VM's .vmx is kept with the point, for a restore to register it.
    let vmx = b.repo.read_file(&full.manifest, "lab-vm-01.vmx").unwrap();
    assert!(
        String::from_utf8_lossy(&vmx).contains("displayName"),
        "{}",
        String::from_utf8_lossy(&vmx)
    );
    assert!(b.snapshots("lab-vm-01").is_empty());
    let disk0 = b.flat("lab-vm-01", 0);
    let disk1 = b.flat("lab-vm-01", 1);
    assert_eq!(b.restore(&full.manifest, 0), disk0);
    assert_eq!(b.restore(&full.manifest, 1), disk1);
    // The full read only the allocated areas, and the lab served exactly that.
    let fetched: u64 = full.disks.iter().map(|d| d.bytes_fetched).sum();
    assert_eq!(b.flat_bytes_served(), fetched);
    assert!(
        fetched < (disk0.len() + disk1.len()) as u64 / 2,
        "{fetched}"
    );

    // Guest writes, then an incremental. The writes' places are drawn
    // from a fixed seed: how much coalescing adds depends on the gaps
    // between them, and the bound below is for this pattern, not for
    // every draw (a random one went 11% over it once in many runs).
    let written = coffer::lab::state::Store::new(b.lab.state_dir())
        .update(|st, root| coffer::lab::ops::write_percent(st, root, "lab-vm-01", 3.0, 7))
        .unwrap();
    let written_bytes: u64 = written
        .iter()
        .map(|w| {
            normalize_ranges(w.areas.clone(), u64::MAX)
                .iter()
                .map(|r| r.end - r.start)
                .sum::<u64>()
        })
        .sum();
    b.lab.stats().reset();
    let incr = b
        .backup(
            "lab-vm-01",
            Consistency::Application,
            Some(&full.manifest),
            "r2",
        )
        .unwrap();
    for d in &incr.disks {
        assert!(
            matches!(d.verdict, CbtVerdict::Incremental { .. }),
            "{:?}",
            d.verdict
        );
    }
    // Close areas are read as one request, the few bytes between them
    // included: at most a tenth more than what was written, all of it
    // counted by coffer as the lab counted it.
    let fetched: u64 = incr.disks.iter().map(|d| d.bytes_fetched).sum();
    assert_eq!(b.flat_bytes_served(), fetched);
    assert!(
        fetched >= written_bytes && fetched * 10 <= written_bytes * 11,
        "read {fetched} bytes for {written_bytes} written"
    );
    assert_eq!(b.restore(&incr.manifest, 0), b.flat("lab-vm-01", 0));
    assert_eq!(b.restore(&incr.manifest, 1), b.flat("lab-vm-01", 1));
    // The full still restores the disk as it was.
    assert_eq!(b.restore(&full.manifest, 0), disk0);
    assert!(b.snapshots("lab-vm-01").is_empty());
}

#[test]
fn quiesce_failure_follows_the_consistency_asked_for() {
    let b = bed();
    b.lab.faults().apply("quiesce").unwrap();
    let err = b
        .backup("lab-vm-01", Consistency::Application, None, "q1")
        .unwrap_err();
    assert!(matches!(err, VmBackupError::QuiesceFailed { .. }), "{err}");
    assert!(b.snapshots("lab-vm-01").is_empty());
    assert!(b.repo.list_points().unwrap().is_empty());
    // File-system consistency needs quiescing too.
    let err = b
        .backup("lab-vm-01", Consistency::Filesystem, None, "q0")
        .unwrap_err();
    assert!(
        matches!(err, VmBackupError::QuiesceFailed { .. })
            && err.to_string().contains("filesystem"),
        "{err}"
    );
    assert!(b.snapshots("lab-vm-01").is_empty());
    assert!(b.repo.list_points().unwrap().is_empty());
    let ok = b
        .backup("lab-vm-01", Consistency::ApplicationPreferred, None, "q2")
        .unwrap();
    assert_eq!(ok.consistency, "crash");
    assert!(ok.quiesce_fallback.is_some());
    assert_eq!(
        ok.manifest.consistency, "crash",
        "the point records what was achieved"
    );
    assert!(b.snapshots("lab-vm-01").is_empty());
}

#[test]
fn a_snapshot_failure_leaves_nothing() {
    let b = bed();
    b.lab.faults().apply("snapshot").unwrap();
    let err = b
        .backup("lab-vm-02", Consistency::Crash, None, "s1")
        .unwrap_err();
    assert!(err.to_string().contains("creating the snapshot"), "{err}");
    assert!(b.snapshots("lab-vm-02").is_empty());
    assert!(b.repo.list_points().unwrap().is_empty());
}

#[test]
fn a_busy_datastore_and_a_cut_connection_are_retried() {
    let b = bed();
    b.lab.faults().apply("unavailable=3").unwrap();
    let m = b
        .backup("lab-vm-01", Consistency::Crash, None, "u1")
        .unwrap();
    assert_eq!(b.restore(&m.manifest, 0), b.flat("lab-vm-01", 0));
    b.lab.write("lab-vm-02", 1.0).unwrap();
    b.lab.faults().apply("drop-after=5000").unwrap();
    let m = b
        .backup("lab-vm-02", Consistency::Crash, None, "d1")
        .unwrap();
    assert_eq!(b.restore(&m.manifest, 0), b.flat("lab-vm-02", 0));
    assert!(
        coffer::repo::ops::verify(&b.repo, None, None, 2)
            .unwrap()
            .ok()
    );
    assert!(b.snapshots("lab-vm-01").is_empty() && b.snapshots("lab-vm-02").is_empty());
}

#[test]
fn a_failed_snapshot_removal_is_consolidated_by_the_next_backup() {
    let b = bed();
    b.lab.faults().apply("remove-snapshot").unwrap();
    let first = b.backup("lab-vm-01", Consistency::Crash, None, "f1");
    // The host dropped the snapshot but could not consolidate its files.
    assert!(b.snapshots("lab-vm-01").is_empty());
    assert!(b.vm("lab-vm-01").consolidation_needed);
    let first = first.unwrap();
    b.lab.faults().clear();
    let next = b
        .backup("lab-vm-01", Consistency::Crash, Some(&first.manifest), "f2")
        .unwrap();
    assert!(!b.vm("lab-vm-01").consolidation_needed);
    assert_eq!(b.restore(&next.manifest, 0), b.flat("lab-vm-01", 0));
}

#[test]
fn an_unreachable_host_and_a_wrong_pin_are_named() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = Session::connect(
        &format!("https://127.0.0.1:{port}"),
        &TlsTrust::Thumbprint([7; 32]),
        "root",
        "x",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("cannot reach") && err.contains("refused"),
        "{err}"
    );
    let b = bed();
    let err = Session::connect(b.lab.url(), &TlsTrust::Thumbprint([7; 32]), "root", "x")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&b.lab.thumbprint().to_lowercase().replace(':', ""))
            || err.contains(&b.lab.thumbprint()),
        "{err}"
    );
    let err = Session::connect(b.lab.url(), &b.lab.tls_trust(), b.lab.user(), "wrong").unwrap_err();
    assert!(
        matches!(err.fault(), Some(VimFault::InvalidLogin { .. })),
        "{err}"
    );
}

fn write_policy(dir: &Path) {
    std::fs::write(
        dir.join("coffer.toml"),
        r#"
[settings]
timezone = "UTC"

[sources.lab]
kind = "lab"
lab_vms = 1

[tiers.local]
backend = "local"
path = "repo"
site = "here"

[policies.all]
sources = ["lab"]
vms = ["*"]
schedule = "0 0 1 * * *"
consistency = "crash"
backup_to = "local"

[policies.all.retain.local]
last = 3
"#,
    )
    .unwrap();
}

fn coffer(dir: &Path, args: &[&str]) -> std::process::Command {
    let mut c = common::command_in(dir);
    c.args(args).args(["-p", "."]);
    c
}

fn lab_snapshots(dir: &Path) -> Vec<String> {
    let out = coffer(dir, &["inventory", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["vms"][0]["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect()
}

/// Starts `coffer backup lab-vm-01` slowed down by 503s, so a signal lands
/// while the snapshot exists.
fn slow_backup(dir: &Path) -> std::process::Child {
    let child = coffer(dir, &["backup", "lab-vm-01", "--json"])
        .env("COFFER_LAB_FAULTS", "unavailable=5")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    child
}

#[test]
fn ctrl_c_removes_the_snapshot_and_records_nothing() {
    let t = tempfile::tempdir().unwrap();
    write_policy(t.path());
    assert!(
        coffer(t.path(), &["repo", "init", "--tier", "local"])
            .status()
            .unwrap()
            .success()
    );
    let child = slow_backup(t.path());
    // SAFETY: sending a signal to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("cancelled"));
    assert!(lab_snapshots(t.path()).is_empty());
    let ls = coffer(t.path(), &["repo", "ls", "--tier", "local"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&ls.stdout).lines().count(),
        1,
        "only the header"
    );
}

#[test]
fn a_killed_backup_leaves_a_snapshot_the_next_run_removes() {
    let t = tempfile::tempdir().unwrap();
    write_policy(t.path());
    assert!(
        coffer(t.path(), &["repo", "init", "--tier", "local"])
            .status()
            .unwrap()
            .success()
    );
    let mut child = slow_backup(t.path());
    child.kill().unwrap();
    child.wait().unwrap();
    let left = lab_snapshots(t.path());
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].starts_with("coffer-"));
    // The next backup removes it first.
    let out = coffer(t.path(), &["backup", "lab-vm-01", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["leftovers_removed"][0]["snapshot"], left[0].as_str());
    assert_eq!(v["leftovers_removed"].as_array().unwrap().len(), 1);
    assert!(lab_snapshots(t.path()).is_empty());
    let ls = coffer(t.path(), &["repo", "ls", "--tier", "local"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&ls.stdout).lines().count(),
        2,
        "one point"
    );
}

#[test]
fn a_restored_disk_uploads_to_the_datastore_and_reads_back() {
    use coffer::vsphere::datastore::{self, DatastoreDisk, DatastorePath};
    let b = bed();
    let m = b
        .backup("lab-vm-01", Consistency::Crash, None, "up1")
        .unwrap();
    let index = b
        .repo
        .read_index(&m.manifest, &m.manifest.disks[0])
        .unwrap();
    let vmdk = b.dir.join("restored.vmdk");
    restore::restore_disk(&b.repo, &index, &vmdk, DiskFormat::Vmdk, true, 2).unwrap();
    let t = b.session.transport();
    let dest = DatastorePath::parse("[datastore1] restored-01/restored.vmdk").unwrap();
    datastore::upload(t, "ha-datacenter", &dest, &vmdk, false).unwrap();
    datastore::upload(
        t,
        "ha-datacenter",
        &dest.sibling("restored-flat.vmdk"),
        &b.dir.join("restored-flat.vmdk"),
        false,
    )
    .unwrap();
    // Read back through the descriptor, as a backup would.
    let disk = DatastoreDisk::open(
        t,
        "ha-datacenter",
        &dest,
        m.manifest.disks[0].size_bytes,
        &Default::default(),
    )
    .unwrap();
    let mut back = vec![0u8; m.manifest.disks[0].size_bytes as usize];
    use coffer::repo::backup::DiskReader;
    for (i, chunk) in back.chunks_mut(4 << 20).enumerate() {
        disk.read_exact_at(chunk, (i as u64) * (4 << 20)).unwrap();
    }
    assert!(
        back == b.flat("lab-vm-01", 0),
        "uploaded bytes read back equal"
    );
    // An existing file is not replaced unless asked.
    let err = datastore::upload(t, "ha-datacenter", &dest, &vmdk, false).unwrap_err();
    assert!(err.to_string().contains("refusing to overwrite"), "{err}");
}

#[test]
fn a_vm_deleted_mid_backup_fails_cleanly_and_records_nothing() {
    let b = bed();
    b.lab.faults().apply("unavailable=4").unwrap();
    let vm = b.vm("lab-vm-02");
    let moref = vm.moref.clone();
    let result = std::thread::scope(|s| {
        let h = s.spawn(|| b.backup("lab-vm-02", Consistency::Crash, None, "del1"));
        std::thread::sleep(Duration::from_millis(700));
        let admin = Session::connect(
            b.lab.url(),
            &b.lab.tls_trust(),
            b.lab.user(),
            b.lab.password(),
        )
        .unwrap();
        admin
            .run_task(&coffer::vsphere::soap::power_off_vm(&moref), TASK)
            .unwrap();
        admin
            .run_task(&coffer::vsphere::soap::destroy(&moref), TASK)
            .unwrap();
        h.join().unwrap()
    });
    let err = result.unwrap_err();
    assert!(
        matches!(err, VmBackupError::VmGone { .. }),
        "the error says the VM went away: {err}"
    );
    assert!(
        b.repo.list_points().unwrap().is_empty(),
        "no point recorded"
    );
    assert!(
        !b.session
            .list_vms()
            .unwrap()
            .iter()
            .any(|v| v.name == "lab-vm-02"),
        "the VM is gone"
    );
}

/// Polls `cond` until it holds, failing the test after a minute.
fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Another coffer (its own state dir, so another installation id) backs up
/// the same VM while the first one is still reading its snapshot: the
/// second leaves that snapshot alone and says why, and the first point
/// restores to the disk as it was when its snapshot was taken, although
/// the guest wrote meanwhile.
#[test]
fn another_installations_backup_never_removes_a_snapshot_being_read() {
    let b = bed();
    let at_snapshot = b.flat("lab-vm-02", 0);
    let slow = Throttle::new(4 << 20);
    let progress = ReadProgress::default();
    let other_session = Session::connect(
        b.lab.url(),
        &b.lab.tls_trust(),
        b.lab.user(),
        b.lab.password(),
    )
    .unwrap();
    std::thread::scope(|s| {
        let first = s.spawn(|| {
            b.backup_as(
                "lab-vm-02",
                INSTALLATION,
                "run-a",
                Some(&slow),
                Some(&progress),
            )
        });
        wait_for("the first backup to read", || {
            progress.read.load(Ordering::Relaxed) > 0
        });
        b.lab.write("lab-vm-02", 5.0).unwrap();
        let vm = b.vm("lab-vm-02");
        let cancel = AtomicBool::new(false);
        let second = backup_vm(
            &other_session,
            &b.repo,
            &VmBackupRequest {
                vm: &vm,
                installation: "ffeeddcc00112233",
                snapshot_max_age: Duration::from_secs(24 * 3600),
                source: "lab",
                datacenter: "ha-datacenter",
                host_route: None,
                run_id: "run-b",
                consistency: Consistency::Crash,
                base: None,
                chunk_size_bytes: 256 << 10,
                threads: 2,
                task_timeout: TASK,
                cancel: &cancel,
                read_whole_disk: false,
                io_limit: None,
                progress: None,
                read: Default::default(),
                max_snapshot_lifetime: None,
                fence: None,
            },
        );
        assert!(
            !first.is_finished(),
            "the first backup must still be reading for this test to prove anything"
        );
        match second {
            Err(VmBackupError::HeldByAnotherRun { snapshot, why, .. }) => {
                assert_eq!(snapshot, "coffer-run-a");
                assert!(why.contains(INSTALLATION), "{why}");
            }
            other => panic!("the second backup must leave the snapshot alone: {other:?}"),
        }
        assert_eq!(b.snapshots("lab-vm-02"), ["coffer-run-a"]);
        let first = first.join().unwrap().unwrap();
        assert_eq!(b.restore(&first.manifest, 0), at_snapshot);
        assert_ne!(
            b.flat("lab-vm-02", 0),
            at_snapshot,
            "the guest wrote meanwhile"
        );
    });
    assert!(b.snapshots("lab-vm-02").is_empty());
    assert_eq!(b.repo.list_points().unwrap().len(), 1);
}

/// A snapshot removed behind coffer's back while the backup reads it: the
/// backup fails, says why, and no point is recorded.
#[test]
fn a_backup_whose_snapshot_is_removed_mid_read_records_nothing() {
    let b = bed();
    let other_session = Session::connect(
        b.lab.url(),
        &b.lab.tls_trust(),
        b.lab.user(),
        b.lab.password(),
    )
    .unwrap();
    let err = b
        .backup_while_reading("lab-vm-02", || {
            let snap = b.vm("lab-vm-02").all_snapshots()[0].snapshot.clone();
            b.lab.write("lab-vm-02", 5.0).unwrap();
            other_session.remove_snapshot(&snap, TASK).unwrap();
        })
        .unwrap_err();
    assert!(matches!(err, VmBackupError::SnapshotGone { .. }), "{err}");
    assert!(b.repo.list_points().unwrap().is_empty());
    assert!(b.snapshots("lab-vm-02").is_empty());
}

/// A Storage vMotion of the VM while its backup reads the snapshot: the
/// snapshot's files move with the disks, the backup fails naming the move,
/// no point is recorded, the snapshot is removed, and the next backup of
/// the VM on its new datastore is good.
#[test]
fn a_disk_moved_mid_read_records_nothing() {
    let b = bed();
    let moved = b.backup_while_reading("lab-vm-02", || {
        coffer::lab::relocate(&b.dir.join("lab"), "lab-vm-02", "nfs1").unwrap();
    });
    match moved {
        Err(VmBackupError::DiskMoved {
            disk,
            before,
            after,
            ..
        }) => {
            assert_eq!(disk, "disk 2000");
            assert!(before.starts_with("[datastore1] lab-vm-02/"), "{before}");
            assert!(after.starts_with("[nfs1] lab-vm-02/"), "{after}");
        }
        other => panic!("the backup must fail naming the move: {other:?}"),
    }
    assert!(b.repo.list_points().unwrap().is_empty());
    assert!(b.snapshots("lab-vm-02").is_empty());
    let again = b
        .backup("lab-vm-02", Consistency::Crash, None, "run-b")
        .unwrap();
    let moved_flat = b
        .lab
        .datastore_folder("nfs1")
        .join("lab-vm-02/lab-vm-02-flat.vmdk");
    assert_eq!(
        b.restore(&again.manifest, 0),
        std::fs::read(moved_flat).unwrap()
    );
}

/// Two coffers with their own state dirs (two installations) on one lab:
/// the second runs `coffer backup VM` while the first's backup of that VM
/// is still reading its snapshot. The second leaves the snapshot alone and
/// fails saying whose it is; the first finishes, and its point restores to
/// the disk as it was at its snapshot, although the guest wrote meanwhile.
#[test]
fn a_second_coffer_never_removes_the_snapshot_the_first_is_reading() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    write_policy(a.path());
    write_policy(b.path());
    let toml = std::fs::read_to_string(b.path().join("coffer.toml"))
        .unwrap()
        .replace(
            "timezone = \"UTC\"",
            "timezone = \"UTC\"\nstate_dir = \"state-b\"",
        );
    std::fs::write(b.path().join("coffer.toml"), toml).unwrap();
    for dir in [a.path(), b.path()] {
        assert!(
            coffer(dir, &["repo", "init", "--tier", "local"])
                .status()
                .unwrap()
                .success()
        );
    }
    // Both state dirs see one lab: B's lab state is A's.
    assert!(lab_snapshots(a.path()).is_empty());
    std::fs::create_dir_all(b.path().join("state-b")).unwrap();
    std::os::unix::fs::symlink(a.path().join(".coffer/lab"), b.path().join("state-b/lab")).unwrap();
    let lab_state = a.path().join(".coffer/lab/lab");
    let flat = lab_state.join("datastore/lab-vm-01/lab-vm-01-flat.vmdk");
    let at_snapshot = std::fs::read(&flat).unwrap();

    let mut first = coffer(a.path(), &["backup", "lab-vm-01", "--json"])
        .env("COFFER_LAB_FAULTS", "unavailable=5")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the first backup's snapshot", || {
        !lab_snapshots(a.path()).is_empty()
    });
    let write = common::command_in(a.path())
        .args(["lab", "write", "lab-vm-01", "--percent", "5", "--state"])
        .arg(&lab_state)
        .output()
        .unwrap();
    assert!(write.status.success(), "{}", common::stderr(&write));
    let second = coffer(b.path(), &["backup", "lab-vm-01"]).output().unwrap();
    let said = format!("{}{}", common::stdout(&second), common::stderr(&second));
    assert!(
        first.try_wait().unwrap().is_none(),
        "the first backup must still be reading for this test to prove anything"
    );
    assert_eq!(second.status.code(), Some(1), "{said}");
    let installation_a = std::fs::read_to_string(a.path().join(".coffer/installation-id")).unwrap();
    assert!(said.contains("left alone"), "{said}");
    assert!(said.contains(installation_a.trim()), "{said}");
    assert_eq!(
        lab_snapshots(a.path()).len(),
        1,
        "the first snapshot survives"
    );

    let out = first.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let point = v["point"].as_str().unwrap();
    let restored = a.path().join("restored.raw");
    let r = coffer(
        a.path(),
        &[
            "repo",
            "restore",
            point,
            "--tier",
            "local",
            "--disk",
            "2000",
            "-o",
            restored.to_str().unwrap(),
        ],
    )
    .output()
    .unwrap();
    assert!(r.status.success(), "{}", common::stderr(&r));
    assert_ne!(
        std::fs::read(&flat).unwrap(),
        at_snapshot,
        "the guest wrote"
    );
    assert!(
        std::fs::read(&restored).unwrap() == at_snapshot,
        "the point restores to the disk at its snapshot"
    );
    assert!(lab_snapshots(a.path()).is_empty());
}
