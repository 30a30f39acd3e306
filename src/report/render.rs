//! Rendering reports with handlebars: built-in templates for the run and
//! the compliance report, each as plain text and as HTML (inline CSS, for
//! mail clients), overridable by a file of the same name in the policy
//! directory's `templates/` folder (`run.txt.hbs`, `run.html.hbs`,
//! `compliance.txt.hbs`, `compliance.html.hbs`).

use std::path::Path;

use handlebars::Handlebars;
use serde::Serialize;

use super::mail::Mail;

const BUILT_IN: [(&str, &str); 4] = [
    ("run.txt", include_str!("templates/run.txt.hbs")),
    ("run.html", include_str!("templates/run.html.hbs")),
    (
        "compliance.txt",
        include_str!("templates/compliance.txt.hbs"),
    ),
    (
        "compliance.html",
        include_str!("templates/compliance.html.hbs"),
    ),
];

/// The templates of one policy directory.
pub struct Renderer {
    text: Handlebars<'static>,
    html: Handlebars<'static>,
}

impl Renderer {
    /// The built-in templates, each replaced by `<policy_dir>/templates/<name>.hbs`
    /// when that file exists. A template that does not parse is an error
    /// naming the file.
    pub fn new(policy_dir: &Path) -> Result<Renderer, String> {
        let mut text = Handlebars::new();
        text.register_escape_fn(handlebars::no_escape);
        text.set_strict_mode(false);
        let mut html = Handlebars::new();
        html.set_strict_mode(false);
        for (name, built_in) in BUILT_IN {
            let file = policy_dir.join("templates").join(format!("{name}.hbs"));
            let source = match std::fs::read_to_string(&file) {
                Ok(s) => s,
                Err(_) => built_in.to_string(),
            };
            let reg = if name.ends_with(".html") {
                &mut html
            } else {
                &mut text
            };
            reg.register_template_string(name, source)
                .map_err(|e| format!("template {}: {e}", file.display()))?;
        }
        Ok(Renderer { text, html })
    }

