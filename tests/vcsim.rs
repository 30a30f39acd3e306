//! Conformance of coffer's vSphere client with VMware's own simulator
//! (govmomi's vcsim, both as a standalone ESXi host and as vCenter), over
//! TLS on loopback. The harness (tests/vcsim/main.go) adds real VMDK files,
//! change ids and QueryChangedDiskAreas to the simulator.
//!
//! These tests need Go and Debian's govmomi sources; without them they fail
//! and say to run `scripts/install-vcsim.sh`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use std::sync::atomic::AtomicBool;

use coffer::plan::cbt::CbtVerdict;
use coffer::policy::model::{Consistency, TlsTrust};
use coffer::repo::Repository;
use coffer::repo::local::LocalStore;
use coffer::run::vm_backup::{VmBackupRequest, backup_vm};
use coffer::vsphere::datastore::DatastorePath;
use coffer::vsphere::soap::SnapshotRequest;
use coffer::vsphere::types::{ChangeId, MoRef, PowerState};
use coffer::vsphere::{Error, Session, VimFault};

const TASK_TIMEOUT: Duration = Duration::from_secs(30);
const GOVMOMI_SOURCES: &str = "/usr/share/gocode/src/github.com/vmware/govmomi/simulator";
const MIB: u64 = 1 << 20;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `<target>/vcsim/coffer-vcsim`, beside this test's own target directory.
fn harness_path() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // <target>/<profile>/deps/vcsim-<hash>
    let target = exe.ancestors().nth(3).expect("target directory");
    target.join("vcsim").join("coffer-vcsim")
}

/// Builds the harness once per test run (go caches, so this is quick).
fn harness_binary() -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(build_harness)
        .clone()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn build_harness() -> Result<PathBuf, String> {
    let go = Command::new("go").arg("version").output();
    if !go.is_ok_and(|o| o.status.success()) || !Path::new(GOVMOMI_SOURCES).is_dir() {
        return Err(
            "the vcsim conformance tests need Go and Debian's govmomi sources, \
                    which are missing: run scripts/install-vcsim.sh"
                .into(),
        );
    }
    let out = harness_path();
    let status = Command::new(root().join("scripts/install-vcsim.sh"))
        .env("VCSIM_BIN", &out)
        .current_dir(root())
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run scripts/install-vcsim.sh: {e}"))?;
    if !status.success() {
        return Err(format!("scripts/install-vcsim.sh failed ({status})"));
    }
    Ok(out)
}

/// A running simulator; it exits when its standard input closes.
struct Vcsim {
    child: Child,
    stdin: Option<ChildStdin>,
    url: String,
    user: String,
    password: String,
    thumbprint: [u8; 32],
    ca_pem: String,
    /// Datastore name → the directory holding its files.
    datastores: std::collections::HashMap<String, PathBuf>,
    datacenter: String,
    /// With `-independent-disk`: the VM (`vm`), device key (`key`) and
    /// file (`file`) of the disk the harness added; else null.
    independent_disk: serde_json::Value,
}

impl Vcsim {
    fn start(flavor: &str) -> Vcsim {
        Vcsim::start_with(&["-flavor", flavor])
    }

    /// The harness with these flags (`-flavor vpx -datacenters 2`).
    fn start_with(args: &[&str]) -> Vcsim {
        let mut child = Command::new(harness_binary())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the vcsim harness starts");
        let stdin = child.stdin.take();
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("the harness prints its address");
        let info: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("harness said {line:?}: {e}"));
        let field = |k: &str| {
            info[k]
                .as_str()
                .unwrap_or_else(|| panic!("no {k} in {line}"))
                .to_string()
        };
        let hex = field("thumbprint")
            .trim_start_matches("sha256:")
            .replace(':', "");
        let thumbprint: [u8; 32] = hex::decode(hex).expect("hex").try_into().expect("32 bytes");
        Vcsim {
            child,
            stdin,
            url: field("url"),
            user: field("username"),
            password: field("password"),
            thumbprint,
            ca_pem: field("ca"),
            datastores: info["datastores"]
                .as_object()
                .expect("datastores in the harness line")
                .iter()
                .map(|(k, v)| (k.clone(), PathBuf::from(v.as_str().unwrap())))
                .collect(),
            datacenter: field("datacenter"),
            independent_disk: info["independent_disk"].clone(),
        }
    }

    fn connect(&self) -> Session {
        Session::connect(
            &self.url,
            &TlsTrust::Thumbprint(self.thumbprint),
            &self.user,
            &self.password,
        )
        .unwrap_or_else(|e| panic!("login to {}: {e}", self.url))
    }
}

