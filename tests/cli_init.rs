//! First contact: `coffer init` writes a policy directory that validates
//! and runs as it is. Against the lab, a newcomer's flow from the README
//! (init, repo init, apply) backs the lab's VMs up; against a host, init
//! pins the certificate the host presents, lists its VMs, and the policy
//! it writes backs that host up.

mod common;

use std::path::Path;
use std::process::Output;

use common::text;

fn coffer(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = common::command_in(dir);
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

#[test]
fn init_then_apply_backs_up_the_lab_with_the_defaults() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let out = coffer(dir, &["init"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("next: coffer validate -p policies"),
        "{}",
        text(&out)
    );
    let policies = dir.join("policies");
    let toml = std::fs::read_to_string(policies.join("coffer.toml")).unwrap();
    assert!(
        toml.starts_with("#:schema ./coffer.schema.json\n"),
        "{toml}"
    );
    assert_eq!(
        std::fs::read(policies.join("coffer.schema.json")).unwrap(),
        coffer(dir, &["schema"], &[]).stdout,
        "the schema the policy file names is coffer's"
    );
    let ignore = std::fs::read_to_string(policies.join(".gitignore")).unwrap();
    assert!(ignore.contains(".coffer/") && ignore.contains("repo/"));

    // The README's flow, every command with its default policy directory.
    let validate = coffer(dir, &["validate"], &[]);
    assert!(validate.status.success(), "{}", text(&validate));
    assert!(
        coffer(dir, &["repo", "init", "--all"], &[])
            .status
            .success()
    );
    let apply = coffer(dir, &["apply", "--no-mail"], &[]);
    let s = text(&apply);
    assert_eq!(apply.status.code(), Some(0), "{s}");
    for vm in ["lab-vm-01", "lab-vm-02"] {
        assert!(s.contains(&format!("done + backup {vm}")), "{s}");
    }

    // A second init leaves the directory alone.
    let again = coffer(dir, &["init"], &[]);
    assert!(!again.status.success());
    assert!(
        text(&again).contains("already holds policies"),
        "{}",
        text(&again)
    );
    assert_eq!(
        std::fs::read_to_string(policies.join("coffer.toml")).unwrap(),
        toml
    );
}

#[test]
fn init_from_a_host_pins_its_certificate_lists_its_vms_and_backs_it_up() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let mut cfg = coffer::lab::LabConfig::new(dir.join("host"));
    cfg.vms = 2;
    let lab = coffer::lab::Lab::start(cfg).unwrap();
    let env = [("COFFER_TEST_HOST_PASSWORD", lab.password())];
    let args = [
        "init",
        "site",
        "--from-source",
        lab.url(),
        "--user",
        lab.user(),
        "--password-env",
        "COFFER_TEST_HOST_PASSWORD",
    ];

    let wrong = coffer(
        dir,
        &args,
        &[("COFFER_TEST_HOST_PASSWORD", "not-the-password")],
    );
    assert!(!wrong.status.success());
    assert!(text(&wrong).contains("logging in to"), "{}", text(&wrong));
    assert!(!dir.join("site/coffer.toml").exists(), "nothing written");

    let out = coffer(dir, &args, &env);
    let s = text(&out);
    assert!(out.status.success(), "{s}");
    assert!(
        s.contains(&format!("presents the certificate {}", lab.thumbprint())),
        "{s}"
    );
    let toml = std::fs::read_to_string(dir.join("site/coffer.toml")).unwrap();
    assert!(
        toml.contains(&format!("thumbprint = \"{}\"", lab.thumbprint())),
        "{toml}"
    );
    assert!(toml.contains("kind = \"esxi\""), "{toml}");
    assert!(
        toml.contains("password = { env = \"COFFER_TEST_HOST_PASSWORD\" }"),
        "{toml}"
    );
    assert!(toml.contains("#   lab-vm-01\n#   lab-vm-02\n"), "{toml}");

    assert!(
        coffer(dir, &["validate", "-p", "site"], &[])
            .status
            .success()
    );
    assert!(
        coffer(dir, &["repo", "init", "--all", "-p", "site"], &[])
            .status
            .success()
    );
    let apply = coffer(dir, &["apply", "--no-mail", "-p", "site"], &env);
    let s = text(&apply);
    assert_eq!(apply.status.code(), Some(0), "{s}");
    for vm in ["lab-vm-01", "lab-vm-02"] {
        assert!(s.contains(&format!("done + backup {vm}")), "{s}");
    }
    drop(lab);
}

