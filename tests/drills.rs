//! Verify, restore and boot drills against the built-in lab, through
//! `coffer apply`: each passes on a good backup with its measured restore
//! time recorded, and fails with a specific reason on a corrupted chunk, a
//! failing check script, a check that times out; the boot drill's VM is
//! gone afterwards in every case.

mod common;

use std::path::Path;
use std::process::Output;

fn policy(dir: &Path, drills: &str) {
    std::fs::write(
        dir.join("coffer.toml"),
        format!(
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
{drills}
"#
        ),
    )
    .unwrap();
}

fn run(dir: &Path, args: &[&str]) -> Output {
    common::command_in(dir)
        .args(args)
        .args(["-p", "."])
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn vm_names(dir: &Path) -> Vec<String> {
    let out = run(dir, &["inventory", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["vms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect()
}

fn setup(drills: &str) -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    policy(t.path(), drills);
    assert!(
        run(t.path(), &["repo", "init", "--tier", "local"])
            .status
            .success()
    );
    t
}

#[test]
fn every_drill_kind_passes_on_a_good_backup_and_records_its_restore_time() {
    let script = "#!/bin/sh\n[ -n \"$COFFER_DRILL_VM\" ] && [ \"$1\" = \"$COFFER_DRILL_VM\" ]\n";
    let t = setup(
        r#"
[[policies.all.drills]]
name = "v"
kind = "verify"
every = "7d"

[[policies.all.drills]]
name = "r"
kind = "restore"
every = "7d"
fsck = "test -s {image}"

[[policies.all.drills]]
name = "b"
kind = "boot"
every = "7d"
host = "lab"
network = "isolated"
checks = [{ heartbeat = true }, { tcp = 8022 }, { script = "CHECK" }]
"#,
    );
    let check = t.path().join("check.sh");
    std::fs::write(&check, script).unwrap();
    std::fs::set_permissions(&check, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let toml = std::fs::read_to_string(t.path().join("coffer.toml"))
        .unwrap()
        .replace("CHECK", &check.display().to_string());
    std::fs::write(t.path().join("coffer.toml"), toml).unwrap();

    let out = run(t.path(), &["apply", "--no-mail"]);
    let s = text(&out);
    assert_eq!(out.status.code(), Some(0), "{s}");
    assert!(s.contains("done ? drill v lab-vm-01"), "{s}");
    assert!(s.contains("done ? drill r lab-vm-01"), "{s}");
    assert!(s.contains("`test -s"), "{s}");
    assert!(s.contains("done ? drill b lab-vm-01"), "{s}");
    assert!(
        s.contains("heartbeat passed") && s.contains("script"),
        "{s}"
    );
    assert!(s.contains(":8022 passed"), "the guest's port answered: {s}");
    assert!(s.contains("RTO"), "{s}");
    assert_eq!(vm_names(t.path()), ["lab-vm-01"], "the drill VM is gone");
    // The compliance report names the last drill and its restore time.
    let c = text(&run(t.path(), &["compliance"]));
    assert!(
        c.contains("last drill") && c.contains("passed, restore time"),
        "{c}"
    );
    // Results and restore times are in the catalog, and no drill is due now.
    let plan = run(t.path(), &["plan"]);
    assert!(!text(&plan).contains("? drill"), "{}", text(&plan));
}

#[test]
fn drills_fail_with_their_reason_and_leave_nothing_behind() {
    let t = setup(
        r#"
[[policies.all.drills]]
name = "fails"
kind = "boot"
every = "7d"
host = "lab"
network = "isolated"
checks = [{ script = "/bin/false" }]

[[policies.all.drills]]
name = "slow"
kind = "boot"
every = "7d"
host = "lab"
network = "isolated"
checks = [{ script = "SLOW", timeout = "1s" }]

[[policies.all.drills]]
name = "closed"
kind = "boot"
every = "7d"
host = "lab"
network = "isolated"
checks = [{ tcp = 2222, timeout = "2s" }]
"#,
    );
    let slow = t.path().join("slow.sh");
    std::fs::write(&slow, "#!/bin/sh\nsleep 30\n").unwrap();
    std::fs::set_permissions(&slow, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let toml = std::fs::read_to_string(t.path().join("coffer.toml"))
        .unwrap()
        .replace("SLOW", &slow.display().to_string());
    std::fs::write(t.path().join("coffer.toml"), toml).unwrap();
    let out = run(t.path(), &["apply", "--no-mail"]);
    let s = text(&out);
    assert_eq!(out.status.code(), Some(1), "{s}");
    assert!(s.contains("FAILED ? drill fails"), "{s}");
    assert!(s.contains("`/bin/false` failed"), "{s}");
    assert!(s.contains("FAILED ? drill slow"), "{s}");
    assert!(s.contains("did not finish within 1s"), "{s}");
    assert!(s.contains("FAILED ? drill closed"), "{s}");
    assert!(s.contains("TCP port 2222 did not answer within 2s"), "{s}");
    assert_eq!(vm_names(t.path()), ["lab-vm-01"], "no drill VM is left");
}

#[test]
fn a_corrupted_chunk_fails_the_restore_and_boot_drills() {
    let t = setup("");
    let out = run(t.path(), &["apply", "--no-mail"]);
    assert!(out.status.success(), "{}", text(&out));
    // Damage every stored chunk a little.
    for e in walk(&t.path().join("repo/chunks")) {
        let mut b = std::fs::read(&e).unwrap();
        let mid = b.len() / 2;
        b[mid] ^= 0x55;
        std::fs::write(&e, b).unwrap();
    }
    let toml = std::fs::read_to_string(t.path().join("coffer.toml")).unwrap();
    std::fs::write(
        t.path().join("coffer.toml"),
        format!(
            "{toml}\n[[policies.all.drills]]\nname = \"r\"\nkind = \"restore\"\nevery = \"7d\"\n\n[[policies.all.drills]]\nname = \"b\"\nkind = \"boot\"\nevery = \"7d\"\nhost = \"lab\"\nnetwork = \"isolated\"\n"
        ),
    )
    .unwrap();
    let out = run(t.path(), &["apply", "--no-mail"]);
    let s = text(&out);
    assert!(
        s.contains("FAILED ? drill r") && s.contains("restore failed"),
        "{s}"
    );
    assert!(
        s.contains("FAILED ? drill b") && s.contains("restore onto the drill host failed"),
        "{s}"
    );
    assert_eq!(vm_names(t.path()), ["lab-vm-01"]);
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn a_vm_that_never_reports_a_heartbeat_fails_the_boot_drill() {
    let t = setup(
        r#"
[[policies.all.drills]]
name = "b"
kind = "boot"
every = "7d"
host = "lab"
network = "isolated"
checks = [{ heartbeat = true, timeout = "2s" }]
"#,
    );
    let out = common::command_in(t.path())
        .args(["apply", "--no-mail", "-p", "."])
        .env("COFFER_LAB_FAULTS", "tools-off")
        .output()
        .unwrap();
    let s = text(&out);
    assert_eq!(out.status.code(), Some(1), "{s}");
    assert!(s.contains("FAILED ? drill b"), "{s}");
    assert!(s.contains("no VMware Tools heartbeat within 2s"), "{s}");
    assert_eq!(vm_names(t.path()), ["lab-vm-01"], "the drill VM is gone");
}

#[test]
fn a_restore_onto_the_lab_registers_a_vm_that_powers_on_and_is_never_overwritten() {
    let t = setup("");
    assert!(run(t.path(), &["apply", "--no-mail"]).status.success());
    let args = [
        "restore",
        "lab-vm-01",
        "--to-source",
        "lab",
        "--name",
        "db-restored",
        "--power-on",
        "--new-uuid",
        "--disconnect-network",
    ];
    let out = run(t.path(), &args);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("registered VM `db-restored`"),
        "{}",
        text(&out)
    );
    let inv: serde_json::Value =
        serde_json::from_slice(&run(t.path(), &["inventory", "--json"]).stdout).unwrap();
    let vm = inv["vms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "db-restored")
        .expect("the restored VM is registered")
        .clone();
    assert_eq!(vm["power_state"], "PoweredOn");
    assert_eq!(vm["tools"], "guestToolsRunning", "its disks boot");
    assert_ne!(vm["instance_uuid"], inv["vms"][0]["instance_uuid"]);
    // The same name again is refused, and nothing is replaced.
    let again = run(t.path(), &args);
    assert_eq!(again.status.code(), Some(1));
    assert!(text(&again).contains("already exists"), "{}", text(&again));
}

/// A catalog overwritten with garbage does not brick the directory: the
/// next command moves it aside, says so, rebuilds it from the tier, and
/// the drill history (which no manifest holds) comes back from the tier's
/// log, so the drill is not due again and compliance still names it.
#[test]
fn a_damaged_catalog_is_rebuilt_from_the_tiers_with_its_drill_history() {
    let t = setup(
        r#"
[[policies.all.drills]]
name = "v"
kind = "verify"
every = "7d"
"#,
    );
    let out = run(t.path(), &["apply", "--no-mail"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("done ? drill v lab-vm-01"),
        "{}",
        text(&out)
    );
    let catalog = t.path().join(".coffer/catalog.db");
    std::fs::write(&catalog, vec![0x5a; 64 << 10]).unwrap();

    let plan = run(t.path(), &["plan"]);
    let s = text(&plan);
    assert_eq!(plan.status.code(), Some(0), "{s}");
    assert!(s.contains("could not be opened"), "{s}");
    assert!(
        s.contains("catalog rebuilt from tier `local`: 1 points"),
        "{s}"
    );
    assert!(!s.contains("? drill"), "the drill is not due again: {s}");
    assert!(!s.contains("no restore point yet"), "{s}");
    let aside: Vec<_> = std::fs::read_dir(t.path().join(".coffer"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("catalog.db.damaged-"))
        .collect();
    assert!(!aside.is_empty(), "the damaged file is kept aside");
    let c = text(&run(t.path(), &["compliance"]));
    assert!(c.contains("last drill") && c.contains("passed"), "{c}");
}

// ---------------------------------------------------------------------------
// File system checks on partitioned disks, and what a failed one does.

const MIB: u64 = 1 << 20;

/// A tool of e2fsprogs, found where Debian puts it.
fn e2fsprogs(tool: &str) -> String {
    for dir in ["/usr/sbin", "/sbin", "/usr/bin"] {
        let p = Path::new(dir).join(tool);
        if p.exists() {
            return p.display().to_string();
        }
    }
    panic!("{tool} (e2fsprogs) is needed: scripts/test-deps.sh installs it");
}

/// A fresh ext4 file system of `bytes`, as mkfs.ext4 makes it.
fn ext4(dir: &Path, bytes: u64) -> Vec<u8> {
    let f = dir.join("fs.img");
    std::fs::File::create(&f).unwrap().set_len(bytes).unwrap();
    let out = std::process::Command::new(e2fsprogs("mkfs.ext4"))
        .args(["-q", "-F"])
        .arg(&f)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let b = std::fs::read(&f).unwrap();
    std::fs::remove_file(&f).unwrap();
    b
}

fn mbr_entry(sector: &mut [u8], slot: usize, kind: u8, start: u32, sectors: u32) {
    let e = &mut sector[446 + 16 * slot..446 + 16 * (slot + 1)];
    e[4] = kind;
    e[8..12].copy_from_slice(&start.to_le_bytes());
    e[12..16].copy_from_slice(&sectors.to_le_bytes());
}

fn write_at(file: &Path, offset: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(file).unwrap();
    let len = f.metadata().unwrap().len();
    assert!(
        offset + bytes.len() as u64 <= len,
        "{} is too small",
        file.display()
    );
    f.write_all_at(bytes, offset).unwrap();
}

/// Gives the lab VM's disks what a real guest's disks hold: the first an
/// MBR with an ext4 partition at 1 MiB and a swap partition, the second a
/// GPT with an ext4 partition at 1 MiB.
fn partition_the_lab_disks(dir: &Path) {
    assert!(run(dir, &["inventory"]).status.success());
    let vm_dir = dir.join(".coffer/lab/lab/datastore/lab-vm-01");
    let (first, second) = (
        vm_dir.join("lab-vm-01-flat.vmdk"),
        vm_dir.join("lab-vm-01_1-flat.vmdk"),
    );
    // MBR: 1: Linux (0x83) 16 MiB from sector 2048; 2: swap (0x82).
    let mut mbr = vec![0u8; 512];
    mbr_entry(&mut mbr, 0, 0x83, 2048, (16 * MIB / 512) as u32);
    mbr_entry(&mut mbr, 1, 0x82, 2048 + (16 * MIB / 512) as u32, 2048);
    mbr[510] = 0x55;
    mbr[511] = 0xAA;
    write_at(&first, 0, &mbr);
    write_at(&first, MIB, &ext4(dir, 16 * MIB));
    // GPT: a protective MBR, the header at LBA 1, entries from LBA 2.
    let mut head = vec![0u8; 2 * 512 + 128 * 128];
    mbr_entry(&mut head, 0, 0xEE, 1, (32 * MIB / 512 - 1) as u32);
    head[510] = 0x55;
    head[511] = 0xAA;
    let h = &mut head[512..];
    h[0..8].copy_from_slice(b"EFI PART");
    h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
    h[12..16].copy_from_slice(&92u32.to_le_bytes());
    h[72..80].copy_from_slice(&2u64.to_le_bytes());
    h[80..84].copy_from_slice(&128u32.to_le_bytes());
    h[84..88].copy_from_slice(&128u32.to_le_bytes());
    let e = &mut head[1024..1024 + 128];
    // Linux file system data, 0FC63DAF-8483-4772-8E79-3D69D8477DE4.
    e[0..16].copy_from_slice(&[
        0xAF, 0x3D, 0xC6, 0x0F, 0x83, 0x84, 0x72, 0x47, 0x8E, 0x79, 0x3D, 0x69, 0xD8, 0x47, 0x7D,
        0xE4,
    ]);
    e[16..32].copy_from_slice(&[0x11; 16]);
    e[32..40].copy_from_slice(&2048u64.to_le_bytes());
    e[40..48].copy_from_slice(&(2048 + 8 * MIB / 512 - 1).to_le_bytes());
    write_at(&second, 0, &head);
    write_at(&second, MIB, &ext4(dir, 8 * MIB));
}

fn with_fsck(fsck: &str) -> String {
    format!(
        "\n[[policies.all.drills]]\nname = \"fsck\"\nkind = \"restore\"\nevery = \"7d\"\nfsck = \"{}\"\n",
        fsck.replace('"', "\\\"")
    )
}

#[test]
fn the_restore_drill_checks_each_partition_of_mbr_and_gpt_disks() {
    let t = setup(&with_fsck(&format!(
        "{} -fn '{{image}}?offset={{offset}}' && test {{fstype}} = ext4 && test {{partition}} = 1",
        e2fsprogs("e2fsck")
    )));
    partition_the_lab_disks(t.path());
    let out = run(t.path(), &["apply", "--no-mail"]);
    let s = text(&out);
    assert_eq!(out.status.code(), Some(0), "{s}");
    assert!(s.contains("done ? drill fsck lab-vm-01"), "{s}");
    // Both disks' ext4 partitions were checked at their own offsets; the
    // swap partition was named and left alone.
    assert_eq!(
        s.matches("partition 1 (ext4, offset 1048576)").count(),
        2,
        "{s}"
    );
    assert!(s.contains("partition 2 (mbr 0x82) not checked"), "{s}");
    assert!(s.contains("data verified"), "{s}");
}

/// The points of the tier, from `repo ls`.
fn points_on_tier(dir: &Path) -> Vec<String> {
    let out = run(dir, &["repo", "ls", "--tier", "local"]);
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

#[test]
fn a_failed_fsck_never_prunes_a_good_point_nor_forces_a_full() {
    // The check as the docs once gave it: on a partitioned disk it reads
    // the partition table where it expects a superblock, and fails.
    let t = setup(&with_fsck(&format!(
        "{} -fn {{image}}",
        e2fsprogs("e2fsck")
    )));
    partition_the_lab_disks(t.path());
    for _ in 0..2 {
        let out = run(t.path(), &["backup", "lab-vm-01"]);
        assert!(out.status.success(), "{}", text(&out));
    }
    let points = points_on_tier(t.path());
    assert_eq!(points.len(), 2, "{points:?}");

    let out = run(t.path(), &["apply", "--no-mail"]);
    let s = text(&out);
    assert_eq!(out.status.code(), Some(1), "the drill failed: {s}");
    assert!(s.contains("FAILED ? drill fsck lab-vm-01"), "{s}");
    // The failure shows the check's own output, not only its first line
    // (e2fsck's first line is its version), and how to check partitions.
    assert!(s.contains("Bad magic number in super-block"), "{s}");
    assert!(s.contains("The superblock could not be read"), "{s}");
    assert!(s.contains("give the check `{offset}`"), "{s}");
    // Nothing was pruned, by this run or the next.
    assert!(!s.contains("- prune"), "{s}");
    let out = run(t.path(), &["apply", "--no-mail"]);
    assert!(!text(&out).contains("- prune"), "{}", text(&out));
    assert_eq!(points_on_tier(t.path()), points);

    // The plan alerts with the check's output; a backup due tomorrow is
    // planned from the newest point, not as a first backup.
    let tomorrow = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    let plan = text(&run(t.path(), &["plan", "--at", &tomorrow]));
    assert!(!plan.contains("- prune"), "{plan}");
    assert!(!plan.contains("no restore point yet"), "{plan}");
    assert!(!plan.contains("failed data verification"), "{plan}");
    assert!(plan.contains("+ backup lab-vm-01"), "{plan}");
    let alert = plan
        .lines()
        .find(|l| l.starts_with("! alert lab-vm-01: guest check of drill `fsck` failed on point"))
        .unwrap_or_else(|| panic!("no alert: {plan}"));
    assert!(
        alert.contains(&points[0]) || alert.contains(&points[1]),
        "{alert}"
    );
    assert!(alert.contains("Bad magic number in super-block"), "{alert}");

    // Compliance: a finding, and the data still verified.
    let out = run(t.path(), &["compliance"]);
    let c = text(&out);
    assert_eq!(out.status.code(), Some(3), "{c}");
    assert!(c.contains("guest check of drill `fsck` failed"), "{c}");
    assert!(c.contains("guest checks FAILED (data verified)"), "{c}");
    assert!(!c.contains("failed data verification"), "{c}");
}

/// The switch names of the lab host's network (its state file).
fn lab_switches(dir: &Path) -> Vec<String> {
    let state = coffer::run::connect::lab_state_dir(&dir.join(".coffer"), "lab").join("state.json");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(state).unwrap()).unwrap();
    match v["host_networks"]["ha-host"]["vswitches"].as_array() {
        Some(s) => s
            .iter()
            .map(|s| s["name"].as_str().unwrap().to_string())
            .collect(),
        // Never changed: an installation's vSwitch0 only.
        None => vec!["vSwitch0".to_string()],
    }
}

#[test]
fn a_boot_drill_runs_on_a_switch_without_uplink_and_leaves_no_network_behind() {
    // No `network`: isolated, built by coffer. The guest answers on its
    // port only when its card is connected to a port group the host has
    // (a disconnected card, as boot drills had before, fails the check).
    let t = setup(
        r#"
[[policies.all.drills]]
name = "iso"
kind = "boot"
every = "7d"
host = "lab"
checks = [{ heartbeat = true }, { tcp = 8022, timeout = "20s" }]

[[policies.all.drills]]
name = "prod"
kind = "boot"
every = "7d"
host = "lab"
network = "VM Network"

[[policies.all.drills]]
name = "typo"
kind = "boot"
every = "7d"
host = "lab"
network = "drill-isolatd"
"#,
    );
    let out = run(t.path(), &["apply", "--no-mail"]);
    let s = text(&out);
    assert_eq!(out.status.code(), Some(1), "{s}");
    assert!(s.contains("done ? drill iso lab-vm-01"), "{s}");
    assert!(
        s.contains("isolated port group coffer-drill-isolated on switch coffer-drill (no uplink), built for the drill"),
        "{s}"
    );
    assert!(s.contains(":8022 passed"), "{s}");
    // A port group on the production switch is refused before anything is
    // restored, and so is one the host does not have.
    assert!(s.contains("FAILED ? drill prod"), "{s}");
    assert!(
        s.contains("`VM Network` is on switch vSwitch0, which has the uplink(s) vmnic0"),
        "{s}"
    );
    assert!(s.contains("FAILED ? drill typo"), "{s}");
    assert!(
        s.contains("port group `drill-isolatd` does not exist on the drill host"),
        "{s}"
    );
    assert!(s.contains("nothing was restored"), "{s}");
    assert_eq!(vm_names(t.path()), ["lab-vm-01"], "no drill VM is left");
    assert_eq!(
        lab_switches(t.path()),
        ["vSwitch0"],
        "no drill switch is left"
    );
}

#[test]
fn a_drill_switch_a_killed_run_left_is_reused_and_then_removed() {
    let t = setup(
        r#"
[[policies.all.drills]]
name = "iso"
kind = "boot"
every = "1s"
host = "lab"
network = "isolated"
"#,
    );
    // A first apply makes the lab and a point; the drill runs too.
    assert!(run(t.path(), &["apply", "--no-mail"]).status.success());
    // What a run killed mid-drill leaves: coffer's switch and port group.
    let state =
        coffer::run::connect::lab_state_dir(&t.path().join(".coffer"), "lab").join("state.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    v["host_networks"]["ha-host"] = serde_json::json!({
        "vswitches": [
            { "name": "vSwitch0", "uplinks": ["vmnic0"], "num_ports": 128 },
            { "name": "coffer-drill", "uplinks": [], "num_ports": 128 }
        ],
        "port_groups": [
            { "name": "Management Network", "vswitch": "vSwitch0", "vlan": 0 },
            { "name": "VM Network", "vswitch": "vSwitch0", "vlan": 0 },
            { "name": "coffer-drill-isolated", "vswitch": "coffer-drill", "vlan": 0 }
        ]
    });
    std::fs::write(&state, v.to_string()).unwrap();
    assert_eq!(lab_switches(t.path()), ["vSwitch0", "coffer-drill"]);
    // The drill is due again (every second).
    std::thread::sleep(std::time::Duration::from_secs(1));
    let out = run(t.path(), &["apply", "--no-mail"]);
    let s = text(&out);
    assert!(out.status.success(), "{s}");
    assert!(s.contains("done ? drill iso"), "{s}");
    assert!(s.contains("left by an earlier drill"), "{s}");
    assert_eq!(lab_switches(t.path()), ["vSwitch0"], "{s}");
}

#[test]
fn guest_checks_run_inside_the_isolated_guest_and_fail_with_their_own_output() {
    // The lab guest's `root` has the password `coffer-lab`; its only
    // active service is sshd, and it listens on 22 and 8022.
    let t = setup(
        r#"
[[policies.all.drills]]
name = "svc"
kind = "boot"
every = "7d"
host = "lab"
guest_user = "root"
guest_password = { env = "COFFER_TEST_GUEST_PASSWORD" }
checks = [{ guest = "systemctl is-active sshd" }, { tcp = 8022 }]

[[policies.all.drills]]
name = "db"
kind = "boot"
every = "7d"
host = "lab"
guest_user = "root"
guest_password = { env = "COFFER_TEST_GUEST_PASSWORD" }
checks = [{ guest = "systemctl is-active postgresql" }]

[[policies.all.drills]]
name = "port"
kind = "boot"
every = "7d"
host = "lab"
guest_user = "root"
guest_password = { env = "COFFER_TEST_GUEST_PASSWORD" }
checks = [{ tcp = 5432, timeout = "3s" }]

[[policies.all.drills]]
name = "login"
kind = "boot"
every = "7d"
host = "lab"
guest_user = "root"
guest_password = { env = "COFFER_TEST_WRONG_PASSWORD" }
checks = [{ guest = "true" }]
"#,
    );
    let out = common::command_in(t.path())
        .args(["apply", "--no-mail", "-p", "."])
        .env("COFFER_TEST_GUEST_PASSWORD", "coffer-lab")
        .env("COFFER_TEST_WRONG_PASSWORD", "not-it")
        .output()
        .unwrap();
    let s = text(&out);
    assert_eq!(out.status.code(), Some(1), "{s}");
    assert!(s.contains("done ? drill svc"), "{s}");
    assert!(s.contains("guest `systemctl is-active sshd` passed"), "{s}");
    assert!(
        s.contains(":8022 from inside the guest passed"),
        "the TCP check ran in the guest: {s}"
    );
    // A service that is down fails the drill with the guest's own words.
    assert!(s.contains("FAILED ? drill db"), "{s}");
    assert!(
        s.contains("`systemctl is-active postgresql` failed in the guest (exit code 3); its output: inactive"),
        "{s}"
    );
    assert!(s.contains("FAILED ? drill port"), "{s}");
    assert!(s.contains("Connection refused"), "{s}");
    assert!(s.contains("FAILED ? drill login"), "{s}");
    assert!(
        s.contains("Failed to authenticate with the guest operating system"),
        "{s}"
    );
    assert_eq!(vm_names(t.path()), ["lab-vm-01"], "no drill VM is left");
    assert_eq!(
        lab_switches(t.path()),
        ["vSwitch0"],
        "no drill switch is left"
    );
    // A guest check without credentials is refused when the policy loads.
    policy(
        t.path(),
        r#"
[[policies.all.drills]]
name = "nocreds"
kind = "boot"
every = "7d"
host = "lab"
checks = [{ guest = "true" }]
"#,
    );
    let v = run(t.path(), &["validate"]);
    assert_eq!(v.status.code(), Some(10), "{}", text(&v));
    assert!(
        text(&v).contains("needs `guest_user` and `guest_password`"),
        "{}",
        text(&v)
    );
}

/// The lab's NAS datastores, from its state.
fn lab_nas_datastores(dir: &Path) -> Vec<serde_json::Value> {
    let lab = coffer::run::connect::lab_state_dir(&dir.join(".coffer"), "lab");
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(lab.join("state.json")).unwrap()).unwrap();
    state
        .get("nas_datastores")
        .and_then(|n| n.as_array())
        .cloned()
        .unwrap_or_default()
}

/// An instant boot drill boots the point straight from the repository
/// (served over NFS, mounted by the drill host) in the isolated network,
/// passes its guest check, says how long the heartbeat took, proves no
/// data (it read only what the guest needed), and leaves no VM, datastore,
/// switch or server behind; a drill whose guest does not boot fails the
/// same way without leaving anything either.
#[test]
fn an_instant_boot_drill_boots_from_the_repository_and_leaves_nothing() {
    let pid = std::process::id();
    let listen = format!("127.{}.{}.9", 90 + (pid >> 8) % 100, pid % 250 + 1);
    let t = setup(&format!(
        r#"
[[policies.all.drills]]
name = "ir"
kind = "boot"
method = "instant"
listen = "{listen}"
every = "7d"
host = "lab"
guest_user = "root"
guest_password = {{ env = "COFFER_TEST_GUEST_PASSWORD" }}
checks = [{{ heartbeat = true }}, {{ guest = "systemctl is-active sshd" }}, {{ tcp = 22 }}]
"#
    ));
    let out = common::command_in(t.path())
        .args(["apply", "--no-mail", "-p", "."])
        .env("COFFER_TEST_GUEST_PASSWORD", "coffer-lab")
        .output()
        .unwrap();
    let s = text(&out);
    assert_eq!(out.status.code(), Some(0), "{s}");
    assert!(s.contains("done ? drill ir"), "{s}");
    assert!(s.contains("from the repository over NFS"), "{s}");
    assert!(s.contains("heartbeat after"), "{s}");
    assert!(s.contains("guest `systemctl is-active sshd` passed"), "{s}");
    assert_eq!(vm_names(t.path()), ["lab-vm-01"], "no drill VM is left");
    assert!(
        lab_nas_datastores(t.path()).is_empty(),
        "no datastore is left"
    );
    assert_eq!(
        lab_switches(t.path()),
        ["vSwitch0"],
        "no drill switch is left"
    );
    assert!(
        std::net::TcpStream::connect((listen.as_str(), 111)).is_err(),
        "the drill's NFS server is stopped"
    );
    assert!(s.contains("RTO"), "the recovery time is recorded: {s}");
    // The compliance report says how the drill recovered the VM and how
    // long the heartbeat and the services took.
    let c = text(&run(t.path(), &["compliance"]));
    assert!(c.contains("last drill ir (boot, instant)"), "{c}");
    assert!(c.contains("to services checked, heartbeat after"), "{c}");
    // `listen` without `method = "instant"` is refused when the policy
    // loads, and so is an address that is not one.
    for (extra, says) in [
        (
            "listen = \"10.0.0.5\"",
            "applies to instant boot drills only",
        ),
        (
            "method = \"instant\"\nlisten = \"nowhere\"",
            "`listen` is not an IP address",
        ),
    ] {
        policy(
            t.path(),
            &format!(
                "[[policies.all.drills]]\nname = \"x\"\nkind = \"boot\"\nevery = \"7d\"\nhost = \"lab\"\n{extra}\n"
            ),
        );
        let v = run(t.path(), &["validate"]);
        assert_eq!(v.status.code(), Some(10), "{}", text(&v));
        assert!(text(&v).contains(says), "{}", text(&v));
    }
}

/// A boot drill on a vCenter runs on the ESXi host it names (`esx_host`),
/// in that host's datacenter, in the VM folder and resource pool it names
/// (`folder`, `resource_pool`), and leaves nothing; an unknown host or
/// folder fails the drill with the ones there are.
#[test]
fn a_boot_drill_through_a_vcenter_runs_on_the_host_it_names() {
    let drill = |host: &str| {
        format!(
            r#"
[[policies.all.drills]]
name = "b"
kind = "boot"
every = "7d"
host = "lab"
esx_host = "{host}"
folder = "apps/restored"
resource_pool = "restores"
checks = [{{ heartbeat = true }}, {{ tcp = 8022 }}]
"#
        )
    };
    // The lab names its hosts by their loopback addresses; the moref id
    // names one as well.
    let t = setup(&drill("host-2"));
    let toml = std::fs::read_to_string(t.path().join("coffer.toml"))
        .unwrap()
        .replace("lab_vms = 1", "lab_vms = 1\nlab_mode = \"vcenter\"");
    std::fs::write(t.path().join("coffer.toml"), &toml).unwrap();
    let out = run(t.path(), &["apply", "--no-mail"]);
    let s = text(&out);
    assert_eq!(out.status.code(), Some(0), "{s}");
    assert!(s.contains("done ? drill b lab-vm-01"), "{s}");
    assert!(s.contains(":8022 passed"), "{s}");
    assert_eq!(vm_names(t.path()), ["lab-vm-01"], "the drill VM is gone");

    // An ESXi host the vCenter does not have (a drill of a new name, so
    // that it is due): the drill fails and says which there are.
    std::fs::write(
        t.path().join("coffer.toml"),
        toml.replace("\"host-2\"", "\"host-9\"")
            .replace("name = \"b\"", "name = \"b9\""),
    )
    .unwrap();
    let out = run(t.path(), &["apply", "--no-mail"]);
    let s = text(&out);
    assert_ne!(out.status.code(), Some(0), "{s}");
    assert!(s.contains("no host named `host-9`"), "{s}");
    assert_eq!(vm_names(t.path()), ["lab-vm-01"]);

    // A folder the host's datacenter does not have.
    std::fs::write(
        t.path().join("coffer.toml"),
        toml.replace("\"apps/restored\"", "\"drills\"")
            .replace("name = \"b\"", "name = \"bf\""),
    )
    .unwrap();
    let out = run(t.path(), &["apply", "--no-mail"]);
    let s = text(&out);
    assert_ne!(out.status.code(), Some(0), "{s}");
    assert!(
        s.contains(
            "no VM folder `drills` in datacenter region-b/lab-dc-2 (there are: apps, apps/restored)"
        ),
        "{s}"
    );
    assert_eq!(vm_names(t.path()), ["lab-vm-01"]);
}
