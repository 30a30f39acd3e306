//! `plan`, `apply`, `compliance` and `retention simulate` from the command
//! line, on a policy directory whose source is the built-in lab.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Output, Stdio};

use common::snapshot_count;

fn write_policy(dir: &Path) {
    std::fs::write(
        dir.join("coffer.toml"),
        r#"
[settings]
timezone = "Europe/Berlin"

[sources.lab]
kind = "lab"
lab_vms = 2

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
"#,
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

#[test]
fn a_saved_plan_is_applied_as_saved_and_refused_once_stale() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    write_policy(dir);
    for tier in ["local", "offsite"] {
        assert!(run(dir, &["repo", "init", "--tier", tier]).status.success());
    }
    let plan = run(dir, &["plan", "--out", "plan.json", "--detailed-exitcode"]);
    assert_eq!(plan.status.code(), Some(2), "{}", text(&plan));
    assert!(text(&plan).contains("+ backup lab-vm-01 → local (full"));
    // Two lab VMs of 96 and 64 MiB of disks: what the fulls may read.
    assert!(
        text(&plan).contains("volume: full backups read at most 160.0 MiB"),
        "{}",
        text(&plan)
    );
    let applied = run(dir, &["apply", "plan.json", "--no-mail"]);
    assert_eq!(applied.status.code(), Some(0), "{}", text(&applied));
    let out = text(&applied);
    assert_eq!(out.matches("done + backup").count(), 2, "{out}");
    // Exactly the saved actions: the new points are not copied by this run.
    assert!(!out.contains("done > copy"), "{out}");

    // Now the copies are pending; a plan saved, then the catalog changes.
    let plan = run(dir, &["plan", "--out", "copies.json"]);
    assert!(text(&plan).contains("> copy lab-vm-01"), "{}", text(&plan));
    assert!(
        run(dir, &["backup", "lab-vm-02", "--full"])
            .status
            .success()
    );
    let stale = run(dir, &["apply", "copies.json", "--no-mail"]);
    assert_eq!(stale.status.code(), Some(1));
    let err = text(&stale);
    assert!(
        err.contains("stale") && err.contains("@local appeared"),
        "{err}"
    );

    // A policy edit makes a saved plan stale too.
    let plan = run(dir, &["plan", "--out", "copies.json"]);
    assert!(plan.status.success());
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join("coffer.toml"))
        .unwrap();
    writeln!(f, "# reviewed").unwrap();
    let stale = run(dir, &["apply", "copies.json", "--no-mail"]);
    assert!(
        text(&stale).contains("policy file coffer.toml changed"),
        "{}",
        text(&stale)
    );

    // Without a file, apply plans and copies in one run; compliance then
    // holds but for the immutable copy.
    let applied = run(dir, &["apply", "--no-mail"]);
    assert_eq!(applied.status.code(), Some(0), "{}", text(&applied));
    assert!(text(&applied).contains("done > copy"), "{}", text(&applied));
    let c = run(dir, &["compliance"]);
    assert_eq!(c.status.code(), Some(3), "{}", text(&c));
    let c = text(&c);
    assert!(
        c.contains("BREACH: 0 immutable copies of 1 required"),
        "{c}"
    );
    assert!(!c.contains("copies of 3 required"), "{c}");
    let plan = run(dir, &["plan", "--detailed-exitcode"]);
    assert_eq!(
        plan.status.code(),
        Some(0),
        "nothing left to do: {}",
        text(&plan)
    );
}