impl Drop for Vcsim {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

fn snapshot_names(session: &Session, vm: &MoRef) -> Vec<String> {
    let vms = session.list_vms().expect("list VMs");
    let record = vms
        .iter()
        .find(|v| &v.moref == vm)
        .expect("the VM is still there");
    record
        .all_snapshots()
        .iter()
        .map(|s| s.name.clone())
        .collect()
}

/// The whole closed loop of one backup, as DESIGN.md §5 describes it.
fn backup_cycle(flavor: &str, product_line: &str, vm_count: usize) {
    let sim = Vcsim::start(flavor);
    let session = sim.connect();
    assert_eq!(
        session.version(),
        "6.5",
        "negotiated from vimServiceVersions.xml"
    );
    assert_eq!(
        session.service_content().about.product_line_id,
        product_line
    );

    // Inventory: every VM with its disk. The harness answers one VM per
    // page, so all of them arrive only through the continuation tokens.
    let vms = session.list_vms().expect("list VMs");
    assert_eq!(vms.len(), vm_count, "{vms:?}");
    for vm in &vms {
        assert!(!vm.name.is_empty());
        assert!(vm.instance_uuid.is_some(), "{vm:?}");
        assert_eq!(vm.power_state, Some(PowerState::PoweredOn));
        assert_eq!(vm.disks.len(), 1, "{vm:?}");
        assert_eq!(vm.disks[0].capacity_bytes, 4 * MIB);
        assert!(vm.disks[0].file_name.ends_with("disk1.vmdk"), "{vm:?}");
        assert!(vm.snapshots.is_empty());
        // Its datacenter, from its parent chain in the simulator's
        // inventory, and the host that runs it.
        assert_eq!(
            vm.datacenter.as_deref(),
            Some(sim.datacenter.as_str()),
            "{vm:?}"
        );
        assert!(
            vm.host.as_ref().is_some_and(|h| h.kind == "HostSystem"),
            "{vm:?}"
        );
    }
    let vm = vms[0].moref.clone();
    let disk = vms[0].disks[0].clone();
    assert!(!vms[0].change_tracking_enabled);

    // Enable CBT.
    session
        .set_change_tracking(&vm, true, TASK_TIMEOUT)
        .expect("enable CBT");
    let after = session.list_vms().expect("list VMs");
    assert!(
        after
            .iter()
            .find(|v| v.moref == vm)
            .unwrap()
            .change_tracking_enabled
    );

    // A full: snapshot, the allocated areas, the change id to keep.
    let first = session
        .create_snapshot(
            &vm,
            &SnapshotRequest {
                name: "coffer-test-1",
                description: "coffer conformance test",
                memory: false,
                quiesce: false,
            },
            TASK_TIMEOUT,
        )
        .expect("create snapshot");
    assert_eq!(first.kind, "VirtualMachineSnapshot");
    assert_eq!(snapshot_names(&session, &vm), ["coffer-test-1"]);
    let disks = session.snapshot_disks(&first).expect("snapshot disks");
    let base = disks[0]
        .change_id
        .clone()
        .expect("a change id once CBT is on");
    let full = session
        .changed_disk_areas(&vm, &first, disk.key, disk.capacity_bytes, &ChangeId::all())
        .expect("allocated areas");
    assert_eq!(full.last().unwrap().end_bytes(), disk.capacity_bytes);
    let allocated: Vec<_> = full.iter().flat_map(|i| i.changed.clone()).collect();
    assert!(allocated.contains(&(0..64 * 1024)), "{allocated:?}");
    assert!(
        allocated.contains(&(2 * MIB..2 * MIB + 64 * 1024)),
        "{allocated:?}"
    );
    session
        .remove_snapshot(&first, TASK_TIMEOUT)
        .expect("remove snapshot");
    assert!(
        snapshot_names(&session, &vm).is_empty(),
        "the snapshot is gone"
    );

    // An incremental: only what was written after the base change id.
    let second = session
        .create_snapshot(
            &vm,
            &SnapshotRequest {
                name: "coffer-test-2",
                description: "",
                memory: false,
                quiesce: false,
            },
            TASK_TIMEOUT,
        )
        .expect("second snapshot");
    let next = session.snapshot_disks(&second).unwrap()[0]
        .change_id
        .clone()
        .unwrap();
    assert_ne!(next, base);
    let changed: Vec<_> = session
        .changed_disk_areas(&vm, &second, disk.key, disk.capacity_bytes, &base)
        .expect("changed areas")
        .into_iter()
        .flat_map(|i| i.changed)
        .collect();
    assert_eq!(
        changed.len(),
        1,
        "one extent written since the base: {changed:?}"
    );
    assert!(!allocated.contains(&changed[0]), "{changed:?} is new data");

    // A change id the host does not know: CBT cannot be trusted.
    let err = session
        .changed_disk_areas(
            &vm,
            &second,
            disk.key,
            disk.capacity_bytes,
            &ChangeId("52 00/1".into()),
        )
        .unwrap_err();
    assert!(err.fault().is_some_and(VimFault::cbt_untrusted), "{err}");

    session
        .remove_snapshot(&second, TASK_TIMEOUT)
        .expect("remove snapshot");
    assert!(
        snapshot_names(&session, &vm).is_empty(),
        "the snapshot is gone"
    );

    // A session the server forgot is renewed once, transparently.
    session.keep_alive().expect("keep-alive");
    session.logout().expect("logout");
    session
        .keep_alive()
        .expect("re-login after NotAuthenticated");
    session.logout().expect("logout");
    assert_eq!(session.list_vms().expect("re-login").len(), vm_count);
    session.logout().expect("logout");
}

#[test]
fn esx_backup_cycle() {
    backup_cycle("esx", "embeddedEsx", 2);
}

#[test]
fn vcenter_backup_cycle() {
    backup_cycle("vpx", "vpx", 4);
}

/// The isolated drill network against vcsim's HostNetworkSystem: built
/// with no uplink, seen in `networkInfo`, reused when left, gone after.
#[test]
fn the_isolated_drill_network_is_built_and_removed_on_vcsim() {
    use coffer::run::drill_network::{DrillNetwork, ISOLATED_PORT_GROUP, ISOLATED_SWITCH, prepare};
    let sim = Vcsim::start("esx");
    let session = sim.connect();
    let host = MoRef::new("HostSystem", "ha-host");
    let system = session.network_system(&host).unwrap();
    let before = session.host_network(&system).unwrap();
    assert!(
        before.switch_of(ISOLATED_PORT_GROUP).is_none(),
        "{before:?}"
    );
    {
        let n = prepare(&session, &host, &DrillNetwork::Isolated).unwrap();
        assert_eq!(n.port_group, ISOLATED_PORT_GROUP);
        let now = session.host_network(&system).unwrap();
        let switch = now
            .switch_of(ISOLATED_PORT_GROUP)
            .expect("the port group is there");
        assert_eq!(switch.name, ISOLATED_SWITCH);
        assert!(switch.uplinks.is_empty(), "{switch:?}");
    }
    let after = session.host_network(&system).unwrap();
    assert!(after.switch_of(ISOLATED_PORT_GROUP).is_none(), "{after:?}");
    assert!(
        !after.vswitches.iter().any(|v| v.name == ISOLATED_SWITCH),
        "{after:?}"
    );
    // A named port group the host lacks is refused.
    let e = prepare(&session, &host, &DrillNetwork::PortGroup("nope".into()))
        .err()
        .unwrap();
    assert!(e.contains("does not exist on the drill host"), "{e}");
}

#[test]
fn wrong_password_is_invalid_login() {
    let sim = Vcsim::start("esx");
    let err = Session::connect(
        &sim.url,
        &TlsTrust::Thumbprint(sim.thumbprint),
        &sim.user,
        "not-the-password",
    )
    .unwrap_err();
    assert!(
        matches!(err, Error::Fault(VimFault::InvalidLogin { .. })),
        "{err:?}"
    );
}

#[test]
fn wrong_thumbprint_names_the_presented_one() {
    let sim = Vcsim::start("esx");
    let mut wrong = sim.thumbprint;
    wrong[0] ^= 0xff;
    let err = Session::connect(
        &sim.url,
        &TlsTrust::Thumbprint(wrong),
        &sim.user,
        &sim.password,
    )
    .unwrap_err();
    let presented = coffer::vsphere::transport::format_thumbprint(&sim.thumbprint);
    match &err {
        Error::ThumbprintMismatch { presented: p, .. } => assert_eq!(p, &presented),
        other => panic!("expected a thumbprint mismatch, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains(&presented) && msg.contains("127.0.0.1"),
        "{msg}"
    );
}

#[test]
fn an_unknown_certificate_is_refused_without_a_pin() {
    let sim = Vcsim::start("esx");
    let err =
        Session::connect(&sim.url, &TlsTrust::SystemRoots, &sim.user, &sim.password).unwrap_err();
    // Refused by the handshake, or no system roots at all on a bare machine.
    assert!(matches!(err, Error::Http { .. } | Error::Tls(_)), "{err:?}");
}

#[test]
fn a_ca_file_of_the_signing_ca_is_trusted() {
    let sim = Vcsim::start("esx");
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &sim.ca_pem).unwrap();
    let session = Session::connect(&sim.url, &TlsTrust::CaFile(ca), &sim.user, &sim.password)
        .unwrap_or_else(|e| panic!("{e}"));
    session.logout().unwrap();
}

#[test]
fn an_answer_that_is_not_soap_is_named() {
    let sim = Vcsim::start("esx");
    // A path the simulator does not serve: Go's plain-text 404 page.
    let url = sim.url.replace("/sdk", "/elsewhere");
    let err = Session::connect(
        &url,
        &TlsTrust::Thumbprint(sim.thumbprint),
        &sim.user,
        &sim.password,
    )
    .unwrap_err();
    match &err {
        Error::NotSoap {
            status,
            content_type,
            first_bytes,
            ..
        } => {
            assert_eq!(*status, 404);
            assert!(content_type.starts_with("text/plain"), "{content_type}");
            assert!(
                first_bytes.starts_with("404 page not found"),
                "{first_bytes}"
            );
        }
        other => panic!("expected NotSoap, got {other:?}"),
    }
    assert!(err.to_string().contains("text/plain"), "{err}");
}

/// The flat file behind `[ds] dir/name.vmdk`, read straight from the
/// simulator's directory (independent of coffer's datastore reader).
fn flat_bytes(sim: &Vcsim, file_name: &str) -> Vec<u8> {
    let p = DatastorePath::parse(file_name).unwrap();
    let dir = &sim.datastores[&p.datastore];
    let flat = p.path.trim_end_matches(".vmdk").to_string() + "-flat.vmdk";
    std::fs::read(dir.join(flat)).unwrap()
}

fn restore(repo: &Repository, m: &coffer::repo::manifest::Manifest, out: &Path) -> Vec<u8> {
    let index = repo.read_index(m, &m.disks[0]).unwrap();
    coffer::repo::restore::restore_disk(
        repo,
        &index,
        out,
        coffer::repo::restore::DiskFormat::Raw,
        true,
        2,
    )
    .unwrap();
    std::fs::read(out).unwrap()
}

/// A disk made independent the way an administrator makes one (a
/// ReconfigVM_Task adding it in mode independent_persistent, which vcsim
/// carries out and then reports in the disk's backing): coffer backs up
/// the VM's other disk, byte for byte, and records the independent one in
/// the point as skipped, with the reason.
#[test]
fn an_independent_disk_added_by_reconfigure_is_skipped_and_the_other_disk_backed_up() {
    let sim = Vcsim::start_with(&["-flavor", "esx", "-independent-disk"]);
    let added = &sim.independent_disk;
    let (name, key, file) = (
        added["vm"].as_str().expect("the harness names the VM"),
        added["key"].as_i64().expect("and the disk's key") as i32,
        added["file"].as_str().expect("and its file"),
    );
    let session = sim.connect();
    let vm = session
        .list_vms()
        .unwrap()
        .into_iter()
        .find(|v| v.name == name)
        .unwrap();
    assert_eq!(vm.disks.len(), 2, "{:?}", vm.disks);
    let independent = vm.disks.iter().find(|d| d.key == key).unwrap();
    assert_eq!(
        independent.disk_mode.as_deref(),
        Some("independent_persistent")
    );
    assert_eq!(independent.file_name, file);
    let other = vm.disks.iter().find(|d| d.key != key).unwrap();

    let t = tempfile::tempdir().unwrap();
    let repo = Repository::init(
        std::sync::Arc::new(LocalStore::new(t.path().join("repo")).unwrap()),
        None,
    )
    .unwrap();
    let cancel = AtomicBool::new(false);
    let outcome = backup_vm(&session, &repo, &request(&sim, &vm, &cancel, None, "run-1")).unwrap();
    let m = &outcome.manifest;
    assert_eq!(
        m.disks.iter().map(|d| d.device_key).collect::<Vec<_>>(),
        [other.key]
    );
    assert_eq!(m.skipped_disks.len(), 1, "{:?}", m.skipped_disks);
    assert_eq!(m.skipped_disks[0].device_key, key);
    assert_eq!(m.skipped_disks[0].file, file);
    assert_eq!(
        m.skipped_disks[0].reason,
        format!("disk {file} is independent (independent_persistent): snapshots leave it out")
    );
    assert!(
        restore(&repo, m, &t.path().join("other.raw")) == flat_bytes(&sim, &other.file_name),
        "the other disk restores byte for byte"
    );
    assert!(
        snapshot_names(&session, &vm.moref).is_empty(),
        "snapshot removed"
    );
}

/// A crash-consistent backup request of `vm` on the simulator, as run
/// `run_id`, an incremental from `base` when given.
fn request<'a>(
    sim: &'a Vcsim,
    vm: &'a coffer::vsphere::VmRecord,
    cancel: &'a AtomicBool,
    base: Option<&'a coffer::repo::manifest::Manifest>,
    run_id: &'a str,
) -> VmBackupRequest<'a> {
    VmBackupRequest {
        vm,
        installation: "00112233aabbccdd",
        snapshot_max_age: Duration::from_secs(24 * 3600),
        source: "vcsim",
        datacenter: &sim.datacenter,
        host_route: None,
        run_id,
        consistency: Consistency::Crash,
        base,
        chunk_size_bytes: 64 << 10,
        threads: 2,
        task_timeout: TASK_TIMEOUT,
        cancel,
        read_whole_disk: false,
        io_limit: None,
        progress: None,
        read: Default::default(),
        max_snapshot_lifetime: None,
        fence: None,
    }
}

