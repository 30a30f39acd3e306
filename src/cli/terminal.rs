//! How the engine's events look on a terminal: lines for people (results on
//! stdout, warnings on stderr, a progress line on a terminal's stderr), or
//! newline-delimited JSON events on stdout (`--json`).

use std::io::Write;

use crate::engine::observer::{Event, Observer, ReportKind};

pub struct Terminal {
    /// JSON events instead of lines for people.
    pub json: bool,
    /// stdout is a terminal: show a progress line.
    tty: bool,
}

impl Terminal {
    pub fn new(json: bool) -> Terminal {
        // SAFETY: isatty only inspects a descriptor.
        let tty = unsafe { libc::isatty(1) } == 1;
        Terminal { json, tty }
    }

    /// Lines for people.
    pub fn human() -> Terminal {
        Terminal::new(false)
    }

    fn json_line(&self, v: &serde_json::Value) {
        let mut out = std::io::stdout().lock();
        match v {
            serde_json::Value::Array(items) => {
                for i in items {
                    let _ = writeln!(out, "{i}");
                }
            }
            v => {
                let _ = writeln!(out, "{v}");
            }
        }
    }
}

impl Observer for Terminal {
    fn wants_progress(&self) -> bool {
        self.json || self.tty
    }

    fn event(&self, event: &Event<'_>) {
        if let Event::Message(m) = event {
            eprintln!("{m}");
            return;
        }
        if self.json
            && let Some(v) = event.to_json()
        {
            self.json_line(&v);
            return;
        }
        match event {
            Event::RunStarted { run_id } => println!("run {run_id}"),
            Event::Recovered { note } => println!("recovered: {note}"),
            Event::Planned { plan, gathered } => {
                let _ = super::plan::print_plan(&mut std::io::stdout().lock(), plan, gathered);
            }
            Event::ActionFinished { outcome } => println!(
                "{} {}\n    {} ({:.1}s)",
                if outcome.ok { "done" } else { "FAILED" },
                outcome.action,
                outcome.detail,
                outcome.seconds
            ),
            Event::Progress { running } => {
                let size = crate::policy::units::format_size;
                let line: Vec<String> = running
                    .iter()
                    .map(|p| {
                        format!(
                            "{} {} ({}/s)",
                            p.vm,
                            size(p.bytes_read),
                            size(p.bytes_per_second)
                        )
                    })
                    .collect();
                eprint!("\r\x1b[Kreading: {}", line.join(", "));
            }
            Event::ProgressEnded => {
                if self.tty && !self.json {
                    eprint!("\r\x1b[K");
                }
            }
            Event::RunFinished {
                subject, report, ..
            } => println!("{subject}\nreport: {}.txt and .html", report.display()),
            Event::Mailed {
                report: ReportKind::Run,
                notifier,
                to,
            } => println!(
                "mailed the report through `{notifier}` to {}",
                to.join(", ")
            ),
            Event::MailFailed {
                report: ReportKind::Run,
                error,
                kept_in,
                ..
            } => println!(
                "warning: {error}; the report stays in {}",
                kept_in.display()
            ),
            Event::Mailed {
                report: ReportKind::Compliance,
                notifier,
                ..
            } => println!("mailed the compliance report through `{notifier}`"),
            Event::MailFailed {
                report: ReportKind::Compliance,
                error,
                kept_in,
                ..
            } => eprintln!(
                "warning: {error}; the report stays in {}",
                kept_in.display()
            ),
            Event::Mailed {
                report: ReportKind::StoredRun,
                notifier,
                ..
            } => println!("mailed the run report through `{notifier}`"),
            Event::MailFailed {
                report: ReportKind::StoredRun,
                error,
                ..
            } => eprintln!("warning: {error}"),
            Event::DaemonApplying { at } => {
                println!("daemon: applying at {}", at.format("%Y-%m-%d %H:%M:%S UTC"))
            }
            Event::DaemonSleeping { until } => {
                println!(
                    "daemon: next run at {}",
                    until.format("%Y-%m-%d %H:%M:%S UTC")
                )
            }
            // People see an action when its result is known.
            Event::ActionStarted { .. } | Event::Message(_) => {}
        }
    }
}