#[test]
fn retention_simulate_names_the_rule_that_keeps_each_time() {
    let t = tempfile::tempdir().unwrap();
    write_policy(t.path());
    let mut child = common::command_in(t.path())
        .args([
            "retention",
            "simulate",
            "--policy",
            "all",
            "--tier",
            "offsite",
            "-p",
            ".",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"2026-11-20T23:30:00Z\n2026-11-21T00:30:00Z\n2026-11-21T22:00:00Z\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    // In Berlin, 23:30 UTC on the 20th is already the 21st: one bucket.
    assert!(
        s.contains("keep    2026-11-21 23:00:00 CET  daily 2026-11-21"),
        "{s}"
    );
    assert!(s.contains("remove  2026-11-21 01:30:00 CET"), "{s}");
    assert!(
        s.contains("2 kept, 1 removed of 3") || s.contains("1 kept, 2 removed of 3"),
        "{s}"
    );
    let bad = common::command_in(t.path())
        .args(["retention", "simulate", "-p", "."])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
}

/// `apply` killed with SIGKILL in the middle of a backup, then run again:
/// the next run says what was interrupted, removes the snapshot the killed
/// run left, counts no half-written point, and backs each VM up once. While
/// a runner works, a second one is refused.
#[test]
fn an_apply_killed_mid_backup_is_recovered_by_the_next() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    write_policy(dir);
    for tier in ["local", "offsite"] {
        assert!(run(dir, &["repo", "init", "--tier", tier]).status.success());
    }
    // The first runner holds its snapshot (it is slowed by 503s).
    let mut child = slow_run_holding_a_snapshot(dir, &["apply", "--no-mail"]);
    let second = run(dir, &["apply", "--no-mail"]);
    assert_eq!(second.status.code(), Some(1));
    assert!(
        text(&second).contains("another coffer runner"),
        "{}",
        text(&second)
    );
    child.kill().unwrap();
    child.wait().unwrap();

    // Backups run side by side: each VM being read left its snapshot.
    let left = snapshot_count(dir);
    assert!(left >= 1, "the killed run left its snapshots");

    let again = run(dir, &["apply", "--no-mail"]);
    let out = text(&again);
    assert_eq!(again.status.code(), Some(0), "{out}");
    assert_eq!(
        out.matches("removed its snapshot coffer-").count(),
        left,
        "every snapshot of the killed run is removed: {out}"
    );
    let inv: serde_json::Value =
        serde_json::from_slice(&run(dir, &["inventory", "--json"]).stdout).unwrap();
    for vm in inv["vms"].as_array().unwrap() {
        assert!(vm["snapshots"].as_array().unwrap().is_empty(), "{vm}");
    }
    // Each VM backed up once: one point per VM on the backup tier.
    let ls =
        String::from_utf8_lossy(&run(dir, &["repo", "ls", "--tier", "local"]).stdout).to_string();
    assert_eq!(ls.lines().count(), 3, "{ls}");
    assert!(ls.contains("lab-vm-01") && ls.contains("lab-vm-02"), "{ls}");
    assert!(
        run(dir, &["repo", "verify", "--tier", "local"])
            .status
            .success()
    );
}

/// Starts `coffer ARGS` with its downloads slowed by 503s and returns once
/// it holds a snapshot on a lab VM.
fn slow_run_holding_a_snapshot(dir: &Path, args: &[&str]) -> std::process::Child {
    let child = common::command_in(dir)
        .args(args)
        .args(["-p", "."])
        .env("COFFER_LAB_FAULTS", "unavailable=5")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while snapshot_count(dir) == 0 {
        assert!(std::time::Instant::now() < deadline, "no snapshot appeared");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child
}

/// The daemon on a fake clock: at start it catches up what is due once
/// (three missed nights give one backup per VM, not three), then sleeps to
/// the next fire time and applies there.
#[test]
fn the_daemon_catches_up_once_then_runs_at_the_next_fire_time() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    write_policy(dir);
    for tier in ["local", "offsite"] {
        assert!(run(dir, &["repo", "init", "--tier", tier]).status.success());
    }
    // A first backup now (real time), then the daemon wakes three days later.
    assert!(run(dir, &["apply", "--no-mail"]).status.success());
    let later = (chrono::Utc::now() + chrono::Duration::days(3))
        .format("%Y-%m-%dT00:59:30Z")
        .to_string();
    let out = common::command_in(dir)
        .args(["daemon", "--max-runs", "2", "--no-mail", "-p", "."])
        .env("COFFER_FAKE_CLOCK", &later)
        .output()
        .unwrap();
    let s = text(&out);
    assert_eq!(out.status.code(), Some(0), "{s}");
    let runs: Vec<&str> = s.split("daemon: applying at ").skip(1).collect();
    assert_eq!(runs.len(), 2, "{s}");
    // Catch-up: one backup per VM for the missed nights.
    assert_eq!(runs[0].matches("done + backup").count(), 2, "{}", runs[0]);
    // Then at the next fire time, 01:00 Berlin, shown in Berlin time with
    // its offset (00:00 UTC of `later`'s day is already past: the next
    // night).
    let next = (chrono::DateTime::parse_from_rfc3339(&later).unwrap() + chrono::Duration::days(1))
        .with_timezone(&chrono_tz::Europe::Berlin)
        .format("%Y-%m-%d 01:00 %:z")
        .to_string();
    assert!(runs[1].starts_with(&next), "{next}: {}", runs[1]);
    assert!(s.contains("daemon: next run at"), "{s}");
}

/// Backups run side by side, never more VMs with a snapshot on a datastore
/// at once than the source's `max_per_datastore` (as the lab saw it).
#[test]
fn backups_run_side_by_side_within_the_datastore_limit() {
    for (limit, vms) in [(1u32, 3u32), (2, 4)] {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path();
        write_policy(dir);
        let toml = std::fs::read_to_string(dir.join("coffer.toml"))
            .unwrap()
            .replace(
                "lab_vms = 2",
                &format!("lab_vms = {vms}\nmax_per_datastore = {limit}\nmax_per_host = 4"),
            );
        std::fs::write(dir.join("coffer.toml"), toml).unwrap();
        for tier in ["local", "offsite"] {
            assert!(run(dir, &["repo", "init", "--tier", tier]).status.success());
        }
        let out = run(dir, &["apply", "--no-mail", "--parallel", "4"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        assert_eq!(text(&out).matches("done + backup").count(), vms as usize);
        let state: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join(".coffer/lab/lab/state.json")).unwrap())
                .unwrap();
        assert_eq!(
            state["most_snapshots_at_once"], limit,
            "limit {limit}: the lab saw {} snapshots at once",
            state["most_snapshots_at_once"]
        );
    }
}

/// A policy's `io_limit` holds for its backups: reading about 40 MiB from
/// the lab at 8 MiB/s takes at least four seconds (a lower bound, which a
/// busy machine cannot make fail).
#[test]
fn the_io_limit_throttles_reads_from_the_host() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    write_policy(dir);
    let toml = std::fs::read_to_string(dir.join("coffer.toml"))
        .unwrap()
        .replace("lab_vms = 2", "lab_vms = 1")
        .replace(
            "consistency = \"crash\"",
            "consistency = \"crash\"\nio_limit = \"8MiB/s\"",
        );
    std::fs::write(dir.join("coffer.toml"), toml).unwrap();
    assert!(
        run(dir, &["repo", "init", "--tier", "local"])
            .status
            .success()
    );
    let started = std::time::Instant::now();
    let out = run(dir, &["backup", "lab-vm-01", "--json"]);
    let took = started.elapsed();
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let read: u64 = v["disks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["bytes_fetched"].as_u64().unwrap())
        .sum();
    let floor = (read as f64 / (8 << 20) as f64 - 1.0).max(0.0);
    assert!(read > 30 << 20, "{read}");
    assert!(
        took.as_secs_f64() >= floor,
        "{read} bytes at 8 MiB/s took {took:?}, less than {floor:.1}s"
    );
}

/// `apply --json`: every line is one JSON event, from run-started through
/// the plan and each action's start and finish to run-finished.
#[test]
fn apply_json_emits_one_event_per_line() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    write_policy(dir);
    for tier in ["local", "offsite"] {
        assert!(run(dir, &["repo", "init", "--tier", tier]).status.success());
    }
    let out = run(dir, &["apply", "--json", "--no-mail"]);
    assert!(out.status.success(), "{}", text(&out));
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"run-started"));
    assert_eq!(kinds.last(), Some(&"run-finished"));
    assert!(kinds.contains(&"plan"));
    let started = kinds.iter().filter(|k| **k == "action-started").count();
    let finished = kinds.iter().filter(|k| **k == "action-finished").count();
    assert_eq!(started, finished, "{kinds:?}");
    assert_eq!(started, 4, "two backups and two copies: {kinds:?}");
    let backup = events
        .iter()
        .find(|e| e["event"] == "action-started")
        .unwrap();
    assert_eq!(backup["plan_action"]["action"], "backup");
}