/// coffer's own backup loop end to end: a full, a write, an incremental
/// that reads only the written area, both restoring byte for byte, and no
/// snapshot left behind.
fn backup_loop(flavor: &str) {
    let sim = Vcsim::start(flavor);
    let session = sim.connect();
    let t = tempfile::tempdir().unwrap();
    let repo = Repository::init(
        std::sync::Arc::new(LocalStore::new(t.path().join("repo")).unwrap()),
        None,
    )
    .unwrap();
    let cancel = AtomicBool::new(false);
    let vm = session.list_vms().unwrap().remove(0);
    assert!(!vm.change_tracking_enabled);
    let request = |vm, base, run_id| request(&sim, vm, &cancel, base, run_id);
    let full = backup_vm(&session, &repo, &request(&vm, None, "run-1")).unwrap();
    assert!(full.cbt_enabled_now);
    assert!(
        matches!(&full.disks[0].verdict, CbtVerdict::Full { reason } if reason.contains("first backup")),
        "{:?}",
        full.disks[0].verdict
    );
    // The full read only the allocated areas (the harness wrote 3 × 64 KiB).
    assert_eq!(full.disks[0].bytes_fetched, 3 * 64 * 1024);
    assert!(
        snapshot_names(&session, &vm.moref).is_empty(),
        "snapshot removed"
    );
    let file = &vm.disks[0].file_name;
    assert_eq!(
        full.manifest.disks[0].backing.as_deref(),
        Some(file.as_str())
    );
    assert_eq!(
        restore(&repo, &full.manifest, &t.path().join("full.raw")),
        flat_bytes(&sim, file)
    );

    // The harness writes 64 KiB at each snapshot: the incremental reads
    // exactly that and restores the disk as it is now.
    let vm = session.list_vms().unwrap().remove(0);
    assert!(vm.change_tracking_enabled);
    let incr = backup_vm(
        &session,
        &repo,
        &request(&vm, Some(&full.manifest), "run-2"),
    )
    .unwrap();
    assert!(
        matches!(incr.disks[0].verdict, CbtVerdict::Incremental { .. }),
        "{:?}",
        incr.disks[0].verdict
    );
    assert_eq!(incr.disks[0].bytes_fetched, 64 * 1024);
    assert_eq!(
        incr.manifest.parent.as_deref(),
        Some(full.manifest.point_id.as_str())
    );
    assert_ne!(
        incr.manifest.disks[0].change_id,
        full.manifest.disks[0].change_id
    );
    assert!(snapshot_names(&session, &vm.moref).is_empty());
    assert_eq!(
        restore(&repo, &incr.manifest, &t.path().join("incr.raw")),
        flat_bytes(&sim, file)
    );
    assert!(
        coffer::repo::ops::verify(&repo, None, None, 2)
            .unwrap()
            .ok()
    );

    // A read that fails (here: a datacenter the host does not know, so the
    // datastore answers 404) records no point and removes the snapshot.
    let vm = session.list_vms().unwrap().remove(0);
    let mut bad = request(&vm, Some(&incr.manifest), "run-3");
    bad.datacenter = "no-such-datacenter";
    let err = backup_vm(&session, &repo, &bad).unwrap_err();
    // The cause is the error's source, as `{:#}` prints it.
    let said = format!("{:#}", anyhow::Error::from(err));
    assert!(said.contains("404"), "{said}");
    assert_eq!(
        said.matches("404").count(),
        1,
        "the cause said once: {said}"
    );
    assert!(
        snapshot_names(&session, &vm.moref).is_empty(),
        "snapshot removed after the failure"
    );
    assert_eq!(repo.list_points().unwrap().len(), 2);
}

