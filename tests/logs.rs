//! Logs: nothing by default, `-v`/`-vv` or `COFFER_LOG` for more, JSON
//! lines with `--log-format json` whose events carry their action's span
//! (run id, action, VM, tier, policy).

mod common;

use std::path::Path;
use std::process::Output;

use common::{command_in, one_vm_lab, stderr, stdout, text};

fn coffer(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = command_in(dir);
    c.args(args).args(["-p", "."]).env_remove("COFFER_LOG");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn write(dir: &Path, lab: &Path) {
    let o = command_in(dir)
        .args(["lab", "write", "lab-vm-01", "--percent", "2", "--state"])
        .arg(lab)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn json_logs_carry_the_action_span_and_the_default_logs_nothing() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let lab = one_vm_lab(dir);

    let o = coffer(
        dir,
        &["-vv", "--log-format", "json", "apply", "--no-mail"],
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    let run_id = stdout(&o)
        .lines()
        .find_map(|l| l.strip_prefix("run ").map(str::to_string))
        .expect("apply names its run");
    let events: Vec<serde_json::Value> = stderr(&o)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let message = |e: &serde_json::Value| e["fields"]["message"].as_str().unwrap_or("").to_string();
    let started = events
        .iter()
        .find(|e| message(e) == "action started")
        .unwrap_or_else(|| panic!("no `action started` event in {events:?}"));
    let span = &started["span"];
    assert_eq!(span["name"], "action");
    assert_eq!(span["action"], "backup");
    assert_eq!(span["vm"], "lab-vm-01");
    assert_eq!(span["tier"], "local");
    assert_eq!(span["policy"], "all");
    assert_eq!(span["run_id"], run_id.as_str());
    assert_eq!(started["level"], "INFO");
    // The snapshot taken for the backup, and the point written, are logged
    // inside the backup's span.
    let in_backup = |e: &&serde_json::Value| e["span"]["action"] == "backup";
    assert!(
        events
            .iter()
            .filter(in_backup)
            .any(|e| e["fields"]["method"] == "CreateSnapshot_Task"),
        "a SOAP call in the backup's span: {events:?}"
    );
    assert!(
        events
            .iter()
            .filter(in_backup)
            .any(|e| message(e) == "committing a point"),
        "the point's commit in the backup's span"
    );
    let finished = events
        .iter()
        .find(|e| message(e) == "action finished")
        .expect("an `action finished` event");
    assert!(
        finished["fields"]["detail"]
            .as_str()
            .unwrap()
            .contains("full point"),
        "{finished}"
    );
    assert!(events.iter().any(|e| message(e) == "run finished"));

    // Without -v: no log line at all, only what the command prints.
    write(dir, &lab);
    let o = coffer(dir, &["backup", "lab-vm-01"], &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        !stderr(&o).contains("INFO") && !stderr(&o).contains("DEBUG"),
        "{}",
        stderr(&o)
    );

    // COFFER_LOG filters by module: the vSphere client's calls only.
    write(dir, &lab);
    let o = coffer(
        dir,
        &["backup", "lab-vm-01"],
        &[("COFFER_LOG", "coffer::vsphere=debug")],
    );
    assert!(o.status.success(), "{}", text(&o));
    let err = stderr(&o);
    assert!(err.contains("SOAP call"), "{err}");
    assert!(err.contains("method=\"RemoveSnapshot_Task\""), "{err}");
    assert!(!err.contains("committing a point"), "{err}");

    let o = coffer(dir, &["validate"], &[("COFFER_LOG", "coffer=loud")]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("COFFER_LOG=coffer=loud"),
        "{}",
        text(&o)
    );
}
