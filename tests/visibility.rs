//! Which VM a restore point belongs to, and what coffer says of a VM it
//! cannot see: a host that does not answer leaves its VMs `unknown` and out
//! of compliance, never silently gone; two sources holding VMs with the
//! same instance UUID never share points.

mod common;

use std::path::Path;
use std::process::Output;

use coffer::lab::{Lab, LabConfig, LabHandle};

const PASSWORD_ENV: &str = "COFFER_TEST_HOST_B_PASSWORD";

/// Lenient 3-2-1 rules: one tier meets them, so a breach is about the VM
/// being seen, not about copies.
const RULES: &str = r#"
[settings]
timezone = "UTC"

[compliance]
copies = 2
media = 1
offsite = 0
immutable = 0

[tiers.local]
backend = "local"
path = "repo"

[policies.all]
sources = ["a", "b"]
vms = ["*"]
schedule = "0 0 1 * * *"
consistency = "crash"
backup_to = "local"

[policies.all.retain.local]
last = 1
"#;

fn run(dir: &Path, args: &[&str]) -> Output {
    common::command_in(dir)
        .args(args)
        .args(["-p", "."])
        .env(PASSWORD_ENV, "pw")
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

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(o)))
}

/// Host `b`: a lab of its own (its VMs have instance UUIDs of their own),
/// reached as an ESXi host over loopback, so the test can stop it.
fn start_host_b(dir: &Path) -> LabHandle {
    let mut config = LabConfig::new(dir.join("host-b"));
    config.vms = 1;
    config.password = Some("pw".into());
    config.uuid_seed = Some("host-b".into());
    Lab::start(config).expect("host b starts")
}

fn write_policy(dir: &Path, b_url: &str, b_thumbprint: &str) {
    std::fs::write(
        dir.join("coffer.toml"),
        format!(
            r#"{RULES}
[sources.a]
kind = "lab"
lab_vms = 1

[sources.b]
kind = "esxi"
url = "{b_url}"
user = "root"
password = {{ env = "{PASSWORD_ENV}" }}
thumbprint = "{b_thumbprint}"
"#
        ),
    )
    .unwrap();
}

