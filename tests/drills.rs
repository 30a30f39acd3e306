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