#[test]
fn esx_backup_loop_full_incremental_restore() {
    backup_loop("esx");
}

#[test]
fn vcenter_backup_loop_full_incremental_restore() {
    backup_loop("vpx");
}

/// Through a vCenter with two datacenters, each VM's datacenter comes from
/// its parent chain, and its files are read through that datacenter
/// whatever the source's `datacenter` names.
#[test]
fn each_vm_of_a_two_datacenter_vcenter_is_read_through_its_own_datacenter() {
    let sim = Vcsim::start_with(&["-flavor", "vpx", "-datacenters", "2"]);
    let vms = sim.connect().list_vms().expect("list VMs");
    let mut dcs: Vec<&str> = vms
        .iter()
        .map(|v| v.datacenter.as_deref().expect("every VM has a datacenter"))
        .collect();
    dcs.sort();
    dcs.dedup();
    assert_eq!(dcs, ["DC0", "DC1"]);
    for vm in &vms {
        // The simulator names a VM after its datacenter (`DC1_H0_VM0`).
        let dc = vm.datacenter.as_deref().unwrap();
        assert!(vm.name.starts_with(&format!("{dc}_")), "{vm:?}");
    }
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    // The policy names the harness's last datacenter; back up a VM of
    // the other one.
    write_policy(&sim, dir);
    assert!(
        coffer_cli(&sim, dir, &["repo", "init", "--tier", "local"])
            .status
            .success()
    );
    let other = vms
        .iter()
        .find(|v| v.datacenter.as_deref() != Some(sim.datacenter.as_str()))
        .expect("a VM outside the policy's datacenter");
    let full = json_of(&coffer_cli(&sim, dir, &["backup", &other.name, "--json"]));
    assert_eq!(full["kind"], "full", "{full}");
}