/// A host that stays busy longer than the datastore reader's patience
/// (shortened here to one second): the backup fails once, is tried again
/// after a pause, and lands; no snapshot is left from the failed attempt.
#[test]
fn a_backup_that_fails_for_a_transient_reason_is_tried_again() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    write_policy(dir);
    let toml = std::fs::read_to_string(dir.join("coffer.toml"))
        .unwrap()
        .replace("lab_vms = 2", "lab_vms = 1");
    std::fs::write(dir.join("coffer.toml"), toml).unwrap();
    for tier in ["local", "offsite"] {
        assert!(run(dir, &["repo", "init", "--tier", tier]).status.success());
    }
    let out = common::command_in(dir)
        .args(["apply", "--no-mail", "-p", "."])
        .env("COFFER_LAB_FAULTS", "unavailable=7")
        .env("COFFER_BUSY_PATIENCE_MS", "1000")
        .env("COFFER_RETRY_PAUSE_MS", "100")
        .output()
        .unwrap();
    let s = text(&out);
    assert_eq!(out.status.code(), Some(0), "{s}");
    assert!(s.contains("trying again"), "{s}");
    assert!(s.contains("(attempt 2)"), "{s}");
    assert_eq!(snapshot_count(dir), 0);
}

/// While a backup reads, `apply --json` reports its progress each second:
/// bytes read so far and the rate, growing.
#[test]
fn apply_json_reports_progress_while_reading() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    write_policy(dir);
    let toml = std::fs::read_to_string(dir.join("coffer.toml"))
        .unwrap()
        .replace("lab_vms = 2", "lab_vms = 1")
        .replace(
            "consistency = \"crash\"",
            "consistency = \"crash\"\nio_limit = \"8MiB/s\"",
        );
    std::fs::write(dir.join("coffer.toml"), toml).unwrap();
    for tier in ["local", "offsite"] {
        assert!(run(dir, &["repo", "init", "--tier", tier]).status.success());
    }
    let out = run(dir, &["apply", "--json", "--no-mail"]);
    assert!(out.status.success(), "{}", text(&out));
    let progress: Vec<u64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["event"] == "action-progress" && e["vm"] == "lab-vm-01")
        .map(|e| e["bytes_read"].as_u64().unwrap())
        .collect();
    assert!(progress.len() >= 2, "{progress:?}");
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "{progress:?}");
    assert!(*progress.last().unwrap() > 0);
}

