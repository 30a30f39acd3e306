//! The engine driven as a library, the way the command line and the daemon
//! drive it, with no CLI and no subprocess: a workspace opened on a policy
//! directory whose source is the built-in lab, then refresh → plan → apply →
//! compliance → report, with a recording observer. The assertions are on
//! what the observer heard and on real outcomes: the points restore to the
//! lab's disks byte for byte, the snapshot is gone, the mail arrived.

mod common;

use std::path::Path;
use std::time::Duration;

use chrono::Utc;
use coffer::engine::restore::find_point;
use coffer::engine::{ApplyOptions, Recorder, Workspace};
use coffer::plan::planner::Action;
use coffer::repo::restore::{self, DiskFormat};
use common::smtp::SmtpServer;

fn write_policy(dir: &Path, smtp: &SmtpServer) {
    std::fs::write(dir.join("smtp-pw"), "engine mail").unwrap();
    std::fs::write(
        dir.join("coffer.toml"),
        format!(
            r#"
[sources.lab]
kind = "lab"
lab_vms = 1
site = "here"

[compliance]
copies = 3
media = 2
offsite = 1
immutable = 0

[tiers.local]
backend = "local"
path = "repo"
site = "here"

[tiers.offsite]
backend = "local"
path = "offsite"
site = "there"
media = "tape"

[policies.all]
sources = ["lab"]
vms = ["*"]
schedule = "0 0 1 * * *"
consistency = "crash"
backup_to = "local"

[policies.all.retain.local]
last = 3

[policies.all.retain.offsite]
daily = 7

[[policies.all.drills]]
name = "check"
kind = "verify"
every = "7d"
tier = "local"

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
            port = smtp.port,
            pw = dir.join("smtp-pw").display(),
            ca = smtp.ca.display(),
        ),
    )
    .unwrap();
}

#[test]
fn refresh_plan_apply_compliance_and_report_run_through_the_library_alone() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let mail_dir = t.path().join("mail");
    std::fs::create_dir_all(&mail_dir).unwrap();
    let smtp = SmtpServer::start(&mail_dir, "engine mail", false);
    write_policy(dir, &smtp);
    let recorder = Recorder::default();
    let mut ws = Workspace::load(dir, None, &recorder).unwrap();
    coffer::engine::tiers::init_tiers(&ws.config).unwrap();

    // Refresh: the lab is read, nothing is backed up yet.
    let gathered = ws.refresh().unwrap();
    assert!(
        gathered.unreachable.is_empty(),
        "{:?}",
        gathered.unreachable
    );
    assert_eq!(gathered.inventory.len(), 1);
    assert!(gathered.points.is_empty());
    let plan = ws.plan(&gathered, Utc::now(), false);
    assert!(
        plan.actions.iter().any(
            |a| matches!(a, Action::Backup { vm, full: true, tier, .. } if vm == "lab-vm-01" && tier == "local")
        ),
        "{:#?}",
        plan.actions
    );

    // Apply: a backup, its copy offsite, the verify drill; the report is
    // written and mailed.
    let run = ws.apply(&ApplyOptions::default(), &Utc::now).unwrap();
    assert!(!run.failed && !run.cancelled, "{:#?}", run.outcomes);
    let done: Vec<&str> = run.outcomes.iter().map(|o| o.action.as_str()).collect();
    for expected in ["backup lab-vm-01", "copy", "drill check"] {
        assert!(
            done.iter().any(|a| a.contains(expected)),
            "no `{expected}` among {done:?}"
        );
    }
    let kinds = recorder.kinds();
    assert_eq!(kinds.first(), Some(&"run-started"), "{kinds:?}");
    assert_eq!(kinds.get(1), Some(&"plan"), "{kinds:?}");
    let finished_at = kinds.iter().position(|k| *k == "run-finished").unwrap();
    assert_eq!(kinds.get(finished_at + 1), Some(&"mailed"), "{kinds:?}");
    assert!(!kinds.contains(&"action-failed"), "{kinds:?}");
    // Every action is announced before its result, and each result is heard.
    let started = kinds.iter().filter(|k| **k == "action-started").count();
    let ended = kinds.iter().filter(|k| **k == "action-finished").count();
    assert_eq!(started, run.outcomes.len());
    assert_eq!(ended, run.outcomes.len());
    let events = recorder.events();
    let first_started = kinds.iter().position(|k| *k == "action-started").unwrap();
    let first_ended = kinds.iter().position(|k| *k == "action-finished").unwrap();
    assert!(first_started < first_ended);
    assert_eq!(
        events[finished_at].json.as_ref().unwrap()["subject"],
        run.subject.as_str()
    );
    let report = std::fs::read_to_string(run.report.with_extension("txt")).unwrap();
    assert!(report.contains(&run.run_id), "{report}");

    // The mail arrived with the run's subject.
    let got = smtp.messages(1, Duration::from_secs(20));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["subject"], run.subject.as_str());

    // Compliance: production and a copy on each tier (three copies), on
    // disk and tape, one of them at another site.
    let (after, standing) = ws.compliance(Utc::now()).unwrap();
    assert_eq!(after.points.len(), 1);
    assert_eq!(after.points[0].copies.len(), 2);
    let vm = standing
        .compliance
        .iter()
        .find(|c| c.vm == "lab-vm-01")
        .unwrap();
    assert_eq!((vm.copies, vm.media, vm.offsite), (3, 2, 1), "{vm:#?}");
    assert!(vm.violations.is_empty(), "{:?}", vm.violations);
    let compliance = ws.compliance_report(false, None).unwrap();
    assert!(compliance.text.contains("lab-vm-01"), "{}", compliance.text);
    assert!(
        compliance.subject.contains("1 of 1 VMs"),
        "{}",
        compliance.subject
    );

    // Real outcomes: the copy offsite restores to the lab's disks byte for
    // byte, and the backup's snapshot is gone.
    let conn =
        coffer::run::connect::connect(&ws.config.sources["lab"], &ws.config.settings.state_dir)
            .unwrap();
    let (_, repo, m) =
        find_point(&ws.config, Some("offsite"), "lab-vm-01", None, None, None).unwrap();
    let datastore = conn.lab.as_ref().unwrap().datastore_dir();
    for (n, disk) in m.disks.iter().enumerate() {
        let out = dir.join(format!("restored-{n}.raw"));
        let index = repo.read_index(&m, disk).unwrap();
        restore::restore_disk(&repo, &index, &out, DiskFormat::Raw, true, 2).unwrap();
        let flat = if n == 0 {
            "lab-vm-01-flat.vmdk".to_string()
        } else {
            format!("lab-vm-01_{n}-flat.vmdk")
        };
        assert!(
            std::fs::read(&out).unwrap()
                == std::fs::read(datastore.join("lab-vm-01").join(flat)).unwrap(),
            "disk {n} of the offsite copy differs from the lab's disk"
        );
    }
    let vms = conn.session.list_vms().unwrap();
    assert!(vms.iter().all(|v| v.all_snapshots().is_empty()));
}