/// The manifests under the tier, as (VM uuid, recorded source).
fn manifests(dir: &Path) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let points = dir.join("repo/points");
    for vm in std::fs::read_dir(&points).unwrap() {
        let vm = vm.unwrap().path();
        for p in std::fs::read_dir(&vm).unwrap() {
            let m = p.unwrap().path().join("manifest.json");
            if let Ok(bytes) = std::fs::read(&m) {
                let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                out.push((
                    v["vm"]["uuid"].as_str().unwrap().to_string(),
                    v["vm"]["source"].as_str().map(str::to_string),
                ));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_host_that_cannot_be_reached_leaves_its_vms_unknown_and_out_of_compliance() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let host_b = start_host_b(dir);
    write_policy(dir, host_b.url(), &host_b.thumbprint());
    assert!(
        run(dir, &["repo", "init", "--tier", "local"])
            .status
            .success()
    );
    let o = run(dir, &["apply", "--no-mail"]);
    assert!(o.status.success(), "{}", text(&o));
    // A second point of b's VM, which `last = 1` would let go.
    let o = run(dir, &["backup", "lab-vm-01", "--source", "b"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = run(dir, &["compliance"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let before = manifests(dir);
    let b_points = before
        .iter()
        .filter(|(_, s)| s.as_deref() == Some("b"))
        .count();
    assert_eq!(b_points, 2, "{before:?}");

    // Host b stops: its port no longer answers.
    drop(host_b);

    let o = run(dir, &["compliance", "--json"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let report = json(&o);
    let vms = report["vms"].as_array().unwrap();
    assert_eq!(vms.len(), 2, "{report:#}");
    let b = vms
        .iter()
        .find(|v| v["source"] == "b")
        .unwrap_or_else(|| panic!("the VM of host b vanished: {report:#}"));
    assert_eq!(b["vm"], "lab-vm-01");
    assert_eq!(b["standing"], "unknown", "{b:#}");
    assert!(
        !b["source_error"].as_str().unwrap_or("").is_empty(),
        "{b:#}"
    );
    let why = b["violations"][0].as_str().unwrap();
    assert!(
        why.contains("source `b` could not be read") && why.contains("newest point"),
        "{why}"
    );
    let a = vms.iter().find(|v| v["source"] == "a").unwrap();
    assert_eq!(a["standing"], "ok", "{a:#}");

    let o = run(dir, &["plan"]);
    let plan = text(&o);
    assert!(
        plan.contains("! alert lab-vm-01: standing unknown, source `b` could not be read"),
        "{plan}"
    );
    assert!(
        plan.contains("compliance lab-vm-01@b (all): UNKNOWN: "),
        "{plan}"
    );
    assert!(!plan.contains(" 0 alerts"), "{plan}");

    let o = run(dir, &["report", "--compliance"]);
    assert!(
        text(&o).contains("lab-vm-01@b (all): UNKNOWN"),
        "{}",
        text(&o)
    );

    // Nothing of the unseen VM is pruned while its host is down.
    let o = run(dir, &["apply", "--no-mail"]);
    assert!(!text(&o).contains("- prune"), "{}", text(&o));
    let after = manifests(dir);
    assert_eq!(
        after
            .iter()
            .filter(|(_, s)| s.as_deref() == Some("b"))
            .count(),
        2,
        "{after:?}"
    );
}

#[test]
fn vms_with_the_same_instance_uuid_on_two_sources_keep_their_own_points() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    // Two labs without a seed: their `lab-vm-01` share an instance UUID,
    // as VMs copied between two standalone hosts do.
    std::fs::write(
        dir.join("coffer.toml"),
        format!(
            r#"{RULES}
[sources.a]
kind = "lab"
lab_vms = 1

[sources.b]
kind = "lab"
lab_vms = 1
"#
        ),
    )
    .unwrap();
    assert!(
        run(dir, &["repo", "init", "--tier", "local"])
            .status
            .success()
    );
    let o = run(dir, &["backup", "lab-vm-01", "--source", "a"]);
    assert!(o.status.success(), "{}", text(&o));

    // a's point does not protect b's VM.
    let o = run(dir, &["plan", "--json"]);
    let plan = json(&o);
    let actions = plan["actions"].as_array().unwrap();
    let backups: Vec<&serde_json::Value> =
        actions.iter().filter(|a| a["action"] == "backup").collect();
    assert_eq!(backups.len(), 1, "{plan:#}");
    assert_eq!(backups[0]["source"], "b");
    assert!(
        backups[0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("no restore point yet"),
        "{plan:#}"
    );
    assert!(
        actions.iter().any(|a| a["action"] == "alert"
            && a["message"]
                .as_str()
                .unwrap()
                .contains("is held by VM lab-vm-01 of source `a` and VM lab-vm-01 of source `b`")),
        "{plan:#}"
    );
    let o = run(dir, &["compliance", "--json"]);
    let standing = json(&o);
    let b = standing["vms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["source"] == "b")
        .unwrap();
    assert!(b["newest_good"].is_null(), "{standing:#}");

    // Each VM then has its point, recorded with its source.
    let o = run(dir, &["apply", "--no-mail"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = run(dir, &["plan"]);
    // The plan's standing is compact: a count, breaches in full.
    assert!(
        text(&o).contains("compliance: 2 of 2 VMs meet their policy"),
        "{}",
        text(&o)
    );
    let o = run(dir, &["compliance"]);
    for vm in ["lab-vm-01@a", "lab-vm-01@b"] {
        assert!(text(&o).contains(vm), "{}", text(&o));
    }
    let m = manifests(dir);
    assert_eq!(m.len(), 2, "{m:?}");
    assert_eq!(m[0].0, m[1].0, "one instance UUID");
    assert_eq!(
        m.iter().map(|(_, s)| s.clone()).collect::<Vec<_>>(),
        [Some("a".to_string()), Some("b".to_string())]
    );
    let o = run(dir, &["compliance", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    for v in json(&o)["vms"].as_array().unwrap() {
        assert!(!v["newest_good"].is_null(), "{v:#}");
    }

    // A restore by name asks which of the two is meant.
    let out = dir.join("restored");
    let o = run(dir, &["restore", "lab-vm-01", "-o", out.to_str().unwrap()]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("were backed up from sources `a`, `b`: name one with --source"),
        "{}",
        text(&o)
    );
    let o = run(
        dir,
        &[
            "restore",
            "lab-vm-01",
            "--source",
            "b",
            "-o",
            out.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
}