/// A backup that runs past `--action-timeout` is stopped: its snapshot is
/// removed, no point is recorded, and the run says so and exits 1.
#[test]
fn a_backup_past_its_time_is_stopped_and_cleaned_up() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    write_policy(dir);
    let toml = std::fs::read_to_string(dir.join("coffer.toml"))
        .unwrap()
        .replace("lab_vms = 2", "lab_vms = 1")
        .replace(
            "consistency = \"crash\"",
            "consistency = \"crash\"\nio_limit = \"1MiB/s\"",
        );
    std::fs::write(dir.join("coffer.toml"), toml).unwrap();
    for tier in ["local", "offsite"] {
        assert!(run(dir, &["repo", "init", "--tier", tier]).status.success());
    }
    let out = run(dir, &["apply", "--no-mail", "--action-timeout", "2s"]);
    let s = text(&out);
    assert_eq!(out.status.code(), Some(1), "{s}");
    assert!(s.contains("did not finish within 2s"), "{s}");
    assert_eq!(snapshot_count(dir), 0);
    let ls =
        String::from_utf8_lossy(&run(dir, &["repo", "ls", "--tier", "local"]).stdout).to_string();
    assert_eq!(ls.lines().count(), 1, "no point: {ls}");
}

/// A second Ctrl-C during a slow copy stops the run at once (no backup has
/// a snapshot open then), exit 130; the next run says what was cut short.
#[test]
fn a_second_ctrl_c_aborts_at_once_and_the_next_run_knows() {
    use std::io::BufRead;
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    write_policy(dir);
    let toml = std::fs::read_to_string(dir.join("coffer.toml"))
        .unwrap()
        .replace("lab_vms = 2", "lab_vms = 1")
        .replace(
            "media = \"tape\"",
            "media = \"tape\"\nbandwidth = \"1MiB/s\"",
        );
    std::fs::write(dir.join("coffer.toml"), toml).unwrap();
    for tier in ["local", "offsite"] {
        assert!(run(dir, &["repo", "init", "--tier", tier]).status.success());
    }
    let mut child = common::command_in(dir)
        .args(["apply", "--json", "--no-mail", "-p", "."])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if line.contains("\"action-started\"") && line.contains("> copy") {
            break;
        }
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    let started = std::time::Instant::now();
    for _ in 0..2 {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "the copy of 30 MiB at 1 MiB/s was not waited for"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("second Ctrl-C"));
    assert_eq!(snapshot_count(dir), 0);
    let again = run(dir, &["apply", "--no-mail"]);
    let s = text(&again);
    assert!(
        s.contains("recovered: run") && s.contains("stopped during copy"),
        "{s}"
    );
}

