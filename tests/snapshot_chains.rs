//! VMs that already carry user snapshots: coffer reads each disk as the
//! guest sees it at coffer's snapshot by following the chain (base flat
//! extent, a vmfsSparse delta, an SEsparse delta) through datastore HTTP,
//! and what it stores restores byte-identical to `qemu-img convert` of the
//! same chain: for a full and for the incremental after it. Formats coffer
//! does not read are refused by name.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use coffer::lab::{Lab, LabConfig, LabHandle};
use coffer::plan::cbt::CbtVerdict;
use coffer::policy::model::Consistency;
use coffer::repo::Repository;
use coffer::repo::backup::DiskReader;
use coffer::repo::local::LocalStore;
use coffer::repo::manifest::Manifest;
use coffer::repo::restore::{self, DiskFormat};
use coffer::run::vm_backup::{VmBackupError, VmBackupOutcome, VmBackupRequest, backup_vm};
use coffer::vsphere::Session;
use coffer::vsphere::datastore::{DatastoreDisk, DatastorePath, DiskError};
use coffer::vsphere::delta::DeltaFormat;
use coffer::vsphere::types::VmRecord;

const VM: &str = "lab-vm-01";

struct Bed {
    _t: tempfile::TempDir,
    dir: PathBuf,
    lab: LabHandle,
    session: Session,
    repo: Repository,
}