    /// Renders `kind` ("run" or "compliance") as text and HTML.
    pub fn render<T: Serialize>(
        &self,
        kind: &str,
        subject: &str,
        model: &T,
    ) -> Result<Mail, String> {
        let text = self
            .text
            .render(&format!("{kind}.txt"), model)
            .map_err(|e| format!("rendering the {kind} report: {e}"))?;
        let html = self
            .html
            .render(&format!("{kind}.html"), model)
            .map_err(|e| format!("rendering the {kind} report: {e}"))?;
        Ok(Mail {
            subject: subject.to_string(),
            text,
            html,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::model::*;

    fn vm(name: &str, ok: bool) -> VmLine {
        VmLine {
            vm: name.into(),
            policy: "gold".into(),
            ok,
            standing: if ok { "ok" } else { "BREACH" }.into(),
            violations: if ok {
                vec![]
            } else {
                vec![
                    "1 offsite copies of 1 required".into(),
                    "RPO breached".into(),
                ]
            },
            copies: 3,
            media: 2,
            offsite: u32::from(ok),
            immutable: 1,
            verify_errors: 0,
            guest_check_failures: u32::from(!ok),
            newest_good: Some("2026-11-25 01:00 UTC".into()),
            rpo: Some(if ok { "met" } else { "breached" }.into()),
            last_drill: ok.then(|| {
                "last drill boot-db (boot) 2026-11-24 03:00 UTC: passed, restore time 42.0s".into()
            }),
            last_recovery: ok.then(|| {
                "last recovery 2026-11-26 10:00 UTC (instant recovery of point 20261125T010000Z-a1b2c3 onto esx1 as db01-ir): powered on after 2.1s, heartbeat after 38.4s".into()
            }),
            short: Shortfalls {
                offsite: !ok,
                guest_check_failures: !ok,
                rpo: !ok,
                ..Shortfalls::default()
            },
        }
    }

    fn summary(failed: usize) -> RunSummary {
        RunSummary {
            site: "site-a".into(),
            vms_ok: 1,
            vms_total: 2,
            actions: 2,
            failed,
            read: "1.2 MiB".into(),
            stored: "300.0 KiB".into(),
            duration: "4s".into(),
            next_run: Some("2026-11-26 01:00 +00:00".into()),
        }
    }

    #[test]
    fn the_built_in_run_report_renders_as_text_and_html() {
        let r = Renderer::new(Path::new("/nonexistent")).unwrap();
        let model = RunReport {
            run_id: "20261125T010000Z-ab12".into(),
            subject: "[coffer site-a] run 20261125T010000Z-ab12 partial (2 actions, 1 failed, 1 of 2 VMs out of policy)".into(),
            status: "partial".into(),
            failed: true,
            summary: summary(1),
            failures: vec![FailureLine {
                action: "+ backup <web01> → local (full, policy gold): first".into(),
                reason: "VM web01: the guest could not be quiesced".into(),
                next: "the next run (2026-11-26 01:00 +00:00) backs the VM up again; its older points stay until then".into(),
            }],
            chart: crate::report::charts::bars(
                "Backups of this run: bytes read per VM",
                &[crate::report::charts::Bar {
                    label: "db01".into(),
                    value: 1.2,
                    color: crate::report::charts::NEUTRAL,
                    text: "1.2 MiB in 3.2s".into(),
                }],
            ),
            chart_lines: vec!["db01: read 1.2 MiB in 3.2s".into()],
            actions: vec![
                ActionLine {
                    ok: true,
                    action: "+ backup db01 → local (incremental, policy gold): scheduled".into(),
                    detail: "incremental point 20261125T010001000Z-aaaaaa, read 1.2 MiB".into(),
                    seconds: "3.2".into(),
                },
                ActionLine {
                    ok: false,
                    action: "+ backup <web01> → local (full, policy gold): first".into(),
                    detail: "VM web01: the guest could not be quiesced".into(),
                    seconds: "0.4".into(),
                },
            ],
            compliance: vec![vm("db01", true), vm("web01", false)],
        };
        let m = r.render("run", &model.subject, &model).unwrap();
        assert!(m.html.contains("<svg"), "the chart is inline");
        insta::assert_snapshot!("run_txt", m.text);
        insta::assert_snapshot!("run_html", m.html);
        assert!(m.html.contains("&lt;web01&gt;"), "HTML is escaped");
        assert!(m.text.contains("<web01>"), "text is not");
    }

    #[test]
    fn the_built_in_compliance_report_renders_with_its_chart() {
        let r = Renderer::new(Path::new("/nonexistent")).unwrap();
        let model = ComplianceReport {
            site: "site-a".into(),
            generated: "2026-11-25 08:00 +00:00".into(),
            total: 2,
            ok_count: 1,
            breach_count: 1,
            ok_percent: 50,
            breach_percent: 50,
            required: Required {
                copies: 3,
                media: 2,
                offsite: 1,
                immutable: 1,
            },
            vms: vec![vm("db01", true), vm("web01", false)],
            alerts: vec![
                "web01: snapshot \"before upgrade\" (2026-11-01 10:00 UTC): 24d old".into(),
            ],
            tiers: vec![
                TierLine {
                    name: "local".into(),
                    points: 14,
                    stored: "41.2 GiB".into(),
                    stored_bytes: Some(44_238_137_753),
                    error: None,
                },
                TierLine {
                    name: "offsite".into(),
                    points: 30,
                    stored: "?".into(),
                    stored_bytes: None,
                    error: Some("its listing failed".into()),
                },
            ],
            policy_changes: vec!["3f2a1c9 2026-11-24 ops: retention of gold: daily 14 → 30".into()],
            charts: vec![Chart {
                svg: "<svg><title>t</title></svg>".into(),
                title: "RPO margin per VM".into(),
                lines: vec!["web01: 3.0 h overdue".into()],
            }],
        };
        let m = r.render("compliance", "subject", &model).unwrap();
        insta::assert_snapshot!("compliance_txt", m.text);
        insta::assert_snapshot!("compliance_html", m.html);
    }

    #[test]
    fn a_template_in_the_policy_directory_replaces_the_built_in_one() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("templates")).unwrap();
        std::fs::write(
            t.path().join("templates/run.txt.hbs"),
            "RUN {{run_id}}: {{status}}\n",
        )
        .unwrap();
        let r = Renderer::new(t.path()).unwrap();
        let model = RunReport {
            run_id: "r1".into(),
            subject: "s".into(),
            status: "success".into(),
            failed: false,
            summary: summary(0),
            failures: vec![],
            actions: vec![],
            compliance: vec![],
            chart: String::new(),
            chart_lines: vec![],
        };
        let m = r.render("run", "s", &model).unwrap();
        assert_eq!(m.text, "RUN r1: success\n");
        assert!(m.html.contains("<h2"), "the HTML stays built in");
        std::fs::write(t.path().join("templates/run.html.hbs"), "{{#if}}").unwrap();
        let err = Renderer::new(t.path()).err().unwrap();
        assert!(err.contains("run.html.hbs"), "{err}");
    }
}
