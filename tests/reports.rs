//! `coffer report --compliance --send` against the lab and a real SMTP
//! server: the report is written under the report directory and arrives
//! with a line per VM, its standing, and its last drill with the measured
//! restore time.

mod common;

use std::time::Duration;

use common::smtp::SmtpServer;

#[test]
fn the_compliance_report_is_stored_and_mailed_with_each_vm() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let mail_dir = dir.join("mail");
    std::fs::create_dir(&mail_dir).unwrap();
    std::fs::write(dir.join("smtp-pw"), "pw").unwrap();
    let server = SmtpServer::start(&mail_dir, "pw", false);
    std::fs::write(
        dir.join("coffer.toml"),
        format!(
            r#"
[settings]
timezone = "UTC"

[sources.lab]
kind = "lab"
lab_vms = 2

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

[[policies.all.drills]]
name = "r"
kind = "restore"
every = "7d"

[notify.ops]
smtp_host = "127.0.0.1"
smtp_port = {port}
user = "coffer"
password = {{ file = "{pw}" }}
ca_file = "{ca}"
from = "coffer@example.com"
to = ["ops@example.com"]
send = ["on-failure"]
compliance_schedule = "0 0 8 * * MON"
"#,
            port = server.port,
            pw = dir.join("smtp-pw").display(),
            ca = server.ca.display(),
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        common::command_in(dir)
            .args(args)
            .args(["-p", "."])
            .output()
            .unwrap()
    };
    // The policy directory is a git repository: the report lists its commits.
    let git = |args: &[&str]| {
        assert!(
            std::process::Command::new("git")
                .args(["-c", "user.name=ops", "-c", "user.email=ops@example.com"])
                .args(args)
                .current_dir(dir)
                .output()
                .unwrap()
                .status
                .success()
        )
    };
    git(&["init", "-q"]);
    git(&["add", "coffer.toml"]);
    git(&["commit", "-q", "-m", "lab policy: a restore drill weekly"]);
    assert!(run(&["repo", "init", "--tier", "local"]).status.success());
    let applied = run(&["apply"]);
    assert!(applied.status.success(), "{}", common::stdout(&applied));
    assert!(
        server.messages(0, Duration::ZERO).is_empty(),
        "on-failure: a successful run sends nothing"
    );
    let out = run(&["report", "--compliance", "--send"]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let m = &server.messages(1, Duration::from_secs(10))[0];
    // The subject names the installation (the host, no `settings.name`
    // here) and the standing.
    assert_eq!(
        m["subject"],
        format!(
            "[coffer {}] 2 of 2 VMs out of policy",
            coffer::policy::model::host_name()
        )
    );
    let text = m["text"].as_str().unwrap();
    for vm in ["lab-vm-01", "lab-vm-02"] {
        assert!(text.contains(&format!("{vm} (all): BREACH")), "{text}");
    }
    assert!(text.contains("passed, restore time"), "{text}");
    assert!(
        text.contains("ops: lab policy: a restore drill weekly"),
        "{text}"
    );
    assert!(
        m["html"].as_str().unwrap().contains("background:#c22"),
        "the chart"
    );
    let stored = std::fs::read_dir(dir.join(".coffer/reports"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("compliance-"))
        .count();
    assert_eq!(
        stored, 3,
        "text, HTML and the figures the next report's charts use stay on disk"
    );
    // The newest run report, on demand.
    let last = run(&["report"]);
    assert!(
        common::stdout(&last).contains("success"),
        "{}",
        common::stdout(&last)
    );
}
