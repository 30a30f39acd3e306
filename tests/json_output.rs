//! Every `--json` output and every `apply --json` event validates against
//! its checked-in JSON Schema (`docs/json/`), carries the same `format`
//! version and an RFC 3339 time, and the checked-in schemas are what the
//! code generates.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::{command_in, in_policy_dir, one_vm_lab, root, stdout, text};

fn schema_file(name: &str) -> std::path::PathBuf {
    root().join("docs/json").join(format!("{name}.schema.json"))
}

#[test]
fn checked_in_output_schemas_are_what_the_code_generates() {
    let mut on_disk: Vec<String> = std::fs::read_dir(root().join("docs/json"))
        .expect("docs/json exists")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".schema.json"))
        .collect();
    on_disk.sort();
    let mut generated: Vec<String> = coffer::json::schemas()
        .iter()
        .map(|(n, _)| format!("{n}.schema.json"))
        .collect();
    generated.sort();
    assert_eq!(on_disk, generated, "one checked-in schema per JSON output");
    for (name, _) in coffer::json::schemas() {
        let text = std::fs::read_to_string(schema_file(name)).unwrap();
        assert!(
            text == coffer::json::schema_text(name).unwrap(),
            "docs/json/{name}.schema.json is stale: run `cargo run -- schema --output {name} > docs/json/{name}.schema.json`"
        );
    }
    let docs = std::fs::read_to_string(root().join("docs/json.md")).unwrap();
    for (name, _) in coffer::json::schemas() {
        assert!(
            docs.contains(&format!("json/{name}.schema.json")),
            "docs/json.md links the schema of `{name}`"
        );
    }
}

/// Validates `output` against the schema `name` with Python's jsonschema
/// (draft-07, formats checked); `lines`: one document per line.
fn validate(name: &str, output: &str, lines: bool) {
    let mut cmd = Command::new("python3");
    cmd.arg(root().join("tests/json/validate.py"))
        .arg(schema_file(name));
    if lines {
        cmd.arg("--lines");
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs (scripts/test-deps.sh installs jsonschema)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(output.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the output of `{name}` does not validate against docs/json/{name}.schema.json:\n{}\n--- output:\n{output}",
        text(&out)
    );
}

/// A document: valid against its schema, with the common keys right.
fn document(name: &str, o: &Output) -> serde_json::Value {
    let out = stdout(o);
    validate(name, &out, false);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["format"], coffer::json::FORMAT, "{name}: {out}");
    assert_eq!(v["command"], name, "{name}");
    chrono::DateTime::parse_from_rfc3339(v["generated"].as_str().unwrap())
        .unwrap_or_else(|e| panic!("{name}: `generated` is not RFC 3339: {e}"));
    v
}

fn ok(o: Output, what: &str) -> Output {
    assert!(o.status.success(), "{what}: {}", text(&o));
    o
}

fn in_dir(dir: &Path, args: &[&str]) -> Output {
    ok(in_policy_dir(dir, args), &args.join(" "))
}

#[test]
fn every_json_output_and_event_validates_against_its_schema() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let lab = one_vm_lab(dir);

    let v = document("validate", &in_dir(dir, &["validate", "--json"]));
    assert_eq!(v["valid"], true);
    let v = document("inventory", &in_dir(dir, &["inventory", "--json"]));
    assert_eq!(v["vms"][0]["name"], "lab-vm-01");
    let v = document("plan", &in_dir(dir, &["plan", "--json"]));
    assert_eq!(v["actions"][0]["action"], "backup", "{v}");

    // apply --json: every line an event of the schema, each with a time.
    let o = in_dir(dir, &["apply", "--json", "--no-mail"]);
    let events = stdout(&o);
    validate("apply-events", &events, true);
    let kinds: Vec<String> = events
        .lines()
        .map(|l| {
            let e: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(e["format"], coffer::json::FORMAT, "{l}");
            chrono::DateTime::parse_from_rfc3339(e["time"].as_str().unwrap()).unwrap();
            e["event"].as_str().unwrap().to_string()
        })
        .collect();
    for k in [
        "run-started",
        "plan",
        "action-started",
        "action-finished",
        "run-finished",
    ] {
        assert!(kinds.iter().any(|e| e == k), "no {k} event in {kinds:?}");
    }
    let started: serde_json::Value = serde_json::from_str(
        events
            .lines()
            .find(|l| l.contains("\"action-started\""))
            .unwrap(),
    )
    .unwrap();
    assert!(started["action"].as_str().unwrap().starts_with("+ backup"));
    assert_eq!(started["plan_action"]["action"], "backup");

    // compliance exits 3 on a breach; its JSON is the same either way.
    let o = in_policy_dir(dir, &["compliance", "--json"]);
    assert!(matches!(o.status.code(), Some(0 | 3)), "{}", text(&o));
    let v = document("compliance", &o);
    assert_eq!(v["vms"][0]["vm"], "lab-vm-01");

    let v = document("backup", &in_dir(dir, &["backup", "lab-vm-01", "--json"]));
    assert_eq!(v["kind"], "incremental", "{v}");
    assert!(v["disks"].as_array().unwrap().len() == 2);

    let v = document(
        "repo-ls",
        &in_dir(dir, &["repo", "ls", "--tier", "local", "--json"]),
    );
    assert_eq!(v["points"].as_array().unwrap().len(), 2, "{v}");
    let v = document(
        "repo-verify",
        &in_dir(dir, &["repo", "verify", "--tier", "local", "--json"]),
    );
    assert_eq!(v["ok"], true);
    assert_eq!(v["points"], 2);

    let v = document(
        "catalog-sync",
        &in_dir(dir, &["catalog", "refresh", "--json"]),
    );
    assert_eq!(v["tiers"][0]["tier"], "local");
    document(
        "catalog-sync",
        &in_dir(dir, &["catalog", "rebuild", "--tier", "local", "--json"]),
    );
    let v = document("catalog-show", &in_dir(dir, &["catalog", "show", "--json"]));
    assert_eq!(v["vms"][0]["points"].as_array().unwrap().len(), 2);

    std::fs::write(
        dir.join("times.txt"),
        "2026-11-01T01:00:00Z\n2026-11-02T01:00:00Z\n2026-11-03T01:00:00Z\n",
    )
    .unwrap();
    let v = document(
        "retention",
        &ok(
            command_in(dir)
                .args([
                    "retention",
                    "simulate",
                    "times.txt",
                    "--last",
                    "2",
                    "--json",
                ])
                .output()
                .unwrap(),
            "retention simulate",
        ),
    );
    assert_eq!(v["points"].as_array().unwrap().len(), 3);

    std::fs::write(dir.join("disk.img"), vec![7u8; 1 << 20]).unwrap();
    ok(
        command_in(dir)
            .args(["repo", "init", "--repo", "images"])
            .output()
            .unwrap(),
        "repo init",
    );
    let v = document(
        "backup-image",
        &ok(
            command_in(dir)
                .args(["backup-image", "disk.img", "--repo", "images", "--json"])
                .output()
                .unwrap(),
            "backup-image",
        ),
    );
    assert_eq!(v["disk_bytes"], 1 << 20);

    let v = document(
        "lab-write",
        &ok(
            command_in(dir)
                .args([
                    "lab",
                    "write",
                    "lab-vm-01",
                    "--percent",
                    "1",
                    "--json",
                    "--state",
                ])
                .arg(&lab)
                .output()
                .unwrap(),
            "lab write",
        ),
    );
    assert!(v["disks"][0]["blocks"].as_u64().unwrap() > 0);
}