fn write_policy(sim: &Vcsim, dir: &Path) {
    let thumb = hex::encode(sim.thumbprint);
    std::fs::write(
        dir.join("coffer.toml"),
        format!(
            r#"
[settings]
timezone = "UTC"

[sources.sim]
kind = "{kind}"
url = "{url}"
user = "{user}"
password = {{ env = "TEST_VCSIM_PASSWORD" }}
thumbprint = "sha256:{thumb}"
datacenter = "{dc}"

[tiers.local]
backend = "local"
path = "repo"
site = "here"

[policies.all]
sources = ["sim"]
vms = ["*"]
schedule = "0 0 1 * * *"
consistency = "crash"
backup_to = "local"

[policies.all.retain.local]
last = 3
"#,
            kind = if sim.datacenter == "ha-datacenter" {
                "esxi"
            } else {
                "vcenter"
            },
            url = sim.url,
            user = sim.user,
            dc = sim.datacenter,
        ),
    )
    .unwrap();
}

fn coffer_cli(sim: &Vcsim, dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_coffer"))
        .args(args)
        .args(["-p", "."])
        .current_dir(dir)
        .env_remove("COFFER_POLICIES")
        .env("TEST_VCSIM_PASSWORD", &sim.password)
        .output()
        .unwrap()
}

