//! The engine's events as lines for people: what a terminal shows while
//! `apply`, the daemon or any command that runs the engine works. Results
//! go to standard output, warnings to standard error; progress is drawn
//! as bars by whoever shows it, so it has no line here.

use super::{paint, plan};
use crate::engine::observer::{Event, ReportKind};
use crate::policy::units::format_time;

/// Which stream a line belongs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Results.
    Stdout,
    /// Warnings and messages.
    Stderr,
}

/// What an event says to people: one or more lines, each ending in a
/// newline, and the stream they go to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub stream: Stream,
    pub text: String,
}

impl Line {
    fn out(text: String) -> Option<Line> {
        Some(Line {
            stream: Stream::Stdout,
            text: text + "\n",
        })
    }

    fn err(text: String) -> Option<Line> {
        Some(Line {
            stream: Stream::Stderr,
            text: text + "\n",
        })
    }
}

/// An event as lines for people, `None` for an event people do not see
/// as a line. Times are shown in `zone`; `colour` marks the symbols and
/// results.
pub fn event(event: &Event<'_>, colour: bool, zone: chrono_tz::Tz) -> Option<Line> {
    match event {
        Event::Message(m) => Line::err(m.clone()),
        Event::RunStarted { run_id } => Line::out(format!("run {run_id}")),
        Event::Recovered { note } => Line::out(format!("recovered: {note}")),
        Event::Planned { plan: p, gathered } => Some(Line {
            stream: Stream::Stdout,
            text: plan(p, gathered, colour, zone),
        }),
        // The plan showed each action with its reason: the result line
        // names the action and says what it came to.
        Event::ActionFinished { outcome } => Line::out(format!(
            "{} {} ({:.1}s)\n    {}",
            if outcome.ok {
                paint(colour, "32", "done")
            } else {
                paint(colour, "1;31", "FAILED")
            },
            outcome
                .planned
                .as_ref()
                .map_or_else(|| outcome.action.clone(), |a| a.short_line()),
            outcome.seconds,
            outcome.detail,
        )),
        Event::RunFinished {
            subject, report, ..
        } => Line::out(format!(
            "{subject}\nreport: {}.txt and .html",
            report.display()
        )),
        Event::Mailed {
            report: ReportKind::Run,
            notifier,
            to,
        } => Line::out(format!(
            "mailed the report through `{notifier}` to {}",
            to.join(", ")
        )),
        Event::MailFailed {
            report: ReportKind::Run,
            error,
            kept_in,
            ..
        } => Line::out(format!(
            "warning: {error}; the report stays in {}",
            kept_in.display()
        )),
        Event::Mailed {
            report: ReportKind::Compliance,
            notifier,
            ..
        } => Line::out(format!("mailed the compliance report through `{notifier}`")),
        Event::MailFailed {
            report: ReportKind::Compliance,
            error,
            kept_in,
            ..
        } => Line::err(format!(
            "warning: {error}; the report stays in {}",
            kept_in.display()
        )),
        Event::Mailed {
            report: ReportKind::StoredRun,
            notifier,
            ..
        } => Line::out(format!("mailed the run report through `{notifier}`")),
        Event::MailFailed {
            report: ReportKind::StoredRun,
            error,
            ..
        } => Line::err(format!("warning: {error}")),
        Event::DaemonApplying { at } => {
            Line::out(format!("daemon: applying at {}", format_time(zone, *at)))
        }
        Event::DaemonSleeping { until } => {
            Line::out(format!("daemon: next run at {}", format_time(zone, *until)))
        }
        // People see an action when its result is known; progress is
        // drawn as bars.
        Event::ActionStarted { .. } | Event::Progress { .. } | Event::ProgressEnded => None,
    }
}

/// A running backup's progress once the areas to read are known: its VM,
/// a bar, bytes, rate and ETA (an `indicatif` template).
pub const PROGRESS_BAR: &str = "{prefix:>16.bold} [{wide_bar}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta}";

/// A running backup's progress before then: its VM, a spinner, bytes and
/// rate (an `indicatif` template).
pub const PROGRESS_SPINNER: &str =
    "{prefix:>16.bold} {spinner} {binary_bytes} {binary_bytes_per_sec}";