/// A tier's `max_parallel` caps the backups writing to it at once.
#[test]
fn a_tiers_max_parallel_caps_backups_into_it() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    write_policy(dir);
    let toml = std::fs::read_to_string(dir.join("coffer.toml"))
        .unwrap()
        .replace(
            "lab_vms = 2",
            "lab_vms = 3\nmax_per_datastore = 4\nmax_per_host = 4",
        )
        .replace("path = \"repo\"", "path = \"repo\"\nmax_parallel = 1");
    std::fs::write(dir.join("coffer.toml"), toml).unwrap();
    for tier in ["local", "offsite"] {
        assert!(run(dir, &["repo", "init", "--tier", tier]).status.success());
    }
    let out = run(dir, &["apply", "--no-mail", "--parallel", "4"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join(".coffer/lab/lab/state.json")).unwrap())
            .unwrap();
    assert_eq!(state["most_snapshots_at_once"], 1);
}

/// Every point on a tier, as (point, VM), from `repo ls`.
fn points_on(dir: &Path, tier: &str) -> Vec<(String, String)> {
    let out = run(dir, &["repo", "ls", "--tier", tier]);
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some((w.next()?.to_string(), w.next()?.to_string()))
        })
        .collect()
}

/// What `coffer plan --out` seals a plan with, computed again as whoever
/// edits the file could.
fn reseal(plan: &mut serde_json::Value) {
    use sha2::Digest;
    let bytes = serde_json::to_vec(&serde_json::json!({
        "now": plan["now"],
        "actions": plan["actions"],
        "policies": plan["fingerprint"]["policies"],
        "copies": plan["fingerprint"]["copies"],
    }))
    .unwrap();
    plan["fingerprint"]["plan_sha256"] = hex::encode(sha2::Sha256::digest(&bytes)).into();
}

