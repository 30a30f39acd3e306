//! `coffer schedule explain` against a real policy directory: DST-correct
//! fire times, each transition marked.

mod common;

use common::{coffer, stderr, stdout};

fn berlin_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.toml"),
        r#"
[tiers.t]
backend = "local"
path = "repo"

[policies.nightly]
vms = ["*"]
schedule = "0 30 2 * * *"
timezone = "Europe/Berlin"
backup_to = "t"
[policies.nightly.retain.t]
daily = 7
"#,
    )
    .unwrap();
    dir
}

fn lines_on(out: &str, day: &str) -> Vec<String> {
    out.lines()
        .filter(|l| l.contains(day))
        .map(str::to_string)
        .collect()
}

#[test]
fn daily_0230_in_berlin_fires_exactly_once_on_both_transition_days_of_2026() {
    let dir = berlin_dir();
    let out = coffer(&[
        "schedule",
        "explain",
        "nightly",
        "-n",
        "365",
        "--from",
        "2026-01-01T00:00:00Z",
        "-p",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let spring = lines_on(&text, "2026-03-29");
    assert_eq!(spring.len(), 1, "{spring:?}");
    assert!(
        spring[0].contains("03:00:00 CEST (+02:00)"),
        "runs right after the gap: {}",
        spring[0]
    );
    assert!(
        spring[0].contains("DST change +01:00 -> +02:00"),
        "{}",
        spring[0]
    );
    let autumn = lines_on(&text, "2026-10-25");
    assert_eq!(autumn.len(), 1, "{autumn:?}");
    assert!(
        autumn[0].contains("02:30:00 CEST (+02:00)"),
        "first occurrence: {}",
        autumn[0]
    );
    // The day after, the offset is marked as changed.
    let after = lines_on(&text, "2026-10-26");
    assert!(
        after[0].contains("DST change +02:00 -> +01:00"),
        "{}",
        after[0]
    );
    assert_eq!(text.matches("DST change").count(), 2);
}

#[test]
fn explain_names_the_policies_that_exist_when_given_a_wrong_one() {
    let dir = berlin_dir();
    let out = coffer(&[
        "schedule",
        "explain",
        "nightyl",
        "-p",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("`nightly`"), "{}", stderr(&out));
}

#[test]
fn explain_on_an_invalid_directory_exits_10_with_the_diagnostics() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.toml"), "[policies.x]\nschedule = 3\n").unwrap();
    let out = coffer(&[
        "schedule",
        "explain",
        "x",
        "-p",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(10));
    assert!(stderr(&out).contains("p.toml:2:"), "{}", stderr(&out));
}

/// Regression: the window check looked at 200 fire times only, so an
/// every-minute schedule checked in the afternoon never reached the night
/// window and was refused as `window-never-open`.
#[test]
fn an_every_minute_schedule_with_a_night_window_is_accepted_at_any_time_of_day() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.toml"),
        "[tiers.t]\nbackend = \"local\"\npath = \"r\"\n[policies.p]\nvms = [\"*\"]\nschedule = \"* * * * *\"\nwindow = \"22:00-06:00\"\nbackup_to = \"t\"\n[policies.p.retain.t]\nlast = 3\n",
    )
    .unwrap();
    let loaded = coffer::policy::load(dir.path());
    assert!(!loaded.has_errors(), "{}", loaded.render());
}