#[test]
fn the_version_names_the_commit_it_was_built_from() {
    let out = coffer(&common::root(), &["--version"], &[]);
    let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(common::root())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    match head {
        Some(head) => assert_eq!(
            s,
            format!("coffer {} (commit {head})", env!("CARGO_PKG_VERSION"))
        ),
        // Outside a git checkout the build says so.
        None => assert!(s.ends_with("(commit unknown)"), "{s}"),
    }
}

/// Completions and manual pages come from the same definitions as the
/// parser: every command is in them, and bash accepts the script.
#[test]
fn completions_and_man_pages_cover_every_command() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let bash = coffer(dir, &["completions", "bash"], &[]);
    assert!(bash.status.success());
    let script = String::from_utf8(bash.stdout).unwrap();
    for command in ["init", "plan", "apply", "restore", "verify", "completions"] {
        assert!(
            script.contains(command),
            "{command} in the bash completions"
        );
    }
    std::fs::write(dir.join("coffer.bash"), &script).unwrap();
    let syntax = std::process::Command::new("bash")
        .arg("-n")
        .arg(dir.join("coffer.bash"))
        .output()
        .unwrap();
    assert!(
        syntax.status.success(),
        "{}",
        String::from_utf8_lossy(&syntax.stderr)
    );
    for (shell, marker) in [("zsh", "#compdef coffer"), ("fish", "complete -c coffer")] {
        let out = coffer(dir, &["completions", shell], &[]);
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(marker),
            "{shell}"
        );
    }

    let page = coffer(dir, &["man"], &[]);
    let page = String::from_utf8(page.stdout).unwrap();
    assert!(page.contains(".TH coffer"), "{page}");
    assert!(page.contains("coffer\\-restore"), "{page}");
    let out = coffer(dir, &["man", "--out", "man"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    for name in [
        "coffer.1",
        "coffer-apply.1",
        "coffer-repo-verify.1",
        "coffer-init.1",
    ] {
        let page = std::fs::read_to_string(dir.join("man").join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(page.starts_with(".ie") || page.contains(".TH"), "{name}");
    }
}

/// A typo on the command line names what was likely meant.
#[test]
fn unknown_names_on_the_command_line_suggest_the_likely_one() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    assert!(coffer(dir, &["init"], &[]).status.success());
    assert!(
        coffer(dir, &["repo", "init", "--all"], &[])
            .status
            .success()
    );
    for (args, said) in [
        (
            &["backup", "lab-vm-1"][..],
            "no VM named `lab-vm-1`; did you mean `lab-vm-01`?",
        ),
        (
            &["inventory", "--source", "labb"],
            "no source named `labb`; did you mean `lab`?",
        ),
        (
            &["repo", "ls", "--tier", "locl"],
            "no tier named `locl`; did you mean `local`?",
        ),
        (
            &["schedule", "explain", "nightli"],
            "no policy named `nightli`; did you mean `nightly`?",
        ),
    ] {
        let out = coffer(dir, args, &[]);
        assert!(!out.status.success(), "{args:?}");
        assert!(text(&out).contains(said), "{args:?}: {}", text(&out));
    }
    assert!(coffer(dir, &["backup", "lab-vm-01"], &[]).status.success());
    let out = coffer(dir, &["restore", "lab-vm-1", "-o", "r"], &[]);
    assert!(
        text(&out).contains("no point of VM `lab-vm-1` on any tier; did you mean `lab-vm-01`?"),
        "{}",
        text(&out)
    );
}

#[test]
fn the_policy_directory_is_taken_before_or_after_the_command() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    assert!(coffer(dir, &["init", "mine"], &[]).status.success());
    // The default `policies` does not exist here: each form must find
    // `mine`, and the one after the command wins over the environment.
    for args in [
        &["-p", "mine", "validate"][..],
        &["--policies", "mine", "validate"],
        &["validate", "-p", "mine"],
        &["--policies=mine", "validate"],
    ] {
        let out = coffer(dir, args, &[]);
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        assert!(
            text(&out).contains("mine: valid"),
            "{args:?}: {}",
            text(&out)
        );
    }
    let out = coffer(
        dir,
        &["-p", "mine", "validate"],
        &[("COFFER_POLICIES", "elsewhere")],
    );
    assert!(text(&out).contains("mine: valid"), "{}", text(&out));
    let out = coffer(dir, &["validate"], &[]);
    assert!(
        !out.status.success(),
        "without -p the default `policies` is used"
    );
}