#[test]
fn a_saved_plan_edited_to_prune_every_point_prunes_nothing() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    write_policy(dir);
    for tier in ["local", "offsite"] {
        assert!(run(dir, &["repo", "init", "--tier", tier]).status.success());
    }
    let applied = run(dir, &["apply", "--no-mail"]);
    assert_eq!(applied.status.code(), Some(0), "{}", text(&applied));
    let before: Vec<_> = ["local", "offsite"]
        .iter()
        .map(|t| points_on(dir, t))
        .collect();
    assert!(before.iter().all(|p| p.len() == 2), "{before:?}");

    // A plan reviewed as empty…
    let plan = run(dir, &["plan", "--out", "plan.json", "--detailed-exitcode"]);
    assert_eq!(plan.status.code(), Some(0), "{}", text(&plan));
    let file = dir.join("plan.json");
    let mut saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    // …edited to prune every point on every tier.
    let prunes: Vec<serde_json::Value> = ["local", "offsite"]
        .iter()
        .zip(&before)
        .flat_map(|(tier, points)| {
            points.iter().map(move |(point, vm)| {
                serde_json::json!({
                    "action": "prune", "vm": vm, "point": point, "tier": tier,
                    "reason": "no retention rule keeps it",
                })
            })
        })
        .collect();
    saved["actions"] = prunes.into();
    std::fs::write(&file, serde_json::to_vec_pretty(&saved).unwrap()).unwrap();
    let out = run(dir, &["apply", "plan.json", "--no-mail"]);
    let s = text(&out);
    assert_ne!(out.status.code(), Some(0), "{s}");
    assert!(
        s.contains("was changed after `coffer plan --out` saved it"),
        "{s}"
    );
    assert!(!s.contains("done - prune"), "{s}");
    let after: Vec<_> = ["local", "offsite"]
        .iter()
        .map(|t| points_on(dir, t))
        .collect();
    assert_eq!(after, before);

    // The same edit with the fingerprint computed again: the plan made
    // now holds none of those prunes, so none is carried out.
    reseal(&mut saved);
    std::fs::write(&file, serde_json::to_vec_pretty(&saved).unwrap()).unwrap();
    let out = run(dir, &["apply", "plan.json", "--no-mail"]);
    let s = text(&out);
    assert_ne!(out.status.code(), Some(0), "{s}");
    assert!(
        s.contains("holds actions the plan made now does not")
            && s.contains("nothing of it was carried out"),
        "{s}"
    );
    assert!(
        s.contains("- prune lab-vm-01"),
        "the refused actions are named: {s}"
    );
    assert!(!s.contains("done - prune"), "{s}");
    let after: Vec<_> = ["local", "offsite"]
        .iter()
        .map(|t| points_on(dir, t))
        .collect();
    assert_eq!(after, before);

    // The plan as saved, untouched, is still carried out.
    let plan = run(dir, &["plan", "--out", "plan.json"]);
    assert!(plan.status.success(), "{}", text(&plan));
    let out = run(dir, &["apply", "plan.json", "--no-mail"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

/// A `coffer backup` killed while it reads leaves its snapshot on the VM.
/// The next `apply` holds the runner lock, so no other run of this
/// installation is alive: it removes that snapshot whatever the VM's
/// schedule, instead of leaving it to grow for `snapshot_max_age`.
#[test]
fn a_snapshot_left_by_a_killed_backup_is_removed_by_the_next_apply() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    write_policy(dir);
    assert!(run(dir, &["repo", "init", "--all"]).status.success());
    // The first apply backs every VM up: none is due afterwards.
    let first = run(dir, &["apply", "--no-mail"]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    let mut child = slow_run_holding_a_snapshot(dir, &["backup", "lab-vm-01"]);
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        snapshot_count(dir),
        1,
        "the killed backup left its snapshot"
    );

    let plan = text(&run(dir, &["plan"]));
    assert!(
        plan.contains("- remove-snapshot") && plan.contains("no longer running"),
        "{plan}"
    );
    let again = run(dir, &["apply", "--no-mail"]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    assert_eq!(snapshot_count(dir), 0, "{}", text(&again));
}