fn bed() -> Bed {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().to_path_buf();
    let mut cfg = LabConfig::new(dir.join("lab"));
    cfg.vms = 1;
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
    fn vm(&self) -> VmRecord {
        self.session
            .list_vms()
            .unwrap()
            .into_iter()
            .find(|v| v.name == VM)
            .unwrap()
    }

    fn backup(&self, base: Option<&Manifest>, run: &str) -> Result<VmBackupOutcome, VmBackupError> {
        let vm = self.vm();
        let cancel = AtomicBool::new(false);
        backup_vm(
            &self.session,
            &self.repo,
            &VmBackupRequest {
                vm: &vm,
                installation: "00112233aabbccdd",
                snapshot_max_age: Duration::from_secs(24 * 3600),
                source: "lab",
                datacenter: "ha-datacenter",
                host_route: None,
                run_id: run,
                consistency: Consistency::Crash,
                base,
                chunk_size_bytes: 256 << 10,
                threads: 2,
                task_timeout: Duration::from_secs(30),
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

    /// The descriptor each disk of the VM runs on now (the top of its chain).
    fn top_descriptors(&self) -> Vec<PathBuf> {
        self.vm()
            .disks
            .iter()
            .map(|d| {
                let p = DatastorePath::parse(&d.file_name).unwrap();
                self.lab.datastore_dir().join(p.path)
            })
            .collect()
    }

    /// What qemu makes of each disk's chain as it is now.
    fn qemu_views(&self, tag: &str) -> Vec<Vec<u8>> {
        self.top_descriptors()
            .iter()
            .enumerate()
            .map(|(i, d)| qemu_convert(d, &self.dir.join(format!("qemu-{tag}-{i}.raw"))))
            .collect()
    }

    fn restore(&self, m: &Manifest, disk: usize) -> Vec<u8> {
        let out = self.dir.join(format!("restore-{}-{disk}.raw", m.point_id));
        let index = self.repo.read_index(m, &m.disks[disk]).unwrap();
        restore::restore_disk(&self.repo, &index, &out, DiskFormat::Raw, true, 2).unwrap();
        std::fs::read(out).unwrap()
    }

    fn snapshot_names(&self) -> Vec<String> {
        self.vm()
            .all_snapshots()
            .iter()
            .map(|s| s.name.clone())
            .collect()
    }
}

fn qemu_convert(descriptor: &Path, out: &Path) -> Vec<u8> {
    let o = std::process::Command::new("qemu-img")
        .args(["convert", "-f", "vmdk", "-O", "raw"])
        .arg(descriptor)
        .arg(out)
        .output()
        .expect("qemu-img (qemu-utils) is installed");
    assert!(
        o.status.success(),
        "qemu-img convert {}: {}",
        descriptor.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::read(out).unwrap()
}

fn create_type(descriptor: &Path) -> String {
    let text = std::fs::read_to_string(descriptor).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("createType="))
        .unwrap()
        .trim_matches('"')
        .to_string()
}

#[test]
fn a_vm_with_vmfs_sparse_and_sesparse_user_snapshots_restores_as_qemu_reads_its_chain() {
    let b = bed();
    // The user's history: data, a vmfsSparse snapshot, more data, an
    // SEsparse snapshot, more data. (ESXi keeps one format per chain; the
    // lab mixes them so one chain exercises both readers.)
    b.lab.write(VM, 2.0).unwrap();
    b.lab
        .user_snapshot(VM, "before upgrade", Some(DeltaFormat::VmfsSparse))
        .unwrap();
    b.lab.write(VM, 3.0).unwrap();
    b.lab
        .user_snapshot(VM, "after upgrade", Some(DeltaFormat::SeSparse))
        .unwrap();
    b.lab.write(VM, 3.0).unwrap();
    let tops = b.top_descriptors();
    assert_eq!(tops.len(), 2, "lab-vm-01 has two disks");
    for top in &tops {
        assert_eq!(create_type(top), "seSparse", "{}", top.display());
    }
    // The guest's view now is what coffer's snapshot freezes.
    let expected = b.qemu_views("full");

    let full = b.backup(None, "r1").unwrap();
    for (i, want) in expected.iter().enumerate() {
        let got = b.restore(&full.manifest, i);
        assert_eq!(got.len(), want.len());
        assert!(
            got == *want,
            "disk {i} restores as qemu-img converts its chain"
        );
    }
    // The chain mattered: the base alone is not what the guest saw.
    let base = std::fs::read(
        b.lab
            .datastore_dir()
            .join(VM)
            .join(format!("{VM}-flat.vmdk")),
    )
    .unwrap();
    assert!(base != expected[0]);
    // coffer removed its own snapshot and left the user's alone.
    assert_eq!(b.snapshot_names(), vec!["before upgrade", "after upgrade"]);

    // A guest write, then an incremental that still restores exactly.
    b.lab.write(VM, 2.0).unwrap();
    let expected = b.qemu_views("incr");
    let incr = b.backup(Some(&full.manifest), "r2").unwrap();
    for d in &incr.disks {
        assert!(
            matches!(d.verdict, CbtVerdict::Incremental { .. }),
            "{:?}",
            d.verdict
        );
    }
    for (i, want) in expected.iter().enumerate() {
        assert!(
            b.restore(&incr.manifest, i) == *want,
            "disk {i}: the incremental restores as qemu-img converts the chain"
        );
    }
    assert_eq!(b.snapshot_names(), vec!["before upgrade", "after upgrade"]);

    // Removing the user's snapshots consolidates their deltas; the next
    // backup reads a plain flat disk and still restores as qemu reads it.
    let vm = b.vm();
    for s in vm.all_snapshots() {
        b.session
            .remove_snapshot(&s.snapshot, Duration::from_secs(30))
            .unwrap();
    }
    let expected = b.qemu_views("after");
    assert_eq!(create_type(&b.top_descriptors()[0]), "vmfs");
    let last = b.backup(Some(&incr.manifest), "r3").unwrap();
    assert!(b.restore(&last.manifest, 0) == expected[0]);
}

#[test]
fn delta_formats_coffer_does_not_read_are_refused_by_name() {
    let b = bed();
    let dir = b.lab.datastore_dir().join(VM);
    let t = b.session.transport();
    let open = |name: &str| {
        let p = DatastorePath::parse(&format!("[datastore1] {VM}/{name}")).unwrap();
        DatastoreDisk::open(t, "ha-datacenter", &p, 64 << 20, &Default::default())
    };
    // A hosted (Workstation) sparse delta over the VM's base disk.
    std::fs::write(
        dir.join("hosted-000001.vmdk"),
        format!(
            "# Disk DescriptorFile\nversion=1\nCID=00000002\nparentCID=00000001\n\
             createType=\"monolithicSparse\"\nparentFileNameHint=\"{VM}.vmdk\"\n\
             RW 131072 SPARSE \"hosted-000001-s001.vmdk\"\n"
        ),
    )
    .unwrap();
    let err = open("hosted-000001.vmdk").unwrap_err();
    assert!(matches!(err, DiskError::Unsupported { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("SPARSE") && text.contains("vmfsSparse and SEsparse"),
        "{text}"
    );
    // A monolithic sparse file given as the disk.
    let mut mono = b"KDMV".to_vec();
    mono.resize(4096, 0);
    std::fs::write(dir.join("mono.vmdk"), mono).unwrap();
    let text = open("mono.vmdk").unwrap_err().to_string();
    assert!(text.contains("monolithic"), "{text}");
    // A delta whose data file is not a delta at all.
    std::fs::write(
        dir.join("fake-000001.vmdk"),
        format!(
            "version=1\nCID=00000002\nparentCID=00000001\ncreateType=\"vmfsSparse\"\n\
             parentFileNameHint=\"{VM}.vmdk\"\nRW 131072 VMFSSPARSE \"fake-delta.vmdk\"\n"
        ),
    )
    .unwrap();
    std::fs::write(dir.join("fake-delta.vmdk"), vec![0u8; 4096]).unwrap();
    let err = open("fake-000001.vmdk").unwrap_err();
    assert!(matches!(err, DiskError::Delta { .. }), "{err}");
    // The VM's own disk, with no snapshot, is locked by the running VM: the
    // host serves it to no one.
    let err = open(&format!("{VM}.vmdk")).unwrap_err();
    assert!(err.to_string().contains("HTTP 500"), "{err}");
    // Powered off, it opens as a plain flat disk.
    b.session
        .run_task(
            &coffer::vsphere::soap::power_off_vm(&b.vm().moref),
            Duration::from_secs(30),
        )
        .unwrap();
    let disk = open(&format!("{VM}.vmdk")).unwrap();
    assert_eq!((disk.chain_len(), disk.size_bytes()), (0, 64 << 20));
}

#[test]
fn on_a_vmfs6_datastore_snapshots_are_sesparse_unless_the_vm_says_otherwise() {
    let t = tempfile::tempdir().unwrap();
    let mut cfg = LabConfig::new(t.path().join("lab"));
    cfg.vms = 2;
    cfg.vmfs6 = Some(true);
    let lab = Lab::start(cfg).unwrap();
    coffer::lab::set_delta_format(lab.state_dir(), "lab-vm-02", Some(DeltaFormat::VmfsSparse))
        .unwrap();
    lab.user_snapshot("lab-vm-01", "vmfs6 default", None)
        .unwrap();
    lab.user_snapshot("lab-vm-02", "per-VM format", None)
        .unwrap();
    let ds = lab.datastore_dir();
    assert_eq!(
        create_type(&ds.join("lab-vm-01/lab-vm-01-000001.vmdk")),
        "seSparse"
    );
    assert!(ds.join("lab-vm-01/lab-vm-01-000001-sesparse.vmdk").exists());
    assert_eq!(
        create_type(&ds.join("lab-vm-02/lab-vm-02-000001.vmdk")),
        "vmfsSparse"
    );
    assert!(ds.join("lab-vm-02/lab-vm-02-000001-delta.vmdk").exists());
    // Guest writes land in the deltas, and qemu reads them as the lab does.
    lab.write("lab-vm-01", 2.0).unwrap();
    let got = qemu_convert(
        &ds.join("lab-vm-01/lab-vm-01-000001.vmdk"),
        &t.path().join("q.raw"),
    );
    let base = std::fs::read(ds.join("lab-vm-01/lab-vm-01-flat.vmdk")).unwrap();
    assert_eq!(got.len(), base.len());
    assert!(got != base, "the writes are in the SEsparse delta");
}

/// The same through `coffer apply` and `coffer repo restore`, as an
/// operator runs it: the lab's VM got its user snapshots between runs.
#[test]
fn coffer_apply_backs_up_a_vm_with_user_snapshots_and_it_restores_as_qemu_reads_it() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    common::one_vm_lab_policy(dir, "");
    let run = |args: &[&str]| {
        let o = common::in_policy_dir(dir, args);
        let text = common::text(&o);
        assert!(o.status.success(), "coffer {args:?}: {text}");
        text
    };
    run(&["repo", "init", "--all"]);
    // The first plan starts the lab and leaves its state behind.
    run(&["plan"]);
    let state = coffer::run::connect::lab_state_dir(&dir.join(".coffer"), "lab");
    assert!(state.join("state.json").exists());
    coffer::lab::write(&state, VM, 2.0).unwrap();
    coffer::lab::user_snapshot(&state, VM, "monday", Some(DeltaFormat::VmfsSparse)).unwrap();
    coffer::lab::write(&state, VM, 2.0).unwrap();
    coffer::lab::user_snapshot(&state, VM, "tuesday", Some(DeltaFormat::SeSparse)).unwrap();
    coffer::lab::write(&state, VM, 2.0).unwrap();
    let top = state.join(format!("datastore/{VM}/{VM}-000002.vmdk"));
    assert_eq!(create_type(&top), "seSparse");
    let expected = qemu_convert(&top, &dir.join("qemu.raw"));

    run(&["apply"]);
    let ls = run(&["repo", "ls", "--tier", "local"]);
    let point = ls
        .lines()
        .skip(1)
        .find_map(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("a point in {ls}"))
        .to_string();
    run(&[
        "repo",
        "restore",
        &point,
        "--tier",
        "local",
        "--disk",
        "2000",
        "-o",
        "restored.raw",
    ]);
    assert!(
        std::fs::read(dir.join("restored.raw")).unwrap() == expected,
        "the point restores as qemu-img converts the chain"
    );
}
