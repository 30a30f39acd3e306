//! The ways coffer is installed as a service: the systemd unit passes
//! `systemd-analyze verify` and runs a command line coffer accepts; the
//! container image's command is one coffer accepts, as a user that is not
//! root, with its state in a volume. (The image itself is built by
//! `docker build`, which needs a Docker engine the test machines lack.)

mod common;

use std::process::Command;

use common::{root, text};

/// `coffer ARGS --help`: exit 0 only when every argument before it is one
/// the command knows.
fn accepted(args: &[String]) {
    let mut all = args.to_vec();
    all.push("--help".into());
    let o = Command::new(env!("CARGO_BIN_EXE_coffer"))
        .args(&all)
        .output()
        .unwrap();
    assert!(o.status.success(), "coffer {args:?}: {}", text(&o));
}

#[test]
fn the_systemd_unit_verifies_and_runs_a_command_coffer_accepts() {
    let unit = std::fs::read_to_string(root().join("examples/systemd/coffer.service")).unwrap();
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("the unit has an ExecStart");
    let mut words = exec.split_whitespace();
    assert_eq!(words.next(), Some("/usr/local/bin/coffer"));
    let args: Vec<String> = words.map(str::to_string).collect();
    assert_eq!(args[0], "daemon");
    accepted(&args);

    // systemd's own check, with the binary where this build put it.
    let t = tempfile::tempdir().unwrap();
    let here = t.path().join("coffer.service");
    std::fs::write(
        &here,
        unit.replace("/usr/local/bin/coffer", env!("CARGO_BIN_EXE_coffer")),
    )
    .unwrap();
    let o = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&here)
        .output()
        .expect("systemd-analyze runs (scripts/test-deps.sh installs systemd)");
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        !text(&o).contains("coffer.service"),
        "systemd-analyze has remarks on the unit: {}",
        text(&o)
    );
}

#[test]
fn the_container_image_runs_the_daemon_as_a_user_with_its_state_in_a_volume() {
    let file = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let lines: Vec<&str> = file
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    let from: Vec<&&str> = lines.iter().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(from.len(), 2, "a build stage and a runtime stage: {from:?}");
    let json_words = |prefix: &str| -> Vec<String> {
        let l = lines
            .iter()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("the Dockerfile has {prefix}"));
        serde_json::from_str(l.trim()).unwrap_or_else(|e| panic!("{prefix} in exec form: {e}"))
    };
    let entry = json_words("ENTRYPOINT ");
    let cmd = json_words("CMD ");
    assert_eq!(entry, ["/usr/local/bin/coffer"]);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("COPY --from=build") && l.ends_with(" /usr/local/bin/coffer")),
        "the runtime stage gets the binary the entry point names"
    );
    accepted(&cmd);
    let user = lines
        .iter()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER line");
    assert!(user != "root" && user != "0", "runs as {user}");
    assert!(
        lines.contains(&"VOLUME [\"/var/lib/coffer\"]"),
        "the state directory is a volume"
    );
    assert!(lines.contains(&"STOPSIGNAL SIGINT"), "stops as Ctrl-C does");
    let ignore = std::fs::read_to_string(root().join(".dockerignore")).unwrap();
    assert!(
        ignore.lines().any(|l| l == "target"),
        "the build context leaves target/ out"
    );
}