#[test]
fn an_invalid_policy_directory_is_an_error_naming_file_line_and_column() {
    let t = tempfile::tempdir().unwrap();
    std::fs::write(
        t.path().join("coffer.toml"),
        "[sources.lab]\nkind = \"lab\"\nlab_vmz = 1\n",
    )
    .unwrap();
    let recorder = Recorder::default();
    let err = Workspace::load(t.path(), None, &recorder).err().unwrap();
    let text = format!("{err:#}");
    assert!(text.contains("coffer.toml:3:1"), "{text}");
    assert!(text.contains("lab_vms"), "{text}");
}

#[test]
fn the_daemon_is_a_loop_over_the_same_engine_calls() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let mail_dir = t.path().join("mail");
    std::fs::create_dir_all(&mail_dir).unwrap();
    let smtp = SmtpServer::start(&mail_dir, "engine mail", false);
    write_policy(dir, &smtp);
    let load = || {
        coffer::policy::load(dir)
            .config
            .ok_or_else(|| anyhow::anyhow!("invalid policies"))
    };
    coffer::engine::tiers::init_tiers(&load().unwrap()).unwrap();
    let recorder = Recorder::default();
    let options = coffer::engine::daemon::DaemonOptions {
        apply: ApplyOptions {
            mail: false,
            ..ApplyOptions::default()
        },
        max_runs: Some(2),
        fake_clock: Some(Utc::now()),
        ..Default::default()
    };
    let end = coffer::engine::daemon::run_daemon(&load, &options, &recorder).unwrap();
    assert_eq!(end, coffer::engine::daemon::DaemonEnd::MaxRuns);
    let kinds = recorder.kinds();
    // Catch-up run, sleep until the next fire time (the fake clock jumps),
    // the second run; no mail (the daemon was told not to send any).
    let runs: Vec<usize> = kinds
        .iter()
        .enumerate()
        .filter(|(_, k)| **k == "daemon-applying")
        .map(|(i, _)| i)
        .collect();
    assert_eq!(runs.len(), 2, "{kinds:?}");
    assert_eq!(
        kinds[runs[0]..runs[1]]
            .iter()
            .filter(|k| **k == "run-finished")
            .count(),
        1
    );
    assert!(
        kinds[runs[0]..runs[1]].contains(&"daemon-sleeping"),
        "{kinds:?}"
    );
    assert!(!kinds.contains(&"mailed"), "{kinds:?}");
    assert!(!kinds.contains(&"action-failed"), "{kinds:?}");
    // The second run, a day later by the fake clock, backed up again.
    let backups = recorder
        .events()
        .iter()
        .filter(|e| e.kind == "action-finished")
        .filter(|e| {
            e.json.as_ref().unwrap()["action"]
                .as_str()
                .unwrap()
                .contains("backup lab-vm-01")
        })
        .count();
    assert_eq!(backups, 2, "{kinds:?}");
}
