//! Restore onto a host through its OVF import (`CreateImportSpec`,
//! `ImportVApp`, an `HttpNfcLease`), against the lab run as a separate
//! host so its records of each lease can be read: a 4 GiB disk arrives
//! byte for byte, thin, with no zero grain sent, the lease kept alive by
//! progress reports through an upload longer than its timeout, the VM
//! powered on with its tools running; through a vCenter onto the host
//! asked for; and an upload cut or a Ctrl-C aborts the lease and leaves no
//! VM and no folder. An endpoint without an OVF manager still gets the
//! VM, through `/folder`.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use coffer::lab::{Lab, LabConfig, LabHandle};
use coffer::vsphere::Session;
use coffer::vsphere::types::PowerState;

use common::text;

const PASSWORD_ENV: &str = "COFFER_TEST_IMPORT_PASSWORD";

/// A policy directory backing up one VM of a lab that runs as a host of
/// its own.
struct Host {
    t: tempfile::TempDir,
    lab: LabHandle,
}

impl Host {
    /// The lab (a vCenter when `vcenter`) with VM `big` of one disk
    /// `disk` (as `lab add-vm --disk` takes it), backed up once.
    fn start(vcenter: bool, disk: &str) -> Host {
        Host::start_in(tempfile::tempdir().unwrap(), vcenter, disk)
    }

    /// As `start`, in the directory `t`.
    fn start_in(t: tempfile::TempDir, vcenter: bool, disk: &str) -> Host {
        let state = t.path().join("host");
        let config = || {
            let mut config = LabConfig::new(&state);
            config.vms = 0;
            config.password = Some("pw".into());
            config.vcenter = vcenter;
            config
        };
        // The lab's state is made by its first start; the VM is added to it.
        drop(Lab::start(config()).unwrap());
        let added = Command::new(env!("CARGO_BIN_EXE_coffer"))
            .args(["lab", "add-vm", "big", "--disk", disk, "--state"])
            .arg(&state)
            .output()
            .unwrap();
        assert!(added.status.success(), "{}", text(&added));
        let lab = Lab::start(config()).unwrap();
        std::fs::write(
            t.path().join("coffer.toml"),
            format!(
                r#"
[sources.host]
kind = "{kind}"
url = "{url}"
user = "{user}"
password = {{ env = "{PASSWORD_ENV}" }}
thumbprint = "{thumbprint}"

[tiers.local]
backend = "local"
path = "repo"

[policies.all]
sources = ["host"]
vms = ["big"]
schedule = "0 0 1 * * *"
consistency = "crash"
backup_to = "local"

[policies.all.retain.local]
last = 3
"#,
                kind = if vcenter { "vcenter" } else { "esxi" },
                url = lab.url(),
                user = lab.user(),
                thumbprint = lab.thumbprint(),
            ),
        )
        .unwrap();
        let host = Host { t, lab };
        let init = host.run(&["repo", "init", "--tier", "local"]);
        assert!(init.status.success(), "{}", text(&init));
        let backup = host.run(&["backup", "big"]);
        assert!(backup.status.success(), "{}", text(&backup));
        host
    }

