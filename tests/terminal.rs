//! On a terminal: a progress bar per running backup with bytes, rate and
//! ETA, result lines printed above the bars (never glued to them), and
//! colour for the actions' symbols, off with NO_COLOR; none of it when
//! the output is not a terminal.

mod common;

use std::path::Path;
use std::process::Command;

use common::{command_in, one_vm_lab, stdout, text};

/// `coffer ARGS -p .` in a pseudo-terminal: what the terminal shows.
fn on_terminal(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let mut c = Command::new("python3");
    c.current_dir(dir)
        .arg(common::root().join("tests/pty/run.py"))
        .arg(env!("CARGO_BIN_EXE_coffer"))
        .args(args)
        .args(["-p", "."])
        .env_remove("NO_COLOR");
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    stdout(&o)
}

#[test]
fn a_terminal_shows_bars_above_which_results_print_and_colour_unless_no_color() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    one_vm_lab(dir);
    // Reads at 4 MiB/s: the first full of ~30 MiB runs for seconds.
    let shown = on_terminal(
        dir,
        &["apply", "--no-mail"],
        &[("COFFER_LAB_FAULTS", "folder-mibps=4")],
    );
    assert!(shown.contains("lab-vm-01"), "{shown}");
    assert!(shown.contains("ETA"), "a bar with its ETA: {shown:?}");
    assert!(shown.contains("MiB/s"), "the rate: {shown:?}");
    assert!(
        shown.contains("\u{1b}[32m+\u{1b}[0m backup lab-vm-01"),
        "the plan's `+` is green: {shown:?}"
    );
    // Every result line starts a line of its own: a bar is cleared first.
    for line in shown.split(['\n', '\r']) {
        if line.contains("done") {
            assert!(!line.contains("ETA"), "a result glued to a bar: {line:?}");
        }
    }
    assert!(shown.contains("done"), "{shown}");

    // NO_COLOR: no colour, still bars.
    let t2 = tempfile::tempdir().unwrap();
    one_vm_lab(t2.path());
    let plain = on_terminal(t2.path(), &["plan"], &[("NO_COLOR", "1")]);
    assert!(plain.contains("+ backup lab-vm-01"), "{plain}");
    assert!(
        !plain.contains("\u{1b}[3"),
        "no colour with NO_COLOR: {plain:?}"
    );
    let forced = on_terminal(t2.path(), &["plan", "--color", "never"], &[]);
    assert!(!forced.contains("\u{1b}[3"), "{forced:?}");

    // Not a terminal: neither bars nor colour.
    let o = command_in(t2.path())
        .args(["apply", "--no-mail", "-p", "."])
        .env("COFFER_LAB_FAULTS", "folder-mibps=8")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        !text(&o).contains("ETA") && !text(&o).contains('\u{1b}'),
        "{}",
        text(&o)
    );
}

#[test]
fn backup_and_restore_show_a_bar_on_a_terminal_and_none_elsewhere() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    one_vm_lab(dir);
    // `coffer backup`: the read at 8 MiB/s takes seconds, drawn as a bar.
    let shown = on_terminal(
        dir,
        &["backup", "lab-vm-01"],
        &[("COFFER_LAB_FAULTS", "folder-mibps=8")],
    );
    assert!(shown.contains("ETA"), "a bar with its ETA: {shown:?}");
    assert!(shown.contains("MiB/s"), "{shown:?}");
    let result = shown
        .split(['\n', '\r'])
        .find(|l| l.contains("point") && l.contains("on tier `local`"))
        .unwrap_or_else(|| panic!("the result line: {shown:?}"));
    assert!(
        !result.contains("ETA"),
        "a result glued to a bar: {result:?}"
    );

    // `coffer restore --to-source`: the upload at 16 MiB/s is drawn, under
    // the restored VM's name.
    let shown = on_terminal(
        dir,
        &[
            "restore",
            "lab-vm-01",
            "--to-source",
            "lab",
            "--name",
            "back",
        ],
        &[("COFFER_LAB_FAULTS", "folder-mibps=16")],
    );
    assert!(shown.contains("registered VM `back`"), "{shown}");
    let bars: Vec<&str> = shown
        .split(['\n', '\r'])
        .filter(|l| l.contains("ETA"))
        .collect();
    assert!(
        bars.iter().any(|l| l.contains("back")),
        "a bar named after the restored VM: {shown:?}"
    );

    // Not a terminal: the same commands draw nothing.
    let o = command_in(dir)
        .args(["backup", "lab-vm-01", "-p", "."])
        .env("COFFER_LAB_FAULTS", "folder-mibps=16")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(!text(&o).contains("ETA"), "{}", text(&o));
    let o = command_in(dir)
        .args(["restore", "lab-vm-01", "--out", "files", "-p", "."])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(!text(&o).contains("ETA"), "{}", text(&o));
}