#[test]
fn every_argument_of_every_command_has_help_text() {
    use clap::CommandFactory;
    fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
        for a in cmd.get_arguments() {
            let id = a.get_id().as_str();
            if a.is_hide_set() || id == "help" || id == "version" {
                continue;
            }
            if a.get_help().is_none() && a.get_long_help().is_none() {
                let name = a.get_long().map_or(id.to_string(), |l| format!("--{l}"));
                missing.push(format!("{path} {name}"));
            }
        }
        for s in cmd.get_subcommands() {
            walk(s, &format!("{path} {}", s.get_name()), missing);
        }
    }
    let mut missing = Vec::new();
    walk(&coffer::cli::Cli::command(), "coffer", &mut missing);
    assert!(
        missing.is_empty(),
        "arguments without help text: {missing:#?}"
    );
}

/// The options `apply`, `daemon` and `worker` take are the engine's own
/// types: with nothing given they are the engine's defaults, and what is
/// given reaches the engine as the help says.
#[test]
fn the_run_options_on_the_command_line_are_the_engines() {
    use clap::Parser;
    use coffer::engine::ApplyOptions;
    use coffer::engine::worker::WorkerOptions;
    use std::time::Duration;
    #[derive(clap::Parser)]
    struct Apply {
        #[command(flatten)]
        o: ApplyOptions,
    }
    #[derive(clap::Parser)]
    struct Worker {
        #[command(flatten)]
        o: WorkerOptions,
    }
    let given = Apply::parse_from(["apply"]).o;
    assert_eq!(
        format!("{given:?}"),
        format!("{:?}", ApplyOptions::default())
    );
    let given = Apply::parse_from(["apply", "--no-mail", "--action-timeout", "1h30m"]).o;
    assert!(!given.mail);
    assert_eq!(given.action_timeout, Duration::from_secs(5400));
    assert_eq!(
        Apply::parse_from(["apply", "--action-timeout", "0s"])
            .o
            .action_timeout,
        Duration::from_secs(1),
        "at least one second"
    );
    assert!(Apply::try_parse_from(["apply", "--action-timeout", "soon"]).is_err());

    let given = Worker::parse_from(["worker"]).o;
    let default = WorkerOptions::named_after_this_process();
    assert_eq!(format!("{given:?}"), format!("{default:?}"));
    let given = Worker::parse_from(["worker", "--poll", "0s", "--idle-exit", "30s"]).o;
    assert_eq!(
        given.poll,
        Duration::from_millis(100),
        "polls at most ten a second"
    );
    assert_eq!(given.idle_exit, Some(Duration::from_secs(30)));
}

/// A time or a duration that does not parse is refused before anything
/// runs, naming the option and the form it takes.
#[test]
fn a_malformed_time_or_duration_names_its_option_and_form() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    for (args, option, form) in [
        (&["plan", "--at", "yesterday"][..], "--at", "RFC 3339"),
        (
            &["restore", "vm", "--out", "x", "--at", "noon"],
            "--at",
            "RFC 3339",
        ),
        (
            &["repo", "gc", "--repo", "r", "--grace", "an hour"],
            "--grace",
            "duration",
        ),
    ] {
        let out = coffer(dir, args, &[]);
        let said = text(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {said}");
        assert!(
            said.contains(option) && said.contains(form),
            "{args:?}: {said}"
        );
    }
}