    fn dir(&self) -> &Path {
        self.t.path()
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = common::command_in(self.dir());
        c.args(args).args(["-p", "."]).env(PASSWORD_ENV, "pw");
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// `coffer restore big --to-source host --name big-r` with `more`.
    fn restore(&self, more: &[&str]) -> Output {
        let mut args = vec!["restore", "big", "--to-source", "host", "--name", "big-r"];
        args.extend_from_slice(more);
        self.run(&args)
    }

    fn session(&self) -> Session {
        Session::connect(
            self.lab.url(),
            &self.lab.tls_trust(),
            self.lab.user(),
            self.lab.password(),
        )
        .unwrap()
    }

    /// The one import lease the lab handed out.
    fn lease(&self) -> coffer::lab::faults::NfcLeaseStats {
        let leases = self.lab.stats().nfc_leases();
        assert_eq!(leases.len(), 1, "{leases:?}");
        leases.into_iter().next().unwrap()
    }

    /// The file of the datastore, `rel` under it.
    fn file(&self, rel: &str) -> PathBuf {
        self.lab.datastore_dir().join(rel)
    }

    /// The import completed with every disk and no zero grain sent, and
    /// `big-r` runs with its tools and holds the point's bytes: the lease
    /// and the VM.
    fn assert_imported(
        &self,
    ) -> (
        coffer::lab::faults::NfcLeaseStats,
        coffer::vsphere::VmRecord,
    ) {
        let lease = self.lease();
        assert_eq!(
            lease.outcome,
            Some(coffer::lab::nfc::LeaseOutcome::Completed),
            "{lease:?}"
        );
        assert!(lease.disks.iter().all(|d| d.uploaded), "{lease:?}");
        assert!(lease.grains > 0, "{lease:?}");
        assert_eq!(lease.zero_grains, 0, "no zeros were sent: {lease:?}");
        let vm = self
            .session()
            .list_vms()
            .unwrap()
            .into_iter()
            .find(|v| v.name == "big-r")
            .expect("the restored VM");
        assert_eq!(vm.power_state, Some(PowerState::PoweredOn), "{vm:?}");
        assert_eq!(
            vm.tools_running_status.as_deref(),
            Some("guestToolsRunning"),
            "{vm:?}"
        );
        assert!(
            same_bytes(
                &self.file("big/big-flat.vmdk"),
                &self.file("big-r/big-r-flat.vmdk")
            ),
            "the restored disk holds the point's bytes"
        );
        (lease, vm)
    }

    /// No VM `name` on the host, and no folder of that name on its
    /// datastore.
    fn assert_nothing_named(&self, name: &str) {
        let vms = self.session().list_vms().unwrap();
        assert!(!vms.iter().any(|v| v.name == name), "{vms:?}");
        assert!(!self.file(name).exists(), "the folder {name} is gone");
    }
}

/// The `--disk` of a 4 GiB disk holding little data: an image in the
/// test's directory with an MBR of one Linux partition over the disk (the
/// guest boots from it) and ten 16 MiB extents of incompressible bytes
/// spread over the partition, the last just below 4 GiB, holes between
/// them. Little data keeps
/// the tests' disk use small (the lab's disk, the repository, the staged
/// VMDK and the restored disk each hold it once); offsets past 4 GiB's
/// 32-bit edge are still read, sent and written.
fn sparse_4_gib(dir: &Path) -> String {
    use std::os::unix::fs::FileExt;
    const SIZE: u64 = 4 << 30;
    const EXTENT: u64 = 16 << 20;
    let path = dir.join("big.img");
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(SIZE).unwrap();
    // The MBR: partition entry 1 at byte 446 (active, type 0x83, first
    // sector 2048, sector count), the 0x55AA signature at byte 510.
    let mut mbr = [0u8; 512];
    mbr[446] = 0x80;
    mbr[450] = 0x83;
    mbr[454..458].copy_from_slice(&2048u32.to_le_bytes());
    mbr[458..462].copy_from_slice(&((SIZE / 512 - 2048) as u32).to_le_bytes());
    mbr[510..].copy_from_slice(&[0x55, 0xAA]);
    f.write_all_at(&mbr, 0).unwrap();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut extent = vec![0u8; EXTENT as usize];
    for n in 0..10u64 {
        for b in extent.chunks_mut(8) {
            // xorshift64: bytes no compressor shrinks.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b.copy_from_slice(&x.to_le_bytes());
        }
        let at = ((1 << 20) + (SIZE - EXTENT - (1 << 20)) / 9 * n) >> 20 << 20;
        f.write_all_at(&extent, at).unwrap();
    }
    format!("image={}", path.display())
}

/// Whether two files hold the same bytes, read a MiB at a time.
fn same_bytes(a: &Path, b: &Path) -> bool {
    let (mut fa, mut fb) = (
        std::fs::File::open(a).unwrap(),
        std::fs::File::open(b).unwrap(),
    );
    if fa.metadata().unwrap().len() != fb.metadata().unwrap().len() {
        return false;
    }
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = fa.read(&mut ba).unwrap();
        if n == 0 {
            return true;
        }
        fb.read_exact(&mut bb[..n]).unwrap();
        if ba[..n] != bb[..n] {
            return false;
        }
    }
}

