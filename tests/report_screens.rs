//! The reports as people see them: the run report and the compliance
//! report rendered by a real browser (Debian's Chromium, headless) at
//! desktop and phone width. The test fails when a page is wider than the
//! phone's screen, and leaves the screenshots in
//! `target/report-screens/` to look at.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{in_policy_dir, text};

fn chromium() -> &'static str {
    for c in ["/usr/bin/chromium", "/usr/bin/chromium-browser"] {
        if Path::new(c).exists() {
            return c;
        }
    }
    panic!("Chromium is missing: scripts/test-deps.sh installs Debian's chromium");
}

/// Chromium headless with the flags a closed, root-run machine needs.
fn browser(profile: &Path, width: u32, height: u32) -> Command {
    let mut c = Command::new(chromium());
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        &format!("--window-size={width},{height}"),
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    c
}

/// How wide the page lays out in a viewport `width` pixels wide: the page
/// in a frame that wide (headless windows have a minimum width; a frame's
/// media queries see the frame), and a probe that writes the frame
/// document's scroll width.
fn laid_out_width(page: &Path, profile: &Path, width: u32) -> u32 {
    let probe = page.with_extension("probe.html");
    std::fs::write(
        &probe,
        format!(
            "<html><body><iframe id=\"f\" src=\"file://{}\" style=\"width:{width}px;height:900px;border:0\"></iframe>\
             <script>document.getElementById('f').onload = function () {{\
             document.body.setAttribute('data-scroll-width', this.contentDocument.documentElement.scrollWidth); }};</script></body></html>",
            page.display()
        ),
    )
    .unwrap();
    let o = browser(profile, 800, 900)
        .arg("--allow-file-access-from-files")
        .arg("--dump-dom")
        .arg(format!("file://{}", probe.display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "chromium --dump-dom: {}", text(&o));
    let dom = String::from_utf8_lossy(&o.stdout);
    let at = dom
        .find("data-scroll-width=\"")
        .unwrap_or_else(|| panic!("the probe ran: {dom}"));
    dom[at + 19..].split('"').next().unwrap().parse().unwrap()
}

fn screenshot(page: &Path, profile: &Path, width: u32, out: &Path) {
    let o = browser(profile, width, 1400)
        .arg(format!("--screenshot={}", out.display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "chromium --screenshot: {}", text(&o));
    let png = std::fs::read(out).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "{} is a PNG", out.display());
    assert!(png.len() > 10_000, "{} shows something", out.display());
}

fn newest(dir: &Path, prefix: &str) -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with(prefix) && n.ends_with(".html") && !n.contains("probe")
        })
        .collect();
    found.sort();
    found
        .pop()
        .unwrap_or_else(|| panic!("a {prefix}*.html report"))
}

#[test]
fn both_reports_fit_a_phone_and_show_summary_legend_and_charts() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    std::fs::write(
        dir.join("coffer.toml"),
        r#"
[settings]
name = "site-a"

[sources.lab]
kind = "lab"
lab_vms = 3

[tiers.local]
backend = "local"
path = "repo"

[policies.all]
sources = ["lab"]
vms = ["*"]
schedule = "0 0 1 * * *"
consistency = "crash"
backup_to = "local"
rpo = "26h"

[policies.all.retain.local]
last = 5
"#,
    )
    .unwrap();
    for args in [
        &["repo", "init", "--all"][..],
        &["apply", "--no-mail"],
        &["report", "--compliance"],
        &["report", "--compliance"],
    ] {
        let o = in_policy_dir(dir, args);
        assert!(o.status.success(), "{args:?}: {}", text(&o));
    }
    let reports = dir.join(".coffer/reports");
    let run = newest(&reports, "run-");
    let compliance = newest(&reports, "compliance-");

    let run_html = std::fs::read_to_string(&run).unwrap();
    assert!(
        run_html.contains("[coffer site-a] run"),
        "the subject names the site"
    );
    for fig in ["VMs in policy", "read from hosts", "duration", "next run"] {
        assert!(run_html.contains(fig), "the run summary shows {fig}");
    }
    assert!(run_html.contains("<svg"), "the run report has its chart");
    let c_html = std::fs::read_to_string(&compliance).unwrap();
    assert!(
        c_html.contains("Legend:"),
        "the compliance report has a legend"
    );
    assert!(
        c_html.contains("class=\"short\""),
        "cells that fall short are highlighted"
    );
    assert_eq!(c_html.matches("<svg").count(), 3, "three charts");
    for title in [
        "VMs that meet their policy, last 2 reports",
        "Stored per tier",
        "RPO margin per VM",
    ] {
        assert!(c_html.contains(title), "chart {title}");
    }

    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("../report-screens");
    std::fs::create_dir_all(&shots).unwrap();
    let profile = t.path().join("chromium-profile");
    for (name, page) in [("run", &run), ("compliance", &compliance)] {
        for (kind, width) in [("desktop", 1280), ("phone", 375)] {
            screenshot(
                page,
                &profile,
                width,
                &shots.join(format!("{name}-{kind}.png")),
            );
        }
        let laid_out = laid_out_width(page, &profile, 375);
        assert!(
            laid_out <= 375,
            "the {name} report is {laid_out} px wide on a 375 px phone"
        );
    }
}