fn json_of(o: &std::process::Output) -> serde_json::Value {
    assert!(
        o.status.success(),
        "exit {:?}: {}{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stdout)))
}

/// The administrator's path: inventory, two backups by policy (a full, an
/// incremental), a restore through the repository commands that equals the
/// disk, and a snapshot an earlier (killed) run left removed by the next.
#[test]
fn cli_inventory_backup_restore_against_vcsim() {
    let sim = Vcsim::start("esx");
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    write_policy(&sim, dir);
    let inv = json_of(&coffer_cli(&sim, dir, &["inventory", "--json"]));
    let vms = inv["vms"].as_array().unwrap();
    assert!(!vms.is_empty());
    assert_eq!(vms[0]["policies"], serde_json::json!(["all"]));
    let name = vms[0]["name"].as_str().unwrap().to_string();
    let file = vms[0]["disks"][0]["file"].as_str().unwrap().to_string();

    assert!(
        coffer_cli(&sim, dir, &["repo", "init", "--tier", "local"])
            .status
            .success()
    );
    let full = json_of(&coffer_cli(&sim, dir, &["backup", &name, "--json"]));
    assert_eq!(full["kind"], "full");
    assert_eq!(full["disks"][0]["mode"], "full");

    // A snapshot a killed run left behind is removed by the next backup.
    let session = sim.connect();
    let vm = session
        .list_vms()
        .unwrap()
        .into_iter()
        .find(|v| v.name == name)
        .unwrap();
    session
        .create_snapshot(
            &vm.moref,
            &SnapshotRequest {
                name: "coffer-20260101T000000Z-dead",
                // A killed run of this installation (same state dir).
                description: &format!(
                    "coffer backup, run 20260101T000000Z-dead, installation {}",
                    std::fs::read_to_string(dir.join(".coffer/installation-id"))
                        .unwrap()
                        .trim()
                ),
                memory: false,
                quiesce: false,
            },
            TASK_TIMEOUT,
        )
        .unwrap();
    let incr = json_of(&coffer_cli(&sim, dir, &["backup", &name, "--json"]));
    assert_eq!(incr["kind"], "incremental", "{incr}");
    assert_eq!(incr["parent"], full["point"]);
    assert_eq!(
        incr["leftovers_removed"][0]["snapshot"],
        "coffer-20260101T000000Z-dead"
    );
    assert!(snapshot_names(&session, &vm.moref).is_empty());
    // Each snapshot writes 64 KiB in the harness; the leftover's write and
    // this backup's both changed the disk since the full.
    assert_eq!(incr["disks"][0]["bytes_fetched"], 2 * 64 * 1024);

    let point = incr["point"].as_str().unwrap();
    let out = coffer_cli(
        &sim,
        dir,
        &[
            "repo", "restore", point, "--tier", "local", "-o", "disk.raw",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(std::fs::read(dir.join("disk.raw")).unwrap() == flat_bytes(&sim, &file));
    // The VM restore command, as against the lab: VMDKs named after the
    // restored VM, byte-identical to the disk.
    let out = coffer_cli(&sim, dir, &["restore", &name, "-o", "restored"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let flat = dir.join(format!("restored/{name}-restored-flat.vmdk"));
    assert!(std::fs::read(flat).unwrap() == flat_bytes(&sim, &file));

    // The plan for tomorrow night: an incremental of that VM from the
    // newest point, a first full of every other VM, and a compliance breach
    // (one tier at one site is not 3-2-1).
    let tomorrow = (chrono::Utc::now() + chrono::Duration::days(1))
        .format("%Y-%m-%dT02:00:00Z")
        .to_string();
    let plan = json_of(&coffer_cli(
        &sim,
        dir,
        &["plan", "--json", "--at", &tomorrow],
    ));
    let backups: Vec<&serde_json::Value> = plan["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["action"] == "backup")
        .collect();
    assert_eq!(backups.len(), vms.len(), "{plan}");
    let mine = backups.iter().find(|a| a["vm"] == name.as_str()).unwrap();
    assert_eq!(mine["full"], false, "{mine}");
    assert_eq!(mine["base"], incr["point"]);
    let pending = coffer_cli(
        &sim,
        dir,
        &["plan", "--detailed-exitcode", "--at", &tomorrow],
    );
    assert_eq!(pending.status.code(), Some(2));
    let breach = coffer_cli(&sim, dir, &["compliance"]);
    assert_eq!(breach.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&breach.stdout).contains("BREACH: 2 copies of 3 required"));

    // An unknown VM is named.
    let out = coffer_cli(&sim, dir, &["backup", "no-such-vm"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no VM named `no-such-vm`"));

    // Onto the host through its OVF import (govmomi's OvfManager,
    // ImportVApp and HttpNfcLease): the VM is created and powered on.
    let out = coffer_cli(
        &sim,
        dir,
        &[
            "restore",
            &name,
            "--to-source",
            "sim",
            "--datastore",
            "LocalDS_0",
            "--name",
            "imported",
            "--new-uuid",
            "--power-on",
            // The simulator's guests run no VMware Tools.
            "--heartbeat-timeout",
            "2s",
        ],
    );
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let session = sim.connect();
    let imported = session
        .list_vms()
        .unwrap()
        .into_iter()
        .find(|v| v.name == "imported")
        .expect("the imported VM");
    assert_eq!(imported.disks.len(), 1, "{imported:?}");
    assert_eq!(
        imported.power_state,
        Some(coffer::inventory::PowerState::PoweredOn),
        "{imported:?}"
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("through the host's OVF import"), "{said}");
    assert!(
        said.contains("no VMware Tools heartbeat within 2s"),
        "{said}"
    );
}

#[path = "common/smtp.rs"]
#[allow(dead_code)]
mod smtp;

/// `coffer apply` end to end: every VM backed up, the new points copied to
/// the offsite tier, the verify drill run and recorded, the run report
/// written and mailed (STARTTLS, AUTH) with a line per action; a second
/// apply finds nothing due.
#[test]
fn apply_backs_up_copies_drills_reports_and_mails() {
    let sim = Vcsim::start("esx");
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    write_policy(&sim, dir);
    let mail_dir = dir.join("mail");
    std::fs::create_dir(&mail_dir).unwrap();
    std::fs::write(dir.join("smtp-pw"), "mail secret").unwrap();
    let server = smtp::SmtpServer::start(&mail_dir, "mail secret", false);
    let text = std::fs::read_to_string(dir.join("coffer.toml")).unwrap();
    std::fs::write(
        dir.join("coffer.toml"),
        format!(
            r#"{text}
[policies.all.retain.offsite]
daily = 7

[[policies.all.drills]]
kind = "verify"
every = "7d"
tier = "offsite"

[tiers.offsite]
backend = "local"
path = "offsite"
site = "elsewhere"

[notify.ops]
smtp_host = "127.0.0.1"
smtp_port = {port}
user = "coffer"
password = {{ file = "{pw}" }}
ca_file = "{ca}"
from = "coffer@example.com"
to = ["ops@example.com"]
send = ["always"]
"#,
            port = server.port,
            pw = dir.join("smtp-pw").display(),
            ca = server.ca.display(),
        ),
    )
    .unwrap();
    for tier in ["local", "offsite"] {
        assert!(
            coffer_cli(&sim, dir, &["repo", "init", "--tier", tier])
                .status
                .success()
        );
    }
    let out = coffer_cli(&sim, dir, &["apply"]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let vms = sim.connect().list_vms().unwrap();
    for vm in &vms {
        assert!(
            stdout.contains(&format!("done + backup {} → local (full", vm.name)),
            "{stdout}"
        );
        assert!(snapshot_names(&sim.connect(), &vm.moref).is_empty());
    }
    assert_eq!(stdout.matches("done > copy").count(), vms.len(), "{stdout}");
    assert_eq!(
        stdout.matches("done ? drill all-verify").count(),
        vms.len(),
        "{stdout}"
    );
    assert!(
        stdout.contains("mailed the report through `ops`"),
        "{stdout}"
    );

    let mails = server.messages(1, Duration::from_secs(10));
    assert_eq!(mails.len(), 1);
    let m = &mails[0];
    assert!(m["subject"].as_str().unwrap().contains("success"), "{m}");
    let body = m["text"].as_str().unwrap();
    for vm in &vms {
        assert!(
            body.contains(&format!("backup {} → local", vm.name)),
            "{body}"
        );
        assert!(
            body.contains(&format!("compliance {} (all)", vm.name)),
            "{body}"
        );
    }
    assert!(m["html"].as_str().unwrap().contains("<table"));
    // The report stays on disk too.
    let reports: Vec<_> = std::fs::read_dir(dir.join(".coffer/reports"))
        .map(|r| r.flatten().collect())
        .unwrap_or_default();
    assert_eq!(reports.len(), 2, "{reports:?}");

    // Nothing is due a second time the same night.
    let again = coffer_cli(&sim, dir, &["apply", "--no-mail"]);
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert_eq!(again.status.code(), Some(0), "{stdout}");
    assert!(!stdout.contains("done + backup"), "{stdout}");
    assert!(!stdout.contains("done ? drill"), "{stdout}");
}

/// Through a vCenter (vcsim), `coffer backup` asks for a generic service
/// ticket for the host that runs the VM, as a real vCenter answers it; the
/// simulator's host names lead nowhere, so the disks are read through the
/// vCenter's own `/folder` and the result says so and why. The point
/// restores to the simulator's disk, and through the vCenter's OVF import
/// onto a host of its cluster, into the VM folder and the resource pool
/// named.
#[test]
fn through_a_vcenter_an_unreachable_host_is_read_through_the_vcenters_folder() {
    let sim = Vcsim::start_with(&["-flavor", "vpx", "-pool", "1", "-vm-folder", "restored"]);
    let session = sim.connect();
    let ticket = session
        .service_ticket("https://DC0_H0/folder/x?dcPath=DC0&dsName=LocalDS_0")
        .expect("vcsim answers AcquireGenericServiceTicket");
    assert!(!ticket.id.is_empty());

    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    // The harness's URL carries its login; a policy names it apart.
    let url = sim
        .url
        .split_once('@')
        .map_or(sim.url.clone(), |(scheme_user, rest)| {
            format!(
                "{}://{rest}",
                scheme_user.split("://").next().unwrap_or("https")
            )
        });
    let url = url.trim_end_matches("/sdk");
    let thumbprint = coffer::vsphere::transport::format_thumbprint(&sim.thumbprint);
    std::fs::write(
        dir.join("coffer.toml"),
        format!(
            r#"[settings]
timezone = "UTC"

[sources.vc]
kind = "vcenter"
url = "{url}"
user = "{user}"
password = {{ env = "COFFER_VCSIM_PASSWORD" }}
thumbprint = "{thumbprint}"

[tiers.local]
backend = "local"
path = "repo"
site = "here"

[policies.all]
sources = ["vc"]
vms = ["*"]
schedule = "0 0 1 * * *"
consistency = "crash"
backup_to = "local"

[policies.all.retain.local]
last = 3
"#,
            user = sim.user
        ),
    )
    .unwrap();
    let coffer = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_coffer"))
            .args(args)
            .args(["-p", "."])
            .current_dir(dir)
            .env("COFFER_VCSIM_PASSWORD", &sim.password)
            .output()
            .unwrap()
    };
    let init = coffer(&["repo", "init", "--all"]);
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let vm = session
        .list_vms()
        .unwrap()
        .into_iter()
        .find(|v| !v.disks.is_empty())
        .expect("a VM with a disk");
    let out = coffer(&["backup", &vm.name, "--json"]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect(&said);
    let read_from = json["disks"][0]["read_from"].as_str().unwrap_or_default();
    assert!(read_from.starts_with("vCenter's /folder ("), "{said}");
    assert!(read_from.contains("DC0_H0"), "{said}");
    let repo = Repository::open(
        std::sync::Arc::new(coffer::repo::local::LocalStore::new(dir.join("repo")).unwrap()),
        None,
    )
    .unwrap();
    let point = repo.list_points().unwrap().remove(0);
    let m = repo.read_manifest(&point).unwrap();
    let restored = restore(&repo, &m, &dir.join("disk.raw"));
    assert!(restored == flat_bytes(&sim, &vm.disks[0].file_name));

    // Into a folder and a child pool of the cluster, by name, on one of
    // the cluster's hosts; a pool of another compute resource is not
    // among the host's.
    let place = |pool: &str| {
        coffer(&[
            "restore",
            &vm.name,
            "--to-source",
            "vc",
            "--host",
            "DC0_C0_H1",
            "--folder",
            "restored",
            "--pool",
            pool,
            "--datastore",
            "LocalDS_0",
            "--name",
            "placed",
        ])
    };
    let refused = place("elsewhere");
    let said = String::from_utf8_lossy(&refused.stderr).to_string();
    assert!(!refused.status.success(), "{said}");
    assert!(
        said.contains("no resource pool `elsewhere` on host DC0_C0_H1 (there are: DC0_C0_RP1)"),
        "{said}"
    );
    let out = place("DC0_C0_RP1");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    assert!(said.contains("through the host's OVF import"), "{said}");
    let placed = session
        .list_vms()
        .unwrap()
        .into_iter()
        .find(|v| v.name == "placed")
        .expect("the restored VM");
    let (folder, pool) = session.folder_and_pool(&placed.moref).unwrap();
    assert_eq!(session.name_of(&folder.unwrap()).unwrap(), "restored");
    assert_eq!(session.name_of(&pool.unwrap()).unwrap(), "DC0_C0_RP1");
    let host = placed.host.expect("the VM's host");
    assert_eq!(session.name_of(&host).unwrap(), "DC0_C0_H1");
}