/// A 4 GiB disk of 160 MiB of data through the import lease onto a
/// standalone host whose lease times out after 2 seconds without progress,
/// the upload paced so that it lasts longer than that: the lease is kept alive by coffer's
/// progress reports and completed; no grain of zeros is sent; the disk
/// arrives byte for byte and thin; the VM powers on and its tools run.
#[test]
fn a_4_gib_disk_restores_through_the_import_lease_sending_no_zeros() {
    const MIBPS: u64 = 32;
    let t = tempfile::tempdir().unwrap();
    let disk = sparse_4_gib(t.path());
    let host = Host::start_in(t, false, &disk);
    host.lab
        .faults()
        .apply(&format!("lease-timeout=2,folder-mibps={MIBPS}"))
        .unwrap();
    let out = host.restore(&["--power-on"]);
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("through the host's OVF import"), "{said}");
    assert!(said.contains("for 4.0 GiB of disks"), "{said}");
    assert!(said.contains("first heartbeat after"), "{said}");

    let (lease, _) = host.assert_imported();
    assert!(
        lease.progress_calls >= 2,
        "an upload longer than the lease's timeout lived on progress reports: {lease:?}"
    );
    // Far fewer bytes than the disk: all but 160 MiB of it are zeros. And
    // at the paced rate they took more than twice the lease's timeout.
    assert!(lease.bytes_received < 256 << 20, "{lease:?}");
    assert!(lease.bytes_received > (4 * MIBPS) << 20, "{lease:?}");
    use std::os::unix::fs::MetadataExt;
    let restored = host.file("big-r/big-r-flat.vmdk");
    let allocated = std::fs::metadata(&restored).unwrap().blocks() * 512;
    assert!(allocated < 256 << 20, "thin: {allocated} bytes");
}

/// Through a vCenter, a 4 GiB disk onto the host asked for: the lease's URL
/// names that host, no zero grain is sent, the VM lands on it, powers on
/// with its tools running, and its disk holds the point's bytes.
#[test]
fn through_a_vcenter_a_4_gib_import_lands_on_the_host_asked_for() {
    let t = tempfile::tempdir().unwrap();
    let disk = sparse_4_gib(t.path());
    let host = Host::start_in(t, true, &disk);
    let out = host.restore(&["--host", "host-2", "--power-on"]);
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("through the host's OVF import"), "{said}");
    assert!(said.contains("first heartbeat after"), "{said}");
    let (_, vm) = host.assert_imported();
    assert_eq!(vm.host.as_ref().map(|h| h.value.as_str()), Some("host-2"));
}

/// An upload the host cuts: the restore fails naming it, the lease is
/// aborted, and the host holds no VM and no folder of the restore.
#[test]
fn an_upload_cut_short_aborts_the_lease_and_leaves_nothing() {
    let host = Host::start(false, "256MiB");
    host.lab.faults().apply("nfc-cut-after=1000000").unwrap();
    let out = host.restore(&[]);
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("uploading big-r-disk1.vmdk"), "{said}");
    let lease = host.lease();
    assert_eq!(
        lease.outcome,
        Some(coffer::lab::nfc::LeaseOutcome::Aborted),
        "{lease:?}"
    );
    host.assert_nothing_named("big-r");
    // No staged file is left in the state directory either.
    let scratch: Vec<_> = std::fs::read_dir(host.dir().join(".coffer"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp"))
        .collect();
    assert!(scratch.is_empty(), "{scratch:?}");
}

/// Ctrl-C in the middle of the upload: coffer aborts the lease before it
/// exits, and the host holds no VM and no folder of the restore.
#[test]
fn ctrl_c_during_the_upload_aborts_the_lease_and_leaves_nothing() {
    let host = Host::start(false, "1GiB");
    host.lab.faults().apply("folder-mibps=16").unwrap();
    let child = host
        .command(&["restore", "big", "--to-source", "host", "--name", "big-r"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Until the host has taken some of the disk.
    let waited = std::time::Instant::now();
    while !host
        .lab
        .stats()
        .nfc_leases()
        .iter()
        .any(|l| l.bytes_received > 0)
    {
        assert!(
            waited.elapsed() < std::time::Duration::from_secs(120),
            "the upload never began"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // SAFETY: signalling a child process this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    let lease = host.lease();
    assert_eq!(
        lease.outcome,
        Some(coffer::lab::nfc::LeaseOutcome::Aborted),
        "{lease:?}"
    );
    assert!(!lease.disks.iter().any(|d| d.uploaded), "{lease:?}");
    host.assert_nothing_named("big-r");
}

/// An endpoint without an OVF manager: the VM's files go up over `/folder`
/// and it is registered; it powers on with the point's bytes.
#[test]
fn without_an_ovf_manager_the_files_go_up_over_folder() {
    let host = Host::start(false, "64MiB");
    host.lab.faults().apply("no-ovf-manager").unwrap();
    // A standalone host has one VM folder, and this one no child pool.
    for (named, why) in [
        (
            ["--folder", "restored"],
            "VM folder `restored` was named, but source `host` is a standalone ESXi host",
        ),
        (
            ["--pool", "restores"],
            "no resource pool `restores` (there are none)",
        ),
    ] {
        let refused = host.restore(&named);
        let said = text(&refused);
        assert!(!refused.status.success(), "{said}");
        assert!(said.contains(why), "{said}");
    }
    let out = host.restore(&["--power-on"]);
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(!said.contains("OVF import"), "{said}");
    assert!(host.lab.stats().nfc_leases().is_empty());
    assert!(same_bytes(
        &host.file("big/big-flat.vmdk"),
        &host.file("big-r/big-r-flat.vmdk")
    ));
}

/// Through a vCenter, the VM goes into the folder and resource pool named
/// by their paths: `apps/restored` (a folder in a folder) and `restores`
/// (a name both compute resources have, so the host's is meant), through
/// the import and, without an OVF manager, through RegisterVM_Task. A name
/// that fits nothing is refused before anything is made, listing what
/// there is.
#[test]
fn through_a_vcenter_the_vm_goes_into_the_folder_and_pool_named() {
    let host = Host::start(true, "64MiB");
    let place = |name: &str| {
        let session = host.session();
        let vm = session
            .list_vms()
            .unwrap()
            .into_iter()
            .find(|v| v.name == name)
            .unwrap_or_else(|| panic!("no VM {name}"));
        let (folder, pool) = session.folder_and_pool(&vm.moref).unwrap();
        (
            vm.host.map(|h| h.value),
            folder.map(|f| f.value),
            pool.map(|p| p.value),
        )
    };
    let refused = host.restore(&["--host", "host-2", "--folder", "restored"]);
    let said = text(&refused);
    assert!(!refused.status.success(), "{said}");
    assert!(
        said.contains(
            "no VM folder `restored` in datacenter region-b/lab-dc-2 (there are: apps, apps/restored)"
        ),
        "{said}"
    );
    let refused = host.restore(&["--datacenter", "lab-dc-1", "--pool", "gold"]);
    let said = text(&refused);
    assert!(!refused.status.success(), "{said}");
    assert!(
        said.contains("no resource pool `gold` on host 127.0.0.1:")
            && said.contains("(there are: restores)"),
        "{said}"
    );
    assert!(
        host.lab.stats().nfc_leases().is_empty(),
        "nothing was imported"
    );
    host.assert_nothing_named("big-r");

    let out = host.restore(&[
        "--host",
        "host-2",
        "--folder",
        "apps/restored",
        "--pool",
        "restores",
        "--power-on",
    ]);
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("through the host's OVF import"), "{said}");
    host.assert_imported();
    assert_eq!(
        place("big-r"),
        (
            Some("host-2".into()),
            Some("group-v5".into()),
            Some("resgroup-4".into())
        )
    );

    // The datacenter's only host, by the datacenter's name; over /folder.
    host.lab.faults().apply("no-ovf-manager").unwrap();
    let out = host.run(&[
        "restore",
        "big",
        "--to-source",
        "host",
        "--name",
        "big-f",
        "--datacenter",
        "lab-dc-1",
        "--folder",
        "restored",
        "--pool",
        "restores",
    ]);
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(!said.contains("OVF import"), "{said}");
    assert_eq!(
        place("big-f"),
        (
            Some("host-1".into()),
            Some("group-v3".into()),
            Some("resgroup-3".into())
        )
    );
}
